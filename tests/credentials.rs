//! Credentials from each source of the chain, against small fake services on loopback that the
//! tests start (instance metadata with IMDSv2 tokens and expiring credentials, a container
//! endpoint, STS), and from the shared files (keys, credential_process). Never the real
//! metadata address.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A fake HTTP service on loopback: `answer` gives (status, body) for each request; every
/// request is kept for the test to look at. One request per connection.
fn fake(answer: impl Fn(&Seen) -> (u16, String) + Send + 'static) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(&conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut it = line.split_whitespace();
            let (method, path) = (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            );
            let mut headers = Vec::new();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let s = Seen {
                method,
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let (status, body) = answer(&s);
            log.lock().unwrap().push(s);
            let _ = (&conn).write_all(
                format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

fn creds_json(token: &str, expires_in_s: u64) -> String {
    let exp = (now_ms_f() / 1000.0) as u64 + expires_in_s;
    format!(
        "{{\"Code\":\"Success\",\"AccessKeyId\":\"{ACCESS_KEY}\",\"SecretAccessKey\":\"{SECRET_KEY}\",\
         \"Token\":\"{token}\",\"Expiration\":\"{exp}\"}}"
    )
}

/// A petrify command with no credentials of its own: the chain must find them.
fn keyless(s3: &S3) -> std::process::Command {
    let mut c = s3.petrify();
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("RUST_LOG", "info");
    c
}

#[test]
fn instance_metadata_imdsv2_with_credentials_that_expire_during_a_run() {
    let s3 = S3::start();
    let work = Scratch::new("imds");
    let fetches = Arc::new(Mutex::new(0u32));
    let n = fetches.clone();
    let (port, seen) = fake(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token")
            if r.header("x-aws-ec2-metadata-token-ttl-seconds").is_some() =>
        {
            (200, "session-token-1".into())
        }
        (_, p) if r.header("x-aws-ec2-metadata-token") != Some("session-token-1") => {
            (401, format!("no token for {p}"))
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "petrify-role\n".into()),
        ("GET", "/latest/meta-data/iam/security-credentials/petrify-role") => {
            let mut n = n.lock().unwrap();
            *n += 1;
            // Valid for 4 s: fetched again at half their life, well before they expire.
            (200, creds_json(&format!("instance-session-{n}"), 4))
        }
        _ => (404, String::new()),
    });
    let imds = format!("http://127.0.0.1:{port}");
    let file = work.path("log");
    std::fs::write(&file, b"start\n").unwrap();
    let mut cmd = keyless(&s3);
    cmd.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
        .args([
            "persist",
            "--bucket",
            BUCKET,
            "--prefix",
            "i",
            "--interval",
            "0.05",
        ])
        .arg("--file")
        .arg(&file);
    let p = spawn(cmd);
    let started = Instant::now();
    let mut content = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(7) {
        i += 1;
        content = s3.append_and_wait("i", &file, format!("line {i}\n").as_bytes());
    }
    let out = p.terminate(T);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("credentials from the EC2 instance metadata service"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("failed"), "{}", out.stderr);
    assert!(
        *fetches.lock().unwrap() >= 3,
        "refreshed: {}",
        fetches.lock().unwrap()
    );
    assert!(!out.stderr.contains(SECRET_KEY) && !out.stderr.contains("instance-session"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.path.starts_with("/latest/"))
    );

    let mut cmd = keyless(&s3);
    let restored = work.path("restored");
    let out = cmd
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
        .args(["recover", "--bucket", BUCKET, "--prefix", "i"])
        .arg("--file")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&restored).unwrap(), content);
}

#[test]
fn an_absent_or_silent_metadata_service_costs_seconds_not_a_hang() {
    let s3 = S3::start();
    // Nothing listens: refused at once.
    let closed = format!("http://127.0.0.1:{}", free_port());
    // Accepts, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    for endpoint in [closed, silent_url] {
        let started = Instant::now();
        let out = keyless(&s3)
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
            .args(["list", "--bucket", BUCKET, "--prefix", "x"])
            .output()
            .unwrap();
        assert_fails(
            &out,
            78,
            "no credentials from the EC2 instance metadata service",
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[test]
fn container_endpoint_with_a_token_file() {
    let s3 = S3::start();
    let work = Scratch::new("container");
    let (port, seen) = fake(|r| match r.header("authorization") {
        Some("Bearer secret-auth") if r.path == "/v2/credentials/abc" => {
            (200, creds_json("container-session", 3600))
        }
        _ => (403, "no".into()),
    });
    let token_file = work.path("token");
    std::fs::write(&token_file, "Bearer secret-auth\n").unwrap();
    let out = keyless(&s3)
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{port}/v2/credentials/abc"),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .args(["list", "--bucket", BUCKET, "--prefix", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("credentials from the container credentials endpoint"));
    assert!(!text(&out.stderr).contains("secret-auth"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn web_identity_through_sts() {
    let s3 = S3::start();
    let work = Scratch::new("sts");
    let (port, seen) = fake(|r| {
        // A POSTed form: the token never in the URL.
        let ok = r.method == "POST"
            && !r.path.contains("the.jwt.token")
            && r.body.contains("Action=AssumeRoleWithWebIdentity")
            && r.body
                .contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123%3Arole%2Fpetrify")
            && r.body.contains("WebIdentityToken=the.jwt.token");
        match ok {
            true => (
                200,
                format!(
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
                     <Credentials><AccessKeyId>{ACCESS_KEY}</AccessKeyId>\
                     <SecretAccessKey>{SECRET_KEY}</SecretAccessKey>\
                     <SessionToken>sts-session</SessionToken>\
                     <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                     </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                ),
            ),
            false => (
                400,
                "<Error><Code>InvalidIdentityToken</Code></Error>".into(),
            ),
        }
    });
    let token = work.path("token");
    std::fs::write(&token, "the.jwt.token\n").unwrap();
    let out = keyless(&s3)
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123:role/petrify")
        .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{port}/"))
        .args(["list", "--bucket", BUCKET, "--prefix", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("web identity, role arn:aws:iam::123:role/petrify"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn shared_files_profile_keys_region_and_credential_process() {
    let s3 = S3::start();
    let work = Scratch::new("profiles");
    let creds = work.path("credentials");
    let config = work.path("config");
    std::fs::write(
        &creds,
        format!("[ops]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[profile ops]\nregion = eu-west-1\n\n[profile tool]\ncredential_process = printf \
             '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \
             \"{SECRET_KEY}\"}}'\n"
        ),
    )
    .unwrap();
    for (profile, said) in [
        ("ops", "profile ops in"),
        ("tool", "the credential_process of profile tool"),
    ] {
        let out = keyless(&s3)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", profile)
            .env("RUST_LOG", "debug")
            .args(["list", "--bucket", BUCKET, "--prefix", "x"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{profile}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(said), "{}", text(&out.stderr));
    }
    let out = keyless(&s3)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_PROFILE", "nope")
        .args(["list", "--bucket", BUCKET, "--prefix", "x"])
        .output()
        .unwrap();
    assert_fails(&out, 78, "AWS_PROFILE=nope");
}
