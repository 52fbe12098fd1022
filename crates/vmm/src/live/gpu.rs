//! The GPU of a [`LiveVm`](super::LiveVm): a device model that writes the noncoherent BAR
//! the way a GPU renders into it, without snooping, at a chosen rate; and the device's own
//! dirty tracking, because KVM's dirty log sees only the guest's writes, never a device's.
//!
//! The model writes through the VMM's mapping of the BAR and then flushes the lines it
//! wrote (CLFLUSHOPT + SFENCE), so that, as after a real non-snooping DMA write, the data is
//! in memory and no CPU cache holds a copy of it. It marks a page dirty only *after* writing
//! it: a migration that takes the bitmap in between has read the page before the write or
//! will see the bit in the next round, never neither.
//!
//! Its state (frame counter, next page, pacing) travels in the stream as the `gpu` device,
//! so a restored GPU continues the same frame sequence; a BAR that arrived empty (`skip`)
//! is re-created from that state by rendering every page of the current frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use migration::DirtyBitmap;
use migration::format::{DeviceState, PAGE_SIZE};

use crate::cache::flush_dcache_range;

/// The device's name in the stream.
pub const GPU_DEVICE: &str = "gpu";

/// Bytes of the serialized state: version, frame, next page, pages per second.
const STATE_LEN: usize = 1 + 8 + 4 + 8;
/// The state format's version.
const STATE_VERSION: u8 = 1;

/// Why a `gpu` device state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuStateError {
    /// The state is not [`STATE_LEN`] bytes.
    #[error("gpu device state is {0} bytes, expected {STATE_LEN}")]
    Length(usize),
    /// An unknown state version.
    #[error("gpu device state version {0}, this VMM reads version {STATE_VERSION}")]
    Version(u8),
    /// The next page lies outside the BAR.
    #[error("gpu device state names page {page} of a {pages}-page BAR")]
    Page {
        /// The page named.
        page: u32,
        /// The BAR's pages.
        pages: u32,
    },
}

/// What the GPU model does next: part of the migrated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuState {
    /// The frame being rendered (each frame rewrites every BAR page once).
    pub frame: u64,
    /// The page it writes next.
    pub next_page: u32,
    /// Pages written per second (0: the GPU is idle).
    pub pages_per_second: u64,
}

impl GpuState {
    /// The device state chunk.
    pub fn to_device_state(&self) -> DeviceState {
        let mut state = Vec::with_capacity(STATE_LEN);
        state.push(STATE_VERSION);
        state.extend_from_slice(&self.frame.to_le_bytes());
        state.extend_from_slice(&self.next_page.to_le_bytes());
        state.extend_from_slice(&self.pages_per_second.to_le_bytes());
        DeviceState {
            name: GPU_DEVICE.into(),
            state,
        }
    }

