//! Crash torture and two writers. A writer appends records continuously while `persist` is
//! killed with SIGKILL at random moments (seeded) and restarted. After every round: every object
//! in the bucket holds exactly the log's bytes at its offsets, and the objects tile the log
//! with no gap and no duplicate byte, so every recovery point is a byte-exact prefix of the log;
//! `petrify recover` proves it on the newest point and a random one (every round in the quick
//! count, every tenth round in long runs, as recovering a growing chain each round is quadratic);
//! the newest covers everything the bucket held before the kill; and there is no second
//! generation (nothing caused one). Rounds: PETRIFY_TORTURE_ROUNDS (default 25).

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::Proxy;
use common::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let rounds: u64 = std::env::var("PETRIFY_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seed: u64 = std::env::var("PETRIFY_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7012_7012);
    let mut rng = Rng(seed | 1);
    let s3 = S3::start();
    let work = Scratch::new("torture");
    let log = work.path("log");
    std::fs::write(&log, b"").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                writeln!(f, "record {n:010}").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let restored = work.path("restored");
    let (mut verified_points, mut verified_bytes) = (0u64, 0u64);
    // Objects below this offset were compared with the log in an earlier round.
    let mut proven = 0u64;
    for round in 0..rounds {
        let p = s3.persist("tt", &log, "0.03");
        // Let it run a random while: sometimes not even past its start.
        let lifetime = Duration::from_millis(20 + rng.below(400));
        std::thread::sleep(lifetime); // the random moment of the crash, not a synchronisation
        let before_kill = s3.uploaded_end("tt").unwrap_or(0);
        p.kill();
        let after_kill = s3.uploaded_end("tt").unwrap_or(0);

        // Objects a merged one replaced may wait for their deletion: not part of the chain.
        let objs = s3.chain_ranges("tt");
        assert!(
            objs.iter().all(|o| o.generation == 1),
            "round {round}: a second generation without a cause: {:?}",
            objs.iter().map(|o| o.generation).max()
        );
        if objs.is_empty() {
            continue; // killed before its first upload
        }
        // No duplicate byte: objects at one offset only differ when an answer was lost, and
        // SIGKILL loses no answer here; every offset is covered exactly once.
        let mut ranges: Vec<(u64, u64)> = objs.iter().map(|o| (o.start, o.end)).collect();
        ranges.sort();
        let mut end = 0;
        for (s, e) in &ranges {
            assert_eq!(
                *s, end,
                "round {round}: gap or overlap at {end}: {ranges:?}"
            );
            end = *e;
        }

        let data = std::fs::read(&log).unwrap();
        for o in objs.iter().filter(|o| o.end > proven) {
            let bytes = s3.object_bytes("tt", o);
            assert_eq!(
                &bytes[..],
                &data[o.start as usize..o.end as usize],
                "round {round}: {}",
                o.key
            );
            verified_bytes += bytes.len() as u64;
        }
        proven = end;
        let points = s3.list("tt");
        let newest = points.last().unwrap();
        assert_eq!(newest.bytes, end, "round {round}");
        assert!(newest.bytes >= before_kill.max(after_kill), "round {round}");
        if rounds > 50 && round % 10 != 9 {
            continue;
        }
        let mut check = vec![newest.clone()];
        check.push(points[rng.below(points.len() as u64) as usize].clone());
        for pt in check {
            let out = s3.recover("tt", &restored, &["--at-timestamp", &pt.unix, "--force"]);
            assert!(out.status.success(), "round {round}: {}", out.err());
            let got = std::fs::read(&restored).unwrap();
            assert_eq!(got.len() as u64, pt.bytes, "round {round}");
            assert_eq!(
                &data[..got.len()],
                &got[..],
                "round {round}: not a prefix of the log"
            );
            verified_points += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // A last clean run catches up everything, from the lease a SIGKILL left behind.
    let p = s3.persist("tt", &log, "0.03");
    let len = std::fs::metadata(&log).unwrap().len();
    wait_for("the final catch-up", T, || {
        s3.uploaded_end("tt") == Some(len)
    });
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let out = s3.recover("tt", &restored, &["--force"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&log).unwrap()
    );
    eprintln!(
        "torture: {rounds} SIGKILL rounds survived, {} objects ({verified_bytes} bytes) compared \
         with the log, {verified_points} points recovered by petrify, 0 lost (seed {seed})",
        s3.keys("tt").len()
    );
}

#[test]
fn a_second_writer_stops_and_the_first_chain_is_intact() {
    let s3 = S3::start();
    let work = Scratch::new("two");
    let first = work.path("first");
    let second = work.path("second");
    std::fs::write(&first, b"the first writer's log\n").unwrap();
    std::fs::write(&second, b"another file entirely\n").unwrap();
    let a = s3.persist("two", &first, "0.05");
    wait_for("the first writer's upload", T, || {
        s3.uploaded_end("two") == Some(23)
    });
    let lease = std::fs::read(s3.object_path("two", "writer.lease")).unwrap();

    // 1. The store checks conditions (s3s-fs does) and the second writer starts in the race
    //    window: it does not see the lease, writes with If-None-Match: *, gets 412, stops.
    let race = Proxy::start(s3.port, 1, 0.0);
    race.config.hide_lease_gets.store(1, Ordering::SeqCst);
    let out = s3
        .petrify()
        .env("AWS_ENDPOINT_URL", race.endpoint())
        .args(["persist", "--bucket", BUCKET, "--prefix", "two", "--file"])
        .arg(&second)
        .output()
        .unwrap();
    assert_fails(&out, 73, "another petrify persist writes to");
    assert!(
        out.err().contains(&format!("pid {}", a.pid())),
        "{}",
        out.err()
    );

    // 2. A store that ignores If-None-Match: the lease is read first; a live holder on this
    //    host stops the second writer.
    let plain = Proxy::start(s3.port, 1, 0.0);
    plain
        .config
        .strip_if_none_match
        .store(true, Ordering::SeqCst);
    let out = s3
        .petrify()
        .env("AWS_ENDPOINT_URL", plain.endpoint())
        .args(["persist", "--bucket", BUCKET, "--prefix", "two", "--file"])
        .arg(&second)
        .output()
        .unwrap();
    assert_fails(&out, 73, "another petrify persist writes to");

    // The first writer never noticed: same lease, its chain goes on and recovers.
    assert_eq!(
        std::fs::read(s3.object_path("two", "writer.lease")).unwrap(),
        lease
    );
    append(&first, b"more from the first\n");
    wait_for("the first writer's next upload", T, || {
        s3.uploaded_end("two") == Some(43)
    });
    let out = a.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(!s3.has_lease("two"), "a clean stop gives the lease up");
    let restored = work.path("restored");
    let out = s3.recover("two", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&first).unwrap()
    );
    assert!(s3.ranges("two").iter().all(|o| o.generation == 1));

    // 3. A writer killed with SIGKILL leaves its lease; the next start on this host sees the
    //    process is gone and takes over.
    let a = s3.persist("two", &first, "0.05");
    wait_for("lease", T, || s3.has_lease("two"));
    a.kill();
    let b = s3.persist("two", &first, "0.05");
    b.wait_log("taking over the writer lease", T);
    let out = b.terminate(T);
    assert!(out.status.success(), "{}", out.err());
}

