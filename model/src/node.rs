//! The node record, split into **spec** (desired: written by users through the gateway or `ctl`,
//! key `nodes/<uuid>`) and **status** (observed: written only by the owning node actor, fenced,
//! key `status/<uuid>`), plus the conductor and reservation records.
//!
//! Actions (power, provision) are requests with a sequence number in the spec; the owner marks a
//! request done by recording its sequence number in the status. Requests are edges, not levels:
//! a machine that somebody shut down from inside its OS is never powered back on because an old
//! spec still says "on".

use crate::codec::{CodecError, Record};
use crate::history::{HistoryKind, Requester};
use crate::ids::{NodeId, NodeName};
use crate::power::{BootDevice, PowerState, PowerTarget};
use crate::provision::{ProvisionState, Verb};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A requested power action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerRequest {
    /// Strictly increasing per node; the owner records the last one done in the status.
    pub seq: u64,
    pub target: PowerTarget,
    /// Per-request timeout in seconds (Ironic's `timeout`); None means the driver default.
    pub timeout_s: Option<u32>,
    pub requested_by: String,
    pub requested_at_ms: u64,
}

/// A requested provision verb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    pub seq: u64,
    pub verb: Verb,
    /// Ferric extension: run manual cleaning although the node is in maintenance.
    pub maintenance_ok: bool,
    /// Extra arguments of the verb (clean steps, configdrive, ...), as JSON text.
    pub args: String,
    pub requested_by: String,
    pub requested_at_ms: u64,
}

/// A requested boot device change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootDeviceRequest {
    pub seq: u64,
    pub device: BootDevice,
    pub persistent: bool,
    pub requested_by: String,
    pub requested_at_ms: u64,
}

/// A power operation in progress, recorded in the status before the first BMC command so that
/// a conductor taking the node over knows what was under way and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerOp {
    /// The request (spec `power_request.seq`) being carried out.
    pub seq: u64,
    pub target: PowerTarget,
    pub started_at_ms: u64,
    /// When a soft power off (or the off half of a soft reboot) gives up waiting for the OS.
    pub deadline_ms: u64,
    /// The graceful request has been sent to the BMC; only waiting remains.
    pub soft_sent: bool,
}

/// What a timeout of a soft power off means for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SoftOffPolicy {
    /// Never cut power nobody asked to cut: leave power as it is, record a fault.
    #[default]
    Error,
    /// Force the machine off after the timeout and say so in the node's history.
    HardOff,
}

/// Desired state and configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub name: Option<NodeName>,
    pub driver: String,
    /// JSON object text (Ironic's `driver_info`); secrets are masked on the way out, not here.
    /// Read it with [`NodeSpec::driver_info`].
    pub driver_info: String,
    /// JSON object text.
    pub properties: String,
    /// JSON object text.
    pub extra: String,
    /// JSON object text.
    pub instance_info: String,
    pub instance_uuid: Option<uuid::Uuid>,
    pub conductor_group: String,
    pub resource_class: Option<String>,
    /// `*_interface` fields by name ("deploy_interface" -> "fake").
    pub interfaces: BTreeMap<String, String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub disable_power_off: bool,
    pub soft_off_policy: SoftOffPolicy,
    pub console_enabled: bool,
    pub power_request: Option<PowerRequest>,
    pub provision_request: Option<ProvisionRequest>,
    pub boot_device_request: Option<BootDeviceRequest>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    // Format version 2 appended the fields below; they must stay last, in this order (see
    // `migrate`).
    /// Ironic's `description`, `owner`, `lessee` (free text; owner and lessee are project ids).
    pub description: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    /// Ironic's `automated_clean`: None follows the cluster's default (`config/sync`
    /// `automated_clean`, true unless set); false makes `provide` and tear down skip cleaning.
    pub automated_clean: Option<bool>,
    /// A retired node is not provided again: tear down ends in `manageable`.
    pub retired: bool,
    pub retired_reason: Option<String>,
    /// A protected node (only while `active` or `rescue`) refuses undeploy, rebuild and delete.
    pub protected: bool,
    pub protected_reason: Option<String>,
    /// JSON object text (Ironic's `network_data`).
    pub network_data: String,
    pub shard: Option<String>,
    /// Ironic's traits, sorted and unique (at most [`NodeSpec::MAX_TRAITS`]).
    pub traits: Vec<String>,
    // Format version 3 appended the field below; it must stay last. A spec without it is
    // written in format 2 (see `Record::encode_body`), so records stay readable by the previous
    // release unless trace export is on.
    /// The trace context of the requests above, when the process that wrote them exported
    /// traces: the owner carries a request out in a span that is a child of its writer's.
    pub traces: Option<RequestTraces>,
}

/// The W3C `traceparent` of the span that wrote a request (the gateway's etcd write), and
/// which request (by seq) it belongs to: a request written without trace context by another
/// writer never inherits an older request's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTrace {
    pub seq: u64,
    pub traceparent: String,
}

