//! ListObjectsV2 answers, parsed: pure, and fuzzed (src/props.rs), because they are outside data.

use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response};

use super::S3Error;

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
