//! Baseline tabular training with libtorch: logistic/linear models and small MLPs for binary
//! classification and regression, early-stopped on a validation set and saved as TorchScript
//! with the input standardisation (and, for regression, the target's scale) built in, so the
//! saved model takes raw feature columns and returns probabilities or values.

pub mod job;

use std::path::Path;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{CModule, Device, Kind, Reduction, Tensor};

use sluice_catalog::error::{Error, Result};

/// Rows of features (row-major) and 0/1 labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// `rows * width` values, row-major.
    pub features: Vec<f32>,
    /// One label per row.
    pub labels: Vec<f32>,
    /// Number of features per row.
    pub width: usize,
}

impl Dataset {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    fn tensors(&self) -> (Tensor, Tensor) {
        let x = Tensor::from_slice(&self.features).view([self.rows() as i64, self.width as i64]);
        let y = Tensor::from_slice(&self.labels).view([self.rows() as i64, 1]);
        (x, y)
    }
}

/// What is learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// 0/1 labels; the model returns the probability of 1.
    Classification,
    /// Numeric targets; the model returns the value.
    Regression,
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "classification" => Ok(Self::Classification),
            "regression" => Ok(Self::Regression),
            other => Err(Error::Invalid(format!("task '{other}' is not known; use classification or regression"))),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classification => "classification",
            Self::Regression => "regression",
        })
    }
}

/// Training settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    /// What is learnt.
    pub task: Task,
    /// Hidden layer widths (none: a logistic or linear model).
    pub hidden: Vec<i64>,
    /// Most epochs to run.
    pub max_epochs: usize,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Rows per optimisation step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed for weights and shuffling.
    pub seed: i64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            task: Task::Classification,
            hidden: vec![32, 16],
            max_epochs: 30,
            patience: 3,
            batch_size: 512,
            learning_rate: 3e-3,
            seed: 42,
        }
    }
}

/// What training produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trained {
    /// Epochs run.
    pub epochs: usize,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation loss of the kept weights (log loss; regression: mean squared error of the
    /// standardised target).
    pub validation_log_loss: f64,
}

