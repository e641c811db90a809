//! `network_data` (1.66): the OpenStack network metadata a node's config drive carries
//! (`links`, `networks`, `services`), checked as Ironic checks it against its network data
//! schema, so that a malformed document is refused when it is set rather than breaking a
//! deploy later. Written here from the format's rules (Ironic's schema is a JSON file; a
//! validator of that size is less code than a JSON Schema engine and gives messages naming the
//! exact element). Ironic also accepts null and `{}`; so does Ferric.

use serde_json::{Map, Value};
use std::net::{Ipv4Addr, Ipv6Addr};

/// L2 interface types of a plain link (`bond` and `vlan` have their own shapes).
const LINK_TYPES: &[&str] = &[
    "bridge",
    "dvs",
    "hw_veb",
    "hyperv",
    "ovs",
    "tap",
    "vhostuser",
    "vif",
    "phy",
];
const BOND_MODES: &[&str] = &[
    "802.3ad",
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "balance-tlb",
    "balance-alb",
];

type Check = Result<(), String>;

/// Validates a `network_data` document; the error reads like Ironic's
/// ("Invalid network_data: ...").
pub fn validate(v: &Value) -> Check {
    let obj = match v {
        Value::Null => return Ok(()),
        Value::Object(o) if o.is_empty() => return Ok(()),
        Value::Object(o) => o,
        other => return Err(format!("{other} is not of type 'object'")),
    };
    for key in ["links", "networks", "services"] {
        if !obj.contains_key(key) {
            return Err(format!("'{key}' is a required property"));
        }
    }
    for (i, link) in array(obj, "links", "")?.iter().enumerate() {
        check_link(link).map_err(|e| format!("links[{i}]: {e}"))?;
    }
    for (i, net) in array(obj, "networks", "")?.iter().enumerate() {
        check_network(net).map_err(|e| format!("networks[{i}]: {e}"))?;
    }
    for (i, svc) in array(obj, "services", "")?.iter().enumerate() {
        check_service(svc, None).map_err(|e| format!("services[{i}]: {e}"))?;
    }
    Ok(())
}

fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{v} is not of type 'object'"))
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a [Value], String> {
    match obj.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("{at}{key}: {other} is not of type 'array'")),
    }
}

fn required(obj: &Map<String, Value>, keys: &[&str]) -> Check {
    match keys.iter().find(|k| !obj.contains_key(**k)) {
        Some(k) => Err(format!("'{k}' is a required property")),
        None => Ok(()),
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key}: {other} is not of type 'string'")),
    }
}

fn one_of(obj: &Map<String, Value>, key: &str, allowed: &[&str]) -> Check {
    match string(obj, key)? {
        Some(s) if !allowed.contains(&s) => Err(format!("{key}: '{s}' is not one of {allowed:?}")),
        _ => Ok(()),
    }
}

fn mac(obj: &Map<String, Value>, key: &str) -> Check {
    let Some(s) = string(obj, key)? else {
        return Ok(());
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!("{key}: '{s}' is not a MAC address"))
    }
}

