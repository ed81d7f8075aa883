//! Progress bars and stage timings for long jobs.
//!
//! Bars draw on stderr only when it is a terminal, so logs and CI output stay clean; the stage
//! table printed at the end carries the same numbers either way.

use std::time::{Duration, Instant};

pub use indicatif::ProgressBar;
use indicatif::ProgressStyle;

/// A bar counting `len` units of `unit` (rows, epochs), with rate and ETA.
pub fn bar(len: u64, message: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{spinner}} {{msg:<24}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec:1}} ETA {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// Where `bar` stands, for the run catalog: `scoring 3/8, ETA 12 s` (the ETA once a unit is done).
pub fn describe(bar: &ProgressBar) -> String {
    let (done, total) = (bar.position(), bar.length().unwrap_or(0));
    let eta = if done > 0 && done < total { format!(", ETA {:.0} s", bar.eta().as_secs_f64()) } else { String::new() };
    format!("{} {done}/{total}{eta}", bar.message())
}

/// The units done and in all of a [`describe`]d position (`3/8`), to draw it.
pub fn parse_described(text: &str) -> Option<(u64, u64)> {
    let fraction = text.split_whitespace().find(|w| w.contains('/'))?.trim_end_matches(',');
    let (done, total) = fraction.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// A spinner for a stage whose size is not known in advance, with elapsed time.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:<24} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// One finished stage: what it did, how many rows, how long.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Rows produced (or processed).
    pub rows: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Anything else worth a column (files, bytes, epochs).
    pub detail: String,
}

impl Stage {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Times stages as they run.
#[derive(Debug, Default)]
pub struct Stages {
    stages: Vec<Stage>,
}

impl Stages {
    /// Starts timing a stage; finish it with [`Self::finish`].
    pub fn start(&self) -> Instant {
        Instant::now()
    }

    /// Records a stage that started at `started`.
    pub fn finish(&mut self, name: &str, started: Instant, rows: u64, detail: impl Into<String>) -> &Stage {
        self.stages.push(Stage { name: name.into(), rows, elapsed: started.elapsed(), detail: detail.into() });
        let stage = &self.stages[self.stages.len() - 1];
        tracing::debug!(stage = %stage.name, rows = stage.rows, seconds = stage.elapsed.as_secs_f64(), "stage finished");
        stage
    }

    /// The recorded stages.
    pub fn all(&self) -> &[Stage] {
        &self.stages
    }

    /// A text table of the stages.
    pub fn table(&self) -> String {
        let mut out = format!("{:<22} {:>12} {:>9} {:>14}  {}\n", "stage", "rows", "seconds", "rows/s", "detail");
        for s in &self.stages {
            out.push_str(&format!(
                "{:<22} {:>12} {:>9.2} {:>14.0}  {}\n",
                s.name,
                s.rows,
                s.elapsed.as_secs_f64(),
                s.rows_per_sec(),
                s.detail
            ));
        }
        out
    }
}

/// Sources being read, for a live progress line.
#[derive(Debug, Default)]
pub struct Reads {
    sources: Vec<(std::sync::Arc<sluice_engine::sources::ReadProgress>, u64)>,
}

impl Reads {
    /// Watches a read of `partitions` partitions.
    pub fn add(&mut self, progress: std::sync::Arc<sluice_engine::sources::ReadProgress>, partitions: usize) {
        self.sources.push((progress, partitions as u64));
    }

    fn now(&self) -> (u64, u64, u64) {
        let records = self.sources.iter().map(|(p, _)| p.records()).sum();
        let done = self.sources.iter().map(|(p, _)| p.partitions_done()).sum();
        let total = self.sources.iter().map(|(_, n)| n).sum();
        (records, done, total)
    }

    /// Runs `work`, showing the records read, records/s and partitions done (with an ETA from
    /// them) while it runs: a bar on a terminal, a line every `every` otherwise.
    pub async fn watch<T>(&self, message: &str, every: Duration, work: impl std::future::Future<Output = T>) -> T {
        let (_, _, total) = self.now();
        let bar = ProgressBar::new(total.max(1));
        let template = "{spinner} {msg} [{bar:24}] {pos}/{len} partitions {elapsed} ETA {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let started = Instant::now();
        let mut last_line = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => {
                    bar.finish_and_clear();
                    return out;
                }
                _ = tick.tick() => {
                    let (records, done, total) = self.now();
                    let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let line = format!("{message}: {records} records read ({rate:.0}/s)");
                    if terminal {
                        bar.set_position(done);
                        bar.set_message(line);
                        bar.tick();
                    } else if last_line.elapsed() >= every && total > 0 {
                        last_line = Instant::now();
                        eprintln!("{line}, {done}/{total} partitions, {:.0} s", started.elapsed().as_secs_f64());
                    }
                }
            }
        }
    }
}
