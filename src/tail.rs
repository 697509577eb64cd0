//! `petrify persist`: the watched side (Litestream's "database"; the bucket is the replica).
//! Follows an append-only file or a Redis 7 folder, decides what to upload next with pure
//! functions over what it observed, and ships each new byte range as one object.
//! One loop does the work: poll, upload, sleep. While an object streams to S3, one scoped
//! helper thread computes the CRC-32 of the next range (the header the PUT needs before its
//! body), so the wire is never idle waiting on a large object's CRC (`upload.rs` says why).
//!
//! Submodules: `file` and `aofdir` (the two followers, each with its pure `decide`),
//! `generation` (the lifecycle they share: numbering, resuming, starting and finishing a
//! generation), `shipped` (an open file's progress into a generation), `proof` (proof that
//! uploaded bytes are still the file's), `session` (what a run carries from look to look),
//! `upload` (ranges into objects, under the writer lease), `held` (the objects a
//! chain holds, the keys merges replaced), `compaction` (merging, with `compaction/body.rs`),
//! `source` (reading the followed file), `clock` (point times), `report` (metrics and the
//! log), `notify` (systemd's notify protocol).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bucket::{self, Place};
use crate::error::{Error, Exit, Result};
use crate::layout::Mode;
use crate::s3::{Backoff, ObjectStore, S3Error};
use crate::{lease, signal, timestamp};

pub mod aofdir;
pub mod clock;
pub mod compaction;
pub mod file;
pub mod generation;
pub mod held;
mod listed;
mod notify;
pub mod proof;
mod report;
pub mod session;
pub mod shipped;
mod source;
pub mod upload;

#[cfg(test)]
mod tests;

use clock::{CLOCK_STEP_TOLERANCE_MS, Clock};
use session::Session;
use shipped::open_followed;
use upload::{UploadError, Uploader};

/// After a stop is requested, how long persist keeps trying to upload what is pending.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What `petrify persist` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistRequest {
    pub place: Place,
    /// The file or Redis folder to follow.
    pub file: PathBuf,
    pub interval: Duration,
    /// The largest object to upload; larger ranges are split.
    pub max_object: u64,
    /// `--retain`: delete what no point of this window (and the one before it) needs.
    pub retain: Option<Duration>,
    /// `--metrics-file`: Prometheus text, rewritten after each poll.
    pub metrics_file: Option<PathBuf>,
    /// `--heartbeat-url`: fetched at most once a minute while polls succeed.
    pub heartbeat_url: Option<String>,
    /// How objects are stored (`--compress`, `--encrypt-to`).
    pub sealer: crate::seal::Sealer,
    /// `--compaction`: `None` when off.
    pub compaction: Option<crate::compaction::Spans>,
}

/// `persist --retain`: the retention, applied now and then from the polling loop (persist holds
/// the writer lease, so no other process prunes its prefix). At most once per
/// [`Retention::every`] (a tenth of the window), and only after uploads since the last time:
/// an idle persist costs no request for it.
struct Retention {
    keep: Duration,
    every: Duration,
    next_at: Instant,
    /// `up.objects` when it last ran; `None` before the first time.
    after_objects: Option<u64>,
    where_: String,
}

impl Retention {
    fn new(keep: Duration, interval: Duration, where_: String) -> Retention {
        Retention {
            keep,
            // Each run lists the prefix (a page per 1000 objects): at a tenth of the window,
            // that is about 36 listings an hour at one object a second, whatever the window.
            every: (keep / 10)
                .max(interval)
                .min(Duration::from_secs(7 * 86_400)),
            next_at: Instant::now(),
            after_objects: None,
            where_,
        }
    }

    /// Applies the retention if it is due. A failure is said at WARN and tried again next
    /// time: retention never stops the backup.
    fn maybe_apply(&mut self, s: &mut Session) -> Result<()> {
        if Instant::now() < self.next_at || self.after_objects == Some(s.up.objects) {
            return Ok(());
        }
        // A key that may not delete (said once already): retention is a prune's, beside it.
        if s.doomed.refused() {
            return Ok(());
        }
        // Deleting history: only while this process is surely the writer.
        if !s.up.sure_of_lease()? {
            return Ok(());
        }
        let cutoff = timestamp::now_ms().saturating_sub(self.keep.as_millis() as u64);
        if let Err(e) = crate::prune::apply(s.up.store, &s.up.root, cutoff, &self.where_) {
            log::warn!("retention failed, tried again later: {}", e.message);
        }
        self.after_objects = Some(s.up.objects);
        self.next_at = Instant::now() + self.every;
        Ok(())
    }
}

