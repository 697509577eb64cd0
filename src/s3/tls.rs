//! Which TLS servers are trusted: Mozilla's roots, built in, plus the certificates of a private
//! CA named by `AWS_CA_BUNDLE` (the AWS tools' variable) or `SSL_CERT_FILE`, for a self-hosted
//! S3 (MinIO, Garage, Ceph) behind it.

use std::path::Path;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Mozilla's roots, as certificates.
fn mozilla() -> Vec<Certificate<'static>> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect()
}

/// The roots every agent trusts when no private CA is named. Always explicit: ureq's own
/// default (`RootCerts::WebPki`) is compiled out with its copy of the roots, and would panic.
pub fn built_in() -> TlsConfig {
    TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&mozilla()))
        .build()
}

/// The TLS configuration for every agent; `Err` says what is wrong with the bundle.
pub fn config(ca_bundle: Option<&Path>) -> Result<TlsConfig, String> {
    let Some(path) = ca_bundle else {
        return Ok(built_in());
    };
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
    let mut certs = mozilla();
    let built_in = certs.len();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "the CA bundle {} is not PEM certificates: {e}",
                    path.display()
                ));
            }
        }
    }
    if certs.len() == built_in {
        return Err(format!(
            "the CA bundle {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ureq's default roots are compiled out (and panic when used): every configuration names
    /// its roots.
    #[test]
    fn every_configuration_names_its_roots() {
        for c in [built_in(), config(None).unwrap()] {
            assert!(
                matches!(c.root_certs(), RootCerts::Specific(certs) if certs.len() > 100),
                "{:?}",
                c.root_certs()
            );
        }
    }
}