/// The trace context of each kind of request in a spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTraces {
    pub power: Option<RequestTrace>,
    pub provision: Option<RequestTrace>,
    pub boot_device: Option<RequestTrace>,
}

/// The kinds of request a spec carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Power,
    Provision,
    BootDevice,
}

impl NodeSpec {
    /// Ironic's `MAX_TRAITS_PER_NODE`.
    pub const MAX_TRAITS: usize = 50;

    /// Puts a deploy's or rebuild's config drive (in the verb's `args`, JSON text) into
    /// `instance_info.configdrive`, as Ironic's `_store_configdrive` does (the API shows it
    /// masked), and returns the arguments without it, so the drive is not stored twice. A dict
    /// (which Ironic's conductor turns into an ISO image) is stored as given.
    pub fn store_configdrive(&mut self, args: &str) -> String {
        use serde_json::{Map, Value};
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(args) else {
            return args.to_string();
        };
        let Some(drive) = obj.remove("configdrive") else {
            return args.to_string();
        };
        let mut info = match serde_json::from_str::<Value>(&self.instance_info) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        info.insert("configdrive".into(), drive);
        self.instance_info = Value::Object(info).to_string();
        if obj.is_empty() {
            String::new()
        } else {
            Value::Object(obj).to_string()
        }
    }

    /// The node's `kind` interface (`"bios"`, `"deploy"`, ...): its `<kind>_interface` field,
    /// else the driver's default (None for a driver this build does not have).
    pub fn interface(&self, kind: &str) -> Option<&str> {
        self.interfaces
            .get(&format!("{kind}_interface"))
            .map(String::as_str)
            .or_else(|| crate::interfaces::default_for(&self.driver, kind))
    }

    /// A freshly enrolled node with empty JSON fields.
    pub fn new(id: NodeId, driver: &str, now_ms: u64) -> Self {
        NodeSpec {
            id,
            name: None,
            driver: driver.to_string(),
            driver_info: "{}".into(),
            properties: "{}".into(),
            extra: "{}".into(),
            instance_info: "{}".into(),
            instance_uuid: None,
            conductor_group: String::new(),
            resource_class: None,
            interfaces: BTreeMap::new(),
            maintenance: false,
            maintenance_reason: None,
            disable_power_off: false,
            soft_off_policy: SoftOffPolicy::Error,
            console_enabled: false,
            power_request: None,
            provision_request: None,
            boot_device_request: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            description: None,
            owner: None,
            lessee: None,
            automated_clean: None,
            retired: false,
            retired_reason: None,
            protected: false,
            protected_reason: None,
            network_data: "{}".into(),
            shard: None,
            traits: Vec::new(),
            traces: None,
        }
    }

    fn request_seq(&self, kind: RequestKind) -> Option<u64> {
        match kind {
            RequestKind::Power => self.power_request.as_ref().map(|r| r.seq),
            RequestKind::Provision => self.provision_request.as_ref().map(|r| r.seq),
            RequestKind::BootDevice => self.boot_device_request.as_ref().map(|r| r.seq),
        }
    }

    fn trace_slot(traces: &mut RequestTraces, kind: RequestKind) -> &mut Option<RequestTrace> {
        match kind {
            RequestKind::Power => &mut traces.power,
            RequestKind::Provision => &mut traces.provision,
            RequestKind::BootDevice => &mut traces.boot_device,
        }
    }

    /// After a change made from `before`: every request the change added (a request whose seq
    /// differs from `before`'s) gets `traceparent` as its trace context, or loses the previous
    /// request's when there is none. Empty traces leave the field unset.
    pub fn trace_requests(&mut self, before: &NodeSpec, traceparent: Option<&str>) {
        let mut traces = self.traces.take().unwrap_or_default();
        for kind in [
            RequestKind::Power,
            RequestKind::Provision,
            RequestKind::BootDevice,
        ] {
            let seq = self.request_seq(kind);
            let slot = Self::trace_slot(&mut traces, kind);
            if seq != before.request_seq(kind) {
                *slot = seq.zip(traceparent).map(|(seq, tp)| RequestTrace {
                    seq,
                    traceparent: tp.to_string(),
                });
            } else if slot.as_ref().is_some_and(|t| Some(t.seq) != seq) {
                *slot = None;
            }
        }
        if traces != RequestTraces::default() {
            self.traces = Some(traces);
        }
    }

    /// The trace context the request `seq` of `kind` was written with, if any.
    pub fn traceparent(&self, kind: RequestKind, seq: u64) -> Option<&str> {
        let traces = self.traces.as_ref()?;
        let t = match kind {
            RequestKind::Power => traces.power.as_ref(),
            RequestKind::Provision => traces.provision.as_ref(),
            RequestKind::BootDevice => traces.boot_device.as_ref(),
        }?;
        (t.seq == seq).then_some(t.traceparent.as_str())
    }

