//! Schedules: job files with `schedule = "0 2 * * *"` run by `sluice serve` on their cron
//! schedule in their time zone (`timezone = "Europe/Berlin"`, default UTC, daylight saving
//! handled), never two runs of one job at once (a fire time that finds the previous run still
//! going is skipped and recorded), and after downtime by `catch_up`: `last` (default: one run
//! for the fire times missed), `all` (one per missed fire time, in turn) or `none`. Every run is
//! its own `sluice run` process, recorded in the run catalog.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::runs::{Catalog, Status};

/// What to do about fire times missed while `sluice serve` was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Nothing: wait for the next fire time.
    None,
    /// One run now for all of them.
    Last,
    /// One run per missed fire time, one after the other (at most 100).
    All,
}

/// A job's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written.
    pub expression: String,
    cron: cron::Schedule,
    /// Its time zone.
    pub timezone: Tz,
    /// Missed fire times.
    pub catch_up: CatchUp,
}

impl Schedule {
    /// Parses a cron expression (5 fields `min hour day month weekday`, or 6 with seconds first),
    /// a time zone name and a catch-up policy.
    pub fn parse(expression: &str, timezone: Option<&str>, catch_up: Option<&str>) -> Result<Self> {
        let fields = expression.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.to_string(),
            _ => {
                return Err(Error::Invalid(format!(
                    "schedule '{expression}': write 5 cron fields (minute hour day month weekday), e.g. \"0 2 * * *\", \
                     or 6 with seconds first"
                )));
            }
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            Error::Invalid(format!(
                "schedule '{expression}': {e} (weekdays by name, e.g. Mon-Fri; numbers are 1-7 from Sunday)"
            ))
        })?;
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                Error::Invalid(format!("timezone '{name}' is not known; use an IANA name such as Europe/Berlin or UTC"))
            })?,
        };
        let catch_up = match catch_up.unwrap_or("last") {
            "none" => CatchUp::None,
            "last" => CatchUp::Last,
            "all" => CatchUp::All,
            other => return Err(Error::Invalid(format!("catch_up '{other}': use none, last or all"))),
        };
        Ok(Self { expression: expression.to_string(), cron, timezone, catch_up })
    }

    /// The first fire time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t.with_timezone(&self.timezone)).next().map(|d| d.with_timezone(&Utc))
    }

    /// Fire times in `(since, until]`, at most `limit`.
    pub fn between(&self, since: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        self.cron
            .after(&since.with_timezone(&self.timezone))
            .map(|d| d.with_timezone(&Utc))
            .take_while(|d| *d <= until)
            .take(limit)
            .collect()
    }
}

/// A scheduled job file.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The job file.
    pub path: PathBuf,
    /// The job's name (runs are found by it in the catalog).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
}

/// What `serve` reports.
#[derive(Debug, Clone)]
pub enum ServeEvent {
    /// A job's next fire time.
    Next { job: String, at: DateTime<Utc> },
    /// A run started.
    Started { job: String, run: String, catch_up: bool },
    /// A fire time found the previous run still going.
    Skipped { job: String, running: String },
    /// A run's process ended.
    Ended { job: String, run: String, status: String },
}

struct Slot {
    job: Scheduled,
    next: Option<DateTime<Utc>>,
    running: Option<(String, std::process::Child)>,
    /// Missed fire times still to run (catch_up = all).
    owed: usize,
}

