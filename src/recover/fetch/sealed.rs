//! Fetching sealed bytes (see [`crate::seal`]): one GET of the stored range, opened as it
//! streams in and written at its offsets, its plaintext checked against the CRC-32 the key or
//! index promises. Failures say what they are: no identity (64), the wrong one (77), damage in
//! the bucket (65, naming the object), or the store (retried).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::chain::Download;
use crate::error::{Error, Exit};
use crate::layout::{Kind, ObjectKey};
use crate::s3::ObjectStore;
use crate::seal::{self, Identities, OpenError};

use super::{Failure, FetchError, Result, classify, short_answer, verify, with_retries};

/// Fetches and opens read `o`, writing its plaintext at its offsets in `out`; returns the
/// CRC-32 of what was written (checked by the caller against the chain's).
pub(super) fn fetch_sealed(
    store: &dyn ObjectStore,
    root: &str,
    o: &Download,
    out: &File,
    identities: Option<&Identities>,
) -> Result<u32> {
    if o.object.seal.encrypted() && o.units.is_empty() {
        return Err(Error::new(
            Exit::Software,
            format!("internal: encrypted object {o} planned without its index"),
        )
        .into());
    }
    with_retries(o, || {
        let (from, to) = o.stored;
        let body = match store.get_range(&o.object.key(root), from, to) {
            Ok(b) if b.len.is_none_or(|l| l == to - from) => b,
            Ok(b) => return Err(short_answer(&o.object, b.len.unwrap_or(0), to - from)),
            Err(e) => return Err(classify(&o.object, o.start, o.end, e)),
        };
        let mut h = crc32fast::Hasher::new();
        let mut pos = o.start;
        let mut reader = body.reader;
        let opened = seal::open(
            &mut reader,
            o.object.seal,
            (&o.units, to - from),
            (identities, o.len()),
            &mut |b| {
                out.write_all_at(b, pos)?;
                h.update(b);
                pos += b.len() as u64;
                Ok(())
            },
        );
        opened.map_err(|e| failure(&o.object, (o.start, o.end), e))?;
        Ok(h.finalize())
    })
}

/// `verify --deep` of sealed object `o` (a whole object): opens it and returns the CRC-32 of
/// its first `len` bytes for each of `marks`, having checked the whole against its key.
pub(super) fn crc_marks(
    store: &dyn ObjectStore,
    root: &str,
    o: &ObjectKey,
    marks: &[u64],
    identities: Option<&Identities>,
) -> Result<Vec<u32>> {
    // Where each point's unit ends is in a merged object's index.
    let units: Vec<u64> = match o.kind {
        Kind::Merged => match crate::bucket::index_of(store, root, o) {
            Ok(line) => (0..line.len()).map(|i| line.entry(i).stored).collect(),
            Err(Ok(why)) => return Err(FetchError::Failed(Error::new(Exit::Data, why))),
            Err(Err(e)) => return Err(Error::s3(&format!("reading the index of {o}"), &e).into()),
        },
        _ => vec![o.stored_len()],
    };
    with_retries(o, || {
        let body = match store.get_range(&o.key(root), 0, o.stored.1) {
            Ok(b) => b,
            Err(e) => return Err(classify(o, o.start, o.end, e)),
        };
        let (mut h, mut at, mut crcs) = (crc32fast::Hasher::new(), 0u64, Vec::new());
        let mut next = marks.iter().copied().peekable();
        let mut reader = body.reader;
        let opened = seal::open(
            &mut reader,
            o.seal,
            (&units, o.stored.1),
            (identities, o.len()),
            &mut |mut b| {
                while !b.is_empty() {
                    while next.peek() == Some(&at) {
                        next.next();
                        crcs.push(h.clone().finalize());
                    }
                    let room = next.peek().map_or(b.len() as u64, |m| m - at);
                    let n = (room as usize).min(b.len());
                    h.update(&b[..n]);
                    at += n as u64;
                    b = &b[n..];
                }
                Ok(())
            },
        );
        opened.map_err(|e| failure(o, (o.start, o.end), e))?;
        while next.next_if(|&m| m == at).is_some() {
            crcs.push(h.clone().finalize());
        }
        match verify(o, (o.start, o.end), h.finalize(), o.crc) {
            Some(e) => Err(Failure::Fatal(e.into())),
            None => Ok(crcs),
        }
    })
}

/// What a failure to open sealed bytes `start..end` of `o` is, in words an operator acts on.
fn failure(o: &ObjectKey, (start, end): (u64, u64), e: OpenError) -> Failure {
    let fatal = |exit, msg: String| Failure::Fatal(Error::new(exit, msg).into());
    match e {
        OpenError::Read(why) => Failure::Transient(why),
        OpenError::NoIdentity => fatal(
            Exit::Usage,
            format!(
                "object {o} is encrypted: give --identity FILE, the age identity whose \
                 recipient persist encrypted to"
            ),
        ),
        OpenError::WrongIdentity(file) => fatal(
            Exit::NoPerm,
            format!(
                "no identity in {file} opens object {o}: it was encrypted to other \
                 recipients (persist's --encrypt-to)"
            ),
        ),
        OpenError::Damaged(why) => fatal(
            Exit::Data,
            format!("object {o} (bytes {start}..{end}) is corrupt: {why}"),
        ),
        OpenError::Write(e) => fatal(
            Exit::Io,
            format!("cannot write bytes {start}..{end} of the output: {e}"),
        ),
    }
}
