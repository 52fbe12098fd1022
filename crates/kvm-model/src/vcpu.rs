//! `struct kvm_vcpu` as far as memory types go: the guest's IA32_PAT, MTRRs and CR0, written
//! by `KVM_SET_MSRS` or by the guest itself.
//!
//! Models `kvm_set_msr_common()` / `kvm_get_msr_common()` for the PAT and MTRR MSRs
//! (`kvm_pat_valid()`, `arch/x86/kvm/mtrr.c`: `kvm_mtrr_valid()`, `kvm_mtrr_set_msr()`,
//! `kvm_mtrr_get_msr()`), and `kvm_set_cr0()` / `kvm_post_set_cr0()`. The values are kept in
//! every era; only 6.7 lets MTRR and CR0.CD writes zap SPTEs (see [`crate::mmu::mtrr`]).

use memtype::MemType;
use memtype::mtrr::{
    FIXED_MSRS, MSR_MTRR_DEF_TYPE, MSR_MTRRCAP, MTRRCAP_FIX, MTRRCAP_WC, MtrrMsrs, MtrrState,
};
use memtype::pat::{MSR_IA32_CR_PAT, Pat};
use uapi::Errno;

use crate::error::VcpuError;
use crate::kvm::{Kvm, VcpuId};

/// `KVM_NR_VAR_MTRR`: variable MTRR pairs KVM offers a guest.
pub const KVM_NR_VAR_MTRR: usize = 8;
/// The MTRRcap KVM reports: VCNT = 8, fixed ranges and WC supported (`0x500 | 8`).
pub const KVM_MTRRCAP: u64 = MTRRCAP_WC | MTRRCAP_FIX | KVM_NR_VAR_MTRR as u64;
/// First variable-range MSR (`MTRRphysBase0`).
const MSR_MTRR_PHYS_BASE0: u32 = 0x200;

/// CR0.PE.
pub const X86_CR0_PE: u64 = 1 << 0;
/// CR0.ET.
pub const X86_CR0_ET: u64 = 1 << 4;
/// CR0.NW.
pub const X86_CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const X86_CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const X86_CR0_PG: u64 = 1 << 31;
/// CR0 after RESET/INIT: caching disabled, `ET` set.
pub const CR0_RESET: u64 = X86_CR0_CD | X86_CR0_NW | X86_CR0_ET;

/// One vCPU's memory-type state.
#[derive(Debug, Clone)]
pub struct KvmVcpu {
    id: u32,
    pat: Pat,
    mtrr_def_type: u64,
    mtrr_fixed: [u64; 11],
    mtrr_var: [(u64, u64); KVM_NR_VAR_MTRR],
    /// Whether each PHYSMASK was ever written: KVM keeps the mask with the reserved bits
    /// set from its first write on, and 0 before, which decides the span `update_mtrr()`
    /// zaps for a PHYSBASE write.
    mtrr_var_mask_written: [bool; KVM_NR_VAR_MTRR],
    /// The decoded form of the MSRs above, rebuilt on every accepted write.
    mtrr: MtrrState,
    cr0: u64,
    /// Guest CPUID advertises MTRRs (`X86_FEATURE_MTRR`).
    cpuid_mtrr: bool,
    /// Guest MAXPHYADDR: where the reserved bits of the variable MTRRs start.
    maxphyaddr: u8,
    /// In SMM: uses address space 1.
    smm: bool,
}

/// Whether an MTRR type byte is valid (`valid_mtrr_type()`: UC, WC, WT, WP, WB).
fn valid_mtrr_type(t: u64) -> bool {
    u8::try_from(t).is_ok_and(|t| MemType::from_mtrr_encoding(t).is_some())
}

/// Which MTRR MSR an index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MtrrMsr {
    DefType,
    Fixed(usize),
    VarBase(usize),
    VarMask(usize),
}

impl MtrrMsr {
    /// `msr_mtrr_valid()`: the MTRR MSRs KVM emulates (MTRRcap is read-only).
    pub(crate) fn from_index(msr: u32) -> Option<MtrrMsr> {
        if msr == MSR_MTRR_DEF_TYPE {
            return Some(MtrrMsr::DefType);
        }
        if let Some(i) = FIXED_MSRS.iter().position(|m| *m == msr) {
            return Some(MtrrMsr::Fixed(i));
        }
        let n = msr.checked_sub(MSR_MTRR_PHYS_BASE0)? as usize;
        match (n / 2, n % 2) {
            (pair, 0) if pair < KVM_NR_VAR_MTRR => Some(MtrrMsr::VarBase(pair)),
            (pair, _) if pair < KVM_NR_VAR_MTRR => Some(MtrrMsr::VarMask(pair)),
            _ => None,
        }
    }
}

