//! Client input about nodes turned into Ferric's spec, with Ironic's validation and messages:
//! the body of `POST /v1/nodes`, and the document a JSON Patch produced. Pure functions: what
//! the cluster looks like (live conductors' drivers) comes in as plain data.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::json_patch::{self, PatchOp};
use crate::node_json::{self, INTERFACES};
use crate::version::{self, ApiVersion};
use ferric_model::interfaces::{self, HardwareInterfaces};
use ferric_model::{DriverInfo, NodeId, NodeName, NodeSpec};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Which drivers a node may use: those a live conductor serves in the node's group, and those
/// this build knows (a node may be enrolled before its conductors start).
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    pub known: Vec<String>,
    /// What live conductors serve, shared with the gateway's copy of the cluster (it changes
    /// only when a conductor's record does; copying it for every request cost a tenth of an
    /// enrollment's CPU in the gateway).
    pub live: Arc<LiveDrivers>,
}

/// What the live conductors serve, from their membership records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveDrivers {
    /// (driver, conductor group) pairs live conductors serve.
    pub served: Vec<(String, String)>,
    /// What live conductors enable, per driver.
    pub hardware: Vec<HardwareInterfaces>,
}

impl Drivers {
    /// The names of `kind` live conductors enable for `driver` (this build's catalog when no
    /// live conductor serves the driver: a node may be enrolled before its conductors start).
    pub fn enabled(&self, driver: &str, kind: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in self.live.hardware.iter().filter(|h| h.driver == driver) {
            for name in h.get(kind).map(|s| s.enabled.as_slice()).unwrap_or(&[]) {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
        if out.is_empty() {
            out = interfaces::enabled(driver, kind)
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        out
    }

    /// Ironic's check of a node's interfaces against what is enabled: every `*_interface`
    /// the spec names must be enabled for its driver by a live conductor (400, naming it,
    /// as Ironic's `InterfaceNotFoundInEntrypoint`).
    pub fn check_interfaces(&self, spec: &NodeSpec) -> Result<(), ApiError> {
        for (field, name) in &spec.interfaces {
            let Some(kind) = interfaces::kind_of_field(field) else {
                continue;
            };
            let enabled = self.enabled(&spec.driver, kind);
            if enabled.is_empty() {
                // A driver this build does not know: nothing to compare with.
                continue;
            }
            if !enabled.contains(name) {
                return Err(ApiError::BadRequest(format!(
                    "Could not find the following interface in the 'ironic.hardware.interfaces.{kind}' entrypoint: {name}. Valid interfaces are {}.",
                    enabled.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn check(&self, driver: &str, group: &str) -> Result<(), ApiError> {
        if self.known.iter().any(|d| d == driver)
            || self
                .live
                .served
                .iter()
                .any(|(d, g)| d == driver && g == group)
        {
            return Ok(());
        }
        Err(ApiError::BadRequest(format!(
            "No valid host was found. Reason: No conductor service registered which supports driver {driver} for conductor group \"{group}\"."
        )))
    }
}

/// Fields of `POST /v1/nodes` (Ironic's node schema).
const CREATE_FIELDS: &[&str] = &[
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "boot_mode",
    "chassis_uuid",
    "conductor_group",
    "console_enabled",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "firmware_interface",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "management_interface",
    "maintenance",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "properties",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "secure_boot",
    "shard",
    "storage_interface",
    "uuid",
    "vendor_interface",
];

/// Fields a JSON Patch may touch (Ironic's `PATCH_ALLOWED_FIELDS`).
pub const PATCH_FIELDS: &[&str] = &[
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "chassis_uuid",
    "conductor_group",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "maintenance",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "power_interface",
    "properties",
    "protected",
    "protected_reason",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
    "storage_interface",
    "vendor_interface",
    "parent_node",
    "firmware_interface",
];

/// Ironic fields Ferric's node record does not hold: accepted only with Ironic's "unset" value.
const UNSTORED: &[&str] = &[
    "boot_mode",
    "chassis_uuid",
    "instance_name",
    "parent_node",
    "secure_boot",
];

/// Words that are paths under `/v1/nodes/` and so cannot be node names.
pub const RESERVED_NAMES: &[&str] = &[
    "states",
    "vendor_passthru",
    "management",
    "maintenance",
    "detail",
    "validate",
];

/// The version that introduced a node field (fields not in the node table are 1.1).
fn since(field: &str) -> u32 {
    node_json::field_since(field).unwrap_or(1)
}

fn unset(_field: &str, v: &Value) -> bool {
    v.is_null()
}

fn schema_error(what: &str, msg: String) -> ApiError {
    ApiError::BadRequest(format!("Schema error for {what}: {msg}"))
}

fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// oslo's strict `bool_from_string`: booleans, and the usual spellings of yes and no.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
            "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn want_bool(what: &str, field: &str, v: &Value) -> Result<bool, ApiError> {
    parse_bool(v).ok_or_else(|| {
        schema_error(
            what,
            format!("{} is not a valid boolean for '{field}'", type_name(v)),
        )
    })
}

fn want_str<'a>(what: &str, field: &str, v: &'a Value) -> Result<Option<&'a str>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(schema_error(
            what,
            format!(
                "{} is not of type 'string', 'null' for '{field}'",
                type_name(other)
            ),
        )),
    }
}

fn want_object(what: &str, field: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok("{}".into()),
        Value::Object(_) => Ok(v.to_string()),
        other => Err(schema_error(
            what,
            format!(
                "{} is not of type 'object', 'null' for '{field}'",
                type_name(other)
            ),
        )),
    }
}

/// `driver_info`: an object (null: `{}`) whose keys Ferric reads hold values of their types
/// (`ipmi_port` a port, ...), so that a malformed one is refused here, naming the key, rather
/// than failing later on the conductor.
fn want_driver_info(what: &str, v: &Value) -> Result<String, ApiError> {
    let text = want_object(what, "driver_info", v)?;
    if v.is_object() {
        DriverInfo::from_value(v.clone())
            .map_err(|e| ApiError::BadRequest(format!("Invalid driver_info: {e}")))?;
    }
    Ok(text)
}

/// Ironic's name rules: host names before 1.10, RFC 3986 unreserved characters after; never a
/// uuid, never a word that is a path under `/v1/nodes/`.
pub fn check_name(name: &str, version: ApiVersion, invalid: &str) -> Result<NodeName, ApiError> {
    if !version.at_least(version::V_NODE_NAME) {
        return Err(ApiError::not_acceptable());
    }
    let bad = || ApiError::BadRequest(invalid.replace("%NAME%", name));
    if RESERVED_NAMES.contains(&name) {
        return Err(ApiError::BadRequest(format!(
            "The word \"{name}\" is reserved and can not be used as a node name. Reserved words are: {}.",
            RESERVED_NAMES.join(", ")
        )));
    }
    if !version.at_least(version::V_UNRESTRICTED_NAME) && !hostname_safe(name) {
        return Err(bad());
    }
    NodeName::parse(name).map_err(|_| bad())
}

fn hostname_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.ends_with('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn check_group(what: &str, v: &Value) -> Result<String, ApiError> {
    let group = want_str(what, "conductor_group", v)?.unwrap_or("");
    if group.len() > 255
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid conductor group {group}: it may contain letters, digits, '_', '-' and '.', and at most 255 characters."
        )));
    }
    Ok(group.to_ascii_lowercase())
}

