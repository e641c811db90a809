//! Serial consoles through the gateway: Ironic's `GET|PUT /v1/nodes/{node}/states/console`
//! (intent: `spec.console_enabled`, compare-and-swap like every other action) and Ferric's
//! console websocket `GET /v1/nodes/{node}/console/ws?mode=rw|ro`, a proxy to the console server
//! of whichever conductor holds the node now (`reservations/<uuid>` -> `conductors/<name>`'s
//! `console_address`, see `ferric_console`'s crate docs for that wire contract).
//!
//! The viewer's websocket outlives its conductor: when the upstream closes with 4001 (owner
//! changed) or 1001, its connection drops, or the gateway's copy shows that the conductor lost
//! the node (a frozen or partitioned owner says nothing on the connection), the viewer gets
//! `{"type":"reconnecting",...}`,
//! the gateway dials whichever conductor holds the node then (capped backoff, bounded by
//! [`crate::GatewayConfig::console_reconnect`]) and, once the new owner said hello,
//! `{"type":"reconnected","conductor":...}`; past the bound the viewer is closed with 1011.
//! Other close codes pass through unchanged.
//!
//! Browsers cannot set `Authorization` on a websocket, so under `token` or `http_basic` auth a
//! viewer may offer its credentials as a second subprotocol instead, next to [`SUBPROTOCOL`]:
//! `ferric.auth.` and the base64url (unpadded) of the token, or of `user:password` (see
//! [`crate::auth`]; never in the URL, which ends up in logs). Header credentials, when present,
//! decide alone. The upgrade selects `ferric.console` when it was offered, never the auth one:
//!
//! ```js
//! const b64url = (s) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
//! const ws = new WebSocket(url, ["ferric.console", "ferric.auth." + b64url(token)]);
//! ws.binaryType = "arraybuffer"; // console output arrives in binary frames
//! ```
//!
//! Invariants: what the gateway holds for one viewer is bounded ([`QUEUE_BYTES`] of output
//! waiting for the viewer, one message of input waiting for the conductor; a viewer that does
//! not keep up is closed with 4429), and a viewer message over [`MAX_VIEWER_MESSAGE`] is never
//! forwarded (1009).

use crate::auth::Role;
use crate::error::ApiError;
use crate::node_json::iso8601;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::{AppState, Caller};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_cluster::consoles::ConsoleRecord;
use ferric_model::NodeId;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::Instrument;

/// The websocket subprotocol of the console, selected when the viewer offers it (browsers fail
/// the handshake when they offered subprotocols and the server selects none).
pub const SUBPROTOCOL: &str = "ferric.console";

/// Default of [`crate::GatewayConfig::console_reconnect`]: a conductor's lease TTL (10 s) plus
/// the new owner taking the node and reopening its console, with room to spare.
pub const RECONNECT_DEFAULT: Duration = Duration::from_secs(30);
/// Largest message a viewer may send (the conductor's own limit); larger: 1009, not forwarded.
pub const MAX_VIEWER_MESSAGE: usize = 64 * 1024;
/// What the viewer's websocket reads at most: messages up to this size are read whole and
/// refused by us (a clean 1009); larger ones are cut off by the websocket layer.
const VIEWER_READ_LIMIT: usize = 1024 * 1024;
/// Largest message accepted from a conductor (its output frames are a few KiB).
const UPSTREAM_READ_LIMIT: usize = 1024 * 1024;
/// Output waiting for one viewer, in bytes and in messages; past either the viewer is too slow
/// and is closed with 4429.
pub const QUEUE_BYTES: usize = 1024 * 1024;
const QUEUE_MESSAGES: usize = 1024;
/// How long the first connection to the conductor may take before the upgrade (the console may
/// have been enabled a moment ago and not be open yet); capped by the reconnect bound.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// One attempt to reach a conductor's console server (TCP, upgrade, its hello).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How long keystrokes may wait for the conductor to take them before its connection counts as
/// lost.
const UPSTREAM_SEND: Duration = Duration::from_secs(10);
/// How long a close frame may take to go out, and the peer to answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a viewer closed for being too slow gets to read its close frame.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Close codes (the conductor's, see `ferric_console::hub`, plus the standard ones we send).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_OWNER_CHANGED: u16 = 4001;
pub const CLOSE_NOT_HERE: u16 = 4404;
pub const CLOSE_DISABLED: u16 = 4410;
pub const CLOSE_TOO_SLOW: u16 = 4429;

