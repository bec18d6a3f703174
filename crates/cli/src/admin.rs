//! `shadowcopy admin`: the reference tool's vocabulary — list writers, providers, shadows and
//! shadow storage; create shadow; delete shadows; add and resize shadow storage; expose and
//! unexpose a shadow copy.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::Endpoint;
use crate::progress::bytes;

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Lists writers (with state and last error), providers and volumes, shadow copies, or
    /// shadow storage associations.
    #[command(
        after_help = "Examples:\n  shadowcopy admin list writers\n  shadowcopy admin list shadows --json"
    )]
    List {
        /// What to list.
        #[arg(value_enum)]
        what: ListWhat,
        /// Print the node's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Creates a persistent shadow copy of a volume (kept until deleted).
    #[command(after_help = "Example:\n  shadowcopy admin create shadow --for db")]
    Create {
        /// What to create (only `shadow`).
        #[arg(value_enum)]
        what: CreateWhat,
        /// The volume to snapshot (label or GUID).
        #[arg(long = "for", value_name = "VOLUME")]
        for_volume: String,
    },
    /// Deletes shadow copies: the oldest of a volume, one by id, or all.
    #[command(
        after_help = "Examples:\n  shadowcopy admin delete shadows --for db --oldest\n  shadowcopy admin delete shadows --shadow 5f0c…\n  shadowcopy admin delete shadows --all"
    )]
    Delete(DeleteArgs),
    /// Mounts a shadow copy read-only at a directory of the node (FUSE), for any tool to read:
    /// tar, rsync, sha256sum, cp. A persistent shadow copy is exposed again after a restart.
    #[command(
        after_help = "Example:\n  shadowcopy admin expose --shadow 5f0c… --at /mnt/db-monday"
    )]
    Expose {
        /// The shadow copy (its ID, as `admin list shadows` shows it).
        #[arg(long, value_name = "ID")]
        shadow: String,
        /// The directory to mount it at (absolute; created if missing, must be empty).
        #[arg(long, value_name = "PATH")]
        at: String,
    },
    /// Unmounts an exposed shadow copy, by where it is mounted or by its ID. A process that
    /// still has a file open there keeps it until it closes it (lazy unmount).
    #[command(
        after_help = "Examples:\n  shadowcopy admin unexpose --at /mnt/db-monday\n  shadowcopy admin unexpose --shadow 5f0c…"
    )]
    Unexpose {
        /// The directory it is mounted at.
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "shadow",
            conflicts_with = "shadow"
        )]
        at: Option<String>,
        /// The shadow copy's ID.
        #[arg(long, value_name = "ID")]
        shadow: Option<String>,
    },
    /// Puts a volume's shadow storage (where its snapshots keep preserved blocks) on a volume,
    /// with a limit. Refused while the volume has shadow copies.
    #[command(
        after_help = "Example:\n  shadowcopy admin add shadowstorage --for db --on logs --maxsize 2GiB"
    )]
    Add {
        /// What to add (only `shadowstorage`).
        #[arg(value_enum)]
        what: StorageWhat,
        /// The volume whose snapshots use this storage (label or GUID).
        #[arg(long = "for", value_name = "VOLUME")]
        for_volume: String,
        /// The volume that holds the storage (may be the same volume).
        #[arg(long, value_name = "VOLUME")]
        on: String,
        /// The limit: a size (`500MB`, `2GiB`), a percentage of the volume that holds the
        /// storage (`20%`), or `UNBOUNDED`; beyond it the oldest shadow copy is deleted.
        #[arg(long, value_name = "SIZE")]
        maxsize: api::MaxSize,
    },
    /// Changes the limit of a volume's shadow storage; shrinking below what is used deletes
    /// the oldest shadow copies until it fits.
    #[command(
        after_help = "Examples:\n  shadowcopy admin resize shadowstorage --for db --maxsize 4GiB\n  shadowcopy admin resize shadowstorage --for db --maxsize 10%\n  shadowcopy admin resize shadowstorage --for db --maxsize UNBOUNDED"
    )]
    Resize {
        /// What to resize (only `shadowstorage`).
        #[arg(value_enum)]
        what: StorageWhat,
        /// The volume whose shadow storage to resize (label or GUID).
        #[arg(long = "for", value_name = "VOLUME")]
        for_volume: String,
        /// The new limit: a size (`500MB`, `2GiB`), a percentage of the volume that holds the
        /// storage (`10%`), or `UNBOUNDED`.
        #[arg(long, value_name = "SIZE")]
        maxsize: api::MaxSize,
    },
}

