//! The deploy agent of a simulated machine (the heartbeat side of Ironic Python Agent): its
//! configuration from the control API, the facts of its latest run, the heartbeat it sends, and
//! the task that sends them.
//!
//! An agent runs while its system runs a boot from `Pxe` (the ramdisk); booting from anything
//! else runs no agent. Each such boot starts a fresh run: a new token (unless one is configured),
//! heartbeat numbers from 1. The first heartbeat goes out one interval after the boot (as an agent
//! needs a moment to start), the next one an interval after the previous one was answered, so a
//! slow API spreads heartbeats out instead of piling them up. One task per running agent; none for
//! a configured agent whose system is off or booted from disk. At most [`MAX_IN_FLIGHT`]
//! heartbeats are in flight fleet-wide (a heartbeat waits for a slot), so a fleet booted at once
//! holds a bounded number of connections to the API rather than one per machine; with an API
//! that hangs, heartbeats come less often than the interval says.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::config::SimError;
use crate::fleet::{stopped, SimState};

pub const MIN_INTERVAL_MS: u64 = 50;
pub const MAX_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
/// Bounds a whole heartbeat (connect, send, answer): a hung API must not stall the agent.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
pub const USER_AGENT: &str = "ferric-sim-agent";
/// Heartbeats in flight at once, fleet-wide; also the idle connections kept to the API.
pub const MAX_IN_FLIGHT: usize = 512;
/// The microversion heartbeats are sent with: the first one that knows `agent_status`.
pub const API_VERSION: &str = "1.72";
pub const AGENT_VERSION: &str = concat!("ferric-sim-", env!("CARGO_PKG_VERSION"));
const MAX_FIELD: usize = 255;

/// The body of `PUT /sim/systems/{id}/agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Base URL of the Ironic API; heartbeats go to `<api_url>/v1/heartbeat/<node>`.
    pub api_url: String,
    /// The node (uuid) this machine is enrolled as.
    pub node: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Sent as `agent_token`; by default a random token per boot.
    #[serde(default)]
    pub token: Option<String>,
    /// Stop (a hung ramdisk, still powered) after this many heartbeats of a boot.
    #[serde(default)]
    pub stop_after: Option<u64>,
    /// Heartbeats after the first `fail_after` of a boot carry `agent_status: error`.
    #[serde(default)]
    pub fail_after: Option<u64>,
    /// Sent as `callback_url`; by default `http://<system id>.ferric-sim.invalid:9999/` (a name
    /// that never resolves: there is no agent API behind it).
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// The body of `PUT /sim/agents`: one configuration for many systems, each with its node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetAgentSpec {
    pub api_url: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_after: Option<u64>,
    /// System id to node uuid.
    pub nodes: BTreeMap<String, String>,
}

impl FleetAgentSpec {
    /// The configuration of system `system`'s agent, or `None` when it is not in `nodes`.
    pub fn for_system(&self, system: &str) -> Option<AgentSpec> {
        self.nodes.get(system).map(|node| AgentSpec {
            api_url: self.api_url.clone(),
            node: node.clone(),
            interval_ms: self.interval_ms,
            token: self.token.clone(),
            stop_after: self.stop_after,
            fail_after: self.fail_after,
            callback_url: None,
        })
    }
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}

/// A validated agent configuration, as the control API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentConfig {
    pub api_url: String,
    pub node: String,
    pub interval_ms: u64,
    pub token: Option<String>,
    pub stop_after: Option<u64>,
    pub fail_after: Option<u64>,
    pub callback_url: Option<String>,
    /// Where heartbeats go; derived from `api_url` and `node` only.
    #[serde(skip)]
    heartbeat_url: Url,
}

/// Checks `url` is an absolute http(s) URL with a host and nothing a base URL cannot carry.
fn base_url(field: &str, url: &str) -> Result<Url, SimError> {
    let bad = |why: &str| SimError::InvalidConfig(format!("{field} {why} (got {url:?})"));
    let u = Url::parse(url).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(u)
}

fn check_text(field: &str, v: &str) -> Result<(), SimError> {
    if v.is_empty() || v.len() > MAX_FIELD || v.chars().any(|c| c.is_control() || c == ' ') {
        return Err(SimError::InvalidConfig(format!(
            "{field} must be 1 to {MAX_FIELD} characters without spaces or control characters"
        )));
    }
    Ok(())
}

