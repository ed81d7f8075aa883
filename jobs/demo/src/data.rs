//! Synthetic churn data: CRM accounts, SQL orders and IoT device events, with a churn label.
//!
//! Each account has two hidden traits, engagement and dissatisfaction. Every observable column is
//! a noisy view of them, and churn is drawn from them, so a model can learn churn only from what
//! the three sources show together. Generation is deterministic for a seed: chunk `i` uses its
//! own RNG seeded from `(seed, i)`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice_connectors::parquet::{ParquetDirWriter, WriteStats};

use sluice_catalog::error::Result;

/// The day the data set is taken: recency features count back from it (2026-06-30, UTC).
pub const REFERENCE_DAY: i32 = 20_634;
const DAY_MS: i64 = 86_400_000;
/// Accounts per part file.
pub const ACCOUNTS_PER_PART: usize = 25_000;

/// Rows landed per table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Landed {
    /// CRM accounts.
    pub accounts: WriteStats,
    /// SQL orders.
    pub orders: WriteStats,
    /// IoT device events.
    pub events: WriteStats,
}

fn accounts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Int64, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("tenure_months", DataType::Int32, false),
        Field::new("seats", DataType::Int32, false),
        Field::new("monthly_fee", DataType::Float64, false),
        Field::new("support_tickets_90d", DataType::Int32, false),
        Field::new("nps", DataType::Int32, true),
        Field::new("churned", DataType::Boolean, false),
    ]))
}

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("account_id", DataType::Int64, false),
        Field::new("order_ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("amount", DataType::Float64, false),
        Field::new("discount_pct", DataType::Float64, false),
        Field::new("status", DataType::Utf8, false),
    ]))
}

fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Int64, false),
        Field::new("event_ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("temperature_c", DataType::Float64, false),
        Field::new("error_code", DataType::Int32, true),
    ]))
}

