//! The `Bmc` trait every power driver implements, its errors, and the settings a conductor
//! shares with all its drivers (HTTP clients, timeouts, who it is).

use ferric_model::{BiosSetting, BootDevice, PowerState};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    /// No answer, a closed port, a timeout, a 5xx: worth retrying.
    #[error("BMC {bmc} unreachable: {reason}")]
    Unreachable { bmc: String, reason: String },
    #[error("BMC {bmc} refused the credentials: {reason}")]
    Auth { bmc: String, reason: String },
    /// The BMC answered and said no (e.g. IPMI completion code 0xD5, Redfish 400).
    #[error("BMC {bmc} refused the command: {reason}")]
    Refused { bmc: String, reason: String },
    /// An answer that makes no sense (garbage, wrong schema).
    #[error("BMC {bmc} sent an unexpected answer: {reason}")]
    Protocol { bmc: String, reason: String },
    /// The node's driver_info is unusable.
    #[error("invalid driver_info: {0}")]
    Config(String),
    #[error("driver {0:?} is not enabled on this conductor")]
    UnknownDriver(String),
}

impl BmcError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BmcError::Unreachable { .. })
    }
}

/// The power-changing commands a driver offers (idempotent "ensure" semantics are built on top
/// of them by reading the state first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    ForceOff,
    /// Ask the OS to shut down (ACPI soft off / Redfish GracefulShutdown).
    GracefulShutdown,
    /// Reset without a power-off phase (used when power off is disabled on a node).
    HardReset,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "power on",
            PowerAction::ForceOff => "power off",
            PowerAction::GracefulShutdown => "graceful shutdown",
            PowerAction::HardReset => "hard reset",
        }
    }
}

pub type BmcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BmcError>> + Send + 'a>>;

/// One node's BMC. Implementations own their session (if the protocol has one) and reuse it.
pub trait Bmc: Send {
    fn power_state(&mut self) -> BmcFuture<'_, PowerState>;
    fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()>;
    fn set_boot_device(&mut self, device: BootDevice, persistent: bool) -> BmcFuture<'_, ()>;
    /// The BIOS settings, None when the driver or the machine has none to read (IPMI, the
    /// fake driver, a Redfish system without a `Bios` resource).
    fn bios_settings(&mut self) -> BmcFuture<'_, Option<Vec<BiosSetting>>> {
        Box::pin(async { Ok(None) })
    }
    /// Ends the session, if any (best effort).
    fn close(&mut self) {}
    /// The driver's name, for metrics.
    fn driver(&self) -> &'static str {
        "other"
    }
    /// Whether commands keep [`BmcSettings::min_gap`] between them: a real BMC falls over
    /// when hammered; `fake-hardware` has no machine behind it and, as in Ironic, answers at
    /// once.
    fn paced(&self) -> bool {
        true
    }
}

/// Per-conductor settings shared by every driver instance.
#[derive(Debug)]
pub struct BmcSettings {
    pub conductor: String,
    /// Bound on one BMC command (request and answer).
    pub command_timeout: Duration,
    /// Minimum time between two commands to the same BMC.
    pub min_gap: Duration,
    /// How long a power actor keeps an idle session before closing it.
    pub idle_timeout: Duration,
    pub redfish: crate::redfish::RedfishClients,
}

impl BmcSettings {
    pub fn new(conductor: &str, command_timeout: Duration, min_gap: Duration) -> Self {
        BmcSettings {
            conductor: conductor.to_string(),
            command_timeout,
            min_gap,
            idle_timeout: Duration::from_secs(30),
            redfish: crate::redfish::RedfishClients::new(conductor, command_timeout),
        }
    }

    /// The User-Agent this conductor sends, so that a BMC's log says who commanded it.
    pub fn user_agent(&self) -> String {
        format!("ferric-conductor/{}", self.conductor)
    }
}