// ---------------------------------------------------------------------------------------------
// states/console (Ironic)

/// `GET /v1/nodes/{node}/states/console`: Ironic's `{"console_enabled", "console_info"}`.
/// While enabled, `console_info` is `{"type": "websocket", "url": <this gateway's console
/// websocket>, "ferric": {...}}`, the extra object showing the session as its conductor
/// records it (`consoles/<uuid>`).
pub async fn states(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    if !node.spec.spec.console_enabled {
        return Ok(request::json(
            StatusCode::OK,
            &json!({"console_enabled": false, "console_info": null}),
        ));
    }
    // One key, read per request (the copy does not follow `consoles/`). Without it the answer
    // is still Ironic's; only the extras say less.
    let record = match state.cluster.get_console(&id).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(node = %id, error = %e, "cannot read the console record");
            None
        }
    };
    let info = json!({
        "type": "websocket",
        "url": websocket_url(&request::base_url(&state, &headers), &id),
        "ferric": session_json(node.holder.as_deref(), record.as_ref()),
    });
    Ok(request::json(
        StatusCode::OK,
        &json!({"console_enabled": true, "console_info": info}),
    ))
}

/// `ws[s]://host/v1/nodes/<uuid>/console/ws` from the base URL of links (`http[s]://host`).
fn websocket_url(base: &str, id: &NodeId) -> String {
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/v1/nodes/{id}/console/ws")
}

/// Ferric's view of the session: `starting` until the owner records one (or when the record
/// could not be read: `unknown`), then the record's `active` or `reconnecting`.
fn session_json(holder: Option<&str>, record: Option<&Option<ConsoleRecord>>) -> Value {
    match record {
        None => json!({"state": "unknown", "conductor": holder}),
        Some(None) => json!({"state": "starting", "conductor": holder, "last_error": null}),
        Some(Some(r)) => json!({
            "state": r.state,
            "conductor": r.conductor,
            "interface": r.interface,
            "started_at": iso8601(r.started_at_ms),
            "active_since": r.active_since_ms.map(iso8601),
            "last_error": r.last_error,
        }),
    }
}

/// Ironic's `args.boolean` (oslo's `bool_from_string(strict=True)`).
fn enabled_arg(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    let v = match obj.get("enabled") {
        None | Some(Value::Null) => {
            return Err(ApiError::BadRequest(
                "Missing mandatory parameter: enabled".into(),
            ))
        }
        Some(v) => v,
    };
    crate::node_input::parse_bool(v).ok_or_else(|| {
        let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        ApiError::BadRequest(format!(
            "Invalid enabled: Unrecognized value '{shown}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ))
    })
}

/// `PUT /v1/nodes/{node}/states/console {"enabled": bool}`: records the intent; the owner
/// starts or stops the console. 202 with `Location` to the console state, also when nothing
/// changes (Ironic logs "already enabled" and accepts). Maintenance does not matter.
pub async fn set_enabled(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["enabled"])?;
    let enabled = enabled_arg(&obj)?;
    let node = request::lookup(&state, &ident, v).await?;
    let spec = &node.spec.spec;
    let uuid = spec.id.to_string();
    if enabled {
        if spec
            .interfaces
            .get("console_interface")
            .is_some_and(|i| i == "no-console")
        {
            return Err(ApiError::BadRequest(format!(
                "Driver {} does not support console (disabled or not implemented).",
                spec.driver
            )));
        }
        // Ironic's `get_topic_for` (nothing would ever open it, unseen).
        if !state
            .informer
            .read()
            .served(&spec.driver, &spec.conductor_group)
        {
            return Err(ApiError::Unavailable(format!(
                "No conductor is serving driver \"{}\" in conductor group \"{}\"; the console cannot be enabled now. Please retry later.",
                spec.driver, spec.conductor_group
            )));
        }
    }
    // Read from etcd, not the copy: another gateway may have changed it a moment ago.
    let current = state.cluster.get_node(&uuid).await?;
    if current.spec.console_enabled != enabled {
        let view = state
            .cluster
            .update_spec(&uuid, |_, spec| {
                spec.console_enabled = enabled;
                Ok(())
            })
            .await?;
        state.settle(view.spec_rev).await;
    }
    let base = request::base_url(&state, &headers);
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "{base}/v1/nodes/{}/states/console",
        request::url_encode(&ident)
    )) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// The console websocket (Ferric)

