//! The web console: pages served at `/ui/` on the node's TCP listener, behind a login with the
//! node's token.
//!
//! The pages are static files built into the binary ([`assets`]); what they show comes from
//! the node's typed API (`/v1/...`), which they call with the session cookie that the login
//! opened ([`session`]); the API's middleware ([`crate::api::auth::require_token`]) accepts that
//! cookie as it accepts the token. There is no API of the console's own.

pub mod assets;
pub mod routes;
pub mod session;

pub use routes::router;
pub use session::Sessions;
