//! The prose of `--help` that no option owns: what each command does. The option lists and
//! usage lines around it are rendered from [`super::options::OPTIONS`] (see [`super::docs`]).

use super::CommandName;

pub const MAIN_ABOUT: &str = "\
petrify: continuous backup of an append-only log (or a Redis 7 appendonlydir/) to S3,
and point-in-time recovery.";

pub const MAIN_TAIL: &str = "\
Credentials, as the AWS SDKs find them: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
(AWS_SESSION_TOKEN); web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN); the profile
in ~/.aws (AWS_PROFILE: keys or credential_process); a container endpoint; the EC2
instance's role (IMDSv2). See CREDENTIALS in petrify(1).
Logging: RUST_LOG (default info). See petrify(1).";

/// What the command does, for its `--help`.
pub fn about(c: CommandName) -> &'static str {
    match c {
        CommandName::Persist => {
            "\
Follows PATH (an append-only file, or a Redis 7 appendonlydir/ folder) and uploads every
newly appended byte range to s3://B/P/ each interval. Resumes an existing chain on restart.
Checks each interval that what was uploaded is still the file's (a change starts a new
generation). Stops cleanly on SIGTERM, SIGINT or SIGHUP after uploading what is pending."
        }
        CommandName::Recover => {
            "\
Rebuilds PATH from s3://B/P/ as of the newest recovery point, or the newest one at or before
TIME. Verifies every offset and CRC, writes a temporary copy beside PATH and renames it into
place: PATH is either the complete recovery point or untouched."
        }
        CommandName::List => {
            "\
Prints the recovery points under s3://B/P/, oldest first, one per line:
  TIME (RFC 3339 UTC, milliseconds)  UNIX-SECONDS  GENERATION  BYTES
Either time can be given to recover --at-timestamp. BYTES is the file's size at that point
(for a folder, all its files together). Points whose chain misses an object are not listed:
they are named on stderr, and list exits with status 65."
        }
        CommandName::Verify => {
            "\
Checks, writing nothing, that every recovery point under s3://B/P/ (or the one recover
--at-timestamp TIME would choose) can be rebuilt: every key under the layout is Petrify's and
as long as it says, every chain is whole, objects holding one range agree. Prints one line
per broken point or object (BROKEN ...); exits 0 only when all is well, 65 otherwise."
        }
        CommandName::Prune => {
            "\
Deletes from s3://B/P/ every object no kept recovery point needs. Kept: every point newer
than now minus AGE, and the newest point before that (so every time in the window can still
be recovered). Older generations go whole. Refuses a prefix a running persist holds (give
that persist --retain instead). A crash at any moment leaves every kept point recoverable."
        }
        CommandName::Doctor => {
            "\
Tries, on scratch keys under s3://B/P/petrify-doctor/ (all deleted afterwards; nothing else
is touched), everything petrify relies on the store for, and prints one line per check: ok,
degraded (what petrify does instead, and what it costs) or broken (which command fails, and
why); then the IAM actions each command needs. Exits 0 when every check is ok, 69 when
persist would run degraded, 77 (a permission) or 78 (the configuration) when it cannot run."
        }
        CommandName::Status => {
            "\
Reads s3://B/P/ (the bucket is the truth) and prints the newest recovery point, its age and
whether its chain is whole; given the followed file or Redis folder, also how many of its
bytes are not in the bucket and the lag (0 when the bucket holds them all, else the newest
point's age). For cron and monitoring: exits 65 when the newest point cannot be recovered,
75 when the lag is over --max-lag, 66 when there is no point yet, 0 otherwise."
        }
    }
}
