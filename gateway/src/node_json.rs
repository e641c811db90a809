//! A node in Ironic's JSON: field names, state spellings, the fields each microversion shows,
//! `?fields=` selection, links, and the values Ironic derives (`reservation` only while a
//! conductor works on the node; target states while a request is pending). Serialized straight
//! from the cached records, without an intermediate `Value`, because a page of 1,000 detailed
//! nodes is the hottest path of the API.

use crate::informer::{NodeRef, Rendered, StatusEntry};
use crate::version::{self, ApiVersion};
use ferric_model::provision::{ironic_target_of, on_verb};
use ferric_model::{NodeSpec, NodeStatus, ProvisionState, Verb};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;

/// Every node field Ferric knows, with the minor version that introduced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    AllocationUuid,
    AutomatedClean,
    BiosInterface,
    BootInterface,
    BootMode,
    ChassisUuid,
    CleanStep,
    Conductor,
    ConductorGroup,
    ConsoleEnabled,
    ConsoleInterface,
    CreatedAt,
    DeployInterface,
    DeployStep,
    Description,
    DisablePowerOff,
    Driver,
    DriverInfo,
    DriverInternalInfo,
    Extra,
    Fault,
    FerricCaretaker,
    FerricUnserved,
    FirmwareInterface,
    Health,
    InspectInterface,
    InspectionFinishedAt,
    InspectionStartedAt,
    InstanceInfo,
    InstanceName,
    InstanceUuid,
    LastError,
    Lessee,
    Maintenance,
    MaintenanceReason,
    ManagementInterface,
    Name,
    NetworkData,
    NetworkInterface,
    Owner,
    ParentNode,
    PowerInterface,
    PowerState,
    Properties,
    Protected,
    ProtectedReason,
    ProvisionState,
    ProvisionUpdatedAt,
    RaidConfig,
    RaidInterface,
    RescueInterface,
    Reservation,
    ResourceClass,
    Retired,
    RetiredReason,
    SecureBoot,
    ServiceStep,
    Shard,
    StorageInterface,
    TargetPowerState,
    TargetProvisionState,
    TargetRaidConfig,
    Traits,
    UpdatedAt,
    Uuid,
    VendorInterface,
}

/// (field, name, minor version that introduced it), in name order (the order of the output).
pub const FIELDS: &[(F, &str, u32)] = &[
    (F::AllocationUuid, "allocation_uuid", 52),
    (F::AutomatedClean, "automated_clean", 47),
    (F::BiosInterface, "bios_interface", 40),
    (F::BootInterface, "boot_interface", 31),
    (F::BootMode, "boot_mode", 75),
    (F::ChassisUuid, "chassis_uuid", 1),
    (F::CleanStep, "clean_step", 7),
    (F::Conductor, "conductor", 49),
    (F::ConductorGroup, "conductor_group", 46),
    (F::ConsoleEnabled, "console_enabled", 1),
    (F::ConsoleInterface, "console_interface", 31),
    (F::CreatedAt, "created_at", 1),
    (F::DeployInterface, "deploy_interface", 31),
    (F::DeployStep, "deploy_step", 44),
    (F::Description, "description", 51),
    (F::DisablePowerOff, "disable_power_off", 95),
    (F::Driver, "driver", 1),
    (F::DriverInfo, "driver_info", 1),
    (F::DriverInternalInfo, "driver_internal_info", 3),
    (F::Extra, "extra", 1),
    (F::Fault, "fault", 42),
    // Ferric's own: whether `conductor` holds the node only as its caretaker (no live conductor
    // serves its driver and group), and the caretaker's statement of why.
    (F::FerricCaretaker, "ferric_caretaker", 1),
    (F::FerricUnserved, "ferric_unserved", 1),
    (F::FirmwareInterface, "firmware_interface", 86),
    (F::Health, "health", 109),
    (F::InspectInterface, "inspect_interface", 31),
    (F::InspectionFinishedAt, "inspection_finished_at", 6),
    (F::InspectionStartedAt, "inspection_started_at", 6),
    (F::InstanceInfo, "instance_info", 1),
    (F::InstanceName, "instance_name", 104),
    (F::InstanceUuid, "instance_uuid", 1),
    (F::LastError, "last_error", 1),
    (F::Lessee, "lessee", 65),
    (F::Maintenance, "maintenance", 1),
    (F::MaintenanceReason, "maintenance_reason", 1),
    (F::ManagementInterface, "management_interface", 31),
    (F::Name, "name", 5),
    (F::NetworkData, "network_data", 66),
    (F::NetworkInterface, "network_interface", 20),
    (F::Owner, "owner", 50),
    (F::ParentNode, "parent_node", 83),
    (F::PowerInterface, "power_interface", 31),
    (F::PowerState, "power_state", 1),
    (F::Properties, "properties", 1),
    (F::Protected, "protected", 48),
    (F::ProtectedReason, "protected_reason", 48),
    (F::ProvisionState, "provision_state", 1),
    (F::ProvisionUpdatedAt, "provision_updated_at", 1),
    (F::RaidConfig, "raid_config", 12),
    (F::RaidInterface, "raid_interface", 31),
    (F::RescueInterface, "rescue_interface", 38),
    (F::Reservation, "reservation", 1),
    (F::ResourceClass, "resource_class", 21),
    (F::Retired, "retired", 61),
    (F::RetiredReason, "retired_reason", 61),
    (F::SecureBoot, "secure_boot", 75),
    (F::ServiceStep, "service_step", 87),
    (F::Shard, "shard", 82),
    (F::StorageInterface, "storage_interface", 33),
    (F::TargetPowerState, "target_power_state", 1),
    (F::TargetProvisionState, "target_provision_state", 1),
    (F::TargetRaidConfig, "target_raid_config", 12),
    (F::Traits, "traits", 37),
    (F::UpdatedAt, "updated_at", 1),
    (F::Uuid, "uuid", 1),
    (F::VendorInterface, "vendor_interface", 31),
];

