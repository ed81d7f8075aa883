//! A scheduler and two executors as separate processes on loopback; a scoring job loses one
//! executor to SIGKILL midway and still finishes, within a minute, with exactly one prediction
//! per input key: the scheduler notices the lost executor within seconds (heartbeats every 2 s,
//! timeout 8 s) and runs its tasks on the other one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tch::nn::{self, Module};
use tch::{CModule, Device, Kind, Tensor};

/// 3 -> 1024 -> 1024 -> 1: slow enough (tens of thousands of rows/s per core) to be killed midway.
fn slow_model(path: &Path) {
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "a", 3, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "b", 1024, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "c", 1024, 1, Default::default()));
    vs.freeze();
    let example = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let module = CModule::create_by_tracing("Slow", "forward", &[example], &mut |xs| vec![net.forward(&xs[0])]).unwrap();
    module.save(path).unwrap();
}

const ROWS: u64 = 300_000;

/// Executors the scheduler's REST API lists.
fn registered_executors(port: u16) -> usize {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let req = format!("GET /api/executors HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.matches("\"id\"").count()
}

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
    slow_model(&model);
    let events = format!(
        "SELECT value AS id, CAST(value % 100 AS FLOAT) / 10 AS a, CAST(value % 7 AS FLOAT) AS b, \
         CAST((value * 13) % 1000 AS FLOAT) / 100 AS c FROM (SELECT unnest(range(0, {ROWS})) AS value)"
    );
    run_at(&lake, &["asset", "write", "events", "--sql", &events, "--target-file-size", "512KB"]);

    let port = free_port();
    let scheduler_addr = format!("127.0.0.1:{port}");
    let logs = dir.path();
    let _scheduler = spawn(&lake, &["scheduler", "--port", &port.to_string()], &logs.join("scheduler.log"));
    let mut executors: Vec<Child> = ["exec-a", "exec-b"]
        .iter()
        .map(|id| {
            let args = ["executor", "--scheduler", &scheduler_addr, "--id", id, "--flight-port", "0", "--grpc-port", "0", "--vcores", "1"];
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
        .args(["--chunks", "1", "--cluster", &cluster])
        .stdout(Stdio::piped())
        .stderr(out)
        .spawn()
        .unwrap();

    // Kill exec-a once it is scoring (its predict logs batches), well before the job ends.
    let a_log = logs.join("exec-a.log");
    while !std::fs::read_to_string(&a_log).unwrap_or_default().contains("predict scored a batch") {
        assert!(score.try_wait().unwrap().is_none(), "the job ended before exec-a scored anything");
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
}
