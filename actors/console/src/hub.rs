//! `ConsoleHub`: the fan-out of one console session to its viewers.
//!
//! - Every viewer receives the output; a new viewer first gets the last `replay_bytes` of it.
//! - One viewer writes: the first `rw` viewer takes the writer slot; later `rw` viewers are
//!   read-only until it is free, and then the longest-waiting one is promoted (and told so).
//! - Back-pressure: the session never waits for a viewer. Each viewer has a bounded queue; a
//!   viewer whose queue is full is disconnected (close code [`CLOSE_TOO_SLOW`]), the others and
//!   the session are not slowed.
//!
//! The hub outlives reconnects of the session: viewers stay attached and see `state` messages
//! while the session is reopened. It is closed (every viewer disconnected with one close code)
//! when the console stops.

use bytes::Bytes;
use ferric_model::{ControlFrame, NodeId, ViewerMode};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

// The close codes are the console wire contract's; re-exported so that `hub::CLOSE_*` keeps
// naming them for the crate's users.
pub use ferric_model::console_wire::{
    CLOSE_DISABLED, CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_NOT_HERE, CLOSE_OWNER_CHANGED, CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_VIEWERS, CLOSE_TOO_SLOW,
};

/// Why a viewer is (or all viewers are) disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

/// The session's state as viewers and the node see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// The first attempt to open the session is under way.
    Connecting,
    /// Open: bytes flow. `pid` is the local process (ipmitool), if any.
    Active { since_ms: u64, pid: Option<u32> },
    /// The session ended or could not be opened; the next attempt is in `retry_in_ms`.
    Reconnecting {
        error: String,
        attempt: u32,
        retry_in_ms: u64,
    },
}

impl SessionState {
    /// `connecting`, `active` or `reconnecting`.
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Connecting => "connecting",
            SessionState::Active { .. } => "active",
            SessionState::Reconnecting { .. } => "reconnecting",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            SessionState::Reconnecting { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What a viewer's connection sends, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerEvent {
    /// Console output: a binary frame.
    Output(Bytes),
    /// A control message: a text frame of JSON.
    Control(String),
}

/// Fan-out limits.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Output kept for new viewers.
    pub replay_bytes: usize,
    /// Events queued per viewer before it counts as too slow.
    pub viewer_queue: usize,
    /// Viewers per console.
    pub max_viewers: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            replay_bytes: 64 * 1024,
            viewer_queue: 256,
            max_viewers: 32,
        }
    }
}

/// A viewer's disconnect signal: set once, observed by the viewer's connection task.
#[derive(Debug, Default)]
pub struct Kick {
    reason: Mutex<Option<Close>>,
    notify: Notify,
}

impl Kick {
    /// Sets the reason (the first one wins) and wakes the connection task.
    pub fn kick(&self, close: Close) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(close);
        }
        drop(r);
        self.notify.notify_one();
    }

    pub fn reason(&self) -> Option<Close> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once kicked (immediately if already kicked).
    pub async fn kicked(&self) -> Close {
        loop {
            if let Some(c) = self.reason() {
                return c;
            }
            self.notify.notified().await;
        }
    }
}

struct Slot {
    tx: mpsc::Sender<ViewerEvent>,
    kick: Arc<Kick>,
    wants_write: bool,
}

struct Inner {
    replay: VecDeque<u8>,
    viewers: BTreeMap<u64, Slot>,
    next_id: u64,
    writer: Option<u64>,
    state: SessionState,
    input: Option<mpsc::Sender<Bytes>>,
    closed: Option<Close>,
}

/// The fan-out of one node's console. Cheap to share (`Arc`).
pub struct ConsoleHub {
    node: NodeId,
    conductor: String,
    limits: HubLimits,
    inner: Mutex<Inner>,
}

/// One attached viewer. Dropping it detaches it (and frees the writer slot).
pub struct Viewer {
    pub id: u64,
    /// Whether this viewer holds the writer slot at attach time (promotion comes as a
    /// `writer` control event).
    pub writer: bool,
    /// The `hello` message (JSON text).
    pub hello: String,
    /// The current session state message (JSON text).
    pub state: String,
    /// Recent output, to send before anything from `events`.
    pub replay: Vec<u8>,
    pub events: mpsc::Receiver<ViewerEvent>,
    pub kick: Arc<Kick>,
    hub: Arc<ConsoleHub>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.detach(self.id);
    }
}

