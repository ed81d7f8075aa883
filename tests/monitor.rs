//! `sluice monitor drift`: current data drawn like the reference drifts in no column; moving one
//! feature's mean by one standard deviation flags exactly that feature; a categorical column
//! whose mix changes is flagged by its Jensen-Shannon distance.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use common::*;

/// Rows `first..first+n` of a fixed pseudo-random data set (Weyl sequences): `a` and `b` are
/// bell-shaped (sums of three uniforms), `seg` one of four segments; `shift` moves `b` by one
/// standard deviation (0.5 for three uniforms on [0, 1)) and `mix` tilts the segments.
fn data(first: i64, n: i64, shift: bool, mix: bool) -> String {
    let u = |k: u64| format!("(CAST((value * {k}) % 1000003 AS DOUBLE) / 1000003.0)");
    let b_shift = if shift { " + 0.5" } else { "" };
    let seg = if mix { "CASE WHEN value % 10 < 7 THEN 's0' ELSE CONCAT('s', CAST(value % 4 AS VARCHAR)) END" } else { "CONCAT('s', CAST(value % 4 AS VARCHAR))" };
    format!(
        "SELECT value AS id, {} + {} + {} AS a, {} + {} + {}{b_shift} AS b, {seg} AS seg FROM (SELECT unnest(range({first}, {})) AS value)",
        u(7919), u(104_729), u(15_485_863), u(611_953), u(1_299_709), u(32_452_843), first + n
    )
}

fn drifted(report: &str) -> String {
    report.lines().find_map(|l| l.strip_prefix("drifted      ")).unwrap_or_else(|| panic!("no verdict:\n{report}")).to_string()
}

#[test]
fn one_moved_feature_is_flagged_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    run_at(&lake, &["asset", "write", "train", "--sql", &data(0, 20_000, false, false)]);
    run_at(&lake, &["asset", "write", "same", "--sql", &data(500_000, 5_000, false, false)]);
    run_at(&lake, &["asset", "write", "moved", "--sql", &data(500_000, 5_000, true, false)]);
    run_at(&lake, &["asset", "write", "mixed", "--sql", &data(500_000, 5_000, false, true)]);
    let drift = |current: &str| {
        run_at(&lake, &["monitor", "drift", "train", current, "--columns", "a,b", "--categorical", "seg", "--executors", "1"])
    };

    let same = drift("same");
    assert_eq!(drifted(&same), "none", "{same}");
    assert!(same.lines().any(|l| l.starts_with("a ") && l.contains("20000/5000")), "{same}");

    let moved = drift("moved");
    assert_eq!(drifted(&moved), "b", "{moved}");
    // Kept as an asset: a row per column with the pinned versions compared.
    let saved = run_at(&lake, &["monitor", "drift", "train", "moved", "--columns", "a,b", "--categorical", "seg", "--executors", "1", "--report", "drift_reports"]);
    assert!(saved.contains("report       drift_reports@0: 3 rows"), "{saved}");
    let rows = run_at(&lake, &["sql", "SELECT \"column\", reference, current, drifted FROM drift_reports ORDER BY \"column\""]);
    for want in ["| a      | train@0   | moved@0 | false   |", "| b      | train@0   | moved@0 | true    |", "| seg    | train@0   | moved@0 | false   |"] {
        assert!(rows.contains(want), "missing {want} in\n{rows}");
    }
    // One standard deviation: the normalized Wasserstein distance is about 1.
    let b = moved.lines().find(|l| l.starts_with("b ")).unwrap();
    let wass: f64 = b.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!((wass - 1.0).abs() < 0.1, "{b}");

    let mixed = drift("mixed");
    assert_eq!(drifted(&mixed), "seg", "{mixed}");
}

/// A one-request HTTP server: returns the port and a handle yielding the request it got.
fn webhook_receiver() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then as many body bytes as Content-Length says.
        loop {
            let n = stream.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    (port, handle)
}

