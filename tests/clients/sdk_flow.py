"""The node flow of Ferric's gateway tests, driven through openstacksdk (as Metal3-style
tools and Ansible's openstack.cloud collection do). Exits non-zero with a message on the first
thing that is not as Ironic would have it.

Usage: sdk_flow.py ENDPOINT PREFIX [USER PASSWORD]
"""

import sys
import time

import openstack
from openstack import exceptions


def main():
    endpoint, prefix = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 4:
        conn = openstack.connect(
            auth_type="http_basic",
            username=sys.argv[3],
            password=sys.argv[4],
            baremetal_endpoint_override=endpoint,
        )
    else:
        conn = openstack.connect(auth_type="none", baremetal_endpoint_override=endpoint)
    bm = conn.baremetal

    names = [f"{prefix}-{i}" for i in range(3)]
    nodes = [
        bm.create_node(
            driver="fake-hardware",
            name=n,
            properties={"cpus": 2},
            driver_info={"ipmi_password": "hunter2", "ipmi_username": "admin"},
        )
        for n in names
    ]
    for n in nodes:
        check(n.provision_state == "enroll", f"new node in {n.provision_state}")
        check(n.driver_info["ipmi_password"] == "******", "password not masked")
        check(n.driver_info["ipmi_username"] == "admin", "username masked")

    listed = [n.name for n in bm.nodes() if n.name in names]
    check(sorted(listed) == names, f"list: {listed}")
    page = list(bm.nodes(limit=2, paginated=False))
    check(len(page) <= 2, f"limit=2 gave {len(page)}")
    everything = [n.name for n in bm.nodes(details=True, limit=1) if n.name in names]
    check(sorted(everything) == names, f"pagination by 1 lost nodes: {everything}")
    enrolled = [n.name for n in bm.nodes(provision_state="enroll") if n.name in names]
    check(sorted(enrolled) == names, f"filter: {enrolled}")

    node = bm.get_node(names[0])
    node = bm.patch_node(node, [{"op": "add", "path": "/properties/memory_mb", "value": 4096}])
    check(node.properties.get("memory_mb") == 4096, f"patch: {node.properties}")
    node = bm.update_node(node, extra={"rack": "r1"})
    check(bm.get_node(names[0]).extra == {"rack": "r1"}, "update_node extra")

    node = bm.set_node_provision_state(node, "manage", wait=True, timeout=120)
    check(node.provision_state == "manageable", f"manage: {node.provision_state}")
    node = bm.set_node_provision_state(node, "provide", wait=True, timeout=120)
    check(node.provision_state == "available", f"provide: {node.provision_state}")

    bm.set_node_power_state(node, "power on", wait=True, timeout=120)
    check(bm.get_node(node.id).power_state == "power on", "power on")
    bm.set_node_power_state(node, "soft power off", wait=True, timeout=120)
    check(bm.get_node(node.id).power_state == "power off", "soft power off")

    bm.set_node_maintenance(node, reason="sdk says so")
    node = bm.get_node(node.id)
    check(node.is_maintenance and node.maintenance_reason == "sdk says so", "maintenance set")
    bm.unset_node_maintenance(node)
    node = bm.get_node(node.id)
    check(not node.is_maintenance and node.maintenance_reason is None, "maintenance unset")

    bm.set_node_boot_device(node, "pxe", persistent=False)
    deadline = time.time() + 60
    while bm.get_node_boot_device(node)["boot_device"] != "pxe":
        check(time.time() < deadline, "boot device never became pxe")
        time.sleep(0.2)

    try:
        bm.set_node_provision_state(node, "adopt")
        check(False, "adopt from available was accepted")
    except exceptions.BadRequestException as e:
        check("adopt" in str(e), f"adopt refusal: {e}")

    for n in names[1:]:
        bm.delete_node(n)
    left = [n.name for n in bm.nodes() if n.name in names]
    check(left == [names[0]], f"after delete: {left}")
    try:
        bm.get_node(names[1])
        check(False, "deleted node still found")
    except exceptions.NotFoundException:
        pass
    print("OK")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
