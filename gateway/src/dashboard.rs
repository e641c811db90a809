//! The web dashboard: its files (`gateway/dashboard/`, embedded in the binary: a deployed
//! gateway needs nothing else, and nothing comes from a CDN) at `/dashboard/`, and its sign-in.
//!
//! Sign-in (`POST /dashboard/api/session`) takes what the auth mode takes (user and password
//! under `http_basic`; a token under `token`; a token, or user, password and project under
//! `keystone`, exchanged with Keystone for a token as Horizon does), checks it exactly as a
//! request's credentials are checked, and stores a session in etcd
//! (`ferric_cluster::sessions`): any gateway serves it, and a gateway restart signs nobody out.
//! The browser gets the session id in an HttpOnly, `SameSite=Strict` cookie, never in a URL,
//! and never sees the credentials again; the page keeps only the session's CSRF token in memory.
//!
//! A request with the cookie and no credentials of its own is the session's caller
//! ([`session_caller`]): the same roles and policies as any request, and the sign-in is
//! re-checked on every use as the credentials would be judged now (`Auth::recheck`: a user
//! removed from the password file, a token from the token file, an expired or revoked Keystone
//! token ends the session; the session keeps a token's digest, or the Keystone token). Every mutating request
//! must also carry `X-CSRF-Token` (403 without it), and a console websocket the subprotocol
//! `ferric.csrf.<token>` (cross-site websocket hijacking is a CSRF too: browsers send cookies
//! with any page's websocket).
//!
//! The pages are served with a strict Content-Security-Policy (scripts only from here), as a
//! second line behind the page building its DOM from text only.

use crate::auth::{Auth, Caller, Role};
use crate::error::ApiError;
use crate::request;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferric_model::{now_ms, SessionRecord};
use rust_embed::RustEmbed;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(RustEmbed)]
#[folder = "dashboard/"]
struct Assets;

/// The session cookie's name.
pub const COOKIE: &str = "ferric_session";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The websocket subprotocol that carries the CSRF token.
pub const CSRF_SUBPROTOCOL_PREFIX: &str = "ferric.csrf.";
/// How long a session lasts (a Keystone session no longer than its token).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a gateway trusts what it read of a session (a sign-out on another gateway takes
/// this long to reach this one).
const CACHE_FOR: Duration = Duration::from_secs(5);
/// Sessions a gateway keeps in its cache at most.
const CACHE_MAX: usize = 10_000;
/// A sign-in body is small.
const SIGNIN_LIMIT: usize = 16 * 1024;

/// What this gateway read of sessions lately, by digest (None: no such session).
#[derive(Default)]
pub struct SessionCache(Mutex<HashMap<String, (Instant, Option<SessionRecord>)>>);

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::NotFound(format!("No dashboard file {path}")).into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(file.data.into_owned()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load: a new gateway build serves its own files at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `/dashboard` and `/dashboard/`.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `/dashboard/{*path}`.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path.is_empty() {
        return serve("index.html", &headers);
    }
    serve(&path, &headers)
}

/// `GET /dashboard/api/config`: what the sign-in form must ask for.
pub async fn config(State(state): State<AppState>) -> Response {
    request::json(
        StatusCode::OK,
        &json!({"auth": state.auth.mode(), "version": env!("CARGO_PKG_VERSION")}),
    )
}

fn digest(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session id in the request's cookie, if any.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn role_of(s: &str) -> Role {
    match s {
        "admin" => Role::Admin,
        "manager" => Role::Manager,
        "member" => Role::Member,
        _ => Role::Reader,
    }
}

fn session_doc(rec: &SessionRecord) -> Value {
    json!({
        "user": rec.user,
        "role": rec.role,
        "project": rec.project,
        "csrf": rec.csrf,
        "expires_at": crate::node_json::iso8601(rec.expires_at_ms),
    })
}

/// The live session of the request's cookie (cached for [`CACHE_FOR`]).
async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<SessionRecord>, ApiError> {
    let Some(id) = cookie(headers) else {
        return Ok(None);
    };
    let key = digest(&id);
    if let Some((at, rec)) = state.sessions.0.lock().unwrap().get(&key) {
        if at.elapsed() < CACHE_FOR {
            return Ok(rec.clone().filter(|r| r.expires_at_ms > now_ms()));
        }
    }
    let rec = state.cluster.session(&key).await?;
    let mut cache = state.sessions.0.lock().unwrap();
    if cache.len() >= CACHE_MAX {
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, (Instant::now(), rec.clone()));
    Ok(rec.filter(|r| r.expires_at_ms > now_ms()))
}

