//! Turning byte ranges of open files into objects: read, CRC, key, PUT, and what the file's
//! [`Witness`] keeps of the bytes sent. Large ranges are split at the largest object size and
//! streamed by positioned reads, so memory stays flat.

use std::fs::File;
use std::io;

use crate::chain::GenId;
use crate::layout::{Kind, ObjectKey, Seal};
use crate::s3::{ObjectStore, S3Error};
use crate::seal::Sealer;

use super::held::Held;
use super::proof::{Capture, Witness};
use super::source::{RangeReader, crc_range, hash_range, read_exact_at};

mod sealed;

/// Default largest object: well under S3's 5 GiB PutObject limit, and small enough that a
/// failed upload costs little to redo.
pub const DEFAULT_MAX_OBJECT: u64 = 1 << 30;

/// Ranges up to this size are read once into memory, CRC'd and sent from there; larger ones are
/// read twice (CRC, then upload), so memory stays flat whatever the range.
pub const BUFFER_LIMIT: u64 = 8 << 20;

/// Larger ranges go up as several objects, one after the other, while a helper thread reads
/// ahead computing CRC-32s (an object's key needs its CRC before its first byte is sent). The
/// helper hashes the range in granules of [`GRANULE`]; whenever the sender is free, the next
/// object is every granule the helper has finished (CRCs combined), up to [`PIPELINED_OBJECT`]
/// and `max_object`, or the next one to finish. Reading for the CRC then overlaps sending, and
/// the sender waits only when the disk is slower than the wire: objects grow as far as the
/// reading is ahead (from a warm cache, 8 MiB and then 256 MiB ones), and stay near a granule
/// while the disk is the slower side, so a slow patch of the disk never leaves the wire idle
/// waiting for a large object's CRC. The objects carry one time: one point.
///
/// Fewer objects are faster (each costs a round trip and the store's own finishing), while a
/// failed upload sends its whole object again, hence the cap.
pub const GRANULE: u64 = 8 << 20;
/// The most plaintext one sealed object holds: it is sealed in memory before it is sent (a
/// PUT's length comes first), so this bounds persist's memory; a 1 GiB range is 128 of them.
pub const SEALED_OBJECT: u64 = 8 << 20;
pub const PIPELINED_OBJECT: u64 = 256 << 20;

/// The pieces `[start, end)` is read and hashed in: ranges that fit in memory go up as one
/// object per `max_object` bytes, read once; larger ones are hashed by the helper in granules
/// (see [`GRANULE`]) that [`join`] puts together into objects.
fn pieces_of(start: u64, end: u64, max_object: u64) -> Vec<(u64, u64)> {
    let step = match end - start > BUFFER_LIMIT {
        true => granule(max_object),
        false => max_object.max(1),
    };
    let mut out = Vec::new();
    let mut from = start;
    loop {
        let to = end.min(from.saturating_add(step));
        out.push((from, to));
        from = to;
        if from >= end {
            return out;
        }
    }
}

/// The size the helper hashes a large range in: [`GRANULE`], or `max_object` if smaller.
fn granule(max_object: u64) -> u64 {
    GRANULE.min(max_object).max(1)
}

/// What the helper computed of `[start, end)` of the file: its CRC-32 state.
struct Hashed {
    start: u64,
    end: u64,
    hasher: crc32fast::Hasher,
}

/// Adds the granule that follows `object` to it if the two fit in `limit` bytes; otherwise
/// gives the granule back, to start the next object. Pure.
fn join(object: &mut Hashed, next: Hashed, limit: u64) -> Option<Hashed> {
    debug_assert_eq!(next.start, object.end, "granules come in order");
    if next.end - object.start > limit {
        return Some(next);
    }
    object.hasher.combine(&next.hasher);
    object.end = next.end;
    None
}

