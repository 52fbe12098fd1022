//! Device reads and writes. A non-snooping device reads memory only (never
//! caches or WC buffers) and its writes leave cached copies alone, stale. A
//! snooping device reads a dirty cached copy where one exists (the cache
//! supplies the data and keeps it dirty: memory is not updated, so a later
//! non-snooping reader is not spared) and its writes invalidate cached
//! copies, writing dirty ones back first so the bytes it does not cover
//! survive.

use super::State;
use crate::addr::chunks;
use crate::ids::{Actor, DevId};
use crate::verdict::WritebackCause;

impl State {
    pub(super) fn dma_read(&mut self, dev: usize, addr: u64, out: &mut [u8]) {
        let snooping = self.devs[dev].snooping;
        for ch in chunks(addr, out.len()) {
            let dst = &mut out[ch.pos..ch.pos + ch.len];
            let dirty = if snooping {
                self.cpus
                    .iter()
                    .find_map(|c| c.cache.get(ch.line).filter(|e| e.dirty))
            } else {
                None
            };
            let pristine = match dirty {
                Some(e) => {
                    dst.copy_from_slice(&e.data[ch.off..ch.off + ch.len]);
                    e.pristine & ch.mask()
                }
                None => self.mem.read(ch.line, ch.off, dst),
            };
            self.check_read(Actor::Dma(DevId(dev as u16)), ch, dst, pristine);
        }
    }

    pub(super) fn dma_write(&mut self, dev: usize, addr: u64, bytes: &[u8]) {
        let me = Actor::Dma(DevId(dev as u16));
        let snooping = self.devs[dev].snooping;
        for ch in chunks(addr, bytes.len()) {
            if snooping {
                self.drop_everywhere(ch.line, WritebackCause::Snoop);
            }
            self.commit_bytes(ch.line, ch.off, &bytes[ch.pos..ch.pos + ch.len], me);
        }
    }
}
