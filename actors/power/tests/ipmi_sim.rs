//! The IPMI client against a real BMC implementation (OpenIPMI's `ipmi_sim`), cross-checked
//! with `ipmitool` and with the state files of the simulator's chassis_control program.
//! Run: `cargo test -p ferric-power --test ipmi_sim` (needs `ipmi_sim` and `ipmitool`).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ferric_model::BootDevice;
use ferric_power::ipmi::{ChassisControl, IpmiClient, IpmiConfig, IpmiError, IpmiSession};
use ferric_testkit::ipmi_sim::{IpmiSim, BOOT_DEVICES, PASSWORD, USERNAME};
use ferric_testkit::{free_udp_port, wait_until};

const TIMEOUT: Duration = Duration::from_secs(1);

/// The per-answer timeout of the tests that time an unreachable BMC: long enough that a busy
/// machine's scheduling delays stay well inside it.
const GIVE_UP: Duration = Duration::from_secs(2);

/// A client configuration for `sim` with the given per-answer timeout.
fn config(sim: &IpmiSim, timeout: Duration) -> IpmiConfig {
    IpmiConfig {
        address: "127.0.0.1".into(),
        port: sim.port(),
        username: USERNAME.into(),
        password: PASSWORD.into(),
        timeout,
    }
}

fn client(sim: &IpmiSim) -> IpmiClient {
    IpmiClient::new(config(sim, TIMEOUT))
}

/// The client gave up after waiting out one `timeout`, not two: no hidden retry of the whole
/// exchange. (Causal rather than tight: a loaded machine may add up to one timeout of delay.)
fn assert_one_timeout(took: Duration, timeout: Duration) {
    assert!(
        took < 2 * timeout,
        "{took:?} is two timeouts of {timeout:?} or more"
    );
}

/// A client whose first command opened its session and saw the new simulator powered off.
fn connected(sim: &IpmiSim) -> IpmiClient {
    let mut c = client(sim);
    assert!(!c.power_is_on().unwrap(), "a new simulator is off");
    c
}

/// Commands chassis_control received after the first `skip`.
fn commands_since(sim: &IpmiSim, skip: usize) -> Vec<String> {
    sim.commands().into_iter().skip(skip).collect()
}

fn assert_names_bmc_not_password(e: &IpmiError, port: u16) {
    let text = format!("{e} {e:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
}

#[test]
fn power_on() {
    let sim = IpmiSim::start();
    let mut c = connected(&sim);
    assert!(!sim.ipmitool_power_is_on());

    c.chassis_control(ChassisControl::PowerUp).unwrap();
    assert!(sim.power_file());
    assert!(sim.ipmitool_power_is_on());
    assert!(c.power_is_on().unwrap());
    // Idempotent: "ensure on" twice is fine.
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    assert!(sim.ipmitool_power_is_on());
}

#[test]
fn power_off() {
    let sim = IpmiSim::start();
    let mut c = client(&sim);
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    assert!(sim.ipmitool_power_is_on());

    c.chassis_control(ChassisControl::PowerDown).unwrap();
    assert!(!sim.power_file());
    assert!(!sim.ipmitool_power_is_on());
    assert!(!c.power_is_on().unwrap());
    assert!(sim.commands().contains(&"set power 0".to_string()));
}

#[test]
fn power_cycle_turns_or_keeps_the_machine_on() {
    let sim = IpmiSim::start();
    let mut c = client(&sim);

    // From on: off, then on again after the BMC's delay (1 s on ipmi_sim).
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    let before = sim.commands().len();
    c.chassis_control(ChassisControl::PowerCycle).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = commands_since(&sim, before);
            let off = log.iter().position(|l| l == "set power 0");
            let on = log.iter().rposition(|l| l == "set power 1");
            matches!((off, on), (Some(off), Some(on)) if off < on)
        }),
        "no off-then-on in {:?}",
        commands_since(&sim, before)
    );
    assert!(wait_until(Duration::from_secs(5), || c
        .power_is_on()
        .unwrap()));
    assert!(sim.ipmitool_power_is_on());

    // From off: ipmi_sim turns it on (real BMCs often answer 0xD5 instead).
    c.chassis_control(ChassisControl::PowerDown).unwrap();
    match c.chassis_control(ChassisControl::PowerCycle) {
        Ok(()) => {
            assert!(wait_until(Duration::from_secs(5), || c
                .power_is_on()
                .unwrap()));
            assert!(sim.ipmitool_power_is_on());
        }
        Err(IpmiError::Refused {
            completion_code: 0xD5,
            ..
        }) => {}
        Err(e) => panic!("power cycle while off: {e}"),
    }
}

