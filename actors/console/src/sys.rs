//! The one place in this crate with `unsafe`: setting a child's process group and parent-death
//! signal between fork and exec, so that a console process never outlives the conductor that
//! started it (DESIGN invariant 5), even when the conductor is SIGKILLed.
//!
//! PITFALL: Linux delivers the parent-death signal when the *thread* that forked the child
//! exits, not when the process does. tokio's blocking-pool threads exit after 10 s idle, and
//! `block_in_place` can turn a runtime worker into one. Fork only from a thread that lives as
//! long as the process: this crate spawns every console child from one dedicated thread
//! (`spawner.rs`); other callers must do the same or spawn from inside an async task on a
//! runtime that lives as long as the process, never from `spawn_blocking`.
#![allow(unsafe_code)]

use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;

/// Either kind of `Command` (tokio's wraps std's).
pub trait AsStdCommand {
    fn as_std_mut(&mut self) -> &mut std::process::Command;
}

impl AsStdCommand for std::process::Command {
    fn as_std_mut(&mut self) -> &mut std::process::Command {
        self
    }
}

impl AsStdCommand for tokio::process::Command {
    fn as_std_mut(&mut self) -> &mut std::process::Command {
        tokio::process::Command::as_std_mut(self)
    }
}

/// Puts the child in its own process group (so that it can be signalled as a group and a Ctrl-C
/// of the parent's terminal does not reach it) and makes the kernel send it `signal` when the
/// forking thread dies (see the module docs for the thread pitfall).
///
/// Console children use SIGINT. When the conductor dies, the kernel first closes its end of
/// ipmitool's stdin (ipmitool reads EOF, deactivates the SOL payload and exits), then sends the
/// parent-death signal. ipmitool's SIGINT handler closes its RMCP+ session (which frees the
/// payload too) and exits within about a second even if the BMC does not answer; SIGTERM or
/// SIGKILL would cut the clean EOF path short and leave the payload busy for the BMC's session
/// timeout (15 to 30 s on ipmi_sim). The two paths can race inside ipmitool (its handler runs
/// in the middle of the EOF path's deactivate), and then the payload may stay busy until the
/// timeout; that costs nothing to Ferric, whose next owner always runs `sol deactivate` before
/// `sol activate`. Either way the process never outlives the conductor.
/// Other children (etcd, conductors under `ferric dev`) want SIGTERM.
pub fn die_with_parent(cmd: &mut impl AsStdCommand, signal: Signal) {
    let cmd = cmd.as_std_mut();
    cmd.process_group(0);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), which are async-signal-safe; it allocates nothing (the error paths build
    // an io::Error from an errno, no heap) and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Some(signal)).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody would signal us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}