    /// Whether cleaning runs on `provide` and after tear down: the node's `automated_clean`,
    /// else the cluster's default.
    pub fn automated_clean_or(&self, cluster_default: bool) -> bool {
        self.automated_clean.unwrap_or(cluster_default)
    }

    /// The parsed `driver_info`. The spec keeps the text a client sent (so the persisted
    /// format is unchanged); this is the one way to read it.
    pub fn driver_info(&self) -> Result<crate::DriverInfo, crate::DriverInfoError> {
        crate::DriverInfo::parse(&self.driver_info)
    }

    /// The power request the owner has not yet finished, if any.
    pub fn pending_power(&self, status: &NodeStatus) -> Option<&PowerRequest> {
        self.power_request
            .as_ref()
            .filter(|r| r.seq > status.power_seq_done)
    }

    /// The provision request the owner has not yet taken up, if any.
    pub fn pending_provision(&self, status: &NodeStatus) -> Option<&ProvisionRequest> {
        self.provision_request
            .as_ref()
            .filter(|r| r.seq > status.provision_seq_done)
    }

    /// The boot device request the owner has not yet carried out, if any.
    pub fn pending_boot_device(&self, status: &NodeStatus) -> Option<&BootDeviceRequest> {
        self.boot_device_request
            .as_ref()
            .filter(|r| r.seq > status.boot_seq_done)
    }

    pub fn next_boot_seq(&self) -> u64 {
        self.boot_device_request.as_ref().map_or(1, |r| r.seq + 1)
    }

    pub fn next_power_seq(&self) -> u64 {
        self.power_request.as_ref().map_or(1, |r| r.seq + 1)
    }

    pub fn next_provision_seq(&self) -> u64 {
        self.provision_request.as_ref().map_or(1, |r| r.seq + 1)
    }
}

/// What version 1 of the spec lacks, as postcard writes the new fields unset: eight single 0
/// bytes (absent Options and false: description .. protected_reason), the string "{}" (its
/// length 2, then its bytes), an absent shard and an empty list of traits.
const SPEC_V2_TAIL: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}', 0, 0];

impl Record for NodeSpec {
    const KIND: &'static str = "node spec";
    /// 2: description, owner, lessee, automated_clean, retired(_reason), protected(_reason),
    /// network_data, shard and traits appended. 3: traces appended.
    const VERSION: u8 = 3;

    /// Without traces, format 2: the same bytes less the unset `traces` (postcard's one 0 byte
    /// of an absent Option, the body's last byte), which the previous release reads.
    fn encode_body(&self, mut body: Vec<u8>) -> (u8, Vec<u8>) {
        if self.traces.is_none() && body.last() == Some(&0) {
            body.pop();
            (2, body)
        } else {
            (Self::VERSION, body)
        }
    }

    fn migrate(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 | 2 => {
                let mut v3 = Vec::with_capacity(body.len() + SPEC_V2_TAIL.len() + 1);
                v3.extend_from_slice(body);
                if version == 1 {
                    v3.extend_from_slice(SPEC_V2_TAIL);
                }
                // traces: absent.
                v3.push(0);
                crate::codec::body_of(version, &v3)
            }
            _ => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
                current: Self::VERSION,
            }),
        }
    }
}

/// What the owning conductor observed and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// None: unknown (never read, or the read failed). Unknown is not off.
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerTarget>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub last_error: Option<String>,
    pub fault: Option<String>,
    /// Conductor that wrote this status, and the fencing token it held.
    pub owner: Option<String>,
    pub fence: i64,
    pub power_seq_done: u64,
    pub provision_seq_done: u64,
    pub boot_seq_done: u64,
    /// The boot device last set through Ferric (None: never set, or unknown).
    pub boot_device: Option<BootDevice>,
    pub boot_persistent: bool,
    /// The power operation under way, if any.
    pub power_op: Option<PowerOp>,
    /// Per-node sequence number of the last event written to the outbox.
    pub event_seq: u64,
    /// Per-node sequence number of the last history entry written.
    pub history_seq: u64,
    /// True while the current cleaning is manual (ends in `manageable`, not `available`).
    pub manual: bool,
    /// Deadline of the current wait state, when there is one.
    pub deadline_ms: Option<u64>,
    pub provision_updated_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// When `fault` was set (the owner sets maintenance in the spec right after; a new owner
    /// that finds the fault without maintenance compares this with the spec's `updated_at_ms`).
    pub fault_at_ms: Option<u64>,
    /// The agent's part of the current provisioning state (deploy interface `direct`).
    pub agent: Option<AgentProgress>,
    /// The remediation policy's work on this node, if it ever applied.
    pub remediation: Option<Remediation>,
    /// Set while the node is held by a *caretaker*: a conductor that does not serve the node's
    /// driver and conductor group, because no live conductor does. It says so (which driver,
    /// which group, who holds the node); the caretaker does no hardware work and keeps requests
    /// queued. Cleared by the first owner that serves the node.
    pub unserved: Option<String>,
    /// Power sync: failed power state reads in a row (kept here so that a failover does not
    /// reset the count); at the conductor's `--sync-max-failures` the node gets the fault
    /// `power failure`.
    pub power_failures: u32,
    /// The maintenance reason the owner set because of the current fault, so that recovery
    /// lifts only that maintenance, never one a user set.
    pub fault_maintenance: Option<String>,
    /// When the last power operation (a request, or sync's own push) ended: power sync's grace
    /// period runs from here as well as from the last request.
    pub power_op_ended_ms: Option<u64>,
    // Format version 2 appended the fields from `unserved` on; they must stay last, in this
    // order (see `migrate`).
    /// The conductor's link to the agent's command API in the current wait state (set by the
    /// first heartbeat of the ramdisk boot in `agent`). Format version 3.
    pub agent_link: Option<AgentLink>,
}

