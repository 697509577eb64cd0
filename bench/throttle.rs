//! A TCP proxy that shapes each connection like a link to a real S3 region: each direction of
//! a connection paced at `cap` bytes per second (a region's per-stream limit), and `latency`
//! added before each request. It streams (nothing is buffered whole), so a 1 GiB transfer
//! through it costs no memory and no store-and-forward delay. It counts requests.
//!
//! A request is recognised as the first bytes a client sends after the server last spoke (or on
//! a new connection): right for HTTP/1.1 without pipelining, which is what every tool here
//! speaks. A client that waits for `100 Continue` would be counted twice; none of them does.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Throttle {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
struct Shape {
    /// Bytes per second in each direction of one connection; `None`: as fast as it goes.
    cap: Option<u64>,
    latency: Duration,
}

impl Throttle {
    pub fn start(upstream: u16, cap: Option<u64>, latency: Duration) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the throttle");
        let port = listener.local_addr().expect("throttle address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let shape = Shape { cap, latency };
        {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            std::thread::spawn(move || {
                                let _ = connection(client, upstream, shape);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Throttle { port, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn connection(client: TcpStream, upstream: u16, shape: Shape) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // True when the next bytes from the client begin a request.
    let turn = Arc::new(AtomicBool::new(true));
    let answers = {
        let (from, to, turn) = (server.try_clone()?, client.try_clone()?, turn.clone());
        std::thread::spawn(move || {
            pump(from, to, shape.cap, |_| turn.store(true, Ordering::SeqCst));
        })
    };
    pump(client, server, shape.cap, |_| {
        if turn.swap(false, Ordering::SeqCst) {
            std::thread::sleep(shape.latency);
        }
    });
    let _ = answers.join();
    Ok(())
}

/// Copies `from` to `to` until either end closes, calling `chunk` before each chunk is
/// forwarded (a request's latency) or after (an answer's turn), and pacing at `cap`.
fn pump(mut from: TcpStream, mut to: TcpStream, cap: Option<u64>, mut chunk: impl FnMut(usize)) {
    let mut buf = vec![0u8; 64 << 10];
    // When the bytes forwarded so far may have left, at `cap`: pacing without burst credit, so
    // a connection idle for a while does not then run unlimited.
    let mut free_at = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        chunk(n);
        if let Some(cap) = cap {
            free_at = free_at.max(Instant::now()) + Duration::from_secs_f64(n as f64 / cap as f64);
            let now = Instant::now();
            if free_at > now {
                std::thread::sleep(free_at - now);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
