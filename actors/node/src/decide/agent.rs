//! The agent side of the `direct` deploy interface, as pure functions: what a heartbeat does,
//! which command of ironic-python-agent's (IPA's) command API comes next, what each answer does
//! to the node, and when a wait state times out.
//!
//! After the conductor boots the node into the ramdisk, the agent looks its node up and
//! heartbeats with its `callback_url`. The first heartbeat of the boot links the node to that
//! agent ([`AgentLink`] in the status); from then on the conductor drives it the way Ironic's
//! `agent_base`/`agent_client` do: `get_*_steps`, then each step in order
//! (`execute_*_step`, and for Ferric's own deploy steps `standby.get_partition_uuids`,
//! `image.install_bootloader`, `standby.power_off`), each posted with `wait=false` and polled
//! by its id until it ends. The command under way is written into the status before it is
//! posted, so a new owner after a failover polls the same command (or finds it in the agent's
//! list) instead of running a step twice. When the last step is done the node resumes the busy
//! state and the conductor does its own part (`node_state::work_for`).
//!
//! In-band inspection needs no command: the ramdisk posts its data to the API, which records an
//! inspection result that ends `inspect wait`.

use crate::decide::node_state::{transition, Work};
use ferric_model::heartbeat::INSPECTION_ERROR;
use ferric_model::provision::Event;
use ferric_model::{AgentCommand, AgentLink, HeartbeatRecord};
use ferric_model::{DriverInfo, NodeSpec, NodeStatus, ProvisionState};
use serde_json::{json, Map, Value};

/// Ironic's default callback timeouts (`[conductor]deploy_callback_timeout` etc.): 30 minutes.
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 1_800_000;

/// Ferric's own deploy steps (Ironic's `AgentDeploy`), with Ironic's priorities. The agent's
/// steps of the same name do not replace them.
const OWN_DEPLOY_STEPS: [(&str, i64); 3] = [
    ("deploy.write_image", 80),
    ("deploy.prepare_instance_boot", 60),
    ("deploy.tear_down_agent", 40),
];

/// How long wait states of this node wait for the agent: `driver_info.agent_callback_timeout`
/// (seconds, a Ferric extension) or the conductor's default.
pub fn callback_timeout_ms(info: &DriverInfo, default_ms: u64) -> u64 {
    info.agent_callback_timeout_ms().unwrap_or(default_ms)
}

/// The steps known at the ramdisk boot, before the agent reports its own: rescue has one step
/// of its own; deploy, cleaning and servicing learn theirs from `get_*_steps`; inspection has
/// none (its data ends the wait).
pub fn steps_at_boot(state: ProvisionState) -> Vec<String> {
    match state {
        ProvisionState::Rescuing => vec!["rescue.finalize_rescue".into()],
        _ => vec![],
    }
}

/// Whether the agent's steps must be asked for before any runs.
fn needs_steps(state: ProvisionState) -> bool {
    matches!(
        state,
        ProvisionState::Deploying | ProvisionState::Cleaning | ProvisionState::Servicing
    )
}

/// The extension whose `get_*_steps`/`execute_*_step` commands serve `state`, and the name of
/// the version parameter its `execute_*_step` takes.
fn step_kind(state: ProvisionState) -> Option<(&'static str, &'static str)> {
    match state {
        ProvisionState::Deploying => Some(("deploy", "deploy_version")),
        ProvisionState::Cleaning => Some(("clean", "clean_version")),
        ProvisionState::Servicing => Some(("service", "service_version")),
        _ => None,
    }
}

