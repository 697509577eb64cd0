//! The index at the end of a merged object, as an upload body: built from the inputs' points
//! kept in memory, or streamed from their own indexes and checked line by line on the way.

use std::io::{self, Read};

use crate::layout::Kind;
use crate::layout::index::{self, Entry};
use crate::s3::ObjectStore;

use super::super::held::Held;
use super::super::upload::UploadError;

/// The index of a merged object as a body: the header, each input's lines (from memory, or
/// streamed from its own index and checked on the way), the new points' lines.
pub(super) struct IndexBody {
    /// In-memory text not sent yet, then streamed inputs, in order.
    segments: std::collections::VecDeque<Segment>,
    pub(super) len: u64,
    /// Every entry, when all were in memory (for the next merge, and the body's CRC).
    pub(super) kept: Option<Vec<Entry>>,
    text_crc: Option<u32>,
}

enum Segment {
    Text(io::Cursor<Vec<u8>>),
    Stream(Checked),
}

impl IndexBody {
    pub(super) fn open(
        store: &dyn ObjectStore,
        root: &str,
        inputs: &[Held],
        new: &[Entry],
    ) -> Result<IndexBody, UploadError> {
        let mut segments = std::collections::VecDeque::new();
        let mut text: Vec<u8> = index::render(&[], false);
        let mut kept: Option<Vec<Entry>> = Some(Vec::new());
        let mut len = 0u64;
        // A piece of a point that never closed is no point: its bytes go into the next line,
        // so that every index line is a point a reader may offer.
        let mut carried: Option<(u32, u64)> = None;
        for h in inputs {
            if h.object.kind == Kind::Piece && h.open {
                carried = Some(carry(carried, h.crc, h.len()));
                continue;
            }
            match &h.entries {
                Some(e) => {
                    let mut e = e.clone();
                    if let (Some(first), Some(c)) = (e.first_mut(), carried.take()) {
                        first.crc = carry(Some(c), first.crc, first.end - h.start).0;
                    }
                    let lines = index::render(&e, false);
                    text.extend_from_slice(&lines[index::HEADER.len()..]);
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(&e);
                    }
                }
                None => {
                    if !h.whole() || carried.is_some() {
                        return Err(UploadError::Read(io::Error::other(
                            "part of a large merged object cannot be merged again",
                        )));
                    }
                    kept = None;
                    len += text.len() as u64;
                    segments.push_back(Segment::Text(io::Cursor::new(std::mem::take(&mut text))));
                    let body = store.get_from(&h.object.key(root), h.object.len())?;
                    let Some(body_len) = body.len else {
                        return Err(UploadError::Read(io::Error::other(
                            "the store did not say how long an index is",
                        )));
                    };
                    let lines = body_len
                        .checked_sub(index::HEADER.len() as u64)
                        .ok_or_else(|| {
                            UploadError::Read(io::Error::other("an index shorter than its header"))
                        })?;
                    len += lines;
                    segments.push_back(Segment::Stream(Checked::new(body.reader, h, lines)));
                }
            }
        }
        let mut new = new.to_vec();
        if let (Some(c), Some(first)) = (carried, new.first_mut()) {
            let from = inputs.last().map_or(first.end, |h| h.end);
            first.crc = carry(Some(c), first.crc, first.end - from).0;
        }
        let lines = index::render(&new, false);
        text.extend_from_slice(&lines[index::HEADER.len()..]);
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&new);
        }
        len += text.len() as u64;
        let text_crc = kept.is_some().then(|| crc32fast::hash(&text));
        segments.push_back(Segment::Text(io::Cursor::new(text)));
        Ok(IndexBody {
            segments,
            len,
            kept,
            text_crc,
        })
    }

    /// The CRC-32 of the whole index, when it is all in memory.
    pub(super) fn crc(&self) -> Option<u32> {
        self.text_crc
    }

    /// The CRC-32 of the whole index, read through (checked on the way, like a send).
    pub(super) fn crc_of_all(mut self) -> Result<u32, UploadError> {
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = self.read(&mut buf).map_err(UploadError::Read)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        if total != self.len {
            return Err(UploadError::Read(io::Error::other(
                "an index is not as long as the store said",
            )));
        }
        Ok(hasher.finalize())
    }
}

/// The CRC-32 and length of bytes carried so far followed by `len` bytes of CRC-32 `crc`.
fn carry(carried: Option<(u32, u64)>, crc: u32, len: u64) -> (u32, u64) {
    match carried {
        Some((c, l)) => (crate::crc::combine(c, crc, len), l + len),
        None => (crc, len),
    }
}

impl Read for IndexBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(seg) = self.segments.front_mut() {
            let n = match seg {
                Segment::Text(c) => c.read(buf)?,
                Segment::Stream(s) => s.read(buf)?,
            };
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.segments.pop_front();
        }
        Ok(0)
    }
}

/// An input's index lines streamed from the bucket, checked as they pass: they must continue
/// the input's range from its start, and end at its end, time and CRC. Anything else fails the
/// read, and with it the upload: a merged object is never stored with an index that does not
/// hold.
struct Checked {
    body: Box<dyn Read + Send>,
    header_left: usize,
    left: u64,
    line: Vec<u8>,
    at: u64,
    last_ms: u64,
    crc: u32,
    want: (u64, u64, u32),
}

impl Checked {
    fn new(body: Box<dyn Read + Send>, h: &Held, lines: u64) -> Checked {
        Checked {
            body,
            header_left: index::HEADER.len(),
            left: lines,
            line: Vec::new(),
            at: h.start,
            last_ms: h.first_ms,
            crc: 0,
            want: (h.end, h.last_ms, h.crc),
        }
    }

    fn check_line(&mut self) -> io::Result<()> {
        let bad = || io::Error::other("an index read back does not hold");
        let text = std::str::from_utf8(&self.line).map_err(|_| bad())?;
        let mut f = text.trim_end_matches('\n').split(' ');
        let (Some(e), Some(t), Some(c), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad());
        };
        let e: u64 = e.parse().map_err(|_| bad())?;
        let t: u64 = t.parse().map_err(|_| bad())?;
        let c = u32::from_str_radix(c, 16).map_err(|_| bad())?;
        if e < self.at || t < self.last_ms {
            return Err(bad());
        }
        self.crc = crate::crc::combine(self.crc, c, e - self.at);
        (self.at, self.last_ms) = (e, t);
        self.line.clear();
        Ok(())
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.header_left > 0 {
            let mut skip = vec![0; self.header_left];
            let n = self.body.read(&mut skip)?;
            if n == 0 {
                return Err(io::Error::other("an index ended in its header"));
            }
            self.header_left -= n;
        }
        if self.left == 0 || buf.is_empty() {
            if self.left == 0 && (self.at, self.last_ms, self.crc) != self.want {
                return Err(io::Error::other(
                    "an index read back does not match its object",
                ));
            }
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other("an index ended early"));
        }
        for &b in &buf[..n] {
            self.line.push(b);
            if b == b'\n' {
                self.check_line()?;
            }
        }
        self.left -= n as u64;
        if self.left == 0
            && (!self.line.is_empty() || (self.at, self.last_ms, self.crc) != self.want)
        {
            return Err(io::Error::other(
                "an index read back does not match its object",
            ));
        }
        Ok(n)
    }
}
