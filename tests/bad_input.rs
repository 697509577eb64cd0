//! Bad input, table-driven: each case gets one clear line on stderr, its documented exit status,
//! no panic, and nothing written (no target, no temporary file, no object in the bucket).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::proxy::{self, Proxy};
use common::*;

/// The cases, one per line: `STATUS | NEEDLE | NAME | ENV | ARGS`. The single error line must
/// contain NEEDLE. ENV: `K=V` words (`K=` empties a variable), or `nobody` to run as an
/// unprivileged user. ARGS: words; `{name}` is a path or endpoint the runner made (see
/// `places`), `{empty}` an empty argument. Every case is also checked to write nothing.
const TABLE: &str = "
64 | no command given          | no command                 |  |
64 | unknown command           | unknown command            |  | frobnicate
64 | not an option of          | unknown option             |  | list --bucket {bucket} --prefix p --frob
64 | not an option of          | option of another command  |  | list --bucket {bucket} --prefix p --force
64 | needs --bucket            | missing --bucket           |  | list --prefix p
64 | needs --prefix            | missing --prefix           |  | list --bucket {bucket}
64 | needs --file              | missing --file             |  | recover --bucket {bucket} --prefix have
64 | --interval                | missing option value       |  | persist --bucket {bucket} --prefix p --file {log} --interval
64 | not a number              | bad interval               |  | persist --bucket {bucket} --prefix p --file {log} --interval fast
64 | out of range              | zero interval              |  | persist --bucket {bucket} --prefix p --file {log} --interval 0
64 | is not a time             | bad timestamp              |  | recover --bucket {bucket} --prefix have --file {fresh} --at-timestamp tomorrow
64 | yesterday                 | bad --since                |  | list --bucket {bucket} --prefix have --since yesterday
64 | --since is after --until  | empty window               |  | list --bucket {bucket} --prefix have --since 2000 --until 1000
64 | not a number of points    | zero points                |  | list --bucket {bucket} --prefix have --last 0
64 | contradict each other     | --if-missing with --force  |  | recover --bucket {bucket} --prefix have --file {fresh} --if-missing --force
64 | at least 10 intervals     | --retain shorter than the grace |  | persist --bucket {bucket} --prefix p --file {log} --interval 1 --retain 5s
64 | needs --retain            | prune without --retain     |  | prune --bucket {bucket} --prefix have
64 | is not an age             | --retain without a unit    |  | prune --bucket {bucket} --prefix have --retain 30
64 | --prefix                  | odd prefix                 |  | list --bucket {bucket} --prefix a+b%c
64 | --prefix                  | traversing prefix          |  | list --bucket {bucket} --prefix a/../b
64 | --file                    | empty --file               |  | recover --bucket {bucket} --prefix have --file {empty}
66 | no recovery point         | nothing to recover         |  | recover --bucket {bucket} --prefix nothing --file {fresh}
66 | earliest recovery point   | too early                  |  | recover --bucket {bucket} --prefix have --file {fresh} --at-timestamp 2001-01-01T00:00:00Z
73 | exists                    | target exists              |  | recover --bucket {bucket} --prefix have --file {existing}
73 | does not exist            | target folder missing      |  | recover --bucket {bucket} --prefix have --file {nowhere}
73 | is a folder               | folder where a file is expected |  | recover --bucket {bucket} --prefix have --file {a_dir} --force
73 | Redis folder              | file where a folder is expected |  | recover --bucket {bucket} --prefix redisdir --file {existing} --force
64 | not a Redis AOF folder    | persist a folder that is not Redis's |  | persist --bucket {bucket} --prefix p --file {not_redis}
65 | does not know             | a manifest field no Redis writes |  | persist --bucket {bucket} --prefix odd --file {odd_aof}
65 | plain names               | manifest naming a file outside the folder |  | recover --bucket {bucket} --prefix evil --file {fresh}
66 | NoSuchBucket              | missing bucket             |  | list --bucket no-such-bucket --prefix p
77 | SignatureDoesNotMatch     | wrong secret               | AWS_SECRET_ACCESS_KEY=not-the-secret | list --bucket {bucket} --prefix have
78 | AWS_ACCESS_KEY_ID         | no credentials             | AWS_ACCESS_KEY_ID= | list --bucket {bucket} --prefix have
77 | session token has expired | expired session token      | AWS_ENDPOINT_URL={expired} AWS_SESSION_TOKEN=old-token | list --bucket {bucket} --prefix have
69 | cannot reach S3           | unreachable endpoint       | AWS_ENDPOINT_URL={dead} | list --bucket {bucket} --prefix have
69 | does not answer like S3   | endpoint that is not S3    | AWS_ENDPOINT_URL={html} | recover --bucket {bucket} --prefix have --file {fresh}
69 | cannot reach S3           | TLS to a plain HTTP server | AWS_ENDPOINT_URL={tls_plain} | list --bucket {bucket} --prefix have
69 | cannot reach S3           | untrusted TLS certificate  | AWS_ENDPOINT_URL={tls_untrusted} | list --bucket {bucket} --prefix have
64 | https://                  | unsupported endpoint scheme |  | list --bucket {bucket} --prefix have --endpoint ftp://127.0.0.1/
77 | Permission denied         | unreadable file            | nobody | persist --bucket {bucket} --prefix p --file {unreadable}
77 | Permission denied         | read-only target folder    | nobody | recover --bucket {bucket} --prefix have --file {readonly}/f
64 | is a FIFO                 | a FIFO to persist          |  | persist --bucket {bucket} --prefix p --file {fifo}
64 | give --load too           | --server without --load    |  | verify --bucket {bucket} --prefix have --server redis-server
78 | --server PATH             | a restore drill, no program | PATH=/nonexistent | verify --bucket {bucket} --prefix redisdir --load
";

