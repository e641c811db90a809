//! The persisted console records: a node's live console session (`consoles/<uuid>`) and the
//! cluster-wide console secret (`config/console-secret`).

use crate::codec::Record;
use serde::{Deserialize, Serialize};

/// The value of `consoles/<uuid>`: who runs the node's console session and how. Holds no
/// secrets (no password, no URL credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleRecord {
    /// The conductor running the session.
    pub conductor: String,
    /// That conductor's console server (`host:port`), where the gateway opens viewers.
    pub address: String,
    /// Console interface (`ipmitool`, `ferric-sim`, `fake`).
    pub interface: String,
    /// The session's local process (`ipmitool sol activate`), if it has one.
    pub pid: Option<u32>,
    /// When the console was enabled on this conductor.
    pub started_at_ms: u64,
    /// When the current session (since the last reconnect) became active; None while
    /// (re)connecting.
    pub active_since_ms: Option<u64>,
    /// `active` or `reconnecting`.
    pub state: String,
    /// Why the last session ended or could not be opened.
    pub last_error: Option<String>,
    /// Where the session goes, without secrets, e.g.
    /// `ipmitool -I lanplus -H 10.0.0.5 -p 623 -U admin sol activate`.
    pub session: String,
}

impl Record for ConsoleRecord {
    const KIND: &'static str = "console";
    const VERSION: u8 = 1;
}

/// The value of `config/console-secret`: what the gateway presents to conductors' console
/// servers. Created once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSecretRecord {
    pub secret: String,
    pub created_at_ms: u64,
}

impl Record for ConsoleSecretRecord {
    const KIND: &'static str = "console secret";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn console() -> ConsoleRecord {
        ConsoleRecord {
            conductor: "c1".into(),
            address: "127.0.0.1:4000".into(),
            interface: "ipmitool".into(),
            pid: Some(42),
            started_at_ms: 1_700_000_000_000,
            active_since_ms: Some(1_700_000_000_500),
            state: "active".into(),
            last_error: None,
            session: "ipmitool -I lanplus -H h -p 623 -U u sol activate".into(),
        }
    }

    fn secret() -> ConsoleSecretRecord {
        ConsoleSecretRecord {
            secret: "ab12".into(),
            created_at_ms: 1_700_000_000_001,
        }
    }

    // Bytes written by the build before the records moved from `ferric-cluster` to here.
    const CONSOLE_V1: &[u8] = &[
        1, 2, 99, 49, 14, 49, 50, 55, 46, 48, 46, 48, 46, 49, 58, 52, 48, 48, 48, 8, 105, 112, 109,
        105, 116, 111, 111, 108, 1, 42, 128, 208, 149, 255, 188, 49, 1, 244, 211, 149, 255, 188,
        49, 6, 97, 99, 116, 105, 118, 101, 0, 49, 105, 112, 109, 105, 116, 111, 111, 108, 32, 45,
        73, 32, 108, 97, 110, 112, 108, 117, 115, 32, 45, 72, 32, 104, 32, 45, 112, 32, 54, 50, 51,
        32, 45, 85, 32, 117, 32, 115, 111, 108, 32, 97, 99, 116, 105, 118, 97, 116, 101,
    ];
    const SECRET_V1: &[u8] = &[1, 4, 97, 98, 49, 50, 129, 208, 149, 255, 188, 49];

    #[test]
    fn format_1_bytes_decode_and_encode_unchanged() {
        assert_eq!(decode::<ConsoleRecord>(CONSOLE_V1).unwrap(), console());
        assert_eq!(encode(&console()), CONSOLE_V1);
        assert_eq!(decode::<ConsoleSecretRecord>(SECRET_V1).unwrap(), secret());
        assert_eq!(encode(&secret()), SECRET_V1);
    }
}
