//! `sluice score`: a million rows scored over two executors with exactly one prediction per key
//! and the values the model gives; a killed run resumed without rescoring its done chunks and
//! committed once; each bad-row policy and the error threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}

fn value(assets: &Path, sql: &str) -> String {
    first_value(&run_at(assets, &["sql", sql]))
}

const EVENTS: &str = "SELECT value AS id, CAST(value % 100 AS FLOAT) / 10 AS a, CAST(value % 7 AS FLOAT) AS b, \
    CAST((value * 13) % 1000 AS FLOAT) / 100 AS c FROM (SELECT unnest(range(0, 1000000)) AS value)";

#[test]
fn a_million_rows_scored_once_each_with_the_models_values() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS, "--target-file-size", "2MB"]);
    run_at(&lake, &["model", "register", "lin", model.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]);

    let out = run_at(&lake, &["score", "events", "--model", "lin@production", "--key", "id", "--output", "preds", "--chunks", "4"]);
    assert!(out.contains("model        lin@1"), "{out}");
    assert!(out.contains("chunks       4 scored now, 0 done before"), "{out}");
    assert!(out.contains("predictions  preds@0: 1000000 rows"), "{out}");
    assert_eq!(value(&lake, "SELECT COUNT(DISTINCT id) FROM preds"), "1000000");
    let wrong = "SELECT COUNT(*) FROM preds p JOIN events e ON p.id = e.id \
                 WHERE abs(p.prediction - (0.5 * e.a - 2 * e.b + 0.25 * e.c + 1)) > 1e-3 \
                 OR p.model <> 'lin' OR p.model_version <> 1";
    assert_eq!(value(&lake, wrong), "0");
    // The run's constants live once in the asset's log (partition values), not in every file.
    let shown = run_at(&lake, &["asset", "show", "preds"]);
    assert!(shown.contains("partitions model, model_version, run_id, scored_at"), "{shown}");
    let file = walk(&lake.join("preds")).into_iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let columns: Vec<String> = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(columns, ["id", "prediction"], "{}", file.display());
    let runs = value(&lake, "SELECT COUNT(DISTINCT run_id) || '/' || MIN(scored_at) FROM preds WHERE scored_at IS NOT NULL");
    assert!(runs.starts_with("1/20"), "{runs}");

    // The same as a job file (the example), recorded in the run catalog under the job's name.
    let out = ok(
        sluice_at(&lake).args(["run", "examples/score_events.toml"]).env("SCORE_MODEL", "lin@production").output().unwrap(),
        "score job file",
    );
    assert!(out.contains("predictions  event_scores@0: 1000000 rows"), "{out}");
    let runs = run_at(&lake, &["runs", "list"]);
    assert!(runs.lines().any(|l| l.contains("event_scores_nightly") && l.contains("succeeded") && l.contains("event_scores@0")), "{runs}");
}

#[test]
fn a_killed_run_resumes_without_rescoring_and_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("heavy.pt");
    mlp_model(&model, 256, 1);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS, "--target-file-size", "2MB"]);
    let args = ["score", "events", "--model", model.to_str().unwrap(), "--features", "a,b,c", "--key", "id", "--output", "heavy", "--chunks", "8"];
    let mut child = Child(sluice_at(&lake).args(args).stdout(std::process::Stdio::null()).spawn().unwrap());
    let done = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let Ok(runs) = std::fs::read_dir(lake.join("heavy")) else { return Vec::new() };
        runs.flatten()
            .flat_map(|run| std::fs::read_dir(run.path()).into_iter().flatten().flatten())
            .map(|chunk| chunk.path().join("_done"))
            .filter_map(|d| Some((d.clone(), std::fs::metadata(&d).ok()?.modified().ok()?)))
            .collect()
    };
    let started = Instant::now();
    while done().len() < 2 {
        assert!(child.0.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(240), "no chunk finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let before = done();
    assert!(before.len() < 8, "killed midway: {before:?}");
    assert!(!lake.join("heavy/_delta_log").exists(), "nothing committed by the killed run");

    let mut resume: Vec<&str> = args.to_vec();
    resume.push("--resume");
    let out = run_at(&lake, &resume);
    assert!(out.contains("(resumed)"), "{out}");
    assert!(out.contains(&format!("{} done before", before.len())), "{out}");
    for (marker, at) in &before {
        assert_eq!(std::fs::metadata(marker).unwrap().modified().unwrap(), *at, "{marker:?} was scored again");
    }
    assert_eq!(value(&lake, "SELECT COUNT(*) FROM heavy"), "1000000");
    assert_eq!(value(&lake, "SELECT COUNT(DISTINCT id) FROM heavy"), "1000000");
    let commits = std::fs::read_dir(lake.join("heavy/_delta_log")).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count();
    assert_eq!(commits, 1, "the predictions were committed once");
    let e = sluice_at(&lake).args(&resume).output().unwrap();
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("no unfinished scoring run"));
}

