//! Unit tests of the RMCP+ session: packets, authentication and integrity on bytes.

use super::*;

#[test]
fn session_id_read_from_ipmi_rs_debug_text() {
    // Shapes of ipmi-rs 0.6's derived/handwritten Debug impls.
    let v2 = "Rmcp { unbound_state: RmcpWithState(Unbound { address: 127.0.0.1:623, \
              timeout: 2s }), active_state: Some(RmcpWithState(V2_0(State { socket: \
              RmcpIpmiSocket { socket: UdpSocket { addr: [::]:4000, fd: 3 }, buffer: [0, 0] }, \
              session_id: 2864434397, session_sequence_number: 3, state: CryptoState { \
              password: \"<redacted>\", kg: \"<redacted>\", state: Configured { keys: Keys } }, \
              ipmb_state: IpmbState { ipmb_sequence: 1 } })) }";
    assert_eq!(
        parse_session_debug(v2),
        (RmcpVersion::V2_0, Some(0xAABB_CCDD))
    );
    let v15 = "Rmcp { active_state: Some(RmcpWithState(V1_5(State { socket: _, ipmb_state: _, \
               session_id: Some(77), auth_type: MD5, password: \"<redacted>\" }))) }";
    assert_eq!(parse_session_debug(v15), (RmcpVersion::V1_5, Some(77)));
    assert_eq!(
        parse_session_debug("Rmcp { active_state: None }"),
        (RmcpVersion::Unknown, None)
    );
    assert_eq!(
        parse_session_debug("V2_0(State { session_id: 0, x })"),
        (RmcpVersion::V2_0, None)
    );
}

#[test]
fn io_failures_are_unreachable_and_name_the_timeout() {
    let t = Duration::from_millis(1500);
    let e = io_error(
        "10.0.0.1:623",
        "Get Chassis Status",
        t,
        &io::Error::from(io::ErrorKind::WouldBlock),
    );
    assert_eq!(
        e.to_string(),
        "IPMI BMC 10.0.0.1:623 unreachable: no answer to Get Chassis Status within 1.5s"
    );
    let e = io_error(
        "10.0.0.1:623",
        "the RMCP presence ping",
        t,
        &io::Error::from(io::ErrorKind::ConnectionRefused),
    );
    assert!(matches!(e, IpmiError::Unreachable { .. }));
    assert!(e.to_string().contains("ICMP port unreachable"), "{e}");
}

#[test]
fn credential_failures_are_auth_errors() {
    let bmc = "10.0.0.1:623";
    let e = activation_error(
        bmc,
        "admin",
        Duration::from_secs(1),
        ActivationError::V2_0(V2_0ActivationError::ServerAuthenticationFailed),
    );
    assert_eq!(
        e.to_string(),
        "IPMI BMC 10.0.0.1:623 rejected the login of user \"admin\": wrong user name or password"
    );
    let e = activation_error(
        bmc,
        "nobody",
        Duration::from_secs(1),
        ActivationError::V2_0(V2_0ActivationError::RakpMessage2Parse(
            RakpMessage2ParseError::ErrorStatusCode(RakpMessage2ErrorStatusCode::UnauthorizedName),
        )),
    );
    assert!(matches!(e, IpmiError::Auth { .. }), "{e:?}");
    let e = activation_error(
        bmc,
        "admin",
        Duration::from_secs(1),
        ActivationError::PongReceive(io::Error::from(io::ErrorKind::WouldBlock)),
    );
    assert!(matches!(e, IpmiError::Unreachable { .. }), "{e:?}");
    let e = activation_error(
        bmc,
        "admin",
        Duration::from_secs(1),
        ActivationError::PongRead,
    );
    assert!(matches!(e, IpmiError::Protocol { .. }), "{e:?}");
}

#[test]
fn open_session_statuses_classified_by_name() {
    assert_eq!(
        open_session_status("Ok(CommonRakp(InsufficientResourcesForSessionCreation))"),
        OpenSessionStatus::NoResources
    );
    assert_eq!(
        open_session_status("Ok(NoMatchingCipherSuite)"),
        OpenSessionStatus::Cipher
    );
    assert_eq!(
        open_session_status("Ok(InvalidIntegrityAlgorithm)"),
        OpenSessionStatus::Cipher
    );
    assert_eq!(
        open_session_status("Ok(InvalidRole)"),
        OpenSessionStatus::InvalidRole
    );
    assert_eq!(open_session_status("Err(200)"), OpenSessionStatus::Other);
}

/// How the scripted BMC answers one boot option write.
#[derive(Clone, Copy)]
enum Answer {
    Cc(u8),
    Timeout,
}

/// Runs the boot option sequence against a scripted BMC that answers success unless an
/// entry keyed by (parameter, first data byte) says otherwise (each entry answers once).
/// Returns the result and the (parameter, first data byte) of every write sent.
fn boot_with(
    script: &[((u8, u8), Answer)],
    device: BootDevice,
    persistent: bool,
) -> (Result<(), IpmiError>, Vec<(u8, u8)>) {
    let mut script = script.to_vec();
    let mut sent = Vec::new();
    let mut send = |what: &str, cmd: SetSystemBootOptions| {
        let key = (cmd.parameter, cmd.data[0]);
        sent.push(key);
        let bmc = "10.0.0.1:623".to_string();
        match script.iter().position(|(k, _)| *k == key) {
            None => Ok(()),
            Some(i) => match script.remove(i).1 {
                Answer::Cc(completion_code) => Err(IpmiError::Refused {
                    bmc,
                    what: what.into(),
                    completion_code,
                }),
                Answer::Timeout => Err(IpmiError::Unreachable {
                    bmc,
                    detail: "no answer".into(),
                }),
            },
        }
    };
    let result = boot_device_sequence(&mut send, device, persistent);
    (result, sent)
}

