//! One RMCP+ session to one BMC over ipmi-rs: opening it at administrator privilege, sending
//! commands with their completion codes kept, mapping ipmi-rs failures to `IpmiError`, and
//! closing it.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ipmi_rs::connection::{
    IpmiCommand, IpmiConnection, LogicalUnit, Message, Request, RequestTargetAddress,
};
use ipmi_rs::rmcp::{
    ActivationError, ParseSessionResponseError, RakpMessage2ErrorStatusCode,
    RakpMessage2ParseError, RakpMessage4ErrorStatusCode, RakpMessage4ParseError, Rmcp,
    RmcpIpmiError, RmcpIpmiReceiveError, RmcpIpmiSendError, V1_5ActivationError,
    V2_0ActivationError, V2_0WriteError,
};

use super::commands::{
    self, ChassisControlCmd, CloseSession, GetChassisStatus, SetInProgress,
    SetSessionPrivilegeLevel, SetSystemBootOptions, PRIVILEGE_ADMINISTRATOR,
};
use super::{ChassisControl, IpmiConfig, IpmiError};
use ferric_model::BootDevice;

/// One open RMCP+ session at administrator privilege. Dropping a healthy session closes it on
/// the BMC (one round trip); a session retired after a failure is dropped without a word.
pub struct IpmiSession {
    bmc: String,
    conn: Rmcp,
    /// The managed system's session ID, for Close Session; `None` if it could not be read.
    session_id: Option<u32>,
    timeout: Duration,
    last_used: Instant,
    /// Set after a transport or protocol failure: answers may now be out of step with requests
    /// (ipmi-rs does not check sequence numbers), so nothing more is sent on this session.
    broken: bool,
}

impl fmt::Debug for IpmiSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpmiSession")
            .field("bmc", &self.bmc)
            .field("session_id", &self.session_id)
            .field("broken", &self.broken)
            .finish()
    }
}

impl IpmiSession {
    /// Opens an RMCP+ session (cipher suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) asking
    /// for administrator, then raises the session to administrator, which ipmi-rs never does.
    pub fn connect(cfg: &IpmiConfig) -> Result<Self, IpmiError> {
        cfg.validate()?;
        let bmc = cfg.bmc();
        let mut conn = Rmcp::new((cfg.address.as_str(), cfg.port), cfg.timeout).map_err(|e| {
            IpmiError::Unreachable {
                bmc: bmc.clone(),
                detail: format!("cannot resolve the address: {e}"),
            }
        })?;
        let activated = guarded(|| {
            conn.activate(
                true,
                Some(cfg.username.as_str()),
                Some(cfg.password.as_bytes()),
            )
        });
        match activated {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(activation_error(&bmc, &cfg.username, cfg.timeout, e)),
            Err(panic) => {
                return Err(IpmiError::Protocol {
                    bmc,
                    what: "session setup".into(),
                    detail: format!("ipmi-rs panicked: {panic}"),
                })
            }
        }

        // ipmi-rs keeps the session ID private; its Debug text shows it (with the password and
        // keys redacted). Without it the session still works but cannot be closed.
        let (version, session_id) = parse_session_debug(&format!("{conn:?}"));
        let mut session = IpmiSession {
            bmc,
            conn,
            session_id,
            timeout: cfg.timeout,
            last_used: Instant::now(),
            broken: false,
        };
        if session_id.is_none() {
            tracing::warn!(
                bmc = %session.bmc,
                "cannot read the IPMI session ID from ipmi-rs; the session will not be closed"
            );
        }
        if version != RmcpVersion::V2_0 {
            // ipmi-rs falls back to IPMI v1.5 (MD5 or weaker, maybe no authentication at all)
            // when the BMC does not offer v2.0; Ferric only speaks RMCP+.
            return Err(IpmiError::Protocol {
                bmc: session.bmc.clone(),
                what: "session setup".into(),
                detail: "the BMC does not offer IPMI v2.0 (RMCP+); IPMI v1.5 is not supported"
                    .into(),
            });
        }

        let level = session.exchange(
            "Set Session Privilege Level (administrator)",
            SetSessionPrivilegeLevel(PRIVILEGE_ADMINISTRATOR),
        )?;
        if level != PRIVILEGE_ADMINISTRATOR {
            return Err(IpmiError::Protocol {
                bmc: session.bmc.clone(),
                what: "Set Session Privilege Level (administrator)".into(),
                detail: format!("the session is at privilege level {level}, not 4"),
            });
        }
        tracing::debug!(bmc = %session.bmc, session_id = ?session.session_id, "IPMI session open");
        Ok(session)
    }

