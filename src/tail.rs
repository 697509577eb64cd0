//! `petrify persist`: the watched side. Follows an append-only file (or, through `aofdir`, a
//! Redis 7 folder), decides what to upload next with pure functions over what it observed, and
//! ships each new byte range as one object through [`Uploader`]. Single-threaded: poll, upload,
//! sleep.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::chain::{GenId, Generation};
use crate::cli::Persist;
use crate::error::{Error, Exit, Result};
use crate::layout::{self, Kind, ObjectKey};
use crate::s3::{Backoff, S3Error, Store};
use crate::{bucket, lease, signal, timestamp};

pub mod file;
pub mod verify;

use verify::{Capture, Witness};

/// Ranges up to this size are read once into memory, CRC'd and sent from there; larger ones are
/// read twice (CRC, then upload), so memory stays flat whatever the range.
const BUFFER_LIMIT: u64 = 8 << 20;

/// After a stop is requested, how long persist keeps trying to upload what is pending.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// (device, inode): what a path refers to, so that a file renamed over it is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Why a tick did not finish. S3 and file-changed failures are retried; local failures stop.
#[derive(Debug)]
pub enum TickError {
    S3(S3Error),
    Fatal(Error),
}

impl From<Error> for TickError {
    fn from(e: Error) -> Self {
        TickError::Fatal(e)
    }
}

/// A step back of the clock smaller than this is waited out; a larger one starts a new
/// generation (see [`Clock::check`]).
pub const CLOCK_STEP_TOLERANCE_MS: u64 = 1000;

/// Hands out observation times: Unix milliseconds, strictly increasing within a generation, so
/// that every recovery point has its own time and a chain's order is its times' order.
pub struct Clock {
    last_ms: u64,
}

/// What [`Clock::check`] makes of the time now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCheck {
    /// Later than every time handed out: use it.
    Ok,
    /// Slightly earlier (a small step back, or several points within one millisecond): wait
    /// this long rather than label a point with a time that has not come yet.
    Wait(Duration),
    /// The clock went back by this many milliseconds: a new generation must start, on the true
    /// clock (generations are ordered by number, so its earlier times shadow nothing).
    SteppedBack(u64),
}

impl Clock {
    pub fn after(last_ms: u64) -> Clock {
        Clock { last_ms }
    }

    /// Whether `now_ms` can label the next point of the current generation.
    pub fn check(&self, now_ms: u64) -> ClockCheck {
        if now_ms > self.last_ms {
            ClockCheck::Ok
        } else if self.last_ms - now_ms < CLOCK_STEP_TOLERANCE_MS {
            ClockCheck::Wait(Duration::from_millis(self.last_ms - now_ms + 1))
        } else {
            ClockCheck::SteppedBack(self.last_ms - now_ms)
        }
    }

    /// A new generation starts at `now_ms`: if the clock went back, its times restart from the
    /// true clock (said at WARN) instead of continuing from times that have not come yet.
    pub fn start_generation(&mut self, now_ms: u64) {
        if let ClockCheck::SteppedBack(by) = self.check(now_ms) {
            log::warn!(
                "the clock went back: it is {:.3}s behind the last recovery point's time (it was \
                 ahead and has been set right?); the new generation's points carry true times",
                by as f64 / 1000.0
            );
            self.last_ms = 0;
        }
    }

    /// A time no earlier than `ms` (a file's modification time, say), still strictly after every
    /// time handed out before.
    pub fn at_least(&mut self, ms: u64) -> u64 {
        self.last_ms = ms.max(self.last_ms + 1);
        self.last_ms
    }
}

/// Turns byte ranges of open files into objects.
pub struct Uploader<'a> {
    pub store: &'a Store,
    pub root: String,
    pub clock: Clock,
    /// The largest object to upload; larger ranges are split.
    pub max_object: u64,
    /// Objects and bytes uploaded since start (for the log and tests).
    pub objects: u64,
    pub bytes: u64,
}

/// Where the bytes of one upload come from.
pub struct Source<'a> {
    pub file: &'a File,
    pub start: u64,
    pub end: u64,
}