#[test]
fn bad_rows_fail_go_to_quarantine_or_get_null() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    // 1000 rows: 10 with a NULL a, 5 with a NaN b.
    run_at(
        &lake,
        &[
            "asset", "write", "dirty", "--sql",
            "SELECT value AS id, CASE WHEN value % 100 = 0 THEN NULL ELSE CAST(value AS FLOAT) END AS a, \
             CASE WHEN value % 200 = 1 THEN CAST('NaN' AS FLOAT) ELSE CAST(1 AS FLOAT) END AS b, \
             CAST(2 AS FLOAT) AS c FROM (SELECT unnest(range(0, 1000)) AS value)",
        ],
    );
    let m = model.to_str().unwrap();
    let score = |output: &str, extra: &[&str]| {
        let mut args = vec!["score", "dirty", "--model", m, "--features", "a,b,c", "--key", "id", "--output", output];
        args.extend_from_slice(extra);
        sluice_at(&lake).args(&args).output().unwrap()
    };
    let failed = score("p_fail", &[]);
    let e = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && e.contains("15 of 1000 rows of dirty@0 have a NULL or NaN feature"), "{e}");
    assert!(e.contains("--on-error quarantine"), "{e}");
    assert!(!lake.join("p_fail/_delta_log").exists());

    let out = ok(score("p_q", &["--on-error", "quarantine"]), "quarantine");
    assert!(out.contains("predictions  p_q@0: 985 rows") && out.contains("rejected     p_q_rejected@0: 15 rows"), "{out}");
    assert_eq!(value(&lake, "SELECT COUNT(*) FROM p_q_rejected WHERE reason LIKE '%NULL or NaN%'"), "15");

    let out = ok(score("p_null", &["--on-error", "null"]), "null");
    assert!(out.contains("predictions  p_null@0: 1000 rows"), "{out}");
    assert_eq!(value(&lake, "SELECT COUNT(*) FROM p_null WHERE prediction IS NULL"), "15");
    assert_eq!(value(&lake, "SELECT COUNT(*) FROM p_null WHERE id = 2 AND abs(prediction - (0.5 * 2 - 2 + 0.5 + 1)) < 1e-4"), "1");

    let over = score("p_over", &["--on-error", "quarantine", "--max-errors", "1%"]);
    let e = String::from_utf8_lossy(&over.stderr);
    assert!(!over.status.success() && e.contains("over max_errors = 1% of the records read"), "{e}");
}