/// Why an upload did not complete. Both are retried by the polling loop: S3 with backoff, a
/// read by looking at the file again (a file that shrank while being read is then a truncation).
#[derive(Debug)]
pub enum UploadError {
    S3(S3Error),
    /// Reading the followed file failed, or it shrank or changed while being read.
    Read(io::Error),
    /// The writer lease is no longer this process's: persist stops (status 73).
    LeaseLost(crate::error::Error),
}

impl From<S3Error> for UploadError {
    fn from(e: S3Error) -> Self {
        UploadError::S3(e)
    }
}

/// Turns byte ranges of open files into objects, under the writer lease.
pub struct Uploader<'a> {
    pub store: &'a dyn ObjectStore,
    pub root: String,
    /// The largest object to upload; larger ranges are split.
    pub max_object: u64,
    /// Objects and bytes it stored since start (for the log, the metrics and tests).
    pub objects: u64,
    pub bytes: u64,
    /// The writer lease this process holds (`None` in unit tests, which run without one),
    /// checked before uploads and deletions.
    pub lease: Option<crate::lease::Holding>,
    /// How uploads are stored (`--compress`, `--encrypt-to`).
    pub sealer: Sealer,
}

/// Where the bytes of one upload come from.
pub struct Source<'a> {
    pub file: &'a File,
    pub start: u64,
    pub end: u64,
}

