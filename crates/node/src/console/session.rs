//! The console's sessions: a random id in an `HttpOnly` cookie stands for a login with the
//! node's token, so that the token itself never sits in the browser after the login form.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The cookie that carries the session id.
pub const COOKIE: &str = "shadowcopy_session";

/// How long a session lives after its login (a console left open overnight logs in again).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The sessions of one node, in memory: a restart logs everyone out, which is what a new
/// token (the usual reason to restart) should do anyway.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Instant>>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({} open)", self.0.lock().len())
    }
}

impl Sessions {
    /// Opens a session and returns its id: 32 random bytes from the operating system's
    /// generator, hex-encoded (a guessable id would be as good as the token).
    pub fn open(&self) -> String {
        let bytes: [u8; 32] = rand::random();
        let mut id = String::with_capacity(64);
        for b in bytes {
            let _ = write!(id, "{b:02x}");
        }
        let mut map = self.0.lock();
        let now = Instant::now();
        // Expired sessions are dropped here, so the map cannot grow without bound.
        map.retain(|_, expires| *expires > now);
        map.insert(id.clone(), now + LIFETIME);
        id
    }

    /// Whether `id` names a session that has not expired. The lookup is a hash of the id
    /// (not a byte-by-byte compare of a secret that an attacker controls the other half of).
    pub fn valid(&self, id: &str) -> bool {
        let mut map = self.0.lock();
        match map.get(id) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                map.remove(id);
                false
            }
            None => false,
        }
    }

    /// Ends a session (logout).
    pub fn close(&self, id: &str) {
        self.0.lock().remove(id);
    }

    /// The session id in a request's `Cookie` headers, if one is valid.
    pub fn from_headers(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        cookie_values(headers).find(|id| self.valid(id))
    }
}

/// Every value of the session cookie in `headers` (a browser may send several `Cookie`
/// headers, and one header holds `a=1; b=2`).
fn cookie_values(headers: &axum::http::HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.trim().to_string())
        })
}

/// The `Set-Cookie` value that opens session `id`: not readable by scripts, never sent by
/// another site's request, for every path of the node (the page calls `/v1/...`).
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", LIFETIME.as_secs())
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header::COOKIE as COOKIE_HEADER};

    #[test]
    fn a_session_is_valid_until_closed_and_found_among_other_cookies() {
        let s = Sessions::default();
        let id = s.open();
        assert_eq!(id.len(), 64);
        assert_ne!(id, s.open(), "two logins get two ids");
        let mut h = HeaderMap::new();
        h.append(COOKIE_HEADER, HeaderValue::from_static("theme=dark"));
        h.append(
            COOKIE_HEADER,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={id}; c=d")).unwrap(),
        );
        assert_eq!(s.from_headers(&h), Some(id.clone()));
        s.close(&id);
        assert_eq!(s.from_headers(&h), None);
        assert!(!s.valid("not-a-session"));
    }
}
