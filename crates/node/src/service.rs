//! `shadowcopy serve`: a [`Node`] and its HTTP API, until SIGTERM or SIGINT.
//!
//! The Unix socket is always served (owner-only, a stale file from a previous run is
//! replaced); TCP only when `api.tcp` is set, and then every request needs the bearer token.
//!
//! On a signal, in this order:
//!
//! 1. both listeners stop accepting and new jobs are refused (`shutting_down`);
//! 2. running jobs are told to stop ([`backup::Progress::cancelled`]): a backup aborts its
//!    coordinator session — the writers get abort and backup shutdown, the engine is thawed,
//!    nothing is published or truncated, and the coordinator's abort event gives the reason
//!    ("the node is shutting down"); a restore leaves its target as it was; a mail load stops;
//! 3. the service waits, at most [`SHUTDOWN_GRACE`], for requests in flight *and* for the
//!    jobs themselves (a job whose client went away still runs) to finish aborting;
//! 4. only then does the node dismount its storage groups cleanly, so that no dismount races
//!    a job that still holds its storage group.
//!
//! A job still running after the grace period (a freeze or a hard recovery cannot be cut
//! short) dies with the process; its journal entry makes the next start report it failed
//! (event 8015) and nothing is truncated for it.
//!
//! Under systemd (`Type=notify`, `NOTIFY_SOCKET` set) the service says `READY=1` once the
//! node has started and its listeners are bound, so that units ordered after it and
//! `systemctl start` wait for an API that answers rather than for a process that exists;
//! `STOPPING=1` as soon as a signal arrives, and a `STATUS=` line at each step for
//! `systemctl status`. Without `NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{self, AppState, auth::Token};
use crate::config::Config;
use crate::node::{Node, NodeError};

/// How long requests and jobs in flight may take to finish (or abort) after a shutdown
/// signal. Jobs check for the shutdown between chunks, so they normally end within moments;
/// the bound is for work that cannot be interrupted, and stays well below the usual service
/// manager stop time-out (90 s) so that the databases are still dismounted cleanly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("API TCP listener {addr}: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("reading api.token_file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("api.token_file {0}: the token must be at least 16 characters")]
    ShortToken(PathBuf),
    #[error("starting the runtime: {0}")]
    Runtime(io::Error),
    #[error("installing the SIGTERM and SIGINT handlers: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Dag(#[from] crate::dag::DagError),
    #[error("dismounting at shutdown: {0}")]
    Shutdown(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The TCP token, from `api.token` or `api.token_file`.
fn load_token(config: &Config) -> Result<Option<Token>, ServiceError> {
    if let Some(t) = &config.api.token {
        return Ok(Some(Token::new(t)));
    }
    if let Some(path) = &config.api.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ServiceError::TokenFile { path: path.clone(), source })?;
        if text.trim().len() < 16 {
            return Err(ServiceError::ShortToken(path.clone()));
        }
        return Ok(Some(Token::new(&text)));
    }
    Ok(None)
}

/// Binds the Unix socket with owner-only permissions, replacing a stale socket file.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServiceError> {
    let err = |source| ServiceError::Socket { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; refusing to replace it",
                )));
            }
            // A socket file left by a node that is gone. One that still answers is a node
            // that is running: refuse rather than steal its address.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another node is listening on it",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // The file-creation mask around bind makes the socket owner-only from its creation, with
    // no window in which another user could connect. No other thread of ours creates files
    // at this point (the node has started and is idle until the API answers).
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Installs the SIGTERM and SIGINT handlers. Done before serving, so that a runtime without
/// a signal driver is an error at start rather than a panic later.
fn install_signal_handlers() -> Result<impl std::future::Future<Output = ()>, ServiceError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

/// Tells the service manager how the service is doing (`sd_notify(3)`); a no-op when
/// `NOTIFY_SOCKET` is not set. A failure to tell is only logged: the node works the same,
/// and under `Type=notify` systemd's own start time-out reports a `READY=1` that never came.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("telling the service manager (NOTIFY_SOCKET) our state: {e}");
    }
}

/// A `STATUS=` line: the protocol is one `KEY=value` a line, so a newline inside a
/// mount error would end the status early and be read as a key of its own.
fn status_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Runs a node from `config` and serves its API until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServiceError> {
    set_umask(config.node.umask_bits().unwrap_or(0o077));
    let token = load_token(&config)?;
    let socket = config.socket_path();
    let tcp = config.api.tcp;
    // Mounting may replay logs for a while; `systemctl status` says why it is not ready yet.
    notify(&[sd_notify::NotifyState::Status("starting: mounting the storage groups")]);
    let node = Arc::new(Node::start(config)?);
    for job in node.recovered_jobs() {
        tracing::warn!(job = ?job, "a job interrupted by the previous stop was reported failed");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    let served = rt.block_on(async {
        let signalled = install_signal_handlers()?;
        serve(node.clone(), &socket, tcp, token, signalled).await
    });
    // Stop the blocking pool's idle threads; jobs still running are abandoned here.
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&socket);
    let problems = node.shutdown();
    served?;
    if problems.is_empty() {
        tracing::info!("node stopped cleanly");
        Ok(())
    } else {
        Err(ServiceError::Shutdown(problems.join("; ")))
    }
}

