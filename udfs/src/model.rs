//! Models: TorchScript (libtorch) or ONNX (ONNX Runtime, see [`crate::onnx`]), loaded once per
//! process, shared by every task, run on column batches.
//!
//! The runtime follows the file: `.onnx` runs through ONNX Runtime, `.pt` through libtorch, and
//! any other name by its content (TorchScript files are zip archives). A model is keyed by its path, size and modification time, so a replaced file is loaded anew
//! while unchanged files are never read twice. `CModule` is `Send + Sync` and `forward` takes
//! `&self`, so one loaded model serves all threads; tensors stay local to the calling thread.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tch::{CModule, Device, Kind, Tensor};

use crate::device::{default_device, device_name};
use crate::error::{Error, Result};

/// Rows given to one forward call. 8,192 rows of 32 features keep the GEMM operands in cache
/// (measured: 14M rows/s at 8,192 against 4.1M at 65,536 for a small MLP on 2 cores).
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Environment variable with libtorch's intra-op threads per forward call (default 1: tasks
/// already run in parallel, one per core, and one thread per forward was faster on a busy machine).
pub const THREADS_ENV: &str = "SLUICE_TORCH_THREADS";

/// Element type of a model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `torch.float32`.
    Float32,
    /// `torch.float64`.
    Float64,
}

/// What a probe forward pass showed about a model, for a given number of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Number of feature columns the model takes.
    pub inputs: usize,
    /// Number of values per row it returns (1 for a score).
    pub outputs: usize,
    /// Element type of the output.
    pub kind: OutputKind,
}

/// The format of a model file, and the runtime that scores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A TorchScript module, scored by libtorch.
    TorchScript,
    /// An ONNX graph, scored by ONNX Runtime.
    Onnx,
}

impl Format {
    /// `torchscript` or `onnx`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TorchScript => "torchscript",
            Self::Onnx => "onnx",
        }
    }

    /// The file extension models of this format are stored with.
    pub fn extension(self) -> &'static str {
        match self {
            Self::TorchScript => "pt",
            Self::Onnx => "onnx",
        }
    }
}

enum Runtime {
    Torch(CModule),
    Onnx(crate::onnx::OnnxModel),
}

/// A loaded model.
pub struct Model {
    path: String,
    id: String,
    device: Device,
    runtime: Runtime,
    /// Input width taken from the first 2-D weight, when the model has one (an MLP's first layer).
    declared_inputs: Option<usize>,
    probes: Mutex<HashMap<usize, std::result::Result<Shape, String>>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("id", &self.id).field("device", &self.device).finish()
    }
}

type CacheKey = (PathBuf, u64, Option<SystemTime>, Device);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<Model>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<Model>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Number of model loads from disk in this process (the cache's misses), for tests and metrics.
pub fn loads() -> u64 {
    LOADS.load(std::sync::atomic::Ordering::Relaxed)
}
static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn configure_threads() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let threads =
            std::env::var(THREADS_ENV).ok().and_then(|v| v.parse::<i32>().ok()).filter(|n| *n > 0).unwrap_or(1);
        tch::set_num_threads(threads);
    });
}

impl Model {
    /// Loads `path` on this process's default device, or returns the already loaded copy.
    pub fn load(path: &str) -> Result<Arc<Model>> {
        let device = default_device().map_err(Error::BadCall)?;
        Self::load_on(path, device)
    }

    /// Loads `path` on `device`, or returns the already loaded copy.
    pub fn load_on(path: &str, device: Device) -> Result<Arc<Model>> {
        let not_found = |source| Error::ModelNotFound { path: path.to_string(), source };
        let fetched = if crate::fetch::is_remote(path) { Some(crate::fetch::localize(path)?) } else { None };
        let local = fetched.as_deref().unwrap_or_else(|| Path::new(path.strip_prefix("file://").unwrap_or(path)));
        let canonical = local.canonicalize().map_err(not_found)?;
        let meta = std::fs::metadata(&canonical).map_err(not_found)?;
        if meta.is_dir() {
            return Err(not_found(std::io::Error::other("it is a directory, not a model file")));
        }
        let key = (canonical.clone(), meta.len(), meta.modified().ok(), device);
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(model) = cache.get(&key) {
            return Ok(model.clone());
        }
        configure_threads();
        let bytes = std::fs::read(&canonical).map_err(not_found)?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let stem = canonical.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        let id = format!("{stem}@{hex}");
        let (runtime, declared_inputs) = if crate::onnx::looks_like_onnx(&canonical, &bytes) {
            let cuda = match device {
                Device::Cuda(n) => Some(n),
                _ => None,
            };
            let model = crate::onnx::OnnxModel::load(path, bytes, cuda)?;
            let declared = model.declared_inputs();
            (Runtime::Onnx(model), declared)
        } else {
            let mut module = CModule::load_data_on_device(&mut Cursor::new(bytes), device)
                .map_err(|e| Error::ModelLoad { path: path.to_string(), message: first_line(&e.to_string()) })?;
            module.set_eval();
            let declared = module
                .named_parameters()
                .ok()
                .and_then(|params| params.iter().find(|(_, t)| t.dim() == 2).map(|(_, t)| t.size()[1] as usize));
            (Runtime::Torch(module), declared)
        };
        LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let format = match runtime {
            Runtime::Torch(_) => Format::TorchScript,
            Runtime::Onnx(_) => Format::Onnx,
        };
        tracing::info!(model = %id, path = %path, device = %device_name(device), format = format.name(), "loaded model");
        let model = Arc::new(Model {
            path: path.to_string(),
            id,
            device,
            runtime,
            declared_inputs,
            probes: Mutex::new(HashMap::new()),
        });
        cache.insert(key, model.clone());
        Ok(model)
    }

