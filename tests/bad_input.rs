//! Bad input, table-driven: each case gets one clear line on stderr, its documented exit status,
//! no panic, and nothing written (no target, no temporary file, no object in the bucket).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::proxy::{self, Proxy};
use common::*;

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Run as the unprivileged user (tests run as root, who reads anything).
    as_nobody: bool,
    code: i32,
    needle: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, needle: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        as_nobody: false,
        code,
        needle,
    }
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Everything under a folder, recursively, as sorted relative paths.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let path = e.path();
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                if path.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Writes an object straight into the server's folder (s3s-fs serves plain files as objects):
/// for contents that petrify itself would never upload.
fn plant(s3: &S3, key: &str, data: &[u8]) {
    let path = s3.dir.path(BUCKET).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn bad_input_table() {
    let s3 = S3::start();
    let work = Scratch::new("bad");
    // World-traversable, so that the unprivileged cases reach their files.
    Command::new("chmod")
        .arg("755")
        .arg(&work.0)
        .status()
        .unwrap();

    // A file backup under "have", and a Redis-folder backup under "redisdir".
    let log = work.path("log");
    std::fs::write(&log, b"some bytes\n").unwrap();
    let persist = s3.persist("have", &log, "0.1");
    wait_for("upload", Duration::from_secs(20), || {
        s3.uploaded_end("have") == Some(11)
    });
    persist.terminate(Duration::from_secs(20));
    let fake_aof = work.path("fakeaof");
    std::fs::create_dir_all(&fake_aof).unwrap();
    std::fs::write(
        fake_aof.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .unwrap();
    std::fs::write(
        fake_aof.join("appendonly.aof.1.incr.aof"),
        b"*1\r\n$4\r\nPING\r\n",
    )
    .unwrap();
    let persist = s3.persist("redisdir", &fake_aof, "0.1");
    wait_for("folder upload", Duration::from_secs(20), || {
        s3.folder_synced("redisdir", &fake_aof)
    });
    persist.terminate(Duration::from_secs(20));

    // A manifest in the bucket that names a file outside the folder.
    let evil_manifest = b"file ../../pwned seq 1 type i\n";
    plant(
        &s3,
        &format!(
            "evil/petrify-v1/0000000001-aofdir/appendonly.aof.manifest/{:020}-{:020}.1764104645000.{:08x}.snap",
            0,
            evil_manifest.len(),
            crc32fast_hash(evil_manifest)
        ),
        evil_manifest,
    );
    // Keys that are not petrify's, beside a real backup: ignored with a warning.
    plant(&s3, "have/petrify-v1/README.txt", b"hello");
    plant(
        &s3,
        "have/petrify-v1/0000000001-file/file/not-a-range.delta",
        b"x",
    );

    let existing = work.path("existing");
    std::fs::write(&existing, b"keep me").unwrap();
    let a_dir = work.path("a-dir");
    std::fs::create_dir_all(&a_dir).unwrap();
    let not_redis = work.path("not-redis");
    std::fs::create_dir_all(&not_redis).unwrap();
    std::fs::write(not_redis.join("notes.txt"), b"x").unwrap();
    let unreadable = work.path("unreadable");
    std::fs::write(&unreadable, b"secret").unwrap();
    Command::new("chmod")
        .arg("000")
        .arg(&unreadable)
        .status()
        .unwrap();
    let readonly_dir = work.path("readonly");
    std::fs::create_dir_all(&readonly_dir).unwrap();
    let fresh = p(&work.path("fresh"));
    let b = BUCKET;

    let html = Proxy::start(s3.port, 1, 0.0);
    html.set_canned(Some(proxy::html_page()));
    let expired = Proxy::start(s3.port, 1, 0.0);
    expired.set_canned(Some(proxy::s3_error(400, "ExpiredToken")));

    let mut cases = vec![
        case("no command", &[], 64, "no command given"),
        case("unknown command", &["frobnicate"], 64, "unknown command"),
        case(
            "unknown option",
            &["list", "--bucket", b, "--prefix", "p", "--frob"],
            64,
            "not an option of",
        ),
        case(
            "option of another command",
            &["list", "--bucket", b, "--prefix", "p", "--force"],
            64,
            "not an option of",
        ),
        case(
            "missing --bucket",
            &["list", "--prefix", "p"],
            64,
            "needs --bucket",
        ),
        case(
            "missing --prefix",
            &["list", "--bucket", b],
            64,
            "needs --prefix",
        ),
        case(
            "missing --file",
            &["recover", "--bucket", b, "--prefix", "have"],
            64,
            "needs --file",
        ),
        case(
            "missing option value",
            &[
                "persist",
                "--bucket",
                b,
                "--prefix",
                "p",
                "--file",
                &p(&log),
                "--interval",
            ],
            64,
            "--interval",
        ),
        case(
            "bad interval",
            &[
                "persist",
                "--bucket",
                b,
                "--prefix",
                "p",
                "--file",
                &p(&log),
                "--interval",
                "fast",
            ],
            64,
            "not a number",
        ),
        case(
            "zero interval",
            &[
                "persist",
                "--bucket",
                b,
                "--prefix",
                "p",
                "--file",
                &p(&log),
                "--interval",
                "0",
            ],
            64,
            "out of range",
        ),
        case(
            "bad timestamp",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &fresh,
                "--at-timestamp",
                "tomorrow",
            ],
            64,
            "is not a time",
        ),
        case(
            "odd prefix",
            &["list", "--bucket", b, "--prefix", "a+b%c"],
            64,
            "--prefix",
        ),
        case(
            "traversing prefix",
            &["list", "--bucket", b, "--prefix", "a/../b"],
            64,
            "--prefix",
        ),
        case(
            "empty --file",
            &["recover", "--bucket", b, "--prefix", "have", "--file", ""],
            64,
            "--file",
        ),
        case(
            "nothing to recover",
            &[
                "recover", "--bucket", b, "--prefix", "nothing", "--file", &fresh,
            ],
            66,
            "no recovery point",
        ),
        case(
            "too early",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &fresh,
                "--at-timestamp",
                "2001-01-01T00:00:00Z",
            ],
            66,
            "earliest recovery point",
        ),
        case(
            "target exists",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &p(&existing),
            ],
            73,
            "exists",
        ),
        case(
            "target folder missing",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &p(&work.path("no/such/dir/f")),
            ],
            73,
            "does not exist",
        ),
        case(
            "folder where a file is expected",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &p(&a_dir),
                "--force",
            ],
            73,
            "is a folder",
        ),
        case(
            "file where a folder is expected",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "redisdir",
                "--file",
                &p(&existing),
                "--force",
            ],
            73,
            "Redis folder",
        ),
        case(
            "persist a folder that is not Redis's",
            &[
                "persist",
                "--bucket",
                b,
                "--prefix",
                "p",
                "--file",
                &p(&not_redis),
            ],
            64,
            "not a Redis AOF folder",
        ),
        case(
            "manifest naming a file outside the folder",
            &[
                "recover", "--bucket", b, "--prefix", "evil", "--file", &fresh,
            ],
            65,
            "plain names",
        ),
        case(
            "missing bucket",
            &["list", "--bucket", "no-such-bucket", "--prefix", "p"],
            66,
            "NoSuchBucket",
        ),
    ];
    let mut c = case(
        "wrong secret",
        &["list", "--bucket", b, "--prefix", "have"],
        77,
        "SignatureDoesNotMatch",
    );
    c.env = vec![("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())];
    cases.push(c);
    let mut c = case(
        "no credentials",
        &["list", "--bucket", b, "--prefix", "have"],
        78,
        "AWS_ACCESS_KEY_ID",
    );
    c.env = vec![("AWS_ACCESS_KEY_ID", String::new())];
    cases.push(c);
    let mut c = case(
        "expired session token",
        &["list", "--bucket", b, "--prefix", "have"],
        77,
        "session token has expired",
    );
    c.env = vec![
        ("AWS_ENDPOINT_URL", expired.endpoint()),
        ("AWS_SESSION_TOKEN", "old-token".into()),
    ];
    cases.push(c);
    let mut c = case(
        "unreachable endpoint",
        &["list", "--bucket", b, "--prefix", "have"],
        69,
        "cannot reach S3",
    );
    c.env = vec![(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", free_port()),
    )];
    cases.push(c);
    let mut c = case(
        "endpoint that is not S3",
        &[
            "recover", "--bucket", b, "--prefix", "have", "--file", &fresh,
        ],
        69,
        "does not answer like S3",
    );
    c.env = vec![("AWS_ENDPOINT_URL", html.endpoint())];
    cases.push(c);
    let mut c = case(
        "TLS to a plain HTTP server",
        &["list", "--bucket", b, "--prefix", "have"],
        69,
        "cannot reach S3",
    );
    c.env = vec![("AWS_ENDPOINT_URL", format!("https://127.0.0.1:{}", s3.port))];
    cases.push(c);
    // A TLS server whose certificate nobody signed: refused (certificates are verified).
    let tls = start_tls_server(&work);
    if let Some((_, port)) = &tls {
        let mut c = case(
            "untrusted TLS certificate",
            &["list", "--bucket", b, "--prefix", "have"],
            69,
            "cannot reach S3",
        );
        c.env = vec![("AWS_ENDPOINT_URL", format!("https://localhost:{port}"))];
        cases.push(c);
    } else {
        eprintln!("openssl not found: skipping the untrusted-certificate case");
    }
    let mut c = case(
        "unsupported endpoint scheme",
        &[
            "list",
            "--bucket",
            b,
            "--prefix",
            "have",
            "--endpoint",
            "ftp://127.0.0.1/",
        ],
        64,
        "https://",
    );
    c.env = vec![];
    cases.push(c);
    if setpriv().is_some() {
        let mut c = case(
            "unreadable file",
            &[
                "persist",
                "--bucket",
                b,
                "--prefix",
                "p",
                "--file",
                &p(&unreadable),
            ],
            77,
            "Permission denied",
        );
        c.as_nobody = true;
        cases.push(c);
        let mut c = case(
            "read-only target folder",
            &[
                "recover",
                "--bucket",
                b,
                "--prefix",
                "have",
                "--file",
                &p(&readonly_dir.join("f")),
            ],
            77,
            "Permission denied",
        );
        c.as_nobody = true;
        cases.push(c);
    } else {
        eprintln!("setpriv not found: skipping the permission cases");
    }

    let tried = cases.len();
    for c in &cases {
        let bucket_before = tree(&s3.dir.0);
        let work_before = tree(&work.0);
        let mut cmd = match (c.as_nobody, setpriv()) {
            (true, Some(sp)) => {
                let mut cmd = Command::new(sp);
                cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(env!("CARGO_BIN_EXE_petrify"));
                cmd
            }
            _ => Command::new(env!("CARGO_BIN_EXE_petrify")),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", s3.endpoint())
            .env("RUST_LOG", "info");
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let out = cmd.args(&c.args).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(c.code), "case {:?}: {err}", c.name);
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("petrify: error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "case {:?}: one error line, got: {err}",
            c.name
        );
        assert!(
            errors[0].contains(c.needle),
            "case {:?}: {:?} lacks {:?}",
            c.name,
            errors[0],
            c.needle
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "case {:?}: {err}",
            c.name
        );
        assert!(
            out.stdout.is_empty(),
            "case {:?}: stdout {:?}",
            c.name,
            text(&out.stdout)
        );
        eprintln!("{:>42}: {}", c.name, errors[0]);
        assert_eq!(
            tree(&s3.dir.0),
            bucket_before,
            "case {:?} wrote to the bucket",
            c.name
        );
        assert_eq!(
            tree(&work.0),
            work_before,
            "case {:?} wrote locally",
            c.name
        );
        assert!(!Path::new("/pwned").exists() && !work.0.join("pwned").exists());
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    }

    // Foreign keys beside a backup: a warning, and the backup still lists and recovers.
    let out = s3.run(&["list", "--bucket", b, "--prefix", "have"]);
    assert!(out.status.success(), "{}", out.err());
    assert!(out.err().contains("ignoring 2 object(s)"), "{}", out.err());
    eprintln!("bad input: {tried} cases tried, each with one error line and nothing written");
}

/// `openssl s_server` with a fresh self-signed certificate, on a free port.
fn start_tls_server(work: &Scratch) -> Option<(Proc, u16)> {
    let (cert, key) = (work.path("cert.pem"), work.path("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let port = free_port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &port.to_string(),
            "-cert",
        ])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let p = Proc::new(child, "openssl s_server");
    wait_for("openssl s_server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((p, port))
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise: the test keeps its own, independent of petrify's crate.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
