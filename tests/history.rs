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
    let p = s3.persist_deltas(prefix, &file, "0.05");
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
    // Kind, and the stored length and seal of a sealed object, as they were.
    let other = format!("{}.{}.00000000.{}", f[0], o.time_ms + 1, f[3..].join("."));
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

fn prune(s3: &S3, prefix: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["prune", "--bucket", BUCKET, "--prefix", prefix];
    args.extend_from_slice(extra);
    s3.run(&args)
}

fn generations(s3: &S3, prefix: &str) -> Vec<u64> {
    let mut g: Vec<u64> = s3.ranges(prefix).iter().map(|o| o.generation).collect();
    g.dedup();
    g
}

/// Truncates the followed file: persist starts the next generation.
fn truncate_and_wait(s3: &S3, prefix: &str, file: &std::path::Path, generation: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_for("the next generation", T, || {
        generations(s3, prefix).contains(&generation)
    });
}

#[test]
fn retention_drops_whole_old_generations_and_keeps_the_window() {
    let s3 = S3::start();
    let work = Scratch::new("retain");
    let file = work.path("log");
    std::fs::write(&file, b"generation one\n").unwrap();
    let p = s3.persist("r", &file, "0.05");
    s3.append_and_wait("r", &file, b"more of one\n");
    truncate_and_wait(&s3, "r", &file, 2);
    s3.append_and_wait("r", &file, b"generation two\n");
    truncate_and_wait(&s3, "r", &file, 3);
    let early3 = s3.append_and_wait("r", &file, b"generation three\n");
    // Everything so far is more than 2 s old when the last line arrives.
    let before = now_ms_f();
    wait_for("3 s to pass", T, || now_ms_f() > before + 3000.0);
    let g3 = s3.append_and_wait("r", &file, b"after the cutoff\n");

    // A running persist holds the prefix: pruning it is that persist's job.
    assert_fails(&prune(&s3, "r", &["--retain", "2s"]), 73, "--retain");
    assert!(p.terminate(T).status.success());

    // Dry run: generations 1 and 2 would go, whole; nothing is deleted.
    let keys_before = s3.keys("r");
    let out = prune(&s3, "r", &["--retain", "2s", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let would: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let old: Vec<&String> = keys_before
        .iter()
        .filter(|k| k.starts_with("0000000001-") || k.starts_with("0000000002-"))
        .collect();
    assert_eq!(would.len(), old.len(), "{would:?}");
    assert!(
        would
            .iter()
            .all(|l| old.iter().any(|k| l.contains(k.as_str())))
    );
    assert_eq!(s3.keys("r"), keys_before);

    // The real thing: the bucket shrinks to generation 3, which recovers exactly, at its
    // newest point and at the newest point before the window.
    let out = prune(&s3, "r", &["--retain", "2s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(generations(&s3, "r"), [3]);
    assert!(!s3.has_lease("r"));
    assert_eq!(verify(&s3, "r", &["--deep"]).0, 0);
    let points = s3.list("r");
    assert!(points.iter().all(|p| p.generation == 3), "{points:?}");
    let out_file = work.path("out");
    let anchor = points
        .iter()
        .rfind(|p| p.bytes == early3.len() as u64)
        .unwrap();
    let out = s3.recover("r", &out_file, &["--at-timestamp", &anchor.unix]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), early3);
    let out = s3.recover("r", &out_file, &["--force"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&out_file).unwrap(), g3);

    // persist --retain does it by itself, once writes go on: generation 3 goes once
    // generation 4 has a point older than the window.
    let mut cmd = s3.persist_cmd(&s3.endpoint(), "r", &file, "0.05");
    cmd.args(["--retain", "1s"]);
    let p = spawn(cmd);
    truncate_and_wait(&s3, "r", &file, 4);
    let mut n = 0;
    wait_for("generation 3 to be deleted", T, || {
        n += 1;
        append(&file, format!("line {n}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        generations(&s3, "r") == [4]
    });
    let content = s3.append_and_wait("r", &file, b"last\n");
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("retention: 1 generation(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(verify(&s3, "r", &["--deep"]).0, 0);
    let out = s3.recover("r", &out_file, &["--force"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&out_file).unwrap(), content);
}

/// Plants `count` old generations of 50 deltas each, then a newest one, straight into the
/// server's folder; returns the newest one's bytes.
fn plant_generations(s3: &S3, prefix: &str, count: u64) -> Vec<u8> {
    let mut newest = Vec::new();
    for g in 1..=count + 1 {
        let dir = s3.object_path(prefix, &format!("{g:010}-file/file"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pos = 0u64;
        newest.clear();
        for i in 0..50u64 {
            let data = format!("generation {g} record {i}\n").into_bytes();
            let end = pos + data.len() as u64;
            let time = 1_700_000_000_000 + g * 1000 + i;
            let name = format!(
                "{pos:020}-{end:020}.{time:013}.{:08x}.delta",
                crc32fast::hash(&data)
            );
            std::fs::write(dir.join(name), &data).unwrap();
            newest.extend_from_slice(&data);
            pos = end;
        }
    }
    newest
}

#[test]
fn sigkill_during_prune_leaves_every_kept_point_and_no_broken_one() {
    let s3 = S3::start();
    let work = Scratch::new("prune-kill");
    let out_file = work.path("out");
    let mut cut_mid_drop = 0;
    for round in 1..=4u64 {
        let newest = plant_generations(&s3, "k", 40);
        let mut cmd = s3.petrify();
        cmd.args([
            "prune", "--bucket", BUCKET, "--prefix", "k", "--retain", "1s",
        ]);
        let p = spawn(cmd);
        // Cut it short at a different depth each round, while a generation is marked as being
        // deleted (half gone) if the prune is not over by then.
        let mut marked = false;
        wait_for("the prune to get going", T, || {
            marked = s3.keys("k").iter().any(|k| k.ends_with("/dropping"));
            let left = generations(&s3, "k").len() as u64;
            (left <= 41 - round * 8 && marked) || left == 1
        });
        p.kill();
        cut_mid_drop += u32::from(marked);
        // Whatever was cut short: no broken point, and the kept one recovers.
        let (code, out, err) = verify(&s3, "k", &[]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        let listed = s3.list("k");
        assert_eq!(listed.last().map(|p| p.generation), Some(41));
        let out = s3.recover("k", &out_file, &["--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(std::fs::read(&out_file).unwrap(), newest);
        // The next prune takes over the dead one's lease and finishes.
        let out = prune(&s3, "k", &["--retain", "1s"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(generations(&s3, "k"), [41], "round {round}");
        assert_eq!(verify(&s3, "k", &["--deep"]).0, 0);
    }
    assert!(
        cut_mid_drop >= 1,
        "no round was cut short in the middle of a generation"
    );
}

fn status(s3: &S3, prefix: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["status", "--bucket", BUCKET, "--prefix", prefix];
    args.extend_from_slice(extra);
    let out = s3.run(&args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `status` against a live persist (caught up: 0), a stalled one (bytes waiting past
/// --max-lag: 75), a broken chain (65) and an empty prefix (66).
#[test]
fn status_for_monitoring_live_stalled_broken_empty() {
    let s3 = S3::start();
    let work = Scratch::new("status");
    let file = work.path("log");
    let f = file.to_str().unwrap();
    assert_eq!(status(&s3, "st", &[]).0, 66);

    std::fs::write(&file, b"one\n").unwrap();
    let p = s3.persist_deltas("st", &file, "0.05");
    s3.append_and_wait("st", &file, b"two\n");
    let (code, out, err) = status(&s3, "st", &["--file", f, "--max-lag", "1", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("\"behind_bytes\":0,") && out.contains("\"ok\":true"),
        "{out}"
    );
    assert!(out.contains("\"lag_seconds\":0.000"), "{out}");

    // Stalled: persist stopped (SIGSTOP: stuck, as a hung process would be) while the file
    // grows; once the newest point is over a second old, the lag is over --max-lag 1.
    p.signal("STOP");
    append(&file, b"three, never uploaded\n");
    let (code, out, err) = status(&s3, "st", &["--file", f]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("22 not in the bucket"), "{out}");
    wait_for("the lag to pass a second", T, || {
        status(&s3, "st", &["--file", f, "--max-lag", "1"]).0 == 75
    });
    let (_, _, err) = status(&s3, "st", &["--file", f, "--max-lag", "1"]);
    assert!(err.contains("behind") && err.contains("--max-lag"), "{err}");
    p.signal("CONT");
    wait_for("persist to catch up", T, || {
        status(&s3, "st", &["--file", f, "--max-lag", "1"]).0 == 0
    });
    assert!(p.terminate(T).status.success());

    // Broken: the newest point's chain lost an object.
    let first = s3
        .ranges("st")
        .into_iter()
        .find(|o| o.start == 0 && o.end > 0)
        .unwrap();
    std::fs::remove_file(s3.object_path("st", &first.key)).unwrap();
    let (code, out, _) = status(&s3, "st", &[]);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("BROKEN"), "{out}");
}
