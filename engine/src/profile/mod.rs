//! Column profiles as mergeable sketches: count, nulls, min/max, mean/variance, a fixed-bin
//! histogram (bins taken from a reference, with the count and sum of the values outside them)
//! and category frequencies. A profile is built batch by batch where the data is read
//! ([`ProfileExec`] on the executors, inside the scoring pass), saved as JSON next to the data,
//! and merged on the client; two profiles with the same bins are enough for every drift metric.

mod exec;
mod kernel;
mod sketch;

pub use exec::{PROFILE_SCAN, ProfileExec, ProfilingPlanner, Side, profile_outputs, profiling_planner};
pub use sketch::{SKETCH, read_sketch, sketch_sql, sketch_udaf};

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use serde::{Deserialize, Serialize};

/// Categories kept per column; rarer ones beyond this many are counted together as `other`.
pub const MAX_CATEGORIES: usize = 1000;

/// Bins per unit of a numeric column binned from `lo` to `hi` in `bins` bins: a value's bin is
/// `floor((x - lo) * scale)` (the last bin also takes `hi`). Profiles made in SQL use the same.
pub fn bin_scale(lo: f64, hi: f64, bins: usize) -> f64 {
    if hi > lo { bins.max(1) as f64 / (hi - lo) } else { 0.0 }
}

/// How a column is summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Binning {
    /// Numbers: `bins` equal bins from `lo` to `hi` (the reference's range).
    Numeric {
        /// Left edge of the first bin.
        #[serde(with = "exact")]
        lo: f64,
        /// Right edge of the last bin.
        #[serde(with = "exact")]
        hi: f64,
        /// Number of bins.
        bins: usize,
    },
    /// Values counted as text.
    Categorical,
}

/// Bin edges as text: JSON parsers may round a number's last digit, and the executors must bin
/// with exactly the edges of the reference (Rust's own parsing of its shortest text is exact).
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{x:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| serde::de::Error::custom(format!("bin edge '{text}': {e}")))
    }
}

/// One column to profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Its name in the data.
    pub name: String,
    /// Its bins.
    pub binning: Binning,
}

/// Most bins a numeric sketch may have: 8 MB of counts per group and partition (the drift
/// reports use 1,000), far below what the binning kernel's 32-bit bin numbers can address.
pub const MAX_BINS: usize = 1_000_000;

impl ColumnSpec {
    /// Checks what a user may have written: 1 to [`MAX_BINS`] bins between finite edges
    /// `lo <= hi`.
    pub fn validate(&self) -> Result<()> {
        let Binning::Numeric { lo, hi, bins } = self.binning else { return Ok(()) };
        let bad = |why: String| Err(DataFusionError::Plan(format!("sketch of '{}': {why}", self.name)));
        if bins == 0 || bins > MAX_BINS {
            return bad(format!("bins = {bins}: use 1 to {MAX_BINS} bins (drift reports use 1000)"));
        }
        if !lo.is_finite() || !hi.is_finite() || lo > hi {
            return bad(format!("edges lo = {lo}, hi = {hi}: use finite numbers with lo <= hi"));
        }
        Ok(())
    }
}

/// What a scan (and, above it, a write) profiles and where the partial profiles go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSpec {
    /// Columns of the data read.
    pub inputs: Vec<ColumnSpec>,
    /// Columns of what is written from it (the predictions), profiled above the write.
    #[serde(default)]
    pub outputs: Vec<ColumnSpec>,
    /// URL of the folder the partial profiles are written to (`input-*.json`, `output-*.json`).
    pub target: String,
}

/// The sketch of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// The column.
    pub name: String,
    /// Its bins.
    pub binning: Binning,
    /// Values (not NULL, not NaN).
    pub count: u64,
    /// NULL or NaN values.
    pub nulls: u64,
    /// Smallest value (numbers).
    pub min: Option<f64>,
    /// Largest value (numbers).
    pub max: Option<f64>,
    /// Mean (numbers).
    pub mean: f64,
    /// Sum of squared deviations from the mean (numbers; variance = m2 / count).
    pub m2: f64,
    /// Counts per bin (numbers).
    #[serde(default)]
    pub bins: Vec<u64>,
    /// NaN values (numbers): counted apart, in neither `count`, the bins nor the moments.
    #[serde(default)]
    pub nan: u64,
    /// +Infinity values (numbers), counted apart like NaN.
    #[serde(default)]
    pub pos_inf: u64,
    /// -Infinity values (numbers), counted apart like NaN.
    #[serde(default)]
    pub neg_inf: u64,
    /// Values below the first bin: count and sum.
    #[serde(default)]
    pub below: (u64, f64),
    /// Values above the last bin: count and sum.
    #[serde(default)]
    pub above: (u64, f64),
    /// Counts per category (categorical).
    #[serde(default)]
    pub categories: BTreeMap<String, u64>,
    /// Values of categories beyond [`MAX_CATEGORIES`].
    #[serde(default)]
    pub other: u64,
}