/// The steps a request named (`clean_steps`, `service_steps`, `deploy_steps`), in order.
fn requested_steps(spec: &NodeSpec, field: &str) -> Vec<Value> {
    spec.provision_request
        .as_ref()
        .and_then(|r| serde_json::from_str::<Value>(&r.args).ok())
        .and_then(|args| args.get(field).and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// `interface.step` of a step object.
fn step_name(step: &Value) -> Option<String> {
    let interface = step.get("interface")?.as_str()?;
    let name = step.get("step")?.as_str()?;
    Some(format!("{interface}.{name}"))
}

/// What a heartbeat does to a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Heartbeat {
    /// Nothing; the reason goes to the debug log only (heartbeats come every few seconds).
    Ignored(&'static str),
    /// Recorded but no progress: the node is in maintenance.
    InMaintenance,
    /// The token differs from the one the first heartbeat of this boot pinned.
    WrongToken,
    /// The agent is there: talk to it. `Some` when the status changes (the first heartbeat of
    /// the boot links the node to the agent, or the agent moved); None when it is the same.
    Drive(Option<Box<NodeStatus>>),
    /// The state ends: the agent reported an error, or inspection data came. The new status,
    /// the history line, the error if any, and the work that follows.
    Progress {
        status: Box<NodeStatus>,
        action: String,
        error: Option<String>,
        work: Option<Work>,
    },
}

/// Whether heartbeats, commands and timeouts apply to this node now: not in maintenance, unless
/// the work was asked for in maintenance explicitly.
fn agent_may_progress(spec: &NodeSpec, status: &NodeStatus) -> bool {
    !spec.maintenance || status.agent.as_ref().is_some_and(|a| a.maintenance_ok)
}

/// The link of the current boot, if the agent has heartbeated in it.
pub fn current_link(status: &NodeStatus) -> Option<&AgentLink> {
    let agent = status.agent.as_ref()?;
    status
        .agent_link
        .as_ref()
        .filter(|l| l.booted_at_ms == agent.booted_at_ms)
}

fn link_mut(status: &mut NodeStatus) -> Option<&mut AgentLink> {
    let booted = status.agent.as_ref()?.booted_at_ms;
    status
        .agent_link
        .as_mut()
        .filter(|l| l.booted_at_ms == booted)
}

/// A heartbeat recorded at etcd revision `rev`.
///
/// As in Ironic (a heartbeat touches the node's provisioning time), the callback timeout runs
/// from the agent's last heartbeat: the deadline moves with heartbeats, written when less than
/// half the timeout (`timeout_ms`) is left, so a healthy agent costs a write per half timeout.
pub fn on_heartbeat(
    spec: &NodeSpec,
    status: &NodeStatus,
    hb: &HeartbeatRecord,
    rev: i64,
    now_ms: u64,
    timeout_ms: u64,
) -> Heartbeat {
    let state = status.provision_state;
    let Some(agent) = status.agent.as_ref().filter(|_| state.is_wait()) else {
        return Heartbeat::Ignored("the node is not waiting for its agent");
    };
    if rev < agent.heartbeat_rev {
        return Heartbeat::Ignored("older than one already acted on");
    }
    if hb.at_ms < agent.booted_at_ms {
        return Heartbeat::Ignored("sent before the node was booted into the ramdisk");
    }
    if !agent_may_progress(spec, status) {
        return Heartbeat::InMaintenance;
    }
    let inspection = hb.is_inspection_result();
    if state == ProvisionState::InspectWait && !inspection {
        // In-band inspection ends with the ramdisk's inspection data (the gateway records it
        // as an inspection result), not with a heartbeat.
        return Heartbeat::Ignored("inspect wait ends with the inspection data");
    }
    if inspection && state != ProvisionState::InspectWait {
        return Heartbeat::Ignored("inspection data for a node not waiting for it");
    }
    if let Some(pinned) = agent.token.as_ref().filter(|_| !inspection) {
        // (An inspection result is the gateway's record, not the agent's.)
        if hb.agent_token.as_ref() != Some(pinned) {
            return Heartbeat::WrongToken;
        }
    }
    let mut next = status.clone();
    {
        let a = next.agent.as_mut().expect("checked above");
        a.heartbeat_rev = rev;
        a.last_heartbeat_ms = Some(hb.at_ms);
        if a.token.is_none() {
            a.token = hb.agent_token.clone();
        }
    }
    if matches!(hb.agent_status.as_deref(), Some("error" | INSPECTION_ERROR)) {
        let error = format!(
            "the agent reported an error in \"{}\": {}",
            state.as_str(),
            hb.agent_status_message
                .as_deref()
                .unwrap_or("no message given")
        );
        return fail(spec, &next, state, error, "agent error", now_ms);
    }
    if inspection {
        let (resumed, work) = transition(spec, &next, Event::Resume, None, now_ms);
        return Heartbeat::Progress {
            action: format!(
                "inspection data received: \"{}\" -> \"{}\"",
                state.as_str(),
                resumed.provision_state.as_str()
            ),
            status: Box::new(resumed),
            error: None,
            work,
        };
    }
    let extend = next
        .deadline_ms
        .is_some_and(|d| d.saturating_sub(now_ms) < timeout_ms / 2);
    if extend {
        next.deadline_ms = Some(now_ms + timeout_ms);
    }
    let agent = next.agent.as_ref().expect("checked above");
    let booted = agent.booted_at_ms;
    let same = current_link(status).is_some_and(|l| {
        l.url == hb.callback_url
            && l.agent_version == hb.agent_version
            && l.verify_ca == hb.agent_verify_ca
    }) && agent.token == status.agent.as_ref().and_then(|a| a.token.clone());
    if same {
        return Heartbeat::Drive(extend.then(|| Box::new(next)));
    }
    let link = match current_link(status) {
        // The agent moved (a new address, a restarted agent): the same conversation goes on
        // at its new address.
        Some(l) => AgentLink {
            url: hb.callback_url.clone(),
            agent_version: hb.agent_version.clone(),
            verify_ca: hb.agent_verify_ca.clone(),
            ..l.clone()
        },
        None => AgentLink {
            booted_at_ms: booted,
            url: hb.callback_url.clone(),
            agent_version: hb.agent_version.clone(),
            verify_ca: hb.agent_verify_ca.clone(),
            steps_known: !needs_steps(agent.state),
            hardware_version: None,
            step_commands_done: 0,
            root_uuid: None,
            efi_uuid: None,
            command: None,
            failures: 0,
        },
    };
    next.agent_link = Some(link);
    Heartbeat::Drive(Some(Box::new(next)))
}

/// The state fails with `error`: its history line says `what`.
fn fail(
    spec: &NodeSpec,
    status: &NodeStatus,
    state: ProvisionState,
    error: String,
    what: &str,
    now_ms: u64,
) -> Heartbeat {
    let (failed, work) = transition(spec, status, Event::Fail, Some(error.clone()), now_ms);
    Heartbeat::Progress {
        action: format!(
            "{what}: \"{}\" -> \"{}\"",
            state.as_str(),
            failed.provision_state.as_str()
        ),
        status: Box::new(failed),
        error: Some(error),
        work,
    }
}

/// One call of the agent's command API.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentCall {
    /// `POST {url}/v1/commands/?wait=false` with `{"name": name, "params": params}`.
    Run {
        name: String,
        step: Option<String>,
        params: Value,
    },
    /// `GET {url}/v1/commands/{id}`.
    Poll { id: String },
    /// `GET {url}/v1/commands/`: a command was (about to be) posted and its answer was not
    /// recorded; the agent's list tells whether it runs.
    Find { name: String, step: Option<String> },
}

impl AgentCall {
    /// For logs and errors: the command this call is about.
    pub fn describe(&self, status: &NodeStatus) -> String {
        match self {
            AgentCall::Run { name, step, .. } | AgentCall::Find { name, step } => {
                with_step(name, step.as_deref())
            }
            AgentCall::Poll { .. } => current_link(status)
                .and_then(|l| l.command.as_ref())
                .map(|c| with_step(&c.name, c.step.as_deref()))
                .unwrap_or_else(|| "a command".into()),
        }
    }
}

fn with_step(name: &str, step: Option<&str>) -> String {
    match step {
        Some(s) => format!("{name} ({s})"),
        None => name.to_string(),
    }
}

/// The state of a command as the agent reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandState {
    Running,
    Succeeded,
    /// FAILED (or IPA's version mismatch), with the agent's error.
    Failed(String),
}

/// One command as the agent's API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub id: String,
    /// IPA's short name (`execute_deploy_step`).
    pub name: String,
    pub state: CommandState,
    pub result: Value,
}

