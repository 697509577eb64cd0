//! Test harness, by concern: `process` (scratch folders, child processes stopped by PID,
//! polling), `s3` (a real s3s-fs server and the test's view of the bucket), `redis` (a real
//! redis-server 7), `resp` (a small Redis protocol client), `proxy` (a fault-injecting HTTP
//! proxy), `quirks` (other stores' ways, as the proxy plays them). Every process started here
//! is stopped by PID when its guard drops.
#![allow(dead_code)]

pub mod process;
pub mod proxy;
pub mod quirks;
pub mod redis;
pub mod resp;
pub mod s3;

// Each test binary uses its own part of the harness.
pub use process::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use resp::*;
pub use s3::*;
