//! `petrify recover` and `petrify list`: from one listing of the prefix, choose a recovery point,
//! plan its chain, download and verify it into a temporary file beside the target, and move it
//! into place only when every byte is proven. The target is either the complete recovery point
//! or untouched.
//!
//! Submodules: `target` (the path, its temporary twin, the move into place), `part` (one part's
//! chain into one file), `fetch` (parallel, in-order, verified downloads), `aofdir` (a Redis
//! folder).

use std::io::{self, Write};
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
mod target;

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
    /// Requests in flight at once.
    pub parallel: usize,
}

/// How many broken points `list` names one by one before summing up the rest.
const BROKEN_SHOWN: usize = 10;

/// `petrify list`: one line per recovery point that can be recovered, in order. Points whose
/// chain is broken (an object deleted by a lifecycle rule or by hand) are not listed: they are
/// named on stderr, and the command fails with status 65 after listing the good ones. Decided
/// from the keys of the one listing: no extra request.
pub fn list(place: &Place, store: &dyn ObjectStore, out: &mut dyn Write) -> Result<()> {
    let root = layout::root(&place.prefix);
    let found = bucket::survey(store, &root)?;
    let (points, broken) = chain::check_points(
        &found.generations,
        chain::recovery_points(&found.generations),
    );
    if points.is_empty() && broken.is_empty() {
        log::warn!("no recovery points under s3://{}/{root}", place.bucket);
    }
    let write = |out: &mut dyn Write| -> io::Result<()> {
        for p in &points {
            writeln!(
                out,
                "{}  {}  {}  {}",
                rfc3339_ms(p.time_ms),
                unix(p.time_ms),
                p.generation.number,
                p.bytes
            )?;
        }
        out.flush()
    };
    match write(out) {
        Ok(()) => {}
        // `petrify list | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::new(Exit::Io, format!("cannot write the list: {e}"))),
    }
    if broken.is_empty() {
        return Ok(());
    }
    for b in broken.iter().take(BROKEN_SHOWN) {
        eprintln!(
            "petrify: point {} ({}, generation {}) cannot be recovered: {}",
            rfc3339_ms(b.point.time_ms),
            unix(b.point.time_ms),
            b.point.generation.number,
            b.why
        );
    }
    if broken.len() > BROKEN_SHOWN {
        eprintln!(
            "petrify: ... and {} more point(s) that cannot be recovered",
            broken.len() - BROKEN_SHOWN
        );
    }
    Err(Error::new(
        Exit::Data,
        format!(
            "{} of {} recovery point(s) under s3://{}/{root} cannot be recovered: objects of \
             their chains are missing from the bucket (a lifecycle rule, or a deletion by hand); \
             the {} listed can",
            broken.len(),
            broken.len() + points.len(),
            place.bucket,
            points.len()
        ),
    ))
}

/// `petrify recover`.
pub fn recover(args: &RecoverRequest, store: &dyn ObjectStore) -> Result<()> {
    let target = Target::check(&args.file, args.force)?;
    let root = layout::root(&args.place.prefix);
    let found = bucket::survey(store, &root)?;
    let points = chain::recovery_points(&found.generations);
    let where_ = format!("s3://{}/{root}", args.place.bucket);
    let point = chain::choose(&points, args.at_ms).map_err(|e| match e {
        ChooseError::Empty => {
            Error::new(Exit::NoInput, format!("no recovery point under {where_}"))
                .with_hint(Hint::CheckBucketAndPrefix)
        }
        ChooseError::BeforeFirst { earliest } => Error::new(
            Exit::NoInput,
            format!(
                "the time asked for is before the earliest recovery point, {} ({})",
                rfc3339_ms(earliest),
                unix(earliest)
            ),
        )
        .with_hint(Hint::GiveLaterTime),
    })?;
    let Some(generation) = found.generations.iter().find(|g| g.id == point.generation) else {
        return Err(Error::new(
            Exit::Software,
            "internal: chosen generation vanished",
        ));
    };
    log::info!(
        "recovering {} as of {} (generation {}, {} bytes)",
        args.file.display(),
        rfc3339_ms(point.time_ms),
        point.generation.number,
        point.bytes
    );
    match generation.id.mode {
        Mode::File => recover_file(store, &root, generation, &point, &target, args.parallel),
        Mode::AofDir => {
            aofdir::recover_dir(store, &root, generation, &point, &target, args.parallel)
        }
    }
}

fn recover_file(
    store: &dyn ObjectStore,
    root: &str,
    g: &Generation,
    point: &RecoveryPoint,
    target: &Target,
    parallel: usize,
) -> Result<()> {
    if target.is_dir {
        return Err(Error::new(
            Exit::CantCreate,
            format!(
                "{} is a folder, but this recovery point is a single file: give a file path",
                target.path.display()
            ),
        ));
    }
    let tmp = TempPath::new(&target.path, false)?;
    let restored = part::restore_part(
        store,
        root,
        g,
        (layout::FILE_PART, point.time_ms),
        &tmp.path,
        parallel,
    )?;
    target.install(tmp)?;
    log::info!(
        "recovered {} ({} bytes from {} object(s))",
        target.path.display(),
        restored.bytes,
        restored.objects
    );
    Ok(())
}
