//! Compaction as persist does it: the objects a part's chain is made of ([`Held`]), and the
//! upload that merges some of them with newly appended bytes into one `merged` object (see
//! [`crate::compaction`] for when and how). Bytes come from the followed file, checked
//! against the CRCs of the objects they replace, or are copied by the store; the index goes at
//! the end of the same object, so a merged object and its index appear together or not at
//! all. The objects it replaces are deleted later, in batches ([`Doomed`]): until then both
//! are in the bucket and readers take the merged one.

use std::fs::File;
use std::io::{self, Read};

use crate::chain::GenId;
use crate::compaction::{self, Part};
use crate::layout::index::Entry;
use crate::layout::{Kind, ObjectKey, Seal};
use crate::s3::Piece;

mod body;
mod reseal;

use body::IndexBody;

use super::held::{Held, KEEP_ENTRIES};
use super::proof::{Capture, Witness};
use super::source::{RangeReader, crc_range, read_exact_at};
use super::upload::{BUFFER_LIMIT, UploadError, Uploader};

/// What one merge needs: the part's objects `inputs` and the new bytes `[start, end)` of
/// `file`, observed at `time_ms`. With no inputs, the new bytes alone become a merged object:
/// a delta with points inside it (`inner`).
pub struct Merge<'a> {
    pub generation: GenId,
    pub part: &'a str,
    pub file: &'a File,
    pub inputs: &'a [Held],
    pub new: (u64, u64),
    pub time_ms: u64,
    /// Points inside the new bytes before the one at `time_ms`, `(end, time)` in order (from
    /// Redis's `#TS` marks, see [`crate::marks`]).
    pub inner: &'a [(u64, u64)],
    /// The new bytes, when the caller has read them (the marks were found in these very
    /// bytes, so the cuts cannot fall anywhere else).
    pub fresh: Option<&'a [u8]>,
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
        let copies = self.store.copies_parts();
        match self.put_merged_once(m, done, copies) {
            // The store has just refused to copy: once more, sending every byte, if that
            // merge is one persist makes without copies.
            Err(UploadError::S3(e)) if copies && !self.store.copies_parts() => {
                let lens: Vec<u64> = m.inputs.iter().map(Held::len).collect();
                match compaction::merge_without_copies(&lens, 0) {
                    Some(0) => self.put_merged_once(m, done, false),
                    _ => Err(UploadError::S3(e)),
                }
            }
            r => r,
        }
    }

    fn put_merged_once(
        &mut self,
        m: &Merge<'_>,
        done: &mut Witness,
        copies: bool,
    ) -> Result<Held, UploadError> {
        let (start, end) = m.new;
        let first = m.inputs.first();
        if first.is_none() && m.inner.is_empty() {
            return Err(UploadError::Read(io::Error::other("nothing to merge")));
        }
        if first.is_some_and(|f| f.end > start)
            || m.inputs.windows(2).any(|w| w[0].end != w[1].start)
        {
            return Err(UploadError::Read(io::Error::other(
                "the chain is not contiguous",
            )));
        }
        if m.inputs.last().is_some_and(|h| h.end != start) || end - start > BUFFER_LIMIT {
            return Err(UploadError::Read(io::Error::other("not a mergeable range")));
        }
        // The new bytes, as a plain delta would read them.
        let read;
        let fresh: &[u8] = match m.fresh {
            Some(f) if f.len() as u64 == end - start => f,
            _ => {
                let mut buf = vec![0; (end - start) as usize];
                read_exact_at(m.file, &mut buf, start).map_err(UploadError::Read)?;
                read = buf;
                &read
            }
        };
        let mut capture = Capture::new(start, end);
        capture.feed(start, fresh);
        let fresh_crc = crc32fast::hash(fresh);
        let new_entries = entries_of(fresh, start, m.inner, (end, m.time_ms))?;
        if self.sealer.seal() != Seal::Plain
            || m.inputs.iter().any(|h| h.object.seal != Seal::Plain)
        {
            return self.put_resealed(m, fresh, &new_entries, done);
        }

        let parts = match m.inputs.is_empty() {
            // One object from the new bytes alone.
            true => vec![Part::Send { first: 0, end: 0 }],
            false => compaction::plan_parts(&compaction::copyable(
                m.inputs
                    .iter()
                    .map(|h| (h.len(), h.object.kind != Kind::Merged)),
                copies,
            )),
        };
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
        let key = merged_key(
            m,
            all,
            (Seal::Plain, end - first.map_or(start, |f| f.start)),
        );
        let mut index = IndexBody::open(self.store, &self.root, m.inputs, &new_entries)?;
        let index_len = index.len;
        // A streamed index's CRC is known only once read: it is read once more first, so that
        // the upload carries its checksum (a bucket with Object Lock takes nothing without).
        let index_crc = match index.crc() {
            Some(c) => c,
            None => {
                IndexBody::open(self.store, &self.root, m.inputs, &new_entries)?.crc_of_all()?
            }
        };
        let full = key.key(&self.root);
        {
            // One reader per sent part; the last part also carries the new bytes and the index.
            let mut sends: Vec<(RangeReader, u64, u32)> = parts
                .iter()
                .filter_map(|p| match *p {
                    Part::Send { first, end: e } => {
                        let (a, b) = match first < e {
                            true => (m.inputs[first].start, m.inputs[e - 1].end),
                            false => (start, start),
                        };
                        let crc = combine(&m.inputs[first..e]);
                        Some((RangeReader::new(m.file, a, b, crc), b - a, crc))
                    }
                    Part::Copy { .. } => None,
                })
                .collect();
            let Some((last, last_len, last_crc)) = sends.pop() else {
                return Err(UploadError::Read(io::Error::other("no last part")));
            };
            let mut last_body = last.chain(fresh).chain(&mut index);
            let last_crc = crate::crc::combine(
                crate::crc::combine(last_crc, fresh_crc, end - start),
                index_crc,
                index_len,
            );
            let last_len = last_len + (end - start) + index_len;
            if let [Part::Send { .. }] = parts[..] {
                // One PUT.
                self.store
                    .put(&full, &mut last_body, last_len, Some(last_crc))?;
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
                                crc: (from == 0 && to == h.len()).then_some(h.crc),
                            });
                        }
                        Part::Send { .. } => {
                            let Some((r, len, crc)) = sends.next() else {
                                return Err(UploadError::Read(io::Error::other(
                                    "parts out of step",
                                )));
                            };
                            pieces.push(Piece::Send {
                                body: r,
                                len: *len,
                                crc: Some(*crc),
                            });
                        }
                    }
                }
                pieces.push(Piece::Send {
                    body: &mut last_body,
                    len: last_len,
                    crc: Some(last_crc),
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
            first_ms: first.map_or(new_entries[0].time_ms, |f| f.first_ms),
            last_ms: m.time_ms,
            entries,
            open: false,
        })
    }
}

