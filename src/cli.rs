//! The command line and the environment, turned into plain configuration. Nothing here touches
//! the network or the watched file.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;
use rusty_s3::Credentials;

use crate::error::{Error, Exit, Result};
use crate::s3::StoreConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Persist(Persist),
    Recover(Recover),
    List(Common),
    /// Help text to print on stdout.
    Help(&'static str),
    Version,
}

/// Options every S3-facing command takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Common {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Persist {
    pub common: Common,
    pub file: PathBuf,
    pub interval: Duration,
    /// Largest object persist uploads (bytes); larger ranges are split.
    pub max_object: u64,
}

/// Default largest object: well under S3's 5 GiB PutObject limit, and small enough that a
/// failed upload costs little to redo.
pub const DEFAULT_MAX_OBJECT: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct Recover {
    pub common: Common,
    pub file: PathBuf,
    pub at_ms: Option<u64>,
    pub force: bool,
}

pub const MAIN_HELP: &str = "\
petrify: continuous backup of an append-only log (or a Redis 7 appendonlydir/) to S3,
and point-in-time recovery.

Usage:
  petrify persist --bucket B --prefix P --file PATH [--interval SECONDS] [options]
  petrify recover --bucket B --prefix P --file PATH [--at-timestamp TIME] [--force] [options]
  petrify list    --bucket B --prefix P [options]
  petrify --help | --version | COMMAND --help

Options for every command:
  --endpoint URL   S3 endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL,
                   else https://s3.REGION.amazonaws.com)
  --region R       (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1)
  --path-style     address the bucket as ENDPOINT/BUCKET (automatic for IPs and localhost)

Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
Logging: RUST_LOG (default info). See petrify(1).
";

pub const PERSIST_HELP: &str = "\
petrify persist --bucket B --prefix P --file PATH [--interval SECONDS] [options]

Follows PATH (an append-only file, or a Redis 7 appendonlydir/ folder) and uploads every
newly appended byte range to s3://B/P/ each interval. Resumes an existing chain on restart.
Checks each interval that what was uploaded is still the file's (a change starts a new
generation). Stops cleanly on SIGTERM, SIGINT or SIGHUP after uploading what is pending.

  --file PATH        the file or folder to follow (waited for if it does not exist yet)
  --interval SECONDS how often to look for new bytes (default 1; fractions allowed, >= 0.01)
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const RECOVER_HELP: &str = "\
petrify recover --bucket B --prefix P --file PATH [--at-timestamp TIME] [--force] [options]

Rebuilds PATH from s3://B/P/ as of the newest recovery point, or the newest one at or before
TIME. Verifies every offset and CRC, writes a temporary copy beside PATH and renames it into
place: PATH is either the complete recovery point or untouched.

  --file PATH         where to write the file (or folder, for a Redis appendonlydir/ backup)
  --at-timestamp TIME RFC 3339 (2026-11-25T21:04:05.123Z) or Unix seconds (1764104645.123)
  --force             replace PATH if it exists
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const LIST_HELP: &str = "\
petrify list --bucket B --prefix P [options]

Prints the recovery points under s3://B/P/, oldest first, one per line:
  TIME (RFC 3339 UTC, milliseconds)  UNIX-SECONDS  GENERATION  BYTES
Either time can be given to recover --at-timestamp. BYTES is the file's size at that point
(for a folder, all its files together). Points whose chain misses an object are not listed:
they are named on stderr, and list exits with status 65.
";

