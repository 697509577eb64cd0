//! The index at the end of a `merged` object: what locates and checks each recovery point whose
//! bytes compaction merged into one object. Plain text, so that an operator can read it with
//! `tail -c` and no petrify:
//!
//! ```text
//! petrify-index 1
//! <end> <time> <crc>
//! ...
//! ```
//!
//! One line per point, in order: the part's length `end` at that point (decimal), the time it
//! was observed (Unix milliseconds) and the CRC-32 (8 lowercase hex digits) of the bytes since
//! the point before (the object's `start` for the first line). The last line is the object's
//! own `end` and `time`; the lines' CRCs combine to the object's. The object holds the bytes
//! `[start, end)` first, then this text: the point at line N is the object's first
//! `end_N - start` bytes, one ranged GET.

use std::sync::Arc;

use super::{Kind, ObjectKey};

/// The first line of every index.
pub const HEADER: &str = "petrify-index 1\n";

/// One recovery point inside a merged object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub end: u64,
    pub time_ms: u64,
    /// CRC-32 of the bytes since the previous entry.
    pub crc: u32,
}

/// The index text for `entries`.
pub fn render(entries: &[Entry]) -> Vec<u8> {
    let mut s = String::with_capacity(HEADER.len() + entries.len() * 36);
    s.push_str(HEADER);
    for e in entries {
        s.push_str(&format!("{} {} {:08x}\n", e.end, e.time_ms, e.crc));
    }
    s.into_bytes()
}

/// The entries of `merged`'s index, checked against its key: ranges that start at its start,
/// never go back, end at its end, times that never go back and end at its time, and CRCs that
/// combine to its CRC. The error says what is wrong, for `verify` and the WARN.
pub fn parse(text: &[u8], merged: &ObjectKey) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the index is not text".to_string())?;
    let body = text
        .strip_prefix(HEADER)
        .ok_or_else(|| "the index does not start with \"petrify-index 1\"".to_string())?;
    let mut out = Vec::new();
    let (mut end, mut time) = (merged.start, 0u64);
    let mut crc = 0u32;
    for (n, line) in body.lines().enumerate() {
        let bad = |why: &str| format!("index line {}: {why}", n + 2);
        let mut f = line.split(' ');
        let (Some(e), Some(t), Some(c), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad("not END TIME CRC"));
        };
        let e: u64 = e.parse().map_err(|_| bad("bad end"))?;
        let t: u64 = t.parse().map_err(|_| bad("bad time"))?;
        if c.len() != 8 || !c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("bad CRC"));
        }
        let c = u32::from_str_radix(c, 16).map_err(|_| bad("bad CRC"))?;
        if e < end || e > merged.end {
            return Err(bad("end outside the object or going back"));
        }
        if t < time || t > merged.time_ms {
            return Err(bad("time going back or after the object's"));
        }
        crc = crate::crc::combine(crc, c, e - end);
        (end, time) = (e, t);
        out.push(Entry {
            end: e,
            time_ms: t,
            crc: c,
        });
    }
    if end != merged.end || time != merged.time_ms {
        return Err("the last index line is not the object's end and time".into());
    }
    if crc != merged.crc {
        return Err("the index's CRCs do not combine to the object's".into());
    }
    Ok(out)
}

/// Each point of a merged object as an object of its own (kind `delta`, `within` the merged
/// one): what chain planning works on.
pub fn pieces(merged: &Arc<ObjectKey>, entries: &[Entry]) -> Vec<ObjectKey> {
    let mut start = merged.start;
    entries
        .iter()
        .map(|e| {
            let p = ObjectKey {
                generation: merged.generation,
                mode: merged.mode,
                part: merged.part.clone(),
                start,
                end: e.end,
                time_ms: e.time_ms,
                crc: e.crc,
                kind: Kind::Delta,
                within: Some(merged.clone()),
            };
            start = e.end;
            p
        })
        .collect()
}

/// The entry a delta stands for, once merged.
pub fn of_delta(o: &ObjectKey) -> Entry {
    Entry {
        end: o.end,
        time_ms: o.time_ms,
        crc: o.crc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FILE_PART, Mode};

    fn merged(data: &[u8], start: u64, time_ms: u64) -> ObjectKey {
        ObjectKey {
            generation: 1,
            mode: Mode::File,
            part: FILE_PART.into(),
            start,
            end: start + data.len() as u64,
            time_ms,
            crc: crc32fast::hash(data),
            kind: Kind::Merged,
            within: None,
        }
    }

    #[test]
    fn round_trips_and_checks_against_the_key() {
        let data = b"SET a 1\nSET b 2\nSET c 3\n";
        let m = merged(data, 100, 3000);
        let e = vec![
            Entry {
                end: 108,
                time_ms: 1000,
                crc: crc32fast::hash(&data[..8]),
            },
            Entry {
                end: 108,
                time_ms: 2000,
                crc: crc32fast::hash(b""),
            },
            Entry {
                end: 124,
                time_ms: 3000,
                crc: crc32fast::hash(&data[8..]),
            },
        ];
        let text = render(&e);
        assert!(text.starts_with(b"petrify-index 1\n108 1000 "));
        assert_eq!(parse(&text, &m).unwrap(), e);
        let p = pieces(&Arc::new(m.clone()), &e);
        assert_eq!(
            p.iter().map(|o| (o.start, o.end)).collect::<Vec<_>>(),
            [(100, 108), (108, 108), (108, 124)]
        );
        assert_eq!(p[2].key("r/"), m.key("r/"));

        // Each kind of damage is refused, with words.
        let mut other = m.clone();
        other.crc ^= 1;
        assert!(parse(&text, &other).unwrap_err().contains("combine"));
        other = m.clone();
        other.end = 125;
        assert!(
            parse(&text, &other)
                .unwrap_err()
                .contains("last index line")
        );
        let flipped = String::from_utf8(text.clone())
            .unwrap()
            .replace("108 2000", "107 2000");
        assert!(parse(flipped.as_bytes(), &m).is_err());
        assert!(parse(b"petrify-index 2\n", &m).is_err());
        assert!(parse(&text[..text.len() - 3], &m).is_err());
        assert!(parse(b"\xff", &m).is_err());
    }
}