impl KvmVcpu {
    /// A vCPU after RESET: PAT at its power-on value, MTRRs disabled, CR0.CD=NW=1, guest
    /// CPUID with MTRRs and the host's MAXPHYADDR (what a VMM normally sets).
    pub(crate) fn new(id: u32, maxphyaddr: u8) -> KvmVcpu {
        KvmVcpu {
            id,
            pat: Pat::reset(),
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [(0, 0); KVM_NR_VAR_MTRR],
            mtrr_var_mask_written: [false; KVM_NR_VAR_MTRR],
            mtrr: MtrrState::disabled(),
            cr0: CR0_RESET,
            cpuid_mtrr: true,
            maxphyaddr,
            smm: false,
        }
    }

    /// The vCPU id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The guest's IA32_PAT.
    pub fn pat(&self) -> Pat {
        self.pat
    }

    /// The guest's MTRRs, decoded.
    pub fn mtrr_state(&self) -> &MtrrState {
        &self.mtrr
    }

    /// Guest CR0.
    pub fn cr0(&self) -> u64 {
        self.cr0
    }

    /// `kvm_read_cr0_bits(vcpu, X86_CR0_CD)`.
    pub fn cr0_cd(&self) -> bool {
        self.cr0 & X86_CR0_CD != 0
    }

    /// Whether guest CPUID advertises MTRRs.
    pub fn cpuid_has_mtrr(&self) -> bool {
        self.cpuid_mtrr
    }

    /// The address space the vCPU's accesses use (`kvm_arch_vcpu_memslots_id()`).
    pub fn as_id(&self) -> u16 {
        u16::from(self.smm)
    }

    /// `kvm_vcpu_reserved_gpa_bits_raw()`: bits MAXPHYADDR..63.
    fn reserved_gpa_bits(&self) -> u64 {
        !((1u64 << self.maxphyaddr) - 1)
    }

    /// `kvm_mtrr_valid()`.
    fn mtrr_valid(&self, msr: MtrrMsr, data: u64) -> bool {
        match msr {
            MtrrMsr::DefType => data & !0xcff == 0 && valid_mtrr_type(data & 0xff),
            MtrrMsr::Fixed(_) => data
                .to_le_bytes()
                .iter()
                .all(|b| valid_mtrr_type(u64::from(*b))),
            MtrrMsr::VarBase(_) => {
                valid_mtrr_type(data & 0xff) && data & (self.reserved_gpa_bits() | 0xf00) == 0
            }
            MtrrMsr::VarMask(_) => data & (self.reserved_gpa_bits() | 0x7ff) == 0,
        }
    }

    fn mtrr_msrs(&self) -> MtrrMsrs<'_> {
        MtrrMsrs {
            cap: KVM_MTRRCAP,
            def_type: self.mtrr_def_type,
            fixed: self.mtrr_fixed,
            variable: &self.mtrr_var,
            maxphyaddr: self.maxphyaddr,
        }
    }

    /// `kvm_mtrr_set_msr()` minus the zap: validates, stores, re-decodes.
    fn set_mtrr(&mut self, msr: MtrrMsr, data: u64) -> bool {
        if !self.mtrr_valid(msr, data) {
            return false;
        }
        let saved = (self.mtrr_def_type, self.mtrr_fixed, self.mtrr_var);
        match msr {
            MtrrMsr::DefType => self.mtrr_def_type = data,
            MtrrMsr::Fixed(i) => self.mtrr_fixed[i] = data,
            MtrrMsr::VarBase(n) => self.mtrr_var[n].0 = data,
            MtrrMsr::VarMask(n) => self.mtrr_var[n].1 = data,
        }
        match MtrrState::from_msrs(&self.mtrr_msrs()) {
            Ok(state) => {
                self.mtrr = state;
                if let MtrrMsr::VarMask(n) = msr {
                    self.mtrr_var_mask_written[n] = true;
                }
                true
            }
            Err(_) => {
                // memtype refuses only what WRMSR refuses, which kvm_mtrr_valid() already did;
                // if they ever disagree, keep the vCPU consistent and report the #GP.
                (self.mtrr_def_type, self.mtrr_fixed, self.mtrr_var) = saved;
                false
            }
        }
    }

    /// `kvm_mtrr_get_msr()`.
    fn get_mtrr(&self, msr: MtrrMsr) -> u64 {
        match msr {
            MtrrMsr::DefType => self.mtrr_def_type,
            MtrrMsr::Fixed(i) => self.mtrr_fixed[i],
            MtrrMsr::VarBase(n) => self.mtrr_var[n].0,
            MtrrMsr::VarMask(n) => self.mtrr_var[n].1,
        }
    }

    /// `var_mtrr_range()`: the guest-physical span `[start, end)` of variable pair `n` as
    /// KVM computes it from its stored mask (reserved bits set once written, 0 before, in
    /// which case `end` wraps to 0 and the span is empty).
    pub(crate) fn var_mtrr_range(&self, n: usize) -> (u64, u64) {
        let (base, mask) = self.mtrr_var[n];
        let kvm_mask = if self.mtrr_var_mask_written[n] {
            mask | self.reserved_gpa_bits()
        } else {
            0
        };
        let start = base & !0xfff;
        (start, (start | !(kvm_mask & !0xfff)).wrapping_add(1))
    }

    /// `kvm_get_msr_common()` for the modeled MSRs.
    fn get_msr(&self, msr: u32) -> Option<u64> {
        match msr {
            MSR_IA32_CR_PAT => Some(self.pat.value()),
            MSR_MTRRCAP => Some(KVM_MTRRCAP),
            _ => MtrrMsr::from_index(msr).map(|m| self.get_mtrr(m)),
        }
    }
}

