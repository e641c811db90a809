//! The `ferric-sim` console: a `ferric sim` system's simulated serial port, a websocket at
//! `<redfish_address>/sim/systems/<id>/serial` carrying raw bytes in binary frames both ways.
//! One session per port (a second gets HTTP 409, like a BMC's single SOL payload); `DELETE` on
//! the same path ends a stale session (204), the analogue of `sol deactivate`, sent before
//! every connect. Requests carry `User-Agent: ferric-conductor/<name>` so the simulator's
//! command log names the conductor.

use super::{Cancel, Ended, Io};
use crate::target::SimTarget;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Clears a stale session of the port. 204 (closed one) and 404/200 (none open) are fine.
async fn clear_stale(t: &SimTarget, http: &reqwest::Client, agent: &str) -> Result<(), String> {
    let resp = http
        .delete(&t.http_url)
        .header(header::USER_AGENT.as_str(), agent)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot reach the simulator at {}: {e}", t.http_url))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) || status == 404 {
        Ok(())
    } else {
        Err(format!(
            "clearing the serial port at {} answered HTTP {status}",
            t.http_url
        ))
    }
}

pub async fn run(t: &SimTarget, http: &reqwest::Client, io: &Io<'_>, cancel: &mut Cancel) -> Ended {
    let agent = format!("ferric-conductor/{}", io.settings.conductor);
    tokio::select! {
        r = clear_stale(t, http, &agent) => if let Err(e) = r {
            return Ended::Failed(e);
        },
        _ = cancel.cancelled() => return Ended::Stopped,
    }
    let mut req = match t.ws_url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Failed(format!("bad serial port URL {}: {e}", t.ws_url)),
    };
    if let Ok(v) = HeaderValue::from_str(&agent) {
        req.headers_mut().insert(header::USER_AGENT, v);
    }
    let limit = io.settings.open_timeout;
    let ws = tokio::select! {
        r = tokio::time::timeout(limit, tokio_tungstenite::connect_async(req)) => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(WsError::Http(resp))) if resp.status() == StatusCode::CONFLICT => {
                return Ended::Failed(format!(
                    "the serial port at {} is held by another session (HTTP 409)",
                    t.ws_url
                ));
            }
            Ok(Err(WsError::Http(resp))) => {
                return Ended::Failed(format!(
                    "the serial port at {} refused the session (HTTP {})",
                    t.ws_url,
                    resp.status()
                ));
            }
            Ok(Err(e)) => return Ended::Failed(format!("cannot open {}: {e}", t.ws_url)),
            Err(_) => {
                return Ended::Failed(format!(
                    "cannot open {}: no answer within {} s",
                    t.ws_url,
                    limit.as_secs()
                ))
            }
        },
        _ = cancel.cancelled() => return Ended::Stopped,
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    io.hub.set_input(Some(tx));
    io.report.active(None);
    let lost = loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => io.hub.publish(b),
                Some(Ok(Message::Text(s))) => io.hub.publish(Bytes::copy_from_slice(s.as_bytes())),
                Some(Ok(Message::Close(frame))) => {
                    break Some(match frame {
                        Some(f) if !f.reason.is_empty() => {
                            format!("the simulator closed the serial port ({}: {})", u16::from(f.code), f.reason)
                        }
                        Some(f) => format!("the simulator closed the serial port ({})", u16::from(f.code)),
                        None => "the simulator closed the serial port".into(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(format!("serial port connection failed: {e}")),
                None => break Some("serial port connection closed".into()),
            },
            Some(keys) = rx.recv() => {
                tokio::select! {
                    r = sink.send(Message::Binary(keys)) => if let Err(e) = r {
                        break Some(format!("serial port connection failed: {e}"));
                    },
                    _ = cancel.cancelled() => break None,
                }
            }
            _ = cancel.cancelled() => break None,
        }
    };
    io.hub.set_input(None);
    match lost {
        Some(why) => Ended::Lost(why),
        None => {
            // A clean close frees the port at once; if the simulator does not answer, the
            // next owner's DELETE frees it.
            let grace = io.settings.stop_grace;
            let _ = tokio::time::timeout(grace, sink.send(Message::Close(None))).await;
            let _ = tokio::time::timeout(grace, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
            Ended::Stopped
        }
    }
}
