//! `replication-throughput`: log shipping to a passive copy and its replay, against `cp` of the
//! same log files.
//!
//! An engine instance on the host file system (under the scratch directory) seeds a passive
//! copy of its database (a copy-kind backup session: the file copied while frozen, as the tests
//! do), then writes a backlog of at least `--mib` MiB (default 1024) of closed 1 MiB log
//! generations (1 KiB rows in transactions of 64, keys spread over 100 000 so pages are
//! revisited, as mail delivery does) and is shut down. Then, each starting with the page cache
//! dropped:
//!
//! - `cp`: the generations the passive needs are copied into a fresh directory, each with
//!   `std::fs::copy` and `File::sync_all`, then the directory is synced — once before
//!   shipping and once after replay (the load of a shared machine drifts), the mean is used;
//! - ship and replay, as the passive copy does them: the same generations are fetched over
//!   mutual TLS on loopback from [`replication::server::serve`] (a small [`ActiveSource`] over
//!   the log directory) with [`PeerClient::get_bytes`], each written and synced into
//!   `incoming/`, checked by the [`Inspector`] and renamed into `inbox/` (synced once per 16
//!   generations), while [`Replayer::catch_up`] on a thread of its own applies the inbox in
//!   batches.
//!
//! `ratio_cp_ship` = ship / cp; `ratio_cp` = bytes / (time until the last generation is
//! replayed) / cp, the copy's end-to-end rate against the copy of the files; `replay_mib_s` is
//! bytes / the time the replay thread spent applying.
//! `ship_phases_s` splits the shipping time: fetching over TLS (including the active's read),
//! the durable write into `incoming/`, inspection, and the rename into the synced inbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use ese::{BackupKind, DatabaseSpec, Durability, Instance, InstanceConfig, PassiveConfig, logfmt};
use replication::client::PeerClient;
use replication::protocol::{self, SeedManifest, StreamInfo};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::tls::DagTls;
use replication::{Inspector, Replayer, ReplayerConfig};
use serde_json::json;
use uuid::Uuid;
use volume::{FsRef, HostFs};

use crate::args::{ReplicationArgs, median};
use crate::store_setup::{self as setup, MIB};

const DB: &str = "db";
const TABLE: &str = "rows";
const PREFIX: &str = "E00";
/// The storage group name in the protocol's paths.
pub const SG: &str = "SG1";
/// The active node's name (its certificate's DNS name, the TLS server name dialled).
pub const ACTIVE: &str = "active";

/// The active's side of the protocol over a log directory whose generations no longer change.
struct LogDirSource {
    fs: FsRef,
    dir: PathBuf,
    info: StreamInfo,
}

impl ActiveSource for LogDirSource {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        if sg != self.info.sg {
            return Err(SourceError::NotFound(format!("no storage group {sg}")));
        }
        Ok(self.info.clone())
    }

    fn log_file(&self, sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        if sg != self.info.sg || generation > self.info.produced {
            return Err(SourceError::NotFound(format!("no generation {generation:#X} of {sg}")));
        }
        let path = self.dir.join(logfmt::generation_name(&self.info.prefix, generation));
        volume::fs::read_all(self.fs.as_ref(), &path)
            .map_err(|e| SourceError::Internal(format!("{}: {e}", path.display())))
    }

    fn start_seed(&self, _: &str, _: &str) -> Result<SeedManifest, SourceError> {
        Err(SourceError::NotFound("no seeds here".into()))
    }

    fn seed_file(&self, _: Uuid, _: usize) -> Result<SeedReader, SourceError> {
        Err(SourceError::NotFound("no seeds here".into()))
    }

    fn end_seed(&self, _: Uuid) -> Result<(), SourceError> {
        Err(SourceError::NotFound("no seeds here".into()))
    }

    fn refused(&self, addr: &str, reason: &str) {
        eprintln!("warning: connection from {addr} refused: {reason}");
    }
}

/// A replication listener on loopback and a client of it, with the TLS identities of a
/// two-node DAG written under `dir`.
pub struct Loopback {
    pub rt: tokio::runtime::Runtime,
    pub client: Arc<PeerClient>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// Serves `source` as node [`ACTIVE`] on 127.0.0.1 and connects a client as node `passive`.
    pub fn start(dir: &Path, source: Arc<dyn ActiveSource>) -> anyhow::Result<Loopback> {
        let nodes = [ACTIVE.to_string(), "passive".to_string()];
        let certs = replication::pki::write_dag_pki(dir, "bench", &nodes)?;
        let tls = |i: usize| DagTls::load(&certs[i].ca, &certs[i].cert, &certs[i].key);
        let (active, passive) = (tls(0)?, tls(1)?);
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let server = rt.spawn(replication::server::serve(
            listener,
            active,
            source,
            replication::server::Router::new(),
            rx,
        ));
        let client = Arc::new(PeerClient::new(passive, ACTIVE, addr.to_string()));
        Ok(Loopback { rt, client, shutdown, server })
    }

