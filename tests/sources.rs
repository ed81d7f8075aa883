//! `sluice run` with the example job files, as users run them: PostgreSQL incrementally and
//! spread over two executor processes, NDJSON and CSV files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn psql(sql: &str) {
    assert!(Command::new("bash").arg(root().join("scripts/postgres.sh")).status().unwrap().success());
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
}

/// A schema unique to this test with a `customers` table of `rows` rows; dropped on drop.
struct Customers(String);

impl Customers {
    fn new(rows: usize) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let schema = format!("sluice_c{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        psql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.customers (id bigint PRIMARY KEY, name text, country text, \
             lifetime_value numeric(12,2), updated_at timestamptz NOT NULL); \
             INSERT INTO {schema}.customers SELECT g, 'customer ' || g, (ARRAY['DE','FR','US'])[1 + g % 3], \
             (g % 1000) * 1.25, TIMESTAMPTZ '2026-01-01' + g * INTERVAL '1 second' FROM generate_series(1, {rows}) g;"
        ));
        Self(schema)
    }
    fn table(&self) -> String {
        format!("{}.customers", self.0)
    }
}

impl Drop for Customers {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .output();
    }
}

fn count(assets: &Path, sql: &str) -> String {
    first_value(&ok(sluice_at(assets).args(["sql", sql]).output().unwrap(), sql))
}

#[test]
fn postgres_example_reruns_pick_up_inserts_and_updates_only() {
    let db = Customers::new(1000);
    let lake = tempfile::tempdir().unwrap();
    let run = || {
        let out = sluice_at(lake.path())
            .args(["run", "examples/postgres_customers.toml"])
            .env("CUSTOMERS_TABLE", db.table())
            .output()
            .unwrap();
        ok(out, "sluice run examples/postgres_customers.toml")
    };
    let first = run();
    assert!(first.contains("customers@0: 1000 rows"), "{first}");
    assert!(first.contains("crm: 4 partitions read on the executors"), "{first}");

    // 10 new customers and 5 changed ones since the first run.
    psql(&format!(
        "INSERT INTO {t} SELECT g, 'new ' || g, 'DE', 1, TIMESTAMPTZ '2026-06-01' + g * INTERVAL '1 second' \
         FROM generate_series(1001, 1010) g; \
         UPDATE {t} SET country = 'NL', updated_at = TIMESTAMPTZ '2026-07-01' + id * INTERVAL '1 second' WHERE id <= 5;",
        t = db.table()
    ));
    let second = run();
    assert!(second.contains("customers@1: 15 rows"), "{second}");
    assert_eq!(count(lake.path(), "SELECT COUNT(*) FROM customers@1 WHERE country = 'NL'"), "5");
    assert_eq!(count(lake.path(), "SELECT MIN(id) FROM customers@1 WHERE name LIKE 'new%'"), "1001");
    let third = run();
    assert!(third.contains("customers@2: 0 rows"), "no changes, nothing read again: {third}");
    // The watermark travels with the versions.
    let versions = ok(sluice_at(lake.path()).args(["asset", "versions", "customers"]).output().unwrap(), "versions");
    assert!(versions.contains(&format!("postgres:test/{}", db.table())), "{versions}");
    // Sums over all versions: every source row landed once per change.
    assert_eq!(count(lake.path(), "SELECT COUNT(DISTINCT id) FROM customers"), "1010");
}

