//! The built-in scenarios, embedded from `crates/scenario/scenarios/*.toml`, and finding a
//! scenario by built-in name or file path.

use crate::error::{LoadError, ScenarioError};
use crate::scenario::Scenario;

/// Name and text of every built-in scenario, in the order `ncdma scenarios` lists them.
const BUILTIN: [(&str, &str); 9] = [
    (
        "virtio-gpu-wc-bar",
        include_str!("../scenarios/virtio-gpu-wc-bar.toml"),
    ),
    (
        "virtio-device-vm-wide",
        include_str!("../scenarios/virtio-device-vm-wide.toml"),
    ),
    (
        "bochs-uc-vram",
        include_str!("../scenarios/bochs-uc-vram.toml"),
    ),
    (
        "migration-read",
        include_str!("../scenarios/migration-read.toml"),
    ),
    (
        "migration-read-flushed",
        include_str!("../scenarios/migration-read-flushed.toml"),
    ),
    ("info-leak", include_str!("../scenarios/info-leak.toml")),
    (
        "info-leak-flushed",
        include_str!("../scenarios/info-leak-flushed.toml"),
    ),
    (
        "ram-slot-flagged",
        include_str!("../scenarios/ram-slot-flagged.toml"),
    ),
    (
        "vfio-noncoherent",
        include_str!("../scenarios/vfio-noncoherent.toml"),
    ),
];

/// The built-in scenarios' names.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// The built-in scenario `name`, parsed; `None` if there is none by that name.
pub fn builtin(name: &str) -> Option<Result<Scenario, ScenarioError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Scenario::parse(text, &format!("builtin:{n}")))
}

/// Every built-in scenario, parsed.
pub fn builtins() -> Result<Vec<Scenario>, ScenarioError> {
    builtin_names().filter_map(builtin).collect()
}

/// A built-in scenario by name, else the scenario file at `name_or_path`.
pub fn load(name_or_path: &str) -> Result<Scenario, LoadError> {
    if let Some(parsed) = builtin(name_or_path) {
        return Ok(parsed?);
    }
    let path = std::path::Path::new(name_or_path);
    if !path.exists() {
        return Err(LoadError::NotFound {
            name: name_or_path.to_string(),
            builtins: builtin_names().collect::<Vec<_>>().join(", "),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: name_or_path.to_string(),
        source,
    })?;
    Ok(Scenario::parse(&text, name_or_path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_under_its_own_name() {
        let all = builtins().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, builtin_names().collect::<Vec<_>>());
        for s in &all {
            assert!(
                !s.summary.contains('\n'),
                "{}: the summary is one line",
                s.name
            );
            assert!(!s.expects.is_empty(), "{}: states what it expects", s.name);
        }
    }

    #[test]
    fn unknown_names_list_the_builtins() {
        let err = load("no-such-scenario").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"no-such-scenario\"") && text.contains("virtio-gpu-wc-bar"),
            "{text}"
        );
    }
}
