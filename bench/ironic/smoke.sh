#!/usr/bin/env bash
# Walk one fake-hardware node through Ironic's lifecycle with curl and print
# each request, its HTTP status and its latency, and how long each state
# change took to show up when polled every 100 ms.
#
#   bench/ironic/smoke.sh [BASE_URL]      (default http://127.0.0.1:6390)
#
# Works against Ironic started by start-ironic.sh and against Ferric's gateway.
# Needs curl and python3. Exits non-zero on the first unexpected answer.
set -euo pipefail

BASE=${1:-http://127.0.0.1:6390}
VER=${IRONIC_API_VERSION:-1.95}
NAME=${NODE_NAME:-smoke-$$}
MAC=${PORT_MAC:-52:54:00:00:00:01}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

ms() { echo $(( $(date +%s%N) / 1000000 )); }

# call EXPECTED_STATUS METHOD PATH [BODY]
call() {
  local want=$1 m=$2 p=$3 b=${4:-} code t
  local args=(-s -o "$OUT" -w '%{http_code} %{time_total}' -X "$m"
              -H "X-OpenStack-Ironic-API-Version: $VER")
  if [ -n "$b" ]; then args+=(-H 'Content-Type: application/json' -d "$b"); fi
  t=$(curl "${args[@]}" "$BASE$p")
  code=${t%% *}; t=${t#* }
  printf '%-3s %6.1f ms  %s %s %s\n' "$code" "$(awk -v t="$t" 'BEGIN { print t * 1000 }')" "$m" "$p" "$b"
  if [ "$code" != "$want" ]; then
    echo "expected $want, got $code: $(cat "$OUT")" >&2
    exit 1
  fi
}

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$OUT" "$1"; }

# wait_for FIELD VALUE: poll the node until FIELD == VALUE and nothing is pending
wait_for() {
  local f=$1 v=$2 t0 cur
  t0=$(ms)
  for _ in $(seq 1 300); do
    curl -s -o "$OUT" -H "X-OpenStack-Ironic-API-Version: $VER" \
      "$BASE/v1/nodes/$NAME?fields=provision_state,target_provision_state,power_state,target_power_state,last_error"
    cur=$(python3 -c '
import json,sys
n=json.load(open(sys.argv[1]))
busy = n.get("target_provision_state") or n.get("target_power_state")
print("%s|%s|%s" % (n.get(sys.argv[2]), "busy" if busy else "idle", n.get("last_error")))' "$OUT" "$f")
    if [ "${cur%%|*}" = "$v" ] && [ "$(echo "$cur" | cut -d'|' -f2)" = idle ]; then
      printf '        %5d ms  -> %s = %s\n' $(( $(ms) - t0 )) "$f" "$v"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $f = $v (last: $cur)" >&2
  exit 1
}

call 200 GET /
echo "        max microversion: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["default_version"]["version"])' "$OUT")"
call 200 GET /v1
call 201 POST /v1/nodes "{\"driver\":\"fake-hardware\",\"name\":\"$NAME\"}"
UUID=$(field uuid)
call 202 PUT "/v1/nodes/$NAME/states/provision" '{"target":"manage"}'
wait_for provision_state manageable
call 202 PUT "/v1/nodes/$NAME/states/provision" '{"target":"provide"}'
wait_for provision_state available
call 202 PUT "/v1/nodes/$NAME/states/power" '{"target":"power on"}'
wait_for power_state "power on"
call 202 PUT "/v1/nodes/$NAME/states/power" '{"target":"power off"}'
wait_for power_state "power off"
call 201 POST /v1/ports "{\"node_uuid\":\"$UUID\",\"address\":\"$MAC\"}"
call 200 GET "/v1/ports?address=$MAC"
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["ports"]))' "$OUT")" = 1 ] ||
  { echo "port not found by address" >&2; exit 1; }
call 202 PUT "/v1/nodes/$NAME/states/provision" '{"target":"active"}'
wait_for provision_state active
call 202 PUT "/v1/nodes/$NAME/states/provision" '{"target":"deleted"}'
wait_for provision_state available
call 200 GET "/v1/nodes/$NAME"
call 200 GET /v1/nodes
call 204 DELETE "/v1/nodes/$NAME"
call 404 GET "/v1/nodes/$NAME"
call 200 GET "/v1/ports?address=$MAC"
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["ports"]))' "$OUT")" = 0 ] ||
  { echo "port outlived its node" >&2; exit 1; }
echo "smoke: ok"
