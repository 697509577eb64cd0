//! The `--help` texts. Every option of [`super::OPTIONS`] appears in the text of each command
//! that takes it (a test checks it, and that man/petrify.1 documents it).

pub const MAIN_HELP: &str = "\
petrify: continuous backup of an append-only log (or a Redis 7 appendonlydir/) to S3,
and point-in-time recovery.

Usage:
  petrify persist --bucket B --prefix P --file PATH [--interval SECONDS] [--retain AGE] [options]
  petrify recover --bucket B --prefix P --file PATH [--at-timestamp TIME] [--force] [options]
  petrify list    --bucket B --prefix P [--since TIME] [--until TIME] [--last N] [options]
  petrify verify  --bucket B --prefix P [--at-timestamp TIME] [--deep] [options]
  petrify prune   --bucket B --prefix P --retain AGE [--dry-run] [options]
  petrify status  --bucket B --prefix P [--file PATH] [--max-lag SECONDS] [--json] [options]
  petrify --help | --version | COMMAND --help

Options for every command:
  --endpoint URL   S3 endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL,
                   else https://s3.REGION.amazonaws.com)
  --region R       (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1)
  --path-style     address the bucket as ENDPOINT/BUCKET (automatic for IPs and localhost)

Credentials, as the AWS SDKs find them: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
(AWS_SESSION_TOKEN); web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN); the profile
in ~/.aws (AWS_PROFILE: keys or credential_process); a container endpoint; the EC2
instance's role (IMDSv2). See CREDENTIALS in petrify(1).
Logging: RUST_LOG (default info). See petrify(1).
";

pub const PERSIST_HELP: &str = "\
petrify persist --bucket B --prefix P --file PATH [--interval SECONDS] [--retain AGE] [options]

Follows PATH (an append-only file, or a Redis 7 appendonlydir/ folder) and uploads every
newly appended byte range to s3://B/P/ each interval. Resumes an existing chain on restart.
Checks each interval that what was uploaded is still the file's (a change starts a new
generation). Stops cleanly on SIGTERM, SIGINT or SIGHUP after uploading what is pending.

  --file PATH        the file or folder to follow (waited for if it does not exist yet)
  --interval SECONDS how often to look for new bytes (default 1; fractions allowed, >= 0.01)
  --retain AGE       keep the points of the last AGE (90s, 36h, 30d) and the one before;
                     delete what no kept point needs, every tenth of AGE (see petrify prune).
                     Default: keep everything
  --compaction SPANS merge the objects of each window into one, keeping every point
                     (default 5s,20s,1m,5m,20m,1h,4h,12h,2d,8d; `off` to disable)
  --metrics-file PATH  Prometheus text (node_exporter's textfile collector), rewritten
                     atomically after each poll
  --heartbeat-url URL  GET it at most once a minute while polls and uploads succeed
                     (a dead-man's switch); never logged
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const RECOVER_HELP: &str = "\
petrify recover --bucket B --prefix P --file PATH [--at-timestamp TIME] [--force | --if-missing] [options]

Rebuilds PATH from s3://B/P/ as of the newest recovery point, or the newest one at or before
TIME. Verifies every offset and CRC, writes a temporary copy beside PATH and renames it into
place: PATH is either the complete recovery point or untouched.

  --file PATH         where to write the file (or folder, for a Redis appendonlydir/ backup)
  --at-timestamp TIME RFC 3339 (2026-11-25T21:04:05.123Z) or Unix seconds (1764104645.123)
  --force             replace PATH if it exists
  --if-missing        for boot: exit 0 doing nothing if PATH exists, or if the prefix holds
                      no recovery point yet (a first boot; said at WARN)
  --parallel N        requests in flight at once (default 64, 1 to 256); objects over
                      8 MiB are fetched in 8 MiB ranges, in parallel
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const LIST_HELP: &str = "\
petrify list --bucket B --prefix P [--since TIME] [--until TIME] [--last N] [options]

Prints the recovery points under s3://B/P/, oldest first, one per line:
  TIME (RFC 3339 UTC, milliseconds)  UNIX-SECONDS  GENERATION  BYTES
Either time can be given to recover --at-timestamp. BYTES is the file's size at that point
(for a folder, all its files together). Points whose chain misses an object are not listed:
they are named on stderr, and list exits with status 65.

  --since TIME  only points at or after TIME (RFC 3339 or Unix seconds, as --at-timestamp)
  --until TIME  only points at or before TIME
  --last N      only the newest N points (of those --since and --until leave)
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const VERIFY_HELP: &str = "\
petrify verify --bucket B --prefix P [--at-timestamp TIME] [--deep] [--parallel N] [options]

Checks, writing nothing, that every recovery point under s3://B/P/ (or the one recover
--at-timestamp TIME would choose) can be rebuilt: every key under the layout is Petrify's and
as long as it says, every chain is whole, objects holding one range agree. Prints one line
per broken point or object (BROKEN ...); exits 0 only when all is well, 65 otherwise.

  --at-timestamp TIME only the point recover would choose for TIME
  --deep              also download every object (in parallel, nothing kept) and check its
                      CRC-32, and that each retried upload repeats the bytes it extends
  --parallel N        requests in flight at once with --deep (default 64, 1 to 256)
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const PRUNE_HELP: &str = "\
petrify prune --bucket B --prefix P --retain AGE [--dry-run] [options]

Deletes from s3://B/P/ every object no kept recovery point needs. Kept: every point newer
than now minus AGE, and the newest point before that (so every time in the window can still
be recovered). Older generations go whole. Refuses a prefix a running persist holds (give
that persist --retain instead). A crash at any moment leaves every kept point recoverable.

  --retain AGE  how far back points are kept: a number and a unit, s, m, h or d (90s, 36h, 30d)
  --dry-run     print each object that would go (KEY  BYTES) and the total; delete nothing
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";

pub const STATUS_HELP: &str = "\
petrify status --bucket B --prefix P [--file PATH] [--max-lag SECONDS] [--json] [options]

Reads s3://B/P/ (the bucket is the truth) and prints the newest recovery point, its age and
whether its chain is whole; given the followed file or Redis folder, also how many of its
bytes are not in the bucket and the lag (0 when the bucket holds them all, else the newest
point's age). For cron and monitoring: exits 65 when the newest point cannot be recovered,
75 when the lag is over --max-lag, 66 when there is no point yet, 0 otherwise.

  --file PATH          the followed file or folder, to compare with
  --max-lag SECONDS    the most lag that is healthy (without --file: the newest point's age)
  --json               one JSON object on one line instead of text
  --bucket, --prefix, --endpoint, --region, --path-style: see petrify --help
";
