//! Name resolution for the store's agent: each host's addresses are kept for a few seconds.
//!
//! ureq resolves the host before every request, pooled connection or not, and with a resolve
//! timeout set (we set one: a silent DNS server must not hang persist) it does so on a thread
//! of its own: one thread spawned per request. On 10,000 small deltas that was 10,000 threads
//! and a DNS lookup each (see bench/RESULTS.md for what recover gained). Keeping an answer
//! for [`KEEP`] still follows an endpoint whose addresses change (S3 rotates them) within
//! seconds; pooled connections keep the address they were opened to anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is used before the host is resolved again.
const KEEP: Duration = Duration::from_secs(10);

/// [`DefaultResolver`] (std's `ToSocketAddrs`, on a thread when a timeout is set), its answers
/// kept for [`KEEP`] per scheme and authority. Failures are not kept.
#[derive(Debug, Default)]
pub struct KeptResolver {
    inner: DefaultResolver,
    kept: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for KeptResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // The scheme decides the default port; the authority holds host and port.
        let name = match (uri.scheme_str(), uri.authority()) {
            (Some(s), Some(a)) => format!("{s}://{a}"),
            _ => return self.inner.resolve(uri, config, timeout),
        };
        let now = Instant::now();
        if let Some((at, addrs)) = self.lock().get(&name)
            && now.duration_since(*at) < KEEP
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.lock().insert(name, (now, addrs.clone()));
        Ok(addrs)
    }
}

impl KeptResolver {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, ResolvedSocketAddrs)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_per_host_and_port() {
        let r = KeptResolver::default();
        let config = Config::default();
        let never = NextTimeout::default();
        let uri: Uri = "http://127.0.0.1:9/x".parse().unwrap();
        let a = r.resolve(&uri, &config, never).unwrap();
        assert_eq!(&a[..], ["127.0.0.1:9".parse().unwrap()]);
        let other: Uri = "https://127.0.0.2/y".parse().unwrap();
        let b = r.resolve(&other, &config, never).unwrap();
        assert_eq!(b[0], "127.0.0.2:443".parse().unwrap());
        assert_eq!(r.lock().len(), 2);
        // Kept: a second request for the same host reads the map (same answer).
        let again = r.resolve(&uri, &config, never).unwrap();
        assert_eq!(&again[..], &a[..]);
        assert_eq!(r.lock().len(), 2);
    }
}
