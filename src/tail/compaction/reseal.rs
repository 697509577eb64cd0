//! A merge that seals its bytes anew: when persist seals (`--compress`, `--encrypt-to`) or an
//! input was sealed, the merged object is made from the followed file, one unit per point
//! (see [`crate::seal`]), never by the store copying inputs: a sealed input's stored bytes are
//! not the ones a plain merged object holds, an input sealed otherwise (the options changed)
//! cannot join frames of another kind, and persist cannot read what it encrypted. What it
//! merges is bounded like a merge on a store that copies nothing
//! ([`crate::compaction::merge_without_copies`], in stored bytes), and the object is put
//! together in memory, so it is always one PUT.

use std::io;

use crate::layout::index::{self, Entry};
use crate::layout::{Kind, Seal};

use super::super::held::{Held, KEEP_ENTRIES};
use super::super::proof::{Capture, Witness};
use super::super::source::read_exact_at;
use super::super::upload::{UploadError, Uploader};
use super::{Merge, combine, merged_key};

impl Uploader<'_> {
    /// Uploads `m.inputs` and the new bytes as one merged object sealed as persist seals now,
    /// each point its own unit. Like [`Uploader::put_merged`]: `Err` changes nothing.
    pub(super) fn put_resealed(
        &mut self,
        m: &Merge<'_>,
        fresh: &[u8],
        new_entries: &[Entry],
        done: &mut Witness,
    ) -> Result<Held, UploadError> {
        let (start, end) = m.new;
        let seal = self.sealer.seal();
        let mut body: Vec<u8> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        // A piece of a point that never closed gives no line: its bytes start the next one.
        let mut carried: Option<(u64, u32)> = None;
        let mut buf = Vec::new();
        for h in m.inputs {
            if h.object.kind == Kind::Piece && h.open {
                carried = Some(match carried {
                    Some((from, c)) => (from, crate::crc::combine(c, h.crc, h.len())),
                    None => (h.start, h.crc),
                });
                continue;
            }
            let lines = match &h.entries {
                Some(e) => e.clone(),
                None => self.read_entries(h)?,
            };
            let mut from = h.start;
            for e in lines {
                let (a, want) = match carried.take() {
                    Some((a, c)) => (a, crate::crc::combine(c, e.crc, e.end - from)),
                    None => (from, e.crc),
                };
                buf.resize((e.end - a) as usize, 0);
                read_exact_at(m.file, &mut buf, a).map_err(UploadError::Read)?;
                if crc32fast::hash(&buf) != want {
                    return Err(UploadError::Read(io::Error::other(format!(
                        "bytes {a}..{} of the file are no longer the ones uploaded",
                        e.end
                    ))));
                }
                entries.push(self.seal_line(&buf, e, want, &mut body)?);
                from = e.end;
            }
        }
        let mut at = start;
        for (i, e) in new_entries.iter().enumerate() {
            let (a, crc) = match (i, carried.take()) {
                (0, Some((a, c))) => (a, crate::crc::combine(c, e.crc, e.end - start)),
                _ => (at, e.crc),
            };
            let bytes: Vec<u8> = match a < start {
                // The carried piece's bytes, then the new ones.
                true => {
                    let mut v = vec![0; (start - a) as usize];
                    read_exact_at(m.file, &mut v, a).map_err(UploadError::Read)?;
                    v.extend_from_slice(&fresh[..(e.end - start) as usize]);
                    v
                }
                false => fresh[(at - start) as usize..(e.end - start) as usize].to_vec(),
            };
            if crc32fast::hash(&bytes) != crc {
                return Err(UploadError::Read(io::Error::other(
                    "the bytes of an unfinished upload are no longer the file's",
                )));
            }
            entries.push(self.seal_line(&bytes, *e, crc, &mut body)?);
            at = e.end;
        }
        let first = m.inputs.first();
        let all = crate::crc::combine(combine(m.inputs), crc32fast::hash(fresh), end - start);
        let key = merged_key(m, all, (seal, body.len() as u64));
        body.extend_from_slice(&index::render(&entries, seal != Seal::Plain));
        self.put_stored(&key, &body)?;
        let mut capture = Capture::new(start, end);
        capture.feed(start, fresh);
        done.extend(capture, crc32fast::hash(fresh));
        self.objects += 1;
        self.bytes += end - start;
        log::debug!(
            "merged {} object(s) and bytes {start}..{end} into {key}, sealed anew",
            m.inputs.len()
        );
        Ok(Held {
            object: key.clone(),
            start: key.start,
            end,
            crc: all,
            first_ms: first.map_or(new_entries[0].time_ms, |f| f.first_ms),
            last_ms: m.time_ms,
            entries: (entries.len() <= KEEP_ENTRIES).then_some(entries),
            open: false,
        })
    }

    /// One line's bytes `plain` (CRC-32 `crc`, ending at `e.end`, observed at `e.time_ms`)
    /// sealed onto `body`; returns its entry.
    fn seal_line(
        &self,
        plain: &[u8],
        e: Entry,
        crc: u32,
        body: &mut Vec<u8>,
    ) -> Result<Entry, UploadError> {
        let unit = self.sealer.seal_unit(plain).map_err(UploadError::Read)?;
        body.extend_from_slice(&unit);
        Ok(Entry {
            end: e.end,
            time_ms: e.time_ms,
            crc,
            stored: unit.len() as u64,
        })
    }

    /// The points of held merged object `h` (those it gives the chain), read from its index.
    fn read_entries(&self, h: &Held) -> Result<Vec<Entry>, UploadError> {
        let read =
            crate::bucket::index_of(self.store, &self.root, &h.object).map_err(|e| match e {
                Ok(why) => UploadError::Read(io::Error::other(why)),
                Err(e) => UploadError::S3(e),
            })?;
        let held: Vec<usize> = (0..read.len())
            .filter(|&i| read.start_of(i) >= h.start && read.ends()[i] <= h.end)
            .collect();
        let covers = held.first().map(|&i| read.start_of(i)) == Some(h.start)
            && held.last().map(|&i| read.ends()[i]) == Some(h.end);
        match covers {
            true => Ok(held.into_iter().map(|i| read.entry(i)).collect()),
            false => Err(UploadError::Read(io::Error::other(format!(
                "the index of {} does not cover the bytes held",
                h.object
            )))),
        }
    }
}
