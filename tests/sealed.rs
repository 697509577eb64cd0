//! Sealed objects (`--compress`, `--encrypt-to`, `--identity`) against a real S3 server: a
//! compressed generation, an encrypted one and one whose options change midway each give back
//! every listed point byte for byte, through compaction and SIGKILL; an object opens with
//! `zstd -d` and `age -d` alone; a missing or wrong identity and a damaged object fail cleanly,
//! leaving no file.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use common::*;

const T: Duration = Duration::from_secs(90);

/// A fresh age key pair: the identity file's path and the recipient.
fn keypair(work: &Scratch, name: &str) -> (std::path::PathBuf, String) {
    let k = age::x25519::Identity::generate();
    let path = work.path(name);
    std::fs::write(
        &path,
        format!("# test key\n{}\n", k.to_string().expose_secret()),
    )
    .unwrap();
    (path, k.to_public().to_string())
}

fn persist_sealed(s3: &S3, prefix: &str, file: &Path, extra: &[&str]) -> Proc {
    let mut c = s3.persist_cmd(&s3.endpoint(), prefix, file, "0.02");
    c.args(["--compaction", "200ms,1s"]).args(extra);
    spawn(c)
}

/// Appends lines of JSON-ish text for `secs`, a write every few milliseconds.
fn write_for(file: &Path, secs: f64, seed: u64) {
    let mut r = Rng(seed);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let n = r.below(400) + 1;
        let line = format!(
            "{{\"user\":{},\"name\":\"user{}\",\"score\":{},\"pad\":\"{}\"}}\n",
            r.next() % 100_000,
            r.next() % 977,
            r.below(1000),
            "x".repeat(n as usize)
        );
        append(file, line.as_bytes());
        std::thread::sleep(Duration::from_millis(r.below(8)));
    }
}

fn wait_uploaded(s3: &S3, prefix: &str, len: usize) {
    wait_for("every byte uploaded", T, || {
        let out = s3.run(&["list", "--bucket", BUCKET, "--prefix", prefix]);
        text(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|b| b.parse::<usize>().ok())
            == Some(len)
    });
}

