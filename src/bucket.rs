//! What the bucket holds: one paginated listing of a prefix, parsed into generations. The only
//! place that turns listed keys into [`ObjectKey`]s, for persist, recover and list alike.

use std::collections::BTreeSet;

use crate::chain::{self, Generation};
use crate::error::{Error, Result};
use crate::layout::{self, Mode, ObjectKey};
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
    /// Generations marked as being deleted by retention (see [`layout::DROPPING`]): not part of
    /// the history any more; only prune looks at them, to finish deleting them.
    pub dropping: Vec<Generation>,
    /// The next unused generation number.
    pub next_number: u64,
}

/// Lists the prefix once. A permanent error (credentials, bucket) is fatal to the caller.
pub fn survey(store: &dyn ObjectStore, root: &str) -> Result<Bucketed> {
    let listed = store
        .list(root)
        .map_err(|e| Error::s3(&format!("listing {root}"), &e))?;
    let read = read_listing(root, listed);
    warn_foreign(root, &read.foreign);
    let all = chain::generations(read.objects);
    let next_number = all.iter().map(|g| g.id.number).max().unwrap_or(0) + 1;
    let (dropping, generations) = all
        .into_iter()
        .partition(|g| read.dropping.contains(&(g.id.number, g.id.mode)));
    Ok(Bucketed {
        generations,
        dropping,
        next_number,
    })
}

/// Parses a listing into our keys (those of generations being deleted left out), warning once
/// about keys that are not ours (they are ignored, never touched) and about objects whose size
/// disagrees with their key.
pub fn parse_listing(root: &str, listed: Vec<crate::s3::Listed>) -> Vec<ObjectKey> {
    let read = read_listing(root, listed);
    warn_foreign(root, &read.foreign);
    read.objects
        .into_iter()
        .filter(|o| !read.dropping.contains(&(o.generation, o.mode)))
        .collect()
}

fn warn_foreign(root: &str, foreign: &[(String, &'static str)]) {
    if let Some((key, why)) = foreign.first() {
        log::warn!(
            "ignoring {} object(s) under {root} that are not Petrify objects, first {key:?} ({why})",
            foreign.len()
        );
    }
}

/// A listing, sorted out.
pub struct Read {
    /// Every key of ours, those of generations being deleted included.
    pub objects: Vec<ObjectKey>,
    /// Each key that is not one of ours (or whose size disagrees with its key), and why.
    pub foreign: Vec<(String, &'static str)>,
    /// Generations marked as being deleted.
    pub dropping: BTreeSet<(u64, Mode)>,
}

/// Sorts a listing into our keys, marks of generations being deleted, and the rest.
pub fn read_listing(root: &str, listed: Vec<crate::s3::Listed>) -> Read {
    let mut read = Read {
        objects: Vec::new(),
        foreign: Vec::new(),
        dropping: BTreeSet::new(),
    };
    for l in listed {
        let rel = l.key.strip_prefix(root).unwrap_or(&l.key);
        if rel == crate::lease::LEASE_NAME {
            continue;
        }
        if let Some(g) = layout::parse_dropping(rel) {
            read.dropping.insert(g);
            continue;
        }
        match layout::parse(rel) {
            Ok(k) if k.len() == l.size => read.objects.push(k),
            Ok(_) => read
                .foreign
                .push((l.key, "its size does not match its key")),
            Err(e) => read.foreign.push((l.key, e.0)),
        }
    }
    read
}
