//! ONNX models through ONNX Runtime: tree ensembles (LightGBM, XGBoost, scikit-learn) and models
//! exported from any framework, behind the same `predict` as TorchScript.
//!
//! The runtime library is loaded at run time (the `ort` crate's dynamic loading), from PyPI's
//! `onnxruntime` wheel that `scripts/setup.sh` installs, or from [`LIBRARY_ENV`]. One
//! environment serves the whole process. A session's `run` needs exclusive access, so a model
//! keeps a small pool: a task takes an idle session or, when all are busy, opens one more, up to
//! [`SESSIONS_ENV`] (the cores by default); past that it waits for one to come back.
//!
//! Inputs come from the model's metadata: one `[n, k]` tensor of features (filled row-major from
//! the columns, one copy), or k named `[n, 1]` / `[n]` inputs, one per column (handed over without
//! a copy). Features reach a model as the element type it declares: a model of doubles gets f64
//! columns, never values rounded through f32. Every numeric output tensor becomes one or more values per row, in the model's output
//! order: a converted classifier's label tensor and probability tensor become `label`,
//! `probabilities_0`, `probabilities_1`, ...

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{PrimitiveTensorElementType, Tensor, TensorElementType, TensorRef, ValueType};

use crate::error::{Error, Result};
use crate::model::{Output, OutputKind, Shape};

/// Environment variable with the path of the ONNX Runtime library (`libonnxruntime.so.1.31.x`),
/// overriding the one `scripts/setup.sh` installed.
pub const LIBRARY_ENV: &str = "SLUICE_ONNXRUNTIME";

/// Environment variable with ONNX Runtime's intra-op threads per session (default 1: tasks
/// already run one per core, as for libtorch).
pub const THREADS_ENV: &str = "SLUICE_ONNX_THREADS";

/// Environment variable with the most sessions one model keeps open in a process (default: the
/// cores). A task that finds them all busy waits for one instead of opening another.
pub const SESSIONS_ENV: &str = "SLUICE_ONNX_SESSIONS";

/// The ONNX Runtime version this build's `ort` API level needs (major.minor).
pub const RUNTIME_VERSION: &str = "1.31";

/// Where the runtime library is looked for: [`LIBRARY_ENV`], else the file `scripts/setup.sh`
/// installed when this binary was built, else `libonnxruntime.so` on the loader's path.
pub fn library_path() -> PathBuf {
    if let Some(path) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match option_env!("SLUICE_ONNXRUNTIME_LIB") {
        Some(path) if Path::new(path).exists() => PathBuf::from(path),
        _ => PathBuf::from("libonnxruntime.so"),
    }
}

fn runtime_missing(why: String) -> Error {
    Error::OnnxRuntime(format!(
        "{why}. .onnx models need ONNX Runtime {RUNTIME_VERSION}: run scripts/setup.sh (it installs PyPI's \
         onnxruntime into its cache) or set {LIBRARY_ENV} to a libonnxruntime.so.{RUNTIME_VERSION}.x"
    ))
}

/// The process's ONNX Runtime environment, loading the library on first use.
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = library_path();
        if path.components().count() > 1 && !path.exists() {
            return Err(format!("the ONNX Runtime library {} does not exist", path.display()));
        }
        // `init_from` must come before any other ort call: it binds the API to this library.
        let builder = ort::init_from(&path)
            .map_err(|e| format!("the ONNX Runtime library {} cannot be loaded: {e}", path.display()))?;
        let env = builder
            .with_name("sluice")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("ONNX Runtime from {} did not start: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "loaded ONNX Runtime");
        Ok(env)
    });
    env.as_ref().map_err(|why| runtime_missing(why.clone()))
}

/// Element types `predict` feeds: features are numbers, handed over as the model declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// `float` (float32).
    F32,
    /// `double` (float64).
    F64,
}

