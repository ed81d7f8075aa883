//! The MQTT spool: every message is written here and synced to disk before the broker gets its
//! acknowledgement, and stays until the micro-batch it is in has landed. Acknowledging at once
//! keeps the broker's in-flight window (20 messages by default in Mosquitto) and its queue
//! limit (1,000) from ever holding back or dropping a message while a batch is landing; a crash
//! leaves the messages here, and the next run lands the ones after the last landed position.
//!
//! Layout: `<dir>/id` (this spool's identity, recorded with each landed position), `<dir>/landed`
//! (the last sequence number that landed), `<dir>/lock`, and segments `<first seq>.log` of
//! records `[len u32][xxh3 u64][seq u64][pkid u16][flags u8][size u64][fingerprint u64]
//! [topic len u16][topic][payload]`, little-endian.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rumqttc::Publish;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// A segment is closed past this size (the newest two are always kept, see `mark_landed`).
const SEGMENT_BYTES: u64 = 64 << 20;
/// What is kept of a message over `max_message_bytes` (for its quarantine row).
const OVERSIZE_PREFIX: usize = 1024;
/// Bytes of a record before its topic.
const HEADER: usize = 4 + 8;
const FIXED_BODY: usize = 8 + 2 + 1 + 8 + 8 + 2;

/// A message as the spool keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its position in the spool (increasing, never reused).
    pub seq: u64,
    /// The topic it was published to.
    pub topic: String,
    /// Its payload (only the first KiB when `oversize`).
    pub payload: Bytes,
    /// The payload's size as published.
    pub size: u64,
    /// Whether the payload was over `read.max_message_bytes` (it is quarantined, not landed).
    pub oversize: bool,
}

