//! A real S3 server process on a free loopback port, and the test's own view of the bucket
//! (independent of petrify's listing code). Two servers, each with its departures from AWS:
//!
//! - s3s-fs 0.14.1 (the default): checks signatures and `x-amz-checksum-crc32`; keeps each
//!   object as a file (the test's view reads the folder, and tests that damage objects do it
//!   there); lists `+` and `%` in keys wrongly decoded; does not check multipart ETags; answers
//!   an unknown upload id with 403; makes a bucket at the first PUT into it; has no
//!   versioning (GetBucketVersioning answers 501).
//! - moto 5.2.5 (`PETRIFY_TEST_S3=moto`; `scripts/setup` installs it in a virtual
//!   environment): AWS's own mock, faithful on conditional writes, multipart rules (the 5 MiB
//!   part minimum), versioning and Object Lock; checks no signature and no checksum; keeps
//!   everything in memory, so a restart loses the bucket (the test's view reads through plain
//!   HTTP requests); applies no Object Lock retention (neither asked for nor the bucket's
//!   default) to what a multipart upload completes, and checks no lock header on parts.
//!   Tests that need the server's disk or a restart start s3s-fs whatever the run picked
//!   ([`S3::start_fs`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::process::{Proc, Scratch, append, free_port, listening, spawn, text, wait_for};
use super::redis::aof_files;

pub const ACCESS_KEY: &str = "PETRIFYTESTKEY";
pub const SECRET_KEY: &str = "petrify-test-secret-0123456789";
pub const BUCKET: &str = "bkt";

/// Which server a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    S3sFs,
    Moto,
}

/// An S3 server on a free port: s3s-fs serving `dir` (buckets are folders in it), or moto.
pub struct S3 {
    pub proc: Option<Proc>,
    pub port: u16,
    pub dir: Scratch,
    pub server: Server,
}

impl S3 {
    /// The server the run picked: `PETRIFY_TEST_S3=moto`, else s3s-fs.
    pub fn start() -> S3 {
        match std::env::var("PETRIFY_TEST_S3").as_deref() {
            Ok("moto") => S3::start_on(Server::Moto),
            _ => S3::start_on(Server::S3sFs),
        }
    }

    /// s3s-fs whatever the run picked: for tests that damage objects on the server's disk,
    /// or restart it.
    pub fn start_fs() -> S3 {
        S3::start_on(Server::S3sFs)
    }

    /// moto whatever the run picked: for what only it implements (KMS, storage classes).
    pub fn start_moto_server() -> S3 {
        S3::start_on(Server::Moto)
    }

