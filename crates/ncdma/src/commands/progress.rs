//! How a snapshot or migration looks while it runs and after: an indicatif line that follows
//! the pre-copy rounds (round, phase, dirty pages and rate, throughput, the downtime the
//! next pause would cost), and the final summary as text or JSON — total time, downtime,
//! rounds, and bytes by region and policy.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use migration::format::Policy;
use migration::precopy::{Phase, Progress, Summary, WriterThread};
use serde_json::{Value, json};

const MIB: f64 = (1 << 20) as f64;

/// The progress display of one migration, on stderr.
pub(crate) struct RoundDisplay {
    bar: ProgressBar,
    /// Whether stderr is a terminal: if not, each round is one plain line instead.
    live: bool,
}

impl RoundDisplay {
    pub(crate) fn new(what: &str) -> RoundDisplay {
        let live = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {wide_msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        RoundDisplay { bar, live }
    }

    /// Shows the round just finished.
    pub(crate) fn round(&self, p: &Progress) {
        let line = round_line(p);
        if self.live {
            self.bar.println(&line);
            self.bar.set_message(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub(crate) fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// `round 3 (pre-copy): 812 pages sent, 95 dirty (1900/s), 410.2 MiB/s, ETA 1 ms`.
fn round_line(p: &Progress) -> String {
    let phase = match p.phase {
        Phase::Precopy => "pre-copy",
        Phase::StopAndCopy => "stop-and-copy",
    };
    format!(
        "round {} ({phase}): {} pages sent, {} dirty ({:.0}/s), {:.1} MiB/s, ETA {}",
        p.round,
        p.pages_sent,
        p.dirty_pages,
        p.dirty_rate,
        p.throughput / MIB,
        ms(p.eta)
    )
}

fn ms(d: Duration) -> String {
    if d == Duration::MAX {
        "never".into()
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn rate(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / MIB / time.as_secs_f64().max(1e-9)
}

/// The summary as text.
pub(crate) fn summary_text(s: &Summary) -> String {
    let mut out = format!(
        "total {}, downtime {}, {} rounds ({}), {:.1} MiB in {} pages ({} zero pages elided), \
         {} vCPU(s), {} device(s), runs written {}\n",
        ms(s.total_time),
        ms(s.downtime),
        s.rounds,
        if s.converged {
            "converged"
        } else {
            "round cap reached"
        },
        s.stream_bytes as f64 / MIB,
        s.pages_sent,
        s.pages_elided,
        s.vcpus,
        s.devices,
        match s.writer {
            WriterThread::Own => "by a thread of their own",
            _ => "by the gathering thread",
        }
    );
    out.push_str(&format!(
        "{:<10} {:<7} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}\n",
        "region", "policy", "data pages", "zero pages", "flushed", "torn runs", "MiB", "MiB/s"
    ));
    for r in &s.regions {
        out.push_str(&format!(
            "{:<10} {:<7} {:>10} {:>10} {:>10} {:>10} {:>12.1} {:>10.1}\n",
            r.name,
            r.policy.to_string(),
            r.data_pages,
            r.zero_pages,
            r.flushed_pages,
            r.torn_runs,
            r.bytes as f64 / MIB,
            rate(r.bytes, r.busy)
        ));
    }
    let in_place: Vec<&str> = (s.regions.iter().filter(|r| r.in_place))
        .map(|r| r.name.as_str())
        .collect();
    if !in_place.is_empty() {
        out.push_str(&format!(
            "sent straight from guest memory (no copy before the socket's): {}\n",
            in_place.join(", ")
        ));
    }
    if s.regions.iter().any(|r| r.torn_runs > 0) {
        out.push_str(
            "(torn runs: sent straight from guest memory, written by the guest meanwhile, \
             withdrawn and sent again)\n",
        );
    }
    let by_policy: Vec<String> = [Policy::Copy, Policy::Flush, Policy::Skip]
        .iter()
        .filter(|p| s.regions.iter().any(|r| r.policy == **p))
        .map(|p| format!("{p} {:.1} MiB", s.bytes_by_policy(*p) as f64 / MIB))
        .collect();
    out.push_str(&format!("bytes by policy: {}\n", by_policy.join(", ")));
    out
}

/// The summary as JSON.
pub(crate) fn summary_json(s: &Summary) -> Value {
    let regions: Vec<Value> = s
        .regions
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "policy": r.policy.to_string(),
                "data_pages": r.data_pages,
                "zero_pages": r.zero_pages,
                "flushed_pages": r.flushed_pages,
                "in_place": r.in_place,
                "torn_runs": r.torn_runs,
                "bytes": r.bytes,
                "busy_ms": r.busy.as_secs_f64() * 1e3,
            })
        })
        .collect();
    json!({
        "total_ms": s.total_time.as_secs_f64() * 1e3,
        "downtime_ms": s.downtime.as_secs_f64() * 1e3,
        "rounds": s.rounds,
        "converged": s.converged,
        "stream_bytes": s.stream_bytes,
        "pages_sent": s.pages_sent,
        "pages_elided": s.pages_elided,
        "vcpus": s.vcpus,
        "writer_thread": s.writer.to_string(),
        "devices": s.devices,
        "regions": regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_line_names_everything_the_user_watches() {
        let p = Progress {
            round: 3,
            phase: Phase::Precopy,
            pages_sent: 812,
            bytes_sent: 10 << 20,
            dirty_pages: 95,
            dirty_rate: 1900.0,
            throughput: 410.0 * MIB,
            eta: Duration::from_micros(950),
        };
        assert_eq!(
            round_line(&p),
            "round 3 (pre-copy): 812 pages sent, 95 dirty (1900/s), 410.0 MiB/s, ETA 0.9 ms"
        );
        let never = Progress {
            eta: Duration::MAX,
            phase: Phase::StopAndCopy,
            ..p
        };
        assert!(round_line(&never).ends_with(
            "(stop-and-copy): 812 pages sent, 95 dirty (1900/s), 410.0 MiB/s, ETA never"
        ));
    }
}
