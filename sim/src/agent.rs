//! The deploy agent of a simulated machine (Ironic Python Agent): its configuration from the
//! control API, the facts of its latest run, the inspection data and heartbeats it sends, the task
//! that sends them, and the state of its command API (the commands of the run; `commands` has
//! their semantics, `agent_api` serves them).
//!
//! An agent runs while its system runs a boot from `Pxe` (the ramdisk); booting from anything
//! else runs no agent. Each such boot starts a fresh run: a new token (unless one is configured),
//! heartbeat numbers from 1. Nothing goes out during the first interval after the boot (an agent
//! needs a moment to start). Then, unless `inspect` is off, the agent posts the machine's
//! inspection data (`hardware::inspection_data`) to `/v1/continue_inspection`, once, as IPA does
//! when it has an inspection callback; whatever the answer, it heartbeats from then on (the first
//! heartbeat right after the inspection's answer, as IPA starts heartbeating when inspection
//! returns). Each next heartbeat goes an interval after the previous one was answered, so a slow
//! API spreads heartbeats out instead of piling them up. The simulator cannot tell why its
//! machine booted the ramdisk (Ironic puts the callback URL on the kernel command line of
//! inspection boots only), so it posts at every ramdisk boot; the API answers 404 when no node
//! waits for inspection data, as for a boot into cleaning or deploying.
//!
//! Heartbeats carry a `callback_url`: the configured one, else the simulator's own command API of
//! the system, `http://<listen address>/agent/<system>` (see [`default_callback_url`]), where
//! Ironic drives the agent as it drives IPA: with the run's active token (the one the lookup
//! issued, else the run's own) it POSTs commands and polls them. The command API answers while
//! the run goes on, and holds every request unanswered once it ended (a power off, a restart,
//! `stop_after`, `die_after_commands`, `finalize_rescue` or `lockdown`: IPA has exited). A new run
//! starts with no commands. An asynchronous command takes `command_ms`; when it finishes the
//! agent heartbeats at once (IPA's `force_heartbeat`), then every interval again;
//! `standby.power_off` and `standby.run_image` instead power the machine off or reboot it, as the
//! BMC's `ForceOff` and `ForceRestart` would. `fail_command`, `garbage_commands` and
//! `die_after_commands` inject failures.
//!
//! One task per running agent; none for a configured agent whose system is off or booted from
//! disk. At most [`MAX_IN_FLIGHT`] requests (heartbeats and inspection posts together) are in
//! flight fleet-wide (a request waits for a slot), so a fleet booted at once holds a bounded
//! number of connections to the API rather than one per machine; with an API that hangs,
//! heartbeats come less often than the interval says.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, watch, Notify, Semaphore, SemaphorePermit};

use crate::commands::{Accepted, CommandFact, Commands, Context, Effect, Fault};
use crate::config::SimError;
use crate::fleet::{stopped, SimState};
use crate::hardware;

pub const MIN_INTERVAL_MS: u64 = 50;
pub const MAX_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
/// How long an asynchronous command runs by default, and at most.
pub const DEFAULT_COMMAND_MS: u64 = 200;
pub const MAX_COMMAND_MS: u64 = 60_000;
/// Bounds a whole request of the agent (connect, send, answer), heartbeat or inspection post: a
/// hung API must not stall the agent.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
pub const USER_AGENT: &str = "ferric-sim-agent";
/// Requests in flight at once, fleet-wide; also the idle connections kept to the API.
pub const MAX_IN_FLIGHT: usize = 512;
/// The microversion heartbeats are sent with: the first one that knows `agent_status`.
pub const API_VERSION: &str = "1.72";
/// The microversion lookups are sent with: the one IPA uses (the first with agent tokens).
pub const LOOKUP_API_VERSION: &str = "1.62";
/// The microversion the inspection data is posted with: the first one with
/// `/v1/continue_inspection`.
pub const INSPECTION_API_VERSION: &str = "1.84";
pub const AGENT_VERSION: &str = concat!("ferric-sim-", env!("CARGO_PKG_VERSION"));
const MAX_FIELD: usize = 255;
/// Longest error message of a refused inspection post kept for the log.
const MAX_REFUSAL: usize = 200;

