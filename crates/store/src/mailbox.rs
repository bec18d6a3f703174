//! Mailboxes, folders and messages on one engine database.
//!
//! Tables of a mailbox database:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `mailboxes` | mailbox | JSON: creation time, folders |
//! | `messages` | mailbox `\0` id (u64 BE) | folder `\0` encoded [`Message`] |
//! | `folder_index` | mailbox `\0` folder `\0` id (u64 BE) | empty |
//! | `meta` | `next_id` | u64 LE |
//!
//! Names may not contain NUL, so `\0` separates key parts and a key prefix scan lists exactly
//! one mailbox or folder. Big-endian ids keep a folder in delivery order.

use std::sync::Arc;

use ese::{Durability, Instance, ReadTxn, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::message::{Headers, Message};

const MAILBOXES: &str = "mailboxes";
const MESSAGES: &str = "messages";
const FOLDER_INDEX: &str = "folder_index";
const META: &str = "meta";

/// Folders every new mailbox gets.
pub const DEFAULT_FOLDERS: [&str; 3] = ["Inbox", "Sent Items", "Deleted Items"];

/// A message's id, unique in its database.
pub type MessageId = u64;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MailboxRecord {
    created_unix_ms: u64,
    folders: Vec<String>,
}

/// One line of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageSummary {
    pub id: MessageId,
    pub subject: String,
    pub from: String,
    pub size: u64,
}

/// A count and a digest over every message of a database: two databases with the same
/// messages (same mailbox, id, folder, headers and body) have the same digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest {
    pub messages: u64,
    pub mailboxes: u64,
    pub bytes: u64,
    pub digest: blake3::Hash,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') || name.contains('/') {
        return Err(StoreError::BadName(name.into()));
    }
    Ok(())
}

