//! Each simulated system's BIOS: a `Bios` resource with its current attributes, and the
//! attribute registry that describes them, published through `/redfish/v1/Registries` as a
//! real BMC (and sushy-tools) publishes it, so a conductor can read types and allowed values.
//! The attributes are fixed per system (derived from its index); the simulator does not apply
//! pending BIOS changes.

use serde_json::{json, Value};

use crate::hardware;

/// The registry the `Bios` resources name.
pub(crate) const REGISTRY: &str = "FerricSimBiosRegistry.v1_0_0";
const REGISTRIES: &str = "/redfish/v1/Registries";

/// The `Bios` resource of system `id` (index `idx`).
pub(crate) fn bios(id: &str, idx: usize) -> Value {
    json!({
        "@odata.type": "#Bios.v1_1_0.Bios",
        "@odata.id": format!("/redfish/v1/Systems/{id}/Bios"),
        "Id": "Bios",
        "Name": "BIOS Configuration Current Settings",
        "AttributeRegistry": REGISTRY,
        "Attributes": attributes(idx),
    })
}

/// Current values: the same layout on every system, with a system-unique serial and a core
/// count that varies across the fleet (both from `hardware`, as the agent's inventory).
fn attributes(idx: usize) -> Value {
    json!({
        "BootMode": "Uefi",
        "ProcTurboMode": "Enabled",
        "ProcVirtualization": if hardware::virtualization(idx) { "Enabled" } else { "Disabled" },
        "NumCores": hardware::cores(idx),
        "SerialNumber": hardware::serial_number(idx),
        "SecureBoot": false,
    })
}

pub(crate) fn registries() -> Value {
    json!({
        "@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
        "@odata.id": REGISTRIES,
        "Name": "Registry File Collection",
        "Members@odata.count": 1,
        "Members": [{ "@odata.id": format!("{REGISTRIES}/{REGISTRY}") }],
    })
}

pub(crate) fn registry_file() -> Value {
    json!({
        "@odata.type": "#MessageRegistryFile.v1_1_0.MessageRegistryFile",
        "@odata.id": format!("{REGISTRIES}/{REGISTRY}"),
        "Id": REGISTRY,
        "Name": "BIOS Attribute Registry File",
        "Registry": REGISTRY,
        "Languages": ["en"],
        "Location": [{ "Language": "en", "Uri": format!("{REGISTRIES}/{REGISTRY}/Registry") }],
    })
}

pub(crate) fn registry() -> Value {
    let enumeration = |name: &str, values: &[&str], reset: bool| {
        json!({
            "AttributeName": name,
            "Type": "Enumeration",
            "ReadOnly": false,
            "ResetRequired": reset,
            "Value": values.iter().map(|v| json!({"ValueName": v, "ValueDisplayName": v})).collect::<Vec<_>>(),
        })
    };
    json!({
        "@odata.type": "#AttributeRegistry.v1_3_0.AttributeRegistry",
        "@odata.id": format!("{REGISTRIES}/{REGISTRY}/Registry"),
        "Id": REGISTRY,
        "Name": "Ferric simulated BIOS attribute registry",
        "Language": "en",
        "OwningEntity": "Ferric",
        "RegistryVersion": "1.0.0",
        "RegistryEntries": { "Attributes": [
            enumeration("BootMode", &["Bios", "Uefi"], true),
            enumeration("ProcTurboMode", &["Enabled", "Disabled"], true),
            enumeration("ProcVirtualization", &["Enabled", "Disabled"], true),
            {
                "AttributeName": "NumCores", "Type": "Integer", "ReadOnly": true,
                "LowerBound": 1, "UpperBound": 256, "ResetRequired": false,
            },
            {
                "AttributeName": "SerialNumber", "Type": "String", "ReadOnly": true,
                "MinLength": 0, "MaxLength": 16, "IsSystemUniqueProperty": true,
            },
            {
                "AttributeName": "SecureBoot", "Type": "Boolean", "ReadOnly": false,
                "ResetRequired": true,
            },
        ]},
    })
}
