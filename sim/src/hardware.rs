//! Each simulated machine's hardware: NICs, CPU, memory, disks and identity, derived from the
//! system's index only (no state, no randomness), so a test can predict it and two runs of a
//! fleet describe the same machines. The BIOS resource (`bios`) and the deploy agent's
//! inspection data (IPA's inventory, `agent`) both read it from here, so they never disagree.
//!
//! | system index `i` | value |
//! |---|---|
//! | NICs | `eth0` `52:54:00:XX:YY:ZZ` (the PXE NIC, DHCP address `10.64.0.0 + 10 + i`), `eth1` `52:54:01:XX:YY:ZZ` (no address), `XXYYZZ` = `i` in hex |
//! | CPU | `8 << (i % 3)` cores (8, 16, 32), one socket, x86_64; flag `vmx` on even `i` (where the BIOS has `ProcVirtualization` enabled) |
//! | memory | 4 GiB per core (32, 64, 128 GiB); the kernel sees 256 MiB less |
//! | disks | `/dev/sda` 100 GiB SSD (the root disk IPA picks: the smallest of at least 4 GiB), `/dev/sdb` 1 TiB HDD |
//! | serial | `FSIM{i:08}` (the BIOS `SerialNumber`) |

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::MAX_SYSTEMS;

/// NICs per machine.
pub const NICS: usize = 2;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Memory per core, in MiB.
const MB_PER_CORE: u64 = 4096;
/// What the firmware and kernel keep: inventory `memory.total` is this much below the DIMMs.
const RESERVED_MB: u64 = 256;
const ROOT_DISK_BYTES: u64 = 100 * GIB;
const DATA_DISK_BYTES: u64 = 1024 * GIB;
/// First DHCP address of the PXE NICs, 10.64.0.10 (a machine's is this plus its index).
const FIRST_IPV4: u32 = u32::from_be_bytes([10, 64, 0, 10]);

// The index fits the three low bytes of a MAC (and the PXE addresses stay inside 10/8).
const _: () = assert!(MAX_SYSTEMS <= 1 << 24);

/// One NIC, as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    pub name: String,
    /// Lower case, colon separated, as IPA reports it.
    pub mac: String,
    /// The NIC the machine PXE boots from (`boot.pxe_interface` of the inventory).
    pub pxe: bool,
}

/// The NICs of system `idx`: NIC `n` has MAC `52:54:0n:` followed by the index's three low
/// bytes. Locally administered and unicast (0x52), unique across a fleet of up to 2^24 systems.
pub fn nics(idx: usize) -> Vec<Nic> {
    let [_, x, y, z] = (idx as u32).to_be_bytes();
    (0..NICS)
        .map(|n| Nic {
            name: format!("eth{n}"),
            mac: format!("52:54:{n:02x}:{x:02x}:{y:02x}:{z:02x}"),
            pxe: n == 0,
        })
        .collect()
}

/// CPU cores of system `idx` (also the BIOS `NumCores`).
pub fn cores(idx: usize) -> u64 {
    8 << (idx % 3)
}

/// Whether system `idx`'s CPU virtualization is enabled (the BIOS `ProcVirtualization`, the
/// `vmx` CPU flag).
pub fn virtualization(idx: usize) -> bool {
    idx.is_multiple_of(2)
}

/// The serial number of system `idx` (also the BIOS `SerialNumber`).
pub fn serial_number(idx: usize) -> String {
    format!("FSIM{idx:08}")
}

fn physical_mb(idx: usize) -> u64 {
    cores(idx) * MB_PER_CORE
}

fn pxe_ipv4(idx: usize) -> String {
    std::net::Ipv4Addr::from(FIRST_IPV4.wrapping_add(idx as u32)).to_string()
}

/// One interface as IPA's `NetworkInterface` serialises it.
fn interface(idx: usize, nic: &Nic, n: usize) -> Value {
    json!({
        "name": nic.name,
        "mac_address": nic.mac,
        // Only the PXE NIC asks for an address in the ramdisk (IPA waits for that one only).
        "ipv4_address": nic.pxe.then(|| pxe_ipv4(idx)),
        "ipv6_address": null,
        "has_carrier": true,
        "lldp": null,
        "vendor": "0x1af4",
        "product": "0x0001",
        "client_id": null,
        "biosdevname": null,
        "speed_mbps": 25_000,
        "pci_address": format!("0000:00:{:02x}.0", 3 + n),
        "driver": "virtio_net",
    })
}

/// One disk as IPA's `BlockDevice` serialises it.
fn disk(idx: usize, n: usize, size: u64, rotational: bool) -> Value {
    let letter = char::from(b'a' + n as u8);
    json!({
        "name": format!("/dev/sd{letter}"),
        "model": if rotational { "Ferric HDD" } else { "Ferric SSD" },
        "size": size,
        "rotational": rotational,
        "wwn": null,
        "serial": format!("{}-{n}", serial_number(idx)),
        "vendor": "ATA",
        "wwn_with_extension": null,
        "wwn_vendor_extension": null,
        "hctl": format!("{n}:0:0:0"),
        "by_path": format!("/dev/disk/by-path/pci-0000:00:1f.2-ata-{}", n + 1),
    })
}

fn cpu(idx: usize) -> Value {
    let mut flags = vec![
        "fpu", "pse", "tsc", "msr", "pae", "cx8", "apic", "sep", "cmov", "pat", "clflush", "mmx",
        "fxsr", "sse", "sse2", "syscall", "nx", "pdpe1gb", "lm", "pni", "ssse3", "cx16", "sse4_1",
        "sse4_2", "popcnt", "aes", "avx", "avx2",
    ];
    if virtualization(idx) {
        flags.push("vmx");
    }
    json!({
        "model_name": "Ferric Simulated CPU @ 2.40GHz",
        "frequency": "2400.000",
        "count": cores(idx),
        "architecture": "x86_64",
        "flags": flags,
        "socket_count": 1,
    })
}