impl Kvm {
    /// The vCPU with id `vcpu`, if created.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<&KvmVcpu> {
        self.vcpus.get(&vcpu.0)
    }

    pub(crate) fn vcpu_mut(&mut self, vcpu: VcpuId) -> Result<&mut KvmVcpu, VcpuError> {
        self.vcpus
            .get_mut(&vcpu.0)
            .ok_or(VcpuError::NoSuchVcpu(vcpu.0))
    }

    /// `KVM_SET_MSRS` for IA32_PAT and the MTRRs: sets entries in order and stops at the
    /// first one refused (reserved encoding, reserved bits, an MSR the model does not
    /// emulate — MTRRcap is read-only), returning how many were set. `EBADF` for an unknown
    /// vCPU. In 6.7, MTRR writes may zap SPTEs (`update_mtrr()`).
    pub fn set_msrs(&mut self, vcpu: VcpuId, entries: &[(u32, u64)]) -> Result<usize, Errno> {
        if !self.vcpus.contains_key(&vcpu.0) {
            return Err(Errno::EBADF);
        }
        for (done, &(msr, data)) in entries.iter().enumerate() {
            if !self.kvm_set_msr(vcpu, msr, data) {
                return Ok(done);
            }
        }
        Ok(entries.len())
    }

    /// One guest or host `WRMSR`; false is #GP.
    fn kvm_set_msr(&mut self, vcpu: VcpuId, msr: u32, data: u64) -> bool {
        let Some(v) = self.vcpus.get_mut(&vcpu.0) else {
            return false;
        };
        if msr == MSR_IA32_CR_PAT {
            return match Pat::new(data) {
                Ok(pat) => {
                    v.pat = pat;
                    true
                }
                Err(_) => false,
            };
        }
        let Some(mtrr_msr) = MtrrMsr::from_index(msr) else {
            return false;
        };
        if !v.set_mtrr(mtrr_msr, data) {
            return false;
        }
        self.update_mtrr(vcpu, mtrr_msr);
        true
    }

    /// `KVM_GET_MSRS`: fills `entries[i].1` in order, stops at the first MSR the model does
    /// not emulate, returns how many were read.
    pub fn get_msrs(&self, vcpu: VcpuId, entries: &mut [(u32, u64)]) -> Result<usize, Errno> {
        let v = self.vcpus.get(&vcpu.0).ok_or(Errno::EBADF)?;
        for (done, entry) in entries.iter_mut().enumerate() {
            match v.get_msr(entry.0) {
                Some(value) => entry.1 = value,
                None => return Ok(done),
            }
        }
        Ok(entries.len())
    }

    /// Guest `MOV CR0` (`kvm_set_cr0()`): #GP for bits 63:32, NW without CD, PG without PE;
    /// ET always reads as 1. In 6.7 a CD toggle zaps all SPTEs while KVM honors guest MTRRs
    /// and `KVM_X86_QUIRK_CD_NW_CLEARED` is disabled (`kvm_post_set_cr0()`).
    pub fn set_cr0(&mut self, vcpu: VcpuId, cr0: u64) -> Result<(), VcpuError> {
        let gp = VcpuError::GeneralProtection {
            register: "CR0",
            value: cr0,
        };
        if cr0 >> 32 != 0
            || (cr0 & X86_CR0_NW != 0 && cr0 & X86_CR0_CD == 0)
            || (cr0 & X86_CR0_PG != 0 && cr0 & X86_CR0_PE == 0)
        {
            return Err(gp);
        }
        let v = self.vcpu_mut(vcpu)?;
        let old = v.cr0;
        v.cr0 = cr0 | X86_CR0_ET;
        self.kvm_post_set_cr0(old, cr0);
        Ok(())
    }

    /// Puts the vCPU in or out of SMM (address space 1), where the VM has SMM.
    pub fn set_vcpu_smm(&mut self, vcpu: VcpuId, smm: bool) -> Result<(), VcpuError> {
        let has_smm = self.profile.address_spaces() > 1;
        self.vcpu_mut(vcpu)?.smm = smm && has_smm;
        Ok(())
    }

    /// Sets whether guest CPUID advertises MTRRs (`KVM_SET_CPUID2`), which decides the type
    /// of memory while the guest's MTRRs are disabled in 6.7 (UC with, WB without).
    pub fn set_vcpu_cpuid_mtrr(&mut self, vcpu: VcpuId, has_mtrr: bool) -> Result<(), VcpuError> {
        self.vcpu_mut(vcpu)?.cpuid_mtrr = has_mtrr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{KernelProfile, Vendor};

    fn vm() -> (Kvm, VcpuId) {
        let mut kvm = Kvm::new(KernelProfile::parse("6.12", Vendor::Intel).unwrap());
        let v = kvm.create_vcpu(0).unwrap();
        (kvm, v)
    }

    #[test]
    fn set_msrs_stops_at_the_first_refusal() {
        let (mut kvm, v) = vm();
        let linux_pat = 0x0407_0506_0007_0106;
        let entries = [
            (MSR_IA32_CR_PAT, linux_pat),
            (MSR_MTRR_DEF_TYPE, 0xc06),
            (MSR_IA32_CR_PAT, 0x2),
            (MSR_MTRR_DEF_TYPE, 0x806),
        ];
        assert_eq!(kvm.set_msrs(v, &entries), Ok(2));
        let vcpu = kvm.vcpu(v).unwrap();
        assert_eq!(vcpu.pat().value(), linux_pat);
        assert!(vcpu.mtrr_state().enabled());
        assert_eq!(vcpu.mtrr_state().default_type(), MemType::Wb);
        assert_eq!(kvm.set_msrs(VcpuId(9), &entries), Err(Errno::EBADF));
    }

    #[test]
    fn mtrr_validation_matches_the_probe() {
        let (mut kvm, v) = vm();
        let one = |kvm: &mut Kvm, msr: u32, data: u64| kvm.set_msrs(v, &[(msr, data)]).unwrap();
        for (data, ok) in [
            (0x806, 1),
            (0xc00, 1),
            (0x2, 0),
            (0x3, 0),
            (0x7, 0),
            (0x1000, 0),
        ] {
            assert_eq!(
                one(&mut kvm, MSR_MTRR_DEF_TYPE, data),
                ok,
                "def type {data:#x}"
            );
        }
        assert_eq!(one(&mut kvm, 0x200, 0x8000_0001), 1);
        assert_eq!(one(&mut kvm, 0x201, 0xff_8000_0800), 1);
        assert_eq!(one(&mut kvm, 0x200, 0x8000_0002), 0, "reserved type");
        assert_eq!(
            one(&mut kvm, 0x201, (1 << 52) | 0x800),
            0,
            "beyond MAXPHYADDR"
        );
        assert_eq!(one(&mut kvm, 0x250, 0x0606_0606_0606_0606), 1);
        assert_eq!(one(&mut kvm, 0x250, 0x0606_0606_0606_0602), 0);
        assert_eq!(one(&mut kvm, 0x20e, 6), 1, "pair 7 exists");
        assert_eq!(one(&mut kvm, 0x210, 6), 0, "pair 8 does not");
        assert_eq!(one(&mut kvm, MSR_MTRRCAP, 0), 0, "MTRRcap is read-only");
        let mut read = [(MSR_MTRRCAP, 0), (0x201, 0), (0x1234, 7)];
        assert_eq!(kvm.get_msrs(v, &mut read), Ok(2));
        assert_eq!(
            read,
            [(MSR_MTRRCAP, 0x508), (0x201, 0xff_8000_0800), (0x1234, 7)]
        );
    }

    #[test]
    fn cr0_rules() {
        let (mut kvm, v) = vm();
        assert!(
            kvm.vcpu(v).unwrap().cr0_cd(),
            "RESET leaves caching disabled"
        );
        assert!(kvm.set_cr0(v, X86_CR0_NW).is_err());
        assert!(kvm.set_cr0(v, X86_CR0_PG).is_err());
        assert!(kvm.set_cr0(v, 1 << 32).is_err());
        assert_eq!(kvm.set_cr0(v, X86_CR0_PG | X86_CR0_PE), Ok(()));
        let vcpu = kvm.vcpu(v).unwrap();
        assert_eq!(vcpu.cr0(), X86_CR0_PG | X86_CR0_PE | X86_CR0_ET);
        assert!(!vcpu.cr0_cd());
        assert_eq!(kvm.set_cr0(VcpuId(3), 0), Err(VcpuError::NoSuchVcpu(3)));
    }
}
