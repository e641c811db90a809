//! `IpmiClient`: one long-lived IPMI session per BMC, opened on first use, replaced after a
//! failure or a long idle, and closed on drop, so that a conductor never leaks BMC sessions.

use std::time::{Duration, Instant};

use super::{ChassisControl, IpmiConfig, IpmiError, IpmiSession};
use ferric_model::BootDevice;

/// A session idle for longer than this is replaced before the next command: BMCs expire idle
/// sessions after 30 s (ipmi_sim) to 60 s (the spec's default), and a command sent on an expired
/// session is silently dropped, costing a full timeout.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(20);

/// How many retired sessions to remember for closing from the next session.
const MAX_RETIRED: usize = 8;

/// Retired sessions last used longer ago than this are not closed: the spec's default session
/// timeout is 60 s, so the BMC has most likely dropped them, and a BMC that reuses session IDs
/// could have given the ID to someone else's session (a console, say), which must not be closed.
const RETIRED_CLOSE_WINDOW: Duration = Duration::from_secs(60);

/// Keeps one session per BMC and reconnects only when needed. No command is retried: after an
/// error the caller decides, and the next command opens a fresh session.
#[derive(Debug)]
pub struct IpmiClient {
    cfg: IpmiConfig,
    session: Option<IpmiSession>,
    idle_limit: Duration,
    /// Sessions given up after a failure or a long idle, with when they were last used. The
    /// BMC may still hold them: they are closed from the next session.
    retired: Vec<(u32, Instant)>,
}

impl IpmiClient {
    /// A client that connects on its first command.
    pub fn new(cfg: IpmiConfig) -> Self {
        IpmiClient::with_idle_limit(cfg, DEFAULT_IDLE_LIMIT)
    }

    /// As `new`, with the idle time after which a session is replaced rather than reused (keep
    /// it below the BMC's session timeout).
    pub fn with_idle_limit(cfg: IpmiConfig, idle_limit: Duration) -> Self {
        IpmiClient {
            cfg,
            session: None,
            idle_limit,
            retired: Vec::new(),
        }
    }

    pub fn config(&self) -> &IpmiConfig {
        &self.cfg
    }

    /// The current session's ID on the BMC, if a session is open.
    pub fn session_id(&self) -> Option<u32> {
        self.session.as_ref().and_then(IpmiSession::session_id)
    }

    pub fn power_is_on(&mut self) -> Result<bool, IpmiError> {
        self.with_session(IpmiSession::power_is_on)
    }

    pub fn chassis_control(&mut self, c: ChassisControl) -> Result<(), IpmiError> {
        self.with_session(|s| s.chassis_control(c))
    }

    pub fn set_boot_device(
        &mut self,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), IpmiError> {
        self.with_session(|s| s.set_boot_device(device, persistent))
    }

    /// Closes the session on the BMC, if one is open (the next command opens a new one).
    pub fn close(&mut self) {
        if let Some(s) = self.session.take() {
            s.close();
        }
    }

    fn with_session<T>(
        &mut self,
        op: impl FnOnce(&mut IpmiSession) -> Result<T, IpmiError>,
    ) -> Result<T, IpmiError> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.idle_for() > self.idle_limit)
        {
            // The BMC may have expired it already, and a command on an expired session costs a
            // full timeout: replace it, and close it (if still there) from the new session.
            self.retire();
        }
        let session = match self.session.take() {
            Some(s) => s,
            None => {
                let mut s = IpmiSession::connect(&self.cfg)?;
                self.close_retired(&mut s);
                s
            }
        };
        let session = self.session.insert(session);
        let result = op(session);
        if session.is_broken() {
            self.retire();
        }
        result
    }

    fn retire(&mut self) {
        if let Some(s) = self.session.take() {
            let last_used = s.last_used();
            if let Some(id) = s.abandon() {
                if self.retired.len() == MAX_RETIRED {
                    self.retired.remove(0);
                }
                self.retired.push((id, last_used));
            }
        }
    }

    /// Closes recently retired sessions from a fresh one (an administrator may close others'
    /// sessions); "no such session" counts as closed.
    fn close_retired(&mut self, s: &mut IpmiSession) {
        for (id, last_used) in self.retired.drain(..) {
            if last_used.elapsed() >= RETIRED_CLOSE_WINDOW {
                continue;
            }
            if let Err(e) = s.close_other(id) {
                tracing::debug!(
                    bmc = %self.cfg.bmc(), session_id = id, error = %e,
                    "could not close a retired IPMI session"
                );
            }
            if s.is_broken() {
                break;
            }
        }
    }
}

impl Drop for IpmiClient {
    fn drop(&mut self) {
        self.close();
    }
}
