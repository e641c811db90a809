//! `ferric-sim`: a simulated fleet of Redfish BMCs in one process, for `ferric dev`, tests and
//! benchmarks. Each system has its own power state, boot override and behaviour (graceful
//! shutdown time, latency, failure rate, unreachable), changeable at run time through the control
//! API under `/sim/`; every Redfish request that reaches a system goes to an append-only command
//! log naming the conductor that sent it. Inside each machine: fixed hardware (NICs, CPU, memory,
//! disks), a deploy agent that posts that hardware as inspection data and then heartbeats to an
//! Ironic API while the machine runs a PXE boot, serving IPA's command API under
//! `/agent/<system>/v1/commands/` meanwhile, and a single-session serial console served as a
//! websocket; agent and console are in the command log too.
//!
//! Module map: `system` (one machine's state and transitions, pure), `hardware` (its hardware and
//! IPA inventory, pure), `serial` (its serial port, pure), `agent` (its deploy agent:
//! configuration, inspection and heartbeat task), `commands` (the agent's commands as IPA runs
//! them, pure), `bios` (its BIOS resource), `config` (settings
//! and behaviour), `fleet` (all systems, timers, auth, boots wired to agent and serial port),
//! `log` (the command log), `redfish`, `control`, `agent_api` and `console` (the HTTP faces:
//! Redfish, the control API, the agents' command APIs, the serial websocket), `server` (the accept loop), `remote` (a client of the
//! control API).

#![forbid(unsafe_code)]

mod agent;
mod agent_api;
mod bios;
mod commands;
mod config;
mod console;
mod control;
mod fleet;
mod hardware;
mod log;
mod redfish;
mod remote;
mod rng;
mod serial;
mod server;
mod system;

use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;

pub use agent::{
    default_callback_url, AgentConfig, AgentFacts, AgentSpec, AgentView, FleetAgentSpec,
    LastStatus, API_VERSION, DEFAULT_COMMAND_MS, DEFAULT_INTERVAL_MS, HEARTBEAT_TIMEOUT,
    INSPECTION_API_VERSION,
};
pub use agent_api::MAX_COMMAND_BODY_BYTES;
pub use commands::{CommandFact, Status as CommandStatus};
pub use config::{
    Behaviour, BehaviourPatch, SimConfig, SimError, DEFAULT_LOG_MEMORY_ENTRIES, MAX_SYSTEMS,
};
pub use console::MAX_FRAME_BYTES;
pub use fleet::{PendingView, SerialView, SimState, SystemView};
pub use hardware::Nic;
pub use log::{rfc3339_ms, CommandLog, LogEntry, LogOp};
pub use redfish::MAX_BODY_BYTES;
pub use remote::{put_agents, RemoteError};
pub use rng::Rng;
pub use serial::RING_BYTES;
pub use server::{serve, serve_state};
pub use system::{Boot, BootEnabled, BootMode, BootTarget, Power, ResetType, Run};

/// The whole HTTP surface (Redfish, control API, agents' command APIs) over `state`; no socket
/// needed.
pub fn app(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/redfish", get(redfish::versions))
        .route("/redfish/", get(redfish::versions))
        .route("/redfish/v1", get(redfish::service_root))
        .route("/redfish/v1/", get(redfish::service_root))
        .route("/redfish/v1/Registries", get(redfish::registries))
        .route("/redfish/v1/Registries/{*rest}", get(redfish::registries))
        .route("/redfish/v1/Systems", get(redfish::systems))
        .route("/redfish/v1/Systems/", get(redfish::systems))
        .route("/redfish/v1/Systems/{id}", any(redfish::system_resource))
        .route("/redfish/v1/Systems/{id}/", any(redfish::system_resource))
        .route(
            "/redfish/v1/Systems/{id}/{*rest}",
            any(redfish::system_subresource),
        )
        .merge(control::routes())
        .merge(agent_api::routes())
        .fallback(redfish::fallback)
        .with_state(state)
}
