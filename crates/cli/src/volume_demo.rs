//! The volume demo: copy-on-write snapshots on two scratch volumes.
//!
//! Creates a `logs` and a `db` volume, writes a log and a database file, snapshots both as one
//! set through the software provider, then overwrites and removes files on the live volumes
//! and shows that the snapshots still read the old bytes while the live volumes read the new,
//! and how much shadow storage the preserved blocks took.

use std::path::{Path, PathBuf};

use volume::fs::read_all;
use volume::{CommitOptions, FileSystem, OpenMode, SoftwareProvider, Volume, VolumeOptions};

/// Options of the volume demo.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the scratch directory instead of removing it at the end.
    #[arg(long)]
    pub keep: bool,
    /// Use this directory (created if missing) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
    format!("{s:?} ({} bytes)", bytes.len())
}

/// Runs the demo.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut tmp = None;
    let base = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new().prefix("shadowcopy-demo-").tempdir()?;
            let p = t.path().to_path_buf();
            tmp = Some(t);
            p
        }
    };
    println!("1. Two volumes under {}", base.display());
    let provider = SoftwareProvider::new();
    for label in ["logs", "db"] {
        let v = Volume::open_or_create(base.join(label), VolumeOptions::new(label))?;
        println!("   volume {label:<4} guid {}  block {} KiB", v.guid(), v.block_size() / 1024);
        provider.register(v);
    }
    let logs = provider.volume("logs")?;
    let db = provider.volume("db")?;

    println!("2. Write a transaction log and a 1 MiB database");
    let log = logs.open(Path::new("E00.log"), OpenMode::Create)?;
    log.write_at(b"generation 1: begin; insert message 42; commit", 0)?;
    log.sync()?;
    let edb = db.open(Path::new("mailbox.edb"), OpenMode::Create)?;
    let mut page = b"page v1: message 42 stored".to_vec();
    page.resize(1 << 20, b'.');
    edb.write_at(&page, 0)?;
    edb.sync()?;
    println!("   logs/E00.log     {}", show(&read_all(&logs, Path::new("E00.log"))?));
    println!("   db/mailbox.edb   {}", show(&read_all(&db, Path::new("mailbox.edb"))?));

    println!("3. Snapshot both volumes as one set (flush-and-hold)");
    let set = provider.begin_set(CommitOptions::default());
    provider.add_volume(set, "logs")?;
    provider.add_volume(set, "db")?;
    let committed = provider.commit(set)?;
    println!(
        "   set {}  writes held {:.2} ms",
        committed.set_id,
        committed.hold.as_secs_f64() * 1e3
    );
    for s in &committed.snapshots {
        println!("   snapshot {} of {} ({} files)", s.info.id, s.info.volume_label, s.info.files);
    }

    println!("4. Change the live volumes: overwrite the first page, remove the log, add a new one");
    edb.write_at(b"page v2: message 42 DELETED  ", 0)?;
    drop(log);
    logs.remove_file(Path::new("E00.log"))?;
    logs.open(Path::new("E01.log"), OpenMode::Create)?.write_at(b"generation 2", 0)?;

    println!("5. The snapshots still read the old data; the live volumes the new");
    let (log_view, db_view) = (&committed.snapshots[0].view, &committed.snapshots[1].view);
    println!("   snapshot logs/E00.log   {}", show(&read_all(&**log_view, Path::new("E00.log"))?));
    println!("   live     logs/E00.log   exists: {}", logs.exists(Path::new("E00.log"))?);
    let names = |fs: &dyn FileSystem| -> anyhow::Result<Vec<String>> {
        Ok(fs.read_dir(Path::new(""))?.into_iter().map(|e| e.name).collect())
    };
    println!("   snapshot logs/ lists    {:?}", names(&**log_view)?);
    println!("   live     logs/ lists    {:?}", names(&logs)?);
    println!(
        "   snapshot db/mailbox.edb {}",
        show(&read_all(&**db_view, Path::new("mailbox.edb"))?)
    );
    println!("   live     db/mailbox.edb {}", show(&read_all(&db, Path::new("mailbox.edb"))?));

    println!("6. Shadow storage: only the changed block was preserved");
    for s in provider.query() {
        println!(
            "   {:<4} snapshot {}  diff area {} bytes",
            s.volume_label, s.id, s.diff_area_bytes
        );
    }
    for s in provider.list_shadow_storage() {
        let max = s.max_bytes.map_or("unbounded".to_string(), |m| format!("{m} bytes"));
        println!("   shadow storage for {:<4} used {} bytes, max {max}", s.for_label, s.used_bytes);
    }

    println!("7. Release the set: its non-persistent snapshots are deleted");
    committed.release();
    println!("   snapshots left: {}", provider.query().len());
    if args.keep {
        println!("Kept {}", base.display());
        if let Some(t) = tmp {
            let _ = t.keep();
        }
    } else if args.dir.is_some() {
        for label in ["logs", "db"] {
            std::fs::remove_dir_all(base.join(label))?;
        }
    }
    Ok(())
}