/// A feature value `predict` hands to ONNX Runtime: f32, or f64 for models that take doubles
/// (so a float64 column reaches them unrounded).
pub trait Feature: PrimitiveTensorElementType + std::fmt::Debug + Copy + 'static {
    /// This type's element.
    const ELEMENT: Element;
    /// As f32 (rounded from f64).
    fn to_f32(self) -> f32;
    /// As f64.
    fn to_f64(self) -> f64;
}

impl Feature for f32 {
    const ELEMENT: Element = Element::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Feature for f64 {
    const ELEMENT: Element = Element::F64;
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// A model's sessions: the idle ones, and how many are open in all.
#[derive(Default)]
struct Pool {
    idle: Vec<Session>,
    open: usize,
}

/// How the model takes its features.
#[derive(Debug, Clone)]
enum Inputs {
    /// One tensor `[n, k]` (k from the metadata when it is fixed).
    Matrix { name: String, element: Element, width: Option<usize> },
    /// One input per feature, each `[n, 1]` (rank 2) or `[n]` (rank 1).
    Named(Vec<(String, Element, usize)>),
}

/// One output the model returns, as the probe saw it.
#[derive(Debug, Clone)]
struct OutputSpec {
    name: String,
    element: TensorElementType,
    /// Values per row.
    width: usize,
}

/// A loaded ONNX model.
pub struct OnnxModel {
    path: String,
    bytes: Vec<u8>,
    inputs: Inputs,
    output_names: Vec<String>,
    cuda: Option<usize>,
    threads: usize,
    max_sessions: usize,
    pool: Mutex<Pool>,
    freed: Condvar,
    probed: Mutex<Option<std::result::Result<Vec<OutputSpec>, String>>>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("path", &self.path).field("inputs", &self.inputs).finish()
    }
}

fn element(ty: TensorElementType) -> Option<Element> {
    match ty {
        TensorElementType::Float32 => Some(Element::F32),
        TensorElementType::Float64 => Some(Element::F64),
        _ => None,
    }
}

fn type_name(ty: &ValueType) -> String {
    match ty {
        ValueType::Tensor { ty, shape, .. } => format!("a {ty:?} tensor of shape {shape}"),
        ValueType::Sequence(inner) => format!("a sequence of {}", type_name(inner)),
        ValueType::Map { key, value } => format!("a map from {key:?} to {value:?}"),
        ValueType::Optional(inner) => format!("an optional {}", type_name(inner)),
    }
}

impl OnnxModel {
    /// Loads the ONNX model in `bytes` (read from `path`), on CUDA device `cuda` when given.
    pub fn load(path: &str, bytes: Vec<u8>, cuda: Option<usize>) -> Result<Self> {
        let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut model = Self {
            path: path.to_string(),
            bytes,
            inputs: Inputs::Named(Vec::new()),
            output_names: Vec::new(),
            cuda,
            threads: setting(THREADS_ENV).unwrap_or(1),
            max_sessions: setting(SESSIONS_ENV).unwrap_or(cores),
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
            probed: Mutex::new(None),
        };
        // The first session tells whether the file loads at all: its failures are the file's.
        let session = model.open_session().map_err(|e| match e {
            Error::Onnx { message, .. } => model.load_error(message),
            other => other,
        })?;
        model.pool.get_mut().unwrap_or_else(|p| p.into_inner()).open = 1;
        model.inputs = model.read_inputs(&session)?;
        model.output_names = session.outputs().iter().map(|o| o.name().to_string()).collect();
        model.give_back(session);
        Ok(model)
    }

    fn load_error(&self, message: impl Into<String>) -> Error {
        Error::OnnxLoad { path: self.path.clone(), message: message.into() }
    }

