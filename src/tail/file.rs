//! The single-file follower: one append-only file at a path, through rewrites, rotations,
//! truncations and in-place changes. What to do each tick is decided by [`decide`], a pure
//! function over what the tick saw.
//!
//! Generations follow each other and never overlap in time: a file that the path no longer
//! names (a rewrite renamed over it, logrotate `create`) keeps being followed through its open
//! descriptor, its late bytes extending its own generation, until it has been quiet for
//! [`GRACE_INTERVALS`] intervals (or the new file has started to grow while the old one is
//! quiet, or persist is stopping); only then does the new file's generation start.
//! Numbering, resuming and starting generations are the shared [`Lifecycle`]'s.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::chain::GenId;
use crate::error::{Error, Exit};
use crate::layout::{self, Mode};
use crate::{signal, timestamp};

use super::clock::ClockCheck;
use super::generation::{Lifecycle, Reason, ResumePlan};
use super::session::Session;
use super::shipped::{FileId, Shipped, open_followed};
use super::{Follower, TickError};

/// How many intervals a replaced file must stay quiet before persist stops following it.
pub const GRACE_INTERVALS: u32 = 5;

/// What one look at a followed file calls for. Pure: see [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing new (or a replaced file still within its grace period).
    Idle,
    /// Upload `[start, end)` of the open file; `detached`: the path no longer names it.
    Append {
        start: u64,
        end: u64,
        detached: bool,
    },
    /// The clock is just behind the last point's time: wait this long, then look again.
    Wait(Duration),
    /// End the generation; start a new one with the whole open file.
    Restart(Reason),
    /// The path names another file, and the open one is fully uploaded and done: switch.
    Replaced,
}

/// What one tick saw of the followed file.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Whether the generation holds the file's first object yet.
    pub in_bucket: bool,
    /// Bytes of the open file the bucket holds.
    pub uploaded: u64,
    /// The open file's length now.
    pub open_len: u64,
    pub open_id: FileId,
    /// What the path names now, if anything.
    pub path_id: Option<FileId>,
    /// What the bytes uploaded no longer match, if the check found a difference.
    pub mismatch: Option<String>,
    /// The clock against the last point's time.
    pub clock: ClockCheck,
    /// How long the open file has not grown, counted from when the path was first seen naming
    /// another file at the earliest.
    pub quiet: Duration,
    /// Whether the file the path names now has grown since it was first seen there: the
    /// writer has moved on to it.
    pub successor_grew: bool,
}

/// Decides the next step for a followed file. A shrink or a change of uploaded bytes restarts
/// the generation; the open file's remaining bytes go first, so a rewrite never loses its tail;
/// a replaced file is left only once it is done: quiet for `grace`, or quiet for one
/// `interval` while its successor grows.
pub fn decide(seen: &Seen, interval: Duration, grace: Duration) -> Step {
    let attached = seen.path_id == Some(seen.open_id);
    if seen.open_len < seen.uploaded {
        return Step::Restart(Reason::Truncated {
            part: layout::FILE_PART.into(),
            from: seen.uploaded,
            to: seen.open_len,
        });
    }
    if let Some(what) = &seen.mismatch {
        return Step::Restart(Reason::Changed {
            part: layout::FILE_PART.into(),
            what: what.clone(),
        });
    }
    if !seen.in_bucket || seen.open_len > seen.uploaded {
        let append = Step::Append {
            start: seen.uploaded,
            end: seen.open_len,
            detached: !attached,
        };
        return match (attached, seen.clock) {
            (false, _) | (true, ClockCheck::Ok) => append,
            (true, ClockCheck::Wait(d)) => Step::Wait(d),
            (true, ClockCheck::SteppedBack(_)) => Step::Restart(Reason::ClockBack),
        };
    }
    let done = seen.quiet >= grace || (seen.successor_grew && seen.quiet >= interval);
    if seen.path_id.is_some() && !attached && done {
        Step::Replaced
    } else {
        Step::Idle
    }
}

/// A file being followed.
struct Tracked {
    shipped: Shipped,
    generation: GenId,
    /// When the open file last changed length.
    last_growth: Instant,
    last_len: u64,
    /// The file the path names instead, its length and when it was first seen there.
    successor: Option<(FileId, u64, Instant)>,
}