/// The body of `PUT /sim/systems/{id}/agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Base URL of the Ironic API; heartbeats go to `<api_url>/v1/heartbeat/<node>`, the
    /// inspection data to `<api_url>/v1/continue_inspection`.
    pub api_url: String,
    /// The node (uuid) this machine is enrolled as.
    pub node: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Sent as `agent_token`; by default a random token per boot.
    #[serde(default)]
    pub token: Option<String>,
    /// Stop (a hung ramdisk, still powered) after this many heartbeats of a boot; `0` hangs
    /// before sending anything, the inspection data included.
    #[serde(default)]
    pub stop_after: Option<u64>,
    /// Heartbeats after the first `fail_after` of a boot carry `agent_status: error`.
    #[serde(default)]
    pub fail_after: Option<u64>,
    /// Sent as `callback_url`; by default `http://<system id>.ferric-sim.invalid:9999/` (a name
    /// that never resolves: there is no agent API behind it).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Post the inspection data at the start of each ramdisk boot, before heartbeating (IPA with
    /// an inspection callback). On by default; `false` is an agent that only heartbeats.
    #[serde(default = "default_inspect")]
    pub inspect: bool,
    /// Look the node up (`GET /v1/lookup` with the machine's MACs and the node's uuid) after
    /// the inspection post and heartbeat with the token the API issues, as IPA does. On by
    /// default; ignored (no lookup) when `token` is set: an agent with a fixed token uses it.
    #[serde(default = "default_inspect")]
    pub lookup: bool,
    /// How long an asynchronous command of the agent's command API runs, in milliseconds.
    #[serde(default = "default_command_ms")]
    pub command_ms: u64,
    /// A command whose short name (`power_off`), or for `execute_*_step` whose step
    /// (`write_image`), is this ends `FAILED` with details `simulated failure of <it>`.
    #[serde(default)]
    pub fail_command: Option<String>,
    /// Something that is not an agent answers at the callback URL: every command API request
    /// is answered 200 with an HTML body, and runs nothing.
    #[serde(default)]
    pub garbage_commands: bool,
    /// The agent dies once the run accepted this many commands (from 1): no more heartbeats,
    /// that command never finishes, the command API answers nothing from then on.
    #[serde(default)]
    pub die_after_commands: Option<u64>,
    /// A command whose short name, or for `execute_*_step` whose step, is this runs for
    /// `slow_ms` instead of `command_ms` (a long step, with the rest quick).
    #[serde(default)]
    pub slow_command: Option<String>,
    #[serde(default)]
    pub slow_ms: u64,
}

/// The body of `PUT /sim/agents`: one configuration for many systems, each with its node. The
/// agents it configures inspect (`AgentSpec::inspect`'s default); `PUT /sim/systems/{id}/agent`
/// with `inspect: false` turns that off for one system.
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
            inspect: default_inspect(),
            lookup: default_inspect(),
            command_ms: default_command_ms(),
            fail_command: None,
            garbage_commands: false,
            die_after_commands: None,
            slow_command: None,
            slow_ms: 0,
        })
    }
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}

fn default_inspect() -> bool {
    true
}

fn default_command_ms() -> u64 {
    DEFAULT_COMMAND_MS
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
    pub inspect: bool,
    pub lookup: bool,
    pub command_ms: u64,
    pub fail_command: Option<String>,
    pub garbage_commands: bool,
    pub die_after_commands: Option<u64>,
    pub slow_command: Option<String>,
    pub slow_ms: u64,
    /// Where heartbeats go; derived from `api_url` and `node` only.
    #[serde(skip)]
    heartbeat_url: Url,
    /// Where the inspection data goes; derived from `api_url` only.
    #[serde(skip)]
    inspection_url: Url,
    /// Where the lookup goes (without its query); derived from `api_url` only.
    #[serde(skip)]
    lookup_url: Url,
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
        if self.command_ms > MAX_COMMAND_MS {
            return Err(SimError::InvalidConfig(format!(
                "command_ms must be at most {MAX_COMMAND_MS} (got {})",
                self.command_ms
            )));
        }
        if let Some(f) = &self.fail_command {
            check_text("fail_command", f)?;
        }
        if let Some(f) = &self.slow_command {
            check_text("slow_command", f)?;
        }
        if self.slow_ms > MAX_COMMAND_MS {
            return Err(SimError::InvalidConfig(format!(
                "slow_ms must be at most {MAX_COMMAND_MS} (got {})",
                self.slow_ms
            )));
        }
        if self.die_after_commands == Some(0) {
            return Err(SimError::InvalidConfig(
                "die_after_commands must be at least 1 (the agent dies after that many commands)"
                    .into(),
            ));
        }
        let under_api = |segments: &[&str]| -> Result<Url, SimError> {
            let mut url = api.clone();
            url.path_segments_mut()
                .map_err(|()| SimError::InvalidConfig("api_url cannot be a base URL".into()))?
                .pop_if_empty()
                .extend(segments);
            Ok(url)
        };
        let heartbeat_url = under_api(&["v1", "heartbeat", &self.node])?;
        let inspection_url = under_api(&["v1", "continue_inspection"])?;
        let lookup_url = under_api(&["v1", "lookup"])?;
        Ok(AgentConfig {
            api_url: self.api_url,
            node: self.node,
            interval_ms: self.interval_ms,
            token: self.token,
            stop_after: self.stop_after,
            fail_after: self.fail_after,
            callback_url: self.callback_url,
            inspect: self.inspect,
            lookup: self.lookup,
            command_ms: self.command_ms,
            fail_command: self.fail_command,
            garbage_commands: self.garbage_commands,
            die_after_commands: self.die_after_commands,
            slow_command: self.slow_command,
            slow_ms: self.slow_ms,
            heartbeat_url,
            inspection_url,
            lookup_url,
        })
    }
}

