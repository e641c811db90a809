//! The conductor's console server: `GET /console/{uuid}/ws?mode=rw|ro`, a websocket per viewer,
//! for the gateway (which proxies users' consoles to the owning conductor). See the crate docs
//! for the wire contract. `ConsoleService::start` is the one call the conductor makes.

use crate::context::{ConsoleContext, ConsoleSettings};
use crate::error::ConsoleError;
use crate::hub::{Close, ConsoleHub, ViewerEvent};
use crate::pidfile::{self, Swept};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use ferric_model::console_wire::{CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_OWNER_CHANGED, CLOSE_TOO_BIG};
use ferric_model::{NodeId, ViewerMode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest message a viewer may send; a larger one closes that viewer with 1009.
pub const MAX_VIEWER_MESSAGE: usize = 64 * 1024;
/// What the websocket layer reads at most. Messages up to this size are read whole and refused
/// by us, so the close frame goes out on a clean connection; larger ones are cut off by the
/// websocket layer (still 1009, but unread bytes may reset the connection first).
const READ_LIMIT: usize = 1024 * 1024;
/// Output replayed to a new viewer is sent in chunks of this size.
const REPLAY_CHUNK: usize = 16 * 1024;
/// How long a close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Configuration of [`ConsoleService::start`].
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Listen address of the console server (default `127.0.0.1:0`). The bound address is what
    /// the conductor advertises as `console_address`.
    pub listen: String,
    /// The cluster's console secret (`Cluster::console_secret()`); viewers must present it as
    /// `Authorization: Bearer <secret>`.
    pub secret: String,
    pub settings: ConsoleSettings,
}

impl ConsoleConfig {
    pub fn new(secret: &str, settings: ConsoleSettings) -> Self {
        ConsoleConfig {
            listen: "127.0.0.1:0".into(),
            secret: secret.to_string(),
            settings,
        }
    }
}

/// The console side of a conductor: orphan sweep done, server listening, registry shared with
/// the console actors (through [`ConsoleService::context`]).
pub struct ConsoleService {
    ctx: Arc<ConsoleContext>,
    addr: SocketAddr,
    swept: Vec<Swept>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ConsoleService {
    /// Sweeps the console processes a previous run of this conductor left (see
    /// [`pidfile::sweep_orphans`]), then binds and serves. Call once at conductor start, before
    /// any node actor runs.
    pub async fn start(cfg: ConsoleConfig) -> Result<ConsoleService, ConsoleError> {
        if cfg.secret.trim().is_empty() {
            return Err(ConsoleError::Config(
                "the console secret must not be empty".into(),
            ));
        }
        let dir = pidfile::dir(&cfg.settings.runtime_dir);
        let runtime_err = |source| ConsoleError::RuntimeDir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(runtime_err)?;
        let swept = pidfile::sweep_orphans(&cfg.settings.runtime_dir).map_err(runtime_err)?;
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| ConsoleError::Listen {
                address: cfg.listen.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ConsoleError::Listen {
                address: cfg.listen.clone(),
                source,
            })?;
        let ctx = Arc::new(ConsoleContext {
            settings: cfg.settings,
            registry: Default::default(),
            address: addr.to_string(),
        });
        let app = router(ctx.clone(), &cfg.secret);
        let (shutdown, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "console server failed");
            }
        });
        tracing::info!(address = %addr, swept = swept.len(), "console server listening");
        Ok(ConsoleService {
            ctx,
            addr,
            swept,
            shutdown,
            task,
        })
    }

    /// The bound address (advertise it as the conductor's `console_address`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What node actors need to run consoles (`ConsoleArgs::ctx`).
    pub fn context(&self) -> Arc<ConsoleContext> {
        self.ctx.clone()
    }

    pub fn registry(&self) -> &crate::registry::ConsoleRegistry {
        &self.ctx.registry
    }

    /// What the start-up sweep found and did.
    pub fn swept(&self) -> &[Swept] {
        &self.swept
    }

    /// Closes every viewer (4001, so the gateway reconnects them elsewhere) and stops serving.
    /// Console sessions are their actors' business: stop the node actors first.
    pub async fn shutdown(self) {
        self.ctx.registry.close_all(Close::new(
            CLOSE_OWNER_CHANGED,
            "conductor shutting down; reconnect",
        ));
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct ServerState {
    ctx: Arc<ConsoleContext>,
    secret: Arc<str>,
}

/// The console server's routes (tests drive them without a socket, too).
pub fn router(ctx: Arc<ConsoleContext>, secret: &str) -> Router {
    Router::new()
        .route("/console/{uuid}/ws", get(viewer))
        .with_state(ServerState {
            ctx,
            secret: Arc::from(secret),
        })
}

/// Compares without an early exit, so response timing does not reveal a prefix of the secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(token) = value
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &value[7..])
    else {
        return false;
    };
    same(token, secret.as_bytes())
}

