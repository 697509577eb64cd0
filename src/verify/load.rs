//! `verify --load`: the restore drill. The chosen point is recovered into a scratch folder,
//! then proven loadable by the datastore itself: a throwaway `redis-server`/`valkey-server`
//! on a Unix socket (no TCP port, nothing else can reach it) loads it and answers PING, or,
//! where no server is installed, `redis-check-aof`/`valkey-check-aof` accepts it. The scratch
//! folder is removed however the drill ends. Only a Redis folder (`aofdir`) point is drilled.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bucket::{self, Place};
use crate::chain;
use crate::error::{Error, Exit, Result};
use crate::layout::Mode;
use crate::recover::{RecoverRequest, choose_point, recover};
use crate::s3::ObjectStore;

/// The tools tried, in order, when `--server` is not given: a server proves most (Valkey's
/// RDB base is readable by no check-aof), a checker is the fallback.
const TOOLS: [&str; 4] = [
    "redis-server",
    "valkey-server",
    "redis-check-aof",
    "valkey-check-aof",
];

/// How long a server may take to load a point before the drill gives up.
const LOAD_LIMIT: Duration = Duration::from_secs(3600);

/// The name of the folder the point is recovered into, inside the scratch folder.
const AOF_DIR: &str = "appendonlydir";

/// Recovers the point `at_ms` chooses (the newest without) into a scratch folder and loads
/// it with `tool` (or the first of [`TOOLS`] on `PATH`). Returns what to report.
pub fn drill(
    place: &Place,
    store: &dyn ObjectStore,
    at_ms: Option<u64>,
    (parallel, identity): (usize, Option<&Path>),
    tool: Option<&Path>,
) -> Result<String> {
    let tool = match tool {
        Some(t) => t.to_path_buf(),
        None => find_tool().ok_or_else(|| {
            Error::new(
                Exit::Config,
                "--load needs redis-server, valkey-server, redis-check-aof or valkey-check-aof \
                 on PATH: install one, or name it with --server PATH",
            )
        })?,
    };
    // The point, chosen as recover chooses it, and pinned: a point persist adds meanwhile
    // does not change what is drilled. A single file is refused before anything is fetched.
    let found = bucket::survey_to_recover(store, &place.root(), at_ms)?;
    let point = choose_point(&chain::recovery_points(&found.generations), at_ms, place)?;
    if point.generation.mode != Mode::AofDir {
        return Err(Error::new(
            Exit::Usage,
            "--load drills Redis folders (appendonlydir/); this point is a single file: \
             `verify --deep` checks its bytes",
        ));
    }
    let scratch = Scratch::new()?;
    let aof = scratch.0.join(AOF_DIR);
    let req = RecoverRequest {
        place: place.clone(),
        file: aof.clone(),
        at_ms: Some(point.time_ms),
        force: false,
        if_missing: false,
        parallel,
        identity: identity.map(Path::to_path_buf),
    };
    recover(&req, store)?;
    let manifest = std::fs::read_dir(&aof)
        .map_err(|e| Error::io("cannot read", &aof, &e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".manifest"))
        .ok_or_else(|| Error::new(Exit::Data, "the recovered folder holds no manifest"))?;
    let name = tool.file_name().map(|n| n.to_string_lossy().into_owned());
    let checker = name.as_deref().is_some_and(|n| n.contains("check-aof"));
    match checker {
        true => check(&tool, &aof.join(&manifest)),
        false => serve(&tool, &scratch.0, &manifest),
    }
}

/// The first of [`TOOLS`] on `PATH`.
fn find_tool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    TOOLS.iter().find_map(|t| {
        std::env::split_paths(&path)
            .map(|d| d.join(t))
            .find(|p| p.is_file())
    })
}

/// `redis-check-aof MANIFEST`: status 0 is a folder Redis loads.
fn check(tool: &Path, manifest: &Path) -> Result<String> {
    let out = Command::new(tool)
        .arg(manifest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("cannot run", tool, &e))?;
    if out.status.success() {
        return Ok(format!("{} accepts the recovered folder", tool.display()));
    }
    let said = String::from_utf8_lossy(&out.stdout);
    Err(Error::new(
        Exit::Data,
        format!(
            "{} refuses the recovered folder: {}",
            tool.display(),
            last_line(&said)
        ),
    ))
}

/// Starts `tool` on the scratch folder, listening on a Unix socket only, waits until it has
/// loaded the folder (PING answers PONG, not LOADING), counts its keys and shuts it down.
fn serve(tool: &Path, dir: &Path, manifest: &str) -> Result<String> {
    let socket = dir.join("drill.sock");
    // A Unix socket's path fits in 108 bytes: a longer one would fail the server's start,
    // and be told as a point it could not load.
    if socket.as_os_str().len() > 100 {
        return Err(Error::new(
            Exit::Config,
            format!(
                "{} is too long a path for the drill's Unix socket: give a shorter TMPDIR",
                socket.display()
            ),
        ));
    }
    let log = dir.join("server.log");
    let append_name = manifest.trim_end_matches(".manifest");
    let child = Command::new(tool)
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--dir"])
        .arg(dir)
        .args(["--appendonly", "yes", "--appenddirname", AOF_DIR])
        .args(["--appendfilename", append_name])
        .args(["--save", "", "--daemonize", "no", "--logfile"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("cannot start", tool, &e))?;
    let mut server = Server(child);
    let refused = |why: String| {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        Error::new(
            Exit::Data,
            format!(
                "{} did not load the recovered folder ({why}): {}",
                tool.display(),
                last_line(&said)
            ),
        )
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(refused(format!("it exited with {status}")));
        }
        if crate::signal::stop_requested() {
            return Err(Error::new(
                Exit::TempFail,
                "stopped before the server loaded",
            ));
        }
        if started.elapsed() > LOAD_LIMIT {
            return Err(refused("still loading after an hour".into()));
        }
        match ask(&socket, "PING") {
            Ok(r) if r == "+PONG" => break,
            // LOADING, or not listening yet.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let keys = ask(&socket, "DBSIZE")
        .ok()
        .and_then(|r| r.strip_prefix(':').and_then(|n| n.parse::<u64>().ok()));
    let _ = ask(&socket, "SHUTDOWN NOSAVE");
    server.stop();
    Ok(format!(
        "{} loaded the recovered folder ({} keys) in {:.1} s",
        tool.display(),
        keys.map_or("?".to_string(), |k| k.to_string()),
        started.elapsed().as_secs_f64()
    ))
}

/// One inline command over the socket, and the first line of the reply.
fn ask(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s.take(4096)).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// The last non-empty line of a tool's output, for the error.
fn last_line(said: &str) -> String {
    said.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("it said nothing")
        .to_string()
}

/// The throwaway server, stopped when the drill ends however it ends.
struct Server(Child);

impl Server {
    fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A private scratch folder, removed with everything in it when the drill ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("petrify-load-{}-{nanos:09}", std::process::id()));
        // Private: it holds the whole dataset.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create", &dir, &e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