    /// `stem@sha256-prefix`: names the exact file that scored a row.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The path the model was loaded from, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The model's format (which runtime scores it).
    pub fn format(&self) -> Format {
        match self.runtime {
            Runtime::Torch(_) => Format::TorchScript,
            Runtime::Onnx(_) => Format::Onnx,
        }
    }

    /// Names of the values per row, where the model itself names them (an ONNX model's outputs,
    /// once probed); None for TorchScript, whose outputs are unnamed.
    pub fn output_names(&self) -> Option<Vec<String>> {
        match &self.runtime {
            Runtime::Torch(_) => None,
            Runtime::Onnx(model) => model.output_names(),
        }
    }

    /// The ONNX model inside, for its metadata and session counts.
    pub fn onnx(&self) -> Option<&crate::onnx::OnnxModel> {
        match &self.runtime {
            Runtime::Onnx(model) => Some(model),
            Runtime::Torch(_) => None,
        }
    }

    /// Whether the model takes float64 features (an ONNX model with a `double` input): `predict`
    /// then hands it f64 columns through [`Model::forward_f64`].
    pub fn takes_f64(&self) -> bool {
        self.onnx().is_some_and(crate::onnx::OnnxModel::takes_f64)
    }

    /// As [`Model::forward`], for a model that [takes f64](Model::takes_f64) features.
    pub fn forward_f64(&self, columns: &[&[f64]], start: usize, n: usize, shape: Shape) -> Result<Output> {
        match &self.runtime {
            Runtime::Onnx(model) => model.forward(&self.id, columns, start, n, shape),
            Runtime::Torch(_) => Err(Error::Torch {
                model: self.id.clone(),
                message: "TorchScript models take float32 features".into(),
            }),
        }
    }

    /// The input width the model's first layer declares, if it has a 2-D weight.
    pub fn declared_inputs(&self) -> Option<usize> {
        self.declared_inputs
    }

    /// Runs the model once on two rows of zeros to learn its output width and type for
    /// `inputs` features. Results are cached per width.
    pub fn probe(&self, inputs: usize) -> Result<Shape> {
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        let result = probes.entry(inputs).or_insert_with(|| self.run_probe(inputs)).clone();
        result.map_err(Error::BadCall)
    }

    fn run_probe(&self, inputs: usize) -> std::result::Result<Shape, String> {
        let module = match &self.runtime {
            Runtime::Torch(module) => module,
            Runtime::Onnx(model) => {
                let shape = model.probe(&self.id, inputs)?;
                if shape.outputs == 0 {
                    return Err(format!("predict: model '{}' ({}) returns no output values; export it with at least one output", self.path, self.id));
                }
                return Ok(shape);
            }
        };
        let expected = match self.declared_inputs {
            Some(n) => format!("{n} numeric feature columns (its first layer's width)"),
            None => "numeric feature columns".to_string(),
        };
        if let Some(n) = self.declared_inputs
            && n != inputs
        {
            return Err(format!(
                "predict: model '{}' ({}) expects {expected} but was given {inputs}. \
                 Call predict('{}', f1, ..., f{n}) with the features in training order",
                self.path, self.id, self.path
            ));
        }
        let x = Tensor::zeros([2, inputs as i64], (Kind::Float, self.device));
        let out = tch::no_grad(|| module.forward_ts(&[x])).map_err(|e| {
            format!(
                "predict: model '{}' ({}) rejected {inputs} float32 feature column(s): {}. \
                 It expects {expected}",
                self.path,
                self.id,
                first_line(&e.to_string())
            )
        })?;
        let size = out.size();
        let outputs = match size.as_slice() {
            [2] | [2, 1] => 1,
            [2, k] if *k > 0 => *k as usize,
            other => {
                return Err(format!(
                    "predict: model '{}' returned a tensor of shape {other:?} for 2 rows; \
                     predict needs one value per row ([n] or [n, 1]) or a vector per row ([n, k])",
                    self.path
                ));
            }
        };
        let kind = match out.kind() {
            Kind::Float | Kind::Half | Kind::BFloat16 => OutputKind::Float32,
            Kind::Double => OutputKind::Float64,
            other => {
                return Err(format!(
                    "predict: model '{}' returns {other:?} values; predict supports float outputs",
                    self.path
                ));
            }
        };
        Ok(Shape { inputs, outputs, kind })
    }

