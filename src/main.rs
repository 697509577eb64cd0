//! petrify: continuous backup of an append-only log (or a Redis 7 `appendonlydir/`) to S3, and
//! point-in-time recovery. See `man/petrify.1`.
//!
//! Data flows one way: [`cli`] -> config -> ([`tail`] | [`recover`]) -> [`chain`] / [`layout`]
//! -> [`s3`] -> HTTP.

mod aofdir;
mod bucket;
mod chain;
mod cli;
mod error;
mod fetch;
mod layout;
mod lease;
#[cfg(test)]
mod props;
mod recover;
mod s3;
mod signal;
mod tail;
mod timestamp;

use std::process::ExitCode;

use cli::Command;
use error::Result;

fn main() -> ExitCode {
    init_logging();
    signal::ignore_file_size_limit();
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "petrify".into());
    match run(&argv0, args.collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petrify: error: {e}");
            e.code()
        }
    }
}

/// `RUST_LOG` filters petrify's own log lines. Other crates' lines are never printed, at any
/// level: ureq's debug and trace lines carry whole presigned URLs (signature, session token).
fn init_logging() {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            if !record.target().starts_with("petrify") {
                return Ok(());
            }
            writeln!(
                buf,
                "[{} {}] {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .init();
}

fn run(argv0: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    match cli::parse(argv0, args)? {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Version => {
            println!("petrify {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Persist(mut p) => {
            p.max_object = cli::max_object(env)?;
            let store = store(&p.common, env)?;
            tail::persist(&p, &store)
        }
        Command::Recover(r) => {
            let store = store(&r.common, env)?;
            recover::recover(&r, &store)
        }
        Command::List(c) => {
            let store = store(&c, env)?;
            recover::list(&c, &store, &mut std::io::stdout().lock())
        }
    }
}

fn store(c: &cli::Common, env: impl Fn(&str) -> Option<String>) -> Result<s3::Store> {
    let cfg = cli::store_config(c, env)?;
    s3::Store::new(&cfg).map_err(|m| error::Error::new(error::Exit::Usage, m))
}