    /// Get Chassis Status: is the system's power on?
    pub fn power_is_on(&mut self) -> Result<bool, IpmiError> {
        Ok(self
            .exchange("Get Chassis Status", GetChassisStatus)?
            .power_on)
    }

    pub fn chassis_control(&mut self, c: ChassisControl) -> Result<(), IpmiError> {
        self.exchange(c.describe(), ChassisControlCmd(c))
    }

    /// Sets the boot device for the next boot (or every boot when `persistent`); see
    /// `boot_device_sequence`.
    pub fn set_boot_device(
        &mut self,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), IpmiError> {
        boot_device_sequence(
            &mut |what, cmd| self.exchange(what, cmd),
            device,
            persistent,
        )
    }

    /// Closes the session on the BMC (best effort; also what dropping does).
    pub fn close(self) {
        drop(self)
    }

    /// The managed system's session ID, if ipmi-rs let it be read.
    pub fn session_id(&self) -> Option<u32> {
        self.session_id
    }

    /// Time since the last command was sent (BMCs drop sessions idle for 30 to 60 s).
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    pub(crate) fn last_used(&self) -> Instant {
        self.last_used
    }

    /// True once a failure has retired this session.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Closes another session of ours on this BMC, e.g. one abandoned after a timeout, which
    /// the BMC would otherwise keep until its idle timeout. Needs administrator privilege
    /// (which `connect` set); "no such session" (already gone) is success.
    pub(crate) fn close_other(&mut self, session_id: u32) -> Result<(), IpmiError> {
        match self.exchange(
            "Close Session (earlier session)",
            CloseSession { session_id },
        ) {
            Err(IpmiError::Refused {
                completion_code: commands::CC_SESSION_NOT_FOUND,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Retires the session without closing it (it is out of step, or the BMC is gone) and
    /// returns its ID for a later `close_other`.
    pub(crate) fn abandon(mut self) -> Option<u32> {
        self.broken = true;
        self.session_id
    }

    /// Sends one command and waits for its answer, keeping the raw completion code (ipmi-rs's
    /// `Ipmi::send_recv` would turn it into an enum with no way back to the byte).
    fn exchange<C>(&mut self, what: &str, cmd: C) -> Result<C::Output, IpmiError>
    where
        C: IpmiCommand,
        C::Error: fmt::Debug,
    {
        if self.broken {
            return Err(IpmiError::Unreachable {
                bmc: self.bmc.clone(),
                detail: "the session was retired after an earlier failure".into(),
            });
        }
        let message: Message = cmd.into();
        let (netfn, command) = (message.netfn_raw(), message.cmd());
        let mut request = Request::new(message, RequestTargetAddress::Bmc(LogicalUnit::Zero));
        self.last_used = Instant::now();
        let answer = guarded(|| self.conn.send_recv(&mut request));
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                self.broken = true;
                return Err(command_error(&self.bmc, what, self.timeout, e));
            }
            Err(panic) => {
                self.broken = true;
                return Err(self.protocol(what, format!("ipmi-rs panicked: {panic}")));
            }
        };
        if response.netfn_raw() != netfn | 1 || response.cmd() != command {
            // Most likely a late answer to an earlier request: the session is out of step.
            self.broken = true;
            return Err(self.protocol(
                what,
                format!(
                    "answer to netfn {:#04x} cmd {:#04x}, expected netfn {:#04x} cmd {command:#04x}",
                    response.netfn_raw(),
                    response.cmd(),
                    netfn | 1
                ),
            ));
        }
        if response.cc() != 0 {
            return Err(IpmiError::Refused {
                bmc: self.bmc.clone(),
                what: what.to_string(),
                completion_code: response.cc(),
            });
        }
        C::parse_success_response(response.data()).map_err(|e| {
            self.broken = true;
            self.protocol(
                what,
                format!("cannot parse answer {:02x?}: {e:?}", response.data()),
            )
        })
    }

    fn protocol(&self, what: &str, detail: String) -> IpmiError {
        IpmiError::Protocol {
            bmc: self.bmc.clone(),
            what: what.to_string(),
            detail,
        }
    }
}

impl Drop for IpmiSession {
    fn drop(&mut self) {
        if self.broken {
            return;
        }
        if let Some(session_id) = self.session_id {
            match self.exchange("Close Session", CloseSession { session_id }) {
                Ok(()) => tracing::debug!(bmc = %self.bmc, session_id, "IPMI session closed"),
                Err(e) => {
                    tracing::debug!(
                        bmc = %self.bmc, session_id, error = %e, "IPMI session close failed"
                    )
                }
            }
        }
    }
}

/// The Set System Boot Options sequence IPMI v2.0 28.12/28.13 asks for, over any way of sending
/// one parameter: lock the parameters with "set in progress" where the BMC supports it (clearing
/// a lock left by a client that died half-way), keep the flags past the 60 s timer, mark the boot
/// info unacknowledged so the BIOS reads it, write the boot flags, then commit and unlock.
/// Optional steps a BMC does not support are skipped; after a transport or protocol failure
/// nothing more is sent.
fn boot_device_sequence(
    send: &mut dyn FnMut(&str, SetSystemBootOptions) -> Result<(), IpmiError>,
    device: BootDevice,
    persistent: bool,
) -> Result<(), IpmiError> {
    const LOCK: &str = "Set System Boot Options (set in progress)";
    let refused = |e: &IpmiError| matches!(e, IpmiError::Refused { .. });
    let unsupported = |e: &IpmiError| match e {
        IpmiError::Refused {
            completion_code, ..
        } => commands::is_unsupported(*completion_code),
        _ => false,
    };
    let lock = |send: &mut dyn FnMut(&str, SetSystemBootOptions) -> Result<(), IpmiError>, v| {
        send(LOCK, SetSystemBootOptions::set_in_progress(v))
    };

    let locked = match lock(send, SetInProgress::SetInProgress) {
        Ok(()) => true,
        Err(IpmiError::Refused {
            completion_code: commands::CC_SET_ALREADY_IN_PROGRESS,
            ..
        }) => {
            lock(send, SetInProgress::SetComplete)?;
            lock(send, SetInProgress::SetInProgress)?;
            true
        }
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(e),
    };

    let mut optional = |what: &str, cmd| match send(what, cmd) {
        Err(e) if unsupported(&e) => Ok(()),
        other => other,
    };
    let written = optional(
        "Set System Boot Options (boot flag valid bit clearing)",
        SetSystemBootOptions::valid_bit_clearing(commands::KEEP_BOOT_FLAGS_PAST_60S),
    )
    .and_then(|()| {
        optional(
            "Set System Boot Options (boot info acknowledge)",
            SetSystemBootOptions::boot_info_unacknowledged(),
        )
    })
    .and_then(|()| {
        send(
            "Set System Boot Options (boot flags)",
            SetSystemBootOptions::boot_flags(device, persistent),
        )
    });

    let session_lost = written.as_ref().is_err_and(|e| !refused(e));
    if !locked || session_lost {
        return written;
    }
    if written.is_ok() {
        // Commit write is optional; a BMC without it commits on "set complete".
        match lock(send, SetInProgress::CommitWrite) {
            Err(e) if !refused(&e) => return Err(e),
            _ => {}
        }
    }
    match (written, lock(send, SetInProgress::SetComplete)) {
        (Err(e), _) => Err(e),
        (Ok(()), unlocked) => unlocked,
    }
}

/// Runs a call into ipmi-rs, turning a panic (it unwraps some socket and parse results) into an
/// error. The connection is not used again after a panic (the caller retires it).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RmcpVersion {
    V1_5,
    V2_0,
    Unknown,
}

/// Reads the IPMI version and session ID from the `Debug` text of an active `Rmcp`
/// (`... Active(V2_0(State { ..., session_id: 1234, ... }))`, v1.5: `session_id: Some(1234)`).
fn parse_session_debug(text: &str) -> (RmcpVersion, Option<u32>) {
    let version = if text.contains("V2_0(State") {
        RmcpVersion::V2_0
    } else if text.contains("V1_5(State") {
        RmcpVersion::V1_5
    } else {
        RmcpVersion::Unknown
    };
    let session_id = text.split_once("session_id: ").and_then(|(_, rest)| {
        let rest = rest.strip_prefix("Some(").unwrap_or(rest);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().filter(|&id| id != 0)
    });
    (version, session_id)
}

fn io_error(bmc: &str, stage: &str, timeout: Duration, e: &io::Error) -> IpmiError {
    let detail = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer to {stage} within {timeout:?}")
        }
        io::ErrorKind::ConnectionRefused => {
            format!("nothing listens on that UDP port ({stage}: ICMP port unreachable)")
        }
        _ => format!("{stage}: {e}"),
    };
    IpmiError::Unreachable {
        bmc: bmc.to_string(),
        detail,
    }
}

