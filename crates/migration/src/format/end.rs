//! The `End` chunk: what the source sent, so the destination can check that it received
//! exactly that before it hands over anything.

use super::MAX_REGIONS;
use super::wire::{Dec, Enc};
use crate::error::{EncodeError, Malformation};

const FIXED_LEN: usize = 40;
const REGION_LEN: usize = 24;
/// The largest `End` payload.
pub(super) const MAX_PAYLOAD: usize = FIXED_LEN + MAX_REGIONS * REGION_LEN;

/// Per-region page counts over all rounds.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionTotals {
    /// The region's id.
    pub id: u32,
    /// Page records with contents.
    pub data_pages: u64,
    /// Zero-page markers.
    pub zero_pages: u64,
}

/// The totals of a stream.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pre-copy rounds, the final one included (a snapshot has 1).
    pub rounds: u32,
    /// `Vcpu` chunks.
    pub vcpus: u32,
    /// `Device` chunks.
    pub devices: u32,
    /// `RegionSkipped` chunks.
    pub skipped: u32,
    /// Page records of all regions (data and zero).
    pub pages: u64,
    /// Bytes of the stream before the `End` chunk, header included.
    pub stream_bytes: u64,
    /// One entry per region that carries pages, in configuration order.
    pub regions: Vec<RegionTotals>,
}

impl Totals {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.regions.len() > MAX_REGIONS {
            return Err(EncodeError::TooMany {
                field: "region totals",
                count: self.regions.len() as u64,
                cap: MAX_REGIONS as u64,
            });
        }
        let mut enc = Enc::new(buf);
        enc.u32(self.rounds);
        enc.u32(self.vcpus);
        enc.u32(self.devices);
        enc.u32(self.skipped);
        enc.u32(self.regions.len() as u32);
        enc.zeros(4);
        enc.u64(self.pages);
        enc.u64(self.stream_bytes);
        for r in &self.regions {
            enc.u32(r.id);
            enc.zeros(4);
            enc.u64(r.data_pages);
            enc.u64(r.zero_pages);
        }
        Ok(())
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(payload);
        let rounds = dec.u32("rounds")?;
        let vcpus = dec.u32("vcpus")?;
        let devices = dec.u32("devices")?;
        let skipped = dec.u32("skipped")?;
        let count = dec.u32("region totals")?;
        dec.zeros(4, "end padding")?;
        if count as usize > MAX_REGIONS {
            return Err(Malformation::TooMany {
                field: "region totals",
                count: count.into(),
                cap: MAX_REGIONS as u64,
            });
        }
        let pages = dec.u64("pages")?;
        let stream_bytes = dec.u64("stream bytes")?;
        let mut regions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = dec.u32("region id")?;
            dec.zeros(4, "region totals padding")?;
            regions.push(RegionTotals {
                id,
                data_pages: dec.u64("data pages")?,
                zero_pages: dec.u64("zero pages")?,
            });
        }
        dec.finish()?;
        Ok(Totals {
            rounds,
            vcpus,
            devices,
            skipped,
            pages,
            stream_bytes,
            regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_caps_its_region_count() {
        let t = Totals {
            rounds: 4,
            vcpus: 2,
            devices: 1,
            skipped: 1,
            pages: 300,
            stream_bytes: 123_456,
            regions: vec![
                RegionTotals {
                    id: 0,
                    data_pages: 200,
                    zero_pages: 90,
                },
                RegionTotals {
                    id: 1,
                    data_pages: 10,
                    zero_pages: 0,
                },
            ],
        };
        let mut bytes = Vec::new();
        t.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), FIXED_LEN + 2 * REGION_LEN);
        assert_eq!(Totals::decode(&bytes), Ok(t));
        bytes[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            Totals::decode(&bytes),
            Err(Malformation::TooMany { .. })
        ));
    }
}