impl AgentConfig {
    pub fn heartbeat_url(&self) -> &Url {
        &self.heartbeat_url
    }

    pub fn inspection_url(&self) -> &Url {
        &self.inspection_url
    }

    /// The lookup of system `idx`'s machine: its MACs and the node's uuid.
    pub fn lookup_url(&self, idx: usize) -> Url {
        let macs: Vec<String> = hardware::nics(idx).into_iter().map(|n| n.mac).collect();
        let mut url = self.lookup_url.clone();
        url.query_pairs_mut()
            .append_pair("addresses", &macs.join(","))
            .append_pair("node_uuid", &self.node);
        url
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The `callback_url` system `system`'s agent heartbeats with: the configured one, else the
    /// simulator's own command API of that system (see [`default_callback_url`]).
    pub fn callback_for(&self, system: &str, listen: Option<SocketAddr>) -> String {
        self.callback_url
            .clone()
            .unwrap_or_else(|| default_callback_url(system, listen))
    }

    pub fn command_time(&self) -> Duration {
        Duration::from_millis(self.command_ms)
    }

    /// How long command `name` (`ext.cmd`) with `params` runs: `slow_ms` for the slow command
    /// (by short name, or by the step of an `execute_*_step`), else `command_ms`.
    pub fn time_of(&self, name: &str, params: &serde_json::Map<String, Value>) -> Duration {
        let short = name.split_once('.').map_or(name, |(_, s)| s);
        let step = params
            .get("step")
            .and_then(|s| s.get("step"))
            .and_then(Value::as_str);
        let slow = self
            .slow_command
            .as_deref()
            .is_some_and(|s| s == short || Some(s) == step);
        if slow {
            Duration::from_millis(self.slow_ms)
        } else {
            self.command_time()
        }
    }

    /// The body of heartbeat `n` (from 1) of a run with `token` whose agent API is at
    /// `callback`.
    pub fn heartbeat_body(&self, callback: &str, token: &str, n: u64) -> Value {
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

/// The agent API of system `system` on the simulator listening at `listen`:
/// `http://<listen>/agent/<system>` (Ironic appends `/v1/commands/`). Without a known listen
/// address (a router driven without a socket) a name that never resolves,
/// `http://<system>.ferric-sim.invalid:9999/`.
pub fn default_callback_url(system: &str, listen: Option<SocketAddr>) -> String {
    match listen {
        Some(addr) => format!("http://{}/agent/{system}", reachable(addr)),
        None => format!("http://{system}.ferric-sim.invalid:9999/"),
    }
}

/// An address a client can connect to for a listener bound to `addr`: the wildcard address
/// (`0.0.0.0`, `[::]`) becomes the loopback address of its family.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// A request's outcome (a heartbeat's, the inspection post's): the HTTP status answered, or why
/// there was none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LastStatus {
    Http(u16),
    Error(String),
}

/// The facts of an agent's latest run; they stay after it ends until the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentFacts {
    /// Sending the inspection data or heartbeats now.
    pub running: bool,
    /// A request of the run (the inspection post or a heartbeat) was sent and is not answered
    /// yet. Once `running` and `in_flight` are both false, the run sends nothing more.
    pub in_flight: bool,
    /// The boot the run belongs to (`None`: no run since the agent was configured).
    pub boot: Option<u64>,
    pub heartbeats_sent: u64,
    pub last_status: Option<LastStatus>,
    /// The `agent_token` of the run.
    pub active_token: Option<String>,
    /// The answer to the run's inspection post (202: accepted); `None` while not sent, and for
    /// a run that does not inspect.
    pub inspection_status: Option<LastStatus>,
    /// The node uuid the API named in its 2xx answer to the inspection post.
    pub inspection_uuid: Option<String>,
    /// The answer to the run's lookup; `None` while not sent, and for a run that does not look
    /// up.
    pub lookup_status: Option<LastStatus>,
    /// The `callback_url` the run heartbeats with (where its command API is).
    pub callback_url: Option<String>,
    /// The run ended by `die_after_commands`.
    pub died: bool,
}

/// An agent as the control API shows it: its configuration and its latest run.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    #[serde(flatten)]
    pub config: AgentConfig,
    #[serde(flatten)]
    pub facts: AgentFacts,
    /// The run's commands, in issue order.
    pub commands: Vec<CommandFact>,
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
    /// The commands of the current run (of the latest one once it ended).
    commands: Commands,
    /// Bumped when a command finishes or the run ends, for requests that wait on a command.
    changes: watch::Sender<u64>,
    /// Asks the current run's task for a heartbeat now (IPA's `force_heartbeat`).
    force: Arc<Notify>,
}

