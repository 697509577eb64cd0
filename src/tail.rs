//! `petrify persist`: the watched side. Follows an append-only file (or, through `aofdir`, a
//! Redis 7 folder), decides what to upload next with pure functions over what it observed, and
//! ships each new byte range as one object through [`Uploader`]. Single-threaded: poll, upload,
//! sleep.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::chain::{self, GenId, Generation};
use crate::cli::Persist;
use crate::error::{Error, Exit, Result};
use crate::layout::{self, Kind, Mode, ObjectKey};
use crate::s3::{Backoff, S3Error, Store};
use crate::{bucket, lease, signal, timestamp};

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

/// Hands out observation times: Unix milliseconds, strictly increasing, so that every recovery
/// point has its own time and a clock stepping back cannot reorder a chain.
pub struct Clock {
    last_ms: u64,
}

impl Clock {
    pub fn after(last_ms: u64) -> Clock {
        Clock { last_ms }
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
    /// bigger). `done` follows each object S3 has acknowledged, so a failure keeps the progress.
    /// An empty range is uploaded as one empty object (a generation's start).
    fn put_deltas(
        &mut self,
        generation: GenId,
        part: &str,
        file: &File,
        (start, end): (u64, u64),
        time_ms: u64,
        done: &mut u64,
    ) -> std::result::Result<(), S3Error> {
        let mut from = start;
        loop {
            let to = end.min(from.saturating_add(self.max_object));
            let src = Source {
                file,
                start: from,
                end: to,
            };
            self.put_delta(generation, part, src, time_ms)?;
            *done = to;
            from = to;
            if from >= end {
                return Ok(());
            }
        }
    }

    /// Uploads `[start, end)` of `file` as one delta. Returns the key once S3 answered 2xx.
    fn put_delta(
        &mut self,
        generation: GenId,
        part: &str,
        src: Source<'_>,
        time_ms: u64,
    ) -> std::result::Result<ObjectKey, S3Error> {
        let len = src.end - src.start;
        let mut buffered = Vec::new();
        let crc = if len <= BUFFER_LIMIT {
            buffered = vec![0; len as usize];
            read_exact_at(src.file, &mut buffered, src.start).map_err(local)?;
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
            };
            self.store.put(&full, &mut reader, len)?;
        }
        Ok(self.stored(key))
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
        self.pos += n as u64;
        if self.pos == self.end && self.hasher.clone().finalize() != self.expect {
            return Err(io::Error::other("the file changed during the upload"));
        }
        Ok(n)
    }
}

/// An open file's progress into one generation: how much of it the bucket holds. Shared by the
/// single-file and the Redis-folder followers.
pub struct Shipped {
    pub file: File,
    uploaded: u64,
    /// Whether the generation holds this file's first object. It is uploaded even when empty,
    /// so that a file truncated to nothing, or a new empty incremental file, is in the point.
    in_bucket: bool,
}

impl Shipped {
    /// A file the generation holds nothing of yet.
    pub fn new(file: File) -> Shipped {
        Shipped {
            file,
            uploaded: 0,
            in_bucket: false,
        }
    }

    /// A file whose first `end` bytes the bucket already holds (a resumed chain).
    pub fn resumed(file: File, end: u64) -> Shipped {
        Shipped {
            file,
            uploaded: end,
            in_bucket: true,
        }
    }

    pub fn uploaded(&self) -> u64 {
        self.uploaded
    }

    pub fn in_bucket(&self) -> bool {
        self.in_bucket
    }

    /// Whether a length of `len` calls for an upload.
    pub fn behind(&self, len: u64) -> bool {
        !self.in_bucket || len > self.uploaded
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
        let start = if self.in_bucket { self.uploaded } else { 0 };
        let r = up.put_deltas(
            generation,
            part,
            &self.file,
            (start, len),
            time_ms,
            &mut self.uploaded,
        );
        // Part of a large range may be stored even if the rest failed.
        self.in_bucket |= r.is_ok() || self.uploaded > 0;
        r
    }

    /// Starts over in a new generation: the bucket holds nothing of it there.
    pub fn restart(&mut self) {
        self.uploaded = 0;
        self.in_bucket = false;
    }

    /// Bytes on disk not uploaded yet.
    pub fn pending(&self) -> u64 {
        self.file
            .metadata()
            .map(|m| m.len().saturating_sub(self.uploaded))
            .unwrap_or(0)
    }
}

