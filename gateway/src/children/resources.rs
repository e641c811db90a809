//! What Ironic says about each node child resource: fields and the versions that brought them
//! (`ironic/api/controllers/v1/{port,portgroup,volume_connector,volume_target}.py`), which
//! fields a create and a patch may carry, and how a document becomes a record.

use super::{
    boolean, json_text, new_uuid, object, opt_str, opt_time, req_str, schema_error, time, Ctx,
    ListFilter, Resource,
};
use crate::child_cache::ChildIndex;
use crate::error::ApiError;
use crate::informer::CacheState;
use crate::version::{
    V_PORTGROUPS, V_PORTGROUPS_SUB, V_PORTGROUP_MODE, V_PORT_INTERNAL_INFO, V_PORT_NAME,
    V_PORT_NET_FIELDS, V_PORT_PHYSNET, V_PORT_SMARTNIC, V_VOLUME,
};
use ferric_cluster::children::{IndexKey, CONNECTORS, PORTGROUPS, PORTS, TARGETS};
use ferric_cluster::Keyspace;
use ferric_model::port::{normalize_mac, CONNECTOR_TYPES};
use ferric_model::{PortRecord, PortgroupRecord, VolumeConnectorRecord, VolumeTargetRecord};
use serde_json::{json, Map, Value};

fn mac(what: &str, doc: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match opt_str(what, doc, "address")? {
        None => Ok(None),
        Some(a) => normalize_mac(&a).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!("Expected a MAC address but received {a}."))
        }),
    }
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Resource for PortRecord {
    const NOUN: &'static str = "port";
    const TITLE: &'static str = "Port";
    const PATH: &'static str = "ports";
    const COLLECTION: &'static str = "ports";
    const ETCD_KIND: &'static str = PORTS;
    const SINCE: u32 = 1;
    const FIELDS: &'static [(&'static str, u32)] = &[
        ("uuid", 1),
        ("address", 1),
        ("node_uuid", 1),
        ("extra", 1),
        ("internal_info", V_PORT_INTERNAL_INFO),
        ("local_link_connection", V_PORT_NET_FIELDS),
        ("pxe_enabled", V_PORT_NET_FIELDS),
        ("portgroup_uuid", V_PORTGROUPS_SUB),
        ("physical_network", V_PORT_PHYSNET),
        ("is_smartnic", V_PORT_SMARTNIC),
        ("name", V_PORT_NAME),
        ("created_at", 1),
        ("updated_at", 1),
        ("links", 1),
    ];
    const DEFAULT_FIELDS: &'static [&'static str] = &["uuid", "address"];
    const CREATE: &'static [&'static str] = &[
        "address",
        "extra",
        "is_smartnic",
        "local_link_connection",
        "node_ident",
        "node_uuid",
        "physical_network",
        "portgroup_uuid",
        "pxe_enabled",
        "uuid",
        "name",
    ];
    const PATCHABLE: &'static [&'static str] = &[
        "address",
        "extra",
        "is_smartnic",
        "local_link_connection",
        "node_uuid",
        "physical_network",
        "portgroup_uuid",
        "pxe_enabled",
        "name",
    ];
    const FILTERS: &'static [&'static str] =
        &["node", "node_uuid", "address", "portgroup", "pxe_enabled"];

    fn index(c: &CacheState) -> &ChildIndex<Self> {
        &c.children.ports
    }

    fn to_doc(&self) -> Map<String, Value> {
        map(json!({
            "uuid": self.uuid,
            "address": self.address,
            "node_uuid": self.node.to_string(),
            "extra": json_text(&self.extra),
            "internal_info": json_text(&self.internal_info),
            "local_link_connection": json_text(&self.local_link_connection),
            "pxe_enabled": self.pxe_enabled,
            "portgroup_uuid": self.portgroup,
            "physical_network": self.physical_network,
            "is_smartnic": self.is_smartnic,
            "name": self.name,
            "created_at": time(self.created_at_ms),
            "updated_at": opt_time(self.updated_at_ms),
        }))
    }

    fn from_doc(doc: &Map<String, Value>, old: Option<&Self>, ctx: &Ctx) -> Result<Self, ApiError> {
        let w = "port";
        let address =
            mac(w, doc)?.ok_or_else(|| schema_error(w, "'address' is a required property"))?;
        let pxe_enabled = boolean(doc, "pxe_enabled", true)?;
        let portgroup = match opt_str(w, doc, "portgroup_uuid")? {
            None => None,
            Some(g) => {
                let pg = ctx.cache.children.portgroups.lookup(&g).ok_or_else(|| {
                    ApiError::BadRequest(format!("Portgroup {g} could not be found."))
                })?;
                if pg.record.node != ctx.node {
                    return Err(ApiError::BadRequest(
                        "Port can not be added to a portgroup belonging to a different node."
                            .into(),
                    ));
                }
                if pxe_enabled && !pg.record.standalone_ports_supported {
                    return Err(ApiError::Conflict(format!("Port group {} doesn't support standalone ports. This port cannot be created as a member of that portgroup as the port's 'pxe_enabled' field was set to True.", pg.record.uuid)));
                }
                Some(pg.record.uuid)
            }
        };
        let physical_network = opt_str(w, doc, "physical_network")?;
        if physical_network.as_deref() == Some("") {
            return Err(ApiError::BadRequest(
                "A non-empty value is required when setting physical_network".into(),
            ));
        }
        if physical_network.as_ref().is_some_and(|p| p.len() > 64) {
            return Err(schema_error(w, "physical_network is longer than 64"));
        }
        let name = opt_str(w, doc, "name")?;
        if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 255) {
            return Err(ApiError::BadRequest(
                "A port name must be 1 to 255 characters.".into(),
            ));
        }
        Ok(PortRecord {
            uuid: new_uuid(w, doc, old.map(|o| o.uuid))?,
            node: ctx.node,
            address,
            portgroup,
            pxe_enabled,
            local_link_connection: object(w, doc, "local_link_connection")?,
            physical_network,
            extra: object(w, doc, "extra")?,
            internal_info: old.map_or_else(|| "{}".into(), |o| o.internal_info.clone()),
            is_smartnic: boolean(doc, "is_smartnic", false)?,
            name,
            created_at_ms: old.map_or(ctx.now, |o| o.created_at_ms),
            updated_at_ms: old.map(|_| ctx.now),
        })
    }

    fn indexes(&self, keys: &Keyspace) -> Vec<IndexKey> {
        keys.port_indexes(self)
    }

    fn matches(&self, f: &ListFilter) -> bool {
        f.portgroup.is_none_or(|g| self.portgroup == Some(g))
            && f.pxe_enabled.is_none_or(|p| self.pxe_enabled == p)
    }
}

