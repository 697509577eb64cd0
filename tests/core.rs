//! End to end: the real petrify binary against a real s3s-fs server, on plain files.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn walkthrough_persist_delete_recover_and_recover_earlier() {
    let s3 = S3::start();
    let work = Scratch::new("walk");
    let file = work.path("appendonly.aof");
    std::fs::write(&file, b"").unwrap();
    let persist = s3.persist("walk", &file, "0.1");

    let mut states = Vec::new();
    for (k, v) in [
        ("one", "first"),
        ("two", "second"),
        ("three", "third"),
        ("four", "fourth"),
    ] {
        let cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        );
        states.push(s3.append_and_wait("walk", &file, cmd.as_bytes()));
    }
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let original = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();

    let out = s3.recover("walk", &file, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(std::fs::read(&file).unwrap(), original);

    // Every point is listed; each recovers to exactly the file as it was then.
    let points = s3.list("walk");
    assert!(points.len() >= states.len(), "{points:?}");
    assert!(points.windows(2).all(|w| w[0].unix < w[1].unix));
    for state in &states {
        let p = points
            .iter()
            .find(|p| p.bytes == state.len() as u64)
            .expect("a point for each state");
        for at in [&p.rfc3339, &p.unix] {
            let out = s3.recover("walk", &file, &["--at-timestamp", at, "--force"]);
            assert!(out.status.success(), "{}", out.err());
            assert_eq!(&std::fs::read(&file).unwrap(), state, "at {at}");
        }
    }
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&work.0).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn rewrite_and_truncation_start_new_generations_and_every_side_recovers() {
    let s3 = S3::start();
    let work = Scratch::new("gen");
    let file = work.path("log");
    std::fs::write(&file, b"generation one, first\n").unwrap();
    let persist = s3.persist("gen", &file, "0.1");
    wait_for("first upload", T, || s3.uploaded_end("gen") == Some(22));
    let g1 = s3.append_and_wait("gen", &file, b"generation one, second\n");

    // A rewrite renamed over the path (Redis 6 BGREWRITEAOF), right after one more append
    // to the old file: the old file's tail must still be uploaded to generation 1.
    append(&file, b"tail of the old file\n");
    let g1_final = std::fs::read(&file).unwrap();
    let tmp = work.path("log.rewrite");
    std::fs::write(&tmp, b"compacted\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for("generation 2", T, || {
        s3.ranges("gen").iter().any(|o| o.generation == 2)
    });
    let g2 = s3.append_and_wait("gen", &file, b"after the rewrite\n");

    // A truncation in place, then new content.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_for("generation 3", T, || {
        s3.ranges("gen").iter().any(|o| o.generation == 3)
    });
    let g3 = s3.append_and_wait("gen", &file, b"after truncation\n");
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let log = out.err();
    assert!(log.contains("file replaced"), "{log}");
    assert!(log.contains("truncated from"), "{log}");

    let points = s3.list("gen");
    let gens: Vec<u64> = points.iter().map(|p| p.generation).collect();
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "{gens:?}");
    // A window shows what the whole list shows in it (read one generation folder at a time).
    let window = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["list", "--bucket", BUCKET, "--prefix", "gen"];
        a.extend_from_slice(args);
        let out = s3.run(&a);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .collect()
    };
    let all: Vec<String> = points.iter().map(|p| p.unix.clone()).collect();
    let mid = all.len() / 2;
    assert_eq!(window(&["--last", "2"]), all[all.len() - 2..]);
    assert_eq!(window(&["--since", &all[mid]]), all[mid..]);
    assert_eq!(window(&["--until", &points[mid].rfc3339]), all[..=mid]);
    assert_eq!(
        window(&["--since", &all[1], "--until", &all[mid], "--last", "1"]),
        all[mid..=mid]
    );
    assert_eq!(gens.last(), Some(&3));
    let last_of = |g: u64| points.iter().rfind(|p| p.generation == g).unwrap().clone();
    let out_file = work.path("restored");
    for (g, want) in [(1, &g1_final), (2, &g2), (3, &g3)] {
        let p = last_of(g);
        let out = s3.recover("gen", &out_file, &["--at-timestamp", &p.unix, "--force"]);
        assert!(out.status.success(), "{}", out.err());
        assert_eq!(&std::fs::read(&out_file).unwrap(), want, "generation {g}");
    }
    // The point before the tail arrived is generation 1 as it was then.
    let p = points
        .iter()
        .find(|p| p.bytes == g1.len() as u64 && p.generation == 1)
        .unwrap();
    let out = s3.recover("gen", &out_file, &["--at-timestamp", &p.rfc3339, "--force"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&out_file).unwrap(), g1);
    // The truncation to zero is a point of its own: an empty file.
    assert!(points.iter().any(|p| p.generation == 3 && p.bytes == 0));
}

