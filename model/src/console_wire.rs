//! The console wire contract shared by the gateway (viewer side) and the conductor's console
//! server: subprotocol names, close codes, viewer modes and the JSON control frames. The numbers
//! and strings here are on the wire; changing one breaks viewers and mixed-version clusters.

use serde::{Deserialize, Serialize};

/// The websocket subprotocol of the console, selected by the gateway when the viewer offers it
/// (browsers fail the handshake when they offered subprotocols and the server selects none).
pub const SUBPROTOCOL: &str = "ferric.console";

/// Prefix of the subprotocol that carries a browser viewer's credentials:
/// `ferric.auth.<base64url(token or user:password)>` (browsers cannot set `Authorization` on a
/// websocket). Never selected by the server.
pub const AUTH_SUBPROTOCOL_PREFIX: &str = "ferric.auth.";

/// Close codes (websocket close frames). 1000-1999 are the standard ones Ferric uses;
/// 4000-4999 are Ferric's application codes.
///
/// Standard: the peer is going away (a conductor or gateway shutting down): reconnect.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Standard: no status code was present in the close frame.
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Standard (never sent): the connection dropped without a close frame.
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Standard: a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Standard: internal error (also: the console did not come back within the gateway's bound).
pub const CLOSE_INTERNAL: u16 = 1011;
/// The node moved, its console restarted or its conductor is stopping: reconnect through the
/// gateway.
pub const CLOSE_OWNER_CHANGED: u16 = 4001;
/// No console of this node runs here (reserved after an upgrade; before one the server
/// answers HTTP 404).
pub const CLOSE_NOT_HERE: u16 = 4404;
/// No data frame for the idle timeout.
pub const CLOSE_IDLE: u16 = 4408;
/// The console was disabled (or the node deleted).
pub const CLOSE_DISABLED: u16 = 4410;
/// The viewer did not keep up with the output (its queue filled).
pub const CLOSE_TOO_SLOW: u16 = 4429;
/// The console already has its maximum of viewers.
pub const CLOSE_TOO_MANY_VIEWERS: u16 = 4503;

/// A viewer's mode (`?mode=rw|ro`): `rw` may take the writer slot, `ro` only watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewerMode {
    #[serde(rename = "rw")]
    ReadWrite,
    #[serde(rename = "ro")]
    ReadOnly,
}

impl ViewerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewerMode::ReadWrite => "rw",
            ViewerMode::ReadOnly => "ro",
        }
    }

    /// `rw` or `ro`; anything else is None.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rw" => Some(ViewerMode::ReadWrite),
            "ro" => Some(ViewerMode::ReadOnly),
            _ => None,
        }
    }
}

/// A text frame: JSON with a `type` (binary frames are console output or keystrokes).
///
/// From the conductor: first `hello`, then `state` (at once and on every change), and `writer`
/// when a waiting `rw` viewer is promoted. From the gateway, while it fails a viewer over to the
/// node's new owner: `reconnecting`, then `reconnected` once the new owner said hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ControlFrame {
    Hello {
        node: String,
        conductor: String,
        writer: bool,
        mode: ViewerMode,
        /// The session's state: `connecting`, `active` or `reconnecting`.
        state: String,
    },
    State {
        state: String,
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    Writer {
        writer: bool,
    },
    Reconnecting {
        reason: String,
    },
    Reconnected {
        conductor: String,
    },
}

impl ControlFrame {
    /// The frame's JSON text.
    pub fn to_text(&self) -> String {
        // A derived Serialize of strings, bools and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_keep_their_wire_form() {
        let f = ControlFrame::State {
            state: "reconnecting".into(),
            error: Some("ipmitool exited".into()),
            retry_in_ms: Some(1000),
        };
        assert_eq!(
            f.to_text(),
            r#"{"type":"state","state":"reconnecting","error":"ipmitool exited","retry_in_ms":1000}"#
        );
        let f = ControlFrame::State {
            state: "active".into(),
            error: None,
            retry_in_ms: None,
        };
        assert_eq!(
            f.to_text(),
            r#"{"type":"state","state":"active","error":null}"#
        );
        assert_eq!(
            ControlFrame::Writer { writer: true }.to_text(),
            r#"{"type":"writer","writer":true}"#
        );
        let hello = ControlFrame::Hello {
            node: "n".into(),
            conductor: "c1".into(),
            writer: false,
            mode: ViewerMode::ReadOnly,
            state: "connecting".into(),
        };
        assert_eq!(
            hello.to_text(),
            r#"{"type":"hello","node":"n","conductor":"c1","writer":false,"mode":"ro","state":"connecting"}"#
        );
        assert_eq!(
            ControlFrame::Reconnected {
                conductor: "c2".into()
            }
            .to_text(),
            r#"{"type":"reconnected","conductor":"c2"}"#
        );
        assert_eq!(
            ControlFrame::Reconnecting {
                reason: "gone".into()
            }
            .to_text(),
            r#"{"type":"reconnecting","reason":"gone"}"#
        );
        let back: ControlFrame = serde_json::from_str(&hello.to_text()).unwrap();
        assert_eq!(back, hello);
    }

    #[test]
    fn modes_are_rw_and_ro() {
        for m in [ViewerMode::ReadWrite, ViewerMode::ReadOnly] {
            assert_eq!(ViewerMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(ViewerMode::parse("write"), None);
        assert_eq!(ViewerMode::parse(""), None);
    }
}
