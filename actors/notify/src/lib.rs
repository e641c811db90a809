//! Delivery of power events to the compute service (Nova's `power-update` external event) and
//! to a generic JSON webhook: in order per node, at least once, from a fenced per-node cursor
//! (`delivery/<uuid>`), so that a conductor taking a node over resumes exactly where the old
//! owner stopped. See [`deliverer`] for the shape; [`wire`] for what is sent and how answers are
//! read; [`auth`] for Keystone, token and basic credentials; [`stats`] for the metrics, served
//! by [`metrics::serve`].

pub mod auth;
pub mod deliverer;
pub mod stats;
pub mod wire;

pub use auth::{Authenticator, Credentials, KeystoneConfig, Secret};
pub use deliverer::{spawn, Endpoint, Notifier, NotifyConfig};
pub use stats::Stats;
