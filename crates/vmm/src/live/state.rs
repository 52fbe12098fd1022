//! A vCPU's state between KVM and the migration stream: `kvm_regs`, `kvm_sregs`, the MSRs
//! a guest's memory types and time depend on, and the XSAVE area, read while the vCPU is
//! parked and written before a restored one first runs.
//!
//! The wire types of `migration::format` mirror the kvm-bindings structs field for field;
//! [`copy_fields!`] converts between them both ways so that a field added to one and not
//! the other is a compile error, not a silently dropped register.

use kvm_bindings::{Msrs, kvm_dtable, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_xsave};
use kvm_ioctls::VcpuFd;
use migration::format::{DescriptorTable, Msr, Regs, Segment, Sregs, VcpuState, msr};
use uapi::Errno;

use crate::guest::GuestError;
use crate::guest::vm::errno;

/// `IA32_TSC`: written back on restore so that the guest's clock continues (KVM turns the
/// write into a TSC offset) instead of restarting from the new VM's zero.
pub const MSR_IA32_TSC: u32 = 0x10;

/// The MSRs saved and restored, besides what `kvm_sregs` holds (EFER, APIC base): the
/// memory-type MSRs (without PAT and MTRRs the guest's WC mappings would silently become
/// WB on the destination), the TSC, and the system-call MSRs a 64-bit guest relies on.
pub const SAVED_MSRS: [u32; 12] = [
    MSR_IA32_TSC,
    msr::IA32_PAT,
    msr::MTRR_DEF_TYPE,
    msr::MTRR_FIX64K_00000,
    msr::MTRR_PHYS_BASE0,
    msr::MTRR_PHYS_BASE0 + 1,
    0x174,       // IA32_SYSENTER_CS
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
];

/// Bytes of the XSAVE area `KVM_GET_XSAVE` returns (the VM enables no dynamic features, so
/// the legacy 4 KiB area holds all of it).
pub const XSAVE_BYTES: usize = 4096;

/// Builds a `$dst` from `$src`, field by field, each group converted with its function;
/// `..$rest` fills only kvm-bindings' padding. A field the target has and the list lacks is
/// a compile error (without `..`), a field the source lacks too.
macro_rules! copy_fields {
    ($src:expr => $dst:ident { $([$($field:ident),* $(,)?] with $conv:expr),* $(,)? } $(.. $rest:expr)?) => {{
        let src = $src;
        $dst { $($($field: $conv(src.$field),)*)* $(..$rest)? }
    }};
}

fn same<T>(x: T) -> T {
    x
}

fn segment_to_wire(s: kvm_segment) -> Segment {
    copy_fields!(s => Segment {
        [base, limit, selector, type_, present, dpl, db, s, l, g, avl, unusable] with same,
    })
}

fn segment_from_wire(w: Segment) -> kvm_segment {
    copy_fields!(w => kvm_segment {
        [base, limit, selector, type_, present, dpl, db, s, l, g, avl, unusable] with same,
    } ..kvm_segment::default())
}

fn dtable_to_wire(t: kvm_dtable) -> DescriptorTable {
    copy_fields!(t => DescriptorTable { [base, limit] with same })
}

fn dtable_from_wire(t: DescriptorTable) -> kvm_dtable {
    copy_fields!(t => kvm_dtable { [base, limit] with same } ..kvm_dtable::default())
}

/// `kvm_regs` as the stream carries them.
pub fn regs_to_wire(r: &kvm_regs) -> Regs {
    copy_fields!(r => Regs {
        [rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip,
         rflags] with same,
    })
}

/// The stream's registers as `kvm_regs`.
pub fn regs_from_wire(r: &Regs) -> kvm_regs {
    copy_fields!(r => kvm_regs {
        [rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip,
         rflags] with same,
    })
}

/// `kvm_sregs` as the stream carries them.
pub fn sregs_to_wire(s: &kvm_sregs) -> Sregs {
    copy_fields!(s => Sregs {
        [cs, ds, es, fs, gs, ss, tr, ldt] with segment_to_wire,
        [gdt, idt] with dtable_to_wire,
        [cr0, cr2, cr3, cr4, cr8, efer, apic_base, interrupt_bitmap] with same,
    })
}

/// The stream's system registers as `kvm_sregs`.
pub fn sregs_from_wire(w: &Sregs) -> kvm_sregs {
    copy_fields!(w => kvm_sregs {
        [cs, ds, es, fs, gs, ss, tr, ldt] with segment_from_wire,
        [gdt, idt] with dtable_from_wire,
        [cr0, cr2, cr3, cr4, cr8, efer, apic_base, interrupt_bitmap] with same,
    })
}