/// What the agent on the node has done in the current provisioning state: the node was booted
/// into the ramdisk, and each heartbeat runs the next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProgress {
    /// The busy state whose work this is (`deploying`, `cleaning`, ...).
    pub state: ProvisionState,
    /// Steps in order, as `interface.step` (Ironic's naming).
    pub steps: Vec<String>,
    /// How many of `steps` are done.
    pub done: u32,
    /// When the conductor booted the node into the ramdisk; older heartbeats are stale.
    pub booted_at_ms: u64,
    /// The agent token, pinned by the first heartbeat after the boot; others are refused.
    pub token: Option<String>,
    /// etcd revision of the last heartbeat acted on.
    pub heartbeat_rev: i64,
    pub last_heartbeat_ms: Option<u64>,
    /// The work was asked for while the node was in maintenance (manual cleaning with
    /// `maintenance_ok`, or remediation): heartbeats and the timeout apply in maintenance too.
    pub maintenance_ok: bool,
}

impl AgentProgress {
    pub fn finished(&self) -> bool {
        self.done as usize >= self.steps.len()
    }
}

/// How the conductor talks to the agent of the current ramdisk boot through its command API
/// (IPA's `POST /v1/commands/`, `GET /v1/commands/{id}`), kept in the status so that a new
/// owner after a failover goes on with the same agent and the same command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLink {
    /// The boot it belongs to (`AgentProgress::booted_at_ms`); a link of another boot is stale.
    pub booted_at_ms: u64,
    /// The agent's API, as its heartbeat's `callback_url` gave it.
    pub url: String,
    pub agent_version: Option<String>,
    /// The CA certificate (PEM) the agent sent as `agent_verify_ca`, to verify its TLS.
    pub verify_ca: Option<String>,
    /// The agent's steps are known: it answered `get_*_steps`, and they are merged into
    /// `AgentProgress::steps`.
    pub steps_known: bool,
    /// The agent's `hardware_manager_version` (JSON), sent back with each step it runs.
    pub hardware_version: Option<String>,
    /// Commands of the current step that are done (a step may take more than one command).
    pub step_commands_done: u32,
    /// The partition the image's root is on, as `standby.get_partition_uuids` answered it.
    pub root_uuid: Option<String>,
    pub efi_uuid: Option<String>,
    /// The command under way.
    pub command: Option<AgentCommand>,
    /// Calls to the agent in a row that got no answer.
    pub failures: u32,
}

/// A command the conductor gave the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCommand {
    /// The full command name (`deploy.execute_deploy_step`).
    pub name: String,
    /// The step it runs (`interface.step`), for `execute_*_step`.
    pub step: Option<String>,
    /// The agent's id of the command. None: it was (about to be) posted and the answer was not
    /// recorded; the agent's command list tells whether it runs.
    pub id: Option<String>,
    pub issued_at_ms: u64,
}

/// The remediation policy's work on a node (one fault episode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediation {
    /// The fault being remediated.
    pub fault: String,
    /// Attempts started for this fault episode.
    pub attempts: u32,
    /// An attempt is under way.
    pub active: bool,
    /// The attempt's cleaning was requested (a `clean failed` after this is the attempt's).
    pub cleaning: bool,
    pub started_at_ms: u64,
}

/// What a remediation rule does to a node in maintenance with its fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemediationAction {
    /// Clean the node (`manage` if needed, then `provide`, which runs automated cleaning); if
    /// it reaches `available`, maintenance and fault are cleared.
    Clean,
    /// Read the power state through the driver; if that works, maintenance and fault are cleared.
    PowerCheck,
}

