//! The disk spool: events kept in append-only segment files while PostgreSQL cannot take them.
//!
//! A record is `length (u32 LE) | CRC-32 of the payload (u32 LE) | payload (JSON event)`. Each
//! append is fsynced before it returns, so an event the spool took survives a crash. A process
//! never appends to a segment it did not create: after a crash the last record of the previous
//! segment may be torn, and writing behind it would hide every record that follows. Reading
//! skips a torn tail or a record whose checksum fails, with a warning, and goes on.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::Event;

/// A segment is closed and a new one begun past this size, so that replay reads bounded chunks.
pub const SEGMENT_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// No event encodes to more than this; a larger length is corruption.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
const HEADER: usize = 8;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("event spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event cannot be encoded for the spool: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spool directory: closed segments waiting for replay and the one being appended to.
pub struct Spool {
    dir: PathBuf,
    active: Option<Active>,
    next_seq: u64,
    /// Bytes in every segment of the directory.
    bytes: u64,
}

struct Active {
    /// Locked while this process appends, so that another process sharing the data directory
    /// never replays (and removes) a segment still being written.
    file: nix::fcntl::Flock<File>,
    path: PathBuf,
    len: u64,
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub struct SegmentRead {
    pub events: Vec<Event>,
    /// The file ended inside a record (a crash during an append).
    pub torn: bool,
    /// Records skipped because their checksum, length or payload was wrong.
    pub corrupt: usize,
}

impl Spool {
    /// Opens (creating) the spool directory. Segments left by an earlier run are kept for replay.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            active: None,
            next_seq: 1,
            bytes: 0,
        };
        for (seq, path) in spool.list()? {
            spool.next_seq = spool.next_seq.max(seq + 1);
            spool.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk in all segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether any segment holds anything.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    fn list(&self) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(seq) = name
                .strip_prefix("events-")
                .and_then(|s| s.strip_suffix(".spool"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((seq, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Appends `events` and fsyncs; returns the bytes written.
    pub fn append(&mut self, events: &[Event]) -> Result<u64, SpoolError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        for e in events {
            encode_record(e, &mut buf)?;
        }
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.len >= SEGMENT_MAX_BYTES)
        {
            self.active = None;
        }
        if self.active.is_none() {
            // Another process on the same data directory may have taken the next number.
            let (file, path) = loop {
                let path = self.dir.join(format!("events-{:016}.spool", self.next_seq));
                self.next_seq += 1;
                match OpenOptions::new().create_new(true).append(true).open(&path) {
                    Ok(file) => {
                        let file =
                            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                                .map_err(|(_, e)| io(&path)(e.into()))?;
                        break (file, path);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io(&path)(e)),
                }
            };
            // The new name must survive a crash as well as its contents.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
            self.active = Some(Active { file, path, len: 0 });
        }
        let active = self
            .active
            .as_mut()
            .expect("an active segment was just ensured");
        (&*active.file).write_all(&buf).map_err(io(&active.path))?;
        active.file.sync_data().map_err(io(&active.path))?;
        active.len += buf.len() as u64;
        self.bytes += buf.len() as u64;
        Ok(buf.len() as u64)
    }

    /// Closes the segment being appended to and lists every segment, oldest first, for replay.
    pub fn seal(&mut self) -> Result<Vec<PathBuf>, SpoolError> {
        self.active = None;
        Ok(self.list()?.into_iter().map(|(_, p)| p).collect())
    }

    /// Removes a segment whose events are all in PostgreSQL.
    pub fn remove(&mut self, path: &Path) -> Result<(), SpoolError> {
        if self.active.as_ref().is_some_and(|a| a.path == path) {
            self.active = None;
        }
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path).map_err(io(path))?;
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }
}

/// Appends one record for `event` to `out`.
pub fn encode_record(event: &Event, out: &mut Vec<u8>) -> Result<(), SpoolError> {
    let payload = serde_json::to_vec(event)?;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes every good record of a segment's bytes; never fails, reports what it skipped.
pub fn decode_records(bytes: &[u8]) -> SegmentRead {
    let mut read = SegmentRead::default();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER) else {
            read.torn = true;
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES {
            // The length itself is garbage: nothing after it can be framed.
            read.corrupt += 1;
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            read.torn = true;
            break;
        };
        at += HEADER + len;
        if crc32fast::hash(payload) != crc {
            read.corrupt += 1;
            continue;
        }
        match serde_json::from_slice::<Event>(payload) {
            Ok(e) => read.events.push(e),
            Err(_) => read.corrupt += 1,
        }
    }
    read
}

/// Reads a segment file, warning about what had to be skipped; `None` when another process
/// is still appending to it.
pub fn read_segment(path: &Path) -> Result<Option<SegmentRead>, SpoolError> {
    let file = File::open(path).map_err(io(path))?;
    let mut file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(f) => f,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(io(path)(e.into())),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(path))?;
    let read = decode_records(&bytes);
    if read.torn {
        tracing::warn!(segment = %path.display(), "event spool: torn last record skipped (crash during an append)");
    }
    if read.corrupt > 0 {
        tracing::warn!(segment = %path.display(), records = read.corrupt, "event spool: records failing their checksum skipped");
    }
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    fn event(i: i32) -> Event {
        let mut e = Event::new(Kind::Click, uuid::Uuid::now_v7());
        e.link_idx = Some(i);
        e.user_agent = Some(format!("agent {i} é"));
        e.ip = Some("192.0.2.7".parse().unwrap());
        e
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = (0..10).map(event).collect();
        let mut spool = Spool::open(dir.path()).unwrap();
        spool.append(&events[..4]).unwrap();
        spool.append(&events[4..]).unwrap();
        let bytes = spool.bytes();
        drop(spool);
        let mut spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.bytes(), bytes);
        // A reopened spool starts a new segment rather than appending to the old one.
        spool.append(&[event(99)]).unwrap();
        let segments = spool.seal().unwrap();
        assert_eq!(segments.len(), 2);
        let first = read_segment(&segments[0]).unwrap().unwrap();
        assert_eq!(first.events, events);
        assert!(!first.torn);
        assert_eq!(first.corrupt, 0);
        for s in &segments {
            spool.remove(s).unwrap();
        }
        assert!(spool.is_empty());
        // A segment another spool is appending to is left alone.
        let mut other = Spool::open(dir.path()).unwrap();
        other.append(&[event(7)]).unwrap();
        let busy = Spool::open(dir.path()).unwrap().list().unwrap().remove(0).1;
        assert!(read_segment(&busy).unwrap().is_none());
        other.seal().unwrap();
        assert_eq!(read_segment(&busy).unwrap().unwrap().events.len(), 1);
    }

    #[test]
    fn torn_last_record_is_skipped() {
        let events: Vec<Event> = (0..3).map(event).collect();
        let mut buf = Vec::new();
        for e in &events {
            encode_record(e, &mut buf).unwrap();
        }
        let whole = buf.len();
        // Cut inside the last payload, and inside the last header.
        let mut last = Vec::new();
        encode_record(&events[2], &mut last).unwrap();
        for cut in [
            whole - 1,
            whole - last.len() + 3,
            whole - last.len() + HEADER + 5,
        ] {
            let read = decode_records(&buf[..cut]);
            assert_eq!(read.events, events[..2].to_vec(), "cut at {cut}");
            assert!(read.torn);
        }
        // A torn file on disk reads the same way.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events-0000000000000001.spool");
        fs::write(&path, &buf[..whole - 2]).unwrap();
        let read = read_segment(&path).unwrap().unwrap();
        assert_eq!(read.events.len(), 2);
        assert!(read.torn);
    }

    #[test]
    fn checksum_mismatch_is_detected_and_skipped() {
        let events: Vec<Event> = (0..3).map(event).collect();
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for e in &events {
            starts.push(buf.len());
            encode_record(e, &mut buf).unwrap();
        }
        // Flip one payload byte of the middle record: its checksum fails, its neighbours stay.
        buf[starts[1] + HEADER + 10] ^= 0x20;
        let read = decode_records(&buf);
        assert_eq!(read.corrupt, 1);
        assert!(!read.torn);
        assert_eq!(read.events, vec![events[0].clone(), events[2].clone()]);
        // A garbage length cannot be framed: counted, reading stops, no panic.
        let mut bad = buf.clone();
        bad[starts[1]..starts[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let read = decode_records(&bad);
        assert_eq!(read.events, vec![events[0].clone()]);
        assert_eq!(read.corrupt, 1);
        // Arbitrary bytes never panic.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode_records(&junk);
        }
    }
}
