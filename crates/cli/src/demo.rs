//! `shadowcopy demo`: the whole system at work on a throw-away node, as a short narrative.
//!
//! A node with two copy-on-write volumes (logs, databases), one storage group and one
//! database, under a continuous mail load: a full backup and an incremental while mail keeps
//! arriving, the whole event trail of the full backup (every source, in order), a disaster (the database file is lost), a
//! restore of full + incremental rolling forward through the logs still on disk, and the proof
//! that every acknowledged message came back byte for byte. Exits non-zero if the proof fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backup::repo::Repository;
use backup::{BackupReport, BackupRequest, Progress, RestoreRequest, RestoreTarget};
use node::{Config, Node};
use store::load::{LoadConfig, LoadGenerator};
use volume::{FsRef, HostFs};
use vss::BackupType;

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo directory (node data, volumes, repository) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Run in this directory (created if missing) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Messages to deliver before each backup (more: bigger backups, a longer demo).
    #[arg(long, value_name = "N", default_value_t = 400)]
    pub messages: u64,
    /// Instead, the surrogate backup in a database availability group: etcd and three nodes
    /// (`etcd` must be on PATH), a full backup of one passive copy and an incremental of
    /// another, and a restore of both on the active.
    #[arg(long)]
    pub dag: bool,
    /// After the demo, keep its node (with `--dag`, its three nodes and etcd) running with the
    /// web console on a loopback port: prints the console's URL and a fresh token, and serves
    /// until interrupted (Ctrl-C).
    #[arg(long)]
    pub serve: bool,
}

/// Prints each step of long work, indented, with its time.
struct Steps {
    started: Instant,
}

impl Progress for Steps {
    fn step(&self, what: &str) {
        println!("     · {what} ({:.2} s)", self.started.elapsed().as_secs_f64());
    }
    fn bytes(&self, _: u64, _: u64) {}
}

fn config(dir: &Path) -> anyhow::Result<Config> {
    let d = dir.display();
    let text = format!(
        r#"
[node]
name = "demo-node"
data_dir = "{d}/node"

[[volume]]
label = "logs"
path = "{d}/volumes/logs"
create = true

[[volume]]
label = "db"
path = "{d}/volumes/db"
create = true

[[shadow_storage]]
for = "db"
on = "db"
max_size = "2GiB"

[[shadow_storage]]
for = "logs"
on = "logs"
max_size = "1GiB"

[[storage_group]]
name = "SG1"
log_volume = "logs"
log_dir = "SG1/logs"
system_dir = "SG1/system"

[[storage_group.database]]
name = "DB1"
volume = "db"
path = "SG1/DB1.edb"
"#
    );
    Ok(Config::parse(&text, Path::new("(built-in demo configuration)"))?)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn wait_for(load: &LoadGenerator, more: u64) {
    let target = load.acknowledged() + more;
    while load.acknowledged() < target && !load.finished() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn generations(node: &Node) -> anyhow::Result<String> {
    let st = node.store().storage_group("SG1")?.log_state()?;
    Ok(match (st.generations.first(), st.generations.last()) {
        (Some(a), Some(b)) => format!(
            "{} log files on disk (generations {a:#X}..{b:#X}), checkpoint at {:#X}",
            st.generations.len(),
            st.checkpoint_generation
        ),
        _ => "no log files".into(),
    })
}

fn summarize(r: &BackupReport) {
    let files = r.set.files.len();
    let logs = r.set.files.iter().filter(|f| f.role == backup::repo::FileRole::Log).count();
    let range = r.set.log_range.map(|l| format!("{:#X}..{:#X}", l.low, l.high)).unwrap_or_default();
    println!(
        "   set {} — {files} files ({logs} log generations {range}), {} read, {} new in the repository",
        &r.set.id.to_string()[..8],
        mib(r.bytes),
        mib(r.stored_bytes)
    );
    println!(
        "   writes were held for {:.1} ms while the snapshot set was committed; the job took {:.2} s",
        r.hold.as_secs_f64() * 1000.0,
        r.elapsed.as_secs_f64()
    );
}

/// One event of a trail on one line: ID, source, level when it is not plain information, and
/// the message.
fn trail_line(e: &events::Event) -> String {
    let level = match e.level {
        events::Level::Info => String::new(),
        other => format!("[{other}] "),
    };
    format!("   {:>5} {:<11} {level}{}", e.id, e.source.to_string(), e.message)
}

/// Runs the demo.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let (dir, temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("shadowcopy-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let outcome = if args.dag {
        println!("Shadowcopy DAG demo — a throw-away DAG in {}\n", dir.display());
        crate::demo_dag::run(&dir, args.messages, args.serve)
    } else {
        println!("Shadowcopy demo — a throw-away node in {}\n", dir.display());
        demo(&dir, args, started)
    };
    match &outcome {
        Ok(()) => println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64()),
        Err(e) => println!("\nThe demo failed: {e:#}"),
    }
    match temp {
        Some(t) if !args.keep => {
            println!("Removing {} (use --keep to keep it).", dir.display());
            drop(t);
        }
        Some(t) => println!("The demo directory is kept: {}", t.keep().display()),
        None => println!("The demo directory is kept: {}", dir.display()),
    }
    outcome
}

