//! Power control of one node: the `Bmc` trait and its drivers (`fake-hardware`, `redfish`,
//! `ipmi`), validation of Ironic's `driver_info` keys, the pure power-operation state machine,
//! and the `PowerActor` that runs operations against a node's BMC.

pub mod bmc;
pub mod fake;
pub mod fence;
pub mod ipmi;
pub mod ipmi_driver;
pub mod metrics;
pub mod op;
pub mod power_actor;
pub mod redfish;

pub use bmc::{Bmc, BmcError, BmcSettings, PowerAction};
pub use fence::Fence;
pub use power_actor::{Outcome, PowerActor, PowerArgs, PowerEvent, PowerMsg};

use ferric_model::{DriverInfo, PowerState};
use serde_json::Value;

/// The driver (hardware type) names this build can serve, as Ironic names them.
pub const DRIVERS: &[&str] = &["fake-hardware", "ipmi", "redfish"];

/// Checks a node's `driver_info` for its driver at enroll time, so that a missing or malformed
/// key is an error then, not at the first power action.
pub fn validate_driver_info(driver: &str, info: &Value) -> Result<(), String> {
    let info = DriverInfo::from_value(info.clone()).map_err(|e| e.to_string())?;
    validate(driver, &info)
}

/// Checks that `info` has what `driver` needs to reach the BMC.
pub fn validate(driver: &str, info: &DriverInfo) -> Result<(), String> {
    match driver {
        "fake-hardware" => Ok(()),
        "redfish" => redfish::RedfishInfo::from_driver_info(info).map(|_| ()),
        "ipmi" => ipmi_driver::config(info, std::time::Duration::from_secs(5)).map(|_| ()),
        other => Err(format!(
            "unknown driver {other:?} (this build serves: {})",
            DRIVERS.join(", ")
        )),
    }
}

/// The BMC of a node, ready for commands (sessions are opened lazily by the drivers).
/// `driver_info` is the spec's JSON object text.
pub fn connect(
    driver: &str,
    driver_info: &str,
    last_known: Option<PowerState>,
    settings: &BmcSettings,
) -> Result<Box<dyn Bmc>, BmcError> {
    let info = DriverInfo::parse(driver_info).map_err(|e| BmcError::Config(e.to_string()))?;
    connect_info(driver, &info, last_known, settings)
}

/// [`connect`] with the node's parsed `driver_info`.
pub fn connect_info(
    driver: &str,
    info: &DriverInfo,
    last_known: Option<PowerState>,
    settings: &BmcSettings,
) -> Result<Box<dyn Bmc>, BmcError> {
    match driver {
        "fake-hardware" => Ok(Box::new(fake::FakeHardware::new(last_known))),
        "redfish" => {
            let info = redfish::RedfishInfo::from_driver_info(info).map_err(BmcError::Config)?;
            Ok(Box::new(redfish::RedfishBmc::new(info, &settings.redfish)?))
        }
        "ipmi" => {
            let cfg = ipmi_driver::config(
                info,
                settings
                    .command_timeout
                    .min(std::time::Duration::from_secs(5)),
            )
            .map_err(BmcError::Config)?;
            Ok(Box::new(ipmi_driver::IpmiBmc::new(cfg)))
        }
        other => Err(BmcError::UnknownDriver(other.to_string())),
    }
}

/// Keys of `driver_info` whose values are secrets: never returned by the API, never logged.
pub use ferric_model::driver_info::is_secret_key;
