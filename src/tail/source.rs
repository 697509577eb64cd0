//! Reading the followed file's bytes for an upload: positioned reads that fail rather than come
//! up short, CRC-32s of ranges, and [`RangeReader`], the body of a streamed PUT, which ends in
//! an error (never early) if the file shrank or changed under it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use super::proof::Capture;

pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            )
        } else {
            e
        }
    })
}

/// A file's modification time in Unix milliseconds (0 if the system cannot say).
pub fn mtime_ms(file: &File) -> u64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CRC-32 of the first `end` bytes of a file (to check that a chain can be continued).
pub fn crc_prefix(file: &File, end: u64) -> io::Result<u32> {
    crc_range(file, 0, end)
}

pub(super) fn crc_range(file: &File, start: u64, end: u64) -> io::Result<u32> {
    hash_range(file, start, end).map(crc32fast::Hasher::finalize)
}

/// CRC-32 state of `[start, end)` of a file, to combine with others.
pub(super) fn hash_range(file: &File, start: u64, end: u64) -> io::Result<crc32fast::Hasher> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        read_exact_at(file, &mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h)
}

/// Streams `[pos, end)` of a file by positioned reads. Ends in an error, never early: ureq would
/// spin on a short body, and a body whose CRC no longer matches its key must not be stored, so
/// the last read fails instead of completing the request.
pub(super) struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    hasher: crc32fast::Hasher,
    expect: u32,
    capture: Capture,
    /// The error this reader returned, if any.
    failed: Option<(io::ErrorKind, String)>,
}

impl<'a> RangeReader<'a> {
    /// `[start, end)` of `file`, which must have CRC-32 `expect`.
    pub(super) fn new(file: &'a File, start: u64, end: u64, expect: u32) -> RangeReader<'a> {
        RangeReader {
            file,
            pos: start,
            end,
            hasher: crc32fast::Hasher::new(),
            expect,
            capture: Capture::new(start, end),
            failed: None,
        }
    }

    /// The error this reader ended the body with, if it did.
    pub(super) fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, what)| io::Error::new(*kind, what.clone()))
    }

    /// What the file's witness keeps of the bytes read.
    pub(super) fn into_capture(self) -> Capture {
        self.capture
    }

    fn next_bytes(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = ((self.end - self.pos) as usize).min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank during the upload",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.capture.feed(self.pos, &buf[..n]);
        self.pos += n as u64;
        if self.pos == self.end && self.hasher.clone().finalize() != self.expect {
            return Err(io::Error::other("the file changed during the upload"));
        }
        Ok(n)
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.next_bytes(buf).inspect_err(|e| {
            self.failed = Some((e.kind(), e.to_string()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_reader_refuses_short_or_changed_files() {
        let dir = std::env::temp_dir().join(format!("petrify-rr-{}", std::process::id()));
        std::fs::write(&dir, b"hello world").unwrap();
        let f = File::open(&dir).unwrap();
        let read = |end: u64, expect: u32| {
            let mut r = RangeReader {
                file: &f,
                pos: 0,
                end,
                hasher: crc32fast::Hasher::new(),
                expect,
                capture: Capture::new(0, end),
                failed: None,
            };
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        };
        assert_eq!(
            read(11, crc32fast::hash(b"hello world")).unwrap(),
            b"hello world"
        );
        assert!(read(11, 1).is_err());
        assert!(read(20, 1).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