impl Resource for PortgroupRecord {
    const NOUN: &'static str = "portgroup";
    const TITLE: &'static str = "Portgroup";
    const PATH: &'static str = "portgroups";
    const COLLECTION: &'static str = "portgroups";
    const ETCD_KIND: &'static str = PORTGROUPS;
    const SINCE: u32 = V_PORTGROUPS;
    const FIELDS: &'static [(&'static str, u32)] = &[
        ("uuid", V_PORTGROUPS),
        ("name", V_PORTGROUPS),
        ("address", V_PORTGROUPS),
        ("node_uuid", V_PORTGROUPS),
        ("extra", V_PORTGROUPS),
        ("internal_info", V_PORTGROUPS),
        ("standalone_ports_supported", V_PORTGROUPS),
        ("mode", V_PORTGROUP_MODE),
        ("properties", V_PORTGROUP_MODE),
        ("created_at", V_PORTGROUPS),
        ("updated_at", V_PORTGROUPS),
        ("links", V_PORTGROUPS),
        ("ports", V_PORTGROUPS),
    ];
    const DEFAULT_FIELDS: &'static [&'static str] = &["uuid", "address", "name"];
    const CREATE: &'static [&'static str] = &[
        "address",
        "extra",
        "mode",
        "name",
        "node_uuid",
        "properties",
        "standalone_ports_supported",
        "uuid",
    ];
    const PATCHABLE: &'static [&'static str] = &[
        "address",
        "extra",
        "mode",
        "name",
        "node_uuid",
        "properties",
        "standalone_ports_supported",
    ];
    const FILTERS: &'static [&'static str] = &["node", "address"];

    fn index(c: &CacheState) -> &ChildIndex<Self> {
        &c.children.portgroups
    }

    fn to_doc(&self) -> Map<String, Value> {
        map(json!({
            "uuid": self.uuid,
            "name": self.name,
            "address": self.address,
            "node_uuid": self.node.to_string(),
            "extra": json_text(&self.extra),
            "internal_info": json_text(&self.internal_info),
            "standalone_ports_supported": self.standalone_ports_supported,
            "mode": self.mode,
            "properties": json_text(&self.properties),
            "created_at": time(self.created_at_ms),
            "updated_at": opt_time(self.updated_at_ms),
        }))
    }

    fn from_doc(doc: &Map<String, Value>, old: Option<&Self>, ctx: &Ctx) -> Result<Self, ApiError> {
        let w = "portgroup";
        let name = opt_str(w, doc, "name")?;
        if let Some(n) = &name {
            if n.is_empty() || n.len() > 255 || n.parse::<uuid::Uuid>().is_ok() {
                return Err(ApiError::BadRequest(format!(
                    "Expected a logical name but received {n}."
                )));
            }
        }
        Ok(PortgroupRecord {
            uuid: new_uuid(w, doc, old.map(|o| o.uuid))?,
            node: ctx.node,
            name,
            address: mac(w, doc)?,
            // Ironic's `[DEFAULT]default_portgroup_mode`.
            mode: opt_str(w, doc, "mode")?.unwrap_or_else(|| "active-backup".into()),
            properties: object(w, doc, "properties")?,
            standalone_ports_supported: boolean(doc, "standalone_ports_supported", true)?,
            extra: object(w, doc, "extra")?,
            internal_info: old.map_or_else(|| "{}".into(), |o| o.internal_info.clone()),
            created_at_ms: old.map_or(ctx.now, |o| o.created_at_ms),
            updated_at_ms: old.map(|_| ctx.now),
        })
    }

    fn indexes(&self, keys: &Keyspace) -> Vec<IndexKey> {
        keys.portgroup_indexes(self)
    }

    fn sub_links(&self, base: &str, doc: &mut Map<String, Value>) {
        let l = crate::node_json::links(base, &format!("portgroups/{}/ports", self.uuid));
        doc.insert(
            "ports".into(),
            serde_json::to_value(l).unwrap_or(Value::Null),
        );
    }

    fn check_delete(&self, cache: &CacheState) -> Result<(), ApiError> {
        let has_ports = cache
            .children
            .ports
            .of_node(&self.node)
            .iter()
            .any(|p| p.record.portgroup == Some(self.uuid));
        if has_ports {
            return Err(ApiError::BadRequest(format!(
                "Cannot complete the requested action because portgroup {} contains ports.",
                self.uuid
            )));
        }
        Ok(())
    }
}

