//! A picture of the guest-physical address space per run, as standalone SVG written by hand:
//! one panel per run, one band per region in address order (band widths grow with the
//! logarithm of the size, so a small RAM region and a 256 MiB BAR are both visible), each band
//! coloured by the effective memory type of the region's key access and outlined thickly when
//! that type honors the guest's PAT, and a red marker with the verdict's name at the address
//! of each hazard's first occurrence.

use std::fmt::Write;

use memtype::MemType;

use crate::report::RunReport;
use crate::scenario::Scenario;

const WIDTH: f64 = 1000.0;
const MARGIN: f64 = 20.0;
const GAP: f64 = 12.0;
const LEGEND_HEIGHT: f64 = 70.0;
const PANEL_HEIGHT: f64 = 175.0;
const BAND_TOP: f64 = 48.0;
const BAND_HEIGHT: f64 = 44.0;
const NO_ACCESS: &str = "#bab0ac";

/// Fill colour of a memory type.
fn colour(mt: MemType) -> &'static str {
    match mt {
        MemType::Wb => "#4e79a7",
        MemType::Wc => "#59a14f",
        MemType::WcPlus => "#8cd17d",
        MemType::Wt | MemType::Wp => "#b07aa1",
        MemType::Uc | MemType::UcMinus | MemType::Cd => "#f28e2b",
    }
}

const LEGEND: [(&str, &str); 6] = [
    ("WB", "#4e79a7"),
    ("WC", "#59a14f"),
    ("WC+", "#8cd17d"),
    ("WT / WP", "#b07aa1"),
    ("UC / UC- / CD", "#f28e2b"),
    ("no guest access", NO_ACCESS),
];

/// Escapes text for XML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `256 MiB`, `4 KiB`.
fn size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// The SVG document for `rows` (runs of `scenario`).
pub fn render(scenario: &Scenario, rows: &[RunReport]) -> String {
    let height = MARGIN * 2.0 + LEGEND_HEIGHT + PANEL_HEIGHT * rows.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        "<title>{}: guest-physical address space per kernel</title>",
        esc(&scenario.name)
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    legend(&mut out, scenario);
    for (i, r) in rows.iter().enumerate() {
        panel(
            &mut out,
            scenario,
            r,
            MARGIN + LEGEND_HEIGHT + PANEL_HEIGHT * i as f64,
        );
    }
    out.push_str("</svg>\n");
    out
}

fn legend(out: &mut String, scenario: &Scenario) {
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" font-size="16" font-weight="bold">{}</text>"#,
        MARGIN + 4.0,
        esc(&scenario.name)
    );
    let y = MARGIN + 22.0;
    let mut x = MARGIN;
    for (label, fill) in LEGEND {
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="14" height="14" fill="{fill}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 18.0,
            y + 11.0,
            esc(label)
        );
        x += 30.0 + 7.0 * label.len() as f64;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{y}" width="14" height="14" fill="white" stroke="black" stroke-width="3"/><text x="{}" y="{}">guest PAT honored</text>"##,
        x + 18.0,
        y + 11.0
    );
    let y = y + 26.0;
    let _ = writeln!(
        out,
        r##"<line x1="{MARGIN}" y1="{y}" x2="{MARGIN}" y2="{}" stroke="#d62728" stroke-width="2"/><text x="{}" y="{}">hazard at that address (first occurrence)</text>"##,
        y + 12.0,
        MARGIN + 8.0,
        y + 10.0
    );
}

/// Band positions: (region index, x, width), in address order.
fn bands(scenario: &Scenario) -> Vec<(usize, f64, f64)> {
    let mut order: Vec<usize> = (0..scenario.regions.len()).collect();
    order.sort_by_key(|&i| scenario.regions[i].gpa);
    let weight = |i: usize| (scenario.regions[i].size as f64 / uapi::PAGE_SIZE as f64).log2() + 1.0;
    let total: f64 = order.iter().map(|&i| weight(i)).sum();
    let room = WIDTH - 2.0 * MARGIN - GAP * order.len().saturating_sub(1) as f64;
    let mut x = MARGIN;
    order
        .into_iter()
        .map(|i| {
            let w = room * weight(i) / total;
            let band = (i, x, w);
            x += w + GAP;
            band
        })
        .collect()
}

fn panel(out: &mut String, scenario: &Scenario, r: &RunReport, top: f64) {
    let status = if r.verdicts.is_empty() {
        "no hazard".to_string()
    } else {
        r.verdicts
            .iter()
            .map(|f| f.hazard.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        r#"<g class="panel" data-kernel="{}" data-vendor="{}">"#,
        r.kernel, r.vendor
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" font-size="14" font-weight="bold">{}/{} — {}</text>"#,
        top + 16.0,
        esc(r.kernel),
        r.vendor,
        esc(&status)
    );
    let mut notes: Vec<String> = r
        .registrations
        .iter()
        .map(|g| format!("{}: {g}", g.region))
        .collect();
    if r.cost.accesses > 0 {
        notes.push(format!("cost estimate {}", crate::table::cost(r)));
    }
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN}" y="{}" font-size="11" fill="#555">{}</text>"##,
        top + 32.0,
        esc(&notes.join(" · "))
    );
    let y = top + BAND_TOP;
    let placed = bands(scenario);
    for &(i, x, w) in &placed {
        let region = &scenario.regions[i];
        let access = r.access(&region.name);
        let (fill, stroke, label) = match access {
            Some(a) => (
                colour(a.effective),
                if a.honors_guest_pat { 3.0 } else { 0.5 },
                format!("{} {}", region.name, a.summary()),
            ),
            None => (NO_ACCESS, 0.5, format!("{} (no guest access)", region.name)),
        };
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{BAND_HEIGHT}" fill="{fill}" stroke="black" stroke-width="{stroke}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" fill="white">{}</text>"#,
            x + 6.0,
            y + 27.0,
            esc(&label)
        );
        let kind = if region.noncoherent {
            format!("{}, noncoherent DMA", region.kind.name())
        } else {
            region.kind.name().to_string()
        };
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" font-size="11">{} ({kind}), {}</text>"#,
            y + BAND_HEIGHT + 14.0,
            esc(&region.name),
            size(region.size)
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" font-size="11">{:#x}..{:#x}</text>"#,
            y + BAND_HEIGHT + 27.0,
            region.gpa,
            region.end()
        );
    }
    for (n, f) in r.verdicts.iter().enumerate() {
        let Some((i, offset)) = f
            .region
            .as_ref()
            .and_then(|name| scenario.regions.iter().position(|g| g.name == *name))
            .zip(f.offset)
        else {
            continue;
        };
        let Some(&(_, x, w)) = placed.iter().find(|(j, _, _)| *j == i) else {
            continue;
        };
        let mx = x + w * offset as f64 / scenario.regions[i].size as f64;
        let label_y = y + BAND_HEIGHT + 42.0 + 14.0 * n as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{}" stroke="#d62728" stroke-width="2"/><circle cx="{mx:.1}" cy="{}" r="4" fill="#d62728"/><text x="{:.1}" y="{label_y}" fill="#d62728">{} at {} (step {})</text>"##,
            y - 6.0,
            label_y - 10.0,
            y - 6.0,
            mx + 5.0,
            f.hazard,
            esc(&f.place()),
            f.step
        );
    }
    out.push_str("</g>\n");
}