fn msg_key(mailbox: &str, id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(mailbox.len() + 9);
    k.extend_from_slice(mailbox.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn index_key(mailbox: &str, folder: &str, id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(mailbox.len() + folder.len() + 10);
    k.extend_from_slice(mailbox.as_bytes());
    k.push(0);
    k.extend_from_slice(folder.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn split_value(what: &str, v: &[u8]) -> Result<(String, Message)> {
    let sep = v.iter().position(|&b| b == 0).ok_or_else(|| StoreError::Corrupt {
        what: what.into(),
        why: "no folder separator".into(),
    })?;
    let folder = String::from_utf8(v[..sep].to_vec())
        .map_err(|_| StoreError::Corrupt { what: what.into(), why: "folder not UTF-8".into() })?;
    Ok((folder, Message::decode(what, &v[sep + 1..])?))
}

/// A mailbox database: the engine instance of its storage group and the database's name.
#[derive(Clone)]
pub struct MailDb {
    instance: Arc<Instance>,
    db: String,
}

impl std::fmt::Debug for MailDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailDb").field("db", &self.db).finish()
    }
}

impl MailDb {
    /// Opens the mail tables of `db` in `instance`, creating them on first use.
    pub fn open(instance: Arc<Instance>, db: &str) -> Result<Self> {
        let mut t = instance.begin_write()?;
        for table in [MAILBOXES, MESSAGES, FOLDER_INDEX, META] {
            t.ensure_table(db, table)?;
        }
        t.commit(Durability::Durable)?;
        Ok(Self { instance, db: db.into() })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.db
    }

    fn mailbox(&self, t: &WriteTxn<'_>, mailbox: &str) -> Result<MailboxRecord> {
        let raw = t
            .get(&self.db, MAILBOXES, mailbox.as_bytes())?
            .ok_or_else(|| StoreError::NoSuchMailbox(mailbox.into()))?;
        serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt {
            what: format!("mailbox {mailbox}"),
            why: e.to_string(),
        })
    }

    /// Creates a mailbox with the default folders.
    pub fn create_mailbox(&self, mailbox: &str) -> Result<()> {
        check_name(mailbox)?;
        let mut t = self.instance.begin_write()?;
        if t.get(&self.db, MAILBOXES, mailbox.as_bytes())?.is_some() {
            return Err(StoreError::MailboxExists(mailbox.into()));
        }
        let rec = MailboxRecord {
            created_unix_ms: events::now_ms(),
            folders: DEFAULT_FOLDERS.iter().map(|s| s.to_string()).collect(),
        };
        #[allow(clippy::expect_used)] // plain data with string keys: serializing cannot fail
        let json = serde_json::to_vec(&rec).expect("record serialises");
        t.put(&self.db, MAILBOXES, mailbox.as_bytes(), &json)?;
        t.commit(Durability::Durable)?;
        Ok(())
    }

    /// Every mailbox, by name.
    pub fn mailboxes(&self) -> Result<Vec<String>> {
        let r = self.instance.begin_read()?;
        let mut c = r.cursor(&self.db, MAILBOXES)?;
        let mut out = Vec::new();
        let mut row = c.first()?;
        while let Some((k, _)) = row {
            out.push(String::from_utf8_lossy(&k).into_owned());
            row = c.next()?;
        }
        Ok(out)
    }

    /// Delivers a message into `folder` of `mailbox` and returns its id once it is durable
    /// (`Durability::Durable`) or in the log buffer (`Lazy`).
    pub fn deliver(
        &self,
        mailbox: &str,
        folder: &str,
        headers: Headers,
        body: &[u8],
        durability: Durability,
    ) -> Result<MessageId> {
        let mut t = self.instance.begin_write()?;
        let rec = self.mailbox(&t, mailbox)?;
        if !rec.folders.iter().any(|f| f == folder) {
            return Err(StoreError::NoSuchFolder {
                mailbox: mailbox.into(),
                folder: folder.into(),
            });
        }
        let id = match t.get(&self.db, META, b"next_id")? {
            Some(v) if v.len() == 8 => u64::from_le_bytes(bytes8(&v)),
            Some(_) => {
                return Err(StoreError::Corrupt {
                    what: "meta next_id".into(),
                    why: "bad length".into(),
                });
            }
            None => 1,
        };
        t.put(&self.db, META, b"next_id", &(id + 1).to_le_bytes())?;
        let msg = Message { headers, body: body.to_vec() };
        let mut value = folder.as_bytes().to_vec();
        value.push(0);
        value.extend_from_slice(&msg.encode());
        t.put(&self.db, MESSAGES, &msg_key(mailbox, id), &value)?;
        t.put(&self.db, FOLDER_INDEX, &index_key(mailbox, folder, id), b"")?;
        t.commit(durability)?;
        Ok(id)
    }

    /// Lists a folder in delivery order.
    pub fn list(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageSummary>> {
        let r = self.instance.begin_read()?;
        self.require_mailbox(&r, mailbox)?;
        let prefix = index_key(mailbox, folder, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut idx = r.cursor(&self.db, FOLDER_INDEX)?;
        let mut out = Vec::new();
        let mut row = idx.seek(prefix)?;
        while let Some((k, _)) = row {
            if !k.starts_with(prefix) {
                break;
            }
            let Some(tail) = k.len().checked_sub(8).map(|at| &k[at..]) else {
                return Err(StoreError::Corrupt {
                    what: format!("folder index of {mailbox}"),
                    why: "key shorter than a message id".into(),
                });
            };
            let id = u64::from_be_bytes(bytes8(tail));
            let (_, m) = self.read_in(&r, mailbox, id)?;
            out.push(MessageSummary {
                id,
                subject: m.headers.subject,
                from: m.headers.from,
                size: m.body.len() as u64,
            });
            row = idx.next()?;
        }
        Ok(out)
    }

    fn require_mailbox(&self, r: &ReadTxn, mailbox: &str) -> Result<()> {
        match r.get(&self.db, MAILBOXES, mailbox.as_bytes())? {
            Some(_) => Ok(()),
            None => Err(StoreError::NoSuchMailbox(mailbox.into())),
        }
    }

    fn read_in(&self, r: &ReadTxn, mailbox: &str, id: MessageId) -> Result<(String, Message)> {
        let v = r
            .get(&self.db, MESSAGES, &msg_key(mailbox, id))?
            .ok_or_else(|| StoreError::NoSuchMessage { mailbox: mailbox.into(), id })?;
        split_value(&format!("message {id} of {mailbox}"), &v)
    }

    /// Reads a message; returns its folder and content.
    pub fn read(&self, mailbox: &str, id: MessageId) -> Result<(String, Message)> {
        let r = self.instance.begin_read()?;
        self.read_in(&r, mailbox, id)
    }

    /// Moves a message to another folder of its mailbox.
    pub fn move_message(&self, mailbox: &str, id: MessageId, to: &str) -> Result<()> {
        let mut t = self.instance.begin_write()?;
        let rec = self.mailbox(&t, mailbox)?;
        if !rec.folders.iter().any(|f| f == to) {
            return Err(StoreError::NoSuchFolder { mailbox: mailbox.into(), folder: to.into() });
        }
        let key = msg_key(mailbox, id);
        let v = t
            .get(&self.db, MESSAGES, &key)?
            .ok_or_else(|| StoreError::NoSuchMessage { mailbox: mailbox.into(), id })?;
        let (from, msg) = split_value(&format!("message {id} of {mailbox}"), &v)?;
        t.delete(&self.db, FOLDER_INDEX, &index_key(mailbox, &from, id))?;
        t.put(&self.db, FOLDER_INDEX, &index_key(mailbox, to, id), b"")?;
        let mut value = to.as_bytes().to_vec();
        value.push(0);
        value.extend_from_slice(&msg.encode());
        t.put(&self.db, MESSAGES, &key, &value)?;
        t.commit(Durability::Durable)?;
        Ok(())
    }

    /// Deletes a message for good. Returns whether it existed.
    pub fn delete(&self, mailbox: &str, id: MessageId) -> Result<bool> {
        let mut t = self.instance.begin_write()?;
        let key = msg_key(mailbox, id);
        let Some(v) = t.get(&self.db, MESSAGES, &key)? else {
            return Ok(false);
        };
        let (folder, _) = split_value(&format!("message {id} of {mailbox}"), &v)?;
        t.delete(&self.db, MESSAGES, &key)?;
        t.delete(&self.db, FOLDER_INDEX, &index_key(mailbox, &folder, id))?;
        t.commit(Durability::Durable)?;
        Ok(true)
    }

    /// Counts and hashes every message (mailbox, id, folder, encoded content), in key order.
    pub fn digest(&self) -> Result<ContentDigest> {
        let r = self.instance.begin_read()?;
        let mut h = blake3::Hasher::new();
        let mut messages = 0;
        let mut bytes = 0;
        let mut c = r.cursor(&self.db, MESSAGES)?;
        let mut row = c.first()?;
        while let Some((k, v)) = row {
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(&k);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(&v);
            messages += 1;
            bytes += v.len() as u64;
            row = c.next()?;
        }
        let mailboxes = {
            let mut c = r.cursor(&self.db, MAILBOXES)?;
            let mut n = 0;
            let mut row = c.first()?;
            while row.is_some() {
                n += 1;
                row = c.next()?;
            }
            n
        };
        Ok(ContentDigest { messages, mailboxes, bytes, digest: h.finalize() })
    }

    /// Whether the message with this id exists with exactly this content.
    pub fn contains(&self, mailbox: &str, id: MessageId, body_hash: &blake3::Hash) -> Result<bool> {
        match self.read(mailbox, id) {
            Ok((_, m)) => Ok(blake3::hash(&m.body) == *body_hash),
            Err(StoreError::NoSuchMessage { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The first 8 bytes of `b` (callers pass at least 8).
fn bytes8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}
