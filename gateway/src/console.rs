//! Serial consoles through the gateway: Ironic's `GET|PUT /v1/nodes/{node}/states/console`
//! (intent: `spec.console_enabled`, compare-and-swap like every other action) and Ferric's
//! console websocket `GET /v1/nodes/{node}/console/ws?mode=rw|ro`, a proxy to the console server
//! of whichever conductor holds the node now (its bucket or reservation -> `conductors/<name>`'s
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
//! viewer may offer its credentials as a second subprotocol instead, next to `ferric.console`:
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
//! Layout: [`states`] answers Ironic's console state API; [`proxy`] is the websocket proxy and its
//! failover. The codes and frames are `ferric_model::console_wire`'s.
//!
//! Invariants: what the gateway holds for one viewer is bounded ([`QUEUE_BYTES`] of output
//! waiting for the viewer, one message of input waiting for the conductor; a viewer that does
//! not keep up is closed with 4429), and a viewer message over [`MAX_VIEWER_MESSAGE`] is never
//! forwarded (1009).

mod proxy;
mod states;

pub use proxy::websocket;
pub use states::{set_enabled, states};

use std::time::Duration;

/// Default of [`crate::GatewayConfig::console_reconnect`]: a conductor's lease TTL (10 s) plus
/// the new owner taking the node and reopening its console, with room to spare.
pub const RECONNECT_DEFAULT: Duration = Duration::from_secs(30);
/// Largest message a viewer may send (the conductor's own limit); larger: 1009, not forwarded.
pub const MAX_VIEWER_MESSAGE: usize = 64 * 1024;
/// Output waiting for one viewer, in bytes and in messages; past either the viewer is too slow
/// and is closed with 4429.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Whether `path` (normalised, no trailing slash) is a node's console websocket, the one path
/// whose credentials may come in a subprotocol.
pub(crate) fn is_websocket_path(path: &str) -> bool {
    path.strip_prefix("/v1/nodes/")
        .and_then(|rest| rest.strip_suffix("/console/ws"))
        .is_some_and(|node| !node.is_empty() && !node.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
