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
//!
//! A sealed merged object (see [`crate::seal`]) has version 2, whose lines carry one more field,
//! the point's stored length: `<end> <time> <crc> <stored>`. Each point's stored bytes are
//! sealed on their own (whole zstd frames, one age file), so the point at line N is the
//! object's first `stored_1 + ... + stored_N` bytes, one ranged GET still, and opens without
//! the points before it. The lengths add up to the key's stored length; lines pass into a
//! merge of merged objects unchanged.

use std::sync::Arc;

use super::{Kind, ObjectKey, Seal};

/// The first line of every index of a plain merged object.
pub const HEADER: &str = "petrify-index 1\n";
/// The first line of every index of a sealed merged object.
pub const HEADER_SEALED: &str = "petrify-index 2\n";

/// The first line of `merged`'s index (both headers are as long).
pub fn header(merged: &ObjectKey) -> &'static str {
    match merged.seal {
        Seal::Plain => HEADER,
        _ => HEADER_SEALED,
    }
}

/// One recovery point inside a merged object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub end: u64,
    pub time_ms: u64,
    /// CRC-32 of the bytes since the previous entry.
    pub crc: u32,
    /// Those bytes' length as stored (their length when plain).
    pub stored: u64,
}

/// The index text for `entries` of a merged object `sealed` or not.
pub fn render(entries: &[Entry], sealed: bool) -> Vec<u8> {
    let mut s = String::with_capacity(HEADER.len() + entries.len() * 44);
    s.push_str(if sealed { HEADER_SEALED } else { HEADER });
    for e in entries {
        match sealed {
            true => s.push_str(&format!(
                "{} {} {:08x} {}\n",
                e.end, e.time_ms, e.crc, e.stored
            )),
            false => s.push_str(&format!("{} {} {:08x}\n", e.end, e.time_ms, e.crc)),
        }
    }
    s.into_bytes()
}

/// The entries of `merged`'s index, checked against its key: ranges that start at its start,
/// never go back, end at its end, times that never go back and end at its time, and CRCs that
/// combine to its CRC. The error says what is wrong, for `verify` and the WARN.
#[cfg(test)]
pub fn parse(text: &[u8], merged: &ObjectKey) -> Result<Line, String> {
    let mut p = Parser::new(merged, text.len() as u64);
    for line in text.split_inclusive(|&b| b == b'\n') {
        p.feed(line)?;
    }
    p.finish()
}

/// Reads an index one line at a time, so that a month of points never sits in memory as text:
/// what reading a merged object's index from the store streams into.
pub struct Parser {
    line: Line,
    n: usize,
    header: bool,
    /// Bytes of an unfinished last line (no newline yet).
    open: bool,
    end: u64,
    time: u64,
    crc: u32,
    stored: u64,
}

impl Parser {
    /// For `merged`'s index of about `size` bytes (to size the entries once).
    pub fn new(merged: &ObjectKey, size: u64) -> Parser {
        // A line is about 33 bytes ("END TIME CRC"): reserving for that avoids regrowing a
        // month of entries (and holding the old and new copies at once).
        let guess = usize::try_from(size / 30).unwrap_or(0).min(1 << 20);
        Parser {
            line: Line {
                merged: Arc::new(merged.clone()),
                ends: Vec::with_capacity(guess),
                times: Times::Before(Vec::with_capacity(guess)),
                crcs: Vec::with_capacity(guess),
                stored: Vec::new(),
            },
            n: 0,
            header: false,
            open: false,
            end: merged.start,
            time: 0,
            crc: 0,
            stored: 0,
        }
    }

