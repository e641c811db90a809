//! Test harness for the console side: a console service on a loopback port, console actors
//! whose events land in a channel, and a websocket viewer client (tokio-tungstenite) with
//! bounded reads.

#![allow(dead_code)]

use ferric_console::{
    ConsoleActor, ConsoleArgs, ConsoleConfig, ConsoleContext, ConsoleEvent, ConsoleMsg,
    ConsoleService, ConsoleSettings, ConsoleTarget, SessionState,
};
use ferric_model::NodeId;
use futures::{SinkExt, StreamExt};
use ractor::{Actor, ActorRef};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const SECRET: &str = "test-console-secret";
pub const WAIT: Duration = Duration::from_secs(20);

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
    let mut req = url.into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", a.parse().unwrap());
    }
    match timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake does not hang")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect {url}: {e}"),
    }
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

/// The next text frame as JSON (binary frames before it are an error).
pub async fn next_text(ws: &mut Ws) -> Value {
    match timeout(WAIT, ws.next()).await.expect("a frame in time") {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).expect("JSON text frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// What a viewer read: output bytes and control messages, in order.
#[derive(Debug, Default)]
pub struct Read {
    pub output: Vec<u8>,
    pub controls: Vec<Value>,
}

impl Read {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads until the output contains `needle` (panics after `WAIT` or on close).
pub async fn read_until(ws: &mut Ws, needle: &[u8]) -> Read {
    let mut got = Read::default();
    let read = async {
        while !find(&got.output, needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.output.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => got
                    .controls
                    .push(serde_json::from_str(t.as_str()).expect("JSON text frame")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!(
                    "expected output, got {other:?} after {:?}",
                    String::from_utf8_lossy(&got.output)
                ),
            }
        }
    };
    if timeout(WAIT, read).await.is_err() {
        panic!(
            "no {:?} in {WAIT:?}; got {:?} and {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&got.output),
            got.controls
        );
    }
    got
}

/// Reads until a control message matching `pred` arrives; returns it.
pub async fn read_control(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON text frame");
                    if pred(&v) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("expected a control message, got {other:?}"),
            }
        }
    };
    timeout(WAIT, read)
        .await
        .expect("the control message in time")
}

/// Reads (skipping output) until the close frame; its code and reason.
pub async fn close_frame(ws: &mut Ws) -> (u16, String) {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    timeout(WAIT, read).await.expect("a close frame in time")
}

pub async fn type_keys(ws: &mut Ws, keys: &[u8]) {
    ws.send(Message::binary(keys.to_vec()))
        .await
        .expect("send keystrokes");
}