/// What a task needs to send the inspection data and heartbeats of one run.
#[derive(Debug)]
pub(crate) struct RunTicket {
    pub state: Weak<SimState>,
    pub idx: usize,
    pub system: String,
    pub run_id: u64,
    pub config: AgentConfig,
    pub token: String,
    /// The `callback_url` of its heartbeats.
    pub callback: String,
    pub stop: oneshot::Receiver<()>,
    pub closed: watch::Receiver<bool>,
    /// A finished command asks for a heartbeat now.
    pub force: Arc<Notify>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Agent {
            config,
            facts: AgentFacts::default(),
            run_id: 0,
            stop: None,
            commands: Commands::default(),
            changes: watch::Sender::new(0),
            force: Arc::new(Notify::new()),
        }
    }

    pub fn view(&self) -> AgentView {
        AgentView {
            config: self.config.clone(),
            facts: self.facts.clone(),
            commands: self.commands.facts(),
        }
    }

    /// Ends the current run, if any (power off, a restart, a new configuration): no heartbeat
    /// starts after this. One in flight is still seen through and counted, like a packet already
    /// on the wire.
    pub fn halt(&mut self) {
        self.facts.running = false;
        self.stop = None;
        self.changed();
    }

    /// Wakes the requests waiting on a command of this agent.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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
        let callback = self.config.callback_for(state.id(idx), state.listen_addr());
        self.run_id = run_id;
        self.commands = Commands::default();
        self.force = Arc::new(Notify::new());
        self.facts = AgentFacts {
            running: self.config.stop_after != Some(0),
            in_flight: false,
            boot: Some(boot),
            heartbeats_sent: 0,
            last_status: None,
            active_token: Some(token.clone()),
            inspection_status: None,
            inspection_uuid: None,
            lookup_status: None,
            callback_url: Some(callback.clone()),
            died: false,
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
            callback,
            stop: stop_rx,
            closed: state.closed_signal(),
            force: self.force.clone(),
        })
    }

    /// The current run (0: none yet).
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Whether the command API answers: the run is going (not ended by a power off, a restart,
    /// `stop_after`, death or the agent's exit).
    pub fn serving(&self) -> bool {
        self.facts.running
    }

    /// Whether `token` is the run's active token (the one its lookup was issued, else its own).
    pub fn token_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| !t.is_empty() && self.facts.active_token.as_deref() == Some(t))
    }

    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// A receiver woken when a command finishes or the run ends (subscribe under the system's
    /// lock, then check, then wait: no wake-up is lost).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs command `name` with `params` in the current run (see `Commands::post`), on system
    /// `system` (index `idx`). A command that ends the agent (`finalize_rescue`, `lockdown`)
    /// ends the run; so does the `die_after_commands`-th command (then `died` is set and the
    /// command never finishes).
    pub fn post_command(
        &mut self,
        name: &str,
        params: &Map<String, Value>,
        system: &str,
        idx: usize,
    ) -> Result<Posted, Fault> {
        let ctx = Context {
            system,
            idx,
            fail_command: self.config.fail_command.as_deref(),
        };
        let accepted = self.commands.post(name, params, random_uuid(), ctx)?;
        let died = self
            .config
            .die_after_commands
            .is_some_and(|n| self.commands.accepted() as u64 >= n);
        if died {
            self.facts.died = true;
            self.halt();
        } else if accepted.ends_run {
            self.halt();
        }
        Ok(Posted { accepted, died })
    }

    /// Asynchronous command `id` of run `run_id` is done: what it does to the machine, or
    /// `None` when the run is no longer going (a dead or hung agent finishes nothing) or there
    /// is no such running command. A command that leaves the machine running asks for a
    /// heartbeat now.
    pub fn finish_command(&mut self, run_id: u64, id: &str) -> Option<Effect> {
        if run_id != self.run_id || !self.facts.running {
            return None;
        }
        let effect = self.commands.finish(id)?;
        if effect == Effect::None {
            self.force.notify_one();
        }
        self.changed();
        Some(effect)
    }

    /// Whether run `run_id` may send a request (its inspection data, a heartbeat) now: it is
    /// current and running. If so, the request is in flight from here.
    pub fn may_send(&mut self, run_id: u64) -> bool {
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

    /// The lookup of run `run_id` was answered (or failed), with the token it issued, if any.
    /// Returns whether the run goes on (to heartbeats, with that token when there is one).
    pub fn lookup_done(&mut self, run_id: u64, status: LastStatus, token: Option<&str>) -> bool {
        if run_id != self.run_id {
            return false;
        }
        self.facts.in_flight = false;
        self.facts.lookup_status = Some(status);
        if let Some(t) = token {
            self.facts.active_token = Some(t.to_string());
        }
        self.facts.running
    }

    /// The inspection post of run `run_id` was answered (or failed). Returns whether the run
    /// goes on (to heartbeats: it does whatever the answer, unless the run was ended meanwhile).
    pub fn inspection_done(
        &mut self,
        run_id: u64,
        status: LastStatus,
        uuid: Option<String>,
    ) -> bool {
        if run_id != self.run_id {
            return false;
        }
        self.facts.in_flight = false;
        self.facts.inspection_status = Some(status);
        self.facts.inspection_uuid = uuid;
        self.facts.running
    }
}