    /// One line of the index text, with its newline (the last may lack it).
    pub fn feed(&mut self, raw: &[u8]) -> Result<(), String> {
        self.n += 1;
        if self.open {
            return Err(format!(
                "index line {}: after a line with no newline",
                self.n
            ));
        }
        let text = std::str::from_utf8(raw).map_err(|_| "the index is not text".to_string())?;
        let text = match text.strip_suffix('\n') {
            Some(t) => t,
            None => {
                self.open = true;
                text
            }
        };
        let merged = &self.line.merged;
        let sealed = merged.seal != Seal::Plain;
        if !self.header {
            let want = header(merged);
            if format!("{text}\n") != want || self.open {
                return Err(format!(
                    "the index does not start with {:?}",
                    want.trim_end()
                ));
            }
            self.header = true;
            return Ok(());
        }
        let bad = |why: &str| format!("index line {}: {why}", self.n);
        let mut f = text.split(' ');
        let (Some(e), Some(t), Some(c)) = (f.next(), f.next(), f.next()) else {
            return Err(bad("not END TIME CRC"));
        };
        let stored = match (sealed, f.next(), f.next()) {
            (false, None, _) => None,
            (true, Some(s), None) => Some(s.parse::<u64>().map_err(|_| bad("bad stored length"))?),
            (false, ..) => return Err(bad("not END TIME CRC")),
            (true, ..) => return Err(bad("not END TIME CRC STORED")),
        };
        let e: u64 = e.parse().map_err(|_| bad("bad end"))?;
        let t: u64 = t.parse().map_err(|_| bad("bad time"))?;
        if c.len() != 8 || !c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("bad CRC"));
        }
        let c = u32::from_str_radix(c, 16).map_err(|_| bad("bad CRC"))?;
        if e < self.end || e > merged.end {
            return Err(bad("end outside the object or going back"));
        }
        if t < self.time || t > merged.time_ms {
            return Err(bad("time going back or after the object's"));
        }
        if let Some(s) = stored {
            self.stored = self
                .stored
                .checked_add(s)
                .filter(|&at| at <= merged.stored.1)
                .ok_or_else(|| bad("stored bytes past the object's"))?;
        }
        let own = e - self.end;
        self.crc = crate::crc::combine(self.crc, c, own);
        (self.end, self.time) = (e, t);
        self.line.push(Entry {
            end: e,
            time_ms: t,
            crc: c,
            stored: stored.unwrap_or(own),
        });
        Ok(())
    }

    /// The index, once every line was fed.
    pub fn finish(mut self) -> Result<Line, String> {
        let merged = &self.line.merged;
        if !self.header {
            return Err(format!(
                "the index does not start with {:?}",
                header(merged).trim_end()
            ));
        }
        if merged.seal != Seal::Plain && self.stored != merged.stored.1 {
            return Err("the index's stored lengths do not add up to the object's".into());
        }
        if self.end != merged.end || self.time != merged.time_ms {
            return Err("the last index line is not the object's end and time".into());
        }
        if self.crc != merged.crc {
            return Err("the index's CRCs do not combine to the object's".into());
        }
        self.line.shrink();
        Ok(self.line)
    }
}

/// The points of one merged object, read from its index: 16 bytes a point (its end, its time
/// as milliseconds before the object's, its CRC-32), so that readers of a month of one-second
/// points stay small. Entries are in index order: ends and times never go back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub merged: Arc<ObjectKey>,
    ends: Vec<u64>,
    times: Times,
    crcs: Vec<u32>,
    /// For a sealed object: where each point's stored bytes end in it (empty when plain).
    stored: Vec<u64>,
}

/// Entry times: milliseconds before the merged object's time while they fit in 32 bits (a
/// merged object spanning less than 49 days), whole times otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Times {
    Before(Vec<u32>),
    Whole(Vec<u64>),
}

impl Line {
    /// The line of `merged` with these entries (unchecked: a store's are read by [`Parser`]).
    #[cfg(test)]
    pub fn new(merged: &ObjectKey, entries: &[Entry]) -> Line {
        let mut line = Parser::new(merged, 0).line;
        for e in entries {
            line.push(*e);
        }
        line
    }

