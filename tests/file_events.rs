//! What operators do to files under a running persist, each case driven through the real
//! binary against a real s3s-fs (and a real redis-server where it is Redis), each asserting the
//! bytes recovered afterwards: truncation and regrowth between two polls, logrotate `create`
//! with late writes, a file written in place, a FIFO, SIGHUP, a chain with a deleted object, a
//! stale lease after a reboot, a Redis folder restored under persist, a clock set back, and S3
//! errors in their own words.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn recovered(s3: &S3, prefix: &str, work: &Scratch, extra: &[&str]) -> Vec<u8> {
    let out_file = work.path("recovered");
    let mut args = vec!["--force"];
    args.extend_from_slice(extra);
    let out = s3.recover(prefix, &out_file, &args);
    assert!(out.status.success(), "recover {extra:?}: {}", out.err());
    std::fs::read(&out_file).unwrap()
}

fn newest_generation(s3: &S3, prefix: &str) -> u64 {
    s3.ranges(prefix)
        .iter()
        .map(|o| o.generation)
        .max()
        .unwrap_or(0)
}

/// logrotate `copytruncate` on a busy log: the file is cut to nothing and written past its old
/// length before persist looks again. Lengths alone make that an append (old head + new tail).
#[test]
fn truncated_and_regrown_between_two_polls_starts_a_new_generation() {
    let s3 = S3::start();
    let work = Scratch::new("regrow");
    let file = work.path("app.log");
    let old: Vec<u8> = b"old line\n".repeat(30);
    std::fs::write(&file, &old).unwrap();
    let p = s3.persist("regrow", &file, "0.2");
    wait_for("first upload", T, || {
        s3.uploaded_end("regrow") == Some(old.len() as u64)
    });
    // Truncate and write more than before, in microseconds: well within one interval.
    let new: Vec<u8> = b"NEW LINE AFTER ROTATION\n".repeat(20);
    std::fs::write(&file, &new).unwrap();
    wait_for("a new generation with the new content", T, || {
        newest_generation(&s3, "regrow") == 2 && s3.uploaded_end("regrow") == Some(new.len() as u64)
    });
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(out.err().contains("WARN"), "{}", out.err());
    assert!(
        out.err().contains("differ from the bytes uploaded"),
        "{}",
        out.err()
    );
    assert_eq!(recovered(&s3, "regrow", &work, &[]), new);
    // The old generation still recovers to the old file.
    let points = s3.list("regrow");
    let last_old = points.iter().rfind(|p| p.generation == 1).unwrap();
    assert_eq!(
        recovered(&s3, "regrow", &work, &["--at-timestamp", &last_old.unix]),
        old
    );
}

/// logrotate `create`: the log is renamed away and a new one created; the application writes
/// to the renamed file until it reopens. Those late lines belong to the old generation.
#[test]
fn logrotate_create_late_writes_extend_the_old_generation() {
    let s3 = S3::start();
    let work = Scratch::new("rotate");
    let file = work.path("app.log");
    let mut app = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .unwrap();
    use std::io::Write;
    app.write_all(b"before rotation\n").unwrap();
    let p = s3.persist("rotate", &file, "0.1");
    wait_for("first upload", T, || s3.uploaded_end("rotate") == Some(16));

    std::fs::rename(&file, work.path("app.log.1")).unwrap();
    std::fs::write(&file, b"").unwrap();
    // The application has not reopened yet: two late lines, each waited for in the bucket.
    let mut old_len = 16u64;
    for line in [&b"late line one\n"[..], b"late line two\n"] {
        app.write_all(line).unwrap();
        old_len += line.len() as u64;
        wait_for("the late line in generation 1", T, || {
            s3.ranges("rotate")
                .iter()
                .any(|o| o.generation == 1 && o.end == old_len)
        });
    }
    // Reopened: new lines go to the new file.
    drop(app);
    append(&file, b"after reopen\n");
    wait_for("generation 2 with the new file", T, || {
        newest_generation(&s3, "rotate") == 2 && s3.uploaded_end("rotate") == Some(13)
    });
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());

    let old_final = std::fs::read(work.path("app.log.1")).unwrap();
    assert_eq!(
        old_final,
        b"before rotation\nlate line one\nlate line two\n"
    );
    let points = s3.list("rotate");
    let last_old = points.iter().rfind(|p| p.generation == 1).unwrap();
    assert_eq!(
        recovered(&s3, "rotate", &work, &["--at-timestamp", &last_old.unix]),
        old_final
    );
    assert_eq!(recovered(&s3, "rotate", &work, &[]), b"after reopen\n");
}

