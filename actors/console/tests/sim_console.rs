//! `ferric-sim` consoles against the real simulator (`ferric_sim`, in-process on a loopback
//! port): a stale session is cleared, output and keystrokes flow through the conductor's
//! websocket, a second session is refused while ours is open, a session the simulator closes is
//! reopened, and a stop frees the port at once; the simulator's own command log names our
//! conductor. Run: `cargo test -p ferric-console --test sim_console`.

mod support;

use ferric_console::{ConsoleActor, ConsoleTarget, SessionState, StopReason};
use ferric_model::NodeId;
use ferric_sim::{serve_state, LogOp, SimConfig, SimState};
use ferric_testkit::serve::Served;
use std::sync::Arc;
use support::*;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;

struct Sim {
    addr: std::net::SocketAddr,
    state: Arc<SimState>,
    http: reqwest::Client,
    _served: Served,
}

impl Sim {
    async fn start() -> Sim {
        let state = SimState::new(SimConfig {
            systems: 2,
            ..SimConfig::default()
        })
        .unwrap();
        let served = {
            let state = state.clone();
            Served::start(|listener, stop| serve_state(listener, state, stop)).await
        };
        Sim {
            addr: served.addr,
            state,
            http: reqwest::Client::new(),
            _served: served,
        }
    }

    fn serial_url(&self, id: &str) -> String {
        format!("ws://{}/sim/systems/{id}/serial", self.addr)
    }

    /// A Redfish reset (a boot prints its lines on the serial port).
    async fn reset(&self, id: &str, reset: &str) {
        let resp = self
            .http
            .post(format!(
                "http://{}/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
                self.addr
            ))
            .basic_auth("admin", Some("password"))
            .json(&serde_json::json!({ "ResetType": reset }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }

    /// An outside client's session; Err(status) if refused.
    async fn outside_session(&self, id: &str) -> Result<Ws, u16> {
        match timeout(WAIT, tokio_tungstenite::connect_async(self.serial_url(id)))
            .await
            .expect("the handshake does not hang")
        {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    }

    async fn deactivate(&self, id: &str) -> u16 {
        self.http
            .delete(format!("http://{}/sim/systems/{id}/serial", self.addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn target(&self, id: &str) -> ConsoleTarget {
        let info = serde_json::json!({
            "redfish_address": format!("http://{}", self.addr),
            "redfish_system_id": format!("/redfish/v1/Systems/{id}"),
            "redfish_username": "admin",
            "redfish_password": "password",
        });
        ConsoleTarget::resolve("redfish", Some("ferric-sim"), &info.to_string()).unwrap()
    }
}

#[tokio::test]
async fn a_ferric_sim_serial_port_through_the_conductor_websocket() {
    let sim = Sim::start().await;
    sim.reset("sim-0", "On").await;
    // A dead conductor's session still holds the port (and got the boot lines).
    let mut stale = sim.outside_session("sim-0").await.expect("stale session");

    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), sim.target("sim-0")).await;
    assert_eq!(c.wait_active().await, None, "no local process");
    // Cleared, not waited out.
    close_frame(&mut stale).await;

    // The machine reboots: its boot lines reach the console before the viewer below watches.
    // A read-only watcher seeing the prompt is the proof that the console holds it already.
    let (mut watcher, _) = viewer(svc.local_addr(), &c.node, "ro").await;
    sim.reset("sim-0", "ForceRestart").await;
    let boot = read_until(&mut watcher, b"sim-0 login: ").await;
    assert!(boot.text().contains("booting from"), "{:?}", boot.text());
    let (mut ws, hello) = viewer(svc.local_addr(), &c.node, "rw").await;
    assert_eq!(hello["writer"], true);
    // Replayed to the viewer that came later.
    read_until(&mut ws, b"sim-0 login: ").await;
    type_keys(&mut ws, b"root\r").await;
    read_until(&mut ws, b"you typed: root").await;

    // While ours is open nobody else gets the port.
    assert_eq!(sim.outside_session("sim-0").await.err(), Some(409));

    // Someone deactivates our session at the simulator: it is reopened.
    assert_eq!(sim.deactivate("sim-0").await, 204);
    let state = c
        .wait_state("reconnecting", |s| {
            matches!(s, SessionState::Reconnecting { .. })
        })
        .await;
    assert!(
        state.error().unwrap().contains("closed the serial port"),
        "{state:?}"
    );
    c.wait_active().await;
    type_keys(&mut ws, b"again\r").await;
    read_until(&mut ws, b"you typed: again").await;

    // Stop frees the port at once.
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    let mut next = sim
        .outside_session("sim-0")
        .await
        .expect("the port is free after stop");
    let _ = futures::SinkExt::close(&mut next).await;

    // The simulator's log names our conductor for every session it opened for us.
    let ours: Vec<_> = sim
        .state
        .log()
        .since(0)
        .into_iter()
        .filter(|e| e.op == LogOp::SerialOpen && e.status == Some(101))
        .filter(|e| e.client.as_deref() == Some("c-test"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
}

#[tokio::test]
async fn an_unreachable_simulator_is_retried_with_backoff_not_spun() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let info = serde_json::json!({
        "redfish_address": format!("http://127.0.0.1:{port}"),
        "redfish_system_id": "sim-0",
    });
    let target = ConsoleTarget::resolve("redfish", Some("ferric-sim"), &info.to_string()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.backoff_min = std::time::Duration::from_millis(100);
    s.backoff_max = std::time::Duration::from_millis(400);
    let svc = service(s).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), target).await;
    let mut delays = Vec::new();
    for _ in 0..5 {
        match c
            .wait_state("reconnecting", |s| {
                matches!(s, SessionState::Reconnecting { .. })
            })
            .await
        {
            SessionState::Reconnecting {
                error, retry_in_ms, ..
            } => {
                assert!(error.contains("cannot reach"), "{error}");
                delays.push(retry_in_ms);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(delays, [100, 200, 400, 400, 400]);
    let (mut ws, hello) = viewer(svc.local_addr(), &c.node, "ro").await;
    assert_eq!(hello["state"], "reconnecting");
    let state = next_text(&mut ws).await;
    assert!(
        state["error"].as_str().unwrap().contains("cannot reach"),
        "{state}"
    );
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
}