/// The `*_interface` fields, stored in `NodeSpec::interfaces` by field name.
pub const INTERFACES: &[&str] = &[
    "bios_interface",
    "boot_interface",
    "console_interface",
    "deploy_interface",
    "firmware_interface",
    "inspect_interface",
    "management_interface",
    "network_interface",
    "power_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
];

/// The fields `GET /v1/nodes` returns without `detail` or `fields` (Ironic's defaults).
pub const DEFAULT_LIST_FIELDS: &[F] = &[
    F::InstanceUuid,
    F::Maintenance,
    F::Name,
    F::PowerState,
    F::ProvisionState,
    F::Uuid,
];

pub fn field_by_name(name: &str) -> Option<(F, u32)> {
    FIELDS
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(f, _, v)| (*f, *v))
}

pub fn field_name(f: F) -> &'static str {
    FIELDS
        .iter()
        .find(|(g, _, _)| *g == f)
        .map_or("", |(_, n, _)| n)
}

pub fn field_since(name: &str) -> Option<u32> {
    field_by_name(name).map(|(_, v)| v)
}

/// Every field visible at `version`, in output order.
pub fn visible_fields(version: ApiVersion) -> Vec<F> {
    FIELDS
        .iter()
        .filter(|(_, _, v)| version.at_least(*v))
        .map(|(f, _, _)| *f)
        .collect()
}

/// How one request wants nodes rendered.
#[derive(Debug, Clone)]
pub struct Render {
    pub version: ApiVersion,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    /// The fields, in output order.
    pub fields: Vec<F>,
    /// No `?fields=`: links to sub-resources are shown too.
    pub all: bool,
    /// The project of a project-scoped caller: on nodes it only leases, the fields Ironic's
    /// `baremetal:node:get:<field>` policies keep to owners are redacted.
    pub viewer: Option<String>,
}

impl Render {
    pub fn full(version: ApiVersion, base: &str) -> Self {
        Render {
            version,
            base: base.to_string(),
            fields: visible_fields(version),
            all: true,
            viewer: None,
        }
    }

    /// As seen by `caller` (see [`Render::viewer`]).
    pub fn viewed_by(mut self, caller: &crate::auth::Caller) -> Self {
        self.viewer = caller.project.clone();
        self
    }

    /// Only `fields` (already validated), plus links, as Ironic does.
    pub fn only(version: ApiVersion, base: &str, fields: &[F]) -> Self {
        Render {
            version,
            base: base.to_string(),
            fields: FIELDS
                .iter()
                .map(|(f, _, _)| *f)
                .filter(|f| fields.contains(f))
                .collect(),
            all: false,
            viewer: None,
        }
    }

