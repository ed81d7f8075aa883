//! The web console of `sluice serve --http`, driven in headless Chromium (Debian's `chromium`,
//! installed by scripts/chromium.sh): every page renders real data from scoring runs (runs,
//! assets with profile and lineage, models, drift with its charts, the cluster); a reader sees
//! no cancel button and is refused when cancelling, an operator cancels a running run; the drift
//! gauges are on /metrics. A screenshot of each page is kept under the test's target tmp dir
//! (`console-screenshots/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const ACCESS: &str = r#"
[[users]]
name = "rita"
role = "reader"
password = { env = "TEST_RITA_PASSWORD" }
token = { env = "TEST_RITA_TOKEN" }

[[users]]
name = "otto"
role = "operator"
token = { env = "TEST_OTTO_TOKEN" }
"#;
const READER_TOKEN: &str = "rita-4c1f9e0b7d";
const OPERATOR_TOKEN: &str = "otto-93b2a6d5e8";

fn chromium() -> String {
    let out = std::process::Command::new("bash").arg(root().join("scripts/chromium.sh")).output().unwrap();
    assert!(out.status.success(), "scripts/chromium.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A headless Chromium with its own profile (its cookies are one user's session).
struct Browser {
    binary: String,
    profile: tempfile::TempDir,
    port: u16,
    token: &'static str,
}

impl Browser {
    fn run(&self, extra: &[&str], path: &str) -> std::process::Output {
        // The first visit signs in with the token link; the console swaps it for a cookie.
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("http://127.0.0.1:{}{path}{sep}token={}", self.port, self.token);
        std::process::Command::new(&self.binary)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    }

    /// The page's DOM after it loaded.
    fn dom(&self, path: &str) -> String {
        let out = self.run(&["--dump-dom"], path);
        assert!(out.status.success(), "chromium {path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A screenshot of the page at `file`.
    fn screenshot(&self, path: &str, file: &Path) {
        let out = self.run(&[&format!("--screenshot={}", file.display()), "--window-size=1280,1600"], path);
        assert!(out.status.success(), "chromium screenshot {path}: {}", String::from_utf8_lossy(&out.stderr));
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot of {path} is {size} bytes");
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The id of the first run in `runs list` whose line holds `text`.
fn run_id(lake: &Path, text: &str) -> Option<String> {
    run_at(lake, &["runs", "list"]).lines().find(|l| l.contains(text)).and_then(|l| l.split_whitespace().next()).map(str::to_string)
}

#[test]
fn the_console_shows_runs_assets_models_drift_and_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    churn_lake(&lake, &dir.path().join("churn.pt"));
    // Each written version was profiled when it was written (not on the first view).
    let kept: Vec<_> = std::fs::read_dir(lake.join("accounts/_profiles")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "one profile kept with accounts@0: {kept:?}");
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    assert_eq!(profile["rows"], 12_000, "{profile}");
    let tenure = profile["columns"].as_array().unwrap().iter().find(|c| c["name"] == "tenure").unwrap();
    let binned: u64 = tenure["bins"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(binned + tenure["nulls"].as_u64().unwrap(), 12_000, "every tenure binned or NULL");
    run_at(&lake, &["score", "today", "--model", "churn@1", "--key", "account_id"]);
    run_at(&lake, &["score", "older", "--model", "churn@1", "--key", "account_id"]);
    // A big input and a heavy model for a run that is still going when the console is used.
    run_at(&lake, &["asset", "write", "big", "--sql", &churn_accounts(1_000_000, 600_000, false)]);
    let heavy = dir.path().join("heavy.pt");
    mlp_model(&heavy, 2048, 7); // about a minute here: still running when the browser looks (it is cancelled then)

    let access = dir.path().join("access.toml");
    std::fs::write(&access, ACCESS).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _serve = Child(
        sluice_at(&lake)
            .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--access", access.to_str().unwrap(), "--executors", "1"])
            .env("TEST_RITA_PASSWORD", "rita-password")
            .env("TEST_RITA_TOKEN", READER_TOKEN)
            .env("TEST_OTTO_TOKEN", OPERATOR_TOKEN)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("the console", Duration::from_secs(60), || http_get(port, "/healthz").ends_with("ok"));

    // No credentials: sent to sign in; a wrong token: refused.
    assert!(http_get(port, "/runs").contains("location: /login"), "{}", http_get(port, "/runs"));
    assert!(http_request(port, "GET", "/runs", &["Authorization: Bearer nope"]).starts_with("HTTP/1.1 401"));

    // A long scoring run, still going while the console is used.
    let mut slow = Child(
        sluice_at(&lake)
            .args(["score", "big", "--model", heavy.to_str().unwrap(), "--features", "tenure,spend,tickets", "--key", "account_id"])
            .args(["--output", "slow", "--no-monitor", "--executors", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut running = None;
    wait_for("the slow run to start", Duration::from_secs(60), || {
        running = run_id(&lake, "running");
        running.is_some()
    });
    let running = running.unwrap();

    let binary = chromium();
    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let reader = Browser { binary: binary.clone(), profile: tempfile::tempdir().unwrap(), port, token: READER_TOKEN };
    let operator = Browser { binary, profile: tempfile::tempdir().unwrap(), port, token: OPERATOR_TOKEN };

    // Runs: the scoring runs with their drift verdicts; the reader has no cancel button, the
    // operator has one for the running run.
    let runs = reader.dom("/runs");
    assert!(runs.contains("rita (reader)"), "{runs}");
    assert!(runs.contains("older_predictions@0") && runs.contains("drift: tenure, prediction"), "{runs}");
    assert!(runs.contains("today_predictions@0") && runs.contains("no drift"), "{runs}");
    assert!(runs.contains(&running) && runs.contains(">running<"), "{runs}");
    assert!(!runs.contains("/cancel"), "a reader sees no cancel button:\n{runs}");
    // The running run says how far it is; the cluster page shows the executor's device.
    wait_for("the run's progress", Duration::from_secs(30), || {
        let runs = reader.dom("/runs");
        runs.contains("<progress") && runs.contains(r#"<span class="muted progress">scoring "#)
    });
    let cluster = reader.dom("/cluster");
    assert!(cluster.contains("<td>cpu</td>") && cluster.contains("Running tasks"), "{cluster}");
    assert!(operator.dom("/runs").contains(&format!("/runs/{running}/cancel")));

    // A reader cannot cancel; an operator can, and the run ends cancelled.
    let cancel = format!("/runs/{running}/cancel");
    let refused = http_request(port, "POST", &cancel, &[&format!("Authorization: Bearer {READER_TOKEN}")]);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("may not manage runs, executors and schedules"), "{refused}");
    assert!(run_at(&lake, &["runs", "show", &running]).contains("\"status\": \"running\""));
    let done = http_request(port, "POST", &cancel, &[&format!("Authorization: Bearer {OPERATOR_TOKEN}")]);
    assert!(done.starts_with("HTTP/1.1 303"), "{done}");
    wait_for("the run to be cancelled", Duration::from_secs(30), || {
        let _ = slow.0.try_wait(); // reaped, so its process is gone
        run_at(&lake, &["runs", "show", &running]).contains("\"status\": \"cancelled\"")
    });
    drop(slow);

    // Pages, each with real data, and a screenshot each.
    let older_run = run_id(&lake, "older_predictions@0").unwrap();
    let pages: [(&str, &str, &[&str]); 9] = [
        ("runs", "/runs", &["succeeded", "score"]),
        ("run", &format!("/runs/{older_run}"), &["older_predictions@0", "Drift of this run"]),
        ("assets", "/assets", &["accounts_split", "older_predictions_drift", "today"]),
        ("asset-accounts", "/assets/accounts", &["<svg class=\"histogram\"", "tenure", "median", "<svg class=\"lineage\""]),
        ("asset-predictions", "/assets/older_predictions", &["<svg class=\"lineage\"", "model churn@1", "older@0", "prediction"]),
        ("models", "/models", &["churn", "classification"]),
        ("model", "/models/churn", &["accounts_split@0", "auc", "tenure, spend, tickets"]),
        ("drift", "/drift", &["older_predictions_drift", "drift: tenure, prediction", "today_predictions_drift"]),
        ("cluster", "/cluster", &["Executors", "df://127.0.0.1:", "Jobs"]),
    ];
    for (name, path, wanted) in pages {
        let dom = reader.dom(path);
        for want in wanted {
            assert!(dom.contains(want), "{path} lacks {want}:\n{dom}");
        }
        reader.screenshot(path, &shots.join(format!("{name}.png")));
    }
    let drift = reader.dom("/drift/older_predictions_drift");
    assert_eq!(drift.matches("<svg class=\"drift-chart\"").count(), 4, "tenure, spend, tickets, prediction:\n{drift}");
    assert!(drift.contains("<svg class=\"metric-chart\""), "{drift}");
    assert!(drift.contains("normalized_wasserstein"), "{drift}");
    reader.screenshot("/drift/older_predictions_drift", &shots.join("drift-report.png"));

    // Drift gauges for Prometheus.
    let metrics = http_request(port, "GET", "/metrics", &[&format!("Authorization: Bearer {READER_TOKEN}")]);
    assert!(
        metrics.contains(
            "sluice_drift_detected{report=\"older_predictions_drift\",model=\"churn@1\",column=\"tenure\",metric=\"normalized_wasserstein\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("column=\"spend\",metric=\"normalized_wasserstein\"} 0"), "{metrics}");

}
