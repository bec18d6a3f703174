//! One message at a time, for a client that proves from outside the nodes that no
//! acknowledged message is lost across a switchover or a failover: deliver (answered only once
//! the message is durable) and check (which acknowledged messages are not stored byte for
//! byte).
//!
//! Both answer [`api::NOT_ACTIVE`] when the storage group is not active on this node, so that
//! the client tells "go to another node" apart from a failure.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use store::{Headers, MailDb, StoreError};

use super::error::ApiError;
use super::{AppState, blocking};
use crate::Node;
use crate::dag::Dag;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The sender of a message whose request names none.
const DEFAULT_FROM: &str = "mail-client@localhost";

fn not_active(node: &Node, sg: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        api::NOT_ACTIVE,
        format!(
            "storage group {sg} is not active on node {} ({why}); send to the node that holds \
             its active copy",
            node.name()
        ),
    )
}

/// The mail of `db` in `sg` when the storage group is mounted here. A storage group that is
/// dismounted, or that this node only holds a passive copy of, is "not active here"; one the
/// node does not know at all stays `no_such_storage_group`.
fn active_mail(node: &Node, dag: Option<&Dag>, sg: &str, db: &str) -> Result<MailDb, ApiError> {
    let group = match node.store().storage_group(sg) {
        Ok(g) => g,
        Err(StoreError::NoSuchStorageGroup(_)) if dag.is_some_and(|d| d.has_copy(sg)) => {
            return Err(not_active(node, sg, "this node holds a passive copy of it"));
        }
        Err(e) => return Err(e.into()),
    };
    match group.mail(db) {
        Ok(m) => Ok(m),
        Err(StoreError::NotMounted(_)) => Err(not_active(node, sg, "it is not mounted here")),
        Err(e) => Err(e.into()),
    }
}

/// A store error met while the storage group was being dismounted under the request (a
/// switchover stops the old active's commits) is "not active here" too: the message was not
/// acknowledged and the client is to try elsewhere.
fn store_error(node: &Node, sg: &str, e: StoreError) -> ApiError {
    let mounted = node.store().storage_group(sg).is_ok_and(|g| g.is_mounted());
    if mounted {
        e.into()
    } else {
        not_active(node, sg, &format!("it was dismounted during the request: {e}"))
    }
}

/// Delivers one message durably and answers its id and the hash of its body.
pub async fn mail_deliver(
    State(s): State<AppState>,
    Json(req): Json<api::MailDeliver>,
) -> ApiResult<api::MailDelivered> {
    let dag = s.dag.clone();
    blocking(&s, move |node, _| {
        let db = active_mail(node, dag.as_deref(), &req.sg, &req.db)?;
        let headers = Headers {
            from: req.from.clone().unwrap_or_else(|| DEFAULT_FROM.into()),
            to: vec![req.mailbox.clone()],
            subject: req.subject.clone(),
            received_unix_ms: events::now_ms(),
        };
        let body = req.body.as_bytes();
        let deliver =
            |h: Headers| db.deliver(&req.mailbox, "Inbox", h, body, ese::Durability::Durable);
        let id = match deliver(headers.clone()) {
            Err(StoreError::NoSuchMailbox(_)) => {
                match db.create_mailbox(&req.mailbox) {
                    // Another delivery created it in between: as good.
                    Ok(()) | Err(StoreError::MailboxExists(_)) => {}
                    Err(e) => return Err(store_error(node, &req.sg, e)),
                }
                deliver(headers)
            }
            other => other,
        }
        .map_err(|e| store_error(node, &req.sg, e))?;
        Ok(Json(api::MailDelivered {
            storage_group: req.sg,
            database: req.db,
            mailbox: req.mailbox,
            message_id: id,
            node: node.name().to_string(),
            body_hash: blake3::hash(body).to_hex().to_string(),
        }))
    })
    .await
}

/// Which of the listed messages are absent, or present with another body.
pub async fn mail_check(
    State(s): State<AppState>,
    Json(req): Json<api::MailCheck>,
) -> ApiResult<api::MailChecked> {
    let dag = s.dag.clone();
    blocking(&s, move |node, _| {
        let db = active_mail(node, dag.as_deref(), &req.sg, &req.db)?;
        let mut missing = Vec::new();
        for m in &req.messages {
            let hash = blake3::Hash::from_hex(&m.body_hash).map_err(|e| {
                ApiError::bad_request(format!(
                    "message {} of {}: body_hash {:?} is not a BLAKE3 hash in hex: {e}",
                    m.message_id, m.mailbox, m.body_hash
                ))
            })?;
            if !db
                .contains(&m.mailbox, m.message_id, &hash)
                .map_err(|e| store_error(node, &req.sg, e))?
            {
                missing.push(m.clone());
            }
        }
        Ok(Json(api::MailChecked {
            checked: req.messages.len() as u64,
            missing,
            node: node.name().to_string(),
        }))
    })
    .await
}