impl Uploader<'_> {
    /// Uploads `[start, end)` of `file` as deltas of `part` in `generation`, observed at
    /// `time_ms`: one object, or several of at most `max_object` bytes each (S3 refuses a
    /// single PUT over 5 GiB; a catch-up after a long outage, or a large Redis base, can be
    /// bigger). `done` follows each object S3 has acknowledged, with the bytes it holds, so a
    /// failure keeps the progress. An empty range is uploaded as one empty object (a
    /// generation's start).
    fn put_deltas(
        &mut self,
        generation: GenId,
        part: &str,
        file: &File,
        (start, end): (u64, u64),
        time_ms: u64,
        done: &mut Witness,
    ) -> std::result::Result<(), S3Error> {
        let mut from = start;
        loop {
            let to = end.min(from.saturating_add(self.max_object));
            let src = Source {
                file,
                start: from,
                end: to,
            };
            let (key, capture) = self.put_delta(generation, part, src, time_ms)?;
            done.extend(capture, key.crc);
            from = to;
            if from >= end {
                return Ok(());
            }
        }
    }

    /// Uploads `[start, end)` of `file` as one delta. Returns the key once S3 answered 2xx, and
    /// what the file's [`Witness`] keeps of the bytes sent.
    fn put_delta(
        &mut self,
        generation: GenId,
        part: &str,
        src: Source<'_>,
        time_ms: u64,
    ) -> std::result::Result<(ObjectKey, Capture), S3Error> {
        let len = src.end - src.start;
        let mut buffered = Vec::new();
        let mut capture = Capture::new(src.start, src.end);
        let crc = if len <= BUFFER_LIMIT {
            buffered = vec![0; len as usize];
            read_exact_at(src.file, &mut buffered, src.start).map_err(local)?;
            capture.feed(src.start, &buffered);
            crc32fast::hash(&buffered)
        } else {
            crc_range(src.file, src.start, src.end).map_err(local)?
        };
        let key = object_key(
            generation,
            part,
            Kind::Delta,
            (src.start, src.end),
            time_ms,
            crc,
        );
        let full = key.key(&self.root);
        if len <= BUFFER_LIMIT {
            self.store.put(&full, &mut &buffered[..], len)?;
        } else {
            let mut reader = RangeReader {
                file: src.file,
                pos: src.start,
                end: src.end,
                hasher: crc32fast::Hasher::new(),
                expect: crc,
                capture,
            };
            self.store.put(&full, &mut reader, len)?;
            capture = reader.capture;
        }
        Ok((self.stored(key), capture))
    }

    /// Uploads a whole small file already in memory (a Redis manifest) as a `snap` object.
    pub fn put_snap(
        &mut self,
        generation: GenId,
        part: &str,
        bytes: &[u8],
        time_ms: u64,
    ) -> std::result::Result<ObjectKey, S3Error> {
        let len = bytes.len() as u64;
        let key = object_key(
            generation,
            part,
            Kind::Snap,
            (0, len),
            time_ms,
            crc32fast::hash(bytes),
        );
        self.store.put(&key.key(&self.root), &mut &bytes[..], len)?;
        Ok(self.stored(key))
    }

    fn stored(&mut self, key: ObjectKey) -> ObjectKey {
        self.objects += 1;
        self.bytes += key.len();
        log::debug!("uploaded {key} ({} bytes)", key.len());
        key
    }
}

fn object_key(
    generation: GenId,
    part: &str,
    kind: Kind,
    (start, end): (u64, u64),
    time_ms: u64,
    crc: u32,
) -> ObjectKey {
    ObjectKey {
        generation: generation.number,
        mode: generation.mode,
        part: part.to_string(),
        start,
        end,
        time_ms,
        crc,
        kind,
    }
}

/// A local read failure during an upload is retried like a network one: the next tick
/// re-observes the file and decides again (a shrink becomes a new generation).
fn local(e: io::Error) -> S3Error {
    S3Error::Network(format!("reading the file: {e}"))
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            )
        } else {
            e
        }
    })
}

