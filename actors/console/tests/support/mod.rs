//! What the console crate's tests share beyond `ferric-testkit`: a console service on a
//! loopback port, console actors whose events land in a channel, and viewers of that service.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

use ferric_console::{
    ConsoleActor, ConsoleArgs, ConsoleConfig, ConsoleContext, ConsoleEvent, ConsoleMsg,
    ConsoleService, ConsoleSettings, ConsoleTarget, SessionState,
};
use ferric_model::NodeId;
use ractor::{Actor, ActorRef};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

pub use ferric_testkit::viewer::{
    close_frame, next_json as next_text, read_control, read_until, type_keys, Read, Ws, WAIT,
};

pub const SECRET: &str = "test-console-secret";

pub fn settings(runtime_dir: &std::path::Path) -> ConsoleSettings {
    let mut s = ConsoleSettings::new("c-test", runtime_dir);
    s.open_timeout = Duration::from_secs(15);
    s
}

pub async fn service(settings: ConsoleSettings) -> ConsoleService {
    ConsoleService::start(ConsoleConfig::new(SECRET, settings))
        .await
        .expect("console service starts")
}

/// A console actor (unlinked) and the channel of its events.
pub struct Console {
    pub node: NodeId,
    pub actor: ActorRef<ConsoleMsg>,
    pub events: mpsc::UnboundedReceiver<ConsoleEvent>,
}

impl Console {
    pub async fn start(ctx: Arc<ConsoleContext>, node: NodeId, target: ConsoleTarget) -> Console {
        let (tx, events) = mpsc::unbounded_channel();
        let args = ConsoleArgs {
            node,
            target,
            ctx,
            record: None,
            notify: Arc::new(move |e| {
                let _ = tx.send(e);
            }),
        };
        let (actor, _) = Actor::spawn(None, ConsoleActor, args)
            .await
            .expect("console actor starts");
        Console {
            node,
            actor,
            events,
        }
    }

    /// Waits for a session state matching `pred`; returns it.
    pub async fn wait_state(
        &mut self,
        what: &str,
        pred: impl Fn(&SessionState) -> bool,
    ) -> SessionState {
        let mut seen = Vec::new();
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(ConsoleEvent::State { state, .. }) if pred(&state) => return state,
                    Some(ConsoleEvent::State { state, .. }) => seen.push(state),
                    None => panic!("console actor ended while waiting for {what}"),
                }
            }
        };
        match timeout(WAIT, wait).await {
            Ok(state) => state,
            Err(_) => panic!("no {what} state in {WAIT:?}; saw {seen:?}"),
        }
    }

    pub async fn wait_active(&mut self) -> Option<u32> {
        match self
            .wait_state("active", |s| matches!(s, SessionState::Active { .. }))
            .await
        {
            SessionState::Active { pid, .. } => pid,
            _ => unreachable!(),
        }
    }

    pub async fn status(&self) -> ferric_console::ConsoleStatus {
        ractor::call_t!(self.actor, ConsoleMsg::Status, 5000).expect("status answers")
    }
}

pub fn url(addr: std::net::SocketAddr, node: &NodeId, mode: &str) -> String {
    format!("ws://{addr}/console/{node}/ws?mode={mode}")
}

/// Opens a viewer; Err(status) if refused before the upgrade.
pub async fn try_connect(url: &str, auth: Option<&str>) -> Result<Ws, u16> {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    ferric_testkit::viewer::connect(url, &headers)
        .await
        .map(|(ws, _)| ws)
        .map_err(|r| r.status)
}

/// Opens a viewer with the right secret and reads its `hello`.
pub async fn viewer(addr: std::net::SocketAddr, node: &NodeId, mode: &str) -> (Ws, Value) {
    let mut ws = try_connect(&url(addr, node, mode), Some(&format!("Bearer {SECRET}")))
        .await
        .expect("viewer accepted");
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// The runtime dir's pid file for `node`, if any.
pub fn pid_file(runtime_dir: &Path, node: &str) -> Option<String> {
    std::fs::read_to_string(runtime_dir.join("consoles").join(format!("{node}.pid"))).ok()
}
