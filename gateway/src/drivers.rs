//! `/v1/drivers`: Ironic's hardware types, built from the live conductors' membership records
//! (the gateway's copy of `conductors/`): each driver with the conductors that serve it
//! (`hosts`) and, with `detail` (1.30), the interfaces they enable and the defaults; a driver's
//! `properties` are the `driver_info` keys Ferric's drivers read; RAID logical disk properties
//! are an empty schema (Ferric does no RAID).

use crate::error::ApiError;
use crate::node_json::links;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_model::interfaces::{self, HardwareInterfaces};
use ferric_model::ConductorRecord;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Ironic's versions for drivers: `properties` links (1.14), `type` and detail (1.30), storage
/// (1.33), rescue (1.38), bios (1.40), firmware (1.86) interfaces, `fields` (1.77).
const V_PROPERTIES_LINKS: u32 = 14;
const V_DYNAMIC: u32 = 30;
const V_RAID: u32 = 12;
const V_FIELDS: u32 = 77;

/// The minor version that shows interfaces of `kind` (None: always, once detail is there).
fn kind_since(kind: &str) -> u32 {
    match kind {
        "storage" => 33,
        "rescue" => 38,
        "bios" => 40,
        "firmware" => 86,
        _ => V_DYNAMIC,
    }
}

/// What `c` enables: its record's list, or (a record of a build before format 3) this build's
/// catalog of its drivers.
pub(crate) fn hardware_of(c: &ConductorRecord) -> Vec<HardwareInterfaces> {
    if !c.hardware.is_empty() {
        return c.hardware.clone();
    }
    c.drivers
        .iter()
        .filter_map(|d| interfaces::catalog(d))
        .collect()
}

/// Driver name -> (hosts, what each host enables), from the copy.
fn active(state: &AppState) -> BTreeMap<String, (Vec<String>, Vec<HardwareInterfaces>)> {
    let copy = state.informer.read();
    let mut out: BTreeMap<String, (Vec<String>, Vec<HardwareInterfaces>)> = BTreeMap::new();
    for c in copy.conductors.values() {
        let hw = hardware_of(c);
        for d in &c.drivers {
            let entry = out.entry(d.clone()).or_default();
            if !entry.0.contains(&c.name) {
                entry.0.push(c.name.clone());
            }
            entry
                .1
                .extend(hw.iter().filter(|h| &h.driver == d).cloned());
        }
    }
    out
}

fn driver_doc(
    base: &str,
    v: ApiVersion,
    name: &str,
    hosts: &[String],
    hw: &[HardwareInterfaces],
    detail: bool,
) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    d.insert("hosts".into(), json!(hosts));
    d.insert(
        "links".into(),
        json!(links(base, &format!("drivers/{name}"))),
    );
    if v.at_least(V_PROPERTIES_LINKS) {
        d.insert(
            "properties".into(),
            json!(links(base, &format!("drivers/{name}/properties"))),
        );
    }
    if v.at_least(V_DYNAMIC) {
        d.insert("type".into(), json!("dynamic"));
        if detail {
            for kind in interfaces::KINDS {
                if !v.at_least(kind_since(kind)) {
                    continue;
                }
                let mut enabled: Vec<String> = Vec::new();
                let mut default = None;
                for set in hw.iter().filter_map(|h| h.get(kind)) {
                    default.get_or_insert_with(|| set.default.clone());
                    for e in &set.enabled {
                        if !enabled.contains(e) {
                            enabled.push(e.clone());
                        }
                    }
                }
                enabled.sort();
                d.insert(format!("default_{kind}_interface"), json!(default));
                d.insert(format!("enabled_{kind}_interfaces"), json!(enabled));
            }
        }
    }
    d
}

/// `?fields=` of drivers (1.77), applied to one driver document.
fn select(mut d: Map<String, Value>, fields: &Option<Vec<String>>) -> Result<Value, ApiError> {
    if let Some(fields) = fields {
        for f in fields {
            if !d.contains_key(f) {
                return Err(ApiError::BadRequest(format!(
                    "Field(s) \"{f}\" are not valid"
                )));
            }
        }
        d.retain(|k, _| fields.contains(k) || k == "links");
    }
    Ok(Value::Object(d))
}

