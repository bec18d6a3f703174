//! The log inspector: checks a shipped log generation before the replayer may use it.
//!
//! A passive copy must never replay a generation that is damaged, belongs to another log
//! stream or does not follow the last one applied: redo would write wrong pages into the copy
//! and the damage would only show at activation. The checks are the engine's own (header
//! decoding, record framing with checksums and positions, see [`ese::logfmt`]) plus what the
//! passive knows: the copy's log signature, the generation it expects next, and the creation
//! time of the previous generation, which every log header repeats (`previous_created`), so a
//! generation written after a different predecessor (e.g. after the active's logs were reset)
//! is refused even when its number fits.

use std::path::{Path, PathBuf};

use ese::logfmt::{self, LOG_HEADER_SIZE, LogHeader, ScanEnd};

/// Why a shipped generation was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read shipped log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("shipped log {path} has an unusable header: {why}")]
    Header { path: PathBuf, why: String },
    #[error("shipped log {path} is named generation {named:#X} but its header says {header:#X}")]
    NameMismatch { path: PathBuf, named: u32, header: u32 },
    #[error("shipped log {path} (generation {generation:#X}) belongs to another log stream")]
    ForeignStream { path: PathBuf, generation: u32 },
    #[error("shipped log {path} is generation {found:#X}; generation {expected:#X} comes next")]
    OutOfSequence { path: PathBuf, expected: u32, found: u32 },
    #[error(
        "shipped log {path} (generation {generation:#X}) does not continue the previous \
         generation: it says that one was created at {claims}, but it was created at {actual}"
    )]
    Discontinuous { path: PathBuf, generation: u32, claims: u64, actual: u64 },
    #[error(
        "shipped log {path} (generation {generation:#X}) is truncated: {len} bytes of {expected}"
    )]
    Truncated { path: PathBuf, generation: u32, len: u64, expected: u64 },
    #[error("shipped log {path} (generation {generation:#X}) is damaged: {why}")]
    Damaged { path: PathBuf, generation: u32, why: String },
    #[error(
        "shipped log {path} (generation {generation:#X}) is not closed: no end-of-generation \
         record after offset {end}"
    )]
    NotClosed { path: PathBuf, generation: u32, end: u32 },
}

/// A generation that passed inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub path: PathBuf,
    pub header: LogHeader,
    pub records: usize,
    /// Offset just past the end-of-generation record.
    pub end: u32,
}

/// Checks shipped generations of one log stream in sequence.
#[derive(Debug, Clone)]
pub struct Inspector {
    prefix: String,
    signature: [u8; 16],
    next_generation: u32,
    /// Creation time of the previous generation, when known (unknown for the first one after
    /// seeding).
    previous_created: Option<u64>,
}

impl Inspector {
    /// An inspector expecting `next_generation` of the stream with `signature`;
    /// `previous_created` is the creation time of the generation before it when known.
    pub fn new(
        prefix: impl Into<String>,
        signature: [u8; 16],
        next_generation: u32,
        previous_created: Option<u64>,
    ) -> Self {
        Inspector { prefix: prefix.into(), signature, next_generation, previous_created }
    }

    /// The generation the next [`Self::check`] expects.
    pub fn next_generation(&self) -> u32 {
        self.next_generation
    }

    /// Checks the generation file at `path` without changing the expected sequence.
    pub fn check(
        &self,
        fs: &dyn volume::FileSystem,
        path: &Path,
    ) -> Result<Inspected, InspectError> {
        let io = |source| InspectError::Io { path: path.to_path_buf(), source };
        let image = volume::fs::read_all(fs, path).map_err(io)?;
        let header_block = &image[..image.len().min(LOG_HEADER_SIZE as usize)];
        let header = LogHeader::decode(header_block)
            .map_err(|why| InspectError::Header { path: path.to_path_buf(), why })?;
        let g = header.generation;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match logfmt::parse_generation_name(&self.prefix, name) {
            Some(named) if named == g => {}
            Some(named) => {
                return Err(InspectError::NameMismatch {
                    path: path.to_path_buf(),
                    named,
                    header: g,
                });
            }
            None => {
                return Err(InspectError::Header {
                    path: path.to_path_buf(),
                    why: format!("not a closed generation name of prefix {}", self.prefix),
                });
            }
        }
        if header.signature != self.signature {
            return Err(InspectError::ForeignStream { path: path.to_path_buf(), generation: g });
        }
        if g != self.next_generation {
            return Err(InspectError::OutOfSequence {
                path: path.to_path_buf(),
                expected: self.next_generation,
                found: g,
            });
        }
        if let Some(actual) = self.previous_created
            && header.previous_created != actual
        {
            return Err(InspectError::Discontinuous {
                path: path.to_path_buf(),
                generation: g,
                claims: header.previous_created,
                actual,
            });
        }
        if image.len() as u64 != u64::from(header.file_size) {
            return Err(InspectError::Truncated {
                path: path.to_path_buf(),
                generation: g,
                len: image.len() as u64,
                expected: u64::from(header.file_size),
            });
        }
        let scan = logfmt::scan(g, &image, 0);
        match scan.how {
            ScanEnd::Closed => {}
            ScanEnd::Unwritten => {
                return Err(InspectError::NotClosed {
                    path: path.to_path_buf(),
                    generation: g,
                    end: scan.end,
                });
            }
            ScanEnd::Damaged(why) => {
                return Err(InspectError::Damaged { path: path.to_path_buf(), generation: g, why });
            }
        }
        Ok(Inspected {
            path: path.to_path_buf(),
            records: scan.records.len(),
            end: scan.end,
            header,
        })
    }

    /// Records that `inspected` was used: the next check expects the generation after it.
    pub fn accept(&mut self, inspected: &Inspected) {
        self.next_generation = inspected.header.generation + 1;
        self.previous_created = Some(inspected.header.created);
    }
}
