//! IPMI over LAN (RMCP+, cipher suite 3) client for the `ipmi` driver: configuration, errors, and
//! the blocking session and client types (run them in `spawn_blocking`).
//!
//! Built on ipmi-rs 0.6, whose gaps are closed here:
//! - it never raises the session privilege: `connect` sends Set Session Privilege Level
//!   (administrator) itself, or Chassis Control fails with 0xD4;
//! - it never closes a session, and a BMC allows few (63 on ipmi_sim, fewer on real ones, for
//!   30 to 60 s each): sessions are closed on drop, a session abandoned after an error is closed
//!   from the next one, and `IpmiClient` keeps one session per BMC;
//! - it does not check response sequence numbers, so after a timeout a late answer could be
//!   taken for the next command's: any transport or protocol failure retires the session;
//! - its only timeout is the socket read timeout given to `Rmcp::new`, seen as `WouldBlock`;
//! - it keeps the session ID private: it is read from the connection's `Debug` text (which
//!   redacts the password and keys) so that Close Session can name it;
//! - it panics on some malformed packets and socket send errors: every call into it runs under
//!   `catch_unwind` and a panic becomes `IpmiError::Protocol`;
//! - it silently truncates long user names and maps non-ASCII ones to the anonymous user, and
//!   silently falls back to IPMI v1.5: the configuration is validated first and a v1.5 session
//!   is refused.

use std::fmt;
use std::time::Duration;

mod client;
mod commands;
mod session;

pub use client::IpmiClient;
pub use commands::{
    completion_code_meaning, ChassisControlCmd, ChassisStatus, CloseSession, GetChassisStatus,
    SetInProgress, SetSessionPrivilegeLevel, SetSystemBootOptions,
};
pub use session::IpmiSession;

/// The standard RMCP port.
pub const DEFAULT_PORT: u16 = 623;
/// How long to wait for each answer. Real BMCs answer in about 0.2 s but stall for seconds when
/// busy; a frozen one is declared unreachable after this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// IPMI v2.0 limits (spec 13.17 and 22.28): a user name of 16 ASCII bytes, a password of 20.
const MAX_USERNAME: usize = 16;
const MAX_PASSWORD: usize = 20;

/// Where and how to reach one BMC.
#[derive(Clone, PartialEq, Eq)]
pub struct IpmiConfig {
    /// Host name or IP address (IPv4 or IPv6, without brackets).
    pub address: String,
    pub port: u16,
    pub username: String,
    /// A BMC secret: never logged, never in an error, `******` in `Debug`.
    pub password: String,
    /// How long each request waits for its answer (the socket read timeout): one command to a
    /// dead BMC fails after this, a new session after at most a few times this.
    pub timeout: Duration,
}

impl IpmiConfig {
    /// A configuration with the standard port and default timeout.
    pub fn new(
        address: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        IpmiConfig {
            address: address.into(),
            port: DEFAULT_PORT,
            username: username.into(),
            password: password.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `address:port` (`[v6]:port`), the BMC's name in every error and log line.
    pub fn bmc(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// Refuses what ipmi-rs would silently change: a user name it would truncate or turn into
    /// the anonymous user, a password longer than RMCP+ allows, a zero timeout (which the socket
    /// rejects).
    fn validate(&self) -> Result<(), IpmiError> {
        let bad = |detail: &str| {
            Err(IpmiError::Config {
                bmc: self.bmc(),
                detail: detail.to_string(),
            })
        };
        if self.username.len() > MAX_USERNAME {
            return bad("user name longer than 16 bytes");
        }
        if !self.username.bytes().all(|b| b.is_ascii() && b != 0) {
            return bad("user name must be ASCII without NUL");
        }
        if self.password.len() > MAX_PASSWORD {
            return bad("password longer than 20 bytes");
        }
        if self.timeout.is_zero() {
            return bad("timeout must be above zero");
        }
        Ok(())
    }
}

impl fmt::Debug for IpmiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpmiConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"******")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a BMC command failed. Each names the BMC (`address:port`), never the password. The
/// ipmi-rs errors underneath implement only `Debug`, so they are kept as text in `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpmiError {
    /// No answer in time, nothing listening (ICMP port unreachable), or no route: the BMC may
    /// be down, frozen or cut off. The session, if any, has been retired.
    #[error("IPMI BMC {bmc} unreachable: {detail}")]
    Unreachable { bmc: String, detail: String },
    /// The BMC rejected the user name or password (or the user may not be administrator).
    #[error("IPMI BMC {bmc} rejected the login of user {username:?}: {detail}")]
    Auth {
        bmc: String,
        username: String,
        detail: String,
    },
    /// The BMC would not open a session for reasons other than credentials: no free session
    /// slot, cipher suite 3 disabled.
    #[error("IPMI BMC {bmc} refused to open a session: {detail}")]
    SessionRefused { bmc: String, detail: String },
    /// The BMC answered a command with a non-zero completion code (e.g. 0xD4 privilege, 0xD5
    /// not in the present state). The session stays usable.
    #[error(
        "IPMI BMC {bmc} refused {what}: completion code {completion_code:#04x} ({})",
        completion_code_meaning(*completion_code)
    )]
    Refused {
        bmc: String,
        what: String,
        completion_code: u8,
    },
    /// Garbage, an answer to another command, an IPMI v1.5-only BMC, or a panic inside ipmi-rs.
    /// The session, if any, has been retired.
    #[error("IPMI BMC {bmc}: unexpected answer to {what}: {detail}")]
    Protocol {
        bmc: String,
        what: String,
        detail: String,
    },
    /// The configuration cannot work (bad user name, password too long, zero timeout).
    #[error("IPMI configuration for BMC {bmc} is invalid: {detail}")]
    Config { bmc: String, detail: String },
}