/// Whether `path` (normalised, no trailing slash) is a node's console websocket, the one path
/// whose credentials may come in a subprotocol.
pub(crate) fn is_websocket_path(path: &str) -> bool {
    path.strip_prefix("/v1/nodes/")
        .and_then(|rest| rest.strip_suffix("/console/ws"))
        .is_some_and(|node| !node.is_empty() && !node.contains('/'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadWrite,
    ReadOnly,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "rw",
            Mode::ReadOnly => "ro",
        }
    }
}

/// `?mode=`: admins default to `rw`, readers to `ro` and may not ask for `rw`.
fn mode_for(role: Role, asked: Option<&str>) -> Result<Mode, ApiError> {
    match (asked, role) {
        (None | Some(""), Role::Admin) => Ok(Mode::ReadWrite),
        (None | Some(""), Role::Reader) | (Some("ro"), _) => Ok(Mode::ReadOnly),
        (Some("rw"), Role::Admin) => Ok(Mode::ReadWrite),
        (Some("rw"), Role::Reader) => Err(ApiError::Forbidden(
            "Access was denied to the console in mode rw (role reader may only view it: mode=ro)"
                .into(),
        )),
        (Some(other), _) => Err(ApiError::BadRequest(format!(
            "Invalid mode: {other} (expected rw or ro)"
        ))),
    }
}

/// Where the node's console is served now, as this gateway's copy says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    At { conductor: String, address: String },
    Disabled,
    Gone,
    NoHolder,
    NoAddress(String),
}

fn locate(state: &AppState, id: &NodeId) -> Located {
    let copy = state.informer.read();
    let Some(node) = copy.node(id) else {
        return Located::Gone;
    };
    if !node.spec.spec.console_enabled {
        return Located::Disabled;
    }
    let Some(holder) = node.holder else {
        return Located::NoHolder;
    };
    match copy.conductors.get(&*holder) {
        Some(c) if !c.console_address.trim().is_empty() => Located::At {
            conductor: holder.to_string(),
            address: c.console_address.trim().to_string(),
        },
        _ => Located::NoAddress(holder.to_string()),
    }
}

impl Located {
    /// Why no console can be reached, in words.
    fn problem(&self, id: &NodeId) -> String {
        match self {
            Located::At { .. } => String::new(),
            Located::Disabled => format!("Console is not enabled for node {id}"),
            Located::Gone => format!("Node {id} could not be found."),
            Located::NoHolder => format!("No conductor holds node {id} now"),
            Located::NoAddress(c) => format!("Conductor {c} serves no consoles"),
        }
    }
}

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A conductor accepted the viewer and sent its first message (its hello).
struct Opened {
    upstream: Upstream,
    conductor: String,
    first: tungstenite::Message,
}

/// What opening the node's console came to.
enum Open {
    Up(Box<Opened>),
    /// The console ended for good (disabled, node deleted, a refusal that retrying cannot
    /// change): close the viewer with this.
    Closed(u16, String),
    /// Not reachable within the bound; the last reason.
    Failed(String),
}

/// The cluster's console secret, read once.
async fn secret(state: &AppState) -> Result<String, ApiError> {
    state
        .console_secret
        .get_or_try_init(|| state.cluster.console_secret())
        .await
        .cloned()
        .map_err(ApiError::from)
}

/// One attempt at `conductor`'s console server: Ok(opened), Ok(Err(close)) when it answered
/// with a close that ends the console, Err(reason) for anything worth retrying.
async fn dial(
    state: &AppState,
    id: &NodeId,
    mode: Mode,
    conductor: &str,
    address: &str,
    limit: Duration,
) -> Result<Result<Opened, (u16, String)>, String> {
    let secret = secret(state)
        .await
        .map_err(|e| format!("cannot read the console secret: {}", e.faultstring()))?;
    let url = format!("ws://{address}/console/{id}/ws?mode={}", mode.as_str());
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("conductor {conductor}'s console address {address:?}: {e}"))?;
    // The secret is never logged.
    let bearer = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| "the console secret is not a valid header value".to_string())?;
    req.headers_mut().insert(header::AUTHORIZATION, bearer);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(UPSTREAM_READ_LIMIT))
        .max_frame_size(Some(UPSTREAM_READ_LIMIT));
    let attempt = async {
        let (mut upstream, _) =
            tokio_tungstenite::connect_async_with_config(req, Some(config), true)
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(resp) => {
                        let status = resp.status();
                        if status == StatusCode::UNAUTHORIZED {
                            tracing::error!(%conductor, "a conductor refused the console secret");
                        }
                        format!(
                            "conductor {conductor} answered HTTP {}{}",
                            status.as_u16(),
                            if status == StatusCode::NOT_FOUND {
                                " (console not open there yet)"
                            } else {
                                ""
                            }
                        )
                    }
                    other => format!("cannot reach conductor {conductor} at {address}: {other}"),
                })?;
        // The conductor says hello first; a close instead is its answer.
        loop {
            match upstream.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return match upstream_close(code) {
                        UpstreamClose::Failover | UpstreamClose::RetryOnOpen => Err(format!(
                            "conductor {conductor} closed the console ({code}: {reason})"
                        )),
                        UpstreamClose::Pass => Ok(Err((code, reason))),
                    };
                }
                Some(Ok(
                    tungstenite::Message::Ping(_)
                    | tungstenite::Message::Pong(_)
                    | tungstenite::Message::Frame(_),
                )) => continue,
                Some(Ok(first)) => {
                    return Ok(Ok(Opened {
                        upstream,
                        conductor: conductor.to_string(),
                        first,
                    }))
                }
                Some(Err(e)) => return Err(format!("conductor {conductor}'s console failed: {e}")),
                None => return Err(format!("conductor {conductor} closed the connection")),
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "conductor {conductor} at {address} did not answer within {} ms",
            limit.as_millis()
        )),
    }
}

