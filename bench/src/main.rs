//! `sluice-bench`: timings recorded in `bench/RESULTS.md`, never pass/fail.
//!
//! `sluice-bench asset-write --rows 10000000`: writes the same 20-column data set to the local
//! lake as a versioned asset and as a plain DataFusion `COPY ... TO` Parquet directory, on the
//! same embedded cluster, alternating, and prints rows/s of each and their ratio.
//!
//! `sluice-bench score-floor --data DIR --model M --out DIR`: the raw floor of batch scoring, a
//! plain Rust loop with no engine: the parquet crate's reader on its own thread, each batch's
//! feature columns copied into one column-major buffer given to the model as a transposed view
//! (the same `Model::forward_columns` `predict` calls), scores written with `ArrowWriter`.
//! Prints `rows seconds`.
//!
//! `sluice-bench sketch --rows 10000000`: the drift sketch of the scoring pass (16 float32
//! columns, 1,000 bins) against a plain per-value loop doing the same sums, on the same batches;
//! prints ns per value of each.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_engine::assets::{WriteOptions, write_asset};
use sluice_engine::{EmbeddedCluster, EmbeddedOptions, Lake, WriteMode};

mod http;
mod kafka;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Asset write (Delta commit) against a plain COPY TO Parquet of the same data.
    AssetWrite {
        /// Rows of the data set (20 columns: ids, doubles, a string, a date).
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Alternating runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Scratch directory (default: a temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The raw floor of batch scoring: Parquet in, TorchScript forward, Parquet out, no engine.
    ScoreFloor {
        /// Directory of Parquet files: `id` and float32 features `f0..`.
        #[arg(long)]
        data: std::path::PathBuf,
        /// TorchScript model.
        #[arg(long)]
        model: String,
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Rows per forward pass.
        #[arg(long, default_value_t = 8192)]
        batch: usize,
    },
    /// JSON events with `id` and float features `f0..` into a Kafka topic, paced or at full speed.
    KafkaProduce {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Events.
        #[arg(long)]
        count: u64,
        /// Events per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Features per event.
        #[arg(long, default_value_t = 32)]
        features: usize,
        /// Partitions of the topic, when it is created here (0: do not create it; for the mock
        /// broker, which creates topics itself and has no CreateTopics).
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// `json`, or `avro`: the same values as Avro records (`id` long, float features) in the
        /// Confluent wire format with schema id 1 (the schema: `sluice-bench avro-schema`).
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// The Avro schema of `kafka-produce --format avro` events.
    AvroSchema {
        /// Features per event.
        #[arg(long, default_value_t = 32)]
        features: usize,
    },
    /// The hot path's floor: consume -> produce with no decoding or scoring, offsets committed
    /// after acknowledgements; prints events/s and latency p50/p99.
    KafkaPassthrough {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topic read.
        #[arg(long)]
        from: String,
        /// Topic written.
        #[arg(long)]
        to: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Stop after this many seconds without an event.
        #[arg(long, default_value_t = 8.0)]
        idle_s: f64,
        /// Events per micro-batch at most.
        #[arg(long, default_value_t = 5000)]
        max_rows: usize,
        /// The consumer's `fetch.wait.max.ms` (librdkafka's default, 500, when not given).
        #[arg(long)]
        fetch_wait_ms: Option<u32>,
    },
    /// The column sketch of the scoring pass against a plain per-value loop, ns per value.
    Sketch {
        /// Rows (of 16 float32 columns).
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
    },
    /// The stream's payload decoders on the same events, JSON against Avro (Confluent wire
    /// format): events per second into Arrow batches of `batch` events.
    Decode {
        /// Events (an id and `features` float32 values each).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Float32 values per event.
        #[arg(long, default_value_t = 16)]
        features: usize,
        /// Events per micro-batch.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// The CUDA path against the CPU path on the same model and rows: largest difference
    /// (fails above 1e-5 relative) and rows per second of each (scripts/cuda-check.sh).
    CudaCheck {
        /// TorchScript model (default: the 16-input fixture the UDF tests use).
        #[arg(long, default_value = "udfs/tests/fixtures/scorer_16.pt")]
        model: String,
        /// Rows scored on each device.
        #[arg(long, default_value_t = 2_000_000)]
        rows: usize,
        /// Rows per forward pass.
        #[arg(long, default_value_t = 65_536)]
        batch: usize,
    },
    /// Closed-loop HTTP clients against a prediction endpoint: each of `connections` sends one
    /// POST, waits for its answer, sends the next; prints requests/s and latency p50/p99 as JSON.
    HttpLoad {
        /// HOST:PORT.
        #[arg(long)]
        addr: String,
        /// The route, e.g. /v1/models/mlp/predict.
        #[arg(long)]
        path: String,
        /// The JSON body of every request.
        #[arg(long)]
        body: String,
        /// A header (`Name: value`); repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Concurrent connections, comma-separated: one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        connections: Vec<usize>,
        /// Seconds measured per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds before measuring (not counted).
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// librdkafka's own Kafka-protocol broker (its mock cluster), on a loopback port, until
    /// killed: prints its bootstrap servers. A second broker for the hot path's latency bench.
    KafkaMock {
        /// Topics to create (one partition each) before printing the address; the mock broker
        /// answers no CreateTopics, and creates other topics with 4 partitions when first used.
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
    },
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::AssetWrite { rows, runs, dir } => asset_write(rows, runs, dir).await,
        Bench::ScoreFloor { data, model, out, batch } => score_floor(&data, &model, &out, batch),
        Bench::AvroSchema { features } => {
            println!("{}", kafka::avro_schema(features));
            Ok(())
        }
        Bench::KafkaProduce { brokers, topic, count, rate, features, partitions, format } => {
            anyhow::ensure!(["json", "avro"].contains(&format.as_str()), "--format: json or avro, not {format}");
            if partitions > 0 {
                kafka::create_topic(&brokers, &topic, partitions).await?;
            }
            if count == 0 {
                return Ok(());
            }
            kafka::produce(&brokers, &topic, count, rate, features, format == "avro").await
        }
        Bench::KafkaPassthrough { brokers, from, to, group, idle_s, max_rows, fetch_wait_ms } => {
            let idle = std::time::Duration::from_secs_f64(idle_s);
            kafka::passthrough(&brokers, &from, &to, &group, idle, max_rows, fetch_wait_ms).await
        }
        Bench::KafkaMock { topics } => kafka::mock_broker(&topics).await,
        Bench::Sketch { rows } => sketch(rows),
        Bench::Decode { events, features, batch } => decode(events, features, batch),
        Bench::CudaCheck { model, rows, batch } => cuda_check(&model, rows, batch),
        Bench::HttpLoad { addr, path, body, headers, connections, seconds, warmup } => {
            let request = http::post(&addr, &path, &headers, &body);
            // One client thread of its own, apart from the runtime above.
            std::thread::spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let local = tokio::task::LocalSet::new();
                for n in connections {
                    let load = local.block_on(&runtime, http::run(&addr, request.clone(), n, warmup, seconds))?;
                    println!("{}", load.json());
                }
                Ok(())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
        }
    }
}

/// Scores the same rows on the CPU and on CUDA and compares them; prints throughput of each.
fn cuda_check(path: &str, rows: usize, batch: usize) -> Result<()> {
    use sluice_udfs::model::{Model, Output};
    let gpu = sluice_udfs::device::parse_device("cuda").map_err(|e| anyhow::anyhow!(e))?;
    let cpu_model = Model::load_on(path, tch::Device::Cpu)?;
    let gpu_model = Model::load_on(path, gpu)?;
    let inputs = cpu_model.declared_inputs().unwrap_or(16);
    let shape = cpu_model.probe(inputs)?;
    anyhow::ensure!(gpu_model.probe(inputs)? == shape, "the model's shape differs between the devices");
    let batch = batch.clamp(1, rows.max(1));
    // Deterministic features in [-2, 2).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let features: Vec<f32> = (0..batch * inputs)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let values = |out: Output| -> Vec<f64> {
        match out {
            Output::F32(v) => v.into_iter().map(f64::from).collect(),
            Output::F64(v) => v,
        }
    };
    let cpu = values(cpu_model.forward_columns(&features, batch, shape)?);
    let cuda = values(gpu_model.forward_columns(&features, batch, shape)?);
    let worst = cpu.iter().zip(&cuda).map(|(a, b)| (a - b).abs() / a.abs().max(1.0)).fold(0.0f64, f64::max);
    println!("model        {} ({} inputs, {} outputs)", cpu_model.id(), shape.inputs, shape.outputs);
    println!("difference   {worst:.2e} at most (relative, {} values), limit 1e-5", cpu.len());
    let passes = rows.div_ceil(batch);
    for (name, model) in [("cpu", &cpu_model), (sluice_udfs::device::device_name(gpu).as_str(), &gpu_model)] {
        let started = std::time::Instant::now();
        for _ in 0..passes {
            model.forward_columns(&features, batch, shape)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!("{name:<12} {:.0} rows/s ({} rows in {seconds:.2} s, batches of {batch})", (passes * batch) as f64 / seconds, passes * batch);
    }
    anyhow::ensure!(worst <= 1e-5, "CUDA and CPU differ by {worst:.2e}, more than 1e-5");
    Ok(())
}

/// Times `Profile::add` over `rows` rows of 16 bell-shaped float32 columns, batches of 8,192,
/// against a plain loop that bins, sums and takes min/max value by value.
fn decode(events: usize, features: usize, batch: usize) -> Result<()> {
    use sluice_connectors::avro::AvroDecoder;
    use sluice_connectors::json::RecordDecoder;

    let names: Vec<String> = (0..features).map(|i| format!("f{i}")).collect();
    let value = |i: usize, j: usize| ((i * 31 + j * 7) % 1000) as f32 / 7.0;
    // The same events both ways, made before the clock starts.
    let json: Vec<String> = (0..batch)
        .map(|i| {
            let fields: Vec<String> = names.iter().enumerate().map(|(j, n)| format!("\"{n}\":{}", value(i, j))).collect();
            format!("{{\"id\":{i},{}}}", fields.join(","))
        })
        .collect();
    let avro: Vec<Vec<u8>> = (0..batch).map(|i| kafka::avro_event(i as u64, (0..features).map(|j| value(i, j)))).collect();
    let columns: Vec<String> = names.iter().map(|n| format!("{n} float")).collect();
    let schema = sluice_connectors::json::JsonOptions {
        schema: Some(format!("id bigint, {}", columns.join(", "))),
        infer: Some(false),
        sample: 0,
        flatten: None,
        coerce: false,
        required: Vec::new(),
    }
    .schema_from(&[])?;
    let json_decoder = RecordDecoder::new(schema, None);
    let avsc = kafka::avro_schema(features);
    let mut avro_decoder = AvroDecoder::new(&avsc, &std::collections::BTreeMap::from([(1, avsc.clone())]), None, batch)?;

    let texts: Vec<&str> = json.iter().map(String::as_str).collect();
    let bodies: Vec<&[u8]> = avro.iter().map(Vec::as_slice).collect();
    let rounds = events.div_ceil(batch);
    let time = |f: &mut dyn FnMut() -> Result<usize>| -> Result<f64> {
        let started = Instant::now();
        for _ in 0..rounds {
            anyhow::ensure!(f()? == batch, "a batch lost rows");
        }
        Ok((rounds * batch) as f64 / started.elapsed().as_secs_f64())
    };
    let rows = |d: sluice_connectors::json::Decoded| d.batch.map_or(0, |b| b.num_rows());
    let json_rate = time(&mut || Ok(rows(json_decoder.decode(&texts, &|i| i.to_string())?)))?;
    let avro_rate = time(&mut || Ok(rows(avro_decoder.decode(&bodies, &|i| i.to_string())?)))?;
    let (json_bytes, avro_bytes) = (json.iter().map(String::len).sum::<usize>(), avro.iter().map(Vec::len).sum::<usize>());
    println!(
        "decode {} events of 1 + {features} values, batches of {batch}: json {json_rate:.0} events/s ({} B/event), avro {avro_rate:.0} events/s ({} B/event), avro/json {:.2}",
        rounds * batch,
        json_bytes / batch,
        avro_bytes / batch,
        avro_rate / json_rate
    );
    Ok(())
}

fn sketch(rows: usize) -> Result<()> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float32Array, RecordBatch};
    use sluice_engine::profile::{Binning, ColumnSpec, Profile, bin_scale};

    const BATCH: usize = 8192;
    let columns = 16;
    let (lo, hi, bins) = (0.0, 3.0, 1000);
    let mut seed = 42u64;
    let mut uniform = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    // 16 batches, reused: the data stays in memory as the executors' decoded batches do.
    let names: Vec<String> = (0..columns).map(|i| format!("f{i}")).collect();
    let batches: Vec<RecordBatch> = (0..16)
        .map(|_| {
            let arrays = names.iter().map(|n| {
                let v: Vec<f32> = (0..BATCH).map(|_| (uniform() + uniform() + uniform()) as f32).collect();
                (n.clone(), Arc::new(Float32Array::from(v)) as ArrayRef)
            });
            RecordBatch::try_from_iter(arrays)
        })
        .collect::<std::result::Result<_, _>>()?;
    let specs: Vec<ColumnSpec> = names.iter().map(|n| ColumnSpec { name: n.clone(), binning: Binning::Numeric { lo, hi, bins } }).collect();
    let steps = rows.div_ceil(BATCH);
    let values = (steps * BATCH * columns) as f64;

    let mut profile = Profile::new(&specs);
    let started = Instant::now();
    for i in 0..steps {
        profile.add(&batches[i % batches.len()])?;
    }
    let kernel = started.elapsed().as_secs_f64();

    let scale = bin_scale(lo, hi, bins);
    let mut counts = vec![vec![0u64; bins]; columns];
    let mut sums = vec![(0.0f64, 0.0f64, f64::INFINITY, f64::NEG_INFINITY, 0u64); columns];
    let started = Instant::now();
    for i in 0..steps {
        let batch = &batches[i % batches.len()];
        for (c, (counts, s)) in counts.iter_mut().zip(sums.iter_mut()).enumerate() {
            let a = batch.column(c).as_any().downcast_ref::<Float32Array>().context("float32")?;
            for &v in a.values() {
                let x = f64::from(v);
                if x.is_nan() {
                    continue;
                }
                let d = x - lo;
                s.0 += d;
                s.1 += d * d;
                s.2 = s.2.min(x);
                s.3 = s.3.max(x);
                if x < lo || x > hi {
                    s.4 += 1;
                } else {
                    counts[((d * scale) as usize).min(bins - 1)] += 1;
                }
            }
        }
    }
    let plain = started.elapsed().as_secs_f64();
    let same = profile.columns.iter().zip(&counts).all(|(p, c)| &p.bins == c);
    println!(
        "sketch of {} values: kernel {:.2} ns/value, plain loop {:.2} ns/value ({:.1}x){}",
        values as u64,
        kernel * 1e9 / values,
        plain * 1e9 / values,
        plain / kernel,
        if same { "" } else { " (BINS DIFFER)" }
    );
    Ok(())
}

async fn asset_write(rows: u64, runs: usize, dir: Option<std::path::PathBuf>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let cluster = EmbeddedCluster::start(EmbeddedOptions { executors: 2, ..Default::default() })
        .await
        .context("starting the embedded cluster")?;
    let ctx = cluster.connect(&sluice_engine::client_functions()).await?;
    let source = dir.join("source");
    let mut cols = vec!["value AS id".to_string(), "value % 1000 AS account".into()];
    cols.extend((0..14).map(|i| format!("CAST(value * {} % 100003 AS DOUBLE) / 7.0 AS x{i}", i + 3)));
    cols.push("CAST(value % 97 AS INT) AS bucket".into());
    cols.push("CONCAT('c', CAST(value % 5000 AS VARCHAR)) AS label".into());
    cols.push("value % 2 = 0 AS flag".into());
    cols.push("CAST(DATE '2026-01-01' + CAST(value % 365 AS INT) AS DATE) AS day".into());
    let generate = format!("SELECT {} FROM generate_series(1, {rows})", cols.join(", "));
    eprintln!("generating {rows} rows x {} columns into {}", cols.len(), source.display());
    // Generated in-process (Ballista cannot ship DataFusion's generate_series table), not timed.
    let local = datafusion::prelude::SessionContext::new();
    local.sql(&format!("COPY ({generate}) TO '{}/' STORED AS PARQUET", source.display())).await?.collect().await?;
    ctx.register_parquet("source", source.to_str().context("path")?, Default::default()).await?;

    let lake = Lake::open(dir.join("assets").to_str().context("path")?, &[])?;
    let mut copy_secs = Vec::new();
    let mut asset_secs = Vec::new();
    for run in 0..runs {
        let out = dir.join(format!("copy-{run}"));
        let started = Instant::now();
        ctx.sql(&format!(
            "COPY (SELECT * FROM source) TO '{}/' STORED AS PARQUET OPTIONS ('format.compression' 'zstd(3)')",
            out.display()
        ))
        .await?
        .collect()
        .await?;
        copy_secs.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let df = ctx.sql("SELECT * FROM source").await?;
        let options = WriteOptions { mode: WriteMode::Overwrite, job: "bench".into(), ..Default::default() };
        let summary = write_asset(&lake, "bench", df, &options).await?;
        asset_secs.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(summary.rows == rows, "asset has {} rows, expected {rows}", summary.rows);
        eprintln!(
            "run {run}: copy {:.2} s, asset {:.2} s (version {})",
            copy_secs[run], asset_secs[run], summary.version
        );
        std::fs::remove_dir_all(&out)?;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (copy, asset) = (median(&mut copy_secs), median(&mut asset_secs));
    println!("rows {rows}, columns {}, runs {runs} (median)", cols.len());
    println!("plain COPY TO parquet  {:.2} s  {:.2} M rows/s", copy, rows as f64 / copy / 1e6);
    println!("asset write (Delta)    {:.2} s  {:.2} M rows/s", asset, rows as f64 / asset / 1e6);
    println!("asset / copy rows/s    {:.3} (versioning costs {:.1}%)", copy / asset, (asset / copy - 1.0) * 100.0);
    Ok(())
}

fn score_floor(data: &std::path::Path, model: &str, out: &std::path::Path, batch: usize) -> Result<()> {
    use arrow::array::{AsArray, Float32Array, RecordBatch};
    use arrow::datatypes::Float32Type;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use sluice_udfs::model::{Model, Output};

    let mut files: Vec<_> = std::fs::read_dir(data)?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect();
    files.sort();
    std::fs::create_dir_all(out)?;
    let model = Model::load(model)?;
    let started = Instant::now();
    // The reader runs on its own thread, a few batches ahead.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, RecordBatch)>(4);
    let reader_files = files.clone();
    let reader = std::thread::spawn(move || -> Result<()> {
        for (i, path) in reader_files.iter().enumerate() {
            let file = std::fs::File::open(path)?;
            for b in ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(batch).build()? {
                if tx.send((i, b?)).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    let mut rows = 0usize;
    let mut writer: Option<(usize, ArrowWriter<std::fs::File>)> = None;
    let mut buffer = Vec::new();
    let mut shape = None;
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("score", arrow::datatypes::DataType::Float32, false),
    ]));
    for (file, b) in rx {
        if writer.as_ref().is_none_or(|(f, _)| *f != file) {
            if let Some((_, w)) = writer.take() {
                w.close()?;
            }
            let f = std::fs::File::create(out.join(format!("part-{file:02}.parquet")))?;
            writer = Some((file, ArrowWriter::try_new(f, schema.clone(), None)?));
        }
        let features: Vec<&Float32Array> = b.columns().iter().skip(1).map(|c| c.as_primitive::<Float32Type>()).collect();
        let n = b.num_rows();
        let shape = match shape {
            Some(s) => s,
            None => *shape.insert(model.probe(features.len())?),
        };
        buffer.resize(n * features.len(), 0.0);
        for (c, col) in features.iter().enumerate() {
            buffer[c * n..(c + 1) * n].copy_from_slice(col.values());
        }
        let scores = match model.forward_columns(&buffer, n, shape)? {
            Output::F32(v) => Float32Array::from(v),
            Output::F64(v) => Float32Array::from(v.into_iter().map(|x| x as f32).collect::<Vec<_>>()),
        };
        let batch = RecordBatch::try_new(schema.clone(), vec![b.column(0).clone(), std::sync::Arc::new(scores)])?;
        if let Some((_, w)) = writer.as_mut() {
            w.write(&batch)?;
        }
        rows += n;
    }
    if let Some((_, w)) = writer.take() {
        w.close()?;
    }
    reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    println!("{rows} {}", started.elapsed().as_secs_f64());
    Ok(())
}
