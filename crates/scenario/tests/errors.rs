//! A scenario file with an error is refused with one line naming the file, the line, the
//! table and the key. Each case edits the built-in `virtio-gpu-wc-bar` file in one place; the
//! expected line is where the edit landed.

use scenario::{Scenario, ScenarioError};

const BASE: &str = include_str!("../scenarios/virtio-gpu-wc-bar.toml");

/// Replaces the `nth` (0-based) occurrence of `from` in the base file.
fn edit(from: &str, nth: usize, to: &str) -> String {
    let at = BASE
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("{from:?} #{nth} is in the base file"))
        .0;
    format!("{}{to}{}", &BASE[..at], &BASE[at + from.len()..])
}

/// The 1-based line holding the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is in the edited file"));
    text[..at].matches('\n').count() + 1
}

fn refuse(text: &str) -> ScenarioError {
    match Scenario::parse(text, "bad.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_base_file_is_accepted() {
    let s = Scenario::parse(BASE, "base.toml").unwrap();
    assert_eq!((s.regions.len(), s.devices.len(), s.steps.len()), (2, 1, 5));
}

#[test]
fn each_error_names_its_line_table_and_key() {
    // (what, edited file, the text on the offending line, expected message parts)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "unknown key",
            edit("pat_index = 1", 0, "pat_idx = 1"),
            "pat_idx = 1",
            &["[[step]] #2, `pat_idx`", "unknown field `pat_idx`"],
        ),
        (
            "bad type",
            edit("pat_index = 1", 0, "pat_index = \"one\""),
            "pat_index = \"one\"",
            &["[[step]] #2, `pat_index`", "invalid type"],
        ),
        (
            "PAT index out of range",
            edit("pat_index = 1", 0, "pat_index = 8"),
            "pat_index = 8",
            &["`pat_index`", "8 is not a PAT entry index"],
        ),
        (
            "bad size",
            edit("size = \"256MiB\"", 0, "size = \"256MB\""),
            "size = \"256MB\"",
            &["[[region]] #2, `size`", "\"256MB\" is not a size"],
        ),
        (
            "unaligned address",
            edit("gpa = \"0x100000000\"", 0, "gpa = \"0x100000800\""),
            "gpa = \"0x100000800\"",
            &["[[region]] #2, `gpa`", "not page aligned"],
        ),
        (
            "overlapping regions",
            edit("gpa = \"0x100000000\"", 0, "gpa = \"0x20000000\""),
            "gpa = \"0x20000000\"",
            &["[[region]] #2, `gpa`", "overlaps region \"ram\""],
        ),
        (
            "duplicate region name",
            edit("name = \"bar\"", 0, "name = \"ram\""),
            "name = \"ram\"\nkind = \"bar\"",
            &["[[region]] #2, `name`", "already exists"],
        ),
        (
            "registering a coherent region",
            edit("noncoherent = true", 0, "noncoherent = false"),
            "register = [",
            &[
                "[[region]] #2, `register`",
                "only a noncoherent region is registered",
            ],
        ),
        (
            "unknown mechanism",
            edit("\"virtio-device\"]", 0, "\"virtio\"]"),
            "register = [",
            &["`register`", "unknown variant `virtio`"],
        ),
        (
            "unknown region in a step",
            edit("region = \"bar\"", 0, "region = \"vram\""),
            "region = \"vram\"",
            &[
                "[[step]] #2, `region`",
                "no region named \"vram\" (regions: ram, bar)",
            ],
        ),
        (
            "unknown device in a step",
            edit("device = \"gpu\"", 0, "device = \"gpu0\""),
            "device = \"gpu0\"",
            &["[[step]] #4, `device`", "no device named \"gpu0\""],
        ),
        (
            "bytes outside the region",
            edit("len = \"4KiB\"", 0, "len = \"512MiB\""),
            "offset = \"0x0\"\nlen = \"512MiB\"",
            &["[[step]] #2, `offset`", "outside region \"bar\""],
        ),
        (
            "a key the step does not take",
            edit(
                "do = \"guest.sfence\"",
                0,
                "do = \"guest.sfence\"\nflush = true",
            ),
            "flush = true",
            &["[[step]] #3, `flush`", "guest.sfence does not take `flush`"],
        ),
        (
            "a value wider than the store",
            edit("value = \"0x1\"", 0, "value = \"0x1ff\"\nlen = 1"),
            "value = \"0x1ff\"",
            &["[[step]] #1, `value`", "does not fit in len = 1 bytes"],
        ),
        (
            "unknown step kind",
            edit("do = \"guest.sfence\"", 0, "do = \"guest.sfense\""),
            "do = \"guest.sfense\"",
            &["[[step]] #3, `do`", "unknown variant `guest.sfense`"],
        ),
        (
            "unknown kernel",
            edit("kernel = \"6.16+memslot-flag\"", 0, "kernel = \"6.13\""),
            "kernel = \"6.13\"",
            &["[vm], `kernel`", "unknown kernel profile \"6.13\""],
        ),
        (
            "reserved guest PAT entry",
            edit(
                "guest_pat = \"0x0407050600070106\"",
                0,
                "guest_pat = \"0x0407050600070102\"",
            ),
            "guest_pat = ",
            &["[vm], `guest_pat`"],
        ),
        (
            "unknown profile in an expectation",
            edit("\"6.12\", \"6.16\"]", 0, "\"6.12\", \"6.15\"]"),
            "profiles = [\"6.7\", \"6.12\", \"6.15\"]",
            &[
                "[[expect]] #1, `profiles`",
                "unknown kernel profile \"6.15\"",
            ],
        ),
        (
            "unknown verdict",
            edit("verdicts = [\"stale-read\"]", 0, "verdicts = [\"stale\"]"),
            "verdicts = [\"stale\"]",
            &["[[expect]] #1, `verdicts`", "unknown variant `stale`"],
        ),
        (
            "not TOML",
            "name = \"x\"\nthis is not toml\n".to_string(),
            "this is",
            &["expected `=`"],
        ),
    ];
    for (what, text, on_line, parts) in cases {
        let e = refuse(&text);
        let message = e.to_string();
        assert_eq!(e.line, line_of(&text, on_line), "{what}: {message}");
        assert!(
            message.starts_with(&format!("bad.toml:{}:", e.line)),
            "{what}: {message}"
        );
        assert!(!message.contains('\n'), "{what}: one line: {message}");
        for part in parts {
            assert!(message.contains(part), "{what}: {message:?} lacks {part:?}");
        }
    }
}

#[test]
fn a_missing_key_names_its_table_not_a_neighbour() {
    let text = edit(
        "region = \"bar\"\noffset = \"0x0\"\nlen = \"4KiB\"\nvalue",
        0,
        "offset = \"0x0\"\nlen = \"4KiB\"\nvalue",
    );
    let e = refuse(&text);
    assert!(
        e.message
            .ends_with("[[step]] #2: guest.fill needs `region`"),
        "{e}"
    );
    let e = refuse("summary = \"s\"\ndescription = \"d\"\n");
    assert_eq!(e.to_string(), "bad.toml:1:1: missing field `name`");
    let text = edit("kind = \"bar\"\n", 0, "");
    let e = refuse(&text);
    assert_eq!(e.line, line_of(&text, "[[region]]\nname = \"bar\""), "{e}");
    assert!(
        e.message.ends_with("[[region]] #2: missing field `kind`"),
        "{e}"
    );
}
