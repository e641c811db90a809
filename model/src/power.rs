//! Power states (observed) and power targets (requested), with Ironic's spelling.

use serde::{Deserialize, Serialize};

/// What the hardware said the last time anyone asked. "Unknown" is `Option::None` at the use
/// site, never `Off`: an unread BMC is not a powered-off machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    On,
    Off,
    Error,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "power on",
            PowerState::Off => "power off",
            PowerState::Error => "error",
        }
    }
}

/// A requested power action (Ironic's `target` of `PUT /v1/nodes/{id}/states/power`).
/// Persisted with postcard by variant index: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerTarget {
    On,
    Off,
    Reboot,
    SoftOff,
    SoftReboot,
}

impl PowerTarget {
    pub const ALL: &'static [PowerTarget] = &[
        PowerTarget::On,
        PowerTarget::Off,
        PowerTarget::Reboot,
        PowerTarget::SoftOff,
        PowerTarget::SoftReboot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerTarget::On => "power on",
            PowerTarget::Off => "power off",
            PowerTarget::Reboot => "rebooting",
            PowerTarget::SoftOff => "soft power off",
            PowerTarget::SoftReboot => "soft rebooting",
        }
    }

    /// Accepts Ironic's API spelling and the short forms `ctl` takes.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "power on" | "on" => PowerTarget::On,
            "power off" | "off" => PowerTarget::Off,
            "rebooting" | "reboot" => PowerTarget::Reboot,
            "soft power off" | "soft-off" => PowerTarget::SoftOff,
            "soft rebooting" | "soft-reboot" => PowerTarget::SoftReboot,
            _ => return None,
        })
    }

    /// Whether the action asks the OS to shut down (and so may wait a long time).
    pub fn is_soft(self) -> bool {
        matches!(self, PowerTarget::SoftOff | PowerTarget::SoftReboot)
    }

    /// The power state the machine is in once the action has completed.
    pub fn final_state(self) -> PowerState {
        match self {
            PowerTarget::Off | PowerTarget::SoftOff => PowerState::Off,
            PowerTarget::On | PowerTarget::Reboot | PowerTarget::SoftReboot => PowerState::On,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_accept_short_forms() {
        for t in PowerTarget::ALL {
            assert_eq!(PowerTarget::parse(t.as_str()), Some(*t));
        }
        assert_eq!(PowerTarget::parse("soft-off"), Some(PowerTarget::SoftOff));
        assert_eq!(PowerTarget::parse("sideways"), None);
        assert_eq!(PowerTarget::SoftReboot.final_state(), PowerState::On);
        assert_eq!(PowerTarget::SoftOff.final_state(), PowerState::Off);
    }
}

/// A boot device, with Ironic's names (`PUT /v1/nodes/{id}/management/boot_device`).
/// Persisted by variant index: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootDevice {
    Pxe,
    Disk,
    Bios,
    Cdrom,
}

impl BootDevice {
    pub const ALL: &'static [BootDevice] = &[
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Bios,
        BootDevice::Cdrom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Bios => "bios",
            BootDevice::Cdrom => "cdrom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        BootDevice::ALL.iter().copied().find(|d| d.as_str() == s)
    }
}
