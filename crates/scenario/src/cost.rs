//! An **estimate** of what the guest's accesses cost, by effective memory type — enough to
//! show why honoring a guest's UC mapping of VRAM was reverted, not a timing model.
//!
//! Cycles per access (8 bytes or less):
//!
//! | effective type | load | store |
//! |---|---|---|
//! | WB | 0.32 | 0.32 |
//! | UC, UC-, CD | 850 | 850 |
//! | WC, WC+ | 850 | 8 / 8 = 1 |
//! | WT, WP | 0.32 | 850 |
//!
//! - WB 0.32 cycles is a cached load measured on the project's host (system.md §7); stores
//!   are taken to cost the same.
//! - 850 cycles is what an honored UC load was measured to cost there (system.md §7); every
//!   access that goes to the bus uncached (UC, UC-, CD; a WC load; a WT or WP store, which
//!   writes through) is counted at that price.
//! - WC stores combine: eight 8-byte stores fill one 64-byte line, which leaves in one bus
//!   burst. The burst is a posted write (nothing waits for it), so its price is bandwidth,
//!   not latency: a line at about 8 bytes per cycle (some 25 GB/s at 3 GHz) is ~8 cycles,
//!   1 cycle per 8-byte store. That is why the seeds' noncoherent path *gains* 20+% for GPU
//!   buffers that are written once and read by the device; charging a WC store a share of
//!   the UC *latency* would invert that. A non-temporal store uses the WC protocol (except
//!   to UC, UC-, CD and WP memory, where it is a UC store).

use memtype::MemType;
use serde::Serialize;

/// Cycles of a cached (WB) access: a measured load on our host.
pub const WB_CYCLES: f64 = 0.32;
/// Cycles of an access that goes to the bus uncached: a measured UC load on our host.
pub const UC_CYCLES: f64 = 850.0;
/// Stores a WC buffer combines into one burst: a 64-byte line of 8-byte stores.
pub const WC_STORES_PER_BURST: f64 = 8.0;
/// Cycles of one 64-byte WC burst: a posted write priced at ~8 bytes per cycle of memory
/// bandwidth.
pub const WC_BURST_CYCLES: f64 = 8.0;

/// How a guest access touches memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A load.
    Load,
    /// An ordinary store.
    Store,
    /// A non-temporal store.
    NtStore,
}

/// The price class of an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Price {
    /// Served by the cache: [`WB_CYCLES`].
    Cached,
    /// A bus access of its own: [`UC_CYCLES`].
    Uncached,
    /// A store combined with seven others into one burst: [`WC_BURST_CYCLES`] / 8.
    Combined,
}

impl Price {
    /// Estimated cycles.
    pub fn cycles(self) -> f64 {
        match self {
            Price::Cached => WB_CYCLES,
            Price::Uncached => UC_CYCLES,
            Price::Combined => WC_BURST_CYCLES / WC_STORES_PER_BURST,
        }
    }
}

/// The price class of one access of `kind` with effective type `mt`.
pub fn price(kind: AccessKind, mt: MemType) -> Price {
    use AccessKind::{Load, NtStore, Store};
    match (kind, mt) {
        (NtStore, MemType::Wb | MemType::Wt | MemType::Wc | MemType::WcPlus) => Price::Combined,
        (NtStore, _) => Price::Uncached,
        (_, MemType::Wb) | (Load, MemType::Wt | MemType::Wp) => Price::Cached,
        (Load, _) => Price::Uncached,
        (Store, MemType::Wc | MemType::WcPlus) => Price::Combined,
        (Store, _) => Price::Uncached,
    }
}

/// The estimate for a run: what its guest accesses cost, and what the same accesses would
/// cost if every one were WB. Accesses are counted by price, so the sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Guest accesses counted.
    pub accesses: u64,
    /// Of those, performed UC, UC- or CD.
    pub uc_accesses: u64,
    /// Accesses at the cached price.
    cached: u64,
    /// Accesses at the uncached price.
    uncached: u64,
    /// Stores combined in WC buffers.
    combined: u64,
}

impl Cost {
    /// Adds `n` accesses of `kind` with effective type `mt`.
    pub fn add(&mut self, kind: AccessKind, mt: MemType, n: u64) {
        self.accesses += n;
        if matches!(mt, MemType::Uc | MemType::UcMinus | MemType::Cd) {
            self.uc_accesses += n;
        }
        match price(kind, mt) {
            Price::Cached => self.cached += n,
            Price::Uncached => self.uncached += n,
            Price::Combined => self.combined += n,
        }
    }

    /// Estimated cycles.
    pub fn cycles(&self) -> f64 {
        self.cached as f64 * Price::Cached.cycles()
            + self.uncached as f64 * Price::Uncached.cycles()
            + self.combined as f64 * Price::Combined.cycles()
    }

    /// Estimated cycles had every access been WB.
    pub fn wb_cycles(&self) -> f64 {
        self.accesses as f64 * WB_CYCLES
    }

    /// How many times slower than all-WB (1 when there were no accesses).
    pub fn slowdown(&self) -> f64 {
        if self.accesses > 0 {
            self.cycles() / self.wb_cycles()
        } else {
            1.0
        }
    }
}

impl Serialize for Cost {
    /// `{accesses, uc_accesses, cycles, wb_cycles, slowdown}`, cycles to two decimals.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let mut st = s.serialize_struct("Cost", 5)?;
        st.serialize_field("accesses", &self.accesses)?;
        st.serialize_field("uc_accesses", &self.uc_accesses)?;
        st.serialize_field("cycles", &round(self.cycles()))?;
        st.serialize_field("wb_cycles", &round(self.wb_cycles()))?;
        st.serialize_field("slowdown", &round(self.slowdown()))?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles_of(kind: AccessKind, mt: MemType) -> f64 {
        price(kind, mt).cycles()
    }

    #[test]
    fn the_table_of_the_module_docs() {
        use AccessKind::{Load, NtStore, Store};
        assert_eq!(cycles_of(Load, MemType::Wb), 0.32);
        assert_eq!(cycles_of(Store, MemType::Uc), 850.0);
        assert_eq!(cycles_of(Load, MemType::Cd), 850.0);
        assert_eq!(cycles_of(Store, MemType::Wc), 1.0);
        assert_eq!(cycles_of(Load, MemType::Wc), 850.0);
        assert_eq!(cycles_of(Load, MemType::Wt), 0.32);
        assert_eq!(cycles_of(Store, MemType::Wp), 850.0);
        assert_eq!(cycles_of(NtStore, MemType::Wb), 1.0);
        assert_eq!(cycles_of(NtStore, MemType::Wt), 1.0);
        assert_eq!(cycles_of(NtStore, MemType::UcMinus), 850.0);
    }

    #[test]
    fn a_uc_sweep_is_thousands_of_times_slower() {
        let mut cost = Cost::default();
        cost.add(AccessKind::Store, MemType::Uc, 1000);
        cost.add(AccessKind::Load, MemType::Wb, 1000);
        assert_eq!((cost.accesses, cost.uc_accesses), (2000, 1000));
        assert!((cost.slowdown() - (850.0 + 0.32) / 0.64).abs() < 1e-9);
        assert!((cost.cycles() - (850_000.0 + 320.0)).abs() < 1e-6);
        assert_eq!(Cost::default().slowdown(), 1.0);
    }
}
