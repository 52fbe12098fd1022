//! The text of `ncdma run SCENARIO --backend kvm`: what this host cannot show, where the
//! regions went and how they were registered, then each key access and each read with the
//! model of the scenario's profile, the model of this host and `/dev/kvm` one under another,
//! and the result in a sentence.

use std::fmt::{self, Write};

use super::compare::Comparison;

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = format!("model {}", self.model.profile);
        let host = format!("this host's model {}", self.host_model.profile);
        let real = "real /dev/kvm".to_string();
        let width = [&model, &host, &real]
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        let row = |label: &str, value: &str| {
            let pad = " ".repeat(width - label.chars().count());
            format!("    {label}{pad}  {value}\n")
        };

        writeln!(
            f,
            "{}: {model}, beside the real run on /dev/kvm\n(this host's model: {} with every \
             device snooping, as the VMM's own mapping does)\n",
            self.scenario, self.host_model.profile
        )?;
        if !self.limits.is_empty() {
            writeln!(f, "what this host cannot show:")?;
            for l in &self.limits {
                writeln!(f, "  - {l}")?;
            }
            writeln!(f)?;
        }
        let placed: Vec<String> = self
            .real
            .placements
            .iter()
            .map(|p| format!("{} at {:#x} (slot {})", p.region, p.gpa, p.slot))
            .collect();
        writeln!(
            f,
            "on /dev/kvm: {}; {} guest run(s)",
            placed.join(", "),
            self.real.guest_runs
        )?;
        for r in &self.real.registrations {
            let modeled = self
                .model
                .registrations
                .iter()
                .find(|m| m.region == r.region)
                .map_or_else(|| "-".to_string(), ToString::to_string);
            writeln!(f, "registration of {}:", r.region)?;
            f.write_str(&row(&model, &modeled))?;
            let mut text = r.registration.to_string();
            text = text.replace('\n', "\n      ");
            f.write_str(&row(&real, text.trim_end()))?;
        }

        writeln!(f, "\nkey accesses:")?;
        for a in &self.accesses {
            writeln!(
                f,
                "  {}+{:#x} (step {}, {}, PAT entry {} = {})",
                a.region, a.offset, a.step, a.op, a.pat_index, a.guest_pat
            )?;
            f.write_str(&row(&model, &a.model))?;
            f.write_str(&row(&host, a.host_model.as_deref().unwrap_or("-")))?;
            f.write_str(&row(&real, &a.real))?;
        }

        writeln!(f, "\nreads:")?;
        for r in &self.reads {
            writeln!(
                f,
                "  step {}, {} by {} at {} ({} bytes)",
                r.step, r.op, r.who, r.place, r.len
            )?;
            let mut m = r.model.clone();
            match &r.difference {
                None => m.push_str("  (same as real)"),
                Some(why) => write!(m, "  DIFFERS: {why}")?,
            }
            f.write_str(&row(&model, &m))?;
            let mut h = r.host_model.clone();
            h.push_str(if r.same_as_host_model {
                "  (same as real)"
            } else {
                "  DIFFERS from the real run"
            });
            f.write_str(&row(&host, &h))?;
            f.write_str(&row(&real, &r.real))?;
        }

        let differ = self.differences().count();
        let verdict = if self.agrees() {
            "the real run read what the model of this host predicts, at every read"
        } else {
            "the real run DIFFERS from the model of this host (above)"
        };
        writeln!(
            f,
            "\nresult: {verdict}; the model of {} reads something else at {differ} of {} \
             read(s)",
            self.model.profile,
            self.reads.len()
        )
    }
}
