//! Rebuilding a Redis 7 folder (`appendonlydir/`) as of a recovery point: its manifest first,
//! then every base and incremental file it lists, into a temporary folder beside the target
//! that is renamed into place.

use std::fs::{self, File};

use crate::chain::{self, Generation, RecoveryPoint};
use crate::error::{Error, Exit};
use crate::manifest::{live_files, parse_manifest, read_small};
use crate::s3::ObjectStore;

use super::part::restore_part;
use super::target::{Target, TempPath};

/// Rebuilds the folder of an `aofdir` recovery point into a temporary folder beside the
/// target, then renames it into place.
pub fn recover_dir(
    store: &dyn ObjectStore,
    root: &str,
    g: &Generation,
    point: &RecoveryPoint,
    target: &Target,
    fetching: super::fetch::Fetching<'_>,
) -> super::Fetched<()> {
    if target.path.exists() && !target.is_dir {
        return Err(Error::new(
            Exit::CantCreate,
            format!(
                "{} is a file, but this recovery point is a Redis folder: give a folder path",
                target.path.display()
            ),
        )
        .into());
    }
    let manifest_name = chain::manifest_part(g).ok_or_else(|| {
        Error::new(
            Exit::Data,
            format!("generation {} has no single manifest", g.id.number),
        )
    })?;
    let tmp = TempPath::new(&target.path, true)?;
    fs::create_dir(&tmp.path).map_err(|e| Error::io("cannot create", &tmp.path, &e))?;

    let fetch_part = |name: &str| -> super::Fetched<usize> {
        let path = tmp.path.join(name);
        restore_part(store, root, g, (name, point.time_ms), &path, fetching).map(|r| r.objects)
    };

    let mut objects = fetch_part(manifest_name)?;
    let manifest_path = tmp.path.join(manifest_name);
    let manifest =
        read_small(&manifest_path).map_err(|e| Error::io("cannot read", &manifest_path, &e))?;
    let entries = parse_manifest(&manifest).map_err(|e| {
        Error::new(
            Exit::Data,
            format!(
                "the stored manifest of generation {} is invalid: {e}",
                g.id.number
            ),
        )
    })?;
    for e in live_files(&entries) {
        objects += fetch_part(&e.name)?;
    }
    File::open(&tmp.path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync", &tmp.path, &e))?;
    target.install(tmp)?;
    fetching.progress.finish();
    log::info!(
        "recovered {} ({} files, {} bytes from {objects} object(s))",
        target.path.display(),
        live_files(&entries).count() + 1,
        point.bytes
    );
    Ok(())
}
