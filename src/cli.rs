//! The command line, parsed into plain values: which command, and the options as given. One
//! table, [`options::OPTIONS`], defines every option (names, values, commands, docs, defaults,
//! where it is stored); the parser accepts exactly those, and `--help`, the man page's option
//! list and the README's Usage block are rendered from it ([`docs`]). Checks of the values and
//! the environment are [`crate::config`]'s. Nothing here touches the network or the watched
//! file.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::error::{Error, Exit, Result};

mod docs;
mod help;
pub mod options;

pub use options::{DEFAULT_INTERVAL, DEFAULT_PARALLEL, OPTIONS};

/// The commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Persist,
    Recover,
    List,
    Verify,
    Prune,
    Status,
    Doctor,
}

impl CommandName {
    pub const ALL: &[CommandName] = &[
        CommandName::Persist,
        CommandName::Recover,
        CommandName::List,
        CommandName::Verify,
        CommandName::Prune,
        CommandName::Status,
        CommandName::Doctor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Persist => "persist",
            CommandName::Recover => "recover",
            CommandName::List => "list",
            CommandName::Verify => "verify",
            CommandName::Prune => "prune",
            CommandName::Status => "status",
            CommandName::Doctor => "doctor",
        }
    }

    fn parse(s: &str) -> Option<CommandName> {
        CommandName::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

/// The options as given on the command line, not yet checked or defaulted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub file: Option<PathBuf>,
    pub interval: Option<String>,
    pub at_timestamp: Option<String>,
    pub force: bool,
    pub if_missing: bool,
    pub deep: bool,
    pub load: bool,
    pub server: Option<PathBuf>,
    pub dry_run: bool,
    pub json: bool,
    pub max_lag: Option<String>,
    pub metrics_file: Option<PathBuf>,
    pub heartbeat_url: Option<String>,
    pub retain: Option<String>,
    pub compaction: Option<String>,
    pub parallel: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub last: Option<String>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub lock_days: Option<String>,
    pub lock_mode: Option<String>,
    pub bucket_time: Option<String>,
    pub compress: Option<String>,
    pub encrypt_to: Vec<String>,
    pub encrypt_to_file: Option<PathBuf>,
    pub identity: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(CommandName, Box<Args>),
    /// Help text to print on stdout.
    Help(String),
    Version,
}

/// Parses the arguments after argv[0]. `argv0` picks the command when the binary is invoked as
/// `petrify-persist`, `petrify-recover` or `petrify-list` (the original tool's names).
pub fn parse(argv0: &str, args: Vec<OsString>) -> Result<Parsed> {
    let mut parser = lexopt::Parser::from_args(args);
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("petrify");
    let command = match name.strip_prefix("petrify-").and_then(CommandName::parse) {
        Some(c) => c,
        None => match parser.next().map_err(usage)? {
            Some(Long("help") | Short('h')) => return Ok(Parsed::Help(docs::main_help())),
            Some(Long("version") | Short('V')) => return Ok(Parsed::Version),
            Some(Value(v)) => {
                let v = v.string().map_err(usage)?;
                CommandName::parse(&v).ok_or_else(|| {
                    usage_msg(format!("unknown command {v:?}: use {}", command_names()))
                })?
            }
            Some(other) => {
                return Err(usage_msg(format!(
                    "{} before the command: give {} first",
                    other.unexpected(),
                    command_names()
                )));
            }
            None => {
                return Err(usage_msg(format!(
                    "no command given: use {} (see petrify --help)",
                    command_names()
                )));
            }
        },
    };
    let mut a = Args::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        let name = match arg {
            Long("help") | Short('h') => return Ok(Parsed::Help(docs::command_help(command))),
            Long("version") | Short('V') => return Ok(Parsed::Version),
            Long(name) => name.to_string(),
            other => return Err(not_an_option(command, other.unexpected())),
        };
        let Some(opt) = OPTIONS
            .iter()
            .find(|o| o.name == name && o.takes(command).is_some())
        else {
            return Err(not_an_option(command, Long(&name).unexpected()));
        };
        let value = match opt.value {
            Some(_) => Some(parser.value().map_err(usage)?),
            None => None,
        };
        (opt.set)(&mut a, value).map_err(|why| usage_msg(format!("--{} {why}", opt.name)))?;
    }
    Ok(Parsed::Run(command, Box::new(a)))
}

/// `persist, recover, ... or doctor`, for messages.
fn command_names() -> String {
    let names: Vec<&str> = CommandName::ALL.iter().map(|c| c.as_str()).collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn not_an_option(command: CommandName, what: lexopt::Error) -> Error {
    let c = command.as_str();
    usage_msg(format!(
        "{what}: not an option of petrify {c} (see petrify {c} --help)"
    ))
}

fn usage(e: lexopt::Error) -> Error {
    usage_msg(e.to_string())
}

pub fn usage_msg(m: impl Into<String>) -> Error {
    Error::new(Exit::Usage, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(argv0: &str, args: &[&str]) -> Result<Parsed> {
        parse(argv0, args.iter().map(OsString::from).collect())
    }

    #[test]
    fn parses_each_command() {
        let Parsed::Run(c, a) = p(
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
        .unwrap() else {
            panic!()
        };
        assert_eq!(c, CommandName::Persist);
        assert_eq!(a.interval.as_deref(), Some("0.5"));
        assert_eq!(a.bucket.as_deref(), Some("b"));

        let Parsed::Run(c, a) = p(
            "/usr/bin/petrify-recover",
            &[
                "--bucket=b",
                "--prefix",
                "",
                "--file",
                "f",
                "--at-timestamp",
                "1.5",
                "--force",
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c, CommandName::Recover);
        assert!(a.force);
        assert_eq!(a.prefix.as_deref(), Some(""));
        assert_eq!(a.at_timestamp.as_deref(), Some("1.5"));

        assert!(matches!(
            p("petrify-list", &["--bucket", "b", "--prefix", "p"]).unwrap(),
            Parsed::Run(CommandName::List, _)
        ));
        assert_eq!(
            p("petrify", &["--help"]).unwrap(),
            Parsed::Help(docs::main_help())
        );
        assert_eq!(
            p("petrify", &["recover", "--help"]).unwrap(),
            Parsed::Help(docs::command_help(CommandName::Recover))
        );
        assert_eq!(p("petrify", &["-V"]).unwrap(), Parsed::Version);
    }

    #[test]
    fn unknown_commands_and_options_are_usage_errors() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["--bucket", "b"],
            &["persist", "--force"],
            &["list", "--file", "f"],
            &["list", "--frob"],
            &["list", "-x"],
            &["list", "stray"],
            &["recover", "--file"],
            &["recover", "--file", ""],
        ] {
            let e = p("petrify", args).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{args:?}");
            assert!(!e.message.is_empty());
        }
    }

    /// The parser accepts each option for exactly the commands the table gives it, and
    /// stores what it was given.
    #[test]
    fn the_parser_takes_what_the_table_says() {
        for o in OPTIONS {
            for c in CommandName::ALL {
                let flag = format!("--{}", o.name);
                let mut args = vec![c.as_str(), flag.as_str()];
                if o.value.is_some() {
                    args.push("x");
                }
                let parsed = p("petrify", &args);
                assert_eq!(
                    matches!(parsed, Ok(Parsed::Run(..))),
                    o.takes(*c).is_some(),
                    "petrify {args:?}"
                );
                if let Ok(Parsed::Run(_, a)) = parsed {
                    assert_ne!(*a, Args::default(), "petrify {args:?} stored nothing");
                }
            }
        }
    }
}