/// A file's modification time in Unix milliseconds (0 if the system cannot say).
pub fn mtime_ms(file: &File) -> u64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CRC-32 of the first `end` bytes of a file (to check that a chain can be continued).
pub fn crc_prefix(file: &File, end: u64) -> io::Result<u32> {
    crc_range(file, 0, end)
}

fn crc_range(file: &File, start: u64, end: u64) -> io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        read_exact_at(file, &mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize())
}

/// Streams `[pos, end)` of a file by positioned reads. Ends in an error, never early: ureq would
/// spin on a short body, and a body whose CRC no longer matches its key must not be stored, so
/// the last read fails instead of completing the request.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    hasher: crc32fast::Hasher,
    expect: u32,
    capture: Capture,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = ((self.end - self.pos) as usize).min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank during the upload",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.capture.feed(self.pos, &buf[..n]);
        self.pos += n as u64;
        if self.pos == self.end && self.hasher.clone().finalize() != self.expect {
            return Err(io::Error::other("the file changed during the upload"));
        }
        Ok(n)
    }
}

/// An open file's progress into one generation: how much of it the bucket holds, and what
/// proves those bytes are still the file's. Shared by the single-file and the Redis-folder
/// followers.
pub struct Shipped {
    pub file: File,
    /// What the file was when opened: a path naming another file now was replaced.
    pub id: FileId,
    /// The uploaded prefix `[0, witness.len())`, and what it looked like as sent.
    witness: Witness,
    /// Whether the generation holds this file's first object. It is uploaded even when empty,
    /// so that a file truncated to nothing, or a new empty incremental file, is in the point.
    in_bucket: bool,
}

impl Shipped {
    /// A file the generation holds nothing of yet.
    pub fn new(file: File, id: FileId) -> Shipped {
        Shipped {
            file,
            id,
            witness: Witness::empty(),
            in_bucket: false,
        }
    }

    /// A file whose first `end` bytes, with CRC-32 `crc`, the bucket already holds (a resumed
    /// chain): checked here. `Ok(Err(file))` when the file no longer starts with exactly those
    /// bytes.
    pub fn resumed(
        file: File,
        id: FileId,
        end: u64,
        crc: u32,
    ) -> io::Result<std::result::Result<Shipped, File>> {
        if file.metadata()?.len() < end || crc_prefix(&file, end)? != crc {
            return Ok(Err(file));
        }
        let witness = Witness::resumed(&file, end, crc)?;
        Ok(Ok(Shipped {
            file,
            id,
            witness,
            in_bucket: true,
        }))
    }

    pub fn uploaded(&self) -> u64 {
        self.witness.len()
    }

    pub fn in_bucket(&self) -> bool {
        self.in_bucket
    }

    /// Whether a length of `len` calls for an upload.
    pub fn behind(&self, len: u64) -> bool {
        !self.in_bucket || len > self.uploaded()
    }

    /// Whether the bytes uploaded are still the file's (see [`verify`]). `Ok(Err(_))` says what
    /// differs.
    pub fn verify(&mut self) -> io::Result<std::result::Result<(), verify::Mismatch>> {
        if !self.in_bucket {
            return Ok(Ok(()));
        }
        self.witness.check(&self.file)
    }

    /// Uploads what the bucket lacks up to `len`: from 0 while the generation holds nothing of
    /// the file, else from the end of what it holds. Progress is kept object by object.
    pub fn ship(
        &mut self,
        up: &mut Uploader,
        generation: GenId,
        part: &str,
        len: u64,
        time_ms: u64,
    ) -> std::result::Result<(), S3Error> {
        let start = self.uploaded();
        let r = up.put_deltas(
            generation,
            part,
            &self.file,
            (start, len),
            time_ms,
            &mut self.witness,
        );
        // Part of a large range may be stored even if the rest failed.
        self.in_bucket |= r.is_ok() || self.uploaded() > 0;
        r
    }

    /// Starts over in a new generation: the bucket holds nothing of it there.
    pub fn restart(&mut self) {
        self.witness = Witness::empty();
        self.in_bucket = false;
    }