/// The index entries of new bytes `fresh` (from offset `start`): one per inner point
/// `(end, time)`, then `last`; each with the CRC-32 of its bytes since the entry before.
fn entries_of(
    fresh: &[u8],
    start: u64,
    inner: &[(u64, u64)],
    last: (u64, u64),
) -> Result<Vec<Entry>, UploadError> {
    let mut out = Vec::with_capacity(inner.len() + 1);
    let mut from = start;
    let mut time = 0;
    for &(end, time_ms) in inner.iter().chain([&last]) {
        if end < from || end > last.0 || time_ms < time {
            return Err(UploadError::Read(io::Error::other(
                "points inside new bytes out of order",
            )));
        }
        let bytes = &fresh[(from - start) as usize..(end - start) as usize];
        out.push(Entry {
            end,
            time_ms,
            crc: crc32fast::hash(bytes),
            stored: end - from,
        });
        (from, time) = (end, time_ms);
    }
    Ok(out)
}

/// The key of the object `m` makes: its inputs' and new bytes, CRC-32 `crc`, sealed as `seal`
/// in `stored` bytes (before the index).
fn merged_key(m: &Merge<'_>, crc: u32, (seal, stored): (Seal, u64)) -> ObjectKey {
    let start = m.inputs.first().map_or(m.new.0, |f| f.start);
    ObjectKey {
        generation: m.generation.number,
        mode: m.generation.mode,
        part: m.part.to_string(),
        start,
        end: m.new.1,
        time_ms: m.time_ms,
        crc,
        kind: Kind::Merged,
        seal,
        stored: (0, stored),
        within: None,
    }
}

/// The CRC-32 of the bytes of `run`, in order.
fn combine(run: &[Held]) -> u32 {
    run.iter()
        .fold(0, |crc, x| crate::crc::combine(crc, x.crc, x.len()))
}
