//! Microversions: what a request asked for (`X-OpenStack-Ironic-API-Version: 1.N`,
//! `OpenStack-API-Version: baremetal 1.N`, `latest`, none = 1.1), the range Ferric serves, and
//! the version each node field and behaviour appeared in, so that a client pinned to an old
//! version sees exactly the fields and answers that version had.
//!
//! # Why 1.95 is the maximum
//!
//! Ironic's versions up to 1.95 change the node API in ways Ferric implements (below), or they
//! concern resources Ferric does not serve at all at any version (chassis, allocations, deploy
//! templates, runbooks, events, shards). `/v1/drivers` is served (see `drivers.rs` for its
//! versions), and so are ports, port groups, VIFs and volume resources (below). 1.95 adds
//! `disable_power_off`, the last node feature Ferric implements. Above it, 1.104 adds the node
//! field `instance_name` and 1.109 the field `health`, which Ferric's node record cannot hold,
//! and 1.110 allows `abort` in `wait call-back`; 1.96 to 1.103 only touch inspection rules, ports
//! and portgroups, so advertising them would buy clients nothing.
//!
//! Node fields served, by the version that introduced them (hidden below it; a request that sets
//! one below it is refused with 406, as Ironic does):
//!
//! | version | fields and behaviour |
//! |---|---|
//! | 1.1 | uuid, driver, driver_info, properties, extra, instance_uuid, instance_info, power_state, target_power_state, provision_state, target_provision_state, last_error, maintenance, maintenance_reason, reservation, console_enabled, chassis_uuid, created_at, updated_at, provision_updated_at, links |
//! | 1.2 | provision state `available` (below: `null`) |
//! | 1.3 | driver_internal_info |
//! | 1.4 | verbs `manage`, `provide` |
//! | 1.5 | name (and node names in URLs) |
//! | 1.6 | inspection_started_at, inspection_finished_at; verb `inspect` |
//! | 1.7 | clean_step |
//! | 1.8 | `?fields=` |
//! | 1.9 | `?provision_state=` |
//! | 1.10 | names with any RFC 3986 unreserved character (below: host names) |
//! | 1.11 | nodes are enrolled in `enroll` (below, Ironic enrolled in `available`; Ferric refuses to create with 406) |
//! | 1.12 | raid_config, target_raid_config |
//! | 1.13 | verb `abort` |
//! | 1.14 | `states` links |
//! | 1.15 | verb `clean` |
//! | 1.16 | `?driver=` |
//! | 1.17 | verb `adopt` |
//! | 1.20 | network_interface |
//! | 1.21 | resource_class, `?resource_class=` |
//! | 1.22 | `POST /v1/heartbeat/{node}` |
//! | 1.27 | soft power off, soft reboot, power `timeout` |
//! | 1.31 | boot/console/deploy/inspect/management/power/raid/vendor_interface |
//! | 1.33 | storage_interface |
//! | 1.36 | heartbeat `agent_version` |
//! | 1.37 | traits, `/v1/nodes/{node}/traits` |
//! | 1.38 | rescue_interface; verbs `rescue`, `unrescue` |
//! | 1.39 | provision state `inspect wait` (below: `inspecting`) |
//! | 1.40 | bios_interface |
//! | 1.41 | `abort` in `inspect wait` |
//! | 1.42 | fault, `?fault=` |
//! | 1.43 | `?detail=` |
//! | 1.44 | deploy_step |
//! | 1.46 | conductor_group, `?conductor_group=` |
//! | 1.47 | automated_clean |
//! | 1.48 | protected, protected_reason |
//! | 1.49 | conductor, `?conductor=`, `/v1/conductors` |
//! | 1.50 | owner, `?owner=` |
//! | 1.51 | description, `?description_contains=` |
//! | 1.52 | allocation_uuid (null: no allocations) |
//! | 1.61 | retired, retired_reason, `?retired=` |
//! | 1.65 | lessee, `?lessee=` |
//! | 1.66 | network_data |
//! | 1.68 | heartbeat `agent_verify_ca` |
//! | 1.69 | `deploy_steps` in provision requests |
//! | 1.70 | `disable_ramdisk` for manual cleaning |
//! | 1.72 | heartbeat `agent_status`, `agent_status_message` |
//! | 1.73 | verbs `deploy`, `undeploy` |
//! | 1.75 | boot_mode, secure_boot (null: unknown) |
//! | 1.78 | `/v1/nodes/{node}/history` |
//! | 1.82 | shard, `?shard=`, `?sharded=` |
//! | 1.83 | parent_node (null: not stored) |
//! | 1.85 | verb `unhold` |
//! | 1.86 | firmware_interface |
//! | 1.87 | service_step; verb `service` |
//! | 1.95 | disable_power_off |
//!
//! The fields marked "not stored" are served with Ironic's own value for "unset"; setting them
//! to anything else is refused with 400 naming the field.
//!
//! Ports, port groups, VIFs and volume resources (`crate::children`), by version (below it a
//! field is hidden and setting it is 406; a resource below its version is 404, as Ironic):
//!
//! | version | ports, port groups, VIFs, volumes |
//! |---|---|
//! | 1.1 | `/v1/ports`, `/v1/nodes/{node}/ports`; port uuid, address, node_uuid, extra, created_at, updated_at, links |
//! | 1.18 | port internal_info (read-only; holds `tenant_vif_port_id`) |
//! | 1.19 | port local_link_connection, pxe_enabled |
//! | 1.23 | `/v1/portgroups`: uuid, name, address, node_uuid, extra, internal_info, standalone_ports_supported, ports link |
//! | 1.24 | port portgroup_uuid; `/v1/nodes/{node}/portgroups`, `/v1/portgroups/{id}/ports` |
//! | 1.26 | port group mode, properties |
//! | 1.28 | `/v1/nodes/{node}/vifs` (noop/flat network semantics) |
//! | 1.32 | `/v1/volume`, connectors, targets, `/v1/nodes/{node}/volume/...` (noop storage) |
//! | 1.34 | port physical_network |
//! | 1.53 | port is_smartnic |
//! | 1.67 | VIF attach to a given `port_uuid` or `portgroup_uuid` |
//! | 1.88 | port name |
//! | 1.94 | port create with `node_ident` (uuid or name) |
//!
//! Later port fields (description 1.97, vendor 1.100, category 1.101, and port group
//! physical_network and category) are above 1.95 and not served.

