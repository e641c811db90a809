//! Ferric's vocabulary, with no I/O: ids, the node record (spec and status) and its typed
//! `driver_info`, power and provision states, the fencing token, history kinds and requesters,
//! every record persisted in etcd and their versioned encoding, and the console wire contract.

pub mod bios;
pub mod clock;
pub mod codec;
pub mod console_record;
pub mod console_wire;
pub mod delivery;
pub mod driver_info;
pub mod heartbeat;
pub mod history;
pub mod ids;
pub mod interfaces;
pub mod inventory;
pub mod node;
pub mod port;
pub mod power;
pub mod provision;
pub mod reservation;
pub mod session;
pub mod sync;

pub use bios::{BiosRecord, BiosSetting};
pub use codec::{decode, encode, CodecError, Record};
pub use console_record::{ConsoleRecord, ConsoleSecretRecord};
pub use console_wire::{ControlFrame, ViewerMode};
pub use delivery::{DeliveryCursor, DeliveryResult, LaneCursor, Outcome, ResendRecord, Sink};
pub use driver_info::{DriverInfo, DriverInfoError};
pub use heartbeat::{AgentTokenRecord, HeartbeatRecord};
pub use history::{HistoryKind, Requester};
pub use ids::{Bucket, ConductorName, FenceToken, NameError, NodeId, NodeName};
pub use inventory::InventoryRecord;
pub use node::{
    faults, AgentCommand, AgentLink, AgentProgress, BootDeviceRequest, ConductorRecord,
    EventRecord, EvictionRecord, HistoryEntry, NodeHistory, NodeSpec, NodeStatus, PowerOp,
    PowerRequest, ProvisionRequest, Remediation, RemediationAction, RemediationBudget,
    RemediationPolicy, RemediationRule, RequestKind, RequestTrace, RequestTraces, SoftOffPolicy,
    SyncReport,
};
pub use port::{PortRecord, PortgroupRecord, VolumeConnectorRecord, VolumeTargetRecord};
pub use power::{BootDevice, PowerState, PowerTarget};
pub use provision::{ProvisionState, Verb};
pub use reservation::{DelegationRecord, ReservationRecord};
pub use session::{SessionProof, SessionRecord};
pub use sync::{SyncConfig, SyncPolicy};

/// Milliseconds since the Unix epoch: the one timestamp format of persisted records.
pub use clock::now_ms;
