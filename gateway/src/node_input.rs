//! Client input about nodes turned into Ferric's spec, with Ironic's validation and messages:
//! the body of `POST /v1/nodes`, and the document a JSON Patch produced. Pure functions: what
//! the cluster looks like (live conductors' drivers) comes in as plain data.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::json_patch::{self, PatchOp};
use crate::node_json::{self, INTERFACES};
use crate::version::{self, ApiVersion};
use ferric_model::{DriverInfo, NodeId, NodeName, NodeSpec};
use serde_json::{Map, Value};

/// Which drivers a node may use: those a live conductor serves in the node's group, and those
/// this build knows (a node may be enrolled before its conductors start).
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    pub known: Vec<String>,
    /// (driver, conductor group) pairs live conductors serve.
    pub served: Vec<(String, String)>,
}

impl Drivers {
    pub fn check(&self, driver: &str, group: &str) -> Result<(), ApiError> {
        if self.known.iter().any(|d| d == driver)
            || self.served.iter().any(|(d, g)| d == driver && g == group)
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
    "automated_clean",
    "boot_mode",
    "chassis_uuid",
    "description",
    "instance_name",
    "lessee",
    "network_data",
    "owner",
    "parent_node",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "secure_boot",
    "shard",
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

fn unset(field: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(false) => matches!(field, "protected" | "retired" | "automated_clean"),
        Value::Object(m) => field == "network_data" && m.is_empty(),
        Value::String(s) => {
            matches!(field, "protected" | "retired")
                && parse_bool(&Value::String(s.clone())) == Some(false)
        }
        _ => false,
    }
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
    Ok(spec)
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(minor: u32) -> ApiVersion {
        ApiVersion {
            minor,
            new_header: false,
        }
    }

    fn drivers() -> Drivers {
        Drivers {
            known: vec!["fake-hardware".into(), "ipmi".into()],
            served: vec![],
        }
    }

    #[test]
    fn create_validates_like_ironic() {
        let spec = create(
            &json!({"driver": "fake-hardware", "name": "n1", "properties": {"cpus": 4},
                    "driver_info": {"ipmi_password": "x"}, "maintenance": "true",
                    "conductor_group": "Rack-1", "deploy_interface": "direct", "owner": null}),
            v(95),
            &drivers(),
            7,
        )
        .unwrap();
        assert_eq!(spec.name.unwrap().as_str(), "n1");
        assert!(spec.maintenance);
        assert_eq!(spec.conductor_group, "rack-1");
        assert_eq!(spec.interfaces["deploy_interface"], "direct");
        assert_eq!(spec.properties, r#"{"cpus":4}"#);

        let err = |body: Value, minor: u32| create(&body, v(minor), &drivers(), 0).unwrap_err();
        let e = err(json!({"driver": "fake-hardware", "bogus": 1}), 95);
        assert!(e.to_string().contains("'bogus' was unexpected"), "{e}");
        let e = err(json!({"name": "x"}), 95);
        assert!(
            e.to_string().contains("'driver' is a required property"),
            "{e}"
        );
        let e = err(json!({"driver": "nope"}), 95);
        assert!(e.to_string().contains("No valid host"), "{e}");
        let e = err(json!({"driver": "fake-hardware", "maintenance": 7}), 95);
        assert!(e.to_string().contains("maintenance"), "{e}");
        let e = err(json!({"driver": "fake-hardware", "properties": []}), 95);
        assert!(e.to_string().contains("properties"), "{e}");
        let e = err(json!({"driver": "fake-hardware", "owner": "p1"}), 95);
        assert!(e.to_string().contains("owner"), "{e}");
        assert!(matches!(
            err(
                json!({"driver": "fake-hardware", "disable_power_off": true}),
                94
            ),
            ApiError::NotAcceptable(_)
        ));
        assert!(matches!(
            err(json!({"driver": "fake-hardware"}), 10),
            ApiError::NotAcceptable(_)
        ));
        let e = err(json!({"driver": "fake-hardware", "name": "detail"}), 95);
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = err(json!({"driver": "fake-hardware", "uuid": "nope"}), 95);
        assert!(e.to_string().contains("Expected UUID"), "{e}");
        let e = err(json!([1]), 95);
        assert!(e.to_string().contains("not of type 'object'"), "{e}");
    }

    #[test]
    fn malformed_driver_info_is_refused_at_enroll_naming_the_key() {
        let create_with = |info: Value| {
            create(
                &json!({"driver": "ipmi", "driver_info": info}),
                v(95),
                &drivers(),
                0,
            )
        };
        // What the drivers accept is accepted, and stored exactly as sent.
        let spec = create_with(json!({"ipmi_address": "10.0.0.5", "ipmi_port": "623",
            "ipmi_password": "pw", "deploy_kernel": "http://x/k"}))
        .unwrap();
        assert_eq!(
            spec.driver_info,
            r#"{"deploy_kernel":"http://x/k","ipmi_address":"10.0.0.5","ipmi_password":"pw","ipmi_port":"623"}"#
        );
        assert_eq!(spec.driver_info().unwrap().ipmi().port, Some(623));
        // Not yet complete is fine at enroll (Ironic validates a driver's needs later).
        assert!(create_with(json!({})).is_ok());
        assert!(create_with(json!(null)).is_ok());
        for (info, key) in [
            (json!({"ipmi_port": "abc"}), "ipmi_port"),
            (json!({"ipmi_port": 70000}), "ipmi_port"),
            (json!({"ipmi_port": true}), "ipmi_port"),
            (json!({"ipmi_address": 10}), "ipmi_address"),
            (json!({"ipmi_password": 1234567}), "ipmi_password"),
            (json!({"redfish_verify_ca": 3}), "redfish_verify_ca"),
            (
                json!({"agent_callback_timeout": "soon"}),
                "agent_callback_timeout",
            ),
            (json!({"fake_step_secs": [1]}), "fake_step_secs"),
        ] {
            let e = create_with(info.clone()).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{info}: {e:?}");
            let text = e.to_string();
            assert!(
                text.contains("Invalid driver_info") && text.contains(key),
                "{info}: {text}"
            );
            assert!(!text.contains("1234567"), "a secret in the error: {text}");
        }
        for info in [json!([1]), json!("{}"), json!(5)] {
            let e = create_with(info.clone()).unwrap_err();
            assert!(
                matches!(&e, ApiError::BadRequest(m) if m.contains("'driver_info'")),
                "{info}: {e:?}"
            );
        }
    }

    #[test]
    fn malformed_driver_info_is_refused_at_patch_naming_the_key() {
        let mut spec = NodeSpec::new(NodeId::new_random(), "ipmi", 0);
        spec.driver_info = r#"{"ipmi_address":"h"}"#.into();
        let node = NodeRef {
            spec: std::sync::Arc::new(crate::informer::SpecEntry::new(spec.clone(), 1)),
            status: None,
            holder: None,
        };
        let patch = |ops: Value| {
            let ops = json_patch::parse(&ops).unwrap();
            let mut next = spec.clone();
            apply_patch(&node, &ops, v(95), &drivers(), false, &mut next).map(|()| next)
        };
        let ok = patch(json!([{"op": "add", "path": "/driver_info/ipmi_port", "value": "6230"}]))
            .unwrap();
        assert_eq!(ok.driver_info, r#"{"ipmi_address":"h","ipmi_port":"6230"}"#);
        for (ops, key) in [
            (
                json!([{"op": "add", "path": "/driver_info/ipmi_port", "value": "abc"}]),
                "ipmi_port",
            ),
            (
                json!([{"op": "replace", "path": "/driver_info", "value": {"ipmi_address": ["h"]}}]),
                "ipmi_address",
            ),
            (
                json!([{"op": "add", "path": "/driver_info/fake_fail_states", "value": 1}]),
                "fake_fail_states",
            ),
        ] {
            let e = patch(ops.clone()).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{ops}: {e:?}");
            let text = e.to_string();
            assert!(
                text.contains("Invalid driver_info") && text.contains(key),
                "{ops}: {text}"
            );
        }
        let e =
            patch(json!([{"op": "replace", "path": "/driver_info", "value": [1]}])).unwrap_err();
        assert!(e.to_string().contains("'driver_info'"), "{e}");
    }

    #[test]
    fn names_follow_the_version() {
        assert!(check_name("Node_1", v(10), "%NAME%").is_ok());
        assert!(check_name("Node_1", v(9), "%NAME%").is_err());
        assert!(check_name("node-1.rack", v(9), "%NAME%").is_ok());
        assert!(matches!(
            check_name("n", v(4), "%NAME%"),
            Err(ApiError::NotAcceptable(_))
        ));
    }

    #[test]
    fn patch_fields_are_checked_before_reading() {
        let ops = json_patch::parse(
            &json!([{"op": "replace", "path": "/power_state", "value": "power on"}]),
        )
        .unwrap();
        let e = check_patch(&ops, v(95)).unwrap_err();
        assert!(e.to_string().contains("Cannot patch /power_state"), "{e}");
        let ops =
            json_patch::parse(&json!([{"op": "add", "path": "/disable_power_off", "value": true}]))
                .unwrap();
        assert!(matches!(
            check_patch(&ops, v(90)),
            Err(ApiError::NotAcceptable(_))
        ));
        let ops = json_patch::parse(&json!([{"op": "add", "path": "/properties/a", "value": 1}]))
            .unwrap();
        assert!(check_patch(&ops, v(1)).is_ok());
    }
}