    pub fn node<'a>(&'a self, node: &'a NodeRef) -> NodeDoc<'a> {
        NodeDoc {
            node,
            render: self,
            unmasked: false,
        }
    }
}

/// Whether a conductor is working on the node: a request it has not finished, or a provision
/// state it is busy in. Ironic's `reservation` is non-null exactly then, and clients (Metal3)
/// wait for it to be null before acting.
pub fn is_busy(spec: &NodeSpec, status: &NodeStatus) -> bool {
    spec.pending_power(status).is_some()
        || spec.pending_provision(status).is_some()
        || spec.pending_boot_device(status).is_some()
        || status.power_op.is_some()
        || status.provision_state.is_busy()
}

/// Ironic's `reservation`: the holder while it works on the node, null otherwise.
pub fn reservation(node: &NodeRef) -> Option<&str> {
    if is_busy(&node.spec.spec, node.status()) {
        node.holder.as_deref()
    } else {
        None
    }
}

/// Whether the conductor holding the node holds it as its caretaker: the status it wrote says
/// no live conductor serves the node, and it still holds the reservation.
pub fn is_caretaker(node: &NodeRef) -> bool {
    let st = node.status();
    st.unserved.is_some() && node.holder.is_some() && st.owner.as_deref() == node.holder.as_deref()
}

/// Ironic's `target_power_state`: the state a pending or running power action ends in (Ironic
/// reports "power on"/"power off", never the action).
pub fn target_power_state(node: &NodeRef) -> Option<&'static str> {
    let status = node.status();
    if let Some(req) = node.spec.spec.pending_power(status) {
        return Some(req.target.final_state().as_str());
    }
    status.target_power_state.map(|t| t.final_state().as_str())
}

/// Ironic's `provision_state`, including a verb accepted but not yet taken up: the state the
/// verb enters (Ironic's conductor enters it before the API answers 202, and clients rely on
/// it: `baremetal node inspect --wait` would see `manageable` and stop at once).
pub fn provision_state(node: &NodeRef) -> ProvisionState {
    let status = node.status();
    node.spec
        .spec
        .pending_provision(status)
        .and_then(|req| on_verb(status.provision_state, req.verb).ok())
        .unwrap_or(status.provision_state)
}

/// Ironic's `target_provision_state`, including a verb accepted but not yet taken up (Ironic
/// sets the target before it answers 202).
pub fn target_provision_state(node: &NodeRef) -> Option<ProvisionState> {
    let status = node.status();
    if let Some(req) = node.spec.spec.pending_provision(status) {
        if let Ok(entered) = on_verb(status.provision_state, req.verb) {
            return ironic_target_of(entered, req.verb == Verb::Clean).or(Some(entered));
        }
    }
    status.target_provision_state
}

/// The provision state in the spelling of `version` (`available` was "None" before 1.2;
/// `inspect wait` was reported as `inspecting` before 1.39).
pub fn provision_state_str(state: ProvisionState, version: ApiVersion) -> Option<&'static str> {
    match state {
        ProvisionState::Available if !version.at_least(version::V_AVAILABLE_STATE) => None,
        ProvisionState::InspectWait if !version.at_least(version::V_INSPECT_WAIT) => {
            Some(ProvisionState::Inspecting.as_str())
        }
        s => Some(s.as_str()),
    }
}

/// `updated_at`: the later of the spec's and the status's changes; null for a node nobody has
/// changed since it was enrolled (as Ironic).
pub fn updated_at_ms(spec: &NodeSpec, status: &NodeStatus) -> Option<u64> {
    let t = spec.updated_at_ms.max(status.updated_at_ms);
    (t > spec.created_at_ms).then_some(t)
}

/// Milliseconds since the epoch as Ironic's ISO 8601 (`2016-08-18T22:28:48.643000+00:00`).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        (ms % 1000) * 1000
    )
}

pub struct Link<'a> {
    pub href: String,
    pub rel: &'a str,
}

impl Serialize for Link<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("href", &self.href)?;
        m.serialize_entry("rel", self.rel)?;
        m.end()
    }
}

