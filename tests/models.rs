//! `sluice train` and the model registry: a model trained on a split asset is registered with
//! its metrics and lineage, promoted, and scored with `predict('churn@production', ...)`, which
//! resolves the alias once and records the version used; aliases move, archived versions are
//! refused, and bad input gets a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;

use common::*;

fn fails(assets: &Path, args: &[&str]) -> String {
    let out = sluice_at(assets).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Accounts whose churn follows tickets and tenure, with some noise from the key.
const ACCOUNTS: &str = "SELECT value AS account_id, CAST(value % 60 AS DOUBLE) AS tenure, \
    CAST((value * 37) % 500 AS DOUBLE) AS spend, value % 7 AS tickets, \
    (value % 7) * 10 - (value % 60) + ((value * 7919) % 13) > 25 AS churned \
    FROM (SELECT unnest(range(0, 12000)) AS value)";

#[test]
fn a_trained_model_is_registered_promoted_and_scored_by_alias() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let models = dir.path().join("models");
    run_at(&lake, &["asset", "write", "accounts", "--sql", ACCOUNTS]);
    run_at(&lake, &["split", "accounts", "--method", "stratified", "--key", "account_id", "--label", "churned"]);

    let out_1 = models.join("churn-1.pt");
    let trained = run_at(
        &lake,
        &[
            "train", "accounts_split", "--label", "churned", "--features", "tenure,spend,tickets", "--epochs", "15",
            "--register", "churn", "--alias", "staging", "--output", out_1.to_str().unwrap(),
        ],
    );
    assert!(trained.contains("trained      classification on accounts_split@0 (8400 / 1800 / 1800 rows)"), "{trained}");
    assert!(trained.contains("registered   churn@1 (@staging)"), "{trained}");
    let auc: f64 = trained
        .lines()
        .find(|l| l.starts_with("test"))
        .and_then(|l| l.split("AUC ").nth(1)?.split(',').next()?.parse().ok())
        .unwrap();
    assert!(auc > 0.85, "the model learnt the rule: {trained}");

    // The version's record: inputs, outputs, metrics, lineage to the split dataset and training.
    let shown = run_at(&lake, &["model", "show", "churn@staging"]);
    let record: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(record["version"], 1);
    assert_eq!(record["inputs"][2]["name"], "tickets");
    assert_eq!(record["outputs"][0], "probability");
    assert!(record["metrics"]["test"]["auc"].as_f64().unwrap() > 0.85, "{shown}");
    assert_eq!(record["lineage"]["datasets"][0], "accounts_split@0");
    assert_eq!(record["lineage"]["split"]["method"], "stratified");
    assert_eq!(record["lineage"]["split"]["input"], "accounts@0");
    assert_eq!(record["lineage"]["training"]["options"]["seed"], 42);

    // A second version (logistic), then production moves between them.
    let out_2 = models.join("churn-2.pt");
    let second = run_at(
        &lake,
        &[
            "train", "accounts_split", "--label", "churned", "--features", "tenure,spend,tickets", "--model", "linear",
            "--register", "churn", "--output", out_2.to_str().unwrap(),
        ],
    );
    assert!(second.contains("registered   churn@2"), "{second}");
    assert!(run_at(&lake, &["model", "promote", "churn@1", "production"]).contains("churn@production -> version 1"));

    let score = |asset: &str| {
        run_at(
            &lake,
            &[
                "asset", "write", asset, "--sql",
                "SELECT account_id, predict('churn@production', tenure, spend, tickets) AS p FROM accounts_split \
                 WHERE split = 'test'",
            ],
        )
    };
    let scored = score("scores");
    assert!(scored.contains("model        churn@production = churn version 1"), "{scored}");
    assert!(scored.contains("scores@0: 1800 rows"), "{scored}");
    let versions = run_at(&lake, &["asset", "versions", "scores"]);
    assert!(versions.contains("accounts_split@0, model churn@production=v1"), "the version used is recorded: {versions}");

    let moved = run_at(&lake, &["model", "promote", "churn@2", "production"]);
    assert!(moved.contains("churn@production -> version 2 (was 1)"), "{moved}");
    assert!(score("scores").contains("churn@production = churn version 2"));
    let versions = run_at(&lake, &["asset", "versions", "scores"]);
    assert!(versions.contains("model churn@production=v2"), "{versions}");
    // The two versions score differently: each run used its own.
    let differ = "SELECT COUNT(*) FROM \"scores@0\" a JOIN \"scores@1\" b ON a.account_id = b.account_id \
                  WHERE abs(a.p - b.p) > 1e-6";
    let n: u64 = first_value(&run_at(&lake, &["sql", differ])).parse().unwrap();
    assert!(n > 0);

    let listed = run_at(&lake, &["model", "list"]);
    assert!(listed.contains("churn") && listed.contains("@production=2") && listed.contains("@staging=1"), "{listed}");

    // Archiving: refused while an alias points at the version; an archived version is not scored.
    let e = fails(&lake, &["model", "archive", "churn@2"]);
    assert!(e.contains("churn@2 is @production"), "{e}");
    run_at(&lake, &["model", "promote", "churn@2", "staging"]);
    run_at(&lake, &["model", "archive", "churn@1"]);
    let e = fails(&lake, &["sql", "SELECT predict('churn@1', tenure, spend, tickets) FROM accounts LIMIT 1"]);
    assert!(e.contains("archived"), "{e}");
    let e = fails(&lake, &["sql", "SELECT predict('nochurn@production', tenure) FROM accounts LIMIT 1"]);
    assert!(e.contains("no model named 'nochurn'") && e.contains("churn"), "{e}");

    // Bad input.
    let not_torchscript = dir.path().join("notes.pt");
    std::fs::write(&not_torchscript, "not a model").unwrap();
    let e = fails(&lake, &["model", "register", "other", not_torchscript.to_str().unwrap(), "--inputs", "a"]);
    assert!(e.contains("does not load as a model") && e.contains("is not a loadable TorchScript model"), "{e}");
    let e = fails(&lake, &["model", "register", "other", out_1.to_str().unwrap(), "--inputs", "a, b"]);
    assert!(e.contains("does not take 2 inputs"), "{e}");
    run_at(
        &lake,
        &["asset", "write", "holes", "--sql", &format!(
            "SELECT account_id, tenure, spend, tickets, CASE WHEN account_id % 100 = 0 THEN NULL ELSE churned END AS churned \
             FROM ({ACCOUNTS})"
        )],
    );
    run_at(&lake, &["split", "holes", "--key", "account_id"]);
    let e = fails(&lake, &["train", "holes_split", "--label", "churned", "--features", "tenure,spend"]);
    assert!(e.contains("label column 'churned' is NULL in") && e.contains("train split"), "{e}");
    let e = fails(&lake, &["train", "accounts_split", "--label", "churned", "--features", "tenure,spnd"]);
    assert!(e.contains("has no column 'spnd'"), "{e}");
    let e = fails(&lake, &["train", "accounts", "--label", "churned", "--features", "tenure"]);
    assert!(e.contains("has no split column") && e.contains("sluice split"), "{e}");
}
