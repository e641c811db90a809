//! What every console actor of one conductor shares: settings (with their defaults in one
//! place), the registry the console server reads, and the server's address (for records).

use crate::hub::HubLimits;
use crate::registry::ConsoleRegistry;
use std::path::PathBuf;
use std::time::Duration;

/// Console settings of one conductor. `ConsoleSettings::new` holds the defaults.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// This conductor's name (in records and in the viewers' `hello`).
    pub conductor: String,
    /// Pid files go to `<runtime_dir>/consoles/<uuid>.pid`. Must be private to this conductor
    /// (two conductors sharing one would sweep each other's consoles).
    pub runtime_dir: PathBuf,
    /// The `ipmitool` program (default: `ipmitool` on PATH).
    pub ipmitool: PathBuf,
    /// `stdbuf` (coreutils), run as `stdbuf -oL ipmitool ...` so that ipmitool's
    /// "[SOL Session operational" line reaches us when it is printed: with a pipe for stdout,
    /// stdio would hold it until the machine's first output. Default: found on PATH. Without
    /// it, a session counts as active once ipmitool has run `settle` without failing.
    pub stdbuf: Option<PathBuf>,
    /// See `stdbuf` (default 3 s).
    pub settle: Duration,
    /// Output kept per console and replayed to new viewers (default 64 KiB).
    pub replay_bytes: usize,
    /// A viewer that sends no data frame for this long is disconnected (default 10 min).
    pub idle_timeout: Duration,
    /// Events queued per viewer before it is disconnected as too slow (default 256).
    pub viewer_queue: usize,
    /// Viewers per console (default 32).
    pub max_viewers: usize,
    /// Stop: after closing ipmitool's stdin, wait this long before SIGINT, and as long again
    /// before SIGKILL (default 2 s).
    pub stop_grace: Duration,
    /// Bound on opening a session (`sol deactivate`, then `sol activate` until operational;
    /// websocket connect) (default 20 s).
    pub open_timeout: Duration,
    /// Reconnect backoff: first delay, doubling up to the cap (default 1 s .. 30 s). A session
    /// that stayed active for at least the cap starts again from the first delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ConsoleSettings {
    pub fn new(conductor: &str, runtime_dir: impl Into<PathBuf>) -> Self {
        ConsoleSettings {
            conductor: conductor.to_string(),
            runtime_dir: runtime_dir.into(),
            ipmitool: PathBuf::from("ipmitool"),
            stdbuf: find_in_path("stdbuf"),
            settle: Duration::from_secs(3),
            replay_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(600),
            viewer_queue: 256,
            max_viewers: 32,
            stop_grace: Duration::from_secs(2),
            open_timeout: Duration::from_secs(20),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }

    pub fn hub_limits(&self) -> HubLimits {
        HubLimits {
            replay_bytes: self.replay_bytes,
            viewer_queue: self.viewer_queue,
            max_viewers: self.max_viewers,
        }
    }
}

/// The first executable `name` in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Shared by the console server and every console actor of a conductor.
#[derive(Debug)]
pub struct ConsoleContext {
    pub settings: ConsoleSettings,
    pub registry: ConsoleRegistry,
    /// Where this conductor's console server listens (`host:port`), written into console
    /// records; empty when no server runs (tests of the actor alone).
    pub address: String,
}

impl ConsoleContext {
    /// A context without a server (the server's `ConsoleService::start` makes the real one).
    pub fn new(settings: ConsoleSettings) -> Self {
        ConsoleContext {
            settings,
            registry: ConsoleRegistry::new(),
            address: String::new(),
        }
    }
}
