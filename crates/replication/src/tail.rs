//! Block mode: a passive copy follows the active's *current* generation as it is written,
//! instead of waiting for it to close.
//!
//! Active side, [`serve_tail`]: the bytes of the current generation from the offset asked for
//! up to its durable end (never bytes the active has not synced), waiting for the flusher when
//! there are none; the offset asked for is the copy's acknowledgement, recorded in the storage
//! group's [`SyncGate`].
//!
//! Passive side, [`TailFollower`]: once the copy caught up with the closed generations, a
//! thread of its own asks for the next bytes in a loop (long-poll, on a connection of its
//! own), appends them to `<copy dir>/tail/<prefix>.log` — an exact byte prefix of the active's
//! current log file — syncs, and asks again from the new offset (which acknowledges them).
//! When the generation closes, the active serves the rest of it from its closed file, so the
//! follower holds all of it before it asks for (and so acknowledges) offset 0 of the next;
//! then the file is renamed `tail/<generation name>` (kept until the copier has the closed
//! generation in the inbox, so the copy's durable position never goes back), the copier is
//! woken to fetch the closed file, and the next generation starts at 0.
//! Replay still reads closed, inspected generations only. A failure of the follower never
//! fails the copy: it is reported, and the copy goes on with closed generations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ese::{Instance, Lsn, logfmt};
use parking_lot::Mutex;
use volume::{FsRef, OpenMode};

use crate::client::PeerClient;
use crate::protocol::{self, TailChunk};
use crate::source::SourceError;
use crate::sync::SyncGate;

/// The most bytes one tail answer carries.
pub const MAX_TAIL_CHUNK: usize = 1 << 20;
/// How long a follower's request waits on the active for new bytes.
pub const TAIL_WAIT: Duration = Duration::from_millis(1000);
/// How long a follower waits after a failed request before it asks again.
const RETRY: Duration = Duration::from_millis(500);

/// Answers a tail request from `inst` (see the module documentation), recording `from` as
/// `peer`'s acknowledgement in `gate`.
pub fn serve_tail(
    inst: &Instance,
    gate: Option<&SyncGate>,
    peer: &str,
    generation: u32,
    from: u64,
    wait: Duration,
) -> Result<TailChunk, SourceError> {
    let Ok(offset) = u32::try_from(from) else {
        return Err(SourceError::NotFound(format!("offset {from} is past any log file")));
    };
    let at = Lsn::new(generation, offset);
    let read = || {
        inst.read_current_log(generation, from, MAX_TAIL_CHUNK)
            .map_err(|e| SourceError::Internal(e.to_string()))
    };
    let mut r = read()?;
    if generation > r.current {
        return Err(SourceError::NotFound(format!(
            "generation {generation:#X} is not current yet (current {:#X})",
            r.current
        )));
    }
    if !r.closed && at > r.durable_end {
        return Err(SourceError::NotFound(format!(
            "offset {at} is past the durable end {} of the active's log",
            r.durable_end
        )));
    }
    // The caller holds everything before `from` durably: its acknowledgement.
    if let Some(g) = gate {
        g.record(peer, at);
    }
    if r.bytes.is_empty() && !r.closed && !wait.is_zero() {
        inst.wait_durable_beyond(at, wait);
        r = read()?;
    }
    if r.closed {
        return rest_of_closed(inst, generation, from, r.durable_end);
    }
    Ok(TailChunk { bytes: r.bytes, durable_end: r.durable_end.0, closed: false })
}