fn check_resource_class(what: &str, v: &Value) -> Result<Option<String>, ApiError> {
    let rc = want_str(what, "resource_class", v)?;
    if rc.is_some_and(|r| r.chars().count() > 80) {
        return Err(schema_error(
            what,
            "the value of 'resource_class' is longer than 80 characters".into(),
        ));
    }
    Ok(rc.map(str::to_string))
}

fn check_uuid(field: &str, v: &Value, what: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    match want_str(what, field, v)? {
        None => Ok(None),
        Some(s) => uuid::Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("Expected UUID for {field}: {s}"))),
    }
}

fn unstored_error(field: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Ferric does not store the node field \"{field}\"; it can only be left unset."
    ))
}

/// The spec of a node enrolled with `POST /v1/nodes`.
pub fn create(
    body: &Value,
    version: ApiVersion,
    drivers: &Drivers,
    now_ms: u64,
) -> Result<NodeSpec, ApiError> {
    const WHAT: &str = "node";
    let obj = body.as_object().ok_or_else(|| {
        schema_error(WHAT, format!("{} is not of type 'object'", type_name(body)))
    })?;
    if let Some(k) = obj.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(schema_error(
            WHAT,
            format!("Additional properties are not allowed ('{k}' was unexpected)"),
        ));
    }
    // A field of a newer microversion is refused when it carries a value (Ironic's
    // `reject_fields_in_newer_versions`).
    for (k, v) in obj {
        let empty = v.is_null() || (k == "conductor_group" && v == "");
        if !version.at_least(since(k)) && !empty {
            return Err(ApiError::NotAcceptable(format!(
                "Field \"{k}\" needs API version 1.{} or later (this request asked for {}).",
                since(k),
                version.as_string()
            )));
        }
    }
    if !version.at_least(version::V_ENROLL_STATE) {
        return Err(ApiError::NotAcceptable(format!(
            "Ferric enrolls new nodes in the \"enroll\" state, which needs API version 1.{} or later (before it, Ironic enrolled nodes as \"available\"); this request asked for {}.",
            version::V_ENROLL_STATE,
            version.as_string()
        )));
    }
    for k in UNSTORED {
        if let Some(v) = obj.get(*k) {
            if !unset(k, v) {
                return Err(unstored_error(k));
            }
        }
    }
    let driver = match obj.get("driver") {
        Some(Value::String(d)) if !d.is_empty() => d.clone(),
        Some(other) => {
            return Err(schema_error(
                WHAT,
                format!(
                    "{} is not a valid driver name for 'driver'",
                    type_name(other)
                ),
            ))
        }
        None => return Err(schema_error(WHAT, "'driver' is a required property".into())),
    };
    let id = match obj.get("uuid") {
        None | Some(Value::Null) => NodeId::new_random(),
        Some(v) => match check_uuid("uuid", v, WHAT)? {
            Some(u) => NodeId(u),
            None => NodeId::new_random(),
        },
    };
    let mut spec = NodeSpec::new(id, &driver, now_ms);
    spec.conductor_group = match obj.get("conductor_group") {
        Some(v) => check_group(WHAT, v)?,
        None => String::new(),
    };
    drivers.check(&driver, &spec.conductor_group)?;
    if let Some(v) = obj.get("name") {
        if let Some(name) = want_str(WHAT, "name", v)? {
            spec.name = Some(check_name(
                name,
                version,
                "Cannot create node with invalid name '%NAME%'",
            )?);
        }
    }
    for field in ["driver_info", "properties", "extra", "instance_info"] {
        if let Some(v) = obj.get(field) {
            let text = if field == "driver_info" {
                want_driver_info(WHAT, v)?
            } else {
                want_object(WHAT, field, v)?
            };
            match field {
                "driver_info" => spec.driver_info = text,
                "properties" => spec.properties = text,
                "extra" => spec.extra = text,
                _ => spec.instance_info = text,
            }
        }
    }
    if let Some(v) = obj.get("instance_uuid") {
        spec.instance_uuid = check_uuid("instance_uuid", v, WHAT)?;
    }
    if let Some(v) = obj.get("resource_class") {
        spec.resource_class = check_resource_class(WHAT, v)?;
    }
    for (field, slot) in [
        ("maintenance", &mut spec.maintenance),
        ("console_enabled", &mut spec.console_enabled),
        ("disable_power_off", &mut spec.disable_power_off),
    ] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            *slot = want_bool(WHAT, field, v)?;
        }
    }
    for iface in INTERFACES {
        if let Some(v) = obj.get(*iface) {
            if let Some(s) = want_str(WHAT, iface, v)? {
                spec.interfaces.insert(iface.to_string(), s.to_string());
            }
        }
    }
    drivers.check_interfaces(&spec)?;
    for field in [
        "description",
        "owner",
        "lessee",
        "automated_clean",
        "retired",
        "retired_reason",
        "network_data",
        "shard",
    ] {
        if let Some(v) = obj.get(field) {
            set_field(&mut spec, WHAT, field, v)?;
        }
    }
    if spec.retired_reason.is_some() && !spec.retired {
        return Err(retired_reason_error());
    }
    Ok(spec)
}

