//! The replication listener of a DAG member: mutual TLS, then the [`crate::protocol`] over
//! HTTP/1.1, answered from the node's [`ActiveSource`].
//!
//! A connection whose TLS handshake fails — no certificate, a certificate of another DAG's CA,
//! not TLS at all — is closed and reported through [`ActiveSource::refused`] (an event names
//! the address and why); it never reaches a handler. A handler knows which member called from
//! its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::protocol::{
    ReplErrorBody, SurrogateBegin, SurrogateComplete, SurrogateJob, TAIL_CLOSED, TAIL_DURABLE_END,
};
use crate::source::{ActiveSource, SourceError};
use crate::tls::{DagTls, peer_node};

/// How long a connection may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a tail request waits for new log bytes.
const MAX_TAIL_WAIT: Duration = Duration::from_secs(30);
/// Seed files stream in chunks of this size.
const SEED_CHUNK: usize = 1 << 20;

/// The member at the other end of a connection, from its certificate.
#[derive(Debug, Clone)]
pub struct Peer(pub String);

type Shared = Arc<dyn ActiveSource>;

struct ErrorAnswer(SourceError);

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            SourceError::NotFound(_) => StatusCode::NOT_FOUND,
            SourceError::NotActive(_) => StatusCode::CONFLICT,
            SourceError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            SourceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(ReplErrorBody { error: self.0.to_string() })).into_response()
    }
}

impl From<SourceError> for ErrorAnswer {
    fn from(e: SourceError) -> Self {
        ErrorAnswer(e)
    }
}

/// Runs blocking work of the source off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, ErrorAnswer> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ErrorAnswer),
        Err(e) => Err(ErrorAnswer(SourceError::Internal(format!("handler failed: {e}")))),
    }
}

async fn stream(State(s): State<Shared>, Path(sg): Path<String>) -> Result<Response, ErrorAnswer> {
    let info = blocking(move || s.stream(&sg)).await?;
    Ok(Json(info).into_response())
}

async fn log_file(
    State(s): State<Shared>,
    Path((sg, generation)): Path<(String, u32)>,
) -> Result<Response, ErrorAnswer> {
    let bytes = blocking(move || s.log_file(&sg, generation)).await?;
    Ok(Bytes::from(bytes).into_response())
}

/// The query of a tail request.
#[derive(serde::Deserialize)]
struct TailQuery {
    from: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn log_tail(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path((sg, generation)): Path<(String, u32)>,
    Query(q): Query<TailQuery>,
) -> Result<Response, ErrorAnswer> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_TAIL_WAIT);
    let chunk = blocking(move || s.log_tail(&sg, &peer.0, generation, q.from, wait)).await?;
    let mut resp = Bytes::from(chunk.bytes).into_response();
    let h = resp.headers_mut();
    h.insert(TAIL_DURABLE_END, chunk.durable_end.into());
    h.insert(TAIL_CLOSED, u32::from(chunk.closed).into());
    Ok(resp)
}

async fn start_seed(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(sg): Path<String>,
) -> Result<Response, ErrorAnswer> {
    let manifest = blocking(move || s.start_seed(&sg, &peer.0)).await?;
    Ok(Json(manifest).into_response())
}

async fn seed_file(
    State(s): State<Shared>,
    Path((id, index)): Path<(Uuid, usize)>,
) -> Result<Response, ErrorAnswer> {
    let reader = blocking(move || s.seed_file(id, index)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let len = reader.len;
    tokio::task::spawn_blocking(move || {
        let mut off = 0u64;
        while off < reader.len {
            let n = (reader.len - off).min(SEED_CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            let chunk = reader.file.read_exact_at(&mut buf, off).map(|()| Bytes::from(buf));
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
            off += n as u64;
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut resp = axum::body::Body::from_stream(body).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_LENGTH, len.into());
    Ok(resp)
}

async fn end_seed(State(s): State<Shared>, Path(id): Path<Uuid>) -> Result<Response, ErrorAnswer> {
    blocking(move || s.end_seed(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn surrogate_begin(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(sg): Path<String>,
    Json(req): Json<SurrogateBegin>,
) -> Result<Response, ErrorAnswer> {
    let claim = blocking(move || s.surrogate_begin(&sg, &peer.0, req)).await?;
    Ok(Json(claim).into_response())
}

async fn surrogate_renew(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(sg): Path<String>,
    Json(req): Json<SurrogateJob>,
) -> Result<Response, ErrorAnswer> {
    let claim = blocking(move || s.surrogate_renew(&sg, &peer.0, req.job)).await?;
    Ok(Json(claim).into_response())
}

async fn surrogate_complete(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(sg): Path<String>,
    Json(req): Json<SurrogateComplete>,
) -> Result<Response, ErrorAnswer> {
    let stamp = blocking(move || s.surrogate_complete(&sg, &peer.0, req)).await?;
    Ok(Json(stamp).into_response())
}

async fn surrogate_abort(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(sg): Path<String>,
    Json(req): Json<SurrogateJob>,
) -> Result<Response, ErrorAnswer> {
    let job = req.job;
    blocking(move || s.surrogate_abort(&sg, &peer.0, job)).await?;
    Ok(Json(SurrogateJob { job }).into_response())
}

/// The protocol's routes.
pub fn router(source: Shared) -> Router {
    Router::new()
        .route("/repl/v1/stream/{sg}", get(stream))
        .route("/repl/v1/log/{sg}/{generation}", get(log_file))
        .route("/repl/v1/tail/{sg}/{generation}", get(log_tail))
        .route("/repl/v1/seed/{sg}", post(start_seed))
        .route("/repl/v1/seeds/{id}/{index}", get(seed_file))
        .route("/repl/v1/seeds/{id}", axum::routing::delete(end_seed))
        .route("/repl/v1/surrogate/{sg}/begin", post(surrogate_begin))
        .route("/repl/v1/surrogate/{sg}/renew", post(surrogate_renew))
        .route("/repl/v1/surrogate/{sg}/complete", post(surrogate_complete))
        .route("/repl/v1/surrogate/{sg}/abort", post(surrogate_abort))
        .with_state(source)
}

/// Serves replication on `listener` until `shutdown` turns true. `extra` adds the node's own
/// member-to-member routes (behind the same mutual TLS; a handler finds the calling member in
/// the [`Peer`] extension).
pub async fn serve(
    listener: TcpListener,
    tls: DagTls,
    source: Shared,
    extra: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.acceptor();
    let routes = router(source.clone()).merge(extra);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("replication listener: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        let source = source.clone();
        tokio::spawn(async move {
            serve_connection(tcp, addr, acceptor, routes, source).await;
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    routes: Router,
    source: Shared,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            source.refused(&addr.to_string(), &format!("TLS handshake failed: {e}"));
            return;
        }
        Err(_) => {
            source.refused(&addr.to_string(), "no TLS handshake within 10 s");
            return;
        }
    };
    let peer = tls.get_ref().1.peer_certificates().and_then(peer_node);
    let Some(peer) = peer else {
        source.refused(&addr.to_string(), "its certificate names no DAG member");
        return;
    };
    let svc = TowerToHyperService::new(routes.layer(Extension(Peer(peer))));
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await
    {
        tracing::debug!(%addr, "replication connection ended: {e}");
    }
}