/// A spool directory, locked for one process.
pub struct Spool {
    dir: PathBuf,
    id: String,
    writer: Option<BufWriter<File>>,
    /// Bytes in the segment being written.
    written: u64,
    next_seq: u64,
    landed: u64,
    /// The fingerprint of the newest record per packet id: a message the broker sends again
    /// (its DUP flag set, the same packet id) that matches was spooled, and only its
    /// acknowledgement was lost.
    recent: HashMap<u16, u64>,
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).field("next_seq", &self.next_seq).field("landed", &self.landed).finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool at `dir`; a torn record at the end of the newest segment (a
    /// crash while writing, never acknowledged) is cut off.
    pub fn open(dir: &Path) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| Error::Source(format!("MQTT spool {}: {what}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| io("creating it", e))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(|e| io("lock", e))?;
        if lock.try_lock().is_err() {
            return Err(Error::Source(format!(
                "MQTT spool {} is in use by another process; give each job its own connection.client_id (or read.spool_dir)",
                dir.display()
            )));
        }
        let id = match std::fs::read_to_string(dir.join("id")) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                write_durably(&dir.join("id"), id.as_bytes()).map_err(|e| io("writing its id", e))?;
                id
            }
        };
        let landed = match std::fs::read_to_string(dir.join("landed")) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                Error::Source(format!(
                    "MQTT spool {}: 'landed' holds '{}', not a number; remove the file to land every spooled message again",
                    dir.display(),
                    text.trim()
                ))
            })?,
            Err(_) => 0,
        };
        let mut spool = Self {
            dir: dir.to_path_buf(),
            id,
            writer: None,
            written: 0,
            next_seq: landed + 1,
            landed,
            recent: HashMap::new(),
            _lock: lock,
        };
        let segments = spool.segments()?;
        if let Some((_, newest)) = segments.last() {
            let (records, valid) = read_segment(newest)?;
            let len = std::fs::metadata(newest).map_err(|e| io("reading a segment", e))?.len();
            if valid < len {
                tracing::warn!(segment = %newest.display(), bytes = len - valid,
                    "MQTT spool: cut a torn record at the end (never acknowledged: the broker sends it again)");
                let file = OpenOptions::new().write(true).open(newest).map_err(|e| io("repairing a segment", e))?;
                file.set_len(valid).map_err(|e| io("repairing a segment", e))?;
                file.sync_all().map_err(|e| io("repairing a segment", e))?;
            }
            if let Some(last) = records.last() {
                spool.next_seq = spool.next_seq.max(last.0.seq + 1);
            }
        }
        // The newest two segments hold every record whose acknowledgement may not have arrived.
        for (_, path) in segments.iter().rev().take(2).rev() {
            for (record, pkid, fingerprint) in read_segment(path)?.0 {
                let _ = record;
                spool.recent.insert(pkid, fingerprint);
            }
        }
        Ok(spool)
    }

    /// This spool's identity (landed positions are recorded with it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last sequence number that landed (as this spool recorded it).
    pub fn landed(&self) -> u64 {
        self.landed
    }

    /// The last sequence number written.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The records after `after`, oldest first.
    pub fn records_after(&self, after: u64) -> Result<Vec<Record>> {
        let segments = self.segments()?;
        let mut out = Vec::new();
        for (i, (first, path)) in segments.iter().enumerate() {
            // A segment ends where the next one starts.
            if segments.get(i + 1).is_some_and(|(next, _)| *next <= after + 1) {
                continue;
            }
            let _ = first;
            out.extend(read_segment(path)?.0.into_iter().map(|(r, _, _)| r).filter(|r| r.seq > after));
        }
        Ok(out)
    }

    /// Whether `publish` is the broker sending again a message that was spooled.
    pub fn is_redelivery(&self, publish: &Publish) -> bool {
        publish.dup && self.recent.get(&publish.pkid) == Some(&fingerprint(&publish.topic, &publish.payload))
    }

    /// Writes `publish` (not yet synced: call `sync` before acknowledging it).
    pub fn append(&mut self, publish: &Publish, max_message_bytes: usize) -> Result<Record> {
        if self.writer.is_none() || self.written >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let size = publish.payload.len();
        let oversize = size > max_message_bytes;
        let payload = if oversize { publish.payload.slice(..OVERSIZE_PREFIX.min(size)) } else { publish.payload.clone() };
        let topic = publish.topic.as_bytes();
        let topic_len = u16::try_from(topic.len())
            .map_err(|_| Error::Source(format!("MQTT topic of {} bytes (the protocol allows 65,535)", topic.len())))?;
        let print = fingerprint(&publish.topic, &publish.payload);
        let seq = self.next_seq;
        let mut body = Vec::with_capacity(FIXED_BODY + topic.len() + payload.len());
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&publish.pkid.to_le_bytes());
        body.push(u8::from(oversize));
        body.extend_from_slice(&(size as u64).to_le_bytes());
        body.extend_from_slice(&print.to_le_bytes());
        body.extend_from_slice(&topic_len.to_le_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&payload);
        let len = u32::try_from(body.len()).map_err(|_| Error::Source("an MQTT message over 4 GiB".into()))?;
        let writer = self.writer.as_mut().ok_or_else(|| Error::Source("MQTT spool: no segment open".into()))?;
        let io = |e: std::io::Error| Error::Source(format!("MQTT spool {}: writing: {e}", self.dir.display()));
        writer.write_all(&len.to_le_bytes()).map_err(io)?;
        writer.write_all(&xxh3_64(&body).to_le_bytes()).map_err(io)?;
        writer.write_all(&body).map_err(io)?;
        self.written += (HEADER + body.len()) as u64;
        self.next_seq += 1;
        self.recent.insert(publish.pkid, print);
        Ok(Record { seq, topic: publish.topic.clone(), payload, size: size as u64, oversize })
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            let io = |e: std::io::Error| Error::Source(format!("MQTT spool {}: syncing: {e}", self.dir.display()));
            writer.flush().map_err(io)?;
            writer.get_ref().sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// Records that everything up to `seq` landed; drops the segments wholly before it, keeping
    /// the newest two.
    pub fn mark_landed(&mut self, seq: u64) -> Result<()> {
        if seq <= self.landed {
            return Ok(());
        }
        let io = |e: std::io::Error| Error::Source(format!("MQTT spool {}: recording the landed position: {e}", self.dir.display()));
        write_durably(&self.dir.join("landed"), seq.to_string().as_bytes()).map_err(io)?;
        self.landed = seq;
        let segments = self.segments()?;
        let keep_from = segments.len().saturating_sub(2);
        for i in 0..keep_from {
            let ends_before = segments[i + 1].0;
            if ends_before <= seq + 1 {
                std::fs::remove_file(&segments[i].1).map_err(io)?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        // The first segment of a run goes on with the newest one while it has room.
        let newest = if self.writer.is_none() { self.segments()?.pop() } else { None };
        let (path, written) = match newest {
            Some((_, path)) => {
                let len = std::fs::metadata(&path)
                    .map_err(|e| Error::Source(format!("MQTT spool {}: {e}", path.display())))?
                    .len();
                if len < SEGMENT_BYTES { (path, len) } else { (self.dir.join(format!("{:020}.log", self.next_seq)), 0) }
            }
            None => (self.dir.join(format!("{:020}.log", self.next_seq)), 0),
        };
        let io = |e: std::io::Error| Error::Source(format!("MQTT spool {}: opening a segment: {e}", path.display()));
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        if written == 0 {
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.writer = Some(BufWriter::with_capacity(1 << 20, file));
        self.written = written;
        Ok(())
    }

    /// Segments by first sequence number.
    fn segments(&self) -> Result<Vec<(u64, PathBuf)>> {
        let io = |e: std::io::Error| Error::Source(format!("MQTT spool {}: listing: {e}", self.dir.display()));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                out.push((first, path));
            }
        }
        out.sort();
        Ok(out)
    }
}

fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    xxh3_64(topic.as_bytes()) ^ xxh3_64(payload).rotate_left(17)
}

/// A record read back, with its packet id and fingerprint.
type Spooled = (Record, u16, u64);

/// The whole records of a segment and the bytes they fill.
fn read_segment(path: &Path) -> Result<(Vec<Spooled>, u64)> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::Source(format!("MQTT spool segment {}: {e}", path.display())))?;
    let data = Bytes::from(data);
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let sum = u64::from_le_bytes(header[4..12].try_into().unwrap_or_default());
        let Some(body) = data.get(at + HEADER..at + HEADER + len) else { break };
        if len < FIXED_BODY || xxh3_64(body) != sum {
            break;
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap_or_default());
        let seq = u64_at(0);
        let pkid = u16::from_le_bytes([body[8], body[9]]);
        let oversize = body[10] & 1 == 1;
        let size = u64_at(11);
        let print = u64_at(19);
        let topic_len = u16::from_le_bytes([body[27], body[28]]) as usize;
        let Some(topic) = body.get(FIXED_BODY..FIXED_BODY + topic_len) else { break };
        let topic = String::from_utf8_lossy(topic).into_owned();
        let start = at + HEADER + FIXED_BODY + topic_len;
        let payload = data.slice(start..at + HEADER + len);
        out.push((Record { seq, topic, payload, size, oversize }, pkid, print));
        at += HEADER + len;
    }
    Ok((out, at as u64))
}

/// Writes `path` through a temporary file and a rename, synced.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rumqttc::QoS;

    fn publish(pkid: u16, topic: &str, payload: &str) -> Publish {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
        p.pkid = pkid;
        p
    }

    #[test]
    fn records_survive_a_reopen_and_landed_ones_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path()).unwrap();
            for i in 0..10u16 {
                spool.append(&publish(i + 1, "t/a", &format!("{{\"i\": {i}}}")), 100).unwrap();
            }
            spool.sync().unwrap();
            spool.mark_landed(4).unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.landed(), 4);
        assert_eq!(spool.last_seq(), 10);
        let rest = spool.records_after(spool.landed()).unwrap();
        assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), (5..=10).collect::<Vec<_>>());
        assert_eq!(&rest[0].payload[..], b"{\"i\": 4}");
        assert_eq!(rest[0].topic, "t/a");
    }

    #[test]
    fn a_torn_tail_is_cut_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let segment;
        {
            let mut spool = Spool::open(dir.path()).unwrap();
            for i in 0..3u16 {
                spool.append(&publish(i + 1, "t", "{}"), 100).unwrap();
            }
            spool.sync().unwrap();
            segment = spool.segments().unwrap().pop().unwrap().1;
        }
        let len = std::fs::metadata(&segment).unwrap().len();
        // A crash in the middle of the fourth record.
        let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let mut spool = Spool::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
        assert_eq!(spool.records_after(0).unwrap().len(), 3);
        assert_eq!(spool.append(&publish(9, "t", "{}"), 100).unwrap().seq, 4);
    }

    #[test]
    fn a_redelivered_message_is_known_and_a_new_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path()).unwrap();
            spool.append(&publish(7, "t", "a"), 100).unwrap();
            spool.sync().unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        let mut again = publish(7, "t", "a");
        again.dup = true;
        assert!(spool.is_redelivery(&again));
        let mut other = publish(7, "t", "b");
        other.dup = true;
        assert!(!spool.is_redelivery(&other));
        // Without the DUP flag it is a new message that reuses the packet id.
        assert!(!spool.is_redelivery(&publish(7, "t", "a")));
    }

    #[test]
    fn an_oversize_message_keeps_its_size_and_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        let big = "x".repeat(5000);
        let r = spool.append(&publish(1, "t", &big), 4096).unwrap();
        assert!(r.oversize);
        assert_eq!(r.size, 5000);
        assert_eq!(r.payload.len(), OVERSIZE_PREFIX);
        spool.sync().unwrap();
        let back = spool.records_after(0).unwrap();
        assert!(back[0].oversize && back[0].size == 5000);
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path()).unwrap();
        let e = Spool::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another process") && e.contains("client_id"), "{e}");
    }
}
