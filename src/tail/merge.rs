//! Compaction as persist does it: the objects a part's chain is made of ([`Held`]), and the
//! upload that merges some of them with newly appended bytes into one `merged` object (see
//! [`crate::compaction`] for when and how). Bytes come from the followed file, checked
//! against the CRCs of the objects they replace, or are copied by the store; the index goes at
//! the end of the same object, so a merged object and its index appear together or not at
//! all. The objects it replaces are deleted later, in batches ([`Doomed`]): until then both
//! are in the bucket and readers take the merged one.

use std::fs::File;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::chain::GenId;
use crate::compaction::{self, Part};
use crate::layout::index::{self, Entry};
use crate::layout::{Kind, ObjectKey};
use crate::s3::{ObjectStore, Piece};

mod body;

use body::IndexBody;

use super::source::{RangeReader, crc_range, read_exact_at};
use super::upload::{BUFFER_LIMIT, UploadError, Uploader};
use super::verify::{Capture, Witness};

/// Merged objects with at most this many points keep them in memory (24 bytes each); larger
/// ones are read back from their index when merged again (rarely: the largest spans).
const KEEP_ENTRIES: usize = 4096;

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
    /// folds its bytes into the next point instead of giving it a line (see `merge/body.rs`).
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

    fn len(&self) -> u64 {
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
        .zip(crate::chain::reads(chain))
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

/// What one merge needs: the part's objects `inputs` and the new bytes `[start, end)` of
/// `file`, observed at `time_ms`.
pub struct Merge<'a> {
    pub generation: GenId,
    pub part: &'a str,
    pub file: &'a File,
    pub inputs: &'a [Held],
    pub new: (u64, u64),
    pub time_ms: u64,
}

impl Uploader<'_> {
    /// Uploads `m.inputs` and the new bytes as one merged object. On success the new bytes
    /// are recorded in `done` and the merged object is returned; the inputs are the caller's
    /// to forget and delete. `Err`: nothing changed (the caller uploads a plain delta).
    pub(super) fn put_merged(
        &mut self,
        m: &Merge<'_>,
        done: &mut Witness,
    ) -> Result<Held, UploadError> {
        let (start, end) = m.new;
        let Some(first) = m.inputs.first() else {
            return Err(UploadError::Read(io::Error::other("nothing to merge")));
        };
        if first.end > start || m.inputs.windows(2).any(|w| w[0].end != w[1].start) {
            return Err(UploadError::Read(io::Error::other(
                "the chain is not contiguous",
            )));
        }
        if m.inputs.last().map(|h| h.end) != Some(start) || end - start > BUFFER_LIMIT {
            return Err(UploadError::Read(io::Error::other("not a mergeable range")));
        }
        // The new bytes, as a plain delta would read them.
        let mut fresh = vec![0; (end - start) as usize];
        read_exact_at(m.file, &mut fresh, start).map_err(UploadError::Read)?;
        let mut capture = Capture::new(start, end);
        capture.feed(start, &fresh);
        let fresh_crc = crc32fast::hash(&fresh);

        let parts = compaction::plan_parts(&compaction::copyable(
            m.inputs
                .iter()
                .map(|h| (h.len(), h.object.kind != Kind::Merged)),
        ));
        // Bytes sent from the file must still be the ones in the bucket.
        for p in &parts {
            if let Part::Send { first, end } = *p
                && first < end
            {
                let run = &m.inputs[first..end];
                let (a, b) = (run[0].start, run[run.len() - 1].end);
                if crc_range(m.file, a, b).map_err(UploadError::Read)? != combine(run) {
                    return Err(UploadError::Read(io::Error::other(format!(
                        "bytes {a}..{b} of the file are no longer the ones uploaded"
                    ))));
                }
            }
        }
        let mut all = combine(m.inputs);
        all = crate::crc::combine(all, fresh_crc, end - start);
        let key = ObjectKey {
            generation: m.generation.number,
            mode: m.generation.mode,
            part: m.part.to_string(),
            start: first.start,
            end,
            time_ms: m.time_ms,
            crc: all,
            kind: Kind::Merged,
            within: None,
        };
        let new_entry = Entry {
            end,
            time_ms: m.time_ms,
            crc: fresh_crc,
        };
        let mut index = IndexBody::open(self.store, &self.root, m.inputs, new_entry)?;
        let (index_len, index_crc) = (index.len, index.crc());
        let full = key.key(&self.root);
        {
            // One reader per sent part; the last part also carries the new bytes and the index.
            let mut sends: Vec<(RangeReader, u64)> = parts
                .iter()
                .filter_map(|p| match *p {
                    Part::Send { first, end: e } => {
                        let (a, b) = match first < e {
                            true => (m.inputs[first].start, m.inputs[e - 1].end),
                            false => (start, start),
                        };
                        let crc = combine(&m.inputs[first..e]);
                        Some((RangeReader::new(m.file, a, b, crc), b - a))
                    }
                    Part::Copy { .. } => None,
                })
                .collect();
            let Some((last, last_len)) = sends.pop() else {
                return Err(UploadError::Read(io::Error::other("no last part")));
            };
            let mut last_body = last.chain(&fresh[..]).chain(&mut index);
            let last_len = last_len + (end - start) + index_len;
            if let [Part::Send { .. }] = parts[..] {
                // One PUT. The whole body's CRC is known when the index is all in memory.
                let crc = index_crc.map(|c| crate::crc::combine(all, c, index_len));
                self.store.put(&full, &mut last_body, last_len, crc)?;
            } else {
                let mut sends = sends.iter_mut();
                let mut pieces: Vec<Piece<'_>> = Vec::with_capacity(parts.len());
                for p in &parts[..parts.len() - 1] {
                    match *p {
                        Part::Copy { input, from, to } => {
                            let h = &m.inputs[input];
                            let at = h.start - h.object.start;
                            pieces.push(Piece::Copy {
                                key: h.object.key(&self.root),
                                from: at + from,
                                to: at + to,
                            });
                        }
                        Part::Send { .. } => {
                            let Some((r, len)) = sends.next() else {
                                return Err(UploadError::Read(io::Error::other(
                                    "parts out of step",
                                )));
                            };
                            pieces.push(Piece::Send { body: r, len: *len });
                        }
                    }
                }
                pieces.push(Piece::Send {
                    body: &mut last_body,
                    len: last_len,
                });
                self.store.compose(&full, pieces)?;
            }
        }
        done.extend(capture, fresh_crc);
        self.objects += 1;
        self.bytes += end - start;
        log::debug!(
            "merged {} object(s) and bytes {start}..{end} into {key} ({} parts)",
            m.inputs.len(),
            parts.len()
        );
        let entries = index.kept.filter(|e| e.len() <= KEEP_ENTRIES);
        Ok(Held {
            object: key.clone(),
            start: key.start,
            end,
            crc: all,
            first_ms: first.first_ms,
            last_ms: m.time_ms,
            entries,
            open: false,
        })
    }
}

/// The CRC-32 of the bytes of `run`, in order.
fn combine(run: &[Held]) -> u32 {
    run.iter()
        .fold(0, |crc, x| crate::crc::combine(crc, x.crc, x.len()))
}