/// What one look at a followed file calls for. Pure: see [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing new.
    Idle,
    /// Upload `[start, end)` of the open file.
    Append { start: u64, end: u64 },
    /// The open file is shorter than what was uploaded: it was truncated in place.
    Truncated { len: u64 },
    /// The path names another file now, and the open one is fully uploaded: switch to it.
    Replaced,
}

/// Decides the next step for a followed file from what was uploaded of it (`uploaded`), its
/// current length through the open descriptor (`open_len`), and what the path names now.
/// The old file's remaining bytes always go first, so a rewrite never loses its tail.
pub fn decide(uploaded: u64, open_len: u64, open_id: FileId, path_id: Option<FileId>) -> Step {
    if open_len < uploaded {
        Step::Truncated { len: open_len }
    } else if open_len > uploaded {
        Step::Append {
            start: uploaded,
            end: open_len,
        }
    } else if path_id.is_some_and(|p| p != open_id) {
        Step::Replaced
    } else {
        Step::Idle
    }
}

/// How a resumed chain ends: the generation, and the chain's length and CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEnd {
    pub generation: GenId,
    pub end: u64,
    pub crc: u32,
}

/// The chain a restarted `persist` of a single file could continue: the newest generation's
/// newest point, if it is a `file` generation whose chain is whole. Pure.
pub fn resumable(gens: &[Generation]) -> std::result::Result<ChainEnd, String> {
    let Some(g) = gens.iter().max_by_key(|g| (g.last_time(), g.id)) else {
        return Err("the prefix holds no chain yet".into());
    };
    if g.id.mode != Mode::File {
        return Err(format!(
            "the newest generation {} is a {} backup, not a single file",
            g.id.number,
            g.id.mode.as_str()
        ));
    }
    let objs = g
        .parts
        .get(layout::FILE_PART)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let plan = chain::plan_part(objs, u64::MAX)
        .map_err(|e| format!("generation {} cannot be continued: {e}", g.id.number))?;
    let (end, crc) = chain::chain_crc(&plan);
    Ok(ChainEnd {
        generation: g.id,
        end,
        crc,
    })
}

/// The observation time an upload is labelled with.
#[derive(Debug, Clone, Copy)]
enum Label {
    /// Unix ms taken just *before* the length was read: every byte the datastore had written
    /// by then is in the range, so a write acknowledged before a recovery point's time is in it.
    ObservedAt(u64),
    /// A file no longer at its path (replaced by a rewrite, or deleted) stopped being the
    /// datastore's log when it was last written: its last bytes are labelled with its
    /// modification time, or the old generation's last point would claim writes that went to
    /// the new file.
    Detached,
}

/// A file being followed.
struct Tracked {
    shipped: Shipped,
    id: FileId,
    generation: GenId,
}

/// Follows one append-only file.
struct FileFollower {
    path: PathBuf,
    tracked: Option<Tracked>,
    next_number: u64,
    /// A chain found in the bucket at start, to continue if the file still matches it.
    resume: Option<ChainEnd>,
    said_waiting: bool,
    said_vanished: bool,
}

impl FileFollower {
    fn new_generation(&mut self) -> GenId {
        let id = GenId {
            number: self.next_number,
            mode: Mode::File,
        };
        self.next_number += 1;
        id
    }

