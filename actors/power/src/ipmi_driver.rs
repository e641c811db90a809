//! The `ipmi` driver: Ironic's `driver_info` keys mapped onto the blocking RMCP+ client in
//! `ipmi`, run on tokio's blocking pool. One `IpmiClient` (one long-lived session) per node,
//! owned by the node's power actor.

use crate::bmc::{Bmc, BmcError, BmcFuture, PowerAction};
use crate::ipmi::{ChassisControl, IpmiClient, IpmiConfig, IpmiError};
use ferric_model::{BootDevice, DriverInfo, PowerState};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Validates the JSON object of a node's `driver_info` (see [`config`]).
pub fn parse_info(info: &Value, timeout: Duration) -> Result<IpmiConfig, String> {
    let info = DriverInfo::from_value(info.clone()).map_err(|e| e.to_string())?;
    config(&info, timeout)
}

/// The client configuration from `ipmi_address`, `ipmi_port`, `ipmi_username`, `ipmi_password`.
pub fn config(info: &DriverInfo, timeout: Duration) -> Result<IpmiConfig, String> {
    let keys = info.ipmi();
    let address = keys
        .address
        .clone()
        .filter(|a| !a.trim().is_empty())
        .ok_or("ipmi_address is required")?;
    if address.contains(char::is_whitespace) || address.contains('/') {
        return Err(format!(
            "ipmi_address {address:?} is not a host name or IP address"
        ));
    }
    let mut cfg = IpmiConfig::new(
        address,
        keys.username.clone().unwrap_or_default(),
        keys.password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default(),
    );
    cfg.port = keys.port.unwrap_or(623);
    cfg.timeout = timeout;
    if cfg.username.len() > 16 {
        return Err("ipmi_username is longer than 16 bytes".into());
    }
    if cfg.password.len() > 20 {
        return Err("ipmi_password is longer than 20 bytes".into());
    }
    Ok(cfg)
}

pub struct IpmiBmc {
    client: Arc<Mutex<IpmiClient>>,
    bmc: String,
}

impl IpmiBmc {
    pub fn new(cfg: IpmiConfig) -> Self {
        let bmc = cfg.bmc();
        IpmiBmc {
            client: Arc::new(Mutex::new(IpmiClient::new(cfg))),
            bmc,
        }
    }

    /// Runs a blocking client call on the blocking pool.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut IpmiClient) -> Result<T, IpmiError> + Send + 'static,
    ) -> BmcFuture<'_, T> {
        let client = self.client.clone();
        let bmc = self.bmc.clone();
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let mut c = client.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut c)
            })
            .await;
            match joined {
                Ok(r) => r.map_err(map_error),
                Err(e) => Err(BmcError::Protocol {
                    bmc,
                    reason: format!("IPMI call aborted: {e}"),
                }),
            }
        })
    }
}

fn map_error(e: IpmiError) -> BmcError {
    let bmc = e.bmc().to_string();
    let reason = e.to_string();
    match e {
        IpmiError::Unreachable { .. } | IpmiError::SessionRefused { .. } => {
            BmcError::Unreachable { bmc, reason }
        }
        IpmiError::Auth { .. } => BmcError::Auth { bmc, reason },
        IpmiError::Refused { .. } => BmcError::Refused { bmc, reason },
        IpmiError::Protocol { .. } => BmcError::Protocol { bmc, reason },
        IpmiError::Config { .. } => BmcError::Config(reason),
    }
}

impl Bmc for IpmiBmc {
    fn driver(&self) -> &'static str {
        "ipmi"
    }

    fn power_state(&mut self) -> BmcFuture<'_, PowerState> {
        let fut = self.run(|c| c.power_is_on());
        Box::pin(async move {
            Ok(if fut.await? {
                PowerState::On
            } else {
                PowerState::Off
            })
        })
    }

    fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()> {
        let control = match action {
            PowerAction::On => ChassisControl::PowerUp,
            PowerAction::ForceOff => ChassisControl::PowerDown,
            PowerAction::GracefulShutdown => ChassisControl::SoftShutdown,
            PowerAction::HardReset => ChassisControl::HardReset,
        };
        self.run(move |c| c.chassis_control(control))
    }

    fn set_boot_device(&mut self, device: BootDevice, persistent: bool) -> BmcFuture<'_, ()> {
        self.run(move |c| c.set_boot_device(device, persistent))
    }

    fn close(&mut self) {
        // Closing sends one packet and waits at most the timeout: do it off the async threads.
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || {
            client.lock().unwrap_or_else(|p| p.into_inner()).close();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ironic_keys_are_validated() {
        let t = Duration::from_secs(1);
        let c = parse_info(&json!({"ipmi_address": "10.1.2.3", "ipmi_port": "6230", "ipmi_username": "admin", "ipmi_password": "pw"}), t).unwrap();
        assert_eq!(
            (c.address.as_str(), c.port, c.username.as_str()),
            ("10.1.2.3", 6230, "admin")
        );
        assert_eq!(
            parse_info(&json!({"ipmi_address": "h"}), t).unwrap().port,
            623
        );
        for (bad, why) in [
            (json!({}), "ipmi_address is required"),
            (json!({"ipmi_address": ""}), "ipmi_address is required"),
            (
                json!({"ipmi_address": "h", "ipmi_port": 70000}),
                "not a port",
            ),
            (json!({"ipmi_address": "h", "ipmi_port": "x"}), "not a port"),
            (
                json!({"ipmi_address": "h", "ipmi_port": true}),
                "must be a number",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_username": 5}),
                "must be a string",
            ),
            (
                json!({"ipmi_address": "h", "ipmi_password": "x".repeat(21)}),
                "20 bytes",
            ),
            (json!({"ipmi_address": "a b"}), "not a host"),
        ] {
            let err = parse_info(&bad, t).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
