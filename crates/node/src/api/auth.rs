//! Bearer-token check for the TCP listener (the Unix socket relies on file permissions).
//!
//! The web console's pages call the same API from the browser, which holds a session cookie
//! (opened by logging in with the token) instead of the token: either is accepted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The token a TCP client must present. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(Arc<Vec<u8>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(token: &str) -> Self {
        Token(Arc::new(token.trim().as_bytes().to_vec()))
    }

    /// Compares in time that depends only on the lengths, never on where the bytes differ,
    /// so that a network client cannot find the token byte by byte.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_slice();
        let mut diff = (want.len() ^ presented.len()) as u64;
        for i in 0..want.len().max(presented.len()) {
            let a = want.get(i).copied().unwrap_or(0);
            let b = presented.get(i).copied().unwrap_or(0xff);
            diff |= u64::from(a ^ b);
        }
        std::hint::black_box(diff) == 0
    }
}

/// What the TCP listener checks a request against: the token, or a console session.
#[derive(Clone, Debug)]
pub struct Guard {
    pub token: Token,
    pub sessions: crate::console::Sessions,
}

/// Middleware: answers 401 unless the request carries `Authorization: Bearer <token>` or the
/// cookie of a console session.
pub async fn require_token(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if guard.sessions.from_headers(req.headers()).is_some() {
        return next.run(req).await;
    }
    let token = guard.token;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    match presented {
        Some(p) if token.matches(p) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let t = Token::new("0123456789abcdef");
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b""));
    }
}
