//! The console websocket `GET /v1/nodes/{node}/console/ws?mode=rw|ro`: one [`Session`] per
//! viewer, passing frames between the viewer and the owning conductor's console server, and
//! failing over to the node's next owner (see the parent module for the contract).

mod upstream;
mod viewer;

use self::upstream::{
    locate, open, upstream_close, Located, Open, Opened, Upstream, UpstreamClose,
};
use self::viewer::{write_viewer, Close, Push, ToViewer, CLOSE_GRACE, SLOW_CLOSE_GRACE};
use super::MAX_VIEWER_MESSAGE;
use crate::auth::Role;
use crate::error::ApiError;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::{AppState, Caller};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Extension;
use ferric_model::console_wire::{
    CLOSE_DISABLED, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_NO_STATUS, CLOSE_TOO_BIG, SUBPROTOCOL,
};
use ferric_model::{ControlFrame, NodeId, ViewerMode};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tracing::Instrument;

/// What the viewer's websocket reads at most: messages up to this size are read whole and
/// refused by us (a clean 1009); larger ones are cut off by the websocket layer.
const VIEWER_READ_LIMIT: usize = 1024 * 1024;
/// Messages waiting for one viewer; past this, as past [`super::QUEUE_BYTES`], the viewer is too
/// slow and is closed with 4429.
const QUEUE_MESSAGES: usize = 1024;
/// How long the first connection to the conductor may take before the upgrade (the console may
/// have been enabled a moment ago and not be open yet); capped by the reconnect bound.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// How long keystrokes may wait for the conductor to take them before its connection counts as
/// lost.
const UPSTREAM_SEND: Duration = Duration::from_secs(10);

/// `?mode=`: those who may change things default to `rw`, readers to `ro` and may not ask
/// for `rw`.
fn mode_for(role: Role, asked: Option<&str>) -> Result<ViewerMode, ApiError> {
    match (asked, role.writes()) {
        (None | Some(""), true) => Ok(ViewerMode::ReadWrite),
        (None | Some(""), false) | (Some("ro"), _) => Ok(ViewerMode::ReadOnly),
        (Some("rw"), true) => Ok(ViewerMode::ReadWrite),
        (Some("rw"), false) => Err(ApiError::Forbidden(
            "Access was denied to the console in mode rw (role reader may only view it: mode=ro)"
                .into(),
        )),
        (Some(other), _) => Err(ApiError::BadRequest(format!(
            "Invalid mode: {other} (expected rw or ro)"
        ))),
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

/// Resolves when the gateway shuts down.
async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    let down = rx.wait_for(|c| *c).await.is_ok();
    if !down {
        std::future::pending::<()>().await;
    }
}

/// One viewer's proxy.
struct Session {
    state: AppState,
    id: NodeId,
    mode: ViewerMode,
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
                                .unwrap_or((CLOSE_NO_STATUS, String::new()));
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
            if let Err(e) = to_viewer.control(ControlFrame::Reconnecting { reason: lost }) {
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
                    if let Err(e) = to_viewer.control(ControlFrame::Reconnected {
                        conductor: o.conductor.clone(),
                    }) {
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
        let holds = copy.holder(id).is_some_and(|h| &*h == conductor);
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
        assert_eq!(mode_for(Role::Admin, None).unwrap(), ViewerMode::ReadWrite);
        assert_eq!(
            mode_for(Role::Admin, Some("ro")).unwrap(),
            ViewerMode::ReadOnly
        );
        assert_eq!(mode_for(Role::Reader, None).unwrap(), ViewerMode::ReadOnly);
        assert_eq!(
            mode_for(Role::Reader, Some("ro")).unwrap(),
            ViewerMode::ReadOnly
        );
        assert!(matches!(
            mode_for(Role::Reader, Some("rw")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            mode_for(Role::Admin, Some("write")),
            Err(ApiError::BadRequest(_))
        ));
    }
}