/// Why a tick did not finish.
#[derive(Debug)]
pub enum TickError {
    /// S3 failed: retried with backoff, and the retry carries what was appended meanwhile.
    S3(S3Error),
    /// Reading the followed file failed during an upload (it shrank or changed while being
    /// read): retried by looking at the file again, which then decides anew.
    Read(io::Error),
    /// Persist cannot go on (a path it cannot follow, a local error that will not pass).
    Fatal(Error),
}

impl From<Error> for TickError {
    fn from(e: Error) -> Self {
        TickError::Fatal(e)
    }
}

impl From<UploadError> for TickError {
    fn from(e: UploadError) -> Self {
        match e {
            // The store refuses what the options ask every write to carry: no retry mends
            // that, and a persist retrying it for ever would look alive while backing up
            // nothing.
            UploadError::S3(e) if e.refuses_server_side() => TickError::Fatal(Error::new(
                Exit::Config,
                format!(
                    "the store refuses the uploads ({e}): check --storage-class, --sse and \
                     --sse-kms-key-id against what it supports (petrify doctor tries them)"
                ),
            )),
            UploadError::S3(e) => TickError::S3(e),
            UploadError::Read(e) => TickError::Read(e),
            UploadError::LeaseLost(e) => TickError::Fatal(e),
        }
    }
}