fn signed_out() -> ApiError {
    ApiError::Unauthorized {
        msg: "Not signed in to the dashboard (or the session ended).".into(),
        challenge: "Cookie",
    }
}

/// Whether a request carries credentials of its own (which then decide alone).
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-auth-token")
}

fn same(a: &str, b: &str) -> bool {
    // Compared by digest: no early exit on the first differing byte.
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// The caller of a request authenticated by a dashboard session: None when the request has
/// its own credentials or no session cookie (ordinary authentication then applies). A
/// mutating request must carry the session's CSRF token in `X-CSRF-Token`, a websocket
/// upgrade in a `ferric.csrf.<token>` subprotocol (removed here, so it is never selected).
pub async fn session_caller(
    state: &AppState,
    method: &Method,
    headers: &mut HeaderMap,
    websocket: bool,
) -> Option<Result<Caller, ApiError>> {
    if matches!(state.auth, Auth::NoAuth) || has_credentials(headers) {
        return None;
    }
    cookie(headers)?;
    Some(caller_of_session(state, method, headers, websocket).await)
}

async fn caller_of_session(
    state: &AppState,
    method: &Method,
    headers: &mut HeaderMap,
    websocket: bool,
) -> Result<Caller, ApiError> {
    let rec = current(state, headers).await?.ok_or_else(signed_out)?;
    let offered = if websocket {
        take_csrf_subprotocol(headers)
    } else {
        headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !websocket;
    if !safe && !offered.is_some_and(|t| same(&t, &rec.csrf)) {
        return Err(ApiError::Forbidden(
            "The dashboard session's CSRF token is missing or wrong.".into(),
        ));
    }
    // The sign-in must still hold as the credentials would be judged now (a user taken out of
    // the file, an expired or revoked Keystone token end the session).
    state
        .auth
        .recheck(&rec.user, role_of(&rec.role), &rec.proof)
        .await
}

/// Removes `ferric.csrf.<token>` from the offered subprotocols and returns the token.
fn take_csrf_subprotocol(headers: &mut HeaderMap) -> Option<String> {
    let mut token = None;
    let mut others = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for proto in value.to_str().unwrap_or("").split(',').map(str::trim) {
            match proto.strip_prefix(CSRF_SUBPROTOCOL_PREFIX) {
                Some(t) => token = Some(t.to_string()),
                None if proto.is_empty() => {}
                None => others.push(proto.to_string()),
            }
        }
    }
    token.as_ref()?;
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !others.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&others.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    token
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn text<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The headers a request with these sign-in credentials would carry.
async fn credentials(state: &AppState, body: &Value) -> Result<HeaderMap, ApiError> {
    let mut h = HeaderMap::new();
    let bad = |m: &str| ApiError::BadRequest(m.to_string());
    let put = |h: &mut HeaderMap, name: header::HeaderName, v: String| -> Result<(), ApiError> {
        let v = HeaderValue::from_str(&v)
            .map_err(|_| ApiError::BadRequest("Credentials with invalid characters.".into()))?;
        h.insert(name, v);
        Ok(())
    };
    match &state.auth {
        Auth::NoAuth => {}
        Auth::Basic { .. } => {
            let (Some(user), Some(password)) = (text(body, "username"), body["password"].as_str())
            else {
                return Err(bad("Sign in with \"username\" and \"password\"."));
            };
            put(
                &mut h,
                header::AUTHORIZATION,
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            )?;
        }
        Auth::Token { .. } => {
            let token = text(body, "token").ok_or_else(|| bad("Sign in with a \"token\"."))?;
            put(&mut h, header::AUTHORIZATION, format!("Bearer {token}"))?;
        }
        Auth::Keystone { validator, .. } => {
            let token = match text(body, "token") {
                Some(t) => t.to_string(),
                None => {
                    let (Some(user), Some(password), Some(project)) = (
                        text(body, "username"),
                        body["password"].as_str(),
                        text(body, "project"),
                    ) else {
                        return Err(bad(
                            "Sign in with a \"token\", or \"username\", \"password\" and \"project\".",
                        ));
                    };
                    let domain = text(body, "domain").unwrap_or("Default");
                    let config = ferric_keystone::KeystoneConfig {
                        url: validator.url().to_string(),
                        user: user.to_string(),
                        password: ferric_keystone::Secret::new(password),
                        user_domain: domain.to_string(),
                        project: project.to_string(),
                        project_domain: domain.to_string(),
                    };
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .map_err(|e| ApiError::Internal(format!("HTTP client: {e}")))?;
                    ferric_keystone::ServiceToken::new(config)
                        .get(&client, "dashboard sign-in")
                        .await
                        .map_err(|e| match e {
                            ferric_keystone::KeystoneError::Refused { .. } => {
                                ApiError::Unauthorized {
                                    msg: "Keystone refused these credentials.".into(),
                                    challenge: "Cookie",
                                }
                            }
                            other => {
                                ApiError::Unavailable(format!("Keystone cannot be asked: {other}"))
                            }
                        })?
                        .expose()
                        .to_string()
                }
            };
            put(
                &mut h,
                header::HeaderName::from_static("x-auth-token"),
                token,
            )?;
        }
    }
    Ok(h)
}

fn set_cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = state
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let v = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /dashboard/api/session`: signs in.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if matches!(state.auth, Auth::NoAuth) {
        return Ok(request::json(StatusCode::OK, &noauth_doc()));
    }
    let body = request::json_body(body, &headers, SIGNIN_LIMIT).await?;
    let presented = credentials(&state, &body).await?;
    let caller = state.auth.authenticate(&presented).await?;
    let id = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now = now_ms();
    let rec = SessionRecord {
        user: caller.name.clone(),
        role: caller.role.as_str().to_string(),
        project: caller.project.clone(),
        roles: caller.roles.clone(),
        csrf: uuid::Uuid::new_v4().simple().to_string(),
        created_at_ms: now,
        expires_at_ms: now + LIFETIME.as_millis() as u64,
        proof: state.auth.proof_of(&presented),
    };
    state
        .cluster
        .put_session(&digest(&id), &rec, LIFETIME.as_secs() as i64)
        .await?;
    tracing::info!(user = %rec.user, role = %rec.role, "dashboard sign-in");
    let mut resp = request::json(StatusCode::OK, &session_doc(&rec));
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, &id, LIFETIME.as_secs()),
    );
    Ok(resp)
}

fn noauth_doc() -> Value {
    json!({"user": "noauth", "role": "admin", "project": null, "csrf": null, "expires_at": null})
}

/// `GET /dashboard/api/session`: who is signed in (401 when nobody).
pub async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if matches!(state.auth, Auth::NoAuth) {
        return Ok(request::json(StatusCode::OK, &noauth_doc()));
    }
    let rec = current(&state, &headers).await?.ok_or_else(signed_out)?;
    let now = state
        .auth
        .recheck(&rec.user, role_of(&rec.role), &rec.proof)
        .await?;
    let mut doc = session_doc(&rec);
    doc["role"] = json!(now.role.as_str());
    Ok(request::json(StatusCode::OK, &doc))
}

/// `DELETE /dashboard/api/session`: signs out (with the CSRF token, like every change).
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if matches!(state.auth, Auth::NoAuth) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let Some(id) = cookie(&headers) else {
        return Err(signed_out());
    };
    let rec = current(&state, &headers).await?.ok_or_else(signed_out)?;
    let offered = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !offered.is_some_and(|t| same(t, &rec.csrf)) {
        return Err(ApiError::Forbidden(
            "The dashboard session's CSRF token is missing or wrong.".into(),
        ));
    }
    let key = digest(&id);
    state.cluster.delete_session(&key).await?;
    state
        .sessions
        .0
        .lock()
        .unwrap()
        .insert(key, (Instant::now(), None));
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn the_cookie_is_found_among_others_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferric_session=abc; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("ferric_session="));
        assert_eq!(cookie(&h), None);
        let long = format!("ferric_session={}", "x".repeat(200));
        h.insert(header::COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn the_csrf_subprotocol_is_taken_out_and_the_console_one_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("ferric.console, ferric.csrf.t0k"),
        );
        assert_eq!(take_csrf_subprotocol(&mut h).as_deref(), Some("t0k"));
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "ferric.console");
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("ferric.console"),
        );
        assert_eq!(take_csrf_subprotocol(&mut h), None);
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "ferric.console");
    }

    #[test]
    fn every_page_file_is_embedded_with_a_type() {
        let index = Assets::get("index.html").expect("index.html is embedded");
        assert!(!index.data.is_empty());
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/xterm/xterm.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert!(Assets::get("vendor/xterm/xterm.mjs").is_some());
        assert!(Assets::get("vendor/xterm/LICENSE").is_some());
    }
}
