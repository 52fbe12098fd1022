//! The GDT and the 64-bit TSS, and the segment registers KVM is given to match them.
//!
//! There is no kernel: the program is entered at CPL3 directly, so the GDT holds only a
//! 64-bit user code segment, a user data segment and the TSS (whose IST1 is the stack
//! exceptions are delivered on).
//!
//! The TSS carries a full I/O permission bitmap that grants every port. With RFLAGS.IOPL=3
//! the CPU never consults it; but a KVM that runs guest user mode at the host's CPL3
//! (kvm_pvm) keeps the guest's RFLAGS from the hardware after the first exit, where IOPL
//! is 0, and then emulates a trapped `OUT` only if the TSS bitmap allows the port. With the
//! bitmap the program's `OUT`s reach the VMM on both kinds of host. The `kvm_segment`s for `KVM_SET_SREGS` are decoded from the
//! very descriptors written to guest memory, so the hidden parts of the segment registers and
//! the tables the CPU reads on an exception cannot disagree.

use kvm_bindings::kvm_segment;

use super::layout::{EXCEPTION_STACK_TOP, TSS_GPA};

/// User code selector (GDT entry 1, RPL 3).
pub const USER_CS: u16 = 0x08 | 3;
/// User data/stack selector (GDT entry 2, RPL 3).
pub const USER_DS: u16 = 0x10 | 3;
/// TSS selector (GDT entries 3-4).
pub const TSS_SEL: u16 = 0x18;

/// Access byte: present, DPL 3, code, execute/read, accessed.
const ACCESS_USER_CODE: u64 = 0xfb;
/// Access byte: present, DPL 3, data, read/write, accessed.
const ACCESS_USER_DATA: u64 = 0xf3;
/// Access byte: present, DPL 0, system, 64-bit TSS (busy: as `KVM_SET_SREGS` loads it).
const ACCESS_TSS_BUSY: u64 = 0x8b;
/// Flags nibble: 4 KiB granularity, 64-bit code (L=1, D=0).
const FLAGS_CODE64: u64 = 0xa;
/// Flags nibble: 4 KiB granularity, 32-bit default size.
const FLAGS_DATA: u64 = 0xc;
/// Size of the 64-bit TSS proper; the I/O bitmap follows it.
const TSS_SIZE: usize = 104;
/// One bit per port (0 = allowed), then the architectural all-ones terminator byte.
const IO_BITMAP_SIZE: usize = 65536 / 8 + 1;
/// The TSS and its bitmap, as the TSS descriptor's limit covers them.
pub const TSS_TOTAL_SIZE: usize = TSS_SIZE + IO_BITMAP_SIZE;
/// Offset of IST1 in the TSS.
const TSS_IST1: usize = 0x24;
/// Offset of the I/O-permission-bitmap base in the TSS.
const TSS_IOPB: usize = 0x66;

/// A code or data descriptor.
fn descriptor(base: u32, limit: u32, access: u64, flags: u64) -> u64 {
    let (base, limit) = (u64::from(base), u64::from(limit));
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | ((limit >> 16) & 0xf) << 48
        | flags << 52
        | (base >> 24) << 56
}

/// The GDT as it is written at [`GDT_GPA`](super::layout::GDT_GPA): null, user code, user
/// data, and the two halves of the TSS descriptor.
pub fn gdt() -> [u64; 5] {
    let tss_limit = (TSS_TOTAL_SIZE - 1) as u32;
    [
        0,
        descriptor(0, 0xfffff, ACCESS_USER_CODE, FLAGS_CODE64),
        descriptor(0, 0xfffff, ACCESS_USER_DATA, FLAGS_DATA),
        descriptor(TSS_GPA as u32, tss_limit, ACCESS_TSS_BUSY, 0),
        TSS_GPA >> 32,
    ]
}

/// The TSS as it is written at [`TSS_GPA`]: IST1 set, and an I/O bitmap right after it that
/// allows every port.
pub fn tss() -> Vec<u8> {
    let mut tss = vec![0u8; TSS_TOTAL_SIZE];
    tss[TSS_IST1..TSS_IST1 + 8].copy_from_slice(&EXCEPTION_STACK_TOP.to_le_bytes());
    tss[TSS_IOPB..TSS_IOPB + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    tss[TSS_TOTAL_SIZE - 1] = 0xff;
    tss
}

/// The segment register `selector` loads, decoded from its descriptor in [`gdt`].
pub fn segment(selector: u16) -> kvm_segment {
    let gdt = gdt();
    let desc = gdt[usize::from(selector >> 3)];
    let mut base = ((desc >> 16) & 0xff_ffff) | ((desc >> 56) << 24);
    let system = (desc >> 44) & 1 == 0;
    if system {
        // A system descriptor in long mode is 16 bytes: the next entry is base[63:32].
        base |= gdt[usize::from(selector >> 3) + 1] << 32;
    }
    let raw_limit = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    let g = ((desc >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g,
        avl: ((desc >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// The GDT's size in bytes, as `KVM_SET_SREGS` takes it (`limit + 1`).
pub fn gdt_size() -> u16 {
    (gdt().len() * 8) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_as_long_mode_user_segments() {
        let cs = segment(USER_CS);
        assert_eq!(
            (cs.l, cs.db, cs.dpl, cs.s, cs.type_, cs.present),
            (1, 0, 3, 1, 0xb, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(USER_DS);
        assert_eq!((ds.l, ds.db, ds.dpl, ds.type_), (0, 1, 3, 0x3));
        let tr = segment(TSS_SEL);
        assert_eq!(
            (tr.base, tr.limit, tr.s, tr.type_, tr.present),
            (TSS_GPA, TSS_TOTAL_SIZE as u32 - 1, 0, 0xb, 1)
        );
    }

    #[test]
    fn tss_points_ist1_at_the_exception_stack_and_allows_every_port() {
        let tss = tss();
        assert_eq!(
            u64::from_le_bytes(tss[0x24..0x2c].try_into().unwrap()),
            EXCEPTION_STACK_TOP
        );
        let iopb = usize::from(u16::from_le_bytes([tss[0x66], tss[0x67]]));
        assert_eq!(iopb, 104);
        assert!(tss[iopb..iopb + 8192].iter().all(|&b| b == 0));
        assert_eq!(tss[iopb + 8192..], [0xff]);
        assert!(TSS_GPA + TSS_TOTAL_SIZE as u64 <= crate::guest::layout::STUBS_GPA);
    }
}