/// Ironic's `self` and `bookmark` links of a resource path such as `nodes/<uuid>`.
pub fn links(base: &str, path: &str) -> [Link<'static>; 2] {
    [
        Link {
            href: format!("{base}/v1/{path}"),
            rel: "self",
        },
        Link {
            href: format!("{base}/{path}"),
            rel: "bookmark",
        },
    ]
}

struct EmptyObject;
impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

/// What Ironic shows instead of a field a lessee may not see (`ironic/api/controllers/v1/node.py`).
fn redaction(f: F) -> Option<&'static str> {
    Some(match f {
        F::DriverInfo => "** Redacted - requires baremetal:node:get:driver_info permission. **",
        F::LastError => "** Value Redacted - Requires baremetal:node:get:last_error permission. **",
        F::Reservation => "** Redacted - requires baremetal:node:get:reservation permission. **",
        F::DriverInternalInfo => {
            "** Redacted - Requires baremetal:node:get:driver_internal_info permission. **"
        }
        _ => return None,
    })
}

/// Ironic's `clean_step`/`deploy_step`/`service_step`: the step the agent runs now in that
/// busy state (`{}` when none).
fn current_step(st: &NodeStatus, state: ProvisionState) -> Value {
    let step = st
        .agent
        .as_ref()
        .filter(|a| {
            a.state == state && (st.provision_state.is_wait() || st.provision_state == state)
        })
        .and_then(|a| a.steps.get(a.done as usize));
    match step.and_then(|s| s.split_once('.')) {
        Some((interface, step)) => serde_json::json!({ "interface": interface, "step": step }),
        None => serde_json::json!({}),
    }
}

/// Ironic's `driver_internal_info`, as far as Ferric keeps its facts: the agent's address,
/// version and last heartbeat, and the steps of the current operation. Never its token.
fn internal_info(st: &NodeStatus) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(a) = &st.agent {
        if let Some(at) = a.last_heartbeat_ms {
            m.insert("agent_last_heartbeat".into(), iso8601(at).into());
        }
        let kind = match a.state {
            ProvisionState::Deploying => Some("deploy_steps"),
            ProvisionState::Cleaning => Some("clean_steps"),
            ProvisionState::Servicing => Some("service_steps"),
            _ => None,
        };
        if let Some(kind) = kind.filter(|_| !a.steps.is_empty()) {
            let steps: Vec<Value> = a
                .steps
                .iter()
                .filter_map(|s| s.split_once('.'))
                .map(|(i, s)| serde_json::json!({ "interface": i, "step": s }))
                .collect();
            m.insert(kind.into(), steps.into());
        }
        if let Some(l) = st
            .agent_link
            .as_ref()
            .filter(|l| l.booted_at_ms == a.booted_at_ms)
        {
            m.insert("agent_url".into(), l.url.clone().into());
            if let Some(v) = &l.agent_version {
                m.insert("agent_version".into(), v.clone().into());
            }
        }
    }
    Value::Object(m)
}

/// One node, serialized as Ironic's node JSON.
pub struct NodeDoc<'a> {
    node: &'a NodeRef,
    render: &'a Render,
    /// Secrets shown (only for the document a JSON Patch is applied to; never sent).
    unmasked: bool,
}