/// Drift measured in the scoring pass against the model's training split (from the registry's
/// lineage): a sample drawn like the training data flags nothing; one whose tenure moved by a
/// standard deviation flags tenure and the predictions, and nothing else; the executors wrote
/// the profiles while scoring; the report is an asset, the run is marked in the catalog, and the
/// webhook gets the drifted columns.
#[test]
fn a_scoring_run_measures_drift_against_the_training_split() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    churn_lake(&lake, &dir.path().join("churn.pt"));

    let same = run_at(&lake, &["score", "today", "--model", "churn@1", "--key", "account_id", "--chunks", "3"]);
    assert!(same.contains("reference    accounts_split@0 (split = 'train', 8400 rows)"), "{same}");
    assert!(same.contains("(12000 rows profiled in the scoring pass)"), "{same}");
    assert_eq!(drifted(&same), "none", "{same}");
    // Integers with few values are categories; the predictions are a column like the features.
    assert!(same.lines().any(|l| l.starts_with("tickets ") && l.contains("categorical")), "{same}");
    assert!(same.lines().any(|l| l.starts_with("prediction ") && l.contains("8400/12000")), "{same}");
    assert!(same.contains("report       today_predictions_drift@0"), "{same}");

    let (port, request) = webhook_receiver();
    let hook = format!("http://127.0.0.1:{port}/hooks/drift");
    let moved = run_at(&lake, &["score", "older", "--model", "churn@1", "--key", "account_id", "--chunks", "3", "--webhook", &hook]);
    assert_eq!(drifted(&moved), "tenure, prediction", "{moved}");
    let tenure = moved.lines().find(|l| l.starts_with("tenure ")).unwrap();
    let wass: f64 = tenure.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!((wass - 1.0).abs() < 0.05, "one standard deviation: {tenure}");
    assert!(moved.contains("webhook      127.0.0.1 answered 200 OK"), "{moved}");
    let request = request.join().unwrap();
    assert!(request.starts_with("POST /hooks/drift"), "{request}");
    let body: serde_json::Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["model"], "churn@1");
    let flagged: Vec<&str> = body["drifted"].as_array().unwrap().iter().map(|c| c["column"].as_str().unwrap()).collect();
    assert_eq!(flagged, ["tenure", "prediction"]);

    // The profiles were written by the executors inside the scoring pass, per chunk and partition.
    let run_dir = std::fs::read_dir(lake.join("older_predictions")).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("run-")).unwrap().path();
    let chunks: Vec<_> = std::fs::read_dir(&run_dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("chunk-")).collect();
    assert!(!chunks.is_empty());
    for chunk in chunks {
        for side in ["input", "output"] {
            let found = std::fs::read_dir(chunk.path().join("_profile")).unwrap().flatten().any(|f| {
                let name = f.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("{side}-")) && name.ends_with(".json")
            });
            assert!(found, "no {side} profile in {}", chunk.path().display());
        }
    }

    // The report is an asset; the run catalog marks the drifted run.
    let rows = run_at(&lake, &["sql", "SELECT \"column\", metric, drifted FROM older_predictions_drift ORDER BY \"column\""]);
    for want in ["| prediction | normalized_wasserstein | true    |", "| spend      | normalized_wasserstein | false   |", "| tickets    | js_distance            | false   |", "| tenure     | normalized_wasserstein | true    |"] {
        assert!(rows.contains(want), "missing {want} in\n{rows}");
    }
    let runs = run_at(&lake, &["runs", "list"]);
    assert!(runs.lines().any(|l| l.contains("older_predictions@0 (DRIFT: tenure, prediction)")), "{runs}");
    assert!(runs.lines().any(|l| l.contains("today_predictions@0 (no drift)")), "{runs}");

    // Thresholds kept with the model: tenure may move by two standard deviations; a run of the
    // same data then flags the predictions only.
    let kept = run_at(&lake, &["model", "monitor", "churn", "--column-threshold", "tenure=2.0"]);
    assert!(kept.contains("columns      tenure=2"), "{kept}");
    let tolerated = run_at(&lake, &["score", "older", "--model", "churn@1", "--key", "account_id", "--output", "tolerated"]);
    assert_eq!(drifted(&tolerated), "prediction", "{tolerated}");
    assert!(tolerated.lines().any(|l| l.starts_with("tenure ") && l.ends_with("  no")), "{tolerated}");

    // Switched off: no report, said so.
    let off = run_at(&lake, &["score", "older", "--model", "churn@1", "--key", "account_id", "--output", "plain", "--no-monitor"]);
    assert!(off.contains("drift        switched off"), "{off}");
}

