//! [`MigrateInfo`]: QEMU's `query-migrate` reply (QAPI `MigrationInfo`, QEMU 7.2), the
//! fields the benchmark reports. Times are QEMU's milliseconds; RAM counters are bytes or
//! 4 KiB pages as QEMU names them. Fields QEMU leaves out in a state (no `total-time` while
//! `active`, no `ram` during `setup`) are `None` or zero.

use std::time::Duration;

use serde::Deserialize;

/// Where a migration is (`MigrationStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateStatus {
    /// Not started.
    None,
    /// Connecting and sending the header.
    Setup,
    /// Pre-copy rounds.
    Active,
    /// Finished: the destination has everything.
    Completed,
    /// Ended with an error (`error-desc` says which).
    Failed,
    /// Cancelled by `migrate_cancel`.
    Cancelled,
    /// Any other state (post-copy, COLO, device, …), none of which this benchmark enters.
    #[serde(other)]
    Other,
}

impl MigrateStatus {
    /// Whether the migration is over, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MigrateStatus::Completed | MigrateStatus::Failed | MigrateStatus::Cancelled
        )
    }
}

/// `query-migrate`'s reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateInfo {
    /// The state.
    pub status: MigrateStatus,
    /// Milliseconds from `migrate` to completion (or so far, while active).
    pub total_time: Option<u64>,
    /// Milliseconds the guest was stopped (once completed).
    pub downtime: Option<u64>,
    /// Milliseconds spent in setup, before the first page.
    pub setup_time: Option<u64>,
    /// The downtime QEMU predicts while active.
    pub expected_downtime: Option<u64>,
    /// Why a failed migration failed.
    pub error_desc: Option<String>,
    /// RAM counters.
    pub ram: Option<RamInfo>,
}

/// `MigrationStats`: what the RAM stream sent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RamInfo {
    /// Bytes sent (pages, headers, zero-page markers).
    pub transferred: u64,
    /// Bytes of RAM to migrate (all RAM blocks, incl. the BIOS and option ROMs).
    pub total: u64,
    /// Bytes still dirty.
    pub remaining: u64,
    /// Pages sent as "duplicate" (all-zero) markers, without contents.
    pub duplicate: u64,
    /// Pages sent with contents.
    pub normal: u64,
    /// Bytes of those pages' contents.
    pub normal_bytes: u64,
    /// Bytes sent before the guest was stopped.
    pub precopy_bytes: u64,
    /// Bytes sent while the guest was stopped.
    pub downtime_bytes: u64,
    /// Dirty-log syncs (the first is the initial bitmap; each pre-copy round adds one).
    pub dirty_sync_count: u64,
    /// Pages per second the guest dirtied, as QEMU last measured it.
    pub dirty_pages_rate: u64,
    /// QEMU's throughput figure, in megabits (10⁶ bits) per second.
    pub mbps: f64,
    /// The page size of these counters.
    pub page_size: u64,
}

impl MigrateInfo {
    /// Parses a `query-migrate` `return` value.
    pub fn from_value(value: serde_json::Value) -> Result<MigrateInfo, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// `total-time` as a duration.
    pub fn total_time(&self) -> Option<Duration> {
        self.total_time.map(Duration::from_millis)
    }

    /// `downtime` as a duration.
    pub fn downtime(&self) -> Option<Duration> {
        self.downtime.map(Duration::from_millis)
    }

    /// `setup-time` as a duration.
    pub fn setup_time(&self) -> Option<Duration> {
        self.setup_time.map(Duration::from_millis)
    }

    /// The RAM counters, zero before QEMU reports any.
    pub fn ram(&self) -> RamInfo {
        self.ram.unwrap_or_default()
    }

    /// Bytes sent per second of `total-time` (our unit, bytes/s, not QEMU's `mbps`).
    pub fn throughput(&self) -> Option<f64> {
        let ms = self.total_time.filter(|&ms| ms > 0)?;
        Some(self.ram().transferred as f64 * 1000.0 / ms as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query-migrate` of a completed 64 MiB migration, recorded on this project's host
    /// (Debian 12 QEMU 7.2.22, `-cpu qemu64 -machine pc`, guest running, random RAM).
    const COMPLETED: &str = r#"{"status": "completed", "setup-time": 4, "downtime": 113, "total-time": 765, "ram": {"total": 67641344, "postcopy-requests": 0, "dirty-sync-count": 3, "multifd-bytes": 0, "pages-per-second": 17653, "downtime-bytes": 20266792, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 708.3120210249672, "transferred": 67266025, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 46999233, "duplicate": 144, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 67133440, "normal": 16390}}"#;

    #[test]
    fn a_completed_reply_parses() {
        let info = MigrateInfo::from_value(serde_json::from_str(COMPLETED).unwrap()).unwrap();
        assert_eq!(info.status, MigrateStatus::Completed);
        assert!(info.status.is_final());
        assert_eq!(info.total_time(), Some(Duration::from_millis(765)));
        assert_eq!(info.downtime(), Some(Duration::from_millis(113)));
        assert_eq!(info.setup_time(), Some(Duration::from_millis(4)));
        let ram = info.ram();
        assert_eq!(ram.transferred, 67_266_025);
        assert_eq!(ram.total, 67_641_344);
        assert_eq!((ram.normal, ram.duplicate), (16390, 144));
        assert_eq!(ram.normal_bytes, ram.normal * ram.page_size);
        assert_eq!(ram.precopy_bytes + ram.downtime_bytes, ram.transferred);
        assert_eq!(ram.dirty_sync_count, 3);
        let throughput = info.throughput().unwrap();
        assert!((throughput - 67_266_025.0 / 0.765).abs() < 1.0);
    }

    #[test]
    fn an_early_reply_has_no_totals() {
        let info = MigrateInfo::from_value(serde_json::json!({"status": "setup"})).unwrap();
        assert_eq!(info.status, MigrateStatus::Setup);
        assert!(!info.status.is_final());
        assert_eq!((info.total_time(), info.throughput()), (None, None));
        assert_eq!(info.ram(), RamInfo::default());
    }

    #[test]
    fn a_failed_reply_keeps_the_reason_and_unknown_states_parse() {
        let failed = MigrateInfo::from_value(serde_json::json!({
            "status": "failed",
            "error-desc": "Unable to write to socket: Connection reset by peer"
        }))
        .unwrap();
        assert_eq!(failed.status, MigrateStatus::Failed);
        assert_eq!(
            failed.error_desc.as_deref(),
            Some("Unable to write to socket: Connection reset by peer")
        );
        let postcopy =
            MigrateInfo::from_value(serde_json::json!({"status": "postcopy-active"})).unwrap();
        assert_eq!(postcopy.status, MigrateStatus::Other);
        assert!(MigrateInfo::from_value(serde_json::json!({"ram": {}})).is_err());
    }
}