impl Resource for VolumeConnectorRecord {
    const NOUN: &'static str = "volume connector";
    const TITLE: &'static str = "Volume connector";
    const PATH: &'static str = "volume/connectors";
    const COLLECTION: &'static str = "connectors";
    const ETCD_KIND: &'static str = CONNECTORS;
    const SINCE: u32 = V_VOLUME;
    const FIELDS: &'static [(&'static str, u32)] = &[
        ("uuid", V_VOLUME),
        ("type", V_VOLUME),
        ("connector_id", V_VOLUME),
        ("node_uuid", V_VOLUME),
        ("extra", V_VOLUME),
        ("created_at", V_VOLUME),
        ("updated_at", V_VOLUME),
        ("links", V_VOLUME),
    ];
    const DEFAULT_FIELDS: &'static [&'static str] = &["uuid", "type", "connector_id", "node_uuid"];
    const CREATE: &'static [&'static str] = &["uuid", "type", "connector_id", "node_uuid", "extra"];
    const PATCHABLE: &'static [&'static str] = &["type", "connector_id", "node_uuid", "extra"];
    const FILTERS: &'static [&'static str] = &["node"];
    const POWER_OFF_ACTIONS: Option<(&'static str, &'static str)> =
        Some(("volume connector update", "volume connector deletion"));

    fn index(c: &CacheState) -> &ChildIndex<Self> {
        &c.children.connectors
    }

    fn to_doc(&self) -> Map<String, Value> {
        map(json!({
            "uuid": self.uuid,
            "type": self.kind,
            "connector_id": self.connector_id,
            "node_uuid": self.node.to_string(),
            "extra": json_text(&self.extra),
            "created_at": time(self.created_at_ms),
            "updated_at": opt_time(self.updated_at_ms),
        }))
    }

    fn from_doc(doc: &Map<String, Value>, old: Option<&Self>, ctx: &Ctx) -> Result<Self, ApiError> {
        let w = "volume connector";
        let kind = req_str(w, doc, "type")?;
        if !CONNECTOR_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Invalid type: {kind}; it must be one of {}",
                CONNECTOR_TYPES.join(", ")
            )));
        }
        Ok(VolumeConnectorRecord {
            uuid: new_uuid(w, doc, old.map(|o| o.uuid))?,
            node: ctx.node,
            kind,
            connector_id: req_str(w, doc, "connector_id")?,
            extra: object(w, doc, "extra")?,
            created_at_ms: old.map_or(ctx.now, |o| o.created_at_ms),
            updated_at_ms: old.map(|_| ctx.now),
        })
    }

    fn indexes(&self, keys: &Keyspace) -> Vec<IndexKey> {
        keys.connector_indexes(self)
    }
}

