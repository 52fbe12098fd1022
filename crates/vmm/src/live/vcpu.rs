//! The vCPU of a [`LiveVm`](super::LiveVm) on a thread of its own: it runs the guest until
//! told to pause or stop, and parks with nothing pending so that its state can be read or
//! written from the VMM's thread.
//!
//! Pausing is a handshake: the VMM asks, then kicks the thread out of `KVM_RUN` with the
//! runtime's no-op signal until the thread says it has parked. A kick can land just before
//! `KVM_RUN` is entered and be lost, hence the repetition. Before parking, the thread runs
//! `KVM_RUN` once with `immediate_exit` set, which completes an I/O exit left pending (the
//! kernel advances RIP past an `OUT` only on the next `KVM_RUN`): the registers read while
//! parked are then exactly where the guest resumes, here or on a destination.

use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use super::LiveError;
use crate::guest::GuestError;
use crate::guest::layout::{DONE_PORT, FAULT_PORT, IDLE_PORT};
use crate::guest::run::{Exit, classify, idle_time, settle};
use crate::guest::watchdog::{KICK_INTERVAL, install_handler, kick_signal};

/// How long a pause may take before the vCPU is declared stuck.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the VMM wants of the thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Stop,
}

/// Shared between the VMM and the vCPU thread.
#[derive(Debug)]
struct RunState {
    want: Want,
    /// The thread is outside `KVM_RUN`, nothing pending, and will not enter it again until
    /// `want` is `Run`.
    parked: bool,
    /// Why the guest stopped by itself (a fault, an unexpected exit), if it did.
    failed: Option<GuestError>,
    /// `KVM_RUN` returns so far.
    exits: u64,
}

#[derive(Debug)]
struct Control {
    state: Mutex<RunState>,
    changed: Condvar,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running (or parked) vCPU thread. Dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct VcpuThread {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuThread {
    /// Starts running `vcpu` (whose registers are loaded, and whose TSC runs at `tsc_khz`)
    /// on a new thread.
    pub(crate) fn start(vcpu: Arc<Mutex<VcpuFd>>, tsc_khz: u32) -> Result<VcpuThread, LiveError> {
        install_handler()?;
        let control = Arc::new(Control {
            state: Mutex::new(RunState {
                want: Want::Run,
                parked: false,
                failed: None,
                exits: 0,
            }),
            changed: Condvar::new(),
        });
        let shared = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || vcpu_loop(&vcpu, tsc_khz, &shared))
            .map_err(|e| LiveError::Spawn {
                thread: "vCPU",
                kind: e.kind(),
            })?;
        Ok(VcpuThread {
            control,
            thread: Some(thread),
        })
    }

    /// Stops the guest and waits until the thread has parked (or the guest had already
    /// stopped by itself, which is then the error).
    pub(crate) fn pause(&self) -> Result<(), GuestError> {
        self.park(Want::Pause)
    }

    /// Lets a paused guest run again.
    pub(crate) fn resume(&self) -> Result<(), GuestError> {
        let mut state = self.control.lock();
        if let Some(failed) = &state.failed {
            return Err(failed.clone());
        }
        state.want = Want::Run;
        self.control.changed.notify_all();
        Ok(())
    }

    /// Why the guest stopped by itself, if it did.
    pub(crate) fn failure(&self) -> Option<GuestError> {
        self.control.lock().failed.clone()
    }

    /// `KVM_RUN` returns so far.
    pub(crate) fn exits(&self) -> u64 {
        self.control.lock().exits
    }

    /// CPU time the thread has used so far, guest mode and the host's exit handling alike
    /// (`None` once the thread is gone, or if the kernel will not say).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        let thread = self.thread.as_ref()?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the handle's thread has not been joined (the handle is still held), so its
        // pthread_t is valid; `clock` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) } != 0 {
            return None;
        }
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock` was just given by the kernel for a live thread; `now` is a valid
        // out-pointer.
        if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ))
    }

    fn park(&self, want: Want) -> Result<(), GuestError> {
        let Some(thread) = &self.thread else {
            return Ok(());
        };
        let target = thread.as_pthread_t();
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        let mut state = self.control.lock();
        state.want = want;
        self.control.changed.notify_all();
        while !state.parked {
            if let Some(failed) = &state.failed {
                return Err(failed.clone());
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout {
                    after: PAUSE_TIMEOUT,
                    exits: state.exits,
                    rip: 0,
                });
            }
            // SAFETY: `target` is the vCPU thread, not yet joined (joining takes
            // `self.thread`, which is borrowed here), so its id is valid; the signal's
            // handler does nothing.
            unsafe { libc::pthread_kill(target, kick_signal()) };
            state = self
                .control
                .changed
                .wait_timeout(state, KICK_INTERVAL / 10)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        match &state.failed {
            Some(failed) if want == Want::Pause => Err(failed.clone()),
            _ => Ok(()),
        }
    }
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        // A guest that already failed is parked too; either way the thread then exits.
        let _ = self.park(Want::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sleeps for `time` on behalf of an idle guest, or less if the VMM wants the vCPU.
fn idle(control: &Control, time: Duration) {
    let mut state = control.lock();
    state.exits += 1;
    let _ = control
        .changed
        .wait_timeout_while(state, time, |s| s.want == Want::Run)
        .unwrap_or_else(PoisonError::into_inner);
}

/// The thread: run until asked to pause or stop; park with nothing pending.
fn vcpu_loop(vcpu: &Mutex<VcpuFd>, tsc_khz: u32, control: &Control) {
    let lock_vcpu = || vcpu.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        {
            let mut state = control.lock();
            if state.want != Want::Run {
                if let Err(e) = settle(&mut lock_vcpu()) {
                    state.failed.get_or_insert(e);
                }
                state.parked = true;
                control.changed.notify_all();
                while state.want == Want::Pause {
                    state = control
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.want == Want::Stop {
                    return;
                }
                state.parked = false;
            }
        }
        let exit = classify(lock_vcpu().run());
        if let Exit::Out {
            port: IDLE_PORT,
            value,
        } = exit
        {
            idle(control, idle_time(value, tsc_khz));
            continue;
        }
        let failed = match exit {
            Exit::Interrupted => None,
            // The dirtying guest never ends; one that reports an end or a fault stopped.
            Exit::Out {
                port: DONE_PORT, ..
            } => Some(GuestError::UnexpectedExit {
                exit: "the guest program ended".into(),
                rip: 0,
            }),
            Exit::Out {
                port: FAULT_PORT, ..
            } => Some(GuestError::UnexpectedExit {
                exit: "guest exception (OUT to the fault port)".into(),
                rip: 0,
            }),
            Exit::Out { .. } => None,
            Exit::Shutdown => Some(GuestError::TripleFault { rip: 0 }),
            Exit::InternalError => Some(GuestError::UnexpectedExit {
                exit: "KVM_EXIT_INTERNAL_ERROR".into(),
                rip: 0,
            }),
            Exit::Failed(errno) => Some(GuestError::Run(errno)),
            Exit::Other(exit) => Some(GuestError::UnexpectedExit { exit, rip: 0 }),
        };
        let mut state = control.lock();
        state.exits += 1;
        if let Some(failed) = failed {
            state.failed = Some(failed);
            state.parked = true;
            control.changed.notify_all();
            while state.want != Want::Stop {
                state = control
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            return;
        }
    }
}
