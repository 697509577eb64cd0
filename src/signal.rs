//! SIGTERM, SIGINT and SIGHUP ask `persist` to upload what is pending and exit. Between looks,
//! persist sleeps a whole interval on a self-pipe that the handler writes to, so an idle persist
//! wakes once per interval and a signal still ends the sleep at once. SIGHUP is a stop,
//! not a reload: it is what a closing ssh session or terminal sends, and dying of it would leave
//! bytes not uploaded and the lease behind. (persist has nothing to reload.) A second SIGINT (Ctrl-C
//! twice) exits at once. A repeated SIGTERM does not: `timeout(1)` and process-group kills deliver
//! it twice in a row, and systemd escalates to SIGKILL by itself after TimeoutStopSec.
//! std has no signal API, and the handler does only async-signal-safe things (atomic stores, one
//! `write(2)` to the self-pipe, `_exit(2)` on a second SIGINT), so a few lines of FFI to libc
//! (linked by std already) replace a crate.

use std::io::{ErrorKind, Read};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// The last stop signal received, for the log line.
static LAST: AtomicU32 = AtomicU32::new(0);
/// The self-pipe: the handler writes a byte to WAKE_FD, and [`sleep_until`] waits on the other
/// end with a timeout, so that persist sleeps a whole interval and a signal still ends the sleep
/// at once (no polling, no race between checking the flag and going to sleep).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE: OnceLock<UnixStream> = OnceLock::new();
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const SIGXFSZ: i32 = 25;
const SIG_IGN: usize = 1;

unsafe extern "C" {
    /// `handler` is a function pointer or SIG_IGN, passed as an address.
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(status: i32) -> !;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;

/// Kills every process of the process group `pgid` (a helper started as its own group leader,
/// and whatever it started).
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: kill(2) has no memory preconditions; a negative pid names a process group.
        unsafe { kill(-pgid, SIGKILL) };
    }
}

extern "C" fn on_signal(signum: i32) {
    // Only async-signal-safe work here: atomics, write(2), and _exit on the second SIGINT.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    LAST.store(signum as u32, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the end is non-blocking, so a full pipe
        // (signals nobody has slept on yet) loses a wake-up, never blocks.
        unsafe { write(fd, [1u8].as_ptr(), 1) };
    }
    if signum == SIGINT && INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { _exit(130) }
    }
}

/// For `persist`: SIGTERM, SIGINT and SIGHUP request a clean stop.
pub fn install() {
    // Without the pipe (it cannot be made), sleep_until falls back to short sleeps.
    if let Ok((reader, writer)) = UnixStream::pair()
        && writer.set_nonblocking(true).is_ok()
        && WAKE.set(reader).is_ok()
    {
        WAKE_FD.store(writer.into_raw_fd(), Ordering::SeqCst);
    }
    let handler: extern "C" fn(i32) = on_signal;
    // SAFETY: the handler is async-signal-safe (see above); signal() has no other precondition.
    unsafe {
        signal(SIGTERM, handler as usize);
        signal(SIGINT, handler as usize);
        signal(SIGHUP, handler as usize);
    }
}

/// For every command: a write past RLIMIT_FSIZE fails with EFBIG (an I/O error petrify reports
/// and cleans up after) instead of killing the process with SIGXFSZ, which would leave a
/// partial temporary file behind.
pub fn ignore_file_size_limit() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no precondition.
    unsafe {
        signal(SIGXFSZ, SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// The name of the signal that requested the stop, for the log.
pub fn stop_signal_name() -> &'static str {
    match LAST.load(Ordering::SeqCst) as i32 {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Sleeps until `deadline`, waking at once when a stop is requested.
pub fn sleep_until(deadline: Instant) {
    let mut buf = [0u8; 64];
    loop {
        if stop_requested() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        let woke = WAKE.get().map(|mut r| {
            r.set_read_timeout(Some(left))
                .and_then(|()| r.read(&mut buf))
        });
        match woke {
            // A signal's byte: the loop sees the stop request.
            Some(Ok(_)) => {}
            Some(Err(e))
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // No pipe (or it failed): short sleeps, checking the flag between them.
            _ => std::thread::sleep(left.min(Duration::from_millis(50))),
        }
    }
}
