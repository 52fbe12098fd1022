//! The memory types themselves: names, the PAT and MTRR/EPT encodings, and
//! parsing from text.
//!
//! One enum covers every architecture so that a combined result can be stated
//! in the same vocabulary as its inputs: UC- exists only in the PAT, WC+ and CD
//! only as AMD results. Which types an encoding may carry is decided here, once;
//! the tables in [`crate::combine`] rely on it.

use core::fmt;
use core::str::FromStr;

/// An x86 memory type, as the Intel SDM (vol. 3, "Memory Cache Control") and
/// the AMD APM (vol. 2, §7.4 and §15.25.8) name them.
///
/// The variant order is fixed (it is what `Ord` compares) and carries no
/// meaning about cacheability; see [`MemType::is_cacheable`] for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemType {
    /// Uncacheable (strong uncacheable).
    Uc,
    /// Uncacheable, but an MTRR of type WC may override it (PAT only).
    UcMinus,
    /// Write-combining: uncached, writes gathered in WC buffers.
    Wc,
    /// Write-through: reads cached, every write goes to memory.
    Wt,
    /// Write-protected: reads cached, writes go to memory and invalidate.
    Wp,
    /// Write-back: fully cached.
    Wb,
    /// AMD WC+: write-combining that also probes every cache (nested paging only).
    WcPlus,
    /// AMD CD: uncached, but caches are probed (CR0.CD=1 or a PAT/MTRR conflict).
    Cd,
}

impl MemType {
    /// Every memory type, in declaration order.
    pub const ALL: [MemType; 8] = [
        MemType::Uc,
        MemType::UcMinus,
        MemType::Wc,
        MemType::Wt,
        MemType::Wp,
        MemType::Wb,
        MemType::WcPlus,
        MemType::Cd,
    ];

    /// The conventional short name: `"UC"`, `"UC-"`, `"WC"`, `"WT"`, `"WP"`,
    /// `"WB"`, `"WC+"`, `"CD"`.
    ///
    /// ```
    /// use memtype::MemType;
    /// assert_eq!(MemType::UcMinus.name(), "UC-");
    /// assert_eq!(MemType::WcPlus.to_string(), "WC+");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            MemType::Uc => "UC",
            MemType::UcMinus => "UC-",
            MemType::Wc => "WC",
            MemType::Wt => "WT",
            MemType::Wp => "WP",
            MemType::Wb => "WB",
            MemType::WcPlus => "WC+",
            MemType::Cd => "CD",
        }
    }

    /// The 3-bit encoding of this type in a PAT entry, or `None` for the
    /// types the PAT cannot hold (WC+, CD).
    pub const fn pat_encoding(self) -> Option<u8> {
        match self {
            MemType::Uc => Some(0),
            MemType::Wc => Some(1),
            MemType::Wt => Some(4),
            MemType::Wp => Some(5),
            MemType::Wb => Some(6),
            MemType::UcMinus => Some(7),
            MemType::WcPlus | MemType::Cd => None,
        }
    }

    /// Decodes a PAT entry byte. Encodings 2 and 3 are reserved, and so is any
    /// value with one of the upper five bits set (≥ 8).
    ///
    /// ```
    /// use memtype::MemType;
    /// assert_eq!(MemType::from_pat_encoding(7), Some(MemType::UcMinus));
    /// assert_eq!(MemType::from_pat_encoding(2), None);
    /// ```
    pub const fn from_pat_encoding(enc: u8) -> Option<MemType> {
        match enc {
            0 => Some(MemType::Uc),
            1 => Some(MemType::Wc),
            4 => Some(MemType::Wt),
            5 => Some(MemType::Wp),
            6 => Some(MemType::Wb),
            7 => Some(MemType::UcMinus),
            _ => None,
        }
    }

    /// The encoding of this type in an MTRR type field, which is also the
    /// encoding of an EPT leaf's memory-type field (bits 5:3). UC-, WC+ and
    /// CD have none.
    pub const fn mtrr_encoding(self) -> Option<u8> {
        match self {
            MemType::Uc => Some(0),
            MemType::Wc => Some(1),
            MemType::Wt => Some(4),
            MemType::Wp => Some(5),
            MemType::Wb => Some(6),
            MemType::UcMinus | MemType::WcPlus | MemType::Cd => None,
        }
    }

    /// Decodes an MTRR (or EPT) type field. 2, 3 and 7 are reserved there, and
    /// so is anything ≥ 8.
    pub const fn from_mtrr_encoding(enc: u8) -> Option<MemType> {
        match enc {
            0 => Some(MemType::Uc),
            1 => Some(MemType::Wc),
            4 => Some(MemType::Wt),
            5 => Some(MemType::Wp),
            6 => Some(MemType::Wb),
            _ => None,
        }
    }

    /// Whether the processor may hold lines of this type in its caches:
    /// true for WB, WT and WP (all of which allocate on a read miss), false
    /// for the uncached types UC, UC-, WC, WC+ and CD.
    ///
    /// Of the cacheable types only WB can make a line dirty; WT and WP write
    /// through to memory.
    pub const fn is_cacheable(self) -> bool {
        matches!(self, MemType::Wb | MemType::Wt | MemType::Wp)
    }

    /// Whether writes of this type may sit in write-combining buffers until a
    /// fence or a serializing event drains them (WC and WC+).
    pub const fn is_write_combining(self) -> bool {
        matches!(self, MemType::Wc | MemType::WcPlus)
    }
}

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MemType {
    type Err = ParseMemTypeError;

    /// Parses one of the names [`MemType::name`] returns, ignoring ASCII case
    /// (`"uc-"`, `"Wc+"`). Nothing else is accepted: no surrounding spaces,
    /// no long forms such as `"write-back"`.
    ///
    /// ```
    /// use memtype::MemType;
    /// assert_eq!("wc+".parse::<MemType>(), Ok(MemType::WcPlus));
    /// let err = "XY".parse::<MemType>().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"unknown memory type "XY" (expected one of UC, UC-, WC, WT, WP, WB, WC+, CD)"#
    /// );
    /// ```
    fn from_str(s: &str) -> Result<MemType, ParseMemTypeError> {
        MemType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseMemTypeError::new(s))
    }
}

