//! In-band inspection: `POST /v1/continue_inspection`, where a node's ramdisk sends its
//! inspection data (IPA's inventory and plugin data), and `GET /v1/nodes/{node}/inventory`
//! (1.81), which serves it, as Ironic's `ramdisk.py` and node inventory API do.
//!
//! What happens to the data, in order (each step's record is the next one's input, so a
//! gateway that dies half way leaves the node in `inspect wait`, where the ramdisk's next
//! boot or the wait's timeout takes it on):
//!
//! 1. the node is found by the inventory's MACs through its ports (or by `node_uuid` from
//!    1.84) and must be inspecting: in `inspect wait`, or in `inspecting` while its conductor
//!    still confirms the ramdisk boot (a fast ramdisk can be there first; its conductor keeps
//!    the data until the node waits). Anything else: 404, as Ironic's lookup;
//! 2. the data is stored in `inventory/<uuid>` (at most [`MAX_INSPECTION_BYTES`]; 413 beyond);
//! 3. `cpus`, `memory_mb`, `local_gb` and `cpu_arch` go into the node's properties, and every
//!    NIC with a valid MAC that has no port yet gets one (the PXE NIC `pxe_enabled`, the
//!    others not), through the same code as `POST /v1/ports`;
//! 4. an inspection result is recorded where heartbeats are (`heartbeats/<uuid>`, with an
//!    `agent_status` no agent can send), which the node's conductor takes as the end of
//!    `inspect wait` (or as its failure, when the data carried an `error`).

use crate::auth::Caller;
use crate::children::Resource;
use crate::error::ApiError;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_cluster::ClusterError;
use ferric_model::heartbeat::{INSPECTION_DATA, INSPECTION_ERROR};
use ferric_model::port::normalize_mac;
use ferric_model::{now_ms, HeartbeatRecord, InventoryRecord, NodeId, PortRecord};
use serde_json::{json, Map, Value};

/// Ironic's `MINOR_81_NODE_INVENTORY`.
pub const V_INVENTORY: u32 = 81;
/// Ironic's `MINOR_84_CONTINUE_INSPECTION` (1.1 is accepted too, for ironic-inspector's
/// ramdisks, as Ironic does).
pub const V_CONTINUE_INSPECTION: u32 = 84;
/// Largest inspection data accepted: an IPA inventory of a big server with LLDP data is a few
/// hundred KiB; etcd's default request limit is 1.5 MiB.
pub const MAX_INSPECTION_BYTES: usize = 1024 * 1024;
/// IPA never picks a root disk smaller than this (`get_os_install_device`'s minimum).
const MIN_ROOT_DISK_BYTES: u64 = 4 << 30;

type Object = Map<String, Value>;

/// What Ferric takes from an inventory.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Facts {
    /// Valid MACs, lower case, each once, with whether it is the PXE NIC.
    pub nics: Vec<(String, bool)>,
    pub cpus: Option<u64>,
    pub memory_mb: Option<u64>,
    pub local_gb: Option<u64>,
    pub cpu_arch: Option<String>,
}

/// Splits the body into the inventory and the rest (Ironic's `plugin_data`), checked as Ironic's
/// `DATA_VALIDATOR` checks it: an `inventory` object with at least one interface, each with a
/// `mac_address` string.
pub(crate) fn split(body: Value) -> Result<(Object, Object), ApiError> {
    let bad = |m: &str| ApiError::BadRequest(format!("Invalid inspection data: {m}"));
    let Value::Object(mut data) = body else {
        return Err(bad("the body must be a JSON object"));
    };
    let inventory = match data.remove("inventory") {
        Some(Value::Object(i)) => i,
        Some(_) => return Err(bad("'inventory' is not of type 'object'")),
        None => return Err(bad("'inventory' is a required property")),
    };
    let interfaces = match inventory.get("interfaces") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad("inventory.interfaces should be non-empty")),
        Some(_) => return Err(bad("inventory.interfaces is not of type 'array'")),
        None => return Err(bad("'interfaces' is a required property of the inventory")),
    };
    for (i, iface) in interfaces.iter().enumerate() {
        if !iface.get("mac_address").is_some_and(Value::is_string) {
            return Err(bad(&format!(
                "inventory.interfaces[{i}] needs a 'mac_address' string"
            )));
        }
    }
    for key in ["bmc_address", "bmc_v6address"] {
        if inventory
            .get(key)
            .is_some_and(|v| !v.is_null() && !v.is_string())
        {
            return Err(bad(&format!(
                "inventory.{key} is not of type 'string', 'null'"
            )));
        }
    }
    Ok((inventory, data))
}

