//! The upstream side of the console proxy: where the node's console is served now, and opening
//! it there (one dial, or retries with capped backoff until a deadline).

use crate::error::ApiError;
use crate::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use ferric_model::console_wire::{
    CLOSE_ABNORMAL, CLOSE_DISABLED, CLOSE_GOING_AWAY, CLOSE_NOT_HERE, CLOSE_NO_STATUS,
    CLOSE_OWNER_CHANGED,
};
use ferric_model::{NodeId, ViewerMode};
use futures::StreamExt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest message accepted from a conductor (its output frames are a few KiB).
const UPSTREAM_READ_LIMIT: usize = 1024 * 1024;
/// One attempt to reach a conductor's console server (TCP, upgrade, its hello).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Where the node's console is served now, as this gateway's copy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Located {
    At { conductor: String, address: String },
    Disabled,
    Gone,
    NoHolder,
    NoAddress(String),
}

pub(super) fn locate(state: &AppState, id: &NodeId) -> Located {
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
    pub(super) fn problem(&self, id: &NodeId) -> String {
        match self {
            Located::At { .. } => String::new(),
            Located::Disabled => format!("Console is not enabled for node {id}"),
            Located::Gone => format!("Node {id} could not be found."),
            Located::NoHolder => format!("No conductor holds node {id} now"),
            Located::NoAddress(c) => format!("Conductor {c} serves no consoles"),
        }
    }
}

pub(super) type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A conductor accepted the viewer and sent its first message (its hello).
pub(super) struct Opened {
    pub(super) upstream: Upstream,
    pub(super) conductor: String,
    pub(super) first: tungstenite::Message,
}

/// What opening the node's console came to.
pub(super) enum Open {
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
    mode: ViewerMode,
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
                        .unwrap_or((CLOSE_NO_STATUS, String::new()));
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
pub(super) async fn open(
    state: &AppState,
    id: &NodeId,
    mode: ViewerMode,
    deadline: Instant,
) -> Open {
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
pub(super) enum UpstreamClose {
    /// The console moved or its conductor went away: reconnect through the current owner.
    Failover,
    /// Passed on during a session, retried while opening (the new owner may not have opened
    /// the console yet).
    RetryOnOpen,
    /// Passed on to the viewer as it is.
    Pass,
}

pub(super) fn upstream_close(code: u16) -> UpstreamClose {
    match code {
        // 1005/1006: no code at all, the conductor vanished mid-close.
        CLOSE_OWNER_CHANGED | CLOSE_GOING_AWAY | CLOSE_NO_STATUS | CLOSE_ABNORMAL => {
            UpstreamClose::Failover
        }
        CLOSE_NOT_HERE => UpstreamClose::RetryOnOpen,
        _ => UpstreamClose::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
