//! The IPMI commands Ferric sends that ipmi-rs lacks, as `IpmiCommand` impls: their request bytes
//! and the parsing of their answers (IPMI v2.0 spec sections noted on each), with no I/O.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

use super::ChassisControl;
use ferric_model::BootDevice;

/// Privilege level byte of "Administrator" (spec table 6-1); every power command needs it.
pub const PRIVILEGE_ADMINISTRATOR: u8 = 0x04;

/// Get Chassis Status (NetFn Chassis, cmd 0x01; spec 28.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChassisStatus;

/// The parts of a Get Chassis Status answer Ferric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// Byte 1 bit 0: "system power is on".
    pub power_on: bool,
    /// Byte 1 as sent (power fault, overload, interlock, restore policy bits).
    pub current_power_state: u8,
    /// Byte 2 as sent (what caused the last power event).
    pub last_power_event: u8,
}

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Self {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<ChassisStatus, NotEnoughData> {
        // Bytes 1..=3 are mandatory, byte 4 (front panel) is optional: accept 3 or more.
        match data {
            [current, last_event, _misc, ..] => Ok(ChassisStatus {
                power_on: current & 0x01 != 0,
                current_power_state: *current,
                last_power_event: *last_event,
            }),
            _ => Err(NotEnoughData),
        }
    }
}

/// Chassis Control (NetFn Chassis, cmd 0x02; spec 28.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisControlCmd(pub ChassisControl);

impl From<ChassisControlCmd> for Message {
    fn from(c: ChassisControlCmd) -> Self {
        Message::new_request(NetFn::Chassis, 0x02, vec![c.0.code()])
    }
}

impl IpmiCommand for ChassisControlCmd {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(_: &[u8]) -> Result<(), NotEnoughData> {
        Ok(())
    }
}

/// Values of boot option parameter 0, "set in progress" (spec 28.13, data byte 1 bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetInProgress {
    SetComplete = 0,
    SetInProgress = 1,
    CommitWrite = 2,
}

/// Set System Boot Options (NetFn Chassis, cmd 0x08; spec 28.12): one parameter per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSystemBootOptions {
    /// Parameter selector (bits 6:0); bit 7 would mark the parameter invalid, Ferric never sets it.
    pub parameter: u8,
    pub data: Vec<u8>,
}

/// Parameter 3 bit 3: do not clear the boot flags when no Chassis Control arrives within 60 s.
/// Without it a BMC forgets the boot device if the power on comes more than a minute after it
/// (Ironic sends the same byte for the same reason).
pub const KEEP_BOOT_FLAGS_PAST_60S: u8 = 0x08;

impl SetSystemBootOptions {
    pub const SET_IN_PROGRESS: u8 = 0;
    pub const VALID_BIT_CLEARING: u8 = 3;
    pub const BOOT_INFO_ACK: u8 = 4;
    pub const BOOT_FLAGS: u8 = 5;

    pub fn set_in_progress(v: SetInProgress) -> Self {
        SetSystemBootOptions {
            parameter: Self::SET_IN_PROGRESS,
            data: vec![v as u8],
        }
    }

    pub fn valid_bit_clearing(flags: u8) -> Self {
        SetSystemBootOptions {
            parameter: Self::VALID_BIT_CLEARING,
            data: vec![flags],
        }
    }

    /// Marks the boot info "not yet acknowledged by BIOS/POST" (write mask bit 0, data bit 0 set),
    /// so that the BIOS reads the new boot flags on the next boot.
    pub fn boot_info_unacknowledged() -> Self {
        SetSystemBootOptions {
            parameter: Self::BOOT_INFO_ACK,
            data: vec![0x01, 0x01],
        }
    }

    /// Parameter 5, boot flags: byte 1 bit 7 "valid", bit 6 "persistent" (all future boots),
    /// bit 5 left 0 (legacy, not EFI); byte 2 bits 5:2 the device selector; bytes 3 to 5 zero
    /// (no BIOS verbosity, console redirection or instance overrides).
    pub fn boot_flags(device: BootDevice, persistent: bool) -> Self {
        let mut flags = 0x80;
        if persistent {
            flags |= 0x40;
        }
        SetSystemBootOptions {
            parameter: Self::BOOT_FLAGS,
            data: vec![flags, boot_device_selector(device) << 2, 0, 0, 0],
        }
    }
}