/// What a call got.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// The command's result (`Run`, `Poll`).
    Command(CommandResult),
    /// The agent's commands of this boot, oldest first (`Find`).
    Listed(Vec<CommandResult>),
    /// The agent runs another command (HTTP 409): try again later.
    Busy(String),
    /// No answer (connection, timeout): tried again later, up to the attempts allowed.
    Unreachable(String),
    /// An answer that ends the state: an HTTP error, or something that is not the agent's.
    Refused(String),
}

/// What to do after an answer was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Call the agent again now (the next command).
    CallNow,
    /// A command runs: poll it after the poll interval (or at the next heartbeat).
    PollLater,
    /// Try again after the retry interval.
    RetryLater,
    /// Nothing more for the agent here (the state ended or resumed).
    Stop,
}

/// The outcome of an answer: the new status (None: unchanged), the history line and error if
/// the state ended or a step finished, the work that follows, and what comes next.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: Option<Box<NodeStatus>>,
    pub action: Option<String>,
    pub error: Option<String>,
    pub work: Option<Work>,
    pub then: Then,
}

impl Answer {
    fn unchanged(then: Then) -> Self {
        Answer {
            status: None,
            action: None,
            error: None,
            work: None,
            then,
        }
    }

    fn changed(status: NodeStatus, then: Then) -> Self {
        Answer {
            status: Some(Box::new(status)),
            ..Answer::unchanged(then)
        }
    }

    fn from_heartbeat(h: Heartbeat) -> Self {
        match h {
            Heartbeat::Progress {
                status,
                action,
                error,
                work,
            } => Answer {
                status: Some(status),
                action: Some(action),
                error,
                work,
                then: Then::Stop,
            },
            _ => Answer::unchanged(Then::Stop),
        }
    }
}

/// The next call to the agent, when the node waits for it and knows where it is.
pub fn next_call(spec: &NodeSpec, status: &NodeStatus) -> Option<AgentCall> {
    let state = status.provision_state;
    if !state.is_wait() || state == ProvisionState::InspectWait {
        return None;
    }
    if !agent_may_progress(spec, status) {
        return None;
    }
    let agent = status.agent.as_ref()?;
    let link = current_link(status)?;
    if let Some(c) = &link.command {
        return Some(match &c.id {
            Some(id) => AgentCall::Poll { id: id.clone() },
            None => AgentCall::Find {
                name: c.name.clone(),
                step: c.step.clone(),
            },
        });
    }
    if !link.steps_known {
        let (kind, _) = step_kind(agent.state)?;
        return Some(AgentCall::Run {
            name: format!("{kind}.get_{kind}_steps"),
            step: None,
            params: json!({ "node": node_view(spec, status), "ports": [] }),
        });
    }
    let step = agent.steps.get(agent.done as usize)?;
    let (name, params) = step_command(spec, status, link, step, link.step_commands_done)?;
    Some(AgentCall::Run {
        step: name.ends_with("_step").then(|| step.clone()),
        name,
        params,
    })
}

/// Whether the command must be recorded in the status before it is posted: running it twice
/// would do the work twice (a step, the boot loader, a power off). Asking for steps or
/// partitions, or syncing, is harmless to repeat.
pub fn records_before_posting(call: &AgentCall) -> bool {
    match call {
        AgentCall::Run { name, .. } => !matches!(
            name.as_str(),
            "deploy.get_deploy_steps"
                | "clean.get_clean_steps"
                | "service.get_service_steps"
                | "standby.get_partition_uuids"
                | "standby.sync"
        ),
        _ => false,
    }
}

/// The status with `call` recorded as the command under way (its id not known yet).
pub fn record_posting(status: &NodeStatus, call: &AgentCall, now_ms: u64) -> NodeStatus {
    let mut next = status.clone();
    if let (AgentCall::Run { name, step, .. }, Some(link)) = (call, link_mut(&mut next)) {
        link.command = Some(AgentCommand {
            name: name.clone(),
            step: step.clone(),
            id: None,
            issued_at_ms: now_ms,
        });
    }
    next
}

/// The command of `step` at position `index` among the step's commands, with its params;
/// None when the step has no more commands.
fn step_command(
    spec: &NodeSpec,
    status: &NodeStatus,
    link: &AgentLink,
    step: &str,
    index: u32,
) -> Option<(String, Value)> {
    let agent = status.agent.as_ref()?;
    let commands: Vec<(String, Value)> = match (agent.state, step) {
        (ProvisionState::Deploying, "deploy.write_image") => {
            let instance = json_map(&spec.instance_info);
            let step = json!({
                "interface": "deploy",
                "step": "write_image",
                "args": {
                    "image_info": image_info(spec, &instance),
                    "configdrive": instance.get("configdrive").cloned().unwrap_or(Value::Null),
                },
            });
            vec![execute("deploy", spec, status, link, step)]
        }
        (ProvisionState::Deploying, "deploy.prepare_instance_boot") => {
            let mut list = vec![("standby.get_partition_uuids".to_string(), json!({}))];
            let instance = json_map(&spec.instance_info);
            let boot_mode = boot_mode(spec, &instance);
            let whole_disk = !is_partition_image(&instance);
            if (link.root_uuid.is_some() && !whole_disk) || (whole_disk && boot_mode == "uefi") {
                list.push((
                    "image.install_bootloader".to_string(),
                    json!({
                        "root_uuid": link.root_uuid,
                        "efi_system_part_uuid": link.efi_uuid,
                        "prep_boot_part_uuid": null,
                        "target_boot_mode": boot_mode,
                    }),
                ));
            }
            list
        }
        (ProvisionState::Deploying, "deploy.tear_down_agent") => {
            if spec.disable_power_off {
                vec![("system.lockdown".to_string(), json!({}))]
            } else if driver_flag(spec, "deploy_forces_oob_reboot") {
                // The file systems are flushed; the conductor then reboots out of band.
                vec![("standby.sync".to_string(), json!({}))]
            } else {
                vec![("standby.power_off".to_string(), json!({}))]
            }
        }
        (ProvisionState::Rescuing, "rescue.finalize_rescue") => {
            let password = requested_arg(spec, "rescue_password").unwrap_or_default();
            vec![(
                "rescue.finalize_rescue".to_string(),
                json!({ "rescue_password": password, "hashed": false }),
            )]
        }
        (state, _) => {
            let (kind, _) = step_kind(state)?;
            let field = format!("{kind}_steps");
            let requested = requested_steps(spec, &field)
                .into_iter()
                .find(|s| step_name(s).as_deref() == Some(step));
            let (interface, name) = step.split_once('.')?;
            let mut obj = json!({ "interface": interface, "step": name, "args": {} });
            if let Some(r) = requested {
                for key in ["args", "priority"] {
                    if let Some(v) = r.get(key) {
                        obj[key] = v.clone();
                    }
                }
            }
            vec![execute(kind, spec, status, link, obj)]
        }
    };
    commands.into_iter().nth(index as usize)
}

