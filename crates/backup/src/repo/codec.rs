//! How chunks are compressed: the repository's setting, and the codec each stored chunk used.
//!
//! On a fast disk the copy is limited by the CPU, and zstd is most of it: at level 1 it
//! compresses the mail store's text about 5:1 but at a fraction of the disk's pace. lz4 (the
//! pure-Rust `lz4_flex`) compresses the same text less well at several times the speed, and
//! incompressible content (attachments that are already compressed) is cheapest stored as it
//! is. A repository's `compression` setting chooses among them; every stored chunk records the
//! codec it used in its pack index entry (one byte: what was a "compressed" flag, 0 or 1, in
//! format 1 and 2 repositories, which therefore read as they are), so any mix reads back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The zstd level of `zstd` without one, and of the chunks `auto` gives to zstd: what every
/// repository used before the setting existed.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// How a repository compresses new chunks (`compression` in `repository.json`, chosen at
/// `backup init --compression`).
///
/// The default is [`Compression::Auto`]. Why: issue 18 measured zstd-only copies at 0.30 of
/// `cp` on a 2-core machine with a fast disk (477 vs 1,578 MiB/s), CPU-bound in zstd and
/// hashing; `lz4` alone stores the store's text (no entropy coding) 2.35x zstd's size, and
/// `none` 5.4x. `auto` spends zstd unless the copy's workers have been busy nearly all the
/// time lately, so its stored size stays near zstd's and its pace follows the reader and
/// writer. `backup-throughput` (2 GiB, page cache dropped, 2-core VM, medians of 3 rounds,
/// the settings' order rotated): `auto` 552 MiB/s at 1.09x zstd's size, `zstd:1` 485, `lz4`
/// 461, `none` 407 (writing more costs more than compressing here), `cp` 774, restic 223.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Per chunk: zstd while the copy's workers have time to spare (they wait for the reader
    /// or the writer), lz4 when they are the limit, raw when the chunk does not compress.
    #[default]
    Auto,
    /// zstd at this level for every chunk (raw when it does not pay).
    Zstd(i32),
    /// lz4 for every chunk (raw when it does not pay).
    Lz4,
    /// Every chunk stored as it is.
    None,
}

impl Compression {
    /// The settings `backup init --compression` takes, for help texts.
    pub const CHOICES: &'static str = "auto, zstd[:LEVEL], lz4, none";
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Auto => f.write_str("auto"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::None => f.write_str("none"),
        }
    }
}

/// A compression setting that is not one of [`Compression::CHOICES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression {given:?}: {why} (one of {choices})", choices = Compression::CHOICES)]
pub struct BadCompression {
    pub given: String,
    pub why: String,
}

impl FromStr for Compression {
    type Err = BadCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| BadCompression { given: s.into(), why };
        let (name, level) = match s.trim().split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s.trim(), None),
        };
        let parsed = match (name.to_ascii_lowercase().as_str(), level) {
            ("auto", None) => Compression::Auto,
            ("lz4", None) => Compression::Lz4,
            ("none", None) => Compression::None,
            ("zstd", None) => Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            ("zstd", Some(l)) => {
                let level: i32 =
                    l.trim().parse().map_err(|_| bad(format!("level {l:?} is not a number")))?;
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(bad(format!(
                        "zstd level {level} is outside {}..={}",
                        range.start(),
                        range.end()
                    )));
                }
                Compression::Zstd(level)
            }
            (_, Some(_)) => return Err(bad("only zstd takes a level".into())),
            _ => return Err(bad("unknown setting".into())),
        };
        Ok(parsed)
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How one stored chunk is encoded: the byte its pack index entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as it is.
    Raw,
    /// A zstd frame.
    Zstd,
    /// An lz4 block (its decompressed length is the entry's raw length).
    Lz4,
}

impl Codec {
    /// The byte stored in a pack index entry. `Raw` and `Zstd` are the 0 and 1 of the
    /// "compressed" flag format 1 and 2 repositories stored.
    pub fn to_byte(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    /// The codec of an index entry's byte; `None` for a byte no codec has (damage, or a
    /// newer build's codec).
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Lz4),
            _ => None,
        }
    }

    /// The name shown in errors and reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        }
    }
}

/// Compresses chunks on one thread, reusing its contexts and buffers from chunk to chunk
/// (making a zstd context per 1 MiB chunk costs a measurable share of the work).
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    level: i32,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").field("level", &self.level).finish()
    }
}

impl Compressor {
    /// A compressor whose zstd chunks use `level`.
    pub fn new(level: i32) -> Self {
        Self { zstd: None, level }
    }

    /// `data` encoded with `codec`, or `None` when that does not save at least 1/32 of it
    /// (the chunk is then stored raw: reading it back costs nothing to decode).
    pub fn compress(&mut self, codec: Codec, data: &[u8]) -> Option<Vec<u8>> {
        let out = match codec {
            Codec::Raw => return None,
            Codec::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = zstd::bulk::Compressor::new(self.level).ok();
                }
                self.zstd.as_mut()?.compress(data).ok()?
            }
            Codec::Lz4 => {
                let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(data.len())];
                let n = lz4_flex::block::compress_into(data, &mut out).ok()?;
                out.truncate(n);
                out
            }
        };
        (out.len() + out.len() / 32 < data.len()).then_some(out)
    }
}

/// Decodes a chunk stored with `codec` whose content is `raw_len` bytes.
pub fn decompress(codec: Codec, stored: Vec<u8>, raw_len: usize) -> std::io::Result<Vec<u8>> {
    match codec {
        Codec::Raw => Ok(stored),
        Codec::Zstd => decompress_zstd(&stored, raw_len),
        Codec::Lz4 => {
            let mut out = vec![0u8; raw_len];
            let n = lz4_flex::block::decompress_into(&stored, &mut out)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            out.truncate(n);
            Ok(out)
        }
    }
}

/// Decompresses with this thread's reused context (making one per chunk is measurable).
fn decompress_zstd(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let mut d = match c.take() {
            Some(d) => d,
            None => zstd::bulk::Decompressor::new()?,
        };
        let out = d.decompress(stored, capacity);
        *c = Some(d);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print_back() {
        for (s, c) in [
            ("auto", Compression::Auto),
            ("lz4", Compression::Lz4),
            ("none", Compression::None),
            ("zstd", Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            ("zstd:7", Compression::Zstd(7)),
            ("ZSTD:-3", Compression::Zstd(-3)),
        ] {
            assert_eq!(s.parse::<Compression>(), Ok(c), "{s}");
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c), "{c}");
        }
        for bad in ["", "gzip", "zstd:", "zstd:x", "zstd:99", "lz4:3", "auto:1"] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(e.to_string().contains("one of auto"), "{bad}: {e}");
        }
    }

    #[test]
    fn index_bytes_of_old_repositories_keep_their_meaning() {
        assert_eq!(Codec::from_byte(0), Some(Codec::Raw));
        assert_eq!(Codec::from_byte(1), Some(Codec::Zstd));
        for c in [Codec::Raw, Codec::Zstd, Codec::Lz4] {
            assert_eq!(Codec::from_byte(c.to_byte()), Some(c));
        }
        assert_eq!(Codec::from_byte(3), None);
    }
}