    /// Scores `rows` rows given as column-major features (`features[c * rows + r]`), returning
    /// `rows * shape.outputs` values, row-major, as f64 or f32 per the probed kind.
    ///
    /// The column-major buffer is handed to libtorch as a transposed `[rows, inputs]` view,
    /// which GEMM takes as it is: no row-major copy.
    pub fn forward_columns(&self, features: &[f32], rows: usize, shape: Shape) -> Result<Output> {
        debug_assert_eq!(features.len(), rows * shape.inputs);
        let module = match &self.runtime {
            Runtime::Torch(module) => module,
            Runtime::Onnx(model) => {
                let columns: Vec<&[f32]> = features.chunks(rows.max(1)).collect();
                return model.forward(&self.id, &columns, 0, rows, shape);
            }
        };
        let torch_err = |e: tch::TchError| Error::Torch { model: self.id.clone(), message: first_line(&e.to_string()) };
        // SAFETY: `features` outlives the tensor `view`, which is dropped before returning; the
        // size and strides address exactly `rows * inputs` f32 values inside the slice.
        let view = unsafe {
            Tensor::f_from_blob(
                features.as_ptr().cast::<u8>(),
                &[rows as i64, shape.inputs as i64],
                &[1, rows as i64],
                Kind::Float,
                Device::Cpu,
            )
        }
        .map_err(torch_err)?;
        let out = tch::no_grad(|| -> std::result::Result<Tensor, tch::TchError> {
            let input = if self.device == Device::Cpu { view.shallow_clone() } else { view.f_to_device(self.device)? };
            let out = module.forward_ts(&[input])?;
            out.f_to_device(Device::Cpu)?.f_contiguous()
        })
        .map_err(torch_err)?;
        drop(view);
        let numel = out.numel();
        if numel != rows * shape.outputs {
            return Err(Error::Torch {
                model: self.id.clone(),
                message: format!(
                    "returned {numel} values for {rows} rows, expected {} (shape {:?})",
                    rows * shape.outputs,
                    out.size()
                ),
            });
        }
        match shape.kind {
            OutputKind::Float32 => {
                let out = out.f_to_kind(Kind::Float).map_err(torch_err)?;
                let mut values = vec![0f32; numel];
                out.f_copy_data(&mut values, numel).map_err(torch_err)?;
                Ok(Output::F32(values))
            }
            OutputKind::Float64 => {
                let mut values = vec![0f64; numel];
                out.f_copy_data(&mut values, numel).map_err(torch_err)?;
                Ok(Output::F64(values))
            }
        }
    }
}

impl Model {
    /// Scores rows `start..start + n` of `columns` (one f32 slice per feature). TorchScript gets
    /// them as one column-major buffer (`scratch`, reused across calls), ONNX Runtime as its
    /// inputs need them (see [`crate::onnx`]).
    pub fn forward(
        &self,
        columns: &[&[f32]],
        start: usize,
        n: usize,
        shape: Shape,
        scratch: &mut Vec<f32>,
    ) -> Result<Output> {
        if let Runtime::Onnx(model) = &self.runtime {
            return model.forward(&self.id, columns, start, n, shape);
        }
        scratch.resize(n * columns.len(), 0.0);
        for (c, col) in columns.iter().enumerate() {
            scratch[c * n..(c + 1) * n].copy_from_slice(&col[start..start + n]);
        }
        self.forward_columns(scratch, n, shape)
    }
}

/// Scores from one forward call, row-major.
#[derive(Debug)]
pub enum Output {
    /// float32 outputs.
    F32(Vec<f32>),
    /// float64 outputs.
    F64(Vec<f64>),
}

/// The useful line of a libtorch error (its full text can hold whole tensors and a C++ stack): the Python-style `...Error: message` line of a TorchScript
/// traceback when there is one, else the first line (C++ errors append a long stack after it).
pub fn first_line(s: &str) -> String {
    if let Some(line) = s.lines().rev().find(|l| l.contains("Error: ")) {
        let start = line.find("Error: ").map_or(0, |i| i + "Error: ".len());
        return line[start..].trim().to_string();
    }
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(s).to_string()
}
