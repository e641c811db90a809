//! The fleet: every simulated system (one lock each, so requests to different systems never wait
//! on each other), the id index, the credentials, the command log, and the timers that complete
//! graceful operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Behaviour, BehaviourPatch, SimConfig, SimError};
use crate::log::{CommandLog, Record};
use crate::system::{Boot, Power, ResetType, System, Timer};

#[derive(Debug)]
pub struct SimState {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    systems: Vec<Mutex<System>>,
    username: String,
    password: String,
    log: CommandLog,
    seed: u64,
    /// Set when the server stops, so that armed timers end instead of outliving it.
    closed: watch::Sender<bool>,
}

/// A system as the control API shows it (not the Redfish view).
#[derive(Debug, Clone, Serialize)]
pub struct SystemView {
    pub id: String,
    pub power: Power,
    pub boot: Boot,
    pub behaviour: Behaviour,
    pub pending: Option<PendingView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingView {
    /// The reset that started it: `GracefulShutdown` or `GracefulRestart`.
    pub reset: &'static str,
    /// Milliseconds until it completes; `None`: it never does.
    pub due_in_ms: Option<u64>,
}

impl SimState {
    pub fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        cfg.validate()?;
        let log = CommandLog::open(cfg.log_path.as_deref(), cfg.log_memory_entries).map_err(
            |source| SimError::OpenLog {
                path: cfg.log_path.clone().unwrap_or_default(),
                source,
            },
        )?;
        let ids: Vec<String> = (0..cfg.systems).map(|i| cfg.system_id(i)).collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let systems = (0..cfg.systems)
            .map(|i| {
                // Distinct, seed-determined streams per system.
                let seed = cfg.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                Mutex::new(System::new(cfg.behaviour.clone(), seed))
            })
            .collect();
        Ok(Arc::new(SimState {
            ids,
            index,
            systems,
            username: cfg.username,
            password: cfg.password,
            log,
            seed: cfg.seed,
            closed: watch::Sender::new(false),
        }))
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn log(&self) -> &CommandLog {
        &self.log
    }

    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(crate) fn id(&self, idx: usize) -> &str {
        &self.ids[idx]
    }

    pub(crate) fn lock(&self, idx: usize) -> MutexGuard<'_, System> {
        // Transitions never panic while holding it, so a poisoned lock still holds a valid state.
        self.systems[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks an `Authorization` header value against the fleet's Basic credentials.
    pub(crate) fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some((scheme, b64)) = std::str::from_utf8(h)
            .ok()
            .and_then(|s| s.trim().split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let b64 = b64.trim();
        let Ok(decoded) = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        else {
            return false;
        };
        let Some((user, pass)) = std::str::from_utf8(&decoded)
            .ok()
            .and_then(|s| s.split_once(':'))
        else {
            return false;
        };
        user == self.username && pass == self.password
    }

    pub(crate) fn record(&self, r: Record) {
        self.log.append(r);
    }

    /// Applies a reset to one system and arms the timer it asks for.
    pub(crate) fn reset(self: &Arc<Self>, idx: usize, reset: ResetType) {
        let timer = self.lock(idx).reset(reset, Instant::now());
        if let Some(t) = timer {
            self.arm(idx, t);
        }
    }

    fn arm(self: &Arc<Self>, idx: usize, timer: Timer) {
        // Weak: a timer must not keep a stopped simulator alive.
        let state: Weak<Self> = Arc::downgrade(self);
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(timer.due) => {}
                // Also ends when the state (and its sender) is gone.
                _ = async { let _ = closed.wait_for(|c| *c).await; } => return,
            }
            if let Some(state) = state.upgrade() {
                state.lock(idx).timer_fired(timer.token);
            }
        });
    }

    /// Applies a validated behaviour patch (and its `power`, if any) to one system.
    pub(crate) fn patch(&self, idx: usize, patch: &BehaviourPatch) {
        let mut s = self.lock(idx);
        patch.apply_to(&mut s.behaviour);
        if let Some(p) = patch.power {
            s.set_power(p);
        }
    }

    pub fn view(&self, id: &str) -> Option<SystemView> {
        self.index_of(id)
            .map(|idx| self.view_of(idx, Instant::now()))
    }

    pub fn views(&self) -> Vec<SystemView> {
        let now = Instant::now();
        (0..self.systems.len())
            .map(|idx| self.view_of(idx, now))
            .collect()
    }

    fn view_of(&self, idx: usize, now: Instant) -> SystemView {
        let s = self.lock(idx);
        SystemView {
            id: self.ids[idx].clone(),
            power: s.power(),
            boot: s.boot,
            behaviour: s.behaviour.clone(),
            pending: s.pending().map(|p| PendingView {
                reset: p.kind.as_str(),
                due_in_ms: s.pending_due_in(now).map(|d| d.as_millis() as u64),
            }),
        }
    }

    /// Stops the timers of graceful operations still pending (they will never complete).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}