/// The rest of closed generation `generation` from `from`, from its closed file (synced
/// before it was renamed): the copy gets every byte of it before it moves on, so its next
/// acknowledgement (offset 0 of the next generation) never covers bytes it does not hold.
/// `closed` is set once `from` is the file's end.
fn rest_of_closed(
    inst: &Instance,
    generation: u32,
    from: u64,
    durable_end: Lsn,
) -> Result<TailChunk, SourceError> {
    let cfg = inst.config();
    let path = cfg.log_dir.join(logfmt::generation_name(&cfg.prefix, generation));
    let gone = |e: std::io::Error| {
        SourceError::NotFound(format!("closed generation {}: {e}", path.display()))
    };
    let f = cfg.log_fs.open(&path, OpenMode::Read).map_err(gone)?;
    let len = f.len().map_err(gone)?;
    let mut bytes = Vec::new();
    if from < len {
        bytes.resize((len - from).min(MAX_TAIL_CHUNK as u64) as usize, 0);
        f.read_exact_at(&mut bytes, from).map_err(gone)?;
    }
    let closed = bytes.is_empty();
    Ok(TailChunk { bytes, durable_end: durable_end.0, closed })
}

/// The tail file of the generation being followed.
pub fn tail_path(dir: &Path, prefix: &str) -> PathBuf {
    dir.join("tail").join(logfmt::current_name(prefix))
}

/// Where the follower is, shared with the copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailState {
    /// The generation followed and the bytes of it held durably (`Lsn(0)` before any).
    pub position: Lsn,
    /// The follower is connected and following.
    pub following: bool,
    /// Why it is not, if it failed.
    pub error: Option<String>,
}

/// What the follower needs.
pub struct FollowerConfig {
    pub sg: String,
    pub fs: FsRef,
    /// The copy's directory.
    pub dir: PathBuf,
    pub prefix: String,
    /// The generation to follow first (the one after the last closed).
    pub generation: u32,
    /// The active's epoch: a tail file written under another epoch is another history (a
    /// deposed active's), never resumed.
    pub epoch: u64,
    /// Its own connection to the active.
    pub client: PeerClient,
    pub runtime: tokio::runtime::Handle,
    /// Called when a generation closed (wakes the copier).
    pub on_closed: Box<dyn Fn() + Send>,
    /// The last generation the copy holds in its inbox: a follower behind it skips ahead.
    pub admitted: Box<dyn Fn() -> u32 + Send>,
}