#[test]
fn hard_reset_pulses_reset_and_keeps_power() {
    let sim = IpmiSim::start();
    let mut c = client(&sim);
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    c.chassis_control(ChassisControl::HardReset).unwrap();
    assert!(sim.commands().contains(&"set reset 1".to_string()));
    assert!(c.power_is_on().unwrap());
    assert!(sim.ipmitool_power_is_on());
}

#[test]
fn soft_off_that_completes() {
    let sim = IpmiSim::start();
    sim.set_soft_off_delay(Some(Duration::from_secs(3)));
    let mut c = client(&sim);
    c.chassis_control(ChassisControl::PowerUp).unwrap();

    let asked = Instant::now();
    c.chassis_control(ChassisControl::SoftShutdown).unwrap();
    let answered = asked.elapsed();
    // The BMC answers at once; the OS takes its time (3 s), so an answer well before that was
    // not held up by the shutdown.
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    assert!(c.power_is_on().unwrap());
    assert!(sim.commands().contains(&"set shutdown 1".to_string()));

    assert!(
        wait_until(Duration::from_secs(10), || !c.power_is_on().unwrap()),
        "still on 10 s after a soft off with a 3 s shutdown"
    );
    let took = asked.elapsed();
    println!("soft off: BMC answered in {answered:?}, machine off after {took:?}");
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(!sim.ipmitool_power_is_on());
    assert!(!sim.power_file());
}

#[test]
fn soft_off_that_never_completes() {
    let sim = IpmiSim::start();
    sim.set_soft_off_delay(None);
    let mut c = client(&sim);
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    c.chassis_control(ChassisControl::SoftShutdown).unwrap();
    assert!(sim.commands().contains(&"set shutdown 1".to_string()));

    // Watched for 4 s (longer than the completing case takes), it stays on.
    assert!(!wait_until(Duration::from_secs(4), || !c
        .power_is_on()
        .unwrap()));
    assert!(sim.ipmitool_power_is_on());
    assert!(sim.power_file());

    // A hard off still works afterwards.
    c.chassis_control(ChassisControl::PowerDown).unwrap();
    assert!(!sim.ipmitool_power_is_on());
}

#[test]
fn boot_device_recorded_by_the_bmc() {
    let sim = IpmiSim::start();
    let mut c = client(&sim);
    let cases = BOOT_DEVICES;
    assert_eq!(cases.len(), BootDevice::ALL.len());
    for persistent in [false, true] {
        for (device, sim_name, ipmitool_name) in cases {
            let before = sim.commands().len();
            c.set_boot_device(device, persistent).unwrap();
            assert_eq!(sim.boot_file().as_deref(), Some(sim_name), "{device:?}");
            assert!(
                commands_since(&sim, before).contains(&format!("set boot {sim_name}")),
                "{:?}",
                commands_since(&sim, before)
            );
            let out = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{out:?}");
            assert!(
                text.contains(&format!("Boot Device Selector : {ipmitool_name}")),
                "{device:?}: {text}"
            );
        }
    }
}

