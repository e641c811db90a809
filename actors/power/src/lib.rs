//! Power control of one node: the driver a node actor uses to read and change the power of its
//! machine. This build has the in-process `fake-hardware` driver (Ironic's name), whose
//! "hardware" echoes the requested state; the IPMI and Redfish drivers plug in beside it.

use ferric_model::{PowerState, PowerTarget};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    #[error("driver {0:?} is not enabled on this conductor")]
    UnknownDriver(String),
    #[error("BMC command refused: {0}")]
    Refused(String),
}

/// The driver names this build can serve.
pub const DRIVERS: &[&str] = &["fake-hardware"];

/// One node's power driver.
#[derive(Debug)]
pub enum Driver {
    Fake(FakeHardware),
}

impl Driver {
    pub fn for_node(driver: &str) -> Result<Self, BmcError> {
        match driver {
            "fake-hardware" => Ok(Driver::Fake(FakeHardware::default())),
            other => Err(BmcError::UnknownDriver(other.to_string())),
        }
    }

    pub async fn power_state(&mut self) -> Result<PowerState, BmcError> {
        match self {
            Driver::Fake(f) => Ok(f.power),
        }
    }

    /// Drives the machine to the target's final state and returns the state it reports after.
    pub async fn set_power(&mut self, target: PowerTarget) -> Result<PowerState, BmcError> {
        match self {
            Driver::Fake(f) => {
                f.power = target.final_state();
                Ok(f.power)
            }
        }
    }
}

/// Ironic's `fake-hardware`: no machine, instant answers, power echoes the last request.
#[derive(Debug)]
pub struct FakeHardware {
    power: PowerState,
}

impl Default for FakeHardware {
    fn default() -> Self {
        FakeHardware {
            power: PowerState::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_hardware_echoes_the_request() {
        let mut d = Driver::for_node("fake-hardware").unwrap();
        assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
        assert_eq!(
            d.set_power(PowerTarget::Reboot).await.unwrap(),
            PowerState::On
        );
        assert_eq!(d.power_state().await.unwrap(), PowerState::On);
        assert_eq!(
            d.set_power(PowerTarget::SoftOff).await.unwrap(),
            PowerState::Off
        );
        assert!(matches!(
            Driver::for_node("ipmi-ish"),
            Err(BmcError::UnknownDriver(_))
        ));
    }
}
