//! The client side of the [`crate::protocol`]: a passive copy's node asking the active's.
//!
//! One TLS connection per peer is kept and reused; a request that finds it closed (the peer
//! restarted, a proxy cut it) connects again once. Every error names the peer and the request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::protocol::{ReplErrorBody, TAIL_CLOSED, TAIL_DURABLE_END, TailChunk};
use crate::tls::DagTls;

/// How long connecting (TCP and TLS) to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take until its answer's head arrives.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer could not be reached (refused, timed out, TLS failed): the copy is
    /// disconnected.
    #[error("cannot reach node {node} at {addr}: {why}")]
    Unreachable { node: String, addr: String, why: String },
    /// The peer answered with an error.
    #[error("node {node} answered {status} to {what}: {error}")]
    Status { node: String, status: u16, what: String, error: String },
    /// The answer could not be read or decoded.
    #[error("node {node}: bad answer to {what}: {why}")]
    BadAnswer { node: String, what: String, why: String },
}

impl ClientError {
    /// Whether the peer answered "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status: 404, .. })
    }
}

/// A connection to one peer's replication listener.
pub struct PeerClient {
    tls: DagTls,
    node: String,
    addr: String,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").field("node", &self.node).field("addr", &self.addr).finish()
    }
}

impl PeerClient {
    /// A client of member `node`, listening at `addr` (host:port).
    pub fn new(tls: DagTls, node: impl Into<String>, addr: impl Into<String>) -> Self {
        PeerClient { tls, node: node.into(), addr: addr.into(), conn: Mutex::new(None) }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            node: self.node.clone(),
            addr: self.addr.clone(),
            why: why.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let name = ServerName::try_from(self.node.clone())
            .map_err(|e| self.unreachable(format!("not a usable server name: {e}")))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| self.unreachable(e))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .tls
                .connector()
                .connect(name, tcp)
                .await
                .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| self.unreachable(e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(send)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| self.unreachable("connection timed out"))?
    }

    /// Sends one request; returns the status and the whole body.
    async fn request(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        self.request_with(method, path, Bytes::new()).await
    }

    /// Sends one request with `body` (JSON when not empty) on the shared connection.
    async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        self.request_parts(method, path, body).await.map(|(_, b)| b)
    }

    /// Like `request_with`, also returning the answer's headers.
    async fn request_parts(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(hyper::HeaderMap, Bytes), ClientError> {
        let mut slot = self.conn.lock().await;
        for attempt in 0..2 {
            let mut send = match slot.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, &self.node)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| self.unreachable(e))?;
            if send.ready().await.is_err() {
                continue;
            }
            let resp = match tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(req)).await {
                Err(_) => return Err(self.unreachable(format!("{method} {path} timed out"))),
                Ok(Err(e)) if attempt == 0 && (e.is_canceled() || e.is_closed()) => continue,
                Ok(Err(e)) => return Err(self.unreachable(e)),
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| self.unreachable(format!("reading the answer to {path}: {e}")))?
                .to_bytes();
            *slot = Some(send);
            if status.is_success() {
                return Ok((parts.headers, body));
            }
            return Err(self.status_error(status, &format!("{method} {path}"), &body));
        }
        Err(self.unreachable("the connection closed twice"))
    }

    fn status_error(&self, status: StatusCode, what: &str, body: &[u8]) -> ClientError {
        let error = serde_json::from_slice::<ReplErrorBody>(body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        ClientError::Status {
            node: self.node.clone(),
            status: status.as_u16(),
            what: what.to_string(),
            error,
        }
    }

    /// Another client of the same member with a connection of its own: a copy's block-mode
    /// follower long-polls on it without holding up the copier's requests.
    pub fn sibling(&self) -> PeerClient {
        PeerClient::new(self.tls.clone(), self.node.clone(), self.addr.clone())
    }

    /// `GET` a tail path ([`crate::protocol::tail_path`]): the bytes and the headers.
    pub async fn get_tail(&self, path: &str) -> Result<TailChunk, ClientError> {
        let (headers, body) = self.request_parts(Method::GET, path, Bytes::new()).await?;
        let header = |name: &str| -> Result<u64, ClientError> {
            headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).ok_or_else(
                || ClientError::BadAnswer {
                    node: self.node.clone(),
                    what: path.to_string(),
                    why: format!("no valid {name} header"),
                },
            )
        };
        Ok(TailChunk {
            durable_end: header(TAIL_DURABLE_END)?,
            closed: header(TAIL_CLOSED)? != 0,
            bytes: body.to_vec(),
        })
    }

    /// `GET path`, the body as bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, ClientError> {
        self.request(Method::GET, path).await
    }

    /// `GET path`, streaming the body into `sink` as it arrives (a seed file of gigabytes is
    /// never held in memory); returns the bytes received. Uses a connection of its own.
    pub async fn get_streamed(
        &self,
        path: &str,
        sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
    ) -> Result<u64, ClientError> {
        let resp = self.send_alone(Method::GET, path, Bytes::new(), Some(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(self.status_error(status, &format!("GET {path}"), &bytes));
        }
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| self.unreachable(format!("reading the answer to {path}: {e}")))?;
            if let Some(data) = frame.data_ref() {
                sink(data).map_err(|e| ClientError::BadAnswer {
                    node: self.node.clone(),
                    what: path.to_string(),
                    why: format!("storing it: {e}"),
                })?;
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    /// `GET path`, the body decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, path).await?;
        self.decode(path, &body)
    }

    /// `POST path` with no body, the answer decoded from JSON.
    pub async fn post_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::POST, path).await?;
        self.decode(path, &body)
    }

    /// `POST path` with `body` as JSON, the answer decoded from JSON.
    pub async fn post_body<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = self.encode(path, body)?;
        let answer = self.request_with(Method::POST, path, bytes).await?;
        self.decode(path, &answer)
    }

    /// `POST path` with `body` as JSON on a connection of its own, waiting as long as the
    /// answer takes (a job run on the peer: minutes or hours); the shared connection, which
    /// the copy's log fetches use, is never held meanwhile.
    pub async fn post_long<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = self.encode(path, body)?;
        self.post_bytes_alone(path, bytes).await
    }

    /// `POST path` with the JSON `bytes` on a connection of its own, the answer decoded.
    async fn post_bytes_alone<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Bytes,
    ) -> Result<T, ClientError> {
        let resp = self.send_alone(Method::POST, path, bytes, None).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer to {path}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(self.status_error(status, &format!("POST {path}"), &body));
        }
        self.decode(path, &body)
    }

    /// Sends one request on a connection of its own (not the shared one) and returns the
    /// answer's head, waiting at most `timeout` for it (`None`: as long as it takes).
    async fn send_alone(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut send = self.connect().await?;
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &self.node)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| self.unreachable(e))?;
        let sent = send.send_request(req);
        let answered = match timeout {
            Some(t) => tokio::time::timeout(t, sent)
                .await
                .map_err(|_| self.unreachable(format!("{method} {path} timed out")))?,
            None => sent.await,
        };
        answered.map_err(|e| self.unreachable(e))
    }

    /// `POST path` with `body` as JSON on a connection of its own, answered within `timeout`
    /// (a lease renewal must not wait behind a log fetch on the shared connection).
    pub async fn post_alone<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.encode(path, body)?;
        tokio::time::timeout(timeout, self.post_bytes_alone(path, bytes))
            .await
            .map_err(|_| self.unreachable(format!("POST {path} timed out")))?
    }

    fn encode<B: Serialize>(&self, path: &str, body: &B) -> Result<Bytes, ClientError> {
        serde_json::to_vec(body).map(Bytes::from).map_err(|e| ClientError::BadAnswer {
            node: self.node.clone(),
            what: path.to_string(),
            why: format!("encoding the request: {e}"),
        })
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.request(Method::DELETE, path).await.map(|_| ())
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::BadAnswer {
            node: self.node.clone(),
            what: path.to_string(),
            why: e.to_string(),
        })
    }
}
