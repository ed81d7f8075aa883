//! `sluice_sketch(x, spec)`: the column sketch as a DataFusion aggregate, so one query profiles
//! every column (or any expression, a model's predictions included) in one scan on the
//! executors, with the same code as the scoring pass's [`super::ProfileExec`]. `spec` is a
//! [`ColumnSpec`] as JSON text (its bins); the result is the [`ColumnProfile`] as JSON text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use super::{ColumnProfile, ColumnSpec};

/// The aggregate's SQL name.
pub const SKETCH: &str = "sluice_sketch";

/// The `sluice_sketch` aggregate.
pub fn sketch_udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(Sketch { signature: Signature::any(2, Volatility::Immutable) }))
}

/// The SQL call that sketches `sql` with `spec`'s bins.
pub fn sketch_sql(sql: &str, spec: &ColumnSpec) -> Result<String> {
    let spec = serde_json::to_string(spec).map_err(|e| DataFusionError::Internal(format!("sketch of '{}': {e}", spec.name)))?;
    Ok(format!("{SKETCH}(({sql}), '{}')", spec.replace('\'', "''")))
}

/// Reads the result of [`sketch_sql`] (NULL when no rows were read: an empty sketch of `spec`).
pub fn read_sketch(value: Option<&str>, spec: &ColumnSpec) -> Result<ColumnProfile> {
    match value {
        None => Ok(ColumnProfile::new(spec)),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| DataFusionError::Execution(format!("the sketch of '{}' cannot be read: {e}", spec.name))),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Sketch {
    signature: Signature,
}

impl AggregateUDFImpl for Sketch {
    fn name(&self) -> &str {
        SKETCH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator { profile: None }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[sketch]", args.name), DataType::Utf8, true))])
    }
}

/// One group's sketch; made from the spec on the first batch, or taken from the first state.
#[derive(Debug)]
struct SketchAccumulator {
    profile: Option<ColumnProfile>,
}

impl SketchAccumulator {
    fn json(&self) -> Result<ScalarValue> {
        match &self.profile {
            None => Ok(ScalarValue::Utf8(None)),
            Some(p) => serde_json::to_string(p)
                .map(|s| ScalarValue::Utf8(Some(s)))
                .map_err(|e| DataFusionError::Internal(format!("sketch of '{}': {e}", p.name))),
        }
    }
}

fn texts(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(array, &DataType::Utf8)?)
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [x, spec] = values else {
            return Err(DataFusionError::Plan(format!("{SKETCH}(x, spec) takes two arguments")));
        };
        if x.is_empty() {
            return Ok(());
        }
        let profile = match &mut self.profile {
            Some(p) => p,
            None => {
                let spec = texts(spec)?;
                let spec = spec.as_string::<i32>();
                if spec.is_null(0) {
                    return Err(DataFusionError::Plan(format!("{SKETCH}: the spec (second argument) is NULL")));
                }
                let spec: ColumnSpec = serde_json::from_str(spec.value(0)).map_err(|e| {
                    DataFusionError::Plan(format!("{SKETCH}: the spec '{}' is not a column spec: {e}", spec.value(0)))
                })?;
                spec.validate()?;
                self.profile.insert(ColumnProfile::new(&spec))
            }
        };
        profile.add(x.as_ref())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.json()
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.profile.as_ref().map_or(0, |p| {
                p.bins.len() * 8 + p.categories.keys().map(|k| k.len() + 32).sum::<usize>()
            })
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.json()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else { return Ok(()) };
        let states = texts(states)?;
        for state in states.as_string::<i32>().iter().flatten() {
            let part: ColumnProfile = serde_json::from_str(state)
                .map_err(|e| DataFusionError::Internal(format!("{SKETCH}: a partial sketch cannot be read: {e}")))?;
            match &mut self.profile {
                Some(p) => p.merge(&part)?,
                None => self.profile = Some(part),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::profile::{Binning, Profile};

    /// Sketched by the aggregate over four partitions (partial sketches merged) or added batch by
    /// batch, the same rows give the same profile.
    #[tokio::test]
    async fn the_aggregate_equals_the_sketch_of_the_same_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true), Field::new("c", DataType::Utf8, true)]));
        let specs = vec![
            ColumnSpec { name: "x".into(), binning: Binning::Numeric { lo: 0.0, hi: 10.0, bins: 50 } },
            ColumnSpec { name: "c".into(), binning: Binning::Categorical },
        ];
        let mut direct = Profile::new(&specs);
        let mut partitions = Vec::new();
        for p in 0..4 {
            let xs: Vec<Option<f64>> =
                (0..500).map(|i| if i % 97 == 0 { None } else { Some(((i * 31 + p * 7) % 130) as f64 / 10.0 - 1.0) }).collect();
            let cs: Vec<Option<&str>> = (0..500).map(|i| if i % 50 == 0 { None } else { Some(["a", "b", "c"][i % 3]) }).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Float64Array::from(xs)), Arc::new(StringArray::from(cs))],
            )
            .unwrap();
            direct.add(&batch).unwrap();
            partitions.push(vec![batch]);
        }
        let ctx = SessionContext::new();
        ctx.register_udaf(sketch_udaf().as_ref().clone());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, partitions).unwrap())).unwrap();
        let sql = format!("SELECT {}, {} FROM t", sketch_sql("x", &specs[0]).unwrap(), sketch_sql("c", &specs[1]).unwrap());
        let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        for (i, spec) in specs.iter().enumerate() {
            let text = rows[0].column(i).as_string::<i32>().value(0).to_string();
            let got = read_sketch(Some(&text), spec).unwrap();
            let want = direct.column(&spec.name).unwrap();
            assert_eq!((got.count, got.nulls, &got.bins, got.below.0, got.above.0), (want.count, want.nulls, &want.bins, want.below.0, want.above.0));
            assert_eq!((got.min, got.max, &got.categories), (want.min, want.max, &want.categories));
            assert!((got.mean - want.mean).abs() < 1e-12 && (got.m2 - want.m2).abs() < 1e-9 * want.m2.max(1.0));
        }
        assert_eq!(direct.column("x").unwrap().nulls, 4 * 6, "NULLs counted");
        assert!(direct.column("x").unwrap().below.0 > 0 && direct.column("x").unwrap().above.0 > 0);
    }

    /// A spec a user wrote by hand with absurd bins or edges is refused with what to write, before
    /// any memory is taken for it (a huge `bins` used to abort the process).
    #[tokio::test]
    async fn bins_and_edges_out_of_bounds_are_refused_clearly() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(vec![1.0, 2.0]))]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_udaf(sketch_udaf().as_ref().clone());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let numeric = |lo: f64, hi: f64, bins: usize| ColumnSpec { name: "x".into(), binning: Binning::Numeric { lo, hi, bins } };
        for (spec, why) in [
            (numeric(0.0, 10.0, usize::MAX), "use 1 to 1000000 bins"),
            (numeric(0.0, 10.0, (i32::MAX as usize) + 1), "use 1 to 1000000 bins"),
            (numeric(0.0, 10.0, 0), "use 1 to 1000000 bins"),
            (numeric(0.0, f64::NAN, 10), "finite numbers with lo <= hi"),
            (numeric(5.0, 1.0, 10), "finite numbers with lo <= hi"),
        ] {
            let sql = format!("SELECT {} FROM t", sketch_sql("x", &spec).unwrap());
            let e = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(why) && e.contains("sketch of 'x'"), "{spec:?}: {e}");
        }
        let fine = format!("SELECT {} FROM t", sketch_sql("x", &numeric(0.0, 10.0, super::super::MAX_BINS)).unwrap());
        assert!(ctx.sql(&fine).await.unwrap().collect().await.is_ok(), "the largest allowed sketch works");
    }
}
