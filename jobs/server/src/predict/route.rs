//! Traffic split and shadow versions of the online endpoint.
//!
//! `--route churn=production:90,staging:10` sends the requests that name the bare model (`churn`,
//! `/v2/models/churn/infer`) to its targets in those shares; a request that names a version or an
//! alias is never rerouted. Without a route key the shares are exact over every cycle of the
//! weights (smooth weighted round robin, as nginx splits upstreams): 10% of any 10 consecutive
//! requests, whatever the concurrency. With the `X-Sluice-Route-Key` header (a user or session
//! id) the target is a stable hash of the key, so a user sees one version on every replica.
//!
//! `--shadow churn=candidate` scores every request of `churn` also with `churn@candidate`, after
//! the answer and without changing it; the shadow's predictions go to the request log and its
//! counts to `/metrics`.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sluice_catalog::models::{ModelAt, ModelRef, check_name};

use crate::{Error, Result};

/// One target of a route: a version or alias of the routed model, and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The version or alias, as given (`production`, `3`).
    pub at: String,
    /// Its share, relative to the route's other targets.
    pub weight: u32,
}

/// A model's traffic split.
#[derive(Debug)]
pub struct Route {
    /// The routed model.
    pub model: String,
    /// Its targets, in the order given.
    pub targets: Vec<Target>,
    /// Smooth weighted round robin state: the current weight of each target.
    current: Mutex<Vec<i64>>,
}

impl Route {
    /// Parses `name=target:weight,target:weight...` (`churn=production:90,staging:10`).
    pub fn parse(text: &str) -> Result<Self> {
        let usage = "give MODEL=TARGET:WEIGHT,..., e.g. churn=production:90,staging:10 (a target is a version or an alias)";
        let (model, targets) =
            text.split_once('=').ok_or_else(|| Error::Invalid(format!("--route '{text}': no '='; {usage}")))?;
        let model = model.trim();
        check_name(model, "model").map_err(|e| Error::Invalid(format!("--route '{text}': {e}")))?;
        let mut parsed: Vec<Target> = Vec::new();
        for part in targets.split(',') {
            let (at, weight) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| Error::Invalid(format!("--route '{text}': '{part}' has no weight; {usage}")))?;
            let at = at.trim();
            let weight: u32 = weight.trim().parse().map_err(|_| {
                Error::Invalid(format!("--route '{text}': the weight of '{at}' is '{}', not a whole number", weight.trim()))
            })?;
            ModelRef::parse(&format!("{model}@{at}")).map_err(|e| Error::Invalid(format!("--route '{text}': {e}")))?;
            if parsed.iter().any(|t| t.at == at) {
                return Err(Error::Invalid(format!("--route '{text}': '{at}' is listed twice")));
            }
            parsed.push(Target { at: at.to_string(), weight });
        }
        let total: u64 = parsed.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            return Err(Error::Invalid(format!("--route '{text}': every weight is 0; {usage}")));
        }
        if total > 1_000_000 {
            return Err(Error::Invalid(format!("--route '{text}': the weights add up to {total}; keep them under 1000000")));
        }
        let current = Mutex::new(vec![0; parsed.len()]);
        Ok(Self { model: model.to_string(), targets: parsed, current })
    }

    /// The target of the next request: by `key`'s hash when given, else in turn.
    pub fn pick(&self, key: Option<&str>) -> &Target {
        let total: i64 = self.targets.iter().map(|t| i64::from(t.weight)).sum();
        let index = match key {
            Some(key) => {
                let digest = Sha256::digest(key.as_bytes());
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest[..8]);
                let mut point = (u64::from_be_bytes(first) % total as u64) as i64;
                self.targets
                    .iter()
                    .position(|t| {
                        point -= i64::from(t.weight);
                        point < 0
                    })
                    .unwrap_or(0)
            }
            None => {
                let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut best = 0;
                for (i, t) in self.targets.iter().enumerate() {
                    current[i] += i64::from(t.weight);
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                best
            }
        };
        &self.targets[index]
    }

    /// The reference a target means.
    pub fn reference(&self, target: &Target) -> ModelRef {
        let at = match target.at.parse::<u64>() {
            Ok(v) => ModelAt::Version(v),
            Err(_) => ModelAt::Alias(target.at.clone()),
        };
        ModelRef { name: self.model.clone(), at }
    }

    /// `production:90,staging:10`, for the start-up line.
    pub fn describe(&self) -> String {
        let targets: Vec<String> = self.targets.iter().map(|t| format!("{}:{}", t.at, t.weight)).collect();
        format!("{}={}", self.model, targets.join(","))
    }
}

/// Parses `--shadow name=target` (`churn=candidate`, `churn=4`).
pub fn parse_shadow(text: &str) -> Result<ModelRef> {
    let (model, at) = text
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("--shadow '{text}': give MODEL=VERSION|ALIAS, e.g. churn=candidate")))?;
    let reference = ModelRef::parse(&format!("{}@{}", model.trim(), at.trim()))
        .map_err(|e| Error::Invalid(format!("--shadow '{text}': {e}")))?;
    Ok(reference)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shares_are_exact_over_every_cycle_of_the_weights() {
        let route = Route::parse("churn=production:90,staging:10").unwrap();
        let mut staging = 0;
        for i in 1..=1000 {
            if route.pick(None).at == "staging" {
                staging += 1;
            }
            if i % 10 == 0 {
                assert_eq!(staging, i / 10, "after {i} requests");
            }
        }
        let three = Route::parse("m=a:1,b:2,3:0").unwrap();
        let picks: Vec<&str> = (0..6).map(|_| three.pick(None).at.as_str()).collect();
        assert_eq!(picks.iter().filter(|p| **p == "b").count(), 4);
        assert!(!picks.contains(&"3"));
    }

    #[test]
    fn a_route_key_always_gets_the_same_target_and_keys_split_by_weight() {
        let route = Route::parse("churn=production:90,staging:10").unwrap();
        for k in 0..50 {
            let key = format!("user-{k}");
            let first = route.pick(Some(&key)).at.clone();
            assert!((0..5).all(|_| route.pick(Some(&key)).at == first));
        }
        let staging = (0..10_000).filter(|k| route.pick(Some(&format!("user-{k}"))).at == "staging").count();
        assert!((700..=1300).contains(&staging), "{staging} of 10000 keys went to staging");
    }

    #[test]
    fn bad_routes_are_refused_with_what_to_write() {
        for (text, says) in [
            ("churn", "no '='"),
            ("churn=production", "has no weight"),
            ("churn=production:x", "not a whole number"),
            ("churn=production:0", "every weight is 0"),
            ("churn=a:1,a:2", "listed twice"),
            ("1churn=a:1", "model"),
        ] {
            let e = Route::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert_eq!(Route::parse("churn=3:1").unwrap().reference(&Target { at: "3".into(), weight: 1 }).at, ModelAt::Version(3));
        assert!(parse_shadow("churn").unwrap_err().to_string().contains("MODEL=VERSION|ALIAS"));
        assert_eq!(parse_shadow("churn=candidate").unwrap().to_string(), "churn@candidate");
    }
}