    /// Bytes on disk not uploaded yet.
    pub fn pending(&self) -> u64 {
        self.file
            .metadata()
            .map(|m| m.len().saturating_sub(self.uploaded()))
            .unwrap_or(0)
    }
}

/// Runs `petrify persist` until SIGTERM, SIGINT or SIGHUP.
pub fn persist(args: &Persist, store: &Store) -> Result<()> {
    // First of all, so that a stop requested while starting up is a clean stop too.
    signal::install();
    let root = layout::root(&args.common.prefix);
    let found = bucket::survey(store, &root)?;
    preflight(&args.file)?;
    let lease = lease::Lease::mine(&args.file);
    let where_ = format!("s3://{}/{root}", args.common.bucket);
    lease::acquire(store, &root, &lease, &where_)?;
    let result = follow(args, store, root.clone(), found);
    lease::release(store, &root, &lease);
    result
}

/// Opens a path to follow without blocking, and refuses anything but a regular file or a
/// folder: opening a FIFO for reading would block until a writer came, deaf to SIGTERM, and a
/// device or socket is not a log. `Ok(None)`: nothing is there (yet).
pub fn open_followed(path: &Path) -> Result<Option<(File, std::fs::Metadata)>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    const O_NONBLOCK: i32 = 0o4000;
    const O_NOCTTY: i32 = 0o400;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK | O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open", path, &e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, &e))?;
    let t = meta.file_type();
    let what = if t.is_file() || t.is_dir() {
        return Ok(Some((file, meta)));
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(Error::new(
        Exit::Usage,
        format!(
            "{} is {what}: give the regular file the datastore appends to, or a Redis 7 \
             appendonlydir/ folder",
            path.display()
        ),
    ))
}

/// Refuses, before anything is written to the bucket, a path persist could never follow: an
/// unreadable file, a FIFO or device, or a folder that is not a Redis AOF folder. A missing
/// path is fine (waited for).
fn preflight(path: &Path) -> Result<()> {
    match open_followed(path)? {
        None => Ok(()),
        Some((_, m)) if m.is_dir() => crate::aofdir::refuse_foreign_folder(path),
        Some(_) => Ok(()),
    }
}

/// Waits for the path, then follows it as a file or a Redis folder until stopped.
fn follow(args: &Persist, store: &Store, root: String, found: bucket::Bucketed) -> Result<()> {
    // Whether PATH is a file or a Redis folder is only known once it exists.
    let mut said_waiting = false;
    let is_dir = loop {
        match std::fs::metadata(&args.file) {
            Ok(m) => break m.is_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !said_waiting {
                    log::info!("waiting for {} to appear", args.file.display());
                    said_waiting = true;
                }
                if signal::stop_requested() {
                    log::info!("stopped before {} appeared", args.file.display());
                    return Ok(());
                }
                signal::sleep_until(Instant::now() + args.interval);
            }
            Err(e) => return Err(Error::io("cannot read", &args.file, &e)),
        }
    };
    // The newest generation is continued only if this host's clock is not behind its times:
    // its points must stay in time order. Otherwise (a clock that was ahead, then corrected)
    // a new generation starts on the true clock.
    let newest = found.generations.iter().max_by_key(|g| g.id);
    let newest_ms = newest.map_or(0, |g| g.last_time());
    let behind_ms = newest_ms.saturating_sub(timestamp::now_ms());
    let resume_from: &[Generation] = if behind_ms >= CLOCK_STEP_TOLERANCE_MS {
        log::warn!(
            "the newest recovery point in the bucket is {:.3}s ahead of this host's clock: not \
             resuming generation {}; a new one starts on the true clock",
            behind_ms as f64 / 1000.0,
            newest.map_or(0, |g| g.id.number)
        );
        &[]
    } else {
        &found.generations
    };
    let mut up = Uploader {
        store,
        root,
        clock: Clock::after(newest_ms),
        max_object: args.max_object,
        objects: 0,
        bytes: 0,
    };
    if is_dir {
        let mut follower =
            crate::aofdir::AofDirFollower::new(&args.file, resume_from, found.next_number)?;
        return run_loop(args.interval, &mut up, &mut follower);
    }
    let resume = match file::resumable(resume_from) {
        Ok(r) => Some(r),
        Err(why) => {
            log::info!("not resuming: {why}");
            None
        }
    };
    let mut follower = file::FileFollower::new(
        args.file.clone(),
        args.interval,
        found.next_number,
        resume,
        said_waiting,
    );
    run_loop(args.interval, &mut up, &mut follower)
}

