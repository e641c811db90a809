//! Node actors and the conductor that runs them: the membership session (lease, watches,
//! placement, reservations), the supervisor of node actors, and the node actor itself.

pub mod agent;
pub mod conductor;
pub mod fence;
pub mod node_actor;
pub mod node_state;
pub mod remedy;
pub mod supervisor;

pub use conductor::{run, ConductorConfig};
pub use node_actor::{NodeActor, NodeArgs, NodeCtx, NodeMsg, NodeSnapshot};
pub use supervisor::{NodeEvent, NodeSupervisor, SupervisorMsg};