    /// The headers of a HEAD of `key` (moto only: plain HTTP), lower-cased names.
    pub fn head_http(&self, key: &str) -> Vec<(String, String)> {
        assert_eq!(self.server, Server::Moto, "head_http reads moto");
        // Signed: moto refuses an unsigned request for an object under SSE-KMS, as AWS does.
        use rusty_s3::S3Action;
        let bucket = rusty_s3::Bucket::new(
            self.endpoint().parse().expect("an endpoint URL"),
            rusty_s3::UrlStyle::Path,
            BUCKET,
            "us-east-1",
        )
        .expect("a bucket");
        let creds = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
        let url = rusty_s3::actions::HeadObject::new(&bucket, Some(&creds), key)
            .sign(Duration::from_secs(60));
        let r = ureq::head(url.as_str()).call().expect("HEAD an object");
        r.headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn start_on(server: Server) -> S3 {
        let dir = Scratch::new("s3");
        std::fs::create_dir_all(dir.path(BUCKET)).unwrap();
        let port = free_port();
        let mut s3 = S3 {
            proc: None,
            port,
            dir,
            server,
        };
        match server {
            Server::S3sFs => s3.restart(),
            Server::Moto => s3.start_moto(),
        }
        s3
    }

    /// Starts moto and makes the bucket. Another test's server can take the port between
    /// `free_port` and moto's bind, answer the poll and go away (twice in CI, as "connection
    /// refused" right after "listening"): the bucket is asked for until moto itself answers,
    /// and a moto that exited (its port was taken) is started again on a fresh port.
    fn start_moto(&mut self) {
        for _ in 0..3 {
            let child = Command::new(moto_server())
                .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start moto_server: run scripts/setup");
            let mut proc = Proc::new(child, "moto_server");
            let url = format!("{}/{BUCKET}", self.endpoint());
            let mut exited = false;
            wait_for("moto to make the bucket", Duration::from_secs(30), || {
                exited = matches!(proc.child.try_wait(), Ok(Some(_)));
                exited
                    || match ureq::put(&url).send_empty() {
                        // moto's own answer (werkzeug's), not another test's server.
                        Ok(r) => r
                            .headers()
                            .get_all("server")
                            .iter()
                            .any(|v| v.to_str().is_ok_and(|v| v.contains("Werkzeug"))),
                        // Not listening yet, or not moto.
                        Err(_) => false,
                    }
            });
            if !exited {
                self.proc = Some(proc);
                return;
            }
            proc.kill();
            self.port = free_port();
        }
        panic!("moto did not start on three ports in a row");
    }

    /// A bucket with Object Lock (so, versioning) on moto, whose default retention locks every
    /// object for a day in governance mode: the store then takes no object without a checksum
    /// or Content-MD5, as AWS does.
    pub fn make_locked_bucket(&self, name: &str) {
        assert_eq!(self.server, Server::Moto, "only moto has Object Lock");
        let url = format!("{}/{name}", self.endpoint());
        let made = ureq::put(&url)
            .header("x-amz-bucket-object-lock-enabled", "true")
            .send_empty();
        assert!(made.is_ok(), "creating a locked bucket on moto: {made:?}");
        let rule = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                    <Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days>\
                    </DefaultRetention></Rule></ObjectLockConfiguration>";
        let set = ureq::put(&format!("{url}?object-lock")).send(rule);
        assert!(set.is_ok(), "a default retention on moto: {set:?}");
    }

    /// Starts the server (again) on the same port and folder.
    pub fn restart(&mut self) {
        assert_eq!(
            self.server,
            Server::S3sFs,
            "moto keeps its bucket in memory: a restart loses it (use S3::start_fs)"
        );
        let child = Command::new(s3s_fs())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start s3s-fs: run .ci/run or `cargo install s3s-fs@0.14.1 --features binary --locked`");
        self.proc = Some(Proc::new(child, "s3s-fs"));
        let port = self.port;
        wait_for("s3s-fs to listen", Duration::from_secs(10), || {
            listening(port)
        });
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object keys under `prefix/petrify-v1/`, relative to it, sorted; read from the
    /// server's folder (the test's view of the bucket, independent of petrify's listing code).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        if self.server == Server::Moto {
            let root = format!("{prefix}/petrify-v1/");
            let mut out: Vec<String> = self
                .list_http(&root)
                .into_iter()
                .filter_map(|k| k.strip_prefix(&root).map(str::to_string))
                .collect();
            out.retain(|k| k != "writer.lease" && !k.starts_with("writer.listed."));
            out.sort();
            return out;
        }
        let root = self.dir.path(BUCKET).join(prefix).join("petrify-v1");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.retain(|k| k != "writer.lease" && !k.starts_with("writer.listed."));
        out.sort();
        out
    }

    /// Appends `data` to `path`, waits until the bucket holds the file up to its new end, and
    /// returns the file's content.
    pub fn append_and_wait(&self, prefix: &str, path: &Path, data: &[u8]) -> Vec<u8> {
        append(path, data);
        let content = std::fs::read(path).unwrap();
        let len = content.len() as u64;
        wait_for(
            "the append to reach the bucket",
            Duration::from_secs(30),
            || self.uploaded_end(prefix) == Some(len),
        );
        content
    }

    /// Whether a persist holds the prefix's writer lease.
    pub fn has_lease(&self, prefix: &str) -> bool {
        match self.server {
            Server::S3sFs => self.object_path(prefix, "writer.lease").exists(),
            Server::Moto => self
                .get_http(&format!("{prefix}/petrify-v1/writer.lease"))
                .is_some(),
        }
    }

