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

use sluice_catalog::error::{Error, Result};
use sluice_catalog::runs::{Catalog, Status};

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
        let mut parts: Vec<String> = expression.split_whitespace().map(str::to_string).collect();
        // The weekday field: 5th of 5, 6th of 6 or 7 (seconds first, then an optional year).
        if matches!(fields, 5..=7) {
            let at = if fields == 5 { 4 } else { 5 };
            parts[at] = weekdays(&parts[at]).map_err(|why| {
                Error::Invalid(format!(
                    "schedule '{expression}': weekday field '{}': {why} (standard cron: 0-7 with 0 and 7 Sunday, \
                     or names such as Mon-Fri)",
                    parts[at]
                ))
            })?;
        }
        let translated = parts.join(" ");
        let full = match fields {
            5 => format!("0 {translated}"),
            6 | 7 => translated,
            _ => {
                return Err(Error::Invalid(format!(
                    "schedule '{expression}': write 5 cron fields (minute hour day month weekday), e.g. \"0 2 * * *\", \
                     or 6 with seconds first"
                )));
            }
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            Error::Invalid(format!(
                "schedule '{expression}': {e} (fields: minute hour day month weekday, e.g. \"0 2 * * 1-5\")"
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

/// A weekday field in standard cron numbering (0-6 from Sunday, 7 also Sunday; `*`, lists, ranges
/// and steps) in the numbering of the `cron` crate (1-7 from Sunday). Names and `?` pass as
/// they are (the crate reads them itself).
fn weekdays(field: &str) -> std::result::Result<String, String> {
    let mut out = Vec::new();
    for item in field.split(',') {
        if item.is_empty() {
            return Err("an empty list item".into());
        }
        if item.chars().any(|c| c.is_ascii_alphabetic() || c == '?' || c == '#' || c == 'L') {
            out.push(item.to_string());
            continue;
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step '{s}' is not a whole number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (item, 1),
        };
        let day = |d: &str| -> std::result::Result<u32, String> {
            match d.parse::<u32>() {
                Ok(n) if n <= 7 => Ok(n),
                _ => Err(format!("'{d}' is not a weekday number 0-7")),
            }
        };
        let (first, last) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `a/s` runs from a to the end of the week.
                None if item.contains('/') => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        if first > last {
            return Err(format!("range {first}-{last} runs backwards"));
        }
        // Standard day d (7 is Sunday again) is the crate's d + 1 (Sunday 1 ... Saturday 7).
        let mut days: Vec<u32> = (first..=last).step_by(step as usize).map(|d| d % 7 + 1).collect();
        days.sort_unstable();
        days.dedup();
        out.extend(days.iter().map(u32::to_string));
    }
    Ok(out.join(","))
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

/// How many catch-up runs `missed` fire times earn under the schedule's policy.
fn owed(schedule: &Schedule, missed: usize) -> usize {
    match schedule.catch_up {
        CatchUp::None => 0,
        CatchUp::Last => missed.min(1),
        CatchUp::All => missed,
    }
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
        let owed = owed(&job.schedule, missed);
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
                    let skipped = sluice_catalog::runs::new_id();
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
            let run = sluice_catalog::runs::new_id();
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

    #[test]
    fn weekdays_are_numbered_as_in_standard_cron() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let weekday = |d: DateTime<Utc>| d.format("%a").to_string();
        // 2026-12-05 is a Saturday.
        let saturday = at("2026-12-05T12:00:00Z");
        let days_of = |expr: &str| -> Vec<String> {
            let s = Schedule::parse(expr, None, None).unwrap();
            s.between(saturday, at("2026-12-12T12:00:00Z"), 100).into_iter().map(weekday).collect()
        };
        assert_eq!(days_of("0 2 * * 1-5"), ["Mon", "Tue", "Wed", "Thu", "Fri"]);
        assert_eq!(days_of("0 2 * * Mon-Fri"), ["Mon", "Tue", "Wed", "Thu", "Fri"]);
        assert_eq!(days_of("0 2 * * 0"), ["Sun"]);
        assert_eq!(days_of("0 2 * * 7"), ["Sun"]);
        assert_eq!(days_of("0 2 * * 6,0"), ["Sun", "Sat"]);
        assert_eq!(days_of("0 2 * * 5-7"), ["Sun", "Fri", "Sat"]);
        assert_eq!(days_of("0 2 * * */2"), ["Sun", "Tue", "Thu", "Sat"]);
        assert_eq!(days_of("0 2 * * 1/2"), ["Mon", "Wed", "Fri"]);
        assert_eq!(days_of("0 2 * * *").len(), 7);
        // Seconds first: the weekday is the sixth field.
        assert_eq!(days_of("0 0 2 * * 1"), ["Mon"]);
        for (bad, why) in [("0 2 * * 8", "0-7"), ("0 2 * * 5-1", "backwards"), ("0 2 * * 1,", "empty"), ("0 2 * * */0", "step of 0")] {
            let e = Schedule::parse(bad, None, None).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("0 and 7 Sunday"), "{bad}: {e}");
        }
    }

    #[test]
    fn catch_up_counts_the_fire_times_missed_while_down() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let hourly = Schedule::parse("0 * * * *", None, Some("all")).unwrap();
        // Down from 09:30 to 13:10: the fire times 10:00, 11:00, 12:00 and 13:00 were missed.
        let missed = hourly.between(at("2026-12-07T09:30:00Z"), at("2026-12-07T13:10:00Z"), 100);
        assert_eq!(missed, [at("2026-12-07T10:00:00Z"), at("2026-12-07T11:00:00Z"), at("2026-12-07T12:00:00Z"), at("2026-12-07T13:00:00Z")]);
        assert_eq!(owed(&hourly, missed.len()), 4);
        assert_eq!(owed(&Schedule::parse("0 * * * *", None, Some("last")).unwrap(), missed.len()), 1);
        assert_eq!(owed(&Schedule::parse("0 * * * *", None, Some("none")).unwrap(), missed.len()), 0);
        assert_eq!(owed(&hourly, 0), 0);
    }

    /// `serve` after downtime: the job's last run started about 5 minutes ago on a schedule that
    /// fires every minute, so 5 fire times were missed; each policy starts that many catch-up
    /// runs (real processes, recorded in a real catalog), one after the other.
    #[tokio::test]
    async fn serve_runs_the_missed_fire_times_by_its_catch_up_policy() {
        for (policy, expected) in [("all", 5), ("last", 1), ("none", 0)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.db");
            let catalog = Catalog::open(path.to_str().unwrap()).await.unwrap();
            let last = catalog.start("run", "nightly", None, None).await.unwrap();
            catalog.finish(&last, Status::Succeeded, Some(1), None, None).await.unwrap();
            // Back-date it to 1 s after the minute that began 5 minutes before the current one:
            // the fire times since are the 4 minutes between and the current one. (Away from
            // the end of a minute, so that serve starts within the same minute.)
            if Utc::now().timestamp() % 60 >= 55 {
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            let minute = Utc::now().timestamp() / 60 * 60;
            let started = DateTime::from_timestamp(minute - 5 * 60 + 1, 0).unwrap();
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute("UPDATE sluice_runs SET started = ?1 WHERE id = ?2", (started.to_rfc3339(), &last)).unwrap();
            let job = Scheduled {
                path: dir.path().join("nightly.toml"),
                name: "nightly".into(),
                schedule: Schedule::parse("0 * * * * *", None, Some(policy)).unwrap(),
            };
            let mut caught_up = 0;
            let mut ended = 0;
            serve(
                vec![job],
                &catalog,
                |_, _| Ok(std::process::Command::new("true").spawn().unwrap()),
                Some(Duration::from_secs(2)),
                |event| match event {
                    ServeEvent::Started { catch_up: true, .. } => caught_up += 1,
                    ServeEvent::Ended { .. } => ended += 1,
                    _ => {}
                },
            )
            .await
            .unwrap();
            assert_eq!(caught_up, expected, "catch_up = {policy}");
            assert!(ended >= expected, "catch_up = {policy}: every run it started ended ({ended})");
            let recorded = catalog.list(100).await.unwrap().iter().filter(|r| r.name == "nightly").count();
            assert!(recorded > expected, "catch_up = {policy}: runs recorded in the catalog: {recorded}");
        }
    }
}