/// A command the agent accepted, and whether the agent died of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub accepted: Accepted,
    pub died: bool,
}

/// A random (version 4 style) uuid, for command ids.
fn random_uuid() -> String {
    let h = random_token();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
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

/// The HTTP client every agent shares: bounded timeouts, no redirects and no proxies, so the
/// agent's requests only ever go to the configured API.
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

/// Sends `req` to the API with microversion `api_version`: the status and body of the answer,
/// or why there is none.
async fn send(req: reqwest::RequestBuilder, api_version: &str) -> Result<(u16, Bytes), String> {
    let resp = req
        .header("X-OpenStack-Ironic-API-Version", api_version)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    // Read the answer (bounded by the client's timeout) so the connection can be reused.
    let answer = resp.bytes().await.unwrap_or_default();
    Ok((status, answer))
}

/// Posts `body` to the API.
async fn post(
    client: &reqwest::Client,
    url: &Url,
    api_version: &str,
    body: &Value,
) -> Result<(u16, Bytes), String> {
    send(client.post(url.clone()).json(body), api_version).await
}

/// The HTTP client every agent shares, as the fleet built it (or why it could not).
type SharedClient = Result<reqwest::Client, String>;

/// Sleeps `d`; false when the run is stopped (or the simulator stops) first.
async fn pause(t: &mut RunTicket, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = &mut t.stop => false,
        // Also ends when the state (and its sender) is gone.
        _ = stopped(&mut t.closed) => false,
    }
}

/// Sleeps `d` between heartbeats, or less when a finished command asks for a heartbeat now;
/// false when the run is stopped (or the simulator stops) first.
async fn between_heartbeats(t: &mut RunTicket, d: Duration) -> bool {
    let force = t.force.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = force.notified() => true,
        _ = &mut t.stop => false,
        _ = stopped(&mut t.closed) => false,
    }
}

/// Waits for a fleet-wide in-flight slot; `None` when the run is stopped first.
async fn slot<'a>(t: &mut RunTicket, slots: &'a Semaphore) -> Option<SemaphorePermit<'a>> {
    tokio::select! {
        slot = slots.acquire() => slot.ok(),
        _ = &mut t.stop => None,
        _ = stopped(&mut t.closed) => None,
    }
}

/// Whether the run may send now, decided under the system's lock: nothing starts after a power
/// off. If so, the request is in flight from here.
fn may_send(t: &RunTicket) -> bool {
    t.state
        .upgrade()
        .is_some_and(|state| state.agent_may_send(t.idx, t.run_id))
}

/// The task of one agent run: after the agent's start-up time, the inspection data (when
/// configured), then a heartbeat every interval until the run ends, its system stops existing,
/// or the simulator stops.
pub(crate) async fn run(mut t: RunTicket) {
    let (client, slots) = match t.state.upgrade() {
        Some(state) => (state.agent_client(), state.agent_slots()),
        None => return,
    };
    let interval = t.config.interval();
    if !pause(&mut t, interval).await {
        return;
    }
    if t.config.inspect && !inspect(&mut t, &client, &slots).await {
        return;
    }
    if t.config.lookup && t.config.token.is_none() && !lookup(&mut t, &client, &slots).await {
        return;
    }
    let mut n = 0u64;
    loop {
        n += 1;
        if !heartbeat(&mut t, n, &client, &slots).await
            || !between_heartbeats(&mut t, interval).await
        {
            return;
        }
    }
}

/// Posts the run's inspection data, once. Returns whether the run goes on.
async fn inspect(t: &mut RunTicket, client: &SharedClient, slots: &Semaphore) -> bool {
    let Some(_slot) = slot(t, slots).await else {
        return false;
    };
    if !may_send(t) {
        return false;
    }
    let body = hardware::inspection_data(&t.system, t.idx);
    let sent_at = SystemTime::now();
    let reply = match client {
        Ok(c) => tokio::select! {
            r = post(c, t.config.inspection_url(), INSPECTION_API_VERSION, &body) => r,
            _ = stopped(&mut t.closed) => return false,
        },
        Err(e) => Err(format!("no HTTP client: {e}")),
    };
    let Some(state) = t.state.upgrade() else {
        return false;
    };
    state.inspection_done(
        t.idx,
        Inspection::from_reply(t.run_id, sent_at, reply),
        &t.config,
    )
}

