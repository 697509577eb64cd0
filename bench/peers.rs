//! The tools an operator would otherwise use, each driven as its documentation says, with its
//! own defaults except where the issue names a setting (rclone's `--transfers 16` for many
//! objects and `--multi-thread-streams 8` for one large one).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{ACCESS_KEY, BUCKET, S3, SECRET_KEY, Scratch};
use crate::measure::{Sample, timed};

pub struct Peer {
    pub name: &'static str,
    pub version: String,
    exe: String,
    endpoint: String,
    /// An empty rclone config file: rclone then takes its remote from the environment.
    rclone_config: PathBuf,
}

impl Peer {
    /// The peers installed on this machine.
    pub fn all(s3: &S3, work: &Scratch) -> Vec<Peer> {
        let rclone_config = work.path("rclone.conf");
        let _ = std::fs::write(&rclone_config, b"");
        // Debian's awscli first: a pyenv shim may stand in front of it on PATH.
        let aws = if Path::new("/usr/bin/aws").exists() {
            "/usr/bin/aws"
        } else {
            "aws"
        };
        [
            ("curl", "curl", "--version"),
            ("aws", aws, "--version"),
            ("rclone", "rclone", "version"),
        ]
        .into_iter()
        .filter_map(|(name, exe, flag)| {
            let out = Command::new(exe).arg(flag).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let version = text.lines().next()?.trim().to_string();
            out.status.success().then(|| Peer {
                name,
                version,
                exe: exe.to_string(),
                endpoint: s3.endpoint(),
                rclone_config: rclone_config.clone(),
            })
        })
        .collect()
    }

    fn cmd(&self, endpoint: &str) -> Command {
        let mut c = Command::new(&self.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("RCLONE_") {
                c.env_remove(k);
            }
        }
        match self.name {
            "aws" => {
                c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("AWS_DEFAULT_REGION", "us-east-1")
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .args(["--endpoint-url", endpoint, "--only-show-errors"]);
            }
            "rclone" => {
                c.env("RCLONE_CONFIG", &self.rclone_config)
                    .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
                    .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
                    .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("RCLONE_CONFIG_BENCH_ENDPOINT", endpoint)
                    .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
                    .args(["--s3-no-check-bucket", "-q"]);
            }
            _ => {
                c.args(["-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
                    .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
                    // s3s-fs wants a payload hash header; curl does not send one by itself.
                    .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
            }
        }
        c
    }

    pub fn upload(&self, file: &Path, key: &str) -> Sample {
        let mut c = self.cmd(&self.endpoint);
        match self.name {
            "aws" => c
                .args(["s3", "cp"])
                .arg(file)
                .arg(format!("s3://{BUCKET}/{key}")),
            "rclone" => c
                .arg("copyto")
                .arg(file)
                .arg(format!("bench:{BUCKET}/{key}")),
            _ => c
                .arg("-T")
                .arg(file)
                .arg(format!("{}/{BUCKET}/{key}", self.endpoint)),
        };
        timed(c)
    }

    pub fn download(&self, endpoint: &str, key: &str, out: &Path) -> Sample {
        let _ = std::fs::remove_file(out);
        let mut c = self.cmd(endpoint);
        match self.name {
            "aws" => c
                .args(["s3", "cp"])
                .arg(format!("s3://{BUCKET}/{key}"))
                .arg(out),
            "rclone" => c
                .args(["copyto", "--multi-thread-streams", "8"])
                .arg(format!("bench:{BUCKET}/{key}"))
                .arg(out),
            _ => c
                .arg("-o")
                .arg(out)
                .arg(format!("{endpoint}/{BUCKET}/{key}")),
        };
        timed(c)
    }

    /// Every object under `prefix` into `dir` (what recovering a chain of deltas is to them).
    pub fn download_all(&self, endpoint: &str, prefix: &str, dir: &Path) -> Sample {
        let _ = std::fs::remove_dir_all(dir);
        let mut c = self.cmd(endpoint);
        match self.name {
            "aws" => c
                .args(["s3", "cp", "--recursive"])
                .arg(format!("s3://{BUCKET}/{prefix}/"))
                .arg(dir),
            _ => c
                .args(["copy", "--transfers", "16"])
                // The slash: without it rclone first asks whether `prefix` is an object, and
                // s3s-fs answers a HEAD of a folder with a 500 after 40 s (a server quirk that
                // would be charged to rclone).
                .arg(format!("bench:{BUCKET}/{prefix}/"))
                .arg(dir),
        };
        timed(c)
    }
}
