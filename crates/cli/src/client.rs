//! A small blocking HTTP/1.1 client for the node's API, over a Unix socket or TCP.
//!
//! One request per connection (`Connection: close`), JSON in and out. The node answers with
//! `Content-Length` or chunked bodies; both are read. Errors from the node come back as
//! `{"error": {"code", "message"}}` and become [`ApiError`]s naming the code.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

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

    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { addr, .. } => format!("http://{addr}"),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body))
    }

    /// Sends one request; returns the JSON body of a 2xx answer (or the text as a JSON
    /// string when the body is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) = self.exchange(method, path, body).with_context(|| {
            format!("talking to the node at {} (is `shadowcopy serve` running?)", self.describe())
        })?;
        self.request_outcome(status, text)
    }

    /// The JSON of a 2xx answer, or the node's error.
    fn request_outcome(&self, status: u16, text: Vec<u8>) -> Result<Value> {
        let json: Option<Value> = serde_json::from_slice(&text).ok();
        if (200..300).contains(&status) {
            return Ok(
                json.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&text).into_owned()))
            );
        }
        let err = json.as_ref().and_then(|j| j.get("error"));
        Err(ApiError {
            status,
            code: err.and_then(|e| e["code"].as_str()).unwrap_or("http_error").to_string(),
            message: err
                .and_then(|e| e["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned()),
        }
        .into())
    }

    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Endpoint::Unix(p) => Box::new(UnixStream::connect(p)?),
            Endpoint::Tcp { addr, .. } => Box::new(std::net::TcpStream::connect(addr.as_str())?),
        })
    }

    /// Connects and sends one request, headers and body in one write.
    ///
    /// A node may answer before it has read the body (an error it can tell from the path and
    /// headers alone) and close the connection; the rest of our write then fails with a broken
    /// pipe or a reset although the answer is already waiting to be read. So such a write
    /// error does not end the exchange: it is returned next to the stream, and the caller
    /// reads the answer first and reports the write error only if there is none.
    fn send(&self, method: &str, path: &str, body: Option<&Value>, accept: &str) -> Result<Sent> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: {accept}\r\n"
        );
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        if let Endpoint::Tcp { token: Some(t), .. } = self {
            request.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&payload);
        let mut stream = self.connect()?;
        let write_error = match stream.write_all(request.as_bytes()) {
            Ok(()) => None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Some(e)
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Sent { stream, write_error })
    }

    fn exchange(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>)> {
        let sent = self.send(method, path, body, "application/json")?;
        match read_response(sent.stream) {
            Ok(answer) => Ok(answer),
            Err(e) => Err(sent.write_error.map_or(e, closed_early)),
        }
    }

    /// Posts a job and follows its progress stream: `on_event` sees every progress line;
    /// returns the job's report, or its error.
    pub fn post_streaming(
        &self,
        path: &str,
        body: &Value,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Value> {
        let context = || {
            format!("talking to the node at {} (is `shadowcopy serve` running?)", self.describe())
        };
        let sent =
            self.send("POST", path, Some(body), "application/x-ndjson").with_context(context)?;
        let mut r = BufReader::new(sent.stream);
        let head = match read_head(&mut r) {
            Ok(head) => head,
            Err(e) => return Err(sent.write_error.map_or(e, closed_early)).with_context(context),
        };
        if head.status != 200 {
            let text = read_body(&mut r, &head)?;
            return self.request_outcome(head.status, text);
        }
        let mut lines: Box<dyn BufRead> = if head.chunked {
            Box::new(BufReader::new(Chunked { inner: r, left: 0, done: false }))
        } else {
            Box::new(r)
        };
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                bail!("the node closed the progress stream before the job's outcome");
            }
            let Ok(v) = serde_json::from_str::<Value>(line.trim()) else { continue };
            match v["event"].as_str() {
                Some("done") => return Ok(v["report"].clone()),
                Some("error") => {
                    let e = &v["error"];
                    return Err(ApiError {
                        status: e["status"].as_u64().unwrap_or(500) as u16,
                        code: e["code"].as_str().unwrap_or("error").to_string(),
                        message: e["message"].as_str().unwrap_or("").to_string(),
                    }
                    .into());
                }
                _ => on_event(&v),
            }
        }
    }
}

