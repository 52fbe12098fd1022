//! The calls a replay file can make and their arguments, as plain integers with serde
//! attributes for how each is written (see [`super::value`]). Region host addresses are a
//! pool offset or a raw address; the pool's bound is checked here, while parsing.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::value::{cap, cap_args, create_flags, device_type, memslot_flags, num};

/// Size of the host memory pool a replay maps for `userspace_offset` (1 GiB, reserved with
/// `MAP_NORESERVE` and never touched, so it costs address space only). Slots may share it:
/// KVM does not forbid two slots backed by the same host range.
pub const POOL_SIZE: u64 = 1 << 30;

/// Where a region's host memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAddr {
    /// `userspace_offset`: this many bytes into the replay's pool (any alignment; the pool
    /// itself is page aligned).
    PoolOffset(u64),
    /// `userspace_addr`: a raw host virtual address, passed through unchanged. For negative
    /// tests (unaligned, kernel-half or non-canonical addresses).
    Raw(u64),
}

/// The arguments of `KVM_SET_USER_MEMORY_REGION` and `KVM_SET_USER_MEMORY_REGION2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RegionFields", into = "RegionFields")]
pub struct Region {
    /// Raw `slot`: `as_id << 16 | id`.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// `guest_phys_addr`.
    pub guest_phys_addr: u64,
    /// `memory_size`; 0 deletes the slot.
    pub memory_size: u64,
    /// `userspace_addr`, as a pool offset or raw.
    pub host: HostAddr,
    /// `guest_memfd` (version 2 only).
    pub guest_memfd: u32,
    /// `guest_memfd_offset` (version 2 only).
    pub guest_memfd_offset: u64,
}

/// The fields of a region as written in the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFields {
    #[serde(with = "num")]
    slot: u32,
    #[serde(default, with = "memslot_flags")]
    flags: u32,
    #[serde(with = "num")]
    guest_phys_addr: u64,
    #[serde(with = "num")]
    memory_size: u64,
    #[serde(default, with = "opt_num", skip_serializing_if = "Option::is_none")]
    userspace_offset: Option<u64>,
    #[serde(default, with = "opt_num", skip_serializing_if = "Option::is_none")]
    userspace_addr: Option<u64>,
    #[serde(default, with = "num", skip_serializing_if = "is_zero")]
    guest_memfd: u32,
    #[serde(default, with = "num", skip_serializing_if = "is_zero")]
    guest_memfd_offset: u64,
}

/// The two fields `set_user_memory_region` (version 1) does not have.
pub(super) const V2_ONLY_FIELDS: [&str; 2] = ["guest_memfd", "guest_memfd_offset"];

fn is_zero<T: Copy + Into<u64>>(v: &T) -> bool {
    (*v).into() == 0
}

/// `Option<u64>` through [`num`].
mod opt_num {
    use serde::{Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::num::deserialize(d).map(Some)
    }

    pub(super) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::num::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

/// Why a region's host address is unusable.
#[derive(Debug, PartialEq, Eq)]
enum HostAddrError {
    NoneOrBoth,
    PastPool { offset: u64, size: u64 },
}

impl fmt::Display for HostAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostAddrError::NoneOrBoth => {
                f.write_str("give exactly one of `userspace_offset` and `userspace_addr`")
            }
            HostAddrError::PastPool { offset, size } => write!(
                f,
                "`userspace_offset` {offset:#x} + `memory_size` {size:#x} is past the end of \
                 the {POOL_SIZE:#x}-byte pool (use `userspace_addr` for a raw address)"
            ),
        }
    }
}

impl TryFrom<RegionFields> for Region {
    type Error = HostAddrError;

    fn try_from(f: RegionFields) -> Result<Region, HostAddrError> {
        let host = match (f.userspace_offset, f.userspace_addr) {
            (Some(offset), None) => {
                let end = u128::from(offset) + u128::from(f.memory_size);
                if end > u128::from(POOL_SIZE) {
                    return Err(HostAddrError::PastPool {
                        offset,
                        size: f.memory_size,
                    });
                }
                HostAddr::PoolOffset(offset)
            }
            (None, Some(addr)) => HostAddr::Raw(addr),
            _ => return Err(HostAddrError::NoneOrBoth),
        };
        Ok(Region {
            slot: f.slot,
            flags: f.flags,
            guest_phys_addr: f.guest_phys_addr,
            memory_size: f.memory_size,
            host,
            guest_memfd: f.guest_memfd,
            guest_memfd_offset: f.guest_memfd_offset,
        })
    }
}

impl From<Region> for RegionFields {
    fn from(r: Region) -> RegionFields {
        let (userspace_offset, userspace_addr) = match r.host {
            HostAddr::PoolOffset(o) => (Some(o), None),
            HostAddr::Raw(a) => (None, Some(a)),
        };
        RegionFields {
            slot: r.slot,
            flags: r.flags,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_offset,
            userspace_addr,
            guest_memfd: r.guest_memfd,
            guest_memfd_offset: r.guest_memfd_offset,
        }
    }
}

