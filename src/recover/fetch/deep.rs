//! `verify --deep`'s reading of one whole object: every byte hashed, none kept.

use std::io::Read;

use crate::layout::ObjectKey;
use crate::s3::ObjectStore;
use crate::seal::Identities;

use super::{Failure, Result, get, sealed, short_answer, verify, with_retries};

/// Reads all of object `o` and returns the CRC-32 of its first `len` bytes for each of `marks`
/// (ascending, each at most `o.len()`), having checked that the whole object matches its key.
/// For `verify --deep`: no byte is kept.
pub fn crc_marks(
    store: &dyn ObjectStore,
    root: &str,
    o: &ObjectKey,
    marks: &[u64],
    identities: Option<&Identities>,
) -> Result<Vec<u32>> {
    if o.seal != crate::layout::Seal::Plain {
        return sealed::crc_marks(store, root, o, marks, identities);
    }
    with_retries(o, || {
        let mut body = get(store, root, o)?;
        let (mut h, mut pos, mut out) = (crc32fast::Hasher::new(), 0u64, Vec::new());
        let mut buf = vec![0u8; 256 << 10];
        let mut marks = marks.iter().copied().peekable();
        loop {
            while marks.peek() == Some(&pos) {
                marks.next();
                out.push(h.clone().finalize());
            }
            let room = marks
                .peek()
                .map_or(buf.len() as u64, |m| (m - pos).min(buf.len() as u64));
            let n = match body.reader.read(&mut buf[..room.max(1) as usize]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Failure::Transient(format!("reading {o}: {e}"))),
            };
            h.update(&buf[..n]);
            pos += n as u64;
        }
        if pos != o.len() {
            return Err(short_answer(o, pos, o.len()));
        }
        match verify(o, (o.start, o.end), h.finalize(), o.crc) {
            Some(e) => Err(Failure::Fatal(e.into())),
            None => Ok(out),
        }
    })
}