    fn push(&mut self, e: Entry) {
        let top = self.merged.time_ms;
        if let Times::Before(v) = &mut self.times {
            match u32::try_from(top.saturating_sub(e.time_ms)) {
                Ok(b) => v.push(b),
                Err(_) => {
                    let whole = v.iter().map(|&b| top - u64::from(b)).collect();
                    self.times = Times::Whole(whole);
                }
            }
        }
        if let Times::Whole(v) = &mut self.times {
            v.push(e.time_ms);
        }
        if self.merged.seal != Seal::Plain {
            let at = self.stored.last().copied().unwrap_or(0);
            self.stored.push(at + e.stored);
        }
        self.ends.push(e.end);
        self.crcs.push(e.crc);
    }

    fn shrink(&mut self) {
        self.ends.shrink_to_fit();
        self.crcs.shrink_to_fit();
        self.stored.shrink_to_fit();
        match &mut self.times {
            Times::Before(v) => v.shrink_to_fit(),
            Times::Whole(v) => v.shrink_to_fit(),
        }
    }

    /// How many points the object holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The part's length at each point, in order.
    pub fn ends(&self) -> &[u64] {
        &self.ends
    }

    /// Where point `i`'s own bytes start: the previous point's end, or the object's start.
    pub fn start_of(&self, i: usize) -> u64 {
        match i {
            0 => self.merged.start,
            _ => self.ends[i - 1],
        }
    }

    pub fn time_of(&self, i: usize) -> u64 {
        match &self.times {
            Times::Before(v) => self.merged.time_ms - u64::from(v[i]),
            Times::Whole(v) => v[i],
        }
    }

    /// Point `i`'s own stored bytes in the object.
    pub fn stored_of(&self, i: usize) -> (u64, u64) {
        match self.stored.is_empty() {
            // Plain: where its bytes are.
            true => (
                self.start_of(i) - self.merged.start,
                self.ends[i] - self.merged.start,
            ),
            false => (
                i.checked_sub(1).map_or(0, |j| self.stored[j]),
                self.stored[i],
            ),
        }
    }

    pub fn entry(&self, i: usize) -> Entry {
        let (a, b) = self.stored_of(i);
        Entry {
            end: self.ends[i],
            time_ms: self.time_of(i),
            crc: self.crcs[i],
            stored: b - a,
        }
    }

    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Point `i` as an object of its own (see [`pieces`]).
    pub fn piece(&self, i: usize) -> ObjectKey {
        let e = self.entry(i);
        ObjectKey {
            generation: self.merged.generation,
            mode: self.merged.mode,
            part: self.merged.part.clone(),
            start: self.start_of(i),
            end: e.end,
            time_ms: e.time_ms,
            crc: e.crc,
            kind: Kind::Delta,
            seal: self.merged.seal,
            stored: self.stored_of(i),
            within: Some(self.merged.clone()),
        }
    }

    /// Every point as an object of its own: what planning one chain works on.
    pub fn pieces(&self) -> Vec<ObjectKey> {
        (0..self.len()).map(|i| self.piece(i)).collect()
    }

    /// The first point whose own bytes start at `offset`, if any: where a chain that reached
    /// `offset` enters the object.
    pub fn entered_at(&self, offset: u64) -> Option<usize> {
        if self.merged.start == offset {
            return (!self.is_empty()).then_some(0);
        }
        let i = self.ends.partition_point(|&e| e < offset);
        (i + 1 < self.len() && self.ends[i] == offset).then_some(i + 1)
    }
}

/// The entry a delta stands for, once merged.
pub fn of_delta(o: &ObjectKey) -> Entry {
    Entry {
        end: o.end,
        time_ms: o.time_ms,
        crc: o.crc,
        stored: o.stored_len(),
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
            seal: crate::layout::Seal::Plain,
            stored: (0, data.len() as u64),
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
                stored: 8,
            },
            Entry {
                end: 108,
                time_ms: 2000,
                crc: crc32fast::hash(b""),
                stored: 0,
            },
            Entry {
                end: 124,
                time_ms: 3000,
                crc: crc32fast::hash(&data[8..]),
                stored: 16,
            },
        ];
        let text = render(&e, false);
        assert!(text.starts_with(b"petrify-index 1\n108 1000 "));
        assert_eq!(parse(&text, &m).unwrap().entries().collect::<Vec<_>>(), e);
        let p = Line::new(&m, &e).pieces();
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
