//! The console's page frame and small HTML helpers; styles are inline, nothing is fetched from
//! elsewhere.

use crate::Principal;

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment for a link (asset, model and run names are restricted, but keep it safe).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{background:#1f2d3d;color:#fff;padding:10px 24px;display:flex;gap:22px;align-items:center}\
header a{color:#cfd8e3;text-decoration:none}header a.on{color:#fff;font-weight:600}header .brand{font-weight:700;color:#fff;margin-right:12px}\
header .who{margin-left:auto;color:#9fb0c3;font-size:12px}main{padding:18px 24px;max-width:1200px}\
h1{font-size:20px;margin:6px 0 14px}h2{font-size:16px;margin:22px 0 8px}\
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:10px}th,td{text-align:left;padding:5px 9px;border-bottom:1px solid #e4e7eb;vertical-align:top}\
th{background:#eef1f5;font-weight:600;font-size:12px}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;background:#e4e7eb}\
.succeeded,.ok{background:#d4efdf;color:#1e6b3a}.failed,.drift{background:#f8d7da;color:#8a1c24}.running{background:#d6e9f8;color:#1d5a8a}\
.cancelled,.skipped{background:#eee;color:#666}.card{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:12px 14px;margin-bottom:14px}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(580px,1fr));gap:14px}.muted{color:#777}code{font-size:12px}\
button{background:#c0392b;color:#fff;border:0;border-radius:4px;padding:3px 10px;cursor:pointer}a{color:#2e6da4}\
.error{background:#fdecea;border:1px solid #f5c2c0;padding:10px 14px;border-radius:6px}";

/// Pages of the navigation bar: path and label.
const NAV: [(&str, &str); 5] = [("/runs", "Runs"), ("/assets", "Assets"), ("/models", "Models"), ("/drift", "Drift"), ("/cluster", "Cluster")];

/// A whole page: the navigation (with `active` marked), who is signed in, and `body`.
pub fn page(title: &str, active: &str, who: Option<&Principal>, body: &str) -> String {
    let nav: String = NAV
        .iter()
        .map(|(href, label)| format!(r#"<a href="{href}"{}>{label}</a>"#, if *href == active { r#" class="on""# } else { "" }))
        .collect();
    let who = who.map_or(String::new(), |p| {
        format!(r#"<span class="who">{} ({}) · <a href="/logout">sign out</a></span>"#, escape(&p.user), p.role.name())
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Sluice</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><header><span class=\"brand\">Sluice</span>{nav}{who}</header><main><h1>{}</h1>{body}</main></body></html>",
        escape(title),
        escape(title)
    )
}

/// A status as a coloured badge.
pub fn badge(text: &str, class: &str) -> String {
    format!(r#"<span class="badge {class}">{}</span>"#, escape(text))
}

/// A table with `head` and rows of already-escaped cells (cells starting with `#` are numbers).
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell.strip_prefix('#') {
                Some(n) => out.push_str(&format!(r#"<td class="n">{n}</td>"#)),
                None => out.push_str(&format!("<td>{cell}</td>")),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[u]) }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_align() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(segment("a b/c@1"), "a%20b%2Fc@1");
        let t = table(&["n"], &[vec!["#5".into()]]);
        assert!(t.contains(r#"<td class="n">5</td>"#));
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