/// Runs `petrify persist` until SIGTERM, SIGINT or SIGHUP.
pub fn persist(args: &PersistRequest, store: &dyn ObjectStore) -> Result<()> {
    // First of all, so that a stop requested while starting up is a clean stop too.
    signal::install();
    let root = args.place.root();
    preflight(&args.file)?;
    // The bucket must be there before anything is written: some stores (s3s-fs) make one at
    // the first PUT. One short listing, which also says at once when the credentials or the
    // region are wrong.
    store
        .list_folders(&root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let lease = lease::Lease::mine(&args.file);
    lease::acquire(store, &root, &lease, &args.place.describe())?;
    let mut holding = lease::Holding::new(&root, &lease, &args.place.describe());
    // What the bucket holds, as of now: read after the lease is ours, so that no writer
    // can have added to it since.
    let result = match listed::wait_listed(store, &root, &lease.id) {
        Ok(l) if l.stopped => {
            log::info!("stopped by {} while starting", signal::stop_signal_name());
            Ok(())
        }
        Ok(l) => {
            let mut doomed = held::Doomed::default();
            if let Some(why) = l.cannot_delete {
                doomed.refuse(&why);
                holding.say_cannot_delete(store);
            }
            bucket::survey(store, &root)
                .and_then(|found| follow(args, store, root.clone(), found, (holding, doomed)))
        }
        Err(e) => Err(e),
    };
    lease::release(store, &root, &lease);
    result
}

/// Refuses, before anything is written to the bucket, a path persist could never follow: an
/// unreadable file, a FIFO or device, or a folder that is not a Redis AOF folder. A missing
/// path is fine (waited for).
fn preflight(path: &Path) -> Result<()> {
    match open_followed(path)? {
        None => Ok(()),
        Some((_, m)) if m.is_dir() => aofdir::refuse_foreign_folder(path),
        Some(_) => Ok(()),
    }
}

/// Waits for the path, then follows it as a file or a Redis folder until stopped.
fn follow(
    args: &PersistRequest,
    store: &dyn ObjectStore,
    root: String,
    found: bucket::Bucketed,
    (lease, doomed): (lease::Holding, held::Doomed),
) -> Result<()> {
    // Whether PATH is a file or a Redis folder is only known once it exists.
    let mut said_waiting = false;
    let mut notify = notify::Notifier::from_env();
    let is_dir = loop {
        match std::fs::metadata(&args.file) {
            Ok(m) => break m.is_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !said_waiting {
                    log::info!("waiting for {} to appear", args.file.display());
                    said_waiting = true;
                }
                // Waiting is persist working as asked: ready, and alive.
                if let Some(n) = notify.as_mut() {
                    n.healthy(&format!("waiting for {} to appear", args.file.display()));
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
    let mode = if is_dir { Mode::AofDir } else { Mode::File };
    // The newest generation is continued only if this host's clock is not behind its times:
    // its points must stay in time order. Otherwise (a clock that was ahead, then corrected)
    // a new generation starts on the true clock.
    let newest = found.generations.iter().max_by_key(|g| g.id);
    let newest_ms = newest.map_or(0, |g| g.last_time());
    let behind_ms = newest_ms.saturating_sub(timestamp::now_ms());
    let resume = if behind_ms >= CLOCK_STEP_TOLERANCE_MS {
        log::warn!(
            "the newest recovery point in the bucket is {:.3}s ahead of this host's clock: not \
             resuming generation {}; a new one starts on the true clock",
            behind_ms as f64 / 1000.0,
            newest.map_or(0, |g| g.id.number)
        );
        None
    } else {
        generation::resume_plan(&found.generations, mode)
            .inspect_err(|why| log::info!("not resuming: {why}"))
            .ok()
    };
    let mut s = Session {
        up: Uploader {
            store,
            root,
            max_object: args.max_object,
            objects: 0,
            bytes: 0,
            lease: Some(lease),
            sealer: args.sealer.clone(),
        },
        // Times continue the resumed generation's; a new generation needs no more than the
        // true clock (generations are ordered by number).
        clock: Clock::after(resume.as_ref().map_or(0, |p| p.last_time_ms)),
        compaction: args.compaction.clone(),
        doomed,
    };
    // Objects a compaction replaced but had not deleted when persist stopped.
    if let Some(p) = resume.as_ref()
        && let Some(g) = found.generations.iter().find(|g| g.id == p.generation)
    {
        s.doomed.add(g.hidden.iter().map(|o| o.key(&s.up.root)));
    }
    let mut retention = args
        .retain
        .map(|keep| Retention::new(keep, args.interval, args.place.describe()));
    // Bytes waiting at the start were written after the newest point persist resumes from.
    let resumed_ms = resume.as_ref().map(|p| p.last_time_ms);
    let mut report = report::Report::new(
        args.metrics_file.clone(),
        args.heartbeat_url.clone(),
        resumed_ms.unwrap_or_else(timestamp::now_ms),
    );
    let mut follower: Box<dyn Follower> = match is_dir {
        true => Box::new(aofdir::AofDirFollower::new(
            &args.file,
            resume,
            found.next_number,
        )?),
        false => Box::new(file::FileFollower::new(
            args.file.clone(),
            args.interval,
            found.next_number,
            resume,
            said_waiting,
        )),
    };
    run_loop(
        args.interval,
        &mut s,
        follower.as_mut(),
        retention.as_mut(),
        notify,
        &mut report,
    )
}

/// The database being watched, as the polling loop sees it: a single file, or a Redis folder.
pub trait Follower {
    /// One look at the source, uploading everything new. An `Err(S3)` leaves the state as it
    /// was before the failed upload, so the next tick retries with whatever is there then.
    fn tick(&mut self, s: &mut Session) -> std::result::Result<(), TickError>;
    /// Bytes on disk not uploaded yet.
    fn pending(&self) -> u64;
}

/// Where the polling loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The last poll succeeded (or none ran yet).
    Following,
    /// Polls fail since `since`: retried with capped backoff.
    Failing { since: Instant },
    /// A stop was asked for at `at`: what is pending goes up within [`STOP_GRACE`]. `failing`:
    /// since when polls fail, if they do.
    Stopping {
        at: Instant,
        failing: Option<Instant>,
    },
}

impl Phase {
    fn failing_since(self) -> Option<Instant> {
        match self {
            Phase::Following => None,
            Phase::Failing { since } => Some(since),
            Phase::Stopping { failing, .. } => failing,
        }
    }
}

/// The polling loop shared by every follower: tick each interval; after an S3 failure, retry
/// with capped backoff (re-observing, so the retry carries everything appended meanwhile); on
/// a stop request, finish what is pending within [`STOP_GRACE`]. Between successful ticks,
/// apply the retention when it is due.
fn run_loop(
    interval: Duration,
    s: &mut Session,
    follower: &mut dyn Follower,
    mut retention: Option<&mut Retention>,
    mut notify: Option<notify::Notifier>,
    report: &mut report::Report,
) -> Result<()> {
    // Capped at one interval: S3 coming back is noticed within an interval, and a failing
    // request per interval is no load (no busy loop: the first retries are 50 ms, 100 ms, ...).
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        interval.max(Duration::from_millis(50)),
    );
    let mut phase = Phase::Following;
    // For STATUS=: when an upload last completed, and the count then.
    let (mut last_upload_ms, mut objects_then) = (None, s.up.objects);
    loop {
        let started = Instant::now();
        if !matches!(phase, Phase::Stopping { .. }) && signal::stop_requested() {
            log::info!(
                "stop requested ({}): uploading what is pending",
                signal::stop_signal_name()
            );
            phase = Phase::Stopping {
                at: started,
                failing: phase.failing_since(),
            };
            if let Some(n) = notify.as_mut() {
                n.stopping();
            }
        }
        let ticked = follower.tick(s);
        let read_error = matches!(ticked, Err(TickError::Read(_)));
        let failure = match ticked {
            Ok(()) => None,
            Err(TickError::Fatal(e)) => return Err(e),
            Err(TickError::S3(e)) => Some(format!("upload failed ({e})")),
            Err(TickError::Read(e)) => Some(format!(
                "reading the file failed ({e}); looking at it again"
            )),
        };
        report.after_poll(
            &report::Seen {
                ok: failure.is_none(),
                read_error,
                objects: s.up.objects,
                bytes: s.up.bytes,
                pending: follower.pending(),
            },
            s.up.store,
        );
        let next = match (phase, failure) {
            (Phase::Stopping { failing, .. }, None) => {
                if let Some(since) = failing {
                    log::info!(
                        "S3 is reachable again after {:.1}s; caught up",
                        since.elapsed().as_secs_f64()
                    );
                }
                s.delete_replaced(true)?;
                log::info!(
                    "stopped; {} object(s), {} byte(s) uploaded this run",
                    s.up.objects,
                    s.up.bytes
                );
                return Ok(());
            }
            (Phase::Stopping { at, .. }, Some(e)) if at.elapsed() >= STOP_GRACE => {
                return Err(Error::new(
                    Exit::TempFail,
                    format!(
                        "stopped with {} byte(s) not uploaded ({e}); they are still on disk \
                         and will be uploaded when persist starts again",
                        follower.pending()
                    ),
                ));
            }
            (Phase::Following | Phase::Failing { .. }, None) => {
                if let Phase::Failing { since } = phase {
                    log::info!(
                        "S3 is reachable again after {:.1}s; caught up",
                        since.elapsed().as_secs_f64()
                    );
                }
                phase = Phase::Following;
                backoff.reset();
                s.delete_replaced(false)?;
                if let Some(r) = retention.as_deref_mut() {
                    r.maybe_apply(s)?;
                }
                if s.up.objects != objects_then {
                    (last_upload_ms, objects_then) = (Some(timestamp::now_ms()), s.up.objects);
                }
                if let Some(n) = notify.as_mut() {
                    n.healthy(&format!(
                        "following; last upload {}; {} byte(s) waiting",
                        last_upload_ms.map_or("none this run".into(), timestamp::rfc3339_ms),
                        follower.pending()
                    ));
                }
                started + interval
            }
            (_, Some(e)) => {
                let since = phase.failing_since().unwrap_or(started);
                phase = match phase {
                    Phase::Stopping { at, .. } => Phase::Stopping {
                        at,
                        failing: Some(since),
                    },
                    _ => Phase::Failing { since },
                };
                let delay = backoff.next_delay();
                let n = backoff.failures();
                // The first failure, then every tenth, so a long outage does not flood the log.
                if n == 1 || n.is_multiple_of(10) {
                    log::error!(
                        "{e}; {} byte(s) waiting on disk, retrying (failure {n})",
                        follower.pending()
                    );
                }
                if let Some(n) = notify.as_mut() {
                    n.failing(&format!(
                        "failing for {}s: {e}; {} byte(s) waiting",
                        since.elapsed().as_secs(),
                        follower.pending()
                    ));
                }
                Instant::now() + delay
            }
        };
        match phase {
            Phase::Stopping { .. } => {
                std::thread::sleep(next.saturating_duration_since(Instant::now()))
            }
            Phase::Following | Phase::Failing { .. } => signal::sleep_until(next),
        }
    }
}
