//! `[[expect]]`: the verdicts a scenario's author expects on a set of kernels. The first
//! entry whose `profiles` and `vendor` match a run applies; a run no entry matches has no
//! expectation. An expectation holds when the run's hazards are exactly its `verdicts`.

use std::collections::BTreeSet;

use kvm_model::{KernelProfile, Vendor};
use serde::Serialize;

use crate::hazard::Hazard;

/// One `[[expect]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Line of its header.
    pub line: usize,
    /// Profile names it covers; `None` for `["*"]`.
    pub profiles: Option<Vec<&'static str>>,
    /// The vendor it covers; `None` for `"*"`.
    pub vendor: Option<Vendor>,
    /// The hazards the run must show, exactly.
    pub verdicts: BTreeSet<Hazard>,
}

impl Expect {
    /// Whether the entry covers `profile`.
    pub fn covers(&self, profile: &KernelProfile) -> bool {
        let name_ok = self
            .profiles
            .as_ref()
            .is_none_or(|names| names.contains(&profile.name()));
        name_ok && self.vendor.is_none_or(|v| v == profile.vendor)
    }
}

/// How a run compares with the expectation that covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// Line of the `[[expect]]` that applies.
    pub line: usize,
    /// The hazards expected.
    pub expected: Vec<Hazard>,
    /// Whether the run showed exactly those.
    pub holds: bool,
}

/// Compares the hazards a run on `profile` showed with the first entry covering it.
pub fn check(
    expects: &[Expect],
    profile: &KernelProfile,
    actual: &BTreeSet<Hazard>,
) -> Option<Expectation> {
    let e = expects.iter().find(|e| e.covers(profile))?;
    Some(Expectation {
        line: e.line,
        expected: e.verdicts.iter().copied().collect(),
        holds: e.verdicts == *actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(
        line: usize,
        profiles: Option<Vec<&'static str>>,
        vendor: Option<Vendor>,
        v: &[Hazard],
    ) -> Expect {
        Expect {
            line,
            profiles,
            vendor,
            verdicts: v.iter().copied().collect(),
        }
    }

    #[test]
    fn the_first_covering_entry_applies() {
        let expects = [
            expect(
                1,
                Some(vec!["6.16"]),
                Some(Vendor::Intel),
                &[Hazard::StaleRead],
            ),
            expect(2, None, None, &[]),
        ];
        let p = KernelProfile::parse("6.16", Vendor::Intel).unwrap();
        let stale: BTreeSet<Hazard> = [Hazard::StaleRead].into();
        assert_eq!(
            check(&expects, &p, &stale).map(|e| (e.line, e.holds)),
            Some((1, true))
        );
        assert_eq!(
            check(&expects, &p, &BTreeSet::new()).map(|e| e.holds),
            Some(false)
        );
        let amd = KernelProfile::parse("6.16", Vendor::Amd).unwrap();
        assert_eq!(
            check(&expects, &amd, &stale).map(|e| (e.line, e.holds)),
            Some((2, false))
        );
        assert_eq!(check(&expects[..1], &amd, &stale), None);
    }
}
