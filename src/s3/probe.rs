//! Single requests `petrify doctor` sends to learn what the store does: the answer's status,
//! S3's code, the region the store names and its clock, where the [`super::ObjectStore`] calls
//! hide them. Nothing here retries or adapts: each probe is one request, said as it went.

use rusty_s3::actions::{HeadBucket, S3Action};

use super::error::net_error;
use super::{CHECKSUM_HEADER, PRESIGN_FOR, S3Error, Store};

/// What one probe request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// S3's `<Code>`, for an error.
    pub code: Option<String>,
    /// `x-amz-bucket-region`, when the store names one.
    pub region: Option<String>,
    /// The store's clock (`Date`), in Unix seconds.
    pub date_s: Option<i64>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn answer(resp: Result<ureq::http::Response<ureq::Body>, S3Error>) -> Result<Answer, S3Error> {
    let resp = resp?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (region, date) = (header("x-amz-bucket-region"), header("date"));
    let status = resp.status().as_u16();
    let code = match super::error::check(resp) {
        Ok(_) => None,
        Err(S3Error::Status { code, .. }) => code,
        Err(e) => return Err(e),
    };
    Ok(Answer {
        status,
        code,
        region,
        date_s: date.as_deref().and_then(crate::timestamp::parse_http_date),
    })
}

impl Store {
    /// HEAD of the bucket: whether it is there, in which region, and the store's clock.
    pub fn probe_bucket(&self) -> Result<Answer, S3Error> {
        let creds = self.credentials.get()?;
        let url = HeadBucket::new(&self.bucket, Some(&creds)).sign(PRESIGN_FOR);
        answer(self.agent.head(url.as_str()).call().map_err(net_error))
    }

    /// A PUT of `bytes` to `key` carrying `checksum` as `x-amz-checksum-crc32` (base64, as
    /// given: a wrong one on purpose too), and the server-side options persist would send.
    pub fn probe_put(&self, key: &str, bytes: &[u8], checksum: &str) -> Result<Answer, S3Error> {
        let creds = self.credentials.get()?;
        let action = self.bucket.put_object(Some(&creds), key);
        let mut headers = self.server_side.headers(true);
        headers.push((CHECKSUM_HEADER, checksum.to_string()));
        let request = self.put_request(action, bytes.len() as u64, &headers);
        answer(request.send(bytes).map_err(net_error))
    }

    /// One DeleteObjects request, with no fallback to single deletes.
    pub fn probe_delete_batch(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        self.delete_batch(keys)
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        self.bucket.region()
    }

    /// The access key id in use, shortened for a message (`AKIA…WXYZ`), and where the
    /// credentials came from.
    pub fn probe_identity(&self) -> Result<(String, String), S3Error> {
        let creds = self.credentials.get()?;
        // By characters: a key id from the environment is the operator's text, not ASCII
        // by promise.
        let key: Vec<char> = creds.key().chars().collect();
        let short = match key.len() {
            n if n > 8 => format!(
                "{}…{}",
                key[..4].iter().collect::<String>(),
                key[n - 4..].iter().collect::<String>()
            ),
            _ => "…".to_string(),
        };
        Ok((self.credentials.source().describe(), short))
    }
}
