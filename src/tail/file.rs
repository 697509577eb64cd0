//! The single-file follower: one append-only file at a path, through rewrites, rotations,
//! truncations and in-place changes. What to do each tick is decided by [`decide`], a pure
//! function over what the tick saw.
//!
//! Generations follow each other and never overlap in time: a file that the path no longer
//! names (a rewrite renamed over it, logrotate `create`) keeps being followed through its open
//! descriptor, its late bytes extending its own generation, until it has been quiet for
//! [`GRACE_INTERVALS`] intervals (or the new file has started to grow while the old one is
//! quiet, or persist is stopping); only then does the new file's generation start.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::chain::{self, GenId, Generation};
use crate::error::{Error, Exit};
use crate::layout::{self, Mode};
use crate::{signal, timestamp};

use super::{ClockCheck, FileId, Follower, Shipped, TickError, Uploader, open_followed};

/// How many intervals a replaced file must stay quiet before persist stops following it.
pub const GRACE_INTERVALS: u32 = 5;

/// What one look at a followed file calls for. Pure: see [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing new (or a replaced file still within its grace period).
    Idle,
    /// Upload `[start, end)` of the open file.
    Append { start: u64, end: u64 },
    /// The open file is shorter than what was uploaded: it was truncated in place.
    Truncated { len: u64 },
    /// The path names another file, and the open one is fully uploaded and done: switch.
    Replaced,
}

/// What one tick saw of the followed file.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Bytes of the open file the bucket holds.
    pub uploaded: u64,
    /// The open file's length now.
    pub open_len: u64,
    pub open_id: FileId,
    /// What the path names now, if anything.
    pub path_id: Option<FileId>,
    /// How long the open file has not grown, counted from when the path was first seen naming
    /// another file at the earliest.
    pub quiet: Duration,
    /// Whether the file the path names now has grown since it was first seen there: the
    /// writer has moved on to it.
    pub successor_grew: bool,
}

/// Decides the next step for a followed file. The open file's remaining bytes always go first,
/// so a rewrite never loses its tail; a replaced file is left only once it is done: quiet for
/// `grace`, or quiet for one `interval` while its successor grows.
pub fn decide(seen: &Seen, interval: Duration, grace: Duration) -> Step {
    if seen.open_len < seen.uploaded {
        Step::Truncated { len: seen.open_len }
    } else if seen.open_len > seen.uploaded {
        Step::Append {
            start: seen.uploaded,
            end: seen.open_len,
        }
    } else if seen.path_id.is_some_and(|p| p != seen.open_id)
        && (seen.quiet >= grace || (seen.successor_grew && seen.quiet >= interval))
    {
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
    pub last_time_ms: u64,
}

/// The chain a restarted `persist` of a single file could continue: the newest generation's
/// newest point, if it is a `file` generation whose chain is whole. Pure.
pub fn resumable(gens: &[Generation]) -> std::result::Result<ChainEnd, String> {
    let Some(g) = gens.iter().max_by_key(|g| g.id) else {
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
        last_time_ms: g.last_time(),
    })
}

/// The observation time an upload is labelled with.
#[derive(Debug, Clone, Copy)]
enum Label {
    /// Unix ms taken just *before* the length was read: every byte the datastore had written
    /// by then is in the range, so a write acknowledged before a recovery point's time is in it.
    ObservedAt(u64),
    /// A file no longer at its path (replaced by a rewrite, rotated, or deleted) is labelled
    /// with its modification time: it may have stopped being the datastore's log before this
    /// tick, and its generation's last point must not claim writes that went elsewhere.
    Detached,
}

/// A file being followed.
struct Tracked {
    shipped: Shipped,
    generation: GenId,
    /// When the open file last grew.
    last_growth: Instant,
    last_len: u64,
    /// The file the path names instead, its length and when it was first seen there.
    successor: Option<(FileId, u64, Instant)>,
}

/// Follows one append-only file.
pub struct FileFollower {
    path: PathBuf,
    interval: Duration,
    tracked: Option<Tracked>,
    next_number: u64,
    /// A chain found in the bucket at start, to continue if the file still matches it.
    resume: Option<ChainEnd>,
    said_waiting: bool,
    said_vanished: bool,
}

impl FileFollower {
    pub fn new(
        path: PathBuf,
        interval: Duration,
        next_number: u64,
        resume: Option<ChainEnd>,
        said_waiting: bool,
    ) -> FileFollower {
        FileFollower {
            path,
            interval,
            tracked: None,
            next_number,
            resume,
            said_waiting,
            said_vanished: false,
        }
    }

    fn new_generation(&mut self) -> GenId {
        let id = GenId {
            number: self.next_number,
            mode: Mode::File,
        };
        self.next_number += 1;
        id
    }

    fn stat(&self, file: &File) -> std::result::Result<std::fs::Metadata, TickError> {
        file.metadata()
            .map_err(|e| Error::io("cannot stat", &self.path, &e).into())
    }

