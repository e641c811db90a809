#!/usr/bin/env bash
# Installs what Ferric's run and test commands need on a Debian machine (as root), and nothing
# that is already there. Safe to run again.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have etcd || need_apt+=(etcd-server)
have etcdctl || need_apt+=(etcd-client)
have protoc || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || need_apt+=(libprotobuf-dev)
have ipmitool || need_apt+=(ipmitool)
have ipmi_sim || need_apt+=(openipmi)
have ip || need_apt+=(iproute2)
have tc || need_apt+=(iproute2)
# ferric chaos: delayed fsyncs of an etcd member (strace's fault injection).
have strace || need_apt+=(strace)
have ps || need_apt+=(procps)
# `systemd-analyze verify` checks the units in deploy/ (the package, not a running systemd).
have systemd-analyze || need_apt+=(systemd)
have cc || need_apt+=(gcc)
# jemalloc (the binary's allocator) is built from source by its crate with make.
have make || need_apt+=(make)
have python3 || need_apt+=(python3)
# The dashboard's browser tests: Debian's Chromium, driven by playwright-core under Node.
have chromium || need_apt+=(chromium)
have node || need_apt+=(nodejs)
have npm || need_apt+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Debian's etcd-server package may start a system etcd on 2379/2380; Ferric never uses those
# ports (its dev cluster and tests run their own etcd on free ports), so it is left alone.

if ! have cargo; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "error: cargo (Rust 1.85 or newer) is required; install it with rustup" >&2
        exit 1
    fi
fi

# Python tools used by the tests, in a virtualenv of their own (never the system Python).
FERRIC_PYVENV="${FERRIC_PYVENV:-$(pwd)/target/pyvenv}"
export FERRIC_PYVENV
if [ -f tests/python-requirements.txt ]; then
    stamp="$FERRIC_PYVENV/.requirements"
    if ! cmp -s tests/python-requirements.txt "$stamp" 2>/dev/null; then
        echo "installing Python test tools into $FERRIC_PYVENV" >&2
        python3 -m venv "$FERRIC_PYVENV"
        "$FERRIC_PYVENV/bin/pip" install -q --disable-pip-version-check -r tests/python-requirements.txt
        # Ansible collections the file names, taken out of PyPI wheels (see the file).
        "$FERRIC_PYVENV/bin/python" scripts/install-collections.py tests/python-requirements.txt
        cp tests/python-requirements.txt "$stamp"
    fi
fi

# playwright-core for the dashboard's browser tests (tests/dashboard/package.json), in the
# target directory (never global); it drives the Chromium installed above, it downloads none.
FERRIC_NODE_MODULES="${FERRIC_NODE_MODULES:-$(pwd)/target/node/node_modules}"
export FERRIC_NODE_MODULES
if [ -f tests/dashboard/package.json ]; then
    stamp="$FERRIC_NODE_MODULES/.package.json"
    if ! cmp -s tests/dashboard/package.json "$stamp" 2>/dev/null; then
        echo "installing the dashboard tests' Node packages into $FERRIC_NODE_MODULES" >&2
        prefix="$(dirname "$FERRIC_NODE_MODULES")"
        mkdir -p "$prefix"
        cp tests/dashboard/package.json "$prefix/package.json"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$prefix" --no-audit --no-fund --silent
        cp tests/dashboard/package.json "$stamp"
    fi
fi