/// Runs `jobs` on their schedules until `stop_after` (forever when None), starting each run with
/// `launch(job, run_id)`, and waits for the runs in progress before returning.
pub async fn serve(
    jobs: Vec<Scheduled>,
    catalog: &Catalog,
    launch: impl Fn(&Scheduled, &str) -> Result<std::process::Child>,
    stop_after: Option<Duration>,
    mut events: impl FnMut(ServeEvent),
) -> Result<()> {
    let started = std::time::Instant::now();
    let now = Utc::now();
    let recent = catalog.list(10_000).await?;
    let mut slots = Vec::new();
    for job in jobs {
        // Fire times missed since this job's last run.
        let last = recent
            .iter()
            .filter(|r| r.kind == "run" && r.name == job.name && r.status != Status::Skipped)
            .filter_map(|r| DateTime::parse_from_rfc3339(&r.started).ok())
            .map(|d| d.with_timezone(&Utc))
            .max();
        let missed = last.map_or(0, |last| job.schedule.between(last, now, 100).len());
        let owed = match job.schedule.catch_up {
            CatchUp::None => 0,
            CatchUp::Last => missed.min(1),
            CatchUp::All => missed,
        };
        let next = job.schedule.next_after(now);
        if let Some(at) = next {
            events(ServeEvent::Next { job: job.name.clone(), at });
        }
        slots.push(Slot { job, next, running: None, owed });
    }
    loop {
        let stopping = stop_after.is_some_and(|d| started.elapsed() >= d);
        let now = Utc::now();
        for slot in &mut slots {
            if let Some((run, child)) = &mut slot.running
                && let Ok(Some(_)) = child.try_wait()
            {
                let status = catalog.get(run).await.map(|r| r.status.to_string()).unwrap_or_else(|_| "unknown".into());
                events(ServeEvent::Ended { job: slot.job.name.clone(), run: run.clone(), status });
                slot.running = None;
            }
            if stopping {
                continue;
            }
            let due = slot.next.is_some_and(|at| at <= now);
            if due {
                slot.next = slot.job.schedule.next_after(now);
                if let Some(at) = slot.next {
                    events(ServeEvent::Next { job: slot.job.name.clone(), at });
                }
            }
            if !due && slot.owed == 0 {
                continue;
            }
            if let Some((running, _)) = &slot.running {
                if due {
                    let skipped = crate::runs::new_id();
                    catalog.start("run", &slot.job.name, Some(skipped.clone()), None).await?;
                    let why = format!("skipped: run {running} of this job was still running at the fire time");
                    catalog.finish(&skipped, Status::Skipped, None, None, Some(why)).await?;
                    events(ServeEvent::Skipped { job: slot.job.name.clone(), running: running.clone() });
                }
                continue;
            }
            let catch_up = !due;
            if catch_up {
                slot.owed -= 1;
            }
            let run = crate::runs::new_id();
            let child = launch(&slot.job, &run)?;
            catalog.start("run", &slot.job.name, Some(run.clone()), Some(child.id())).await?;
            events(ServeEvent::Started { job: slot.job.name.clone(), run: run.clone(), catch_up });
            slot.running = Some((run, child));
        }
        if stopping && slots.iter().all(|s| s.running.is_none()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_fire_in_their_time_zone_and_mistakes_say_what_to_write() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let daily = Schedule::parse("0 2 * * *", Some("Europe/Berlin"), None).unwrap();
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        assert_eq!(daily.next_after(at("2026-11-24T12:00:00Z")), Some(at("2026-11-25T01:00:00Z")));
        assert_eq!(daily.next_after(at("2026-07-01T12:00:00Z")), Some(at("2026-07-02T00:00:00Z")));
        let missed = daily.between(at("2026-11-20T12:00:00Z"), at("2026-11-24T12:00:00Z"), 100);
        assert_eq!(missed.len(), 4);
        assert_eq!(daily.catch_up, CatchUp::Last);
        let e = Schedule::parse("0 2 * *", None, None).unwrap_err().to_string();
        assert!(e.contains("5 cron fields"), "{e}");
        assert!(Schedule::parse("0 2 * * *", Some("Mars/Olympus"), None).unwrap_err().to_string().contains("IANA"));
        assert!(Schedule::parse("0 2 * * *", None, Some("some")).unwrap_err().to_string().contains("none, last or all"));
        assert!(Schedule::parse("*/2 * * * * *", None, Some("none")).is_ok());
    }
}
