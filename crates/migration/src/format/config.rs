//! The VM configuration chunk: guest memory regions with their coherence, how each was
//! registered with KVM, the noncoherent policy the user chose for it, and the vCPU count.
//! [`VmConfig::validate`] holds the rules both ends apply before trusting a configuration.

use std::fmt;

use super::wire::{Dec, Enc};
use super::{MAX_REGIONS, MAX_VCPUS, NAME_LEN, PAGE_SIZE};
use crate::error::{ConfigError, EncodeError, Malformation};

/// Bytes per region entry.
const REGION_LEN: usize = 24 + NAME_LEN;
/// The largest `VmConfig` payload.
pub(super) const MAX_PAYLOAD: usize = 8 + MAX_REGIONS * REGION_LEN;

/// Declares a `#[repr(u8)]` wire enum whose `TryFrom<u8>` rejects 0 and unknown values.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl TryFrom<u8> for $name {
            type Error = u8;

            fn try_from(v: u8) -> Result<Self, u8> {
                match v {
                    $($value => Ok($name::$variant),)+
                    other => Err(other),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }
    };
}

wire_enum! {
    /// What backs a region.
    RegionKind {
        /// Guest system RAM.
        Ram = 1 => "ram",
        /// A device BAR (e.g. virtio-GPU blob memory).
        Bar = 2 => "bar",
    }
}

wire_enum! {
    /// Whether devices access the region with snooping DMA.
    Coherence {
        /// Every access snoops CPU caches.
        Coherent = 1 => "coherent",
        /// A device reads or writes it without snooping: cached host copies can be stale.
        Noncoherent = 2 => "noncoherent",
    }
}

wire_enum! {
    /// How the source registered a noncoherent region with KVM (reported, and checked for
    /// consistency with the coherence).
    Registration {
        /// Not registered: the region is coherent.
        None = 1 => "none",
        /// `KVM_MEM_NON_COHERENT_DMA` on the memslot (proposal B).
        MemslotFlag = 2 => "memslot-flag",
        /// A `KVM_DEV_TYPE_VIRTIO` device set noncoherent (proposal A).
        VirtioDevice = 3 => "virtio-device",
        /// `KVM_X86_QUIRK_IGNORE_GUEST_PAT` disabled (VM-wide).
        Quirk = 4 => "quirk",
        /// AMD NPT honors guest PAT without registration.
        Npt = 5 => "npt",
        /// Nothing made it safe; the user asked to run anyway.
        Unsafe = 6 => "unsafe",
    }
}

wire_enum! {
    /// How a region's contents travel. Coherent regions are always `Copy`; the user picks
    /// one of the others for each noncoherent region.
    Policy {
        /// Plain copy (coherent regions only).
        Copy = 1 => "copy",
        /// Flush every line of a page (CLFLUSHOPT + SFENCE) before the source reads it and
        /// after the destination writes it. The default for noncoherent regions.
        Flush = 2 => "flush",
        /// Send nothing; the destination's device re-creates the contents.
        Skip = 3 => "skip",
        /// The region cannot be migrated; the migration fails before anything is sent.
        Refuse = 4 => "refuse",
    }
}

/// One guest memory region.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// Unique within the configuration; pages name their region by it.
    pub id: u32,
    /// Unique, nonempty, at most [`NAME_LEN`] bytes.
    pub name: String,
    /// RAM or BAR.
    pub kind: RegionKind,
    /// Snooped or not.
    pub coherence: Coherence,
    /// How it was registered with KVM.
    pub registration: Registration,
    /// How its contents travel.
    pub policy: Policy,
    /// Guest-physical address, page aligned.
    pub gpa: u64,
    /// Bytes, a nonzero multiple of [`PAGE_SIZE`].
    pub size: u64,
}

impl RegionConfig {
    /// A coherent region (registration `none`, policy `copy`).
    pub fn coherent(id: u32, name: &str, kind: RegionKind, gpa: u64, size: u64) -> Self {
        RegionConfig {
            id,
            name: name.to_owned(),
            kind,
            coherence: Coherence::Coherent,
            registration: Registration::None,
            policy: Policy::Copy,
            gpa,
            size,
        }
    }

    /// A noncoherent region with the default policy, `flush`.
    pub fn noncoherent(
        id: u32,
        name: &str,
        kind: RegionKind,
        registration: Registration,
        gpa: u64,
        size: u64,
    ) -> Self {
        RegionConfig {
            coherence: Coherence::Noncoherent,
            registration,
            policy: Policy::Flush,
            ..Self::coherent(id, name, kind, gpa, size)
        }
    }

    /// Pages in the region (its size is validated to be a multiple of the page size that
    /// fits a `u32` page count).
    pub fn pages(&self) -> u32 {
        u32::try_from(self.size / PAGE_SIZE as u64).unwrap_or(u32::MAX)
    }

