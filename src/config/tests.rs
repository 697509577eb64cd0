//! Options into requests: defaults, the environment, and every kind of bad value.

use super::*;
use crate::cli::{Parsed, parse};
use std::ffi::OsString;

fn env(k: &str) -> Option<String> {
    match k {
        "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
        "AWS_DEFAULT_REGION" => Some("eu-west-3".to_string()),
        "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
        _ => None,
    }
}

fn run(args: &[&str]) -> Result<Command> {
    let parsed = parse("petrify", args.iter().map(OsString::from).collect())?;
    let Parsed::Run(c, a) = parsed else {
        panic!("{parsed:?}")
    };
    resolve(c, *a, env)
}

#[test]
fn defaults_and_environment_are_resolved_here() {
    let c = run(&["persist", "--bucket", "b", "--prefix", "p", "--file", "f"]).unwrap();
    let (Run::Persist(p), s) = (c.run, c.store) else {
        panic!()
    };
    assert_eq!(p.interval, DEFAULT_INTERVAL);
    assert_eq!(p.max_object, crate::tail::upload::DEFAULT_MAX_OBJECT);
    assert_eq!((s.region.as_str(), s.bucket.as_str()), ("eu-west-3", "b"));
    assert_eq!(s.endpoint, "http://127.0.0.1:9000");
    assert_eq!(s.path_style, None);

    let Run::Recover(r) = run(&[
        "recover",
        "--bucket",
        "b",
        "--prefix",
        "",
        "--file",
        "f",
        "--at-timestamp",
        "1764104645.5",
        "--force",
    ])
    .unwrap()
    .run
    else {
        panic!()
    };
    assert_eq!(r.at_ms, Some(1_764_104_645_500));
    assert!(r.force);

    let cfg = store_config("b", None, None, false, |k| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("x".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cfg.endpoint, "https://s3.us-east-1.amazonaws.com");
    // Nothing configured: the instance metadata service is the last resort (asked only
    // when the store is made), unless it is disabled.
    let imds = store_config("b", None, None, false, |_| None).unwrap();
    assert!(matches!(
        imds.credentials,
        crate::s3::CredentialSource::Instance { .. }
    ));
    let none = store_config("b", None, None, false, |k| {
        (k == "AWS_EC2_METADATA_DISABLED").then(|| "true".into())
    });
    assert_eq!(none.unwrap_err().exit, Exit::Config);
    assert_eq!(
        max_object(|_| Some("5".into())).unwrap_err().exit,
        Exit::Config
    );
}

#[test]
fn bad_values_are_usage_errors_naming_the_option() {
    let persist = ["persist", "--bucket", "b", "--prefix", "p", "--file", "f"];
    let recover = ["recover", "--bucket", "b", "--prefix", "p", "--file", "f"];
    let with = |base: &[&'static str], extra: &[&'static str]| [base, extra].concat();
    for (args, needle) in [
        (vec!["persist", "--prefix", "p", "--file", "f"], "--bucket"),
        (vec!["persist", "--bucket", "b", "--file", "f"], "--prefix"),
        (vec!["persist", "--bucket", "b", "--prefix", "p"], "--file"),
        (with(&persist, &["--interval", "0"]), "--interval"),
        (with(&persist, &["--interval", "x"]), "--interval"),
        (with(&persist, &["--interval", "NaN"]), "--interval"),
        (
            with(&recover, &["--at-timestamp", "soon"]),
            "--at-timestamp",
        ),
        (with(&recover, &["--parallel", "0"]), "--parallel"),
        (with(&recover, &["--parallel", "many"]), "--parallel"),
        (
            vec!["recover", "--bucket", "", "--prefix", "p", "--file", "f"],
            "--bucket",
        ),
        (vec!["list", "--bucket", "b", "--prefix", "a+b"], "--prefix"),
        (vec!["list", "--bucket", "b", "--prefix", "50%"], "--prefix"),
        (
            vec!["list", "--bucket", "b", "--prefix", "a/../b"],
            "--prefix",
        ),
        (
            vec!["list", "--bucket", "b", "--prefix", "tab\there"],
            "--prefix",
        ),
        (
            vec!["list", "--bucket", "b", "--prefix", "a//b"],
            "empty segment",
        ),
        (
            vec!["list", "--bucket", "b", "--prefix", "a/b//"],
            "empty segment",
        ),
        (
            vec!["list", "--bucket", "b", "--prefix", "/a/b"],
            "starts with /",
        ),
        (
            vec!["list", "--bucket", "b", "--prefix", "/"],
            "starts with /",
        ),
    ] {
        let e = run(&args).unwrap_err();
        assert_eq!(e.exit, Exit::Usage, "{args:?}");
        assert!(e.message.contains(needle), "{args:?}: {}", e.message);
    }
}

#[test]
fn server_side_options_are_checked() {
    let ok = |c: Option<&str>, s: Option<&str>, k: Option<&str>| {
        server_side(
            (c.map(Into::into), s.map(Into::into), k.map(Into::into)),
            (None, None),
        )
    };
    assert!(ok(Some("STANDARD_IA"), Some("aws:kms"), Some("alias/x")).is_ok());
    assert!(ok(None, Some("AES256"), None).is_ok());
    for (c, s, k) in [
        (Some("standard_ia"), None, None),
        (Some("GLACIER"), None, None),
        (Some("DEEP_ARCHIVE"), None, None),
        (None, Some("kms"), None),
        (None, Some("AES256"), Some("alias/x")),
        (None, None, Some("alias/x")),
    ] {
        let e = ok(c, s, k).unwrap_err();
        assert_eq!(e.exit, Exit::Usage, "{c:?} {s:?} {k:?}");
    }
}

#[test]
fn lock_options_are_checked() {
    let lock = |d: Option<&str>, m: Option<&str>| {
        server_side((None, None, None), (d.map(Into::into), m.map(Into::into))).map(|s| s.lock)
    };
    assert_eq!(lock(None, None).unwrap(), None);
    let l = lock(Some("30"), None).unwrap().unwrap();
    assert_eq!((l.days, l.compliance), (30, false));
    let l = lock(Some("1"), Some("compliance")).unwrap().unwrap();
    assert_eq!((l.days, l.compliance), (1, true));
    for (d, m) in [
        (Some("0"), None),
        (Some("36501"), None),
        (Some("-1"), None),
        (Some("1.5"), None),
        (None, Some("governance")),
        (Some("7"), Some("legal")),
    ] {
        let e = lock(d, m).unwrap_err();
        assert_eq!(e.exit, Exit::Usage, "{d:?} {m:?}");
    }
}