#[test]
fn runs_are_listed_with_their_status_and_a_running_one_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("heavy.pt");
    mlp_model(&model, 256, 1);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS, "--target-file-size", "2MB"]);
    let args = ["score", "events", "--model", model.to_str().unwrap(), "--features", "a,b,c", "--key", "id", "--output", "slow", "--chunks", "16"];
    let mut child = Child(sluice_at(&lake).args(args).stdout(std::process::Stdio::null()).spawn().unwrap());
    let started = Instant::now();
    let id = loop {
        let list = run_at(&lake, &["runs", "list"]);
        if let Some(line) = list.lines().find(|l| l.contains(" score ") && l.contains(" running ")) {
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the score run never showed as running: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cancelled = run_at(&lake, &["runs", "cancel", &id]);
    assert!(cancelled.contains(&format!("cancel asked for run {id} (score events")), "{cancelled}");
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the run stopped");
    let shown: serde_json::Value = serde_json::from_str(&run_at(&lake, &["runs", "show", &id])).unwrap();
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert!(!lake.join("slow/_delta_log").exists(), "a cancelled run commits nothing");
    let list = run_at(&lake, &["runs", "list"]);
    assert!(list.lines().any(|l| l.starts_with(&id) && l.contains("cancelled")), "{list}");
    let e = sluice_at(&lake).args(["runs", "cancel", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("is not running (it cancelled)"));
}

/// Two outputs from three inputs: `(a + b + c, a - c)`.
fn two_output_model(path: &Path) {
    linear(path, &[1.0, 1.0, 1.0, 1.0, 0.0, -1.0], &[0.0, 0.0]);
}

#[test]
fn models_with_several_outputs_and_vector_features_score() {
    use std::sync::Arc;

    use arrow::array::{FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let two = dir.path().join("two.pt");
    two_output_model(&two);
    let linear = dir.path().join("linear.pt");
    linear_model(&linear);
    // 1000 rows: id, a, b, c and the same three as one fixed-size list column `v`.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ids: Vec<i64> = (0..1000).collect();
    let a: Vec<f32> = ids.iter().map(|i| (*i % 10) as f32).collect();
    let b: Vec<f32> = ids.iter().map(|i| (*i % 7) as f32 / 2.0).collect();
    let c: Vec<f32> = ids.iter().map(|i| (*i % 3) as f32).collect();
    let flat: Vec<f32> = (0..1000).flat_map(|i| [a[i], b[i], c[i]]).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let v = FixedSizeListArray::try_new(item.clone(), 3, Arc::new(Float32Array::from(flat)), None).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Float32, false),
        Field::new("b", DataType::Float32, false),
        Field::new("c", DataType::Float32, false),
        Field::new("v", DataType::FixedSizeList(item, 3), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Float32Array::from(a)),
            Arc::new(Float32Array::from(b)),
            Arc::new(Float32Array::from(c)),
            Arc::new(v),
        ],
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(data.join("v.parquet")).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    run_at(&lake, &["asset", "import", "vecs", data.to_str().unwrap()]);

    // Several outputs: the list and one named column each.
    run_at(&lake, &["model", "register", "two", two.to_str().unwrap(), "--inputs", "a, b, c", "--outputs", "total,diff"]);
    let out = run_at(&lake, &["score", "vecs", "--model", "two", "--key", "id", "--output", "two_scores"]);
    assert!(out.contains("two_scores@0: 1000 rows"), "{out}");
    let wrong = "SELECT COUNT(*) FROM two_scores s JOIN vecs v ON s.id = v.id \
                 WHERE abs(s.total - (v.a + v.b + v.c)) > 1e-4 OR abs(s.diff - (v.a - v.c)) > 1e-4 \
                 OR abs(s.prediction[1] - s.total) > 1e-6";
    assert_eq!(value(&lake, wrong), "0");

    // A fixed-size list column is as many features.
    let out = run_at(&lake, &["score", "vecs", "--model", linear.to_str().unwrap(), "--features", "v", "--key", "id", "--output", "v_scores"]);
    assert!(out.contains("v_scores@0: 1000 rows"), "{out}");
    let wrong = "SELECT COUNT(*) FROM v_scores s JOIN vecs v ON s.id = v.id \
                 WHERE abs(s.prediction - (0.5 * v.a - 2 * v.b + 0.25 * v.c + 1)) > 1e-4";
    assert_eq!(value(&lake, wrong), "0");
    // A file model has no version: NULL in its partition.
    assert_eq!(value(&lake, "SELECT COUNT(*) FROM v_scores WHERE model_version IS NULL AND model = 'linear'"), "1000");

    // An existing predictions asset laid out without partitions gets the constants on every row.
    let legacy = "SELECT CAST(-1 AS BIGINT) AS id, CAST(0 AS FLOAT) AS prediction, 'old' AS model, \
                  CAST(7 AS BIGINT) AS model_version, 'r0' AS run_id, CAST('2026-01-01' AS TIMESTAMP) AS scored_at";
    run_at(&lake, &["asset", "write", "legacy", "--sql", legacy]);
    let out = run_at(&lake, &["score", "vecs", "--model", linear.to_str().unwrap(), "--features", "v", "--key", "id", "--output", "legacy"]);
    assert!(out.contains("legacy@1: 1000 rows"), "{out}");
    assert_eq!(value(&lake, "SELECT COUNT(*) || '/' || COUNT(DISTINCT run_id) FROM legacy WHERE model = 'linear' OR id = -1"), "1001/2");
}

/// With the lake in object storage (Azurite) and the scheduler and executors as processes of
/// their own, each with its own model cache: a registered model reaches the executors through
/// the lake, not the client's disk. Each executor fetches the pinned version into its cache
/// (named by the digest, the same bytes as registered) and scores with it, through `sluice score`
/// and through `predict` in SQL.
#[test]
fn executors_fetch_registered_models_from_the_lake_into_their_own_caches() {
    let dir = tempfile::tempdir().unwrap();
    let container = format!("models{}", std::process::id());
    assert!(std::process::Command::new("bash")
        .arg(root().join("scripts/azurite.sh"))
        .args(["container", &container])
        .status()
        .unwrap()
        .success());
    let ws = dir.path().join("azurite.toml");
    std::fs::write(&ws, format!("[datastores.lake]\nurl = \"az://{container}/lake\"\nemulator = true\n\n[assets]\nlocation = \"lake\"\n"))
        .unwrap();
    let cache = |name: &str| dir.path().join(format!("cache-{name}"));
    let sluice = |cache_name: &str| {
        let mut cmd = sluice_cmd();
        cmd.env("SLUICE_WORKSPACE", &ws).env("SLUICE_MODEL_CACHE", cache(cache_name)).env_remove("SLUICE_ASSETS");
        cmd
    };
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    const ROWS: i64 = 100_000;
    let events = EVENTS.replace("range(0, 1000000)", &format!("range(0, {ROWS})"));
    ok(sluice("client").args(["asset", "write", "events", "--sql", &events, "--target-file-size", "128KB"]).output().unwrap(), "events");
    ok(
        sluice("client").args(["model", "register", "lin", model.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]).output().unwrap(),
        "register",
    );

    let running = spawn_cluster(&sluice, dir.path(), &["ex1", "ex2"]);
    let cluster = running.url.clone();
    let out = sluice("client")
        .args(["score", "events", "--model", "lin@production", "--key", "id", "--output", "preds", "--chunks", "1", "--cluster", &cluster])
        .output()
        .unwrap();
    let stdout = ok(out, "score on the cluster");
    assert!(stdout.contains(&format!("predictions  preds@0: {ROWS} rows")), "{stdout}");
    let value = |sql: &str| first_value(&ok(sluice("client").args(["sql", sql]).output().unwrap(), sql));
    let wrong = "SELECT COUNT(*) FROM preds p JOIN events e ON p.id = e.id \
                 WHERE abs(p.prediction - (0.5 * e.a - 2 * e.b + 0.25 * e.c + 1)) > 1e-3";
    assert_eq!(value(wrong), "0");
    assert_eq!(value("SELECT COUNT(DISTINCT id) FROM preds"), ROWS.to_string());

    // Each executor holds its own copy, named by the digest, byte for byte the registered file.
    let registered = std::fs::read(&model).unwrap();
    for id in ["ex1", "ex2"] {
        let copies: Vec<_> = walk_files(&cache(id)).into_iter().filter(|p| p.extension().is_some_and(|e| e == "pt")).collect();
        assert_eq!(copies.len(), 1, "{id}: {copies:?}\n{}", std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap());
        assert_eq!(std::fs::read(&copies[0]).unwrap(), registered, "{id}");
        let digest = copies[0].parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(digest.len() >= 8 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{}", copies[0].display());
        let log = std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap();
        assert!(log.contains("fetched model from the lake"), "{id}: {log}");
    }

    // `predict` in SQL on the cluster takes the same route.
    let sql = "SELECT ABS(SUM(CAST(predict('lin@production', a, b, c) AS DOUBLE))) AS total FROM events";
    let table = ok(sluice("client").args(["sql", sql, "--cluster", &cluster]).output().unwrap(), "sql predict");
    let total = first_value(&table);
    let expected: f64 = (0..ROWS).map(|v| 0.5 * (v % 100) as f64 / 10.0 - 2.0 * (v % 7) as f64 + 0.25 * ((v * 13) % 1000) as f64 / 100.0 + 1.0).sum();
    assert!(total.parse::<f64>().is_ok_and(|t| (t - expected.abs()).abs() <= 1e-4 * expected.abs()), "{table} vs {expected}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir)
}