fn fields_param(params: &Params, v: ApiVersion) -> Result<Option<Vec<String>>, ApiError> {
    match params.list("fields") {
        None => Ok(None),
        Some(_) if !v.at_least(V_FIELDS) => Err(ApiError::not_acceptable()),
        Some(list) => Ok(Some(list)),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Could not find the following driver(s) or hardware type(s): {name}."
    ))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["type", "detail", "fields"])?;
    let detail = params.bool("detail")?;
    if detail.is_some() && !v.at_least(V_DYNAMIC) {
        return Err(ApiError::not_acceptable());
    }
    let fields = fields_param(&params, v)?;
    if fields.is_some() && detail == Some(true) {
        return Err(ApiError::BadRequest(
            "Can not specify ?detail=True and fields in the same request.".into(),
        ));
    }
    let kind = params.get("type");
    if kind.is_some() && !v.at_least(V_DYNAMIC) {
        return Err(ApiError::not_acceptable());
    }
    if !matches!(kind, None | Some("classic") | Some("dynamic")) {
        return Err(ApiError::BadRequest(
            "\"type\" filter must be one of \"classic\" or \"dynamic\", if specified.".into(),
        ));
    }
    state.read_barrier().await?;
    let base = request::base_url(&state, &headers);
    let mut drivers = Vec::new();
    if kind != Some("classic") {
        for (name, (hosts, hw)) in active(&state) {
            let d = driver_doc(&base, v, &name, &hosts, &hw, detail == Some(true));
            drivers.push(select(d, &fields)?);
        }
    }
    Ok(request::json(
        StatusCode::OK,
        &json!({ "drivers": drivers }),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["fields"])?;
    let fields = fields_param(&params, v)?;
    state.read_barrier().await?;
    let all = active(&state);
    let (hosts, hw) = all.get(&name).ok_or_else(|| not_found(&name))?;
    let base = request::base_url(&state, &headers);
    let d = driver_doc(&base, v, &name, hosts, hw, true);
    Ok(request::json(StatusCode::OK, &select(d, &fields)?))
}

/// The `driver_info` keys each driver reads, with Ironic-like descriptions.
fn properties_of(driver: &str) -> Option<Vec<(&'static str, &'static str)>> {
    const AGENT: &[(&str, &str)] = &[
        ("agent_callback_timeout", "Seconds to wait for the agent ramdisk to heartbeat before the wait state fails (Ferric extension). Optional."),
        ("ferric_power_sync", "Power sync policy of this node, \"observe\" or \"enforce\", instead of the cluster's (Ferric extension). Optional."),
    ];
    // The boot interfaces' keys (Ironic's pxe/ipxe `COMMON_PROPERTIES`), which the install
    // guide has users set: stored and shown, though Ferric serves no boot images itself.
    const BOOT: &[(&str, &str)] = &[
        ("deploy_kernel", "UUID (from Glance) or URL of the deployment kernel. Stored for the boot infrastructure; Ferric serves no boot images itself. Optional."),
        ("deploy_ramdisk", "UUID (from Glance) or URL of the ramdisk with the agent that is used at deploy time. Stored for the boot infrastructure; Ferric serves no boot images itself. Optional."),
        ("kernel_append_params", "Additional kernel parameters to pass down to the instance kernel. Stored for the boot infrastructure. Optional."),
        ("rescue_kernel", "UUID (from Glance) or URL of the rescue kernel. Stored for the boot infrastructure. Optional."),
        ("rescue_ramdisk", "UUID (from Glance) or URL of the rescue ramdisk with the agent. Stored for the boot infrastructure. Optional."),
    ];
    let own: &[(&str, &str)] = match driver {
        "ipmi" => &[
            ("ipmi_address", "IP address or hostname of the node. Required."),
            ("ipmi_cipher_suite", "The number of a cipher suite to use for the serial console (ipmitool -C). Optional."),
            ("ipmi_password", "password. Optional."),
            ("ipmi_port", "remote IPMI RMCP port. Optional; defaults to 623."),
            ("ipmi_username", "username; default is NULL user. Optional."),
        ],
        "redfish" => &[
            ("redfish_address", "The URL address to the Redfish controller. It must include the authority portion of the URL, and can optionally include the scheme. If the scheme is missing, https is assumed. For example: https://mgmt.vendor.com. Required."),
            ("redfish_password", "User account password. Optional."),
            ("redfish_system_id", "The canonical path to the ComputerSystem resource that the driver will interact with. It should include the root service, version and the unique resource path to the ComputerSystem within the same authority as the redfish_address property. For example: /redfish/v1/Systems/1. Required."),
            ("redfish_username", "User account with admin/server-profile access privilege. Optional."),
            ("redfish_verify_ca", "Either a Boolean value, a path to a CA_BUNDLE file or directory with certificates of trusted CAs. If set to True the driver will verify the host certificates; if False the driver will ignore verifying the SSL certificate. If it's a path the driver will use the specified certificate or one of the certificates in the directory. Defaults to True. Optional."),
        ],
        "fake-hardware" => &[
            ("fake_fail_states", "Provision states in which the fake deploy interface fails, as a comma-separated string or a list (Ferric extension). Optional."),
            ("fake_step_secs", "Seconds each step of the fake deploy interface takes (Ferric extension). Optional; defaults to 0."),
        ],
        _ => return None,
    };
    let mut all: Vec<(&str, &str)> = own.iter().chain(AGENT).chain(BOOT).copied().collect();
    all.sort();
    Some(all)
}

