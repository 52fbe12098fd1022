//! CPU loads and stores, per effective memory type (SDM vol. 3 "Methods of
//! Caching Available"; AMD APM vol. 2 §7.4 for WC+ and CD):
//!
//! | type | load | store |
//! |---|---|---|
//! | WB | hit, or snoop + allocate | read-for-ownership, line dirty |
//! | WT | as WB | to memory; own copy updated, others invalidated |
//! | WP | as WB | to memory; every copy invalidated |
//! | UC, UC-, CD | WC buffers drained, dirty copies written back, memory | same, copies invalidated |
//! | WC | memory, caches **not** checked | gathered in a WC buffer, caches **not** checked |
//! | WC+ | dirty copies written back, memory | gathered; caches probed at drain |
//!
//! Every access first drains the agent's own WC buffer for its line (a CPU
//! sees its own stores), except a WC/WC+ store, which combines into it.
//! A non-temporal store uses the WC protocol, evicting the line from every
//! cache first when the target is WB or WT (SDM "Caching of Temporal vs.
//! Non-Temporal Data"); to UC, UC-, CD and WP it is an ordinary store.

use memtype::MemType;

use super::State;
use crate::addr::{Chunk, chunks};
use crate::ids::{Actor, AgentId};
use crate::provenance::Stamp;
use crate::verdict::WritebackCause;

impl State {
    /// Loads `out.len()` bytes at `addr`, one line at a time.
    #[inline]
    pub(super) fn cpu_load(&mut self, cpu: usize, addr: u64, out: &mut [u8], mt: MemType) {
        for ch in chunks(addr, out.len()) {
            self.load_chunk(cpu, ch, &mut out[ch.pos..ch.pos + ch.len], mt);
        }
    }

    #[inline]
    fn load_chunk(&mut self, cpu: usize, ch: Chunk, out: &mut [u8], mt: MemType) {
        self.drain_wc_line(cpu, ch.line);
        let pristine = match mt {
            MemType::Wb | MemType::Wt | MemType::Wp => self.cached_load(cpu, ch, out, mt),
            MemType::Uc | MemType::UcMinus | MemType::Cd => {
                self.drain_wc_all(cpu);
                self.check_uncached_alias(cpu, ch.line, mt);
                self.clean_everywhere(ch.line, WritebackCause::Snoop);
                self.mem.read(ch.line, ch.off, out)
            }
            MemType::Wc => {
                self.check_uncached_alias(cpu, ch.line, mt);
                self.mem.read(ch.line, ch.off, out)
            }
            MemType::WcPlus => {
                self.check_uncached_alias(cpu, ch.line, mt);
                self.clean_everywhere(ch.line, WritebackCause::Snoop);
                self.mem.read(ch.line, ch.off, out)
            }
        };
        self.check_read(Actor::Cpu(AgentId(cpu as u16)), ch, out, pristine);
    }

    /// A cacheable load: returns the mask of bytes still the previous owner's.
    #[inline]
    fn cached_load(&mut self, cpu: usize, ch: Chunk, out: &mut [u8], mt: MemType) -> u64 {
        let e = match self.cpus[cpu].cache.get(ch.line) {
            Some(e) => e,
            None => {
                self.share(cpu, ch.line);
                self.fill(cpu, ch.line, mt)
            }
        };
        out.copy_from_slice(&e.data[ch.off..ch.off + ch.len]);
        e.pristine & ch.mask()
    }

    /// Stores `bytes` at `addr`, one line at a time; `nt` for MOVNT*.
    #[inline]
    pub(super) fn cpu_store(&mut self, cpu: usize, addr: u64, bytes: &[u8], mt: MemType, nt: bool) {
        for ch in chunks(addr, bytes.len()) {
            let b = &bytes[ch.pos..ch.pos + ch.len];
            match (nt, mt) {
                (true, MemType::Wb | MemType::Wt) => {
                    self.drop_everywhere(ch.line, WritebackCause::Snoop);
                    self.wc_gather(cpu, ch.line, ch.off, b, mt);
                }
                _ => self.store_chunk(cpu, ch, b, mt),
            }
        }
    }

    #[inline]
    fn store_chunk(&mut self, cpu: usize, ch: Chunk, bytes: &[u8], mt: MemType) {
        let me = Actor::Cpu(AgentId(cpu as u16));
        match mt {
            MemType::Wb => self.wb_store(cpu, ch, bytes, Stamp::new(self.op, me)),
            MemType::Wt => {
                self.drain_wc_line(cpu, ch.line);
                self.drop_others(cpu, ch.line);
                let stamp = Stamp::new(self.op, me);
                if let Some(e) = self.cpus[cpu].cache.get_mut(ch.line) {
                    e.data[ch.off..ch.off + ch.len].copy_from_slice(bytes);
                    e.pristine &= !ch.mask();
                    e.stamp = stamp;
                    e.exclusive = true;
                }
                self.commit_bytes(ch.line, ch.off, bytes, me);
            }
            MemType::Wp => {
                self.drain_wc_line(cpu, ch.line);
                self.drop_everywhere(ch.line, WritebackCause::Snoop);
                self.commit_bytes(ch.line, ch.off, bytes, me);
            }
            MemType::Uc | MemType::UcMinus | MemType::Cd => {
                self.drain_wc_all(cpu);
                self.check_uncached_alias(cpu, ch.line, mt);
                self.drop_everywhere(ch.line, WritebackCause::Snoop);
                self.commit_bytes(ch.line, ch.off, bytes, me);
            }
            MemType::Wc | MemType::WcPlus => {
                self.check_uncached_alias(cpu, ch.line, mt);
                self.wc_gather(cpu, ch.line, ch.off, bytes, mt);
            }
        }
    }

    /// A WB store: a hit on an exclusive line writes in place (the hot
    /// path); otherwise the other copies are invalidated and the line
    /// filled first.
    #[inline]
    fn wb_store(&mut self, cpu: usize, ch: Chunk, bytes: &[u8], stamp: Stamp) {
        self.drain_wc_line(cpu, ch.line);
        let e = match self.cpus[cpu].cache.get_mut(ch.line) {
            Some(e) if e.exclusive => e,
            _ => {
                self.drop_others(cpu, ch.line);
                match self.cpus[cpu].cache.get_mut(ch.line) {
                    Some(e) => e,
                    None => self.fill(cpu, ch.line, MemType::Wb),
                }
            }
        };
        e.data[ch.off..ch.off + ch.len].copy_from_slice(bytes);
        e.pristine &= !ch.mask();
        e.stamp = stamp;
        e.dirty = true;
        e.exclusive = true;
        e.held_as = MemType::Wb;
        self.mem.commit_cached(ch.line, ch.off, bytes, stamp);
    }
}
