//! The database page format.
//!
//! Every page of a database file has the same fixed size (4–32 KiB, 32 KiB by default) and
//! starts with a 32-byte header:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | checksum: CRC-32C of bytes 8.. seeded with the page number (upper 32 bits: the page number's low 32 bits, so a page copied to the wrong place fails twice) |
//! | 8 | 8 | page number |
//! | 16 | 8 | page LSN: the log position of the transaction that wrote this version |
//! | 24 | 8 | reserved (zero) |
//! | 32 | .. | body; `body[0]` is the page type |
//!
//! Seeding the checksum with the page number detects misplaced pages (a correct page written at
//! the wrong offset). An all-zero page is "not initialized", anything else that fails the check
//! is a "read verify failure". The log carries only the body (bytes 32..): the header is
//! recomputed when a page is written, so redo never depends on it.

use crate::codec::{get_u64, put_u64};

/// Size of the page header.
pub const PAGE_HEADER: usize = 32;
/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 32 * 1024;

/// Page 0: the database header; page 1: its shadow copy.
pub const HEADER_PGNO: u64 = 0;
/// The shadow copy of the header.
pub const SHADOW_HEADER_PGNO: u64 = 1;
/// The root page: allocation state and table catalog.
pub const ROOT_PGNO: u64 = 2;

/// What a page holds (`body[0]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum PageType {
    Header = 1,
    Root = 2,
    Leaf = 3,
    Internal = 4,
    Overflow = 5,
    Free = 6,
}

impl PageType {
    /// Decodes a type byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => PageType::Header,
            2 => PageType::Root,
            3 => PageType::Leaf,
            4 => PageType::Internal,
            5 => PageType::Overflow,
            6 => PageType::Free,
            _ => return None,
        })
    }
}

/// Whether `size` is a valid page size.
pub fn valid_page_size(size: usize) -> bool {
    size.is_power_of_two() && (4096..=32768).contains(&size)
}

/// The checksum of a page image as stored at offset 0.
pub fn compute_checksum(pgno: u64, page: &[u8]) -> u64 {
    let seed = crc32c::crc32c(&pgno.to_le_bytes());
    let crc = crc32c::crc32c_append(seed, &page[8..]);
    ((pgno & 0xffff_ffff) << 32) | crc as u64
}

/// Stamps the header fields and checksum into `page` before it is written.
pub fn seal(page: &mut [u8], pgno: u64, lsn: u64) {
    put_u64(page, 8, pgno);
    put_u64(page, 16, lsn);
    let sum = compute_checksum(pgno, page);
    put_u64(page, 0, sum);
}

/// The page LSN field.
pub fn page_lsn(page: &[u8]) -> u64 {
    get_u64(page, 16)
}

/// Sets the page LSN field (in-memory images; the checksum is computed at write time).
pub fn set_page_lsn(page: &mut [u8], lsn: u64) {
    put_u64(page, 16, lsn);
}

/// The page type.
pub fn page_type(page: &[u8]) -> Option<PageType> {
    PageType::from_u8(page[PAGE_HEADER])
}

/// Why a page read from disk cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageProblem {
    /// All zeros: never written.
    NotInitialized,
    /// Checksum or page number wrong.
    Corrupt(String),
}

/// Verifies a page read from disk at `pgno`.
pub fn verify(pgno: u64, page: &[u8]) -> Result<(), PageProblem> {
    let stored = get_u64(page, 0);
    if stored == 0 && page.iter().all(|&b| b == 0) {
        return Err(PageProblem::NotInitialized);
    }
    let expected = compute_checksum(pgno, page);
    if stored != expected {
        let stored_pgno = get_u64(page, 8);
        let why = if stored_pgno != pgno && compute_checksum(stored_pgno, page) == stored {
            format!("misplaced page: it is page {stored_pgno}")
        } else {
            format!("checksum mismatch: stored {stored:#018x}, computed {expected:#018x}")
        };
        return Err(PageProblem::Corrupt(why));
    }
    if get_u64(page, 8) != pgno {
        return Err(PageProblem::Corrupt(format!("page number field says {}", get_u64(page, 8))));
    }
    Ok(())
}

/// A fresh zeroed page image of the given type.
pub fn new_page(size: usize, ty: PageType) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[PAGE_HEADER] = ty as u8;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_verify_and_misplacement() {
        let mut p = new_page(4096, PageType::Leaf);
        p[100] = 7;
        seal(&mut p, 9, 1234);
        assert_eq!(verify(9, &p), Ok(()));
        assert_eq!(page_lsn(&p), 1234);
        match verify(10, &p) {
            Err(PageProblem::Corrupt(why)) => assert!(why.contains("misplaced"), "{why}"),
            other => panic!("{other:?}"),
        }
        p[200] ^= 1;
        assert!(matches!(verify(9, &p), Err(PageProblem::Corrupt(_))));
        assert_eq!(verify(3, &vec![0u8; 4096]), Err(PageProblem::NotInitialized));
    }
}