    /// Every key under `prefix`, by ListObjectsV2 over plain HTTP (moto checks no signature).
    fn list_http(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = ureq::get(&format!("{}/{BUCKET}", self.endpoint()))
                .query("list-type", "2")
                .query("prefix", prefix);
            if let Some(t) = &token {
                req = req.query("continuation-token", t);
            }
            let body = req
                .call()
                .expect("listing moto")
                .body_mut()
                .read_to_string()
                .expect("a listing");
            keys.extend(xml_values(&body, "Key"));
            token = xml_values(&body, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// An object's bytes over plain HTTP, or `None` when it is not there.
    fn get_http(&self, key: &str) -> Option<Vec<u8>> {
        let mut r = ureq::get(&format!("{}/{BUCKET}/{key}", self.endpoint()))
            .call()
            .ok()?;
        r.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .ok()
    }

    /// An object's bytes as stored (sealed or not, a merged object's index included).
    pub fn raw_object(&self, prefix: &str, o: &Obj) -> Vec<u8> {
        match self.server {
            Server::S3sFs => std::fs::read(self.object_path(prefix, &o.key)).expect("read"),
            Server::Moto => self
                .get_http(&format!("{prefix}/petrify-v1/{}", o.key))
                .expect("read an object"),
        }
    }

    /// The bytes of the part an object holds (a merged object's index left out), read from the
    /// server's disk.
    pub fn object_bytes(&self, prefix: &str, o: &Obj) -> Vec<u8> {
        let mut got = match self.server {
            Server::S3sFs => {
                std::fs::read(self.object_path(prefix, &o.key)).expect("read an object")
            }
            Server::Moto => self
                .get_http(&format!("{prefix}/petrify-v1/{}", o.key))
                .expect("read an object"),
        };
        if o.merged {
            let len = o.stored as usize;
            let header: &[u8] = match o.seal.as_str() {
                "" => b"petrify-index 1\n",
                _ => b"petrify-index 2\n",
            };
            assert!(
                got[len..].starts_with(header),
                "{}: no index after its bytes",
                o.key
            );
            got.truncate(len);
        }
        match o.seal.as_str() {
            "" => got,
            "zst" => zstd::decode_all(&got[..]).expect("zstd frames"),
            other => panic!("{}: sealed as {other}: open it with petrify or age", o.key),
        }
    }

    /// The objects of `prefix` less those a merged object holds too (compaction deletes them
    /// a little later, or when persist resumes after a crash).
    pub fn chain_ranges(&self, prefix: &str) -> Vec<Obj> {
        let all = self.ranges(prefix);
        all.iter()
            .filter(|o| {
                !all.iter().any(|m| {
                    m.merged
                        && m.key != o.key
                        && (m.generation, &m.part) == (o.generation, &o.part)
                        && m.start <= o.start
                        && o.end <= m.end
                        && o.time_ms <= m.time_ms
                })
            })
            .cloned()
            .collect()
    }

    pub fn object_path(&self, prefix: &str, rel: &str) -> PathBuf {
        assert_eq!(
            self.server,
            Server::S3sFs,
            "moto keeps objects in memory: this test damages the server's disk (use S3::start_fs)"
        );
        self.dir
            .path(BUCKET)
            .join(prefix)
            .join("petrify-v1")
            .join(rel)
    }

    /// Parsed (generation, part, start, end) of every object.
    pub fn ranges(&self, prefix: &str) -> Vec<Obj> {
        self.keys(prefix)
            .iter()
            .filter_map(|k| Obj::parse(k))
            .collect()
    }

    /// The highest end offset uploaded for the newest generation's `part`.
    pub fn uploaded_end(&self, prefix: &str) -> Option<u64> {
        let objs = self.ranges(prefix);
        let g = objs.iter().map(|o| o.generation).max()?;
        objs.iter()
            .filter(|o| o.generation == g)
            .map(|o| o.end)
            .max()
    }

    /// A petrify command with this server's endpoint and credentials.
    pub fn petrify(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_petrify"));
        self.isolate(&mut c);
        c.env("AWS_REGION", "us-east-1").env("RUST_LOG", "debug");
        c
    }

    /// Gives `c` this server's endpoint and credentials and nothing of the host's AWS setup:
    /// never the real metadata service, nor the host's ~/.aws (a test that wants one of those
    /// sources sets its own loopback endpoint or files).
    pub fn isolate(&self, c: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/petrify-test/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/petrify-test/credentials",
            )
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", self.endpoint());
    }

    /// Runs a petrify command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.petrify().args(args).output().expect("run petrify")
    }

    /// Starts `petrify persist` in the background.
    pub fn persist(&self, prefix: &str, file: &Path, interval: &str) -> Proc {
        self.persist_via(&self.endpoint(), prefix, file, interval)
    }

    /// Starts `petrify persist` with `--compaction off`: every upload stays an object of its
    /// own, for tests that damage one delta of a chain on purpose (a merge at a window's end,
    /// which comes at any moment, would otherwise take it in).
    pub fn persist_deltas(&self, prefix: &str, file: &Path, interval: &str) -> Proc {
        let mut c = self.persist_cmd(&self.endpoint(), prefix, file, interval);
        c.args(["--compaction", "off"]);
        spawn(c)
    }

    /// Starts `petrify persist` in the background, talking to `endpoint` (a proxy).
    pub fn persist_via(&self, endpoint: &str, prefix: &str, file: &Path, interval: &str) -> Proc {
        spawn(self.persist_cmd(endpoint, prefix, file, interval))
    }

