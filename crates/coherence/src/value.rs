//! The data a CPU access carries (1 to 8 bytes, held inline so that loads and
//! stores never allocate) and what a read step returns.

use core::fmt;

/// Widest CPU access the simulator takes, in bytes (a `MOV` of a `u64`).
pub const MAX_CPU_ACCESS: usize = 8;

/// The 1..=8 bytes of a CPU store or load, little-endian as in memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value {
    len: u8,
    bytes: [u8; MAX_CPU_ACCESS],
}

impl Value {
    /// The bytes of `bytes`, or `None` unless `1 <= bytes.len() <= 8`.
    pub fn new(bytes: &[u8]) -> Option<Value> {
        if bytes.is_empty() || bytes.len() > MAX_CPU_ACCESS {
            return None;
        }
        let mut v = Value {
            // At most 8, checked above.
            len: bytes.len() as u8,
            bytes: [0; MAX_CPU_ACCESS],
        };
        v.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(v)
    }

    /// The low `len` bytes of `v`, little-endian; `None` unless `1 <= len <= 8`.
    ///
    /// ```
    /// let v = coherence::Value::from_u64(0x1122_3344, 2).unwrap();
    /// assert_eq!(v.as_slice(), &[0x44, 0x33]);
    /// ```
    pub fn from_u64(v: u64, len: usize) -> Option<Value> {
        Value::new(v.to_le_bytes().get(..len)?)
    }

    /// The bytes as a little-endian integer.
    pub fn to_u64(&self) -> u64 {
        let mut buf = [0u8; 8];
        buf[..self.len()].copy_from_slice(self.as_slice());
        u64::from_le_bytes(buf)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    /// Number of bytes (1..=8).
    #[allow(clippy::len_without_is_empty)] // never empty by construction
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub(crate) fn zeroed(len: usize) -> Value {
        Value {
            len: len.min(MAX_CPU_ACCESS) as u8,
            bytes: [0; MAX_CPU_ACCESS],
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let n = self.len();
        &mut self.bytes[..n]
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({})", hex(self.as_slice()))
    }
}

/// What a read step returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadData {
    /// A CPU load's bytes.
    Cpu(Value),
    /// A DMA read's bytes.
    Dma(Vec<u8>),
}

impl ReadData {
    /// The bytes read.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadData::Cpu(v) => v.as_slice(),
            ReadData::Dma(b) => b,
        }
    }
}

/// Bytes as hex in address order, for verdict messages: `[de ad be ef]`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_length_is_checked() {
        assert!(Value::new(&[]).is_none());
        assert!(Value::new(&[0; 9]).is_none());
        assert!(Value::from_u64(1, 0).is_none());
        assert!(Value::from_u64(1, 9).is_none());
        let v = Value::new(&[1, 2, 3]).expect("three bytes");
        assert_eq!(v.len(), 3);
        assert_eq!(v.to_u64(), 0x03_0201);
        assert_eq!(format!("{v:?}"), "Value([01 02 03])");
    }
}