/// Opens the node's console on whichever conductor holds it, retrying with capped backoff
/// until `deadline`.
async fn open(state: &AppState, id: &NodeId, mode: Mode, deadline: Instant) -> Open {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let last;
        match locate(state, id) {
            Located::At { conductor, address } => {
                let left = deadline.saturating_duration_since(Instant::now());
                let limit = DIAL_TIMEOUT.min(left).max(Duration::from_millis(500));
                match dial(state, id, mode, &conductor, &address, limit).await {
                    Ok(Ok(opened)) => return Open::Up(Box::new(opened)),
                    Ok(Err((code, reason))) => return Open::Closed(code, reason),
                    Err(e) => last = e,
                }
            }
            Located::Disabled => {
                return Open::Closed(CLOSE_DISABLED, "console disabled".into());
            }
            Located::Gone => return Open::Closed(CLOSE_DISABLED, "node deleted".into()),
            other => last = other.problem(id),
        }
        let now = Instant::now();
        if now >= deadline {
            return Open::Failed(last);
        }
        tracing::debug!(node = %id, reason = %last, "console not reachable yet; retrying");
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// What a close from the conductor means for the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamClose {
    /// The console moved or its conductor went away: reconnect through the current owner.
    Failover,
    /// Passed on during a session, retried while opening (the new owner may not have opened
    /// the console yet).
    RetryOnOpen,
    /// Passed on to the viewer as it is.
    Pass,
}

fn upstream_close(code: u16) -> UpstreamClose {
    match code {
        // 1005/1006: no code at all, the conductor vanished mid-close.
        CLOSE_OWNER_CHANGED | CLOSE_GOING_AWAY | 1005 | 1006 => UpstreamClose::Failover,
        CLOSE_NOT_HERE => UpstreamClose::RetryOnOpen,
        _ => UpstreamClose::Pass,
    }
}

/// `GET /v1/nodes/{node}/console/ws?mode=rw|ro`: the node's serial console as a websocket,
/// frames passed through both ways. Refused before the upgrade: 400 (bad mode, not a
/// websocket request), 403 (a reader asking `rw`), 404, 409 (console not enabled), 503 (no
/// conductor holds the node, it serves no consoles, or its console cannot be reached).
pub async fn websocket(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["mode"])?;
    let mode = mode_for(caller.role, params.get("mode"))?;
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    match locate(&state, &id) {
        Located::At { .. } => {}
        Located::Disabled => {
            return Err(ApiError::Conflict(format!(
                "Console is not enabled for node {id}"
            )))
        }
        Located::Gone => return Err(ApiError::node_not_found(&ident)),
        other => {
            return Err(ApiError::Unavailable(format!(
                "{}; the console of node {id} cannot be reached. Please retry later.",
                other.problem(&id)
            )))
        }
    }
    let ws = ws.map_err(|r| {
        ApiError::BadRequest(format!(
            "This is a websocket; the request must be an upgrade to one ({})",
            r.body_text()
        ))
    })?;
    let bound = state.config.console_reconnect;
    let opened = match open(&state, &id, mode, Instant::now() + bound.min(OPEN_WAIT)).await {
        Open::Up(o) => *o,
        Open::Closed(CLOSE_DISABLED, _) => {
            return Err(ApiError::Conflict(format!(
                "Console is not enabled for node {id}"
            )))
        }
        Open::Closed(code, reason) => {
            return Err(ApiError::Unavailable(format!(
            "The console of node {id} refused the viewer ({code}: {reason}). Please retry later."
        )))
        }
        Open::Failed(why) => {
            return Err(ApiError::Unavailable(format!(
                "The console of node {id} cannot be reached: {why}. Please retry later."
            )))
        }
    };
    let span =
        tracing::info_span!("console", node = %id, mode = mode.as_str(), caller = %caller.name);
    let session = Session {
        state,
        id,
        mode,
        bound,
    };
    Ok(ws
        .protocols([SUBPROTOCOL])
        .max_message_size(VIEWER_READ_LIMIT)
        .max_frame_size(VIEWER_READ_LIMIT)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "console viewer upgrade failed"))
        .on_upgrade(move |socket| session.run(socket, opened).instrument(span)))
}