impl ColumnProfile {
    /// An empty sketch of `spec`.
    pub fn new(spec: &ColumnSpec) -> Self {
        let bins = match spec.binning {
            Binning::Numeric { bins, .. } => vec![0; bins.max(1)],
            Binning::Categorical => Vec::new(),
        };
        Self {
            name: spec.name.clone(),
            binning: spec.binning.clone(),
            count: 0,
            nulls: 0,
            min: None,
            max: None,
            mean: 0.0,
            m2: 0.0,
            bins,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            below: (0, 0.0),
            above: (0, 0.0),
            categories: BTreeMap::new(),
            other: 0,
        }
    }

    /// Population variance (numbers).
    pub fn variance(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.m2 / self.count as f64 }
    }

    /// Population standard deviation (numbers).
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Adds the values of `array`.
    pub fn add(&mut self, array: &dyn Array) -> Result<()> {
        match self.binning.clone() {
            Binning::Numeric { lo, hi, bins } => self.add_numbers(array, lo, hi, bins),
            Binning::Categorical => self.add_categories(array),
        }
    }

    fn add_numbers(&mut self, array: &dyn Array, lo: f64, hi: f64, bins: usize) -> Result<()> {
        // Floats are read in place; other numbers are cast to f64 first.
        match array.data_type() {
            DataType::Float32 => {
                let a = array.as_primitive::<Float32Type>();
                self.add_values(a.values(), a.nulls(), lo, hi, bins);
            }
            DataType::Float64 => {
                let a = array.as_primitive::<Float64Type>();
                self.add_values(a.values(), a.nulls(), lo, hi, bins);
            }
            _ => {
                let cast = arrow::compute::cast(array, &DataType::Float64)?;
                let a = cast.as_primitive::<Float64Type>();
                self.add_values(a.values(), a.nulls(), lo, hi, bins);
            }
        }
        Ok(())
    }

    /// Adds `values` (those valid in `nulls`): bins, values outside, min/max and moments.
    fn add_values<T: Copy + Into<f64>>(&mut self, values: &[T], nulls: Option<&NullBuffer>, lo: f64, hi: f64, bins: usize) {
        let kernel = kernel::Bins::new(lo, hi, bin_scale(lo, hi, bins), bins);
        let null_count = nulls.map_or(0, |n| n.null_count() as u64);
        let sums = match nulls.filter(|n| n.null_count() > 0) {
            None => kernel.add(values, &mut self.bins),
            Some(nulls) => {
                // NULLs become NaN, which the kernel counts apart.
                let values: Vec<f64> =
                    values.iter().enumerate().map(|(i, v)| if nulls.is_valid(i) { (*v).into() } else { f64::NAN }).collect();
                kernel.add(&values, &mut self.bins)
            }
        };
        // The kernel saw the NULLs as NaN.
        self.nulls += null_count;
        self.nan += sums.nan - null_count;
        self.pos_inf += sums.pos_inf;
        self.neg_inf += sums.neg_inf;
        self.below = (self.below.0 + sums.below.0, self.below.1 + sums.below.1);
        self.above = (self.above.0 + sums.above.0, self.above.1 + sums.above.1);
        if sums.n == 0 {
            return;
        }
        // Sums around `lo` (near the data, so little is lost to cancellation), merged with what
        // came before (Chan et al.).
        let n = sums.n as f64;
        let mean = lo + sums.s1 / n;
        let m2 = (sums.s2 - sums.s1 * sums.s1 / n).max(0.0);
        self.merge_moments(sums.n, mean, m2);
        self.min = Some(self.min.map_or(sums.min, |m| m.min(sums.min)));
        self.max = Some(self.max.map_or(sums.max, |m| m.max(sums.max)));
    }

    fn merge_moments(&mut self, n: u64, mean: f64, m2: f64) {
        let total = self.count + n;
        if total == 0 {
            return;
        }
        let delta = mean - self.mean;
        let (a, b) = (self.count as f64, n as f64);
        self.mean += delta * b / total as f64;
        self.m2 += m2 + delta * delta * a * b / total as f64;
        self.count = total;
    }

    fn add_categories(&mut self, array: &dyn Array) -> Result<()> {
        let values = arrow::compute::cast(array, &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        self.nulls += values.null_count() as u64;
        for v in values.iter().flatten() {
            self.count += 1;
            self.count_category(v, 1);
        }
        Ok(())
    }

    fn count_category(&mut self, value: &str, n: u64) {
        if let Some(slot) = self.categories.get_mut(value) {
            *slot += n;
        } else if self.categories.len() < MAX_CATEGORIES {
            self.categories.insert(value.to_string(), n);
        } else {
            self.other += n;
        }
    }

    /// Adds another sketch of the same column with the same bins.
    pub fn merge(&mut self, other: &ColumnProfile) -> Result<()> {
        if other.binning != self.binning || other.bins.len() != self.bins.len() {
            return Err(DataFusionError::Execution(format!(
                "cannot merge profiles of '{}' made with different bins",
                self.name
            )));
        }
        self.nulls += other.nulls;
        if matches!(self.binning, Binning::Categorical) {
            self.count += other.count;
            for (value, n) in &other.categories {
                self.count_category(value, *n);
            }
            self.other += other.other;
            return Ok(());
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a += b;
        }
        self.nan += other.nan;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
        self.below = (self.below.0 + other.below.0, self.below.1 + other.below.1);
        self.above = (self.above.0 + other.above.0, self.above.1 + other.above.1);
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.merge_moments(other.count, other.mean, other.m2);
        Ok(())
    }

    /// The `q` quantile (0..=1) read off the histogram, interpolated inside a bin (numbers).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let Binning::Numeric { lo, hi, bins } = self.binning else { return None };
        if self.count == 0 {
            return None;
        }
        let width = if hi > lo { (hi - lo) / bins.max(1) as f64 } else { 0.0 };
        let target = q.clamp(0.0, 1.0) * self.count as f64;
        let mut seen = self.below.0 as f64;
        if target <= seen {
            return self.min;
        }
        for (k, n) in self.bins.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= target {
                return Some(lo + width * (k as f64 + (target - seen) / n));
            }
            seen += n;
        }
        self.max
    }

    /// The `k` most frequent categories, most frequent first.
    pub fn top(&self, k: usize) -> Vec<(&str, u64)> {
        let mut top: Vec<(&str, u64)> = self.categories.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        top.truncate(k);
        top
    }
}