    /// Reads a device state for a BAR of `pages` pages.
    pub fn from_device_state(bytes: &[u8], pages: u32) -> Result<GpuState, GpuStateError> {
        if bytes.len() != STATE_LEN {
            return Err(GpuStateError::Length(bytes.len()));
        }
        if bytes[0] != STATE_VERSION {
            return Err(GpuStateError::Version(bytes[0]));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let next_page = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
        if next_page >= pages {
            return Err(GpuStateError::Page {
                page: next_page,
                pages,
            });
        }
        Ok(GpuState {
            frame: u64_at(1),
            next_page,
            pages_per_second: u64_at(13),
        })
    }
}

/// The BAR's memory as the device model reaches it.
#[derive(Debug, Clone, Copy)]
struct Bar {
    addr: usize,
    pages: u32,
}

impl Bar {
    /// Renders page `index` of `frame`: every word names the frame, the page and itself,
    /// so any stale or misplaced byte is recognisable. Then flushes it to memory.
    fn render(&self, index: u32, frame: u64) {
        let base = self.addr + index as usize * PAGE_SIZE;
        for word in 0..PAGE_SIZE / 8 {
            let value = frame << 32 | u64::from(index) << 9 | word as u64;
            // SAFETY: `base + 8 * word` lies in page `index` (< pages) of the BAR mapping,
            // which outlives the device model (`LiveVm` joins the thread before dropping
            // the VM); it is 8-byte aligned (page-aligned base); the guest may access the
            // page concurrently, which is the device's and the guest driver's protocol.
            unsafe { ((base + 8 * word) as *mut u64).write_volatile(value) };
        }
        // SAFETY: the page just written, inside the mapping as above.
        unsafe { flush_dcache_range(base as *const u8, PAGE_SIZE) };
    }
}

/// What the device thread and the VMM share.
#[derive(Debug)]
struct Shared {
    state: GpuState,
    dirty: DirtyBitmap,
    /// Whether the VMM tracks the device's writes (a migration is on).
    logging: bool,
    paused: bool,
}

/// The running device model. Dropping it stops and joins its thread.
#[derive(Debug)]
pub(crate) struct Gpu {
    bar: Bar,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gpu {
    /// Starts the model on the BAR at host address `addr` (`pages` pages, owned by the
    /// caller for longer than this value), continuing from `state`.
    pub(crate) fn start(addr: u64, pages: u32, state: GpuState) -> std::io::Result<Gpu> {
        let bar = Bar {
            addr: addr as usize,
            pages,
        };
        let shared = Arc::new(Mutex::new(Shared {
            state,
            dirty: DirtyBitmap::new(pages),
            logging: false,
            paused: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if state.pages_per_second > 0 && pages > 0 {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            let thread = std::thread::Builder::new()
                .name("gpu".into())
                .spawn(move || device_loop(bar, &shared, &stop))?;
            Some(thread)
        } else {
            None
        };
        Ok(Gpu {
            bar,
            shared,
            stop,
            thread,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renders the whole current frame (a BAR re-created after a `skip` migration, or
    /// filled at boot), with the device paused meanwhile.
    pub(crate) fn render_frame(&self) {
        let shared = self.lock();
        for index in 0..self.bar.pages {
            self.bar.render(index, shared.state.frame);
        }
    }

    /// Stops device activity: when this returns no write is in flight.
    pub(crate) fn pause(&self) {
        self.lock().paused = true;
    }

    /// Lets the device write again.
    pub(crate) fn resume(&self) {
        self.lock().paused = false;
    }

    /// Starts or stops tracking the device's writes (a started log begins empty).
    pub(crate) fn set_logging(&self, on: bool) {
        let mut shared = self.lock();
        shared.logging = on;
        shared.dirty = DirtyBitmap::new(self.bar.pages);
    }

    /// Takes the pages written since the last call.
    pub(crate) fn take_dirty(&self) -> DirtyBitmap {
        std::mem::replace(&mut self.lock().dirty, DirtyBitmap::new(self.bar.pages))
    }

    /// The state to migrate.
    pub(crate) fn state(&self) -> GpuState {
        self.lock().state
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes one page every `1 / pages_per_second` seconds, frame after frame.
fn device_loop(bar: Bar, shared: &Mutex<Shared>, stop: &AtomicBool) {
    let rate = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .state
        .pages_per_second;
    // A burst of pages per wakeup, 100 wakeups a second: waking per page (5000 times a
    // second at the benchmark's rate) cost more in context switches than in rendering, on
    // the two cores the migration shares with this thread.
    let burst = rate.div_ceil(100).max(1);
    let interval = Duration::from_secs_f64(burst as f64 / rate as f64);
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (the host was busy): pace from now rather than burst.
            next = now;
        }
        for _ in 0..burst {
            // Locked per page, not per burst: the page is written and logged as one step
            // (a migration looking at the log in between sees both or neither), and a
            // migration looking after every run it sends waits a page, not a burst.
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if s.paused {
                break;
            }
            let page = s.state.next_page;
            bar.render(page, s.state.frame);
            if s.logging {
                s.dirty.set(page);
            }
            s.state.next_page += 1;
            if s.state.next_page == bar.pages {
                s.state.next_page = 0;
                s.state.frame += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_states_are_named() {
        let state = GpuState {
            frame: 7,
            next_page: 3,
            pages_per_second: 1000,
        };
        let chunk = state.to_device_state();
        assert_eq!(chunk.name, GPU_DEVICE);
        assert_eq!(GpuState::from_device_state(&chunk.state, 4), Ok(state));
        assert_eq!(
            GpuState::from_device_state(&chunk.state, 3),
            Err(GpuStateError::Page { page: 3, pages: 3 })
        );
        assert_eq!(
            GpuState::from_device_state(&chunk.state[1..], 4),
            Err(GpuStateError::Length(STATE_LEN - 1))
        );
        let mut newer = chunk.state.clone();
        newer[0] = 2;
        assert_eq!(
            GpuState::from_device_state(&newer, 4),
            Err(GpuStateError::Version(2))
        );
    }

    #[test]
    fn renders_pages_and_logs_only_while_asked() {
        let pages = 4;
        let mut bar = vec![0u64; pages as usize * PAGE_SIZE / 8];
        let addr = bar.as_mut_ptr() as u64;
        let gpu = Gpu::start(
            addr,
            pages,
            GpuState {
                frame: 1,
                next_page: 0,
                pages_per_second: 2000,
            },
        )
        .unwrap();
        gpu.set_logging(true);
        while gpu.state().frame < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        gpu.pause();
        let dirty = gpu.take_dirty();
        assert_eq!(
            dirty.count(),
            u64::from(pages),
            "every page written and logged"
        );
        assert!(gpu.take_dirty().is_empty(), "taking clears the log");
        let state = gpu.state();
        drop(gpu);
        // The page before `next_page` holds the newest frame's words.
        let last = (state.next_page + pages - 1) % pages;
        let frame = if state.next_page == 0 {
            state.frame - 1
        } else {
            state.frame
        };
        let word = bar[last as usize * PAGE_SIZE / 8 + 5];
        assert_eq!(word, frame << 32 | u64::from(last) << 9 | 5);
    }
}
