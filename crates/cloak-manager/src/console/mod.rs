//! The web console at `/`: server-rendered pages over the same domain functions and role checks
//! as the API (each action requires the role of the API operation it mirrors, found in
//! `routes::ROUTES` by operation id), with a cookie session and a CSRF token on every change.
//!
//! The session cookie holds an ordinary session token (`auth::login_password` opened it, so it
//! is throttled and audited like an API login); it is HttpOnly, SameSite=Strict, Secure under
//! TLS, and expires with the session. The CSRF token of a session is an HMAC of the session
//! token, so it needs no storage and is worthless without the cookie. Scripts and styles are
//! files served from the binary; the Content-Security-Policy allows nothing inline.

mod actions;
mod admin;
mod convert;
pub mod html;
mod pages;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use subtle::ConstantTimeEq;

use crate::auth::{self, Principal};
use crate::error::Error;
use crate::routes::{Access, ROUTES};
use crate::State;
use cloak_api::Role;
use html::e;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cloak_session";
/// Name of the cookie that pairs with the sign-in form's token (there is no session yet).
const LOGIN_COOKIE: &str = "cloak_login";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (merged into the service's router).
pub fn router() -> Router<State> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/apps", get(pages::apps).post(actions::create_app))
        .route("/apps/new", get(pages::app_new))
        .route("/apps/{app_id}", get(pages::app).post(actions::update_app))
        .route("/builds", get(pages::builds))
        .route("/builds/{build_id}", get(pages::build))
        .route("/builds/{build_id}/revoke", post(actions::revoke_build))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{task_id}/approve", post(actions::approve))
        .route("/tasks/{task_id}/deny", post(actions::deny))
        .route(
            "/registries",
            get(pages::registries).post(actions::create_registry),
        )
        .route("/registries/{registry_id}", post(actions::update_registry))
        .route(
            "/registries/{registry_id}/delete",
            post(actions::delete_registry),
        )
        .route("/registries/match", get(pages::registry_match))
        .route("/certificates", get(pages::certificates))
        .route("/audit", get(pages::audit))
        .route("/audit/export", get(pages::audit_export))
        .route("/users", get(pages::users).post(actions::create_user))
        .route("/users/{user_id}", post(actions::update_user))
        .route("/api-keys", post(actions::create_key))
        .route("/api-keys/{key_id}/revoke", post(actions::revoke_key))
        .route("/convert", get(convert::convert).post(convert::submit))
        .route("/jobs/{job_id}", get(convert::job))
        .route("/jobs/{job_id}/state", get(convert::job_state))
        .route("/jobs/{job_id}/cancel", post(convert::cancel))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/console.js"),
    )
        .into_response()
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The CSRF token of a session (or sign-in) secret.
fn csrf_for(secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(b"cloak console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether cookies must be `Secure` (the manager serves TLS unless told not to).
fn secure(state: &State) -> &'static str {
    if state.config.insecure_http {
        ""
    } else {
        "; Secure"
    }
}

fn set_cookie(state: &State, name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        secure(state)
    ))
    .expect("cookie text is ASCII")
}

/// A signed-in user of the console.
#[derive(Debug, Clone)]
pub struct Session {
    pub p: Principal,
    pub csrf: String,
}

impl Session {
    /// Refuses unless the caller has the role the API operation `op_id` requires.
    pub fn may(&self, op_id: &str) -> Result<(), Error> {
        self.p.require(required_role(op_id))
    }

    /// Whether the caller has the role of the API operation `op_id` (to show its controls).
    pub fn can(&self, op_id: &str) -> bool {
        self.may(op_id).is_ok()
    }
}

/// The role the API route `op_id` requires.
pub fn required_role(op_id: &str) -> Role {
    match ROUTES.iter().find(|r| r.op_id == op_id).map(|r| r.access) {
        Some(Access::Public | Access::Reader) => Role::Reader,
        Some(Access::Writer) => Role::Writer,
        // An unknown operation id is a bug of the console: refuse rather than allow.
        Some(Access::Manager) | None => Role::Manager,
    }
}

fn to_login(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if parts.method == http::Method::GET {
        Redirect::to(&format!("/login?next={}", html::q(next))).into_response()
    } else {
        plain_page(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "<p>Your session has ended. <a href=\"/login\">Sign in</a> again.</p>",
        )
    }
}

impl FromRequestParts<State> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Response> {
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|t| !t.is_empty() && !t.starts_with(auth::API_KEY_PREFIX))
            .map(str::to_string)
            .ok_or_else(|| to_login(parts))?;
        let p = match auth::authenticate_token(state, &token).await {
            Ok(p) => p,
            Err(Error::Unauthenticated(_)) => return Err(to_login(parts)),
            Err(err) => return Err(error_response(&err)),
        };
        Ok(Session {
            csrf: csrf_for(&token),
            p,
        })
    }
}

/// The fields of a submitted form.
#[derive(Default)]
pub struct Fields(pub Vec<(String, String)>);

/// Masks password fields (sign-in, users, registry credentials, a conversion's one-off
/// credentials), so a form can never reach a log with `{:?}`.
impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if k.contains("password") || k == "csrf" {
                    "*****"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            }))
            .finish()
    }
}