fn normal(rng: &mut impl Rng) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn poisson(rng: &mut impl Rng, mean: f64) -> u32 {
    // Knuth's method; means here are small.
    let l = (-mean).exp();
    let (mut k, mut p) = (0u32, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[derive(Default)]
struct Chunk {
    account_id: Vec<i64>,
    segment: Vec<&'static str>,
    region: Vec<&'static str>,
    signup: Vec<i32>,
    tenure: Vec<i32>,
    seats: Vec<i32>,
    fee: Vec<f64>,
    tickets: Vec<i32>,
    nps: Vec<Option<i32>>,
    churned: Vec<bool>,
    order_id: Vec<i64>,
    order_account: Vec<i64>,
    order_ts: Vec<i64>,
    amount: Vec<f64>,
    discount: Vec<f64>,
    status: Vec<&'static str>,
    device_id: Vec<String>,
    event_account: Vec<i64>,
    event_ts: Vec<i64>,
    event_type: Vec<&'static str>,
    temperature: Vec<f64>,
    error_code: Vec<Option<i32>>,
}

fn generate_chunk(seed: u64, part: usize, first_id: i64, count: usize) -> Chunk {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (part as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut c = Chunk::default();
    let reference_ms = i64::from(REFERENCE_DAY) * DAY_MS;
    for i in 0..count {
        let id = first_id + i as i64;
        let engagement = normal(&mut rng);
        let unhappy = normal(&mut rng);
        let seg_draw: f64 = rng.random();
        let (segment, seat_mu, price) = if seg_draw < 0.55 {
            ("smb", 1.5, 45.0)
        } else if seg_draw < 0.85 {
            ("mid", 3.5, 38.0)
        } else {
            ("enterprise", 6.0, 30.0)
        };
        let region = ["emea", "amer", "apac"][rng.random_range(0..3)];
        let tenure = ((2.6 + 0.5 * engagement + 0.6 * normal(&mut rng)).exp().round() as i32).clamp(1, 144);
        let seats = ((seat_mu + 0.7 * normal(&mut rng)).exp().round() as i32).max(1);
        let fee = f64::from(seats) * price * (1.0 - 0.2 * rng.random::<f64>());
        let tickets = poisson(&mut rng, 0.6 + 2.5 * sigmoid(1.5 * unhappy - 0.5));
        // Some accounts never answered the survey.
        let nps = (rng.random::<f64>() > 0.08)
            .then(|| (7.0 - 1.6 * unhappy + 1.2 * normal(&mut rng)).round().clamp(0.0, 10.0) as i32);
        let z = -1.1 + 1.3 * unhappy - 0.9 * engagement - 0.012 * f64::from(tenure - 24)
            + if segment == "smb" {
                0.4
            } else if segment == "enterprise" {
                -0.5
            } else {
                0.0
            };
        let churned = rng.random::<f64>() < sigmoid(z);

        c.account_id.push(id);
        c.segment.push(segment);
        c.region.push(region);
        c.tenure.push(tenure);
        c.signup.push(REFERENCE_DAY - tenure * 30 - rng.random_range(0..30));
        c.seats.push(seats);
        c.fee.push((fee * 100.0).round() / 100.0);
        c.tickets.push(tickets as i32);
        c.nps.push(nps);
        c.churned.push(churned);

        let orders = poisson(&mut rng, 1.0 + 4.0 * sigmoid(engagement));
        let recency_window = 60.0 + 300.0 * sigmoid(1.2 * unhappy - 0.6 * engagement);
        for k in 0..orders {
            c.order_id.push(id * 100 + i64::from(k));
            c.order_account.push(id);
            let days_ago = rng.random::<f64>() * recency_window;
            c.order_ts.push(reference_ms - (days_ago * DAY_MS as f64) as i64);
            c.amount.push(((3.0 + 0.8 * normal(&mut rng) + 0.3 * engagement).exp() * 100.0).round() / 100.0);
            c.discount.push((rng.random::<f64>() * 0.3 * 100.0).round() / 100.0);
            let s: f64 = rng.random();
            let refund_p = 0.03 + 0.15 * sigmoid(2.0 * unhappy - 1.0);
            c.status.push(if s < refund_p {
                "refunded"
            } else if s < refund_p + 0.03 {
                "cancelled"
            } else {
                "completed"
            });
        }

        let devices = rng.random_range(1..=3u32);
        let events = poisson(&mut rng, 2.0 + 4.0 * sigmoid(engagement));
        for e in 0..events {
            c.device_id.push(format!("dev-{id}-{}", e % devices));
            c.event_account.push(id);
            c.event_ts.push(reference_ms - (rng.random::<f64>() * 30.0 * DAY_MS as f64) as i64);
            let s: f64 = rng.random();
            let error_p = 0.05 + 0.3 * sigmoid(1.5 * unhappy - 1.0);
            let (kind, code) = if s < error_p {
                ("error", Some(rng.random_range(100..110)))
            } else if s < error_p + 0.05 {
                ("reboot", None)
            } else {
                ("heartbeat", None)
            };
            c.event_type.push(kind);
            c.error_code.push(code);
            c.temperature.push(((38.0 + 6.0 * sigmoid(unhappy) + 3.0 * normal(&mut rng)) * 10.0).round() / 10.0);
        }
    }
    c
}

impl Chunk {
    fn into_batches(self) -> Result<[RecordBatch; 3]> {
        let accounts = RecordBatch::try_new(
            accounts_schema(),
            vec![
                Arc::new(Int64Array::from(self.account_id)) as ArrayRef,
                Arc::new(StringArray::from(self.segment)),
                Arc::new(StringArray::from(self.region)),
                Arc::new(Date32Array::from(self.signup)),
                Arc::new(Int32Array::from(self.tenure)),
                Arc::new(Int32Array::from(self.seats)),
                Arc::new(Float64Array::from(self.fee)),
                Arc::new(Int32Array::from(self.tickets)),
                Arc::new(Int32Array::from(self.nps)),
                Arc::new(BooleanArray::from(self.churned)),
            ],
        )?;
        let orders = RecordBatch::try_new(
            orders_schema(),
            vec![
                Arc::new(Int64Array::from(self.order_id)) as ArrayRef,
                Arc::new(Int64Array::from(self.order_account)),
                Arc::new(TimestampMillisecondArray::from(self.order_ts)),
                Arc::new(Float64Array::from(self.amount)),
                Arc::new(Float64Array::from(self.discount)),
                Arc::new(StringArray::from(self.status)),
            ],
        )?;
        let events = RecordBatch::try_new(
            events_schema(),
            vec![
                Arc::new(StringArray::from(self.device_id)) as ArrayRef,
                Arc::new(Int64Array::from(self.event_account)),
                Arc::new(TimestampMillisecondArray::from(self.event_ts)),
                Arc::new(StringArray::from(self.event_type)),
                Arc::new(Float64Array::from(self.temperature)),
                Arc::new(Int32Array::from(self.error_code)),
            ],
        )?;
        Ok([accounts, orders, events])
    }
}

/// Generates `accounts` accounts with their orders and device events and lands them as Parquet
/// under `raw/{accounts,orders,device_events}/`. `on_part` is called with the accounts of each
/// finished part.
pub fn land(raw: &Path, accounts: usize, seed: u64, mut on_part: impl FnMut(usize)) -> Result<Landed> {
    let mut writers = [
        ParquetDirWriter::create(raw.join("accounts"), accounts_schema())?,
        ParquetDirWriter::create(raw.join("orders"), orders_schema())?,
        ParquetDirWriter::create(raw.join("device_events"), events_schema())?,
    ];
    let parts = accounts.div_ceil(ACCOUNTS_PER_PART);
    // Two parts at a time: generation is CPU-bound and parts are independent.
    let mut part = 0;
    while part < parts {
        let batch: Vec<(usize, usize)> =
            (part..parts.min(part + 2)).map(|p| (p, ACCOUNTS_PER_PART.min(accounts - p * ACCOUNTS_PER_PART))).collect();
        let chunks: Vec<Result<[RecordBatch; 3]>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&(p, n)| {
                    s.spawn(move || generate_chunk(seed, p, (p * ACCOUNTS_PER_PART) as i64 + 1, n).into_batches())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(crate::Error::Invalid("data generation thread panicked".into())))
                })
                .collect()
        });
        for (chunk, (_, n)) in chunks.into_iter().zip(&batch) {
            let tables = chunk?;
            for (writer, table) in writers.iter_mut().zip(tables.iter()) {
                writer.write_part(std::slice::from_ref(table))?;
            }
            on_part(*n);
        }
        part += batch.len();
    }
    let [a, o, e] = writers;
    Ok(Landed { accounts: a.stats(), orders: o.stats(), events: e.stats() })
}