use crate::error::ApiError;
use axum::http::HeaderMap;

/// The lowest minor version served (Ironic's too).
pub const MIN_MINOR: u32 = 1;
/// The highest minor version served; see the module documentation.
pub const MAX_MINOR: u32 = 95;

pub const HDR_VERSION: &str = "x-openstack-ironic-api-version";
pub const HDR_MIN: &str = "x-openstack-ironic-api-minimum-version";
pub const HDR_MAX: &str = "x-openstack-ironic-api-maximum-version";
pub const HDR_OPENSTACK: &str = "openstack-api-version";

// Versions of behaviours (fields are in `node_json::FIELDS`).
pub const V_AVAILABLE_STATE: u32 = 2;
pub const V_NODE_NAME: u32 = 5;
pub const V_FIELDS: u32 = 8;
pub const V_PROVISION_STATE_FILTER: u32 = 9;
/// Ports: `internal_info` (1.18), `local_link_connection` and `pxe_enabled` (1.19).
pub const V_PORT_INTERNAL_INFO: u32 = 18;
pub const V_PORT_NET_FIELDS: u32 = 19;
/// Port groups (1.23); `/v1/nodes/{id}/portgroups`, `/v1/portgroups/{id}/ports` and the
/// port's `portgroup_uuid` (1.24); the group's `mode` and `properties` (1.26).
pub const V_PORTGROUPS: u32 = 23;
pub const V_PORTGROUPS_SUB: u32 = 24;
pub const V_PORTGROUP_MODE: u32 = 26;
/// `/v1/nodes/{id}/vifs`; a VIF attached to a named port or port group (1.67).
pub const V_VIFS: u32 = 28;
pub const V_VIF_PORT: u32 = 67;
/// `/v1/volume`, connectors and targets.
pub const V_VOLUME: u32 = 32;
/// The port's `physical_network` (1.34), `is_smartnic` (1.53), `name` (1.88); a port created
/// with `node_ident` (uuid or name) instead of `node_uuid` (1.94).
pub const V_PORT_PHYSNET: u32 = 34;
pub const V_PORT_SMARTNIC: u32 = 53;
pub const V_PORT_NAME: u32 = 88;
pub const V_PORT_NODE_IDENT: u32 = 94;
pub const V_UNRESTRICTED_NAME: u32 = 10;
pub const V_ENROLL_STATE: u32 = 11;
pub const V_STATES_LINKS: u32 = 14;
pub const V_DRIVER_FILTER: u32 = 16;
pub const V_RESOURCE_CLASS: u32 = 21;
pub const V_RAMDISK: u32 = 22;
pub const V_SOFT_POWER: u32 = 27;
pub const V_AGENT_VERSION: u32 = 36;
pub const V_INSPECT_WAIT: u32 = 39;
pub const V_INSPECT_ABORT: u32 = 41;
pub const V_FAULT: u32 = 42;
pub const V_DETAIL: u32 = 43;
pub const V_RESET_INTERFACES: u32 = 45;
pub const V_CONDUCTOR_GROUP: u32 = 46;
pub const V_CONDUCTORS: u32 = 49;
pub const V_OWNER: u32 = 50;
pub const V_DESCRIPTION: u32 = 51;
pub const V_RETIRED: u32 = 61;
pub const V_LESSEE: u32 = 65;
pub const V_VERIFY_CA: u32 = 68;
pub const V_DEPLOY_STEPS: u32 = 69;
pub const V_CLEAN_DISABLE_RAMDISK: u32 = 70;
pub const V_AGENT_STATUS: u32 = 72;
pub const V_DEPLOY_VERBS: u32 = 73;
pub const V_BOOT_MODE: u32 = 75;
pub const V_HISTORY: u32 = 78;
pub const V_SHARD: u32 = 82;
pub const V_CHILD_NODES: u32 = 83;
pub const V_UNHOLD: u32 = 85;
pub const V_SERVICE: u32 = 87;
/// Ironic allows `abort` in `wait call-back` from 1.110 on: above our maximum.
pub const V_DEPLOY_WAIT_ABORT: u32 = 110;
/// Ironic's `instance_name` filter and field; above our maximum.
pub const V_INSTANCE_NAME: u32 = 104;

