//! Ferric's shared test harness: throwaway etcd, free ports, process guards, BMC simulators,
//! a websocket viewer, independent inspection of etcd, and whole test fleets.
//!
//! A dev-dependency only. Everything a test starts is owned by a value whose `Drop` kills it by
//! pid (never by name) and reaps it, so a failing or panicking test leaves no processes behind.
//! Every wait is bounded.

pub mod cli;
pub mod compute;
pub mod etcd;
pub mod fleet;
pub mod http;
pub mod inspect;
pub mod ipa;
pub mod ipmi_sim;
pub mod keystone;
pub mod ports;
pub mod process;
pub mod serve;
pub mod sushy;
pub mod viewer;

pub use compute::ComputeService;
pub use etcd::Etcd;
pub use fleet::{ctl, describe, Fleet, Gateway, Sim};
pub use inspect::{Event, History, Inspect, Kv, Snapshot};
pub use ipmi_sim::IpmiSim;
pub use ports::{free_port, free_udp_port, unique_prefix};
pub use process::{run_bounded, wait_until, Proc};

use std::path::PathBuf;

/// The workspace root (for test data such as `tests/python-requirements.txt`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Wall-clock time as `HH:MM:SS.ffffffZ` UTC, to line test notes up with the processes' logs.
pub fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}
