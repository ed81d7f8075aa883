//! The console's pages, each rendered from the run catalog, the lake and the model registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use sluice_lake::delta::AssetRef;
use sluice_engine::profile::{Binning, ColumnProfile};

use super::html::{badge, bytes, escape, segment, table, time_ms};
use super::svg::{self, Node};
use super::Console;
use sluice_catalog::error::{Error, Result};
use sluice_catalog::models::Registry;
use sluice_monitor::profile as profiles;
use sluice_catalog::runs::Status;
use crate::{Permission, Principal};
use sluice_catalog::sql::ident;

fn link(href: &str, text: &str) -> String {
    format!(r#"<a href="{}">{}</a>"#, escape(href), escape(text))
}

fn status_badge(status: Status) -> String {
    badge(&status.to_string(), &status.to_string())
}

/// A running run's status with how far it is (its last word on progress).
fn status_cell(r: &sluice_catalog::runs::Run) -> String {
    let mut cell = status_badge(r.status);
    if let (Status::Running, Some(progress)) = (r.status, &r.progress) {
        if let Some((done, total)) = sluice_catalog::progress::parse_described(progress) {
            let _ = write!(cell, r#"<br><progress value="{done}" max="{}"></progress>"#, total.max(1));
        }
        let _ = write!(cell, r#" <span class="muted progress">{}</span>"#, escape(progress));
    }
    cell
}

fn drift_badge(drift: Option<&str>) -> String {
    match drift {
        Some("none") => badge("no drift", "ok"),
        Some(columns) => badge(&format!("drift: {columns}"), "drift"),
        None => String::new(),
    }
}

/// A link to an `asset@version` or a `model NAME@VERSION` (plain text for anything else).
fn asset_link(at: &str) -> String {
    if let Some((name, _)) = at.strip_prefix("model ").and_then(|m| m.split_once('@')) {
        return link(&format!("/models/{}", segment(name)), at);
    }
    match at.split_once('@') {
        Some((name, v)) if v.chars().all(|c| c.is_ascii_digit()) => link(&format!("/assets/{}", segment(name)), at),
        _ => escape(at),
    }
}

/// The run catalog, newest first.
pub async fn runs(c: &Console, p: &Principal) -> Result<String> {
    let may_cancel = p.check(Permission::Operate).is_ok();
    let rows: Vec<Vec<String>> = c
        .runs
        .list(200)
        .await?
        .into_iter()
        .map(|r| {
            let action = if r.status == Status::Running && may_cancel {
                format!(
                    r#"<form method="post" action="/runs/{}/cancel" style="margin:0"><button type="submit">Cancel</button></form>"#,
                    segment(&r.id)
                )
            } else {
                String::new()
            };
            let outcome = r.error.as_deref().map_or_else(
                || r.output.as_deref().map(|o| o.split(", ").map(asset_link).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
                |e| format!(r#"<span class="muted">{}</span>"#, escape(e.lines().next().unwrap_or_default())),
            );
            vec![
                link(&format!("/runs/{}", segment(&r.id)), &r.id),
                escape(&r.kind),
                escape(&r.name),
                status_cell(&r),
                escape(&r.started.replace('T', " ").chars().take(19).collect::<String>()),
                format!("#{:.1} s", r.seconds()),
                format!("#{}", r.rows.map(|n| n.to_string()).unwrap_or_default()),
                format!("{outcome} {}", drift_badge(r.drift.as_deref())),
                action,
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(format!(r#"<p class="muted">No runs yet in {}.</p>"#, escape(&c.runs.location())));
    }
    Ok(table(&["run", "kind", "name", "status", "started (UTC)", "duration", "rows", "output / error", ""], &rows))
}

/// One run.
pub async fn run(c: &Console, p: &Principal, id: &str) -> Result<String> {
    let r = c.runs.get(id).await?;
    let mut body = String::from(r#"<div class="card">"#);
    let fields = [
        ("kind", escape(&r.kind)),
        ("name", escape(&r.name)),
        ("status", status_cell(&r)),
        ("started", escape(&r.started)),
        ("finished", escape(r.finished.as_deref().unwrap_or("-"))),
        ("duration", format!("{:.1} s", r.seconds())),
        ("rows", r.rows.map(|n| n.to_string()).unwrap_or_default()),
        ("output", r.output.as_deref().map(|o| o.split(", ").map(asset_link).collect::<Vec<_>>().join(", ")).unwrap_or_default()),
        ("drift", drift_badge(r.drift.as_deref())),
        ("process", format!("{} on {}", r.pid, escape(&r.host))),
        ("error", format!("<pre>{}</pre>", escape(r.error.as_deref().unwrap_or("")))),
    ];
    body.push_str(&table(&["", ""], &fields.iter().map(|(k, v)| vec![k.to_string(), v.clone()]).collect::<Vec<_>>()));
    if r.status == Status::Running && p.check(Permission::Operate).is_ok() {
        let _ = write!(body, r#"<form method="post" action="/runs/{}/cancel"><button type="submit">Cancel this run</button></form>"#, segment(&r.id));
    }
    body.push_str("</div>");
    if let (Some(_), Some(output)) = (&r.drift, &r.output) {
        let asset = output.split('@').next().unwrap_or_default();
        let _ = write!(body, "<p>{}</p>", link(&format!("/drift/{}", segment(&format!("{asset}_drift"))), "Drift of this run's inputs and predictions"));
    }
    Ok(body)
}

/// Every data asset.
pub async fn assets(c: &Console) -> Result<String> {
    let rows: Vec<Vec<String>> = c
        .lake
        .list()
        .await?
        .into_iter()
        .map(|a| {
            let tags = a.tags.iter().map(|(t, v)| format!("{t} → {v}")).collect::<Vec<_>>().join(", ");
            vec![
                link(&format!("/assets/{}", segment(&a.name)), &a.name),
                format!("#{}", a.version),
                format!("#{}", a.rows),
                format!("#{}", a.files),
                format!("#{}", bytes(a.bytes)),
                escape(&tags),
            ]
        })
        .collect();
    Ok(table(&["asset", "version", "rows", "files", "size", "tags"], &rows))
}

/// Field `key` of a JSON object as text (strings unquoted, absent or null empty).
fn json_text(l: &serde_json::Value, key: &str) -> String {
    match l.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn lineage_inputs(l: &serde_json::Value) -> Vec<String> {
    l.get("inputs").and_then(|i| i.as_array()).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// One asset: schema, profile, versions and lineage.
pub async fn asset(c: &Console, name: &str) -> Result<String> {
    let version = c.lake.resolve(&AssetRef::parse(name)?).await?;
    let mut body = format!(
        r#"<p>Version {} · {} rows in {} files · {}</p>"#,
        version.version,
        version.rows(),
        version.files.len(),
        bytes(version.bytes())
    );
    body.push_str("<h2>Lineage</h2>");
    body.push_str(&lineage_graph(c, &version.name).await.unwrap_or_else(|e| format!(r#"<p class="muted">{}</p>"#, escape(&e.to_string()))));
    body.push_str("<h2>Schema and profile</h2>");
    let profile = profiles::version_profile(&c.ctx, &c.lake, &version).await;
    let mut rows = Vec::new();
    for field in version.schema.fields() {
        let sketch = profile.as_ref().ok().and_then(|p| p.column(field.name()));
        let (stats, chart) = sketch.map_or((String::new(), String::new()), |s| (describe(s), svg::histogram(s)));
        rows.push(vec![
            escape(field.name()),
            format!("<code>{}</code>", escape(&field.data_type().to_string())),
            if field.is_nullable() { "yes".into() } else { "no".into() },
            stats,
            chart,
        ]);
    }
    body.push_str(&table(&["column", "type", "nullable", "profile", "distribution"], &rows));
    if let Err(e) = &profile {
        let _ = write!(body, r#"<p class="muted">No profile: {}</p>"#, escape(&e.to_string()));
    }
    body.push_str("<h2>Versions</h2>");
    let history = c.lake.history(&version.name, Some(30)).await?;
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|v| {
            let l = v.lineage.clone().unwrap_or_default();
            vec![
                format!("#{}", v.version),
                time_ms(v.timestamp_ms),
                escape(&v.operation),
                escape(&json_text(&l, "job")),
                format!("#{}", json_text(&l, "rows")),
                lineage_inputs(&l).iter().map(|i| asset_link(i)).collect::<Vec<_>>().join(", "),
                escape(&json_text(&l, "run_id")),
            ]
        })
        .collect();
    body.push_str(&table(&["version", "committed (UTC)", "operation", "job", "rows", "inputs", "run"], &rows));
    Ok(body)
}

/// The NaN and infinite values of a numeric sketch (counted apart from its values), if any.
fn special(s: &ColumnProfile) -> String {
    [(s.nan, "NaN"), (s.pos_inf, "+inf"), (s.neg_inf, "-inf")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!(", {n} {what}"))
        .collect()
}

/// Count, nulls and the moments or top values of a sketch.
fn describe(s: &ColumnProfile) -> String {
    match s.binning {
        Binning::Numeric { .. } => format!(
            "{} values, {} null{}<br>min {} · median {} · max {}<br>mean {:.4} · sd {:.4}",
            s.count,
            s.nulls,
            special(s),
            s.min.map_or("-".into(), |v| format!("{v:.4}")),
            s.quantile(0.5).map_or("-".into(), |v| format!("{v:.4}")),
            s.max.map_or("-".into(), |v| format!("{v:.4}")),
            s.mean,
            s.std()
        ),
        Binning::Categorical => {
            let top: Vec<String> = s.top(5).into_iter().map(|(v, n)| format!("{} ({n})", escape(v))).collect();
            format!("{} values, {} null, {} categories<br>top: {}", s.count, s.nulls, s.categories.len(), top.join(", "))
        }
    }
}

/// Upstream (inputs, recursively, and their sources), this asset, downstream (assets reading it,
/// models trained on it, and what those models scored).
async fn lineage_graph(c: &Console, name: &str) -> Result<String> {
    let all = c.lake.list().await?;
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for a in &all {
        // A version's lineage never changes: read once per asset version, then from memory.
        let cached = c.lineage.lock().ok().and_then(|m| m.get(&a.name).filter(|(v, _)| *v == a.version).map(|(_, l)| l.clone()));
        let l = match cached {
            Some(l) => l,
            None => {
                let l = c.lake.history(&a.name, Some(1)).await?.into_iter().next().and_then(|v| v.lineage).unwrap_or_default();
                if let Ok(mut m) = c.lineage.lock() {
                    m.insert(a.name.clone(), (a.version, l.clone()));
                }
                l
            }
        };
        latest.insert(a.name.clone(), l);
    }
    let base = |input: &str| input.split('@').next().unwrap_or(input).to_string();
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    // A node once per key: its index.
    let add = |nodes: &mut Vec<Node>, index: &mut BTreeMap<String, usize>, key: String, node: Node| -> usize {
        *index.entry(key).or_insert_with(|| {
            nodes.push(node);
            nodes.len() - 1
        })
    };
    // Upstream, breadth first, at most four levels.
    let this = add(&mut nodes, &mut index, format!("asset:{name}"), Node { label: name.into(), href: None, kind: "this", depth: 4 });
    let mut frontier = vec![(name.to_string(), this, 4usize)];
    while let Some((asset, at, depth)) = frontier.pop() {
        if depth == 0 {
            continue;
        }
        let l = latest.get(&asset).cloned().unwrap_or_default();
        for input in lineage_inputs(&l) {
            let b = base(&input);
            let (key, node) = if latest.contains_key(&b) {
                (format!("asset:{b}"), Node { label: input.clone(), href: Some(format!("/assets/{}", segment(&b))), kind: "asset", depth: depth - 1 })
            } else {
                (format!("source:{input}"), Node { label: input.clone(), href: None, kind: "source", depth: depth - 1 })
            };
            let known = index.contains_key(&key);
            let i = add(&mut nodes, &mut index, key, node);
            edges.insert((i, at));
            if !known && latest.contains_key(&b) {
                frontier.push((b, i, depth - 1));
            }
        }
        if let Some(models) = l.get("models").and_then(|m| m.as_array()) {
            for m in models {
                let model = json_text(m, "name");
                let label = format!("model {model}@{}", json_text(m, "version"));
                let i = add(&mut nodes, &mut index, format!("model:{label}"), Node { label, href: Some(format!("/models/{}", segment(&model))), kind: "model", depth: depth - 1 });
                edges.insert((i, at));
            }
        }
    }
    // Downstream: assets whose latest version read this one, and models trained on it.
    for (other, l) in &latest {
        if other != name && lineage_inputs(l).iter().any(|i| base(i) == name) {
            let i = add(&mut nodes, &mut index, format!("asset:{other}"), Node { label: other.clone(), href: Some(format!("/assets/{}", segment(other))), kind: "asset", depth: 5 });
            edges.insert((this, i));
        }
    }
    if let Ok(registry) = Registry::open(&c.lake) {
        for model in registry.names().await.unwrap_or_default() {
            for v in registry.versions_of(&model).await.unwrap_or_default() {
                let trained_on = v.info.lineage.get("datasets").and_then(|d| d.as_array()).is_some_and(|d| {
                    d.iter().filter_map(|x| x.as_str()).any(|x| base(x) == name)
                });
                if trained_on {
                    let label = format!("model {}@{}", v.name, v.version);
                    let i = add(&mut nodes, &mut index, format!("model:{label}"), Node { label, href: Some(format!("/models/{}", segment(&v.name))), kind: "model", depth: 5 });
                    edges.insert((this, i));
                }
            }
        }
    }
    // Depths from 0.
    let lowest = nodes.iter().map(|n| n.depth).min().unwrap_or(0);
    for n in &mut nodes {
        n.depth -= lowest;
    }
    Ok(svg::lineage(&nodes, &edges.into_iter().collect::<Vec<_>>()))
}

/// Every registered model.
pub async fn models(c: &Console) -> Result<String> {
    let registry = Registry::open(&c.lake)?;
    let mut rows = Vec::new();
    for name in registry.names().await? {
        let versions = registry.versions_of(&name).await?;
        let aliases = registry.aliases(&name).await?;
        let latest = versions.iter().max_by_key(|v| v.version);
        rows.push(vec![
            link(&format!("/models/{}", segment(&name)), &name),
            format!("#{}", versions.len()),
            escape(&aliases.iter().map(|(a, v)| format!("{a} → {v}")).collect::<Vec<_>>().join(", ")),
            latest.map_or(String::new(), |v| escape(v.info.task.as_deref().unwrap_or("-"))),
            latest.map_or(String::new(), |v| escape(&v.registered)),
        ]);
    }
    if rows.is_empty() {
        return Ok(r#"<p class="muted">No models registered yet (`sluice train --register NAME`).</p>"#.into());
    }
    Ok(table(&["model", "versions", "aliases", "task", "latest registered"], &rows))
}

fn metrics_text(metrics: &serde_json::Map<String, serde_json::Value>) -> String {
    metrics
        .iter()
        .map(|(split, m)| {
            let values = m.as_object().map_or(m.to_string(), |o| {
                o.iter().filter_map(|(k, v)| v.as_f64().map(|f| format!("{k} {f:.4}"))).collect::<Vec<_>>().join(", ")
            });
            format!("<b>{}</b>: {}", escape(split), escape(&values))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// One model: versions, aliases, metrics and the data each was trained on.
pub async fn model(c: &Console, name: &str) -> Result<String> {
    let registry = Registry::open(&c.lake)?;
    let aliases = registry.aliases(name).await?;
    let mut versions = registry.versions_of(name).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let own: Vec<&str> = aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| a.as_str()).collect();
            let datasets: Vec<String> = v
                .info
                .lineage
                .get("datasets")
                .and_then(|d| d.as_array())
                .map(|d| d.iter().filter_map(|x| x.as_str()).map(asset_link).collect())
                .unwrap_or_default();
            let inputs: Vec<&str> = v.info.inputs.iter().map(|i| i.name.as_str()).collect();
            vec![
                format!("#{}", v.version),
                escape(&own.join(", ")),
                escape(&v.registered),
                format!("{}{}", escape(&inputs.join(", ")), v.archived.as_ref().map_or(String::new(), |_| " (archived)".into())),
                metrics_text(&v.info.metrics),
                datasets.join(", "),
                format!("<code>{}</code>", escape(&v.id)),
            ]
        })
        .collect();
    Ok(table(&["version", "aliases", "registered", "inputs", "metrics", "trained on", "id"], &rows))
}

/// Every cell of `batches` as text, a map per row.
fn text_rows(batches: &[RecordBatch]) -> Result<Vec<BTreeMap<String, String>>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (field, column) in b.schema().fields().iter().zip(b.columns()) {
                let text = if column.is_null(i) { String::new() } else { arrow::util::display::array_value_to_string(column, i)? };
                row.insert(field.name().clone(), text);
            }
            out.push(row);
        }
    }
    Ok(out)
}

/// The rows of a drift report asset, oldest check first.
async fn report_rows(c: &Console, name: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let version = c.lake.resolve(&AssetRef::parse(name)?).await?;
    let pinned = ident(&format!("{}@{}", version.name, version.version));
    let batches = c.local.sql(&format!("SELECT * FROM {pinned} ORDER BY checked_at")).await?.collect().await?;
    text_rows(&batches)
}

/// Rows of each run (or check) in order.
fn by_run(rows: &[BTreeMap<String, String>]) -> Vec<(String, Vec<&BTreeMap<String, String>>)> {
    let mut runs: Vec<(String, Vec<&BTreeMap<String, String>>)> = Vec::new();
    for row in rows {
        let key = row.get("run_id").filter(|r| !r.is_empty()).or(row.get("checked_at")).cloned().unwrap_or_default();
        match runs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rs)) => rs.push(row),
            None => runs.push((key, vec![row])),
        }
    }
    runs
}

fn field<'a>(row: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    row.get(key).map_or("", String::as_str)
}

/// The drift reports (assets named `*_drift`, or holding drift rows).
async fn drift_reports(c: &Console) -> Result<Vec<String>> {
    Ok(c.lake.list().await?.into_iter().map(|a| a.name).filter(|n| n.ends_with("_drift")).collect())
}

/// Every drift report with its latest verdict.
pub async fn drift_list(c: &Console) -> Result<String> {
    let mut rows = Vec::new();
    for name in drift_reports(c).await? {
        let report = report_rows(c, &name).await?;
        let runs = by_run(&report);
        let Some((_, last)) = runs.last() else { continue };
        let drifted: Vec<&str> = last.iter().filter(|r| field(r, "drifted") == "true").map(|r| field(r, "column")).collect();
        let verdict = if drifted.is_empty() { badge("no drift", "ok") } else { badge(&format!("drift: {}", drifted.join(", ")), "drift") };
        rows.push(vec![
            link(&format!("/drift/{}", segment(&name)), &name),
            escape(field(last[0], "model")),
            escape(field(last[0], "checked_at")),
            format!("#{}", runs.len()),
            verdict,
        ]);
    }
    if rows.is_empty() {
        return Ok(r#"<p class="muted">No drift measured yet: scoring a registered model measures it against its training split.</p>"#.into());
    }
    Ok(table(&["report", "model", "last check (UTC)", "runs", "latest"], &rows))
}

/// One drift report: the latest run's columns with their histograms against the reference, and
/// each metric over the runs.
pub async fn drift(c: &Console, name: &str) -> Result<String> {
    let report = report_rows(c, name).await?;
    let runs = by_run(&report);
    let Some((run_id, last)) = runs.last() else { return Ok(r#"<p class="muted">This report is empty.</p>"#.into()) };
    let first = last[0];
    let mut body = format!(
        r#"<div class="card">Model <b>{}</b> · run {} · input {} · predictions {} · reference {} · checked {}</div>"#,
        escape(field(first, "model")),
        link(&format!("/runs/{}", segment(run_id)), run_id),
        asset_link(field(first, "input")),
        asset_link(field(first, "predictions")),
        escape(field(first, "reference")),
        escape(field(first, "checked_at")),
    );
    let num = |r: &BTreeMap<String, String>, k: &str| field(r, k).parse::<f64>().map_or("-".to_string(), |v| format!("{v:.4}"));
    let rows: Vec<Vec<String>> = last
        .iter()
        .map(|r| {
            let drifted = field(r, "drifted") == "true";
            vec![
                escape(field(r, "column")),
                escape(field(r, "kind")),
                format!("{} {} (threshold {})", escape(field(r, "metric")), num(r, "value"), num(r, "threshold")),
                if drifted { badge("drift", "drift") } else { badge("ok", "ok") },
                format!("#{}", num(r, "psi")),
                format!("#{}", num(r, "js_distance")),
                format!("#{}", num(r, "ks")),
                format!("#{}", num(r, "normalized_wasserstein")),
                format!("#{}", num(r, "chi_squared_p")),
            ]
        })
        .collect();
    body.push_str(&table(&["column", "kind", "deciding metric", "verdict", "PSI", "JS distance", "KS", "Wasserstein / sd", "χ² p"], &rows));

    // Histograms of this run's data against the reference, from the profiles kept with the run.
    let predictions = field(first, "predictions").split('@').next().unwrap_or_default().to_string();
    if !predictions.is_empty() && field(first, "run_id") == run_id.as_str() {
        body.push_str("<h2>Reference and current, per column</h2>");
        let folder = profiles::run_folder(&c.lake, &predictions, run_id)?;
        match profiles::run_profiles(&c.lake, &folder).await {
            Ok((reference, current)) => {
                body.push_str(r#"<div class="grid">"#);
                for r in &reference.columns {
                    if let Some(cur) = current.column(&r.name) {
                        let _ = write!(body, r#"<div class="card"><b>{}</b><br>{}</div>"#, escape(&r.name), svg::paired_histogram(r, cur));
                    }
                }
                body.push_str("</div>");
            }
            Err(e) => {
                let _ = write!(body, r#"<p class="muted">Histograms unavailable: {}</p>"#, escape(&e.to_string()));
            }
        }
    }

    // Each metric over the runs, a line per column.
    body.push_str("<h2>Over time</h2><div class=\"grid\">");
    let columns: Vec<String> = last.iter().map(|r| field(r, "column").to_string()).collect();
    let threshold = last.iter().find_map(|r| field(r, "threshold").parse::<f64>().ok());
    for (metric, title, with_threshold) in [
        ("normalized_wasserstein", "Wasserstein distance / reference sd", true),
        ("js_distance", "Jensen-Shannon distance", true),
        ("psi", "PSI", false),
        ("ks", "KS statistic", false),
    ] {
        let series: Vec<(String, Vec<(String, f64)>)> = columns
            .iter()
            .map(|col| {
                let points = runs
                    .iter()
                    .map(|(run, rows)| {
                        let v = rows.iter().find(|r| field(r, "column") == col).and_then(|r| field(r, metric).parse::<f64>().ok());
                        (run.clone(), v.unwrap_or(f64::NAN))
                    })
                    .collect();
                (col.clone(), points)
            })
            .filter(|(_, points): &(String, Vec<(String, f64)>)| points.iter().any(|(_, v)| v.is_finite()))
            .collect();
        if !series.is_empty() {
            let _ = write!(body, r#"<div class="card">{}</div>"#, svg::line_chart(title, &series, threshold.filter(|_| with_threshold)));
        }
    }
    body.push_str("</div>");
    Ok(body)
}

/// The executors and jobs the scheduler knows (its REST API).
pub async fn cluster(c: &Console) -> Result<String> {
    let Some(scheduler) = &c.scheduler else {
        return Ok(r#"<p class="muted">No cluster: this server runs queries in-process.</p>"#.into());
    };
    let base = format!("http://{}", scheduler.trim_start_matches("df://"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Invalid(format!("HTTP client: {}", e.without_url())))?;
    let get = |path: String| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client.get(&url).send().await.map_err(|e| Error::Invalid(format!("scheduler {url}: {}", e.without_url())))?;
            let text = r.text().await.map_err(|e| Error::Invalid(format!("scheduler {url}: {}", e.without_url())))?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::Invalid(format!("scheduler {url}: {e}")))
        }
    };
    let mut body = format!("<p>Scheduler <code>{}</code></p><h2>Executors</h2>", escape(scheduler));
    let executors = get("/api/executors".into()).await?;
    // Executors in this process report their device and counters; others on their /metrics.
    let device = sluice_udfs::device::default_device_name();
    let rows: Vec<Vec<String>> = executors
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let id = json_text(e, "id");
                    let seen = e.get("last_seen").and_then(|v| v.as_i64()).map(|ms| time_ms(Some(ms))).unwrap_or_default();
                    let (device, scored) = match c.executors.iter().find(|x| x.id == id) {
                        Some(x) => (escape(&device), format!("#{}", x.predict.rows())),
                        None => (r#"<span class="muted">on its /metrics</span>"#.to_string(), String::new()),
                    };
                    vec![
                        escape(&id),
                        escape(&format!("{}:{}", json_text(e, "host"), json_text(e, "port"))),
                        format!("<code>{}</code>", escape(&json_text(e, "specification"))),
                        device,
                        scored,
                        escape(&seen),
                        format!("<code>{}</code>", escape(&json_text(e, "os_info"))),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&table(&["executor", "address", "task slots", "device", "rows scored", "last heartbeat (UTC)", "system"], &rows));
    body.push_str("<h2>Jobs</h2>");
    let jobs = get("/api/jobs".into()).await?;
    let jobs: Vec<serde_json::Value> = jobs.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .take(50)
        .map(|j| {
            let status = json_text(j, "job_status");
            vec![
                escape(&json_text(j, "job_id")),
                escape(&json_text(j, "job_name")),
                badge(&status, &status.to_ascii_lowercase()),
                format!("#{}/{}", json_text(j, "completed_stages"), json_text(j, "num_stages")),
                format!("#{}", json_text(j, "percent_complete")),
            ]
        })
        .collect();
    body.push_str(&table(&["job", "name", "status", "stages done", "% done"], &rows));
    // The tasks running now, from the stages of the running jobs.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut running = Vec::new();
    for j in jobs.iter().filter(|j| json_text(j, "status") == "Running").take(10) {
        let id = json_text(j, "job_id");
        let Ok(stages) = get(format!("/api/job/{}/stages", segment(&id))).await else { continue };
        for stage in stages.get("stages").and_then(|s| s.as_array()).into_iter().flatten() {
            for task in stage.get("tasks").and_then(|t| t.as_array()).into_iter().flatten() {
                if task.get("status").and_then(|s| s.as_str()) != Some("Running") {
                    continue;
                }
                let started = task.get("start_exec_time").and_then(|v| v.as_i64()).filter(|t| *t > 0);
                running.push(vec![
                    escape(&id),
                    escape(&json_text(stage, "stage_id")),
                    escape(&json_text(task, "id")),
                    escape(&json_text(task, "partition_id")),
                    started.map_or(String::new(), |t| format!("#{:.1} s", (now_ms - t) as f64 / 1000.0)),
                    format!("#{}", json_text(task, "input_rows")),
                ]);
            }
        }
    }
    body.push_str("<h2>Running tasks</h2>");
    if running.is_empty() {
        body.push_str(r#"<p class="muted">No task is running.</p>"#);
    } else {
        body.push_str(&table(&["job", "stage", "task", "partitions", "running for", "rows read"], &running));
    }
    Ok(body)
}

/// Prometheus gauges: each drift report's latest run per column, and runs per status.
pub async fn metrics(c: &Console) -> Result<String> {
    let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut out = String::from(
        "# HELP sluice_drift_value The deciding drift metric of a column in a model's latest scoring run.\n\
         # TYPE sluice_drift_value gauge\n",
    );
    let mut flags = String::from(
        "# HELP sluice_drift_detected 1 when the column drifted past its threshold in the latest run.\n\
         # TYPE sluice_drift_detected gauge\n",
    );
    for name in drift_reports(c).await? {
        let report = report_rows(c, &name).await?;
        let runs = by_run(&report);
        let Some((_, last)) = runs.last() else { continue };
        for r in last {
            let labels = format!(
                "report=\"{}\",model=\"{}\",column=\"{}\",metric=\"{}\"",
                label(&name),
                label(field(r, "model")),
                label(field(r, "column")),
                label(field(r, "metric"))
            );
            let _ = writeln!(out, "sluice_drift_value{{{labels}}} {}", field(r, "value").parse::<f64>().unwrap_or(f64::NAN));
            let _ = writeln!(flags, "sluice_drift_detected{{{labels}}} {}", u8::from(field(r, "drifted") == "true"));
        }
    }
    out.push_str(&flags);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in c.runs.list(10_000).await? {
        *counts.entry(r.status.to_string()).or_default() += 1;
    }
    out.push_str("# HELP sluice_runs Runs in the catalog by status.\n# TYPE sluice_runs gauge\n");
    for (status, n) in counts {
        let _ = writeln!(out, "sluice_runs{{status=\"{status}\"}} {n}");
    }
    Ok(out)
}
