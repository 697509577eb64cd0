//! SIGTERM, SIGINT and SIGHUP ask `persist` to upload what is pending and exit. SIGHUP is a stop,
//! not a reload: it is what a closing ssh session or terminal sends, and dying of it would leave
//! bytes not uploaded and the lease behind. (persist has nothing to reload.) A second SIGINT (Ctrl-C
//! twice) exits at once. A repeated SIGTERM does not: `timeout(1)` and process-group kills deliver
//! it twice in a row, and systemd escalates to SIGKILL by itself after TimeoutStopSec. std has no signal API and the handler only stores to an atomic, so a few lines
//! of FFI to libc's `signal(2)` (linked by std already) replace a crate.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// The last stop signal received, for the log line.
static LAST: AtomicU32 = AtomicU32::new(0);
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
}

extern "C" fn on_signal(signum: i32) {
    // Only async-signal-safe work here: atomic adds, and _exit on the second SIGINT.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    LAST.store(signum as u32, Ordering::SeqCst);
    if signum == SIGINT && INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { _exit(130) }
    }
}

/// For `persist`: SIGTERM, SIGINT and SIGHUP request a clean stop.
pub fn install() {
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

/// Sleeps until `deadline`, waking early when a stop is requested.
pub fn sleep_until(deadline: Instant) {
    loop {
        if stop_requested() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}
