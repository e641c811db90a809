//! The fleet: every simulated system (one lock each, so requests to different systems never wait
//! on each other), the id index, the credentials, the command log, the timers that complete
//! graceful operations, and the wiring of each boot to the parts inside the machine (agent task,
//! serial port).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::agent::{
    self, Agent, AgentConfig, AgentView, FleetAgentSpec, Heartbeat, Inspection, LastStatus,
};
use crate::commands::Effect;
use crate::config::{Behaviour, BehaviourPatch, SimConfig, SimError};
use crate::hardware::{self, Nic};
use crate::log::{CommandLog, LogOp, Record};
use crate::serial::{Busy, OutputSender};
use crate::system::{Boot, BootTarget, Power, ResetType, Run, System, Timer};

#[derive(Debug)]
pub struct SimState {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    systems: Vec<Mutex<System>>,
    username: String,
    password: String,
    log: CommandLog,
    seed: u64,
    /// Set when the server stops, so that armed timers, agents and serial sessions end instead of
    /// outliving it.
    closed: watch::Sender<bool>,
    /// Numbers agent runs fleet-wide, so a task can tell whether its run is still current.
    agent_runs: AtomicU64,
    /// Built on an agent's first request (most fleets never have an agent).
    agent_client: OnceLock<Result<reqwest::Client, String>>,
    /// Bounds the agents' requests in flight fleet-wide.
    agent_slots: Arc<Semaphore>,
    /// Where the server listens (reachable form), once it serves: agents' default
    /// `callback_url`s point at it.
    listen: Mutex<Option<SocketAddr>>,
}

/// A system as the control API shows it (not the Redfish view).
#[derive(Debug, Clone, Serialize)]
pub struct SystemView {
    pub id: String,
    pub power: Power,
    pub boot: Boot,
    pub behaviour: Behaviour,
    pub pending: Option<PendingView>,
    /// The current boot; `None` while off.
    pub run: Option<Run>,
    pub agent: Option<AgentView>,
    pub serial: SerialView,
    /// The machine's NICs (fixed by its index; see `hardware`).
    pub nics: Vec<Nic>,
    /// The inventory its agent sends when inspecting (IPA's shape). Only in the view of one
    /// system (`GET /sim/systems/{id}`): the fleet's list stays small.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SerialView {
    /// The open session's number, if one is open.
    pub session: Option<u64>,
    /// Output kept for the next session.
    pub kept_bytes: usize,
    /// Output dropped because a session did not read it.
    pub overrun_bytes: u64,
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
            agent_runs: AtomicU64::new(0),
            agent_client: OnceLock::new(),
            agent_slots: Arc::new(Semaphore::new(agent::MAX_IN_FLIGHT)),
            listen: Mutex::new(None),
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

    /// A receiver for [`stopped`].
    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Runs a transition of one system, then tells the parts inside the machine about a boot or
    /// a power off it caused. Every change of power goes through here.
    fn transition<R>(self: &Arc<Self>, idx: usize, f: impl FnOnce(&mut System) -> R) -> R {
        let mut s = self.lock(idx);
        let before = s.run();
        let out = f(&mut s);
        let after = s.run();
        if before != after {
            self.on_run_change(idx, &mut s, after);
        }
        out
    }

    fn on_run_change(self: &Arc<Self>, idx: usize, s: &mut System, run: Option<Run>) {
        if let Some(r) = run {
            s.serial.boot(&self.ids[idx], r.from);
        }
        if let Some(agent) = s.agent.as_mut() {
            agent.halt();
            if let Some(r) = run.filter(|r| r.from == BootTarget::Pxe) {
                self.start_agent(idx, agent, r);
            }
        }
    }

    fn start_agent(self: &Arc<Self>, idx: usize, agent: &mut Agent, run: Run) {
        let run_id = self.agent_runs.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(ticket) = agent.start(run.boot, run_id, self, idx) {
            tokio::spawn(agent::run(ticket));
        }
    }

    /// The address the server listens at, as a client reaches it; `None` until it serves.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        *self.listen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the address the server listens at (a wildcard address becomes loopback). Runs
    /// started after this heartbeat with a `callback_url` pointing at it.
    pub fn set_listen_addr(&self, addr: SocketAddr) {
        *self.listen.lock().unwrap_or_else(|e| e.into_inner()) = Some(agent::reachable(addr));
    }