    /// The `petrify persist` command line, for a test to add to before [`spawn`]ing it.
    pub fn persist_cmd(
        &self,
        endpoint: &str,
        prefix: &str,
        file: &Path,
        interval: &str,
    ) -> Command {
        let mut c = self.petrify();
        c.env("AWS_ENDPOINT_URL", endpoint)
            .args([
                "persist",
                "--bucket",
                BUCKET,
                "--prefix",
                prefix,
                "--interval",
                interval,
            ])
            .arg("--file")
            .arg(file);
        c
    }

    pub fn recover(&self, prefix: &str, file: &Path, extra: &[&str]) -> Output {
        self.petrify()
            .args(["recover", "--bucket", BUCKET, "--prefix", prefix])
            .arg("--file")
            .arg(file)
            .args(extra)
            .output()
            .expect("run petrify recover")
    }

    /// `petrify list`'s output, whatever its exit status.
    pub fn list_raw(&self, prefix: &str) -> String {
        text(
            &self
                .run(&["list", "--bucket", BUCKET, "--prefix", prefix])
                .stdout,
        )
    }

    /// `petrify list`, parsed: (unix-ms, generation, bytes) per line.
    pub fn list(&self, prefix: &str) -> Vec<Point> {
        let out = self.run(&["list", "--bucket", BUCKET, "--prefix", prefix]);
        assert!(out.status.success(), "list failed: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "list line {l:?}");
                Point {
                    rfc3339: f[0].to_string(),
                    unix: f[1].to_string(),
                    generation: f[2].parse().unwrap(),
                    bytes: f[3].parse().unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub rfc3339: String,
    pub unix: String,
    pub generation: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub key: String,
    pub generation: u64,
    pub part: String,
    pub start: u64,
    pub end: u64,
    pub time_ms: u64,
    /// A merged object (compaction): its bytes `[start, end)`, then its index.
    pub merged: bool,
    /// How the body is stored: `""` (plain), `zst`, `age` or `zst.age`.
    pub seal: String,
    /// The body's stored length (before a merged object's index).
    pub stored: u64,
}

impl Obj {
    /// An object key below `petrify-v1/`; `None` for anything else (the writer lease, planted
    /// foreign keys).
    pub fn parse(k: &str) -> Option<Obj> {
        let segs: Vec<&str> = k.split('/').collect();
        if segs.len() != 3 {
            return None;
        }
        let generation = segs[0].get(..10)?.parse().ok()?;
        let mut fields = segs[2].splitn(6, '.');
        let range = fields.next()?;
        let time_ms = fields.next()?.parse().ok()?;
        let kind = fields.nth(1)?;
        let stored: Option<u64> = fields.next().and_then(|s| s.parse().ok());
        let seal = fields.next().unwrap_or("").to_string();
        let (s, e) = range.split_once('-')?;
        let (start, end): (u64, u64) = (s.parse().ok()?, e.parse().ok()?);
        Some(Obj {
            key: k.to_string(),
            generation,
            part: segs[1].to_string(),
            start,
            end,
            time_ms,
            merged: kind == "merged",
            seal,
            stored: stored.unwrap_or(end - start),
        })
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().into_owned();
            // s3s-fs keeps upload scratch files beside objects
            if !rel.contains(".tmp") {
                out.push(rel);
            }
        }
    }
}

/// The text of every `<tag>` element of an XML answer, unescaped.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(
            rest[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &rest[j..];
    }
    out
}

/// moto's server: `PETRIFY_MOTO`, else where scripts/setup puts it.
pub fn moto_server() -> PathBuf {
    if let Ok(p) = std::env::var("PETRIFY_MOTO") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/petrify/moto-5.2.5/bin/moto_server")
}

pub fn s3s_fs() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/s3s-fs");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("s3s-fs")
    }
}

impl S3 {
    /// Whether the bucket's newest generation holds every live file of `dir` at its current
    /// length, and a manifest.
    pub fn folder_synced(&self, prefix: &str, dir: &Path) -> bool {
        let files = aof_files(dir);
        if files.is_empty() {
            return false;
        }
        let objs = self.ranges(prefix);
        let Some(g) = objs.iter().map(|o| o.generation).max() else {
            return false;
        };
        let in_gen: Vec<&Obj> = objs.iter().filter(|o| o.generation == g).collect();
        in_gen.iter().any(|o| o.part.ends_with(".manifest"))
            && files.iter().all(|(name, len)| {
                in_gen
                    .iter()
                    .filter(|o| &o.part == name)
                    .map(|o| o.end)
                    .max()
                    == Some(*len)
            })
    }
}
