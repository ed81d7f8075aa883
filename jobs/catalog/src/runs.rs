//! The run catalog: every job run (`run`, `score`, `split`, `train`, `submit`) with its status,
//! rows, duration, output and error, in a SQLite file by default or PostgreSQL for a shared
//! cluster (`SLUICE_RUNS=postgres://...`). A run is recorded when it starts and updated when it
//! ends; a run whose process is gone without finishing shows as failed (or cancelled, when that
//! was asked), so a killed run is never left looking alive.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started, not finished.
    Running,
    /// Finished and committed.
    Succeeded,
    /// Finished with an error, or its process is gone.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Not started: a schedule's fire time found the job's previous run still going.
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            _ => Self::Running,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// `run`, `score`, `split`, `train`.
    pub kind: String,
    /// The job, or what it works on.
    pub name: String,
    /// How it stands.
    pub status: Status,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// When it ended.
    pub finished: Option<String>,
    /// Rows written.
    pub rows: Option<u64>,
    /// What it wrote (`asset@version`).
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The process running it and its host.
    pub pid: u32,
    /// The host.
    pub host: String,
    /// Whether a cancel was asked for.
    pub cancel_requested: bool,
    /// Drift a scoring run measured: `none`, or the drifted columns (NULL: not measured).
    pub drift: Option<String>,
    /// How far a running run is, as it last said (`3/8 chunks, ETA 12 s`).
    pub progress: Option<String>,
}

impl Run {
    /// Seconds from start to end (or to now).
    pub fn seconds(&self) -> f64 {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|d| d.with_timezone(&chrono::Utc));
        let start = parse(&self.started);
        let end = self.finished.as_deref().and_then(parse).or_else(|| Some(chrono::Utc::now()));
        match (start, end) {
            (Some(s), Some(e)) => (e - s).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        }
    }
}

/// Where runs are kept.
pub enum Catalog {
    /// A SQLite file.
    Sqlite(std::sync::Mutex<rusqlite::Connection>, PathBuf),
    /// A PostgreSQL database (shared by a cluster's users).
    Postgres(tokio_postgres::Client),
}

const COLUMNS: &str = "id, kind, name, status, started, finished, rows, output, error, pid, host, cancel_requested, drift, progress";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// This machine's name (`localhost` when it has none).
pub fn host() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

fn sqlite_error(e: rusqlite::Error) -> Error {
    Error::Invalid(format!("run catalog: {e}"))
}

fn pg_error(e: tokio_postgres::Error) -> Error {
    Error::Invalid(format!("run catalog (PostgreSQL): {e}"))
}

