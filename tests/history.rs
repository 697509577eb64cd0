//! The history in the bucket, read and judged: `verify` names each kind of damage (and passes
//! an undamaged prefix), against a real s3s-fs whose folder the test damages by hand.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// A chain of five deltas under `prefix`, persisted for real; returns the file's bytes.
fn five_deltas(s3: &S3, work: &Scratch, prefix: &str) -> Vec<u8> {
    let file = work.path(prefix);
    std::fs::write(&file, b"").unwrap();
    let p = s3.persist(prefix, &file, "0.05");
    let mut content = Vec::new();
    for i in 0..5 {
        content = s3.append_and_wait(prefix, &file, format!("line {i} of {prefix}\n").as_bytes());
    }
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    content
}

fn verify(s3: &S3, prefix: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify", "--bucket", BUCKET, "--prefix", prefix];
    args.extend_from_slice(extra);
    let out = s3.run(&args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The object holding `[start, ..)` of generation 1, below `petrify-v1/`.
fn object_at(s3: &S3, prefix: &str, start: u64) -> Obj {
    s3.ranges(prefix)
        .into_iter()
        .find(|o| o.start == start && o.end > start)
        .expect("an object at that offset")
}

#[test]
fn verify_names_each_kind_of_damage() {
    let s3 = S3::start();
    let work = Scratch::new("verify");
    let content = five_deltas(&s3, &work, "ok");
    let (code, out, err) = verify(&s3, "ok", &["--deep"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.is_empty(), "{out}");

    // A flipped byte: the keys cannot see it, --deep does, and names the object.
    five_deltas(&s3, &work, "flip");
    let victim = object_at(&s3, "flip", 0);
    let path = s3.object_path("flip", &victim.key);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(verify(&s3, "flip", &[]).0, 0);
    let (code, out, _) = verify(&s3, "flip", &["--deep"]);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.contains(&victim.key) && out.contains("corrupt"),
        "{out}"
    );

    // A deleted object: every point from it on is named, with the gap.
    five_deltas(&s3, &work, "gap");
    let second = object_at(&s3, "gap", b"line 0 of gap\n".len() as u64);
    std::fs::remove_file(s3.object_path("gap", &second.key)).unwrap();
    let (code, out, err) = verify(&s3, "gap", &[]);
    assert_eq!(code, 65, "{out}");
    assert!(out.lines().all(|l| l.starts_with("BROKEN point")), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}"); // the 3 points after the hole
    assert!(err.contains("problem(s) found"), "{err}");
    // The point before the hole is fine: verify of that point alone passes.
    let before = s3.list_raw("gap");
    let first_point = before
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert_eq!(
        verify(&s3, "gap", &["--at-timestamp", first_point, "--deep"]).0,
        0
    );

    // Two objects holding the same range with different CRCs.
    five_deltas(&s3, &work, "twice");
    let o = object_at(&s3, "twice", 0);
    let path = s3.object_path("twice", &o.key);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let f: Vec<&str> = name.split('.').collect();
    let other = format!("{}.{}.{}.delta", f[0], o.time_ms + 1, "00000000");
    std::fs::copy(&path, path.with_file_name(&other)).unwrap();
    let (code, out, _) = verify(&s3, "twice", &[]);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("held twice with different CRC-32s"), "{out}");

    // A retried upload that does not repeat the bytes it extends: a shorter object at the same
    // start whose bytes differ from the longer one's first bytes (found by --deep).
    five_deltas(&s3, &work, "retry");
    let o = object_at(&s3, "retry", 0);
    let path = s3.object_path("retry", &o.key);
    let short = b"LINE";
    std::fs::write(
        path.with_file_name(format!(
            "{:020}-{:020}.{:013}.{:08x}.delta",
            0,
            short.len(),
            o.time_ms - 1,
            crc32fast::hash(short)
        )),
        short,
    )
    .unwrap();
    let (code, out, _) = verify(&s3, "retry", &["--deep"]);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("disagree"), "{out}");

    // A stray file in the layout, and an object shorter than its key says.
    five_deltas(&s3, &work, "stray");
    let o = object_at(&s3, "stray", 0);
    let path = s3.object_path("stray", &o.key);
    std::fs::write(path.with_file_name("notes.txt"), b"hello").unwrap();
    let last = s3
        .ranges("stray")
        .into_iter()
        .max_by_key(|o| o.end)
        .unwrap();
    let last_path = s3.object_path("stray", &last.key);
    let mut b = std::fs::read(&last_path).unwrap();
    b.pop();
    std::fs::write(&last_path, &b).unwrap();
    let (code, out, _) = verify(&s3, "stray", &[]);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("notes.txt"), "{out}");
    assert!(out.contains("size does not match"), "{out}");

    // The undamaged prefix still recovers to the file.
    let out = s3.recover("ok", &work.path("ok.out"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(work.path("ok.out")).unwrap(), content);
}