/// The boot device selector of parameter 5 byte 2 bits 5:2 (spec table 28-14).
pub fn boot_device_selector(device: BootDevice) -> u8 {
    match device {
        BootDevice::Pxe => 0x1,
        // "Force boot from default hard-drive".
        BootDevice::Disk => 0x2,
        // "Force boot into BIOS setup".
        BootDevice::Bios => 0x6,
        // "Force boot from default CD/DVD".
        BootDevice::Cdrom => 0x5,
    }
}

impl From<SetSystemBootOptions> for Message {
    fn from(c: SetSystemBootOptions) -> Self {
        let mut data = Vec::with_capacity(1 + c.data.len());
        data.push(c.parameter & 0x7f);
        data.extend_from_slice(&c.data);
        Message::new_request(NetFn::Chassis, 0x08, data)
    }
}

impl IpmiCommand for SetSystemBootOptions {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(_: &[u8]) -> Result<(), NotEnoughData> {
        Ok(())
    }
}

/// Set Session Privilege Level (NetFn App, cmd 0x3B; spec 22.18). An RMCP+ session starts at
/// User level whatever maximum was negotiated; ipmi-rs never raises it, and Chassis Control
/// needs Operator or more (0xD4 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSessionPrivilegeLevel(pub u8);

impl From<SetSessionPrivilegeLevel> for Message {
    fn from(c: SetSessionPrivilegeLevel) -> Self {
        Message::new_request(NetFn::App, 0x3B, vec![c.0 & 0x0f])
    }
}

impl IpmiCommand for SetSessionPrivilegeLevel {
    /// The privilege level now in effect (answer byte 1 bits 3:0).
    type Output = u8;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<u8, NotEnoughData> {
        data.first().map(|b| b & 0x0f).ok_or(NotEnoughData)
    }
}

/// Close Session (NetFn App, cmd 0x3C; spec 22.19) by managed-system session ID. ipmi-rs never
/// sends it. Closing one's own ID ends the session; an administrator may close others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSession {
    pub session_id: u32,
}

impl From<CloseSession> for Message {
    fn from(c: CloseSession) -> Self {
        Message::new_request(NetFn::App, 0x3C, c.session_id.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for CloseSession {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(_: &[u8]) -> Result<(), NotEnoughData> {
        Ok(())
    }
}

/// Close Session completion code: "invalid session ID in request" (already gone).
pub const CC_SESSION_NOT_FOUND: u8 = 0x87;
/// Set System Boot Options completion code: "parameter not supported".
pub const CC_PARAMETER_NOT_SUPPORTED: u8 = 0x80;
/// Set System Boot Options completion code: "set in progress" was not in "set complete" state.
pub const CC_SET_ALREADY_IN_PROGRESS: u8 = 0x81;

/// True when a completion code says "this BMC does not do that" rather than "that failed": the
/// optional boot option parameters are skipped on such BMCs. ipmi_sim answers 0xCC for
/// parameters it lacks; others answer 0x80 or 0xC1.
pub fn is_unsupported(completion_code: u8) -> bool {
    matches!(completion_code, CC_PARAMETER_NOT_SUPPORTED | 0xC1 | 0xCC)
}

/// The spec's name for a completion code (table 5-2 and the command-specific ones Ferric meets).
pub fn completion_code_meaning(cc: u8) -> &'static str {
    match cc {
        0x00 => "success",
        0x80 => "parameter not supported / command-specific",
        0x81 => "set already in progress / command-specific",
        0x82 => "attempt to write a read-only parameter / command-specific",
        0x87 => "invalid session ID / command-specific",
        0x83..=0xBE => "command-specific error",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data, or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        0x01..=0x7E => "OEM error",
        _ => "reserved completion code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(m: impl Into<Message>) -> (u8, u8, Vec<u8>) {
        let m = m.into();
        (m.netfn_raw(), m.cmd(), m.data().to_vec())
    }

    #[test]
    fn get_chassis_status_request_and_answer() {
        assert_eq!(bytes(GetChassisStatus), (0x00, 0x01, vec![]));
        // ipmi_sim answers 3 bytes, real BMCs often 4 (front panel byte).
        let on = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x00]).unwrap();
        assert!(on.power_on);
        let off = GetChassisStatus::parse_success_response(&[0x60, 0x10, 0x40, 0x00]).unwrap();
        assert!(!off.power_on);
        assert_eq!(off.current_power_state, 0x60);
        assert_eq!(off.last_power_event, 0x10);
        // Other bits of byte 1 (e.g. restore policy 0x60, power fault 0x08) do not mean "on".
        assert!(
            !GetChassisStatus::parse_success_response(&[0x6e, 0, 0])
                .unwrap()
                .power_on
        );
        assert!(
            GetChassisStatus::parse_success_response(&[0x6f, 0, 0])
                .unwrap()
                .power_on
        );
        assert_eq!(
            GetChassisStatus::parse_success_response(&[0x01, 0x00]),
            Err(NotEnoughData)
        );
        assert_eq!(
            GetChassisStatus::parse_success_response(&[]),
            Err(NotEnoughData)
        );
    }

