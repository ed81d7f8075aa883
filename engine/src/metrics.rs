//! Prometheus endpoints: `/metrics` in the text exposition format and `/healthz`, served by
//! executors (`sluice executor --metrics-port`) and streams (`sluice stream --metrics-port`).

use std::sync::Arc;

/// Whether a metric only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (totals).
    Counter,
    /// Goes up and down (rates, lag, latency).
    Gauge,
}

/// One metric and its current value.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Its stable name, `sluice_...`.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// What it counts.
    pub help: &'static str,
    /// Its value now.
    pub value: f64,
    /// Its own labels (besides the endpoint's).
    pub labels: Vec<(&'static str, String)>,
}

impl Metric {
    /// A counter.
    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Self { name, kind: Kind::Counter, help, value, labels: Vec::new() }
    }

    /// A gauge.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self { name, kind: Kind::Gauge, help, value, labels: Vec::new() }
    }

    /// The same with label `key` set to `value` (one series of a family).
    pub fn with_label(mut self, key: &'static str, value: &str) -> Self {
        self.labels.push((key, value.to_string()));
        self
    }
}

fn label(key: &str, value: &str) -> String {
    format!("{key}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// `metrics` in the text format, each with `labels` and its own (values escaped as the format
/// wants); a family's series (the same name in a row) share one HELP and TYPE.
pub fn render(labels: &[(&str, &str)], metrics: &[Metric]) -> String {
    let common: Vec<String> = labels.iter().map(|(k, v)| label(k, v)).collect();
    let mut out = String::new();
    let mut previous = "";
    for m in metrics {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        if m.name != previous {
            out.push_str(&format!("# HELP {} {}\n# TYPE {} {kind}\n", m.name, m.help, m.name));
            previous = m.name;
        }
        let mut all = common.clone();
        all.extend(m.labels.iter().map(|(k, v)| label(k, v)));
        let labels = if all.is_empty() { String::new() } else { format!("{{{}}}", all.join(",")) };
        out.push_str(&format!("{}{labels} {}\n", m.name, m.value));
    }
    out
}

/// Serves `/metrics` (whatever `text` returns at each scrape) and `/healthz` on `listener` until
/// the process ends; a failure is logged, never fatal to the work it watches.
pub async fn serve(listener: tokio::net::TcpListener, text: Arc<dyn Fn() -> String + Send + Sync>) {
    use axum::routing::get;
    let metrics = move || {
        let body = text();
        async move { ([("content-type", "text/plain; version=0.0.4")], body) }
    };
    let app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_with_escaped_labels() {
        let text = render(&[("job", "a\"b")], &[Metric::counter("sluice_x_total", "Xs.", 3.0), Metric::gauge("sluice_y", "Y.", 0.5)]);
        assert_eq!(
            text,
            "# HELP sluice_x_total Xs.\n# TYPE sluice_x_total counter\nsluice_x_total{job=\"a\\\"b\"} 3\n\
             # HELP sluice_y Y.\n# TYPE sluice_y gauge\nsluice_y{job=\"a\\\"b\"} 0.5\n"
        );
        let family = [Metric::gauge("sluice_d", "D.", 1.0).with_label("column", "a"), Metric::gauge("sluice_d", "D.", 0.0).with_label("column", "b")];
        assert_eq!(
            render(&[], &family),
            "# HELP sluice_d D.\n# TYPE sluice_d gauge\nsluice_d{column=\"a\"} 1\nsluice_d{column=\"b\"} 0\n"
        );
    }
}