fn receive_error(bmc: &str, stage: &str, timeout: Duration, e: RmcpIpmiReceiveError) -> IpmiError {
    match e {
        RmcpIpmiReceiveError::Io(e) => io_error(bmc, stage, timeout, &e),
        other => IpmiError::Protocol {
            bmc: bmc.to_string(),
            what: stage.to_string(),
            detail: format!("{other:?}"),
        },
    }
}

/// Maps a failed command exchange on an open session.
fn command_error(bmc: &str, what: &str, timeout: Duration, e: RmcpIpmiError) -> IpmiError {
    match e {
        RmcpIpmiError::Receive(r) => receive_error(bmc, what, timeout, r),
        RmcpIpmiError::Send(RmcpIpmiSendError::V2_0(V2_0WriteError::Io(e))) => {
            io_error(bmc, what, timeout, &e)
        }
        other => IpmiError::Protocol {
            bmc: bmc.to_string(),
            what: what.to_string(),
            detail: format!("{other:?}"),
        },
    }
}

/// Maps a failed session setup: the wire failures to `Unreachable`, the RAKP credential
/// failures to `Auth`, the BMC's refusals to `SessionRefused`, the rest to `Protocol`.
fn activation_error(bmc: &str, username: &str, timeout: Duration, e: ActivationError) -> IpmiError {
    let auth = |detail: &str| IpmiError::Auth {
        bmc: bmc.to_string(),
        username: username.to_string(),
        detail: detail.to_string(),
    };
    let refused = |detail: String| IpmiError::SessionRefused {
        bmc: bmc.to_string(),
        detail,
    };
    let protocol = |stage: &str, detail: String| IpmiError::Protocol {
        bmc: bmc.to_string(),
        what: stage.to_string(),
        detail,
    };
    match e {
        ActivationError::BindSocket(e) => io_error(bmc, "opening a UDP socket", timeout, &e),
        ActivationError::PingSend(e) | ActivationError::PongReceive(e) => {
            io_error(bmc, "the RMCP presence ping", timeout, &e)
        }
        ActivationError::GetChannelAuthenticationCapabilities(ipmi_rs::IpmiError::Connection(
            c,
        )) => command_error(bmc, "Get Channel Authentication Capabilities", timeout, c),
        ActivationError::V1_5(V1_5ActivationError::Io(e)) => {
            io_error(bmc, "IPMI v1.5 session setup", timeout, &e)
        }
        ActivationError::V2_0(e) => rakp_error(bmc, timeout, e, auth, refused, protocol),
        other => protocol("session setup", format!("{other:?}")),
    }
}