impl AgentSpec {
    pub fn validate(self) -> Result<AgentConfig, SimError> {
        let api = base_url("api_url", &self.api_url)?;
        check_text("node", &self.node)?;
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(SimError::InvalidConfig(format!(
                "interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS} (got {})",
                self.interval_ms
            )));
        }
        if let Some(t) = &self.token {
            check_text("token", t)?;
        }
        if let Some(c) = &self.callback_url {
            base_url("callback_url", c)?;
        }
        let mut heartbeat_url = api;
        heartbeat_url
            .path_segments_mut()
            .map_err(|()| SimError::InvalidConfig("api_url cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(["v1", "heartbeat", &self.node]);
        Ok(AgentConfig {
            api_url: self.api_url,
            node: self.node,
            interval_ms: self.interval_ms,
            token: self.token,
            stop_after: self.stop_after,
            fail_after: self.fail_after,
            callback_url: self.callback_url,
            heartbeat_url,
        })
    }
}

impl AgentConfig {
    pub fn heartbeat_url(&self) -> &Url {
        &self.heartbeat_url
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The body of heartbeat `n` (from 1) of a run with `token` on system `system`.
    pub fn heartbeat_body(&self, system: &str, token: &str, n: u64) -> Value {
        let callback = self
            .callback_url
            .clone()
            .unwrap_or_else(|| format!("http://{system}.ferric-sim.invalid:9999/"));
        let mut body = json!({
            "callback_url": callback,
            "agent_version": AGENT_VERSION,
            "agent_token": token,
        });
        if self.fails_at(n) {
            body["agent_status"] = json!("error");
            body["agent_status_message"] = json!("simulated agent failure");
        }
        body
    }

    /// Whether heartbeat `n` reports the agent failed: every one after the first `fail_after`.
    pub fn fails_at(&self, n: u64) -> bool {
        self.fail_after.is_some_and(|f| n > f)
    }
}

/// The last heartbeat's outcome: the HTTP status answered, or why there was none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LastStatus {
    Http(u16),
    Error(String),
}

/// The facts of an agent's latest run; they stay after it ends until the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentFacts {
    /// Sending heartbeats now.
    pub running: bool,
    /// A heartbeat of the run was sent and is not answered yet. Once `running` and `in_flight`
    /// are both false, the run sends nothing more.
    pub in_flight: bool,
    /// The boot the run belongs to (`None`: no run since the agent was configured).
    pub boot: Option<u64>,
    pub heartbeats_sent: u64,
    pub last_status: Option<LastStatus>,
    /// The `agent_token` of the run.
    pub active_token: Option<String>,
}

/// An agent as the control API shows it: its configuration and its latest run.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    #[serde(flatten)]
    pub config: AgentConfig,
    #[serde(flatten)]
    pub facts: AgentFacts,
}

/// One system's agent: configuration, facts, and the handle of the running task.
#[derive(Debug)]
pub struct Agent {
    pub config: AgentConfig,
    pub facts: AgentFacts,
    /// Identifies the current run; a task whose run is no longer current stops.
    run_id: u64,
    /// Dropping it stops the current run's task at once.
    stop: Option<oneshot::Sender<()>>,
}

