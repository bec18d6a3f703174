//! `shadowcopy dag` (set up and look at a database availability group) and `shadowcopy copy`
//! (database copies on its members).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::client::{Endpoint, with_query};

#[derive(Debug, Subcommand)]
pub enum Dag {
    /// Makes a DAG: a CA of its own, and per node a TLS certificate and a configuration.
    ///
    /// Writes DIR/ca.pem and DIR/ca.key (keep the key safe: it admits members), and per node
    /// DIR/NODE/node.toml and DIR/NODE/tls/. Nodes listen for replication on HOST, ports
    /// BASE_PORT, BASE_PORT+1, …; edit the configurations for other addresses.
    #[command(
        after_help = "Example:\n  shadowcopy dag init --name DAG1 --nodes a,b,c --dir /srv/dag1 --etcd http://127.0.0.1:2379 --storage-group SG1"
    )]
    Init {
        /// The DAG's name.
        #[arg(long)]
        name: String,
        /// The members, comma-separated (lower-case letters, digits and '-').
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Where to write the CA, the certificates and the configurations (must not hold a DAG).
        #[arg(long)]
        dir: PathBuf,
        /// The etcd endpoints, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
        etcd: Vec<String>,
        /// The address the replication listeners bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The first node's replication port; the next nodes get the next ports.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Also define this storage group (one database, DB1) on the first node, which then
        /// holds it active.
        #[arg(long, value_name = "NAME")]
        storage_group: Option<String>,
    },
    /// The DAG's members, up or down.
    #[command(after_help = "Example:\n  shadowcopy dag status --json")]
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Copy {
    /// Every copy of the storage groups with its status and queues.
    #[command(after_help = "Example:\n  shadowcopy copy status --sg SG1")]
    Status {
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Adds a passive copy of a storage group on a member; the member seeds it from a snapshot
    /// of the active copy and then replays its logs.
    #[command(after_help = "Example:\n  shadowcopy copy add --sg SG1 --on b --preference 2")]
    Add {
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The member that gets the copy.
        #[arg(long, value_name = "NODE")]
        on: String,
        /// Activation preference (1 is first; default: after the existing copies).
        #[arg(long)]
        preference: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Removes a passive copy (its member deletes its files).
    Remove(Which),
    /// Suspends a passive copy's log copying and replay; the active keeps the logs it lacks.
    Suspend(Which),
    /// Resumes a suspended or failed copy.
    Resume(Which),
    /// Seeds a copy again (a failed or diverged copy).
    Reseed(Which),
    /// Makes a member's copy the active one (switchover), with nothing lost.
    ///
    /// The primary active manager runs it: the active stops taking commits and closes its log,
    /// the member copies and replays every generation, mounts under the next epoch, and the
    /// old active becomes a passive copy (reseeded from the new one). Mail pauses meanwhile;
    /// the pause is reported. Refused, with why, when the copy is not healthy.
    #[command(after_help = "Example:\n  shadowcopy copy activate --sg SG1 --on b")]
    Activate {
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The member whose copy becomes active.
        #[arg(long, value_name = "NODE")]
        on: String,
        /// Activate a copy that is not healthy or is suspended anyway.
        #[arg(long)]
        skip_checks: bool,
        #[arg(long)]
        json: bool,
    },
    /// Sets how a storage group fails over: its mount dial and its synchronous copies.
    ///
    /// Mount dial: how many closed log generations a copy may lack and still be mounted
    /// automatically when the active's node is lost — lossless (none), good (6), best (12),
    /// besteffort (any). Synchronous copies: a commit is acknowledged only when that many
    /// passive copies hold it durably; with fewer healthy copies, `strict` waits and
    /// `available` goes on (with an event).
    #[command(
        after_help = "Example:\n  shadowcopy copy settings --sg SG1 --mount-dial lossless --sync-copies 1 --sync-policy available"
    )]
    Settings {
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// lossless, good, best or besteffort.
        #[arg(long, value_name = "DIAL")]
        mount_dial: Option<String>,
        #[arg(long, value_name = "N")]
        sync_copies: Option<u32>,
        /// strict or available.
        #[arg(long, value_name = "POLICY")]
        sync_policy: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct Which {
    #[arg(long, value_name = "STORAGE_GROUP")]
    sg: String,
    #[arg(long, value_name = "NODE")]
    on: String,
    /// Why (kept and shown by `copy status`).
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run_dag(node: &Endpoint, cmd: &Dag) -> Result<()> {
    match cmd {
        Dag::Init { name, nodes, dir, etcd, host, base_port, storage_group } => {
            init(name, nodes, dir, etcd, host, *base_port, storage_group.as_deref())
        }
        Dag::Status { json } => {
            let v: api::DagStatus = node.get("/v1/dag")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "DAG {} (asked node {}; etcd {}{})",
                v.dag,
                v.node,
                v.etcd.join(","),
                if v.etcd_reachable { "" } else { ", UNREACHABLE: showing what the node last saw" }
            );
            println!(
                "primary active manager: {}",
                v.primary_active_manager.as_deref().unwrap_or("none right now")
            );
            println!("{:<16} {:<6} REPLICATION", "NODE", "STATE");
            for m in &v.members {
                println!(
                    "{:<16} {:<6} {}",
                    m.node,
                    if m.up { "up" } else { "down" },
                    m.replication.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
    }
}

fn print_copies(v: &api::CopyList, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<10} {:<8} {:<19} {:>5} {:>6} {:>10} {:>10} {:>4}  LAST ERROR / SUSPENDED / SHIPPING",
        "SG", "NODE", "ROLE", "STATUS", "COPYQ", "REPLQ", "INSPECTED", "REPLAYED", "PREF"
    );
    for c in &v.copies {
        let note = c
            .suspended
            .as_ref()
            .map(|r| format!("suspended: {r}"))
            .or(c.last_error.clone())
            .or(c.shipping.clone());
        println!(
            "{:<10} {:<10} {:<8} {:<19} {:>5} {:>6} {:>#10X} {:>#10X} {:>4}  {}",
            c.sg,
            c.node,
            c.role,
            c.status,
            c.copy_queue_length,
            c.replay_queue_length,
            c.last_inspected_generation,
            c.last_replayed_generation,
            c.activation_preference,
            note.unwrap_or_default()
        );
    }
    if !v.groups.is_empty() {
        println!();
        println!(
            "{:<10} {:<10} {:>6} {:>10} {:<10} {:<11} {:<10}",
            "SG", "ACTIVE", "EPOCH", "SINCE", "PREVIOUS", "MOUNT DIAL", "SYNC"
        );
        for g in &v.groups {
            println!(
                "{:<10} {:<10} {:>6} {:>#10X} {:<10} {:<11} {} ({})",
                g.sg,
                g.active,
                g.epoch,
                g.since_generation,
                g.previous.as_deref().unwrap_or("-"),
                g.mount_dial,
                g.sync_copies,
                g.sync_policy
            );
        }
    }
    Ok(())
}

pub fn run_copy(node: &Endpoint, cmd: &Copy) -> Result<()> {
    let change = |path: &str, w: &Which| -> Result<()> {
        let body =
            api::CopyChange { sg: w.sg.clone(), node: w.on.clone(), reason: w.reason.clone() };
        let v: api::CopyList = node.post(path, &body)?;
        print_copies(&v, w.json)
    };
    match cmd {
        Copy::Status { sg, json } => {
            let q = api::CopyQuery { sg: sg.clone() };
            let v: api::CopyList = node.get(&with_query("/v1/copies", &q)?)?;
            print_copies(&v, *json)
        }
        Copy::Add { sg, on, preference, json } => {
            let body = api::CopyAdd { sg: sg.clone(), node: on.clone(), preference: *preference };
            let v: api::CopyList = node.post("/v1/copies", &body)?;
            print_copies(&v, *json)
        }
        Copy::Remove(w) => change("/v1/copies/remove", w),
        Copy::Suspend(w) => change("/v1/copies/suspend", w),
        Copy::Resume(w) => change("/v1/copies/resume", w),
        Copy::Reseed(w) => change("/v1/copies/reseed", w),
        Copy::Activate { sg, on, skip_checks, json } => {
            let body =
                api::CopyActivate { sg: sg.clone(), node: on.clone(), skip_checks: *skip_checks };
            let v: api::CopyActivated = node.post("/v1/copies/activate", &body)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{} is active on {} (epoch {}), moved from {} by the primary active manager {}: every generation up to {:#X} replayed; commits paused for {} ms",
                    v.sg, v.to, v.epoch, v.from, v.manager, v.generation, v.pause_ms
                );
            }
            Ok(())
        }
        Copy::Settings { sg, mount_dial, sync_copies, sync_policy, json } => {
            let body = api::CopySettings {
                sg: sg.clone(),
                mount_dial: mount_dial.clone(),
                sync_copies: *sync_copies,
                sync_policy: sync_policy.clone(),
            };
            let v: api::CopyList = node.post("/v1/copies/settings", &body)?;
            print_copies(&v, *json)
        }
    }
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn node_config(
    dag: &str,
    node: &str,
    dir: &Path,
    etcd: &[String],
    listen: &str,
    storage_group: Option<&str>,
) -> String {
    let home = dir.join(node);
    let etcd: Vec<String> = etcd.iter().map(|e| toml_str(e)).collect();
    let mut text = format!(
        "# Node {node} of DAG {dag}, written by `shadowcopy dag init`.\n\
         [node]\nname = {name}\ndata_dir = {data}\n\n\
         [[volume]]\nlabel = \"data\"\npath = {vol}\ncreate = true\n\n\
         [dag]\nname = {dagname}\netcd = [{etcd}]\nlisten = {listen}\n\
         ca = \"tls/ca.pem\"\ncert = \"tls/node.pem\"\nkey = \"tls/node.key\"\n",
        name = toml_str(node),
        data = toml_str(&home.join("data").display().to_string()),
        vol = toml_str(&home.join("volumes").join("data").display().to_string()),
        dagname = toml_str(dag),
        etcd = etcd.join(", "),
        listen = toml_str(listen),
    );
    if let Some(sg) = storage_group {
        text.push_str(&format!(
            "\n[[storage_group]]\nname = {n}\nlog_volume = \"data\"\nlog_dir = {logs}\n\n\
             [[storage_group.database]]\nname = \"DB1\"\nvolume = \"data\"\npath = {db}\n",
            n = toml_str(sg),
            logs = toml_str(&format!("logs/{sg}")),
            db = toml_str(&format!("db/{sg}/DB1.edb")),
        ));
    }
    text
}

fn init(
    name: &str,
    nodes: &[String],
    dir: &Path,
    etcd: &[String],
    host: &str,
    base_port: u16,
    storage_group: Option<&str>,
) -> Result<()> {
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    if nodes.is_empty() {
        bail!("--nodes names no node");
    }
    let certs = replication::pki::write_dag_pki(&dir, name, nodes)
        .with_context(|| format!("writing the DAG's certificates into {}", dir.display()))?;
    println!(
        "DAG {name}: CA in {}/ca.pem (its key ca.key admits members: keep it safe)",
        dir.display()
    );
    for (i, c) in certs.iter().enumerate() {
        let port = base_port.checked_add(i as u16).with_context(|| {
            format!("--base-port {base_port} leaves no port for node {}", c.node)
        })?;
        let listen = format!("{host}:{port}");
        let sg = if i == 0 { storage_group } else { None };
        let path = dir.join(&c.node).join("node.toml");
        let text = node_config(name, &c.node, &dir, etcd, &listen, sg);
        // The configuration must parse as the node will read it.
        node::Config::parse(&text, &path)
            .with_context(|| format!("the configuration written for node {}", c.node))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("\nStart etcd (once), then each node:");
    println!(
        "  etcd --data-dir {}/etcd --listen-client-urls {e} --advertise-client-urls {e} &",
        dir.display(),
        e = etcd.first().map(String::as_str).unwrap_or("http://127.0.0.1:2379")
    );
    for c in &certs {
        println!(
            "  shadowcopy serve --config {}/{n}/node.toml &    # then: export SHADOWCOPY_NODE={}/{n}/data/api.sock",
            dir.display(),
            dir.display(),
            n = c.node
        );
    }
    if let (Some(sg), Some(first), Some(second)) = (storage_group, certs.first(), certs.get(1)) {
        println!(
            "\nNode {} holds {sg} active. Add a copy with:\n  shadowcopy --node {}/{}/data/api.sock copy add --sg {sg} --on {}",
            first.node,
            dir.display(),
            first.node,
            second.node
        );
    }
    Ok(())
}
