//! Secrets never leave their reference: a full ETL run from MariaDB with a password, logged at
//! debug level on an embedded cluster (plans travel to the scheduler and executors), then a run
//! with a wrong password; neither the logs, the errors, the run catalog, the asset's lineage nor
//! any file under the lake holds the password.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

fn mysql(sql: &str) {
    assert!(Command::new("bash").arg(root().join("scripts/mariadb.sh")).status().unwrap().success());
    let out = Command::new("mysql").args(["-h", "127.0.0.1", "-u", "root", "-e", sql]).output().unwrap();
    assert!(out.status.success(), "mysql: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every file under `dir`, as (path, bytes).
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_database_password_appears_in_no_log_error_record_or_file() {
    let id = std::process::id();
    let (db, user, password) = (format!("sluice_sec{id}"), format!("sluice_sec{id}"), format!("pw-{id}-Zq8!x"));
    mysql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db}; \
         CREATE TABLE {db}.orders (order_id BIGINT PRIMARY KEY, amount DOUBLE, updated_at DATETIME(6) NOT NULL); \
         INSERT INTO {db}.orders SELECT seq, seq * 0.5, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_500; \
         DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
         GRANT SELECT ON {db}.* TO '{user}'@'%';"
    ));
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nname = \"secret_orders\"\n\n[sources.shop]\nkind = \"mysql\"\n\
             connection = {{ host = \"127.0.0.1\", database = \"{db}\", user = \"{user}\", password = {{ env = \"SEC_DB_PASSWORD\" }} }}\n\
             read = {{ table = \"orders\", partitions = 2 }}\n\n[transform]\nsql = \"SELECT * FROM shop\"\n\n[sink]\nasset = \"orders\"\n"
        ),
    )
    .unwrap();
    let run = |secret: &str| {
        sluice_at(&lake)
            .env("SLUICE_LOG", "debug")
            .env("SEC_DB_PASSWORD", secret)
            .args(["run", job.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let good = run(&password);
    let good_out = format!("{}{}", String::from_utf8_lossy(&good.stdout), String::from_utf8_lossy(&good.stderr));
    assert!(good.status.success(), "{good_out}");
    assert!(good_out.contains("orders@0: 500 rows"), "{good_out}");
    assert!(good_out.contains("DEBUG"), "the run did not log at debug level");

    let bad = run("wrong-password-123");
    let bad_out = format!("{}{}", String::from_utf8_lossy(&bad.stdout), String::from_utf8_lossy(&bad.stderr));
    assert!(!bad.status.success(), "a wrong password was accepted");
    assert!(bad_out.contains("Access denied") || bad_out.contains("access denied"), "{bad_out}");

    let runs = run_at(&lake, &["runs", "list"]);
    let history = run_at(&lake, &["asset", "versions", "orders"]);
    let shown = run_at(&lake, &["asset", "show", "orders"]);
    for (what, text) in [("the run's output", &good_out), ("the failed run's output", &bad_out), ("runs list", &runs), ("asset versions", &history), ("asset show", &shown)] {
        assert!(!text.contains(&password), "{what} shows the password:\n{text}");
        assert!(!text.contains("wrong-password-123"), "{what} shows the wrong password:\n{text}");
    }
    assert_eq!(runs.lines().filter(|l| l.contains("secret_orders")).count(), 2, "{runs}");
    for line in runs.lines().filter(|l| l.contains("secret_orders")) {
        let id = line.split_whitespace().next().unwrap();
        let record = run_at(&lake, &["runs", "show", id]);
        assert!(!record.contains(&password) && !record.contains("wrong-password-123"), "{record}");
    }
    let written = files(&lake);
    assert!(written.len() > 3, "the lake holds {} files", written.len());
    for (path, bytes) in &written {
        assert!(!contains(bytes, &password), "{} holds the password", path.display());
    }
    mysql(&format!("DROP DATABASE IF EXISTS {db}; DROP USER IF EXISTS '{user}'@'%';"));
}
