//! `predict('<model path>', f1, ..., fN)`: scores rows with a TorchScript or ONNX model.
//!
//! The first argument is a string literal naming the model file; the others are numeric feature
//! columns in the order the model was trained on. One output becomes a Float32 (or Float64)
//! column, several become a fixed-size list per row. The model is loaded once per process (see
//! [`crate::model`]) and each batch becomes one column-major buffer handed to libtorch without a
//! per-row copy. Forward passes run under `no_grad`, off the async runtime's worker threads.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, PrimitiveArray};
use arrow::compute::cast;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, FieldRef, Float32Type, Float64Type};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::error::{Error, Result};
use crate::model::{Model, Output, OutputKind, Shape};

/// Counters of one `predict` instance: which site (client, scheduler, an executor) scored how
/// much. Each executor registers its own instance, so these show where scoring really ran.
#[derive(Debug, Default)]
pub struct PredictStats {
    /// Rows scored.
    pub rows: AtomicU64,
    /// Batches (forward calls) run.
    pub batches: AtomicU64,
    /// Nanoseconds spent in forward passes, copies included.
    pub forward_nanos: AtomicU64,
    /// Calls that failed (a bad row, a bad call, a model error).
    pub errors: AtomicU64,
}

impl PredictStats {
    /// Rows scored so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// The `predict` scalar function.
#[derive(Debug)]
pub struct PredictUdf {
    signature: Signature,
    site: String,
    stats: Arc<PredictStats>,
}

impl PredictUdf {
    /// A `predict` for `site` (for example `client` or an executor id), with fresh counters.
    pub fn new(site: impl Into<String>) -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            site: site.into(),
            stats: Arc::new(PredictStats::default()),
        }
    }

    /// Where this instance runs.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// This instance's counters.
    pub fn stats(&self) -> Arc<PredictStats> {
        self.stats.clone()
    }
}

// Two `predict` instances compute the same function wherever they run: compare by name only.
impl PartialEq for PredictUdf {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}
impl Eq for PredictUdf {}
impl Hash for PredictUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "predict".hash(state);
    }
}

fn usage() -> &'static str {
    "usage: predict('<model path>', feature1, ..., featureN)"
}

/// The model path from the first argument, which must be a non-NULL string literal.
fn model_path(arg: Option<&ScalarValue>) -> Result<String> {
    match arg {
        Some(ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p))) => {
            Ok(p.clone())
        }
        Some(other) => Err(Error::BadCall(format!(
            "predict: the first argument must be the model path as a string literal, got {other:?}; {}",
            usage()
        ))),
        None => Err(Error::BadCall(format!(
            "predict: the first argument must be the model path as a string literal, not a column \
             or expression; {}",
            usage()
        ))),
    }
}

/// How many features an argument of this type gives: 1 for a number, n for a fixed-size list
/// of n numbers; None for anything else.
fn width(data_type: &DataType) -> Option<usize> {
    match data_type {
        DataType::Null => Some(1),
        t if t.is_numeric() => Some(1),
        DataType::FixedSizeList(item, n) if item.data_type().is_numeric() => usize::try_from(*n).ok(),
        // A list of numbers (as a data asset stores a vector): its width is what the model takes.
        DataType::List(item) | DataType::LargeList(item) if item.data_type().is_numeric() => Some(0),
        _ => None,
    }
}

