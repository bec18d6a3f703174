//! `GET /v1/events/stream`: the event trail as it is written, as server-sent events, so that
//! a page (the web console) follows jobs and copies without polling.
//!
//! The log's subscription is a blocking channel; one thread per stream forwards its events to
//! the response and ends when the client goes away or the node stops (so that a stream never
//! holds the service's shutdown up for longer than one wait).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{ApiError, AppState, blocking};

/// How often the forwarding thread looks whether its client or the node has gone.
const CHECK_EVERY: Duration = Duration::from_millis(500);

type Item = Result<SseEvent, Infallible>;

struct Receiver(UnboundedReceiver<Item>);

impl futures_core::Stream for Receiver {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.0.poll_recv(cx)
    }
}

fn to_sse(e: &api::Event) -> Option<SseEvent> {
    match SseEvent::default().json_data(e) {
        Ok(ev) => Some(ev),
        Err(err) => {
            tracing::warn!(error = %err, "an event could not be serialised for a stream");
            None
        }
    }
}

fn send(tx: &UnboundedSender<Item>, e: &api::Event) -> bool {
    match to_sse(e) {
        Some(ev) => tx.send(Ok(ev)).is_ok(),
        None => true,
    }
}

/// The handler. Filters as `GET /v1/events` (`job`, `source`, `id`; `limit` does not apply);
/// with `since_ms`, the trail from then is sent first, then the live events.
pub async fn event_stream(
    State(s): State<AppState>,
    Query(q): Query<api::EventQuery>,
) -> Result<Response, ApiError> {
    let (live, past) = blocking(&s, move |node, _| {
        let mut filter = events::Filter {
            source: crate::dag::peer_api::parse_source(q.source.as_deref())?,
            id: q.id,
            ..Default::default()
        };
        if let Some(job) = &q.job {
            filter.job = Some(crate::dag::peer_api::resolve_job(node.events(), job)?);
        }
        // Subscribed before the trail is read, so that no event falls between the two; one
        // that is in both is sent once (below).
        let live = node.events().subscribe(filter.clone());
        let past = match q.since_ms {
            Some(since) => {
                let past = events::Filter { since_ms: Some(since), ..filter };
                node.events().query(&past)?.into_iter().map(super::convert::event).collect()
            }
            None => Vec::new(),
        };
        Ok((live, past))
    })
    .await?;
    let (tx, rx) = unbounded_channel();
    for e in &past {
        send(&tx, e);
    }
    let stopping = s.stopping.clone();
    let newest_past = past.last().map(|e| e.time_ms);
    let spawned = std::thread::Builder::new().name("event-stream".into()).spawn(move || {
        loop {
            if stopping.load(Ordering::Relaxed) || tx.is_closed() {
                return;
            }
            match live.recv_timeout(CHECK_EVERY) {
                Ok(e) => {
                    let e = super::convert::event(e);
                    let seen = newest_past.is_some_and(|t| e.time_ms <= t) && past.contains(&e);
                    if !seen && !send(&tx, &e) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    if let Err(e) = spawned {
        return Err(ApiError::internal(format!("starting the event stream's thread: {e}")));
    }
    Ok(Sse::new(Receiver(rx)).keep_alive(KeepAlive::default()).into_response())
}
