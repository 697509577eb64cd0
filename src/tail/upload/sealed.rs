//! Sealed uploads (see [`crate::seal`]): an object's bytes sealed as one unit before it is
//! sent, its key saying how; a large range in objects of [`super::SEALED_OBJECT`] bytes, the next one
//! sealed while the one before is sent.

use std::borrow::Cow;
use std::fs::File;
use std::io;

use crate::chain::GenId;
use crate::layout::{Kind, ObjectKey};

use super::super::held::Held;
use super::super::proof::{Capture, Witness};
use super::super::source::read_exact_at;
use super::{UploadError, Uploader, object_key};

impl Uploader<'_> {
    /// Uploads `pieces` of `file` sealed, one object each, while a helper thread reads and
    /// seals the next one: compressing overlaps sending, as hashing does for plain ranges.
    /// Memory: the object being sent, and the next one's plaintext and sealed bytes (three
    /// [`super::SEALED_OBJECT`]s at most, for bytes that do not compress).
    pub(super) fn put_sealed(
        &mut self,
        generation: GenId,
        part: &str,
        file: &File,
        pieces: &[(u64, u64)],
        labels: impl Fn(u64) -> (u64, Kind),
        (done, held): (&mut Witness, &mut Vec<Held>),
    ) -> Result<(), UploadError> {
        struct Sealed {
            from: u64,
            to: u64,
            crc: u32,
            capture: Capture,
            body: Vec<u8>,
        }
        let sealer = self.sealer.clone();
        std::thread::scope(|scope| {
            // Handed over, not queued: one object being sent, the next being sealed.
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Sealed>>(0);
            scope.spawn(move || {
                for &(from, to) in pieces {
                    let sealed = (|| {
                        let mut plain = vec![0; (to - from) as usize];
                        read_exact_at(file, &mut plain, from)?;
                        let mut capture = Capture::new(from, to);
                        capture.feed(from, &plain);
                        let crc = crc32fast::hash(&plain);
                        let body = sealer.seal_unit(&plain)?.into_owned();
                        Ok(Sealed {
                            from,
                            to,
                            crc,
                            capture,
                            body,
                        })
                    })();
                    if tx.send(sealed).is_err() {
                        return;
                    }
                }
            });
            for _ in pieces {
                let s = rx
                    .recv()
                    .map_err(|_| UploadError::Read(io::Error::other("the sealing helper stopped")))?
                    .map_err(UploadError::Read)?;
                let (time_ms, kind) = labels(s.to);
                let mut key = object_key(generation, part, kind, (s.from, s.to), time_ms, s.crc);
                key.seal = self.sealer.seal();
                key.stored = (0, s.body.len() as u64);
                self.put_stored(&key, &s.body)?;
                let key = self.stored(key);
                done.extend(s.capture, key.crc);
                held.push(Held::delta(&key));
            }
            Ok(())
        })
    }

    /// PUTs `body`, `key`'s bytes as stored, with the CRC-32 of those stored bytes as its
    /// transit checksum (the key's CRC is the plaintext's).
    pub(in crate::tail) fn put_stored(
        &self,
        key: &ObjectKey,
        body: &[u8],
    ) -> Result<(), UploadError> {
        let transit = crc32fast::hash(body);
        let name = key.key(&self.root);
        self.store
            .put(&name, &mut &body[..], body.len() as u64, Some(transit))?;
        Ok(())
    }

    /// `plain`, the bytes of `key`, as they are stored: sealed as one unit when persist seals,
    /// `key` then saying how. The transit checksum is the stored bytes'.
    pub(super) fn seal<'b>(
        &self,
        key: &mut ObjectKey,
        plain: &'b [u8],
    ) -> Result<Cow<'b, [u8]>, UploadError> {
        let body = self.sealer.seal_unit(plain).map_err(UploadError::Read)?;
        key.seal = self.sealer.seal();
        key.stored = (0, body.len() as u64);
        Ok(body)
    }
}