/// A close for the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Close {
    code: u16,
    reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }

    fn frame(&self) -> Message {
        Message::Close(Some(CloseFrame {
            code: self.code,
            reason: close_reason(&self.reason).into(),
        }))
    }
}

/// A close frame's reason is at most 123 bytes of UTF-8.
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

enum Out {
    Msg(Message, usize),
    Close(Close),
}

/// The viewer's sending half, drained by [`write_viewer`] through a bounded queue.
struct ToViewer {
    tx: mpsc::Sender<Out>,
    queued: Arc<AtomicUsize>,
    /// Abandons the queue and closes with this (a viewer too slow to take a close in turn).
    kill: watch::Sender<Option<Close>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Push {
    Full,
    Gone,
}

impl ToViewer {
    fn push(&self, msg: Message) -> Result<(), Push> {
        let len = match &msg {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        };
        if self.queued.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            return Err(Push::Full);
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(Out::Msg(msg, len)).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Push::Full,
                mpsc::error::TrySendError::Closed(_) => Push::Gone,
            }
        })
    }

    fn text(&self, v: Value) -> Result<(), Push> {
        self.push(Message::Text(v.to_string().into()))
    }

    /// Closes after what is queued, or at once when the queue is full.
    fn close(&self, c: Close) {
        if let Err(mpsc::error::TrySendError::Full(Out::Close(c))) = self.tx.try_send(Out::Close(c))
        {
            self.kill.send_replace(Some(c));
        }
    }

    fn too_slow(&self) {
        self.kill.send_replace(Some(Close::new(
            CLOSE_TOO_SLOW,
            format!(
                "viewer too slow: more than {} KiB of console output waiting",
                QUEUE_BYTES / 1024
            ),
        )));
    }
}

/// Resolves when the gateway shuts down.
async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    let down = rx.wait_for(|c| *c).await.is_ok();
    if !down {
        std::future::pending::<()>().await;
    }
}

async fn killed(rx: &mut watch::Receiver<Option<Close>>) -> Close {
    let close = match rx.wait_for(Option::is_some).await {
        Ok(c) => c.clone(),
        Err(_) => None,
    };
    match close {
        Some(c) => c,
        // The session ended without killing: never.
        None => std::future::pending().await,
    }
}

async fn write_viewer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    queued: Arc<AtomicUsize>,
    mut kill: watch::Receiver<Option<Close>>,
) {
    let close = loop {
        let out = tokio::select! {
            biased;
            c = killed(&mut kill) => break Some((c, SLOW_CLOSE_GRACE)),
            out = rx.recv() => out,
        };
        match out {
            Some(Out::Msg(msg, len)) => {
                tokio::select! {
                    biased;
                    c = killed(&mut kill) => break Some((c, SLOW_CLOSE_GRACE)),
                    r = sink.send(msg) => {
                        queued.fetch_sub(len, Ordering::Relaxed);
                        if r.is_err() {
                            return;
                        }
                    }
                }
            }
            Some(Out::Close(c)) => break Some((c, CLOSE_GRACE)),
            // The session ended without a close of ours (the viewer closed): finish its
            // closing handshake.
            None => break None,
        }
    };
    match close {
        Some((c, grace)) => {
            tracing::debug!(code = c.code, reason = %c.reason, "console viewer closed");
            let _ = tokio::time::timeout(grace, sink.send(c.frame())).await;
        }
        None => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
    }
}

/// One viewer's proxy.
struct Session {
    state: AppState,
    id: NodeId,
    mode: Mode,
    bound: Duration,
}