#[test]
fn sigkill_while_redis_writes_and_rewrites() {
    let rounds: u64 = std::env::var("PETRIFY_TORTURE_REDIS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut rng = Rng(0x0ed1_5000_0000_0001);
    let s3 = S3::start();
    let work = Scratch::new("torture-redis");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // With `#TS` marks: points inside uploads too, each of which must hold exactly the writes
    // made before it.
    let mut redis = Redis::start_with(
        &data,
        &[
            "--rdb-key-save-delay",
            "100",
            "--aof-timestamp-enabled",
            "yes",
        ],
    );
    let aof = data.join("appendonlydir");

    // Writes keys k:000001, k:000002, ... and records when each was sent and acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let sent = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let writer = {
        let (stop, acked, sent, port) = (stop.clone(), acked.clone(), sent.clone(), redis.port);
        std::thread::spawn(move || {
            let mut conn = Resp::connect(port);
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                sent.lock().unwrap().push(now_ms_f());
                let r = conn.call(&["SET", &format!("k:{n:06}"), &format!("v{n}")]);
                assert_eq!(r, Reply::Simple("OK".into()));
                acked.lock().unwrap().push(now_ms_f());
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let (mut checked, mut marks) = (0, 0);
    for round in 0..rounds {
        if round % 2 == 1 {
            redis.wait_rewrite_done();
            redis.cli(&["BGREWRITEAOF"]);
        }
        let p = s3.persist("tr", &aof, "0.03");
        std::thread::sleep(Duration::from_millis(100 + rng.below(500))); // the crash moment
        p.kill();
        let points = s3.list("tr");
        let Some(newest) = points.last() else {
            continue;
        };
        let pick = points[rng.below(points.len() as u64) as usize].clone();
        // And the newest points marks made (listed at a second's last millisecond).
        let marked = points
            .iter()
            .rev()
            .filter(|p| p.unix.ends_with(".999"))
            .take(2);
        let mut check = vec![newest.clone(), pick];
        check.extend(marked.cloned());
        check.dedup();
        for pt in check {
            let dir = work.path(&format!("r{round}-{}", pt.unix));
            std::fs::create_dir_all(&dir).unwrap();
            let out = s3.recover(
                "tr",
                &dir.join("appendonlydir"),
                &["--at-timestamp", &pt.unix],
            );
            assert!(out.status.success(), "round {round}: {}", out.err());
            let mut r = Redis::start(&dir);
            let got = Resp::connect(r.port).dataset();
            r.stop();
            let t = pt.unix.parse::<f64>().unwrap() * 1000.0;
            let must = acked.lock().unwrap().iter().filter(|a| **a <= t).count();
            for (j, (k, _)) in got.iter().enumerate() {
                assert_eq!(
                    k,
                    &format!("k:{:06}", j + 1),
                    "round {round}: a gap at {}",
                    pt.rfc3339
                );
            }
            assert!(
                got.len() >= must,
                "round {round}: point {} lost acknowledged writes",
                pt.rfc3339
            );
            // Nothing sent after the point (a moment's slack: the time of a look is taken just
            // before the files are measured).
            let may = sent
                .lock()
                .unwrap()
                .iter()
                .filter(|s| **s <= t + 50.0)
                .count();
            assert!(
                got.len() <= may,
                "round {round}: point {} holds {} writes, only {may} were sent by then",
                pt.rfc3339,
                got.len()
            );
            marks += usize::from(pt.unix.ends_with(".999"));
            checked += 1;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let writes = acked.lock().unwrap().len();
    redis.stop();
    eprintln!(
        "torture (redis): {rounds} SIGKILL rounds with rewrites, {writes} writes, {checked} points started in Redis ({marks} made by #TS marks), 0 lost, none early"
    );
}
