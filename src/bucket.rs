//! What the bucket holds: one paginated listing of a prefix, parsed into generations. The only
//! place that turns listed keys into [`ObjectKey`]s, for persist, recover and list alike.

use crate::chain::{self, Generation};
use crate::error::{Error, Result};
use crate::layout::{self, ObjectKey};
use crate::s3::ObjectStore;

/// Where a backup lives: a bucket and a prefix in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub bucket: String,
    pub prefix: String,
}

impl Place {
    /// The key prefix every object of the layout lives under (see [`layout::root`]).
    pub fn root(&self) -> String {
        layout::root(&self.prefix)
    }

    /// `s3://BUCKET/ROOT`, for messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.root())
    }
}

/// What a listing found.
pub struct Bucketed {
    pub generations: Vec<Generation>,
    /// The next unused generation number.
    pub next_number: u64,
}

/// Lists the prefix once. A permanent error (credentials, bucket) is fatal to the caller.
pub fn survey(store: &dyn ObjectStore, root: &str) -> Result<Bucketed> {
    let listed = store
        .list(root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let objects = parse_listing(root, listed);
    let generations = chain::generations(objects);
    let next_number = generations.iter().map(|g| g.id.number).max().unwrap_or(0) + 1;
    Ok(Bucketed {
        generations,
        next_number,
    })
}

/// Parses a listing into our keys, warning once about keys that are not ours (they are ignored,
/// never touched) and about objects whose size disagrees with their key.
pub fn parse_listing(root: &str, listed: Vec<crate::s3::Listed>) -> Vec<ObjectKey> {
    let (out, foreign) = read_listing(root, listed);
    if let Some((key, why)) = foreign.first() {
        log::warn!(
            "ignoring {} object(s) under {root} that are not Petrify objects, first {key:?} ({why})",
            foreign.len()
        );
    }
    out
}

/// A listing split into our keys and the rest: each key that is not one of ours (or whose size
/// disagrees with its key) with the reason.
pub fn read_listing(
    root: &str,
    listed: Vec<crate::s3::Listed>,
) -> (Vec<ObjectKey>, Vec<(String, &'static str)>) {
    let mut foreign = Vec::new();
    let mut out = Vec::new();
    for l in listed {
        let rel = l.key.strip_prefix(root).unwrap_or(&l.key);
        if rel == crate::lease::LEASE_NAME {
            continue;
        }
        match layout::parse(rel) {
            Ok(k) if k.len() == l.size => out.push(k),
            Ok(_) => foreign.push((l.key, "its size does not match its key")),
            Err(e) => foreign.push((l.key, e.0)),
        }
    }
    (out, foreign)
}