/// How a session's loop ended.
enum End {
    /// The viewer closed or vanished; nothing to send it.
    ViewerGone,
    /// Close the viewer with this.
    Close(Close),
    /// The viewer's queue is full.
    TooSlow,
}

/// What the viewer did while the gateway was reconnecting.
enum ViewerSays {
    Nothing,
    Gone,
    TooBig,
}

impl Session {
    async fn run(self, socket: WebSocket, opened: Opened) {
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let queued = Arc::new(AtomicUsize::new(0));
        let (kill, kill_rx) = watch::channel(None);
        let writer = tokio::spawn(write_viewer(sink, rx, queued.clone(), kill_rx));
        let to_viewer = ToViewer { tx, queued, kill };
        tracing::info!(conductor = %opened.conductor, "console viewer connected");
        let mut upstream = None;
        let end = self
            .pump(opened, &mut stream, &to_viewer, &mut upstream)
            .await;
        match end {
            End::ViewerGone => {}
            End::Close(c) => to_viewer.close(c),
            End::TooSlow => to_viewer.too_slow(),
        }
        if let Some(mut up) = upstream {
            let frame = tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "viewer left".into(),
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, up.close(Some(frame))).await;
        }
        // The writer ends on a close, or when its queue's sender is gone.
        let ToViewer { tx, kill, .. } = to_viewer;
        drop(tx);
        let mut writer = writer;
        if tokio::time::timeout(SLOW_CLOSE_GRACE + CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        drop(kill);
        // Let the viewer answer our close (its reply ends the stream).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
        tracing::info!("console viewer disconnected");
    }