impl Viewer {
    /// Keystrokes from this viewer: forwarded to the session if this viewer is the writer and
    /// the session is active, else dropped. Waits only for the session's own input queue.
    pub async fn input(&self, bytes: Bytes) -> InputOutcome {
        if bytes.is_empty() {
            return InputOutcome::Keepalive;
        }
        let tx = {
            let inner = self.hub.lock();
            if inner.writer != Some(self.id) {
                return InputOutcome::ReadOnly;
            }
            match &inner.input {
                Some(tx) => tx.clone(),
                None => return InputOutcome::NotActive,
            }
        };
        match tx.send(bytes).await {
            Ok(()) => InputOutcome::Sent,
            Err(_) => InputOutcome::NotActive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOutcome {
    Sent,
    /// An empty frame: resets the idle timer, sends nothing.
    Keepalive,
    ReadOnly,
    /// The session is (re)connecting: keystrokes are dropped.
    NotActive,
}

fn state_json(state: &SessionState) -> String {
    let retry_in_ms = match state {
        SessionState::Reconnecting { retry_in_ms, .. } => Some(*retry_in_ms),
        _ => None,
    };
    ControlFrame::State {
        state: state.name().to_string(),
        error: state.error().map(str::to_string),
        retry_in_ms,
    }
    .to_text()
}

fn writer_json(writer: bool) -> String {
    ControlFrame::Writer { writer }.to_text()
}

impl ConsoleHub {
    pub fn new(node: NodeId, conductor: &str, limits: HubLimits) -> Arc<Self> {
        Arc::new(ConsoleHub {
            node,
            conductor: conductor.to_string(),
            inner: Mutex::new(Inner {
                replay: VecDeque::with_capacity(limits.replay_bytes.min(64 * 1024)),
                viewers: BTreeMap::new(),
                next_id: 1,
                writer: None,
                state: SessionState::Connecting,
                input: None,
                closed: None,
            }),
            limits,
        })
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a viewer (`rw`: it wants to write). Refused when the hub is closed or full.
    pub fn attach(self: &Arc<Self>, rw: bool) -> Result<Viewer, Close> {
        let mut inner = self.lock();
        if let Some(c) = &inner.closed {
            return Err(c.clone());
        }
        if inner.viewers.len() >= self.limits.max_viewers {
            return Err(Close::new(
                CLOSE_TOO_MANY_VIEWERS,
                format!(
                    "this console already has {} viewers",
                    self.limits.max_viewers
                ),
            ));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let writer = rw && inner.writer.is_none();
        if writer {
            inner.writer = Some(id);
        }
        let (tx, events) = mpsc::channel(self.limits.viewer_queue.max(1));
        let kick = Arc::new(Kick::default());
        inner.viewers.insert(
            id,
            Slot {
                tx,
                kick: kick.clone(),
                wants_write: rw,
            },
        );
        let hello = ControlFrame::Hello {
            node: self.node.to_string(),
            conductor: self.conductor.clone(),
            writer,
            mode: if rw {
                ViewerMode::ReadWrite
            } else {
                ViewerMode::ReadOnly
            },
            state: inner.state.name().to_string(),
        }
        .to_text();
        Ok(Viewer {
            id,
            writer,
            hello,
            state: state_json(&inner.state),
            replay: inner.replay.iter().copied().collect(),
            events,
            kick,
            hub: self.clone(),
        })
    }

    fn detach(&self, id: u64) {
        let mut inner = self.lock();
        inner.viewers.remove(&id);
        if inner.writer == Some(id) {
            inner.writer = None;
            promote(&mut inner);
        }
    }

    /// Console output from the session: kept for replay and queued to every viewer.
    pub fn publish(&self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return;
        }
        let cap = self.limits.replay_bytes;
        if cap > 0 {
            let tail = &bytes[bytes.len().saturating_sub(cap)..];
            let excess = (inner.replay.len() + tail.len()).saturating_sub(cap);
            inner.replay.drain(..excess);
            inner.replay.extend(tail);
        }
        broadcast(&mut inner, ViewerEvent::Output(bytes));
    }

    /// A new session state: remembered for new viewers and sent to every viewer.
    pub fn set_state(&self, state: SessionState) {
        let mut inner = self.lock();
        if inner.closed.is_some() || inner.state == state {
            return;
        }
        let msg = state_json(&state);
        inner.state = state;
        broadcast(&mut inner, ViewerEvent::Control(msg));
    }

    pub fn state(&self) -> SessionState {
        self.lock().state.clone()
    }

    /// Where the writer's keystrokes go (None while the session is not active).
    pub fn set_input(&self, input: Option<mpsc::Sender<Bytes>>) {
        self.lock().input = input;
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Disconnects every viewer with `close` and refuses new ones. Idempotent (the first close
    /// wins).
    pub fn close(&self, close: Close) {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return;
        }
        inner.closed = Some(close.clone());
        inner.input = None;
        inner.writer = None;
        for (_, slot) in std::mem::take(&mut inner.viewers) {
            slot.kick.kick(close.clone());
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }
}

/// Gives the free writer slot to the longest-waiting `rw` viewer, if any.
fn promote(inner: &mut Inner) {
    let next = inner
        .viewers
        .iter()
        .find(|(_, s)| s.wants_write)
        .map(|(id, _)| *id);
    if let Some(id) = next {
        inner.writer = Some(id);
        let slot = &inner.viewers[&id];
        if slot
            .tx
            .try_send(ViewerEvent::Control(writer_json(true)))
            .is_err()
        {
            // Too slow even for this: it is kicked at the next output anyway.
            slot.kick.kick(too_slow());
        }
    }
}

fn too_slow() -> Close {
    Close::new(
        CLOSE_TOO_SLOW,
        "viewer too slow: it fell behind the console output; reconnect",
    )
}

/// Queues `event` to every viewer; viewers whose queue is full are kicked and removed.
fn broadcast(inner: &mut Inner, event: ViewerEvent) {
    let mut dropped = Vec::new();
    for (id, slot) in &inner.viewers {
        match slot.tx.try_send(event.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.kick.kick(too_slow());
                dropped.push(*id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*id),
        }
    }
    if dropped.is_empty() {
        return;
    }
    for id in dropped {
        inner.viewers.remove(&id);
        if inner.writer == Some(id) {
            inner.writer = None;
        }
    }
    if inner.writer.is_none() {
        promote(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(limits: HubLimits) -> Arc<ConsoleHub> {
        ConsoleHub::new(NodeId::new_random(), "c1", limits)
    }

    fn drain(v: &mut Viewer) -> Vec<ViewerEvent> {
        let mut out = Vec::new();
        while let Ok(e) = v.events.try_recv() {
            out.push(e);
        }
        out
    }

    #[test]
    fn replay_keeps_the_last_bytes() {
        let h = hub(HubLimits {
            replay_bytes: 5,
            ..HubLimits::default()
        });
        h.publish(Bytes::from_static(b"abc"));
        h.publish(Bytes::from_static(b"defg"));
        assert_eq!(h.attach(false).unwrap().replay, b"cdefg");
        h.publish(Bytes::from_static(b"0123456789"));
        assert_eq!(h.attach(false).unwrap().replay, b"56789");
    }

    #[test]
    fn one_writer_and_the_next_rw_viewer_is_promoted() {
        let h = hub(HubLimits::default());
        let ro = h.attach(false).unwrap();
        let w1 = h.attach(true).unwrap();
        let mut w2 = h.attach(true).unwrap();
        assert!(!ro.writer && w1.writer && !w2.writer);
        assert!(w1.hello.contains(r#""writer":true"#), "{}", w1.hello);
        drop(w1);
        assert_eq!(
            drain(&mut w2),
            vec![ViewerEvent::Control(writer_json(true))]
        );
        assert_eq!(h.lock().writer, Some(w2.id));
        drop(w2);
        assert_eq!(h.lock().writer, None);
        assert!(h.attach(true).unwrap().writer);
    }

    #[test]
    fn a_full_viewer_is_kicked_and_the_others_keep_receiving() {
        let h = hub(HubLimits {
            viewer_queue: 3,
            ..HubLimits::default()
        });
        let stuck = h.attach(true).unwrap();
        let mut reader = h.attach(true).unwrap();
        for i in 0..10u8 {
            h.publish(Bytes::from(vec![i]));
            drain(&mut reader);
        }
        assert_eq!(stuck.kick.reason().unwrap().code, CLOSE_TOO_SLOW);
        assert_eq!(h.viewers(), 1);
        // The reader took over the writer slot.
        assert_eq!(h.lock().writer, Some(reader.id));
        assert!(reader.kick.reason().is_none());
    }

    #[test]
    fn state_changes_reach_viewers_and_close_kicks_all() {
        let h = hub(HubLimits::default());
        let mut v = h.attach(false).unwrap();
        h.set_state(SessionState::Reconnecting {
            error: "ipmitool exited".into(),
            attempt: 1,
            retry_in_ms: 1000,
        });
        let ev = drain(&mut v);
        assert_eq!(
            ev,
            vec![ViewerEvent::Control(
                r#"{"type":"state","state":"reconnecting","error":"ipmitool exited","retry_in_ms":1000}"#.into()
            )]
        );
        h.close(Close::new(CLOSE_OWNER_CHANGED, "owner changed; reconnect"));
        assert_eq!(v.kick.reason().unwrap().code, CLOSE_OWNER_CHANGED);
        assert_eq!(h.attach(false).err().unwrap().code, CLOSE_OWNER_CHANGED);
    }

    #[tokio::test]
    async fn only_the_writer_types() {
        let h = hub(HubLimits::default());
        let w = h.attach(true).unwrap();
        let r = h.attach(false).unwrap();
        assert_eq!(
            w.input(Bytes::from_static(b"x")).await,
            InputOutcome::NotActive
        );
        let (tx, mut rx) = mpsc::channel(4);
        h.set_input(Some(tx));
        assert_eq!(w.input(Bytes::from_static(b"x")).await, InputOutcome::Sent);
        assert_eq!(
            r.input(Bytes::from_static(b"y")).await,
            InputOutcome::ReadOnly
        );
        assert_eq!(w.input(Bytes::new()).await, InputOutcome::Keepalive);
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"x"));
        assert!(rx.try_recv().is_err());
    }
}
