//! Ferric's vocabulary, with no I/O: ids, the node record (spec and status), power and provision
//! states, the fencing token, and the versioned encoding of everything persisted in etcd.

pub mod codec;
pub mod console_wire;
pub mod ids;
pub mod node;
pub mod power;
pub mod provision;

pub use codec::{decode, encode, CodecError, Record};
pub use console_wire::{ControlFrame, ViewerMode};
pub use ids::{ConductorName, FenceToken, NameError, NodeId, NodeName};
pub use node::{
    faults, AgentProgress, BootDeviceRequest, ConductorRecord, EventRecord, EvictionRecord,
    HistoryEntry, NodeHistory, NodeSpec, NodeStatus, PowerOp, PowerRequest, ProvisionRequest,
    Remediation, RemediationAction, RemediationPolicy, RemediationRule, ReservationRecord,
    SoftOffPolicy,
};
pub use power::{BootDevice, PowerState, PowerTarget};
pub use provision::{ProvisionState, Verb};

/// Milliseconds since the Unix epoch: the one timestamp format of persisted records.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