fn retired_reason_error() -> ApiError {
    ApiError::BadRequest("The retired_reason field can only be set when retired is True".into())
}

fn protected_reason_error() -> ApiError {
    ApiError::BadRequest("The protected_reason field can only be set when protected is True".into())
}

/// Ironic's length limits of the free-text node fields.
fn want_text(what: &str, field: &str, v: &Value, max: usize) -> Result<Option<String>, ApiError> {
    let s = want_str(what, field, v)?;
    if s.is_some_and(|s| s.chars().count() > max) {
        return Err(schema_error(
            what,
            format!("the value of '{field}' is longer than {max} characters"),
        ));
    }
    Ok(s.map(str::to_string))
}

/// Writes one of the fields that spec format 2 added.
fn set_field(spec: &mut NodeSpec, what: &str, field: &str, v: &Value) -> Result<(), ApiError> {
    match field {
        "description" => spec.description = want_text(what, field, v, 4096)?,
        "owner" => spec.owner = want_text(what, field, v, 255)?,
        "lessee" => spec.lessee = want_text(what, field, v, 255)?,
        "shard" => spec.shard = want_text(what, field, v, 255)?,
        "retired_reason" => spec.retired_reason = want_text(what, field, v, 255)?,
        "protected_reason" => spec.protected_reason = want_text(what, field, v, 255)?,
        "automated_clean" => {
            spec.automated_clean = match v {
                Value::Null => None,
                v => Some(want_bool(what, field, v)?),
            }
        }
        "retired" => {
            spec.retired = !v.is_null() && want_bool(what, field, v)?;
            if !spec.retired {
                spec.retired_reason = None;
            }
        }
        "protected" => {
            spec.protected = !v.is_null() && want_bool(what, field, v)?;
            if !spec.protected {
                spec.protected_reason = None;
            }
        }
        "network_data" => {
            let text = want_object(what, field, v)?;
            network_data::validate(v)
                .map_err(|e| ApiError::BadRequest(format!("Invalid network_data: {e}")))?;
            spec.network_data = text;
        }
        other => return Err(ApiError::BadRequest(format!("Cannot patch /{other}."))),
    }
    Ok(())
}