pub async fn properties(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref())?.only(&[])?;
    state.read_barrier().await?;
    if !active(&state).contains_key(&name) {
        return Err(not_found(&name));
    }
    let props = properties_of(&name).unwrap_or_default();
    let body: Map<String, Value> = props
        .into_iter()
        .map(|(k, d)| (k.to_string(), json!(d)))
        .collect();
    Ok(request::json(StatusCode::OK, &Value::Object(body)))
}

pub async fn raid_logical_disk_properties(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !v.at_least(V_RAID) {
        return Err(ApiError::not_acceptable());
    }
    state.read_barrier().await?;
    if !active(&state).contains_key(&name) {
        return Err(not_found(&name));
    }
    Ok(request::json(StatusCode::OK, &json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_shows_interfaces_of_the_version_and_defaults() {
        let hw = vec![interfaces::catalog("ipmi").unwrap()];
        let v = |minor| ApiVersion {
            minor,
            new_header: false,
        };
        let d = driver_doc("http://x", v(95), "ipmi", &["c1".into()], &hw, true);
        assert_eq!(d["type"], "dynamic");
        assert_eq!(d["default_power_interface"], "ipmitool");
        assert_eq!(d["default_deploy_interface"], "direct");
        assert_eq!(d["enabled_storage_interfaces"], json!(["noop"]));
        assert!(d.contains_key("default_bios_interface"));
        let v85 = driver_doc("http://x", v(85), "ipmi", &["c1".into()], &hw, true);
        assert!(!v85.contains_key("default_firmware_interface"));
        assert!(d.contains_key("default_firmware_interface"));
        let old = driver_doc("http://x", v(31), "ipmi", &["c1".into()], &hw, true);
        assert!(!old.contains_key("default_storage_interface"));
        assert!(old.contains_key("default_deploy_interface"));
        let plain = driver_doc("http://x", v(95), "ipmi", &["c1".into()], &hw, false);
        assert!(!plain.contains_key("default_power_interface"));
        assert_eq!(plain["hosts"], json!(["c1"]));
        let props = properties_of("redfish").unwrap();
        assert!(props.iter().any(|(k, _)| *k == "redfish_address"));
        assert!(properties_of("ipmi")
            .unwrap()
            .iter()
            .any(|(k, _)| *k == "ipmi_port"));
    }
}
