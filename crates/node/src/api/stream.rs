//! Progress of a long job streamed as it happens: newline-delimited JSON over a chunked
//! response, for clients that ask with `Accept: application/x-ndjson`.
//!
//! Lines are the contract's [`api::ProgressLine`]s: `step`, `files` and `bytes` (at most about
//! ten a second), then exactly one of `done` (with the report) or `error`. The status is 200
//! once streaming has started, so the outcome is in the last line.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use api::{ErrorDetail, ProgressLine};
use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::error::ApiError;

/// The media type of a progress stream.
pub use api::NDJSON;

/// Smallest interval between two `bytes` lines.
const BYTES_EVERY: Duration = Duration::from_millis(100);

/// Whether the client asked for a progress stream.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(NDJSON))
}

/// A [`backup::Progress`] that sends lines to the response.
pub struct Lines {
    tx: UnboundedSender<Result<Bytes, Infallible>>,
    last_bytes: Mutex<Option<Instant>>,
}

impl Lines {
    fn send<R: Serialize>(&self, v: &ProgressLine<R>) {
        let mut line = match serde_json::to_string(v) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "a progress line could not be serialised");
                return;
            }
        };
        line.push('\n');
        // A client that went away stops reading; the job still runs to its end.
        let _ = self.tx.send(Ok(Bytes::from(line)));
    }

    /// Sends the last line: the report or the error.
    pub fn finish<R: Serialize>(&self, outcome: Result<R, ApiError>) {
        match outcome {
            Ok(report) => self.send(&ProgressLine::Done { report }),
            Err(e) => self.send(&ProgressLine::<R>::Error {
                error: ErrorDetail {
                    code: e.code.to_string(),
                    message: e.message,
                    status: Some(e.status.as_u16()),
                },
            }),
        }
    }
}

impl backup::Progress for Lines {
    fn step(&self, what: &str) {
        self.send(&ProgressLine::<()>::Step { what: what.to_string() });
    }

    fn files(&self, done: usize, total: usize) {
        self.send(&ProgressLine::<()>::Files { done: done as u64, total: total as u64 });
    }

    fn bytes(&self, done: u64, total: u64) {
        let mut last = self.last_bytes.lock();
        let due = last.is_none_or(|t| t.elapsed() >= BYTES_EVERY) || done >= total;
        if due {
            *last = Some(Instant::now());
            drop(last);
            self.send(&ProgressLine::<()>::Bytes { done, total });
        }
    }
}

struct Receiver(UnboundedReceiver<Result<Bytes, Infallible>>);

impl futures_core::Stream for Receiver {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A progress sink and the streaming response that carries what it is sent.
pub fn channel() -> (Lines, Response) {
    let (tx, rx) = unbounded_channel();
    let response =
        (StatusCode::OK, [(CONTENT_TYPE, NDJSON)], Body::from_stream(Receiver(rx))).into_response();
    (Lines { tx, last_bytes: Mutex::new(None) }, response)
}
