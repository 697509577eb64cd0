//! End to end with a real redis-server 7 (multi-part AOF folder) and a real s3s-fs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn recover_and_load(s3: &S3, prefix: &str, at: Option<&str>, work: &Scratch, name: &str) -> Redis {
    let dir = work.path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let aof = dir.join("appendonlydir");
    let mut extra = vec![];
    if let Some(at) = at {
        extra = vec!["--at-timestamp", at];
    }
    let out = s3.recover(prefix, &aof, &extra);
    assert!(out.status.success(), "recover {at:?}: {}", out.err());
    check_aof(&aof);
    Redis::start(&dir)
}

fn check_aof(aof: &Path) {
    // Neither redis-check-aof 7 nor valkey-check-aof 9.1.2 reads Valkey 9's RDB base (its
    // magic is VALKEY080; both take it for RESP and refuse it): on Valkey, the server's own
    // load of the folder, which every caller does next, is the proof.
    if is_valkey() {
        return;
    }
    let out = std::process::Command::new("redis-check-aof")
        .arg(aof.join("appendonly.aof.manifest"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-check-aof rejects {}: {}{}",
        aof.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn walkthrough_on_redis_7() {
    let s3 = S3::start();
    let work = Scratch::new("redis-walk");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut redis = Redis::start(&data);
    let aof = data.join("appendonlydir");
    let persist = s3.persist("redis", &aof, "0.1");

    let mut times = Vec::new();
    for (k, v) in [
        ("one", "first"),
        ("two", "second"),
        ("three", "third"),
        ("four", "fourth"),
    ] {
        assert_eq!(redis.cli(&["SET", k, v]).trim(), "OK");
        wait_for("the write to reach the bucket", T, || {
            s3.folder_synced("redis", &aof)
        });
        times.push(s3.list("redis").last().unwrap().unix.clone());
    }
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    redis.stop();
    std::fs::remove_dir_all(&aof).unwrap();

    // Recover in place, start Redis on it: all four keys.
    let out = s3.recover("redis", &aof, &[]);
    assert!(out.status.success(), "{}", out.err());
    check_aof(&aof);
    let mut redis = Redis::start(&data);
    let all = [
        ("four", "fourth"),
        ("one", "first"),
        ("three", "third"),
        ("two", "second"),
    ];
    let want: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(redis.dataset(), want);
    redis.stop();

    // A time between the second and third write: exactly one and two.
    let mut redis = recover_and_load(&s3, "redis", Some(&times[1]), &work, "earlier");
    assert_eq!(
        redis.dataset(),
        [
            ("one".to_string(), "first".to_string()),
            ("two".into(), "second".into())
        ]
    );
    redis.stop();

    // Refuses to replace the folder without --force; replaces it with --force.
    assert_fails(&s3.recover("redis", &aof, &[]), 73, "exists");
    let out = s3.recover("redis", &aof, &["--force", "--at-timestamp", &times[0]]);
    assert!(out.status.success(), "{}", out.err());
    let mut redis = Redis::start(&data);
    assert_eq!(redis.dataset(), [("one".to_string(), "first".to_string())]);
    redis.stop();
    // A file path for a folder backup is refused, and nothing is written.
    let f = work.path("a-file");
    std::fs::write(&f, b"x").unwrap();
    assert_fails(&s3.recover("redis", &f, &["--force"]), 73, "Redis folder");
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
}

/// One write of the load: key number, and when it was sent and acknowledged (Unix ms).
struct Write {
    n: usize,
    sent: f64,
    acked: f64,
}

#[test]
fn rewrites_under_load_every_point_is_exactly_what_redis_held() {
    let s3 = S3::start();
    let work = Scratch::new("redis-load");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // Slow the rewrite child down so that ticks land while a rewrite is in progress.
    let mut redis = Redis::start_with(&data, &["--rdb-key-save-delay", "200"]);
    let aof = data.join("appendonlydir");
    let persist = s3.persist("load", &aof, "0.05");
    wait_for("the first generation", T, || s3.folder_synced("load", &aof));

    const KEYS: usize = 4000;
    let mut writes = Vec::with_capacity(KEYS);
    let mut conn = Resp::connect(redis.port);
    for n in 1..=KEYS {
        let key = format!("k:{n:06}");
        let sent = now_ms_f();
        assert_eq!(
            conn.call(&["SET", &key, &format!("v{n}")]),
            Reply::Simple("OK".into())
        );
        writes.push(Write {
            n,
            sent,
            acked: now_ms_f(),
        });
        if n % 800 == 0 {
            redis.wait_rewrite_done();
            let r = conn.call(&["BGREWRITEAOF"]);
            assert!(matches!(r, Reply::Simple(_)), "{r:?}");
        }
    }
    redis.wait_rewrite_done();
    wait_for("the last writes to reach the bucket", T, || {
        s3.folder_synced("load", &aof)
    });
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().matches("new base file after a rewrite").count() >= 4,
        "{}",
        out.err()
    );
    redis.stop();

    let points = s3.list("load");
    let objs = s3.ranges("load");
    // Points taken while a rewrite was in progress: the generation then listed two
    // incremental files (Redis opened the new one before the new base was done).
    let during_rewrite = |p: &Point| {
        let t: u64 = p.unix.replace('.', "").parse().unwrap();
        let mut incr: Vec<&str> = objs
            .iter()
            .filter(|o| o.generation == p.generation && o.part.contains(".incr.") && o.time_ms <= t)
            .map(|o| o.part.as_str())
            .collect();
        incr.sort();
        incr.dedup();
        incr.len() >= 2
    };
    let mut chosen: Vec<&Point> = Vec::new();
    chosen.extend(points.iter().filter(|p| during_rewrite(p)).take(3));
    let step = (points.len() / 8).max(1);
    chosen.extend(points.iter().step_by(step));
    chosen.push(points.last().unwrap());
    assert!(
        chosen.iter().any(|p| during_rewrite(p)),
        "no point was taken during a rewrite: {} points",
        points.len()
    );
    chosen.sort_by(|a, b| a.unix.cmp(&b.unix));
    chosen.dedup();
    assert!(chosen.len() >= 5, "{chosen:?}");
    eprintln!(
        "load: {KEYS} writes, {} generations, {} recovery points, checking {} of them ({} during a rewrite)",
        points.last().unwrap().generation,
        points.len(),
        chosen.len(),
        chosen.iter().filter(|p| during_rewrite(p)).count()
    );

    // Exclusion tolerance: a write sent a moment after the point's time can be in it (the
    // time is taken just before the files are measured); an acknowledged one must be.
    const SLACK_MS: f64 = 50.0;
    for (i, p) in chosen.iter().enumerate() {
        let t: f64 = p.unix.parse::<f64>().unwrap() * 1000.0;
        let mut redis = recover_and_load(&s3, "load", Some(&p.unix), &work, &format!("p{i}"));
        let got = Resp::connect(redis.port).dataset();
        redis.stop();
        let m = got.len();
        for (j, (k, v)) in got.iter().enumerate() {
            assert_eq!(
                k,
                &format!("k:{:06}", j + 1),
                "point {} holds a gap",
                p.rfc3339
            );
            assert_eq!(v, &format!("v{}", j + 1));
        }
        for w in &writes {
            if w.acked <= t {
                assert!(
                    w.n <= m,
                    "point {}: acknowledged write {} missing (have {m})",
                    p.rfc3339,
                    w.n
                );
            }
            if w.sent > t + SLACK_MS {
                assert!(
                    w.n > m,
                    "point {}: write {} sent after it is present",
                    p.rfc3339,
                    w.n
                );
            }
        }
    }
    // The newest point holds everything.
    let mut redis = recover_and_load(&s3, "load", None, &work, "newest");
    assert_eq!(Resp::connect(redis.port).dataset().len(), KEYS);
    redis.stop();
}

#[test]
fn restart_resumes_a_redis_folder_and_hostile_names_are_refused() {
    let s3 = S3::start();
    let work = Scratch::new("redis-resume");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut redis = Redis::start(&data);
    let aof = data.join("appendonlydir");
    let p = s3.persist("rr", &aof, "0.1");
    redis.cli(&["SET", "a", "1"]);
    wait_for("sync", T, || s3.folder_synced("rr", &aof));
    p.terminate(T);
    let before = s3.keys("rr").len();

    redis.cli(&["SET", "b", "2"]);
    let p = s3.persist("rr", &aof, "0.1");
    wait_for("catch-up", T, || s3.folder_synced("rr", &aof));
    let out = p.terminate(T);
    assert!(out.err().contains("resuming generation 1"), "{}", out.err());
    let objs = s3.ranges("rr");
    assert!(objs.iter().all(|o| o.generation == 1), "{objs:?}");
    // The restart added the growth of the incr file and one manifest: nothing re-uploaded.
    assert_eq!(s3.keys("rr").len(), before + 2, "{objs:?}");
    redis.stop();

    // A manifest naming a file outside the folder is refused by persist, with nothing uploaded.
    let evil = work.path("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(
        evil.join("appendonly.aof.manifest"),
        "file ../../etc/passwd seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .unwrap();
    let out = s3
        .petrify()
        .args(["persist", "--bucket", BUCKET, "--prefix", "evil", "--file"])
        .arg(&evil)
        .output()
        .unwrap();
    assert_fails(&out, 65, "plain names");
    assert!(s3.keys("evil").is_empty());
}

/// Waits until the wall clock is inside the middle of a second after `after`, and returns that
/// second: a write sent then is in that second by Redis's clock too (Redis reads the same
/// clock; the margins cover its cached time), so which second holds it is never a coin toss.
fn mid_second_after(after: u64) -> u64 {
    let mut second = 0;
    wait_for("the middle of a second", T, || {
        let now = now_ms_f() as u64;
        second = now / 1000;
        second > after && (250..650).contains(&(now % 1000))
    });
    second
}

#[test]
fn timestamp_marks_make_every_second_a_point_between_looks() {
    let s3 = S3::start();
    let work = Scratch::new("redis-marks");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut redis = Redis::start_with(&data, &["--aof-timestamp-enabled", "yes"]);
    let aof = data.join("appendonlydir");
    // Ten-second looks: every other point must come from Redis's marks.
    let persist = s3.persist("marks", &aof, "10");
    wait_for("the first generation", T, || {
        s3.folder_synced("marks", &aof)
    });

    // Two writes in each of 24 seconds, a rewrite after the 12th: when each was sent and
    // acknowledged (ms). Sent mid-second, each is in the second it was sent in, but on a
    // machine that stalls: its second by Redis's clock is between the two.
    let mut writes: Vec<(f64, f64)> = Vec::new();
    let mut conn = Resp::connect(redis.port);
    // Writes start in the second after the first look's.
    let mut second = now_ms_f() as u64 / 1000;
    let mut rewrite_at = 0;
    for i in 0..24 {
        second = mid_second_after(second);
        for _ in 0..2 {
            let n = writes.len() + 1;
            let sent = now_ms_f();
            let r = conn.call(&["SET", &format!("k:{n:04}"), &format!("v{n}")]);
            assert_eq!(r, Reply::Simple("OK".into()));
            writes.push((sent, now_ms_f()));
        }
        if i == 11 {
            let r = conn.call(&["BGREWRITEAOF"]);
            assert!(matches!(r, Reply::Simple(_)), "{r:?}");
            redis.wait_rewrite_done();
            rewrite_at = second;
        }
    }
    let last = second;
    wait_for("the last writes to reach the bucket", T, || {
        s3.folder_synced("marks", &aof)
    });
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    redis.stop();

    let points = s3.list("marks");
    let times: Vec<u64> = points
        .iter()
        .map(|p| (p.unix.parse::<f64>().unwrap() * 1000.0).round() as u64)
        .collect();
    let newest = points.last().unwrap().generation;
    assert!(newest >= 2, "the rewrite started a generation: {points:?}");
    // From the second after the generation's first look (the writes start after it).
    let first = times[0] / 1000 + 1;
    assert!(first * 1000 <= writes[0].0 as u64, "{points:?}");
    let sec = |ms: f64| ms as u64 / 1000;
    let mut exact = 0;
    for s in first..=last + 1 {
        let at = s * 1000;
        // What recover must give: the newest point at or before the second, and in it every
        // write of the seconds before that point's.
        let Some(i) = times.iter().rposition(|&t| t <= at) else {
            panic!("no point at or before {s}: {points:?}");
        };
        let mut redis = recover_and_load(&s3, "marks", Some(&s.to_string()), &work, "at");
        let got = Resp::connect(redis.port).dataset();
        redis.stop();
        for (j, (k, v)) in got.iter().enumerate() {
            assert_eq!((k, v), (&format!("k:{:04}", j + 1), &format!("v{}", j + 1)));
        }
        // The point holds every write acknowledged before it and none sent after it (but for
        // a moment's slack: a look's time is taken just before the files are measured, and a
        // file's modification time, which labels a generation's last point, is coarse).
        let t = times[i] as f64;
        let must = writes.iter().filter(|w| w.1 < t).count();
        let may = writes.iter().filter(|w| w.0 <= t + 50.0).count();
        assert!(
            (must..=may).contains(&got.len()),
            "at {s} (point {}): {} keys, not between {must} and {may}",
            points[i].rfc3339,
            got.len()
        );
        // To the second, across the rewrite too (the old generation's last upload cuts at
        // the marks before it, the new one's first upload at those after it): every write of
        // the seconds before, and no other.
        let (lo, hi) = (
            writes.iter().filter(|w| sec(w.1) < s).count(),
            writes.iter().filter(|w| sec(w.0) < s).count(),
        );
        assert!(
            (lo..=hi).contains(&got.len()),
            "at {s}: {} keys, not the {lo} written before it: {points:?}, rewrite at {rewrite_at}",
            got.len()
        );
        exact += usize::from(lo == hi);
    }
    eprintln!(
        "marks: {} writes over {} s, {} points listed, {exact} seconds recovered exactly",
        writes.len(),
        last - sec(writes[0].0) + 1,
        points.len()
    );
    // Marks, not looks, made most points: ten-second looks over 24 s make four or five.
    assert!(points.len() >= 20, "{points:?}");
}

#[test]
fn the_restore_drill_loads_a_good_point_and_refuses_a_damaged_one() {
    let s3 = S3::start();
    let work = Scratch::new("redis-drill");
    let data = work.path("data");
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let mut redis = Redis::start(&data);
    let aof = data.join("appendonlydir");
    let persist = s3.persist("drill", &aof, "0.1");
    for k in ["a", "b", "c"] {
        redis.cli(&["SET", k, "1"]);
    }
    wait_for("sync", T, || s3.folder_synced("drill", &aof));
    let good = s3.list("drill").last().unwrap().unix.clone();
    let drill = |extra: &[&str]| {
        let server = server();
        let mut args = vec!["verify", "--bucket", BUCKET, "--prefix", "drill", "--load"];
        args.extend_from_slice(extra);
        let mut cmd = s3.petrify();
        cmd.env("TMPDIR", &tmp).args(&args);
        if !extra.contains(&"--server") {
            cmd.arg("--server").arg(&server);
        }
        let out = cmd.output().unwrap();
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "the scratch folder is left: {left:?}");
        out
    };

    // A good point: the server loads it, with its keys.
    let out = drill(&[]);
    assert!(out.status.success(), "{}", out.err());
    assert!(
        text(&out.stdout).contains("LOADED") && text(&out.stdout).contains("(3 keys)"),
        "{}",
        text(&out.stdout)
    );
    if !is_valkey() {
        let out = drill(&["--server", "redis-check-aof"]);
        assert!(out.status.success(), "{}", out.err());
        assert!(
            text(&out.stdout).contains("accepts"),
            "{}",
            text(&out.stdout)
        );
    }

    // Bytes no Redis wrote, stored whole with their CRC: every check passes, the load fails.
    redis.stop();
    let incr = aof_files(&aof)
        .into_iter()
        .find(|(n, _)| n.contains(".incr."))
        .unwrap()
        .0;
    append(&aof.join(incr), b"this is not a command\r\n");
    wait_for("the damage in the bucket", T, || {
        s3.folder_synced("drill", &aof)
    });
    let out = drill(&[]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}{}",
        text(&out.stdout),
        out.err()
    );
    assert!(out.err().contains("did not load"), "{}", out.err());
    let out = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "drill", "--deep"]);
    assert!(out.status.success(), "the bytes are whole: {}", out.err());
    // The point before the damage still loads.
    let out = drill(&["--at-timestamp", &good]);
    assert!(out.status.success(), "{}", out.err());

    // A single file is no folder to load: refused, before anything is fetched.
    let log = work.path("log");
    std::fs::write(&log, b"some bytes\n").unwrap();
    let p = s3.persist("drillfile", &log, "0.1");
    wait_for("the file in the bucket", T, || {
        s3.uploaded_end("drillfile") == Some(11)
    });
    p.terminate(T);
    let out = s3
        .petrify()
        .env("TMPDIR", &tmp)
        .args([
            "verify",
            "--bucket",
            BUCKET,
            "--prefix",
            "drillfile",
            "--load",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", out.err());
    assert!(out.err().contains("single file"), "{}", out.err());

    // No program to run: said, with 78.
    let out = s3
        .petrify()
        .env("PATH", "/nonexistent")
        .args(["verify", "--bucket", BUCKET, "--prefix", "drill", "--load"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", out.err());
    assert!(out.err().contains("--server PATH"), "{}", out.err());
    persist.terminate(T);
}
