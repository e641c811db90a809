//! A stand-in compute service (Nova's `os-server-external-events`) with its own Keystone, on a
//! loopback port, for tests and benchmarks of event delivery.
//!
//! It checks every request as Nova would: a token that this Keystone issued and that has not
//! expired (else 401), the `compute 2.76` microversion, and the body against Nova's schema for
//! external events (`additionalProperties: false`, `events` with at least one item, `name` from
//! the enum, `server_uuid` a uuid, `tag` at most 255 characters; a `power-update` needs a tag of
//! `POWER_ON` or `POWER_OFF`). Ferric must send only `name`, `server_uuid` and `tag`, so any
//! other field is recorded as a violation too. It answers like Nova: 200 with a `code` per event
//! when all were accepted, 207 when some were not (404 for an unknown instance), 404
//! `itemNotFound` when none was. It keeps the power state each instance was last told, and can
//! be told to be down, fail with 500, answer garbage, hang, be slow, or not know an instance.
//! `/hook` is a generic webhook receiver. Everything is recorded.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the stand-in answers the events endpoint (and the webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Not listening (connections refused; a kept-alive connection gets 503 and is closed).
    Down,
    /// 500 for every request.
    Fail500,
    /// 200 with a body that is not Nova's answer.
    Garbage,
    /// Never answers (until the mode changes).
    Hang,
}

/// One request to the events endpoint or the webhook.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: &'static str,
    pub status: u16,
    pub body: Value,
    /// Per event: (server_uuid or node, tag or power_state, code), as answered.
    pub results: Vec<Value>,
}

struct Inner {
    mode: Mode,
    delay: Duration,
    unknown: HashSet<String>,
    token_ttl: Duration,
    tokens: HashMap<String, Instant>,
    issued: u64,
    keystone_refusals: u64,
    unauthorized: u64,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    /// instance -> the last tag accepted.
    power: HashMap<String, String>,
}

pub struct Credentials {
    pub user: String,
    pub password: String,
    pub domain: String,
    pub project: String,
}

struct Shared {
    inner: Mutex<Inner>,
    creds: Credentials,
    mode_tx: tokio::sync::watch::Sender<Mode>,
}

/// The running stand-in. Dropping it stops it.
pub struct ComputeService {
    shared: Arc<Shared>,
    pub port: u16,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ComputeService {
    fn drop(&mut self) {
        if let Some(s) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.abort();
        }
    }
}

const EVENT_NAMES: &[&str] = &[
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
];