/// Sets the process's file-mode creation mask, returning the previous one. `run` sets it
/// before the node creates anything, so that every file it creates — databases, logs,
/// checkpoints, packs, restored files — gets the configured permissions
/// ([`crate::config::NodeSection::umask`]) without each creator having to say so.
fn set_umask(mask: u32) -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask)).bits()
}

/// The storage groups mounted, and those that failed with why, for the ready line.
fn mount_summary(node: &Node) -> String {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for g in node.store().storage_groups() {
        match (g.is_mounted(), g.mount_error()) {
            (true, _) => up.push(g.name().to_string()),
            (false, Some(e)) => down.push(format!("{} ({e})", g.name())),
            (false, None) => down.push(format!("{} (dismounted)", g.name())),
        }
    }
    let mut text = match up.len() {
        0 => "no storage group mounted".to_string(),
        _ => format!("storage groups mounted: {}", up.join(", ")),
    };
    if !down.is_empty() {
        text.push_str(&format!("; not mounted: {}", down.join("; ")));
    }
    text
}

/// Serves the API of `node` on `socket` (and on `tcp`, which needs `token`) until `shutdown`
/// completes; then stops accepting, tells running jobs to abort, and gives requests and jobs
/// in flight [`SHUTDOWN_GRACE`] to end. The caller shuts the node down afterwards.
pub async fn serve(
    node: Arc<Node>,
    socket: &Path,
    tcp: Option<std::net::SocketAddr>,
    token: Option<Token>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServiceError> {
    let mounted = mount_summary(&node);
    // A schedule's storage group may have been created at runtime: checked against the
    // layout (the configuration file's storage groups and those), not the file alone.
    node.layout().check_schedule_groups()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut state = AppState::new(node.clone());
    state.schedules = Arc::new(crate::schedule::Schedules::load(
        node.config(),
        Arc::new(crate::schedule::clock::WallClock),
    ));
    let mut dag_line = String::new();
    if let Some(cfg) = node.config().dag.clone() {
        let listen = cfg.listen;
        let dag = crate::dag::Dag::start(
            node.clone(),
            cfg,
            tokio::runtime::Handle::current(),
            stop_rx.clone(),
        )
        .await?;
        dag_line = format!("; DAG {} replication on {listen}", dag.name());
        state.dag = Some(dag);
    }
    if let Some(dag) = &state.dag {
        dag.set_app_state(state.clone());
    }
    let stopping = state.stopping.clone();
    let running = state.running.clone();
    let router = api::router(state.clone());
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let unix = bind_socket(socket)?;
    let mut listening = socket.display().to_string();
    let unix_server = axum::serve(unix, router.clone())
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future();
    let tcp_server = match (tcp, token) {
        (Some(addr), Some(token)) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServiceError::Tcp { addr, source })?;
            let addr = l.local_addr().unwrap_or(addr);
            listening.push_str(&format!(" and {addr} (bearer token required)"));
            let guard = api::auth::Guard { token, sessions: crate::console::Sessions::default() };
            // The console's pages and login are outside the check (the login is how a browser
            // gets a session); every API call they make goes through it.
            let guarded = router
                .layer(axum::middleware::from_fn_with_state(
                    guard.clone(),
                    api::auth::require_token,
                ))
                .merge(crate::console::router(guard));
            Some(axum::serve(l, guarded).with_graceful_shutdown(stopped(stop_rx.clone())))
        }
        (Some(addr), None) => {
            return Err(ServiceError::Tcp {
                addr,
                source: io::Error::new(io::ErrorKind::InvalidInput, "no token configured"),
            });
        }
        _ => None,
    };
    // Runs missed while the node was down start now that the API answers.
    crate::schedule::start(&state, stop_rx.clone());
    let schedules = match state.schedules.list().schedules.len() {
        0 => String::new(),
        n => format!("; {n} schedule(s)"),
    };
    // The one line that says the node is ready, and in what state.
    tracing::info!("listening on {listening}; {mounted}{dag_line}{schedules}");
    let ready = status_line(&format!("listening on {listening}; {mounted}{dag_line}{schedules}"));
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&ready)]);
    let servers = async {
        let tcp = async {
            match tcp_server {
                Some(s) => s.await,
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(unix_server, tcp);
        a.and(b)
    };
    tokio::pin!(servers);
    tokio::select! {
        r = &mut servers => return r.map_err(|source| ServiceError::Socket { path: socket.into(), source }),
        _ = shutdown => {}
    }
    let jobs = running.running();
    if jobs > 0 {
        tracing::info!(jobs, "aborting the running jobs");
    }
    let stopping_status =
        format!("stopping: aborting {jobs} running job(s), then dismounting the storage groups");
    notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status(&stopping_status)]);
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let finished = async {
        let _ = (&mut servers).await;
        running.idle().await;
    };
    if tokio::time::timeout_at(deadline, finished).await.is_err() {
        tracing::warn!(
            jobs = running.running(),
            "requests or jobs still running after {SHUTDOWN_GRACE:?}; they end with the \
             process and are reported failed at the next start"
        );
    }
    Ok(())
}
