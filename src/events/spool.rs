//! The disk spool: events kept in append-only segment files while PostgreSQL cannot take them.
//!
//! A record is `length (u32 LE) | CRC-32 of the payload (u32 LE) | payload (JSON event)`. Each
//! append is fsynced before it returns, so an event the spool took survives a crash. A process
//! never appends to a segment it did not create: after a crash the last record of the previous
//! segment may be torn, and writing behind it would hide every record that follows. Reading
//! skips a torn tail or a record whose checksum fails, with a warning, and goes on.
//!
//! Processes sharing a data directory share its spool, and each replays what the others left:
//! a segment gets its name only once its creator holds its lock (see [`Spool::new_segment`]),
//! and a replay holds a segment's lock from reading it until its name is removed.

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
/// The name prefix of a segment being created, before it is published (see
/// [`Spool::new_segment`]); never listed for replay.
const CREATING: &str = ".creating-";

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
        spool.remove_abandoned()?;
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

    /// Creates the next segment, already locked. A reader in another process sharing the
    /// directory takes an unlocked segment for a closed one and removes it once replayed, so a
    /// segment must never appear under its name before it is locked: it is created under a name
    /// of this process's own, locked, and only then linked under the next free segment name.
    fn new_segment(&mut self) -> Result<(nix::fcntl::Flock<File>, PathBuf), SpoolError> {
        // A crashed process's leftover is removed by `remove_abandoned` of a process starting,
        // which may catch ours between its creation and its lock: then begin again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let private = self
                .dir
                .join(format!("{CREATING}{}", uuid::Uuid::new_v4().simple()));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&private)
                .map_err(io(&private))?;
            let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
                Ok(f) => f,
                Err((_, e)) => {
                    let _ = fs::remove_file(&private);
                    return Err(io(&private)(e.into()));
                }
            };
            #[cfg(test)]
            tests::before_publish();
            // Another process on the same data directory may have taken the next number.
            let published = loop {
                let path = self.dir.join(format!("events-{:016}.spool", self.next_seq));
                self.next_seq += 1;
                match fs::hard_link(&private, &path) {
                    Ok(()) => break Ok(path),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => break Err((path, e)),
                }
            };
            match published {
                Ok(path) => {
                    // The segment is published and locked: a private name left behind is
                    // removed by the next process to open the spool.
                    if let Err(e) = fs::remove_file(&private) {
                        tracing::warn!(error = %e, file = %private.display(), "event spool: cannot remove a private segment name");
                    }
                    return Ok((file, path));
                }
                Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => continue,
                Err((path, e)) => {
                    let _ = fs::remove_file(&private);
                    return Err(io(&path)(e));
                }
            }
        }
    }

    /// Removes what a crashed process left of a segment it was creating: nothing was ever
    /// written to it (a segment is written only under its published name), and one still locked
    /// belongs to a live process.
    fn remove_abandoned(&self) -> Result<(), SpoolError> {
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            if !entry.file_name().to_string_lossy().starts_with(CREATING) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if let Ok(locked) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                let _ = fs::remove_file(&path);
                drop(locked);
            }
        }
        Ok(())
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
            let (file, path) = self.new_segment()?;
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

    /// Removes a replayed segment, every event of which is in PostgreSQL. The reader's lock,
    /// held until the name is gone, keeps every other process from replaying the segment
    /// meanwhile. The name is removed only while it still names the file that was read: when
    /// another process read the segment too (it opened it before this one locked it) and removed
    /// it, the name may by now be a new segment that someone is appending to.
    pub fn remove(&mut self, segment: SegmentReader) -> Result<(), SpoolError> {
        use std::os::unix::fs::MetadataExt;
        let path = segment.path.clone();
        let read = segment.file().metadata().map_err(io(&path))?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == read.dev() && now.ino() == read.ino() => {
                fs::remove_file(&path).map_err(io(&path))?;
                self.bytes = self.bytes.saturating_sub(read.len());
            }
            // Removed by another process's replay.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        drop(segment);
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
    let mut records = Records::new(bytes);
    let mut events = Vec::new();
    // Reading a slice cannot fail.
    while let Ok(Some(e)) = records.next_event() {
        events.push(e);
    }
    SegmentRead {
        events,
        torn: records.torn,
        corrupt: records.corrupt,
    }
}

/// The records of a segment, decoded one at a time.
struct Records<R> {
    input: R,
    torn: bool,
    corrupt: usize,
    ended: bool,
    payload: Vec<u8>,
}

impl<R: Read> Records<R> {
    fn new(input: R) -> Records<R> {
        Records {
            input,
            torn: false,
            corrupt: 0,
            ended: false,
            payload: Vec::new(),
        }
    }