    #[test]
    fn chassis_control_codes() {
        for (c, code) in [
            (ChassisControl::PowerDown, 0),
            (ChassisControl::PowerUp, 1),
            (ChassisControl::PowerCycle, 2),
            (ChassisControl::HardReset, 3),
            (ChassisControl::SoftShutdown, 5),
        ] {
            assert_eq!(bytes(ChassisControlCmd(c)), (0x00, 0x02, vec![code]));
        }
    }

    #[test]
    fn boot_flags_for_every_device() {
        let expect = [
            (BootDevice::Pxe, 0x04),
            (BootDevice::Disk, 0x08),
            (BootDevice::Bios, 0x18),
            (BootDevice::Cdrom, 0x14),
        ];
        assert_eq!(expect.len(), BootDevice::ALL.len());
        for (device, selector) in expect {
            assert_eq!(
                bytes(SetSystemBootOptions::boot_flags(device, false)),
                (0x00, 0x08, vec![0x05, 0x80, selector, 0, 0, 0]),
                "{device:?} next boot only"
            );
            assert_eq!(
                bytes(SetSystemBootOptions::boot_flags(device, true)),
                (0x00, 0x08, vec![0x05, 0xC0, selector, 0, 0, 0]),
                "{device:?} persistent"
            );
        }
    }

    #[test]
    fn boot_option_housekeeping_parameters() {
        assert_eq!(
            bytes(SetSystemBootOptions::set_in_progress(
                SetInProgress::SetInProgress
            )),
            (0x00, 0x08, vec![0x00, 0x01])
        );
        assert_eq!(
            bytes(SetSystemBootOptions::set_in_progress(
                SetInProgress::CommitWrite
            )),
            (0x00, 0x08, vec![0x00, 0x02])
        );
        assert_eq!(
            bytes(SetSystemBootOptions::set_in_progress(
                SetInProgress::SetComplete
            )),
            (0x00, 0x08, vec![0x00, 0x00])
        );
        assert_eq!(
            bytes(SetSystemBootOptions::valid_bit_clearing(
                KEEP_BOOT_FLAGS_PAST_60S
            )),
            (0x00, 0x08, vec![0x03, 0x08])
        );
        assert_eq!(
            bytes(SetSystemBootOptions::boot_info_unacknowledged()),
            (0x00, 0x08, vec![0x04, 0x01, 0x01])
        );
        // Bit 7 of the selector ("parameter invalid") is never sent.
        let odd = SetSystemBootOptions {
            parameter: 0x85,
            data: vec![],
        };
        assert_eq!(bytes(odd), (0x00, 0x08, vec![0x05]));
    }

    #[test]
    fn session_privilege_and_close() {
        assert_eq!(
            bytes(SetSessionPrivilegeLevel(PRIVILEGE_ADMINISTRATOR)),
            (0x06, 0x3B, vec![0x04])
        );
        assert_eq!(
            SetSessionPrivilegeLevel::parse_success_response(&[0x04]),
            Ok(4)
        );
        // High nibble is reserved.
        assert_eq!(
            SetSessionPrivilegeLevel::parse_success_response(&[0xF3]),
            Ok(3)
        );
        assert_eq!(
            SetSessionPrivilegeLevel::parse_success_response(&[]),
            Err(NotEnoughData)
        );
        // Session ID goes least significant byte first.
        assert_eq!(
            bytes(CloseSession {
                session_id: 0x1234_5678
            }),
            (0x06, 0x3C, vec![0x78, 0x56, 0x34, 0x12])
        );
    }

    #[test]
    fn completion_codes_named() {
        assert_eq!(
            completion_code_meaning(0xD4),
            "insufficient privilege level"
        );
        assert_eq!(
            completion_code_meaning(0xD5),
            "command not supported in present state"
        );
        assert_eq!(completion_code_meaning(0x42), "OEM error");
        assert_eq!(completion_code_meaning(0x7F), "reserved completion code");
        assert!(is_unsupported(0x80) && is_unsupported(0xCC) && is_unsupported(0xC1));
        assert!(!is_unsupported(0xD4) && !is_unsupported(0x81) && !is_unsupported(0xFF));
    }
}