/// Looks the node up, once; a token the API issues replaces the run's own. Returns whether the
/// run goes on (whatever the answer: without a token the agent heartbeats with its own, and
/// the API's first-heartbeat pinning applies).
async fn lookup(t: &mut RunTicket, client: &SharedClient, slots: &Semaphore) -> bool {
    let Some(_slot) = slot(t, slots).await else {
        return false;
    };
    if !may_send(t) {
        return false;
    }
    let url = t.config.lookup_url(t.idx);
    let sent_at = SystemTime::now();
    let reply = match client {
        Ok(c) => tokio::select! {
            r = get(c, &url, LOOKUP_API_VERSION) => r,
            _ = stopped(&mut t.closed) => return false,
        },
        Err(e) => Err(format!("no HTTP client: {e}")),
    };
    let found = Lookup::from_reply(t.run_id, sent_at, reply);
    if let Some(token) = &found.token {
        t.token = token.clone();
    }
    let Some(state) = t.state.upgrade() else {
        return false;
    };
    state.lookup_done(t.idx, found, &t.config, url.path())
}

/// GETs `url` from the API.
async fn get(
    client: &reqwest::Client,
    url: &Url,
    api_version: &str,
) -> Result<(u16, Bytes), String> {
    send(client.get(url.clone()), api_version).await
}

/// One lookup sent, for the fleet to record.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub run_id: u64,
    pub sent_at: SystemTime,
    pub status: LastStatus,
    /// The token a 200 answer issued (not `******`, the answer to a later lookup of the boot).
    pub token: Option<String>,
    pub refusal: Option<String>,
}

impl Lookup {
    fn from_reply(run_id: u64, sent_at: SystemTime, reply: Result<(u16, Bytes), String>) -> Self {
        let (status, token, refusal) = match reply {
            Ok((200, body)) => (LastStatus::Http(200), issued_token(&body), None),
            Ok((code, body)) => (LastStatus::Http(code), None, refusal(&body)),
            Err(e) => (LastStatus::Error(e), None, None),
        };
        Lookup {
            run_id,
            sent_at,
            status,
            token,
            refusal,
        }
    }
}

/// `config.agent_token` of a lookup answer, when it is a token (not `******`) an agent can send.
fn issued_token(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let token = v.get("config")?.get("agent_token")?.as_str()?;
    (token != "******" && check_text("agent_token", token).is_ok()).then(|| token.to_string())
}