/// How many bytes of a rejected input [`ParseMemTypeError`] keeps. The crate
/// has no allocator, so the text is copied into a fixed buffer; anything a
/// person would type as a memory type fits.
const KEPT_INPUT: usize = 32;

/// The error [`MemType::from_str`] returns: the text was not a memory-type
/// name. It keeps (up to 32 bytes of) the rejected text for its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMemTypeError {
    buf: [u8; KEPT_INPUT],
    len: usize,
    truncated: bool,
}

impl ParseMemTypeError {
    fn new(input: &str) -> ParseMemTypeError {
        // Cut on a character boundary so the kept bytes stay valid UTF-8.
        let mut len = input.len().min(KEPT_INPUT);
        while !input.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; KEPT_INPUT];
        buf[..len].copy_from_slice(&input.as_bytes()[..len]);
        ParseMemTypeError {
            buf,
            len,
            truncated: len < input.len(),
        }
    }

    /// The rejected text, cut to its first 32 bytes (on a character boundary)
    /// if it was longer; see [`ParseMemTypeError::is_truncated`].
    pub fn input(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Whether [`ParseMemTypeError::input`] is only the start of the text.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for ParseMemTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ellipsis = if self.truncated { "..." } else { "" };
        write!(
            f,
            "unknown memory type \"{}{ellipsis}\" (expected one of ",
            self.input()
        )?;
        for (i, t) in MemType::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        f.write_str(")")
    }
}

impl core::error::Error for ParseMemTypeError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn names_round_trip_in_any_case() {
        for t in MemType::ALL {
            assert_eq!(t.name().parse::<MemType>(), Ok(t));
            assert_eq!(t.name().to_ascii_lowercase().parse::<MemType>(), Ok(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!("uc-".parse::<MemType>(), Ok(MemType::UcMinus));
        assert_eq!("Wc+".parse::<MemType>(), Ok(MemType::WcPlus));
    }

    #[test]
    fn parse_rejects_near_misses() {
        for bad in [
            "",
            " UC",
            "UC ",
            "UC--",
            "WC++",
            "U C",
            "writeback",
            "UCMINUS",
        ] {
            let err = bad.parse::<MemType>().unwrap_err();
            assert_eq!(err.input(), bad);
            assert!(!err.is_truncated());
        }
    }

    #[test]
    fn parse_error_message() {
        let err = "XY".parse::<MemType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown memory type \"XY\" (expected one of UC, UC-, WC, WT, WP, WB, WC+, CD)"
        );
    }

    #[test]
    fn parse_error_truncates_long_input_on_char_boundary() {
        // 31 ASCII bytes then a 2-byte character straddling the 32-byte cut.
        let long = "a".repeat(31) + "é" + "tail";
        let err = long.parse::<MemType>().unwrap_err();
        assert!(err.is_truncated());
        assert_eq!(err.input(), "a".repeat(31));
        assert!(err.to_string().contains("aaa...\""));
    }

    #[test]
    fn pat_encodings() {
        let expected = [
            (0, Some(MemType::Uc)),
            (1, Some(MemType::Wc)),
            (2, None),
            (3, None),
            (4, Some(MemType::Wt)),
            (5, Some(MemType::Wp)),
            (6, Some(MemType::Wb)),
            (7, Some(MemType::UcMinus)),
        ];
        for (enc, t) in expected {
            assert_eq!(MemType::from_pat_encoding(enc), t, "encoding {enc}");
            if let Some(t) = t {
                assert_eq!(t.pat_encoding(), Some(enc));
            }
        }
        for enc in 8..=u8::MAX {
            assert_eq!(MemType::from_pat_encoding(enc), None);
        }
        assert_eq!(MemType::WcPlus.pat_encoding(), None);
        assert_eq!(MemType::Cd.pat_encoding(), None);
    }

    #[test]
    fn mtrr_encodings() {
        for enc in 0..=u8::MAX {
            let t = MemType::from_mtrr_encoding(enc);
            match enc {
                0 | 1 | 4 | 5 | 6 => {
                    let t = t.unwrap();
                    assert_eq!(t.mtrr_encoding(), Some(enc));
                    // MTRR and PAT agree wherever both define an encoding.
                    assert_eq!(t.pat_encoding(), Some(enc));
                }
                _ => assert_eq!(t, None, "encoding {enc}"),
            }
        }
        for t in [MemType::UcMinus, MemType::WcPlus, MemType::Cd] {
            assert_eq!(t.mtrr_encoding(), None);
        }
    }

    #[test]
    fn cacheability_classes() {
        let cacheable: std::vec::Vec<_> = MemType::ALL
            .into_iter()
            .filter(|t| t.is_cacheable())
            .collect();
        assert_eq!(cacheable, [MemType::Wt, MemType::Wp, MemType::Wb]);
        let wc: std::vec::Vec<_> = MemType::ALL
            .into_iter()
            .filter(|t| t.is_write_combining())
            .collect();
        assert_eq!(wc, [MemType::Wc, MemType::WcPlus]);
    }
}
