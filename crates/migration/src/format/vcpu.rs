//! The `Vcpu` chunk: one vCPU's registers as fixed fields (mirroring `kvm_regs` and
//! `kvm_sregs` field for field, so the VMM converts without loss), its MSRs as a bounded
//! list of (index, value) pairs — the guest PAT and MTRRs among them, which is where the
//! guest keeps the memory types this project is about — and its FPU/XSAVE area as a
//! bounded opaque blob.

use super::wire::{Dec, Enc};
use super::{MAX_MSRS, MAX_XSAVE_BYTES};
use crate::error::{EncodeError, Malformation};

/// MSR indexes the format cares about.
pub mod msr {
    /// `IA32_PAT`: the guest's page attribute table.
    pub const IA32_PAT: u32 = 0x277;
    /// `IA32_MTRR_DEF_TYPE`: MTRRs enabled and the default memory type.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// `IA32_MTRR_PHYSBASE0`; variable range `n` is `0x200 + 2n` (base) and `0x201 + 2n`
    /// (mask).
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    /// `IA32_MTRR_FIX64K_00000`, the first fixed-range MTRR.
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    /// MSRs every vCPU state must carry: without them the destination would restore the
    /// guest with reset memory types, silently turning its WC mappings into WB.
    pub const REQUIRED: [u32; 2] = [IA32_PAT, MTRR_DEF_TYPE];
}

const FIXED_LEN: usize = 16 + REGS_LEN + SREGS_LEN;
const REGS_LEN: usize = 18 * 8;
const SEGMENT_LEN: usize = 24;
const DTABLE_LEN: usize = 16;
const SREGS_LEN: usize = 8 * SEGMENT_LEN + 2 * DTABLE_LEN + 7 * 8 + 4 * 8;
const MSR_LEN: usize = 16;
/// The largest `Vcpu` payload.
pub(super) const MAX_PAYLOAD: usize = FIXED_LEN + MAX_MSRS * MSR_LEN + MAX_XSAVE_BYTES;

/// General-purpose registers (`kvm_regs`).
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // register names
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl Regs {
    fn to_array(self) -> [u64; 18] {
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rsp,
            self.rbp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rflags,
        ]
    }

    fn from_array(a: [u64; 18]) -> Self {
        let [
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rsp,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
        ] = a;
        Regs {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rsp,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
        }
    }
}

/// A segment register (`kvm_segment`); the one-byte attributes are kept as KVM has them.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // kvm_segment field names
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
}

/// A descriptor-table register (`kvm_dtable`).
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // kvm_dtable field names
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// System registers (`kvm_sregs`).
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // kvm_sregs field names
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

/// One MSR.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msr {
    /// The MSR's index (`ECX` of `RDMSR`).
    pub index: u32,
    /// Its value.
    pub value: u64,
}

/// One vCPU's state.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuState {
    /// The vCPU id, below the configuration's `vcpu_count`.
    pub id: u32,
    /// General-purpose registers.
    pub regs: Regs,
    /// System registers.
    pub sregs: Sregs,
    /// MSRs, at most [`MAX_MSRS`], each index once, [`msr::REQUIRED`] among them.
    pub msrs: Vec<Msr>,
    /// The FPU/XSAVE area as `KVM_GET_XSAVE2` returns it, at most [`MAX_XSAVE_BYTES`].
    pub xsave: Vec<u8>,
}