    /// Opens the path if it exists. Continues the bucket's chain when the file still starts
    /// with exactly its bytes, otherwise starts a new generation (and says why).
    fn open(&mut self, up: &mut Uploader) -> std::result::Result<bool, TickError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.said_waiting {
                    log::info!("waiting for {} to appear", self.path.display());
                    self.said_waiting = true;
                }
                return Ok(false);
            }
            Err(e) => return Err(Error::io("cannot open", &self.path, &e).into()),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &self.path, &e))?;
        if meta.is_dir() {
            return Err(Error::new(
                Exit::Usage,
                format!(
                    "{} is a folder without a Redis manifest (*.manifest): give an append-only \
                     file or a Redis 7 appendonlydir/",
                    self.path.display()
                ),
            )
            .into());
        }
        let id = FileId::of(&meta);
        if let Some(r) = self.resume.take() {
            let matches = meta.len() >= r.end
                && crc_range(&file, 0, r.end)
                    .map_err(|e| Error::io("cannot read", &self.path, &e))?
                    == r.crc;
            if matches {
                log::info!(
                    "resuming generation {} of {} at byte {}",
                    r.generation.number,
                    self.path.display(),
                    r.end
                );
                self.tracked = Some(Tracked {
                    shipped: Shipped::resumed(file, r.end),
                    id,
                    generation: r.generation,
                });
                return Ok(true);
            }
            log::info!(
                "{} no longer starts with the {} bytes of generation {} in the bucket \
                 (rewritten or replaced while persist was stopped): starting a new generation",
                self.path.display(),
                r.end,
                r.generation.number
            );
        }
        let generation = self.new_generation();
        self.start_generation(up, file, id, generation, "new file")?;
        Ok(true)
    }

    /// Uploads the file's whole content as the first object of a new generation.
    fn start_generation(
        &mut self,
        up: &mut Uploader,
        file: File,
        id: FileId,
        generation: GenId,
        why: &str,
    ) -> std::result::Result<(), TickError> {
        let seen = timestamp::now_ms();
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &self.path, &e))?
            .len();
        // Tracked first, with nothing uploaded: a failed upload is retried by the next tick as
        // an append from 0 in this generation.
        self.tracked = Some(Tracked {
            shipped: Shipped::new(file),
            id,
            generation,
        });
        log::info!(
            "starting generation {} of {} ({why}, {len} bytes)",
            generation.number,
            self.path.display()
        );
        self.upload(up, len, Label::ObservedAt(seen))
    }

    /// Uploads the open file up to `len`, unless the bucket has it already.
    fn upload(
        &mut self,
        up: &mut Uploader,
        len: u64,
        label: Label,
    ) -> std::result::Result<(), TickError> {
        let Some(t) = self.tracked.as_mut() else {
            return Ok(());
        };
        if !t.shipped.behind(len) {
            return Ok(());
        }
        let time = match label {
            Label::ObservedAt(ms) => up.clock.at_least(ms),
            Label::Detached => up.clock.at_least(mtime_ms(&t.shipped.file)),
        };
        t.shipped
            .ship(up, t.generation, layout::FILE_PART, len, time)
            .map_err(TickError::S3)
    }

    /// One look at the file, acting until nothing is left to do.
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError> {
        if self.tracked.is_none() && !self.open(up)? {
            return Ok(());
        }
        loop {
            let Some(t) = self.tracked.as_ref() else {
                return Ok(());
            };
            if !t.shipped.in_bucket() {
                // The first object of this generation is not stored yet (its upload failed).
                let seen = timestamp::now_ms();
                let len = t
                    .shipped
                    .file
                    .metadata()
                    .map_err(|e| Error::io("cannot stat", &self.path, &e))?
                    .len();
                self.upload(up, len, Label::ObservedAt(seen))?;
                continue;
            }
            let seen = timestamp::now_ms();
            let open_len = t
                .shipped
                .file
                .metadata()
                .map_err(|e| Error::io("cannot stat", &self.path, &e))?
                .len();
            let path_id = match std::fs::metadata(&self.path) {
                Ok(m) => {
                    self.said_vanished = false;
                    Some(FileId::of(&m))
                }
                Err(_) => {
                    if !self.said_vanished {
                        log::info!(
                            "{} is gone; following the open file until a new one appears",
                            self.path.display()
                        );
                        self.said_vanished = true;
                    }
                    None
                }
            };
            match decide(t.shipped.uploaded(), open_len, t.id, path_id) {
                Step::Idle => return Ok(()),
                Step::Append { end, .. } => {
                    let label = match path_id == Some(t.id) {
                        true => Label::ObservedAt(seen),
                        false => Label::Detached,
                    };
                    self.upload(up, end, label)?
                }
                Step::Truncated { len } => {
                    let Some(old) = self.tracked.take() else {
                        return Ok(());
                    };
                    let generation = self.new_generation();
                    let why = format!("truncated from {} to {len} bytes", old.shipped.uploaded());
                    self.start_generation(up, old.shipped.file, old.id, generation, &why)?;
                }
                Step::Replaced => {
                    self.tracked = None;
                    let file = match File::open(&self.path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(Error::io("cannot open", &self.path, &e).into()),
                    };
                    let meta = file
                        .metadata()
                        .map_err(|e| Error::io("cannot stat", &self.path, &e))?;
                    let generation = self.new_generation();
                    self.start_generation(
                        up,
                        file,
                        FileId::of(&meta),
                        generation,
                        "file replaced",
                    )?;
                }
            }
        }
    }

    /// Bytes on disk not yet uploaded.
    fn pending(&self) -> u64 {
        self.tracked.as_ref().map_or(0, |t| t.shipped.pending())
    }
}