/// Whether process `pid` is alive on this machine.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Catalog {
    /// Opens the catalog at `location`: a `postgres://` URL, or a SQLite file path.
    pub async fn open(location: &str) -> Result<Self> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            let client = sluice_connectors::postgres::connect_url("run catalog", location)
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS sluice_runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, \
                     status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, rows BIGINT, output TEXT, error TEXT, \
                     pid BIGINT NOT NULL, host TEXT NOT NULL, cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, drift TEXT, \
                     progress TEXT); \
                     ALTER TABLE sluice_runs ADD COLUMN IF NOT EXISTS drift TEXT; \
                     ALTER TABLE sluice_runs ADD COLUMN IF NOT EXISTS progress TEXT",
                )
                .await
                .map_err(pg_error)?;
            return Ok(Self::Postgres(client));
        }
        let path = PathBuf::from(location);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(&path).map_err(sqlite_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sqlite_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS sluice_runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, \
             name TEXT NOT NULL, status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, rows INTEGER, output TEXT, \
             error TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0, drift TEXT, \
             progress TEXT)",
        )
        .map_err(sqlite_error)?;
        // Catalogs made before drift and progress were recorded get the columns.
        for column in ["drift", "progress"] {
            if conn.prepare(&format!("SELECT {column} FROM sluice_runs LIMIT 0")).is_err() {
                conn.execute_batch(&format!("ALTER TABLE sluice_runs ADD COLUMN {column} TEXT")).map_err(sqlite_error)?;
            }
        }
        Ok(Self::Sqlite(std::sync::Mutex::new(conn), path))
    }

    /// Where the catalog is, as users name it.
    pub fn location(&self) -> String {
        match self {
            Self::Sqlite(_, path) => path.display().to_string(),
            Self::Postgres(_) => "PostgreSQL".to_string(),
        }
    }

    async fn exec(&self, sql: &str, params: &[Param]) -> Result<u64> {
        match self {
            Self::Sqlite(conn, _) => {
                let conn = conn.lock().map_err(|_| Error::Invalid("run catalog: lock poisoned".into()))?;
                let values: Vec<&dyn rusqlite::ToSql> = params.iter().map(Param::sqlite).collect();
                Ok(conn.execute(&numbered(sql, '?'), values.as_slice()).map_err(sqlite_error)? as u64)
            }
            Self::Postgres(client) => {
                let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Param::pg).collect();
                client.execute(&numbered(sql, '$'), &values).await.map_err(pg_error)
            }
        }
    }

    /// Records a run starting now in process `pid` (this one when None); returns its id (`id`
    /// when given: a submitted run's process takes over the record its submitter made).
    pub async fn start(&self, kind: &str, name: &str, id: Option<String>, pid: Option<u32>) -> Result<String> {
        let id = id.unwrap_or_else(crate::runs::new_id);
        self.exec(
            "INSERT INTO sluice_runs (id, kind, name, status, started, pid, host) VALUES (#, #, #, 'running', #, #, #) \
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host, status = 'running'",
            &[
                Param::Text(id.clone()),
                Param::Text(kind.into()),
                Param::Text(name.into()),
                Param::Text(now()),
                Param::Int(i64::from(pid.unwrap_or_else(std::process::id))),
                Param::Text(host()),
            ],
        )
        .await?;
        Ok(id)
    }

    /// Records how run `id` ended.
    pub async fn finish(&self, id: &str, status: Status, rows: Option<u64>, output: Option<String>, error: Option<String>) -> Result<()> {
        self.exec(
            "UPDATE sluice_runs SET status = #, finished = #, rows = #, output = #, error = # WHERE id = #",
            &[
                Param::Text(status.as_str().into()),
                Param::Text(now()),
                Param::OptInt(rows.map(|r| i64::try_from(r).unwrap_or(i64::MAX))),
                Param::OptText(output),
                Param::OptText(error),
                Param::Text(id.into()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Records the drift run `id` measured: `none`, or the drifted columns.
    pub async fn mark_drift(&self, id: &str, drift: &str) -> Result<()> {
        self.exec("UPDATE sluice_runs SET drift = # WHERE id = #", &[Param::Text(drift.into()), Param::Text(id.into())]).await?;
        Ok(())
    }

    /// Records how far run `id` is (`3/8 chunks, ETA 12 s`), for the console.
    pub async fn set_progress(&self, id: &str, progress: &str) -> Result<()> {
        self.exec("UPDATE sluice_runs SET progress = # WHERE id = #", &[Param::Text(progress.into()), Param::Text(id.into())])
            .await?;
        Ok(())
    }

    /// Asks run `id` to stop: it is marked, and its process (on this machine) is sent SIGTERM.
    pub async fn cancel(&self, id: &str) -> Result<Run> {
        let run = self.get(id).await?;
        if run.status != Status::Running {
            return Err(Error::Invalid(format!("run {id} is not running (it {})", run.status)));
        }
        self.exec("UPDATE sluice_runs SET cancel_requested = # WHERE id = #", &[Param::Bool(true), Param::Text(id.into())])
            .await?;
        if run.host == host() && alive(run.pid) && run.pid != std::process::id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &run.pid.to_string()]).status();
        }
        self.get(id).await
    }

    /// Whether a cancel was asked for run `id`.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        Ok(self.get(id).await?.cancel_requested)
    }

    /// Run `id`.
    pub async fn get(&self, id: &str) -> Result<Run> {
        let runs = self.query(&format!("SELECT {COLUMNS} FROM sluice_runs WHERE id = #"), &[Param::Text(id.into())]).await?;
        runs.into_iter().next().ok_or_else(|| Error::Invalid(format!("no run {id} in the run catalog")))
    }

    /// The latest runs, newest first.
    pub async fn list(&self, limit: usize) -> Result<Vec<Run>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(&format!("SELECT {COLUMNS} FROM sluice_runs ORDER BY started DESC LIMIT #"), &[Param::Int(limit)]).await
    }

    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Run>> {
        let mut runs = match self {
            Self::Sqlite(conn, _) => {
                let conn = conn.lock().map_err(|_| Error::Invalid("run catalog: lock poisoned".into()))?;
                let values: Vec<&dyn rusqlite::ToSql> = params.iter().map(Param::sqlite).collect();
                let mut statement = conn.prepare(&numbered(sql, '?')).map_err(sqlite_error)?;
                let rows = statement
                    .query_map(values.as_slice(), |r| {
                        Ok(Run {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            name: r.get(2)?,
                            status: Status::parse(&r.get::<_, String>(3)?),
                            started: r.get(4)?,
                            finished: r.get(5)?,
                            rows: r.get::<_, Option<i64>>(6)?.map(|n| n.max(0) as u64),
                            output: r.get(7)?,
                            error: r.get(8)?,
                            pid: r.get::<_, i64>(9)?.max(0) as u32,
                            host: r.get(10)?,
                            cancel_requested: r.get::<_, i64>(11)? != 0,
                            drift: r.get(12)?,
                            progress: r.get(13)?,
                        })
                    })
                    .map_err(sqlite_error)?;
                rows.collect::<std::result::Result<Vec<_>, _>>().map_err(sqlite_error)?
            }
            Self::Postgres(client) => {
                let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Param::pg).collect();
                let rows = client.query(&numbered(sql, '$'), &values).await.map_err(pg_error)?;
                rows.iter()
                    .map(|r| Run {
                        id: r.get(0),
                        kind: r.get(1),
                        name: r.get(2),
                        status: Status::parse(r.get(3)),
                        started: r.get(4),
                        finished: r.get(5),
                        rows: r.get::<_, Option<i64>>(6).map(|n| n.max(0) as u64),
                        output: r.get(7),
                        error: r.get(8),
                        pid: r.get::<_, i64>(9).max(0) as u32,
                        host: r.get(10),
                        cancel_requested: r.get(11),
                        drift: r.get(12),
                        progress: r.get(13),
                    })
                    .collect()
            }
        };
        // A run whose process is gone without a word ended badly (or was cancelled).
        let here = host();
        for run in &mut runs {
            if run.status == Status::Running && run.host == here && !alive(run.pid) {
                let (status, why) = if run.cancel_requested {
                    (Status::Cancelled, "cancelled".to_string())
                } else {
                    (Status::Failed, format!("process {} ended without finishing the run (killed?)", run.pid))
                };
                self_heal(self, run, status, why).await;
            }
        }
        Ok(runs)
    }
}

