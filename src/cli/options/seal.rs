//! The options that say how persist seals what it stores (compression, encryption to age
//! recipients) and what readers open encrypted objects with. Listed in [`super::OPTIONS`] like
//! the others; see [`crate::seal`].

use super::{BASE, Opt, one, path, text};
use crate::cli::CommandName::{Persist, Recover, Status, Verify};

pub(super) const COMPRESS: Opt = Opt {
    name: "compress",
    value: Some("HOW"),
    uses: &[one(
        &[Persist],
        "zstd, zstd:LEVEL (1-19) or off: how each object is compressed\n\
         (points stay one ranged GET; `zstd -d` reads an object)",
    )],
    man: include_str!("compress.mdoc"),
    default: Some(|| format!("zstd:{}", crate::seal::DEFAULT_LEVEL)),
    set: |a, v| {
        a.compress = Some(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const ENCRYPT_TO: Opt = Opt {
    name: "encrypt-to",
    value: Some("RECIPIENT"),
    uses: &[one(
        &[Persist],
        "encrypt every object to this age X25519 recipient (age1...);\n\
         repeat it for more; only their identities can recover",
    )],
    man: include_str!("encrypt-to.mdoc"),
    set: |a, v| {
        a.encrypt_to.push(text(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const ENCRYPT_TO_FILE: Opt = Opt {
    name: "encrypt-to-file",
    value: Some("FILE"),
    uses: &[one(
        &[Persist],
        "encrypt to every recipient in FILE (one age1... a line, as age -R reads)",
    )],
    man: r#"persist: encrypt to every recipient listed in
.Ar FILE ,
one
.Li age1...
a line,
.Ql #
comments and blank lines ignored (what
.Ic age \-R
reads); with
.Fl \-encrypt\-to ,
to all of them."#,
    set: |a, v| {
        a.encrypt_to_file = Some(path(v)?);
        Ok(())
    },
    ..BASE
};

pub(super) const IDENTITY: Opt = Opt {
    name: "identity",
    value: Some("FILE"),
    uses: &[one(
        &[Recover, Verify, Status],
        "the age identity file (AGE-SECRET-KEY-1...) that opens encrypted objects",
    )],
    man: include_str!("identity.mdoc"),
    set: |a, v| {
        a.identity = Some(path(v)?);
        Ok(())
    },
    ..BASE
};
