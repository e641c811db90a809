//! The one place with `unsafe`: setting the parent-death signal of a child process between fork
//! and exec, so that children of `ferric dev` (etcd, conductors) die with it even on SIGKILL.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Puts the child in its own process group and makes the kernel send it SIGTERM when this
/// process dies.
pub fn die_with_parent(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM))
                .map_err(std::io::Error::from)
        });
    }
}
