//! Network ports, port groups and volume connectors and targets of a node (Ironic's `ports`,
//! `portgroups`, `volume/connectors`, `volume/targets`): their persisted records, MAC address
//! rules, and the VIF attach choice (Ironic's `get_free_port_like_object`) as a pure function.
//!
//! Each record lives under its node's uuid (`ports/<node>/<uuid>`, see the cluster's keyspace),
//! so that a node's delete removes them with a prefix delete in its own transaction. JSON fields
//! are kept as JSON object text, as the node spec keeps `extra`.

use crate::codec::Record;
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The key in `internal_info` that holds the VIF attached to a port or port group.
pub const TENANT_VIF_KEY: &str = "tenant_vif_port_id";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub uuid: Uuid,
    pub node: NodeId,
    /// Lower case, colon separated (see [`normalize_mac`]).
    pub address: String,
    pub portgroup: Option<Uuid>,
    pub pxe_enabled: bool,
    pub local_link_connection: String,
    pub physical_network: Option<String>,
    pub extra: String,
    pub internal_info: String,
    pub is_smartnic: bool,
    pub name: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: Option<u64>,
}

impl Record for PortRecord {
    const KIND: &'static str = "port";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortgroupRecord {
    pub uuid: Uuid,
    pub node: NodeId,
    pub name: Option<String>,
    pub address: Option<String>,
    pub mode: String,
    pub properties: String,
    pub standalone_ports_supported: bool,
    pub extra: String,
    pub internal_info: String,
    pub created_at_ms: u64,
    pub updated_at_ms: Option<u64>,
}

impl Record for PortgroupRecord {
    const KIND: &'static str = "portgroup";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeConnectorRecord {
    pub uuid: Uuid,
    pub node: NodeId,
    /// Ironic's `type`: iqn, ip, mac, wwnn, wwpn, port, portgroup.
    pub kind: String,
    pub connector_id: String,
    pub extra: String,
    pub created_at_ms: u64,
    pub updated_at_ms: Option<u64>,
}

impl Record for VolumeConnectorRecord {
    const KIND: &'static str = "volume connector";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTargetRecord {
    pub uuid: Uuid,
    pub node: NodeId,
    pub volume_type: String,
    pub properties: String,
    pub boot_index: u32,
    pub volume_id: String,
    pub extra: String,
    pub created_at_ms: u64,
    pub updated_at_ms: Option<u64>,
}

impl Record for VolumeTargetRecord {
    const KIND: &'static str = "volume target";
    const VERSION: u8 = 1;
}

/// Ironic's volume connector types.
pub const CONNECTOR_TYPES: &[&str] = &["iqn", "ip", "mac", "wwnn", "wwpn", "port", "portgroup"];

/// A MAC address as Ironic accepts it (six octets of two hex digits, separated by `:` or `-`),
/// normalised to lower case with colons; `None` when malformed.
pub fn normalize_mac(s: &str) -> Option<String> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// The VIF attached to a port-like object, as Ironic reads it: `internal_info`'s
/// `tenant_vif_port_id`, else `extra`'s `vif_port_id` (left by old Nova drivers).
pub fn attached_vif(internal_info: &str, extra: &str) -> Option<String> {
    let get = |text: &str, key: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()?
            .get(key)?
            .as_str()
            .map(str::to_string)
    };
    get(internal_info, TENANT_VIF_KEY).or_else(|| get(extra, "vif_port_id"))
}

/// What the VIF choice needs to know of a port or port group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLike {
    pub uuid: Uuid,
    pub is_group: bool,
    /// For a port: its group.
    pub group: Option<Uuid>,
    pub pxe_enabled: bool,
    pub vif: Option<String>,
}

/// Why no port-like object can take a VIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifChoice {
    /// Attach to this port or port group.
    Free(Uuid),
    /// The VIF is already attached to this port or port group of the node.
    Attached(Uuid),
    /// Nothing free.
    NoneFree,
}

