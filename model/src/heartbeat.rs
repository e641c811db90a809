//! The last heartbeat of a node's agent (`heartbeats/<uuid>`), as the gateway records it.

use crate::codec::Record;
use serde::{Deserialize, Serialize};

/// The last heartbeat of a node's agent, as the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    pub at_ms: u64,
    pub callback_url: String,
    pub agent_version: Option<String>,
    /// Kept for the provisioning work to check; never returned by the API.
    pub agent_token: Option<String>,
    pub agent_verify_ca: Option<String>,
    pub agent_status: Option<String>,
    pub agent_status_message: Option<String>,
    /// The gateway that recorded it.
    pub recorded_by: String,
}

/// `agent_status` of the record the gateway writes when a node's ramdisk has sent its
/// inspection data (`POST /v1/continue_inspection`): it finishes `inspect wait`. The heartbeat
/// API accepts only `start`, `end` and `error` from agents, so no agent can send these.
pub const INSPECTION_DATA: &str = "inspection data received";
/// The same when the inspection data carried an error (its message in `agent_status_message`):
/// the inspection fails.
pub const INSPECTION_ERROR: &str = "inspection error";

impl HeartbeatRecord {
    /// Whether the gateway wrote this for received inspection data (not an agent's heartbeat).
    pub fn is_inspection_result(&self) -> bool {
        matches!(
            self.agent_status.as_deref(),
            Some(INSPECTION_DATA | INSPECTION_ERROR)
        )
    }
}

impl Record for HeartbeatRecord {
    const KIND: &'static str = "heartbeat";
    const VERSION: u8 = 1;
}

/// The agent token of a node's current ramdisk boot (`agent-tokens/<uuid>`), issued by the
/// first `GET /v1/lookup` of the boot: only its SHA-256 is kept, and a later lookup gets
/// `******`, as Ironic does. The node's conductor wipes it when it boots the ramdisk again and
/// when the node leaves the states an agent works in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTokenRecord {
    /// SHA-256 of the token, lower-case hex.
    pub sha256: String,
    pub issued_at_ms: u64,
    /// The gateway that issued it.
    pub issued_by: String,
}

impl AgentTokenRecord {
    /// SHA-256 of a token, lower-case hex (what the record keeps).
    pub fn hash(token: &str) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `token` is the one this record was issued for (compared as hashes of equal
    /// length, so the comparison does not depend on where they differ).
    pub fn matches(&self, token: Option<&str>) -> bool {
        let Some(token) = token else {
            return false;
        };
        let (a, b) = (Self::hash(token), self.sha256.as_bytes().to_vec());
        a.len() == b.len() && a.bytes().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Record for AgentTokenRecord {
    const KIND: &'static str = "agent token";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn sample() -> HeartbeatRecord {
        HeartbeatRecord {
            at_ms: 1_700_000_000_123,
            callback_url: "http://10.0.0.9:9999".into(),
            agent_version: Some("9.4.0".into()),
            agent_token: Some("tok".into()),
            agent_verify_ca: None,
            agent_status: Some("ok".into()),
            agent_status_message: Some("done".into()),
            recorded_by: "gw1".into(),
        }
    }

    /// Bytes written by the build before the record moved from `ferric-cluster` to here: records
    /// already in etcd must keep decoding, and new writes must stay readable by older builds.
    const V1: &[u8] = &[
        1, 251, 208, 149, 255, 188, 49, 20, 104, 116, 116, 112, 58, 47, 47, 49, 48, 46, 48, 46, 48,
        46, 57, 58, 57, 57, 57, 57, 1, 5, 57, 46, 52, 46, 48, 1, 3, 116, 111, 107, 0, 1, 2, 111,
        107, 1, 4, 100, 111, 110, 101, 3, 103, 119, 49,
    ];

    #[test]
    fn format_1_bytes_decode_and_encode_unchanged() {
        assert_eq!(decode::<HeartbeatRecord>(V1).unwrap(), sample());
        assert_eq!(encode(&sample()), V1);
    }
}
