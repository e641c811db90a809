#!/usr/bin/env bash
# Builds the Debian package (target/debian/ferric_<version>_<arch>.deb): a release build of the
# binary, the systemd units and the example config (see [package.metadata.deb] in Cargo.toml).
# Installs cargo-deb from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
# The release profile keeps line tables for benchmarks' profiles; the package does not.
cargo deb -p ferric --strip "$@"
ls -1 target/debian/*.deb