/// The facts of an inventory: NICs (the PXE one from `boot.pxe_interface`, else the plugin
/// data's `boot_interface`), CPU count and architecture, memory, and the root disk's size in
/// GiB less one (Ironic's `local_gb`, room for a partition table): the plugin data's
/// `root_disk`, else the smallest disk of at least 4 GiB, as IPA picks it.
pub(crate) fn facts(inventory: &Map<String, Value>, plugin: &Map<String, Value>) -> Facts {
    let pxe = inventory
        .get("boot")
        .and_then(|b| b.get("pxe_interface"))
        .or_else(|| plugin.get("boot_interface"))
        .and_then(Value::as_str)
        .and_then(|m| normalize_mac(m.trim_start_matches("01-")));
    let mut nics: Vec<(String, bool)> = Vec::new();
    for iface in inventory
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(mac) = iface
            .get("mac_address")
            .and_then(Value::as_str)
            .and_then(normalize_mac)
        else {
            continue;
        };
        if !nics.iter().any(|(m, _)| *m == mac) {
            let is_pxe = pxe.as_deref() == Some(mac.as_str());
            nics.push((mac, is_pxe));
        }
    }
    let cpu = inventory.get("cpu");
    let size = |d: &Value| d.get("size").and_then(Value::as_u64);
    let root = plugin.get("root_disk").and_then(size).or_else(|| {
        inventory
            .get("disks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(size)
            .filter(|s| *s >= MIN_ROOT_DISK_BYTES)
            .min()
    });
    Facts {
        nics,
        cpus: cpu.and_then(|c| c.get("count")).and_then(Value::as_u64),
        memory_mb: inventory
            .get("memory")
            .and_then(|m| m.get("physical_mb"))
            .and_then(Value::as_u64),
        local_gb: root.map(|b| (b >> 30).saturating_sub(1)),
        cpu_arch: cpu
            .and_then(|c| c.get("architecture"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    }
}

/// The node the data is for: by `node_uuid`, else by the NICs' ports (all that have one must
/// agree); it must wait for inspection data.
fn find_node(
    state: &AppState,
    node_uuid: Option<uuid::Uuid>,
    facts: &Facts,
) -> Result<NodeId, ApiError> {
    let cache = state.informer.read();
    let not_found = || {
        ApiError::NotFound(
            "No node waiting for inspection data matches the lookup information.".into(),
        )
    };
    let id = match node_uuid {
        Some(u) => cache
            .lookup(&u.to_string())
            .map(|n| n.id())
            .ok_or_else(not_found)?,
        None => {
            let ports = PortRecord::index(&cache);
            let mut found: Vec<NodeId> = facts
                .nics
                .iter()
                .filter_map(|(mac, _)| ports.by_mac(mac).map(|e| e.record.node))
                .collect();
            found.sort();
            found.dedup();
            match found.as_slice() {
                [one] => *one,
                [] => return Err(not_found()),
                _ => {
                    tracing::warn!(nodes = ?found, "inspection data matches the ports of several nodes");
                    return Err(not_found());
                }
            }
        }
    };
    let waits = cache.node(&id).is_some_and(|n| {
        n.status
            .as_ref()
            .is_some_and(|s| crate::actions::inspecting(s.status.provision_state))
    });
    if waits {
        Ok(id)
    } else {
        Err(not_found())
    }
}

pub async fn continue_inspection(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    let node_uuid = params.uuid("node_uuid")?;
    if !(v.minor == 1 || v.at_least(V_CONTINUE_INSPECTION)) {
        return Err(ApiError::NotFound(format!(
            "API version 1.{V_CONTINUE_INSPECTION} or newer is required"
        )));
    }
    params.only(&["node_uuid"])?;
    let body = request::json_body(body, &headers, MAX_INSPECTION_BYTES).await?;
    let (inventory, plugin) = split(body)?;
    let facts = facts(&inventory, &plugin);
    if facts.nics.is_empty() && node_uuid.is_none() {
        return Err(ApiError::BadRequest(
            "No lookup information provided".into(),
        ));
    }
    state.read_barrier().await?;
    let id = find_node(&state, node_uuid, &facts)?;
    let error = plugin
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string));
    let record = InventoryRecord {
        inventory: Value::Object(inventory).to_string(),
        plugin_data: Value::Object(plugin).to_string(),
        received_at_ms: now_ms(),
        recorded_by: state.config.name.clone(),
    };
    state.cluster.write_inventory(&id, &record).await?;
    if error.is_none() {
        apply(&state, &id, &facts).await?;
    }
    let result = HeartbeatRecord {
        at_ms: now_ms(),
        callback_url: String::new(),
        agent_version: None,
        agent_token: None,
        agent_verify_ca: None,
        agent_status: Some(
            if error.is_some() {
                INSPECTION_ERROR
            } else {
                INSPECTION_DATA
            }
            .into(),
        ),
        agent_status_message: error.map(|e| format!("the ramdisk reported: {e}")),
        recorded_by: state.config.name.clone(),
    };
    let rev = state.cluster.record_heartbeat(&id, &result).await?;
    state.wrote(rev);
    tracing::info!(node = %id, nics = facts.nics.len(), "inspection data received");
    Ok(request::json(
        StatusCode::ACCEPTED,
        &json!({ "uuid": id.to_string() }),
    ))
}