    /// The next good event, skipping bad records; `None` at the end of the segment.
    fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        while !self.ended {
            let mut header = [0u8; HEADER];
            match read_full(&mut self.input, &mut header)? {
                0 => {
                    self.ended = true;
                    break;
                }
                HEADER => {}
                _ => {
                    self.torn = true;
                    self.ended = true;
                    break;
                }
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD_BYTES {
                // The length itself is garbage: nothing after it can be framed.
                self.corrupt += 1;
                self.ended = true;
                break;
            }
            self.payload.resize(len, 0);
            if read_full(&mut self.input, &mut self.payload)? < len {
                self.torn = true;
                self.ended = true;
                break;
            }
            if crc32fast::hash(&self.payload) != crc {
                self.corrupt += 1;
                continue;
            }
            match serde_json::from_slice::<Event>(&self.payload) {
                Ok(e) => return Ok(Some(e)),
                Err(_) => self.corrupt += 1,
            }
        }
        Ok(None)
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A segment file held for replay (locked exclusively).
struct Locked(nix::fcntl::Flock<File>);

impl Read for Locked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// A segment being replayed, read a batch at a time: a segment holds up to
/// [`SEGMENT_MAX_BYTES`] of records, and reading it whole kept the file and all of its events
/// in memory at once, beside the endpoints that were filling the spool.
pub struct SegmentReader {
    path: PathBuf,
    records: Records<std::io::BufReader<Locked>>,
    warned: bool,
}

impl SegmentReader {
    /// Opens a segment and locks it, so that no other process replays it at once; `None` when
    /// another process is appending to it or replaying it.
    pub fn open(path: &Path) -> Result<Option<SegmentReader>, SpoolError> {
        let file = File::open(path).map_err(io(path))?;
        #[cfg(test)]
        tests::before_lock();
        let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            Ok(f) => f,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(io(path)(e.into())),
        };
        Ok(Some(SegmentReader {
            path: path.to_owned(),
            records: Records::new(std::io::BufReader::with_capacity(256 * 1024, Locked(file))),
            warned: false,
        }))
    }

    /// The next at most `n` good events; fewer only at the end of the segment, where it warns
    /// about what had to be skipped.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<Event>, SpoolError> {
        let mut out = Vec::with_capacity(n.min(4096));
        while out.len() < n {
            match self.records.next_event().map_err(io(&self.path))? {
                Some(e) => out.push(e),
                None => {
                    self.warn_skipped();
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The segment file, as opened.
    fn file(&self) -> &File {
        &self.records.input.get_ref().0
    }

    /// Records skipped so far: torn (at most one, the last) and corrupt.
    pub fn skipped(&self) -> usize {
        self.records.corrupt + usize::from(self.records.torn)
    }

    fn warn_skipped(&mut self) {
        if std::mem::replace(&mut self.warned, true) {
            return;
        }
        let path = self.path.display();
        if self.records.torn {
            tracing::warn!(segment = %path, "event spool: torn last record skipped (crash during an append)");
        }
        if self.records.corrupt > 0 {
            tracing::warn!(segment = %path, records = self.records.corrupt, "event spool: records failing their checksum skipped");
        }
    }
}

/// Reads a whole segment file; `None` when another process is appending to it or replaying it.
pub fn read_segment(path: &Path) -> Result<Option<SegmentRead>, SpoolError> {
    let Some(mut reader) = SegmentReader::open(path)? else {
        return Ok(None);
    };
    let events = reader.next_batch(usize::MAX)?;
    Ok(Some(SegmentRead {
        events,
        torn: reader.records.torn,
        corrupt: reader.records.corrupt,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;
    use std::cell::RefCell;

    type Hook = RefCell<Option<Box<dyn FnMut()>>>;

    thread_local! {
        /// Runs inside [`Spool::new_segment`], between creating a segment and publishing it.
        static BEFORE_PUBLISH: Hook = RefCell::new(None);
        /// Runs inside [`SegmentReader::open`], between opening a segment and locking it.
        static BEFORE_LOCK: Hook = RefCell::new(None);
    }

    /// Runs the hook set in `slot`, once: taken first, so that the hook may call what runs it.
    fn run(slot: &'static std::thread::LocalKey<Hook>) {
        if let Some(mut hook) = slot.with(|h| h.borrow_mut().take()) {
            hook();
        }
    }

    pub(super) fn before_publish() {
        run(&BEFORE_PUBLISH);
    }

    pub(super) fn before_lock() {
        run(&BEFORE_LOCK);
    }

    /// Two processes replay one segment: this one opens it; before it takes the lock, the
    /// other replays and removes it, and a third begins a new segment under the name now free.
    /// This one's removal must leave the new segment alone; removing by name, it took the new
    /// segment's events with it.
    #[test]
    fn a_segment_removed_by_another_replay_is_not_removed_again_under_its_new_owner() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Spool::open(dir.path()).unwrap();
        first.append(&[event(1)]).unwrap();
        let path = first.seal().unwrap().remove(0);
        drop(first);
        let shared = dir.path().to_owned();
        let third: std::rc::Rc<RefCell<Option<Spool>>> = Default::default();
        let owner = third.clone();
        BEFORE_LOCK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                let mut other = Spool::open(&shared).unwrap();
                let segment = other.seal().unwrap().remove(0);
                let mut read = SegmentReader::open(&segment).unwrap().unwrap();
                assert_eq!(read.next_batch(10).unwrap().len(), 1);
                other.remove(read).unwrap();
                let mut new_owner = Spool::open(&shared).unwrap();
                new_owner.append(&[event(2)]).unwrap();
                *owner.borrow_mut() = Some(new_owner);
            }))
        });
        let mut replayer = Spool::open(dir.path()).unwrap();
        let mut read = SegmentReader::open(&path).unwrap().unwrap();
        assert!(third.borrow().is_some(), "the hook ran");
        // It reads what the other replayed already (written again, idempotently).
        assert_eq!(read.next_batch(10).unwrap().len(), 1);
        replayer.remove(read).unwrap();
        drop(third.borrow_mut().take());
        let segments = Spool::open(dir.path()).unwrap().seal().unwrap();
        let kept: Vec<Event> = segments
            .iter()
            .flat_map(|s| read_segment(s).unwrap().unwrap().events)
            .collect();
        assert_eq!(kept.len(), 1, "the new segment's event is kept");
        assert_eq!(kept[0].link_idx, Some(2));
    }

    /// Another process sharing the directory replays it at the worst moment: while this one is
    /// creating the segment its event goes to. The event is then either replayed by the other
    /// or still on disk; before, the other removed the new, empty, not yet locked segment and
    /// the event was written into a file that no longer had a name.
    #[test]
    fn a_segment_being_created_is_never_replayed_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().to_owned();
        let replayed = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let seen = replayed.clone();
        BEFORE_PUBLISH.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                let mut other = Spool::open(&shared).unwrap();
                for segment in other.seal().unwrap() {
                    if let Some(mut read) = SegmentReader::open(&segment).unwrap() {
                        seen.set(seen.get() + read.next_batch(usize::MAX).unwrap().len());
                        other.remove(read).unwrap();
                    }
                }
            }))
        });
        let mut spool = Spool::open(dir.path()).unwrap();
        spool.append(&[event(1)]).unwrap();
        assert!(
            BEFORE_PUBLISH.with(|h| h.borrow().is_none()),
            "the hook ran"
        );
        drop(spool);
        let mut later = Spool::open(dir.path()).unwrap();
        let on_disk: usize = later
            .seal()
            .unwrap()
            .iter()
            .map(|s| read_segment(s).unwrap().unwrap().events.len())
            .sum();
        assert_eq!(replayed.get() + on_disk, 1, "the event is kept");
        // Nothing but the segment is left in the directory.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A crash between creating a segment and publishing it leaves a file no one holds: the
    /// next process to open the spool removes it, and leaves alone one a live process holds.
    #[test]
    fn an_abandoned_segment_being_created_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let abandoned = dir.path().join(format!("{CREATING}dead"));
        fs::write(&abandoned, b"").unwrap();
        let held_path = dir.path().join(format!("{CREATING}live"));
        let held = nix::fcntl::Flock::lock(
            File::create(&held_path).unwrap(),
            nix::fcntl::FlockArg::LockExclusive,
        )
        .unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(!abandoned.exists());
        assert!(held_path.exists());
        assert!(spool.is_empty());
        drop(held);
    }

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
            spool
                .remove(SegmentReader::open(s).unwrap().unwrap())
                .unwrap();
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
    fn a_segment_is_read_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = (0..10).map(event).collect();
        let mut spool = Spool::open(dir.path()).unwrap();
        spool.append(&events).unwrap();
        let path = spool.seal().unwrap().remove(0);
        // A torn record behind the last whole one.
        let mut torn = Vec::new();
        encode_record(&event(11), &mut torn).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        fs::write(&path, &bytes).unwrap();
        let mut reader = SegmentReader::open(&path).unwrap().unwrap();
        let mut sizes = Vec::new();
        let mut read = Vec::new();
        loop {
            let batch = reader.next_batch(3).unwrap();
            sizes.push(batch.len());
            if batch.is_empty() {
                break;
            }
            read.extend(batch);
        }
        assert_eq!(sizes, [3, 3, 3, 1, 0]);
        assert_eq!(read, events);
        assert_eq!(reader.skipped(), 1);
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