/// Recovers listed points (every one when few, else an even sample with the first and the
/// last) and compares each with the file's prefix of its length.
fn every_point_recovers(s3: &S3, work: &Scratch, prefix: &str, content: &[u8], extra: &[&str]) {
    let points = s3.list(prefix);
    assert!(!points.is_empty());
    let step = (points.len() / 40).max(1);
    let mut picked: Vec<&Point> = points.iter().step_by(step).collect();
    picked.push(points.last().unwrap());
    for p in picked {
        let out = work.path(&format!("r-{prefix}-{}", p.unix));
        let mut args = vec!["--at-timestamp", p.unix.as_str()];
        args.extend_from_slice(extra);
        let r = s3.recover(prefix, &out, &args);
        assert!(
            r.status.success(),
            "recover {}: {}",
            p.unix,
            text(&r.stderr)
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len() as u64, p.bytes, "point {}", p.unix);
        assert!(
            got == content[..got.len()],
            "point {} is not the file's first {} bytes",
            p.unix,
            got.len()
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn compressed_and_encrypted_generations_recover_every_point() {
    let s3 = S3::start();
    let work = Scratch::new("sealed-kinds");
    let (key, recipient) = keypair(&work, "key.txt");
    let key_s = key.to_str().unwrap();
    for (prefix, seal, extra) in [
        ("zst", "zst", vec!["--compress", "zstd:3"]),
        (
            "age",
            "age",
            vec!["--compress", "off", "--encrypt-to", &recipient],
        ),
        ("both", "zst.age", vec!["--encrypt-to", &recipient]),
    ] {
        let file = work.path(&format!("{prefix}.log"));
        std::fs::write(&file, b"").unwrap();
        let p = persist_sealed(&s3, prefix, &file, &extra);
        write_for(&file, 2.5, 7);
        // Merges made of sealed objects are part of what is checked.
        wait_for("a merged object", T, || {
            append(&file, b"{\"tick\":1}\n");
            std::thread::sleep(Duration::from_millis(30));
            s3.ranges(prefix).iter().any(|o| o.merged)
        });
        let content = std::fs::read(&file).unwrap();
        wait_uploaded(&s3, prefix, content.len());
        let out = p.terminate(T);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(
            !out.stderr.contains("plain delta"),
            "a merge failed: {}",
            out.stderr
        );
        for o in s3.ranges(prefix) {
            assert_eq!(o.seal, seal, "{}", o.key);
        }
        let ids: Vec<&str> = match seal {
            "zst" => vec![],
            _ => vec!["--identity", key_s],
        };
        every_point_recovers(&s3, &work, prefix, &content, &ids);
        let mut deep = vec!["verify", "--bucket", BUCKET, "--prefix", prefix, "--deep"];
        deep.extend_from_slice(&ids);
        let v = s3.run(&deep);
        assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
        // Compression alone: an age header a point (about 200 bytes) outweighs what a busy
        // machine's smaller points save, so the encrypted runs' ratio depends on timing.
        if seal == "zst" {
            let stored: u64 = s3.ranges(prefix).iter().map(|o| o.stored).sum();
            assert!(
                stored * 2 < content.len() as u64,
                "{stored} bytes stored for {} of text",
                content.len()
            );
        }
    }
}

#[test]
fn options_change_midway_in_one_generation_and_survive_sigkill() {
    let s3 = S3::start();
    let work = Scratch::new("sealed-switch");
    let (key, recipient) = keypair(&work, "key.txt");
    let key_s = key.to_str().unwrap();
    let file = work.path("log");
    std::fs::write(&file, b"").unwrap();
    let runs: [Vec<&str>; 4] = [
        vec!["--compress", "off"],
        vec!["--compress", "zstd:1"],
        vec!["--encrypt-to", &recipient],
        vec!["--compress", "off"],
    ];
    let mut r = Rng(11);
    for (i, extra) in runs.iter().enumerate() {
        // Two rounds of each, the first cut short by SIGKILL at a random moment.
        let p = persist_sealed(&s3, "sw", &file, extra);
        write_for(&file, 0.3 + r.below(700) as f64 / 1000.0, i as u64);
        p.kill();
        let p = persist_sealed(&s3, "sw", &file, extra);
        write_for(&file, 1.2, 100 + i as u64);
        let content = std::fs::read(&file).unwrap();
        wait_uploaded(&s3, "sw", content.len());
        let out = p.terminate(T);
        assert!(out.status.success(), "{}", out.stderr);
    }
    let content = std::fs::read(&file).unwrap();
    let points = s3.list("sw");
    assert!(
        points.iter().all(|p| p.generation == points[0].generation),
        "changing the options started a new generation: {:?}",
        points.iter().map(|p| p.generation).collect::<Vec<_>>()
    );
    let seals: std::collections::BTreeSet<String> =
        s3.ranges("sw").into_iter().map(|o| o.seal).collect();
    assert!(seals.contains("zst.age"), "{seals:?}");
    every_point_recovers(&s3, &work, "sw", &content, &["--identity", key_s]);
    let v = s3.run(&[
        "verify",
        "--bucket",
        BUCKET,
        "--prefix",
        "sw",
        "--deep",
        "--identity",
        key_s,
    ]);
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
}

/// The man page's recipe without petrify: the objects of a point, in order, through `age -d`
/// and `zstd -d`, give the file.
#[test]
fn a_point_opens_with_cat_age_and_zstd_alone() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        have("zstd"),
        "zstd is not installed (scripts/setup installs it)"
    );
    let s3 = S3::start_fs();
    let work = Scratch::new("sealed-recipe");
    let (key, recipient) = keypair(&work, "key.txt");
    for (prefix, extra) in [
        ("z", vec!["--compaction", "off"]),
        ("a", vec!["--compaction", "off", "--encrypt-to", &recipient]),
    ] {
        let file = work.path(&format!("{prefix}.log"));
        std::fs::write(&file, b"").unwrap();
        let mut c = s3.persist_cmd(&s3.endpoint(), prefix, &file, "0.05");
        c.args(&extra);
        let p = spawn(c);
        write_for(&file, 1.0, 3);
        let content = std::fs::read(&file).unwrap();
        wait_uploaded(&s3, prefix, content.len());
        assert!(p.terminate(T).status.success());
        let mut objs = s3.chain_ranges(prefix);
        objs.sort_by_key(|o| (o.start, o.end));
        let mut joined = Vec::new();
        for o in &objs {
            let path = s3.object_path(prefix, &o.key);
            let body = match prefix {
                "z" => std::fs::read(&path).unwrap(),
                _ if have("age") => {
                    let out = std::process::Command::new("age")
                        .args(["-d", "-i"])
                        .arg(&key)
                        .arg(&path)
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "age -d: {}", text(&out.stderr));
                    out.stdout
                }
                // Without the age tool, the crate that tool is built on.
                _ => {
                    let id: age::x25519::Identity = std::fs::read_to_string(&key)
                        .unwrap()
                        .lines()
                        .nth(1)
                        .unwrap()
                        .parse()
                        .unwrap();
                    age::decrypt(&id, &std::fs::read(&path).unwrap()).unwrap()
                }
            };
            joined.extend_from_slice(&body);
        }
        let mut z = std::process::Command::new("zstd")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = z.stdin.take().unwrap();
        let feed = std::thread::spawn(move || stdin.write_all(&joined));
        let out = z.wait_with_output().unwrap();
        feed.join().unwrap().unwrap();
        assert!(out.status.success(), "zstd -d: {}", text(&out.stderr));
        assert!(
            out.stdout == content,
            "{prefix}: the recipe did not give the file"
        );
    }
}

