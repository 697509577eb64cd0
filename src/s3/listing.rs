//! ListObjectsV2: the requests, page by page, and their answers parsed (the parsing is pure,
//! and fuzzed in src/props.rs, because answers are outside data).

use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response, S3Action};

use super::error::{check, net_error};
use super::{PRESIGN_FOR, S3Error, Store, retry};

impl Store {
    /// Every page of a listing (each retried a few times), parsed by `parse`.
    pub(super) fn all_pages<T>(
        &self,
        prefix: &str,
        folders: bool,
        parse: fn(&str) -> Page<T>,
    ) -> Result<Vec<T>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry(4, || {
                parse(&self.list_page(prefix, folders, token.as_deref())?)
            })?;
            out.extend(page.0);
            match page.1 {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// One page of a listing, as the store's XML; with `folders`, of the folders below `prefix`.
    fn list_page(
        &self,
        prefix: &str,
        folders: bool,
        token: Option<&str>,
    ) -> Result<String, S3Error> {
        let creds = self.credentials.get()?;
        let mut action = ListObjectsV2::new(&self.bucket, Some(&creds));
        action.with_prefix(prefix);
        if folders {
            action.with_delimiter("/");
        }
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        self.get_listing(&action.sign(PRESIGN_FOR))
    }

    /// A signed GET of the bucket (a listing, or another bucket subresource), as text.
    pub(super) fn get_listing(&self, url: &url::Url) -> Result<String, S3Error> {
        self.sending(0);
        let resp = self.agent.get(url.as_str()).call().map_err(net_error)?;
        let mut resp = check(resp)?;
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(net_error)
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// One page of a listing, parsed: its entries and the token for the next page.
pub type Page<T> = Result<(Vec<T>, Option<String>), S3Error>;

/// One page of a listing: its keys and the token for the next page.
pub fn parse_listing_page(body: &str) -> Page<Listed> {
    let parsed = parse(body)?;
    let items = parsed
        .contents
        .into_iter()
        .map(|c| Listed {
            key: c.key,
            size: c.size.unwrap_or(0),
        })
        .collect();
    Ok((items, parsed.next_continuation_token))
}

/// One page of a listing with a delimiter: the folders (common prefixes) it names, and the token
/// for the next page.
pub fn parse_folder_page(body: &str) -> Page<String> {
    let parsed = parse(body)?;
    let folders = parsed
        .common_prefixes
        .into_iter()
        .map(|c| c.prefix)
        .collect();
    Ok((folders, parsed.next_continuation_token))
}

fn parse(body: &str) -> Result<ListObjectsV2Response, S3Error> {
    ListObjectsV2::parse_response(body).map_err(|_| {
        S3Error::NotS3(if body.to_ascii_lowercase().contains("<html") {
            "got an HTML page where a bucket listing was expected".into()
        } else {
            "the bucket listing could not be read".into()
        })
    })
}
