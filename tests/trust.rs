//! What an operator must be able to trust, end to end against a real s3s-fs (and redis-server):
//! a point is listed only once all of it has landed (a split upload cut short by a refusing
//! store, a SIGKILL between its pieces, a Redis catch-up killed midway); merged objects the store
//! kept but whose answers were lost never make list, verify and recover disagree; one writer per
//! prefix across PID namespaces and on a store that ignores `If-None-Match`; a credential helper
//! that hangs does not hold up SIGTERM; the lag metric is not 0 while bytes wait.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;

const T: Duration = Duration::from_secs(60);

/// Bytes that do not repeat, so that a misplaced range cannot pass for the right one.
fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..n).map(|_| b'a' + r.below(26) as u8).collect()
}

fn count(keys: &[String], suffix: &str) -> usize {
    // A sealed key ends with its seal: the kind is a segment inside it.
    keys.iter()
        .filter(|k| k.ends_with(suffix) || k.contains(&format!("{suffix}.")))
        .count()
}

/// `petrify recover` of the newest point (or the one at `at`) into `path`: its bytes.
fn recovered(s3: &S3, prefix: &str, path: &std::path::Path, at: Option<&str>) -> Vec<u8> {
    let _ = std::fs::remove_file(path);
    let extra: Vec<&str> = at.map_or(vec![], |t| vec!["--at-timestamp", t]);
    let out = s3.recover(prefix, path, &extra);
    assert!(
        out.status.success(),
        "recover {at:?}: {}",
        text(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// Recovers about `n` of `points` (spread over them, the newest always) and checks each: as
/// long as `list` says, a prefix of `data`, and holding at least what was appended before its
/// time (`sizes`: the file's size after each append, with the time it was done).
fn recover_sampled(
    s3: &S3,
    prefix: &str,
    work: &Scratch,
    (points, n): (&[Point], usize),
    (data, sizes): (&[u8], &[(f64, usize)]),
    what: &str,
) {
    let step = (points.len() / n).max(1);
    for (i, p) in points.iter().enumerate() {
        if i % step != 0 && i + 1 != points.len() {
            continue;
        }
        let got = recovered(s3, prefix, &work.path("r"), Some(&p.unix));
        assert_eq!(got.len() as u64, p.bytes, "{what}: {p:?}");
        assert!(got == data[..got.len()], "{what}: {p:?} differs");
        let t = p.unix.parse::<f64>().unwrap() * 1000.0;
        let at_least = sizes
            .iter()
            .take_while(|(when, _)| *when < t - 5.0)
            .last()
            .map_or(0, |(_, n)| *n);
        assert!(got.len() >= at_least, "{what}: {p:?} misses earlier writes");
    }
}

/// A 5 MiB range in 1 MiB objects; the store takes two and refuses the rest. No point may show
/// (list, status and recover agree), persist is killed between the pieces, and the next persist
/// continues after them and closes a point holding every byte.
#[test]
fn a_split_upload_cut_short_is_no_point_until_the_next_one_closes() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 11, 0.0);
    let work = Scratch::new("split-cut");
    let log = work.path("log");
    let data = content((5 << 20) + 1234, 5);
    std::fs::write(&log, &data).unwrap();
    proxy.config.pass_object_puts.store(2, Ordering::SeqCst);
    let split = |c: &mut std::process::Command| {
        c.env("PETRIFY_MAX_OBJECT_BYTES", "1048576")
            .args(["--compaction", "off"]);
    };
    let mut c = s3.persist_cmd(&proxy.endpoint(), "split", &log, "0.1");
    split(&mut c);
    let first = spawn(c);
    wait_for("the store to refuse the third object", T, || {
        proxy.stats.refused.load(Ordering::SeqCst) >= 2
    });
    let keys = s3.keys("split");
    assert_eq!(count(&keys, ".piece"), 2, "{keys:?}");
    assert_eq!(count(&keys, ".delta"), 0, "{keys:?}");
    // Nobody offers the point: list shows none, status and recover find none.
    let listed = s3.run(&["list", "--bucket", BUCKET, "--prefix", "split"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(
        text(&listed.stdout),
        "",
        "a point whose pieces are not all there"
    );
    let status = s3.run(&["status", "--bucket", BUCKET, "--prefix", "split"]);
    assert_eq!(status.status.code(), Some(66), "{}", text(&status.stderr));
    let out = s3.recover("split", &work.path("r0"), &[]);
    assert_fails(&out, 66, "no recovery point");
    assert!(!work.path("r0").exists());
    // Killed between the pieces.
    first.kill();

    proxy
        .config
        .pass_object_puts
        .store(u64::MAX, Ordering::SeqCst);
    let mut c = s3.persist_cmd(&proxy.endpoint(), "split", &log, "0.1");
    split(&mut c);
    let second = spawn(c);
    wait_for("one point of every byte", T, || {
        s3.list("split").last().map(|p| p.bytes) == Some(data.len() as u64)
    });
    let points = s3.list("split");
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(recovered(&s3, "split", &work.path("r1"), None), data);
    // The pieces that landed were continued, not sent again.
    let objs = s3.ranges("split");
    assert_eq!(objs.len(), 6, "{objs:?}");
    assert_eq!(objs.iter().filter(|o| o.start == 0).count(), 1, "{objs:?}");
    let out = second.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    let verify = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "split", "--deep"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// Redis writes 20 MiB while persist is down; the next persist's catch-up goes up in 1 MiB
/// objects and is killed midway. The newest listed point is then the one before: recovered,
/// it loads in Redis with exactly the keys Redis held then.
#[test]
fn a_redis_catch_up_killed_midway_leaves_the_newest_point_whole() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 13, 0.0);
    let work = Scratch::new("redis-catch-up");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut redis = Redis::start(&data);
    let aof = data.join("appendonlydir");
    for i in 0..100 {
        assert_eq!(redis.cli(&["SET", &format!("k{i}"), "v"]).trim(), "OK");
    }
    let persist = s3.persist("catchup", &aof, "0.1");
    wait_for("the folder in the bucket", T, || {
        s3.folder_synced("catchup", &aof)
    });
    let before = redis.dataset();
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);

    let mut conn = Resp::connect(redis.port);
    let value = "x".repeat(100 << 10);
    for i in 0..200 {
        conn.call(&["SET", &format!("big{i}"), &value]);
    }
    proxy.config.pass_object_puts.store(3, Ordering::SeqCst);
    let mut c = s3.persist_cmd(&proxy.endpoint(), "catchup", &aof, "0.1");
    c.env("PETRIFY_MAX_OBJECT_BYTES", "1048576");
    let catching_up = spawn(c);
    wait_for(
        "the store to refuse the catch-up's fourth object",
        T,
        || proxy.stats.refused.load(Ordering::SeqCst) >= 1,
    );
    catching_up.kill();
    assert!(count(&s3.keys("catchup"), ".piece") >= 3);

    let newest = s3.list("catchup").last().cloned().expect("a point");
    let dir = work.path("restored");
    std::fs::create_dir_all(&dir).unwrap();
    let restored = dir.join("appendonlydir");
    let out = s3.recover("catchup", &restored, &["--at-timestamp", &newest.unix]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let check = std::process::Command::new("redis-check-aof")
        .arg(restored.join("appendonly.aof.manifest"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    redis.stop();
    let loaded = Redis::start(&dir);
    assert_eq!(
        loaded.dataset(),
        before,
        "the newest point is what Redis held then"
    );
}

/// Half of the merged objects the store keeps lose their answer, so persist falls back to a
/// plain delta while the merged object stays. Every point list shows recovers to a prefix of
/// the file at least as long as the file was at its time, verify --deep agrees, and list shows
/// no broken point.
#[test]
fn merged_objects_kept_without_an_answer_never_make_readers_disagree() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 17, 0.0);
    *proxy.config.lose_merged_answers.lock().unwrap() = 0.5;
    let work = Scratch::new("lost-merges");
    let log = work.path("log");
    std::fs::write(&log, b"").unwrap();
    let mut c = s3.persist_cmd(&proxy.endpoint(), "lost", &log, "0.05");
    c.args(["--compaction", "100ms,400ms,2s"]);
    let persist = spawn(c);
    // Sizes after each append, with the time it was done: a point at time T holds at least
    // what was appended before T.
    let mut sizes: Vec<(f64, usize)> = Vec::new();
    let mut all = Vec::new();
    let mut r = Rng(99);
    let started = Instant::now();
    // Until enough merged uploads lost their answer (not a fixed time: a busy machine makes
    // fewer merges a second).
    while proxy.stats.faults.load(Ordering::SeqCst) < 4
        || started.elapsed() < Duration::from_secs(3)
    {
        assert!(
            started.elapsed() < T,
            "no merged upload lost its answer: {}",
            persist.log()
        );
        let line = format!("{:06} {}\n", all.len(), "z".repeat(r.below(200) as usize));
        append(&log, line.as_bytes());
        all.extend_from_slice(line.as_bytes());
        sizes.push((now_ms_f(), all.len()));
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_for("every byte in a point", T, || {
        s3.list("lost").last().map(|p| p.bytes) == Some(all.len() as u64)
    });
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    let points = s3.list("lost");
    let verify = s3.run(&["verify", "--bucket", BUCKET, "--prefix", "lost", "--deep"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    recover_sampled(
        &s3,
        "lost",
        &work,
        (&points, 40),
        (&all, &sizes),
        "lost answers",
    );
}

/// `unshare` runs `c` as PID 1 of a new PID namespace (the way a container runs its entry
/// point), killed with it.
fn in_pid_namespace(c: &std::process::Command) -> std::process::Command {
    let mut u = std::process::Command::new("unshare");
    u.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => u.env(k, v),
            None => u.env_remove(k),
        };
    }
    u
}

/// Two containers on one host (one host name, one boot), each running persist as its own
/// PID 1 on one prefix: the second cannot tell whether the first's pid 1 runs, and refuses.
#[test]
fn two_persists_as_pid_1_of_their_own_namespaces_do_not_share_a_prefix() {
    let usable = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(usable, "unshare --pid needs root (CI runs as root)");
    let s3 = S3::start_fs();
    let work = Scratch::new("pidns");
    let log = work.path("log");
    std::fs::write(&log, b"first line\n").unwrap();
    let first = spawn(in_pid_namespace(&s3.persist_cmd(
        &s3.endpoint(),
        "pidns",
        &log,
        "0.1",
    )));
    wait_for("the first persist's upload", T, || {
        s3.uploaded_end("pidns") == Some(11)
    });
    let lease = std::fs::read_to_string(s3.object_path("pidns", "writer.lease")).unwrap();
    assert!(
        lease.contains("\npid 1\n") && lease.contains("\npidns "),
        "{lease}"
    );
    let keys = s3.keys("pidns");
    let second = spawn(in_pid_namespace(&s3.persist_cmd(
        &s3.endpoint(),
        "pidns",
        &log,
        "0.1",
    )));
    let out = second.wait_exit(T);
    assert_eq!(out.status.code(), Some(73), "{}", out.stderr);
    assert!(out.stderr.contains("PID namespace"), "{}", out.stderr);
    assert!(out.stderr.contains("writer.lease"), "{}", out.stderr);
    assert_eq!(s3.keys("pidns"), keys, "the second wrote nothing");
    let still = std::fs::read_to_string(s3.object_path("pidns", "writer.lease")).unwrap();
    assert_eq!(still, lease, "the first one's lease is untouched");
    // The first goes on alone.
    append(&log, b"second line\n");
    wait_for("the first persist to go on", T, || {
        s3.uploaded_end("pidns") == Some(23)
    });
    assert_eq!(
        recovered(&s3, "pidns", &work.path("r"), None),
        b"first line\nsecond line\n"
    );
    drop(first);
}

/// A store that ignores `If-None-Match` (the proxy drops it) and a second persist started in
/// the moment between the first's read and write of the lease: both read back their own. The
/// first checks again before it writes a generation, finds the other's, and stops with 73
/// having written nothing; the other backs the file up alone.
#[test]
fn on_a_store_that_ignores_if_none_match_one_of_two_writers_stops() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 19, 0.0);
    proxy
        .config
        .strip_if_none_match
        .store(true, Ordering::SeqCst);
    let work = Scratch::new("inm");
    let log = work.path("log");
    // Both wait for the file: neither has uploaded anything yet.
    let first = s3.persist_via(&proxy.endpoint(), "inm", &log, "0.1");
    first.wait_log("waiting for", T);
    proxy.config.hide_lease_gets.store(1, Ordering::SeqCst);
    let second = s3.persist_via(&proxy.endpoint(), "inm", &log, "0.1");
    second.wait_log("waiting for", T);
    // Made whole beside it and renamed into place: one look sees all of it.
    std::fs::write(work.path("tmp"), b"only one writer\n").unwrap();
    std::fs::rename(work.path("tmp"), &log).unwrap();
    let out = first.wait_exit(T);
    assert_eq!(out.status.code(), Some(73), "{}", out.stderr);
    assert!(
        out.stderr.contains("no longer this process's"),
        "{}",
        out.stderr
    );
    wait_for("the other writer's upload", T, || {
        s3.uploaded_end("inm") == Some(16)
    });
    let out2 = second.terminate(T);
    assert!(out2.status.success(), "{}", out2.stderr);
    // One object: the writer that lost wrote none.
    assert_eq!(s3.ranges("inm").len(), 1, "{:?}", s3.keys("inm"));
    assert_eq!(
        recovered(&s3, "inm", &work.path("r"), None),
        b"only one writer\n"
    );
}

/// A profile's credential_process answers once (credentials valid 4 s), then hangs like a
/// helper waiting for a login. Persist says the credentials expired, and when, and SIGTERM
/// ends it with 75 (bytes waiting), within the grace the man page promises.
#[test]
fn a_hanging_credential_process_does_not_hold_up_sigterm() {
    let s3 = S3::start();
    let work = Scratch::new("hanging-helper");
    let marker = work.path("answered");
    // A sleep no other process runs, to find the helper's child by.
    let nap = format!("601.{}", std::process::id());
    let helper = work.path("helper.sh");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nif [ -e {m} ]; then touch {m}.again; sleep {nap}; exit 0; fi\ntouch {m}\n\
             exp=$(date -u -d '+4 seconds' +%Y-%m-%dT%H:%M:%SZ)\nprintf '{{\"Version\": 1, \
             \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \"{SECRET_KEY}\", \
             \"Expiration\": \"%s\"}}' \"$exp\"\n",
            m = marker.display(),
            nap = nap
        ),
    )
    .unwrap();
    let config = work.path("config");
    std::fs::write(
        &config,
        format!(
            "[profile helper]\ncredential_process = sh {}\n",
            helper.display()
        ),
    )
    .unwrap();
    let log = work.path("log");
    std::fs::write(&log, b"before\n").unwrap();
    let mut c = s3.persist_cmd(&s3.endpoint(), "helper", &log, "0.2");
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_PROFILE", "helper")
        .env("AWS_CONFIG_FILE", &config);
    let persist = spawn(c);
    wait_for("the first upload", T, || {
        s3.uploaded_end("helper") == Some(7)
    });
    // Credentials are fetched again when a request is signed within half their lifetime of
    // expiring (2 s here): a write then asks the helper, which hangs.
    let answered = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let since_answer = |ms| {
        move || {
            answered
                .elapsed()
                .is_ok_and(|e| e > Duration::from_millis(ms))
        }
    };
    wait_for("the refresh margin", T, since_answer(2500));
    append(&log, b"after\n");
    wait_for("the helper to hang", T, || {
        work.path("answered.again").exists()
    });
    // Past the credentials' expiry (at most 4 s after the helper answered), bytes waiting.
    wait_for("the credentials to expire", T, since_answer(5500));
    let asked = Instant::now();
    let out = persist.terminate(Duration::from_secs(45));
    let took = asked.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", out.stderr);
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(out.stderr.contains("not uploaded"), "{}", out.stderr);
    assert!(out.stderr.contains("expired at"), "{}", out.stderr);
    // The helper, and what it started, are gone too.
    for what in [helper.display().to_string(), format!("sleep {nap}")] {
        let left = std::process::Command::new("pgrep")
            .args(["-f", &what])
            .output()
            .unwrap();
        assert!(text(&left.stdout).trim().is_empty(), "{what} still runs");
    }
}

