//! The renderings of a matrix: the text table, the SVG picture and the conclusion, each
//! checked against the runs they were drawn from.

use kvm_model::Vendor;
use scenario::{RunReport, Scenario};

fn gpu() -> (Scenario, Vec<RunReport>) {
    let s = scenario::builtin("virtio-gpu-wc-bar").unwrap().unwrap();
    let rows = scenario::run_all(&s, &[Vendor::Intel, Vendor::Amd]).unwrap();
    (s, rows)
}

#[test]
fn the_table_has_one_row_per_run_in_run_order() {
    let (_, rows) = gpu();
    let text = scenario::table::matrix(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + rows.len(), "{text}");
    assert!(
        lines[0].starts_with("kernel") && lines[1].starts_with("---"),
        "{text}"
    );
    for (line, r) in lines[2..].iter().zip(&rows) {
        assert!(
            line.starts_with(&format!("{}/{} ", r.kernel, r.vendor)),
            "{line}"
        );
        let verdict = if r.verdicts.is_empty() {
            "none"
        } else {
            "stale-read (bar)"
        };
        assert!(line.contains(verdict) && line.ends_with("holds"), "{line}");
    }
    let flagged = lines
        .iter()
        .find(|l| l.starts_with("6.16+memslot-flag/intel"))
        .unwrap();
    assert!(
        flagged.contains("bar: memslot-flag")
            && flagged.contains("ram: WB (ignored), bar: WC (honored)"),
        "{flagged}"
    );
}

#[test]
fn the_svg_has_a_panel_per_run_and_a_marker_per_hazard() {
    let (s, rows) = gpu();
    let svg = scenario::svg::render(&s, &rows);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{}",
        &svg[..80]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<g class=\"panel\"").count(), rows.len());
    assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
    let hazards: usize = rows.iter().map(|r| r.verdicts.len()).sum();
    assert_eq!(svg.matches("<circle").count(), hazards);
    assert_eq!(
        svg.matches("stale-read at bar+0x0 (step 4)").count(),
        hazards
    );
    // Every region has a band in every panel.
    assert_eq!(svg.matches("(no guest access)").count(), 0);
    assert_eq!(
        svg.matches("bar (bar, noncoherent DMA), 256 MiB").count(),
        rows.len()
    );
}

#[test]
fn svg_text_is_escaped() {
    let text = include_str!("../scenarios/virtio-gpu-wc-bar.toml")
        .replace("name = \"virtio-gpu-wc-bar\"", "name = \"<a & b>\"");
    let s = Scenario::parse(&text, "t.toml").unwrap();
    let rows = vec![scenario::run(&s, s.vm.kernel).unwrap()];
    let svg = scenario::svg::render(&s, &rows);
    assert!(svg.contains("&lt;a &amp; b&gt;") && !svg.contains("<a & b>"));
}

#[test]
fn the_conclusion_follows_the_matrix() {
    let (s, rows) = gpu();
    let text = scenario::conclusion::conclusion(&s, &rows);
    assert!(
        text.contains("On intel, the data is corrupted (stale-read) on 6.7, 6.12 and 6.16, where KVM ignores the guest's memory type for bar"),
        "{text}"
    );
    assert!(
        text.contains("6.7+memslot-flag and 6.16+memslot-flag honor guest PAT for bar alone"),
        "{text}"
    );
    assert!(
        text.contains("6.7+virtio-device and 6.11-selfsnoop honor guest PAT for the whole VM"),
        "{text}"
    );
    assert!(text.contains("On amd, the data stays correct on every profile (7): all honor guest PAT for the whole VM"), "{text}");
    // Drawn from the rows: with only the flag kernels, nothing is corrupt.
    let flagged: Vec<RunReport> = rows
        .into_iter()
        .filter(|r| r.kernel.ends_with("memslot-flag"))
        .collect();
    let text = scenario::conclusion::conclusion(&s, &flagged);
    assert!(!text.contains("corrupted"), "{text}");
}

#[test]
fn a_wrong_expectation_is_reported() {
    let text = include_str!("../scenarios/virtio-gpu-wc-bar.toml").replace(
        "profiles = [\"6.7\", \"6.12\", \"6.16\"]",
        "profiles = [\"6.7\", \"6.12\"]",
    );
    let s = Scenario::parse(&text, "t.toml").unwrap();
    let rows = scenario::run_all(&s, &[Vendor::Intel]).unwrap();
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.expectation_failed())
        .map(|r| r.kernel)
        .collect();
    assert_eq!(failed, ["6.16"]);
    let text = scenario::table::failures(&rows);
    assert!(
        text.contains("expectation failed on 6.16/intel ([[expect]] at line"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("expected none, got stale-read"),
        "{text}"
    );
}
