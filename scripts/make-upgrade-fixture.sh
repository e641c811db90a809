#!/usr/bin/env bash
# Makes tests/fixtures/upgrade-534a6b7.json: the etcd records and API answers of a cluster run by
# the previous release's real binary (commit 534a6b7: node status format 2, no `agent_link`),
# for tests/upgrade.rs. CI does not run this; it is how the committed fixture was made.
#
# Builds that commit's `ferric` (debug) from `git archive` (no worktree is registered in the
# repository), starts a throwaway etcd, two of its conductors and its gateway, builds a cluster
# state through its API (nodes in enroll, manageable, available, active with instance_info and
# instance_uuid, maintenance with a reason, traits/owner/description/extra, an enabled console,
# ports with MACs, power requests: history entries and events), then records every key under the
# prefix that is not bound to a lease (reservations and conductor records die with their
# conductors) with its base64 value, and the old gateway's GET /v1/nodes?detail=True and
# /v1/ports?detail=True at the same moment (read again until the records did not change around
# the answers).
#
# Usage: scripts/make-upgrade-fixture.sh [out.json]
#
# The old tree builds in a target directory of its own (`$CARGO_TARGET_DIR/upgrade-<commit>`):
# cargo names the artifacts of workspace crates by their path relative to the workspace, and
# judges them fresh by mtime, so two trees of this workspace sharing one target directory could
# each link the other's crates.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
commit=534a6b7
out=${1:-$root/tests/fixtures/upgrade-$commit.json}
source scripts/install-deps.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

