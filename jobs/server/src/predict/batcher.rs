//! Dynamic batching for the online endpoint: concurrent requests for one model version are
//! gathered into one forward pass (up to `max_batch_rows` rows, or whatever arrived within
//! `max_delay` of the first), on worker threads of their own, off the async runtime. The workers
//! share one loaded copy of the model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_udfs::Model;
use sluice_udfs::model::{Output, Shape};

/// How requests are gathered.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Rows in one forward pass at most (a single larger request still runs whole).
    pub max_batch_rows: usize,
    /// How long the first request of a batch waits for others.
    pub max_delay: Duration,
    /// Worker threads per model version.
    pub workers: usize,
}

/// One request's rows, row-major, and where its predictions go.
struct Job {
    rows: usize,
    values: Vec<f64>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f64>, String>>,
}

/// Counters of one batcher, for `/metrics`.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Rows scored.
    pub rows: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Batches by rows: counts of batches with at most 1, 2, 4, ... 4096 rows, then more.
    pub sizes: [AtomicU64; 14],
}

/// Upper bounds of [`BatchStats::sizes`].
pub const SIZE_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// The queue of one model version and its workers.
pub struct Batcher {
    queue: Mutex<Sender<Job>>,
    inputs: usize,
    /// Its counters.
    pub stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts `options.workers` threads scoring with `model` (probed as `shape`).
    pub fn start(name: &str, model: Arc<Model>, shape: Shape, options: BatchOptions) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(BatchStats::default());
        for w in 0..options.workers.max(1) {
            let (rx, model, stats) = (rx.clone(), model.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("predict-{name}-{w}"))
                .spawn(move || work(&rx, &model, shape, options, &stats))?;
        }
        Ok(Self { queue: Mutex::new(tx), inputs: shape.inputs, stats })
    }

    /// Scores `rows` rows (`values` row-major, `rows * inputs` of them); the predictions come
    /// back row-major, `rows * outputs` values.
    pub async fn score(&self, rows: usize, values: Vec<f64>) -> Result<Vec<f64>, String> {
        debug_assert_eq!(values.len(), rows * self.inputs);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Job { rows, values, reply })
            .map_err(|_| "the model's workers stopped".to_string())?;
        answer.await.map_err(|_| "the model's worker stopped before answering".to_string())?
    }
}

fn work(rx: &Mutex<Receiver<Job>>, model: &Model, shape: Shape, options: BatchOptions, stats: &BatchStats) {
    loop {
        // One worker gathers at a time; the others score the batches gathered before.
        let jobs = {
            let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Ok(first) = rx.recv() else { return };
            let deadline = Instant::now() + options.max_delay;
            let mut rows = first.rows;
            let mut jobs = vec![first];
            while rows < options.max_batch_rows {
                let next = match rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                        }
                    }
                };
                rows += next.rows;
                jobs.push(next);
            }
            jobs
        };
        let rows: usize = jobs.iter().map(|j| j.rows).sum();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forward(model, shape, &jobs, rows)))
            .unwrap_or_else(|_| Err("the forward pass panicked".to_string()));
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        stats.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let bucket = SIZE_BOUNDS.iter().position(|b| rows as u64 <= *b).unwrap_or(SIZE_BOUNDS.len());
        stats.sizes[bucket].fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(values) => {
                let mut at = 0;
                for job in jobs {
                    let n = job.rows * shape.outputs;
                    let _ = job.reply.send(Ok(values[at..at + n].to_vec()));
                    at += n;
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One forward pass over every job's rows, as f64 row-major predictions.
fn forward(model: &Model, shape: Shape, jobs: &[Job], rows: usize) -> Result<Vec<f64>, String> {
    let k = shape.inputs;
    let value = |c: usize| jobs.iter().flat_map(move |j| (0..j.rows).map(move |r| j.values[r * k + c]));
    let output = if model.takes_f64() {
        let columns: Vec<Vec<f64>> = (0..k).map(|c| value(c).collect()).collect();
        let slices: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
        model.forward_f64(&slices, 0, rows, shape)
    } else {
        // Column-major, as `forward_columns` takes it.
        let features: Vec<f32> = (0..k).flat_map(|c| value(c).map(|v| v as f32)).collect();
        model.forward_columns(&features, rows, shape)
    }
    .map_err(|e| e.to_string())?;
    let values = match output {
        Output::F32(v) => v.into_iter().map(f64::from).collect::<Vec<_>>(),
        Output::F64(v) => v,
    };
    if values.len() != rows * shape.outputs {
        return Err(format!("the model returned {} values for {rows} rows of {} outputs", values.len(), shape.outputs));
    }
    Ok(values)
}