/// `KVM_CHECK_EXTENSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckExtension {
    /// The `KVM_CAP_*` number (a name in the file).
    #[serde(with = "cap")]
    pub cap: u32,
}

/// `KVM_CREATE_DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// `kvm_create_device.type`.
    #[serde(rename = "type", with = "device_type")]
    pub dev_type: u32,
    /// `kvm_create_device.flags` (`["test"]` for `KVM_CREATE_DEVICE_TEST`).
    #[serde(default, with = "create_flags")]
    pub flags: u32,
    /// The name later entries use for the device (`"as": "gpu0"`).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `KVM_SET_DEVICE_ATTR`, `KVM_HAS_DEVICE_ATTR`, `KVM_GET_DEVICE_ATTR` on a named device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAttr {
    /// The name a `create_device` gave (`"as"`).
    pub device: String,
    /// `kvm_device_attr.group`.
    #[serde(with = "num")]
    pub group: u32,
    /// `kvm_device_attr.attr`.
    #[serde(with = "num")]
    pub attr: u64,
    /// `kvm_device_attr.flags`.
    #[serde(default, with = "num", skip_serializing_if = "is_zero")]
    pub flags: u32,
    /// `kvm_device_attr.addr`, raw (set only: the kernel may read there; get supplies its
    /// own buffer).
    #[serde(default, with = "num", skip_serializing_if = "is_zero")]
    pub addr: u64,
}

/// `close()` of a named device's fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseDevice {
    /// The name a `create_device` gave.
    pub device: String,
}

/// `KVM_ENABLE_CAP` on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableCap {
    /// The capability (a name in the file).
    #[serde(with = "cap")]
    pub cap: u32,
    /// `kvm_enable_cap.flags`.
    #[serde(default, with = "num", skip_serializing_if = "is_zero")]
    pub flags: u32,
    /// `kvm_enable_cap.args[0..4]`.
    #[serde(default, with = "cap_args")]
    pub args: [u64; 4],
}

/// `KVM_GET_DIRTY_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetDirtyLog {
    /// Raw slot (`as_id << 16 | id`).
    #[serde(with = "num")]
    pub slot: u32,
}

/// One uAPI call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// `KVM_CHECK_EXTENSION` on the VM fd.
    CheckExtension(CheckExtension),
    /// `KVM_SET_USER_MEMORY_REGION`.
    SetUserMemoryRegion(Region),
    /// `KVM_SET_USER_MEMORY_REGION2`.
    SetUserMemoryRegion2(Region),
    /// `KVM_CREATE_DEVICE`.
    CreateDevice(CreateDevice),
    /// `KVM_SET_DEVICE_ATTR`.
    SetDeviceAttr(DeviceAttr),
    /// `KVM_HAS_DEVICE_ATTR`.
    HasDeviceAttr(DeviceAttr),
    /// `KVM_GET_DEVICE_ATTR`.
    GetDeviceAttr(DeviceAttr),
    /// `close()` of a device fd.
    CloseDevice(CloseDevice),
    /// `KVM_ENABLE_CAP`.
    EnableCap(EnableCap),
    /// `KVM_GET_DIRTY_LOG`.
    GetDirtyLog(GetDirtyLog),
}

impl Call {
    /// Every call name, as written in `"call"`.
    pub const NAMES: [&'static str; 10] = [
        "check_extension",
        "set_user_memory_region",
        "set_user_memory_region2",
        "create_device",
        "set_device_attr",
        "has_device_attr",
        "get_device_attr",
        "close_device",
        "enable_cap",
        "get_dirty_log",
    ];

    /// The name written in `"call"`.
    pub fn name(&self) -> &'static str {
        let i = match self {
            Call::CheckExtension(_) => 0,
            Call::SetUserMemoryRegion(_) => 1,
            Call::SetUserMemoryRegion2(_) => 2,
            Call::CreateDevice(_) => 3,
            Call::SetDeviceAttr(_) => 4,
            Call::HasDeviceAttr(_) => 5,
            Call::GetDeviceAttr(_) => 6,
            Call::CloseDevice(_) => 7,
            Call::EnableCap(_) => 8,
            Call::GetDirtyLog(_) => 9,
        };
        Call::NAMES[i]
    }

    /// The device name this call uses, if it acts on a device fd.
    pub fn device(&self) -> Option<&str> {
        match self {
            Call::SetDeviceAttr(a) | Call::HasDeviceAttr(a) | Call::GetDeviceAttr(a) => {
                Some(&a.device)
            }
            Call::CloseDevice(c) => Some(&c.device),
            _ => None,
        }
    }
}
