//! `ConsoleRegistry`: node uuid -> the hub of its live console on this conductor, read by the
//! console server to attach viewers, written by console actors as they start and stop. Also
//! serialises the lifecycles of successive consoles of one node (a console enabled again right
//! after a stop waits until the previous session's cleanup, including its `sol deactivate`, is
//! done, so that cleanup can never close the new session).

use crate::hub::{Close, ConsoleHub};
use ferric_model::console_wire::CLOSE_OWNER_CHANGED;
use ferric_model::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

#[derive(Clone, Default)]
pub struct ConsoleRegistry {
    hubs: Arc<Mutex<HashMap<NodeId, Arc<ConsoleHub>>>>,
    lifecycles: Arc<Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for ConsoleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleRegistry")
            .field("consoles", &self.len())
            .finish()
    }
}

impl ConsoleRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The live console hub of `node`, if its console runs here.
    pub fn get(&self, node: &NodeId) -> Option<Arc<ConsoleHub>> {
        self.hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .filter(|h| !h.is_closed())
            .cloned()
    }

    /// Nodes whose console runs here.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.hubs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers `hub` for its node; a hub left by a previous console of the node is closed.
    pub(crate) fn insert(&self, hub: Arc<ConsoleHub>) {
        let old = self
            .hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hub.node(), hub);
        if let Some(old) = old {
            old.close(Close::new(
                CLOSE_OWNER_CHANGED,
                "console restarted; reconnect",
            ));
        }
    }

    /// Unregisters `hub` (only if it is still the node's registered hub).
    pub(crate) fn remove(&self, hub: &Arc<ConsoleHub>) {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if hubs.get(&hub.node()).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            hubs.remove(&hub.node());
        }
    }

    /// Closes every hub with `close` and empties the registry (conductor shutdown).
    pub fn close_all(&self, close: Close) {
        let hubs: Vec<_> = self
            .hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for hub in hubs {
            hub.close(close.clone());
        }
    }

    /// Waits until no other session of `node` is running or cleaning up, and holds that until
    /// the returned guard is dropped.
    pub(crate) async fn lifecycle(&self, node: NodeId) -> Lifecycle {
        let lock = self
            .lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_default()
            .clone();
        Lifecycle {
            node,
            guard: Some(lock.lock_owned().await),
            registry: self.clone(),
        }
    }
}

pub(crate) struct Lifecycle {
    node: NodeId,
    guard: Option<OwnedMutexGuard<()>>,
    registry: ConsoleRegistry,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.guard.take();
        // Forget the lock once nobody holds or waits for it (the map's own reference is the
        // only one left), so the map only holds nodes with consoles.
        let mut map = self
            .registry
            .lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.node)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.node);
        }
    }
}
