//! A deadline for a run: a thread that, once the time is up, keeps kicking the vCPU thread
//! out of `KVM_RUN` with a signal until the run loop notices and stops.
//!
//! `KVM_RUN` returns `EINTR` when a signal is pending for its thread; the handler itself does
//! nothing. One signal could land while the thread is between two `KVM_RUN`s and be lost, so
//! the watchdog repeats it every [`KICK_INTERVAL`] until it is disarmed. The handler is
//! installed with `SA_RESTART` so that a kick landing outside `KVM_RUN` does not make some
//! other system call of that thread fail (`KVM_RUN` itself is never restarted: it returns
//! `-EINTR`, not `-ERESTARTSYS`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use uapi::Errno;

use super::error::GuestError;

/// How often a fired watchdog re-sends its signal.
pub const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// The signal used to kick the vCPU thread (the first real-time signal, as other VMMs use
/// for vCPU kicks).
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the no-op handler once per process.
pub(crate) fn install_handler() -> Result<(), GuestError> {
    static INSTALLED: OnceLock<Result<(), Errno>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` is plain data; zeroed is a valid value (empty mask, no flags).
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act` is a valid, initialized `sigaction` whose handler is async-signal-safe
        // (it does nothing); the old action is not asked for; the result is checked.
        let ret = unsafe { libc::sigaction(kick_signal(), &act, std::ptr::null_mut()) };
        if ret == 0 {
            Ok(())
        } else {
            Err(Errno(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        }
    });
    result.map_err(GuestError::SignalHandler)
}

/// An armed deadline for the calling thread. Dropping it disarms it and joins its thread,
/// so no kick is sent after the drop.
#[derive(Debug)]
pub struct Watchdog {
    disarm: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    /// Arms a deadline `timeout` from now for the calling thread.
    pub fn arm(timeout: Duration) -> Result<Watchdog, GuestError> {
        install_handler()?;
        // SAFETY: `pthread_self` has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let (disarm, disarmed) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::Builder::new()
            .name("vcpu-watchdog".into())
            .spawn(move || {
                if disarmed.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                flag.store(true, Ordering::SeqCst);
                loop {
                    // SAFETY: `target` is the thread that owns this `Watchdog`; it joins this
                    // thread before it can exit (`Drop`), so the id is still valid here.
                    unsafe { libc::pthread_kill(target, kick_signal()) };
                    if disarmed.recv_timeout(KICK_INTERVAL) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            })
            .map_err(|_| GuestError::Watchdog)?;
        Ok(Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
            fired,
        })
    }

    /// Whether the deadline has passed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread (`Disconnected`), fired or not.
        drop(self.disarm.take());
        if let Some(thread) = self.thread.take() {
            // The thread cannot panic (no unwrap in it); nothing to report if it did.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn fires_after_the_deadline_and_interrupts_a_blocking_wait() {
        let dog = Watchdog::arm(Duration::from_millis(20)).unwrap();
        assert!(!dog.fired());
        let start = Instant::now();
        // `pause` returns only when a signal handler has run: the kick.
        // SAFETY: `pause` has no preconditions.
        unsafe { libc::pause() };
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert!(dog.fired());
    }

    #[test]
    fn disarmed_in_time_it_never_fires() {
        let dog = Watchdog::arm(Duration::from_secs(60)).unwrap();
        let start = Instant::now();
        drop(dog);
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
