"""The openstacksdk calls Nova's ironic driver makes (openstack/nova
nova/virt/ironic/driver.py), in its order, for a spawn, a reboot and a destroy of an instance
with two networks, and for the cleanup after a failed spawn. Exits non-zero with a message on the
first thing Nova would not accept. Prints "OK" and a JSON line of what the Rust test checks in
etcd.

Usage: nova_flow.py ENDPOINT NODE_UUID spawn|destroy
"""

import json
import sys
import time
import uuid

import openstack
from openstack import exceptions

# nova/virt/ironic/driver.py _NODE_FIELDS
NODE_FIELDS = ("uuid", "power_state", "target_power_state", "provision_state",
               "target_provision_state", "last_error", "maintenance", "properties",
               "instance_uuid", "traits", "resource_class", "owner", "lessee")


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}")
        sys.exit(1)


def wait(bm, node_id, done, what, limit=120):
    """Nova's _wait_for_active / _wait_for_power_state: poll get_node until `done`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        node = bm.get_node(node_id, fields=NODE_FIELDS)
        if done(node):
            return node
        check(not (node.provision_state or "").endswith("failed"),
              f"{what}: node went to {node.provision_state}: {node.last_error}")
        time.sleep(0.5)
    check(False, f"{what}: not reached in {limit} s")


def main():
    endpoint, node_id, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = openstack.connect(auth_type="none", baremetal_endpoint_override=endpoint)
    bm = conn.baremetal
    if phase == "spawn":
        spawn(bm, node_id)
    else:
        destroy(bm, node_id)
    print("OK")


def spawn(bm, node_id):
    instance = str(uuid.uuid4())
    vifs = [str(uuid.uuid4()), str(uuid.uuid4())]

    # The resource tracker's view: the list Nova makes with its fields.
    listed = [n for n in bm.nodes(fields=NODE_FIELDS, associated=False) if n.id == node_id]
    check(len(listed) == 1, f"the node is not in the unassociated list: {listed}")
    check(listed[0].traits is not None, "traits missing from the list")

    # prepare_for_spawn: claim the node (no retry on conflict, as Nova).
    bm.patch_node(node_id, [{"op": "add", "path": "/instance_uuid", "value": instance}],
                  retry_on_conflict=False)
    # spawn: _add_instance_info_to_node.
    bm.patch_node(node_id, [
        {"op": "add", "path": "/instance_info/image_source", "value": "http://img/x.qcow2"},
        {"op": "add", "path": "/instance_info/root_gb", "value": "10"},
        {"op": "add", "path": "/instance_info/swap_mb", "value": "0"},
        {"op": "add", "path": "/instance_info/display_name", "value": "vm-1"},
        {"op": "add", "path": "/instance_info/vcpus", "value": "2"},
        {"op": "add", "path": "/instance_info/memory_mb", "value": "2048"},
        {"op": "add", "path": "/instance_info/local_gb", "value": "10"},
    ])
    # _plug_vifs: one attach per network, no retry on conflict; a 409 means "already attached".
    for vif in vifs:
        bm.attach_vif_to_node(node_id, vif, retry_on_conflict=False)
    # A re-plug (Nova plugs again after a compute restart) must not fail.
    bm.attach_vif_to_node(node_id, vifs[0], retry_on_conflict=False)
    check(sorted(bm.list_node_vifs(node_id)) == sorted(vifs),
          f"VIFs {bm.list_node_vifs(node_id)}")
    # validate: deploy, power and storage must pass.
    result = bm.validate_node(node_id, required=None)
    for iface in ("deploy", "power", "storage"):
        check(result[iface].result is True, f"validate {iface}: {result[iface]}")
    # _generate_configdrive, then deploy with it (a gzipped, base64 string in Nova).
    bm.set_node_provision_state(node_id, "active", config_drive="H4sIAAAAAAAAAwMAAAAAAAAAAAA=")
    node = wait(bm, node_id,
                lambda n: n.provision_state == "active" and n.target_provision_state is None,
                "spawn")
    check(node.instance_id == instance, f"instance_uuid {node.instance_id}")

    # reboot: hard, then wait for the target to clear.
    bm.set_node_power_state(node_id, "rebooting")
    node = wait(bm, node_id,
                lambda n: n.target_power_state is None and n.power_state == "power on",
                "reboot")
    print(json.dumps({"instance": instance, "vifs": sorted(vifs)}))


def destroy(bm, node_id):
    # destroy: _cleanup_deploy lists volume targets (a 404 would raise), unplugs the VIFs,
    # tears down, waits, then removes the instance's fields.
    targets = list(bm.volume_targets(details=True, node=node_id))
    check(targets == [], f"volume targets {targets}")
    for vif in bm.list_node_vifs(node_id):
        bm.detach_vif_from_node(node_id, vif)
    check(bm.list_node_vifs(node_id) == [], "VIFs left after unplug")
    bm.set_node_provision_state(node_id, "deleted")
    node = wait(bm, node_id,
                lambda n: n.provision_state == "available" and n.target_provision_state is None,
                "destroy")
    check(node.instance_id is None, f"tear down left instance_uuid {node.instance_id}")
    full = bm.get_node(node_id)
    check(not full.instance_info, f"tear down left instance_info {full.instance_info}")
    # Nova's _remove_instance_info_from_node after tear down finds nothing to remove: Ironic
    # answers 400 for a remove of an absent path, which Nova logs and ignores.
    try:
        bm.patch_node(node_id, [{"op": "remove", "path": "/instance_uuid"}])
    except exceptions.BadRequestException:
        pass

    # A failed spawn's cleanup on a node never deployed: the same calls, nothing to undo.
    check(list(bm.volume_targets(details=True, node=node_id)) == [], "targets")
    check(bm.list_node_vifs(node_id) == [], "vifs")


if __name__ == "__main__":
    main()