/// `<kind>.execute_<kind>_step` with its params, as Ironic's agent client sends them.
fn execute(
    kind: &str,
    spec: &NodeSpec,
    status: &NodeStatus,
    link: &AgentLink,
    step: Value,
) -> (String, Value) {
    let version_key = status
        .agent
        .as_ref()
        .and_then(|a| step_kind(a.state))
        .map_or("clean_version", |(_, v)| v);
    let version: Value = link
        .hardware_version
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(Value::Null);
    let mut params = json!({
        "step": step,
        "node": node_view(spec, status),
        "ports": [],
    });
    params[version_key] = version;
    (format!("{kind}.execute_{kind}_step"), params)
}

/// A boolean of `driver_info` (`true` or a string Ironic reads as true).
fn driver_flag(spec: &NodeSpec, key: &str) -> bool {
    let info = spec.driver_info().unwrap_or_default();
    info.get(key).is_some_and(|v| match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"),
        _ => false,
    })
}

fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// An argument of the current provision request.
fn requested_arg(spec: &NodeSpec, key: &str) -> Option<String> {
    let args: Value = serde_json::from_str(&spec.provision_request.as_ref()?.args).ok()?;
    args.get(key)?.as_str().map(str::to_string)
}

/// Whether the image is a partition image: it comes with its own kernel and ramdisk, or says so.
fn is_partition_image(instance: &Map<String, Value>) -> bool {
    instance.get("image_type").and_then(Value::as_str) == Some("partition")
        || (instance.contains_key("kernel") && instance.contains_key("ramdisk"))
}

/// The boot mode the instance boots in: `instance_info.deploy_boot_mode`, else the node's
/// `boot_mode` capability, else Ironic's default, UEFI.
fn boot_mode(spec: &NodeSpec, instance: &Map<String, Value>) -> String {
    if let Some(m) = instance.get("deploy_boot_mode").and_then(Value::as_str) {
        return m.to_string();
    }
    let properties = json_map(&spec.properties);
    let capabilities = properties
        .get("capabilities")
        .and_then(Value::as_str)
        .unwrap_or("");
    capabilities
        .split(',')
        .find_map(|c| c.trim().strip_prefix("boot_mode:"))
        .map(str::to_string)
        .unwrap_or_else(|| "uefi".into())
}

/// The `image_info` IPA's `write_image` takes, from `instance_info` (Ironic's
/// `AgentDeploy.write_image`).
fn image_info(spec: &NodeSpec, instance: &Map<String, Value>) -> Value {
    let text = |k: &str| instance.get(k).and_then(Value::as_str).map(str::to_string);
    let source = text("image_source").unwrap_or_default();
    let url = text("image_url").unwrap_or_else(|| source.clone());
    let mut info = json!({
        "id": source.rsplit('/').next().unwrap_or(""),
        "urls": [url],
        "disk_format": text("image_disk_format"),
        "container_format": text("image_container_format"),
        "stream_raw_images": true,
        "node_uuid": spec.id.to_string(),
    });
    if let Some(c) = text("image_checksum") {
        info["checksum"] = json!(c);
    }
    if let (Some(algo), Some(value)) = (text("image_os_hash_algo"), text("image_os_hash_value")) {
        info["os_hash_algo"] = json!(algo);
        info["os_hash_value"] = json!(value);
    }
    if is_partition_image(instance) {
        // Every label IPA reads for a partition image (Ironic's `PARTITION_IMAGE_LABELS`), with
        // the values Ironic's `build_instance_info_for_deploy` gives those not set: IPA reads
        // `root_mb`, `swap_mb`, `ephemeral_mb` unconditionally, and `image_type` decides how the
        // image is written.
        for key in ["kernel", "ramdisk", "root_gb", "ephemeral_format"] {
            info[key] = instance.get(key).cloned().unwrap_or(Value::Null);
        }
        let number = |k: &str| {
            instance.get(k).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
        };
        let root_mb = number("root_mb").or_else(|| number("root_gb").map(|gb| gb * 1024));
        info["root_mb"] = json!(root_mb.unwrap_or(0));
        info["swap_mb"] = json!(number("swap_mb").unwrap_or(0));
        info["ephemeral_mb"] = json!(number("ephemeral_mb").unwrap_or(0));
        info["preserve_ephemeral"] = instance
            .get("preserve_ephemeral")
            .cloned()
            .unwrap_or(json!(false));
        info["image_type"] = json!("partition");
        info["deploy_boot_mode"] = json!(boot_mode(spec, instance));
        info["boot_option"] = json!("local");
    }
    if let Some(c) = instance.get("configdrive") {
        info["configdrive"] = c.clone();
    }
    info
}

/// The node as the agent sees it (Ironic's `node.as_dict(secure=True)`): secrets masked, the
/// config drive left out (it goes to `write_image` alone).
fn node_view(spec: &NodeSpec, status: &NodeStatus) -> Value {
    let info = spec.driver_info().unwrap_or_default();
    let mut instance = json_map(&spec.instance_info);
    instance.remove("configdrive");
    for (k, v) in instance.iter_mut() {
        if ferric_model::driver_info::is_secret_key(k) {
            *v = json!("******");
        }
    }
    json!({
        "uuid": spec.id.to_string(),
        "name": spec.name.as_ref().map(|n| n.to_string()),
        "driver": spec.driver,
        "driver_info": info.masked(),
        "driver_internal_info": {},
        "instance_info": instance,
        "instance_uuid": spec.instance_uuid.map(|u| u.to_string()),
        "properties": json_map(&spec.properties),
        "extra": json_map(&spec.extra),
        "provision_state": status.provision_state.as_str(),
        "target_provision_state": status.target_provision_state.map(|s| s.as_str()),
    })
}

