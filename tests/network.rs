//! Networks as they are on real VMs: a self-hosted S3 behind a private CA (a TLS endpoint on
//! loopback, socat in front of s3s-fs, with a certificate from a CA this test makes with
//! openssl), trusted through AWS_CA_BUNDLE or SSL_CERT_FILE; and an egress proxy (a small
//! CONNECT proxy this test starts) used through HTTPS_PROXY, and bypassed through NO_PROXY.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=petrify test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// socat terminating TLS on a free port in front of `upstream`.
fn tls_front(dir: &Path, upstream: u16) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ))
        .arg(format!("TCP:127.0.0.1:{upstream}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (scripts/setup installs it)");
    let p = Proc::new(child, "socat");
    wait_for("socat to listen", Duration::from_secs(10), || {
        listening(port)
    });
    (p, port)
}

/// A CONNECT proxy on loopback; counts the tunnels it opened.
fn connect_proxy() -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tunnels = Arc::new(AtomicU32::new(0));
    let count = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap_or(0);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let Ok(up) = TcpStream::connect(&target) else {
                    let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
                let mut up = up;
                let _ = std::io::copy(&mut r, &mut up);
                let _ = up.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    (port, tunnels)
}

fn list(s3: &S3, endpoint: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = s3.petrify();
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("SSL_CERT_FILE")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("NO_PROXY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(["list", "--bucket", BUCKET, "--prefix", "net"])
        .output()
        .unwrap()
}

#[test]
fn a_private_ca_and_an_egress_proxy() {
    let s3 = S3::start();
    let work = Scratch::new("net");
    make_ca(&work.0);
    let (_socat, port) = tls_front(&work.0, s3.port);
    let https = format!("https://127.0.0.1:{port}");
    let ca = work.path("ca.pem");
    let ca = ca.to_str().unwrap();

    // Not trusted by the built-in roots alone: said, and what to do.
    let out = list(&s3, &https, &[]);
    assert_fails(&out, 69, "AWS_CA_BUNDLE");
    // Trusted when the private CA is added, by either variable.
    for var in ["AWS_CA_BUNDLE", "SSL_CERT_FILE"] {
        let out = list(&s3, &https, &[(var, ca)]);
        assert!(out.status.success(), "{var}: {}", text(&out.stderr));
    }
    // A file that holds no certificate is a configuration error.
    let junk = work.path("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = list(&s3, &https, &[("AWS_CA_BUNDLE", junk.to_str().unwrap())]);
    assert_fails(&out, 78, "CA bundle");

    // Through an egress proxy: one tunnel or more; NO_PROXY bypasses it.
    let (proxy_port, tunnels) = connect_proxy();
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let out = list(
        &s3,
        &https,
        &[("AWS_CA_BUNDLE", ca), ("HTTPS_PROXY", &proxy)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let used = tunnels.load(Ordering::SeqCst);
    assert!(used >= 1, "the proxy was not used");
    let out = list(
        &s3,
        &https,
        &[
            ("AWS_CA_BUNDLE", ca),
            ("HTTPS_PROXY", &proxy),
            ("NO_PROXY", "127.0.0.1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        used,
        "NO_PROXY was not honoured"
    );
}