impl Serialize for NodeDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let node = self.node;
        let e = &node.spec;
        let spec = &e.spec;
        let st = node.status();
        let v = self.render.version;
        // A node's interface not set is its driver's default (Ironic stores the default when
        // a node is enrolled; Ferric resolves it when it is read, so that a node enrolled
        // before this build shows it too).
        let iface = |name: &str| {
            spec.interfaces.get(name).map(String::as_str).or_else(|| {
                ferric_model::interfaces::kind_of_field(name)
                    .and_then(|k| ferric_model::interfaces::default_for(&spec.driver, k))
            })
        };
        let redacted = self
            .render
            .viewer
            .as_deref()
            .is_some_and(|p| spec.owner.as_deref() != Some(p));
        let mut m = s.serialize_map(None)?;
        for f in &self.render.fields {
            let name = field_name(*f);
            if redacted {
                if let Some(text) = redaction(*f) {
                    match f {
                        F::DriverInfo | F::DriverInternalInfo => {
                            m.serialize_entry(name, &serde_json::json!({ "content": text }))?
                        }
                        _ => m.serialize_entry(name, text)?,
                    }
                    continue;
                }
            }
            match f {
                F::AllocationUuid
                | F::BootMode
                | F::ChassisUuid
                | F::Health
                | F::InspectionFinishedAt
                | F::InspectionStartedAt
                | F::InstanceName
                | F::ParentNode
                | F::SecureBoot => m.serialize_entry(name, &None::<()>)?,
                F::AutomatedClean => m.serialize_entry(name, &spec.automated_clean)?,
                F::Description => m.serialize_entry(name, &spec.description)?,
                F::Lessee => m.serialize_entry(name, &spec.lessee)?,
                F::Owner => m.serialize_entry(name, &spec.owner)?,
                F::Protected => m.serialize_entry(name, &spec.protected)?,
                F::ProtectedReason => m.serialize_entry(name, &spec.protected_reason)?,
                F::Retired => m.serialize_entry(name, &spec.retired)?,
                F::RetiredReason => m.serialize_entry(name, &spec.retired_reason)?,
                F::Shard => m.serialize_entry(name, &spec.shard)?,
                F::NetworkData => m.serialize_entry(name, &e.network_data)?,
                F::Traits => m.serialize_entry(name, &spec.traits)?,
                F::CleanStep => {
                    m.serialize_entry(name, &current_step(st, ProvisionState::Cleaning))?
                }
                F::DeployStep => {
                    m.serialize_entry(name, &current_step(st, ProvisionState::Deploying))?
                }
                F::ServiceStep => {
                    m.serialize_entry(name, &current_step(st, ProvisionState::Servicing))?
                }
                F::DriverInternalInfo => m.serialize_entry(name, &internal_info(st))?,
                F::RaidConfig | F::TargetRaidConfig => m.serialize_entry(name, &EmptyObject)?,
                F::BiosInterface
                | F::BootInterface
                | F::ConsoleInterface
                | F::DeployInterface
                | F::FirmwareInterface
                | F::InspectInterface
                | F::ManagementInterface
                | F::NetworkInterface
                | F::PowerInterface
                | F::RaidInterface
                | F::RescueInterface
                | F::StorageInterface
                | F::VendorInterface => m.serialize_entry(name, &iface(name))?,
                F::Conductor => m.serialize_entry(name, &node.holder.as_deref())?,
                F::ConductorGroup => m.serialize_entry(name, &spec.conductor_group)?,
                F::ConsoleEnabled => m.serialize_entry(name, &spec.console_enabled)?,
                // Unknown for a spec record that cannot be read.
                F::CreatedAt => m.serialize_entry(
                    name,
                    &(!node.spec_unreadable()).then(|| iso8601(spec.created_at_ms)),
                )?,
                F::DisablePowerOff => m.serialize_entry(name, &spec.disable_power_off)?,
                F::Driver => m.serialize_entry(name, &spec.driver)?,
                F::DriverInfo => {
                    if self.unmasked {
                        m.serialize_entry(name, &e.driver_info)?
                    } else {
                        m.serialize_entry(name, &e.driver_info_masked)?
                    }
                }
                F::Extra => m.serialize_entry(name, &e.extra)?,
                F::Fault => m.serialize_entry(name, &st.fault)?,
                F::FerricCaretaker => m.serialize_entry(name, &is_caretaker(node))?,
                F::FerricUnserved => m.serialize_entry(name, &st.unserved)?,
                F::InstanceInfo => {
                    if self.unmasked {
                        m.serialize_entry(name, &e.instance_info)?
                    } else {
                        m.serialize_entry(name, &e.instance_info_masked)?
                    }
                }
                F::InstanceUuid => m.serialize_entry(
                    name,
                    &spec.instance_uuid.map(|u| u.hyphenated().to_string()),
                )?,
                // An unreadable spec says so first: nothing else about the node can be trusted.
                F::LastError => m.serialize_entry(
                    name,
                    &e.unreadable
                        .as_deref()
                        .or(st.last_error.as_deref())
                        .or(node.status_error()),
                )?,
                F::Maintenance => m.serialize_entry(name, &spec.maintenance)?,
                F::MaintenanceReason => m.serialize_entry(name, &spec.maintenance_reason)?,
                F::Name => m.serialize_entry(name, &spec.name.as_ref().map(|n| n.as_str()))?,
                F::PowerState => m.serialize_entry(name, &st.power_state.map(|p| p.as_str()))?,
                F::Properties => m.serialize_entry(name, &e.properties)?,
                F::ProvisionState => {
                    m.serialize_entry(name, &provision_state_str(provision_state(node), v))?
                }
                F::ProvisionUpdatedAt => {
                    m.serialize_entry(name, &st.provision_updated_at_ms.map(iso8601))?
                }
                F::Reservation => m.serialize_entry(name, &reservation(node))?,
                F::ResourceClass => m.serialize_entry(name, &spec.resource_class)?,
                F::TargetPowerState => m.serialize_entry(name, &target_power_state(node))?,
                F::TargetProvisionState => m.serialize_entry(
                    name,
                    &target_provision_state(node).and_then(|t| provision_state_str(t, v)),
                )?,
                F::UpdatedAt => m.serialize_entry(name, &updated_at_ms(spec, st).map(iso8601))?,
                F::Uuid => m.serialize_entry(name, &spec.id.to_string())?,
            }
        }
        if !self.unmasked {
            let path = format!("nodes/{}", spec.id);
            m.serialize_entry("links", &links(&self.render.base, &path))?;
            if self.render.all && v.at_least(version::V_STATES_LINKS) {
                m.serialize_entry(
                    "states",
                    &links(&self.render.base, &format!("{path}/states")),
                )?;
            }
            // Sub-resources, as Ironic links them from a full node.
            if self.render.all {
                m.serialize_entry("ports", &links(&self.render.base, &format!("{path}/ports")))?;
                if v.at_least(version::V_PORTGROUPS_SUB) {
                    m.serialize_entry(
                        "portgroups",
                        &links(&self.render.base, &format!("{path}/portgroups")),
                    )?;
                }
                if v.at_least(version::V_VOLUME) {
                    m.serialize_entry(
                        "volume",
                        &links(&self.render.base, &format!("{path}/volume")),
                    )?;
                }
            }
        }
        m.end()
    }
}