impl Uploader<'_> {
    /// Uploads `[start, end)` of `file` as deltas of `part` in `generation`, observed at
    /// `time_ms`: one object, or several of at most `max_object` bytes each (S3 refuses a
    /// single PUT over 5 GiB; a catch-up after a long outage, or a large Redis base, can be
    /// bigger). `done` follows each object S3 has acknowledged, with the bytes it holds, so a
    /// failure keeps the progress. An empty range is uploaded as one empty object (a
    /// generation's start).
    ///
    /// Every object but the last is a [`Kind::Piece`], and so is the last unless `closes`: the
    /// point at `time_ms` appears to readers only once the object that closes it has landed,
    /// never while part of it is missing. `fresh`: the range's bytes, when the caller has read
    /// them already (they are sent as they are, not read again).
    pub(super) fn put_deltas(
        &mut self,
        generation: GenId,
        part: &str,
        (file, fresh): (&File, Option<&[u8]>),
        (start, end): (u64, u64),
        (time_ms, closes): (u64, bool),
        (done, held): (&mut Witness, &mut Vec<Held>),
    ) -> Result<(), UploadError> {
        // A sealed object is made in memory: at most SEALED_OBJECT bytes each, read once.
        let sealed = self.sealer.seal() != Seal::Plain;
        let max_object = match sealed {
            true => self.max_object.min(SEALED_OBJECT),
            false => self.max_object,
        };
        let pieces = pieces_of(start, end, max_object);
        let kind = |to: u64| match closes && to == end {
            true => Kind::Delta,
            false => Kind::Piece,
        };
        if sealed && pieces.len() > 1 && fresh.is_none() {
            let labels = |to: u64| (time_ms, kind(to));
            return self.put_sealed(generation, part, file, &pieces, labels, (done, held));
        }
        if end - start <= BUFFER_LIMIT || sealed {
            for &(from, to) in &pieces {
                let src = Source {
                    file,
                    start: from,
                    end: to,
                };
                let labels = (time_ms, kind(to));
                let read = fresh
                    .filter(|f| f.len() as u64 == end - start)
                    .map(|f| &f[(from - start) as usize..(to - start) as usize]);
                let (key, capture) = self.put_delta(generation, part, src, labels, (None, read))?;
                done.extend(capture, key.crc);
                held.push(Held::delta(&key));
            }
            return Ok(());
        }
        let limit = PIPELINED_OBJECT.min(self.max_object).max(1);
        let depth = (limit / granule(self.max_object)).max(1) as usize;
        let stopped = || UploadError::Read(io::Error::other("the CRC helper stopped"));
        std::thread::scope(|scope| {
            // The helper reads at most one object's worth of granules ahead of the sender.
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Hashed>>(depth);
            let granules = &pieces;
            scope.spawn(move || {
                for &(a, b) in granules {
                    let hashed = hash_range(file, a, b).map(|hasher| Hashed {
                        start: a,
                        end: b,
                        hasher,
                    });
                    if tx.send(hashed).is_err() {
                        return;
                    }
                }
            });
            let mut carried: Option<Hashed> = None;
            let mut from = start;
            while from < end {
                let mut object = match carried.take() {
                    Some(granule) => granule,
                    None => rx
                        .recv()
                        .map_err(|_| stopped())?
                        .map_err(UploadError::Read)?,
                };
                // Every granule already hashed joins, as far as the object may grow.
                while carried.is_none() {
                    let Ok(next) = rx.try_recv() else { break };
                    carried = join(&mut object, next.map_err(UploadError::Read)?, limit);
                }
                let src = Source {
                    file,
                    start: object.start,
                    end: object.end,
                };
                let crc = object.hasher.finalize();
                let labels = (time_ms, kind(object.end));
                let (key, capture) =
                    self.put_delta(generation, part, src, labels, (Some(crc), None))?;
                done.extend(capture, key.crc);
                held.push(Held::delta(&key));
                from = object.end;
            }
            Ok(())
        })
    }

    /// Uploads `[start, end)` of `file` as one delta or piece (its CRC-32 `known` already, or
    /// not; its bytes `read` already, or not). Returns the key once S3 answered 2xx, and what
    /// the file's [`Witness`] keeps of the bytes sent.
    fn put_delta(
        &mut self,
        generation: GenId,
        part: &str,
        src: Source<'_>,
        (time_ms, kind): (u64, Kind),
        (known, read): (Option<u32>, Option<&[u8]>),
    ) -> Result<(ObjectKey, Capture), UploadError> {
        let len = src.end - src.start;
        let mut owned: Vec<u8>;
        let mut buffered: &[u8] = &[];
        let mut capture = Capture::new(src.start, src.end);
        // A CRC computed ahead means a pipelined object: streamed, so memory stays flat.
        let buffer = len <= BUFFER_LIMIT && known.is_none();
        let crc = if buffer {
            buffered = match read.filter(|r| r.len() as u64 == len) {
                Some(r) => r,
                None => {
                    owned = vec![0; len as usize];
                    read_exact_at(src.file, &mut owned, src.start).map_err(UploadError::Read)?;
                    &owned
                }
            };
            capture.feed(src.start, buffered);
            crc32fast::hash(buffered)
        } else if let Some(crc) = known {
            crc
        } else {
            crc_range(src.file, src.start, src.end).map_err(UploadError::Read)?
        };
        let mut key = object_key(generation, part, kind, (src.start, src.end), time_ms, crc);
        if buffer {
            let body = self.seal(&mut key, buffered)?;
            self.put_stored(&key, &body)?;
        } else {
            let full = key.key(&self.root);
            let mut reader = RangeReader::new(src.file, src.start, src.end, crc);
            let sent = self.store.put(&full, &mut reader, len, Some(crc));
            // A failure of our own reader reaches us through the HTTP client: say it as what
            // it is, a read of the file, not the network.
            if let Some(e) = reader.failure() {
                return Err(UploadError::Read(e));
            }
            sent?;
            capture = reader.into_capture();
        }
        Ok((self.stored(key), capture))
    }

    /// Uploads a whole small file already in memory (a Redis manifest) as a `snap` object.
    pub fn put_snap(
        &mut self,
        generation: GenId,
        part: &str,
        bytes: &[u8],
        time_ms: u64,
    ) -> Result<ObjectKey, UploadError> {
        self.check_lease()?;
        let len = bytes.len() as u64;
        let mut key = object_key(
            generation,
            part,
            Kind::Snap,
            (0, len),
            time_ms,
            crc32fast::hash(bytes),
        );
        let body = self.seal(&mut key, bytes)?;
        self.put_stored(&key, &body)?;
        Ok(self.stored(key))
    }

    /// Before an upload: makes sure the writer lease is still this process's when a check is
    /// due (see [`crate::lease::Holding`]). A store that does not answer fails the upload like
    /// any request (retried by the polling loop).
    pub fn check_lease(&mut self) -> Result<(), UploadError> {
        let Some(h) = self.lease.as_mut().filter(|h| h.due()) else {
            return Ok(());
        };
        match h.confirm(self.store) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(lost)) => Err(UploadError::LeaseLost(lost)),
            Err(e) => Err(UploadError::S3(e)),
        }
    }

    /// Before a deletion: whether the writer lease is surely still this process's, checked
    /// now. `Ok(false)`: the store did not answer, so nothing is deleted this time. `Err`: the
    /// lease is lost (status 73).
    pub fn sure_of_lease(&mut self) -> crate::error::Result<bool> {
        let Some(h) = self.lease.as_mut() else {
            return Ok(true);
        };
        match h.confirm(self.store) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(lost)) => Err(lost),
            Err(e) => {
                log::debug!("could not check the writer lease ({e}); deleting later");
                Ok(false)
            }
        }
    }

    fn stored(&mut self, key: ObjectKey) -> ObjectKey {
        self.objects += 1;
        self.bytes += key.len();
        log::debug!("uploaded {key} ({} bytes)", key.len());
        key
    }
}

