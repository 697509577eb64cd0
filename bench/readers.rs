//! The readers on a planted month: a generation of one-second points (2,592,000 in the full
//! run) in 32 merged objects, each its bytes and then its index, written straight into the
//! server's folder (s3s-fs serves plain files), as a month of compaction at the default spans
//! would leave it. Timed, with their peak memory: `list`, `verify`, `status`, and `recover` of
//! the newest point and of one in the middle (the recovered bytes checked).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::common::{BUCKET, S3, Scratch};
use crate::measure::{self, Table};

/// Merged objects the month is planted in.
const OBJECTS: u64 = 32;

/// What a planted month holds: the file it rebuilds to, and the Unix time (as `list` prints
/// it) of a point in its middle.
pub struct Month {
    pub file: PathBuf,
    pub middle: (String, u64),
}

/// Plants `points` points of 16 bytes each under `prefix`.
pub fn plant(s3: &S3, prefix: &str, points: u64) -> Month {
    let root = s3.dir.path(BUCKET).join(prefix).join("petrify-v1");
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("0000000001-file/file");
    std::fs::create_dir_all(&dir).expect("month folder");
    let t0 = 1_764_104_645_000u64;
    let point = |i: u64| format!("SET k{:09} v\n", i % 1_000_000_000).into_bytes();
    let per = points.div_ceil(OBJECTS);
    let mut all = Vec::with_capacity((points * 16) as usize);
    let mut middle = (String::new(), 0);
    let mut i = 0;
    while i < points {
        let start = all.len() as u64;
        let mut index = String::from("petrify-index 1\n");
        let last = (i + per).min(points);
        while i < last {
            let bytes = point(i);
            all.extend_from_slice(&bytes);
            let t = t0 + i * 1000;
            let _ = writeln!(index, "{} {t} {:08x}", all.len(), crc32fast::hash(&bytes));
            if i == points / 2 {
                middle = (format!("{}.{:03}", t / 1000, t % 1000), all.len() as u64);
            }
            i += 1;
        }
        let end = all.len() as u64;
        let body = &all[start as usize..];
        let name = format!(
            "{start:020}-{end:020}.{:013}.{:08x}.merged",
            t0 + (last - 1) * 1000,
            crc32fast::hash(body)
        );
        let mut object = body.to_vec();
        object.extend_from_slice(index.as_bytes());
        std::fs::write(dir.join(name), object).expect("plant a merged object");
    }
    let file = s3.dir.path(&format!("{prefix}.expected"));
    std::fs::write(&file, &all).expect("the month's bytes");
    Month { file, middle }
}

/// The rows: each reader once on a month of `points` points.
pub fn readers(s3: &S3, work: &Scratch, points: u64, t: &mut Table) {
    let prefix = "planted-month";
    let month = plant(s3, prefix, points);
    let row = |what: &str| format!("planted month, {points} points in {OBJECTS} objects: {what}");
    let petrify = |args: &[&str]| {
        let mut c = s3.petrify();
        c.env("RUST_LOG", "warn")
            .args(args)
            .args(["--bucket", BUCKET, "--prefix", prefix]);
        c
    };
    t.add(&row("list"), "petrify", measure::timed(petrify(&["list"])));
    t.add(
        &row("verify"),
        "petrify",
        measure::timed(petrify(&["verify"])),
    );
    t.add(
        &row("status"),
        "petrify",
        measure::timed(petrify(&["status"])),
    );
    let out = work.path("month-out");
    for (what, at) in [
        ("recover newest", None),
        ("recover middle", Some(&month.middle)),
    ] {
        let _ = std::fs::remove_file(&out);
        let mut c = petrify(&["recover"]);
        c.arg("--file").arg(&out);
        if let Some((unix, _)) = at {
            c.args(["--at-timestamp", unix]);
        }
        t.add(&row(what), "petrify", measure::timed(c));
        let want = match at {
            None => std::fs::read(&month.file).expect("expected"),
            Some((_, len)) => {
                let mut b = std::fs::read(&month.file).expect("expected");
                b.truncate(*len as usize);
                b
            }
        };
        assert!(
            std::fs::read(&out).expect("recovered") == want,
            "{what}: the bytes differ"
        );
    }
    let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join(prefix));
    let _ = std::fs::remove_file(&month.file);
}
