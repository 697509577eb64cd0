//! The objects persist holds: for each part, the objects its chain is made of as far as the
//! chain uses them ([`Held`]), which uploads add to and merges replace; and the keys merges
//! replaced, waiting to be deleted in batches ([`Doomed`]).

use std::time::{Duration, Instant};

use crate::layout::index::{self, Entry};
use crate::layout::{Kind, ObjectKey};
use crate::s3::ObjectStore;

/// Merged objects with at most this many points keep them in memory (24 bytes each); larger
/// ones are read back from their index when merged again (rarely: the largest spans).
pub const KEEP_ENTRIES: usize = 4096;

/// Objects replaced by a merge are deleted at least this often (one DeleteObjects request for
/// all of them), or as soon as a batch is full.
const DELETE_EVERY: Duration = Duration::from_secs(300);

/// One object a part's chain is made of, as far as the chain uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The object in the bucket: a delta, or a merged object.
    pub object: ObjectKey,
    /// The bytes of the part it gives the chain.
    pub start: u64,
    pub end: u64,
    /// CRC-32 of those bytes.
    pub crc: u32,
    /// Its first and last points' times.
    pub first_ms: u64,
    pub last_ms: u64,
    /// Its points, when few enough to keep; `None`: read from its index when needed.
    pub entries: Option<Vec<Entry>>,
    /// A piece whose point has not closed (the look that uploaded it was cut short): a merge
    /// folds its bytes into the next point instead of giving it a line (see `compaction/body.rs`).
    /// A piece of a look that closed, whichever part its closing object was in, keeps its
    /// own line: its time is a point.
    pub open: bool,
}

impl Held {
    /// A delta just uploaded (or found).
    pub fn delta(o: &ObjectKey) -> Held {
        Held {
            object: o.clone(),
            start: o.start,
            end: o.end,
            crc: o.crc,
            first_ms: o.time_ms,
            last_ms: o.time_ms,
            // A merged object seen whole (not through its index): its points are read from
            // its index when it is merged again.
            entries: (o.kind != Kind::Merged).then(|| vec![index::of_delta(o)]),
            open: o.kind == Kind::Piece,
        }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Its bytes' length as stored: the object's when the chain uses all of it, else the
    /// points' it uses (their plaintext length, when not kept).
    pub fn stored_len(&self) -> u64 {
        match (&self.entries, self.whole()) {
            (_, true) => self.object.stored_len(),
            (Some(e), false) => e.iter().map(|e| e.stored).sum(),
            (None, false) => self.len(),
        }
    }

    /// Whether the chain uses all of the object (it can then be copied and deleted as a whole).
    pub fn whole(&self) -> bool {
        self.start == self.object.start && self.end == self.object.end
    }
}

/// The chain a resumed part continues (from `plan_part`), as the objects it is made of.
/// `closed(time)`: whether a point exists at that time (a piece of it is then no longer open).
pub fn held_from_chain(chain: &[ObjectKey], closed: impl Fn(u64) -> bool) -> Vec<Held> {
    crate::chain::runs(chain)
        .into_iter()
        .zip(crate::chain::downloads(chain))
        .map(|(run, read)| {
            let points = &chain[run];
            let entries = match read.object.kind {
                // Seen whole, not through its index: read when merged again.
                Kind::Merged if points[0].within.is_none() => None,
                _ if points.len() > KEEP_ENTRIES => None,
                _ => Some(points.iter().map(index::of_delta).collect()),
            };
            let open = read.object.kind == Kind::Piece && !closed(read.object.time_ms);
            Held {
                object: read.object,
                start: read.start,
                end: read.end,
                crc: read.crc,
                first_ms: points[0].time_ms,
                last_ms: points[points.len() - 1].time_ms,
                entries,
                open,
            }
        })
        .collect()
}

/// Keys to delete, batched.
#[derive(Debug, Default)]
pub struct Doomed {
    keys: Vec<String>,
    since: Option<Instant>,
    /// The store refused this writer's deletions as not permitted: none is tried again.
    refused: bool,
}

/// Whether a refusal to delete means the key may not delete at all (no `s3:DeleteObject`), as
/// opposed to one object's trouble.
fn not_permitted(code: &str) -> bool {
    matches!(code, "AccessDenied" | "AllAccessDisabled")
}

impl Doomed {
    pub fn add(&mut self, keys: impl IntoIterator<Item = String>) {
        if self.refused {
            return;
        }
        let before = self.keys.len();
        self.keys.extend(keys);
        if self.keys.len() > before {
            self.since.get_or_insert_with(Instant::now);
        }
    }