fn refuse(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

async fn viewer(
    State(st): State<ServerState>,
    Path(uuid): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The secret is never logged, nor is the header that carried a wrong one.
    if !authorized(&headers, &st.secret) {
        tracing::debug!(node = %uuid, "console viewer refused: missing or wrong secret");
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong console secret");
    }
    let Ok(node) = uuid.parse::<NodeId>() else {
        return refuse(StatusCode::BAD_REQUEST, "not a node uuid");
    };
    let rw = match query.get("mode").map(|m| ViewerMode::parse(m)) {
        None => false,
        Some(Some(mode)) => mode == ViewerMode::ReadWrite,
        Some(None) => return refuse(StatusCode::BAD_REQUEST, "mode must be rw or ro"),
    };
    let Some(hub) = st.ctx.registry.get(&node) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no console of this node runs on this conductor",
        );
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let idle = st.ctx.settings.idle_timeout;
    ws.max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .on_upgrade(move |socket| serve_viewer(socket, hub, rw, idle))
}

/// Sends `msg` unless the viewer is kicked or idles out first. Err(None): the connection is gone.
async fn send(
    socket: &mut WebSocket,
    msg: Message,
    viewer: &crate::hub::Viewer,
    idle_deadline: Instant,
    idle: Duration,
) -> Result<(), Option<Close>> {
    tokio::select! {
        r = socket.send(msg) => r.map_err(|_| None),
        c = viewer.kick.kicked() => Err(Some(c)),
        _ = tokio::time::sleep_until(idle_deadline) => Err(Some(idle_close(idle))),
    }
}

fn idle_close(idle: Duration) -> Close {
    Close::new(
        CLOSE_IDLE,
        format!("idle for {} s; reconnect to continue", idle.as_secs()),
    )
}

fn is_too_big(e: axum::Error) -> bool {
    let inner = e.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => true,
        Some(_) => false,
        None => inner.to_string().contains("too long"),
    }
}

async fn serve_viewer(mut socket: WebSocket, hub: Arc<ConsoleHub>, rw: bool, idle: Duration) {
    let node = hub.node();
    let mut viewer = match hub.attach(rw) {
        Ok(v) => v,
        Err(close) => {
            send_close(&mut socket, close).await;
            return;
        }
    };
    tracing::debug!(%node, viewer = viewer.id, writer = viewer.writer, "console viewer attached");
    let mut idle_deadline = Instant::now() + idle;
    let close = 'conn: {
        let mut first = vec![
            Message::Text(viewer.hello.clone().into()),
            Message::Text(viewer.state.clone().into()),
        ];
        let replay = std::mem::take(&mut viewer.replay);
        first.extend(
            replay
                .chunks(REPLAY_CHUNK)
                .map(|c| Message::Binary(Bytes::copy_from_slice(c))),
        );
        for msg in first {
            if let Err(c) = send(&mut socket, msg, &viewer, idle_deadline, idle).await {
                break 'conn c;
            }
        }
        loop {
            tokio::select! {
                biased;
                c = viewer.kick.kicked() => break Some(c),
                _ = tokio::time::sleep_until(idle_deadline) => break Some(idle_close(idle)),
                ev = viewer.events.recv() => {
                    let msg = match ev {
                        Some(ViewerEvent::Output(b)) => Message::Binary(b),
                        Some(ViewerEvent::Control(text)) => Message::Text(text.into()),
                        None => break Some(viewer.kick.reason().unwrap_or_else(|| {
                            Close::new(CLOSE_INTERNAL, "console closed")
                        })),
                    };
                    if let Err(c) = send(&mut socket, msg, &viewer, idle_deadline, idle).await {
                        break c;
                    }
                }
                m = socket.recv() => {
                    let keys = match m {
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Text(t))) => Bytes::from(t),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Err(e)) => {
                            if is_too_big(e) {
                                break Some(too_big());
                            }
                            break None;
                        }
                    };
                    if keys.len() > MAX_VIEWER_MESSAGE {
                        break Some(too_big());
                    }
                    idle_deadline = Instant::now() + idle;
                    tokio::select! {
                        _ = viewer.input(keys) => {}
                        c = viewer.kick.kicked() => break Some(c),
                    }
                }
            }
        }
    };
    let id = viewer.id;
    // Detach first: the writer slot is free before the viewer hears why it was closed.
    drop(viewer);
    if let Some(c) = close {
        tracing::debug!(%node, viewer = id, code = c.code, reason = %c.reason, "console viewer closed");
        send_close(&mut socket, c).await;
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

async fn send_close(socket: &mut WebSocket, c: Close) {
    let frame = CloseFrame {
        code: c.code,
        reason: c.reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Message::Close(Some(frame)))).await;
    // Let the client answer the close (tungstenite replies and ends the stream).
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_secret_is_checked_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3"));
        h.insert(header::AUTHORIZATION, "Bearer s3".parse().unwrap());
        assert!(authorized(&h, "s3"));
        h.insert(header::AUTHORIZATION, "bearer s3".parse().unwrap());
        assert!(authorized(&h, "s3"));
        for wrong in ["Bearer s", "Bearer s33", "Basic s3", "s3", "Bearer"] {
            h.insert(header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!authorized(&h, "s3"), "{wrong}");
        }
    }
}