fn mean_std(data: &Dataset) -> (Vec<f32>, Vec<f32>) {
    let (n, w) = (data.rows().max(1), data.width);
    let mut mean = vec![0f64; w];
    let mut sq = vec![0f64; w];
    for row in data.features.chunks_exact(w) {
        for (c, v) in row.iter().enumerate() {
            mean[c] += f64::from(*v);
            sq[c] += f64::from(*v) * f64::from(*v);
        }
    }
    let mean: Vec<f64> = mean.iter().map(|m| m / n as f64).collect();
    let std = sq.iter().zip(&mean).map(|(s, m)| ((s / n as f64 - m * m).max(0.0).sqrt().max(1e-6)) as f32).collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// Trains a binary classifier on `train`, keeps the weights with the best log loss on
/// `validate`, and saves a TorchScript module taking `[n, width]` raw features and returning
/// `[n, 1]` probabilities to `out`. `on_epoch` is called after each epoch with its validation loss.
pub fn train_binary_classifier(
    train: &Dataset,
    validate: &Dataset,
    options: &TrainOptions,
    out: &Path,
    on_epoch: impl FnMut(usize, f64),
) -> Result<Trained> {
    train_model(train, validate, &TrainOptions { task: Task::Classification, ..options.clone() }, out, on_epoch)
}

/// Trains `options.task` on `train`, keeps the weights with the best loss on `validate`, and
/// saves a TorchScript module taking `[n, width]` raw features and returning `[n, 1]`
/// probabilities (classification) or values (regression) to `out`. `on_epoch` is called after
/// each epoch with its validation loss.
pub fn train_model(
    train: &Dataset,
    validate: &Dataset,
    options: &TrainOptions,
    out: &Path,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<Trained> {
    if train.rows() == 0 || validate.rows() == 0 {
        return Err(Error::Invalid(format!(
            "training needs rows in both splits: train has {}, validate has {}",
            train.rows(),
            validate.rows()
        )));
    }
    tch::manual_seed(options.seed);
    let width = train.width as i64;
    let (mean, std) = mean_std(train);
    let mean = Tensor::from_slice(&mean).view([1, width]);
    let std = Tensor::from_slice(&std).view([1, width]);

    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let mut net = nn::seq();
    let mut input = width;
    for (i, h) in options.hidden.iter().enumerate() {
        net = net.add(nn::linear(&root / format!("hidden{i}"), input, *h, Default::default())).add_fn(|x| x.relu());
        input = *h;
    }
    let net = net.add(nn::linear(&root / "out", input, 1, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, options.learning_rate)?;

    // Regression learns the standardised target; the saved module scales it back.
    let (y_mean, y_std) = match options.task {
        Task::Classification => (0.0f64, 1.0f64),
        Task::Regression => {
            let n = train.rows() as f64;
            let m = train.labels.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
            let var = train.labels.iter().map(|v| (f64::from(*v) - m).powi(2)).sum::<f64>() / n;
            (m, var.sqrt().max(1e-6))
        }
    };
    let loss_of = |output: &Tensor, target: &Tensor| match options.task {
        Task::Classification => {
            output.binary_cross_entropy_with_logits::<Tensor>(target, None, None, Reduction::Mean)
        }
        Task::Regression => output.mse_loss(&((target - y_mean) / y_std), Reduction::Mean),
    };
    let (x_train, y_train) = train.tensors();
    let x_train = (x_train - &mean) / &std;
    let (x_val, y_val) = validate.tensors();
    let x_val = (x_val - &mean) / &std;
    let rows = train.rows() as i64;

    let mut best = (f64::INFINITY, 0usize);
    let mut best_weights: Vec<(String, Tensor)> = Vec::new();
    let mut epochs = 0;
    for epoch in 1..=options.max_epochs {
        epochs = epoch;
        let perm = Tensor::randperm(rows, (Kind::Int64, Device::Cpu));
        let mut start = 0;
        while start < rows {
            let end = (start + options.batch_size as i64).min(rows);
            let idx = perm.narrow(0, start, end - start);
            let output = net.forward(&x_train.index_select(0, &idx));
            let loss = loss_of(&output, &y_train.index_select(0, &idx));
            opt.backward_step(&loss);
            start = end;
        }
        let val_loss = tch::no_grad(|| loss_of(&net.forward(&x_val), &y_val).double_value(&[]));
        on_epoch(epoch, val_loss);
        if val_loss < best.0 - 1e-5 {
            best = (val_loss, epoch);
            best_weights = vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
        } else if epoch - best.1 >= options.patience {
            break;
        }
    }
    tch::no_grad(|| {
        let mut vars = vs.variables();
        for (name, saved) in &best_weights {
            if let Some(var) = vars.get_mut(name) {
                var.copy_(saved);
            }
        }
    });

    // Trained weights become constants of the traced module; tracing refuses tensors requiring grad.
    vs.freeze();
    let example = Tensor::zeros([2, width], (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        let name = match options.task {
            Task::Classification => "SluiceClassifier",
            Task::Regression => "SluiceRegressor",
        };
        CModule::create_by_tracing(name, "forward", &[example], &mut |xs| {
            let out = net.forward(&((&xs[0] - &mean) / &std));
            vec![match options.task {
                Task::Classification => out.sigmoid(),
                Task::Regression => out * y_std + y_mean,
            }]
        })
    })?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    module.save(out)?;
    Ok(Trained { epochs, best_epoch: best.1, validation_log_loss: best.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_separable_rule_and_saves_torchscript() {
        // label = x0 + 2*x1 > 0, with the features on very different scales.
        let mut data = Dataset { width: 2, ..Default::default() };
        let mut state = 1u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for _ in 0..4000 {
            let (a, b) = (next() * 1000.0, next());
            data.features.extend([a, b]);
            data.labels.push(if a / 1000.0 + 2.0 * b > 0.0 { 1.0 } else { 0.0 });
        }
        let validate =
            Dataset { features: data.features[..2000].to_vec(), labels: data.labels[..1000].to_vec(), width: 2 };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pt");
        let trained = train_binary_classifier(&data, &validate, &TrainOptions::default(), &path, |_, _| {}).unwrap();
        assert!(trained.validation_log_loss < 0.2, "{trained:?}");
        let module = CModule::load(&path).unwrap();
        let x = Tensor::from_slice(&[400.0f32, 0.0, -400.0, 0.0]).view([2, 2]);
        let p = Vec::<f32>::try_from(module.forward_ts(&[x]).unwrap().view([-1])).unwrap();
        assert!(p[0] > 0.9 && p[1] < 0.1, "{p:?}");
    }

    #[test]
    fn regression_learns_values_on_their_own_scale() {
        // y = 3a - 2b + 100: the target's scale is learnt standardised and restored by the module.
        let mut data = Dataset { width: 2, ..Default::default() };
        for i in 0..3000 {
            let (a, b) = ((i % 50) as f32, ((i * 7) % 31) as f32);
            data.features.extend([a, b]);
            data.labels.push(3.0 * a - 2.0 * b + 100.0);
        }
        let validate = data.clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.pt");
        let options = TrainOptions {
            task: Task::Regression,
            hidden: Vec::new(),
            max_epochs: 200,
            patience: 20,
            learning_rate: 0.05,
            ..Default::default()
        };
        train_model(&data, &validate, &options, &path, |_, _| {}).unwrap();
        let module = CModule::load(&path).unwrap();
        let x = Tensor::from_slice(&[10.0f32, 5.0]).view([1, 2]);
        let y = Vec::<f32>::try_from(module.forward_ts(&[x]).unwrap().view([-1])).unwrap();
        assert!((y[0] - 120.0).abs() < 1.0, "{y:?}");
    }
}
