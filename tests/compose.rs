//! `docker-compose.yml` cannot run here (no Docker engine), so its structure is checked: the
//! services users are promised exist, every `depends_on` names a service, and every Sluice
//! command in it is one the binary accepts (its subcommand and each flag, per `--help`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::collections::BTreeMap;

use common::*;
use serde_yaml::Value;

fn compose() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    // Merge keys may bring merge keys of their own (executor-2 <- executor-1 <- x-sluice).
    for _ in 0..4 {
        doc.apply_merge().unwrap();
    }
    let services = doc.get("services").and_then(Value::as_mapping).expect("a services mapping");
    services.iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone())).collect()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::Mapping(map)) => map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn compose_has_the_promised_services_and_valid_sluice_commands() {
    let services = compose();
    for name in ["scheduler", "executor-1", "executor-2", "executor-gpu", "flight", "kafka", "azurite", "postgres", "demo"] {
        assert!(services.contains_key(name), "docker-compose.yml lacks the {name} service");
    }
    let image = |name: &str| services[name].get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    assert!(image("kafka").starts_with("apache/kafka:"), "Kafka must be Apache Kafka");
    assert!(image("azurite").contains("azurite"));
    assert!(image("postgres").starts_with("postgres:"));

    let gpu = &services["executor-gpu"];
    assert_eq!(strings(gpu.get("profiles")), ["gpu"], "the GPU executor is optional (profile gpu)");
    let gpu_command = strings(gpu.get("command")).join(" ");
    assert!(gpu_command.contains("--device cuda"), "{gpu_command}");
    assert_eq!(gpu.get("image").and_then(|i| i.as_str()), Some("sluice:cuda"), "the GPU executor has the CUDA libraries");
    let build = serde_yaml::to_string(gpu.get("build").unwrap()).unwrap();
    assert!(build.contains("SLUICE_CUDA") && build.contains("true"), "{build}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("setup.sh --cuda"), "the image installs the CUDA libraries when asked");
    let reservation = serde_yaml::to_string(gpu.get("deploy").unwrap()).unwrap();
    assert!(reservation.contains("nvidia") && reservation.contains("gpu"), "{reservation}");
    assert_eq!(services["demo"].get("restart").and_then(Value::as_str), Some("no"), "the demo runs once");

    let mut checked = 0;
    for (name, service) in &services {
        for dependency in strings(service.get("depends_on")) {
            assert!(services.contains_key(&dependency), "{name} depends on unknown service {dependency}");
        }
        let command = strings(service.get("command"));
        if command.first().map(String::as_str) != Some("sluice") {
            continue;
        }
        let expected = if name == "executor-gpu" { "sluice:cuda" } else { "sluice:dev" };
        assert_eq!(image(name), expected, "{name} runs sluice from another image");
        // Files a command names come from the repository (examples/, mounted read-only) or are
        // written by a service of this file: none may be left for the user to make.
        for path in command.iter().filter(|a| a.starts_with('/')) {
            if let Some(file) = path.strip_prefix("/examples/") {
                assert!(root().join("examples").join(file).is_file(), "{name}: {path} is not in examples/");
                let volumes = serde_yaml::to_string(service.get("volumes").unwrap_or(&Value::Null)).unwrap();
                assert!(volumes.contains("./examples:/examples"), "{name} does not mount examples/: {volumes}");
            } else {
                assert!(path.starts_with("/data/demo"), "{name}: {path} is a file nothing creates");
            }
        }
        let sub = &command[1];
        let help = ok(sluice_cmd().args([sub.as_str(), "--help"]).output().unwrap(), &format!("sluice {sub} --help"));
        for flag in command.iter().filter(|a| a.starts_with("--")) {
            assert!(help.contains(flag.as_str()), "{name}: `sluice {sub}` has no flag {flag}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} sluice services checked");
}