#[test]
fn restart_resumes_without_reuploading_and_a_changed_file_starts_a_generation() {
    let s3 = S3::start();
    let work = Scratch::new("resume");
    let file = work.path("log");
    std::fs::write(&file, vec![b'a'; 10_000]).unwrap();
    let p = s3.persist("r", &file, "0.1");
    wait_for("first upload", T, || s3.uploaded_end("r") == Some(10_000));
    let out = p.terminate(T);
    assert!(out.status.success());

    append(&file, &[b'b'; 500]); // written while persist was down
    let p = s3.persist("r", &file, "0.1");
    wait_for("catch-up", T, || s3.uploaded_end("r") == Some(10_500));
    s3.append_and_wait("r", &file, &[b'c'; 7]);
    let out = p.terminate(T);
    let log = out.err();
    assert!(log.contains("resuming generation 1 of"), "{log}");
    let objs = s3.ranges("r");
    assert!(objs.iter().all(|o| o.generation == 1), "{objs:?}");
    let uploaded: u64 = objs.iter().map(|o| o.end - o.start).sum();
    assert_eq!(
        uploaded, 10_507,
        "every byte uploaded exactly once: {objs:?}"
    );

    // The file was rewritten in place while persist was down: same length or longer, other
    // bytes. Resuming would splice two histories; persist must start generation 2.
    let mut other = vec![b'z'; 10_507];
    other.extend_from_slice(b"more");
    std::fs::write(&file, &other).unwrap();
    let p = s3.persist("r", &file, "0.1");
    wait_for("generation 2", T, || {
        s3.ranges("r")
            .iter()
            .any(|o| o.generation == 2 && o.end == 10_511)
    });
    let out = p.terminate(T);
    assert!(out.err().contains("no longer starts with"), "{}", out.err());
    let restored = work.path("restored");
    let out = s3.recover("r", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(std::fs::read(&restored).unwrap(), other);
}

#[test]
fn sigterm_uploads_the_last_appends_and_a_missing_file_is_waited_for() {
    let s3 = S3::start();
    let work = Scratch::new("term");
    let file = work.path("later.log");
    // A long interval: only the stop request can upload the last append in time.
    let p = s3.persist("t", &file, "3600");
    p.wait_log("waiting for", T);
    // The first tick ran before the file existed; the next one is an hour away.
    std::fs::write(&file, b"created after persist started\n").unwrap();
    append(&file, b"last words\n");
    let out = p.terminate(T);
    let log = out.err();
    assert!(out.status.success(), "{log}");
    let restored = work.path("restored");
    let out = s3.recover("t", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        b"created after persist started\nlast words\n"
    );
}

#[test]
fn damaged_chains_fail_with_no_output_and_the_old_file_untouched() {
    let s3 = S3::start_fs();
    let work = Scratch::new("damage");
    let file = work.path("log");
    std::fs::write(&file, b"first object\n").unwrap();
    let p = s3.persist_deltas("d", &file, "0.1");
    wait_for("first upload", T, || s3.uploaded_end("d") == Some(13));
    s3.append_and_wait("d", &file, b"second object\n");
    s3.append_and_wait("d", &file, b"third object\n");
    p.terminate(T);
    let keys = s3.keys("d");
    assert_eq!(keys.len(), 3, "{keys:?}");

    let target = work.path("existing");
    std::fs::write(&target, b"precious").unwrap();

    // Corrupt the middle object, same size.
    let middle = s3.object_path("d", &keys[1]);
    let good = std::fs::read(&middle).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&middle, &bad).unwrap();
    let out = s3.recover("d", &target, &["--force"]);
    assert_fails(&out, 65, "is corrupt");
    assert!(out.err().contains("bytes 13..27"), "{}", out.err());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    let fresh = work.path("fresh");
    assert_fails(&s3.recover("d", &fresh, &[]), 65, "is corrupt");
    assert!(!fresh.exists());

    // Missing middle object: a gap.
    std::fs::remove_file(&middle).unwrap();
    let out = s3.recover("d", &target, &["--force"]);
    assert_fails(&out, 65, "bytes 13..27 are missing");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(!fresh.exists());
    std::fs::write(&middle, &good).unwrap();

    // Only petrify's files and the target are in the folder: no temporary left.
    let mut names: Vec<String> = std::fs::read_dir(&work.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["existing", "log"]);

    // Without --force an existing target is refused before anything is downloaded.
    assert_fails(&s3.recover("d", &target, &[]), 73, "exists");
    // Too early a time names the earliest point.
    let out = s3.recover("d", &fresh, &["--at-timestamp", "2001-01-01T00:00:00Z"]);
    assert_fails(&out, 66, "earliest recovery point");
    // Nothing under another prefix.
    assert_fails(&s3.recover("nothing", &fresh, &[]), 66, "no recovery point");
    assert!(!fresh.exists());
}