    /// Finishes asynchronous command `id` of system `idx`'s run `run_id` after `after` (the
    /// agent's `command_ms`), unless the simulator stops first.
    pub(crate) fn finish_command_after(
        self: &Arc<Self>,
        idx: usize,
        run_id: u64,
        id: String,
        after: Duration,
    ) {
        // Weak: a command must not keep a stopped simulator alive.
        let state: Weak<Self> = Arc::downgrade(self);
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = stopped(&mut closed) => return,
            }
            if let Some(state) = state.upgrade() {
                state.finish_command(idx, run_id, &id);
            }
        });
    }

    /// Command `id` of run `run_id` is done; `standby.power_off` and `standby.run_image` then
    /// power the machine off or reboot it the way a BMC's `ForceOff` and `ForceRestart` do (the
    /// log records that as an `agent_power` entry).
    fn finish_command(self: &Arc<Self>, idx: usize, run_id: u64, id: &str) {
        let now = Instant::now();
        let done = self.transition(idx, |s| {
            let agent = s.agent.as_mut()?;
            let node = agent.config.node.clone();
            let reset = match agent.finish_command(run_id, id)? {
                Effect::PowerOff => ResetType::ForceOff,
                Effect::Reboot => ResetType::ForceRestart,
                Effect::None | Effect::Wrote(_) => return None,
            };
            // Both are immediate: no timer to arm.
            let _ = s.reset(reset, now);
            Some((reset, node))
        });
        if let Some((reset, node)) = done {
            let system = &self.ids[idx];
            self.log.append(Record {
                action: Some(reset.as_str().to_string()),
                client: Some(agent::USER_AGENT.to_string()),
                node: Some(node),
                detail: Some(id.to_string()),
                ..Record::new(
                    LogOp::AgentPower,
                    system,
                    "POST",
                    format!("/agent/{system}/v1/commands/"),
                )
            });
        }
    }

    pub(crate) fn agent_client(&self) -> Result<reqwest::Client, String> {
        self.agent_client.get_or_init(agent::client).clone()
    }

    pub(crate) fn agent_slots(&self) -> Arc<Semaphore> {
        self.agent_slots.clone()
    }

    /// Configures (or with `None` removes) one system's agent. A system running the ramdisk now
    /// restarts its agent with the new configuration (a new run: count and token start over).
    pub(crate) fn set_agent(self: &Arc<Self>, idx: usize, config: Option<AgentConfig>) {
        let mut s = self.lock(idx);
        if let Some(old) = s.agent.as_mut() {
            old.halt();
        }
        s.agent = config.map(Agent::new);
        let run = s.run();
        if let (Some(agent), Some(r)) = (s.agent.as_mut(), run) {
            if r.from == BootTarget::Pxe {
                self.start_agent(idx, agent, r);
            }
        }
    }

    /// Configures the agents of every system named in `spec.nodes`; all are checked before any
    /// is set. Returns how many were set.
    pub fn configure_agents(self: &Arc<Self>, spec: &FleetAgentSpec) -> Result<usize, SimError> {
        let unknown: Vec<&str> = spec
            .nodes
            .keys()
            .filter(|id| self.index_of(id).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let mut list = unknown[..unknown.len().min(10)].join(", ");
            if unknown.len() > 10 {
                list.push_str(&format!(" and {} more", unknown.len() - 10));
            }
            return Err(SimError::UnknownSystems(list));
        }
        let mut configs = Vec::with_capacity(spec.nodes.len());
        for (id, idx) in spec
            .nodes
            .keys()
            .filter_map(|id| Some((id, self.index_of(id)?)))
        {
            if let Some(one) = spec.for_system(id) {
                configs.push((idx, one.validate()?));
            }
        }
        let n = configs.len();
        for (idx, config) in configs {
            self.set_agent(idx, Some(config));
        }
        Ok(n)
    }

    /// Whether an agent run may send a request now (see `Agent::may_send`).
    pub(crate) fn agent_may_send(&self, idx: usize, run_id: u64) -> bool {
        self.lock(idx)
            .agent
            .as_mut()
            .is_some_and(|a| a.may_send(run_id))
    }

    /// Records a heartbeat an agent sent (in the log, and in its run's facts if the run is still
    /// current). Returns whether the run goes on.
    pub(crate) fn heartbeat_done(&self, idx: usize, hb: Heartbeat, config: &AgentConfig) -> bool {
        let (status, detail) = match &hb.status {
            LastStatus::Http(code) => (Some(*code), None),
            LastStatus::Error(e) => (None, Some(e.clone())),
        };
        let record = Record {
            received: hb.sent_at,
            action: hb.failing.then(|| "error".to_string()),
            status,
            client: Some(agent::USER_AGENT.to_string()),
            node: Some(config.node.clone()),
            seq: Some(hb.n),
            detail,
            ..Record::new(
                LogOp::Heartbeat,
                &self.ids[idx],
                "POST",
                config.heartbeat_url().path().to_string(),
            )
        };
        // Under the system's lock, so the facts and the log never disagree for a reader.
        let mut s = self.lock(idx);
        self.log.append(record);
        s.agent
            .as_mut()
            .is_some_and(|a| a.heartbeat_done(hb.run_id, hb.n, hb.status))
    }

    /// Records the inspection post an agent sent (in the log, and in its run's facts if the run
    /// is still current). Returns whether the run goes on.
    pub(crate) fn inspection_done(
        &self,
        idx: usize,
        insp: Inspection,
        config: &AgentConfig,
    ) -> bool {
        let (status, detail) = match &insp.status {
            LastStatus::Http(code) => (Some(*code), insp.refusal),
            LastStatus::Error(e) => (None, Some(e.clone())),
        };
        let record = Record {
            received: insp.sent_at,
            status,
            client: Some(agent::USER_AGENT.to_string()),
            node: Some(config.node.clone()),
            detail,
            ..Record::new(
                LogOp::Inspection,
                &self.ids[idx],
                "POST",
                config.inspection_url().path().to_string(),
            )
        };
        // Under the system's lock, so the facts and the log never disagree for a reader.
        let mut s = self.lock(idx);
        self.log.append(record);
        s.agent
            .as_mut()
            .is_some_and(|a| a.inspection_done(insp.run_id, insp.status, insp.uuid))
    }

    /// Records a lookup of system `idx`'s agent; whether its run goes on.
    pub(crate) fn lookup_done(
        &self,
        idx: usize,
        found: agent::Lookup,
        config: &AgentConfig,
        path: &str,
    ) -> bool {
        let (status, detail) = match &found.status {
            LastStatus::Http(code) => (Some(*code), found.refusal),
            LastStatus::Error(e) => (None, Some(e.clone())),
        };
        let record = Record {
            received: found.sent_at,
            status,
            client: Some(agent::USER_AGENT.to_string()),
            node: Some(config.node.clone()),
            detail,
            ..Record::new(LogOp::Lookup, &self.ids[idx], "GET", path.to_string())
        };
        let mut s = self.lock(idx);
        self.log.append(record);
        s.agent
            .as_mut()
            .is_some_and(|a| a.lookup_done(found.run_id, found.status, found.token.as_deref()))
    }

    /// Attaches a serial session to one system.
    pub(crate) fn attach_serial(&self, idx: usize, out: OutputSender) -> Result<u64, Busy> {
        self.lock(idx).serial.attach(out)
    }

    /// Input from session `seq`; ignored when that session is no longer the attached one, and
    /// while the machine is off.
    pub(crate) fn serial_input(&self, idx: usize, seq: u64, bytes: &[u8]) {
        let mut s = self.lock(idx);
        if s.serial.session() == Some(seq) && s.power() == Power::On {
            s.serial.input(&self.ids[idx], bytes);
        }
    }

    /// Session `seq` ended by itself; logs its close unless it was deactivated before.
    pub(crate) fn end_serial(&self, idx: usize, seq: u64, why: &str) {
        let mut s = self.lock(idx);
        if s.serial.detach(seq) {
            self.log_serial_close(idx, seq, "GET", why, None);
        }
    }

    /// Closes the open session, if any (`sol deactivate`), on behalf of `client`. Returns its
    /// number.
    pub(crate) fn deactivate_serial(&self, idx: usize, client: Option<String>) -> Option<u64> {
        let mut s = self.lock(idx);
        let seq = s.serial.deactivate()?;
        self.log_serial_close(idx, seq, "DELETE", "deactivated", client);
        Some(seq)
    }

    /// `method`: the request that ended the session (`DELETE`), or the session's own (`GET`).
    fn log_serial_close(
        &self,
        idx: usize,
        seq: u64,
        method: &str,
        why: &str,
        client: Option<String>,
    ) {
        let id = &self.ids[idx];
        self.log.append(Record {
            seq: Some(seq),
            detail: Some(why.to_string()),
            client,
            ..Record::new(
                LogOp::SerialClose,
                id,
                method,
                format!("/sim/systems/{id}/serial"),
            )
        });
    }

    /// Applies a reset to one system and arms the timer it asks for.
    pub(crate) fn reset(self: &Arc<Self>, idx: usize, reset: ResetType) {
        let timer = self.transition(idx, |s| s.reset(reset, Instant::now()));
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
                _ = stopped(&mut closed) => return,
            }
            if let Some(state) = state.upgrade() {
                state.transition(idx, |s| s.timer_fired(timer.token));
            }
        });
    }

    /// Applies a validated behaviour patch (and its `power`, if any) to one system.
    pub(crate) fn patch(self: &Arc<Self>, idx: usize, patch: &BehaviourPatch) {
        self.transition(idx, |s| {
            patch.apply_to(&mut s.behaviour);
            if let Some(p) = patch.power {
                s.set_power(p);
            }
        });
    }

    /// One system's view, with its inventory.
    pub fn view(&self, id: &str) -> Option<SystemView> {
        self.index_of(id).map(|idx| SystemView {
            inventory: Some(hardware::inventory(id, idx)),
            ..self.view_of(idx, Instant::now())
        })
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
            run: s.run(),
            agent: s.agent.as_ref().map(Agent::view),
            serial: SerialView {
                session: s.serial.session(),
                kept_bytes: s.serial.kept(),
                overrun_bytes: s.serial.overrun(),
            },
            nics: hardware::nics(idx),
            inventory: None,
        }
    }

    /// Stops the timers of graceful operations still pending (they will never complete), the
    /// agents and the serial sessions.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// Completes when the simulator stops (or is gone). Drops the watch guard before returning, so
/// the caller's future stays `Send`.
pub(crate) async fn stopped(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}
