//! What the sim crate's tests share beyond `ferric-testkit`: the simulator in-process, its
//! state at hand and its server on a loopback port.

#![allow(dead_code)] // each test binary uses a different part

use ferric_sim::{serve_state, SimConfig, SimState};
use ferric_testkit::serve::Served;
use std::sync::Arc;

/// A simulator serving on a loopback port; shut down when dropped.
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    pub state: Arc<SimState>,
    pub served: Served,
}

/// Starts a simulator with `config`.
pub async fn start(config: SimConfig) -> InProcess {
    let state = SimState::new(config).expect("a valid simulator configuration");
    let served = {
        let state = state.clone();
        Served::start(|listener, stop| serve_state(listener, state, stop)).await
    };
    InProcess {
        addr: served.addr,
        state,
        served,
    }
}

/// Starts a simulator with `systems` systems and otherwise the default configuration.
pub async fn start_systems(systems: usize) -> InProcess {
    start(SimConfig {
        systems,
        ..SimConfig::default()
    })
    .await
}
