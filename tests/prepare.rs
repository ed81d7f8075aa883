//! The `[prepare]` step (examples/prepare_customers.toml): the latest record per key is kept,
//! rows that break a rule land in the violations asset with the rule, and the profile of the
//! landed rows is stored with the version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;

use common::*;

fn sql(assets: &Path, query: &str) -> String {
    ok(sluice_at(assets).args(["sql", query]).output().unwrap(), query)
}

#[test]
fn rules_dedup_and_profile_on_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let data = dir.path().join("customers");
    std::fs::create_dir_all(&data).unwrap();
    ok(
        sluice_at(&lake)
            .args(["asset", "write", "countries", "--sql", "SELECT * FROM (VALUES ('DE'), ('FR'), ('US')) AS t(code)"])
            .output()
            .unwrap(),
        "countries",
    );
    let header = "customer_id,updated_at,email,age,plan,country,churned\n";
    let row = |id: u32, at: &str, email: &str, age: i32, plan: &str, country: &str| {
        format!("{id},{at},{email},{age},{plan},{country},{}\n", id.is_multiple_of(5))
    };
    let mut first = String::from(header);
    for id in 1..=100 {
        // Customer 1's old record is too young; its newer record replaces it before the rules run.
        let age = if id == 1 { 5 } else { 20 + (id % 50) as i32 };
        first += &row(id, "2026-01-01T00:00:00", &format!("c{id}@x.com"), age, ["free", "pro", "team"][id as usize % 3], ["DE", "FR", "US"][id as usize % 3]);
    }
    first += &row(101, "2026-01-01T00:00:00", "", 30, "pro", "DE");
    first += &row(102, "2026-01-01T00:00:00", "not-an-email", 30, "pro", "DE");
    first += &row(103, "2026-01-01T00:00:00", "c103@x.com", 12, "pro", "DE");
    first += &row(104, "2026-01-01T00:00:00", "c104@x.com", 30, "gold", "DE");
    first += &row(105, "2026-01-01T00:00:00", "c105@x.com", 30, "pro", "XX");
    first += &row(106, "2026-01-01T00:00:00", "same@x.com", 30, "pro", "FR");
    first += &row(107, "2026-01-01T00:00:00", "same@x.com", 31, "pro", "FR");
    std::fs::write(data.join("a.csv"), first).unwrap();
    let mut updates = String::from(header);
    for id in 1..=10 {
        updates += &row(id, "2026-02-01T00:00:00", &format!("c{id}@x.com"), 40, "team", "US");
    }
    std::fs::write(data.join("b.csv"), updates).unwrap();

    let out = ok(
        sluice_at(&lake)
            .args(["run", "examples/prepare_customers.toml"])
            .env("CUSTOMERS_DIR", format!("{}/", data.display()))
            .output()
            .unwrap(),
        "prepare",
    );
    assert!(out.contains("prepared     117 rows: 10 older duplicates dropped, 7 broke a rule, 100 landed"), "{out}");
    for rule in [
        "not_null(email): 1 rows",
        "regex(email, ^[^@ ]+@[^@ ]+\\.[a-z]+$): 1 rows",
        "range(age, 18, 120): 1 rows",
        "allowed(plan: free, pro, team): 1 rows",
        "references(country -> countries.code): 1 rows",
        "unique(email): 2 rows",
    ] {
        assert!(out.contains(rule), "{rule}: {out}");
    }
    assert!(out.contains("violations   customers_clean_violations@0: 7 rows"), "{out}");
    assert!(out.contains("label        churned {\"false\":80,\"true\":20}"), "{out}");

    // The latest record of each customer landed.
    let updated = sql(&lake, "SELECT COUNT(*) FROM customers_clean WHERE customer_id <= 10 AND plan = 'team' AND age = 40");
    assert_eq!(first_value(&updated), "10");
    let violations =
        sql(&lake, "SELECT customer_id, _rule FROM customers_clean_violations ORDER BY customer_id");
    for (id, rule) in [(101, "not_null(email)"), (103, "range(age"), (105, "references(country"), (107, "unique(email)")] {
        assert!(violations.lines().any(|l| l.contains(&format!("| {id} ")) && l.contains(rule)), "{id}: {violations}");
    }

    // The profile is stored with the version.
    let log = std::fs::read_dir(lake.join("customers_clean/_delta_log"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    let commit = log.lines().find(|l| l.contains("\"profile\"")).expect("a commit with the profile");
    let value: serde_json::Value = serde_json::from_str(commit).unwrap();
    let text = value.to_string();
    assert!(text.contains("\"nulls\"") && text.contains("\"distinct\"") && text.contains("\"min\""), "{text}");
    assert!(text.contains("\"rows\":100"), "{text}");

    // No staging files are left behind.
    assert!(std::fs::read_dir(lake.join("_staging")).map_or(true, |d| d.flatten().all(|e| std::fs::read_dir(e.path()).map_or(true, |mut f| f.next().is_none()))));
}