fn demo(dir: &Path, args: &Args, started: Instant) -> anyhow::Result<()> {
    let steps = Steps { started };
    println!("1. A node with two copy-on-write volumes");
    let node = Arc::new(Node::start(config(dir)?).context("starting the demo node")?);
    for label in ["logs", "db"] {
        let v = node.volume(label).context("volume")?;
        println!(
            "   volume {label:<4} at {} ({} KiB blocks)",
            v.root().display(),
            v.block_size() / 1024
        );
    }
    println!("   storage group SG1: logs and checkpoint on 'logs', database DB1 on 'db' — mounted");
    let repo_fs: FsRef = Arc::new(HostFs::new(dir.join("repository"))?);
    let repo = Arc::new(Repository::open_or_init(repo_fs, "")?);
    println!("   backup repository at {}\n", dir.join("repository").display());

    println!(
        "2. Mail starts to arrive (8 mailboxes, messages of 1–64 KiB, every delivery durable)"
    );
    let sg = node.store().storage_group("SG1")?;
    let load = LoadGenerator::start(
        sg.mail("DB1")?,
        LoadConfig {
            mailboxes: 8,
            body_min: 1024,
            body_max: 64 << 10,
            seed: 7,
            ..Default::default()
        },
    )?;
    wait_for(&load, args.messages);
    println!("   {} operations acknowledged; {}\n", load.acknowledged(), generations(&node)?);

    let requester = node.requester(repo.clone());
    let req = |t| BackupRequest {
        storage_group: "SG1".into(),
        backup_type: t,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    };
    println!("3. A full backup, while the mail keeps arriving");
    let full = requester.backup(&req(BackupType::Full), &steps)?;
    summarize(&full);
    let header = sg.instance()?.database_header("DB1")?;
    if let Some(slot) = header.previous_full {
        println!(
            "   DB1's header now records the full backup (generations {:#X}..{:#X})",
            slot.gen_low, slot.gen_high
        );
    }
    println!("   after truncation: {}\n", generations(&node)?);

    wait_for(&load, args.messages);
    println!(
        "4. More mail ({} operations so far), then an incremental backup",
        load.acknowledged()
    );
    let inc = requester.backup(&req(BackupType::Incremental), &steps)?;
    summarize(&inc);
    println!("   after truncation: {}\n", generations(&node)?);

    wait_for(&load, args.messages / 2);
    let ledger = load.stop();
    if ledger.errors > 0 {
        bail!("the mail load saw {} errors, the last: {:?}", ledger.errors, ledger.last_error);
    }
    let before = sg.mail("DB1")?.digest()?;
    println!(
        "5. The mail stops: {} deliveries and {} deletions acknowledged; DB1 holds {} messages ({})",
        ledger.delivered.len(),
        ledger.deleted.len(),
        before.messages,
        mib(before.bytes)
    );
    println!("   content digest {}\n", &before.digest.to_hex()[..16]);

    println!("6. The event trail of the full backup (job {}), in order:", full.job);
    println!("   every component logs its steps, with the reference system's event IDs");
    for e in node.events().query(&events::Filter::job(full.job))? {
        println!("{}", trail_line(&e));
    }
    println!();

    println!("7. Disaster: DB1.edb is lost");
    sg.dismount(false)?;
    std::fs::remove_file(dir.join("volumes/db/SG1/DB1.edb")).context("deleting DB1.edb")?;
    match sg.mount() {
        Ok(()) => bail!("the storage group mounted without its database"),
        Err(e) => println!("   mounting SG1 now fails: {e}\n"),
    }

    println!("8. Restore the full + incremental backups, rolling forward through the logs on disk");
    drop(requester);
    let report = node.restorer(repo.clone()).restore(
        &RestoreRequest {
            set: inc.set.id.to_string(),
            target: RestoreTarget::Original { allow_overwrite: false },
            roll_forward: true,
        },
        &steps,
    )?;
    println!(
        "   restored {} files ({}) from {} sets; hard recovery replayed {} log generations, {} transactions",
        report.files,
        mib(report.bytes),
        report.sets.len(),
        report.recovery.generations.len(),
        report.recovery.transactions
    );
    println!("   SG1 mounted again: {}\n", sg.is_mounted());

    println!("9. The proof");
    let mail = sg.mail("DB1")?;
    let checked =
        ledger.verify(&mail, u64::MAX).map_err(|e| anyhow::anyhow!("MESSAGE LOST: {e}"))?;
    let after = mail.digest()?;
    println!("   every acknowledged message is present, byte for byte: {checked} checked");
    println!(
        "   DB1 holds {} messages ({}), digest {} — {}",
        after.messages,
        mib(after.bytes),
        &after.digest.to_hex()[..16],
        if after == before { "identical to before the disaster" } else { "DIFFERENT" }
    );
    if after != before {
        bail!("the restored database differs from the one that was lost");
    }
    println!("   no message lost.");
    if args.serve {
        // The repository is the node's to open now (a backup from the console's page).
        drop(repo);
        serve_console(node.clone(), dir)?;
    }
    let problems = node.shutdown();
    if !problems.is_empty() {
        bail!("shutdown: {}", problems.join("; "));
    }
    Ok(())
}

/// `--serve`: the demo's node on with its API on a free loopback port and the web console
/// there, until Ctrl-C (or SIGTERM). The token is made for this run and printed, as the URL.
fn serve_console(node: Arc<Node>, dir: &Path) -> anyhow::Result<()> {
    // A free port, asked of the kernel: the node binds it again right after (the console's
    // URL has to be printed, and the node only logs the port it bound).
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let token = uuid::Uuid::new_v4().simple().to_string();
    let socket = dir.join("node/api.sock");
    println!("\n10. The web console: the node keeps running");
    println!("   open   http://127.0.0.1:{port}/ui/");
    println!("   token  {token}");
    println!(
        "   the Jobs page shows the demo's backups as timelines; a backup run from it can use \
         the repository {}",
        dir.join("repository").display()
    );
    println!("   Ctrl-C stops the node");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let served = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let token = node::api::auth::Token::new(&token);
        node::service::serve(node, &socket, Some(addr), Some(token), stop)
            .await
            .map_err(anyhow::Error::from)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&socket);
    println!("   the console stopped");
    served
}