/// What a task needs to send the heartbeats of one run.
#[derive(Debug)]
pub(crate) struct RunTicket {
    pub state: Weak<SimState>,
    pub idx: usize,
    pub system: String,
    pub run_id: u64,
    pub config: AgentConfig,
    pub token: String,
    pub stop: oneshot::Receiver<()>,
    pub closed: watch::Receiver<bool>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Agent {
            config,
            facts: AgentFacts::default(),
            run_id: 0,
            stop: None,
        }
    }

    pub fn view(&self) -> AgentView {
        AgentView {
            config: self.config.clone(),
            facts: self.facts.clone(),
        }
    }

    /// Ends the current run, if any (power off, a restart, a new configuration): no heartbeat
    /// starts after this. One in flight is still seen through and counted, like a packet already
    /// on the wire.
    pub fn halt(&mut self) {
        self.facts.running = false;
        self.stop = None;
    }

    /// Starts a run for boot `boot`: fresh facts, and the ticket for its task (`None` when the
    /// run sends nothing: `stop_after: 0`).
    pub(crate) fn start(
        &mut self,
        boot: u64,
        run_id: u64,
        state: &Arc<SimState>,
        idx: usize,
    ) -> Option<RunTicket> {
        self.halt();
        let token = self.config.token.clone().unwrap_or_else(random_token);
        self.run_id = run_id;
        self.facts = AgentFacts {
            running: self.config.stop_after != Some(0),
            in_flight: false,
            boot: Some(boot),
            heartbeats_sent: 0,
            last_status: None,
            active_token: Some(token.clone()),
        };
        if !self.facts.running {
            return None;
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        self.stop = Some(stop_tx);
        Some(RunTicket {
            state: Arc::downgrade(state),
            idx,
            system: state.id(idx).to_string(),
            run_id,
            config: self.config.clone(),
            token,
            stop: stop_rx,
            closed: state.closed_signal(),
        })
    }

    /// Whether run `run_id` may send a heartbeat now (it is current and running); if so, the
    /// heartbeat is in flight from here.
    pub fn heartbeat_may_start(&mut self, run_id: u64) -> bool {
        let go = run_id == self.run_id && self.facts.running;
        if go {
            self.facts.in_flight = true;
        }
        go
    }

    /// Heartbeat `n` of run `run_id` was answered (or failed). Returns whether the run goes on.
    pub fn heartbeat_done(&mut self, run_id: u64, n: u64, status: LastStatus) -> bool {
        if run_id != self.run_id {
            return false;
        }
        self.facts.in_flight = false;
        self.facts.heartbeats_sent = n;
        self.facts.last_status = Some(status);
        if self.config.stop_after == Some(n) {
            self.halt();
        }
        self.facts.running
    }
}

/// 128 random bits as hex. Seeded per call from the standard library's per-process random hash
/// keys: unpredictable enough for a simulator's tokens, with no extra dependency.
fn random_token() -> String {
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

/// The HTTP client every agent shares: bounded timeouts, no redirects and no proxies, so a
/// heartbeat only ever goes to the configured API.
pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(HEARTBEAT_TIMEOUT)
        .connect_timeout(HEARTBEAT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .map_err(|e| describe(&e))
}

/// A reqwest error with its causes, without the URL (the log has the path).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("timed out after {}s", HEARTBEAT_TIMEOUT.as_secs());
    }
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let part = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.is_connect() => "connect failed".to_string(),
            Some(r) if r.is_request() => "request failed".to_string(),
            _ => err.to_string(),
        };
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
        cur = err.source();
    }
    text
}

/// Sends one heartbeat; the HTTP status or why there is none.
async fn send(client: &reqwest::Client, url: &Url, body: &Value) -> LastStatus {
    let sent = client
        .post(url.clone())
        .header("X-OpenStack-Ironic-API-Version", API_VERSION)
        .json(body)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read the answer so the connection can be reused.
            let _ = resp.bytes().await;
            LastStatus::Http(status)
        }
        Err(e) => LastStatus::Error(describe(&e)),
    }
}

/// The task of one agent run: a heartbeat every interval until the run ends, its system stops
/// existing, or the simulator stops.
pub(crate) async fn run(mut t: RunTicket) {
    let (client, slots) = match t.state.upgrade() {
        Some(state) => (state.agent_client(), state.agent_slots()),
        None => return,
    };
    let interval = t.config.interval();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut t.stop => return,
            // Also ends when the state (and its sender) is gone.
            _ = stopped(&mut t.closed) => return,
        }
        let _slot = tokio::select! {
            slot = slots.acquire() => match slot {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = &mut t.stop => return,
            _ = stopped(&mut t.closed) => return,
        };
        // Decided under the system's lock: nothing starts after a power off.
        match t.state.upgrade() {
            Some(state) if state.heartbeat_may_start(t.idx, t.run_id) => {}
            _ => return,
        }
        n += 1;
        let body = t.config.heartbeat_body(&t.system, &t.token, n);
        let sent_at = SystemTime::now();
        let status = match &client {
            Ok(c) => tokio::select! {
                s = send(c, t.config.heartbeat_url(), &body) => s,
                _ = stopped(&mut t.closed) => return,
            },
            Err(e) => LastStatus::Error(format!("no HTTP client: {e}")),
        };
        let Some(state) = t.state.upgrade() else {
            return;
        };
        let goes_on = state.heartbeat_done(
            t.idx,
            Heartbeat {
                run_id: t.run_id,
                n,
                sent_at,
                failing: t.config.fails_at(n),
                status,
            },
            &t.config,
        );
        if !goes_on {
            return;
        }
    }
}