struct Case {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Run as the unprivileged user (tests run as root, who reads anything).
    as_nobody: bool,
    code: i32,
    needle: String,
}

/// Reads [`TABLE`], filling in `places`. A case naming a place that could not be made here
/// (no openssl, say) is skipped, and said.
fn cases(places: &BTreeMap<&str, Option<String>>) -> Vec<Case> {
    let fill = |word: &str| -> Option<String> {
        let mut out = word.to_string();
        for (name, value) in places {
            let key = format!("{{{name}}}");
            if out.contains(&key) {
                out = out.replace(&key, value.as_deref()?);
            }
        }
        Some(out)
    };
    let mut out = Vec::new();
    for line in TABLE.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cols.len(), 5, "table line {line:?}");
        let words =
            |col: &str| -> Option<Vec<String>> { col.split_whitespace().map(fill).collect() };
        let (Some(args), Some(env)) = (words(cols[4]), words(cols[3])) else {
            eprintln!(
                "skipping {:?}: what it needs is not available here",
                cols[2]
            );
            continue;
        };
        let as_nobody = env.iter().any(|w| w == "nobody");
        if as_nobody && setpriv().is_none() {
            eprintln!("skipping {:?}: setpriv not found", cols[2]);
            continue;
        }
        out.push(Case {
            name: cols[2].to_string(),
            args,
            env: env
                .iter()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            as_nobody,
            code: cols[0].parse().unwrap(),
            needle: cols[1].to_string(),
        });
    }
    out
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
    // A folder whose manifest has a field Redis 7 and Valkey 9 do not write.
    let odd_aof = work.path("odd-aof");
    std::fs::create_dir_all(&odd_aof).unwrap();
    std::fs::write(
        odd_aof.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.incr.aof seq 1 type i size 1048576\n",
    )
    .unwrap();
    std::fs::write(odd_aof.join("appendonly.aof.1.incr.aof"), b"").unwrap();
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

    let html = Proxy::start(s3.port, 1, 0.0);
    html.set_canned(Some(proxy::html_page()));
    let expired = Proxy::start(s3.port, 1, 0.0);
    expired.set_canned(Some(proxy::s3_error(400, "ExpiredToken")));
    // A TLS server whose certificate nobody signed: refused (certificates are verified).
    let tls = start_tls_server(&work);
    let fifo = work.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let places: BTreeMap<&str, Option<String>> = BTreeMap::from([
        ("bucket", Some(BUCKET.to_string())),
        ("empty", Some(String::new())),
        ("log", Some(p(&log))),
        ("fresh", Some(p(&work.path("fresh")))),
        ("existing", Some(p(&existing))),
        ("nowhere", Some(p(&work.path("no/such/dir/f")))),
        ("a_dir", Some(p(&a_dir))),
        ("not_redis", Some(p(&not_redis))),
        ("odd_aof", Some(p(&odd_aof))),
        ("unreadable", Some(p(&unreadable))),
        ("readonly", Some(p(&readonly_dir))),
        ("fifo", Some(p(&fifo))),
        ("expired", Some(expired.endpoint())),
        ("html", Some(html.endpoint())),
        ("dead", Some(format!("http://127.0.0.1:{}", free_port()))),
        ("tls_plain", Some(format!("https://127.0.0.1:{}", s3.port))),
        (
            "tls_untrusted",
            tls.as_ref()
                .map(|(_, port)| format!("https://localhost:{port}")),
        ),
    ]);
    let cases = cases(&places);
    // Every line of the table ran, but those that need what this machine lacks.
    assert!(cases.len() >= 30, "only {} cases", cases.len());

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
        s3.isolate(&mut cmd);
        cmd.env("RUST_LOG", "info");
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
            errors[0].contains(&c.needle),
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
    let out = s3.run(&["list", "--bucket", BUCKET, "--prefix", "have"]);
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
        listening(port)
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