/// The document a JSON Patch applies to: every field up to the highest version, secrets
/// unmasked, no links (Ironic patches its database row, not what it shows).
pub fn patch_document(node: &NodeRef) -> Value {
    let render = Render::full(ApiVersion::latest(), "");
    let doc = NodeDoc {
        node,
        render: &render,
        unmasked: true,
    };
    serde_json::to_value(&doc).unwrap_or(Value::Null)
}

impl Render {
    /// A fingerprint of how this request renders a whole node, for the cached rendering; None
    /// for a render that is not cached (a field selection, or a project-scoped viewer).
    pub fn cache_key(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        if !self.all || self.viewer.is_some() {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.version.hash(&mut h);
        self.base.hash(&mut h);
        self.fields.len().hash(&mut h);
        Some(h.finish())
    }

    /// `node` rendered as JSON: the cached bytes when they were rendered the same way from
    /// the same status and holder, else rendered now (and kept when `key` is Some).
    fn cached(&self, key: u64, node: &NodeRef) -> Option<Arc<Box<RawValue>>> {
        let same_status = |a: &Option<Arc<StatusEntry>>| match (a, &node.status) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let mut slot = node.spec.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = slot.as_ref() {
            if r.render == key && same_status(&r.status) && r.holder == node.holder {
                return Some(r.json.clone());
            }
        }
        let text = serde_json::to_string(&self.node(node)).ok()?;
        let json = Arc::new(RawValue::from_string(text).ok()?);
        *slot = Some(Rendered {
            render: key,
            status: node.status.clone(),
            holder: node.holder.clone(),
            json: json.clone(),
        });
        Some(json)
    }
}

/// A list of nodes, `{"nodes": [...], "next": "..."}`.
pub struct NodeList<'a> {
    pub nodes: &'a [NodeRef],
    pub render: &'a Render,
    pub next: Option<String>,
}