impl ComputeService {
    /// Starts on a free loopback port; tokens live `token_ttl`.
    pub async fn start(creds: Credentials, token_ttl: Duration) -> ComputeService {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                mode: Mode::Up,
                delay: Duration::ZERO,
                unknown: HashSet::new(),
                token_ttl,
                tokens: HashMap::new(),
                issued: 0,
                keystone_refusals: 0,
                unauthorized: 0,
                requests: Vec::new(),
                violations: Vec::new(),
                power: HashMap::new(),
            }),
            creds,
            mode_tx: tokio::sync::watch::Sender::new(Mode::Up),
        });
        let svc = ComputeService {
            shared,
            port,
            server: Mutex::new(None),
        };
        svc.serve(listener);
        svc
    }

    fn serve(&self, listener: TcpListener) {
        let app = Router::new()
            .route("/identity/v3/auth/tokens", post(keystone))
            .route("/compute/v2.1/os-server-external-events", post(events))
            .route("/hook", post(hook))
            .with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keystone_url(&self) -> String {
        format!("http://127.0.0.1:{}/identity", self.port)
    }
    pub fn compute_url(&self) -> String {
        format!("http://127.0.0.1:{}/compute/v2.1", self.port)
    }
    pub fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Changes how it answers. `Down` stops listening; leaving `Down` listens again on the same
    /// port.
    pub async fn set_mode(&self, mode: Mode) {
        let was = std::mem::replace(&mut self.lock().mode, mode);
        self.shared.mode_tx.send_replace(mode);
        if mode == Mode::Down && was != Mode::Down {
            let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(s) = server {
                s.abort();
                let _ = s.await;
            }
        } else if was == Mode::Down && mode != Mode::Down {
            let deadline = Instant::now() + Duration::from_secs(10);
            let listener = loop {
                match TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("cannot listen on port {} again: {e}", self.port),
                }
            };
            self.serve(listener);
        }
    }

    /// Every request takes this long to answer (a slow compute service).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Whether Nova knows this instance (unknown: 404 for its events).
    pub fn set_unknown(&self, instance: &str, unknown: bool) {
        let mut i = self.lock();
        if unknown {
            i.unknown.insert(instance.to_string());
        } else {
            i.unknown.remove(instance);
        }
    }

    /// Every token issued so far stops working (a Keystone that revoked them early).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn tokens_issued(&self) -> u64 {
        self.lock().issued
    }
    pub fn keystone_refusals(&self) -> u64 {
        self.lock().keystone_refusals
    }
    /// Requests answered 401 (no or a bad token).
    pub fn unauthorized(&self) -> u64 {
        self.lock().unauthorized
    }
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Events Nova accepted (code 200), in order of receipt: (server_uuid, tag).
    pub fn accepted(&self) -> Vec<(String, String)> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == "compute")
            .flat_map(|r| r.results.iter())
            .filter(|e| e["code"] == 200)
            .map(|e| {
                (
                    e["server_uuid"].as_str().unwrap_or("").to_string(),
                    e["tag"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Events answered 404 (unknown instance), in order of receipt.
    pub fn not_found(&self) -> Vec<(String, String)> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == "compute")
            .flat_map(|r| r.results.iter())
            .filter(|e| e["code"] == 404)
            .map(|e| {
                (
                    e["server_uuid"].as_str().unwrap_or("").to_string(),
                    e["tag"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Events the webhook accepted, in order of receipt.
    pub fn hook_events(&self) -> Vec<Value> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == "hook" && r.status < 300)
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The power state Nova was last told for an instance (`POWER_ON` / `POWER_OFF`).
    pub fn power_of(&self, instance: &str) -> Option<String> {
        self.lock().power.get(instance).cloned()
    }

    /// Sets what Nova believes (as if it had powered the instance itself).
    pub fn believe(&self, instance: &str, tag: &str) {
        self.lock()
            .power
            .insert(instance.to_string(), tag.to_string());
    }
}

type St = State<Arc<Shared>>;

async fn keystone(State(s): St, body: Bytes) -> Response {
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pw = &doc["auth"]["identity"]["password"]["user"];
    let scope = &doc["auth"]["scope"]["project"];
    let c = &s.creds;
    let methods_ok = doc["auth"]["identity"]["methods"] == json!(["password"]);
    let ok = methods_ok
        && pw["name"] == c.user.as_str()
        && pw["password"] == c.password.as_str()
        && pw["domain"]["name"] == c.domain.as_str()
        && scope["name"] == c.project.as_str()
        && scope["domain"]["name"] == c.domain.as_str();
    let mut i = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    if !ok {
        i.keystone_refusals += 1;
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})),
        )
            .into_response();
    }
    i.issued += 1;
    let token = format!(
        "gAAAA-test-token-{}-{}",
        i.issued,
        crate::ports::random_u64()
    );
    let ttl = i.token_ttl;
    i.tokens.insert(token.clone(), Instant::now() + ttl);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let body = json!({"token": {
        "methods": ["password"],
        "issued_at": iso8601(now),
        "expires_at": iso8601(now + ttl),
        "user": {"name": c.user, "domain": {"name": c.domain}},
        "project": {"name": c.project, "domain": {"name": c.domain}},
    }});
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("X-Subject-Token", token.parse().expect("a header value"));
    resp
}

/// Waits out the configured delay and hangs while in `Hang`; None when the stand-in is down
/// (answer 503 and close the kept-alive connection).
async fn gate(s: &Shared) -> Option<Mode> {
    let delay = s.inner.lock().unwrap_or_else(|e| e.into_inner()).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut rx = s.mode_tx.subscribe();
    loop {
        let mode = *rx.borrow_and_update();
        match mode {
            Mode::Hang => {
                if rx.changed().await.is_err() {
                    return None;
                }
            }
            Mode::Down => return None,
            m => return Some(m),
        }
    }
}

fn down() -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    r.headers_mut()
        .insert("Connection", "close".parse().expect("a header value"));
    r
}

