//! The bucket as it stood at a time, on a bucket that keeps versions (`--bucket-time`):
//! ListObjectVersions gives every version and delete marker of every key with its time; at
//! time T a key is its newest version written at or before T, unless its newest entry by then
//! is a delete marker. [`AsOf`] is an [`ObjectStore`] that lists and reads that bucket (each
//! GET names the version), so that every reader plans, checks and rebuilds on it exactly as
//! on the plain listing. It writes nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use rusty_s3::actions::{ListObjectsV2, S3Action};

use super::error::xml_field;
use super::{Listed, ObjectBody, ObjectStore, PRESIGN_FOR, Piece, S3Error, Store, retry};

/// One entry of a version listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub version: String,
    pub modified_ms: u64,
    pub size: u64,
    /// A delete marker, not a version.
    pub marker: bool,
}

/// Where the next page of a version listing starts (key marker, version id marker).
type Next = Option<(String, String)>;

/// One page of ListObjectVersions, parsed: its entries in the store's order (by key, each
/// key's newest first), and where the next page starts.
pub fn parse_versions_page(body: &str) -> Result<(Vec<Entry>, Next), S3Error> {
    if !body.contains("<ListVersionsResult") {
        return Err(S3Error::NotS3(
            "the answer to ListObjectVersions could not be read".into(),
        ));
    }
    let mut entries = Vec::new();
    let mut rest = body;
    loop {
        let v = rest.find("<Version>").map(|i| (i, false));
        let m = rest.find("<DeleteMarker>").map(|i| (i, true));
        let Some((at, marker)) = [v, m].into_iter().flatten().min() else {
            break;
        };
        let close = if marker {
            "</DeleteMarker>"
        } else {
            "</Version>"
        };
        let Some(len) = rest[at..].find(close) else {
            break;
        };
        let item = &rest[at..at + len];
        rest = &rest[at + len + close.len()..];
        let bad = || S3Error::NotS3("a version listing entry could not be read".into());
        let key = xml_field(item, "Key").ok_or_else(bad)?;
        let version = xml_field(item, "VersionId").ok_or_else(bad)?;
        let modified_ms = xml_field(item, "LastModified")
            .and_then(|t| crate::timestamp::parse(&t).ok())
            .ok_or_else(bad)?;
        let size = match marker {
            true => 0,
            false => xml_field(item, "Size")
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?,
        };
        entries.push(Entry {
            key,
            version,
            modified_ms,
            size,
            marker,
        });
    }
    let truncated = xml_field(body, "IsTruncated").as_deref() == Some("true");
    let next = match truncated {
        false => None,
        true => Some((
            xml_field(body, "NextKeyMarker").unwrap_or_default(),
            xml_field(body, "NextVersionIdMarker").unwrap_or_default(),
        )),
    };
    Ok((entries, next))
}

