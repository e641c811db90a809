//! Children of `ferric dev` and the benchmarks (etcd, conductors, gateways, simulators) die with
//! it, even on SIGKILL. The `unsafe` part lives in one place, `ferric_console::sys`.

use std::process::Command;

/// Puts the child in its own process group and makes the kernel send it SIGTERM when this
/// process dies.
pub fn die_with_parent(cmd: &mut Command) {
    ferric_console::die_with_parent(cmd, nix::sys::signal::Signal::SIGTERM);
}