    /// Whether page contents are sent for this region.
    pub fn carries_pages(&self) -> bool {
        matches!(self.policy, Policy::Copy | Policy::Flush)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let page = PAGE_SIZE as u64;
        for (field, value) in [("gpa", self.gpa), ("size", self.size)] {
            if value % page != 0 || (field == "size" && value == 0) {
                return Err(ConfigError::Misaligned {
                    region: self.name.clone(),
                    field,
                    value,
                });
            }
        }
        if self.gpa.checked_add(self.size).is_none() || self.size / page > u64::from(u32::MAX) {
            return Err(ConfigError::TooLarge {
                region: self.name.clone(),
            });
        }
        let coherent = self.coherence == Coherence::Coherent;
        if coherent != (self.policy == Policy::Copy) {
            return Err(ConfigError::PolicyMismatch {
                region: self.name.clone(),
                coherence: self.coherence,
                policy: self.policy,
            });
        }
        if coherent != (self.registration == Registration::None) {
            return Err(ConfigError::RegistrationMismatch {
                region: self.name.clone(),
                coherence: self.coherence,
                registration: self.registration,
            });
        }
        Ok(())
    }
}

/// The VM configuration.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// vCPUs; each must arrive exactly once, with ids `0..vcpu_count`.
    pub vcpu_count: u32,
    /// Memory regions, at most [`MAX_REGIONS`].
    pub regions: Vec<RegionConfig>,
}

impl VmConfig {
    /// Bytes of the regions whose pages are sent: what a destination stages (saturating:
    /// validated regions do not wrap, but their sum could).
    pub fn staged_bytes(&self) -> u64 {
        (self.regions.iter())
            .filter(|r| r.carries_pages())
            .fold(0u64, |sum, r| sum.saturating_add(r.size))
    }