/// Restarted after the file grew, every upload answered 503: the lag metric counts from the
/// newest point in the bucket, as status does, instead of staying 0.
#[test]
fn the_lag_metric_is_not_zero_while_bytes_wait_after_a_restart() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 23, 0.0);
    let work = Scratch::new("lag");
    let log = work.path("log");
    std::fs::write(&log, b"one\n").unwrap();
    let persist = s3.persist("lag", &log, "0.1");
    wait_for("the first point", T, || s3.uploaded_end("lag") == Some(4));
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    let point_ms: f64 = s3.list("lag")[0].unix.parse::<f64>().unwrap() * 1000.0;
    append(&log, b"two\n");
    proxy.config.pass_object_puts.store(0, Ordering::SeqCst);
    let metrics = work.path("metrics.prom");
    let mut c = s3.persist_cmd(&proxy.endpoint(), "lag", &log, "0.1");
    c.arg("--metrics-file").arg(&metrics);
    let storm = spawn(c);
    let gauge = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(&metrics).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    };
    wait_for("a poll with bytes waiting", T, || {
        gauge("petrify_pending_bytes") == Some(4.0)
    });
    let lag = gauge("petrify_lag_seconds").unwrap();
    let since_point = (now_ms_f() - point_ms) / 1000.0;
    assert!(lag > 0.0, "lag 0 while 4 bytes wait");
    assert!(
        (lag - since_point).abs() < 2.0,
        "lag {lag} s, the newest point is {since_point} s old"
    );
    let status = s3.run(&[
        "status",
        "--bucket",
        BUCKET,
        "--prefix",
        "lag",
        "--file",
        &log.display().to_string(),
        "--json",
    ]);
    let json = text(&status.stdout);
    let field = json
        .split("\"lag_seconds\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no lag in {json}"));
    assert!(
        (field - lag).abs() < 2.0,
        "status says {field}, the metric {lag}"
    );
    drop(storm);
}