    /// Whether [`Doomed::flush`] would delete anything now.
    pub fn due(&self, now: bool) -> bool {
        !self.keys.is_empty()
            && (now
                || self.keys.len() >= crate::s3::MAX_BATCH
                || self.since.is_some_and(|t| t.elapsed() >= DELETE_EVERY))
    }

    /// Whether the store refused this writer's deletions as not permitted.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The store refuses this writer's deletions as not permitted: said once, at WARN, and
    /// nothing is deleted from then on.
    pub fn refuse(&mut self, why: &str) {
        if self.refused {
            return;
        }
        log::warn!(
            "the store refuses this key's deletions ({why}): compaction goes on merging, and \
             the objects it replaces stay in the bucket, each byte then stored once more per \
             merge it is in; `petrify prune` run with a key that may delete removes them, \
             beside this persist (man petrify, HISTORY AN INTRUDER CANNOT DESTROY)"
        );
        self.refused = true;
        self.keys.clear();
        self.since = None;
    }

    /// Deletes what is due (everything with `now`): a full batch, or keys waiting for
    /// [`DELETE_EVERY`]. A failure keeps the keys for the next time; a key left behind by a
    /// crash is found again when persist resumes (see `chain::Generation::hidden`). `true`:
    /// the store has just refused this writer's deletions as not permitted; from then on
    /// nothing is deleted (said once, at WARN), and compaction goes on merging.
    pub fn flush(&mut self, store: &dyn ObjectStore, now: bool) -> bool {
        if !self.due(now) {
            return false;
        }
        let n = self.keys.len().min(crate::s3::MAX_BATCH);
        let result = store.delete_many(&self.keys[..n]);
        let denied = match &result {
            Ok(refused) => refused
                .iter()
                .find(|(_, code)| not_permitted(code))
                .map(|(_, code)| code.clone()),
            Err(e) if e.status() == Some(403) => Some(e.to_string()),
            Err(_) => None,
        };
        if let Some(why) = denied {
            self.refuse(&why);
            return true;
        }
        match result {
            Ok(refused) => {
                if let Some((key, code)) = refused.first() {
                    log::warn!(
                        "the store refused to delete {} object(s) that compaction replaced, \
                         first {key} ({code}); they are kept and cost only storage",
                        refused.len()
                    );
                }
                log::debug!("deleted {n} object(s) replaced by merged ones");
                self.keys.drain(..n);
            }
            Err(e) => log::debug!("deleting objects replaced by merged ones: {e}; later"),
        }
        self.since = (!self.keys.is_empty()).then(Instant::now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::mem::MemStore;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_store_that_refuses_deletions_is_asked_once() {
        let store = MemStore::new();
        store.refuse_deletes.store(true, Ordering::SeqCst);
        let mut doomed = Doomed::default();
        doomed.add(["a".to_string(), "b".to_string()]);
        assert!(doomed.flush(&store, true));
        let asked = store.requests.load(Ordering::SeqCst);
        doomed.add(["c".to_string()]);
        assert!(!doomed.due(true));
        assert!(!doomed.flush(&store, true));
        assert_eq!(store.requests.load(Ordering::SeqCst), asked);
        // A store that deletes: nothing said, everything gone.
        let store = MemStore::new();
        let mut doomed = Doomed::default();
        doomed.add(["a".to_string()]);
        assert!(!doomed.flush(&store, true));
        assert!(!doomed.due(true));
    }
}