#[test]
fn a_million_postgres_rows_are_read_by_both_executor_processes() {
    let db = Customers::new(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spawn = |args: Vec<String>, log: &str| {
        let file = std::fs::File::create(dir.path().join(log)).unwrap();
        Child(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(&args)
                .env("SLUICE_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(file)
                .spawn()
                .unwrap(),
        )
    };
    let _scheduler = spawn(vec!["scheduler".into(), "--port".into(), port.to_string()], "scheduler.log");
    let executors: Vec<_> = (1..=2)
        .map(|i| {
            let args = ["executor", "--scheduler", &format!("127.0.0.1:{port}"), "--id", &format!("ex{i}")]
                .iter()
                .map(|s| s.to_string())
                .chain(["--flight-port", "0", "--grpc-port", "0", "--vcores", "1"].iter().map(|s| s.to_string()))
                .chain(["--work-dir".to_string(), dir.path().join(format!("w{i}")).display().to_string()])
                .collect();
            spawn(args, &format!("ex{i}.log"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["ex1.log", "ex2.log"]
        .iter()
        .any(|l| !std::fs::read_to_string(dir.path().join(l)).unwrap_or_default().contains("executor starting"))
    {
        assert!(Instant::now() < deadline, "executors did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // registration with the scheduler
    let out = sluice_at(&dir.path().join("lake"))
        .args(["run", "examples/postgres_customers.toml", "--cluster", &format!("df://127.0.0.1:{port}")])
        .env("CUSTOMERS_TABLE", db.table())
        .output()
        .unwrap();
    let stdout = ok(out, "sluice run on the cluster");
    assert!(stdout.contains("customers@0: 1000000 rows"), "{stdout}");
    drop(executors);
    let mut total = 0u64;
    for log in ["ex1.log", "ex2.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        let rows: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("read partition"))
            .filter_map(|l| l.split("rows=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(!rows.is_empty(), "{log} read no partition:\n{text}");
        total += rows.iter().sum::<u64>();
    }
    assert_eq!(total, 1_000_000, "every row read exactly once, across both executors");
}

#[test]
fn file_examples_land_ndjson_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // NDJSON: a plain file and a gzip file of device events; the gzip one re-sends 20 events of the
    // first, and the plain one has a cut-off line, a reading that is not a number and a blank line.
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    let line = |i: usize| {
        format!(
            "{{\"device_id\": \"d{}\", \"ts\": \"2026-11-{:02}T10:{:02}:{:02}\", \"temperature\": {}.5, \"battery\": {}}}\n",
            i % 7,
            20 + i % 3,
            i / 60,
            i % 60,
            i % 40,
            i % 100
        )
    };
    let mut plain: String = (0..150).map(line).collect();
    plain.push_str("{\"device_id\": \"d1\", \"ts\": \"2026-11-20T11:00:00\", \"temp\n");
    plain.push('\n');
    plain.push_str("{\"device_id\": \"d2\", \"ts\": \"2026-11-20T11:00:01\", \"temperature\": \"hot\"}\n");
    plain.extend((150..300).map(line));
    std::fs::write(events.join("a.json"), plain).unwrap();
    let resent: String = (280..500).map(line).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, resent.as_bytes()).unwrap();
    std::fs::write(events.join("b.json.gz"), gz.finish().unwrap()).unwrap();

    let run_events = |max_errors: &str| {
        sluice_at(&lake)
            .args(["run", "examples/files_device_events.toml"])
            .env("EVENTS_DIR", format!("{}/", events.display()))
            .env("EVENTS_MAX_ERRORS", max_errors)
            .output()
            .unwrap()
    };
    let stdout = ok(run_events("5%"), "device events");
    assert!(stdout.contains("device_events@0: 500 rows"), "{stdout}");
    assert!(stdout.contains("records      522 read = 500 landed + 2 quarantined + 20 dropped"), "{stdout}");
    assert!(stdout.contains("device_events_quarantine@0: 2 records"), "{stdout}");
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM device_events"), "500");
    assert_eq!(count(&lake, "SELECT COUNT(DISTINCT (device_id, ts)) FROM device_events"), "500");
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM device_events WHERE day = DATE '2026-11-21'"), "167");
    let bad = ok(
        sluice_at(&lake)
            .args(["sql", "SELECT location, reason, raw FROM device_events_quarantine ORDER BY location"])
            .output()
            .unwrap(),
        "quarantine",
    );
    assert!(bad.contains("a.json line 151") && bad.contains("a.json line 153"), "{bad}");
    assert!(bad.contains("temperature") && bad.contains("hot"), "{bad}");

    // Over the error threshold: the job fails with a summary, the events asset gets no version,
    // and the bad records are kept.
    let out = run_events("1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad") && stderr.contains("device_events_quarantine@1"), "{stderr}");
    let versions = ok(sluice_at(&lake).args(["asset", "versions", "device_events"]).output().unwrap(), "versions");
    assert!(!versions.contains("\n1 ") && !versions.contains("| 1 "), "no new version: {versions}");

    // CSV from a spreadsheet: ';', a header, windows-1252 text, a quoted name holding the
    // delimiter, a quote and a line break; one row with a missing field and one whose seats are
    // not a number go to the quarantine, the other 250 land.
    let accounts = dir.path().join("accounts");
    std::fs::create_dir_all(&accounts).unwrap();
    let mut csv: Vec<u8> = b"account_id;name;plan;seats\r\n".to_vec();
    for i in 0..250 {
        let name: &[u8] = match i {
            7 => b"\"M\xfcller; Sohn \"\"GmbH\"\"\nBerlin\"",
            _ => b"Acme",
        };
        csv.extend_from_slice(format!("{i};").as_bytes());
        csv.extend_from_slice(name);
        csv.extend_from_slice(format!(";{};{}\r\n", ["free", "pro", "team"][i % 3], i % 50).as_bytes());
        if i == 100 {
            csv.extend_from_slice(b"1000;Short;pro\r\n1001;Bad;pro;many\r\n");
        }
    }
    std::fs::write(accounts.join("export.csv"), csv).unwrap();
    let out = sluice_at(&lake)
        .args(["run", "examples/files_accounts_csv.toml"])
        .env("ACCOUNTS_DIR", format!("{}/", accounts.display()))
        .output()
        .unwrap();
    let stdout = ok(out, "accounts csv");
    assert!(stdout.contains("accounts@0: 250 rows"), "{stdout}");
    assert!(stdout.contains("records      252 read = 250 landed + 2 quarantined"), "{stdout}");
    assert_eq!(
        count(&lake, "SELECT SUM(seats) FROM accounts WHERE plan = 'team'"),
        (0..250).filter(|i| i % 3 == 2).map(|i| i % 50).sum::<usize>().to_string()
    );
    assert_eq!(
        count(&lake, "SELECT COUNT(*) FROM accounts WHERE account_id = 7 AND name = 'Müller; Sohn \"GmbH\"' || chr(10) || 'Berlin'"),
        "1"
    );
    let bad = ok(
        sluice_at(&lake).args(["sql", "SELECT location, reason FROM accounts_quarantine ORDER BY location"]).output().unwrap(),
        "csv quarantine",
    );
    assert!(bad.contains("export.csv line 104") && bad.contains("3 fields where the source has 4 columns"), "{bad}");
    assert!(bad.contains("export.csv line 105") && bad.contains("'many' is not a Int32"), "{bad}");

    // A mistake in a job file is reported with its line before anything runs.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(root().join("examples/files_accounts_csv.toml"))
            .unwrap()
            .replace("delimiter =", "delimitr ="),
    )
    .unwrap();
    let out = sluice_at(&lake).args(["run"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("bad.toml") && stderr.contains("delimitr"), "{stderr}");
    assert!(!stderr.contains("embedded cluster"), "nothing may start before the job file is valid: {stderr}");
}

fn mysql(sql: &str) {
    assert!(Command::new("bash").arg(root().join("scripts/mariadb.sh")).status().unwrap().success());
    let out = Command::new("mysql").args(["-h", "127.0.0.1", "-u", "root", "-e", sql]).output().unwrap();
    assert!(out.status.success(), "mysql: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mysql_example_reruns_pick_up_inserts_and_updates_only() {
    let db = format!("sluice_o{}", std::process::id());
    mysql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db}; \
         CREATE TABLE {db}.orders (order_id BIGINT PRIMARY KEY, account_id INT, amount DECIMAL(10,2), \
         status ENUM('open','paid','refunded'), updated_at DATETIME(6) NOT NULL); \
         INSERT INTO {db}.orders SELECT seq, seq % 50, seq * 0.5, 'open', \
         TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_2000;"
    ));
    let lake = tempfile::tempdir().unwrap();
    let run = || {
        let out = sluice_at(lake.path())
            .args(["run", "examples/mysql_orders.toml"])
            .env("MYSQL_DATABASE", &db)
            .output()
            .unwrap();
        ok(out, "sluice run examples/mysql_orders.toml")
    };
    let first = run();
    assert!(first.contains("orders@0: 2000 rows") && first.contains("shop: 4 partitions"), "{first}");
    mysql(&format!(
        "INSERT INTO {db}.orders VALUES (2001, 1, 9.99, 'open', '2026-05-01 00:00:00'); \
         UPDATE {db}.orders SET status = 'paid', updated_at = '2026-05-02 00:00:00' WHERE order_id IN (7, 8, 9);"
    ));
    let second = run();
    assert!(second.contains("orders@1: 4 rows"), "{second}");
    assert_eq!(count(lake.path(), "SELECT COUNT(*) FROM orders@1 WHERE status = 'paid'"), "3");
    let third = run();
    assert!(third.contains("orders@2: 0 rows"), "{third}");
    mysql(&format!("DROP DATABASE IF EXISTS {db}"));
}

#[test]
fn unstructured_files_land_as_rows_with_their_bytes_or_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("scans")).unwrap();
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 500]].concat();
    std::fs::write(docs.join("logo.png"), &png).unwrap();
    std::fs::write(docs.join("scans/contract.pdf"), b"%PDF-1.7 a contract").unwrap();
    std::fs::write(docs.join("call.wav"), vec![1u8; 5000]).unwrap();
    std::fs::write(docs.join(".hidden"), b"not landed").unwrap();
    let out = sluice_at(&lake)
        .args(["run", "examples/files_documents_binary.toml"])
        .env("DOCS_DIR", format!("{}/", docs.display()))
        .env("DOCS_MAX_INLINE_BYTES", "4096")
        .output()
        .unwrap();
    let stdout = ok(out, "documents");
    assert!(stdout.contains("documents@0: 3 rows"), "{stdout}");
    let rows = ok(
        sluice_at(&lake)
            .args([
                "sql",
                "SELECT name, size, content_type, inline, character_length(encode(content, 'hex')) / 2 AS bytes, \
                 modified > TIMESTAMP '2020-01-01T00:00:00Z' AS recent FROM documents ORDER BY name",
            ])
            .output()
            .unwrap(),
        "documents rows",
    );
    let lines: Vec<String> = rows
        .lines()
        .filter(|l| l.contains(".png") || l.contains(".pdf") || l.contains(".wav"))
        .map(|l| l.split('|').map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "call.wav 5000 audio/wav false true",
            "contract.pdf 19 application/pdf true 19 true",
            "logo.png 508 image/png true 508 true",
        ],
        "{rows}"
    );
    // The bytes are the file's, byte for byte.
    let hex = count(&lake, "SELECT encode(content, 'hex') FROM documents WHERE name = 'contract.pdf'");
    assert_eq!(hex, b"%PDF-1.7 a contract".iter().map(|b| format!("{b:02x}")).collect::<String>());
}