/// Properties and ports from the facts.
async fn apply(state: &AppState, id: &NodeId, facts: &Facts) -> Result<(), ApiError> {
    let mut props = Map::new();
    if let Some(c) = facts.cpus {
        props.insert("cpus".into(), c.into());
    }
    if let Some(m) = facts.memory_mb {
        props.insert("memory_mb".into(), m.into());
    }
    if let Some(g) = facts.local_gb {
        props.insert("local_gb".into(), g.into());
    }
    if let Some(a) = &facts.cpu_arch {
        props.insert("cpu_arch".into(), a.clone().into());
    }
    if !props.is_empty() {
        let view = state
            .cluster
            .update_spec(&id.to_string(), |_, spec| {
                let mut now = match serde_json::from_str::<Value>(&spec.properties) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                now.extend(props.clone());
                spec.properties = Value::Object(now).to_string();
                Ok(())
            })
            .await?;
        state.settle(view.spec_rev).await;
    }
    // The ramdisk is no caller with a role: ports are created as the system creates them.
    let system = Caller::new("inspection", crate::auth::Role::Admin);
    for (mac, pxe) in &facts.nics {
        let owner = PortRecord::index(&state.informer.read())
            .by_mac(mac)
            .map(|e| e.record.node);
        match owner {
            Some(n) if n == *id => continue,
            Some(other) => {
                tracing::warn!(node = %id, %mac, %other, "a NIC's MAC is another node's port; no port created");
                continue;
            }
            None => {}
        }
        let mut doc = Map::new();
        doc.insert("node_uuid".into(), id.to_string().into());
        doc.insert("address".into(), mac.clone().into());
        doc.insert("pxe_enabled".into(), (*pxe).into());
        match crate::children::create_record::<PortRecord>(state, &system, &doc).await {
            Ok(_) => {}
            // Created meanwhile (another gateway, the operator): as good.
            Err(ApiError::Conflict(e)) => {
                tracing::info!(node = %id, %mac, error = %e, "port not created")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `GET /v1/nodes/{node}/inventory` (1.81): `{"inventory": ..., "plugin_data": ...}`.
pub async fn inventory(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(V_INVENTORY) {
        return Err(ApiError::no_such_resource());
    }
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let record = match state.cluster.node_inventory(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(ApiError::NotFound(format!(
                "Node inventory record for node {id} could not be found."
            )))
        }
        Err(ClusterError::Corrupt { key, source }) => {
            tracing::error!(%key, error = %source, "unreadable inspection data");
            return Err(ApiError::Conflict(format!(
                "The inspection data of node {id} ({key}) cannot be read ({source}); inspect the node again."
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    Ok(request::json(
        StatusCode::OK,
        &json!({
            "inventory": parse(&record.inventory),
            "plugin_data": parse(&record.plugin_data),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipa_data() -> Value {
        json!({
            "inventory": {
                "interfaces": [
                    {"name": "eth0", "mac_address": "52:54:00:AA:00:01", "ipv4_address": "192.0.2.5"},
                    {"name": "eth1", "mac_address": "52:54:01:aa:00:01"},
                    {"name": "eth0.10", "mac_address": "52:54:00:aa:00:01"},
                    {"name": "ib0", "mac_address": "not-a-mac"},
                ],
                "cpu": {"count": 16, "architecture": "x86_64", "model_name": "Sim"},
                "memory": {"total": 34359738368u64, "physical_mb": 32768},
                "disks": [
                    {"name": "/dev/sdb", "size": 2000398934016u64},
                    {"name": "/dev/sda", "size": 107374182400u64},
                    {"name": "/dev/sr0", "size": 1073741824u64},
                ],
                "boot": {"current_boot_mode": "uefi", "pxe_interface": "52:54:00:aa:00:01"},
                "bmc_address": "192.0.2.200",
            },
            "boot_interface": "01-52-54-00-aa-00-01",
            "error": null,
        })
    }

    #[test]
    fn facts_come_from_ipa_s_inventory() {
        let (inv, plugin) = split(ipa_data()).unwrap();
        assert!(plugin.contains_key("boot_interface") && !plugin.contains_key("inventory"));
        let f = facts(&inv, &plugin);
        assert_eq!(
            f.nics,
            vec![
                ("52:54:00:aa:00:01".to_string(), true),
                ("52:54:01:aa:00:01".to_string(), false)
            ]
        );
        assert_eq!(f.cpus, Some(16));
        assert_eq!(f.memory_mb, Some(32768));
        assert_eq!(
            f.local_gb,
            Some(99),
            "the smallest disk of 4 GiB or more, less one GiB"
        );
        assert_eq!(f.cpu_arch.as_deref(), Some("x86_64"));
        let mut with_root = plugin.clone();
        with_root.insert(
            "root_disk".into(),
            json!({"name": "/dev/sdb", "size": 2000398934016u64}),
        );
        assert_eq!(facts(&inv, &with_root).local_gb, Some(1862));
        // Without boot.pxe_interface, the plugin data's boot_interface (PXE's "01-" form).
        let mut no_boot = inv.clone();
        no_boot.remove("boot");
        assert!(facts(&no_boot, &plugin).nics[0].1);
    }

    #[test]
    fn malformed_inspection_data_is_refused_as_ironic_refuses_it() {
        for (body, want) in [
            (json!([]), "must be a JSON object"),
            (json!({}), "'inventory' is a required property"),
            (
                json!({"inventory": []}),
                "'inventory' is not of type 'object'",
            ),
            (
                json!({"inventory": {}}),
                "'interfaces' is a required property",
            ),
            (json!({"inventory": {"interfaces": []}}), "non-empty"),
            (
                json!({"inventory": {"interfaces": [{"name": "eth0"}]}}),
                "interfaces[0]",
            ),
            (
                json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:00:00:01"}], "bmc_address": 5}}),
                "bmc_address",
            ),
        ] {
            let e = split(body).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
