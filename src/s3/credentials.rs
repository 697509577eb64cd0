//! Credentials as the AWS SDKs find them, fetched and kept fresh: fixed keys, or temporary ones
//! from STS (web identity), a `credential_process`, a container's endpoint or the EC2 instance
//! metadata service (IMDSv2). Temporary credentials are fetched again before they expire
//! (persist runs for months), by whichever request needs them next; if fetching fails while the
//! old ones still hold, they are kept and the failure said once. Which source is used comes
//! from `config` (the order of the chain); how each is fetched is here, with the rest of HTTP.
//! Nothing here ever logs a key, a token or a signature.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusty_s3::Credentials;

use super::S3Error;
use super::error::{net_error, xml_field};
use crate::timestamp;

/// Where credentials come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Fixed keys; `from` says where they were found, for the log.
    Static { creds: Credentials, from: String },
    /// STS AssumeRoleWithWebIdentity with a token from a file (Kubernetes service accounts).
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts: String,
    },
    /// A profile's `credential_process`, run with `sh -c`.
    Process { command: String, profile: String },
    /// A container's credentials endpoint (ECS, EKS Pod Identity).
    Container {
        url: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// The EC2 instance metadata service, with an IMDSv2 session token.
    Instance { endpoint: String },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Static { from, .. } => from.clone(),
            Source::WebIdentity { role_arn, .. } => format!("web identity, role {role_arn}"),
            Source::Process { profile, .. } => {
                format!("the credential_process of profile {profile}")
            }
            Source::Container { .. } => "the container credentials endpoint".into(),
            Source::Instance { .. } => "the EC2 instance metadata service".into(),
        }
    }
}

/// Runs a `credential_process` with `sh -c` and returns what it printed, or why not. It runs
/// as its own process group, killed whole when it outlives `limit` or a stop is requested
/// (SIGTERM must not wait on a helper waiting for a login). What it prints on stderr may hold
/// secrets: it is not kept.
fn run_process(command: &str, limit: Duration) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run credential_process: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        // Read while it runs (a full pipe would block it), at most 1 MiB.
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.take(1 << 20).read_to_end(&mut v);
            let _ = tx.send(v);
        });
    }
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("credential_process: {e}")),
        }
        let why = match (
            crate::signal::stop_requested(),
            std::time::Instant::now() >= deadline,
        ) {
            (true, _) => Some("stopped: persist was asked to stop".to_string()),
            (_, true) => Some(format!(
                "killed after {} s without an answer",
                limit.as_secs()
            )),
            _ => None,
        };
        if let Some(why) = why {
            crate::signal::kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("credential_process {why}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        crate::signal::kill_group(child.id());
        return Err(format!("credential_process failed ({status})"));
    }
    // Whatever it left running in its group must not hold the pipe open.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let out = rx.recv_timeout(left.max(Duration::from_millis(100)));
    crate::signal::kill_group(child.id());
    out.map_err(|_| "credential_process left its output open".to_string())
}

/// Credentials fetched from a [`Source`], and when they expire.
pub struct Provider {
    source: Source,
    current: Mutex<Current>,
    agent: ureq::Agent,
}

#[derive(Clone)]
struct Current {
    creds: Credentials,
    fetched_ms: u64,
    expires_ms: Option<u64>,
    /// A refresh failed while these still held: said once.
    said_stale: bool,
}

/// How long a `credential_process` may run. An SSO or vault helper waiting for a login would
/// otherwise stop uploads, and SIGTERM, for as long as it waits; after this it is killed (with
/// whatever it started) and the attempt fails like a network error, retried later.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);

/// Refresh this long before expiry, or at half the lifetime of short-lived credentials.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