/// The objects as they stood at `at_ms`: each key's newest entry written by then, if it is a
/// version. Pure.
pub fn as_of(entries: &[Entry], at_ms: u64) -> Vec<(Listed, String)> {
    let mut newest: HashMap<&str, &Entry> = HashMap::new();
    for e in entries.iter().filter(|e| e.modified_ms <= at_ms) {
        let slot = newest.entry(e.key.as_str()).or_insert(e);
        // The store lists a key's newest first; by time, in case one does not.
        if e.modified_ms > slot.modified_ms {
            *slot = e;
        }
    }
    let mut out: Vec<(Listed, String)> = newest
        .into_values()
        .filter(|e| !e.marker)
        .map(|e| {
            (
                Listed {
                    key: e.key.clone(),
                    size: e.size,
                },
                e.version.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    out
}

impl Store {
    /// Whether the bucket keeps versions (versioning enabled, or suspended after it was).
    pub fn keeps_versions(&self) -> Result<bool, S3Error> {
        let text = self.bucket_get(&[("versioning", "")])?;
        Ok(matches!(
            xml_field(&text, "Status").as_deref(),
            Some("Enabled" | "Suspended")
        ))
    }

    /// Every version and delete marker under `prefix`, all pages (each retried a few times).
    fn list_versions(&self, prefix: &str) -> Result<Vec<Entry>, S3Error> {
        let mut out = Vec::new();
        let mut next: Next = None;
        loop {
            let page = retry(4, || {
                let mut q = vec![("versions", ""), ("prefix", prefix)];
                if let Some((k, v)) = &next {
                    q.push(("key-marker", k));
                    q.push(("version-id-marker", v));
                }
                parse_versions_page(&self.bucket_get(&q)?)
            })?;
            out.extend(page.0);
            match page.1 {
                Some(n) if next.as_ref() != Some(&n) => next = Some(n),
                Some(_) => {
                    return Err(S3Error::NotS3(
                        "the version listing does not move on from a page".into(),
                    ));
                }
                None => return Ok(out),
            }
        }
    }

    /// A GET of the bucket with `query` (a subresource such as `?versions`), as text.
    fn bucket_get(&self, query: &[(&str, &str)]) -> Result<String, S3Error> {
        let creds = self.credentials.get()?;
        // ListObjectsV2 is a signed GET of the bucket: with its own parameters taken out, any
        // other bucket GET.
        let mut action = ListObjectsV2::new(&self.bucket, Some(&creds));
        action.query_mut().remove("list-type");
        action.query_mut().remove("encoding-type");
        for (k, v) in query {
            action.query_mut().insert(*k, *v);
        }
        self.get_listing(&action.sign(PRESIGN_FOR))
    }
}

/// The bucket as it stood at a time (see the module's words).
pub struct AsOf<'a> {
    store: &'a Store,
    at_ms: u64,
    /// The version each key listed so far is read at.
    versions: Mutex<HashMap<String, String>>,
}

impl<'a> AsOf<'a> {
    pub fn new(store: &'a Store, at_ms: u64) -> AsOf<'a> {
        AsOf {
            store,
            at_ms,
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The version `key` is read at: from a listing made through this view, else looked up.
    fn version_of(&self, key: &str) -> Result<String, S3Error> {
        if let Some(v) = self.lock().get(key) {
            return Ok(v.clone());
        }
        self.list(key)?;
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| S3Error::Status {
                status: 404,
                code: Some("NoSuchKey".into()),
                message: Some("no version at that time".into()),
                skew_s: None,
                region: None,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_only() -> S3Error {
        S3Error::NotS3("the bucket as it was at a time cannot be written".into())
    }
}

impl ObjectStore for AsOf<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let listed = as_of(&self.store.list_versions(prefix)?, self.at_ms);
        let mut versions = self.lock();
        Ok(listed
            .into_iter()
            .map(|(l, v)| {
                versions.insert(l.key.clone(), v);
                l
            })
            .collect())
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut folders: Vec<String> = self
            .list(prefix)?
            .into_iter()
            .filter_map(|l| {
                let rest = l.key.strip_prefix(prefix)?;
                let end = rest.find('/')?;
                Some(format!("{prefix}{}", &rest[..=end]))
            })
            .collect();
        folders.dedup();
        Ok(folders)
    }

    fn put(
        &self,
        _: &str,
        _: &mut dyn std::io::Read,
        _: u64,
        _: Option<u32>,
    ) -> Result<(), S3Error> {
        Err(Self::read_only())
    }

    fn put_if_absent(&self, _: &str, _: &[u8]) -> Result<bool, S3Error> {
        Err(Self::read_only())
    }

    fn get(&self, key: &str) -> Result<ObjectBody, S3Error> {
        let v = self.version_of(key)?;
        self.store.get_object(key, Some(&v), None)
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<ObjectBody, S3Error> {
        let v = self.version_of(key)?;
        self.store.get_object(key, Some(&v), Some((start, end)))
    }

    fn compose(&self, _: &str, _: Vec<Piece<'_>>) -> Result<(), S3Error> {
        Err(Self::read_only())
    }

    fn delete(&self, _: &str) -> Result<(), S3Error> {
        Err(Self::read_only())
    }

    fn delete_many(&self, _: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        Err(Self::read_only())
    }

    fn requests_sent(&self) -> [u64; 4] {
        self.store.requests_sent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<IsTruncated>true</IsTruncated><NextKeyMarker>p/c</NextKeyMarker>
<NextVersionIdMarker>v9</NextVersionIdMarker>
<DeleteMarker><Key>p/a</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest>
<LastModified>2026-12-07T12:00:10.000Z</LastModified></DeleteMarker>
<Version><Key>p/a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest>
<LastModified>2026-12-07T12:00:05.000Z</LastModified><Size>7</Size></Version>
<Version><Key>p/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>
<LastModified>2026-12-07T12:00:01.000Z</LastModified><Size>3</Size></Version>
<Version><Key>p/b&amp;c</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest>
<LastModified>2026-12-07T12:00:20.000Z</LastModified><Size>5</Size></Version>
</ListVersionsResult>"#;

    #[test]
    fn versions_are_read_and_chosen_as_of_a_time() {
        let (entries, next) = parse_versions_page(PAGE).unwrap();
        assert_eq!(next, Some(("p/c".into(), "v9".into())));
        assert_eq!(entries.len(), 4);
        assert!(entries[0].marker);
        assert_eq!(entries[3].key, "p/b&c");
        let t0 = crate::timestamp::parse("2026-12-07T12:00:00Z").unwrap();
        let at = |s: u64| -> Vec<(String, String)> {
            as_of(&entries, t0 + s * 1000)
                .into_iter()
                .map(|(l, v)| (l.key, v))
                .collect()
        };
        assert_eq!(at(0), []);
        assert_eq!(at(1), [("p/a".to_string(), "v1".to_string())]);
        assert_eq!(at(9), [("p/a".to_string(), "v2".to_string())]);
        // Deleted at 10 s: gone from then on, whatever came before.
        assert_eq!(at(10), []);
        assert_eq!(at(30), [("p/b&c".to_string(), "v3".to_string())]);
        assert!(parse_versions_page("<html>").is_err());
    }
}