/// `sluice monitor quality`: predictions of the test split joined with labels kept apart
/// reproduce the AUC, accuracy and log loss the registry recorded for the model on that split;
/// a job file's `[quality]` runs the same check and appends it to its sink.
#[test]
fn a_label_join_reproduces_the_registry_test_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    churn_lake(&lake, &dir.path().join("churn.pt"));
    // Every row of the split asset scored, the split kept as a key column; the labels apart.
    run_at(&lake, &["score", "accounts_split", "--model", "churn@1", "--key", "account_id,split", "--output", "split_scores", "--no-monitor"]);
    run_at(&lake, &["asset", "write", "labels", "--sql", "SELECT account_id, churned FROM accounts"]);

    let out = run_at(
        &lake,
        &["monitor", "quality", "split_scores", "--labels", "labels", "--key", "account_id", "--label", "churned", "--where", "p.split = 'test'", "--window", "none"],
    );
    assert!(out.contains("predictions  split_scores@0 (model churn@1)"), "{out}");
    let shown: serde_json::Value = serde_json::from_str(&run_at(&lake, &["model", "show", "churn@1"])).unwrap();
    let test = &shown["metrics"]["test"];
    let all = out.lines().find(|l| l.starts_with("all ")).unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = all.split_whitespace().collect();
    // all, rows, positives, accuracy, auc, log_loss (metrics in name order).
    assert_eq!(cells[1], test["rows"].as_u64().unwrap().to_string(), "{out}");
    for (i, metric) in [(3, "accuracy"), (4, "auc"), (5, "log_loss")] {
        let measured: f64 = cells[i].parse().unwrap();
        let registered = test[metric].as_f64().unwrap();
        assert!((measured - registered).abs() < 1e-5, "{metric}: {measured} measured, {registered} registered\n{out}");
    }
    assert!(out.contains("change       accuracy "), "{out}");
    assert!(out.contains("unlabelled   0 predictions"), "{out}");

    // Labels for half the accounts only: the rest are counted as not labelled yet.
    run_at(&lake, &["asset", "write", "some_labels", "--sql", "SELECT account_id, churned FROM accounts WHERE account_id % 2 = 0"]);
    let job = dir.path().join("quality.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"churn_quality\"\n[quality]\npredictions = \"split_scores\"\nlabels = \"some_labels\"\nkey = [\"account_id\"]\n\
         label = \"churned\"\nwindow = \"day\"\n[sink]\nasset = \"churn_quality\"\n",
    )
    .unwrap();
    let ran = run_at(&lake, &["run", job.to_str().unwrap()]);
    assert!(ran.contains("unlabelled   6000 predictions"), "{ran}");
    assert!(ran.contains("report       churn_quality@0: 2 rows"), "{ran}");
    let rows = run_at(&lake, &["sql", "SELECT \"window\", \"rows\", test_auc IS NOT NULL AS has_test FROM churn_quality ORDER BY \"window\""]);
    assert!(rows.contains("| all ") && rows.contains("| 6000 ") && rows.contains("true"), "{rows}");
    // The example job file parses; here its predictions do not exist, and it says so.
    let out = sluice_at(&lake).args(["run", "examples/churn_quality.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no predictions asset 'accounts_predictions'"), "{out:?}");
}