    fn read_inputs(&self, session: &Session) -> Result<Inputs> {
        let inputs = session.inputs();
        let described = || {
            inputs.iter().map(|i| format!("'{}' ({})", i.name(), type_name(i.dtype()))).collect::<Vec<_>>().join(", ")
        };
        let unsupported = |name: &str, ty: &ValueType| {
            self.load_error(format!(
                "its input '{name}' is {}; predict feeds float32 or float64 features (the model's inputs: {})",
                type_name(ty),
                described()
            ))
        };
        match inputs {
            [] => Err(self.load_error("it declares no inputs")),
            [only] => {
                let ValueType::Tensor { ty, shape, .. } = only.dtype() else {
                    return Err(unsupported(only.name(), only.dtype()));
                };
                let element = element(*ty).ok_or_else(|| unsupported(only.name(), only.dtype()))?;
                self.check_rows_axis(only.name(), shape)?;
                match shape.len() {
                    1 => Ok(Inputs::Named(vec![(only.name().to_string(), element, 1)])),
                    2 => Ok(Inputs::Matrix {
                        name: only.name().to_string(),
                        element,
                        width: usize::try_from(shape[1]).ok().filter(|w| *w > 0),
                    }),
                    _ => Err(self.load_error(format!(
                        "its input '{}' has shape {shape}; predict feeds [rows, features] or one [rows, 1] input per feature",
                        only.name()
                    ))),
                }
            }
            many => many
                .iter()
                .map(|input| {
                    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
                        return Err(unsupported(input.name(), input.dtype()));
                    };
                    let element = element(*ty).ok_or_else(|| unsupported(input.name(), input.dtype()))?;
                    self.check_rows_axis(input.name(), shape)?;
                    let one_value = shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
                    if !one_value {
                        return Err(self.load_error(format!(
                            "its input '{}' has shape {shape}; a model with several inputs takes one feature per \
                             input, [rows, 1] or [rows] (the model's inputs: {})",
                            input.name(),
                            described()
                        )));
                    }
                    Ok((input.name().to_string(), element, shape.len()))
                })
                .collect::<Result<Vec<_>>>()
                .map(Inputs::Named),
        }
    }