work=$(mktemp -d /tmp/ferric-upgrade-fixture-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "building ferric at $commit in $work/src" >&2
mkdir -p "$work/src"
git archive "$commit" | tar -x -C "$work/src"
old_target="$CARGO_TARGET_DIR/upgrade-$commit"
(cd "$work/src" && cargo build -q -p ferric --bin ferric --target-dir "$old_target")
cp "$old_target/debug/ferric" "$work/ferric-$commit"
old="$work/ferric-$commit"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(free_port)
pport=$(free_port)
etcd_url="http://127.0.0.1:$cport"
etcd --name=f --data-dir="$work/etcd" --listen-client-urls="$etcd_url" \
    --advertise-client-urls="$etcd_url" --listen-peer-urls="http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls="http://127.0.0.1:$pport" \
    --initial-cluster="f=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$etcd_url" get x >/dev/null 2>&1 && break
    sleep 0.2
done

prefix=/ferric/
for c in old-c1 old-c2; do
    "$old" conductor --etcd "$etcd_url" --prefix "$prefix" --name "$c" --lease-ttl 2 \
        --runtime-dir "$work/run-$c" >"$work/$c.log" 2>&1 &
    pids+=($!)
done
api_port=$(free_port)
"$old" gateway --etcd "$etcd_url" --prefix "$prefix" --listen "127.0.0.1:$api_port" \
    --name old-gw >"$work/gw.log" 2>&1 &
pids+=($!)

python3 - "$api_port" "$etcd_url" "$prefix" "$commit" "$out" <<'EOF'
import base64, json, subprocess, sys, time, urllib.request, urllib.error

port, etcd_url, prefix, commit, out = sys.argv[1:]
base = f"http://127.0.0.1:{port}"

def call(method, path, body=None, version=None, ok=(200, 201, 202, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("X-OpenStack-Ironic-API-Version", version or "latest")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        code, text = e.code, e.read().decode()
    if code not in ok:
        sys.exit(f"{method} {path}: {code} {text}")
    return json.loads(text) if text else None

deadline = time.time() + 60
while True:
    try:
        root = call("GET", "/")
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
max_version = root["default_version"]["version"]
print(f"old gateway serves up to {max_version}", file=sys.stderr)

def wait(node, field, want, secs=60):
    deadline = time.time() + secs
    while True:
        n = call("GET", f"/v1/nodes/{node}")
        if n[field] == want and not n.get("target_provision_state") and not n.get("target_power_state"):
            return n
        if time.time() > deadline:
            sys.exit(f"{node}: {field} is {n[field]!r}, not {want!r}: {json.dumps(n)}")
        time.sleep(0.2)

def create(name, **extra):
    n = call("POST", "/v1/nodes", {"name": name, "driver": "fake-hardware", **extra})
    return n["uuid"]

def verb(node, target, want, **extra):
    call("PUT", f"/v1/nodes/{node}/states/provision", {"target": target, **extra})
    return wait(node, "provision_state", want)

def power(node, target):
    call("PUT", f"/v1/nodes/{node}/states/power", {"target": target})
    return wait(node, "power_state", "power " + target.split()[-1])

# enroll: as created.
create("upg-enroll", properties={"cpus": 8, "memory_mb": 16384})
# manageable, with traits, owner, description, extra.
tagged = create("upg-tagged", owner="tenant-a", description="rack 4, slot 12",
                extra={"asset": "A-1042"}, resource_class="baremetal-large")
verb(tagged, "manage", "manageable")
call("PUT", f"/v1/nodes/{tagged}/traits", {"traits": ["CUSTOM_GPU", "HW_CPU_X86_AVX2"]})
# available, with a port, powered on and off (history entries, events).
avail = create("upg-available")
verb(avail, "manage", "manageable")
verb(avail, "provide", "available")
call("POST", "/v1/ports", {"node_uuid": avail, "address": "52:54:00:aa:00:01"})
power(avail, "power on")
power(avail, "power off")
# active: deployed with instance_info and instance_uuid, two ports, its console enabled.
active = create("upg-active", properties={"cpus": 32, "local_gb": 400})
verb(active, "manage", "manageable")
verb(active, "provide", "available")
call("POST", "/v1/ports", {"node_uuid": active, "address": "52:54:00:aa:00:02",
                           "pxe_enabled": True})
call("POST", "/v1/ports", {"node_uuid": active, "address": "52:54:00:aa:00:03",
                           "pxe_enabled": False, "extra": {"switch": "tor-4"}})
call("PATCH", f"/v1/nodes/{active}", [
    {"op": "add", "path": "/instance_uuid", "value": "8a3f6c1e-5d2b-4c7a-9e10-3b4d5f6a7b8c"},
    {"op": "add", "path": "/instance_info/image_source",
     "value": "http://images.example/ubuntu-24.04.qcow2"},
    {"op": "add", "path": "/instance_info/image_checksum", "value": "sha256:0123abcd"},
    {"op": "add", "path": "/instance_info/root_gb", "value": "40"},
])
verb(active, "active", "active")
call("PUT", f"/v1/nodes/{active}/states/console", {"enabled": True})
deadline = time.time() + 30
while call("GET", f"/v1/nodes/{active}")["console_enabled"] is not True:
    if time.time() > deadline:
        sys.exit("the console of upg-active was not enabled")
    time.sleep(0.2)
# maintenance with a reason, on an available node.
maint = create("upg-maint")
verb(maint, "manage", "manageable")
verb(maint, "provide", "available")
power(maint, "power on")
call("PUT", f"/v1/nodes/{maint}/maintenance", {"reason": "fan 3 replaced, awaiting burn-in"})
# a port of the manageable node, with a physical network.
call("POST", "/v1/ports", {"node_uuid": tagged, "address": "52:54:00:aa:00:04",
                           "physical_network": "physnet1"})

def dump():
    r = subprocess.run(["etcdctl", f"--endpoints={etcd_url}", "get", prefix, "--prefix",
                        "-w", "json"], env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                       check=True, capture_output=True, text=True)
    kvs = json.loads(r.stdout).get("kvs", [])
    keys, leased = [], 0
    for kv in kvs:
        if kv.get("lease"):
            leased += 1
            continue
        key = base64.b64decode(kv["key"]).decode()
        keys.append({"key": key[len(prefix):], "value": kv.get("value", "")})
    return keys, leased

time.sleep(2)
for attempt in range(20):
    before, _ = dump()
    nodes = call("GET", "/v1/nodes?detail=True", version=max_version)
    ports = call("GET", "/v1/ports?detail=True", version=max_version)
    after, leased = dump()
    if before == after:
        break
    time.sleep(1)
else:
    sys.exit("the records kept changing around the API answers")

fixture = {
    "about": "Records of a cluster run by Ferric at commit " + commit
             + " (node status format 2), made by scripts/make-upgrade-fixture.sh; "
             "keys are relative to the prefix, values base64; leased keys "
             "(reservations, conductors) are left out. `api` holds that release's gateway "
             "answers at `api_version` taken while these records were current.",
    "commit": commit,
    "api_version": max_version,
    "leased_keys_left_out": leased,
    "keys": after,
    "api": {"nodes": nodes["nodes"], "ports": ports["ports"]},
}
with open(out, "w") as f:
    json.dump(fixture, f, indent=1, sort_keys=True)
    f.write("\n")
kinds = {}
for kv in after:
    kinds[kv["key"].split("/")[0]] = kinds.get(kv["key"].split("/")[0], 0) + 1
print(f"wrote {out}: {len(after)} keys {kinds}, {len(nodes['nodes'])} nodes, "
      f"{len(ports['ports'])} ports", file=sys.stderr)
EOF
