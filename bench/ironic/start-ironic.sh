#!/usr/bin/env bash
# Start a real, standalone OpenStack Ironic 39.0.0 for comparisons with Ferric.
#
#   bench/ironic/start-ironic.sh [--port N] [--dir DIR] [--install-only]
#
# One all-in-one `ironic` process (API + conductor, rpc_transport = none),
# sqlite, noauth, fake-hardware with fake interfaces, listening on 127.0.0.1
# only. The venv lives in <repo>/target/ironic-venv and is made on first use.
# The script ends by exec'ing Ironic in the foreground: its pid is Ironic's
# master process, SIGTERM/SIGINT stop it (and its worker) in about 4 s.
# See bench/ironic/README.md.
set -euo pipefail

IRONIC_VERSION=39.0.0
PIP_VERSION=26.3
PORT=6390
DIR=""
INSTALL_ONLY=0

usage() { sed -n '4p' "$0" | sed 's/^# *//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    --port=*) PORT=${1#*=}; shift ;;
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start-ironic: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$PORT" in ''|*[!0-9]*) echo "start-ironic: bad port: $PORT" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV="$REPO/target/ironic-venv"
STAMP="$VENV/.installed-ironic-$IRONIC_VERSION"

log() { echo "start-ironic: $*" >&2; }

# --- venv (idempotent) -------------------------------------------------------
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "ironic $IRONIC_VERSION needs Python >= 3.11; '$PY' is $("$PY" -V 2>&1 || echo missing)"
  exit 1
fi

if [ ! -f "$STAMP" ] || ! cmp -s "$HERE/constraints.txt" "$STAMP"; then
  if [ ! -x "$VENV/bin/pip" ]; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
      # Debian's python3 ships venv/ensurepip separately.
      rm -rf "$VENV"
      log "python3 -m venv failed; installing python3-venv with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null; }
      "$PY" -m venv "$VENV"
    fi
    # Python 3.11's bundled pip (23.2) is slower at this install (cold: about
    # 40 s instead of 34 s from nothing to a running server).
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
  fi
  log "installing ironic==$IRONIC_VERSION into $VENV (20-40 s)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c "$HERE/constraints.txt" "ironic==$IRONIC_VERSION"
  cp "$HERE/constraints.txt" "$STAMP"
fi

# The venv only (scripts/install-deps.sh: the tests start Ironic themselves).
[ "$INSTALL_ONLY" = 1 ] && exit 0

# --- state directory and config ----------------------------------------------
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/ironic-bench.XXXXXX")
else
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
fi

# Refuse a port that is already taken: Ironic's worker would fail to bind and
# the master would respawn it forever instead of exiting.
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  log "127.0.0.1:$PORT is already in use"
  exit 1
fi

cat >"$DIR/ironic.conf" <<EOF
# Written by bench/ironic/start-ironic.sh; every option here differs from
# Ironic $IRONIC_VERSION's default (see bench/ironic/README.md for why).
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
enabled_hardware_types = fake-hardware
enabled_power_interfaces = fake
enabled_management_interfaces = fake
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake
enabled_network_interfaces = noop
enabled_vendor_interfaces = no-vendor
log_file = $DIR/ironic.log

[api]
host_ip = 127.0.0.1
port = $PORT

[database]
connection = sqlite:///$DIR/ironic.sqlite

[dhcp]
dhcp_provider = none
EOF

# --- database schema ---------------------------------------------------------
if [ -f "$DIR/ironic.sqlite" ]; then
  dbsync_cmd=upgrade        # create_schema refuses an existing schema
else
  dbsync_cmd=create_schema
fi
if ! "$VENV/bin/ironic-dbsync" --config-file "$DIR/ironic.conf" "$dbsync_cmd" \
    >"$DIR/dbsync.log" 2>&1; then
  log "ironic-dbsync $dbsync_cmd failed; see $DIR/dbsync.log and $DIR/ironic.log"
  tail -n 20 "$DIR/dbsync.log" >&2
  exit 1
fi

# --- run ---------------------------------------------------------------------
echo "ironic: http://127.0.0.1:$PORT (log $DIR/ironic.log)"
cd "$DIR"
# stderr too: a worker that dies at start-up prints its traceback there, not
# to log_file.
exec "$VENV/bin/ironic" --config-file "$DIR/ironic.conf" >>"$DIR/ironic.log" 2>&1