#[test]
fn wrong_password_is_an_auth_error_quickly() {
    let sim = IpmiSim::start();
    let mut cfg = config(&sim, Duration::from_secs(2));
    cfg.password = "Wr0ng-s3cret".into();
    let started = Instant::now();
    let err = IpmiSession::connect(&cfg).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, IpmiError::Auth { .. }), "{err:?}");
    // Refused by the BMC, not given up on: well before the 2 s per-answer timeout.
    assert!(took < cfg.timeout, "{took:?}");
    assert_names_bmc_not_password(&err, sim.port());
    assert!(!err.to_string().contains("Wr0ng-s3cret"), "{err}");

    // The client reports the same, and an unknown user too.
    let mut c = IpmiClient::new(cfg.clone());
    assert!(matches!(c.power_is_on(), Err(IpmiError::Auth { .. })));
    cfg.password = PASSWORD.into();
    cfg.username = "nobody".into();
    let err = IpmiSession::connect(&cfg).unwrap_err();
    assert!(matches!(err, IpmiError::Auth { .. }), "{err:?}");
    println!("wrong password: {took:?}; unknown user: {err}");
    // The BMC is unharmed.
    assert!(!sim.ipmitool_power_is_on());
}

#[test]
fn closed_port_is_unreachable_within_the_timeout() {
    let cfg = IpmiConfig {
        address: "127.0.0.1".into(),
        port: free_udp_port(),
        username: "admin".into(),
        password: PASSWORD.into(),
        timeout: GIVE_UP,
    };
    let started = Instant::now();
    let err = IpmiClient::new(cfg.clone()).power_is_on().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, IpmiError::Unreachable { .. }), "{err:?}");
    assert_one_timeout(took, GIVE_UP);
    assert_names_bmc_not_password(&err, cfg.port);
    println!("closed port: {took:?}: {err}");
}

#[test]
fn silent_port_is_unreachable_after_the_timeout() {
    // Something holds the port but never answers (a BMC whose IPMI service hangs).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut cfg = IpmiConfig::new("127.0.0.1", "admin", PASSWORD);
    cfg.port = port;
    cfg.timeout = GIVE_UP;
    let started = Instant::now();
    let err = IpmiSession::connect(&cfg).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, IpmiError::Unreachable { .. }), "{err:?}");
    assert!(took >= GIVE_UP, "{took:?}");
    assert_one_timeout(took, GIVE_UP);
    assert_names_bmc_not_password(&err, port);
}

#[test]
fn frozen_bmc_is_unreachable_and_the_client_reconnects_after() {
    let sim = IpmiSim::start();
    let mut c = IpmiClient::new(config(&sim, GIVE_UP));
    assert!(!c.power_is_on().unwrap());
    let first = c.session_id().expect("session id readable");

    sim.freeze();
    let started = Instant::now();
    let err = c.power_is_on().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, IpmiError::Unreachable { .. }), "{err:?}");
    assert!(took >= GIVE_UP, "{took:?}");
    assert_one_timeout(took, GIVE_UP);
    assert_eq!(c.session_id(), None, "the out-of-step session is dropped");
    // Still frozen: reconnecting fails just as fast.
    let started = Instant::now();
    let err = c.chassis_control(ChassisControl::PowerUp).unwrap_err();
    assert!(matches!(err, IpmiError::Unreachable { .. }), "{err:?}");
    assert_one_timeout(started.elapsed(), GIVE_UP);
    sim.thaw();

    // The next command opens a new session and works; the stale one was closed from it.
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    assert!(c.power_is_on().unwrap());
    let second = c.session_id().expect("new session");
    assert_ne!(first, second);
    assert!(sim.ipmitool_power_is_on());
    assert_eq!(sim.active_sessions(), 2, "ours and ipmitool's");
    drop(c);
    assert_eq!(sim.active_sessions(), 1, "only ipmitool's");
}

