//! One console session, opened and pumped by one of the interface modules in `session/`. A
//! session function runs until the session ends on its own (`Lost`), cannot be opened
//! (`Failed`), or is cancelled; on cancel it closes the session cleanly (the BMC side freed)
//! before returning `Stopped`.

pub mod fake;
pub mod ipmitool;
pub mod sim;

use crate::context::ConsoleSettings;
use crate::hub::ConsoleHub;
use ferric_model::NodeId;
use tokio::sync::watch;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Cancelled and closed cleanly.
    Stopped,
    /// Was active, then ended on its own (BMC closed it, process died, websocket closed).
    Lost(String),
    /// Could not be opened.
    Failed(String),
}

/// Cancellation of a session: set to true, or the sender dropped.
#[derive(Clone)]
pub struct Cancel(watch::Receiver<bool>);

impl Cancel {
    pub fn new() -> (watch::Sender<bool>, Cancel) {
        let (tx, rx) = watch::channel(false);
        (tx, Cancel(rx))
    }

    /// Resolves once cancelled (at once if already).
    pub async fn cancelled(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// Told when the session becomes active.
pub trait Report: Send + Sync {
    fn active(&self, pid: Option<u32>);
}

/// What a session function gets.
pub struct Io<'a> {
    pub node: NodeId,
    pub hub: &'a ConsoleHub,
    pub settings: &'a ConsoleSettings,
    pub report: &'a dyn Report,
}