/// Checks a parsed JSON Patch against the fields Ironic lets a patch touch and the request's
/// version (before anything is read).
pub fn check_patch(ops: &[PatchOp], version: ApiVersion) -> Result<(), ApiError> {
    for p in ops {
        for pointer in std::iter::once(p.op.path()).chain(p.op.from()) {
            let field = json_patch::top_field(pointer).unwrap_or_default();
            if !PATCH_FIELDS.contains(&field.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "Cannot patch {pointer}. Only the following can be updated: {}",
                    PATCH_FIELDS.join(", ")
                )));
            }
        }
        // Ironic refuses setting a field of a newer microversion (406), but not removing it.
        if let Some(field) = json_patch::top_field(p.op.path()) {
            let sets_field = p.op.path() == format!("/{field}") && p.op.written_value().is_some();
            if sets_field && !version.at_least(since(&field)) {
                return Err(ApiError::NotAcceptable(format!(
                    "Field \"{field}\" needs API version 1.{} or later (this request asked for {}).",
                    since(&field),
                    version.as_string()
                )));
            }
        }
    }
    Ok(())
}

/// Applies a JSON Patch to a node and writes the outcome into `spec` (which starts as the
/// node's current spec). `reset_interfaces`: Ironic's query parameter.
pub fn apply_patch(
    node: &NodeRef,
    ops: &[PatchOp],
    version: ApiVersion,
    drivers: &Drivers,
    reset_interfaces: bool,
    spec: &mut NodeSpec,
) -> Result<(), ApiError> {
    const WHAT: &str = "patch";
    let old = node_json::patch_document(node);
    let mut doc = old.clone();
    for p in ops {
        // Ironic: adding an unknown attribute at the root is not a way to create fields.
        if let json_patch::Op::Add { path, .. } = &p.op {
            if path.matches('/').count() == 1 && doc.get(&path[1..]).is_none() {
                return Err(ApiError::BadRequest(format!(
                    "Adding a new attribute ({path}) to the root of the resource is not allowed"
                )));
            }
        }
        json_patch::apply_one(&mut doc, &p.op).map_err(|reason| {
            ApiError::BadRequest(format!(
                "Couldn't apply patch '{}'. Reason: {reason}",
                p.raw
            ))
        })?;
    }
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = doc
        .as_object()
        .ok_or_else(|| schema_error(WHAT, "the patched node is no longer an object".into()))?;
    let null = Value::Null;
    let changed: Vec<&str> = PATCH_FIELDS
        .iter()
        .copied()
        .filter(|f| new.get(*f).unwrap_or(&null) != old.get(*f).unwrap_or(&null))
        .collect();
    let value = |f: &str| new.get(f).unwrap_or(&null);
    let driver_changed = changed.contains(&"driver");
    if reset_interfaces && !driver_changed {
        return Err(ApiError::BadRequest(
            "The reset_interfaces parameter can only be used when changing the node's driver."
                .into(),
        ));
    }
    for field in &changed {
        let v = value(field);
        match *field {
            "name" => {
                spec.name = match want_str(WHAT, "name", v)? {
                    None => None,
                    Some(n) => Some(check_name(
                        n,
                        version,
                        &format!(
                            "Node {}: Cannot change name to invalid name '%NAME%'",
                            spec.id
                        ),
                    )?),
                }
            }
            "driver" => match v {
                Value::String(d) if !d.is_empty() => spec.driver = d.clone(),
                other => {
                    return Err(schema_error(
                        WHAT,
                        format!(
                            "{} is not a valid driver name for 'driver'",
                            type_name(other)
                        ),
                    ))
                }
            },
            "driver_info" => spec.driver_info = want_driver_info(WHAT, v)?,
            "properties" => spec.properties = want_object(WHAT, field, v)?,
            "extra" => spec.extra = want_object(WHAT, field, v)?,
            "instance_info" => spec.instance_info = want_object(WHAT, field, v)?,
            "instance_uuid" => {
                let next = check_uuid("instance_uuid", v, WHAT)?;
                if let (Some(cur), Some(_)) = (spec.instance_uuid, next) {
                    return Err(ApiError::Conflict(format!(
                        "Node {} is associated with instance {cur}.",
                        spec.id
                    )));
                }
                spec.instance_uuid = next;
            }
            "maintenance" => {
                spec.maintenance = want_bool(WHAT, field, v)?;
                if !spec.maintenance {
                    spec.maintenance_reason = None;
                }
            }
            "conductor_group" => spec.conductor_group = check_group(WHAT, v)?,
            "resource_class" => spec.resource_class = check_resource_class(WHAT, v)?,
            "disable_power_off" => spec.disable_power_off = want_bool(WHAT, field, v)?,
            f if INTERFACES.contains(&f) => match want_str(WHAT, f, v)? {
                Some(s) => {
                    spec.interfaces.insert(f.to_string(), s.to_string());
                }
                None => {
                    spec.interfaces.remove(f);
                }
            },
            "description" | "owner" | "lessee" | "automated_clean" | "retired"
            | "retired_reason" | "protected" | "protected_reason" | "network_data" | "shard" => {
                set_field(spec, WHAT, field, v)?
            }
            f if UNSTORED.contains(&f) => {
                if !unset(f, v) {
                    return Err(unstored_error(f));
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!("Cannot patch /{other}.")));
            }
        }
    }
    if driver_changed {
        if node.spec.spec.console_enabled {
            return Err(ApiError::Conflict(format!(
                "Node {} can not update the driver while the console is enabled. Please stop the console first.",
                spec.id
            )));
        }
        if reset_interfaces {
            // Interfaces the patch did not set go back to the new driver's defaults.
            spec.interfaces.retain(|k, _| changed.contains(&k.as_str()));
        }
    }
    if driver_changed || changed.contains(&"conductor_group") {
        drivers.check(&spec.driver, &spec.conductor_group)?;
    }
    if driver_changed || changed.iter().any(|f| INTERFACES.contains(f)) {
        drivers.check_interfaces(spec)?;
    }
    check_protected_retired(node, &changed, spec)
}