    /// Stops the listener.
    pub fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.rt.block_on(self.server)?;
        Ok(())
    }
}

/// Syncs a host directory (its entries' names become durable).
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)?.sync_all().with_context(|| format!("syncing {}", dir.display()))
}

/// `cp` of `files` into the fresh directory `dest`: `std::fs::copy` and `sync_all` of each,
/// then the directory synced; returns the seconds. `dest` is removed afterwards.
pub fn cp_synced(files: &[PathBuf], dest: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dest)?;
    let t = Instant::now();
    for f in files {
        let name = f.file_name().with_context(|| format!("{} names no file", f.display()))?;
        let to = dest.join(name);
        std::fs::copy(f, &to).with_context(|| format!("copying {}", f.display()))?;
        std::fs::File::open(&to)?.sync_all()?;
    }
    sync_dir(dest)?;
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dest)?;
    Ok(secs)
}

/// Fills `buf` with pseudo-random bytes from `state` (xorshift), so that rows differ.
fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Seeds the passive copy: the database file copied while the engine holds it frozen.
fn seed(inst: &Instance, active: &HostFs, passive: &HostFs, db_path: &Path) -> anyhow::Result<()> {
    let mut b = inst.backup_session(BackupKind::Copy)?;
    b.prepare()?;
    b.freeze()?;
    let to = passive.host_path(db_path)?;
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::copy(active.host_path(db_path)?, &to)?;
    std::fs::File::open(&to)?.sync_all()?;
    b.thaw()?;
    b.end()?;
    Ok(())
}

