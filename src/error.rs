//! The one error type that reaches `main`: a message for one stderr line, and the documented
//! exit status (sysexits(3) values, listed in the man page under EXIT STATUS).

use std::fmt;
use std::process::ExitCode;

use crate::s3::S3Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: a bug or an unexpected state.
    Software = 1,
    /// 64: the command line is wrong.
    Usage = 64,
    /// 65: the data in the bucket is damaged: a gap, a CRC mismatch, a missing object.
    Data = 65,
    /// 66: nothing to recover from: no bucket, no recovery point, none that early.
    NoInput = 66,
    /// 69: S3 cannot be reached or does not answer like S3.
    Unavailable = 69,
    /// 73: the output cannot be created (it exists, or its folder does not).
    CantCreate = 73,
    /// 74: reading or writing a local file failed.
    Io = 74,
    /// 75: persist stopped with bytes not yet uploaded (they are still on disk).
    TempFail = 75,
    /// 77: access denied, by S3 or by the local file system.
    NoPerm = 77,
    /// 78: the configuration (credentials, environment) is incomplete.
    Config = 78,
}

#[derive(Debug)]
pub struct Error {
    pub exit: Exit,
    pub message: String,
    /// What the operator can do, in terms of the command line: said by the CLI layer, which
    /// alone knows the options' names.
    pub hint: Option<Hint>,
}

/// Advice that names command-line options; see `config::describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// The store says the bucket is in this region.
    UseRegion(String),
    /// Nothing found where the options point.
    CheckBucketAndPrefix,
    /// No such bucket.
    CheckBucket,
    /// The target exists.
    GiveForce,
    /// The time asked for is before every recovery point.
    GiveLaterTime,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(exit: Exit, message: impl Into<String>) -> Error {
        Error {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: Hint) -> Error {
        self.hint = Some(hint);
        self
    }

    /// A failed S3 request, `what` naming the operation (and key) it was for.
    pub fn s3(what: &str, e: &S3Error) -> Error {
        if let Some(region) = e.wrong_region() {
            return Error::new(Exit::Config, format!("{what}: {e}"))
                .with_hint(Hint::UseRegion(region.to_string()));
        }
        let exit = match (e.status(), e.code()) {
            (_, Some("NoSuchBucket")) => Exit::NoInput,
            (_, Some("NoSuchKey")) => Exit::Data,
            (Some(401 | 403), _) | (_, Some("ExpiredToken" | "InvalidAccessKeyId")) => Exit::NoPerm,
            _ => Exit::Unavailable,
        };
        let e = Error::new(exit, format!("{what}: {e}"));
        match e.exit {
            Exit::NoInput => e.with_hint(Hint::CheckBucket),
            _ => e,
        }
    }

    /// A failed local file operation on `path`.
    pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> Error {
        let exit = match e.kind() {
            std::io::ErrorKind::PermissionDenied => Exit::NoPerm,
            _ => Exit::Io,
        };
        Error::new(exit, format!("{what} {}: {e}", path.display()))
    }

    pub fn code(&self) -> ExitCode {
        ExitCode::from(self.exit as u8)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
