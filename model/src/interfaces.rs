//! Driver interfaces (Ironic's hardware type interfaces): which implementation names this build
//! serves for each driver, and the default a node gets when it names none. Conductors publish
//! this in their membership record (format 3), so the gateway's `/v1/drivers` and its check of
//! a node's `*_interface` fields follow what live conductors really enable.
//!
//! The names are Ironic's where Ferric does the same job or where Ironic's is a no-op here:
//! `noop`/`flat` network and `noop` storage (Ferric wires no networks and attaches no volumes),
//! `ipxe`/`pxe` boot (the conductor sets the boot device; the DHCP/TFTP side is the
//! deployment's), `agent` inspect and rescue (the agent ramdisk path of `direct`). Interfaces
//! whose work Ferric does not do at all (BIOS, firmware, RAID) offer their `no-*`, and for the
//! `redfish` driver also `redfish` (see [`unimplemented`]): Metal3 enrolls every Redfish host
//! with `firmware_interface`, `raid_interface` and `inspect_interface` set to `redfish`, and
//! refusing them would stop its registration; `validate` says they do nothing here.

use serde::{Deserialize, Serialize};

/// Ironic's interface kinds, in its order (`ironic.drivers.base.ALL_INTERFACES`).
pub const KINDS: &[&str] = &[
    "bios",
    "boot",
    "console",
    "deploy",
    "firmware",
    "inspect",
    "management",
    "network",
    "power",
    "raid",
    "rescue",
    "storage",
    "vendor",
];

/// One interface kind of one driver: the default and every enabled name (default first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSet {
    pub kind: String,
    pub default: String,
    pub enabled: Vec<String>,
}

/// What a conductor enables for one driver it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareInterfaces {
    pub driver: String,
    pub interfaces: Vec<InterfaceSet>,
}

impl HardwareInterfaces {
    pub fn get(&self, kind: &str) -> Option<&InterfaceSet> {
        self.interfaces.iter().find(|i| i.kind == kind)
    }
}

/// This build's names for `kind` of `driver`, default first; empty for an unknown driver.
pub fn enabled(driver: &str, kind: &str) -> &'static [&'static str] {
    match (driver, kind) {
        ("redfish", "bios") => &["no-bios", "redfish"],
        (_, "bios") => &["no-bios"],
        ("redfish", "firmware") => &["no-firmware", "redfish"],
        (_, "firmware") => &["no-firmware"],
        (_, "network") => &["noop", "flat"],
        (_, "storage") => &["noop"],
        ("fake-hardware", "boot") => &["fake", "ipxe", "pxe"],
        (_, "boot") => &["ipxe", "pxe"],
        ("fake-hardware", "console") => &["fake", "no-console", "ferric-sim"],
        ("ipmi", "console") => &[
            "ipmitool-socat",
            "ipmitool-shellinabox",
            "ipmitool",
            "ferric-sim",
            "no-console",
        ],
        ("redfish", "console") => &["no-console", "ferric-sim"],
        ("redfish", "inspect") => &["agent", "no-inspect", "redfish"],
        ("fake-hardware", "deploy") => &["fake", "direct"],
        (_, "deploy") => &["direct", "fake"],
        ("fake-hardware", "inspect") => &["fake", "no-inspect", "agent"],
        (_, "inspect") => &["agent", "no-inspect"],
        ("fake-hardware", "management") => &["fake"],
        ("ipmi", "management") => &["ipmitool"],
        ("redfish", "management") => &["redfish"],
        ("fake-hardware", "power") => &["fake"],
        ("ipmi", "power") => &["ipmitool"],
        ("redfish", "power") => &["redfish"],
        ("fake-hardware", "raid") => &["fake", "no-raid"],
        ("redfish", "raid") => &["no-raid", "redfish"],
        (_, "raid") => &["no-raid"],
        ("fake-hardware", "rescue") => &["fake", "no-rescue", "agent"],
        (_, "rescue") => &["no-rescue", "agent"],
        ("fake-hardware", "vendor") => &["fake", "no-vendor"],
        ("ipmi", "vendor") => &["ipmitool", "no-vendor"],
        (_, "vendor") => &["no-vendor"],
        _ => &[],
    }
}

/// Names accepted (enabled) for compatibility although Ferric does not do their work: setting
/// them is allowed, `validate` answers false for them with a reason. (The redfish BIOS
/// interface reads and caches the settings; applying them is not done.)
pub fn unimplemented(kind: &str, name: &str) -> bool {
    matches!((kind, name), ("firmware" | "inspect" | "raid", "redfish"))
}

/// Whether this build knows `driver` at all.
fn known(driver: &str) -> bool {
    matches!(driver, "fake-hardware" | "ipmi" | "redfish")
}

/// The default `kind` interface of `driver` (None for an unknown driver).
pub fn default_for(driver: &str, kind: &str) -> Option<&'static str> {
    if !known(driver) {
        return None;
    }
    enabled(driver, kind).first().copied()
}

/// What this build enables for `driver` (None for a driver it does not have).
pub fn catalog(driver: &str) -> Option<HardwareInterfaces> {
    if !known(driver) {
        return None;
    }
    Some(HardwareInterfaces {
        driver: driver.to_string(),
        interfaces: KINDS
            .iter()
            .map(|kind| {
                let names = enabled(driver, kind);
                InterfaceSet {
                    kind: kind.to_string(),
                    default: names[0].to_string(),
                    enabled: names.iter().map(|n| n.to_string()).collect(),
                }
            })
            .collect(),
    })
}

/// The kind of a node field such as `deploy_interface`.
pub fn kind_of_field(field: &str) -> Option<&str> {
    field
        .strip_suffix("_interface")
        .filter(|k| KINDS.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_driver_has_every_kind_with_its_default_first() {
        for d in ["fake-hardware", "ipmi", "redfish"] {
            let c = catalog(d).unwrap();
            assert_eq!(c.interfaces.len(), KINDS.len());
            for set in &c.interfaces {
                assert_eq!(set.enabled[0], set.default, "{d} {}", set.kind);
            }
        }
        assert!(catalog("idrac").is_none());
        assert_eq!(default_for("ipmi", "deploy"), Some("direct"));
        assert_eq!(default_for("fake-hardware", "deploy"), Some("fake"));
        assert_eq!(default_for("redfish", "power"), Some("redfish"));
        assert_eq!(default_for("nope", "power"), None);
        assert_eq!(kind_of_field("boot_interface"), Some("boot"));
        assert_eq!(kind_of_field("driver_interface"), None);
        assert!(enabled("redfish", "raid").contains(&"redfish"));
        assert!(!enabled("ipmi", "raid").contains(&"redfish"));
        assert!(unimplemented("raid", "redfish") && !unimplemented("raid", "no-raid"));
    }
}
