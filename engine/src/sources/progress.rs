//! Live progress of source reads: executor tasks count the records they read into a counter the
//! client registered under a key carried in the plan, so `sluice run` shows rows, rows/s and the
//! partitions done while the job runs. Counters live in the process: executors of an embedded
//! cluster feed them; remote executors find no counter and count nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// Records read and partitions finished by one source read.
#[derive(Debug, Default)]
pub struct ReadProgress {
    records: AtomicU64,
    partitions_done: AtomicU64,
}

impl ReadProgress {
    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Partitions read to the end so far.
    pub fn partitions_done(&self) -> u64 {
        self.partitions_done.load(Ordering::Relaxed)
    }

    pub(crate) fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn partition_done(&self) {
        self.partitions_done.fetch_add(1, Ordering::Relaxed);
    }
}

static COUNTERS: LazyLock<Mutex<HashMap<String, Weak<ReadProgress>>>> = LazyLock::new(Default::default);

/// A new counter for a read; it counts while the returned handle lives.
pub fn track() -> (String, Arc<ReadProgress>) {
    let key = uuid::Uuid::new_v4().to_string();
    let progress = Arc::new(ReadProgress::default());
    if let Ok(mut counters) = COUNTERS.lock() {
        counters.retain(|_, c| c.strong_count() > 0);
        counters.insert(key.clone(), Arc::downgrade(&progress));
    }
    (key, progress)
}

/// The counter registered under `key` in this process, if its read is still watched.
pub(crate) fn find(key: &str) -> Option<Arc<ReadProgress>> {
    COUNTERS.lock().ok()?.get(key)?.upgrade()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_while_watched() {
        let (key, progress) = track();
        find(&key).unwrap().add_records(5);
        find(&key).unwrap().partition_done();
        assert_eq!((progress.records(), progress.partitions_done()), (5, 1));
        drop(progress);
        assert!(find(&key).is_none());
    }
}
