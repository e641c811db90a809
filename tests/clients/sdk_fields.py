"""Node traits, validation and reservation through openstacksdk, as Nova-side tools and
Ansible's openstack.cloud collection use them. Exits non-zero with a message on the first thing
that is not as Ironic would have it.

Usage: sdk_fields.py ENDPOINT PREFIX
"""

import sys

import openstack
from openstack import exceptions


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}")
        sys.exit(1)


def main():
    endpoint, prefix = sys.argv[1], sys.argv[2]
    conn = openstack.connect(auth_type="none", baremetal_endpoint_override=endpoint)
    bm = conn.baremetal

    node = bm.create_node(
        driver="fake-hardware", name=f"{prefix}-0", deploy_interface="direct"
    )
    check(node.deploy_interface == "direct", f"deploy_interface {node.deploy_interface}")
    check(node.boot_interface == "fake", f"default boot_interface {node.boot_interface}")

    # Traits: replace them all, read them back (sorted), and in the node body.
    bm.set_node_traits(node, ["CUSTOM_GOLD", "HW_CPU_X86_AVX2", "CUSTOM_GOLD"])
    got = bm.get_node(node.id)
    check(sorted(got.traits) == ["CUSTOM_GOLD", "HW_CPU_X86_AVX2"], f"traits {got.traits}")
    bm.add_node_trait(node, "CUSTOM_SILVER")
    bm.remove_node_trait(node, "CUSTOM_GOLD")
    got = bm.get_node(node.id)
    check(sorted(got.traits) == ["CUSTOM_SILVER", "HW_CPU_X86_AVX2"], f"traits {got.traits}")
    try:
        bm.set_node_traits(node, ["not a trait"])
        check(False, "an invalid trait was accepted")
    except exceptions.BadRequestException as e:
        check("not valid" in str(e), f"invalid trait error: {e}")
    listed = [n for n in bm.nodes(fields=["uuid", "name", "traits"]) if n.id == node.id]
    check(len(listed) == 1 and sorted(listed[0].traits) == ["CUSTOM_SILVER", "HW_CPU_X86_AVX2"],
          f"list with fields=traits: {listed}")

    # Validation: the direct deploy interface needs instance_info.image_source.
    try:
        bm.validate_node(node, required=("boot", "deploy", "power"))
        check(False, "validate passed without image_source")
    except exceptions.ValidationException as e:
        check("image_source" in str(e), f"validate error: {e}")
    node = bm.update_node(node.id, instance_info={"image_source": "http://images/x.qcow2"})
    result = bm.validate_node(node, required=("boot", "deploy", "power"))
    for iface in ("boot", "deploy", "power", "network", "storage", "console", "management"):
        check(result[iface].result is True, f"{iface}: {result[iface]}")

    # Reservation: null again once manage is done (register_machine's wait).
    bm.set_node_provision_state(node, "manage", wait=True, timeout=120)
    bm.wait_for_node_reservation(node, timeout=60)
    got = bm.get_node(node.id)
    check(got.reservation is None, f"reservation {got.reservation}")
    check(got.provision_state == "manageable", f"state {got.provision_state}")

    bm.delete_node(node)
    print("OK")


if __name__ == "__main__":
    main()
