//! The on-disk record format of the event log and the scanner that reads a segment back.
//!
//! A segment file starts with a 16-byte header (`SCEVLOG\x01` and the segment number, u64 LE)
//! followed by records:
//!
//! ```text
//! len: u32 LE | len_crc: u32 LE = crc32c(len) | payload_crc: u32 LE = crc32c(payload) | payload (JSON)
//! ```
//!
//! The length has its own checksum so that a flipped length byte is caught before it is used
//! to skip ahead; the scanner therefore never misreads garbage as a record (a false positive
//! needs two 32-bit checksums to match by chance). When a record is bad, the scanner looks for
//! the next offset where a whole valid record starts, so that damage in the middle of a segment
//! is reported with its extent instead of silently losing everything after it.

use crate::event::Event;

/// Segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SCEVLOG\x01";
/// Segment header length.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest payload accepted (a record larger than this is refused on write and is treated as
/// corruption on read).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The segment header bytes for segment `number`.
pub fn segment_header(number: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&number.to_le_bytes());
    h
}

/// Encodes one payload as a framed record.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A stretch of a segment that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first bad byte (from the start of the file).
    pub offset: u64,
    /// Bytes skipped until the next valid record (or the end of the data).
    pub len: u64,
    /// What was wrong with the first bad record.
    pub reason: String,
    /// Whether a valid record follows the damage (damage in the middle) or not (a tail).
    pub followed_by_valid: bool,
}

/// What a scan of one segment's bytes found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Decoded events, in file order.
    pub events: Vec<Event>,
    /// Damaged stretches, in file order.
    pub damage: Vec<Damage>,
    /// Offset just past the last valid record.
    pub valid_end: u64,
}

/// The first `N` bytes of `b` as an array (callers slice exactly `N` bytes).
pub(crate) fn bytes<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Tries to decode one record at `pos` of `data`; `Err` says why it is not one.
fn decode_at(data: &[u8], pos: usize) -> Result<(Event, usize), String> {
    let rest = &data[pos..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(format!("record header cut short ({} bytes)", rest.len()));
    }
    let len_bytes: [u8; 4] = bytes(&rest[0..4]);
    let len_crc = u32::from_le_bytes(bytes(&rest[4..8]));
    if crc32c::crc32c(&len_bytes) != len_crc {
        return Err("record length checksum mismatch".into());
    }
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("record length {len} exceeds the maximum {MAX_PAYLOAD}"));
    }
    if rest.len() < RECORD_HEADER_LEN + len {
        return Err(format!(
            "record payload cut short ({} of {len} bytes)",
            rest.len() - RECORD_HEADER_LEN
        ));
    }
    let payload = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    let crc = u32::from_le_bytes(bytes(&rest[8..12]));
    if crc32c::crc32c(payload) != crc {
        return Err("record payload checksum mismatch".into());
    }
    let event: Event = serde_json::from_slice(payload)
        .map_err(|e| format!("record payload is not an event: {e}"))?;
    Ok((event, RECORD_HEADER_LEN + len))
}

/// Scans records in `data` starting at `start` (just past the segment header).
pub fn scan(data: &[u8], start: usize) -> Scan {
    let mut out = Scan { valid_end: start as u64, ..Scan::default() };
    let mut pos = start;
    while pos < data.len() {
        match decode_at(data, pos) {
            Ok((event, n)) => {
                out.events.push(event);
                pos += n;
                out.valid_end = pos as u64;
            }
            Err(reason) => {
                // Resynchronise: the next offset where a whole valid record decodes.
                let next = (pos + 1..data.len()).find(|&p| decode_at(data, p).is_ok());
                let end = next.unwrap_or(data.len());
                out.damage.push(Damage {
                    offset: pos as u64,
                    len: (end - pos) as u64,
                    reason,
                    followed_by_valid: next.is_some(),
                });
                pos = end;
            }
        }
    }
    out
}
