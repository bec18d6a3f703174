//! The client of the node's API, over a Unix socket or TCP: `hyper`'s HTTP/1.1 on a
//! current-thread runtime of its own, with the [`api`] contract's types in and out.
//!
//! One request per connection. Errors from the node come back as an [`api::ErrorBody`] and
//! become [`ApiError`]s naming the code. A long job's progress is read line by line as the
//! node streams it, so a node that stops in the middle of a job is told apart from one that
//! refused it.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default socket when neither `--node` nor `$SHADOWCOPY_NODE` is given.
pub const DEFAULT_SOCKET: &str = "/var/lib/shadowcopy/api.sock";

/// Where the node listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: Option<String> },
}

/// An error answered by the node.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::error::Error for ApiError {}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

/// The node closed the connection while a job's progress was streaming: the job's outcome is
/// unknown to the client (the node may have stopped or crashed).
#[derive(Debug)]
pub struct ClosedMidJob {
    /// What the connection said when it closed.
    pub cause: String,
}

impl std::error::Error for ClosedMidJob {}

impl std::fmt::Display for ClosedMidJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the node closed the connection in the middle of the job, before its outcome ({}); \
             the node may have stopped or crashed. Find out what became of the job with \
             `shadowcopy events --source requester --limit 20` (its job id is in them; then \
             `shadowcopy events --job ID`)",
            self.cause
        )
    }
}