impl VcpuState {
    /// The value of MSR `index`, if listed.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.index == index).map(|m| m.value)
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        for (field, count, cap) in [
            ("msr count", self.msrs.len(), MAX_MSRS),
            ("xsave length", self.xsave.len(), MAX_XSAVE_BYTES),
        ] {
            if count > cap {
                return Err(EncodeError::TooMany {
                    field,
                    count: count as u64,
                    cap: cap as u64,
                });
            }
        }
        let mut enc = Enc::new(buf);
        enc.u32(self.id);
        enc.u32(self.msrs.len() as u32);
        enc.u32(self.xsave.len() as u32);
        enc.zeros(4);
        for r in self.regs.to_array() {
            enc.u64(r);
        }
        let s = &self.sregs;
        for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt] {
            enc.u64(seg.base);
            enc.u32(seg.limit);
            enc.u16(seg.selector);
            for b in [
                seg.type_,
                seg.present,
                seg.dpl,
                seg.db,
                seg.s,
                seg.l,
                seg.g,
                seg.avl,
                seg.unusable,
            ] {
                enc.u8(b);
            }
            enc.zeros(1);
        }
        for table in [&s.gdt, &s.idt] {
            enc.u64(table.base);
            enc.u16(table.limit);
            enc.zeros(6);
        }
        for v in [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base] {
            enc.u64(v);
        }
        for v in s.interrupt_bitmap {
            enc.u64(v);
        }
        for m in &self.msrs {
            enc.u32(m.index);
            enc.zeros(4);
            enc.u64(m.value);
        }
        enc.bytes(&self.xsave);
        Ok(())
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(payload);
        let id = dec.u32("vcpu id")?;
        let msr_count = dec.u32("msr count")?;
        let xsave_len = dec.u32("xsave length")?;
        dec.zeros(4, "vcpu padding")?;
        for (field, count, cap) in [
            ("msr count", msr_count, MAX_MSRS),
            ("xsave length", xsave_len, MAX_XSAVE_BYTES),
        ] {
            if count as usize > cap {
                return Err(Malformation::TooMany {
                    field,
                    count: count.into(),
                    cap: cap as u64,
                });
            }
        }
        let mut regs = [0u64; 18];
        for r in &mut regs {
            *r = dec.u64("regs")?;
        }
        let mut segments = [Segment::default(); 8];
        for seg in &mut segments {
            seg.base = dec.u64("segment base")?;
            seg.limit = dec.u32("segment limit")?;
            seg.selector = dec.u16("segment selector")?;
            for b in [
                &mut seg.type_,
                &mut seg.present,
                &mut seg.dpl,
                &mut seg.db,
                &mut seg.s,
                &mut seg.l,
                &mut seg.g,
                &mut seg.avl,
                &mut seg.unusable,
            ] {
                *b = dec.u8("segment attributes")?;
            }
            dec.zeros(1, "segment padding")?;
        }
        let mut tables = [DescriptorTable::default(); 2];
        for table in &mut tables {
            table.base = dec.u64("descriptor table base")?;
            table.limit = dec.u16("descriptor table limit")?;
            dec.zeros(6, "descriptor table padding")?;
        }
        let mut control = [0u64; 7];
        for v in &mut control {
            *v = dec.u64("control registers")?;
        }
        let mut interrupt_bitmap = [0u64; 4];
        for v in &mut interrupt_bitmap {
            *v = dec.u64("interrupt bitmap")?;
        }
        let [cs, ds, es, fs, gs, ss, tr, ldt] = segments;
        let [gdt, idt] = tables;
        let [cr0, cr2, cr3, cr4, cr8, efer, apic_base] = control;
        let mut msrs = Vec::with_capacity(msr_count as usize);
        for _ in 0..msr_count {
            let index = dec.u32("msr index")?;
            dec.zeros(4, "msr padding")?;
            msrs.push(Msr {
                index,
                value: dec.u64("msr value")?,
            });
        }
        let xsave = dec.take(xsave_len as usize, "xsave")?.to_vec();
        dec.finish()?;
        Ok(VcpuState {
            id,
            regs: Regs::from_array(regs),
            sregs: Sregs {
                cs,
                ds,
                es,
                fs,
                gs,
                ss,
                tr,
                ldt,
                gdt,
                idt,
                cr0,
                cr2,
                cr3,
                cr4,
                cr8,
                efer,
                apic_base,
                interrupt_bitmap,
            },
            msrs,
            xsave,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with a distinct value in every field, so a swapped field shows.
    fn state() -> VcpuState {
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n * 0x0101_0101
        };
        let mut regs = [0u64; 18];
        regs.iter_mut().for_each(|r| *r = next());
        let mut seg = || Segment {
            base: next(),
            limit: next() as u32,
            selector: next() as u16,
            type_: 11,
            present: 1,
            dpl: 3,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
        };
        let segs = [seg(), seg(), seg(), seg(), seg(), seg(), seg(), seg()];
        let [cs, ds, es, fs, gs, ss, tr, ldt] = segs;
        VcpuState {
            id: 1,
            regs: Regs::from_array(regs),
            sregs: Sregs {
                cs,
                ds,
                es,
                fs,
                gs,
                ss,
                tr,
                ldt,
                gdt: DescriptorTable {
                    base: 0x1000,
                    limit: 0x7f,
                },
                idt: DescriptorTable {
                    base: 0x2000,
                    limit: 0xfff,
                },
                cr0: 0x8000_0011,
                cr2: 5,
                cr3: 0x9000,
                cr4: 0x20,
                cr8: 0,
                efer: 0x500,
                apic_base: 0xfee0_0900,
                interrupt_bitmap: [1, 2, 3, 4],
            },
            msrs: vec![
                Msr {
                    index: msr::IA32_PAT,
                    value: 0x0007_0406_0007_0106,
                },
                Msr {
                    index: msr::MTRR_DEF_TYPE,
                    value: 0xc06,
                },
            ],
            xsave: (0..=255).collect(),
        }
    }

    fn encoded(s: &VcpuState) -> Vec<u8> {
        let mut buf = Vec::new();
        s.encode(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trips_every_field() {
        let s = state();
        let bytes = encoded(&s);
        assert_eq!(bytes.len(), FIXED_LEN + 2 * MSR_LEN + 256);
        assert_eq!(VcpuState::decode(&bytes), Ok(s.clone()));
        assert_eq!(s.msr(msr::IA32_PAT), Some(0x0007_0406_0007_0106));
        assert_eq!(s.msr(0x1234), None);
    }

    #[test]
    fn counts_over_their_caps_are_refused_before_reserving() {
        let mut bytes = encoded(&state());
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            VcpuState::decode(&bytes),
            Err(Malformation::TooMany {
                field: "msr count",
                count: u32::MAX.into(),
                cap: MAX_MSRS as u64
            })
        );
        let mut bytes = encoded(&state());
        bytes[8..12].copy_from_slice(&(MAX_XSAVE_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(
            VcpuState::decode(&bytes),
            Err(Malformation::TooMany {
                field: "xsave length",
                ..
            })
        ));
        let mut s = state();
        s.xsave = vec![0; MAX_XSAVE_BYTES + 1];
        assert!(matches!(
            s.encode(&mut Vec::new()),
            Err(EncodeError::TooMany { .. })
        ));
    }

    #[test]
    fn counts_that_disagree_with_the_payload_are_refused() {
        let good = encoded(&state());
        let with = |offset: usize, value: u32| {
            let mut bytes = good.clone();
            bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            VcpuState::decode(&bytes)
        };
        // (field offset, value, expected error); 2 MSRs and 256 xsave bytes were sent.
        assert_eq!(with(8, 255), Err(Malformation::Trailing { bytes: 1 }));
        assert_eq!(with(8, 257), Err(Malformation::Short { field: "xsave" }));
        // A third MSR would be read from the xsave bytes, whose padding is not zero.
        assert_eq!(
            with(4, 3),
            Err(Malformation::NonZeroPadding {
                field: "msr padding"
            })
        );
    }
}