/// What `admin list` lists.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ListWhat {
    /// The registered writers, their state and last error.
    Writers,
    /// The snapshot providers and the volumes they serve.
    Providers,
    /// The shadow copies that exist.
    Shadows,
    /// Each volume's shadow storage: where, used, limit.
    Shadowstorage,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CreateWhat {
    /// A persistent shadow copy.
    Shadow,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StorageWhat {
    /// A shadow storage association.
    Shadowstorage,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeleteWhat {
    /// Shadow copies.
    Shadows,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// What to delete (only `shadows`).
    #[arg(value_enum)]
    what: DeleteWhat,
    /// The volume whose shadows to delete (with --oldest or --all).
    #[arg(long = "for", value_name = "VOLUME")]
    for_volume: Option<String>,
    /// Delete the oldest shadow of the volume.
    #[arg(long, requires = "for_volume")]
    oldest: bool,
    /// Delete this shadow copy (its ID).
    #[arg(long, value_name = "ID", conflicts_with_all = ["for_volume", "oldest", "all"])]
    shadow: Option<String>,
    /// Delete every shadow (of the volume, with --for).
    #[arg(long, conflicts_with = "oldest")]
    all: bool,
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Lists, as a table or as the node's JSON.
fn list<T: serde::de::DeserializeOwned + Serialize>(
    node: &Endpoint,
    path: &str,
    json: bool,
    table: impl FnOnce(&T),
) -> Result<()> {
    let v: T = node.get(path)?;
    if json {
        print_json(&v)
    } else {
        table(&v);
        Ok(())
    }
}

pub fn run(node: &Endpoint, cmd: &Admin) -> Result<()> {
    match cmd {
        Admin::List { what, json } => match what {
            ListWhat::Writers => list(node, "/v1/writers", *json, print_writers)?,
            ListWhat::Providers => list(node, "/v1/providers", *json, print_providers)?,
            ListWhat::Shadows => list(node, "/v1/shadows", *json, print_shadows)?,
            ListWhat::Shadowstorage => list(node, "/v1/shadowstorage", *json, print_storage)?,
        },
        Admin::Create { for_volume, .. } => {
            let v: api::CreatedShadow =
                node.post("/v1/shadows", &api::CreateShadow { for_volume: for_volume.clone() })?;
            println!("Successfully created shadow copy for '{for_volume}'");
            println!("   Shadow Copy Set ID: {{{}}}", v.set_id);
            for sh in &v.shadows {
                println!("   Shadow Copy ID: {{{}}}", sh.id);
            }
            println!("   Writes held: {:.1} ms (commit {:.1} ms)", v.hold_ms, v.commit_ms);
        }
        Admin::Delete(d) => {
            if !(d.oldest || d.all || d.shadow.is_some()) {
                bail!("give --for VOLUME --oldest, --shadow ID, or --all");
            }
            let shadow = d.shadow.as_deref().map(shadow_id).transpose()?;
            let req = api::DeleteShadows {
                for_volume: d.for_volume.clone(),
                oldest: d.oldest,
                shadow,
                all: d.all,
            };
            let v: api::DeletedShadows = node.post("/v1/shadows/delete", &req)?;
            println!("Deleted {} shadow copies.", v.deleted.len());
            for id in &v.deleted {
                println!("   {{{id}}}");
            }
        }
        Admin::Expose { shadow, at } => {
            let req = api::ExposeShadow { shadow: shadow_id(shadow)?, at: absolute(at)? };
            let v: api::Exposures = node.post("/v1/shadows/expose", &req)?;
            for e in &v.exposures {
                println!("Shadow copy {{{}}} exposed read-only at {}", e.shadow, e.at);
            }
        }
        Admin::Unexpose { at, shadow } => {
            let req = api::UnexposeShadow {
                shadow: shadow.as_deref().map(shadow_id).transpose()?,
                at: at.as_deref().map(absolute).transpose()?,
            };
            let v: api::Exposures = node.post("/v1/shadows/unexpose", &req)?;
            for e in &v.exposures {
                println!("Shadow copy {{{}}} no longer exposed at {}", e.shadow, e.at);
            }
        }
        Admin::Add { for_volume, on, maxsize, .. } => {
            let req = api::AddShadowStorage {
                for_volume: for_volume.clone(),
                on: Some(on.clone()),
                max_size: *maxsize,
            };
            let _: api::ShadowStorageList = node.post("/v1/shadowstorage", &req)?;
            println!(
                "Successfully added the shadow copy storage association for '{for_volume}' on '{on}'."
            );
        }
        Admin::Resize { for_volume, maxsize, .. } => {
            let req =
                api::ResizeShadowStorage { for_volume: for_volume.clone(), max_size: *maxsize };
            let _: api::ShadowStorageList = node.post("/v1/shadowstorage/resize", &req)?;
            println!(
                "Successfully resized the shadow copy storage association for '{for_volume}' to {}.",
                described(*maxsize)
            );
        }
    }
    Ok(())
}

/// A shadow copy ID as given on the command line (braces allowed, as the lists print it).
fn shadow_id(s: &str) -> Result<uuid::Uuid> {
    s.trim_matches(|c| c == '{' || c == '}')
        .parse::<uuid::Uuid>()
        .with_context(|| format!("--shadow {s:?} is not a shadow copy ID"))
}

/// A mount path as the node must get it: absolute, so that it does not depend on the node's
/// working directory (a relative one is taken from the command's).
fn absolute(at: &str) -> Result<String> {
    let p = std::path::Path::new(at);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().context("finding the current directory")?.join(p)
    };
    abs.to_str().map(str::to_string).with_context(|| format!("{at:?} is not valid UTF-8"))
}

/// A limit as the administrator wrote it, near enough.
fn described(m: api::MaxSize) -> String {
    match m {
        api::MaxSize::Bytes(b) => bytes(b),
        other => other.to_string(),
    }
}

fn print_writers(v: &api::WriterList) {
    for w in &v.writers {
        println!("Writer name: '{}'", w.writer_name);
        println!("   Writer Id: {{{}}}", w.writer_id);
        println!("   Writer Instance: {}", w.instance_name);
        println!("   State: [{}] {}", w.state, w.state_name);
        let last = match (&w.failure, &w.message) {
            (None, _) => "No error".to_string(),
            (Some(f), None) => f.clone(),
            (Some(f), Some(m)) => format!("{f} ({m})"),
        };
        println!("   Last error: {last}");
        println!();
    }
}

fn print_providers(v: &api::ProviderList) {
    for p in &v.providers {
        println!("Provider name: '{}'", p.name);
        let kind =
            if p.provider_type == "btrfs" { "btrfs (redirect-on-write)" } else { "Software" };
        println!("   Provider type: {kind}");
        println!("   Provider Id: {{{}}}", p.provider_id);
        println!();
    }
    for vol in &v.volumes {
        println!(
            "Volume '{}' {{{}}} at {}: block size {}, {} shadow copies",
            vol.label,
            vol.guid,
            vol.root,
            bytes(vol.block_size),
            vol.snapshots
        );
    }
}

fn print_shadows(v: &api::ShadowList) {
    if v.shadows.is_empty() {
        println!("No shadow copies.");
        return;
    }
    for sh in &v.shadows {
        println!("Contents of shadow copy set ID: {{{}}}", sh.set_id);
        println!("   Shadow Copy ID: {{{}}}", sh.id);
        println!("      Original Volume: {} {{{}}}", sh.volume_label, sh.volume);
        println!("      Creation time (ms since epoch): {}", sh.created_unix_ms);
        println!(
            "      Attributes: {}",
            if sh.persistent { "Persistent, Client-accessible" } else { "Non-persistent (backup)" }
        );
        println!("      Diff area: {}", bytes(sh.diff_area_bytes));
        println!("      Files: {}", sh.files);
        if let Some(at) = &sh.exposed_at {
            println!("      Exposed at: {at}");
        }
        println!();
    }
}

fn print_storage(v: &api::ShadowStorageList) {
    if v.shadow_storage.is_empty() {
        println!("No shadow copy storage associations.");
    }
    for a in &v.shadow_storage {
        println!("Shadow Copy Storage association");
        println!("   For volume: {} {{{}}}", a.for_label, a.for_volume);
        println!("   Shadow Copy Storage volume: {} {{{}}}", a.on_root, a.on_volume);
        println!("   Used Shadow Copy Storage space: {}", bytes(a.used_bytes));
        let max = a.max_bytes.map_or("UNBOUNDED".to_string(), bytes);
        println!("   Maximum Shadow Copy Storage space: {max}");
        println!();
    }
}
