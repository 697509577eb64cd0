//! A plain GET for dead-man's-switch services (`persist --heartbeat-url`): an agent of its own
//! with short timeouts, so that a slow or absent service costs persist seconds, never a hang.
//! The URL is never said in a message: such URLs usually carry a secret token.

use std::time::Duration;

use super::error::net_error;

pub struct Pinger {
    agent: ureq::Agent,
}

impl Pinger {
    pub fn new() -> Pinger {
        let config = ureq::Agent::config_builder()
            .tls_config(super::tls::built_in())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .user_agent(concat!("petrify/", env!("CARGO_PKG_VERSION")))
            .build();
        Pinger {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// One GET of `url`; `Err` says why, without the URL.
    pub fn ping(&self, url: &str) -> Result<(), String> {
        match self.agent.get(url).call() {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(net_error(e).to_string()),
        }
    }
}