fn check_link(v: &Value) -> Check {
    let link = object(v)?;
    let kind = string(link, "type")?.unwrap_or("");
    match kind {
        "bond" => {
            required(
                link,
                &[
                    "ethernet_mac_address",
                    "id",
                    "type",
                    "bond_mode",
                    "bond_links",
                ],
            )?;
            one_of(link, "bond_mode", BOND_MODES)?;
            for (i, l) in array(link, "bond_links", "")?.iter().enumerate() {
                if !l.is_string() {
                    return Err(format!("bond_links[{i}]: {l} is not of type 'string'"));
                }
            }
            mac(link, "ethernet_mac_address")?;
        }
        "vlan" => {
            required(
                link,
                &["vlan_mac_address", "id", "type", "vlan_link", "vlan_id"],
            )?;
            string(link, "vlan_link")?;
            if !link
                .get("vlan_id")
                .is_some_and(|v| v.is_i64() || v.is_u64())
            {
                return Err(format!(
                    "vlan_id: {} is not of type 'integer'",
                    link["vlan_id"]
                ));
            }
            mac(link, "vlan_mac_address")?;
        }
        _ => {
            required(link, &["ethernet_mac_address", "id", "type"])?;
            one_of(link, "type", LINK_TYPES)?;
            mac(link, "ethernet_mac_address")?;
        }
    }
    string(link, "id")?;
    string(link, "vif_id")?;
    match link.get("mtu") {
        None | Some(Value::Null) => Ok(()),
        Some(m) if m.as_f64().is_some_and(|m| (1.0..=65535.0).contains(&m)) => Ok(()),
        Some(m) => Err(format!("mtu: {m} is not a number from 1 to 65535")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn address(obj: &Map<String, Value>, key: &str, family: Family) -> Check {
    let Some(s) = string(obj, key)? else {
        return Ok(());
    };
    let ok = match family {
        Family::V4 => s.parse::<Ipv4Addr>().is_ok(),
        // Link-local addresses may carry a zone (`fe80::1%eth0`).
        Family::V6 => s
            .split('%')
            .next()
            .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok()),
    };
    if ok {
        Ok(())
    } else {
        let name = if family == Family::V4 { "IPv4" } else { "IPv6" };
        Err(format!("{key}: '{s}' is not an {name} address"))
    }
}

fn netmask(obj: &Map<String, Value>, family: Family) -> Check {
    let Some(s) = string(obj, "netmask")? else {
        return Ok(());
    };
    let ok = match family {
        Family::V4 => s.parse::<Ipv4Addr>().is_ok_and(|m| {
            let bits = u32::from(m);
            bits.leading_ones() + bits.trailing_zeros() == 32
        }),
        Family::V6 => s.parse::<Ipv6Addr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("netmask: '{s}' is not a netmask"))
    }
}

fn check_network(v: &Value) -> Check {
    let net = object(v)?;
    required(net, &["id", "link", "network_id", "type"])?;
    for key in ["id", "link", "network_id"] {
        string(net, key)?;
    }
    let family = match string(net, "type")? {
        Some("ipv4" | "ipv4_dhcp") => Family::V4,
        Some("ipv6" | "ipv6_dhcp" | "ipv6_slaac") => Family::V6,
        other => {
            return Err(format!(
                "type: {other:?} is not one of ipv4, ipv4_dhcp, ipv6, ipv6_dhcp, ipv6_slaac"
            ))
        }
    };
    address(net, "ip_address", family)?;
    netmask(net, family)?;
    for (i, r) in array(net, "routes", "")?.iter().enumerate() {
        check_route(r, family).map_err(|e| format!("routes[{i}]: {e}"))?;
    }
    Ok(())
}

fn check_route(v: &Value, family: Family) -> Check {
    let route = object(v)?;
    required(route, &["gateway", "netmask", "network"])?;
    address(route, "network", family)?;
    address(route, "gateway", family)?;
    netmask(route, family)?;
    for (i, s) in array(route, "services", "")?.iter().enumerate() {
        check_service(s, Some(family)).map_err(|e| format!("services[{i}]: {e}"))?;
    }
    Ok(())
}

/// A DNS service; `family` None: either.
fn check_service(v: &Value, family: Option<Family>) -> Check {
    let svc = object(v)?;
    required(svc, &["address", "type"])?;
    one_of(svc, "type", &["dns"])?;
    match family {
        Some(f) => address(svc, "address", f),
        None => {
            address(svc, "address", Family::V4).or_else(|_| address(svc, "address", Family::V6))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    fn full() -> serde_json::Value {
        json!({
            "links": [
                {"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 1500},
                {"id": "eth1", "type": "phy", "ethernet_mac_address": "52-54-00-12-34-57"},
                {"id": "bond0", "type": "bond", "ethernet_mac_address": "52:54:00:12:34:58",
                 "bond_mode": "802.3ad", "bond_links": ["eth0", "eth1"]},
                {"id": "vlan10", "type": "vlan", "vlan_mac_address": "52:54:00:12:34:58",
                 "vlan_link": "bond0", "vlan_id": 10},
            ],
            "networks": [
                {"id": "n4", "link": "vlan10", "network_id": "net", "type": "ipv4",
                 "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
                 "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1",
                             "services": [{"type": "dns", "address": "192.0.2.53"}]}]},
                {"id": "n6", "link": "eth0", "network_id": "net6", "type": "ipv6_slaac",
                 "ip_address": "2001:db8::10", "netmask": "ffff:ffff:ffff:ffff::"},
                {"id": "d", "link": "eth1", "network_id": "dhcp", "type": "ipv4_dhcp"},
            ],
            "services": [{"type": "dns", "address": "2001:db8::53"}, {"type": "dns", "address": "8.8.8.8"}],
        })
    }

    #[test]
    fn metadata_in_the_openstack_format_is_accepted() {
        validate(&full()).unwrap();
        validate(&json!(null)).unwrap();
        validate(&json!({})).unwrap();
        validate(&json!({"links": [], "networks": [], "services": []})).unwrap();
    }

    #[test]
    fn malformed_metadata_is_refused_naming_the_element() {
        let mut cases = Vec::new();
        let mut f = full();
        f.as_object_mut().unwrap().remove("services");
        cases.push((f, "'services' is a required property"));
        let mut f = full();
        f["links"][0]["ethernet_mac_address"] = json!("52:54:00:12:34");
        cases.push((f, "links[0]: ethernet_mac_address"));
        let mut f = full();
        f["links"][1]["type"] = json!("wifi");
        cases.push((f, "links[1]: type: 'wifi' is not one of"));
        let mut f = full();
        f["links"][2]["bond_mode"] = json!("fastest");
        cases.push((f, "links[2]: bond_mode"));
        let mut f = full();
        f["links"][3]["vlan_id"] = json!("10");
        cases.push((f, "links[3]: vlan_id"));
        let mut f = full();
        f["links"][0]["mtu"] = json!(70000);
        cases.push((f, "links[0]: mtu"));
        let mut f = full();
        f["networks"][0]["ip_address"] = json!("192.0.2.300");
        cases.push((f, "networks[0]: ip_address"));
        let mut f = full();
        f["networks"][0]["netmask"] = json!("255.0.255.0");
        cases.push((f, "networks[0]: netmask"));
        let mut f = full();
        f["networks"][0]["routes"][0]
            .as_object_mut()
            .unwrap()
            .remove("gateway");
        cases.push((
            f,
            "networks[0]: routes[0]: 'gateway' is a required property",
        ));
        let mut f = full();
        f["networks"][1]["type"] = json!("ipv7");
        cases.push((f, "networks[1]: type"));
        let mut f = full();
        f["services"][0]["address"] = json!("dns.example");
        cases.push((f, "services[0]: address"));
        let mut f = full();
        f["networks"] = json!({});
        cases.push((f, "networks: {} is not of type 'array'"));
        cases.push((json!([]), "is not of type 'object'"));
        for (doc, want) in cases {
            let err = validate(&doc).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