async fn events(State(s): St, headers: HeaderMap, body: Bytes) -> Response {
    let Some(mode) = gate(&s).await else {
        return down();
    };
    let mut i = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut record = Recorded {
        at: Instant::now(),
        path: "compute",
        status: 0,
        body: doc.clone(),
        results: Vec::new(),
    };
    let answer = |i: &mut Inner, mut record: Recorded, status: StatusCode, body: Value| {
        record.status = status.as_u16();
        i.requests.push(record);
        (status, axum::Json(body)).into_response()
    };
    // Keystone middleware first, as in Nova.
    let token = headers
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = i.tokens.get(token).is_some_and(|exp| *exp > Instant::now());
    if !valid {
        i.unauthorized += 1;
        return answer(
            &mut i,
            record,
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}),
        );
    }
    match mode {
        Mode::Fail500 => {
            return answer(
                &mut i,
                record,
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"computeFault": {"code": 500, "message": "Unexpected API Error."}}),
            )
        }
        Mode::Garbage => {
            record.status = 200;
            i.requests.push(record);
            return (StatusCode::OK, "<html>\u{0}garbage").into_response();
        }
        _ => {}
    }
    let version = headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if version.trim() != "compute 2.76" {
        i.violations.push(format!(
            "microversion header {version:?}, not \"compute 2.76\""
        ));
        return answer(
            &mut i,
            record,
            StatusCode::BAD_REQUEST,
            json!({"badRequest": {"code": 400, "message": "power-update needs microversion 2.76"}}),
        );
    }
    if let Err(why) = validate(&doc) {
        i.violations.push(format!("{why}: {doc}"));
        return answer(
            &mut i,
            record,
            StatusCode::BAD_REQUEST,
            json!({"badRequest": {"code": 400, "message": format!("Invalid input for field/attribute events. {why}")}}),
        );
    }
    let mut result = StatusCode::OK;
    let mut accepted = 0;
    let mut out = Vec::new();
    for ev in doc["events"].as_array().into_iter().flatten() {
        let mut e = ev.clone();
        let uuid = ev["server_uuid"].as_str().unwrap_or("").to_string();
        if i.unknown.contains(&uuid) {
            e["status"] = json!("failed");
            e["code"] = json!(404);
            result = StatusCode::MULTI_STATUS;
        } else {
            e["status"] = json!("completed");
            e["code"] = json!(200);
            accepted += 1;
            if let Some(tag) = ev["tag"].as_str() {
                i.power.insert(uuid, tag.to_string());
            }
        }
        out.push(e);
    }
    record.results = out.clone();
    if accepted == 0 {
        return answer(
            &mut i,
            record,
            StatusCode::NOT_FOUND,
            json!({"itemNotFound": {"code": 404, "message": "No instances found for any event"}}),
        );
    }
    answer(&mut i, record, result, json!({"events": out}))
}

