//! Ferric's vocabulary, with no I/O: ids, the node record (spec and status), power and provision
//! states, the fencing token, and the versioned encoding of everything persisted in etcd.

pub mod clock;
pub mod codec;
pub mod ids;
pub mod node;
pub mod power;
pub mod provision;

pub use codec::{decode, encode, CodecError, Record};
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
pub use clock::now_ms;