/// The microversion of one request (major is always 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub minor: u32,
    /// The request named it with `OpenStack-API-Version` (answered in the same header).
    pub new_header: bool,
}

impl ApiVersion {
    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }

    pub fn latest() -> Self {
        ApiVersion {
            minor: MAX_MINOR,
            new_header: false,
        }
    }

    pub fn as_string(self) -> String {
        format!("1.{}", self.minor)
    }
}

pub fn min_string() -> String {
    format!("1.{MIN_MINOR}")
}

pub fn max_string() -> String {
    format!("1.{MAX_MINOR}")
}

fn range() -> String {
    format!("[{}, {}]", min_string(), max_string())
}

/// The version a request asked for. `OpenStack-API-Version: baremetal X` wins over Ironic's own
/// header, as in Ironic (microversion-parse); no header means the minimum, 1.1.
pub fn requested(headers: &HeaderMap) -> Result<ApiVersion, ApiError> {
    let mut value: Option<(String, bool)> = None;
    for v in headers.get_all(HDR_OPENSTACK) {
        let Ok(text) = v.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split_whitespace();
            if let (Some(service), Some(ver), None) = (parts.next(), parts.next(), parts.next()) {
                if service.eq_ignore_ascii_case("baremetal") {
                    value = Some((ver.to_string(), true));
                }
            }
        }
    }
    if value.is_none() {
        if let Some(v) = headers.get(HDR_VERSION) {
            let text = v.to_str().map_err(|_| invalid_header())?;
            value = Some((text.trim().to_string(), false));
        }
    }
    let Some((text, new_header)) = value else {
        return Ok(ApiVersion {
            minor: MIN_MINOR,
            new_header: false,
        });
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(ApiVersion {
            minor: MAX_MINOR,
            new_header,
        });
    }
    let (major, minor) = text.split_once('.').ok_or_else(invalid_header)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Err(invalid_header());
    }
    let major: u32 = major.parse().map_err(|_| invalid_header())?;
    let minor: u32 = minor.parse().map_err(|_| invalid_header())?;
    if major != 1 {
        return Err(ApiError::NotAcceptable(format!(
            "Mutually exclusive versions requested. Version {major}.{minor} requested but not supported by this service. The supported version range is: {}.",
            range()
        )));
    }
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(ApiError::NotAcceptable(format!(
            "Version {major}.{minor} was requested but the minor version is not supported by this service. The supported version range is: {}.",
            range()
        )));
    }
    Ok(ApiVersion { minor, new_header })
}

fn invalid_header() -> ApiError {
    ApiError::NotAcceptable("Invalid value for X-OpenStack-Ironic-API-Version header".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn req(h: &[(&'static str, &'static str)]) -> Result<ApiVersion, ApiError> {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(*k, HeaderValue::from_static(v));
        }
        requested(&m)
    }

    #[test]
    fn headers_pick_the_version() {
        assert_eq!(req(&[]).unwrap().minor, 1);
        assert_eq!(req(&[(HDR_VERSION, "1.31")]).unwrap().minor, 31);
        assert_eq!(req(&[(HDR_VERSION, "latest")]).unwrap().minor, MAX_MINOR);
        assert_eq!(req(&[(HDR_VERSION, "LATEST")]).unwrap().minor, MAX_MINOR);
        let v = req(&[(HDR_OPENSTACK, "compute 2.1, baremetal 1.46")]).unwrap();
        assert_eq!((v.minor, v.new_header), (46, true));
        // The new header wins over the legacy one.
        let v = req(&[(HDR_VERSION, "1.20"), (HDR_OPENSTACK, "baremetal 1.40")]).unwrap();
        assert_eq!(v.minor, 40);
        // A new header for another service is ignored.
        assert_eq!(req(&[(HDR_OPENSTACK, "compute 2.5")]).unwrap().minor, 1);
    }

    #[test]
    fn out_of_range_and_garbage_are_406() {
        for bad in [
            "1.0", "1.96", "2.1", "1", "1.x", "abc", "1.1.1", " ", "1.-1",
        ] {
            let mut m = HeaderMap::new();
            m.insert(HDR_VERSION, HeaderValue::from_str(bad).unwrap());
            match requested(&m) {
                Err(ApiError::NotAcceptable(msg)) => {
                    assert!(!msg.is_empty(), "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        match req(&[(HDR_VERSION, "1.200")]) {
            Err(ApiError::NotAcceptable(m)) => assert!(m.contains("[1.1, 1.95]"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