    /// Opens the path if it exists. Continues the bucket's chain when the file still starts
    /// with exactly its bytes, otherwise starts a new generation (and says why).
    fn open(&mut self, up: &mut Uploader) -> std::result::Result<bool, TickError> {
        let Some((file, meta)) = open_followed(&self.path)? else {
            if !self.said_waiting {
                log::info!("waiting for {} to appear", self.path.display());
                self.said_waiting = true;
            }
            return Ok(false);
        };
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
            let resumed = Shipped::resumed(file, id, r.end, r.crc)
                .map_err(|e| Error::io("cannot read", &self.path, &e))?;
            match resumed {
                Ok(shipped) => {
                    log::info!(
                        "resuming generation {} of {} at byte {}",
                        r.generation.number,
                        self.path.display(),
                        r.end
                    );
                    self.track(shipped, r.generation);
                    return Ok(true);
                }
                Err(file) => {
                    log::info!(
                        "{} no longer starts with the {} bytes of generation {} in the bucket \
                         (rewritten or replaced while persist was stopped): starting a new \
                         generation",
                        self.path.display(),
                        r.end,
                        r.generation.number
                    );
                    self.start_generation(up, Shipped::new(file, id), "new file")?;
                    return Ok(true);
                }
            }
        }
        self.start_generation(up, Shipped::new(file, id), "new file")?;
        Ok(true)
    }

    fn track(&mut self, shipped: Shipped, generation: GenId) {
        let last_len = shipped.uploaded();
        self.tracked = Some(Tracked {
            shipped,
            generation,
            last_growth: Instant::now(),
            last_len,
            successor: None,
        });
    }

    /// Uploads the file's whole content as the first object of a new generation. A new
    /// generation always starts on the true clock (see [`super::Clock::check`]).
    fn start_generation(
        &mut self,
        up: &mut Uploader,
        mut shipped: Shipped,
        why: &str,
    ) -> std::result::Result<(), TickError> {
        shipped.restart();
        let seen = timestamp::now_ms();
        up.clock.start_generation(seen);
        let len = self.stat(&shipped.file)?.len();
        let generation = self.new_generation();
        // Tracked first, with nothing uploaded: a failed upload is retried by the next tick as
        // an append from 0 in this generation.
        self.track(shipped, generation);
        log::info!(
            "starting generation {} of {} ({why}, {len} bytes)",
            generation.number,
            self.path.display()
        );
        self.upload(up, len, Label::ObservedAt(seen))
    }

    /// Ends the current generation where it stands and starts a new one with the whole
    /// content of the same open file.
    fn restart_generation(
        &mut self,
        up: &mut Uploader,
        why: &str,
    ) -> std::result::Result<(), TickError> {
        match self.tracked.take() {
            Some(t) => self.start_generation(up, t.shipped, why),
            None => Ok(()),
        }
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
            Label::Detached => up.clock.at_least(super::mtime_ms(&t.shipped.file)),
        };
        t.shipped
            .ship(up, t.generation, layout::FILE_PART, len, time)
            .map_err(TickError::S3)
    }

    /// What the path names now (and its length), saying once when it names nothing.
    fn path_now(&mut self) -> Option<(FileId, u64)> {
        match std::fs::metadata(&self.path) {
            Ok(m) => {
                self.said_vanished = false;
                Some((FileId::of(&m), m.len()))
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
        }
    }

    /// One look at the file, acting until nothing is left to do.
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError> {
        if self.tracked.is_none() && !self.open(up)? {
            return Ok(());
        }
        let mut verified = false;
        loop {
            let path = self.path_now();
            let Some(t) = self.tracked.as_mut() else {
                return Ok(());
            };
            let seen = timestamp::now_ms();
            let open_len = t
                .shipped
                .file
                .metadata()
                .map_err(|e| Error::io("cannot stat", &self.path, &e))?
                .len();
            let now = Instant::now();
            if open_len != t.last_len {
                t.last_len = open_len;
                t.last_growth = now;
            }
            if !t.shipped.in_bucket() {
                // The first object of this generation is not stored yet (its upload failed).
                self.upload(up, open_len, Label::ObservedAt(seen))?;
                continue;
            }
            if !verified && open_len >= t.shipped.uploaded() {
                verified = true;
                let check = t
                    .shipped
                    .verify()
                    .map_err(|e| Error::io("cannot read", &self.path, &e))?;
                if let Err(m) = check {
                    log::warn!(
                        "{}: {} (truncated and written again, or written in place): the \
                         bytes in the bucket are no longer this file's; starting a new \
                         generation with the whole file",
                        self.path.display(),
                        m.0
                    );
                    self.restart_generation(up, "changed in place")?;
                    continue;
                }
            }
            let path_id = path.map(|(id, _)| id);
            let successor_grew = match (path, &mut t.successor) {
                (Some((id, _)), _) if id == t.shipped.id => {
                    t.successor = None;
                    false
                }
                (Some((id, len)), Some((sid, slen, _))) if id == *sid => len > *slen,
                (Some((id, len)), s) => {
                    *s = Some((id, len, now));
                    false
                }
                (None, _) => false,
            };
            let since = match t.successor {
                Some((_, _, first_seen)) => t.last_growth.max(first_seen),
                None => t.last_growth,
            };
            let grace = if signal::stop_requested() {
                Duration::ZERO // stopping: the new file's bytes must go up now
            } else {
                self.interval * GRACE_INTERVALS
            };
            let step = decide(
                &Seen {
                    uploaded: t.shipped.uploaded(),
                    open_len,
                    open_id: t.shipped.id,
                    path_id,
                    quiet: now.duration_since(since),
                    successor_grew,
                },
                self.interval,
                grace,
            );
            match step {
                Step::Idle => return Ok(()),
                Step::Append { end, .. } => {
                    if path_id != Some(t.shipped.id) {
                        self.upload(up, end, Label::Detached)?;
                        continue;
                    }
                    match up.clock.check(seen) {
                        ClockCheck::Ok => self.upload(up, end, Label::ObservedAt(seen))?,
                        ClockCheck::Wait(d) => std::thread::sleep(d),
                        ClockCheck::SteppedBack(_) => {
                            self.restart_generation(up, "the clock went back")?;
                        }
                    }
                }
                Step::Truncated { len } => {
                    let why = format!("truncated from {} to {len} bytes", t.shipped.uploaded());
                    self.restart_generation(up, &why)?;
                }
                Step::Replaced => {
                    log::info!(
                        "{}: the replaced file is fully uploaded and quiet; following the new one",
                        self.path.display()
                    );
                    self.tracked = None;
                    let Some((file, meta)) = open_followed(&self.path)? else {
                        return Ok(());
                    };
                    self.start_generation(
                        up,
                        Shipped::new(file, FileId::of(&meta)),
                        "file replaced",
                    )?;
                }
            }
        }
    }
}