impl Serialize for NodeList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Items<'a>(&'a [NodeRef], &'a Render);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                let key = self.1.cache_key();
                for n in self.0 {
                    match key.and_then(|k| self.1.cached(k, n)) {
                        Some(json) => seq.serialize_element(&**json)?,
                        None => seq.serialize_element(&self.1.node(n))?,
                    }
                }
                seq.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("nodes", &Items(self.nodes, self.render))?;
        if let Some(next) = &self.next {
            m.serialize_entry("next", next)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            iso8601(1_471_559_328_643),
            "2016-08-18T22:28:48.643000+00:00"
        );
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000000+00:00");
    }

    #[test]
    fn field_table_is_sorted_and_complete() {
        let names: Vec<&str> = FIELDS.iter().map(|(_, n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for i in INTERFACES {
            assert!(field_by_name(i).is_some(), "{i}");
        }
        assert_eq!(field_since("disable_power_off"), Some(95));
        assert_eq!(field_since("conductor"), Some(49));
    }

    #[test]
    fn old_versions_spell_states_as_they_did() {
        let v = |minor| ApiVersion {
            minor,
            new_header: false,
        };
        assert_eq!(provision_state_str(ProvisionState::Available, v(1)), None);
        assert_eq!(
            provision_state_str(ProvisionState::Available, v(2)),
            Some("available")
        );
        assert_eq!(
            provision_state_str(ProvisionState::InspectWait, v(38)),
            Some("inspecting")
        );
        assert_eq!(
            provision_state_str(ProvisionState::InspectWait, v(39)),
            Some("inspect wait")
        );
    }

    /// A list renders each node once per change: the same bytes while its spec entry, status
    /// entry and holder stay, new ones for a new status, a new holder or another rendering.
    #[test]
    fn lists_reuse_a_nodes_rendering_until_it_changes() {
        use crate::informer::SpecEntry;
        let id = ferric_model::NodeId::new_random();
        let mut spec = NodeSpec::new(id, "fake-hardware", 1_000);
        spec.driver_info = r#"{"ipmi_password": "s3cret"}"#.to_string();
        let status = |state: ProvisionState| {
            let status = NodeStatus {
                provision_state: state,
                ..NodeStatus::default()
            };
            Arc::new(StatusEntry {
                status,
                error: None,
            })
        };
        let node = NodeRef {
            spec: Arc::new(SpecEntry::new(spec, 7)),
            status: Some(status(ProvisionState::Available)),
            holder: Some(Arc::from("c1")),
        };
        let list = |render: &Render, node: &NodeRef| {
            let nodes = [node.clone()];
            let body = NodeList {
                nodes: &nodes,
                render,
                next: None,
            };
            serde_json::to_value(&body).expect("renders")["nodes"][0].clone()
        };
        let full = Render::full(ApiVersion::latest(), "http://a");
        let first = list(&full, &node);
        assert_eq!(first["provision_state"], "available");
        assert_eq!(first["driver_info"]["ipmi_password"], "******");
        assert_eq!(
            first,
            serde_json::to_value(full.node(&node)).expect("renders")
        );
        let kept = |node: &NodeRef| {
            let slot = node.spec.rendered.lock().expect("lock");
            slot.as_ref().map(|r| r.json.clone())
        };
        let cached = kept(&node);
        assert_eq!(list(&full, &node), first);
        let again = kept(&node);
        assert!(
            matches!((&cached, &again), (Some(a), Some(b)) if Arc::ptr_eq(a, b)),
            "the second list reused the bytes"
        );
        // A new status, a new holder, another base URL: rendered anew.
        let moved = NodeRef {
            status: Some(status(ProvisionState::Manageable)),
            ..node.clone()
        };
        assert_eq!(list(&full, &moved)["provision_state"], "manageable");
        let held = NodeRef {
            holder: Some(Arc::from("c2")),
            ..moved.clone()
        };
        assert_eq!(list(&full, &held)["conductor"], "c2");
        let other = Render::full(ApiVersion::latest(), "http://b");
        let links = list(&other, &held)["links"][0]["href"].clone();
        assert!(
            links.as_str().is_some_and(|l| l.starts_with("http://b/")),
            "{links}"
        );
        // A field selection is never cached, nor rendered from the cache.
        let some = Render::only(ApiVersion::latest(), "http://b", &[F::Uuid]);
        assert_eq!(some.cache_key(), None);
        assert!(list(&some, &held).get("provision_state").is_none());
    }
}