    /// Passes frames until the session ends; `slot` holds the live upstream (for the caller to
    /// close).
    async fn pump(
        &self,
        opened: Opened,
        viewer: &mut SplitStream<WebSocket>,
        to_viewer: &ToViewer,
        slot: &mut Option<Upstream>,
    ) -> End {
        let mut closing = self.state.closing();
        let mut current = opened;
        // One round per connection to a conductor.
        loop {
            let Opened {
                upstream,
                conductor,
                first,
            } = current;
            let upstream = slot.insert(upstream);
            if let Err(e) = forward_to_viewer(to_viewer, first) {
                return e;
            }
            // A conductor that lost the node without a word (frozen, partitioned) is left as
            // soon as the copy shows it: its TCP connection may never say so.
            let moved = moved_away(&self.state, &self.id, &conductor);
            tokio::pin!(moved);
            let lost = loop {
                tokio::select! {
                    _ = shutting_down(&mut closing) => {
                        return End::Close(Close::new(CLOSE_GOING_AWAY, "gateway shutting down; reconnect"));
                    }
                    why = &mut moved => break why,
                    m = viewer.next() => {
                        let msg = match m {
                            Some(Ok(Message::Binary(b))) => tungstenite::Message::Binary(b),
                            Some(Ok(Message::Text(t))) => tungstenite::Message::Text(t.as_str().into()),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            Some(Ok(Message::Close(_))) | None => return End::ViewerGone,
                            Some(Err(e)) => {
                                if is_too_big(e) {
                                    return End::Close(too_big());
                                }
                                return End::ViewerGone;
                            }
                        };
                        if message_len(&msg) > MAX_VIEWER_MESSAGE {
                            return End::Close(too_big());
                        }
                        match tokio::time::timeout(UPSTREAM_SEND, upstream.send(msg)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => break format!("the connection to conductor {conductor} failed: {e}"),
                            Err(_) => break format!(
                                "conductor {conductor} did not take keystrokes for {} s",
                                UPSTREAM_SEND.as_secs()
                            ),
                        }
                    }
                    m = upstream.next() => match m {
                        Some(Ok(tungstenite::Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            if upstream_close(code) == UpstreamClose::Failover {
                                break format!("conductor {conductor} closed the console ({code}: {reason})");
                            }
                            // Complete the closing handshake with the conductor.
                            let _ = tokio::time::timeout(CLOSE_GRACE, upstream.close(None)).await;
                            *slot = None;
                            return End::Close(Close::new(code, reason));
                        }
                        Some(Ok(msg)) => {
                            if let Err(e) = forward_to_viewer(to_viewer, msg) {
                                return e;
                            }
                        }
                        Some(Err(e)) => break format!("the connection to conductor {conductor} failed: {e}"),
                        None => break format!("conductor {conductor} closed the connection"),
                    },
                }
            };
            // Failover: the viewer stays; the console is opened again wherever the node is now.
            *slot = None;
            tracing::info!(%conductor, reason = %lost, "console connection lost; reconnecting");
            if let Err(e) = to_viewer.text(json!({"type": "reconnecting", "reason": lost})) {
                return push_end(e);
            }
            let deadline = Instant::now() + self.bound;
            let reopen = open(&self.state, &self.id, self.mode, deadline);
            tokio::pin!(reopen);
            let result = loop {
                tokio::select! {
                    r = &mut reopen => break r,
                    _ = shutting_down(&mut closing) => {
                        return End::Close(Close::new(CLOSE_GOING_AWAY, "gateway shutting down; reconnect"));
                    }
                    m = viewer.next() => match viewer_while_away(m) {
                        ViewerSays::Nothing => {}
                        ViewerSays::Gone => return End::ViewerGone,
                        ViewerSays::TooBig => return End::Close(too_big()),
                    },
                }
            };
            match result {
                Open::Up(o) => {
                    tracing::info!(conductor = %o.conductor, "console reconnected");
                    if let Err(e) =
                        to_viewer.text(json!({"type": "reconnected", "conductor": o.conductor}))
                    {
                        return push_end(e);
                    }
                    current = *o;
                }
                Open::Closed(code, reason) => return End::Close(Close::new(code, reason)),
                Open::Failed(why) => {
                    tracing::warn!(reason = %why, "console did not come back; closing the viewer");
                    return End::Close(Close::new(
                        CLOSE_INTERNAL,
                        format!(
                            "console not back within {} s: {why}",
                            self.bound.as_secs_f64()
                        ),
                    ));
                }
            }
        }
    }
}

/// Resolves (with why) once the copy shows that `conductor` no longer holds the node or serves
/// consoles. A disabled console or a deleted node is left to the conductor (it closes its
/// viewers with 4410 after the last output).
async fn moved_away(state: &AppState, id: &NodeId, conductor: &str) -> String {
    let gone = |copy: &crate::informer::CacheState| {
        if !copy.specs.get(id).is_some_and(|s| s.spec.console_enabled) {
            return false;
        }
        let holds = copy.holders.get(id).is_some_and(|h| &**h == conductor);
        let serves = copy
            .conductors
            .get(conductor)
            .is_some_and(|c| !c.console_address.trim().is_empty());
        !(holds && serves)
    };
    // The copy lives as long as the gateway; a year stands for "until it happens".
    if !state
        .informer
        .wait_until(Duration::from_secs(365 * 24 * 3600), gone)
        .await
    {
        std::future::pending::<()>().await;
    }
    match locate(state, id) {
        Located::At { conductor: now, .. } => {
            format!("node moved from conductor {conductor} to {now}")
        }
        other => format!(
            "conductor {conductor} no longer holds the node ({})",
            other.problem(id)
        ),
    }
}

/// Keystrokes typed while the console is away go nowhere (the new session replays its output).
fn viewer_while_away(m: Option<Result<Message, axum::Error>>) -> ViewerSays {
    match m {
        Some(Ok(Message::Binary(b))) if b.len() > MAX_VIEWER_MESSAGE => ViewerSays::TooBig,
        Some(Ok(Message::Text(t))) if t.len() > MAX_VIEWER_MESSAGE => ViewerSays::TooBig,
        Some(Ok(Message::Close(_))) | None => ViewerSays::Gone,
        Some(Err(e)) => {
            if is_too_big(e) {
                ViewerSays::TooBig
            } else {
                ViewerSays::Gone
            }
        }
        Some(Ok(_)) => ViewerSays::Nothing,
    }
}

fn forward_to_viewer(to_viewer: &ToViewer, msg: tungstenite::Message) -> Result<(), End> {
    let msg = match msg {
        tungstenite::Message::Binary(b) => Message::Binary(b),
        tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
        _ => return Ok(()),
    };
    to_viewer.push(msg).map_err(push_end)
}

fn push_end(e: Push) -> End {
    match e {
        Push::Full => End::TooSlow,
        Push::Gone => End::ViewerGone,
    }
}

fn message_len(msg: &tungstenite::Message) -> usize {
    match msg {
        tungstenite::Message::Binary(b) => b.len(),
        tungstenite::Message::Text(t) => t.len(),
        _ => 0,
    }
}

fn too_big() -> Close {
    Close::new(
        CLOSE_TOO_BIG,
        format!(
            "message too big: at most {} KiB per frame",
            MAX_VIEWER_MESSAGE / 1024
        ),
    )
}

/// Whether the websocket layer refused a message for its size.
fn is_too_big(e: axum::Error) -> bool {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => true,
        Some(_) => false,
        None => inner.to_string().contains("too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_roles() {
        assert_eq!(mode_for(Role::Admin, None).unwrap(), Mode::ReadWrite);
        assert_eq!(mode_for(Role::Admin, Some("ro")).unwrap(), Mode::ReadOnly);
        assert_eq!(mode_for(Role::Reader, None).unwrap(), Mode::ReadOnly);
        assert_eq!(mode_for(Role::Reader, Some("ro")).unwrap(), Mode::ReadOnly);
        assert!(matches!(
            mode_for(Role::Reader, Some("rw")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            mode_for(Role::Admin, Some("write")),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn only_console_websockets_take_subprotocol_credentials() {
        assert!(is_websocket_path("/v1/nodes/node-1/console/ws"));
        assert!(is_websocket_path(
            "/v1/nodes/6f1a0c8e-8f0a-4b7e-9a51-1c2d3e4f5a6b/console/ws"
        ));
        for other in [
            "/v1/nodes//console/ws",
            "/v1/nodes/a/b/console/ws",
            "/v1/nodes/node-1/states/console",
            "/v1/nodes/node-1/console/ws/x",
            "/v1/nodes/console/ws",
            "/v2/nodes/node-1/console/ws",
        ] {
            assert!(!is_websocket_path(other), "{other}");
        }
    }

    #[test]
    fn upstream_closes_map_to_failover_or_pass() {
        assert_eq!(upstream_close(4001), UpstreamClose::Failover);
        assert_eq!(upstream_close(1001), UpstreamClose::Failover);
        assert_eq!(upstream_close(1006), UpstreamClose::Failover);
        assert_eq!(upstream_close(4404), UpstreamClose::RetryOnOpen);
        for code in [1000, 1009, 1011, 4408, 4410, 4429, 4503] {
            assert_eq!(upstream_close(code), UpstreamClose::Pass, "{code}");
        }
    }

    #[test]
    fn websocket_urls_follow_the_scheme() {
        let id: NodeId = "6f1a0c8e-8f0a-4b7e-9a51-1c2d3e4f5a6b".parse().unwrap();
        assert_eq!(
            websocket_url("http://gw:6385", &id),
            format!("ws://gw:6385/v1/nodes/{id}/console/ws")
        );
        assert_eq!(
            websocket_url("https://gw.example", &id),
            format!("wss://gw.example/v1/nodes/{id}/console/ws")
        );
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= 123);
        assert!(long.starts_with(r));
        assert_eq!(close_reason("short"), "short");
    }

    #[test]
    fn enabled_is_an_ironic_boolean() {
        let obj = |v: Value| {
            let mut m = Map::new();
            m.insert("enabled".into(), v);
            m
        };
        assert!(enabled_arg(&obj(json!(true))).unwrap());
        assert!(!enabled_arg(&obj(json!("false"))).unwrap());
        assert!(enabled_arg(&obj(json!("maybe"))).is_err());
        assert!(enabled_arg(&obj(json!(2))).is_err());
        assert!(enabled_arg(&obj(json!({}))).is_err());
        assert!(enabled_arg(&obj(Value::Null)).is_err());
        assert!(enabled_arg(&Map::new()).is_err());
    }

    #[tokio::test]
    async fn a_full_queue_is_too_slow_and_a_gone_writer_is_gone() {
        let (tx, mut rx) = mpsc::channel(2);
        let (kill, _kill_rx) = watch::channel(None);
        let to = ToViewer {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            kill,
        };
        to.push(Message::Binary(vec![0; 10].into())).unwrap();
        assert_eq!(
            to.push(Message::Binary(vec![0; QUEUE_BYTES].into())),
            Err(Push::Full)
        );
        to.push(Message::Binary(vec![0; 10].into())).unwrap();
        assert_eq!(to.push(Message::Binary(vec![0; 1].into())), Err(Push::Full));
        assert_eq!(to.queued.load(Ordering::Relaxed), 20);
        // A close that does not fit kills instead.
        to.close(Close::new(4410, "disabled"));
        assert_eq!(to.kill.borrow().as_ref().unwrap().code, 4410);
        rx.close();
        while rx.recv().await.is_some() {}
        assert_eq!(to.push(Message::Binary(vec![0; 1].into())), Err(Push::Gone));
    }
}