/// System `idx`'s inventory in the shape of IPA's `list_hardware_info` (field names exactly
/// IPA's). `hostname` is the system id; `bmc_address` is loopback (where `ferric sim` usually
/// listens), which Ironic's lookup ignores, so a node is found by its MACs.
pub fn inventory(id: &str, idx: usize) -> Value {
    let nics = nics(idx);
    let pxe_mac = nics.iter().find(|n| n.pxe).map(|n| n.mac.clone());
    let interfaces: Vec<Value> = nics
        .iter()
        .enumerate()
        .map(|(n, nic)| interface(idx, nic, n))
        .collect();
    json!({
        "interfaces": interfaces,
        "cpu": cpu(idx),
        "disks": [
            disk(idx, 0, ROOT_DISK_BYTES, false),
            disk(idx, 1, DATA_DISK_BYTES, true),
        ],
        "memory": {
            "total": (physical_mb(idx) - RESERVED_MB) * MIB,
            "physical_mb": physical_mb(idx),
        },
        "bmc_address": "127.0.0.1",
        "bmc_v6address": "::/0",
        "system_vendor": {
            "product_name": "Ferric Simulated System",
            "serial_number": serial_number(idx),
            "manufacturer": "Ferric",
            "firmware": {
                "vendor": "Ferric",
                "version": "1.0.0",
                "build_date": "01/01/2025",
            },
        },
        "boot": {
            "current_boot_mode": "uefi",
            "pxe_interface": pxe_mac,
        },
        "hostname": id,
    })
}

/// The disk IPA picks as root without hints: the smallest of at least 4 GiB
/// (`utils.guess_root_disk`).
fn root_disk(inventory: &Value) -> Option<Value> {
    inventory["disks"]
        .as_array()?
        .iter()
        .filter(|d| d["size"].as_u64().is_some_and(|s| s >= 4 * GIB))
        .min_by_key(|d| d["size"].as_u64())
        .cloned()
}

/// What IPA posts to the inspection callback: the inventory plus the data its `default`
/// collector adds (`root_disk`, `boot_interface`, `configuration`) and `error` (none).
pub fn inspection_data(id: &str, idx: usize) -> Value {
    let inventory = inventory(id, idx);
    let mut data = json!({
        "boot_interface": inventory["boot"]["pxe_interface"].clone(),
        "configuration": { "collectors": ["default"], "managers": [] },
        "error": null,
    });
    if let Some(root) = root_disk(&inventory) {
        data["root_disk"] = root;
    }
    data["inventory"] = inventory;
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn macs_are_locally_administered_and_unique() {
        let n0 = nics(0);
        assert_eq!(n0[0].mac, "52:54:00:00:00:00");
        assert_eq!(n0[1].mac, "52:54:01:00:00:00");
        assert!(n0[0].pxe && !n0[1].pxe);
        assert_eq!(nics(0x0a0b0c)[1].mac, "52:54:01:0a:0b:0c");
        let mut seen = HashSet::new();
        for idx in (0..MAX_SYSTEMS).step_by(997).chain([MAX_SYSTEMS - 1]) {
            for nic in nics(idx) {
                assert!(seen.insert(nic.mac), "idx {idx}");
            }
        }
        assert_eq!(nics(MAX_SYSTEMS - 1)[0].mac, "52:54:00:0f:42:3f");
    }

    #[test]
    fn inventory_values_follow_the_index() {
        let inv = inventory("sim-1", 1);
        assert_eq!(inv["cpu"]["count"], 16);
        assert_eq!(inv["cpu"]["architecture"], "x86_64");
        assert!(!inv["cpu"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("vmx")));
        assert_eq!(inv["memory"]["physical_mb"], 65_536);
        assert_eq!(inv["memory"]["total"], (65_536u64 - 256) * MIB);
        assert_eq!(inv["system_vendor"]["serial_number"], "FSIM00000001");
        assert_eq!(inv["boot"]["pxe_interface"], "52:54:00:00:00:01");
        assert_eq!(inv["interfaces"][0]["ipv4_address"], "10.64.0.11");
        assert_eq!(inv["interfaces"][1]["ipv4_address"], Value::Null);
        assert_eq!(inv["hostname"], "sim-1");
        let inv = inventory("sim-2", 2);
        assert_eq!(inv["cpu"]["count"], 32);
        assert!(inv["cpu"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("vmx")));
        assert_eq!(
            inventory("x", MAX_SYSTEMS - 1)["interfaces"][0]["ipv4_address"],
            "10.79.66.73"
        );
    }

    #[test]
    fn inspection_data_names_the_smallest_disk_as_root_and_the_pxe_nic() {
        let d = inspection_data("sim-0", 0);
        assert_eq!(d["root_disk"]["name"], "/dev/sda");
        assert_eq!(d["root_disk"]["size"], 100 * GIB);
        assert_eq!(d["inventory"]["disks"][1]["size"], 1024 * GIB);
        assert_eq!(d["boot_interface"], "52:54:00:00:00:00");
        assert_eq!(d["error"], Value::Null);
        assert_eq!(d["configuration"]["collectors"], json!(["default"]));
        let mut keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "boot_interface",
                "configuration",
                "error",
                "inventory",
                "root_disk"
            ]
        );
    }
}
