//! The named properties a run is checked against, in stateright's sense of
//! "always" properties: each holds iff no verdict of its kind was found.

use core::fmt;

/// A property every correct design must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// Every read returns the latest committed value.
    NoStaleRead = 0,
    /// No write-back overwrites a newer committed value in memory.
    NoLostWrite = 1,
    /// No page is used uncached while a CPU caches one of its lines.
    NoConflictingAlias = 2,
    /// No read returns a previous owner's bytes in place of newer data.
    NoInfoLeak = 3,
}

impl Property {
    /// Every property, in a fixed order.
    pub const ALL: [Property; 4] = [
        Property::NoStaleRead,
        Property::NoLostWrite,
        Property::NoConflictingAlias,
        Property::NoInfoLeak,
    ];

    /// The property's name: `no_stale_read`, `no_lost_write`,
    /// `no_conflicting_alias`, `no_info_leak`.
    pub const fn name(self) -> &'static str {
        match self {
            Property::NoStaleRead => "no_stale_read",
            Property::NoLostWrite => "no_lost_write",
            Property::NoConflictingAlias => "no_conflicting_alias",
            Property::NoInfoLeak => "no_info_leak",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
