//! Log sequence numbers.
//!
//! An LSN is a position in the log stream: the generation in the upper 32 bits and the byte
//! offset inside that generation's file in the lower 32 bits (log files are at most 32 MiB),
//! so LSNs order like log positions and the generation of a position is a shift away.

use std::fmt;

/// A position in the log stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position `offset` bytes into generation `generation`.
    pub fn new(generation: u32, offset: u32) -> Self {
        Lsn(((generation as u64) << 32) | offset as u64)
    }
    /// The generation part.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The byte offset part.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}:{:08X}", self.generation(), self.offset())
    }
}

/// Serializes bytes as lower-case hex.
pub(crate) fn ser_hex<S: serde::Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(v))
}

/// Lower-case hex of bytes.
pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}