impl Provider {
    /// Fetches the first credentials; `Err` says why, for a configuration error.
    pub fn new(source: Source, tls: ureq::tls::TlsConfig) -> Result<Provider, String> {
        // Short: a metadata service that is absent must cost a second or two, not a hang. No
        // proxy for the link-local services (an egress proxy cannot reach them).
        let local = matches!(source, Source::Instance { .. } | Source::Container { .. });
        let mut config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(1)))
            .timeout_global(Some(Duration::from_secs(if local { 2 } else { 10 })))
            .user_agent(concat!("petrify/", env!("CARGO_PKG_VERSION")));
        if local {
            config = config.proxy(None);
        }
        let agent = ureq::Agent::new_with_config(config.build());
        let mut p = Provider {
            source,
            current: Mutex::new(Current {
                creds: Credentials::new("", ""),
                fetched_ms: 0,
                expires_ms: Some(0),
                said_stale: false,
            }),
            agent,
        };
        let first = p.fetch()?;
        p.current = Mutex::new(first);
        Ok(p)
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The credentials to sign the next request with, fetched again if they are about to
    /// expire.
    pub fn get(&self) -> Result<Credentials, S3Error> {
        let mut cur = self
            .current
            .lock()
            .map_err(|_| S3Error::Network("credentials lock poisoned".into()))?;
        let now = timestamp::now_ms();
        let Some(expires) = cur.expires_ms else {
            return Ok(cur.creds.clone());
        };
        let lifetime = expires.saturating_sub(cur.fetched_ms);
        let margin = (REFRESH_BEFORE.as_millis() as u64).min(lifetime / 2);
        if now + margin < expires {
            return Ok(cur.creds.clone());
        }
        match self.fetch() {
            Ok(fresh) => {
                log::debug!("credentials refreshed from {}", self.source.describe());
                *cur = fresh;
                Ok(cur.creds.clone())
            }
            // The clock after the attempt: a helper can take its time to fail.
            Err(why) => {
                let after = timestamp::now_ms();
                if after >= expires {
                    return Err(S3Error::Network(format!(
                        "the credentials from {} expired at {} ({} s ago) and could not be \
                         fetched again: {why}",
                        self.source.describe(),
                        timestamp::rfc3339_ms(expires),
                        (after - expires) / 1000
                    )));
                }
                if !cur.said_stale {
                    cur.said_stale = true;
                    log::warn!(
                        "could not refresh the credentials from {} ({why}); the current ones \
                         expire at {} ({} s from now)",
                        self.source.describe(),
                        timestamp::rfc3339_ms(expires),
                        (expires - after) / 1000
                    );
                }
                Ok(cur.creds.clone())
            }
        }
    }

    fn fetch(&self) -> Result<Current, String> {
        let now = timestamp::now_ms();
        let (creds, expires_ms) = match &self.source {
            Source::Static { creds, .. } => (creds.clone(), None),
            Source::Instance { endpoint } => self.fetch_instance(endpoint)?,
            Source::Container {
                url,
                token,
                token_file,
            } => {
                let token = match (token, token_file) {
                    (_, Some(f)) => Some(
                        std::fs::read_to_string(f)
                            .map_err(|e| format!("cannot read {}: {e}", f.display()))?
                            .trim()
                            .to_string(),
                    ),
                    (t, None) => t.clone(),
                };
                let mut req = self.agent.get(url);
                if let Some(t) = &token {
                    req = req.header("authorization", t);
                }
                from_json(&self.body(req.call())?)?
            }
            Source::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts,
            } => {
                let token = std::fs::read_to_string(token_file)
                    .map_err(|e| format!("cannot read {}: {e}", token_file.display()))?;
                // POST, as the SDKs do: the token stays out of URLs (and any proxy's log).
                let form: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("Action", "AssumeRoleWithWebIdentity")
                    .append_pair("Version", "2011-06-15")
                    .append_pair("RoleArn", role_arn)
                    .append_pair("RoleSessionName", session_name)
                    .append_pair("WebIdentityToken", token.trim())
                    .finish();
                let body = self.body(
                    self.agent
                        .post(sts)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .send(form.as_bytes()),
                )?;
                let field =
                    |n: &str| xml_field(&body, n).ok_or(format!("STS answered without {n}"));
                let expires = field("Expiration")
                    .ok()
                    .and_then(|e| timestamp::parse(&e).ok());
                (
                    Credentials::new_with_token(
                        field("AccessKeyId")?,
                        field("SecretAccessKey")?,
                        field("SessionToken")?,
                    ),
                    expires,
                )
            }
            Source::Process { command, .. } => from_json(&String::from_utf8_lossy(&run_process(
                command,
                PROCESS_LIMIT,
            )?))?,
        };
        Ok(Current {
            creds,
            fetched_ms: now,
            expires_ms,
            said_stale: false,
        })
    }

    /// IMDSv2: a session token (PUT), the role's name, then its credentials.
    fn fetch_instance(&self, endpoint: &str) -> Result<(Credentials, Option<u64>), String> {
        let base = endpoint.trim_end_matches('/');
        let token = self.body(
            self.agent
                .put(&format!("{base}/latest/api/token"))
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                .send_empty(),
        )?;
        let token = token.trim();
        let path = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = self.body(
            self.agent
                .get(&path)
                .header("x-aws-ec2-metadata-token", token)
                .call(),
        )?;
        let role = roles
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or("the instance has no IAM role")?;
        from_json(
            &self.body(
                self.agent
                    .get(&format!("{path}{role}"))
                    .header("x-aws-ec2-metadata-token", token)
                    .call(),
            )?,
        )
    }

    fn body(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, String> {
        let mut r = r.map_err(|e| net_error(e).to_string())?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status().as_u16()));
        }
        r.body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| net_error(e).to_string())
    }
}