/// Reads the state of a parked vCPU.
pub fn save(vcpu: &VcpuFd, id: u32) -> Result<VcpuState, GuestError> {
    let regs = vcpu.get_regs().map_err(|e| GuestError::GetRegs(errno(e)))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| GuestError::GetSregs(errno(e)))?;
    let entries: Vec<kvm_msr_entry> = SAVED_MSRS
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|_| GuestError::GetMsrs(Errno::E2BIG))?;
    let read = vcpu
        .get_msrs(&mut msrs)
        .map_err(|e| GuestError::GetMsrs(errno(e)))?;
    if read != SAVED_MSRS.len() {
        // KVM stops at the first MSR it cannot read.
        return Err(GuestError::MsrNotRead {
            index: SAVED_MSRS[read],
        });
    }
    let xsave = vcpu
        .get_xsave()
        .map_err(|e| GuestError::GetXsave(errno(e)))?;
    Ok(VcpuState {
        id,
        regs: regs_to_wire(&regs),
        sregs: sregs_to_wire(&sregs),
        msrs: msrs
            .as_slice()
            .iter()
            .map(|m| Msr {
                index: m.index,
                value: m.data,
            })
            .collect(),
        xsave: xsave.region.iter().flat_map(|w| w.to_le_bytes()).collect(),
    })
}

/// Why a vCPU state cannot be loaded into a vCPU of this VMM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The XSAVE area is not the size `KVM_SET_XSAVE` takes.
    #[error("vCPU {id}: XSAVE area of {len} bytes, expected {XSAVE_BYTES}")]
    XsaveSize {
        /// The vCPU.
        id: u32,
        /// Its length.
        len: usize,
    },
    /// An ioctl failed.
    #[error("vCPU {id}: {source}")]
    Ioctl {
        /// The vCPU.
        id: u32,
        /// The ioctl and errno.
        source: GuestError,
    },
}

/// Writes `state` into a vCPU that has not run yet: system registers first (they decide how
/// the rest is read), then registers, MSRs and the XSAVE area.
pub fn load(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), LoadError> {
    let id = state.id;
    if state.xsave.len() != XSAVE_BYTES {
        return Err(LoadError::XsaveSize {
            id,
            len: state.xsave.len(),
        });
    }
    let failed = |source| LoadError::Ioctl { id, source };
    vcpu.set_sregs(&sregs_from_wire(&state.sregs))
        .map_err(|e| failed(GuestError::SetSregs(errno(e))))?;
    vcpu.set_regs(&regs_from_wire(&state.regs))
        .map_err(|e| failed(GuestError::SetRegs(errno(e))))?;
    let entries: Vec<kvm_msr_entry> = state
        .msrs
        .iter()
        .map(|m| kvm_msr_entry {
            index: m.index,
            data: m.value,
            ..Default::default()
        })
        .collect();
    let msrs =
        Msrs::from_entries(&entries).map_err(|_| failed(GuestError::SetMsrs(Errno::E2BIG)))?;
    let written = vcpu
        .set_msrs(&msrs)
        .map_err(|e| failed(GuestError::SetMsrs(errno(e))))?;
    if written != entries.len() {
        let m = entries[written];
        return Err(failed(GuestError::MsrNotWritten {
            index: m.index,
            value: m.data,
        }));
    }
    let mut xsave = kvm_xsave::default();
    for (word, bytes) in xsave.region.iter_mut().zip(state.xsave.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().expect("chunks of 4"));
    }
    // SAFETY: `xsave` is a whole 4 KiB `kvm_xsave`; the VM enables no dynamic XSAVE
    // features (no KVM_CAP_XSAVE2, no XFD permission), so KVM_SET_XSAVE reads exactly that.
    unsafe { vcpu.set_xsave(&xsave) }.map_err(|e| failed(GuestError::SetXsave(errno(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_through_the_wire_types() {
        let regs = kvm_regs {
            rax: 1,
            r15: 15,
            rip: 0x10_0000,
            rflags: 0x3002,
            ..Default::default()
        };
        assert_eq!(regs_from_wire(&regs_to_wire(&regs)), regs);
        let mut sregs = kvm_sregs {
            cr0: 0x8005_0033,
            cr3: 0x1_0000,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            interrupt_bitmap: [1, 2, 3, 4],
            ..Default::default()
        };
        sregs.cs.selector = 0x2b;
        sregs.cs.type_ = 11;
        sregs.cs.l = 1;
        sregs.gdt.base = 0x1000;
        sregs.gdt.limit = 0x37;
        assert_eq!(sregs_from_wire(&sregs_to_wire(&sregs)), sregs);
    }

    #[test]
    fn the_required_msrs_are_saved() {
        for index in msr::REQUIRED {
            assert!(SAVED_MSRS.contains(&index), "{index:#x}");
        }
    }
}