/// Sends heartbeat `n` of the run. Returns whether the run goes on.
async fn heartbeat(t: &mut RunTicket, n: u64, client: &SharedClient, slots: &Semaphore) -> bool {
    let Some(_slot) = slot(t, slots).await else {
        return false;
    };
    if !may_send(t) {
        return false;
    }
    let body = t.config.heartbeat_body(&t.callback, &t.token, n);
    let sent_at = SystemTime::now();
    let status = match client {
        Ok(c) => tokio::select! {
            r = post(c, t.config.heartbeat_url(), API_VERSION, &body) => match r {
                Ok((code, _)) => LastStatus::Http(code),
                Err(e) => LastStatus::Error(e),
            },
            _ = stopped(&mut t.closed) => return false,
        },
        Err(e) => LastStatus::Error(format!("no HTTP client: {e}")),
    };
    let Some(state) = t.state.upgrade() else {
        return false;
    };
    state.heartbeat_done(
        t.idx,
        Heartbeat {
            run_id: t.run_id,
            n,
            sent_at,
            failing: t.config.fails_at(n),
            status,
        },
        &t.config,
    )
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

/// One inspection post sent, for the fleet to record.
#[derive(Debug)]
pub(crate) struct Inspection {
    pub run_id: u64,
    pub sent_at: SystemTime,
    pub status: LastStatus,
    /// The node uuid of a 2xx answer (`{"uuid": ...}`).
    pub uuid: Option<String>,
    /// Why the API refused it (4xx, 5xx): its error message, shortened.
    pub refusal: Option<String>,
}

impl Inspection {
    fn from_reply(run_id: u64, sent_at: SystemTime, reply: Result<(u16, Bytes), String>) -> Self {
        let (status, uuid, refusal) = match reply {
            Ok((code, body)) if (200..300).contains(&code) => {
                (LastStatus::Http(code), accepted_uuid(&body), None)
            }
            Ok((code, body)) => (LastStatus::Http(code), None, refusal(&body)),
            Err(e) => (LastStatus::Error(e), None, None),
        };
        Inspection {
            run_id,
            sent_at,
            status,
            uuid,
            refusal,
        }
    }
}

/// The `uuid` of an accepting answer, if it names one sanely.
fn accepted_uuid(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let uuid = v.get("uuid")?.as_str()?;
    check_text("uuid", uuid).ok()?;
    Some(uuid.to_string())
}

/// The error message of a refusal: Ironic's `faultstring` (inside the JSON string
/// `error_message`), else `error_message` itself, else the body as text; shortened, without
/// control characters. `None` for an empty body.
fn refusal(body: &[u8]) -> Option<String> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let message = v.as_ref().and_then(|v| v.get("error_message"));
    let text = match message {
        Some(Value::String(m)) => serde_json::from_str::<Value>(m)
            .ok()
            .and_then(|inner| inner.get("faultstring")?.as_str().map(String::from))
            .unwrap_or_else(|| m.clone()),
        Some(other) => other
            .get("faultstring")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), String::from),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let short: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REFUSAL)
        .collect();
    (!short.is_empty()).then_some(short)
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
        assert_eq!(
            c.inspection_url().as_str(),
            "https://api.example/baremetal/v1/continue_inspection"
        );
        assert!(c.inspect, "inspection is on by default");
    }

    #[test]
    fn fleet_configured_agents_inspect() {
        let f: FleetAgentSpec =
            serde_json::from_value(json!({"api_url": "http://h", "nodes": {"sim-0": "n"}}))
                .unwrap();
        assert!(f.for_system("sim-0").unwrap().inspect);
        let s: AgentSpec =
            serde_json::from_value(json!({"api_url": "http://h", "node": "n", "inspect": false}))
                .unwrap();
        assert!(!s.validate().unwrap().inspect);
    }

    #[test]
    fn inspection_answers_are_read_as_ironic_writes_them() {
        let at = SystemTime::UNIX_EPOCH;
        let ok = |code: u16, body: &str| {
            Inspection::from_reply(1, at, Ok((code, Bytes::from(body.to_string()))))
        };
        let i = ok(202, r#"{"uuid": "u-1"}"#);
        assert_eq!(
            (i.status, i.uuid, i.refusal),
            (LastStatus::Http(202), Some("u-1".into()), None)
        );
        let i = ok(202, "");
        assert_eq!(i.uuid, None, "an accepting answer without a uuid");
        let ironic =
            r#"{"error_message": "{\"faultstring\": \"No such node\", \"debuginfo\": null}"}"#;
        let i = ok(404, ironic);
        assert_eq!(
            (i.status, i.uuid, i.refusal.as_deref()),
            (LastStatus::Http(404), None, Some("No such node"))
        );
        assert_eq!(
            ok(400, r#"{"error_message": "bad\ninventory"}"#)
                .refusal
                .as_deref(),
            Some("bad inventory")
        );
        assert_eq!(ok(413, "too large").refusal.as_deref(), Some("too large"));
        assert_eq!(ok(500, "").refusal, None);
        assert_eq!(
            ok(500, &"x".repeat(1000)).refusal.map(|r| r.len()),
            Some(MAX_REFUSAL)
        );
        let i = Inspection::from_reply(1, at, Err("connect failed".into()));
        assert_eq!(i.status, LastStatus::Error("connect failed".into()));
    }

    #[test]
    fn an_inspection_answer_updates_its_run_only() {
        let mut a = Agent::new(spec("http://h").validate().unwrap());
        a.run_id = 3;
        a.facts.running = true;
        assert!(a.may_send(3));
        assert!(!a.inspection_done(2, LastStatus::Http(500), None));
        assert!(a.facts.in_flight, "a stale answer changes nothing");
        assert!(a.inspection_done(3, LastStatus::Http(202), Some("u".into())));
        assert!(!a.facts.in_flight);
        assert_eq!(a.facts.inspection_status, Some(LastStatus::Http(202)));
        assert_eq!(a.facts.inspection_uuid.as_deref(), Some("u"));
        // Answered after a power off: recorded, and the run ends.
        a.halt();
        assert!(!a.inspection_done(3, LastStatus::Http(404), None));
        assert_eq!(a.facts.inspection_status, Some(LastStatus::Http(404)));
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
        let listen: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let callback = c.callback_for("sim-3", Some(listen));
        let b = c.heartbeat_body(&callback, "tok", 2);
        assert_eq!(b["agent_token"], "tok");
        assert_eq!(b["callback_url"], "http://127.0.0.1:7000/agent/sim-3");
        assert!(b.get("agent_status").is_none());
        let b = c.heartbeat_body(&callback, "tok", 3);
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
        assert!(!a.may_send(6));
        assert!(a.may_send(7));
        assert!(a.facts.in_flight);
        assert!(a.heartbeat_done(7, 1, LastStatus::Http(202)));
        assert!(!a.facts.in_flight);
        assert!(!a.heartbeat_done(6, 2, LastStatus::Http(500)));
        assert_eq!(a.facts.heartbeats_sent, 1);
        assert!(!a.heartbeat_done(7, 2, LastStatus::Error("x".into())));
        assert!(!a.facts.running);
        assert!(!a.may_send(7), "a stopped run sends nothing");
        assert_eq!(a.facts.last_status, Some(LastStatus::Error("x".into())));
    }

    #[test]
    fn the_default_callback_url_is_the_simulators_own_agent_api() {
        let c = spec("http://h").validate().unwrap();
        let at = |a: &str| c.callback_for("sim-7", Some(a.parse().unwrap()));
        assert_eq!(at("0.0.0.0:6000"), "http://127.0.0.1:6000/agent/sim-7");
        assert_eq!(at("[::]:6000"), "http://[::1]:6000/agent/sim-7");
        assert_eq!(at("10.1.2.3:80"), "http://10.1.2.3:80/agent/sim-7");
        assert_eq!(
            c.callback_for("sim-7", None),
            "http://sim-7.ferric-sim.invalid:9999/",
            "no listener known: nothing behind it"
        );
        let mut s = spec("http://h");
        s.callback_url = Some("http://elsewhere:9999/".into());
        let c = s.validate().unwrap();
        assert_eq!(
            c.callback_for("sim-7", Some("0.0.0.0:1".parse().unwrap())),
            "http://elsewhere:9999/",
            "a configured callback_url wins"
        );
    }

    #[test]
    fn command_settings_are_validated() {
        let c = spec("http://h").validate().unwrap();
        assert_eq!(
            (c.command_ms, c.garbage_commands, c.die_after_commands),
            (DEFAULT_COMMAND_MS, false, None)
        );
        for body in [
            json!({"api_url": "http://h", "node": "n", "command_ms": 60_001}),
            json!({"api_url": "http://h", "node": "n", "fail_command": ""}),
            json!({"api_url": "http://h", "node": "n", "die_after_commands": 0}),
        ] {
            let s: AgentSpec = serde_json::from_value(body.clone()).unwrap();
            assert!(s.validate().is_err(), "{body}");
        }
        let s: AgentSpec = serde_json::from_value(json!({"api_url": "http://h", "node": "n",
            "command_ms": 0, "fail_command": "write_image", "garbage_commands": true,
            "die_after_commands": 2}))
        .unwrap();
        let c = s.validate().unwrap();
        assert_eq!(c.fail_command.as_deref(), Some("write_image"));
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(shown["die_after_commands"], 2);
        assert_eq!(shown["garbage_commands"], true);
    }

    /// An agent in run 5 with token `tok`, as `start` leaves it.
    fn running_agent(s: AgentSpec) -> Agent {
        let mut a = Agent::new(s.validate().unwrap());
        a.run_id = 5;
        a.facts.running = true;
        a.facts.active_token = Some("tok".into());
        a
    }

    #[test]
    fn only_the_active_token_is_accepted() {
        let a = running_agent(spec("http://h"));
        assert!(a.token_ok(Some("tok")));
        assert!(!a.token_ok(Some("tok2")));
        assert!(!a.token_ok(Some("")));
        assert!(!a.token_ok(None));
    }

    #[test]
    fn the_agent_dies_with_its_nth_command_which_never_finishes() {
        let mut s = spec("http://h");
        s.die_after_commands = Some(2);
        let mut a = running_agent(s);
        let none = Map::new();
        let p = a.post_command("standby.sync", &none, "sim-0", 0).unwrap();
        assert!(!p.died && a.serving());
        let p = a
            .post_command("standby.power_off", &none, "sim-0", 0)
            .unwrap();
        assert!(p.died && p.accepted.is_async);
        assert!(!a.serving() && a.facts.died);
        assert_eq!(
            a.finish_command(5, &p.accepted.id),
            None,
            "a dead agent finishes nothing"
        );
        assert_eq!(
            a.view().commands[1].status,
            crate::commands::Status::Running
        );
    }

    #[test]
    fn finished_commands_wake_waiters_and_ask_for_a_heartbeat() {
        let mut a = running_agent(spec("http://h"));
        let changes = a.subscribe();
        let p = a
            .post_command("standby.run_image", &Map::new(), "sim-0", 0)
            .unwrap();
        assert_eq!(a.finish_command(4, &p.accepted.id), None, "a stale run");
        assert_eq!(a.finish_command(5, &p.accepted.id), Some(Effect::Reboot));
        assert!(changes.has_changed().unwrap());
        let p = a
            .post_command(
                "image.install_bootloader",
                &json!({"root_uuid": "0x1"}).as_object().unwrap().clone(),
                "sim-0",
                0,
            )
            .unwrap();
        assert_eq!(a.finish_command(5, &p.accepted.id), Some(Effect::None));
        // The permit is stored for the heartbeat task's next pause.
        let forced = a.force.clone();
        let notified = forced.notified();
        tokio::pin!(notified);
        assert!(notified.as_mut().enable(), "a heartbeat was asked for");
        // An exiting agent ends its run as it answers.
        let p = a
            .post_command("system.lockdown", &Map::new(), "sim-0", 0)
            .unwrap();
        assert!(p.accepted.ends_run && !a.serving());
    }

    #[test]
    fn random_tokens_differ() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(
            u.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert_ne!(a, random_token());
    }
}
