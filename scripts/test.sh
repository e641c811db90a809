#!/usr/bin/env bash
# Runs Ferric's whole test suite: formatting, lints, unit tests, and the multi-process
# integration tests against real etcd and the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
# A real OpenStack Ironic (PyPI, pinned) in a venv of its own for tests/bench_compare.rs
# (`ferric bench compare` against it); bench/ironic/README.md.
bench/ironic/start-ironic.sh --install-only

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Unit tests of every crate (fast, in-process).
cargo test --workspace --lib --bins
# Integration tests start etcd and several conductor processes each; one test at a time keeps
# their lease timing honest on a 2-core machine.
cargo test --workspace --test '*' -- --test-threads=1
