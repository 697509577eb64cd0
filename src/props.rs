//! Property tests for every parser that reads outside data: object keys, bucket listings (XML,
//! through rusty-s3), timestamps, Redis manifests and writer leases. Random and mutated inputs,
//! seeded; none may panic, and what is printed must parse back to itself.
//! PETRIFY_PROP_CASES sets the number of cases per parser (default 20000).

use crate::layout::{self, Kind, Mode, ObjectKey};

mod planner;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Mutates a valid input: flips, inserts, deletes and duplicates bytes, or splices in
    /// characters that parsers trip over.
    fn mutate(&mut self, s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        let tricky: &[&[u8]] = &[
            b"/",
            b"..",
            b"\0",
            b"-",
            b".",
            b"9",
            b"\xff",
            b"\xc3\xa9",
            b" ",
            b"<",
            b"&amp;",
            b"]]>",
            b"99999999999999999999",
            b"\n",
            b"type h",
            b"+",
            b"%2F",
        ];
        for _ in 0..1 + self.below(4) {
            let at = self.below(b.len() + 1);
            match self.below(5) {
                0 if !b.is_empty() => {
                    let i = self.below(b.len());
                    b[i] ^= 1 << self.below(8);
                }
                1 => {
                    let t = tricky[self.below(tricky.len())];
                    b.splice(at..at, t.iter().copied());
                }
                2 if at < b.len() => {
                    let end = (at + 1 + self.below(8)).min(b.len());
                    b.drain(at..end);
                }
                3 => {
                    let end = (at + self.below(16)).min(b.len());
                    let dup = b[at..end].to_vec();
                    b.splice(at..at, dup);
                }
                _ => b.truncate(at),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn cases() -> usize {
    std::env::var("PETRIFY_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn random_key(r: &mut Rng) -> ObjectKey {
    let start = r.next() >> r.below(64);
    let len = r.next() >> (r.below(64) as u32).max(1);
    ObjectKey {
        generation: r.next() % 10_000_000_000,
        mode: if r.below(2) == 0 {
            Mode::File
        } else {
            Mode::AofDir
        },
        part: String::new(),
        start,
        end: start.saturating_add(len),
        time_ms: r.next() % 10_000_000_000_000,
        crc: r.next() as u32,
        kind: Kind::Delta,
        seal: crate::layout::Seal::Plain,
        stored: (0, start.saturating_add(len) - start),
        within: None,
    }
}

#[test]
fn object_keys_round_trip_and_never_panic() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..cases() {
        let mut k = random_key(&mut r);
        k.part = match k.mode {
            Mode::File => layout::FILE_PART.into(),
            Mode::AofDir => format!("appendonly.aof.{}.incr.aof", r.below(1000)),
        };
        let printed = k.key("");
        assert_eq!(layout::parse(&printed).as_ref(), Ok(&k), "{printed}");
        let bad = r.mutate(&printed);
        if let Ok(p) = layout::parse(&bad) {
            // Whatever parses is well-formed: a plain part name, an ordered range, and it
            // prints back to exactly the accepted key.
            assert!(
                layout::valid_part_name(&p.part) && p.start <= p.end,
                "{bad:?}"
            );
            assert_eq!(p.key(""), bad);
        }
    }
}

#[test]
fn listings_never_panic() {
    let mut r = Rng(0x0bad_cafe_0000_0001);
    let valid = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>\
        <Prefix>p/petrify-v1/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>\
        <IsTruncated>true</IsTruncated><NextContinuationToken>tok%2B1</NextContinuationToken>\
        <EncodingType>url</EncodingType>\
        <Contents><Key>p/petrify-v1/0000000001-file/file/00000000000000000000-00000000000000000006.1764104645123.e9bb1ce9.delta</Key>\
        <LastModified>2026-11-25T21:04:05.000Z</LastModified><ETag>&quot;x&quot;</ETag><Size>6</Size>\
        <StorageClass>STANDARD</StorageClass></Contents>\
        <Contents><Key>p/petrify-v1/a%2Bb</Key><Size>1</Size></Contents>\
        <CommonPrefixes><Prefix>p/petrify-v1/0000000002-file/</Prefix></CommonPrefixes></ListBucketResult>";
    let (items, token) = crate::s3::parse_listing_page(valid).expect("valid listing");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].key, "p/petrify-v1/a+b");
    assert!(token.is_some());
    let (folders, _) = crate::s3::parse_folder_page(valid).expect("valid listing");
    assert_eq!(folders, ["p/petrify-v1/0000000002-file/"]);
    for _ in 0..cases() {
        let bad = r.mutate(valid);
        let _ = crate::s3::parse_listing_page(&bad);
        let _ = crate::s3::parse_folder_page(&bad);
    }
}

#[test]
fn timestamps_never_panic() {
    let mut r = Rng(0x7777_0000_1111_2222);
    for seed in [
        "2026-11-25T21:04:05.123Z",
        "1764104645.123",
        "2026-11-25T22:04:05+01:00",
    ] {
        assert!(crate::timestamp::parse(seed).is_ok());
        for _ in 0..cases() / 3 {
            if let Ok(ms) = crate::timestamp::parse(&r.mutate(seed)) {
                let printed = crate::timestamp::rfc3339_ms(ms);
                assert_eq!(crate::timestamp::parse(&printed), Ok(ms), "{printed}");
            }
        }
    }
}

#[test]
fn manifests_never_panic_and_never_name_a_path() {
    let mut r = Rng(0x4242_4242_4242_4243);
    let valid = "file appendonly.aof.2.base.rdb seq 2 type h\n\
                 file appendonly.aof.3.base.rdb seq 3 type b\n\
                 file appendonly.aof.3.incr.aof seq 3 type i\n";
    assert!(crate::manifest::parse_manifest(valid.as_bytes()).is_ok());
    for _ in 0..cases() {
        let bad = r.mutate(valid);
        if let Ok(entries) = crate::manifest::parse_manifest(bad.as_bytes()) {
            for e in entries {
                assert!(
                    layout::valid_part_name(&e.name),
                    "{bad:?} gave {:?}",
                    e.name
                );
                assert!(!e.name.contains('/') && e.name != "..");
            }
        }
    }
}

#[test]
fn leases_never_panic() {
    let mut r = Rng(0x1ea5_e000_0000_0001);
    let valid = "petrify-writer-lease 1\nhost db1\npid 42\nsince 1764104645000\nid a-1\n\
                 boot b-1\nstarted 77\nfile /x\n";
    let me = crate::lease::Lease::parse(valid).unwrap();
    for _ in 0..cases() {
        let bad = r.mutate(valid);
        let _ = crate::lease::judge(Some(bad.as_bytes()), &me, |_| None);
        let _ = crate::lease::judge(Some(bad.as_bytes()), &me, |_| {
            Some(crate::lease::ProcInfo {
                started: 77,
                is_petrify: true,
            })
        });
    }
}

/// Whatever keys a bucket holds (mutated, overlapping, out of order, at the ends of the offset
/// space), planning and checking points never panic, and every point `list` would show plans.
#[test]
fn planning_any_keys_never_panics_and_listed_points_plan() {
    let mut r = Rng(0x0c4a_1f00_0000_0001);
    for _ in 0..cases() / 20 {
        let mut keys = Vec::new();
        for _ in 0..1 + r.below(12) {
            let mut k = random_key(&mut r);
            k.generation = 1 + r.below(2) as u64;
            k.mode = Mode::File;
            k.part = layout::FILE_PART.into();
            if let Ok(p) = layout::parse(&r.mutate(&k.key(""))) {
                keys.push(p);
            }
            keys.push(k);
        }
        let gens = crate::chain::generations(keys);
        let points = crate::chain::recovery_points(&gens);
        let _ = crate::chain::choose(&points, Some(r.next()));
        let (good, _) = crate::chain::check_points(&gens, points);
        for p in good {
            let g = gens.iter().find(|g| g.id == p.generation).unwrap();
            for objs in g.parts.values() {
                if objs.iter().any(|o| o.time_ms <= p.time_ms) {
                    assert!(
                        crate::chain::plan_part(objs, p.time_ms).is_ok(),
                        "{p:?} {objs:?}"
                    );
                }
            }
        }
    }
}