    /// The region with this id.
    pub fn region(&self, id: u32) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// The rules every configuration obeys: at least one vCPU and one region; unique ids
    /// and names; page-aligned, nonempty regions that neither wrap nor overlap; coherent
    /// regions are copied and unregistered, noncoherent ones have a noncoherent policy and
    /// a registration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpu_count == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.regions.is_empty() {
            return Err(ConfigError::NoRegions);
        }
        for (i, region) in self.regions.iter().enumerate() {
            region.check()?;
            for earlier in &self.regions[..i] {
                if earlier.id == region.id {
                    return Err(ConfigError::DuplicateRegionId { id: region.id });
                }
                if earlier.name == region.name {
                    return Err(ConfigError::DuplicateRegionName {
                        name: region.name.clone(),
                    });
                }
            }
        }
        // Sorted by address, regions overlap exactly when one starts before its predecessor
        // ends (sizes are nonzero and do not wrap, checked above).
        let mut by_gpa: Vec<&RegionConfig> = self.regions.iter().collect();
        by_gpa.sort_by_key(|r| r.gpa);
        for pair in by_gpa.windows(2) {
            if pair[1].gpa < pair[0].gpa + pair[0].size {
                return Err(ConfigError::Overlap {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.regions.len() > MAX_REGIONS {
            return Err(EncodeError::TooMany {
                field: "region count",
                count: self.regions.len() as u64,
                cap: MAX_REGIONS as u64,
            });
        }
        if self.vcpu_count > MAX_VCPUS {
            return Err(EncodeError::TooMany {
                field: "vcpu count",
                count: self.vcpu_count.into(),
                cap: MAX_VCPUS.into(),
            });
        }
        let mut enc = Enc::new(buf);
        enc.u32(self.vcpu_count);
        enc.u32(self.regions.len() as u32);
        for r in &self.regions {
            enc.u32(r.id);
            enc.u8(r.kind as u8);
            enc.u8(r.coherence as u8);
            enc.u8(r.registration as u8);
            enc.u8(r.policy as u8);
            enc.u64(r.gpa);
            enc.u64(r.size);
            enc.name("region name", &r.name, NAME_LEN)?;
        }
        Ok(())
    }

    /// Decodes the payload. Only the wire is checked here; [`VmConfig::validate`] is the
    /// caller's next step.
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(payload);
        let vcpu_count = dec.u32("vcpu count")?;
        if vcpu_count > MAX_VCPUS {
            return Err(Malformation::TooMany {
                field: "vcpu count",
                count: vcpu_count.into(),
                cap: MAX_VCPUS.into(),
            });
        }
        let count = dec.u32("region count")?;
        if count as usize > MAX_REGIONS {
            return Err(Malformation::TooMany {
                field: "region count",
                count: count.into(),
                cap: MAX_REGIONS as u64,
            });
        }
        let count = count as usize;
        let mut regions = Vec::with_capacity(count);
        for _ in 0..count {
            let id = dec.u32("region id")?;
            let kind = byte_enum(&mut dec, "region kind")?;
            let coherence = byte_enum(&mut dec, "coherence")?;
            let registration = byte_enum(&mut dec, "registration")?;
            let policy = byte_enum(&mut dec, "policy")?;
            regions.push(RegionConfig {
                id,
                kind,
                coherence,
                registration,
                policy,
                gpa: dec.u64("gpa")?,
                size: dec.u64("size")?,
                name: dec.name("region name", NAME_LEN, false)?,
            });
        }
        dec.finish()?;
        Ok(VmConfig {
            vcpu_count,
            regions,
        })
    }
}

/// Reads one byte and maps it through a wire enum's `TryFrom<u8>`.
fn byte_enum<T: TryFrom<u8, Error = u8>>(
    dec: &mut Dec<'_>,
    field: &'static str,
) -> Result<T, Malformation> {
    T::try_from(dec.u8(field)?).map_err(|v| Malformation::BadValue {
        field,
        value: v.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn config() -> VmConfig {
        VmConfig {
            vcpu_count: 2,
            regions: vec![
                RegionConfig::coherent(0, "ram", RegionKind::Ram, 0, 64 * MIB),
                RegionConfig::noncoherent(
                    1,
                    "gpu-bar",
                    RegionKind::Bar,
                    Registration::MemslotFlag,
                    0x1_0000_0000,
                    16 * MIB,
                ),
            ],
        }
    }

    fn encoded(c: &VmConfig) -> Vec<u8> {
        let mut buf = Vec::new();
        c.encode(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trips() {
        let c = config();
        assert_eq!(VmConfig::decode(&encoded(&c)), Ok(c.clone()));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.regions[1].pages(), 4096);
        assert_eq!(c.regions[1].policy, Policy::Flush);
    }

    #[test]
    fn enums_reject_zero_and_unknown_values() {
        for bad in [0u8, 7, 255] {
            assert_eq!(Registration::try_from(bad), Err(bad));
        }
        for (offset, field) in [
            (12usize, "region kind"),
            (13, "coherence"),
            (14, "registration"),
            (15, "policy"),
        ] {
            let mut bytes = encoded(&config());
            bytes[offset] = 0;
            assert_eq!(
                VmConfig::decode(&bytes),
                Err(Malformation::BadValue { field, value: 0 })
            );
        }
    }

    #[test]
    fn region_count_must_match_the_payload_and_its_cap() {
        let mut bytes = encoded(&config());
        bytes[4] = 3;
        assert_eq!(
            VmConfig::decode(&bytes),
            Err(Malformation::Short { field: "region id" })
        );
        bytes[4] = 1;
        assert_eq!(
            VmConfig::decode(&bytes),
            Err(Malformation::Trailing {
                bytes: REGION_LEN as u64
            })
        );
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            VmConfig::decode(&bytes),
            Err(Malformation::TooMany {
                field: "region count",
                count: u32::MAX.into(),
                cap: MAX_REGIONS as u64
            })
        );
    }

    #[test]
    fn each_inconsistency_has_its_error() {
        type Edit = fn(&mut VmConfig);
        // (edit, expected error)
        let cases: [(Edit, ConfigError); 10] = [
            (|c| c.vcpu_count = 0, ConfigError::NoVcpus),
            (|c| c.regions.clear(), ConfigError::NoRegions),
            (
                |c| c.regions[1].id = 0,
                ConfigError::DuplicateRegionId { id: 0 },
            ),
            (
                |c| c.regions[1].name = "ram".into(),
                ConfigError::DuplicateRegionName { name: "ram".into() },
            ),
            (
                |c| c.regions[1].gpa += 1,
                ConfigError::Misaligned {
                    region: "gpu-bar".into(),
                    field: "gpa",
                    value: 0x1_0000_0001,
                },
            ),
            (
                |c| c.regions[0].size = 0,
                ConfigError::Misaligned {
                    region: "ram".into(),
                    field: "size",
                    value: 0,
                },
            ),
            (
                |c| c.regions[1].gpa = u64::MAX - 4095,
                ConfigError::TooLarge {
                    region: "gpu-bar".into(),
                },
            ),
            (
                |c| c.regions[1].gpa = 63 * MIB,
                ConfigError::Overlap {
                    first: "ram".into(),
                    second: "gpu-bar".into(),
                },
            ),
            (
                |c| c.regions[0].policy = Policy::Skip,
                ConfigError::PolicyMismatch {
                    region: "ram".into(),
                    coherence: Coherence::Coherent,
                    policy: Policy::Skip,
                },
            ),
            (
                |c| c.regions[1].registration = Registration::None,
                ConfigError::RegistrationMismatch {
                    region: "gpu-bar".into(),
                    coherence: Coherence::Noncoherent,
                    registration: Registration::None,
                },
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut c = config();
            edit(&mut c);
            assert_eq!(c.validate(), Err(want), "case {i}");
        }
    }

    #[test]
    fn adjacent_regions_do_not_overlap() {
        let mut c = config();
        c.regions[1].gpa = 64 * MIB;
        assert_eq!(c.validate(), Ok(()));
    }
}
