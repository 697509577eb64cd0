//! petrify: continuous backup of an append-only log (or a Redis 7 `appendonlydir/`) to S3, and
//! point-in-time recovery. See `man/petrify.1`.
//!
//! Data flows one way: [`cli`] -> [`config`] -> ([`tail`] | [`recover`]) -> [`chain`] /
//! [`layout`] / [`manifest`] / [`bucket`] / [`lease`] -> [`s3`] -> HTTP. Nothing lower imports
//! anything higher (tests/architecture.rs checks it).

mod bucket;
mod chain;
mod cli;
mod compaction;
mod config;
mod crc;
mod doctor;
mod error;
mod layout;
mod lease;
mod list;
mod manifest;
mod marks;
#[cfg(test)]
mod props;
mod prune;
mod recover;
mod s3;
mod seal;
mod signal;
mod status;
mod tail;
mod timestamp;
mod verify;

use std::process::ExitCode;

use config::Run;
use error::{Error, Exit, Result};

fn main() -> ExitCode {
    let journal = stderr_is_journal();
    init_logging(journal);
    signal::ignore_file_size_limit();
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "petrify".into());
    match run(&argv0, args.collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let level = if journal { "<3>" } else { "" };
            eprintln!("{level}petrify: error: {}", config::describe(&e));
            e.code()
        }
    }
}

/// Whether standard error is the journal (systemd sets `JOURNAL_STREAM` to the device and inode
/// of the stream it connected; a child whose stderr was redirected elsewhere inherits the
/// variable, hence the comparison).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `RUST_LOG` filters petrify's own log lines. Other crates' lines are never printed, at any
/// level: ureq's debug and trace lines carry whole presigned URLs (signature, session token).
/// To the journal, each line starts with its syslog priority (`<4>`) and carries no time of its
/// own (the journal keeps one).
fn init_logging(journal: bool) {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            if !record.target().starts_with("petrify") {
                return Ok(());
            }
            if journal {
                let priority = match record.level() {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    log::Level::Info => 6,
                    log::Level::Debug | log::Level::Trace => 7,
                };
                return writeln!(buf, "<{priority}>{}", record.args());
            }
            writeln!(
                buf,
                "[{} {}] {}",
                timestamp::rfc3339_ms(timestamp::now_ms()),
                record.level(),
                record.args()
            )
        })
        .init();
}

fn run(argv0: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let (name, args) = match cli::parse(argv0, args)? {
        cli::Parsed::Help(text) => {
            print!("{text}");
            return Ok(());
        }
        cli::Parsed::Version => {
            println!("petrify {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        cli::Parsed::Run(name, args) => (name, *args),
    };
    let command = config::resolve(name, args, |k| std::env::var(k).ok())?;
    let store =
        s3::Store::new(&command.store).map_err(|e| config::store_error(&e, &command.store))?;
    // `--bucket-time`: the readers read the bucket as it was, through the same seam.
    let as_of = match command.as_of {
        Some(t) => Some(as_it_was(&store, &command.store.bucket, t)?),
        None => None,
    };
    let view: &dyn s3::ObjectStore = match &as_of {
        Some(v) => v,
        None => &store,
    };
    match &command.run {
        Run::Persist(p) => tail::persist(p, &store),
        Run::Recover(r) => recover::recover(r, view),
        Run::Status(req) => status::status(req, view, &mut std::io::stdout().lock()),
        Run::Prune(req) => prune::prune(req, &store, &mut std::io::stdout().lock()),
        Run::Verify(req) => verify::verify(req, view, &mut std::io::stdout().lock()),
        Run::List(req) => list::list(req, view, &mut std::io::stdout().lock()),
        Run::Doctor(req) => doctor::doctor(req, &store, &mut std::io::stdout().lock()),
    }
}

/// The bucket as it was at `at_ms`, if it keeps versions.
fn as_it_was<'a>(store: &'a s3::Store, bucket: &str, at_ms: u64) -> Result<s3::AsOf<'a>> {
    let keeps = match store.keeps_versions() {
        Ok(k) => k,
        // A store without versioning at all (s3s-fs answers 501).
        Err(e) if e.not_implemented() => false,
        Err(e) => {
            return Err(Error::s3(
                &format!("reading the versioning of bucket {bucket}"),
                &e,
            ));
        }
    };
    if !keeps {
        return Err(Error::new(
            Exit::Config,
            format!(
                "bucket {bucket} keeps no versions, so --bucket-time has no past to read: enable \
                 versioning on it (aws s3api put-bucket-versioning --bucket {bucket} \
                 --versioning-configuration Status=Enabled); it keeps what is overwritten or \
                 deleted from then on"
            ),
        ));
    }
    Ok(s3::AsOf::new(store, at_ms))
}