/// Ironic's `get_free_port_like_object` for networks without physical networks (`noop` and
/// `flat`): the VIF must not be attached yet; a port group is usable when it has ports and none
/// of its ports has a VIF (else its free ports are candidates); port groups are preferred to
/// ports, and PXE-enabled ports to the others (Ironic sorts by `(is_pg, pxe_enabled)` in reverse).
/// Ties go to the first in `objs` (creation order).
pub fn choose_free(vif: &str, objs: &[PortLike]) -> VifChoice {
    if let Some(o) = objs.iter().find(|o| o.vif.as_deref() == Some(vif)) {
        return VifChoice::Attached(o.uuid);
    }
    let groups: Vec<&PortLike> = objs.iter().filter(|o| o.is_group).collect();
    let ports: Vec<&PortLike> = objs.iter().filter(|o| !o.is_group).collect();
    let mut candidates: Vec<&PortLike> = Vec::new();
    let mut unusable_groups = std::collections::HashSet::new();
    for p in &ports {
        if p.vif.is_some() {
            unusable_groups.insert(p.group);
        } else if p.group.is_none() {
            candidates.push(p);
        }
    }
    for g in &groups {
        if g.vif.is_some() {
            continue;
        }
        let members: Vec<&PortLike> = ports
            .iter()
            .copied()
            .filter(|p| p.group == Some(g.uuid) && p.vif.is_none())
            .collect();
        if unusable_groups.contains(&Some(g.uuid)) {
            candidates.extend(members);
        } else if !members.is_empty() {
            candidates.push(g);
        }
    }
    let key = |o: &PortLike| (o.is_group, o.is_group || o.pxe_enabled);
    // max_by_key keeps the last maximum: scan in reverse so that the first one wins ties.
    match candidates.iter().rev().max_by_key(|o| key(o)) {
        Some(o) => VifChoice::Free(o.uuid),
        None => VifChoice::NoneFree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn port(n: u128, pxe: bool, group: Option<u128>, vif: Option<&str>) -> PortLike {
        PortLike {
            uuid: Uuid::from_u128(n),
            is_group: false,
            group: group.map(Uuid::from_u128),
            pxe_enabled: pxe,
            vif: vif.map(str::to_string),
        }
    }

    fn group(n: u128, vif: Option<&str>) -> PortLike {
        PortLike {
            uuid: Uuid::from_u128(n),
            is_group: true,
            group: None,
            pxe_enabled: true,
            vif: vif.map(str::to_string),
        }
    }

    #[test]
    fn macs_are_validated_and_normalised() {
        assert_eq!(
            normalize_mac("52:54:00:AB:cd:0F").as_deref(),
            Some("52:54:00:ab:cd:0f")
        );
        assert_eq!(
            normalize_mac("52-54-00-ab-cd-0f").as_deref(),
            Some("52:54:00:ab:cd:0f")
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "5254.00ab.cd0f",
            "52:54:00:ab:cd:0f:",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn vif_choice_follows_ironic() {
        // PXE-enabled ports are preferred (Ironic's sort key, reversed).
        let objs = [port(1, false, None, None), port(2, true, None, None)];
        assert_eq!(choose_free("v", &objs), VifChoice::Free(Uuid::from_u128(2)));
        // Ties: the first one.
        let objs = [port(1, false, None, None), port(2, false, None, None)];
        assert_eq!(choose_free("v", &objs), VifChoice::Free(Uuid::from_u128(1)));
        // Port groups before ports, but only with ports.
        let objs = [port(1, true, None, None), group(9, None)];
        assert_eq!(choose_free("v", &objs), VifChoice::Free(Uuid::from_u128(1)));
        let objs = [
            port(1, true, None, None),
            group(9, None),
            port(2, false, Some(9), None),
        ];
        assert_eq!(choose_free("v", &objs), VifChoice::Free(Uuid::from_u128(9)));
        // A group with a VIF on one of its ports: its free ports are candidates instead.
        let objs = [
            group(9, None),
            port(2, false, Some(9), Some("x")),
            port(3, false, Some(9), None),
        ];
        assert_eq!(choose_free("v", &objs), VifChoice::Free(Uuid::from_u128(3)));
        // Already attached, and nothing free.
        let objs = [
            port(1, true, None, Some("v")),
            port(2, true, None, Some("w")),
        ];
        assert_eq!(
            choose_free("v", &objs),
            VifChoice::Attached(Uuid::from_u128(1))
        );
        assert_eq!(choose_free("z", &objs), VifChoice::NoneFree);
        assert_eq!(choose_free("z", &[]), VifChoice::NoneFree);
    }

    #[test]
    fn attached_vif_reads_internal_info_then_extra() {
        assert_eq!(
            attached_vif(r#"{"tenant_vif_port_id":"a"}"#, r#"{"vif_port_id":"b"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            attached_vif("{}", r#"{"vif_port_id":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(attached_vif("{}", "{}"), None);
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let p = PortRecord {
            uuid: Uuid::from_u128(1),
            node: NodeId(Uuid::from_u128(2)),
            address: "52:54:00:12:34:56".into(),
            portgroup: None,
            pxe_enabled: true,
            local_link_connection: "{}".into(),
            physical_network: None,
            extra: "{}".into(),
            internal_info: "{}".into(),
            is_smartnic: false,
            name: Some("eth0".into()),
            created_at_ms: 5,
            updated_at_ms: None,
        };
        assert_eq!(decode::<PortRecord>(&encode(&p)).unwrap(), p);
        assert!(decode::<PortRecord>(b"\x01garbage").is_err());
        assert!(decode::<PortRecord>(b"").is_err());
    }
}