#[test]
fn wrong_credentials_and_missing_bucket_are_clear_errors() {
    // A server that checks signatures (moto accepts any).
    let s3 = S3::start_fs();
    let work = Scratch::new("creds");
    let file = work.path("log");
    std::fs::write(&file, b"x").unwrap();

    let out = s3
        .petrify()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .args(["persist", "--bucket", BUCKET, "--prefix", "c", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_fails(&out, 77, "SignatureDoesNotMatch");
    assert!(!out.err().contains("wrong-secret"));

    let out = s3
        .petrify()
        .env("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
        .args(["list", "--bucket", BUCKET, "--prefix", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", out.err());

    let out = s3
        .petrify()
        .args([
            "persist",
            "--bucket",
            "no-such-bucket",
            "--prefix",
            "c",
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_fails(&out, 66, "NoSuchBucket");

    let out = s3.run(&["list", "--bucket", "no-such-bucket", "--prefix", "c"]);
    assert_fails(&out, 66, "check --bucket");

    // Nothing listens: unavailable, after a few quick retries.
    let out = s3
        .petrify()
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .args(["list", "--bucket", BUCKET, "--prefix", "c"])
        .output()
        .unwrap();
    assert_fails(&out, 69, "cannot reach S3");
}

#[test]
fn ranges_larger_than_the_object_limit_are_split() {
    let s3 = S3::start();
    let work = Scratch::new("split");
    let file = work.path("big");
    let data: Vec<u8> = (0..3_670_016u32).map(|i| (i * 7 % 253) as u8).collect(); // 3.5 MiB
    std::fs::write(&file, &data).unwrap();
    let mut cmd = s3.persist_cmd(&s3.endpoint(), "split", &file, "0.1");
    cmd.env("PETRIFY_MAX_OBJECT_BYTES", "1048576");
    let p = spawn(cmd);
    wait_for("upload", T, || {
        s3.uploaded_end("split") == Some(data.len() as u64)
    });
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let sizes: Vec<u64> = s3.ranges("split").iter().map(|o| o.end - o.start).collect();
    assert_eq!(sizes, [1 << 20, 1 << 20, 1 << 20, 1 << 19], "{sizes:?}");
    let restored = work.path("restored");
    let out = s3.recover("split", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(std::fs::read(&restored).unwrap(), data);
    // One recovery point: the pieces share the time the range was observed.
    assert_eq!(s3.list("split").len(), 1);

    let out = s3
        .petrify()
        .env("PETRIFY_MAX_OBJECT_BYTES", "12")
        .args(["persist", "--bucket", BUCKET, "--prefix", "x", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_fails(&out, 78, "PETRIFY_MAX_OBJECT_BYTES");
}

/// `recover --if-missing`, as the restore-at-boot unit runs it: a first boot (nothing in the
/// bucket yet), a normal boot (the file is there: no request at all), a disaster boot (the
/// file is gone: the newest point comes back).
#[test]
fn restore_at_boot_first_normal_and_disaster() {
    let s3 = S3::start();
    let work = Scratch::new("boot");
    let file = work.path("appendonly.aof");
    let boot = |endpoint: &str| {
        let mut c = s3.petrify();
        c.env("AWS_ENDPOINT_URL", endpoint)
            .args([
                "recover",
                "--if-missing",
                "--bucket",
                BUCKET,
                "--prefix",
                "boot",
            ])
            .arg("--file")
            .arg(&file);
        c.output().unwrap()
    };

    // First boot: nothing to restore, nothing created, success, and said at WARN.
    let out = boot(&s3.endpoint());
    assert!(out.status.success(), "{}", out.err());
    assert!(out.err().contains("first boot"), "{}", out.err());
    assert!(!file.exists());

    std::fs::write(&file, b"SET a 1\n").unwrap();
    let p = s3.persist("boot", &file, "0.05");
    let content = s3.append_and_wait("boot", &file, b"SET b 2\n");
    assert!(p.terminate(T).status.success());

    // Normal boot: the file is there; nothing is asked of S3 (an endpoint nobody answers).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = boot(&dead);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(std::fs::read(&file).unwrap(), content);

    // Disaster boot: the disk is new; the newest point comes back.
    std::fs::remove_file(&file).unwrap();
    let out = boot(&s3.endpoint());
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(std::fs::read(&file).unwrap(), content);
}

/// The units in contrib/ are valid for systemd, with the real binary in their command lines.
#[test]
fn systemd_units_verify() {
    let Ok(v) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: skipped (scripts/setup installs it)");
        return;
    };
    assert!(v.status.success());
    let work = Scratch::new("units");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    for e in std::fs::read_dir(&units).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().replace("@.", "@db1.");
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())
            .unwrap()
            .replace("/usr/local/bin/petrify", env!("CARGO_BIN_EXE_petrify"));
        let path = work.path(&name);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let said = text_of(&out);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
}

fn text_of(out: &std::process::Output) -> String {
    text(&out.stderr) + &text(&out.stdout)
}

/// Under systemd (JOURNAL_STREAM naming the stream stderr is), each line carries its syslog
/// priority and no time of its own; anywhere else, lines are as a terminal shows them.
#[test]
fn logs_fit_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let s3 = S3::start();
    let work = Scratch::new("journal");
    let run = |journal: bool| -> String {
        let path = work.path(if journal { "journal" } else { "plain" });
        let f = std::fs::File::create(&path).unwrap();
        let m = f.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", m.dev(), m.ino())
        } else {
            "1:2".to_string()
        };
        let status = s3
            .petrify()
            .env("JOURNAL_STREAM", stream)
            .env("RUST_LOG", "info")
            .args(["recover", "--bucket", BUCKET, "--prefix", "none"])
            .arg("--file")
            .arg(work.path("out"))
            .stderr(f)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(66));
        std::fs::read_to_string(&path).unwrap()
    };
    let journal = run(true);
    assert!(
        journal
            .lines()
            .last()
            .unwrap()
            .starts_with("<3>petrify: error: no recovery point"),
        "{journal}"
    );
    assert!(
        journal
            .lines()
            .all(|l| l.starts_with('<') && !l.contains("[20")),
        "{journal}"
    );
    let plain = run(false);
    assert!(
        plain
            .lines()
            .last()
            .unwrap()
            .starts_with("petrify: error: "),
        "{plain}"
    );
}

/// On a terminal, a long recovery shows one line of progress, redrawn in place and cleared at
/// the end; to a pipe (a log, the journal), nothing but the log lines.
#[test]
fn progress_on_a_terminal_only() {
    let s3 = S3::start();
    let work = Scratch::new("progress");
    let file = work.path("log");
    std::fs::write(&file, vec![b'p'; 3 << 20]).unwrap();
    let p = s3.persist("pg", &file, "0.05");
    wait_for("the upload", T, || s3.uploaded_end("pg") == Some(3 << 20));
    assert!(p.terminate(T).status.success());

    let piped = s3.recover("pg", &work.path("piped"), &[]);
    assert!(piped.status.success());
    assert!(!piped.err().contains("recovering:"), "{}", piped.err());

    // script(1) gives the command a terminal.
    let cmd = format!(
        "{} recover --bucket {BUCKET} --prefix pg --file {}",
        env!("CARGO_BIN_EXE_petrify"),
        work.path("tty").display()
    );
    let mut c = std::process::Command::new("script");
    for (k, v) in s3.petrify().get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    assert!(out.status.success(), "{}", out.err());
    let shown = text(&out.stdout);
    assert!(shown.contains("\r\x1b[2Krecovering: "), "{shown:?}");
    // Cleared before the last log line, which starts a line of its own.
    assert!(shown.contains("\r\x1b[2K[20"), "{shown:?}");
    assert!(shown.contains("of 3.0 MiB"), "{shown:?}");
    assert_eq!(std::fs::read(work.path("tty")).unwrap().len(), 3 << 20);
}
