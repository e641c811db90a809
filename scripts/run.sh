#!/usr/bin/env bash
# Runs a whole local Ferric cluster: etcd, conductors and enrolled nodes (ferric dev).
# Extra arguments go to `ferric dev` (e.g. --conductors 5 --nodes 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --release --bin ferric
exec ./target/release/ferric dev "$@"