const LOCK: (u8, u8) = (0, 1);
const COMMIT: (u8, u8) = (0, 2);
const UNLOCK: (u8, u8) = (0, 0);
const KEEP: (u8, u8) = (3, 0x08);
const ACK: (u8, u8) = (4, 0x01);
const FLAGS: (u8, u8) = (5, 0x80);

#[test]
fn boot_device_on_a_bmc_with_every_parameter() {
    let (r, sent) = boot_with(&[], BootDevice::Pxe, false);
    assert_eq!(r, Ok(()));
    assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS, COMMIT, UNLOCK]);
    let (_, sent) = boot_with(&[], BootDevice::Disk, true);
    assert_eq!(sent[3], (5, 0xC0), "persistent");
}

#[test]
fn boot_device_without_set_in_progress() {
    // ipmi_sim answers 0xCC to parameter 0; others 0x80 or 0xC1.
    for cc in [0xCC, 0x80, 0xC1] {
        let (r, sent) = boot_with(&[(LOCK, Answer::Cc(cc))], BootDevice::Pxe, false);
        assert_eq!(r, Ok(()));
        assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS]);
    }
}

#[test]
fn boot_device_clears_a_lock_left_by_a_dead_client() {
    let (r, sent) = boot_with(&[(LOCK, Answer::Cc(0x81))], BootDevice::Bios, false);
    assert_eq!(r, Ok(()));
    assert_eq!(sent, [LOCK, UNLOCK, LOCK, KEEP, ACK, FLAGS, COMMIT, UNLOCK]);
    // Still locked after clearing: give up with the BMC's answer.
    let script = [(LOCK, Answer::Cc(0x81)), (LOCK, Answer::Cc(0x81))];
    let (r, sent) = boot_with(&script, BootDevice::Bios, false);
    assert!(
        matches!(
            r,
            Err(IpmiError::Refused {
                completion_code: 0x81,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(sent, [LOCK, UNLOCK, LOCK]);
}

#[test]
fn boot_device_skips_optional_parameters_the_bmc_lacks() {
    let script = [
        (KEEP, Answer::Cc(0x80)),
        (ACK, Answer::Cc(0xCC)),
        (COMMIT, Answer::Cc(0xCC)),
    ];
    let (r, sent) = boot_with(&script, BootDevice::Cdrom, false);
    assert_eq!(r, Ok(()));
    assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS, COMMIT, UNLOCK]);
}

#[test]
fn boot_device_refused_unlocks_without_committing() {
    let (r, sent) = boot_with(&[(FLAGS, Answer::Cc(0xD5))], BootDevice::Pxe, false);
    assert!(
        matches!(
            r,
            Err(IpmiError::Refused {
                completion_code: 0xD5,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS, UNLOCK]);
    // A refused optional parameter other than "unsupported" is a failure too.
    let (r, sent) = boot_with(&[(ACK, Answer::Cc(0xD4))], BootDevice::Pxe, false);
    assert!(matches!(r, Err(IpmiError::Refused { .. })), "{r:?}");
    assert_eq!(sent, [LOCK, KEEP, ACK, UNLOCK]);
}

#[test]
fn boot_device_stops_sending_once_the_bmc_is_lost() {
    let (r, sent) = boot_with(&[(FLAGS, Answer::Timeout)], BootDevice::Pxe, false);
    assert!(matches!(r, Err(IpmiError::Unreachable { .. })), "{r:?}");
    assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS]);
    let (r, sent) = boot_with(&[(LOCK, Answer::Timeout)], BootDevice::Pxe, false);
    assert!(matches!(r, Err(IpmiError::Unreachable { .. })), "{r:?}");
    assert_eq!(sent, [LOCK]);
    let (r, sent) = boot_with(&[(LOCK, Answer::Cc(0xD4))], BootDevice::Pxe, false);
    assert!(matches!(r, Err(IpmiError::Refused { .. })), "{r:?}");
    assert_eq!(sent, [LOCK]);
    // Written, but the unlock got no answer: reported, so the caller retires the session.
    let (r, sent) = boot_with(&[(UNLOCK, Answer::Timeout)], BootDevice::Pxe, false);
    assert!(matches!(r, Err(IpmiError::Unreachable { .. })), "{r:?}");
    assert_eq!(sent, [LOCK, KEEP, ACK, FLAGS, COMMIT, UNLOCK]);
}

#[test]
fn panics_in_ipmi_rs_become_errors() {
    assert_eq!(guarded(|| 7), Ok(7));
    let r: Result<(), String> = guarded(|| panic!("boom {}", 1));
    assert_eq!(r, Err("boom 1".into()));
}
