//! The run catalog: runs of every kind are listed with status, rows, output and error, and
//! `sluice submit` starts a job in the background and returns its run id at once; `sluice serve`
//! runs a job on a short cron schedule, never two runs of it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn runs_are_recorded_and_a_submitted_job_returns_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    run_at(&lake, &["asset", "write", "nums", "--sql", "SELECT value AS id FROM (SELECT unnest(range(0, 1000)) AS value)"]);
    run_at(&lake, &["split", "nums", "--key", "id"]);
    let failed = sluice_at(&lake).args(["split", "nums", "--key", "nope"]).output().unwrap();
    assert!(!failed.status.success());

    let list = run_at(&lake, &["runs", "list"]);
    let lines: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].contains(" split ") && lines[0].contains(" failed ") && lines[0].contains("has no column 'nope'"), "{list}");
    assert!(lines[1].contains(" split ") && lines[1].contains(" succeeded ") && lines[1].contains("1000") && lines[1].contains("nums_split@0"), "{list}");

    // Submitted: the id comes back at once, the run shows as running, then succeeded.
    let accounts = dir.path().join("accounts");
    std::fs::create_dir_all(&accounts).unwrap();
    let csv: String = std::iter::once("account_id;name;plan;seats\n".to_string())
        .chain((0..300).map(|i| format!("{i};A{i};pro;{}\n", i % 9)))
        .collect();
    std::fs::write(accounts.join("a.csv"), csv).unwrap();
    let out = sluice_at(&lake)
        .args(["submit", "examples/files_accounts_csv.toml"])
        .env("ACCOUNTS_DIR", format!("{}/", accounts.display()))
        .output()
        .unwrap();
    let id = ok(out, "submit").trim().to_string();
    assert!(!id.is_empty() && !id.contains(' '), "{id}");
    let started = Instant::now();
    let shown = loop {
        let shown: serde_json::Value = serde_json::from_str(&run_at(&lake, &["runs", "show", &id])).unwrap();
        if shown["status"] != "running" {
            break shown;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the submitted run did not end: {shown}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(shown["rows"], 300);
    assert_eq!(shown["output"], "accounts@0");
    assert_eq!(shown["kind"], "run");
    assert_eq!(shown["name"], "accounts_from_csv");
    let e = sluice_at(&lake).args(["runs", "show", "nope"]).output().unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("no run nope in the run catalog"));
}

#[test]
fn a_scheduled_job_fires_on_its_cron_and_never_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let data = dir.path().join("accounts");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.csv"), "account_id;plan\n1;pro\n2;free\n").unwrap();
    let job = dir.path().join("every2s.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nname = \"accounts_every_2s\"\nschedule = \"*/2 * * * * *\"\ntimezone = \"Europe/Berlin\"\n\n\
             [sources.accounts]\nkind = \"files\"\nurl = \"{}/\"\nformat = \"csv\"\ndelimiter = \";\"\n\n\
             [sink]\nasset = \"accounts\"\nmode = \"overwrite\"\n",
            data.display()
        ),
    )
    .unwrap();
    let out = run_at(&lake, &["serve", job.to_str().unwrap(), "--for", "7"]);
    assert!(out.contains("serving      accounts_every_2s") && out.contains("in Europe/Berlin"), "{out}");
    let started = out.lines().filter(|l| l.starts_with("started")).count();
    assert!(started >= 2, "at least two fire times in 7 s: {out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ended")).count(), started, "serve waits for its runs: {out}");

    let list = run_at(&lake, &["runs", "list", "--limit", "100"]);
    let mut runs: Vec<(String, String, String)> = Vec::new();
    for line in list.lines().filter(|l| l.contains("accounts_every_2s")) {
        let id = line.split_whitespace().next().unwrap().to_string();
        let shown: serde_json::Value = serde_json::from_str(&run_at(&lake, &["runs", "show", &id])).unwrap();
        let status = shown["status"].as_str().unwrap().to_string();
        assert!(status == "succeeded" || status == "skipped", "{shown}");
        if status == "succeeded" {
            assert_eq!(shown["rows"], 2);
            runs.push((shown["started"].as_str().unwrap().into(), shown["finished"].as_str().unwrap().into(), id));
        }
    }
    assert_eq!(runs.len(), started, "{list}");
    runs.sort();
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two runs of the job overlapped: {pair:?}");
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&job).unwrap().replace("*/2 * * * * *", "* * *")).unwrap();
    let e = sluice_at(&lake).args(["serve", bad.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("5 cron fields"), "{}", String::from_utf8_lossy(&e.stderr));
    // A duration that cannot be one is refused by the command line, never a panic.
    for value in ["inf", "-1", "NaN", "1e300"] {
        let e = sluice_at(&lake).args(["serve", job.to_str().unwrap(), &format!("--for={value}")]).output().unwrap();
        let stderr = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && stderr.contains("give a number of seconds") && !stderr.contains("panicked"), "--for {value}: {stderr}");
    }
}