/// Merges the steps the agent reported (`command_result` of `get_*_steps`) with the node's:
/// the steps in the order they run, or why they cannot.
///
/// - Deploying: Ferric's own deploy steps, the agent's steps with a priority above 0, and the
///   request's `deploy_steps` (a priority of 0 there removes a step), highest priority first.
/// - Automated cleaning: the agent's steps with a priority above 0, highest first.
/// - Manual cleaning and servicing: the request's steps in their order; each must be one the
///   agent offers.
pub fn merge_steps(
    spec: &NodeSpec,
    state: ProvisionState,
    manual: bool,
    reported: &Value,
) -> Result<Vec<String>, String> {
    let (kind, _) = step_kind(state).ok_or("no steps in this state")?;
    let field = format!("{kind}_steps");
    let by_manager = reported
        .get(&field)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("the agent's answer to get_{field} has no \"{field}\""))?;
    let mut offered: Vec<(String, i64)> = Vec::new();
    for step in by_manager.values().filter_map(Value::as_array).flatten() {
        let Some(name) = step_name(step) else {
            return Err(format!(
                "the agent reported a step without interface or name: {step}"
            ));
        };
        let priority = step.get("priority").and_then(Value::as_i64).unwrap_or(0);
        if !offered.iter().any(|(n, _)| *n == name) {
            offered.push((name, priority));
        }
    }
    let requested: Vec<(String, Option<i64>)> = requested_steps(spec, &field)
        .iter()
        .filter_map(|s| Some((step_name(s)?, s.get("priority").and_then(Value::as_i64))))
        .collect();
    let explicit =
        state == ProvisionState::Servicing || (state == ProvisionState::Cleaning && manual);
    if explicit {
        let mut out = Vec::new();
        for (name, _) in requested {
            if !offered.iter().any(|(n, _)| *n == name) {
                return Err(format!(
                    "the agent does not offer the {kind} step \"{name}\" (it offers: {})",
                    offered
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.push(name);
        }
        return Ok(out);
    }
    let mut steps: Vec<(String, i64)> = Vec::new();
    if state == ProvisionState::Deploying {
        steps.extend(OWN_DEPLOY_STEPS.iter().map(|(n, p)| (n.to_string(), *p)));
    }
    for (name, priority) in offered {
        if priority > 0 && !steps.iter().any(|(n, _)| *n == name) {
            steps.push((name, priority));
        }
    }
    if state == ProvisionState::Deploying {
        for (name, priority) in requested {
            let priority = priority.unwrap_or(0);
            steps.retain(|(n, _)| *n != name);
            if priority > 0 {
                steps.push((name, priority));
            }
        }
    }
    // Highest priority first; a stable sort keeps the agent's order among equals.
    steps.sort_by_key(|s| std::cmp::Reverse(s.1));
    Ok(steps.into_iter().map(|(n, _)| n).collect())
}

/// What an answer of the agent does to the node. `max_attempts`: calls in a row without an
/// answer after which the state fails.
pub fn on_answer(
    spec: &NodeSpec,
    status: &NodeStatus,
    call: &AgentCall,
    result: CallResult,
    now_ms: u64,
    max_attempts: u32,
) -> Answer {
    let state = status.provision_state;
    // A post recorded before it went out is the recorded command (whose next call would be to
    // look for it): its answer is that command's.
    let recorded = match (call, current_link(status).and_then(|l| l.command.as_ref())) {
        (AgentCall::Run { name, step, .. }, Some(c)) => {
            c.id.is_none() && c.name == *name && c.step == *step
        }
        _ => false,
    };
    if !recorded && !next_call(spec, status).is_some_and(|c| same_call(&c, call)) {
        // The node moved on while the call was out (an abort, a timeout, a newer heartbeat).
        return Answer::unchanged(Then::Stop);
    }
    let what = call.describe(status);
    let url = current_link(status)
        .map(|l| l.url.clone())
        .unwrap_or_default();
    let failed = |error: String| {
        Answer::from_heartbeat(fail(
            spec,
            status,
            state,
            error,
            "agent command failed",
            now_ms,
        ))
    };
    let mut next = status.clone();
    match result {
        CallResult::Unreachable(_) if leaves_agent(call, status) => {
            // The agent was told to power the machine off or lock itself down, and the answer
            // was lost (or a new owner looks for it): it is gone as asked. The conductor checks
            // the power itself (`agent_powers_off`), as Ironic's tear_down_agent does.
            let cmd = CommandResult {
                id: String::new(),
                name: command_name(call, status)
                    .split_once('.')
                    .map_or("", |(_, s)| s)
                    .to_string(),
                state: CommandState::Succeeded,
                result: Value::Null,
            };
            on_command(spec, &next, call, cmd, &what, now_ms)
        }
        CallResult::Unreachable(e) => {
            let link = link_mut(&mut next).expect("next_call found it");
            link.failures += 1;
            if link.failures >= max_attempts.max(1) {
                return failed(format!(
                    "the agent at {url} stopped answering ({} calls in a row for {what}): {e}",
                    link.failures
                ));
            }
            if let AgentCall::Run { .. } = call {
                // The command may have reached the agent: look for it before posting again.
                if let Some(c) = link.command.as_mut() {
                    c.id = None;
                }
            }
            Answer::changed(next, Then::RetryLater)
        }
        CallResult::Refused(e) => failed(format!("{what}: {e}")),
        CallResult::Busy(e) => {
            // IPA runs another command: after a lost answer, possibly ours (a recorded command
            // is looked for in the agent's list next; another is posted again). Later.
            tracing::debug!(node = %spec.id, command = %what, error = %e, "the agent is busy");
            let link = link_mut(&mut next).expect("next_call found it");
            link.failures = 0;
            Answer::changed(next, Then::PollLater)
        }
        CallResult::Listed(list) => {
            let AgentCall::Find { name, step } = call else {
                return failed(format!("{what}: the agent answered a list to a command"));
            };
            match find_command(&list, name, step.as_deref()) {
                Some(cmd) => on_command(spec, &next, call, cmd, &what, now_ms),
                None => {
                    // The agent does not have it: it never got there. Post it again (the calls
                    // without an answer still count: a post that never gets through must end
                    // the state, not be tried forever).
                    let link = link_mut(&mut next).expect("next_call found it");
                    link.command = None;
                    Answer::changed(next, Then::CallNow)
                }
            }
        }
        CallResult::Command(cmd) => on_command(spec, &next, call, cmd, &what, now_ms),
    }
}

/// The command `name` (running `step`) in the agent's list, as Ironic's agent client finds the
/// last command of a name: the newest of that name. A finished `execute_*_step` counts only if
/// it ran the same step (IPA returns the step with its result), so an earlier step's command
/// is never taken for this one.
pub fn find_command(
    list: &[CommandResult],
    name: &str,
    step: Option<&str>,
) -> Option<CommandResult> {
    let short = name.split_once('.').map_or(name, |(_, s)| s);
    let found = list.iter().rev().find(|c| c.name == short)?;
    if let (Some(step), false) = (step, found.state == CommandState::Running) {
        let ran = found
            .result
            .as_object()
            .and_then(|r| r.iter().find(|(k, _)| k.ends_with("_step")))
            .and_then(|(_, v)| step_name(v));
        if ran.as_deref() != Some(step) {
            return None;
        }
    }
    Some(found.clone())
}

/// The command a call is about (for a poll, the recorded command's).
fn command_name<'a>(call: &'a AgentCall, status: &'a NodeStatus) -> &'a str {
    match call {
        AgentCall::Run { name, .. } | AgentCall::Find { name, .. } => name,
        AgentCall::Poll { .. } => current_link(status)
            .and_then(|l| l.command.as_ref())
            .map_or("", |c| c.name.as_str()),
    }
}

/// Whether the call is about a command after which the agent is gone by design
/// (`standby.power_off`, `system.lockdown`).
fn leaves_agent(call: &AgentCall, status: &NodeStatus) -> bool {
    matches!(
        command_name(call, status),
        "standby.power_off" | "system.lockdown"
    )
}

/// Whether two calls are the same call (the params aside: they are rebuilt from the spec,
/// which may have changed meanwhile).
fn same_call(a: &AgentCall, b: &AgentCall) -> bool {
    match (a, b) {
        (
            AgentCall::Run { name, step, .. },
            AgentCall::Run {
                name: n2, step: s2, ..
            },
        ) => name == n2 && step == s2,
        (AgentCall::Poll { id }, AgentCall::Poll { id: i2 }) => id == i2,
        (AgentCall::Find { name, step }, AgentCall::Find { name: n2, step: s2 }) => {
            name == n2 && step == s2
        }
        _ => false,
    }
}

/// A command's result (posted, polled or found).
fn on_command(
    spec: &NodeSpec,
    status: &NodeStatus,
    call: &AgentCall,
    cmd: CommandResult,
    what: &str,
    now_ms: u64,
) -> Answer {
    let state = status.provision_state;
    let mut next = status.clone();
    let link = link_mut(&mut next).expect("the caller checked");
    link.failures = 0;
    let (name, step) = match call {
        AgentCall::Run { name, step, .. } | AgentCall::Find { name, step } => {
            (name.clone(), step.clone())
        }
        AgentCall::Poll { .. } => match &link.command {
            Some(c) => (c.name.clone(), c.step.clone()),
            None => return Answer::unchanged(Then::Stop),
        },
    };
    let short = name.split_once('.').map_or(name.as_str(), |(_, s)| s);
    if cmd.name != short {
        return Answer::from_heartbeat(fail(
            spec,
            status,
            state,
            format!(
                "{what}: the agent answered about another command ({})",
                cmd.name
            ),
            "agent command failed",
            now_ms,
        ));
    }
    // The agent goes away on these (IPA powers the machine off, or locks itself down): once it
    // took the command there is nothing to poll. The conductor checks the power itself.
    let leaves = matches!(name.as_str(), "standby.power_off" | "system.lockdown");
    let state_now = if leaves && cmd.state == CommandState::Running {
        CommandState::Succeeded
    } else {
        cmd.state.clone()
    };
    match state_now {
        CommandState::Running => {
            link.command = Some(AgentCommand {
                name,
                step,
                id: Some(cmd.id),
                issued_at_ms: link.command.as_ref().map_or(now_ms, |c| c.issued_at_ms),
            });
            Answer::changed(next, Then::PollLater)
        }
        CommandState::Failed(e) => Answer::from_heartbeat(fail(
            spec,
            status,
            state,
            format!("{what} failed on the agent: {e}"),
            "agent command failed",
            now_ms,
        )),
        CommandState::Succeeded => {
            link.command = None;
            if name.ends_with(".get_deploy_steps")
                || name.ends_with(".get_clean_steps")
                || name.ends_with(".get_service_steps")
            {
                let agent = next.agent.as_ref().expect("linked");
                let steps = match merge_steps(spec, agent.state, next.manual, &cmd.result) {
                    Ok(s) => s,
                    Err(e) => {
                        return Answer::from_heartbeat(fail(
                            spec,
                            status,
                            state,
                            e,
                            "agent steps refused",
                            now_ms,
                        ))
                    }
                };
                let link = link_mut(&mut next).expect("linked");
                link.steps_known = true;
                link.hardware_version = cmd
                    .result
                    .get("hardware_manager_version")
                    .map(|v| v.to_string());
                let agent = next.agent.as_mut().expect("linked");
                agent.steps = steps;
                agent.done = 0;
                let summary = agent.steps.join(", ");
                return step_finished(spec, next, now_ms, format!("agent steps: {summary}"));
            }
            if name == "standby.get_partition_uuids" {
                let text = |k: &str| cmd.result.get(k).and_then(Value::as_str).map(String::from);
                link.root_uuid = text("root uuid");
                link.efi_uuid = text("efi system partition uuid");
            }
            link.step_commands_done += 1;
            // A step whose commands are all done is done.
            let more = {
                let agent = next.agent.as_ref().expect("linked");
                let l = current_link(&next).expect("linked");
                agent
                    .steps
                    .get(agent.done as usize)
                    .and_then(|s| step_command(spec, &next, l, s, l.step_commands_done))
                    .is_some()
            };
            if more {
                return Answer::changed(next, Then::CallNow);
            }
            let agent = next.agent.as_mut().expect("linked");
            let step_name = agent
                .steps
                .get(agent.done as usize)
                .cloned()
                .unwrap_or_default();
            agent.done += 1;
            let line = format!(
                "agent step {step_name} done ({} of {})",
                agent.done,
                agent.steps.len()
            );
            if let Some(l) = link_mut(&mut next) {
                l.step_commands_done = 0;
            }
            step_finished(spec, next, now_ms, line)
        }
    }
}

/// After a step (or the step list) is settled: the next command, or the end of the agent's
/// part (the busy state resumes).
fn step_finished(spec: &NodeSpec, next: NodeStatus, now_ms: u64, line: String) -> Answer {
    let state = next.provision_state;
    let agent = next.agent.as_ref().expect("linked");
    if !agent.finished() {
        return Answer {
            status: Some(Box::new(next)),
            action: Some(line),
            error: None,
            work: None,
            then: Then::CallNow,
        };
    }
    let (resumed, work) = transition(spec, &next, Event::Resume, None, now_ms);
    Answer {
        action: Some(format!(
            "{line}: \"{}\" -> \"{}\"",
            state.as_str(),
            resumed.provision_state.as_str()
        )),
        status: Some(Box::new(resumed)),
        error: None,
        work,
        then: Then::Stop,
    }
}

/// Whether the agent of this deploy was told to power the machine off (its `tear_down_agent`
/// step ran `standby.power_off`): the conductor's boot into the instance then waits for off.
pub fn agent_powers_off(spec: &NodeSpec, status: &NodeStatus) -> bool {
    let Some(agent) = status.agent.as_ref() else {
        return false;
    };
    let oob = driver_flag(spec, "deploy_forces_oob_reboot");
    status.provision_state == ProvisionState::Deploying
        && agent.state == ProvisionState::Deploying
        && agent.finished()
        && agent.steps.iter().any(|s| s == "deploy.tear_down_agent")
        && !oob
        && !spec.disable_power_off
}

/// If the node's wait state ran out of time: the failed status and the error. Nodes in
/// maintenance do not time out (nothing advances them by themselves), as in Ironic.
pub fn wait_timeout(
    spec: &NodeSpec,
    status: &NodeStatus,
    now_ms: u64,
) -> Option<(NodeStatus, String)> {
    let state = status.provision_state;
    let deadline = status.deadline_ms?;
    if !state.is_wait() || now_ms < deadline || !agent_may_progress(spec, status) {
        return None;
    }
    let step = status
        .agent
        .as_ref()
        .and_then(|a| a.steps.get(a.done as usize).cloned());
    let running = current_link(status)
        .and_then(|l| l.command.as_ref())
        .map(|c| format!(", command {}", with_step(&c.name, c.step.as_deref())))
        .unwrap_or_default();
    let error = format!(
        "Timeout reached while waiting for callback for node {} in \"{}\"{}{running}",
        spec.id,
        state.as_str(),
        step.map(|s| format!(" (step {s})")).unwrap_or_default()
    );
    let (failed, _) = transition(spec, status, Event::Fail, Some(error.clone()), now_ms);
    Some((failed, error))
}

/// When the node leaves maintenance in a wait state, its agent gets a whole timeout again (the
/// deadline may have passed while nothing was allowed to advance the node).
pub fn restart_wait_on_leaving_maintenance(status: &mut NodeStatus, now_ms: u64, timeout_ms: u64) {
    if status.provision_state.is_wait() && status.deadline_ms.is_some() {
        status.deadline_ms = Some(now_ms + timeout_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::{NodeId, ProvisionRequest, Verb};

    fn spec_with(args: Value) -> NodeSpec {
        let mut s = NodeSpec::new(NodeId::new_random(), "redfish", 0);
        s.provision_request = Some(ProvisionRequest {
            seq: 1,
            verb: Verb::Clean,
            maintenance_ok: false,
            args: args.to_string(),
            requested_by: "t".into(),
            requested_at_ms: 0,
        });
        s
    }

    fn reported(kind: &str) -> Value {
        json!({
            format!("{kind}_steps"): {
                "GenericHardwareManager": [
                    { "step": "erase_devices", "priority": 10, "interface": "deploy" },
                    { "step": "erase_devices_metadata", "priority": 99, "interface": "deploy" },
                    { "step": "burnin_cpu", "priority": 0, "interface": "deploy" },
                    { "step": "write_image", "priority": 0, "interface": "deploy" },
                ],
                "OtherManager": [
                    { "step": "erase_devices", "priority": 5, "interface": "deploy" },
                    { "step": "update_firmware", "priority": 50, "interface": "deploy" },
                ],
            }
        })
    }

    #[test]
    fn steps_merge_as_ironic_orders_them() {
        let none = spec_with(json!({}));
        assert_eq!(
            merge_steps(&none, ProvisionState::Cleaning, false, &reported("clean")).unwrap(),
            [
                "deploy.erase_devices_metadata",
                "deploy.update_firmware",
                "deploy.erase_devices"
            ]
        );
        // Deploy: Ferric's own steps with the agent's prioritised ones; a request's
        // deploy_steps set priorities (0 removes a step).
        let deploy = spec_with(json!({"deploy_steps": [
            {"interface": "deploy", "step": "burnin_cpu", "priority": 70, "args": {}},
            {"interface": "deploy", "step": "erase_devices_metadata", "priority": 0},
        ]}));
        assert_eq!(
            merge_steps(
                &deploy,
                ProvisionState::Deploying,
                false,
                &reported("deploy")
            )
            .unwrap(),
            [
                "deploy.write_image",
                "deploy.burnin_cpu",
                "deploy.prepare_instance_boot",
                "deploy.update_firmware",
                "deploy.tear_down_agent",
                "deploy.erase_devices",
            ]
        );
        // Manual cleaning runs what was asked, in order, if the agent offers it.
        let manual = spec_with(json!({"clean_steps": [
            {"interface": "deploy", "step": "burnin_cpu"},
            {"interface": "deploy", "step": "erase_devices_metadata"},
        ]}));
        assert_eq!(
            merge_steps(&manual, ProvisionState::Cleaning, true, &reported("clean")).unwrap(),
            ["deploy.burnin_cpu", "deploy.erase_devices_metadata"]
        );
        let unknown =
            spec_with(json!({"clean_steps": [{"interface": "bios", "step": "factory_reset"}]}));
        let e =
            merge_steps(&unknown, ProvisionState::Cleaning, true, &reported("clean")).unwrap_err();
        assert!(
            e.contains("does not offer the clean step \"bios.factory_reset\""),
            "{e}"
        );
        assert!(merge_steps(&none, ProvisionState::Cleaning, false, &json!({"x": 1})).is_err());
        assert!(merge_steps(
            &none,
            ProvisionState::Cleaning,
            false,
            &json!({"clean_steps": {"M": [{"priority": 1}]}})
        )
        .is_err());
    }

    fn cmd(id: &str, name: &str, state: CommandState, step: Option<&str>) -> CommandResult {
        let result = match step {
            Some(s) => {
                let (i, n) = s.split_once('.').unwrap();
                json!({"clean_result": null, "clean_step": {"interface": i, "step": n}})
            }
            None => Value::Null,
        };
        CommandResult {
            id: id.into(),
            name: name.into(),
            state,
            result,
        }
    }

    /// A deploy waiting on its agent with `done` steps done and `command` recorded.
    fn deploying(done: u32, command: Option<(&str, Option<&str>)>, failures: u32) -> NodeStatus {
        let steps = [
            "deploy.write_image",
            "deploy.prepare_instance_boot",
            "deploy.tear_down_agent",
        ];
        NodeStatus {
            provision_state: ProvisionState::WaitCallBack,
            target_provision_state: Some(ProvisionState::Active),
            deadline_ms: Some(1_000_000),
            agent: Some(ferric_model::AgentProgress {
                state: ProvisionState::Deploying,
                steps: steps.iter().map(|s| s.to_string()).collect(),
                done,
                booted_at_ms: 10,
                token: Some("t".into()),
                heartbeat_rev: 1,
                last_heartbeat_ms: Some(11),
                maintenance_ok: false,
            }),
            agent_link: Some(AgentLink {
                booted_at_ms: 10,
                url: "http://127.0.0.1:9".into(),
                agent_version: None,
                verify_ca: None,
                steps_known: true,
                hardware_version: None,
                step_commands_done: 0,
                root_uuid: None,
                efi_uuid: None,
                command: command.map(|(name, step)| AgentCommand {
                    name: name.into(),
                    step: step.map(str::to_string),
                    id: None,
                    issued_at_ms: 12,
                }),
                failures,
            }),
            ..NodeStatus::default()
        }
    }

    #[test]
    fn a_lost_answer_to_power_off_is_the_agent_gone_as_asked() {
        let spec = NodeSpec::new(NodeId::new_random(), "redfish", 0);
        let st = deploying(2, Some(("standby.power_off", None)), 0);
        let call = next_call(&spec, &st).unwrap();
        assert!(matches!(call, AgentCall::Find { .. }), "{call:?}");
        let a = on_answer(
            &spec,
            &st,
            &call,
            CallResult::Unreachable("connect failed".into()),
            100,
            3,
        );
        let next = a.status.expect("the deploy goes on");
        assert_eq!(next.provision_state, ProvisionState::Deploying);
        assert!(a.work.is_some(), "the conductor boots the instance");
        assert!(agent_powers_off(&spec, &next));
    }

    #[test]
    fn a_post_that_never_gets_through_ends_the_state() {
        let spec = NodeSpec::new(NodeId::new_random(), "redfish", 0);
        let st = deploying(
            0,
            Some(("deploy.execute_deploy_step", Some("deploy.write_image"))),
            2,
        );
        // Looked for: not there. The failures in a row still count.
        let find = next_call(&spec, &st).unwrap();
        let a = on_answer(&spec, &st, &find, CallResult::Listed(vec![]), 100, 3);
        let st = *a.status.unwrap();
        assert_eq!(current_link(&st).unwrap().failures, 2);
        let run = next_call(&spec, &st).unwrap();
        assert!(matches!(run, AgentCall::Run { .. }), "{run:?}");
        let a = on_answer(
            &spec,
            &st,
            &run,
            CallResult::Unreachable("timeout".into()),
            101,
            3,
        );
        let failed = a.status.unwrap();
        assert_eq!(failed.provision_state, ProvisionState::DeployFailed);
        assert!(a.error.unwrap().contains("stopped answering"));
    }

    #[test]
    fn partition_images_carry_what_ipa_reads() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "redfish", 0);
        spec.instance_info = json!({"image_source": "http://i/p.img", "kernel": "k",
                                    "ramdisk": "r", "root_gb": 10})
        .to_string();
        let instance = json_map(&spec.instance_info);
        let info = image_info(&spec, &instance);
        assert_eq!(info["image_type"], "partition");
        assert_eq!(info["root_mb"], 10240);
        assert_eq!(info["swap_mb"], 0);
        assert_eq!(info["ephemeral_mb"], 0);
        assert_eq!(info["preserve_ephemeral"], false);
        spec.instance_info = json!({"image_source": "http://i/w.qcow2"}).to_string();
        let whole = image_info(&spec, &json_map(&spec.instance_info));
        assert!(whole.get("image_type").is_none(), "{whole}");
    }

    #[test]
    fn a_lost_command_is_found_only_if_it_is_this_one() {
        let list = vec![
            cmd("1", "get_clean_steps", CommandState::Succeeded, None),
            cmd(
                "2",
                "execute_clean_step",
                CommandState::Succeeded,
                Some("deploy.erase_devices_metadata"),
            ),
        ];
        let name = "clean.execute_clean_step";
        // The earlier step's command is not this step's.
        assert_eq!(
            find_command(&list, name, Some("deploy.erase_devices")),
            None
        );
        assert_eq!(
            find_command(&list, name, Some("deploy.erase_devices_metadata")).map(|c| c.id),
            Some("2".into())
        );
        let mut running = list.clone();
        running.push(cmd("3", "execute_clean_step", CommandState::Running, None));
        assert_eq!(
            find_command(&running, name, Some("deploy.erase_devices")).map(|c| c.id),
            Some("3".into())
        );
        assert_eq!(find_command(&list, "standby.power_off", None), None);
    }
}