    /// Refuses an input whose first axis (the rows) is fixed, as `[1, k]` exports have: predict
    /// scores thousands of rows per call.
    fn check_rows_axis(&self, name: &str, shape: &ort::value::Shape) -> Result<()> {
        match shape.first() {
            Some(rows) if *rows > 0 => Err(self.load_error(format!(
                "its input '{name}' has shape {shape}, a fixed batch of {rows} row(s); predict scores rows in \
                 batches, so the first axis must be dynamic. Export it with a dynamic first axis: \
                 torch.onnx.export(..., dynamic_axes={{'{name}': {{0: 'rows'}}}}), or None as the first \
                 dimension of skl2onnx / onnxmltools initial_types (FloatTensorType([None, k]))"
            ))),
            _ => Ok(()),
        }
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session from the pool: an idle one, a new one while fewer than [`SESSIONS_ENV`] are
    /// open, or else the next one another task gives back.
    fn session(&self) -> Result<Session> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                break;
            }
            pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
        drop(pool);
        self.open_session().inspect_err(|_| {
            self.lock_pool().open -= 1;
            self.freed.notify_one();
        })
    }

    /// Opens one more session on the model's bytes.
    fn open_session(&self) -> Result<Session> {
        let env = environment()?;
        let fail = |message: String| Error::Onnx {
            model: self.path.clone(),
            message: format!("a new session could not be opened: {message}"),
        };
        let builder_fail = |e: ort::Error<ort::session::builder::SessionBuilder>| fail(e.to_string());
        let mut builder = Session::builder(env)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(self.threads)
            .map_err(builder_fail)?
            .with_intra_op_spinning(false)
            .map_err(builder_fail)?
            .with_inter_op_spinning(false)
            .map_err(builder_fail)?;
        if let Some(device) = self.cuda {
            // libtorch's CUDA backend brings the CUDA and cuDNN libraries the provider needs.
            crate::device::load_cuda_backend();
            let cuda = ort::ep::CUDA::default().with_device_id(device as i32).build().error_on_failure();
            builder = builder.with_execution_providers([cuda]).map_err(|e| {
                Error::OnnxRuntime(format!(
                    "ONNX Runtime's CUDA provider is not usable for '{}' on cuda:{device} ({e}); install the GPU \
                     runtime with scripts/setup.sh --cuda, or score on the CPU (--device cpu)",
                    self.path
                ))
            })?;
        }
        let session = builder.commit_from_memory(&self.bytes).map_err(|e| fail(e.to_string()))?;
        tracing::debug!(model = %self.path, "opened an ONNX Runtime session");
        Ok(session)
    }

    fn give_back(&self, session: Session) {
        self.lock_pool().idle.push(session);
        self.freed.notify_one();
    }

    /// Sessions open now (at most [`SESSIONS_ENV`], else the cores).
    pub fn sessions(&self) -> usize {
        self.lock_pool().open
    }

    /// The most sessions this model opens.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The number of features the model's metadata declares, when fixed.
    pub fn declared_inputs(&self) -> Option<usize> {
        match &self.inputs {
            Inputs::Matrix { width, .. } => *width,
            Inputs::Named(names) => Some(names.len()),
        }
    }

    /// The names of the model's inputs, in order.
    pub fn input_names(&self) -> Vec<String> {
        match &self.inputs {
            Inputs::Matrix { name, .. } => vec![name.clone()],
            Inputs::Named(names) => names.iter().map(|(n, _, _)| n.clone()).collect(),
        }
    }

    /// Runs the model on two rows of zeros to learn each output's width and type.
    pub fn probe(&self, id: &str, inputs: usize) -> std::result::Result<Shape, String> {
        if let Some(n) = self.declared_inputs()
            && n != inputs
        {
            let how = match &self.inputs {
                Inputs::Matrix { name, .. } => format!("one input '{name}' of {n} features"),
                Inputs::Named(names) => format!(
                    "{n} named inputs ({})",
                    names.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(format!(
                "predict: model '{}' ({id}) expects {n} numeric feature columns ({how}) but was given {inputs}. \
                 Call predict('{}', f1, ..., f{n}) with the features in training order",
                self.path, self.path
            ));
        }
        // Not cached here: `Model::probe` keeps one result per input count. Only a success is
        // kept, for the output names.
        let zeros = vec![0f32; 2];
        let columns: Vec<&[f32]> = (0..inputs).map(|_| &zeros[..]).collect();
        let specs = self.run(id, &columns, 0, 2).map(|(specs, _)| specs).map_err(|e| e.to_string())?;
        *self.probed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(specs.clone()));
        let outputs = specs.iter().map(|s| s.width).sum();
        let kind = if specs.iter().all(|s| s.element == TensorElementType::Float32) {
            OutputKind::Float32
        } else {
            OutputKind::Float64
        };
        Ok(Shape { inputs, outputs, kind })
    }

    /// Names for the values per row: an output's own name, or `name_i` for each value of a wider
    /// one (a classifier's `probabilities_0`, `probabilities_1`, ...). None before a probe.
    pub fn output_names(&self) -> Option<Vec<String>> {
        let probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        let specs = probed.as_ref()?.as_ref().ok()?;
        Some(
            specs
                .iter()
                .flat_map(|s| {
                    if s.width == 1 {
                        vec![s.name.clone()]
                    } else {
                        (0..s.width).map(|i| format!("{}_{i}", s.name)).collect()
                    }
                })
                .collect(),
        )
    }

    /// Scores rows `start..start + n` of `columns` (one slice per feature), returning
    /// `n * shape.outputs` values, row-major.
    pub fn forward<T: Feature>(&self, id: &str, columns: &[&[T]], start: usize, n: usize, shape: Shape) -> Result<Output> {
        if n == 0 {
            return Ok(match shape.kind {
                OutputKind::Float32 => Output::F32(Vec::new()),
                OutputKind::Float64 => Output::F64(Vec::new()),
            });
        }
        let (specs, values) = self.run(id, columns, start, n)?;
        let width: usize = specs.iter().map(|s| s.width).sum();
        if width != shape.outputs {
            return Err(Error::Onnx {
                model: id.to_string(),
                message: format!("returned {width} values per row for {n} rows, where the probe saw {}", shape.outputs),
            });
        }
        let mut offset = 0;
        match shape.kind {
            OutputKind::Float32 => {
                let mut out = vec![0f32; n * width];
                for (spec, value) in specs.iter().zip(&values) {
                    let OutputValues::F32(v) = value else { return Err(changed_kind(id)) };
                    interleave(&mut out, v, n, width, offset, spec.width);
                    offset += spec.width;
                }
                Ok(Output::F32(out))
            }
            OutputKind::Float64 => {
                let mut out = vec![0f64; n * width];
                for (spec, value) in specs.iter().zip(values) {
                    let v = value.into_f64();
                    interleave(&mut out, &v, n, width, offset, spec.width);
                    offset += spec.width;
                }
                Ok(Output::F64(out))
            }
        }
    }

    /// Whether any input takes doubles: `predict` then hands over f64 columns.
    pub fn takes_f64(&self) -> bool {
        match &self.inputs {
            Inputs::Matrix { element, .. } => *element == Element::F64,
            Inputs::Named(names) => names.iter().any(|(_, e, _)| *e == Element::F64),
        }
    }

    fn run<T: Feature>(
        &self,
        id: &str,
        columns: &[&[T]],
        start: usize,
        n: usize,
    ) -> Result<(Vec<OutputSpec>, Vec<OutputValues>)> {
        let fail = |message: String| Error::Onnx { model: id.to_string(), message };
        let ort_fail = |e: ort::Error| fail(e.to_string());
        let takes = match &self.inputs {
            Inputs::Named(names) => Some(names.len()),
            Inputs::Matrix { width, .. } => *width,
        };
        if takes.is_some_and(|k| k != columns.len()) || columns.iter().any(|c| c.len() < start + n) {
            return Err(fail(format!(
                "was handed {} feature column(s) for rows {start}..{} where it takes {}",
                columns.len(),
                start + n,
                takes.map_or_else(|| "its declared width".to_string(), |k| k.to_string())
            )));
        }
        fn rows<T>(c: &[T], start: usize, n: usize) -> &[T] {
            &c[start..start + n]
        }
        /// Rows `start..start + n` of the columns as one row-major `[n, k]` matrix.
        fn matrix<T: Copy, U>(columns: &[&[T]], start: usize, n: usize, convert: impl Fn(T) -> U) -> Vec<U> {
            (0..n).flat_map(|r| columns.iter().map(move |c| c[start + r])).map(convert).collect()
        }
        // Inputs: borrowed column slices where the model takes one feature per input in the
        // columns' own type, else a converted copy (one row-major matrix for a matrix input).
        let mut feeds: Vec<(String, SessionInputValue<'_>)> = Vec::new();
        match &self.inputs {
            Inputs::Matrix { name, element, .. } => {
                let dims = [n, columns.len()];
                let value: SessionInputValue<'_> = match element {
                    Element::F32 => Tensor::from_array((dims, matrix(columns, start, n, T::to_f32))).map_err(ort_fail)?.into(),
                    Element::F64 => Tensor::from_array((dims, matrix(columns, start, n, T::to_f64))).map_err(ort_fail)?.into(),
                };
                feeds.push((name.clone(), value));
            }
            Inputs::Named(names) => {
                for ((name, element, rank), column) in names.iter().zip(columns) {
                    let dims: Vec<usize> = if *rank == 1 { vec![n] } else { vec![n, 1] };
                    let column = rows(column, start, n);
                    let value: SessionInputValue<'_> = if *element == T::ELEMENT {
                        TensorRef::from_array_view((dims, column)).map_err(ort_fail)?.into()
                    } else {
                        match element {
                            Element::F32 => {
                                let values: Vec<f32> = column.iter().map(|v| v.to_f32()).collect();
                                Tensor::from_array((dims, values)).map_err(ort_fail)?.into()
                            }
                            Element::F64 => {
                                let values: Vec<f64> = column.iter().map(|v| v.to_f64()).collect();
                                Tensor::from_array((dims, values)).map_err(ort_fail)?.into()
                            }
                        }
                    };
                    feeds.push((name.clone(), value));
                }
            }
        }
        let mut session = self.session()?;
        let result = (|| {
            let outputs = session.run(feeds).map_err(ort_fail)?;
            let mut specs = Vec::new();
            let mut values = Vec::new();
            for (name, value) in outputs.iter() {
                let dtype = value.dtype();
                let ValueType::Tensor { ty, .. } = dtype else {
                    return Err(fail(format!(
                        "its output '{name}' is {}; predict returns numbers. A classifier converted with ZipMap \
                         returns its probabilities as maps: convert it with zipmap=False (skl2onnx: \
                         options={{id(model): {{'zipmap': False}}}}; onnxmltools: zipmap=False)",
                        type_name(dtype)
                    )));
                };
                let (values_here, shape) = match ty {
                    TensorElementType::Float32 => {
                        let (shape, v) = value.try_extract_tensor::<f32>().map_err(ort_fail)?;
                        (OutputValues::F32(v.to_vec()), shape.clone())
                    }
                    TensorElementType::Float64 => {
                        let (shape, v) = value.try_extract_tensor::<f64>().map_err(ort_fail)?;
                        (OutputValues::F64(v.to_vec()), shape.clone())
                    }
                    TensorElementType::Int64 => {
                        let (shape, v) = value.try_extract_tensor::<i64>().map_err(ort_fail)?;
                        (OutputValues::F64(v.iter().map(|x| *x as f64).collect()), shape.clone())
                    }
                    TensorElementType::Int32 => {
                        let (shape, v) = value.try_extract_tensor::<i32>().map_err(ort_fail)?;
                        (OutputValues::F64(v.iter().map(|x| f64::from(*x)).collect()), shape.clone())
                    }
                    other => {
                        return Err(fail(format!(
                            "its output '{name}' holds {other:?} values; predict returns numbers{}",
                            if *other == TensorElementType::String {
                                " (string class labels: train with integer labels, or keep the probabilities only)"
                            } else {
                                ""
                            }
                        )));
                    }
                };
                let count = values_here.len();
                if shape.first().copied() != Some(n as i64) || count % n.max(1) != 0 {
                    return Err(fail(format!(
                        "its output '{name}' has shape {shape} for {n} rows; predict needs the rows first"
                    )));
                }
                specs.push(OutputSpec { name: name.to_string(), element: *ty, width: count / n.max(1) });
                values.push(values_here);
            }
            Ok((specs, values))
        })();
        self.give_back(session);
        result
    }

    /// The names of the model's outputs, as its metadata lists them.
    pub fn outputs_declared(&self) -> &[String] {
        &self.output_names
    }
}

fn changed_kind(id: &str) -> Error {
    Error::Onnx { model: id.to_string(), message: "an output's type changed after the probe".into() }
}

/// One output's values.
enum OutputValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl OutputValues {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    fn into_f64(self) -> Vec<f64> {
        match self {
            Self::F32(v) => v.into_iter().map(f64::from).collect(),
            Self::F64(v) => v,
        }
    }
}

/// Writes one output's `n * w` row-major values into columns `offset..offset + w` of `out`.
fn interleave<T: Copy>(out: &mut [T], values: &[T], n: usize, width: usize, offset: usize, w: usize) {
    for r in 0..n {
        out[r * width + offset..r * width + offset + w].copy_from_slice(&values[r * w..(r + 1) * w]);
    }
}

/// Whether `bytes` look like an ONNX model rather than TorchScript: TorchScript files are zip
/// archives; an ONNX file is a protobuf `ModelProto`, which starts with its `ir_version` field.
pub fn looks_like_onnx(path: &Path, bytes: &[u8]) -> bool {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("onnx") => true,
        Some("pt" | "pth" | "ptl" | "torchscript") => false,
        _ => !bytes.starts_with(b"PK") && bytes.first() == Some(&0x08),
    }
}