/// The width of the one variable-length list among `features`, from the model's input width.
fn list_width(model: &Model, features: &[FieldRef]) -> Result<Option<usize>> {
    let lists = features.iter().filter(|f| width(f.data_type()) == Some(0)).count();
    if lists == 0 {
        return Ok(None);
    }
    if lists > 1 {
        return Err(Error::BadCall(format!(
            "predict: at most one feature may be a list of any length, got {lists}: ({}); cast the others to \
             fixed-size lists",
            describe(features)
        )));
    }
    let fixed: usize = features.iter().filter_map(|f| width(f.data_type())).sum();
    let declared = model.declared_inputs().ok_or_else(|| {
        Error::BadCall(format!(
            "predict: model '{}' does not declare how many inputs it takes, so the length of list feature(s) \
             ({}) is unknown; cast it to a fixed-size list, e.g. arrow_cast(v, 'FixedSizeList(32, Float32)')",
            model.path(),
            describe(features)
        ))
    })?;
    declared.checked_sub(fixed).filter(|w| *w > 0).map(Some).ok_or_else(|| {
        Error::BadCall(format!(
            "predict: model '{}' takes {declared} inputs, but the other features already give {fixed}",
            model.path()
        ))
    })
}

fn describe(fields: &[FieldRef]) -> String {
    fields.iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// Checks the feature arguments against the model and returns the probed shape.
fn plan(path: &str, features: &[FieldRef]) -> Result<(Arc<Model>, Shape)> {
    let model = Model::load(path).map_err(|e| {
        Error::BadCall(format!("{e}. Given {} feature column(s): ({})", features.len(), describe(features)))
    })?;
    if features.is_empty() {
        return Err(Error::BadCall(format!("predict: no feature columns given for model '{path}'; {}", usage())));
    }
    let bad: Vec<_> = features.iter().filter(|f| width(f.data_type()).is_none()).collect();
    if !bad.is_empty() {
        let expected = model.declared_inputs().map_or("numeric".to_string(), |n| format!("{n} numeric"));
        return Err(Error::BadCall(format!(
            "predict: model '{path}' ({}) takes {expected} feature columns, but {} {} not numeric: {}. \
             Given: ({}). Cast or encode them first, e.g. CAST(x AS FLOAT) or CASE ... END (a fixed-size list \
             of numbers counts as that many features)",
            model.id(),
            bad.len(),
            if bad.len() == 1 { "is" } else { "are" },
            describe(&bad.into_iter().cloned().collect::<Vec<_>>()),
            describe(features)
        )));
    }
    let inputs = features.iter().filter_map(|f| width(f.data_type())).sum::<usize>() + list_width(&model, features)?.unwrap_or(0);
    let shape = model.probe(inputs).map_err(|e| match e {
        Error::BadCall(m) => Error::BadCall(format!("{m}. Given: ({})", describe(features))),
        other => other,
    })?;
    Ok((model, shape))
}

fn return_field(shape: Shape) -> Field {
    let item = match shape.kind {
        OutputKind::Float32 => DataType::Float32,
        OutputKind::Float64 => DataType::Float64,
    };
    let data_type = if shape.outputs == 1 {
        item
    } else {
        DataType::FixedSizeList(Arc::new(Field::new("item", item, false)), shape.outputs as i32)
    };
    Field::new("predict", data_type, true)
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        "predict"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        // Only reachable if a caller bypasses `return_field_from_args`: the output depends on the model.
        Err(Error::BadCall(format!("predict: the output type depends on the model; {}", usage())).into())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DFResult<FieldRef> {
        if args.arg_fields.is_empty() {
            return Err(Error::BadCall(format!("predict: no arguments; {}", usage())).into());
        }
        let path = model_path(args.scalar_arguments.first().copied().flatten())?;
        let (_, shape) = plan(&path, &args.arg_fields[1..])?;
        Ok(Arc::new(return_field(shape)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let result = self.invoke(args);
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl PredictUdf {
    fn invoke(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        if args.args.is_empty() || args.arg_fields.is_empty() {
            return Err(Error::BadCall(format!("predict: no arguments; {}", usage())).into());
        }
        let path = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => model_path(Some(s))?,
            _ => model_path(None)?,
        };
        let (model, shape) = plan(&path, &args.arg_fields[1..])?;
        let rows = args.number_rows;
        let columns = args.args[1..].iter().map(|c| c.to_array(rows)).collect::<DFResult<Vec<_>>>()?;
        let fields = &args.arg_fields[1..];
        let started = Instant::now();
        // Rows per forward pass: the session's batch size (what `sluice score --batch-size` sets).
        let chunk_rows = usize::from(args.config_options.execution.batch_size).max(1);
        // A panic inside libtorch bindings must fail this batch, not the executor's worker thread.
        let array = run_off_runtime(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| score(&model, shape, &columns, fields, chunk_rows)))
        })
        .map_err(|panic| Error::Torch {
            model: model.id().to_string(),
            message: panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .map_or("the forward pass panicked".to_string(), crate::model::first_line),
        })??;
        self.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(rows.div_ceil(chunk_rows) as u64, Ordering::Relaxed);
        self.stats.forward_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        tracing::debug!(site = %self.site, model = %model.id(), rows, "predict scored a batch");
        Ok(ColumnarValue::Array(array))
    }
}

/// Runs CPU-heavy work without stalling the async runtime: on a multi-threaded tokio runtime the
/// worker hands its other tasks to a fresh thread first. Elsewhere the work simply runs here.
fn run_off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A float type features are cast to: f32 for most models, f64 for a model of doubles.
trait FeatureType: ArrowPrimitiveType {
    fn is_nan(v: Self::Native) -> bool;
}

impl FeatureType for Float32Type {
    fn is_nan(v: f32) -> bool {
        v.is_nan()
    }
}

impl FeatureType for Float64Type {
    fn is_nan(v: f64) -> bool {
        v.is_nan()
    }
}

/// Scores one Arrow batch: features are cast to f32 (f64 for a model that takes doubles),
/// checked for NULLs and NaNs, and run through the model chunk by chunk.
fn score(model: &Model, shape: Shape, columns: &[ArrayRef], fields: &[FieldRef], chunk_rows: usize) -> Result<ArrayRef> {
    let rows = columns.first().map_or(0, |c| c.len());
    let chunk = chunk_rows.min(rows.max(1));
    let mut outputs = Vec::new();
    if model.takes_f64() {
        let features = feature_columns::<Float64Type>(model, shape, columns, fields)?;
        let values: Vec<&[f64]> = features.iter().map(|c| &c.as_primitive::<Float64Type>().values()[..]).collect();
        for start in (0..rows).step_by(chunk) {
            outputs.push(model.forward_f64(&values, start, chunk.min(rows - start), shape)?);
        }
    } else {
        let features = feature_columns::<Float32Type>(model, shape, columns, fields)?;
        let values: Vec<&[f32]> = features.iter().map(|c| &c.as_primitive::<Float32Type>().values()[..]).collect();
        let mut scratch = Vec::with_capacity(chunk * shape.inputs);
        for start in (0..rows).step_by(chunk) {
            outputs.push(model.forward(&values, start, chunk.min(rows - start), shape, &mut scratch)?);
        }
    }
    let flat: ArrayRef = match shape.kind {
        OutputKind::Float32 => Arc::new(Float32Array::from(
            outputs.into_iter().flat_map(|o| if let Output::F32(v) = o { v } else { Vec::new() }).collect::<Vec<_>>(),
        )),
        OutputKind::Float64 => Arc::new(Float64Array::from(
            outputs.into_iter().flat_map(|o| if let Output::F64(v) = o { v } else { Vec::new() }).collect::<Vec<_>>(),
        )),
    };
    if flat.len() != rows * shape.outputs {
        return Err(Error::Torch {
            model: model.id().to_string(),
            message: format!("returned {} values for {rows} rows, expected {}", flat.len(), rows * shape.outputs),
        });
    }
    if shape.outputs == 1 {
        return Ok(flat);
    }
    let field = Arc::new(Field::new("item", flat.data_type().clone(), false));
    Ok(Arc::new(FixedSizeListArray::try_new(field, shape.outputs as i32, flat, None)?))
}

/// The features as one column of `P` per model input: numbers cast, vectors split into their
/// elements. A NULL or NaN is refused with the column and row.
fn feature_columns<P: FeatureType>(
    model: &Model,
    shape: Shape,
    columns: &[ArrayRef],
    fields: &[FieldRef],
) -> Result<Vec<ArrayRef>> {
    let rows = columns.first().map_or(0, |c| c.len());
    let mut out = Vec::with_capacity(shape.inputs);
    for (i, (column, field)) in columns.iter().zip(fields).enumerate() {
        if column.null_count() > 0 {
            let row = (0..column.len()).find(|r| column.is_null(*r)).unwrap_or(0);
            return Err(Error::BadRow(format!(
                "predict: feature {} ('{}', {}) is NULL at row {row} of a batch of {rows}; model '{}' \
                 ({}) takes {} non-NULL numeric features. Filter NULL rows out or fill them, e.g. \
                 COALESCE({}, 0)",
                i + 1,
                field.name(),
                field.data_type(),
                model.path(),
                model.id(),
                shape.inputs,
                field.name()
            )));
        }
        let fixed;
        let column = match column.data_type() {
            DataType::List(_) | DataType::LargeList(_) => {
                // As wide as the model's inputs left over by the other features.
                let others: usize = fields.iter().filter_map(|f| width(f.data_type())).sum();
                let n = shape.inputs.saturating_sub(others);
                let item = Arc::new(Field::new("item", P::DATA_TYPE, true));
                let strict = arrow::compute::CastOptions { safe: false, ..Default::default() };
                fixed = arrow::compute::cast_with_options(column, &DataType::FixedSizeList(item, n as i32), &strict)
                    .map_err(|e| {
                        Error::BadRow(format!(
                            "predict: feature {} ('{}') must hold {n} numbers on every row for model '{}': {e}",
                            i + 1,
                            field.name(),
                            model.path()
                        ))
                    })?;
                &fixed
            }
            _ => column,
        };
        if let DataType::FixedSizeList(_, n) = column.data_type() {
            // A vector feature: its n elements become n feature columns.
            let n = usize::try_from(*n).unwrap_or(0);
            let list = column.as_fixed_size_list();
            let start = if rows > 0 { usize::try_from(list.value_offset(0)).unwrap_or(0) } else { 0 };
            let values = cast(&list.values().slice(start, rows * n), &P::DATA_TYPE)?;
            let values = values.as_primitive::<P>();
            if let Some(at) = (0..values.len()).find(|v| values.is_null(*v) || P::is_nan(values.value(*v))) {
                return Err(Error::BadRow(format!(
                    "predict: feature {} ('{}', {}) has a NULL or NaN element at row {} of a batch of {rows}; \
                     model '{}' ({}) takes numbers",
                    i + 1,
                    field.name(),
                    field.data_type(),
                    at / n.max(1),
                    model.path(),
                    model.id()
                )));
            }
            let values = values.values();
            for j in 0..n {
                let element = PrimitiveArray::<P>::from_iter_values((0..rows).map(|r| values[r * n + j]));
                out.push(Arc::new(element) as ArrayRef);
            }
            continue;
        }
        let cast_column = if column.data_type() == &P::DATA_TYPE { column.clone() } else { cast(column, &P::DATA_TYPE)? };
        if let Some(row) = cast_column.as_primitive::<P>().values().iter().position(|v| P::is_nan(*v)) {
            return Err(Error::BadRow(format!(
                "predict: feature {} ('{}', {}) is NaN at row {row} of a batch of {rows}; model '{}' ({}) takes \
                 numbers. Filter NaN rows out or replace them, e.g. CASE WHEN isnan({}) THEN 0 ELSE {} END",
                i + 1,
                field.name(),
                field.data_type(),
                model.path(),
                model.id(),
                field.name(),
                field.name()
            )));
        }
        out.push(cast_column);
    }
    Ok(out)
}