/// Compaction against a hostile store, with SIGKILLs between rounds: 5% of object requests fail
/// in every way the proxy knows (errors, resets before and after the store acted, stalls, cut
/// answers), a third of merged uploads are kept by the store but lose their answer, and some
/// writes are large enough to go up in pieces. After each round every point `list` shows
/// recovers to the file's bytes of its time, and `verify --deep` passes.
#[test]
fn compaction_against_a_hostile_store_with_sigkills_keeps_every_listed_point_whole() {
    let s3 = S3::start();
    let proxy = Proxy::start(s3.port, 29, 0.05);
    proxy.set_objects_only(true);
    *proxy.config.lose_merged_answers.lock().unwrap() = 0.3;
    let work = Scratch::new("hostile");
    let file = work.path("log");
    std::fs::write(&file, b"").unwrap();
    let mut rng = Rng(31);
    let mut sizes: Vec<(f64, usize)> = Vec::new();
    let mut len = 0usize;
    for round in 0..4 {
        let mut c = s3.persist_cmd(&proxy.endpoint(), "hostile", &file, "0.03");
        c.env("PETRIFY_MAX_OBJECT_BYTES", "1048576")
            .args(["--compaction", "200ms,1s,3s"]);
        let p = spawn(c);
        let until = Instant::now() + Duration::from_millis(1500 + rng.below(1500));
        while Instant::now() < until {
            let n = match rng.below(40) {
                0 => (1 << 20) + rng.below(2 << 20) as usize, // split into pieces
                _ => 10 + rng.below(300) as usize,
            };
            let chunk = content(n, rng.next());
            append(&file, &chunk);
            len += n;
            sizes.push((now_ms_f(), len));
            std::thread::sleep(Duration::from_millis(8));
        }
        p.kill();
        let data = std::fs::read(&file).unwrap();
        let v = s3.run(&[
            "verify", "--bucket", BUCKET, "--prefix", "hostile", "--deep",
        ]);
        assert!(v.status.success(), "round {round}: {}", text(&v.stdout));
        let points = s3.list("hostile");
        let what = format!("round {round}");
        recover_sampled(&s3, "hostile", &work, (&points, 12), (&data, &sizes), &what);
    }
    assert!(proxy.faults() > 0);
}
