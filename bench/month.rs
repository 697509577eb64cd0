//! A month of history, compressed: persist ticks every 10 ms (a tick stands for a second of a
//! month at the default interval) while a writer appends every 10 ms, once with compaction off
//! and once with spans of 1s,4s,12s,1m,4m (each one a window of a few hundred to some
//! thousands of ticks, as the default spans are of seconds). Reported for each: the points,
//! the objects in the bucket, the GETs and the time to recover the newest point and the
//! oldest, and persist's requests per thousand points (the steady-write cost).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::{BUCKET, S3, Scratch, spawn, wait_for};
use crate::measure::{Sample, Table, Unit};

pub fn month(s3: &S3, work: &Scratch, dur: Duration, t: &mut Table) {
    for (label, spans) in [
        ("compaction off", "off"),
        ("compaction on", "1s,4s,12s,1m,4m"),
    ] {
        let row = |what: &str| format!("simulated month, {label}: {what}");
        let prefix = format!("month-{}", if spans == "off" { "off" } else { "on" });
        let _ = std::fs::remove_dir_all(s3.dir.path(BUCKET).join(&prefix));
        let file = work.path(&prefix);
        std::fs::write(&file, b"").expect("create the log");
        let counter = Proxy::start(s3.port, 1, 0.0);
        let mut cmd = s3.persist_cmd(&counter.endpoint(), &prefix, &file, "0.01");
        cmd.args(["--compaction", spans]);
        let p = spawn(cmd);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("open");
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < dur {
            n += 1;
            writeln!(f, "SET key:{n} {}", "v".repeat((n % 64) as usize)).expect("append");
            std::thread::sleep(
                Duration::from_millis(10).saturating_sub(Duration::from_micros(200)),
            );
        }
        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        wait_for(
            "the last append in the bucket",
            Duration::from_secs(120),
            || s3.list(&prefix).last().is_some_and(|p| p.bytes == len),
        );
        let requests = counter.requests();
        let _ = p.terminate(Duration::from_secs(60));
        let points = s3.list(&prefix);
        let objects = s3.keys(&prefix).len();
        t.add(
            &row("points"),
            "petrify",
            Sample::of(points.len() as f64, Unit::Count),
        );
        t.add(
            &row("objects in the bucket"),
            "petrify",
            Sample::of(objects as f64, Unit::Count),
        );
        t.add(
            &row("persist requests per 1000 points"),
            "petrify",
            Sample::of(
                requests as f64 * 1000.0 / points.len().max(1) as f64,
                Unit::Count,
            ),
        );
        for (which, point) in [("newest", points.last()), ("oldest", points.first())] {
            let Some(point) = point else { continue };
            let out = work.path("month-out");
            let _ = std::fs::remove_file(&out);
            let gets0 = counter.stats.gets.load(std::sync::atomic::Ordering::SeqCst);
            let began = Instant::now();
            let status = s3
                .petrify()
                .env("AWS_ENDPOINT_URL", counter.endpoint())
                .args([
                    "recover",
                    "--bucket",
                    BUCKET,
                    "--prefix",
                    &prefix,
                    "--at-timestamp",
                    &point.unix,
                ])
                .arg("--file")
                .arg(&out)
                .status()
                .expect("run petrify recover");
            let secs = began.elapsed().as_secs_f64();
            assert!(status.success(), "recover of the {which} point failed");
            let gets = counter.stats.gets.load(std::sync::atomic::Ordering::SeqCst) - gets0;
            t.add(
                &row(&format!("GETs to recover the {which} point")),
                "petrify",
                Sample::of(gets as f64, Unit::Count),
            );
            t.add(
                &row(&format!("recover the {which} point")),
                "petrify",
                Sample::of(secs, Unit::Seconds),
            );
        }
    }
}