impl RemediationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RemediationAction::Clean => "clean",
            RemediationAction::PowerCheck => "power-check",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clean" => Some(RemediationAction::Clean),
            "power-check" => Some(RemediationAction::PowerCheck),
            _ => None,
        }
    }
}

/// One rule of the remediation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationRule {
    /// The fault it applies to (`clean failure`, `power failure`, ...).
    pub fault: String,
    pub action: RemediationAction,
    /// Attempts per fault episode (an episode ends when maintenance is left).
    pub attempts: u32,
}

/// The cluster-wide remediation policy (`config/remediation`). Off unless a rule exists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemediationPolicy {
    pub rules: Vec<RemediationRule>,
    /// At most this many attempts start per window, across the whole cluster.
    pub max_per_window: u32,
    pub window_secs: u32,
}

impl RemediationPolicy {
    pub fn rule_for(&self, fault: &str) -> Option<&RemediationRule> {
        self.rules.iter().find(|r| r.fault == fault)
    }
}

impl Record for RemediationPolicy {
    const KIND: &'static str = "remediation policy";
    const VERSION: u8 = 1;
}

/// The value of `remediation/budget`: attempts started in the current window of the policy's
/// rate limit, taken with a compare-and-swap by whichever conductor starts one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationBudget {
    pub window_start_ms: u64,
    pub used: u32,
}

impl Record for RemediationBudget {
    const KIND: &'static str = "remediation budget";
    const VERSION: u8 = 1;
}

/// Ironic's fault names.
pub mod faults {
    pub const POWER_FAILURE: &str = "power failure";
    pub const CLEAN_FAILURE: &str = "clean failure";
    pub const RESCUE_ABORT_FAILURE: &str = "rescue abort failure";
    pub const SERVICE_FAILURE: &str = "service failure";
    pub const ALL: &[&str] = &[
        POWER_FAILURE,
        CLEAN_FAILURE,
        RESCUE_ABORT_FAILURE,
        SERVICE_FAILURE,
    ];
}

impl Default for NodeStatus {
    /// The status of a node nobody has touched yet: `enroll`, power unknown.
    fn default() -> Self {
        NodeStatus {
            power_state: None,
            target_power_state: None,
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            last_error: None,
            fault: None,
            owner: None,
            fence: 0,
            power_seq_done: 0,
            provision_seq_done: 0,
            boot_seq_done: 0,
            boot_device: None,
            boot_persistent: false,
            power_op: None,
            event_seq: 0,
            history_seq: 0,
            manual: false,
            deadline_ms: None,
            provision_updated_at_ms: None,
            updated_at_ms: 0,
            fault_at_ms: None,
            agent: None,
            remediation: None,
            unserved: None,
            power_failures: 0,
            fault_maintenance: None,
            power_op_ended_ms: None,
            agent_link: None,
        }
    }
}

impl Record for NodeStatus {
    const KIND: &'static str = "node status";
    /// 2: `unserved`, `power_failures`, `fault_maintenance`, `power_op_ended_ms` appended.
    /// 3: `agent_link` appended.
    const VERSION: u8 = 3;

    fn migrate(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        // Each older version is the current one without the fields appended since; postcard
        // writes an absent Option and a zero integer each as the single byte 0.
        let missing = match version {
            1 => 5,
            2 => 1,
            _ => {
                return Err(CodecError::UnknownVersion {
                    kind: Self::KIND,
                    version,
                    current: Self::VERSION,
                })
            }
        };
        let mut now = Vec::with_capacity(body.len() + missing);
        now.extend_from_slice(body);
        now.extend(std::iter::repeat_n(0u8, missing));
        crate::codec::body_of(version, &now)
    }
}

/// One entry of a node's history: who asked for what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    /// What it was about; persisted as today's strings ("power", "boot device", ...).
    pub kind: HistoryKind,
    /// What was done ("power on", "soft power off -> hard off after 10 s", "manage", ...).
    pub action: String,
    /// Who asked; persisted as today's strings ("conductor", "api:alice", ...).
    pub requested_by: Requester,
    pub conductor: String,
    /// "ok", or the error.
    pub result: String,
    /// INFO or ERROR, as Ironic's node history.
    pub severity: String,
}

impl Record for HistoryEntry {
    const KIND: &'static str = "history entry";
    const VERSION: u8 = 1;
}

/// A node's bounded history: one key per entry (`history/<uuid>/<seq>`), each written by the
/// node's owner in the same fenced transaction as the status change it describes, and the entry
/// `CAP` places older deleted in that same transaction (so appending never needs a read).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeHistory {
    pub entries: Vec<HistoryEntry>,
}

impl NodeHistory {
    /// Entries kept per node; the oldest are dropped first.
    pub const CAP: usize = 100;

    pub fn push(&mut self, entry: HistoryEntry) {
        self.entries.push(entry);
        if self.entries.len() > Self::CAP {
            let excess = self.entries.len() - Self::CAP;
            self.entries.drain(..excess);
        }
    }
}

