//! Where the store is and what every write to it carries: endpoint, region and credentials
//! from the options and the environment; storage class, encryption and retention locks,
//! checked; and the words for a store configuration that cannot address its bucket.

use std::path::PathBuf;

use crate::cli::usage_msg;
use crate::error::{Error, Exit, Result};
use crate::s3::{ConfigError, Lock, ServerSide, StoreConfig};

use super::credentials;

/// `--storage-class`, `--sse`, `--sse-kms-key-id`, `--lock-days` and `--lock-mode`, checked.
pub(super) fn server_side(
    (storage_class, sse, kms_key): (Option<String>, Option<String>, Option<String>),
    (lock_days, lock_mode): (Option<String>, Option<String>),
) -> Result<ServerSide> {
    let lock = lock(lock_days, lock_mode)?;
    if let Some(c) = &storage_class {
        let word = |c: &str| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        };
        if !word(c) {
            return Err(usage_msg(format!(
                "--storage-class {c:?}: give a class as the store names it, in capitals \
                 (STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR)"
            )));
        }
        if matches!(c.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
            return Err(usage_msg(format!(
                "--storage-class {c}: objects in it must be restored before every GET, which \
                 makes a recovery wait hours; use GLACIER_IR (instant retrieval)"
            )));
        }
    }
    match sse.as_deref() {
        None | Some("AES256" | "aws:kms" | "aws:kms:dsse") => {}
        Some(other) => {
            return Err(usage_msg(format!(
                "--sse {other:?}: give AES256 or aws:kms"
            )));
        }
    }
    if kms_key.is_some() && !sse.as_deref().is_some_and(|s| s.starts_with("aws:kms")) {
        return Err(usage_msg("--sse-kms-key-id needs --sse aws:kms"));
    }
    Ok(ServerSide {
        storage_class,
        sse,
        sse_kms_key_id: kms_key,
        lock,
    })
}

/// `--lock-days N [--lock-mode governance|compliance]`.
fn lock(days: Option<String>, mode: Option<String>) -> Result<Option<Lock>> {
    let compliance = match mode.as_deref() {
        None | Some("governance") => false,
        Some("compliance") => true,
        Some(other) => {
            return Err(usage_msg(format!(
                "--lock-mode {other:?}: give governance or compliance"
            )));
        }
    };
    let Some(days) = days else {
        return match mode {
            Some(_) => Err(usage_msg("--lock-mode needs --lock-days")),
            None => Ok(None),
        };
    };
    match days.parse::<u32>() {
        Ok(days @ 1..=36_500) => Ok(Some(Lock { compliance, days })),
        _ => Err(usage_msg(format!(
            "--lock-days {days:?}: give a number of days from 1 to 36500"
        ))),
    }
}

/// Resolves endpoint, region and credentials from the options and the environment.
pub(super) fn store_config(
    bucket: &str,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreConfig> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let profile = credentials::profile(&nonempty).map_err(|why| Error::new(Exit::Config, why))?;
    let region = region
        .or_else(|| nonempty("AWS_REGION"))
        .or_else(|| nonempty("AWS_DEFAULT_REGION"))
        .or_else(|| profile.region.clone())
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = endpoint
        .or_else(|| nonempty("AWS_ENDPOINT_URL_S3"))
        .or_else(|| nonempty("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let credentials = credentials::source(&nonempty, &profile, &region)
        .map_err(|why| Error::new(Exit::Config, why))?;
    Ok(StoreConfig {
        server_side: ServerSide::default(),
        endpoint,
        region,
        bucket: bucket.to_string(),
        path_style: path_style.then_some(true),
        credentials,
        ca_bundle: nonempty("AWS_CA_BUNDLE")
            .or_else(|| nonempty("SSL_CERT_FILE"))
            .map(PathBuf::from),
    })
}

/// Words for a store configuration that cannot address its bucket.
pub fn store_error(e: &ConfigError, cfg: &StoreConfig) -> Error {
    let m = match e {
        ConfigError::NotAUrl(why) => {
            format!("--endpoint {:?} is not a URL ({why})", cfg.endpoint)
        }
        ConfigError::UnsupportedScheme => "--endpoint must start with https:// or http://".into(),
        ConfigError::MissingHost => "--endpoint has no host".into(),
        ConfigError::BucketNotAddressable => format!(
            "bucket {:?} cannot be addressed at this endpoint (try --path-style)",
            cfg.bucket
        ),
        ConfigError::CaBundle(why) => {
            return Error::new(
                Exit::Config,
                format!("{why} (AWS_CA_BUNDLE or SSL_CERT_FILE)"),
            );
        }
        ConfigError::NoCredentials(why) => {
            return Error::new(
                Exit::Config,
                format!("no credentials from {}: {why}", cfg.credentials.describe()),
            );
        }
    };
    usage_msg(m)
}