impl Follower for FileFollower {
    fn tick(&mut self, up: &mut Uploader) -> std::result::Result<(), TickError> {
        FileFollower::tick(self, up)
    }

    fn pending(&self) -> u64 {
        self.tracked.as_ref().map_or(0, |t| t.shipped.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Kind, ObjectKey};

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };
    const I: Duration = Duration::from_secs(1);
    const G: Duration = Duration::from_secs(5);

    fn seen(uploaded: u64, open_len: u64, path_id: Option<FileId>) -> Seen {
        Seen {
            uploaded,
            open_len,
            open_id: A,
            path_id,
            quiet: Duration::ZERO,
            successor_grew: false,
        }
    }

    #[test]
    fn decides_what_to_upload() {
        assert_eq!(decide(&seen(10, 10, Some(A)), I, G), Step::Idle);
        assert_eq!(
            decide(&seen(10, 25, Some(A)), I, G),
            Step::Append { start: 10, end: 25 }
        );
        assert_eq!(
            decide(&seen(10, 4, Some(A)), I, G),
            Step::Truncated { len: 4 }
        );
        // The old file's tail goes first.
        assert_eq!(
            decide(&seen(10, 25, Some(B)), I, G),
            Step::Append { start: 10, end: 25 }
        );
        // A vanished path: keep following the open file.
        assert_eq!(
            decide(&seen(25, 30, None), I, G),
            Step::Append { start: 25, end: 30 }
        );
        assert_eq!(decide(&seen(30, 30, None), I, G), Step::Idle);
    }

    #[test]
    fn a_replaced_file_is_left_only_once_it_is_done() {
        let mut s = seen(25, 25, Some(B));
        // Just replaced: late writes may still come (logrotate `create`).
        assert_eq!(decide(&s, I, G), Step::Idle);
        s.quiet = G - Duration::from_millis(1);
        assert_eq!(decide(&s, I, G), Step::Idle);
        s.quiet = G;
        assert_eq!(decide(&s, I, G), Step::Replaced);
        // The writer moved on to the new file: one quiet interval is enough.
        s.quiet = I;
        s.successor_grew = true;
        assert_eq!(decide(&s, I, G), Step::Replaced);
        s.quiet = I / 2;
        assert_eq!(decide(&s, I, G), Step::Idle);
        // Stopping: no grace.
        s.quiet = Duration::ZERO;
        s.successor_grew = false;
        assert_eq!(decide(&s, I, Duration::ZERO), Step::Replaced);
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
        assert_eq!(
            (r.end, r.crc, r.last_time_ms),
            (16, crc32fast::hash(data), 30)
        );

        // The newest generation is the highest number, whatever its times say (a clock that
        // was ahead while generation 1 was written).
        let skewed = chain::generations(vec![
            delta(1, Mode::File, 0, 4, 9_999, 7),
            delta(2, Mode::File, 0, 10, 20, crc32fast::hash(&data[..10])),
        ]);
        assert_eq!(resumable(&skewed).unwrap().generation.number, 2);

        let gap = chain::generations(vec![
            delta(2, Mode::File, 0, 10, 20, 0),
            delta(2, Mode::File, 12, 16, 30, 0),
        ]);
        assert!(resumable(&gap).unwrap_err().contains("cannot be continued"));
        let other = chain::generations(vec![delta(3, Mode::AofDir, 0, 10, 20, 0)]);
        assert!(resumable(&other).is_err());
        assert!(resumable(&[]).is_err());
    }
}