/// A running follower thread; dropping it stops it (within one request).
pub struct TailFollower {
    pub state: Arc<Mutex<TailState>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TailFollower {
    pub fn start(cfg: FollowerConfig) -> std::io::Result<TailFollower> {
        let state = Arc::new(Mutex::new(TailState::default()));
        let (tx, rx) = mpsc::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tail-{}", cfg.sg))
            .spawn(move || follow(cfg, st, rx))?;
        Ok(TailFollower { state, stop: Some(tx), thread: Some(thread) })
    }
}

impl Drop for TailFollower {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(cfg: FollowerConfig, state: Arc<Mutex<TailState>>, stop: mpsc::Receiver<()>) {
    let path = tail_path(&cfg.dir, &cfg.prefix);
    let mut generation = cfg.generation;
    let mut file: Option<(volume::FileRef, u64)> = None;
    let stopped = || !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty));
    loop {
        if stopped() {
            return;
        }
        let admitted = (cfg.admitted)();
        if admitted >= generation {
            // The copier has it (the follower fell behind, or could not get it).
            generation = admitted + 1;
            file = None;
        }
        let step = (|| -> Result<bool, String> {
            if file.is_none() {
                file = Some(
                    open_tail(&cfg.fs, &path, generation, cfg.epoch).map_err(|e| e.to_string())?,
                );
            }
            let Some((f, off)) = file.as_mut() else { return Ok(false) };
            let url = protocol::tail_path(&cfg.sg, generation, *off, TAIL_WAIT.as_millis() as u64);
            let chunk =
                cfg.runtime.block_on(cfg.client.get_tail(&url)).map_err(|e| e.to_string())?;
            if !chunk.bytes.is_empty() {
                f.write_at(&chunk.bytes, *off).map_err(|e| format!("{}: {e}", path.display()))?;
                f.sync().map_err(|e| format!("{}: {e}", path.display()))?;
                *off += chunk.bytes.len() as u64;
            }
            {
                let mut s = state.lock();
                s.position = Lsn::new(generation, *off as u32);
                s.following = true;
                s.error = None;
            }
            Ok(chunk.closed)
        })();
        match step {
            Ok(false) => {}
            Ok(true) => {
                // Kept under its generation's name until the closed file is in the inbox.
                file = None;
                let closed =
                    cfg.dir.join("tail").join(logfmt::generation_name(&cfg.prefix, generation));
                if let Err(e) = cfg.fs.rename(&path, &closed) {
                    state.lock().error = Some(format!("{}: {e}", closed.display()));
                }
                generation += 1;
                (cfg.on_closed)();
            }
            Err(e) => {
                {
                    let mut s = state.lock();
                    s.following = false;
                    s.error = Some(e);
                }
                file = None;
                match stop.recv_timeout(RETRY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        }
    }
}

/// Opens the tail file for `generation`: what it holds already counts when it is of that
/// generation (its header says so), otherwise it starts empty.
fn open_tail(
    fs: &FsRef,
    path: &Path,
    generation: u32,
    epoch: u64,
) -> std::io::Result<(volume::FileRef, u64)> {
    if let Some(dir) = path.parent() {
        fs.create_dir_all(dir)?;
    }
    // The epoch the tail was written under, beside it: the same generation number under
    // another epoch is another active's history.
    let mut epoch_path = path.to_path_buf().into_os_string();
    epoch_path.push(".epoch");
    let epoch_path = PathBuf::from(epoch_path);
    let written = volume::fs::read_all(fs.as_ref(), &epoch_path).ok();
    let same_epoch = written.as_deref() == Some(epoch.to_string().as_bytes());
    let f = fs.open(path, OpenMode::Create)?;
    let len = f.len()?;
    let mut header = vec![0u8; logfmt::LOG_HEADER_SIZE as usize];
    let same = same_epoch
        && len >= header.len() as u64
        && f.read_exact_at(&mut header, 0).is_ok()
        && logfmt::LogHeader::decode(&header).is_ok_and(|h| h.generation == generation);
    if same {
        return Ok((f, len));
    }
    f.set_len(0)?;
    f.sync()?;
    if !same_epoch {
        volume::fs::write_atomic(fs.as_ref(), &epoch_path, epoch.to_string().as_bytes())?;
    }
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir)?;
    }
    Ok((f, 0))
}

/// Removes the tail files of generations up to `admitted` (they are in the inbox now).
pub fn prune_closed(fs: &FsRef, dir: &Path, prefix: &str, admitted: u32) {
    let d = dir.join("tail");
    let Ok(entries) = fs.read_dir(&d) else { return };
    for e in entries {
        if let Some(g) = logfmt::parse_generation_name(prefix, &e.name)
            && g <= admitted
        {
            let _ = fs.remove_file(&d.join(&e.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(generation: u32) -> Vec<u8> {
        logfmt::LogHeader {
            generation,
            signature: [7; 16],
            created: 1,
            previous_created: 0,
            file_size: 64 * 1024,
            attached: Vec::new(),
        }
        .encode()
    }

    #[test]
    fn a_tail_is_resumed_under_its_epoch_and_never_under_another() {
        let fs: FsRef = Arc::new(volume::mem::MemFs::new());
        let path = Path::new("copy/tail/E00.log");
        let (f, off) = open_tail(&fs, path, 11, 3).unwrap();
        assert_eq!(off, 0);
        let mut bytes = header(11);
        bytes.extend_from_slice(b"records of epoch 3");
        f.write_at(&bytes, 0).unwrap();
        f.sync().unwrap();
        drop(f);
        // Same epoch, same generation: what it holds counts.
        let (_, off) = open_tail(&fs, path, 11, 3).unwrap();
        assert_eq!(off, bytes.len() as u64);
        // Generation 11 of a new active (epoch 4) is another history: started over.
        let (f, off) = open_tail(&fs, path, 11, 4).unwrap();
        assert_eq!(off, 0);
        assert_eq!(f.len().unwrap(), 0, "the old epoch's bytes are gone");
    }
}
