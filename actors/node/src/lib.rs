//! Node actors and the conductor that runs them: the membership session (lease, watches,
//! placement, reservations), the supervisor of node actors, the node actor itself, and the pure
//! decisions it acts on (`decide`).

pub mod agent_client;
pub mod conductor;
pub mod decide;
pub mod error;
pub mod fence;
pub mod metrics;
pub mod node_actor;
pub mod store;
pub mod supervisor;

pub use conductor::{run, ConductorConfig, OwnershipHook, SyncOptions};
pub use error::{ConductorError, NodeError};
pub use node_actor::{NodeActor, NodeArgs, NodeCtx, NodeMsg, NodeSnapshot};
pub use store::{EtcdStore, NodeStore, SpecChange};
pub use supervisor::{NodeEvent, NodeSupervisor, SupervisorArgs, SupervisorMsg};