/// Percent-encodes one path segment (a storage group's name in `/v1/store/{sg}/mount`).
pub fn segment(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A path with a query string made from a typed query (`serde_urlencoded`, as the node reads
/// it).
pub fn with_query<Q: Serialize>(path: &str, query: &Q) -> Result<String> {
    let q = serde_urlencoded::to_string(query).context("encoding the query")?;
    Ok(if q.is_empty() { path.to_string() } else { format!("{path}?{q}") })
}

/// Either kind of connection, for hyper.
trait Connection: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}
impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> Connection for T {}

impl Endpoint {
    /// `http://host:port` (or `host:port`) is TCP; anything else is a socket path.
    pub fn parse(node: &str, token: Option<String>) -> Endpoint {
        match node.strip_prefix("http://") {
            Some(rest) => Endpoint::Tcp { addr: rest.trim_end_matches('/').to_string(), token },
            None if !node.contains('/') && node.contains(':') => {
                Endpoint::Tcp { addr: node.to_string(), token }
            }
            None => Endpoint::Unix(PathBuf::from(node)),
        }
    }

    /// The node's address as given: a socket path or http://HOST:PORT.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { addr, .. } => format!("http://{addr}"),
        }
    }

    fn context(&self) -> String {
        format!(
            "talking to the node at {} (is `shadowcopy serve` running? another node is chosen \
             with --node or SHADOWCOPY_NODE)",
            self.describe()
        )
    }

    /// `GET` with a JSON answer.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        self.get_with_password(path, None)
    }

    /// `GET` with a JSON answer, carrying a repository's password in
    /// [`api::REPO_PASSWORD_HEADER`] (never in the URL, which is logged).
    pub fn get_with_password<R: DeserializeOwned>(
        &self,
        path: &str,
        password: Option<&str>,
    ) -> Result<R> {
        let (status, body) = self.exchange("GET", path, None, ("application/json", password))?;
        decode(status, &body)
    }

    /// `GET` with a text answer (`/metrics`).
    pub fn get_text(&self, path: &str) -> Result<String> {
        let (status, body) = self.exchange("GET", path, None, ("text/plain", None))?;
        if !status.is_success() {
            return Err(node_error(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `POST` a JSON body, with a JSON answer.
    pub fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let (status, answer) =
            self.exchange("POST", path, Some(body), ("application/json", None))?;
        decode(status, &answer)
    }

    /// `POST` a JSON body, with a JSON answer, giving up after `timeout` (connecting
    /// included): a client that follows the active node moves on from one that hangs.
    pub fn post_within<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: std::time::Duration,
    ) -> Result<R> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let rt = runtime()?;
        let (status, answer) = rt
            .block_on(async {
                let exchange = async {
                    let response =
                        self.send("POST", path, Some(body), ("application/json", None)).await?;
                    let status = response.status();
                    let body =
                        response.into_body().collect().await.context("reading the answer")?;
                    anyhow::Ok((status, body.to_bytes()))
                };
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow!("no answer within {} ms", timeout.as_millis())),
                }
            })
            .with_context(|| self.context())?;
        decode(status, &answer)
    }

    /// Posts a job and follows its progress stream: `on_event` sees every `step`, `files`
    /// and `bytes` line; returns the job's report, or its error.
    pub fn post_streaming<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(&api::ProgressLine<serde_json::Value>),
    ) -> Result<R> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let rt = runtime()?;
        rt.block_on(async {
            let response = self
                .send("POST", path, Some(body), (api::NDJSON, None))
                .await
                .with_context(|| self.context())?;
            let status = response.status();
            let mut body = response.into_body();
            if status != StatusCode::OK {
                let text = body.collect().await.context("reading the node's answer")?.to_bytes();
                return decode(status, &text);
            }
            let mut pending: Vec<u8> = Vec::new();
            loop {
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    // A line this client does not know (a newer node's) is skipped.
                    let Ok(line) =
                        serde_json::from_slice::<api::ProgressLine<serde_json::Value>>(&line)
                    else {
                        continue;
                    };
                    match line {
                        api::ProgressLine::Done { report } => {
                            return serde_json::from_value(report)
                                .context("the node's report does not fit this client's contract");
                        }
                        api::ProgressLine::Error { error } => {
                            return Err(ApiError {
                                status: error.status.unwrap_or(500),
                                code: error.code,
                                message: error.message,
                            }
                            .into());
                        }
                        other => on_event(&other),
                    }
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            pending.extend_from_slice(data);
                        }
                    }
                    Some(Err(e)) => return Err(ClosedMidJob { cause: e.to_string() }.into()),
                    None => {
                        return Err(ClosedMidJob {
                            cause: "the progress stream ended without an outcome".into(),
                        }
                        .into());
                    }
                }
            }
        })
    }

    /// Sends one request and reads the whole answer.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        head: (&str, Option<&str>),
    ) -> Result<(StatusCode, Bytes)> {
        let rt = runtime()?;
        rt.block_on(async {
            let response = self.send(method, path, body, head).await?;
            let status = response.status();
            let body = response.into_body().collect().await.context("reading the answer")?;
            anyhow::Ok((status, body.to_bytes()))
        })
        .with_context(|| self.context())
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Endpoint::Unix(p) => Box::new(TokioIo::new(tokio::net::UnixStream::connect(p).await?)),
            Endpoint::Tcp { addr, .. } => {
                Box::new(TokioIo::new(tokio::net::TcpStream::connect(addr.as_str()).await?))
            }
        })
    }

    /// Connects, sends one request and returns the answer's head (its body is read as it
    /// comes).
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        (accept, password): (&str, Option<&str>),
    ) -> Result<Response<Incoming>> {
        let io = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            // Its errors reach the request or the body being read.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, accept);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(p) = password {
            request = request.header(api::REPO_PASSWORD_HEADER, p);
        }
        if let Endpoint::Tcp { token: Some(t), .. } = self {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        sender.send_request(request).await.map_err(|e| {
            if closed_by_peer(&e) {
                anyhow::Error::new(e).context(
                    "the node closed the connection before reading the whole request, without answering",
                )
            } else {
                e.into()
            }
        })
    }
}

/// Whether a request failed because the node closed the connection: before answering, or
/// while the request was still being written (a broken pipe or a reset under it).
fn closed_by_peer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        cause = c.source();
    }
    false
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the client's runtime")
}

