//! The console's routes: the login (the only page served without a session), the logout, and
//! the files of the console, each behind a session.

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{assets, session};
use crate::api::auth::Guard;

/// The console's routes, for the TCP listener (a browser cannot reach the Unix socket).
pub fn router(guard: Guard) -> Router {
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout).post(logout))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
        .with_state(guard)
}

/// What every answer of the console carries: nothing cached (a page is only as good as its
/// session), no script or style from anywhere but the node, no framing by another site.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn see_other(to: &'static str) -> Response {
    secured((StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response())
}

async fn index(guard: State<Guard>, headers: HeaderMap) -> Response {
    file(guard, headers, "").await
}

async fn asset(guard: State<Guard>, headers: HeaderMap, Path(path): Path<String>) -> Response {
    file(guard, headers, &path).await
}

/// A file of the console, or the login when the request has no session.
async fn file(State(guard): State<Guard>, headers: HeaderMap, path: &str) -> Response {
    if guard.sessions.from_headers(&headers).is_none() {
        return see_other("/ui/login");
    }
    match assets::find(path) {
        Some(a) => secured(([(CONTENT_TYPE, a.content_type)], a.body).into_response()),
        None => secured((StatusCode::NOT_FOUND, "no such page of the console").into_response()),
    }
}

async fn login_page(State(guard): State<Guard>, headers: HeaderMap) -> Response {
    if guard.sessions.from_headers(&headers).is_some() {
        return see_other("/ui/");
    }
    secured((StatusCode::OK, login_html(None)).into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// Checks the token with the API's own (constant-time) compare; a session for the right one,
/// the login again with a message and 401 for a wrong one.
async fn login(State(guard): State<Guard>, Form(form): Form<LoginForm>) -> Response {
    if !guard.token.matches(form.token.trim().as_bytes()) {
        let page = login_html(Some("That is not this node's API token."));
        return secured((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let id = guard.sessions.open();
    let mut r = see_other("/ui/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

async fn logout(State(guard): State<Guard>, headers: HeaderMap) -> Response {
    if let Some(id) = guard.sessions.from_headers(&headers) {
        guard.sessions.close(&id);
    }
    let mut r = see_other("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// The login page (HTML made here: it is the one page that needs no script).
fn login_html(error: Option<&str>) -> axum::response::Html<String> {
    let error = match error {
        Some(e) => format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(e)),
        None => String::new(),
    };
    axum::response::Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shadowcopy — log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style></head>
<body class="login"><main>
<h1>Shadowcopy</h1>
<form method="post" action="/ui/login" id="login-form">
<label for="token">The node's API token (<code>api.token</code> or <code>api.token_file</code>)</label>
<input type="password" name="token" id="token" autocomplete="current-password" autofocus required>
<button type="submit" id="login">Log in</button>
</form>
{error}
</main></body></html>
"#,
        style = assets::STYLE
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
