//! Chunks as values, and the writer and reader that frame them: header, payload and CRC
//! trailer, with every length checked against its kind's cap before anything is read.

mod reader;
mod sink;
mod writer;

pub use reader::StreamReader;
pub use sink::PageSink;
pub(crate) use sink::deliver;
pub use writer::StreamWriter;

use crate::error::{EncodeError, Malformation};
use crate::format::wire::{Dec, Enc};
use crate::format::{ChunkKind, DeviceState, Layout, PageRun, Totals, VcpuState, VmConfig};

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// The VM configuration.
    VmConfig(VmConfig),
    /// A run of pages.
    Pages(PageRun),
    /// One vCPU's state (boxed: it is ten times the size of the other variants).
    Vcpu(Box<VcpuState>),
    /// One device's state.
    Device(DeviceState),
    /// A region sent empty under the `skip` policy.
    RegionSkipped {
        /// The region's id.
        region: u32,
    },
    /// The totals; the last chunk.
    End(Totals),
    /// The `Pages` run just before (of this region and round) is withdrawn: the guest wrote
    /// to its pages while they were sent, and they will be sent again.
    Torn {
        /// The run's region id.
        region: u32,
        /// The run's round.
        round: u32,
    },
}

impl Chunk {
    /// The chunk's kind.
    pub fn kind(&self) -> ChunkKind {
        match self {
            Chunk::VmConfig(_) => ChunkKind::VmConfig,
            Chunk::Pages(_) => ChunkKind::Pages,
            Chunk::Vcpu(_) => ChunkKind::Vcpu,
            Chunk::Device(_) => ChunkKind::Device,
            Chunk::RegionSkipped { .. } => ChunkKind::RegionSkipped,
            Chunk::End(_) => ChunkKind::End,
            Chunk::Torn { .. } => ChunkKind::Torn,
        }
    }

    fn encode_payload(&self, layout: Layout, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Chunk::VmConfig(c) => c.encode(buf),
            Chunk::Pages(run) => {
                run.encode(layout, buf);
                Ok(())
            }
            Chunk::Vcpu(v) => v.encode(buf),
            Chunk::Device(d) => d.encode(buf),
            Chunk::RegionSkipped { region } => {
                let mut enc = Enc::new(buf);
                enc.u32(*region);
                enc.zeros(4);
                Ok(())
            }
            Chunk::End(t) => t.encode(buf),
            Chunk::Torn { region, round } => {
                let mut enc = Enc::new(buf);
                enc.u32(*region);
                enc.u32(*round);
                Ok(())
            }
        }
    }

    /// Decodes a payload whose length was checked against the kind's cap. A `Pages` payload
    /// read whole is of a [`Layout::Interleaved`] stream (a records-first run is read into
    /// its sink as it arrives).
    fn decode(kind: ChunkKind, payload: &[u8]) -> Result<Chunk, Malformation> {
        Ok(match kind {
            ChunkKind::VmConfig => Chunk::VmConfig(VmConfig::decode(payload)?),
            ChunkKind::Pages => Chunk::Pages(PageRun::decode_interleaved(payload)?),
            ChunkKind::Vcpu => Chunk::Vcpu(Box::new(VcpuState::decode(payload)?)),
            ChunkKind::Device => Chunk::Device(DeviceState::decode(payload)?),
            ChunkKind::RegionSkipped => {
                let mut dec = Dec::new(payload);
                let region = dec.u32("region id")?;
                dec.zeros(4, "skip padding")?;
                dec.finish()?;
                Chunk::RegionSkipped { region }
            }
            ChunkKind::End => Chunk::End(Totals::decode(payload)?),
            ChunkKind::Torn => {
                let mut dec = Dec::new(payload);
                let region = dec.u32("torn region id")?;
                let round = dec.u32("torn round")?;
                dec.finish()?;
                Chunk::Torn { region, round }
            }
            // The chunk header decoder refuses kind 0 before any payload is read; a
            // payload is never decoded as one.
            ChunkKind::Invalid => {
                return Err(Malformation::BadValue {
                    field: "chunk kind",
                    value: 0,
                });
            }
        })
    }
}