fn object_key(
    generation: GenId,
    part: &str,
    kind: Kind,
    (start, end): (u64, u64),
    time_ms: u64,
    crc: u32,
) -> ObjectKey {
    ObjectKey {
        generation: generation.number,
        mode: generation.mode,
        part: part.to_string(),
        start,
        end,
        time_ms,
        crc,
        kind,
        seal: Seal::Plain,
        stored: (0, end - start),
        within: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_ranges_are_hashed_in_granules() {
        const M: u64 = 1 << 20;
        let sizes = |start, end, max| -> Vec<u64> {
            let pieces = pieces_of(start, end, max);
            // In order, each starting where the one before ended, covering the range.
            assert_eq!(pieces.first().map(|o| o.0), Some(start));
            assert_eq!(pieces.last().map(|o| o.1), Some(end));
            assert!(pieces.windows(2).all(|w| w[0].1 == w[1].0));
            pieces.iter().map(|(a, b)| (b - a) / M).collect()
        };
        let big = 5 << 30;
        assert_eq!(sizes(0, 1024 * M, big), [8; 128]);
        assert_eq!(sizes(7, 7 + 20 * M, big), [8, 8, 4]);
        // A range that fits in memory is one object; max_object still splits.
        assert_eq!(sizes(0, 8 * M, big), [8]);
        assert_eq!(sizes(0, 8 * M, 3 * M), [3, 3, 2]);
        // max_object caps granules too.
        assert_eq!(sizes(0, 10 * M, 3 * M), [3, 3, 3, 1]);
        assert_eq!(pieces_of(5, 5, big), [(5, 5)]);
    }

    #[test]
    fn granules_join_into_objects_up_to_the_limit_with_the_crc_of_their_bytes() {
        let bytes: Vec<u8> = (0..100u32).map(|i| (i * 31 % 256) as u8).collect();
        let granule = |a: usize, b: usize| {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes[a..b]);
            Hashed {
                start: a as u64,
                end: b as u64,
                hasher,
            }
        };
        let mut object = granule(0, 10);
        assert!(join(&mut object, granule(10, 20), 25).is_none());
        // 30 bytes would pass the limit: the granule starts the next object.
        let back = join(&mut object, granule(20, 30), 25).map(|g| (g.start, g.end));
        assert_eq!(back, Some((20, 30)));
        assert_eq!((object.start, object.end), (0, 20));
        assert_eq!(object.hasher.finalize(), crc32fast::hash(&bytes[..20]));
        // Exactly the limit joins.
        let mut object = granule(40, 50);
        assert!(join(&mut object, granule(50, 60), 20).is_none());
        assert!(join(&mut object, granule(60, 100), 60).is_none());
        assert_eq!(object.hasher.finalize(), crc32fast::hash(&bytes[40..]));
    }
}
