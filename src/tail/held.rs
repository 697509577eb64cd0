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
}

impl Doomed {
    pub fn add(&mut self, keys: impl IntoIterator<Item = String>) {
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

    /// Deletes what is due (everything with `now`): a full batch, or keys waiting for
    /// [`DELETE_EVERY`]. A failure keeps the keys for the next time; a key left behind by a
    /// crash is found again when persist resumes (see `chain::Generation::hidden`).
    pub fn flush(&mut self, store: &dyn ObjectStore, now: bool) {
        if !self.due(now) {
            return;
        }
        let n = self.keys.len().min(crate::s3::MAX_BATCH);
        match store.delete_many(&self.keys[..n]) {
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
    }
}