#[test]
fn a_missing_or_wrong_identity_or_a_damaged_object_fails_cleanly() {
    let s3 = S3::start_fs();
    let work = Scratch::new("sealed-fail");
    let (key, recipient) = keypair(&work, "key.txt");
    let (other, _) = keypair(&work, "other.txt");
    let file = work.path("log");
    std::fs::write(&file, b"").unwrap();
    let mut c = s3.persist_cmd(&s3.endpoint(), "f", &file, "0.05");
    c.args(["--compaction", "off", "--encrypt-to", &recipient]);
    let p = spawn(c);
    write_for(&file, 1.0, 5);
    let content = std::fs::read(&file).unwrap();
    wait_uploaded(&s3, "f", content.len());
    assert!(p.terminate(T).status.success());
    let back = work.path("back");
    let (key_s, other_s) = (key.to_str().unwrap(), other.to_str().unwrap());

    let r = s3.recover("f", &back, &[]);
    assert_fails(&r, 64, "--identity");
    assert!(!back.exists());
    let r = s3.recover("f", &back, &["--identity", other_s]);
    assert_fails(&r, 77, "other recipients");
    assert!(!back.exists());
    let r = s3.recover(
        "f",
        &back,
        &["--identity", work.path("nokey").to_str().unwrap()],
    );
    assert_fails(&r, 66, "identity file");
    let v = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "f", "--deep"]);
    assert_fails(&v, 64, "--identity");
    let st = s3.run(&[
        "status",
        "--bucket",
        BUCKET,
        "--prefix",
        "f",
        "--identity",
        other_s,
    ]);
    assert_fails(&st, 77, "other recipients");
    let st = s3.run(&[
        "status",
        "--bucket",
        BUCKET,
        "--prefix",
        "f",
        "--identity",
        key_s,
    ]);
    assert!(st.status.success(), "{}", text(&st.stderr));
    assert!(
        text(&st.stdout).contains("encrypted"),
        "{}",
        text(&st.stdout)
    );
    // A recipient that does not parse: refused before anything starts.
    let bad = s3
        .petrify()
        .args([
            "persist",
            "--bucket",
            BUCKET,
            "--prefix",
            "g",
            "--encrypt-to",
            "age1nope",
        ])
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    assert_fails(&bad, 64, "age1nope");

    // Damage inside one object's payload: 65, naming it, and no file.
    let victim = s3
        .chain_ranges("f")
        .into_iter()
        .max_by_key(|o| o.stored)
        .unwrap();
    let path = s3.object_path("f", &victim.key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let r = s3.recover("f", &back, &["--identity", key_s]);
    assert_fails(&r, 65, &victim.key);
    assert!(!back.exists());
    let v = s3.run(&[
        "verify",
        "--bucket",
        BUCKET,
        "--prefix",
        "f",
        "--deep",
        "--identity",
        key_s,
    ]);
    assert_eq!(v.status.code(), Some(65), "{}", text(&v.stdout));
    assert!(text(&v.stdout).contains(&victim.key), "{}", text(&v.stdout));
}