/// A connection to the node.
pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A request written (or cut short by the node closing early) and the connection to read the
/// answer from.
struct Sent {
    stream: Box<dyn Stream>,
    /// The broken pipe or reset that cut the write short, reported only if no answer came.
    write_error: Option<std::io::Error>,
}

/// The error for a request the node stopped reading and left unanswered.
fn closed_early(write_error: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(write_error).context(
        "the node closed the connection before reading the whole request, without answering",
    )
}

/// Decodes a chunked body as it arrives.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk's data.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {:?}", line.trim()),
                    )
                })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

/// Reads a status line and the headers that matter.
fn read_head(r: &mut impl BufRead) -> Result<Head> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", line.trim_end()))?;
    let mut head = Head { status, length: None, chunked: false };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the response headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(head);
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                head.length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            }
        }
    }
}

/// Reads the body (by Content-Length, chunked, or to EOF).
fn read_body(r: &mut impl BufRead, head: &Head) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        Chunked { inner: r, left: 0, done: false }.read_to_end(&mut body)?;
    } else if let Some(n) = head.length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Reads a whole response.
fn read_response(stream: impl Read) -> Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(stream);
    let head = read_head(&mut r)?;
    Ok((head.status, read_body(&mut r, &head)?))
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    let mut o = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".as_slice();
        assert_eq!(read_response(r).unwrap(), (200, b"{}".to_vec()));
        let r = b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            .as_slice();
        assert_eq!(read_response(r).unwrap(), (401, b"abcde".to_vec()));
    }

    /// A node that answers an error from the request line alone and closes without reading
    /// the body: the client must report that answer, not the broken pipe of its own write.
    /// The body is far larger than a socket buffer, so the write is always cut short.
    #[test]
    fn an_answer_sent_before_the_body_was_read_is_reported() {
        use std::os::unix::net::UnixListener;

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let body = br#"{"error":{"code":"payload_too_large","message":"too big"}}"#;
                write!(
                    conn,
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                conn.write_all(body).unwrap();
                // Dropped unread: the client's pending write fails with a broken pipe.
            }
        });
        let node = Endpoint::Unix(socket);
        let big = serde_json::json!({ "filler": "x".repeat(8 << 20) });
        for outcome in
            [node.post("/v1/anything", &big), node.post_streaming("/v1/anything", &big, |_| {})]
        {
            let e = outcome.unwrap_err();
            let api = e.downcast_ref::<ApiError>().unwrap_or_else(|| panic!("{e:#}"));
            assert_eq!(
                (api.status, api.code.as_str(), api.message.as_str()),
                (413, "payload_too_large", "too big")
            );
        }
        server.join().unwrap();
    }

    /// Without any answer, the write error is what is reported.
    #[test]
    fn a_node_that_closes_without_answering_is_reported_as_such() {
        use std::os::unix::net::UnixListener;

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let big = serde_json::json!({ "filler": "x".repeat(8 << 20) });
        let e = Endpoint::Unix(socket).post("/v1/anything", &big).unwrap_err();
        server.join().unwrap();
        assert!(format!("{e:#}").contains("closed the connection"), "{e:#}");
    }

    #[test]
    fn endpoints_and_encoding() {
        assert!(matches!(Endpoint::parse("/run/x.sock", None), Endpoint::Unix(_)));
        assert!(matches!(Endpoint::parse("http://127.0.0.1:7070", None), Endpoint::Tcp { .. }));
        assert_eq!(encode("/a b/c"), "%2Fa%20b%2Fc");
    }
}