impl Fields {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name).trim().to_string()).filter(|s| !s.is_empty())
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name) == "on"
    }

    async fn parse(state: &State, body: Body) -> Result<Fields, Error> {
        let bytes = crate::http::body_bytes(state, body).await?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(Fields)
            .map_err(|e| Error::InvalidBody(format!("the form could not be read: {e}")))
    }

    /// The values to show again (never passwords).
    pub fn refill(&self, form: &str, err: &Error) -> html::Refill {
        html::Refill {
            values: self
                .0
                .iter()
                .filter(|(k, _)| k != "csrf" && !k.contains("password"))
                .cloned()
                .collect(),
            problem: Some(std::sync::Arc::new(html::Problem::from_error(err))),
            form: form.into(),
        }
    }
}

/// A form submission of a signed-in user whose CSRF token matched: every console route that
/// changes something takes this, so none can skip the check.
#[derive(Debug)]
pub struct Post {
    pub s: Session,
    pub f: Fields,
}

impl FromRequest<State> for Post {
    type Rejection = Response;

    async fn from_request(req: Request, state: &State) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let s = Session::from_request_parts(&mut parts, state).await?;
        let f = Fields::parse(state, body)
            .await
            .map_err(|e| error_response(&e))?;
        if !same(f.get("csrf"), &s.csrf) {
            tracing::warn!(user = %s.p.actor.name, "console form refused: CSRF token missing or wrong");
            return Err(error_response(&Error::Forbidden(
                "the form's CSRF token is missing or wrong: reload the page and submit again"
                    .into(),
            )));
        }
        Ok(Post { s, f })
    }
}

/// A page for an error (status and the API's `{type, detail}`).
pub fn error_response(err: &Error) -> Response {
    let p = html::Problem::from_error(err);
    let body = format!(
        r#"<p class="error" role="alert"><strong>{}</strong>: {}</p><p><a href="/">Back to the overview</a></p>"#,
        e(&p.kind),
        e(&p.detail)
    );
    if err.status().is_server_error() {
        tracing::error!(error = %err, "console request failed");
    }
    plain_page(err.status(), "Error", &body)
}

fn head(title: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · cloak</title><link rel="stylesheet" href="/assets/console.css"><script src="/assets/console.js" defer></script></head>"#,
        e(title)
    )
}

/// A page without navigation (sign-in, errors before a session).
pub fn plain_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r##"{}<body><a class="skip" href="#main">Skip to content</a><header class="top"><span class="brand">cloak</span></header><main id="main"><h1>{}</h1>{body}</main></body></html>"##,
        head(title),
        e(title)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The sections of the navigation: (path, label, operation whose role is needed to see it).
const NAV: &[(&str, &str, &str)] = &[
    ("/", "Overview", "getAllBuilds"),
    ("/apps", "Applications", "getAllApps"),
    ("/builds", "Builds", "getAllBuilds"),
    ("/tasks", "Tasks", "getAllTasks"),
    ("/convert", "Convert", "getAllApps"),
    ("/registries", "Registry credentials", "getAllRegistries"),
    ("/certificates", "Certificates", "getCertificate"),
    ("/audit", "Audit", "getAuditLog"),
    ("/users", "Users and API keys", "listApiKeys"),
];

/// A page of a signed-in user: navigation (by role), who is signed in, sign-out.
pub fn page(s: &Session, status: StatusCode, active: &str, title: &str, body: &str) -> Response {
    let mut nav = String::new();
    for (path, label, op) in NAV {
        if !s.can(op) {
            continue;
        }
        let current = if *path == active {
            r#" aria-current="page""#
        } else {
            ""
        };
        nav.push_str(&format!(
            r#"<li><a href="{path}"{current}>{label}</a></li>"#
        ));
    }
    let html = format!(
        r##"{head}<body><a class="skip" href="#main">Skip to content</a><header class="top"><span class="brand">cloak</span><nav aria-label="sections"><ul>{nav}</ul></nav><form class="signout" method="post" action="/logout">{csrf}<span class="who">{user} ({role})</span> <button type="submit">Sign out</button></form></header><main id="main"><h1>{t}</h1>{body}</main><div id="live" class="sr-only" aria-live="polite"></div></body></html>"##,
        head = head(title),
        csrf = html::csrf(&s.csrf),
        user = e(&s.p.actor.name),
        role = s.p.role.as_str(),
        t = e(title),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// A 303 to `path` after a change (so reloading does not submit again).
pub fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Where to go after signing in: only a path of this site. Browsers drop tabs and newlines
/// and read a backslash as `/` when they parse a URL, so `/\t/evil.example` would leave the site: any
/// control character, whitespace or backslash, and a second leading `/`, make it `/`.
fn local_path(next: &str) -> &str {
    let mut chars = next.chars();
    let safe = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/'))
        && !next
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if safe {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        for ok in ["/", "/builds?status=PENDING", "/tasks/abc"] {
            assert_eq!(local_path(ok), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/a\\b",
            "https://evil.example",
            "evil.example",
            "",
            "/\r\n/x",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn every_nav_and_action_operation_exists_in_the_route_table() {
        for (_, _, op) in NAV {
            assert!(ROUTES.iter().any(|r| r.op_id == *op), "{op}");
        }
        assert_eq!(required_role("UpdateTask"), Role::Writer);
        assert_eq!(required_role("no such operation"), Role::Manager);
    }

    #[test]
    fn csrf_tokens_depend_on_the_session_and_compare_exactly() {
        let a = csrf_for("session-a");
        assert_eq!(a, csrf_for("session-a"));
        assert_ne!(a, csrf_for("session-b"));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, ""));
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(
            local_path("/builds?status=PENDING"),
            "/builds?status=PENDING"
        );
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x_cloak_session=a; cloak_session=b".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("b"));
    }
}