/// Numbers written as strings in a number column are quarantined with the key and value, and
/// land only where the source says `coerce = true`; counts of read, landed and quarantined add up.
#[test]
fn ndjson_numbers_written_as_strings_are_quarantined_unless_coerced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("events");
    std::fs::create_dir_all(&data).unwrap();
    let lines = [
        r#"{"seq": 1, "device": "a", "v": 1.5}"#,
        r#"{"seq": "2", "device": "b", "v": 2.5}"#,
        r#"{"seq": 3, "device": "7", "v": 3.5}"#,
        r#"{"seq": 4, "device": "d", "v": "4.5"}"#,
        r#"{"seq": 5, "device": "e", "v": 5.5}"#,
    ];
    std::fs::write(data.join("part.json"), lines.join("\n") + "\n").unwrap();
    let job = |coerce: bool, asset: &str| {
        let path = dir.path().join(format!("{asset}.toml"));
        std::fs::write(
            &path,
            format!(
                "[job]\nname = \"{asset}\"\n\n[sources.events]\nkind = \"files\"\nurl = \"{}\"\nformat = \"ndjson\"\n\
                 schema = \"seq bigint, device string, v double\"\ninfer = false\ncoerce = {coerce}\n\n[sink]\nasset = \"{asset}\"\n",
                data.display()
            ),
        )
        .unwrap();
        path
    };
    let lake = dir.path().join("lake");
    let strict = ok(sluice_at(&lake).arg("run").arg(job(false, "strict")).output().unwrap(), "strict run");
    assert!(strict.contains("records      5 read = 3 landed + 2 quarantined"), "{strict}");
    let reasons = ok(sluice_at(&lake).args(["sql", "SELECT reason FROM strict_quarantine ORDER BY location"]).output().unwrap(), "q");
    assert!(reasons.contains("'seq' is the string \"2\"") && reasons.contains("'v' is the string \"4.5\""), "{reasons}");
    assert!(reasons.contains("coerce = true"), "{reasons}");
    assert_eq!(count(&lake, "SELECT SUM(seq) FROM strict"), "9");
    let coerced = ok(sluice_at(&lake).arg("run").arg(job(true, "coerced")).output().unwrap(), "coerced run");
    assert!(coerced.contains("records      5 read = 5 landed + 0 quarantined"), "{coerced}");
    assert_eq!(count(&lake, "SELECT SUM(seq) FROM coerced"), "15");

    // The counts are taken apart: a transform that makes two rows of each shows as such, not as
    // an equation that holds by construction.
    let doubled = dir.path().join("doubled.toml");
    let text = std::fs::read_to_string(job(true, "doubled")).unwrap()
        + "\n[transform]\nsql = \"SELECT e.*, k FROM events e CROSS JOIN (SELECT unnest([1, 2]) AS k) AS twice\"\n";
    std::fs::write(&doubled, text).unwrap();
    let out = ok(sluice_at(&lake).arg("run").arg(&doubled).output().unwrap(), "doubled run");
    assert!(out.contains("records      5 read; 10 landed, 0 quarantined (5 more than read: the transform makes rows)"), "{out}");
}