fn rakp_error(
    bmc: &str,
    timeout: Duration,
    e: V2_0ActivationError,
    auth: impl Fn(&str) -> IpmiError,
    refused: impl Fn(String) -> IpmiError,
    protocol: impl Fn(&str, String) -> IpmiError,
) -> IpmiError {
    use V2_0ActivationError as A;
    const OPEN: &str = "RMCP+ Open Session";
    match e {
        A::Io(e) => io_error(bmc, "RMCP+ session setup", timeout, &e),
        A::OpenSessionRequestSend(V2_0WriteError::Io(e)) => io_error(bmc, OPEN, timeout, &e),
        A::SendRakpMessage1(V2_0WriteError::Io(e)) => io_error(bmc, "RAKP 1", timeout, &e),
        A::RakpMessage3Send(V2_0WriteError::Io(e)) => io_error(bmc, "RAKP 3", timeout, &e),
        A::OpenSessionResponseReceive(r) => receive_error(bmc, OPEN, timeout, r),
        A::RakpMessage2Receive(r) => receive_error(bmc, "RAKP 1", timeout, r),
        A::RakpMessage4Receive(r) => receive_error(bmc, "RAKP 3", timeout, r),
        A::OpenSessionResponseParse(ParseSessionResponseError::HaveErrorCode(code)) => {
            // The status code type is not exported by ipmi-rs: classify by its name.
            let name = format!("{code:?}");
            match open_session_status(&name) {
                OpenSessionStatus::InvalidRole => auth("the user may not log in as administrator"),
                OpenSessionStatus::NoResources => refused(format!(
                    "no free session slot ({name}); too many open sessions?"
                )),
                OpenSessionStatus::Cipher => refused(format!(
                    "cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) not accepted ({name})"
                )),
                OpenSessionStatus::Other => refused(format!("RMCP+ status {name}")),
            }
        }
        A::RakpMessage2Parse(RakpMessage2ParseError::ErrorStatusCode(code)) => {
            use RakpMessage2ErrorStatusCode as S;
            match code {
                S::UnauthorizedName | S::InvalidNameLength => {
                    auth("unknown user name (RAKP 2: unauthorized name)")
                }
                S::InvalidRole | S::UnauthorizedRoleOrPrivilegeLevelRequested => {
                    auth("the user may not log in as administrator")
                }
                S::InsufficientResourcesToCreateSessionAtRequestedRole => {
                    refused("no free session slot at administrator level".into())
                }
                other => protocol("RAKP 1", format!("RAKP 2 status {other:?}")),
            }
        }
        // The BMC's key exchange code did not match the one computed from our password (BMCs
        // that hide which user names exist answer this way for unknown users too).
        A::ServerAuthenticationFailed => auth("wrong user name or password"),
        A::RakpMessage4Parse(RakpMessage4ParseError::ErrorStatusCode(
            RakpMessage4ErrorStatusCode::InvalidIntegrityCheckValue,
        )) => auth("wrong user name or password (the BMC rejected RAKP 3)"),
        A::RakpMessage4InvalidIntegrityCheckValue => {
            auth("the BMC's RAKP 4 check failed (wrong BMC key?)")
        }
        other => protocol("RMCP+ session setup", format!("{other:?}")),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum OpenSessionStatus {
    InvalidRole,
    NoResources,
    Cipher,
    Other,
}

/// Classifies ipmi-rs's RMCP+ Open Session status (spec table 13-15) from its `Debug` name.
fn open_session_status(name: &str) -> OpenSessionStatus {
    if name.contains("InvalidRole") {
        OpenSessionStatus::InvalidRole
    } else if name.contains("InsufficientResources") {
        OpenSessionStatus::NoResources
    } else if name.contains("Algorithm") || name.contains("CipherSuite") || name.contains("Payload")
    {
        OpenSessionStatus::Cipher
    } else {
        OpenSessionStatus::Other
    }
}

#[cfg(test)]
mod tests;