/// The database being watched, as the polling loop sees it: a single file, or a Redis folder.
pub trait Follower {
    /// One look at the source, uploading everything new. An `Err(S3)` leaves the state as it
    /// was before the failed upload, so the next tick retries with whatever is there then.
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError>;
    /// Bytes on disk not uploaded yet.
    fn pending(&self) -> u64;
}

/// The polling loop shared by every follower: tick each interval; after an S3 failure, retry
/// with capped backoff (re-observing, so the retry carries everything appended meanwhile); on
/// a stop request, finish what is pending within [`STOP_GRACE`].
pub fn run_loop(interval: Duration, up: &mut Uploader, follower: &mut dyn Follower) -> Result<()> {
    // Capped at one interval: S3 coming back is noticed within an interval, and a failing
    // request per interval is no load (no busy loop: the first retries are 50 ms, 100 ms, ...).
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        interval.max(Duration::from_millis(50)),
    );
    let mut failing_since: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    loop {
        let started = Instant::now();
        if stop_at.is_none() && signal::stop_requested() {
            log::info!(
                "stop requested ({}): uploading what is pending",
                signal::stop_signal_name()
            );
            stop_at = Some(started);
        }
        let next = match follower.tick(up) {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    log::info!(
                        "S3 is reachable again after {:.1}s; caught up",
                        since.elapsed().as_secs_f64()
                    );
                }
                backoff.reset();
                if stop_at.is_some() {
                    log::info!(
                        "stopped; {} object(s), {} byte(s) uploaded this run",
                        up.objects,
                        up.bytes
                    );
                    return Ok(());
                }
                started + interval
            }
            Err(TickError::Fatal(e)) => return Err(e),
            Err(TickError::S3(e)) => {
                let delay = backoff.next_delay();
                let n = backoff.failures();
                // The first failure, then every tenth, so a long outage does not flood the log.
                if n == 1 || n.is_multiple_of(10) {
                    log::error!(
                        "upload failed ({e}); {} byte(s) waiting on disk, retrying (failure {n})",
                        follower.pending()
                    );
                }
                failing_since.get_or_insert(started);
                if let Some(at) = stop_at
                    && at.elapsed() >= STOP_GRACE
                {
                    return Err(Error::new(
                        Exit::TempFail,
                        format!(
                            "stopped with {} byte(s) not uploaded ({e}); they are still on disk \
                             and will be uploaded when persist starts again",
                            follower.pending()
                        ),
                    ));
                }
                Instant::now() + delay
            }
        };
        if stop_at.is_none() {
            signal::sleep_until(next);
        } else {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_strictly_increasing() {
        let far = timestamp::now_ms() + 1_000_000;
        let mut c = Clock::after(far);
        assert_eq!(c.at_least(5), far + 1);
        assert_eq!(c.at_least(far), far + 2);
        assert_eq!(c.at_least(far + 10), far + 10);
    }

    #[test]
    fn range_reader_refuses_short_or_changed_files() {
        let dir = std::env::temp_dir().join(format!("petrify-rr-{}", std::process::id()));
        std::fs::write(&dir, b"hello world").unwrap();
        let f = File::open(&dir).unwrap();
        let read = |end: u64, expect: u32| {
            let mut r = RangeReader {
                file: &f,
                pos: 0,
                end,
                hasher: crc32fast::Hasher::new(),
                expect,
                capture: Capture::new(0, end),
            };
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        };
        assert_eq!(
            read(11, crc32fast::hash(b"hello world")).unwrap(),
            b"hello world"
        );
        assert!(read(11, 1).is_err());
        assert!(read(20, 1).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
