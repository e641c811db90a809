//! Ironic's `fake-hardware`: no machine behind it; power echoes the last request.

use crate::bmc::{Bmc, BmcFuture, PowerAction};
use ferric_model::{BootDevice, PowerState};

#[derive(Debug)]
pub struct FakeHardware {
    power: PowerState,
}

impl FakeHardware {
    /// `initial`: what the node's status last said (a fake machine has no memory of its own
    /// across conductors); unknown starts as off.
    pub fn new(initial: Option<PowerState>) -> Self {
        FakeHardware {
            power: match initial {
                Some(PowerState::On) => PowerState::On,
                _ => PowerState::Off,
            },
        }
    }
}

impl Bmc for FakeHardware {
    fn driver(&self) -> &'static str {
        "fake-hardware"
    }

    fn paced(&self) -> bool {
        false
    }

    fn power_state(&mut self) -> BmcFuture<'_, PowerState> {
        let p = self.power;
        Box::pin(async move { Ok(p) })
    }

    fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()> {
        self.power = match action {
            PowerAction::On | PowerAction::HardReset => PowerState::On,
            PowerAction::ForceOff | PowerAction::GracefulShutdown => PowerState::Off,
        };
        Box::pin(async { Ok(()) })
    }

    fn set_boot_device(&mut self, _device: BootDevice, _persistent: bool) -> BmcFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
