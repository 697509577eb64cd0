//! The options that say where the store is and what every write to it carries: endpoint,
//! region, addressing, storage class, encryption, retention locks, and the time to read the
//! bucket as of. Listed in [`super::OPTIONS`] like the others.

use super::{ALL, BASE, Opt, one, text};
use crate::cli::CommandName::{self, List, Persist, Prune, Recover, Status, Verify};

pub(super) const STORAGE_CLASS: Opt = Opt {
    name: "storage-class",
    value: Some("CLASS"),
    uses: &[one(
        &[Persist, CommandName::Doctor],
        "the S3 storage class of every object written (STANDARD_IA,\n\
         INTELLIGENT_TIERING, GLACIER_IR, ...; the store's default otherwise)",
    )],
    man: include_str!("storage-class.mdoc"),
    set: |a, v| {
        a.storage_class = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const SSE: Opt = Opt {
    name: "sse",
    value: Some("KIND"),
    uses: &[one(
        &[Persist, Prune, CommandName::Doctor],
        "server-side encryption of every object written: AES256 or aws:kms",
    )],
    man: include_str!("sse.mdoc"),
    set: |a, v| {
        a.sse = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const SSE_KMS_KEY_ID: Opt = Opt {
    name: "sse-kms-key-id",
    value: Some("ID"),
    uses: &[one(
        &[Persist, Prune, CommandName::Doctor],
        "the KMS key for --sse aws:kms (the bucket's default key otherwise)",
    )],
    man: r#"The KMS key (id, ARN or alias) objects are encrypted with under
.Fl \-sse Li aws:kms ;
without it, the store's default key for the bucket."#,
    set: |a, v| {
        a.sse_kms_key_id = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const ENDPOINT: Opt = Opt {
    name: "endpoint",
    value: Some("URL"),
    uses: &[one(
        ALL,
        "S3 endpoint (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL,\n\
         else https://s3.REGION.amazonaws.com)",
    )],
    man: include_str!("endpoint.mdoc"),
    set: |a, v| {
        a.endpoint = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const REGION: Opt = Opt {
    name: "region",
    value: Some("R"),
    uses: &[one(
        ALL,
        "(default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1)",
    )],
    man: "The region used for signing.",
    set: |a, v| {
        a.region = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const PATH_STYLE: Opt = Opt {
    name: "path-style",
    value: None,
    uses: &[one(
        ALL,
        "address the bucket as ENDPOINT/BUCKET (automatic for IPs and localhost)",
    )],
    man: r#"Address the bucket as
.Ar URL Ns / Ns Ar B
rather than as a host name; automatic when the endpoint's host is an IP address or
localhost."#,
    set: |a, _| {
        a.path_style = true;
        Ok(())
    },
    ..BASE
};

pub(super) const LOCK_DAYS: Opt = Opt {
    name: "lock-days",
    value: Some("N"),
    uses: &[one(
        &[Persist],
        "lock every object written for N days (S3 Object Lock retention)",
    )],
    man: include_str!("lock-days.mdoc"),
    set: |a, v| {
        a.lock_days = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const LOCK_MODE: Opt = Opt {
    name: "lock-mode",
    value: Some("MODE"),
    uses: &[one(
        &[Persist],
        "governance (the default) or compliance, with --lock-days",
    )],
    man: r#"The Object Lock mode of
.Fl \-lock\-days :
.Li governance
(a user granted
.Li s3:BypassGovernanceRetention
can still delete a locked version) or
.Li compliance
(nobody can, the account's root included, until the date; a mistake cannot be undone).
Default: governance."#,
    set: |a, v| {
        a.lock_mode = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const BUCKET_TIME: Opt = Opt {
    name: "bucket-time",
    value: Some("T"),
    uses: &[one(
        &[Recover, List, Verify, Status],
        "read the bucket as it was at T (RFC 3339 or Unix time; needs versioning)",
    )],
    man: include_str!("bucket-time.mdoc"),
    set: |a, v| {
        a.bucket_time = Some(text(v)?);
        Ok(())
    },
    ..BASE
};