async fn self_heal(catalog: &Catalog, run: &mut Run, status: Status, why: String) {
    let ok = Box::pin(catalog.finish(&run.id, status, run.rows, run.output.clone(), Some(why.clone()))).await.is_ok();
    if ok {
        run.status = status;
        run.error = Some(why);
        run.finished = Some(now());
    }
}

/// `#` placeholders as the database numbers them (`?1`, `$1`).
fn numbered(sql: &str, mark: char) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '#' {
            n += 1;
            out.push(mark);
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A statement parameter for either database.
enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

impl Param {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        match self {
            Self::Text(v) => v,
            Self::OptText(v) => v,
            Self::Int(v) => v,
            Self::OptInt(v) => v,
            Self::Bool(v) => v,
        }
    }

    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Self::Text(v) => v,
            Self::OptText(v) => v,
            Self::Int(v) => v,
            Self::OptInt(v) => v,
            Self::Bool(v) => v,
        }
    }
}

/// A fresh run id (sortable by time).
pub fn new_id() -> String {
    sluice_engine::assets::write::run_id()
}

/// The catalog's location: `SLUICE_RUNS` when set, else `runs.sqlite` beside a local lake, else
/// in `~/.local/share/sluice`.
pub fn default_location(lake_root: &url::Url) -> String {
    if let Ok(location) = std::env::var("SLUICE_RUNS") {
        return location;
    }
    if lake_root.scheme() == "file"
        && let Ok(path) = lake_root.to_file_path()
    {
        return path.join("_runs").join("runs.sqlite").display().to_string();
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".local/share/sluice/runs.sqlite")
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_are_recorded_and_a_vanished_process_is_not_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("runs.sqlite").display().to_string()).await.unwrap();
        let id = catalog.start("score", "events", None, None).await.unwrap();
        assert_eq!(catalog.get(&id).await.unwrap().status, Status::Running);
        catalog.finish(&id, Status::Succeeded, Some(10), Some("p@0".into()), None).await.unwrap();
        let run = catalog.get(&id).await.unwrap();
        assert_eq!((run.status, run.rows, run.output.as_deref()), (Status::Succeeded, Some(10), Some("p@0")));

        // A run whose process is gone shows as failed.
        let ghost = catalog.start("run", "job", None, None).await.unwrap();
        catalog.exec("UPDATE sluice_runs SET pid = # WHERE id = #", &[Param::Int(999_999_999), Param::Text(ghost.clone())]).await.unwrap();
        let run = catalog.get(&ghost).await.unwrap();
        assert_eq!(run.status, Status::Failed);
        assert!(run.error.unwrap().contains("ended without finishing"));
        assert_eq!(catalog.list(10).await.unwrap().len(), 2);
        assert!(catalog.cancel(&id).await.unwrap_err().to_string().contains("not running"));
    }
}