impl Record for NodeHistory {
    const KIND: &'static str = "node history";
    const VERSION: u8 = 1;
}

/// An event in the outbox (`events/<uuid>/<seq>`): a change of observed power state, written in
/// the same fenced transaction as the status that records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub node: NodeId,
    /// Per node, strictly increasing (the status's `event_seq`).
    pub seq: u64,
    pub instance_uuid: Option<uuid::Uuid>,
    pub power_state: Option<PowerState>,
    pub previous_power_state: Option<PowerState>,
    pub at_ms: u64,
    pub conductor: String,
}

impl Record for EventRecord {
    const KIND: &'static str = "event";
    const VERSION: u8 = 1;
}

/// The record of a forced eviction (`evictions/<name>`): the only forced path, explicit and kept
/// for the record. The evicted conductor finds it when its lease is revoked and exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictionRecord {
    pub conductor: String,
    /// The lease that was revoked (a later incarnation of the same name is not evicted).
    pub lease_id: i64,
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

impl Record for EvictionRecord {
    const KIND: &'static str = "eviction";
    const VERSION: u8 = 1;
}

/// A conductor's membership record (`conductors/<name>`, on its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConductorRecord {
    pub name: String,
    /// Where the conductor serves its internal API (console streams etc.).
    pub address: String,
    pub console_address: String,
    pub drivers: Vec<String>,
    pub conductor_group: String,
    pub version: String,
    pub started_at_ms: u64,
    pub lease_id: i64,
    /// Node actors this conductor reports running (updated as they start and stop).
    pub running: u64,
    /// Power sync's counters (updated at most every few seconds). Format version 2 appended it
    /// (see `migrate`).
    pub sync: SyncReport,
    /// The interfaces it enables for each of its drivers (`/v1/drivers`, and the check of a
    /// node's `*_interface` fields). Format version 3 appended it. Empty in a record of an older
    /// build: read as this build's catalog of its drivers.
    pub hardware: Vec<crate::interfaces::HardwareInterfaces>,
    /// It owns nodes through buckets (`buckets/<bucket>`, README "How ownership works").
    /// Format version 4 appended it; it must stay the last field. False in a record of an older
    /// build: that conductor reserves every node it places on itself, one by one, without
    /// looking at buckets, so a bucket conductor holds nothing while one is live.
    pub buckets: bool,
}

/// What a conductor's power sync sweeps did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub reads: u64,
    pub failed_reads: u64,
    pub sweeps: u64,
    /// Duration of the last finished sweep, in milliseconds, and how many nodes it asked.
    pub last_sweep_ms: u64,
    pub last_sweep_nodes: u64,
}

impl ConductorRecord {
    /// Whether this conductor may own a node of `driver` in `group` (Ironic's conductor groups:
    /// a conductor serves exactly one group, "" being the default group).
    pub fn serves(&self, driver: &str, group: &str) -> bool {
        self.conductor_group == group && self.drivers.iter().any(|d| d == driver)
    }
}

impl Record for ConductorRecord {
    const KIND: &'static str = "conductor";
    /// 2: `sync` appended; 3: `hardware` appended; 4: `buckets` appended.
    const VERSION: u8 = 4;

