//! One part of a recovery point rebuilt into a new file: its chain planned as of the point,
//! downloaded, verified and synced. The one restore path for a single file and for each file
//! of a Redis folder.

use std::fs::OpenOptions;
use std::path::Path;

use crate::chain::{self, Generation};
use crate::error::{Error, Exit};
use crate::s3::ObjectStore;

use super::fetch;

/// What was written.
pub struct Restored {
    pub objects: usize,
    pub bytes: u64,
}

/// Writes `part` of generation `g` as of `time_ms` to `path`, which must not exist, with at
/// `fetching` (requests in flight, progress, identities).
pub fn restore_part(
    store: &dyn ObjectStore,
    root: &str,
    g: &Generation,
    (part, time_ms): (&str, u64),
    path: &Path,
    fetching: super::fetch::Fetching<'_>,
) -> super::Fetched<Restored> {
    let objects = g.parts.get(part).map(Vec::as_slice).unwrap_or(&[]);
    let plan = chain::plan_part(objects, time_ms).map_err(|e| {
        let e = match e.part() {
            Some(_) => e.to_string(),
            None => format!("part {part}: {e}"),
        };
        Error::new(
            Exit::Data,
            format!(
                "generation {} is damaged: {e}; `petrify list` shows the points that can \
                 still be recovered",
                g.id.number
            ),
        )
    })?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, &e))?;
    let reads = chain::downloads(&plan);
    fetch::fetch_chain(store, root, &reads, &file, fetching)?;
    file.sync_all()
        .map_err(|e| Error::io("cannot write", path, &e))?;
    Ok(Restored {
        objects: reads.len(),
        bytes: plan.last().map_or(0, |o| o.end),
    })
}
