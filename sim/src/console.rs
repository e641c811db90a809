//! The serial console of each system as a websocket, `/sim/systems/{id}/serial`: one session at a
//! time (a second is refused with 409, as a BMC refuses a second SOL session), raw bytes both ways
//! in binary frames (text frames from clients count as their bytes), `DELETE` closes the open
//! session at once (`sol deactivate`). Opening, refusing and closing are in the command log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::control::control_error;
use crate::fleet::{stopped, SimState};
use crate::log::{client_of, LogOp, Record};
use crate::serial::SESSION_QUEUE;

/// Largest message a client may send; a larger one closes the session with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// What the websocket layer reads at most. Messages up to this size are read whole and refused
/// here, so the connection is clean when the close frame goes out; larger ones are cut off by the
/// websocket layer (still closed with 1009, best effort: unread bytes may reset the connection).
const READ_LIMIT: usize = 1024 * 1024;
/// How long a closing session waits for the client to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn serial_path(id: &str) -> String {
    format!("/sim/systems/{id}/serial")
}

pub(crate) async fn open(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(idx) = state.index_of(&id) else {
        return control_error(StatusCode::NOT_FOUND, format!("no system {id}"));
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return control_error(
                rejection.status(),
                format!("a websocket upgrade is required: {}", rejection.body_text()),
            )
        }
    };
    let client = user_agent(&headers);
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    // Claimed before answering, so two clients racing cannot both get a session.
    let attached = state.attach_serial(idx, tx);
    let record = |status: StatusCode, seq: u64, detail: Option<String>| Record {
        status: Some(status.as_u16()),
        client: client.clone(),
        seq: Some(seq),
        detail,
        ..Record::new(LogOp::SerialOpen, &id, "GET", serial_path(&id))
    };
    let seq = match attached {
        Ok(seq) => seq,
        Err(busy) => {
            let why = format!("session {} is open", busy.0);
            state.record(record(StatusCode::CONFLICT, busy.0, Some(why.clone())));
            return control_error(
                StatusCode::CONFLICT,
                format!(
                    "the serial console of {id} is in use ({why}); DELETE {} closes it",
                    serial_path(&id)
                ),
            );
        }
    };
    state.record(record(StatusCode::SWITCHING_PROTOCOLS, seq, None));
    let failed = state.clone();
    ws.max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .on_failed_upgrade(move |e| failed.end_serial(idx, seq, &format!("upgrade failed: {e}")))
        .on_upgrade(move |socket| session(state, idx, seq, socket, rx))
}

pub(crate) async fn deactivate(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(idx) = state.index_of(&id) else {
        return control_error(StatusCode::NOT_FOUND, format!("no system {id}"));
    };
    state.deactivate_serial(idx, user_agent(&headers));
    StatusCode::NO_CONTENT.into_response()
}

/// Who sent a request, as the command log names clients.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    client_of(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    )
}

fn too_large_reason() -> String {
    format!("messages are limited to {MAX_FRAME_BYTES} bytes")
}

/// Whether a websocket error is a message over the size limit.
fn too_large(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// One session: output from the port to the client, input from the client to the port, until
/// either side ends it or the simulator stops.
async fn session(
    state: Arc<SimState>,
    idx: usize,
    seq: u64,
    mut socket: WebSocket,
    mut out: mpsc::Receiver<Vec<u8>>,
) {
    let mut closed = state.closed_signal();
    let why = loop {
        tokio::select! {
            // Output first: what the port printed before some input is sent before its echo.
            biased;
            chunk = out.recv() => match chunk {
                Some(bytes) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break "connection lost";
                    }
                }
                // The port dropped the session: deactivated (already logged).
                None => {
                    close(&mut socket, close_code::NORMAL, "session deactivated").await;
                    break "deactivated";
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() <= MAX_FRAME_BYTES => {
                    state.serial_input(idx, seq, &b);
                }
                Some(Ok(Message::Text(t))) if t.len() <= MAX_FRAME_BYTES => {
                    state.serial_input(idx, seq, t.as_bytes());
                }
                Some(Ok(Message::Binary(_) | Message::Text(_))) => {
                    close(&mut socket, close_code::SIZE, &too_large_reason()).await;
                    break "message too large";
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break "closed by the client",
                Some(Err(e)) => {
                    if too_large(e) {
                        close(&mut socket, close_code::SIZE, &too_large_reason()).await;
                        break "message too large";
                    }
                    break "connection lost";
                }
            },
            _ = stopped(&mut closed) => {
                close(&mut socket, close_code::AWAY, "simulator stopping").await;
                break "simulator stopping";
            }
        }
    };
    state.end_serial(idx, seq, why);
}

/// Sends a close frame and waits a little for the client's answer, so that the close frame is
/// read before the connection goes (closing at once could reset it under unread data).
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