    fn migrate(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            // Version 1 lacks `sync` (five integers, each 0 written as the single byte 0),
            // `hardware` (an empty list, the single byte 0) and `buckets` (false, the single
            // byte 0); version 2 lacks `hardware` and `buckets`, version 3 `buckets`.
            1..=3 => {
                let mut v4 = body.to_vec();
                if version == 1 {
                    v4.extend_from_slice(&[0; 5]);
                }
                if version <= 2 {
                    v4.push(0);
                }
                v4.push(0);
                crate::codec::body_of(version, &v4)
            }
            _ => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
                current: Self::VERSION,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn a_config_drive_moves_into_instance_info_and_out_of_the_arguments() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
        spec.instance_info = r#"{"image_source":"http://i/x.qcow2"}"#.into();
        let args = spec
            .store_configdrive(r#"{"configdrive":{"meta_data":{"uuid":"u"}},"deploy_steps":[]}"#);
        assert_eq!(args, r#"{"deploy_steps":[]}"#);
        let info: serde_json::Value = serde_json::from_str(&spec.instance_info).unwrap();
        assert_eq!(info["image_source"], "http://i/x.qcow2");
        assert_eq!(info["configdrive"]["meta_data"]["uuid"], "u");
        assert_eq!(spec.store_configdrive(r#"{"configdrive":"H4sI"}"#), "");
        assert!(spec.instance_info.contains(r#""configdrive":"H4sI""#));
        let before = spec.instance_info.clone();
        assert_eq!(spec.store_configdrive(""), "");
        assert_eq!(spec.store_configdrive(r#"{"x":1}"#), r#"{"x":1}"#);
        assert_eq!(spec.instance_info, before);
    }

    #[test]
    fn records_round_trip() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "fake-hardware", 5);
        spec.name = Some(NodeName::parse("n1").unwrap());
        spec.power_request = Some(PowerRequest {
            seq: 3,
            target: PowerTarget::SoftOff,
            timeout_s: Some(10),
            requested_by: "ctl".into(),
            requested_at_ms: 6,
        });
        spec.interfaces
            .insert("deploy_interface".into(), "fake".into());
        assert_eq!(decode::<NodeSpec>(&encode(&spec)).unwrap(), spec);

        let status = NodeStatus {
            power_state: Some(PowerState::On),
            provision_state: ProvisionState::CleanWait,
            last_error: Some("x".into()),
            ..NodeStatus::default()
        };
        assert_eq!(decode::<NodeStatus>(&encode(&status)).unwrap(), status);
        // A spec is not a status: decoding the wrong type is an error, not a panic.
        assert!(decode::<NodeStatus>(&encode(&spec)).is_err());
    }

    #[test]
    fn a_version_1_spec_reads_as_version_2_with_the_new_fields_unset() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "ipmi", 7);
        spec.name = Some(NodeName::parse("old").unwrap());
        spec.instance_info = r#"{"image_source":"http://x"}"#.into();
        let v2 = encode(&spec);
        assert_eq!(v2[0], 2, "a spec without traces is written in format 2");
        assert!(
            v2.ends_with(SPEC_V2_TAIL),
            "the new fields unset are the tail"
        );
        // What a version-1 build wrote: the same fields, without the new ones.
        let mut v1 = v2[..v2.len() - SPEC_V2_TAIL.len()].to_vec();
        v1[0] = 1;
        assert_eq!(decode::<NodeSpec>(&v1).unwrap(), spec);
        assert!(decode::<NodeSpec>(&v1[..v1.len() - 1]).is_err());
        // The new fields round-trip.
        spec.description = Some("rack 4".into());
        spec.owner = Some("p1".into());
        spec.lessee = Some("p2".into());
        spec.automated_clean = Some(false);
        spec.retired = true;
        spec.retired_reason = Some("eol".into());
        spec.protected = true;
        spec.protected_reason = Some("prod".into());
        spec.network_data = r#"{"links":[]}"#.into();
        spec.shard = Some("s1".into());
        spec.traits = vec!["CUSTOM_A".into(), "HW_CPU_X86_AVX2".into()];
        assert_eq!(decode::<NodeSpec>(&encode(&spec)).unwrap(), spec);
        assert!(!spec.automated_clean_or(true));
    }

    #[test]
    fn a_spec_with_traces_is_format_3_and_one_without_stays_readable_by_format_2_builds() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "redfish", 7);
        spec.traits = vec!["CUSTOM_A".into()];
        let v2 = encode(&spec);
        assert_eq!(v2[0], 2);
        // The body ends as format 2's did: network_data "{}", no shard, one trait.
        assert!(
            v2.ends_with(&[2, b'{', b'}', 0, 1, 8, b'C', b'U', b'S', b'T', b'O', b'M', b'_', b'A'])
        );
        let before = spec.clone();
        spec.power_request = Some(PowerRequest {
            seq: 4,
            target: PowerTarget::On,
            timeout_s: None,
            requested_by: "api".into(),
            requested_at_ms: 8,
        });
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        spec.trace_requests(&before, Some(tp));
        assert_eq!(spec.traceparent(RequestKind::Power, 4), Some(tp));
        assert_eq!(spec.traceparent(RequestKind::Power, 3), None);
        assert_eq!(spec.traceparent(RequestKind::Provision, 4), None);
        let v3 = encode(&spec);
        assert_eq!(v3[0], 3);
        assert_eq!(decode::<NodeSpec>(&v3).unwrap(), spec);
        // An edit that adds no request keeps the trace; a new request without trace context
        // drops the old one (it is not this request's), and the spec goes back to format 2.
        let before = spec.clone();
        spec.maintenance = true;
        spec.trace_requests(&before, None);
        assert_eq!(spec.traceparent(RequestKind::Power, 4), Some(tp));
        let before = spec.clone();
        spec.power_request.as_mut().unwrap().seq = 5;
        spec.trace_requests(&before, None);
        assert_eq!(spec.traces, None);
        assert_eq!(encode(&spec)[0], 2);
        // A writer that replaced the request without calling trace_requests (an owner's own
        // request): the stale trace is not this request's.
        spec.traces = Some(RequestTraces {
            power: Some(RequestTrace {
                seq: 5,
                traceparent: tp.into(),
            }),
            ..RequestTraces::default()
        });
        spec.power_request.as_mut().unwrap().seq = 6;
        assert_eq!(spec.traceparent(RequestKind::Power, 6), None);
    }

    #[test]
    fn older_statuses_read_as_version_3_with_the_new_fields_empty() {
        let status = NodeStatus {
            power_state: Some(PowerState::Off),
            provision_state: ProvisionState::Active,
            agent: None,
            remediation: None,
            ..NodeStatus::default()
        };
        let v3 = encode(&status);
        assert_eq!(v3[0], 3);
        assert_eq!(
            v3[v3.len() - 5..],
            [0; 5],
            "the fields of versions 2 and 3 empty are five 0 bytes"
        );
        // What a version-2 build wrote: the same fields, without the link.
        let mut v2 = v3[..v3.len() - 1].to_vec();
        v2[0] = 2;
        assert_eq!(decode::<NodeStatus>(&v2).unwrap(), status);
        // And a version-1 build: without the fields of version 2 either.
        let mut v1 = v3[..v3.len() - 5].to_vec();
        v1[0] = 1;
        assert_eq!(decode::<NodeStatus>(&v1).unwrap(), status);
        let held = NodeStatus {
            unserved: Some("no live conductor serves driver \"redfish\"".into()),
            ..status
        };
        assert_eq!(decode::<NodeStatus>(&encode(&held)).unwrap(), held);
        // A version-1 body that is itself cut short stays an error.
        assert!(decode::<NodeStatus>(&v1[..v1.len() - 2]).is_err());
    }

    #[test]
    fn remediation_budget_format_1_bytes_decode_and_encode_unchanged() {
        // Bytes written by the build before the record moved from `ferric-cluster` to here.
        const V1: &[u8] = &[1, 128, 208, 149, 255, 188, 49, 3];
        let b = RemediationBudget {
            window_start_ms: 1_700_000_000_000,
            used: 3,
        };
        assert_eq!(decode::<RemediationBudget>(V1).unwrap(), b);
        assert_eq!(encode(&b), V1);
    }

    #[test]
    fn driver_info_of_a_spec_is_parsed_and_malformed_is_an_error_not_empty() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "ipmi", 0);
        assert_eq!(spec.driver_info().unwrap(), crate::DriverInfo::default());
        spec.driver_info = r#"{"ipmi_address":"h","ipmi_port":"6230"}"#.into();
        assert_eq!(spec.driver_info().unwrap().ipmi().port, Some(6230));
        for bad in ["", "{", "[]", r#"{"ipmi_port":"x"}"#] {
            spec.driver_info = bad.into();
            assert!(spec.driver_info().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pending_requests_compare_sequence_numbers() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
        let mut status = NodeStatus::default();
        assert!(spec.pending_power(&status).is_none());
        assert_eq!(spec.next_power_seq(), 1);
        spec.power_request = Some(PowerRequest {
            seq: 1,
            target: PowerTarget::On,
            timeout_s: None,
            requested_by: "t".into(),
            requested_at_ms: 0,
        });
        assert!(spec.pending_power(&status).is_some());
        status.power_seq_done = 1;
        assert!(spec.pending_power(&status).is_none());
        assert_eq!(spec.next_power_seq(), 2);
    }

    #[test]
    fn conductor_serves_its_group_and_drivers_only() {
        let c = ConductorRecord {
            name: "c1".into(),
            address: String::new(),
            console_address: String::new(),
            drivers: vec!["fake-hardware".into(), "ipmi".into()],
            conductor_group: "rack1".into(),
            version: "0".into(),
            started_at_ms: 0,
            lease_id: 1,
            running: 0,
            sync: SyncReport::default(),
            hardware: Vec::new(),
            buckets: true,
        };
        assert!(c.serves("ipmi", "rack1"));
        assert!(!c.serves("ipmi", ""));
        // What a version-1 build wrote reads with the sync counters at zero, what a version-2
        // build wrote with no hardware interfaces, and every older record as a conductor that
        // does not own through buckets.
        let v4 = encode(&c);
        assert_eq!(v4[0], 4);
        let older = ConductorRecord {
            buckets: false,
            ..c.clone()
        };
        let mut v3 = v4[..v4.len() - 1].to_vec();
        v3[0] = 3;
        assert_eq!(decode::<ConductorRecord>(&v3).unwrap(), older);
        let mut v2 = v4[..v4.len() - 2].to_vec();
        v2[0] = 2;
        assert_eq!(decode::<ConductorRecord>(&v2).unwrap(), older);
        let mut v1 = v4[..v4.len() - 7].to_vec();
        v1[0] = 1;
        assert_eq!(decode::<ConductorRecord>(&v1).unwrap(), older);
        let full = ConductorRecord {
            hardware: vec![crate::interfaces::catalog("ipmi").unwrap()],
            ..c.clone()
        };
        assert_eq!(decode::<ConductorRecord>(&encode(&full)).unwrap(), full);
        assert!(!c.serves("redfish", "rack1"));
    }
}