/// A preallocated file written in place: its length never changes.
#[test]
fn a_file_written_in_place_is_noticed_and_uploaded_again() {
    let s3 = S3::start();
    let work = Scratch::new("inplace");
    let file = work.path("segment");
    std::fs::write(&file, vec![0u8; 64 << 10]).unwrap();
    let p = s3.persist("inplace", &file, "0.1");
    wait_for("first upload", T, || {
        s3.uploaded_end("inplace") == Some(64 << 10)
    });
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    // At the start (seen by the edge check), then in the middle (seen by the scrub).
    for (n, at) in [(2u64, 0u64), (3, 20_000)] {
        f.write_all_at(format!("record written in place at {at}\n").as_bytes(), at)
            .unwrap();
        wait_for("a new generation", T, || {
            newest_generation(&s3, "inplace") == n
        });
        wait_for("the whole file in it", T, || {
            s3.uploaded_end("inplace") == Some(64 << 10)
        });
    }
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert_eq!(
        recovered(&s3, "inplace", &work, &[]),
        std::fs::read(&file).unwrap()
    );
}

/// A FIFO would block `open` forever, deaf to SIGTERM.
#[test]
fn a_fifo_is_refused_at_once() {
    let s3 = S3::start();
    let work = Scratch::new("fifo");
    let fifo = work.path("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = s3.persist("fifo", &fifo, "0.1").wait_exit(T);
    assert_eq!(out.status.code(), Some(64), "{}", out.err());
    assert!(out.err().contains("is a FIFO"), "{}", out.err());
    assert!(s3.keys("fifo").is_empty());
    assert!(!s3.has_lease("fifo"));
}

/// An ssh session closing, or a supervisor's reload: SIGHUP is a clean stop.
#[test]
fn sighup_uploads_what_is_pending_and_gives_the_lease_up() {
    let s3 = S3::start();
    let work = Scratch::new("hup");
    let file = work.path("log");
    std::fs::write(&file, b"first\n").unwrap();
    // A long interval: only the stop can upload the last append in time.
    let p = s3.persist("hup", &file, "3600");
    wait_for("first upload", T, || s3.uploaded_end("hup") == Some(6));
    append(&file, b"last words before the hangup\n");
    p.signal("HUP");
    let out = p.wait_exit(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().contains("stop requested (SIGHUP)"),
        "{}",
        out.err()
    );
    assert!(!s3.has_lease("hup"));
    assert_eq!(
        recovered(&s3, "hup", &work, &[]),
        std::fs::read(&file).unwrap()
    );
}

/// An object of the chain deleted (a lifecycle rule, or by hand): `list` must not offer the
/// points that need it.
#[test]
fn list_shows_only_recoverable_points_and_names_the_missing_bytes() {
    let s3 = S3::start();
    let work = Scratch::new("broken");
    let file = work.path("log");
    std::fs::write(&file, b"").unwrap();
    let p = s3.persist_deltas("broken", &file, "0.1");
    let mut states = Vec::new();
    for i in 0..5 {
        states.push(s3.append_and_wait("broken", &file, format!("line {i}\n").as_bytes()));
    }
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let before = s3.list("broken");
    // Delete the object that holds "line 2".
    let third = states[2].len() as u64;
    let victim = s3
        .ranges("broken")
        .into_iter()
        .find(|o| o.end == third && o.start < third)
        .unwrap();
    std::fs::remove_file(s3.object_path("broken", &victim.key)).unwrap();

    let out = s3.run(&["list", "--bucket", BUCKET, "--prefix", "broken"]);
    assert_eq!(out.status.code(), Some(65), "{}", out.err());
    let err = out.err();
    assert!(
        err.contains(&format!("bytes {}..{third} are missing", victim.start)),
        "{err}"
    );
    assert!(err.contains("cannot be recovered"), "{err}");
    let stdout = text(&out.stdout);
    let listed: Vec<&str> = stdout.lines().collect();
    // Exactly the points before the hole, and each of them recovers.
    let good: Vec<&Point> = before.iter().filter(|p| p.bytes < third).collect();
    assert_eq!(listed.len(), good.len(), "{listed:?}");
    for p in good {
        let want = states.iter().find(|s| s.len() as u64 == p.bytes);
        if let Some(want) = want {
            assert_eq!(
                &recovered(&s3, "broken", &work, &["--at-timestamp", &p.unix]),
                want
            );
        }
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// After a power loss, the pid in the lease may belong to another petrify (here: a live
/// persist on another prefix). The lease is stale all the same: another boot, or another
/// process under that pid.
#[test]
fn a_stale_lease_whose_pid_is_another_petrify_is_taken_over() {
    let s3 = S3::start();
    let work = Scratch::new("lease");
    let busy_file = work.path("busy.log");
    std::fs::write(&busy_file, b"x").unwrap();
    let other = s3.persist("busy", &busy_file, "0.1");
    wait_for("the other persist", T, || s3.has_lease("busy"));
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let cases = [
        (
            "an earlier boot",
            "00000000-0000-0000-0000-000000000000".to_string(),
            start_time(other.pid()),
            "written before this host last booted",
        ),
        (
            "a reused pid",
            boot.trim().to_string(),
            start_time(other.pid()) + 1,
            "is now another process",
        ),
    ];
    for (i, (what, boot, started, why)) in cases.into_iter().enumerate() {
        let prefix = format!("stale{i}");
        let lease = format!(
            "petrify-writer-lease 1\nhost {}\npid {}\nsince 1764104645000\nid old-1\nboot {boot}\nstarted {started}\nfile /var/lib/redis/appendonlydir\n",
            this_host(),
            other.pid()
        );
        let path = s3.object_path(&prefix, "writer.lease");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, lease).unwrap();
        let file = work.path(&format!("{prefix}.log"));
        std::fs::write(&file, format!("backed up despite {what}\n")).unwrap();
        let p = s3.persist(&prefix, &file, "0.1");
        p.wait_log("taking over the writer lease", T);
        let content = s3.append_and_wait(&prefix, &file, b"and more\n");
        let out = p.terminate(T);
        assert!(out.status.success(), "{what}: {}", out.err());
        assert!(out.err().contains(why), "{what}: {}", out.err());
        assert!(out.err().contains("WARN"), "{what}: {}", out.err());
        assert_eq!(recovered(&s3, &prefix, &work, &[]), content, "{what}");
    }
    let out = other.terminate(T);
    assert!(out.status.success(), "{}", out.err());
}

/// The man page's restore (stop Redis, recover --force into its folder, start Redis) while the
/// persist unit keeps running: what Redis writes afterwards must be backed up.
#[test]
fn a_redis_folder_restored_under_a_running_persist_is_backed_up_from_its_first_write() {
    let s3 = S3::start();
    let work = Scratch::new("restore");
    let data = work.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let aof = data.join("appendonlydir");
    let mut redis = Redis::start(&data);
    let persist = s3.persist("restore", &aof, "0.1");
    let mut point = String::new();
    for (i, k) in ["k1", "k2", "k3", "k4", "k5"].iter().enumerate() {
        assert_eq!(redis.cli(&["SET", k, k]).trim(), "OK");
        wait_for("the write in the bucket", T, || {
            s3.folder_synced("restore", &aof)
        });
        if i == 2 {
            point = s3.list("restore").last().unwrap().unix.clone();
        }
    }
    // Restore to the point after k3, the way the man page says, persist still running.
    redis.stop();
    let out = s3.recover("restore", &aof, &["--force", "--at-timestamp", &point]);
    assert!(out.status.success(), "{}", out.err());
    let mut redis = Redis::start(&data);
    for k in ["k6", "k7"] {
        assert_eq!(redis.cli(&["SET", k, k]).trim(), "OK");
    }
    wait_for("the restored folder's writes in the bucket", T, || {
        s3.folder_synced("restore", &aof)
    });
    let out = persist.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().contains("was restored or replaced"),
        "{}",
        out.err()
    );
    redis.stop();

    let fresh = work.path("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let out = s3.recover("restore", &fresh.join("appendonlydir"), &[]);
    assert!(out.status.success(), "{}", out.err());
    let redis = Redis::start(&fresh);
    let keys: Vec<String> = redis.dataset().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["k1", "k2", "k3", "k6", "k7"]);
}

/// Runs `cmd` under libfaketime (Debian's `faketime`), its clock offset read from
/// `offset_file` at every call, so that the test can step it while persist runs.
fn faketime(cmd: &mut Command, offset_file: &Path) {
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime: run scripts/setup (apt-get install faketime)");
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// A host clock that was ahead and is then set back, under a running persist and across a
/// restart: recovery by a real time must find the writes made since.
#[test]
fn a_clock_set_back_keeps_real_times_recoverable() {
    let s3 = S3::start();
    let work = Scratch::new("clock");
    let file = work.path("log");
    let offset = work.path("faketime");
    std::fs::write(&offset, "+600s\n").unwrap();
    std::fs::write(&file, b"written while the clock was 10 minutes ahead\n").unwrap();

    let mut cmd = s3.persist_cmd(&s3.endpoint(), "clock", &file, "0.1");
    faketime(&mut cmd, &offset);
    let p = spawn(cmd);
    wait_for("first upload", T, || s3.uploaded_end("clock") == Some(45));
    // NTP steps the clock back while persist runs.
    std::fs::write(&offset, "+0s\n").unwrap();
    let after_step = s3.append_and_wait("clock", &file, b"written after the clock was set right\n");
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    let now = format!("{:.3}", now_ms_f() / 1000.0);
    assert_eq!(
        recovered(&s3, "clock", &work, &["--at-timestamp", &now]),
        after_step
    );
    assert!(out.err().contains("the clock went back"), "{}", out.err());

    // Ahead again, stopped, set right, restarted (a reboot with a bad RTC, then NTP).
    std::fs::write(&offset, "+600s\n").unwrap();
    let mut cmd = s3.persist_cmd(&s3.endpoint(), "clock", &file, "0.1");
    faketime(&mut cmd, &offset);
    let p = spawn(cmd);
    let ahead = s3.append_and_wait("clock", &file, b"ahead again\n");
    assert!(p.terminate(T).status.success());
    let p = s3.persist("clock", &file, "0.1");
    let content = s3.append_and_wait("clock", &file, b"after the restart\n");
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().contains("ahead of this host's clock"),
        "{}",
        out.err()
    );
    assert!(content.starts_with(&ahead));
    let now = format!("{:.3}", now_ms_f() / 1000.0);
    assert_eq!(
        recovered(&s3, "clock", &work, &["--at-timestamp", &now]),
        content
    );
    assert_eq!(recovered(&s3, "clock", &work, &[]), content);
}

/// What the server said, decoded, and the likely cause: a skewed clock is not a credentials
/// problem.
#[test]
fn s3_errors_say_what_the_server_said_and_name_a_skewed_clock() {
    let s3 = S3::start();
    let skewed = proxy::Proxy::start(s3.port, 1, 0.0);
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>RequestTimeTooSkewed</Code>\
                <Message>The difference between the request time and the server&apos;s time is \
                too large.</Message></Error>";
    skewed.set_canned(Some(format!(
        "HTTP/1.1 403 Forbidden\r\ndate: Mon, 01 Jan 2001 00:00:00 GMT\r\n\
         content-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )));
    let out = s3
        .petrify()
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", skewed.port),
        )
        .args(["list", "--bucket", BUCKET, "--prefix", "p"])
        .output()
        .unwrap();
    assert_fails(&out, 77, "RequestTimeTooSkewed");
    let err = out.err();
    assert!(err.contains("the server's time is too large"), "{err}");
    assert!(!err.contains("&apos;"), "{err}");
    assert!(
        err.contains("clock is") && err.contains("ahead of the server's"),
        "{err}"
    );
    assert!(!err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
}

/// Redis cuts a torn last command once after a crash: a new generation. A Redis file cut or
/// written over again within the hour is a mode that writes files over (fixed-size recycled
/// AOF files): persist stops with 65 rather than start a generation, and upload the base
/// again, at every look.
#[test]
fn a_redis_file_written_over_twice_stops_persist() {
    let s3 = S3::start();
    let work = Scratch::new("written-over");
    let aof = work.path("appendonlydir");
    std::fs::create_dir_all(&aof).unwrap();
    std::fs::write(
        aof.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .unwrap();
    let incr = aof.join("appendonly.aof.1.incr.aof");
    std::fs::write(&incr, b"*1\r\n$4\r\nPING\r\n".repeat(3)).unwrap();
    let persist = s3.persist("wo", &aof, "0.1");
    wait_for("sync", T, || s3.folder_synced("wo", &aof));

    // A torn last command cut, as Redis does when it starts after a crash.
    let f = std::fs::OpenOptions::new().write(true).open(&incr).unwrap();
    f.set_len(14 * 3 - 5).unwrap();
    wait_for("the new generation", T, || {
        newest_generation(&s3, "wo") == 2 && s3.folder_synced("wo", &aof)
    });
    // Written over in place: the second time within the hour.
    f.write_all_at(b"*1\r\n$4\r\nPONG", 0).unwrap();
    let out = persist.wait_exit(T);
    assert_eq!(out.status.code(), Some(65), "{}", out.err());
    assert!(
        out.err().contains("the second time within an hour"),
        "{}",
        out.err()
    );
    assert!(
        out.err().contains("truncated from 42 to 37 bytes"),
        "{}",
        out.err()
    );
    assert_eq!(
        newest_generation(&s3, "wo"),
        2,
        "no generation for bytes written over"
    );
    // Every point stays recoverable: the newest is the cut file.
    let restored = work.path("restored");
    let out = s3.recover("wo", &restored, &[]);
    assert!(out.status.success(), "{}", out.err());
    let got = std::fs::read(restored.join("appendonly.aof.1.incr.aof")).unwrap();
    assert_eq!(got, b"*1\r\n$4\r\nPING\r\n".repeat(3)[..37]);
}
