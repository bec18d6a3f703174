//! `shadowcopy admin`: the reference tool's vocabulary — list writers, providers, shadows and
//! shadow storage; create shadow; delete shadows; add and resize shadow storage.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
        /// The limit: a size (`500MB`, `2GiB`) or `UNBOUNDED`; beyond it the oldest shadow
        /// copy is deleted.
        #[arg(long, value_name = "SIZE")]
        maxsize: String,
    },
    /// Changes the limit of a volume's shadow storage; shrinking below what is used deletes
    /// the oldest shadow copies until it fits.
    #[command(
        after_help = "Examples:\n  shadowcopy admin resize shadowstorage --for db --maxsize 4GiB\n  shadowcopy admin resize shadowstorage --for db --maxsize UNBOUNDED"
    )]
    Resize {
        /// What to resize (only `shadowstorage`).
        #[arg(value_enum)]
        what: StorageWhat,
        /// The volume whose shadow storage to resize (label or GUID).
        #[arg(long = "for", value_name = "VOLUME")]
        for_volume: String,
        /// The new limit: a size (`500MB`, `2GiB`) or `UNBOUNDED`.
        #[arg(long, value_name = "SIZE")]
        maxsize: String,
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

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn run(node: &Endpoint, cmd: &Admin) -> Result<()> {
    match cmd {
        Admin::List { what, json } => {
            let path = match what {
                ListWhat::Writers => "/v1/writers",
                ListWhat::Providers => "/v1/providers",
                ListWhat::Shadows => "/v1/shadows",
                ListWhat::Shadowstorage => "/v1/shadowstorage",
            };
            let v = node.get(path)?;
            if *json {
                print_json(&v);
                return Ok(());
            }
            match what {
                ListWhat::Writers => print_writers(&v),
                ListWhat::Providers => print_providers(&v),
                ListWhat::Shadows => print_shadows(&v),
                ListWhat::Shadowstorage => print_storage(&v),
            }
        }
        Admin::Create { for_volume, .. } => {
            let v = node.post("/v1/shadows", &json!({ "for": for_volume }))?;
            println!("Successfully created shadow copy for '{for_volume}'");
            println!("   Shadow Copy Set ID: {{{}}}", s(&v["set_id"]));
            for sh in v["shadows"].as_array().into_iter().flatten() {
                println!("   Shadow Copy ID: {{{}}}", s(&sh["id"]));
            }
            println!(
                "   Writes held: {:.1} ms (commit {:.1} ms)",
                v["hold_ms"].as_f64().unwrap_or(0.0),
                v["commit_ms"].as_f64().unwrap_or(0.0)
            );
        }
        Admin::Delete(d) => {
            if !(d.oldest || d.all || d.shadow.is_some()) {
                bail!("give --for VOLUME --oldest, --shadow ID, or --all");
            }
            let v = node.post(
                "/v1/shadows/delete",
                &json!({ "for": d.for_volume, "oldest": d.oldest, "shadow": d.shadow, "all": d.all }),
            )?;
            let gone = v["deleted"].as_array().map_or(0, Vec::len);
            println!("Deleted {gone} shadow copies.");
            for id in v["deleted"].as_array().into_iter().flatten() {
                println!("   {{{}}}", s(id));
            }
        }
        Admin::Add { for_volume, on, maxsize, .. } => {
            node.post(
                "/v1/shadowstorage",
                &json!({ "for": for_volume, "on": on, "max_size": maxsize }),
            )?;
            println!(
                "Successfully added the shadow copy storage association for '{for_volume}' on '{on}'."
            );
        }
        Admin::Resize { for_volume, maxsize, .. } => {
            node.post(
                "/v1/shadowstorage/resize",
                &json!({ "for": for_volume, "max_size": maxsize }),
            )?;
            println!(
                "Successfully resized the shadow copy storage association for '{for_volume}' to {maxsize}."
            );
        }
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_writers(v: &Value) {
    for w in v["writers"].as_array().into_iter().flatten() {
        println!("Writer name: '{}'", s(&w["writer_name"]));
        println!("   Writer Id: {{{}}}", s(&w["writer_id"]));
        println!("   Writer Instance: {}", s(&w["instance_name"]));
        println!("   State: [{}] {}", s(&w["state"]), s(&w["state_name"]));
        let last = match (&w["failure"], &w["message"]) {
            (Value::Null, _) => "No error".to_string(),
            (f, Value::Null) => s(f),
            (f, m) => format!("{} ({})", s(f), s(m)),
        };
        println!("   Last error: {last}");
        println!();
    }
}

fn print_providers(v: &Value) {
    for p in v["providers"].as_array().into_iter().flatten() {
        println!("Provider name: '{}'", s(&p["name"]));
        println!("   Provider type: Software");
        println!("   Provider Id: {{{}}}", s(&p["provider_id"]));
        println!();
    }
    for vol in v["volumes"].as_array().into_iter().flatten() {
        println!(
            "Volume '{}' {{{}}} at {}: block size {}, {} shadow copies",
            s(&vol["label"]),
            s(&vol["guid"]),
            s(&vol["root"]),
            bytes(vol["block_size"].as_u64().unwrap_or(0)),
            s(&vol["snapshots"])
        );
    }
}

fn print_shadows(v: &Value) {
    let list = v["shadows"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No shadow copies.");
        return;
    }
    for sh in &list {
        println!("Contents of shadow copy set ID: {{{}}}", s(&sh["set_id"]));
        println!("   Shadow Copy ID: {{{}}}", s(&sh["id"]));
        println!("      Original Volume: {} {{{}}}", s(&sh["volume_label"]), s(&sh["volume"]));
        println!("      Creation time (ms since epoch): {}", s(&sh["created_unix_ms"]));
        let persistent = sh["persistent"].as_bool() == Some(true);
        println!(
            "      Attributes: {}",
            if persistent { "Persistent, Client-accessible" } else { "Non-persistent (backup)" }
        );
        println!("      Diff area: {}", bytes(sh["diff_area_bytes"].as_u64().unwrap_or(0)));
        println!("      Files: {}", s(&sh["files"]));
        println!();
    }
}

fn print_storage(v: &Value) {
    let list = v["shadow_storage"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No shadow copy storage associations.");
    }
    for a in &list {
        println!("Shadow Copy Storage association");
        println!("   For volume: {} {{{}}}", s(&a["for_label"]), s(&a["for_volume"]));
        println!("   Shadow Copy Storage volume: {} {{{}}}", s(&a["on_root"]), s(&a["on_volume"]));
        println!(
            "   Used Shadow Copy Storage space: {}",
            bytes(a["used_bytes"].as_u64().unwrap_or(0))
        );
        let max = a["max_bytes"].as_u64().map_or("UNBOUNDED".to_string(), bytes);
        println!("   Maximum Shadow Copy Storage space: {max}");
        println!();
    }
}