/// Parses the arguments after argv[0]. `argv0` picks the command when the binary is invoked as
/// `petrify-persist`, `petrify-recover` or `petrify-list` (the original tool's names).
pub fn parse(argv0: &str, args: Vec<OsString>) -> Result<Command> {
    let mut parser = lexopt::Parser::from_args(args);
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("petrify");
    let command = match name.strip_prefix("petrify-") {
        Some(c @ ("persist" | "recover" | "list")) => c.to_string(),
        _ => match parser.next().map_err(usage)? {
            Some(Long("help") | Short('h')) => return Ok(Command::Help(MAIN_HELP)),
            Some(Long("version") | Short('V')) => return Ok(Command::Version),
            Some(Value(v)) => v.string().map_err(usage)?,
            Some(other) => {
                return Err(usage_msg(format!(
                    "{} before the command: give persist, recover or list first",
                    other.unexpected()
                )));
            }
            None => {
                return Err(usage_msg(
                    "no command given: use persist, recover or list (see petrify --help)",
                ));
            }
        },
    };
    let help = match command.as_str() {
        "persist" => PERSIST_HELP,
        "recover" => RECOVER_HELP,
        "list" => LIST_HELP,
        other => {
            return Err(usage_msg(format!(
                "unknown command {other:?}: use persist, recover or list"
            )));
        }
    };

    let mut common = Common::default();
    let (mut bucket, mut prefix, mut file) = (None, None, None);
    let mut interval = Duration::from_secs(1);
    let mut at_ms = None;
    let mut force = false;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("help") | Short('h') => return Ok(Command::Help(help)),
            Long("version") | Short('V') => return Ok(Command::Version),
            Long("bucket") => bucket = Some(text(&mut parser, "--bucket")?),
            Long("prefix") => prefix = Some(text(&mut parser, "--prefix")?),
            Long("endpoint") => common.endpoint = Some(text(&mut parser, "--endpoint")?),
            Long("region") => common.region = Some(text(&mut parser, "--region")?),
            Long("path-style") => common.path_style = true,
            Long("file") if command != "list" => {
                let v = parser.value().map_err(usage)?;
                if v.is_empty() {
                    return Err(usage_msg("--file is empty"));
                }
                file = Some(PathBuf::from(v));
            }
            Long("interval") if command == "persist" => {
                interval = parse_interval(&text(&mut parser, "--interval")?)?;
            }
            Long("at-timestamp") if command == "recover" => {
                let v = text(&mut parser, "--at-timestamp")?;
                at_ms = Some(crate::timestamp::parse(&v).map_err(usage_msg)?);
            }
            Long("force") if command == "recover" => force = true,
            other => {
                return Err(usage_msg(format!(
                    "{}: not an option of petrify {command} (see petrify {command} --help)",
                    other.unexpected()
                )));
            }
        }
    }
    common.bucket = bucket.ok_or_else(|| usage_msg(format!("petrify {command} needs --bucket")))?;
    if common.bucket.is_empty() {
        return Err(usage_msg("--bucket is empty"));
    }
    // The prefix may be empty (the bucket's top level) but must be given, so that nobody writes
    // to the top of a shared bucket by forgetting it.
    common.prefix = prefix.ok_or_else(|| {
        usage_msg(format!(
            "petrify {command} needs --prefix (use --prefix '' for the top of the bucket)"
        ))
    })?;
    check_prefix(&common.prefix)?;
    let need_file = || usage_msg(format!("petrify {command} needs --file"));
    Ok(match command.as_str() {
        "persist" => Command::Persist(Persist {
            common,
            file: file.ok_or_else(need_file)?,
            interval,
            max_object: DEFAULT_MAX_OBJECT,
        }),
        "recover" => Command::Recover(Recover {
            common,
            file: file.ok_or_else(need_file)?,
            at_ms,
            force,
        }),
        _ => Command::List(common),
    })
}

/// Prefixes are limited to S3's "safe characters": some stores decode `+` and `%` in listings
/// differently from how they were written, which would hide objects from recovery.
fn check_prefix(p: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()/".contains(c);
    if let Some(c) = p.chars().find(|c| !safe(*c)) {
        return Err(usage_msg(format!(
            "--prefix {p:?} contains {c:?}: use letters, digits, / and ! - _ . * ' ( ) only"
        )));
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(usage_msg(format!(
            "--prefix {p:?} has a . or .. segment: name the folder plainly"
        )));
    }
    if p.len() > 512 {
        return Err(usage_msg("--prefix is longer than 512 characters"));
    }
    Ok(())
}

fn text(parser: &mut lexopt::Parser, name: &str) -> Result<String> {
    parser
        .value()
        .map_err(usage)?
        .into_string()
        .map_err(|_| usage_msg(format!("{name} must be valid UTF-8")))
}