/// Nova's schema for `POST /os-server-external-events` at 2.76, plus what Ferric promises:
/// only `name`, `server_uuid` and `tag`, and a power-update's tag is POWER_ON or POWER_OFF.
pub fn validate(doc: &Value) -> Result<(), String> {
    let top = doc.as_object().ok_or("the body is not an object")?;
    if let Some(k) = top.keys().find(|k| *k != "events") {
        return Err(format!("additional property {k:?} at the top"));
    }
    let events = top
        .get("events")
        .ok_or("'events' is a required property")?
        .as_array()
        .ok_or("'events' is not an array")?;
    if events.is_empty() {
        return Err("'events' has fewer than 1 item".into());
    }
    for ev in events {
        let obj = ev.as_object().ok_or("an event is not an object")?;
        for k in obj.keys() {
            if !["server_uuid", "name", "status", "tag"].contains(&k.as_str()) {
                return Err(format!("additional property {k:?} in an event"));
            }
            if !["server_uuid", "name", "tag"].contains(&k.as_str()) {
                return Err(format!(
                    "Ferric sends only name, server_uuid and tag, not {k:?}"
                ));
            }
        }
        let uuid = obj
            .get("server_uuid")
            .ok_or("'server_uuid' is a required property")?
            .as_str()
            .ok_or("'server_uuid' is not a string")?;
        if uuid::Uuid::parse_str(uuid).is_err() || uuid.len() != 36 {
            return Err(format!("{uuid:?} is not a 'uuid'"));
        }
        let name = obj
            .get("name")
            .ok_or("'name' is a required property")?
            .as_str()
            .ok_or("'name' is not a string")?;
        if !EVENT_NAMES.contains(&name) {
            return Err(format!("{name:?} is not one of {EVENT_NAMES:?}"));
        }
        if let Some(tag) = obj.get("tag") {
            let tag = tag.as_str().ok_or("'tag' is not a string")?;
            if tag.len() > 255 {
                return Err("'tag' is longer than 255".into());
            }
        }
        if name == "power-update" {
            match obj.get("tag").and_then(Value::as_str) {
                Some("POWER_ON") | Some("POWER_OFF") => {}
                other => {
                    return Err(format!(
                        "power-update needs tag POWER_ON or POWER_OFF, not {other:?}"
                    ))
                }
            }
        }
    }
    Ok(())
}

async fn hook(State(s): St, body: Bytes) -> Response {
    let Some(mode) = gate(&s).await else {
        return down();
    };
    let mut i = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = match mode {
        Mode::Fail500 => StatusCode::INTERNAL_SERVER_ERROR,
        _ if doc["events"].as_array().is_none_or(|a| a.is_empty()) => {
            i.violations
                .push(format!("webhook body without events: {doc}"));
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::NO_CONTENT,
    };
    i.requests.push(Recorded {
        at: Instant::now(),
        path: "hook",
        status: status.as_u16(),
        body: doc,
        results: Vec::new(),
    });
    status.into_response()
}

/// `2026-01-02T03:04:05.000000Z`, as Keystone writes times.
fn iso8601(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_novas() {
        let u = "6f1c3a52-8d9e-4b8a-9a77-0e5f4c1d2b3a";
        let ok = json!({"events": [{"name": "power-update", "server_uuid": u, "tag": "POWER_ON"}]});
        assert_eq!(validate(&ok), Ok(()));
        for bad in [
            json!({"events": []}),
            json!({}),
            json!({"events": [{"name": "power-update", "server_uuid": u, "tag": "POWER_ON"}], "x": 1}),
            json!({"events": [{"name": "power-update", "server_uuid": u, "tag": "POWER_ON", "seq": 1}]}),
            json!({"events": [{"name": "power-update", "server_uuid": u, "tag": "POWER_ON", "status": "completed"}]}),
            json!({"events": [{"name": "power-update", "server_uuid": "nope", "tag": "POWER_ON"}]}),
            json!({"events": [{"name": "power-sync", "server_uuid": u, "tag": "POWER_ON"}]}),
            json!({"events": [{"name": "power-update", "server_uuid": u}]}),
            json!({"events": [{"name": "power-update", "server_uuid": u, "tag": "ON"}]}),
            json!({"events": [{"server_uuid": u, "tag": "POWER_ON"}]}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_look_like_keystones() {
        assert_eq!(iso8601(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            iso8601(Duration::from_millis(1_440_668_998_250)),
            "2015-08-27T09:49:58.250000Z"
        );
    }
}
