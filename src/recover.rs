//! `petrify recover`: from one listing of the prefix, choose a recovery point,
//! plan its chain, download and verify it into a temporary file beside the target, and move it
//! into place only when every byte is proven. The target is either the complete recovery point
//! or untouched.
//!
//! Submodules: `target` (the path, its temporary twin, the move into place), `part` (one part's
//! chain into one file), `fetch` (parallel, in-order, verified downloads, also `verify
//! --deep`'s), `aofdir` (a Redis folder), `progress` (the line on a terminal). Recover uses
//! more than one thread: `fetch`'s pool of requests in flight (`--parallel`).

use std::path::PathBuf;

use crate::bucket::{self, Place};
use crate::chain::{self, ChooseError, Generation, RecoveryPoint};
use crate::error::{Error, Exit, Hint, Result};
use crate::layout::{self, Mode};
use crate::s3::ObjectStore;
use crate::timestamp::{rfc3339_ms, unix};

mod aofdir;
pub mod fetch;
mod part;
mod progress;
mod target;
#[cfg(test)]
mod tests;

use fetch::FetchError;
use progress::Progress;

/// What a step of a recovery returns: an object gone since the listing is told apart.
type Fetched<T> = std::result::Result<T, FetchError>;
use target::{Target, TempPath};

/// What `petrify recover` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverRequest {
    pub place: Place,
    pub file: PathBuf,
    /// The newest point at or before this time (Unix ms), or the newest of all.
    pub at_ms: Option<u64>,
    /// Replace the target if it exists.
    pub force: bool,
    /// Restore at boot: do nothing if the target exists, and nothing (successfully) if the
    /// prefix holds no recovery point yet (a first boot).
    pub if_missing: bool,
    /// Requests in flight at once.
    pub parallel: usize,
    /// `--identity`: the age identity file that opens encrypted objects.
    pub identity: Option<std::path::PathBuf>,
}

/// The point `--at-timestamp` (or its absence) chooses, or why there is none (for recover,
/// and for verify and status, which must choose as recover does).
pub fn choose_point(
    points: &[RecoveryPoint],
    at_ms: Option<u64>,
    place: &Place,
) -> Result<RecoveryPoint> {
    chain::choose(points, at_ms).map_err(|e| match e {
        ChooseError::Empty => Error::new(
            Exit::NoInput,
            format!("no recovery point under {}", place.describe()),
        )
        .with_hint(Hint::CheckBucketAndPrefix),
        ChooseError::BeforeFirst { earliest } => Error::new(
            Exit::NoInput,
            format!(
                "the time asked for is before the earliest recovery point, {} ({})",
                rfc3339_ms(earliest),
                unix(earliest)
            ),
        )
        .with_hint(Hint::GiveLaterTime),
    })
}

/// `petrify recover`.
pub fn recover(args: &RecoverRequest, store: &dyn ObjectStore) -> Result<()> {
    if args.if_missing && std::fs::symlink_metadata(&args.file).is_ok() {
        log::info!(
            "{} exists: nothing to recover (--if-missing never replaces anything)",
            args.file.display()
        );
        return Ok(());
    }
    let target = Target::check(&args.file, args.force)?;
    let identities = args
        .identity
        .as_deref()
        .map(crate::seal::Identities::load)
        .transpose()?;
    let root = layout::root(&args.place.prefix);
    // A persist compacting the generation can replace objects between our listing and our
    // reads: the points stay, in the merged object that replaced them. List again and plan
    // again, a few times; anything else that is missing is damage.
    let mut attempt = 1;
    loop {
        match recover_once(args, store, &root, (&target, identities.as_ref())) {
            Err(FetchError::Gone(e)) if attempt < REPLANS => {
                log::warn!("{}; listing again (attempt {})", e.message, attempt + 1);
                attempt += 1;
            }
            done => return done.map_err(Error::from),
        }
    }
}

fn damaged_index(k: &layout::ObjectKey) -> Error {
    Error::new(
        Exit::Data,
        format!(
            "the index of merged object {k} is damaged: the point asked for may be one of the \
             points it holds, which cannot be located; `petrify verify` names the damage and \
             `petrify list` the points that can be recovered"
        ),
    )
}

/// How many times recover lists and plans again when an object vanished under it.
const REPLANS: u32 = 4;

/// One listing, one plan, one download: [`FetchError::Gone`] when an object vanished under it.
fn recover_once(
    args: &RecoverRequest,
    store: &dyn ObjectStore,
    root: &str,
    (target, identities): (&Target, Option<&crate::seal::Identities>),
) -> Fetched<()> {
    let found = bucket::survey_to_recover(store, root, args.at_ms)?;
    let points = chain::recovery_points(&found.generations);
    if args.if_missing && points.is_empty() {
        // Said at WARN: on a first boot this is expected; on any other, a wrong --prefix would
        // start the datastore empty, and the operator must be able to see why.
        log::warn!(
            "no recovery point under {} yet: nothing recovered, {} not created (expected on a \
             first boot; if this host had data, check the bucket and prefix)",
            args.place.describe(),
            args.file.display()
        );
        return Ok(());
    }
    // A merged object whose index is damaged may hold the point asked for, or points between
    // it and the one that would be chosen: never hand an older state back as if it were it.
    let unreadable = |p: Option<&chain::RecoveryPoint>| {
        found.damaged.iter().map(|(k, _)| k).find(|k| {
            p.is_none_or(|p| {
                (k.generation, k.mode) == (p.generation.number, p.generation.mode)
                    && k.time_ms > p.time_ms
            })
        })
    };
    let point = match choose_point(&points, args.at_ms, &args.place) {
        Ok(p) => p,
        Err(e) => match unreadable(None) {
            Some(k) => return Err(damaged_index(k).into()),
            None => return Err(e.into()),
        },
    };
    if let Some(k) = unreadable(Some(&point)) {
        return Err(damaged_index(k).into());
    }
    let Some(generation) = found.generations.iter().find(|g| g.id == point.generation) else {
        return Err(Error::new(Exit::Software, "internal: chosen generation vanished").into());
    };
    log::info!(
        "recovering {} as of {} (generation {}, {} bytes)",
        args.file.display(),
        rfc3339_ms(point.time_ms),
        point.generation.number,
        point.bytes
    );
    let progress = Progress::new(point.bytes);
    let fetching = fetch::Fetching {
        parallel: args.parallel,
        progress: &progress,
        identities,
    };
    let done = match generation.id.mode {
        Mode::File => recover_file(store, root, generation, &point, target, fetching),
        Mode::AofDir => aofdir::recover_dir(store, root, generation, &point, target, fetching),
    };
    progress.finish();
    done
}

fn recover_file(
    store: &dyn ObjectStore,
    root: &str,
    g: &Generation,
    point: &RecoveryPoint,
    target: &Target,
    fetching: fetch::Fetching<'_>,
) -> Fetched<()> {
    if target.is_dir {
        return Err(Error::new(
            Exit::CantCreate,
            format!(
                "{} is a folder, but this recovery point is a single file: give a file path",
                target.path.display()
            ),
        )
        .into());
    }
    let tmp = TempPath::new(&target.path, false)?;
    let restored = part::restore_part(
        store,
        root,
        g,
        (layout::FILE_PART, point.time_ms),
        &tmp.path,
        fetching,
    )?;
    target.install(tmp)?;
    fetching.progress.finish();
    log::info!(
        "recovered {} ({} bytes from {} object(s))",
        target.path.display(),
        restored.bytes,
        restored.objects
    );
    Ok(())
}