fn parse_interval(s: &str) -> Result<Duration> {
    let secs: f64 = s.trim().parse().map_err(|_| {
        usage_msg(format!(
            "--interval {s:?} is not a number of seconds (example: 1 or 0.5)"
        ))
    })?;
    if !secs.is_finite() || !(0.01..=86_400.0).contains(&secs) {
        return Err(usage_msg(format!(
            "--interval {s} is out of range: give 0.01 to 86400 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn usage(e: lexopt::Error) -> Error {
    usage_msg(e.to_string())
}

fn usage_msg(m: impl Into<String>) -> Error {
    Error::new(Exit::Usage, m)
}

/// `PETRIFY_MAX_OBJECT_BYTES`: the largest object persist uploads (default 1 GiB, at least
/// 1 MiB, at most 5 GiB: S3's limit for one PUT).
pub fn max_object(env: impl Fn(&str) -> Option<String>) -> Result<u64> {
    let Some(v) = env("PETRIFY_MAX_OBJECT_BYTES").filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_MAX_OBJECT);
    };
    match v.trim().parse::<u64>() {
        Ok(n) if ((1 << 20)..=(5 << 30)).contains(&n) => Ok(n),
        _ => Err(Error::new(
            Exit::Config,
            format!(
                "PETRIFY_MAX_OBJECT_BYTES={v:?}: give a number of bytes from 1048576 to 5368709120"
            ),
        )),
    }
}

/// Resolves endpoint, region and credentials from the options and the environment (`env`).
pub fn store_config(c: &Common, env: impl Fn(&str) -> Option<String>) -> Result<StoreConfig> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let region = c
        .region
        .clone()
        .or_else(|| nonempty("AWS_REGION"))
        .or_else(|| nonempty("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = c
        .endpoint
        .clone()
        .or_else(|| nonempty("AWS_ENDPOINT_URL_S3"))
        .or_else(|| nonempty("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let (Some(key), Some(secret)) = (
        nonempty("AWS_ACCESS_KEY_ID"),
        nonempty("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return Err(Error::new(
            Exit::Config,
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
             AWS_SESSION_TOKEN for temporary credentials)",
        ));
    };
    let credentials = match nonempty("AWS_SESSION_TOKEN") {
        Some(token) => Credentials::new_with_token(key, secret, token),
        None => Credentials::new(key, secret),
    };
    Ok(StoreConfig {
        endpoint,
        region,
        bucket: c.bucket.clone(),
        path_style: c.path_style.then_some(true),
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(argv0: &str, args: &[&str]) -> Result<Command> {
        parse(argv0, args.iter().map(OsString::from).collect())
    }

    #[test]
    fn parses_each_command() {
        let c = p(
            "petrify",
            &[
                "persist",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--interval",
                "0.5",
            ],
        )
        .unwrap();
        let Command::Persist(c) = c else { panic!() };
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.common.bucket, "b");

        let c = p(
            "/usr/bin/petrify-recover",
            &[
                "--bucket=b",
                "--prefix",
                "",
                "--file",
                "f",
                "--at-timestamp",
                "1764104645.5",
                "--force",
            ],
        )
        .unwrap();
        let Command::Recover(c) = c else { panic!() };
        assert_eq!(c.at_ms, Some(1_764_104_645_500));
        assert!(c.force);
        assert_eq!(c.common.prefix, "");

        assert!(matches!(
            p("petrify-list", &["--bucket", "b", "--prefix", "p"]).unwrap(),
            Command::List(_)
        ));
        assert_eq!(p("petrify", &["--help"]).unwrap(), Command::Help(MAIN_HELP));
        assert_eq!(
            p("petrify", &["recover", "--help"]).unwrap(),
            Command::Help(RECOVER_HELP)
        );
        assert_eq!(p("petrify", &["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["--bucket", "b"],
            &["persist", "--prefix", "p", "--file", "f"],
            &["persist", "--bucket", "b", "--file", "f"],
            &["persist", "--bucket", "b", "--prefix", "p"],
            &[
                "persist",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--interval",
                "0",
            ],
            &[
                "persist",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--interval",
                "x",
            ],
            &[
                "persist",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--interval",
                "NaN",
            ],
            &[
                "persist", "--bucket", "b", "--prefix", "p", "--file", "f", "--force",
            ],
            &["list", "--bucket", "b", "--prefix", "p", "--file", "f"],
            &[
                "recover",
                "--bucket",
                "b",
                "--prefix",
                "p",
                "--file",
                "f",
                "--at-timestamp",
                "soon",
            ],
            &["recover", "--bucket", "b", "--prefix", "p", "--file"],
            &["recover", "--bucket", "", "--prefix", "p", "--file", "f"],
            &["list", "--bucket", "b", "--prefix", "a+b"],
            &["list", "--bucket", "b", "--prefix", "50%"],
            &["list", "--bucket", "b", "--prefix", "a/../b"],
            &["list", "--bucket", "b", "--prefix", "tab\there"],
        ] {
            let e = p("petrify", args).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{args:?}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn config_from_environment() {
        let c = Common {
            bucket: "b".into(),
            ..Common::default()
        };
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            "AWS_DEFAULT_REGION" => Some("eu-west-3".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
            _ => None,
        };
        let cfg = store_config(&c, env).unwrap();
        assert_eq!(cfg.region, "eu-west-3");
        assert_eq!(cfg.endpoint, "http://127.0.0.1:9000");
        assert_eq!(cfg.path_style, None);

        let cfg = store_config(&c, |k| match k {
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("x".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert_eq!(store_config(&c, |_| None).unwrap_err().exit, Exit::Config);
    }
}
