//! The `x-amz-checksum-crc32` header: its value, and how a store says it does not take it.

use super::S3Error;

/// The header that carries an upload's CRC-32 (base64 of its 4 big-endian bytes).
pub(super) const CHECKSUM_HEADER: &str = "x-amz-checksum-crc32";

/// Whether an error says the store does not take checksum headers (as opposed to a checksum
/// that did not match: BadDigest, which a retry mends).
pub(super) fn refuses_checksums(e: &S3Error) -> bool {
    let S3Error::Status {
        status,
        code,
        message,
        ..
    } = e
    else {
        return false;
    };
    let about_checksums = message
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().contains("checksum"));
    matches!(status, 400 | 501)
        && matches!(
            code.as_deref(),
            Some("InvalidArgument" | "InvalidRequest" | "NotImplemented")
        )
        && about_checksums
}

/// The headers that send `crc` along with a body: the checksum, and the algorithm as the AWS
/// SDKs name it (`x-amz-sdk-checksum-algorithm`), which a bucket with Object Lock asks for
/// (or Content-MD5) before it takes an object with a retention.
pub(super) fn checksum_headers(crc: u32) -> [(&'static str, String); 2] {
    [
        (CHECKSUM_HEADER, base64_4(crc.to_be_bytes())),
        ("x-amz-sdk-checksum-algorithm", "CRC32".to_string()),
    ]
}

/// Standard base64 of 4 bytes (8 characters, padded): all that checksum headers need.
pub(super) fn base64_4(b: [u8; 4]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = u32::from_be_bytes(b);
    let mut out = String::with_capacity(8);
    for shift in [26, 20, 14, 8, 2] {
        out.push(ABC[((n >> shift) & 63) as usize] as char);
    }
    out.push(ABC[((n << 4) & 63) as usize] as char);
    out.push_str("==");
    out
}

/// A CRC-32 as `x-amz-checksum-crc32` carries it (base64 of its 4 big-endian bytes).
pub fn crc32_base64(crc: u32) -> String {
    base64_4(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_headers_are_base64_of_the_big_endian_crc() {
        // CRC-32 of "hello", as s3s-fs and AWS print it.
        assert_eq!(base64_4(0x3610_a686_u32.to_be_bytes()), "NhCmhg==");
        assert_eq!(base64_4([0, 0, 0, 0]), "AAAAAA==");
        assert_eq!(base64_4([255; 4]), "/////w==");
    }

    #[test]
    fn only_a_refusal_of_the_header_turns_checksums_off() {
        let e = |status, code: &str, message: &str| S3Error::Status {
            status,
            code: Some(code.into()),
            message: Some(message.into()),
            skew_s: None,
            region: None,
        };
        assert!(refuses_checksums(&e(
            400,
            "InvalidArgument",
            "x-amz-checksum-crc32 is not supported"
        )));
        assert!(refuses_checksums(&e(501, "NotImplemented", "Checksums")));
        // A mismatch is damage in transit: retried with the header.
        assert!(!refuses_checksums(&e(
            400,
            "BadDigest",
            "checksum mismatch"
        )));
        assert!(!refuses_checksums(&e(
            400,
            "InvalidArgument",
            "bad part number"
        )));
        assert!(!refuses_checksums(&S3Error::Network("reset".into())));
    }
}
