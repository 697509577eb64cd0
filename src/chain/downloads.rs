//! From a planned chain to downloads: consecutive points held by one merged object become one
//! ranged GET of it, so a point inside a month of compacted history costs as many requests as
//! there are objects, not points.

use std::fmt;
use std::ops::Range;

use crate::layout::{Kind, ObjectKey};

/// One download: bytes `[start, end)` of a part, stored from byte `at` of `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The object in the bucket (a delta, a snapshot, or a merged object).
    pub object: ObjectKey,
    pub start: u64,
    pub end: u64,
    /// Where `start` is in the object.
    pub at: u64,
    /// CRC-32 of the bytes read.
    pub crc: u32,
    /// The bytes to GET from the object, as stored (`in_object(start, end)` when plain).
    pub stored: (u64, u64),
    /// For a sealed object: each point's stored length, in order (its units, see
    /// [`crate::seal`]); empty when plain, or for a compressed object read whole without its
    /// index (one run of frames).
    pub units: Vec<u64>,
}

impl Download {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the read is the whole object (a plain GET); otherwise a ranged one. A merged
    /// object always ends with its index, so it is never read whole.
    pub fn whole(&self) -> bool {
        self.object.kind != Kind::Merged && self.stored == self.object.stored
    }

    /// Whether the bytes are stored sealed (they are then opened, not copied).
    pub fn sealed(&self) -> bool {
        self.object.seal != crate::layout::Seal::Plain
    }

    /// `[from, to)` of the part (inside the read) as offsets in the object.
    pub fn in_object(&self, from: u64, to: u64) -> (u64, u64) {
        (from - self.start + self.at, to - self.start + self.at)
    }
}

impl fmt::Display for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.whole() {
            true => write!(f, "{}", self.object),
            false => write!(f, "{} (bytes {}..{})", self.object, self.start, self.end),
        }
    }
}

/// `chain` (from `plan_part`) cut into runs of consecutive points held by one object: one run
/// per object the chain stands on. The points of a run are consecutive as stored too: a chain
/// that passes over a point with no bytes of its own (the empty object a generation starts
/// with) would otherwise read its sealed unit as part of the next one's.
pub fn runs(chain: &[ObjectKey]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, o) in chain.iter().enumerate() {
        if let Some(last) = out.last_mut()
            && o.within.is_some()
            && chain[last.start].holder() == o.holder()
            && chain[i - 1].end == o.start
            && chain[i - 1].stored.1 == o.stored.0
        {
            last.end = i + 1;
            continue;
        }
        out.push(i..i + 1);
    }
    out
}

/// The downloads for `chain` (from `plan_part`), in order: the consecutive points of one
/// merged object are one read, their CRCs combined.
pub fn downloads(chain: &[ObjectKey]) -> Vec<Download> {
    runs(chain)
        .into_iter()
        .map(|run| {
            let points = &chain[run];
            let (first, last) = (&points[0], &points[points.len() - 1]);
            let holder = first.holder();
            let units = match (holder.seal, first.within.is_some()) {
                (crate::layout::Seal::Plain, _) => Vec::new(),
                (_, true) => points.iter().map(ObjectKey::stored_len).collect(),
                // A sealed merged object read whole has no units known (see `bucket`); a
                // delta or a snapshot is one.
                (_, false) if holder.kind == Kind::Merged => Vec::new(),
                (_, false) => vec![holder.stored_len()],
            };
            Download {
                object: holder.clone(),
                start: first.start,
                end: last.end,
                at: first.start - holder.start,
                crc: points
                    .iter()
                    .skip(1)
                    .fold(first.crc, |crc, o| crate::crc::combine(crc, o.crc, o.len())),
                stored: (first.stored.0, last.stored.1),
                units,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::delta;
    use crate::layout::index::{Entry, Line};

    #[test]
    fn points_of_one_merged_object_are_one_ranged_read() {
        let data = b"0123456789abcdefghij";
        let mut m = delta(1, 4, 16, 300);
        m.kind = Kind::Merged;
        m.crc = crc32fast::hash(&data[4..16]);
        let e = |end: usize, t| Entry {
            end: end as u64,
            time_ms: t,
            crc: crc32fast::hash(&data[if end == 9 { 4 } else { 9 }..end]),
            stored: (end - if end == 9 { 4 } else { 9 }) as u64,
        };
        let inside = Line::new(&m, &[e(9, 200), e(16, 300)]).pieces();
        let mut first = delta(1, 0, 4, 100);
        first.crc = crc32fast::hash(&data[..4]);
        let mut last = delta(1, 16, 20, 400);
        last.crc = crc32fast::hash(&data[16..]);

        // The newest point: three reads, the middle one all of the merged bytes.
        let chain = vec![first.clone(), inside[0].clone(), inside[1].clone(), last];
        let r = downloads(&chain);
        assert_eq!(r.len(), 3);
        assert!(r[0].whole() && r[2].whole());
        assert!(!r[1].whole(), "a merged object carries its index: ranged");
        assert_eq!((r[1].start, r[1].end, r[1].at), (4, 16, 0));
        assert_eq!(r[1].crc, m.crc);
        assert_eq!(r[1].in_object(4, 16), (0, 12));

        // A point inside it: the prefix only, its CRC from the index.
        let r = downloads(&[first, inside[0].clone()]);
        assert_eq!((r[1].start, r[1].end), (4, 9));
        assert_eq!(r[1].crc, crc32fast::hash(&data[4..9]));
        assert_eq!(r[1].object.key(""), m.key(""));
    }

    #[test]
    fn a_point_with_no_bytes_passed_over_splits_a_sealed_read() {
        let mut m = delta(1, 0, 9, 300);
        m.kind = Kind::Merged;
        m.seal = crate::layout::Seal::Zstd;
        m.stored = (0, 120);
        let e = |end, time_ms, stored| Entry {
            end,
            time_ms,
            crc: 0,
            stored,
        };
        let p = Line::new(&m, &[e(5, 100, 40), e(5, 200, 30), e(9, 300, 50)]).pieces();
        let whole = downloads(&p);
        assert_eq!(whole.len(), 1);
        assert_eq!(
            (whole[0].stored, whole[0].units.clone()),
            ((0, 120), vec![40, 30, 50])
        );
        // The empty point passed over: its unit is not read as part of the next.
        let r = downloads(&[p[0].clone(), p[2].clone()]);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].stored, r[0].units.clone()), ((0, 40), vec![40]));
        assert_eq!((r[1].stored, r[1].units.clone()), ((70, 120), vec![50]));
    }
}