#[test]
fn two_hundred_operations_leak_no_session() {
    let sim = IpmiSim::start();
    let mut c = connected(&sim);
    let session = c.session_id();
    for i in 0..200 {
        match i % 4 {
            0 => c.chassis_control(ChassisControl::PowerUp).unwrap(),
            1 => assert!(c.power_is_on().unwrap()),
            2 => c.set_boot_device(BootDevice::Pxe, false).unwrap(),
            _ => assert!(c.power_is_on().unwrap()),
        }
    }
    assert_eq!(c.session_id(), session, "one session for all 200");
    assert!(sim.ipmitool_power_is_on());
    assert_eq!(sim.active_sessions(), 2, "ours and ipmitool's");
    c.close();
    assert_eq!(sim.active_sessions(), 1, "only ipmitool's");
    // Closed clients reconnect on demand; dropping closes again.
    assert!(c.power_is_on().unwrap());
    drop(c);
    assert_eq!(sim.active_sessions(), 1);
}

#[test]
fn idle_session_is_replaced_and_closed() {
    // BMCs drop idle sessions (ipmi_sim after 30 s) and ignore commands on them: a session
    // idle past the limit is replaced before the next command, and closed from the new one.
    let sim = IpmiSim::start();
    let mut c = IpmiClient::with_idle_limit(config(&sim, TIMEOUT), Duration::from_millis(300));
    assert!(!c.power_is_on().unwrap());
    let first = c.session_id();
    assert!(!c.power_is_on().unwrap());
    assert_eq!(c.session_id(), first, "reused while fresh");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!c.power_is_on().unwrap());
    assert_ne!(c.session_id(), first, "replaced after the idle limit");
    assert_eq!(sim.active_sessions(), 2, "ours and ipmitool's");
}

#[test]
fn more_sessions_than_the_bmc_holds_when_each_is_closed() {
    // ipmi_sim allows 63 sessions at once: 80 only work if every one is closed.
    let sim = IpmiSim::start();
    let cfg = config(&sim, TIMEOUT);
    for i in 0..80 {
        let mut s = IpmiSession::connect(&cfg).unwrap_or_else(|e| panic!("session {i}: {e}"));
        assert!(!s.power_is_on().unwrap());
        s.close();
    }
    assert_eq!(sim.active_sessions(), 1);
}

#[test]
fn refused_command_keeps_the_session() {
    let sim = IpmiSim::start();
    let mut c = connected(&sim);
    let session = c.session_id();

    sim.set_failing(true);
    let err = c.chassis_control(ChassisControl::PowerUp).unwrap_err();
    match &err {
        IpmiError::Refused {
            completion_code, ..
        } => assert_eq!(*completion_code, 0xFF),
        other => panic!("{other:?}"),
    }
    assert_names_bmc_not_password(&err, sim.port());
    assert_eq!(
        c.session_id(),
        session,
        "a refusal does not cost the session"
    );

    sim.set_failing(false);
    c.chassis_control(ChassisControl::PowerUp).unwrap();
    assert_eq!(c.session_id(), session);
    assert!(sim.ipmitool_power_is_on());
}

#[test]
fn timings() {
    let sim = IpmiSim::start();
    let cfg = config(&sim, TIMEOUT);
    let n = 20;
    let started = Instant::now();
    for _ in 0..n {
        IpmiSession::connect(&cfg).unwrap().close();
    }
    let setup = started.elapsed() / n;

    let mut s = IpmiSession::connect(&cfg).unwrap();
    let n = 200;
    let started = Instant::now();
    for _ in 0..n {
        s.power_is_on().unwrap();
    }
    let status = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        s.chassis_control(ChassisControl::PowerUp).unwrap();
    }
    let control = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        s.set_boot_device(BootDevice::Pxe, false).unwrap();
    }
    let boot = started.elapsed() / n;
    s.close();
    println!(
        "timings (loopback ipmi_sim, each including its chassis_control program): \
         session open+close {setup:?}, Get Chassis Status {status:?}, Chassis Control {control:?}, \
         set boot device {boot:?}"
    );
    assert!(setup < Duration::from_millis(200));
}
