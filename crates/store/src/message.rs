//! A mail message and its stored encoding.
//!
//! Stored as: format byte (1), header length (u32 LE), headers as JSON, body bytes. Headers are
//! small and evolve; bodies are large and opaque, so they are kept out of the JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

const FORMAT: u8 = 1;

/// The headers of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// When the store accepted it, milliseconds since the Unix epoch.
    pub received_unix_ms: u64,
}

/// A message: headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Message {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        #[allow(clippy::expect_used)] // plain data with string keys: serializing cannot fail
        let h = serde_json::to_vec(&self.headers).expect("headers serialise");
        let mut out = Vec::with_capacity(5 + h.len() + self.body.len());
        out.push(FORMAT);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes a stored message; `what` names it in errors.
    pub fn decode(what: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |why: &str| StoreError::Corrupt { what: what.into(), why: why.into() };
        if bytes.len() < 5 || bytes[0] != FORMAT {
            return Err(corrupt("unknown message format"));
        }
        let hl = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let h = bytes.get(5..5 + hl).ok_or_else(|| corrupt("header length past the end"))?;
        let headers = serde_json::from_slice(h).map_err(|e| corrupt(&format!("headers: {e}")))?;
        Ok(Message { headers, body: bytes[5 + hl..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let m = Message {
            headers: Headers {
                from: "a@x".into(),
                to: vec!["b@x".into()],
                subject: "hi".into(),
                received_unix_ms: 7,
            },
            body: vec![0, 1, 2, 255],
        };
        let e = m.encode();
        assert_eq!(Message::decode("m", &e).unwrap(), m);
        assert!(Message::decode("m", &e[..6]).is_err());
        assert!(Message::decode("m", &[9, 0, 0, 0, 0]).is_err());
    }
}