/// Follows one append-only file.
pub struct FileFollower {
    path: PathBuf,
    interval: Duration,
    life: Lifecycle,
    tracked: Option<Tracked>,
    /// A chain found in the bucket at start, to continue if the file still matches it.
    resume: Option<ResumePlan>,
    said_waiting: bool,
    said_vanished: bool,
}

impl FileFollower {
    pub fn new(
        path: PathBuf,
        interval: Duration,
        next_number: u64,
        resume: Option<ResumePlan>,
        said_waiting: bool,
    ) -> FileFollower {
        FileFollower {
            life: Lifecycle::new(Mode::File, &path, next_number),
            path,
            interval,
            tracked: None,
            resume,
            said_waiting,
            said_vanished: false,
        }
    }

    fn stat(&self, file: &File) -> std::result::Result<std::fs::Metadata, TickError> {
        file.metadata()
            .map_err(|e| Error::io("cannot stat", &self.path, &e).into())
    }

    /// Opens the path if it exists. Continues the bucket's chain when the file still starts
    /// with exactly its bytes, otherwise starts a new generation (and says why).
    fn open(&mut self, s: &mut Session) -> std::result::Result<bool, TickError> {
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
        if let Some(plan) = self.resume.take() {
            let mut file = Some(file);
            match self
                .life
                .resume(&plan, |_| Ok(file.take().map(|f| (f, id))))?
            {
                Ok(mut held) => {
                    if let Some(shipped) = held.remove(layout::FILE_PART) {
                        self.track(shipped, plan.generation);
                        return Ok(true);
                    }
                }
                Err(why) => log::info!("{why}: starting a new generation"),
            }
        }
        let Some((file, meta)) = open_followed(&self.path)? else {
            return Ok(false);
        };
        self.start_generation(s, Shipped::new(file, FileId::of(&meta)), &Reason::New)?;
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

    /// Starts a new generation whose first object is the file's whole content.
    fn start_generation(
        &mut self,
        s: &mut Session,
        mut shipped: Shipped,
        reason: &Reason,
    ) -> std::result::Result<(), TickError> {
        let seen = timestamp::now_ms();
        let len = self.stat(&shipped.file)?.len();
        let generation = self.life.start(s, seen, [&mut shipped], reason, len);
        // Tracked first, with nothing uploaded: a failed upload is retried by the next tick as
        // the generation's first object.
        self.track(shipped, generation);
        self.upload(s, len, Some(seen))
    }

    /// Uploads the open file up to `len`, labelled with the time it was seen at, or (`None`)
    /// as a file the path no longer names.
    fn upload(
        &mut self,
        s: &mut Session,
        len: u64,
        seen: Option<u64>,
    ) -> std::result::Result<(), TickError> {
        let Some(t) = self.tracked.as_mut() else {
            return Ok(());
        };
        if !t.shipped.behind(len) {
            return Ok(());
        }
        let part = layout::FILE_PART;
        match seen {
            Some(ms) => {
                let time = s.clock.at_least(ms);
                t.shipped.ship(s, t.generation, part, len, (time, true))?
            }
            None => t.shipped.ship_detached(s, t.generation, part, len, None)?,
        }
        Ok(())
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
    fn tick(&mut self, s: &mut Session) -> std::result::Result<(), TickError> {
        if self.tracked.is_none() && !self.open(s)? {
            return Ok(());
        }
        let mut verified = false;
        // One upload per file per tick: bytes appended while it was sent wait for the next
        // tick (within the interval, as any append), instead of a second, small PUT at once,
        // which doubled the requests under steady writes. At a stop, everything goes now.
        let mut appended_to: Option<FileId> = None;
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
            // Once per tick: the check reads a fixed amount (see `verify`).
            let mut mismatch = None;
            if !verified && t.shipped.in_bucket() && open_len >= t.shipped.uploaded() {
                verified = true;
                let check = t
                    .shipped
                    .verify()
                    .map_err(|e| Error::io("cannot read", &self.path, &e))?;
                mismatch = check.err().map(|m| m.0);
            }
            let successor_grew = match (path, &mut t.successor) {
                (Some((id, _)), s) if id == t.shipped.id => {
                    *s = None;
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
            let seen_now = Seen {
                in_bucket: t.shipped.in_bucket(),
                uploaded: t.shipped.uploaded(),
                open_len,
                open_id: t.shipped.id,
                path_id: path.map(|(id, _)| id),
                mismatch,
                clock: s.clock.check(seen),
                quiet: now.duration_since(since),
                successor_grew,
            };
            match decide(&seen_now, self.interval, grace) {
                Step::Idle => return Ok(()),
                Step::Append { end, detached, .. } => {
                    if appended_to == Some(seen_now.open_id) && !signal::stop_requested() {
                        return Ok(());
                    }
                    appended_to = Some(seen_now.open_id);
                    self.upload(s, end, (!detached).then_some(seen))?
                }
                Step::Wait(d) => std::thread::sleep(d),
                Step::Restart(reason) => {
                    if let Some(old) = self.tracked.take() {
                        self.start_generation(s, old.shipped, &reason)?;
                    }
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
                    let shipped = Shipped::new(file, FileId::of(&meta));
                    self.start_generation(s, shipped, &Reason::Replaced)?;
                }
            }
        }
    }
}

impl Follower for FileFollower {
    fn tick(&mut self, s: &mut Session) -> std::result::Result<(), TickError> {
        FileFollower::tick(self, s)
    }

    fn pending(&self) -> u64 {
        self.tracked.as_ref().map_or(0, |t| t.shipped.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };
    const I: Duration = Duration::from_secs(1);
    const G: Duration = Duration::from_secs(5);

    fn seen(uploaded: u64, open_len: u64, path_id: Option<FileId>) -> Seen {
        Seen {
            in_bucket: true,
            uploaded,
            open_len,
            open_id: A,
            path_id,
            mismatch: None,
            clock: ClockCheck::Ok,
            quiet: Duration::ZERO,
            successor_grew: false,
        }
    }

    fn append(start: u64, end: u64, detached: bool) -> Step {
        Step::Append {
            start,
            end,
            detached,
        }
    }

    #[test]
    fn decides_what_to_upload() {
        assert_eq!(decide(&seen(10, 10, Some(A)), I, G), Step::Idle);
        assert_eq!(decide(&seen(10, 25, Some(A)), I, G), append(10, 25, false));
        assert!(matches!(
            decide(&seen(10, 4, Some(A)), I, G),
            Step::Restart(Reason::Truncated {
                from: 10,
                to: 4,
                ..
            })
        ));
        // The old file's tail goes first, labelled as a file the path no longer names.
        assert_eq!(decide(&seen(10, 25, Some(B)), I, G), append(10, 25, true));
        // A vanished path: keep following the open file.
        assert_eq!(decide(&seen(25, 30, None), I, G), append(25, 30, true));
        assert_eq!(decide(&seen(30, 30, None), I, G), Step::Idle);
        // A generation whose first object failed to upload: retried, even if empty.
        let mut s = seen(0, 0, Some(A));
        s.in_bucket = false;
        assert_eq!(decide(&s, I, G), append(0, 0, false));
    }

    #[test]
    fn changed_bytes_and_a_clock_set_back_restart_the_generation() {
        let mut s = seen(10, 25, Some(A));
        s.mismatch = Some("bytes 0..64 differ".into());
        assert!(matches!(
            decide(&s, I, G),
            Step::Restart(Reason::Changed { .. })
        ));
        let mut s = seen(10, 25, Some(A));
        s.clock = ClockCheck::Wait(Duration::from_millis(3));
        assert_eq!(decide(&s, I, G), Step::Wait(Duration::from_millis(3)));
        s.clock = ClockCheck::SteppedBack(60_000);
        assert_eq!(decide(&s, I, G), Step::Restart(Reason::ClockBack));
        // Nothing to label: the clock does not matter.
        let mut s = seen(25, 25, Some(A));
        s.clock = ClockCheck::SteppedBack(60_000);
        assert_eq!(decide(&s, I, G), Step::Idle);
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
}
