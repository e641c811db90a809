"""Ports, VIFs and volume targets through openstacksdk (as Metal3-style tools, Ansible and
Nova's cleanup use them). Exits non-zero with a message on the first thing that is not as
Ironic would have it.

Usage: sdk_ports.py ENDPOINT NODE_UUID MAC
"""

import sys

import openstack
from openstack import exceptions


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}")
        sys.exit(1)


def main():
    endpoint, node, mac = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = openstack.connect(auth_type="none", baremetal_endpoint_override=endpoint)
    bm = conn.baremetal

    port = bm.create_port(node_uuid=node, address=mac.upper(), pxe_enabled=True)
    check(port.address == mac.lower(), f"address not normalised: {port.address}")
    found = list(bm.ports(details=True, address=mac))
    check(len(found) == 1 and found[0].id == port.id, f"ports(address=) gave {found}")
    check(found[0].node_id == node, f"node_uuid {found[0].node_id}")
    by_node = list(bm.ports(node=node))
    check(port.id in [p.id for p in by_node], "ports(node=) misses the port")

    try:
        bm.create_port(node_uuid=node, address=mac)
        check(False, "duplicate MAC accepted")
    except exceptions.ConflictException as e:
        check("already exists" in str(e), f"duplicate MAC message: {e}")

    bm.attach_vif_to_node(node, "sdk-vif-1")
    # Attaching it again is a success, as Nova needs it to be.
    bm.attach_vif_to_node(node, "sdk-vif-1")
    vifs = bm.list_node_vifs(node)
    check(vifs == ["sdk-vif-1"], f"list_node_vifs gave {vifs}")
    shown = bm.get_port(port.id)
    check(
        shown.internal_info.get("tenant_vif_port_id") == "sdk-vif-1",
        f"internal_info {shown.internal_info}",
    )
    bm.detach_vif_from_node(node, "sdk-vif-1")
    check(bm.list_node_vifs(node) == [], "VIF still listed after detach")

    # Nova's cleanup after a failed spawn: a list, never a 404.
    targets = list(bm.volume_targets(node=node, details=True))
    check(targets == [], f"volume targets {targets}")
    bm.create_volume_target(node_id=node, volume_type="iscsi", boot_index=0, volume_id="v-sdk")
    targets = list(bm.volume_targets(node=node, details=True))
    check(len(targets) == 1 and targets[0].volume_id == "v-sdk", f"targets {targets}")

    machine = conn.get_machine_by_mac(mac)
    check(machine is not None and machine["id"] == node, f"get_machine_by_mac gave {machine}")

    bm.delete_port(port.id)
    check(list(bm.ports(address=mac)) == [], "port still listed after delete")
    print("OK")


if __name__ == "__main__":
    main()