/// One heartbeat sent, for the fleet to record.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    pub run_id: u64,
    pub n: u64,
    pub sent_at: SystemTime,
    pub failing: bool,
    pub status: LastStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(api_url: &str) -> AgentSpec {
        serde_json::from_value(json!({ "api_url": api_url, "node": "n-1" })).unwrap()
    }

    #[test]
    fn heartbeats_go_under_the_api_url_path() {
        let c = spec("http://127.0.0.1:6385").validate().unwrap();
        assert_eq!(
            c.heartbeat_url().as_str(),
            "http://127.0.0.1:6385/v1/heartbeat/n-1"
        );
        assert_eq!(c.interval_ms, DEFAULT_INTERVAL_MS);
        let c = spec("https://api.example:443/baremetal/")
            .validate()
            .unwrap();
        assert_eq!(
            c.heartbeat_url().as_str(),
            "https://api.example/baremetal/v1/heartbeat/n-1"
        );
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for url in [
            "ftp://h/",
            "http://",
            "127.0.0.1:6385",
            "http://u:p@h/",
            "http://h/?x=1",
            "unix:/tmp/s",
        ] {
            assert!(spec(url).validate().is_err(), "{url}");
        }
        for body in [
            json!({"api_url": "http://h", "node": "n", "interval_ms": 49}),
            json!({"api_url": "http://h", "node": "n", "interval_ms": 60_001}),
            json!({"api_url": "http://h", "node": ""}),
            json!({"api_url": "http://h", "node": "a b"}),
            json!({"api_url": "http://h", "node": "n", "token": ""}),
            json!({"api_url": "http://h", "node": "n", "callback_url": "x"}),
        ] {
            let s: AgentSpec = serde_json::from_value(body.clone()).unwrap();
            assert!(s.validate().is_err(), "{body}");
        }
        assert!(serde_json::from_value::<AgentSpec>(
            json!({"api_url": "http://h", "node": "n", "interval": 5})
        )
        .is_err());
    }

    #[test]
    fn heartbeats_after_fail_after_report_an_error() {
        let mut s = spec("http://h");
        s.fail_after = Some(2);
        let c = s.validate().unwrap();
        let b = c.heartbeat_body("sim-3", "tok", 2);
        assert_eq!(b["agent_token"], "tok");
        assert_eq!(b["callback_url"], "http://sim-3.ferric-sim.invalid:9999/");
        assert!(b.get("agent_status").is_none());
        let b = c.heartbeat_body("sim-3", "tok", 3);
        assert_eq!(b["agent_status"], "error");
        assert_eq!(b["agent_status_message"], "simulated agent failure");
    }

    #[test]
    fn stop_after_ends_the_run_and_stale_runs_change_nothing() {
        let mut s = spec("http://h");
        s.stop_after = Some(2);
        let mut a = Agent::new(s.validate().unwrap());
        a.run_id = 7;
        a.facts.running = true;
        assert!(!a.heartbeat_may_start(6));
        assert!(a.heartbeat_may_start(7));
        assert!(a.facts.in_flight);
        assert!(a.heartbeat_done(7, 1, LastStatus::Http(202)));
        assert!(!a.facts.in_flight);
        assert!(!a.heartbeat_done(6, 2, LastStatus::Http(500)));
        assert_eq!(a.facts.heartbeats_sent, 1);
        assert!(!a.heartbeat_done(7, 2, LastStatus::Error("x".into())));
        assert!(!a.facts.running);
        assert!(!a.heartbeat_may_start(7), "a stopped run sends nothing");
        assert_eq!(a.facts.last_status, Some(LastStatus::Error("x".into())));
    }

    #[test]
    fn random_tokens_differ() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_token());
    }
}