/// The node's error from an answer that is not a success.
fn node_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<api::ErrorBody>(body) {
        Ok(e) => ApiError { status: status.as_u16(), code: e.error.code, message: e.error.message },
        Err(_) => ApiError {
            status: status.as_u16(),
            code: "http_error".into(),
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
    .into()
}

/// The typed body of a 2xx answer, or the node's error.
fn decode<R: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<R> {
    if !status.is_success() {
        return Err(node_error(status, body));
    }
    serde_json::from_slice(body).map_err(|e| {
        anyhow!(
            "the node's answer does not fit this client's contract ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A node's error answer, to a plain request and to one that asked for a progress
    /// stream, is reported with its status, code and message. (A node answering before it has
    /// read the request is not covered: hyper reports that as the node closing without
    /// answering, as the next test expects; the node reads every body it answers.)
    #[test]
    fn an_error_answer_is_reported_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let body = serde_json::json!({ "filler": "x".repeat(16 << 10) });
        let length = serde_json::to_vec(&body).unwrap().len();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole request: the head, then the body of its length.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n")
                    || request.len()
                        < request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + length
                {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before sending its request");
                    request.extend_from_slice(&buf[..n]);
                }
                let answer = br#"{"error":{"code":"payload_too_large","message":"too big"}}"#;
                write!(
                    conn,
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    answer.len()
                )
                .unwrap();
                conn.write_all(answer).unwrap();
            }
        });
        let node = Endpoint::Unix(socket);
        let outcomes = [
            node.post::<_, serde_json::Value>("/v1/anything", &body).map(drop),
            node.post_streaming::<_, serde_json::Value>("/v1/anything", &body, |_| {}).map(drop),
        ];
        for outcome in outcomes {
            let e = outcome.unwrap_err();
            let api = e.downcast_ref::<ApiError>().unwrap_or_else(|| panic!("{e:#}"));
            assert_eq!(
                (api.status, api.code.as_str(), api.message.as_str()),
                (413, "payload_too_large", "too big")
            );
        }
        server.join().unwrap();
    }

    /// Without any answer, the client says the node closed the connection.
    #[test]
    fn a_node_that_closes_without_answering_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let big = serde_json::json!({ "filler": "x".repeat(8 << 20) });
        let e = Endpoint::Unix(socket).post::<_, serde_json::Value>("/v1/anything", &big);
        server.join().unwrap();
        let e = e.unwrap_err();
        assert!(format!("{e:#}").contains("closed the connection"), "{e:#}");
    }

    /// A node that stops in the middle of a job's progress stream (here: after one line, in
    /// the middle of a chunk): the client says so and how to find the job, not a parse error.
    #[test]
    fn a_node_that_dies_mid_job_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head).unwrap();
            let line = "{\"event\":\"step\",\"what\":\"copying\"}\n";
            write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                 transfer-encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n40\r\n{{\"event\":",
                line.len()
            )
            .unwrap();
            // Dropped mid-chunk, as a killed node's socket is.
        });
        let mut steps = Vec::new();
        let e = Endpoint::Unix(socket)
            .post_streaming::<_, serde_json::Value>("/v1/backup", &serde_json::json!({}), |l| {
                steps.push(l.clone())
            })
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(steps, vec![api::ProgressLine::Step { what: "copying".into() }]);
        assert!(e.downcast_ref::<ClosedMidJob>().is_some(), "{e:#}");
        let text = format!("{e:#}");
        assert!(text.contains("closed the connection in the middle of the job"), "{text}");
        assert!(text.contains("shadowcopy events"), "{text}");
        assert!(!text.contains("chunk size"), "{text}");
    }

    #[test]
    fn endpoints_and_encoding() {
        assert!(matches!(Endpoint::parse("/run/x.sock", None), Endpoint::Unix(_)));
        assert!(matches!(Endpoint::parse("http://127.0.0.1:7070", None), Endpoint::Tcp { .. }));
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        let q = api::MailCountQuery { sg: "S G".into(), db: "D&B".into(), path: None, copy: false };
        assert_eq!(with_query("/v1/mail/count", &q).unwrap(), "/v1/mail/count?sg=S+G&db=D%26B");
    }
}
