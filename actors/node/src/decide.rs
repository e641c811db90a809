//! Pure decisions of a node actor: what to do next and how each outcome changes the status.
//! Plain data in, plain data out; no etcd, no actors, no clock of their own.

pub mod agent;
pub mod maintenance;
pub mod node_state;
pub mod remedy;
pub mod sync;
