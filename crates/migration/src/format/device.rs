//! The `Device` chunk: one device model's state, opaque to the stream, under a name the
//! destination matches to its own device.

use super::wire::{Dec, Enc};
use super::{MAX_DEVICE_STATE_BYTES, NAME_LEN};
use crate::error::{EncodeError, Malformation};

/// The largest `Device` payload.
pub(super) const MAX_PAYLOAD: usize = NAME_LEN + 8 + MAX_DEVICE_STATE_BYTES;

/// One device's state.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// The device's name, unique in the stream, nonempty, at most [`NAME_LEN`] bytes.
    pub name: String,
    /// The device model's own serialization, at most [`MAX_DEVICE_STATE_BYTES`].
    pub state: Vec<u8>,
}

impl DeviceState {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.state.len() > MAX_DEVICE_STATE_BYTES {
            return Err(EncodeError::TooMany {
                field: "device state length",
                count: self.state.len() as u64,
                cap: MAX_DEVICE_STATE_BYTES as u64,
            });
        }
        let mut enc = Enc::new(buf);
        enc.name("device name", &self.name, NAME_LEN)?;
        enc.u32(self.state.len() as u32);
        enc.zeros(4);
        enc.bytes(&self.state);
        Ok(())
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(payload);
        let name = dec.name("device name", NAME_LEN, false)?;
        let len = dec.u32("device state length")?;
        dec.zeros(4, "device padding")?;
        if len as usize > MAX_DEVICE_STATE_BYTES {
            return Err(Malformation::TooMany {
                field: "device state length",
                count: len.into(),
                cap: MAX_DEVICE_STATE_BYTES as u64,
            });
        }
        let state = dec.take(len as usize, "device state")?.to_vec();
        dec.finish()?;
        Ok(DeviceState { name, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_its_length() {
        let d = DeviceState {
            name: "virtio-gpu".into(),
            state: vec![1, 2, 3],
        };
        let mut bytes = Vec::new();
        d.encode(&mut bytes).unwrap();
        assert_eq!(DeviceState::decode(&bytes), Ok(d));
        bytes[NAME_LEN] = 4;
        assert_eq!(
            DeviceState::decode(&bytes),
            Err(Malformation::Short {
                field: "device state"
            })
        );
        bytes[NAME_LEN + 3] = 0x80;
        assert!(matches!(
            DeviceState::decode(&bytes),
            Err(Malformation::TooMany { .. })
        ));
    }

    #[test]
    fn unnamed_devices_are_refused() {
        let d = DeviceState {
            name: String::new(),
            state: Vec::new(),
        };
        let mut bytes = Vec::new();
        d.encode(&mut bytes).unwrap();
        assert_eq!(
            DeviceState::decode(&bytes),
            Err(Malformation::BadName {
                field: "device name"
            })
        );
    }
}
