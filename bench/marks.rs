//! Redis to the second: while Redis takes a write every 100 ms, persist at `--interval 1`
//! without timestamp marks against `--interval 10` with them (`aof-timestamp-enabled yes`).
//! Reported per hour: object writes (PUTs and multipart creations, through the tests' counting
//! proxy), all requests, and the recovery points the window holds (what `--at-timestamp` can
//! land on).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::{BUCKET, Redis, Resp, S3, Scratch, spawn, wait_for};
use crate::measure::{Sample, Table, Unit};

pub fn marks(s3: &S3, work: &Scratch, dur: Duration, t: &mut Table) {
    for (label, interval, marks) in [
        ("--interval 1, no marks", "1", false),
        ("--interval 10, #TS marks", "10", true),
    ] {
        let row = |what: &str| format!("Redis, a write every 100 ms, {label}: {what} per hour");
        let prefix = format!("marks-{interval}");
        let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join(&prefix));
        let data = work.path(&prefix);
        std::fs::create_dir_all(&data).expect("create the Redis folder");
        let extra: &[&str] = match marks {
            true => &["--aof-timestamp-enabled", "yes"],
            false => &[],
        };
        let mut redis = Redis::start_with(&data, extra);
        let aof = data.join("appendonlydir");
        let counter = Proxy::start(s3.port, 1, 0.0);
        let p = spawn(s3.persist_cmd(&counter.endpoint(), &prefix, &aof, interval));
        wait_for("the first generation", Duration::from_secs(30), || {
            s3.folder_synced(&prefix, &aof)
        });
        let (writes0, requests0) = (
            counter.stats.object_writes.load(Ordering::SeqCst),
            counter.requests(),
        );
        let mut conn = Resp::connect(redis.port);
        let start = Instant::now();
        let from = s3.list(&prefix).len();
        let mut n = 0u64;
        while start.elapsed() < dur {
            n += 1;
            conn.call(&["SET", &format!("k:{n}"), "v"]);
            let next = start + Duration::from_millis(100 * n);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let window = start.elapsed().as_secs_f64();
        // Every write in the bucket: the window's last look has run.
        wait_for(
            "the last write in the bucket",
            Duration::from_secs(60),
            || s3.folder_synced(&prefix, &aof),
        );
        let per_hour = |x: u64| x as f64 * 3600.0 / window;
        let writes = counter.stats.object_writes.load(Ordering::SeqCst) - writes0;
        let requests = counter.requests() - requests0;
        let _ = p.terminate(Duration::from_secs(30));
        redis.stop();
        let points = s3.list(&prefix).len().saturating_sub(from) as u64;
        for (what, x) in [
            ("object writes", writes),
            ("requests", requests),
            ("recovery points", points),
        ] {
            t.add(&row(what), "petrify", Sample::of(per_hour(x), Unit::Count));
        }
    }
}