impl IpmiError {
    /// The BMC the error is about, as `address:port`.
    pub fn bmc(&self) -> &str {
        match self {
            IpmiError::Unreachable { bmc, .. }
            | IpmiError::Auth { bmc, .. }
            | IpmiError::SessionRefused { bmc, .. }
            | IpmiError::Refused { bmc, .. }
            | IpmiError::Protocol { bmc, .. }
            | IpmiError::Config { bmc, .. } => bmc,
        }
    }
}

/// Chassis Control actions (the request byte is the spec's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChassisControl {
    /// Hard power off, no OS involvement.
    PowerDown,
    PowerUp,
    /// Off, then on after the BMC's delay. Real BMCs often answer 0xD5 when the machine is
    /// off; ipmi_sim turns it on.
    PowerCycle,
    /// Pulse the reset line; power stays on.
    HardReset,
    /// ACPI soft off ("initiate soft-shutdown via overtemp"): asks the OS to shut down; the
    /// machine turns off later, or never.
    SoftShutdown,
}

impl ChassisControl {
    pub fn code(self) -> u8 {
        match self {
            ChassisControl::PowerDown => 0,
            ChassisControl::PowerUp => 1,
            ChassisControl::PowerCycle => 2,
            ChassisControl::HardReset => 3,
            ChassisControl::SoftShutdown => 5,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ChassisControl::PowerDown => "Chassis Control (power down)",
            ChassisControl::PowerUp => "Chassis Control (power up)",
            ChassisControl::PowerCycle => "Chassis Control (power cycle)",
            ChassisControl::HardReset => "Chassis Control (hard reset)",
            ChassisControl::SoftShutdown => "Chassis Control (soft shutdown)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IpmiConfig {
        IpmiConfig::new("10.1.2.3", "admin", "s3cr3t-pw")
    }

    #[test]
    fn debug_of_config_hides_the_password() {
        let text = format!("{:?} {:#?}", cfg(), cfg());
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(text.contains("******"));
        assert!(text.contains("10.1.2.3") && text.contains("admin"));
    }

    #[test]
    fn bmc_names_address_and_port() {
        assert_eq!(cfg().bmc(), "10.1.2.3:623");
        let mut v6 = cfg();
        v6.address = "fd00::5".into();
        v6.port = 6230;
        assert_eq!(v6.bmc(), "[fd00::5]:6230");
    }

    #[test]
    fn config_that_ipmi_rs_would_silently_alter_is_refused() {
        assert_eq!(cfg().validate(), Ok(()));
        let mut c = cfg();
        c.username = "a-user-name-of-17".into();
        assert!(matches!(c.validate(), Err(IpmiError::Config { .. })));
        c.username = "ädmin".into();
        assert!(matches!(c.validate(), Err(IpmiError::Config { .. })));
        let mut c = cfg();
        c.password = "x".repeat(21);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, IpmiError::Config { .. }));
        assert!(!err.to_string().contains(&c.password));
        c.password = "x".repeat(20);
        assert_eq!(c.validate(), Ok(()));
        c.timeout = Duration::ZERO;
        assert!(matches!(c.validate(), Err(IpmiError::Config { .. })));
    }

    #[test]
    fn errors_read_well() {
        let e = IpmiError::Refused {
            bmc: "10.1.2.3:623".into(),
            what: ChassisControl::PowerCycle.describe().into(),
            completion_code: 0xD5,
        };
        assert_eq!(
            e.to_string(),
            "IPMI BMC 10.1.2.3:623 refused Chassis Control (power cycle): completion code 0xd5 \
             (command not supported in present state)"
        );
        assert_eq!(e.bmc(), "10.1.2.3:623");
    }
}
