//! The verdict names a scenario file and a report use, one per property of the coherence
//! simulator: `stale-read`, `lost-write`, `conflicting-alias`, `info-leak`.

use std::fmt;

use coherence::Property;
use serde::{Deserialize, Serialize};

/// A violated coherence property, by its scenario name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hazard {
    /// A read returned data older than the latest committed write ([`Property::NoStaleRead`]).
    StaleRead,
    /// A write-back destroyed a newer value in memory ([`Property::NoLostWrite`]).
    LostWrite,
    /// A page was used uncached while a cache held one of its lines
    /// ([`Property::NoConflictingAlias`]).
    ConflictingAlias,
    /// A read returned a previous owner's bytes ([`Property::NoInfoLeak`]).
    InfoLeak,
}

impl Hazard {
    /// Every hazard, in the order of [`Property::ALL`].
    pub const ALL: [Hazard; 4] = [
        Hazard::StaleRead,
        Hazard::LostWrite,
        Hazard::ConflictingAlias,
        Hazard::InfoLeak,
    ];

    /// The name used in files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Hazard::StaleRead => "stale-read",
            Hazard::LostWrite => "lost-write",
            Hazard::ConflictingAlias => "conflicting-alias",
            Hazard::InfoLeak => "info-leak",
        }
    }

    /// The simulator property this hazard violates.
    pub const fn property(self) -> Property {
        match self {
            Hazard::StaleRead => Property::NoStaleRead,
            Hazard::LostWrite => Property::NoLostWrite,
            Hazard::ConflictingAlias => Property::NoConflictingAlias,
            Hazard::InfoLeak => Property::NoInfoLeak,
        }
    }
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        verdicts: Vec<Hazard>,
    }

    #[test]
    fn names_match_the_serde_names() {
        let names: Vec<String> = Hazard::ALL.iter().map(|h| format!("\"{h}\"")).collect();
        let doc: Doc = toml::from_str(&format!("verdicts = [{}]", names.join(", "))).unwrap();
        assert_eq!(doc.verdicts, Hazard::ALL);
    }

    #[test]
    fn one_hazard_per_property_in_the_same_order() {
        let props: Vec<Property> = Hazard::ALL.iter().map(|h| h.property()).collect();
        assert_eq!(props, Property::ALL);
    }
}
