//! Power control of one node: the `Bmc` trait and its drivers (`fake-hardware`, `redfish`,
//! `ipmi`), validation of Ironic's `driver_info` keys, the pure power-operation state machine,
//! and the `PowerActor` that runs operations against a node's BMC.

pub mod bmc;
pub mod fake;
pub mod fence;
pub mod ipmi;
pub mod ipmi_driver;
pub mod op;
pub mod power_actor;
pub mod redfish;

pub use bmc::{Bmc, BmcError, BmcSettings, PowerAction};
pub use fence::Fence;
pub use power_actor::{Outcome, PowerActor, PowerArgs, PowerEvent, PowerMsg};

use ferric_model::PowerState;
use serde_json::Value;

/// The driver (hardware type) names this build can serve, as Ironic names them.
pub const DRIVERS: &[&str] = &["fake-hardware", "ipmi", "redfish"];

/// Checks a node's `driver_info` for its driver at enroll time, so that a missing or malformed
/// key is an error then, not at the first power action.
pub fn validate_driver_info(driver: &str, info: &Value) -> Result<(), String> {
    match driver {
        "fake-hardware" => info
            .as_object()
            .map(|_| ())
            .ok_or_else(|| "driver_info must be a JSON object".to_string()),
        "redfish" => redfish::RedfishInfo::parse(info).map(|_| ()),
        "ipmi" => ipmi_driver::parse_info(info, std::time::Duration::from_secs(5)).map(|_| ()),
        other => Err(format!(
            "unknown driver {other:?} (this build serves: {})",
            DRIVERS.join(", ")
        )),
    }
}

/// The BMC of a node, ready for commands (sessions are opened lazily by the drivers).
pub fn connect(
    driver: &str,
    driver_info: &str,
    last_known: Option<PowerState>,
    settings: &BmcSettings,
) -> Result<Box<dyn Bmc>, BmcError> {
    let info: Value = serde_json::from_str(driver_info)
        .map_err(|e| BmcError::Config(format!("driver_info is not JSON: {e}")))?;
    validate_driver_info(driver, &info).map_err(BmcError::Config)?;
    match driver {
        "fake-hardware" => Ok(Box::new(fake::FakeHardware::new(last_known))),
        "redfish" => {
            let info = redfish::RedfishInfo::parse(&info).map_err(BmcError::Config)?;
            Ok(Box::new(redfish::RedfishBmc::new(info, &settings.redfish)?))
        }
        "ipmi" => {
            let cfg = ipmi_driver::parse_info(
                &info,
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
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.ends_with("_key") || k.contains("secret") || k.contains("token")
}