/// Runs `petrify persist` until SIGTERM/SIGINT.
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

/// Refuses, before anything is written to the bucket, a path persist could never follow: an
/// unreadable file, or a folder that is not a Redis AOF folder. A missing path is fine (waited
/// for).
fn preflight(path: &std::path::Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot read", path, &e)),
        Ok(m) if m.is_dir() => crate::aofdir::refuse_foreign_folder(path),
        Ok(_) => File::open(path)
            .map(drop)
            .map_err(|e| Error::io("cannot open", path, &e)),
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
    let mut up = Uploader {
        store,
        root,
        clock: Clock::after(found.last_time_ms),
        max_object: args.max_object,
        objects: 0,
        bytes: 0,
    };
    if is_dir {
        let mut follower =
            crate::aofdir::AofDirFollower::new(&args.file, &found.generations, found.next_number)?;
        return run_loop(args.interval, &mut up, &mut follower);
    }
    let resume = match resumable(&found.generations) {
        Ok(r) => Some(r),
        Err(why) => {
            log::info!("not resuming: {why}");
            None
        }
    };
    let mut follower = FileFollower {
        path: args.file.clone(),
        tracked: None,
        next_number: found.next_number,
        resume,
        said_waiting,
        said_vanished: false,
    };
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

impl Follower for FileFollower {
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError> {
        FileFollower::tick(self, up)
    }
    fn pending(&self) -> u64 {
        FileFollower::pending(self)
    }
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
            log::info!("stop requested: uploading what is pending");
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

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };

    #[test]
    fn decides_what_to_upload() {
        assert_eq!(decide(10, 10, A, Some(A)), Step::Idle);
        assert_eq!(
            decide(10, 25, A, Some(A)),
            Step::Append { start: 10, end: 25 }
        );
        assert_eq!(decide(10, 4, A, Some(A)), Step::Truncated { len: 4 });
        // The old file's tail goes first, then the switch.
        assert_eq!(
            decide(10, 25, A, Some(B)),
            Step::Append { start: 10, end: 25 }
        );
        assert_eq!(decide(25, 25, A, Some(B)), Step::Replaced);
        // A vanished path: keep following the open file.
        assert_eq!(decide(25, 30, A, None), Step::Append { start: 25, end: 30 });
        assert_eq!(decide(30, 30, A, None), Step::Idle);
    }

    fn delta(generation: u64, mode: Mode, start: u64, end: u64, t: u64, crc: u32) -> ObjectKey {
        ObjectKey {
            generation,
            mode,
            part: if mode == Mode::File {
                "file".into()
            } else {
                "x.manifest".into()
            },
            start,
            end,
            time_ms: t,
            crc,
            kind: Kind::Delta,
        }
    }

    #[test]
    fn resumes_the_newest_whole_file_chain() {
        let data = b"0123456789abcdef";
        let gens = chain::generations(vec![
            delta(1, Mode::File, 0, 4, 10, 7),
            delta(2, Mode::File, 0, 10, 20, crc32fast::hash(&data[..10])),
            delta(2, Mode::File, 10, 16, 30, crc32fast::hash(&data[10..])),
        ]);
        let r = resumable(&gens).unwrap();
        assert_eq!(r.generation.number, 2);
        assert_eq!((r.end, r.crc), (16, crc32fast::hash(data)));

        let gap = chain::generations(vec![
            delta(2, Mode::File, 0, 10, 20, 0),
            delta(2, Mode::File, 12, 16, 30, 0),
        ]);
        assert!(resumable(&gap).unwrap_err().contains("cannot be continued"));
        let other = chain::generations(vec![delta(3, Mode::AofDir, 0, 10, 20, 0)]);
        assert!(resumable(&other).is_err());
        assert!(resumable(&[]).is_err());
    }

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