/// Sketches of several columns of one data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Rows seen.
    pub rows: u64,
    /// One sketch per column.
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    /// An empty profile of `columns`.
    pub fn new(columns: &[ColumnSpec]) -> Self {
        Self { rows: 0, columns: columns.iter().map(ColumnProfile::new).collect() }
    }

    /// Adds a batch holding the profiled columns (by name).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        for column in &mut self.columns {
            let array = batch.column_by_name(&column.name).ok_or_else(|| {
                DataFusionError::Execution(format!("profile: the data has no column '{}'", column.name))
            })?;
            column.add(array.as_ref())?;
        }
        Ok(())
    }

    /// Adds another profile of the same columns and bins.
    pub fn merge(&mut self, other: &Profile) -> Result<()> {
        if other.columns.len() != self.columns.len() {
            return Err(DataFusionError::Execution("cannot merge profiles of different columns".into()));
        }
        self.rows += other.rows;
        for (a, b) in self.columns.iter_mut().zip(&other.columns) {
            a.merge(b)?;
        }
        Ok(())
    }

    /// The sketch of `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    fn numeric(lo: f64, hi: f64, bins: usize) -> ColumnSpec {
        ColumnSpec { name: "x".into(), binning: Binning::Numeric { lo, hi, bins } }
    }

    #[test]
    fn a_column_is_binned_with_moments_and_the_values_outside_counted() {
        let mut p = ColumnProfile::new(&numeric(0.0, 10.0, 10));
        let values = Float64Array::from(vec![
            Some(-1.0),
            Some(0.0),
            Some(2.5),
            Some(10.0),
            Some(12.0),
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(f64::INFINITY),
        ]);
        p.add(&values).unwrap();
        assert_eq!((p.count, p.nulls, p.nan, p.pos_inf, p.neg_inf), (5, 1, 1, 2, 1));
        // A sketch with infinities serialises (JSON has no infinity) and reads back.
        let text = serde_json::to_string(&p).unwrap();
        let back: ColumnProfile = serde_json::from_str(&text).unwrap();
        assert_eq!((back.count, back.nan, back.pos_inf, back.neg_inf, back.min, back.max), (5, 1, 2, 1, Some(-1.0), Some(12.0)));
        assert_eq!((p.min, p.max), (Some(-1.0), Some(12.0)));
        assert_eq!(p.bins, vec![1, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((p.below, p.above), ((1, -1.0), (1, 12.0)));
        let xs = [-1.0, 0.0, 2.5, 10.0, 12.0];
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 5.0;
        assert!((p.mean - mean).abs() < 1e-12 && (p.variance() - var).abs() < 1e-12);
    }

    #[test]
    fn a_pass_without_nulls_equals_a_plain_count() {
        // 1003 values, a NaN and values outside the bins.
        let mut xs: Vec<f64> = (0..1003).map(|i| f64::from((i * 37) % 101) / 10.0).collect();
        xs[5] = f64::NAN;
        xs[17] = -3.0;
        xs[900] = 42.0;
        let mut p = ColumnProfile::new(&numeric(0.0, 10.0, 20));
        p.add(&Float64Array::from(xs.clone())).unwrap();
        let valid: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
        let n = valid.len() as f64;
        let mean = valid.iter().sum::<f64>() / n;
        let var = valid.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        assert_eq!((p.count, p.nulls, p.nan, p.below.0, p.above.0), (1002, 0, 1, 1, 1));
        assert!((p.mean - mean).abs() < 1e-9 && (p.variance() - var).abs() < 1e-9);
        assert_eq!((p.min, p.max), (Some(-3.0), Some(42.0)));
        let mut bins = vec![0u64; 20];
        for x in valid.iter().filter(|x| (0.0..=10.0).contains(*x)) {
            bins[((x * 2.0) as usize).min(19)] += 1;
        }
        assert_eq!(p.bins, bins);
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let spec = numeric(0.0, 100.0, 20);
        let all: Vec<i64> = (0..1000).map(|i| (i * 7919) % 113).collect();
        let mut whole = ColumnProfile::new(&spec);
        whole.add(&Int64Array::from(all.clone())).unwrap();
        let mut merged = ColumnProfile::new(&spec);
        for part in all.chunks(137) {
            let mut p = ColumnProfile::new(&spec);
            p.add(&Int64Array::from(part.to_vec())).unwrap();
            merged.merge(&p).unwrap();
        }
        assert_eq!((merged.count, &merged.bins, merged.above, merged.min), (whole.count, &whole.bins, whole.above, whole.min));
        assert!((merged.mean - whole.mean).abs() < 1e-9 && (merged.m2 - whole.m2).abs() < 1e-6);
        // The median of 0..113 repeated evenly sits near 56.
        assert!((whole.quantile(0.5).unwrap() - 56.0).abs() < 5.0);
    }

    #[test]
    fn bin_edges_survive_json_exactly() {
        let spec = numeric(3.943062267808273e-7, 0.9996053576469421, 1000);
        let back: ColumnSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn categories_are_counted_and_merged() {
        let spec = ColumnSpec { name: "c".into(), binning: Binning::Categorical };
        let mut a = Profile::new(std::slice::from_ref(&spec));
        let batch = |v: Vec<Option<&str>>| {
            RecordBatch::try_from_iter([("c", Arc::new(StringArray::from(v)) as arrow::array::ArrayRef)]).unwrap()
        };
        a.add(&batch(vec![Some("x"), Some("y"), Some("x"), None])).unwrap();
        let mut b = Profile::new(&[spec]);
        b.add(&batch(vec![Some("y"), Some("z")])).unwrap();
        a.merge(&b).unwrap();
        let c = a.column("c").unwrap();
        assert_eq!((a.rows, c.count, c.nulls), (6, 5, 1));
        assert_eq!(c.top(2), vec![("x", 2), ("y", 2)]);
        let other_bins = ColumnProfile::new(&numeric(0.0, 1.0, 3));
        assert!(a.columns[0].merge(&other_bins).is_err());
    }
}