/// Runs the scenario.
pub fn run(opts: &ReplicationArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let active = HostFs::new(dir.join("active"))?;
    let afs: FsRef = Arc::new(active.clone());
    let passive = HostFs::new(dir.join("passive"))?;
    let pfs: FsRef = Arc::new(passive.clone());
    let db_path = PathBuf::from("db").join(format!("{DB}.edb"));

    // The active, the seed, then the backlog.
    let t = Instant::now();
    let cfg = InstanceConfig::new(afs.clone(), "logs", afs.clone(), "sys");
    let log_size = u64::from(cfg.log_file_size);
    let inst = Instance::create(cfg)?;
    inst.create_database(DB, afs.clone(), &db_path)?;
    let mut tx = inst.begin_write()?;
    tx.create_table(DB, TABLE)?;
    tx.commit(Durability::Durable)?;
    seed(&inst, &active, &passive, &db_path)?;
    let seeded_at = inst.log_state()?.current_generation;
    let want = opts.mib.max(1) * (1 << 20);
    let mut value = vec![0u8; 1024];
    let (mut i, mut rng) = (0u64, 0x9E37_79B9_7F4A_7C15u64);
    while u64::from(inst.log_state()?.current_generation - seeded_at) * log_size < want {
        let mut tx = inst.begin_write()?;
        for _ in 0..64 {
            let k = (i.wrapping_mul(0x9E37_79B9) % 100_000).to_be_bytes();
            fill_random(&mut value, &mut rng);
            tx.put(DB, TABLE, &k, &value)?;
            i += 1;
        }
        tx.commit(Durability::Lazy)?;
    }
    inst.roll_log()?;
    let produced = inst.log_state()?.current_generation - 1;
    let signature = inst.signature();
    inst.shutdown()?;
    let fill_s = t.elapsed().as_secs_f64();

    // The passive copy's replayer and the copier's inspector, as the copy opens them.
    let inbox = PathBuf::from("inbox");
    let incoming = PathBuf::from("incoming");
    pfs.create_dir_all(&incoming)?;
    let mut replayer = Replayer::open(ReplayerConfig {
        passive: PassiveConfig {
            databases: vec![DatabaseSpec::new(DB, pfs.clone(), &db_path)],
            checkpoint_fs: pfs.clone(),
            checkpoint_path: format!("{PREFIX}.pchk").into(),
            prefix: PREFIX.into(),
        },
        inbox_fs: pfs.clone(),
        inbox: inbox.clone(),
    })?;
    let st = replayer.passive().state();
    let first = st.replayed_generation + 1;
    let mut inspector = Inspector::new(
        PREFIX,
        st.signature,
        first,
        (st.last_created != 0).then_some(st.last_created),
    );
    let files: Vec<PathBuf> = (first..=produced)
        .map(|g| active.host_path(&Path::new("logs").join(logfmt::generation_name(PREFIX, g))))
        .collect::<Result<_, _>>()?;
    let mut bytes = 0u64;
    for f in &files {
        bytes += std::fs::metadata(f)?.len();
    }
    let mib = bytes as f64 / MIB;

    // cp of the same files.
    let mut cache_dropped = setup::drop_caches();
    let mut cp_runs = vec![cp_synced(&files, &dir.join("cp"))?];

    // Ship.
    let info = StreamInfo {
        sg: SG.into(),
        prefix: PREFIX.into(),
        signature: protocol::hex(&signature),
        produced,
        oldest: 1,
        node: ACTIVE.into(),
        epoch: 0,
    };
    let source = Arc::new(LogDirSource { fs: afs.clone(), dir: "logs".into(), info });
    let lo = Loopback::start(&dir.join("pki"), source)?;
    cache_dropped &= setup::drop_caches();
    let t = Instant::now();
    // Replay runs on its own thread while generations arrive, as in the passive copy: it
    // catches up with whatever the inbox holds, until the whole backlog is applied.
    // The last generation whose arrival in the inbox is durable (synced per batch): replay
    // takes whole batches, as the copy's replay thread is woken once per fetched batch.
    let admitted = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let admitted_r = admitted.clone();
    let replay_thread = std::thread::spawn(move || -> anyhow::Result<(Replayer, u64, f64, f64)> {
        let mut transactions = 0u64;
        let mut busy = 0f64;
        loop {
            if admitted_r.load(std::sync::atomic::Ordering::Acquire)
                <= replayer.replayed_generation()
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            let b = Instant::now();
            let reports = replayer.catch_up()?;
            if !reports.is_empty() {
                busy += b.elapsed().as_secs_f64();
            }
            transactions += reports.iter().map(|r| r.transactions).sum::<u64>();
            if replayer.replayed_generation() >= produced {
                return Ok((replayer, transactions, busy, t.elapsed().as_secs_f64()));
            }
        }
    });
    let info: StreamInfo = lo.rt.block_on(lo.client.get_json(&protocol::stream_path(SG)))?;
    // Seconds spent fetching, writing durably, inspecting and renaming into the inbox.
    let mut phases = [0f64; 4];
    let mut lap = Instant::now();
    let mut split = |i: usize| {
        phases[i] += lap.elapsed().as_secs_f64();
        lap = Instant::now();
    };
    for g in inspector.next_generation()..=info.produced {
        let name = logfmt::generation_name(PREFIX, g);
        let data = lo.rt.block_on(lo.client.get_bytes(&protocol::log_path(SG, g)))?;
        split(0);
        let tmp = incoming.join(&name);
        replication::copy::write_incoming(pfs.as_ref(), &tmp, &data)?;
        split(1);
        let checked = inspector.check(pfs.as_ref(), &tmp)?;
        split(2);
        pfs.rename(&tmp, &inbox.join(&name))?;
        // As the copy does: one inbox sync per batch of 16 generations.
        inspector.accept(&checked);
        if g % 16 == 0 || g == info.produced {
            pfs.sync_dir(&inbox)?;
            admitted.store(g, std::sync::atomic::Ordering::Release);
        }
        split(3);
    }
    let ship_s = t.elapsed().as_secs_f64();
    lo.stop()?;

    let (replayer, transactions, replay_s, pipeline_s) =
        replay_thread.join().map_err(|_| anyhow::anyhow!("the replay thread panicked"))??;
    if replayer.replayed_generation() != produced {
        bail!(
            "replay stopped at generation {:#X}, the backlog ends at {produced:#X}",
            replayer.replayed_generation()
        );
    }

    // cp once more, after: the machine's load drifts; the mean of before and after is used.
    cache_dropped &= setup::drop_caches();
    cp_runs.push(cp_synced(&files, &dir.join("cp"))?);
    let cp_s = median(cp_runs.clone());
    let (ship, replay, cp) = (mib / ship_s, mib / replay_s, mib / cp_s);
    let end_to_end = mib / pipeline_s;
    println!(
        "{}",
        json!({
            "scenario": "replication-throughput",
            "log_mib": mib,
            "generations": files.len(),
            "transactions": transactions,
            "ship_mib_s": ship,
            "replay_mib_s": replay,
            "end_to_end_mib_s": end_to_end,
            "cp_mib_s": cp,
            "ratio_cp_ship": ship / cp,
            "ratio_cp": end_to_end / cp,
            "seconds": {"ship": ship_s, "replay_busy": replay_s, "ship_and_replay": pipeline_s,
                        "cp": cp_s, "cp_runs": cp_runs},
            "ship_phases_s": {
                "fetch": phases[0],
                "write_synced": phases[1],
                "inspect": phases[2],
                "rename_sync_dir": phases[3],
            },
            "fill_s": fill_s,
            "page_cache_dropped": cache_dropped,
            "transport": "mutual TLS 1.3 over TCP on 127.0.0.1, HTTP/1.1, one connection",
        })
    );
    Ok(())
}