impl Resource for VolumeTargetRecord {
    const NOUN: &'static str = "volume target";
    const TITLE: &'static str = "Volume target";
    const PATH: &'static str = "volume/targets";
    const COLLECTION: &'static str = "targets";
    const ETCD_KIND: &'static str = TARGETS;
    const SINCE: u32 = V_VOLUME;
    const FIELDS: &'static [(&'static str, u32)] = &[
        ("uuid", V_VOLUME),
        ("volume_type", V_VOLUME),
        ("properties", V_VOLUME),
        ("boot_index", V_VOLUME),
        ("volume_id", V_VOLUME),
        ("node_uuid", V_VOLUME),
        ("extra", V_VOLUME),
        ("created_at", V_VOLUME),
        ("updated_at", V_VOLUME),
        ("links", V_VOLUME),
    ];
    const DEFAULT_FIELDS: &'static [&'static str] = &[
        "uuid",
        "node_uuid",
        "volume_type",
        "boot_index",
        "volume_id",
    ];
    const CREATE: &'static [&'static str] = &[
        "uuid",
        "volume_type",
        "properties",
        "boot_index",
        "volume_id",
        "node_uuid",
        "extra",
    ];
    const PATCHABLE: &'static [&'static str] = &[
        "volume_type",
        "properties",
        "boot_index",
        "volume_id",
        "node_uuid",
        "extra",
    ];
    const FILTERS: &'static [&'static str] = &["node"];
    const POWER_OFF_ACTIONS: Option<(&'static str, &'static str)> =
        Some(("volume target update", "volume target deletion"));

    fn index(c: &CacheState) -> &ChildIndex<Self> {
        &c.children.targets
    }

    fn to_doc(&self) -> Map<String, Value> {
        map(json!({
            "uuid": self.uuid,
            "volume_type": self.volume_type,
            "properties": json_text(&self.properties),
            "boot_index": self.boot_index,
            "volume_id": self.volume_id,
            "node_uuid": self.node.to_string(),
            "extra": json_text(&self.extra),
            "created_at": time(self.created_at_ms),
            "updated_at": opt_time(self.updated_at_ms),
        }))
    }

    fn from_doc(doc: &Map<String, Value>, old: Option<&Self>, ctx: &Ctx) -> Result<Self, ApiError> {
        let w = "volume target";
        let boot_index = match doc.get("boot_index") {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            None => return Err(schema_error(w, "'boot_index' is a required property")),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::BadRequest("Invalid boot_index: expected a non-negative integer".into())
        })?;
        Ok(VolumeTargetRecord {
            uuid: new_uuid(w, doc, old.map(|o| o.uuid))?,
            node: ctx.node,
            volume_type: req_str(w, doc, "volume_type")?,
            properties: object(w, doc, "properties")?,
            boot_index,
            volume_id: req_str(w, doc, "volume_id")?,
            extra: object(w, doc, "extra")?,
            created_at_ms: old.map_or(ctx.now, |o| o.created_at_ms),
            updated_at_ms: old.map(|_| ctx.now),
        })
    }

    fn indexes(&self, keys: &Keyspace) -> Vec<IndexKey> {
        keys.target_indexes(self)
    }
}
