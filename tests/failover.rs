//! A scheduler and two executors as separate processes on loopback; a scoring job loses one
//! executor to SIGKILL midway and still finishes, within a minute, with exactly one prediction
//! per input key: the scheduler notices the lost executor within seconds (heartbeats every 2 s,
//! timeout 8 s) and runs its tasks on the other one. The scheduler's health, readiness and
//! Prometheus endpoints and an executor's /metrics answer with what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const ROWS: u64 = 300_000;

fn spawn(lake: &Path, args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Child(
        sluice_at(lake)
            .env("SLUICE_LOG", "info,sluice_udfs=debug")
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_scoring_job_survives_a_killed_executor_with_one_prediction_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("slow.pt");
    mlp_model(&model, 1024, 3); // tens of thousands of rows/s per core
    let events = format!(
        "SELECT value AS id, CAST(value % 100 AS FLOAT) / 10 AS a, CAST(value % 7 AS FLOAT) AS b, \
         CAST((value * 13) % 1000 AS FLOAT) / 100 AS c FROM (SELECT unnest(range(0, {ROWS})) AS value)"
    );
    run_at(&lake, &["asset", "write", "events", "--sql", &events, "--target-file-size", "512KB"]);

    let port = free_port();
    let scheduler_addr = format!("127.0.0.1:{port}");
    let logs = dir.path();
    let _scheduler = spawn(&lake, &["scheduler", "--port", &port.to_string()], &logs.join("scheduler.log"));
    let metrics_port = free_port();
    let mut executors: Vec<Child> = ["exec-a", "exec-b"]
        .iter()
        .map(|id| {
            let mut args = vec!["executor", "--scheduler", &scheduler_addr, "--id", id, "--flight-port", "0", "--grpc-port", "0", "--vcores", "1"];
            let metrics = metrics_port.to_string();
            if *id == "exec-b" {
                args.extend(["--metrics-port", &metrics]);
            }
            spawn(&lake, &args, &logs.join(format!("{id}.log")))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered_executors(port) < 2 {
        assert!(Instant::now() < deadline, "executors did not register within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    let started = Instant::now();
    let cluster = format!("df://{scheduler_addr}");
    let out = std::fs::File::create(logs.join("score.log")).unwrap();
    let mut score = sluice_at(&lake)
        .args(["score", "events", "--model", model.to_str().unwrap(), "--key", "id", "--output", "preds"])
        .args(["--features", "a,b,c", "--chunks", "1", "--cluster", &cluster])
        .stdout(Stdio::piped())
        .stderr(out)
        .spawn()
        .unwrap();

    // Kill exec-a once it is scoring (its predict logs batches), well before the job ends.
    let a_log = logs.join("exec-a.log");
    while !std::fs::read_to_string(&a_log).unwrap_or_default().contains("predict scored a batch") {
        if score.try_wait().unwrap().is_some() {
            panic!("the job ended before exec-a scored anything:\n{}", std::fs::read_to_string(logs.join("score.log")).unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "exec-a scored nothing within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(score.try_wait().unwrap().is_none(), "the job ended before the executor could be killed");
    executors[0].0.kill().unwrap(); // SIGKILL
    executors[0].0.wait().unwrap();
    let killed_at = started.elapsed();

    let status = loop {
        if let Some(status) = score.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = score.kill();
            panic!("the job did not finish within 120 s; score log:\n{}", std::fs::read_to_string(logs.join("score.log")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let mut stdout = String::new();
    std::io::Read::read_to_string(score.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        status.success(),
        "score failed after exec-a was killed at {killed_at:?}:\n{stdout}\n{}",
        std::fs::read_to_string(logs.join("score.log")).unwrap()
    );
    assert!(took < Duration::from_secs(60), "the job took {took:?} (exec-a killed at {killed_at:?})");
    assert!(stdout.contains(&format!("predictions  preds@0: {ROWS} rows")), "{stdout}");

    // Exactly one prediction per key, and exec-b did the rest of the work.
    let counts = run_at(&lake, &["sql", "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS k, MIN(id), MAX(id) FROM preds"]);
    let row = counts.lines().find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit())).unwrap();
    let values: Vec<&str> = row.split('|').map(str::trim).filter(|v| !v.is_empty()).collect();
    assert_eq!(values, [ROWS.to_string(), ROWS.to_string(), "0".into(), (ROWS - 1).to_string()], "{counts}");
    let b_log = std::fs::read_to_string(logs.join("exec-b.log")).unwrap();
    assert!(b_log.contains("predict scored a batch"), "exec-b scored nothing");
    // The scheduler saw exec-a lost and gave its task to exec-b.
    let scheduler_log = std::fs::read_to_string(logs.join("scheduler.log")).unwrap();
    assert!(
        scheduler_log.lines().any(|l| l.contains("Reset") && l.contains("on lost Executor exec-a")),
        "the scheduler re-ran nothing of exec-a:\n{scheduler_log}"
    );

    // Operations: health, readiness and Prometheus metrics of the scheduler and an executor.
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(port, "/readyz").starts_with("HTTP/1.1 200"));
    let scheduler_metrics = http_get(port, "/api/metrics");
    assert!(scheduler_metrics.contains("job_completed_total"), "{scheduler_metrics}");
    let executor_metrics = http_get(metrics_port, "/metrics");
    let rows: u64 = executor_metrics
        .lines()
        .find(|l| l.starts_with("sluice_predict_rows_total{executor=\"exec-b\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no row counter:\n{executor_metrics}"));
    assert!(rows > 0 && rows <= ROWS * 2, "exec-b scored {rows} rows");
    assert!(http_get(metrics_port, "/healthz").ends_with("ok"));
}