/// Ironic's rules for `protected` and `retired` (`ConductorManager._check_update_protected`,
/// `_check_update_retired`): protected only in `active` or `rescue` (409), retired never in
/// `available` (409), either reason only with its flag (400). Clearing a flag clears its reason.
fn check_protected_retired(
    node: &NodeRef,
    changed: &[&str],
    spec: &NodeSpec,
) -> Result<(), ApiError> {
    use ferric_model::ProvisionState as S;
    let state = node.status().provision_state;
    if changed.contains(&"protected") && spec.protected && !matches!(state, S::Active | S::Rescue) {
        return Err(ApiError::Conflict(format!(
            "Node {} can only be made protected in provision states 'active' or 'rescue', the current state is '{}'",
            spec.id,
            state.as_str()
        )));
    }
    if changed.contains(&"protected_reason") && spec.protected_reason.is_some() && !spec.protected {
        return Err(protected_reason_error());
    }
    if changed.contains(&"retired") && spec.retired && state == S::Available {
        return Err(ApiError::Conflict(format!(
            "Node {} can not have 'retired' set in provision state 'available', the current state is '{}'",
            spec.id,
            state.as_str()
        )));
    }
    if changed.contains(&"retired_reason") && spec.retired_reason.is_some() && !spec.retired {
        return Err(retired_reason_error());
    }
    Ok(())
}

mod network_data;

#[cfg(test)]
mod tests;