/// `{"AccessKeyId": ..., "SecretAccessKey": ..., "Token" or "SessionToken": ...,
/// "Expiration": ...}`, as the metadata services and credential_process answer.
fn from_json(body: &str) -> Result<(Credentials, Option<u64>), String> {
    let field = |n: &str| json_field(body, n);
    let (Some(key), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err("the answer holds no AccessKeyId and SecretAccessKey".into());
    };
    let expires = field("Expiration").and_then(|e| timestamp::parse(&e).ok());
    let creds = match field("Token").or_else(|| field("SessionToken")) {
        Some(t) => Credentials::new_with_token(key, secret, t),
        None => Credentials::new(key, secret),
    };
    Ok((creds, expires))
}

/// The string value of `"name"` in a flat JSON object (escapes decoded), if any.
pub fn json_field(body: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    let at = body.find(&key)? + key.len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_credential_process_is_killed_with_what_it_started() {
        let started = std::time::Instant::now();
        let e = run_process("sleep 30 & sleep 30", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("killed after"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = run_process("printf '{\"AccessKeyId\": \"A\"}'", Duration::from_secs(5));
        assert_eq!(out.unwrap(), br#"{"AccessKeyId": "A"}"#);
        assert!(run_process("exit 3", Duration::from_secs(5)).is_err());
    }

    #[test]
    fn json_fields_of_metadata_answers() {
        let body = r#"{ "Code" : "Success", "AccessKeyId":"AKIA\u0041", "SecretAccessKey": "s\/e\"c",
            "Token": "t", "Expiration": "2026-11-28T12:00:00Z" }"#;
        assert_eq!(json_field(body, "AccessKeyId").as_deref(), Some("AKIAA"));
        assert_eq!(
            json_field(body, "SecretAccessKey").as_deref(),
            Some("s/e\"c")
        );
        assert_eq!(json_field(body, "Missing"), None);
        let (_, expires) = from_json(body).unwrap();
        assert_eq!(expires, timestamp::parse("2026-11-28T12:00:00Z").ok());
        assert!(from_json("{}").is_err());
        assert_eq!(json_field(r#"{"a":"unterminated"#, "a"), None);
    }
}
