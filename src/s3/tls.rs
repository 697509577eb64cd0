//! Which TLS servers are trusted: Mozilla's roots, built in, plus the certificates of a private
//! CA named by `AWS_CA_BUNDLE` (the AWS tools' variable) or `SSL_CERT_FILE`, for a self-hosted
//! S3 (MinIO, Garage, Ceph) behind it.

use std::path::Path;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The TLS configuration for every agent; `Err` says what is wrong with the bundle.
pub fn config(ca_bundle: Option<&Path>) -> Result<TlsConfig, String> {
    let Some(path) = ca_bundle else {
        return Ok(TlsConfig::default());
    };
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
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