/// One NDJSON line is exactly one JSON value, and a record without its de-duplication key or
/// time (missing or null) cannot land: each is quarantined with its reason, and a line whose
/// strings hold braces still lands.
#[test]
fn ndjson_lines_with_text_after_the_record_or_without_their_key_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    let good = |i: usize| format!("{{\"device_id\": \"d{i}\", \"ts\": \"2026-11-20T10:00:{i:02}\", \"temperature\": {i}.5, \"battery\": 9}}");
    let mut lines: Vec<String> = (0..10).map(good).collect();
    lines.push(format!("{} }}{{", good(10)));
    lines.push(format!("{}{}", good(11), good(12)));
    lines.push(r#"{"ts": "2026-11-20T10:00:13", "temperature": 13.5, "battery": 9}"#.into());
    lines.push(r#"{"device_id": null, "ts": "2026-11-20T10:00:14", "temperature": 14.5, "battery": 9}"#.into());
    lines.push(r#"{"device_id": "d15", "temperature": 15.5, "battery": 9}"#.into());
    lines.push(r#"{"device_id": "}{\"}{", "ts": "2026-11-20T10:00:16", "temperature": 16.5, "battery": 9}"#.into());
    std::fs::write(events.join("a.json"), lines.join("\n") + "\n").unwrap();
    let lake = dir.path().join("lake");
    let out = sluice_at(&lake)
        .args(["run", "examples/files_device_events.toml"])
        .env("EVENTS_DIR", format!("{}/", events.display()))
        .env("EVENTS_MAX_ERRORS", "50%")
        .output()
        .unwrap();
    let stdout = ok(out, "device events");
    assert!(stdout.contains("records      16 read = 11 landed + 5 quarantined"), "{stdout}");
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM device_events WHERE device_id IS NULL OR ts IS NULL"), "0");
    assert_eq!(count(&lake, "SELECT SUM(temperature) FROM device_events"), "66.5", "lines 1-10 and 16");
    let bad = ok(
        sluice_at(&lake)
            .args(["sql", "SELECT location || ': ' || reason FROM device_events_quarantine ORDER BY location"])
            .output()
            .unwrap(),
        "quarantine",
    );
    for (line, reason) in [
        (11, "more than one JSON value on one record: `}{` follows the object"),
        (12, "more than one JSON value on one record: `{\"device_id\": \"d12\","),
        (13, "'device_id' is missing, and every record must have it"),
        (14, "'device_id' is null, and every record must have it"),
        (15, "'ts' is missing, and every record must have it"),
    ] {
        assert!(bad.contains(&format!("a.json line {line}: {reason}")), "line {line}: {bad}");
    }
}

/// PostgreSQL real/double columns holding NaN and both infinities land, and the new version's
/// profile counts them apart (profiling used to fail on them) with the finite values' moments.
#[test]
fn nan_and_infinities_from_postgres_land_and_are_profiled_apart() {
    static N: AtomicUsize = AtomicUsize::new(0);
    let schema = format!("sluice_nan{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.readings (id bigint PRIMARY KEY, r real, d double precision); \
         INSERT INTO {schema}.readings SELECT g, g / 10.0, g / 100.0 FROM generate_series(1, 200) g; \
         INSERT INTO {schema}.readings VALUES (201, 'NaN', 'NaN'), (202, 'Infinity', 'Infinity'), \
         (203, '-Infinity', '-Infinity'), (204, 'Infinity', NULL), (205, NULL, 'NaN');"
    ));
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let job = dir.path().join("readings.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nname = \"readings\"\n\n[sources.iot]\nkind = \"postgres\"\n\
             connection = {{ host = \"127.0.0.1\", database = \"test\", user = \"postgres\" }}\n\
             read = {{ table = \"{schema}.readings\", partition_column = \"id\", partitions = 2 }}\n\n\
             [sink]\nasset = \"readings\"\nmode = \"append\"\n"
        ),
    )
    .unwrap();
    let out = sluice_at(&lake).args(["run", job.to_str().unwrap()]).env("SLUICE_LOG", "info").output().unwrap();
    let _ = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"]).arg(format!("DROP SCHEMA {schema} CASCADE")).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = ok(out.clone(), "sluice run readings");
    assert!(stdout.contains("readings@0: 205 rows"), "{stdout}");
    assert!(!stderr.contains("was not profiled"), "{stderr}");
    assert_eq!(count(&lake, "SELECT COUNT(*) FROM readings WHERE isnan(d)"), "2");
    // The profile kept with the version.
    let profiles: Vec<_> = std::fs::read_dir(lake.join("readings/_profiles")).unwrap().flatten().collect();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(profiles[0].path()).unwrap()).unwrap();
    let column = |name: &str| profile["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let d = column("d");
    assert_eq!((d["count"].as_u64(), d["nulls"].as_u64()), (Some(200), Some(1)), "{d}");
    assert_eq!((d["nan"].as_u64(), d["pos_inf"].as_u64(), d["neg_inf"].as_u64()), (Some(2), Some(1), Some(1)), "{d}");
    assert_eq!((d["min"].as_f64(), d["max"].as_f64()), (Some(0.01), Some(2.0)), "{d}");
    assert!((d["mean"].as_f64().unwrap() - 1.005).abs() < 1e-9, "{d}");
    let r = column("r");
    assert_eq!((r["count"].as_u64(), r["nulls"].as_u64()), (Some(200), Some(1)), "{r}");
    assert_eq!((r["nan"].as_u64(), r["pos_inf"].as_u64(), r["neg_inf"].as_u64()), (Some(1), Some(2), Some(1)), "{r}");
}
