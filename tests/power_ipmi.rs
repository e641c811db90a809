//! The `ipmi` driver end to end: a real `ferric conductor` and `ferric ctl` against OpenIPMI's
//! `ipmi_sim` (a BMC nobody here wrote), every result cross-checked with `ipmitool` (an
//! independent IPMI client) and with the simulator's chassis_control record (the machine's
//! power and boot device files, and the log of every chassis command the BMC passed on).
//!
//! Run: `cargo test --test power_ipmi -- --test-threads=1` (needs etcd, `ipmi_sim`, `ipmitool`).

use ferric_model::{NodeStatus, PowerState, PowerTarget};
use ferric_testkit::free_udp_port;
use ferric_testkit::ipmi_sim::{IpmiSim, BOOT_DEVICES, PASSWORD, USERNAME};
use ferric_testkit::{describe, Fleet};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The conductor of every test: short lease, small per-BMC gap (ipmi_sim answers in < 1 ms).
const CONDUCTOR_ARGS: [&str; 4] = ["--lease-ttl", "5", "--bmc-min-gap-ms", "50"];

/// A wrong password for the simulator's admin user.
const WRONG_PASSWORD: &str = "Wr0ng-s3cret";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fleet with its etcd and one conductor, `c1`.
async fn fleet(test: &str) -> Fleet {
    let mut fleet = Fleet::new(test).await;
    fleet.start_conductor("c1", &CONDUCTOR_ARGS);
    fleet
}

/// Ironic's driver_info for a BMC on loopback.
fn driver_info(port: u16, password: &str) -> String {
    serde_json::json!({
        "ipmi_address": "127.0.0.1",
        "ipmi_port": port,
        "ipmi_username": USERNAME,
        "ipmi_password": password,
    })
    .to_string()
}

/// Enrolls one `ipmi` node and waits until c1 holds it.
async fn enroll(fleet: &Fleet, info: &str, extra: &[&str]) -> String {
    let mut args = vec!["--driver", "ipmi", "--driver-info", info];
    args.extend_from_slice(extra);
    let id = fleet.create_nodes(1, &args).await.remove(0);
    fleet.note(&format!("enrolled node {id} ({extra:?})"));
    fleet.wait_settled(Duration::from_secs(30), &["c1"]).await;
    id
}

/// A machine whose OS never completes an ACPI soft off, and its node enrolled with soft-off
/// `policy` ("error" or "hard-off").
async fn stubborn_node(fleet: &Fleet, policy: &str) -> (IpmiSim, String) {
    let sim = IpmiSim::start();
    sim.set_soft_off_delay(None);
    let id = enroll(
        fleet,
        &driver_info(sim.port(), PASSWORD),
        &["--soft-off-policy", policy],
    )
    .await;
    (sim, id)
}

/// The node's current power request seq and boot device request seq (0: none yet).
async fn request_seqs(fleet: &Fleet, id: &str) -> (u64, u64) {
    let snap = match fleet.snapshot().await {
        Ok(s) => s,
        Err(e) => fleet.fail(&e),
    };
    match snap.spec(id) {
        Some(Ok(spec)) => (
            spec.power_request.map_or(0, |r| r.seq),
            spec.boot_device_request.map_or(0, |r| r.seq),
        ),
        other => fleet.fail(&format!("spec of {id}: {other:?}")),
    }
}

/// How one power request ended.
struct Done {
    status: NodeStatus,
    /// From just before `ctl node power` until the owner recorded the end.
    took: Duration,
    /// The chassis commands the BMC passed on meanwhile.
    commands: Vec<String>,
}

/// Requests `action` through ctl and waits (bounded by `limit`) until the owner finished it:
/// `power_seq_done` reached the request's seq. Notes the outcome in the fleet's notes.
async fn power(
    fleet: &Fleet,
    sim: Option<&IpmiSim>,
    id: &str,
    action: &str,
    timeout_s: Option<u32>,
    limit: Duration,
) -> Done {
    let d = power_quiet(fleet, sim, id, action, timeout_s, limit).await;
    fleet.note(&format!(
        "power {action} of {id} done in {:.2} s: power {:?}, last_error {:?}, fault {:?}, BMC commands {:?}",
        d.took.as_secs_f64(),
        d.status.power_state,
        d.status.last_error,
        d.status.fault,
        d.commands
    ));
    d
}

/// As [`power`], without notes (for long loops).
async fn power_quiet(
    fleet: &Fleet,
    sim: Option<&IpmiSim>,
    id: &str,
    action: &str,
    timeout_s: Option<u32>,
    limit: Duration,
) -> Done {
    let skip = sim.map_or(0, |s| s.commands().len());
    let started = Instant::now();
    let t = timeout_s.map(|t| t.to_string());
    let mut args = vec!["node", "power", id, action];
    if let Some(t) = &t {
        args.extend(["--timeout", t.as_str()]);
    }
    fleet.ctl_ok(&args).await;
    let (seq, _) = request_seqs(fleet, id).await;
    let status = fleet.wait_power_done(id, seq, limit).await;
    let took = started.elapsed();
    let commands = sim.map_or_else(Vec::new, |s| s.commands().into_iter().skip(skip).collect());
    Done {
        status,
        took,
        commands,
    }
}

/// Requests a boot device through ctl and waits until the owner recorded the result.
async fn boot_device(fleet: &Fleet, id: &str, device: &str, persistent: bool) -> NodeStatus {
    let mut args = vec!["node", "boot-device", id, device];
    if persistent {
        args.push("--persistent");
    }
    fleet.ctl_ok(&args).await;
    let (_, seq) = request_seqs(fleet, id).await;
    let what = format!("boot device {device} (persistent {persistent}) of {id} is done");
    fleet
        .wait_status(id, Duration::from_secs(20), &what, |s| {
            if s.boot_seq_done >= seq {
                Ok(())
            } else {
                Err(format!(
                    "boot_seq_done {} < {seq}; boot_device {:?} last_error {:?}",
                    s.boot_seq_done, s.boot_device, s.last_error
                ))
            }
        })
        .await
}

/// `ipmitool ... chassis power status`: Ok(true) for on, Ok(false) for off.
fn ipmitool_power(sim: &IpmiSim) -> Result<bool, String> {
    let out = tokio::task::block_in_place(|| sim.ipmitool(&["chassis", "power", "status"]));
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), text.trim()) {
        (true, "Chassis Power is on") => Ok(true),
        (true, "Chassis Power is off") => Ok(false),
        _ => Err(format!("ipmitool chassis power status: {}", describe(&out))),
    }
}

/// Checks the BMC's power with ipmitool and the chassis_control file: both must say `on`.
fn check_bmc_power(fleet: &Fleet, sim: &IpmiSim, on: bool, when: &str) {
    let by_ipmitool = ipmitool_power(sim).unwrap_or_else(|e| fleet.fail(&format!("{when}: {e}")));
    let file = sim.power_file();
    fleet.ensure(by_ipmitool == on && file == on, || {
        format!(
            "{when}: want power on={on}; ipmitool says on={by_ipmitool}, chassis file on={file}"
        )
    });
}

/// `ipmitool ... session info active`: sessions open on the BMC, counting ipmitool's own.
fn active_sessions(fleet: &Fleet, sim: &IpmiSim) -> usize {
    let out = tokio::task::block_in_place(|| sim.ipmitool(&["session", "info", "active"]));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        fleet.fail(&format!("ipmitool session info active: {}", describe(&out)));
    }
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "active sessions").then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| fleet.fail(&format!("no session count in {text:?}")))
}

/// `ctl node history <id> --json`: entries of `event_type` "power".
async fn power_history(fleet: &Fleet, id: &str) -> Vec<Value> {
    let out = fleet.ctl_ok(&["node", "history", id, "--json"]).await;
    let all: Vec<Value> = serde_json::from_str(&out)
        .unwrap_or_else(|e| fleet.fail(&format!("node history is not JSON ({e}): {out}")));
    all.into_iter()
        .filter(|e| e["event_type"] == "power")
        .collect()
}

/// `ctl node show <id> --json`.
async fn show(fleet: &Fleet, id: &str) -> Value {
    let out = fleet.ctl_ok(&["node", "show", id, "--json"]).await;
    serde_json::from_str(&out)
        .unwrap_or_else(|e| fleet.fail(&format!("node show is not JSON ({e}): {out}")))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Whether `first` occurs in `log`, and `then` after it.
fn in_order(log: &[String], first: &str, then: &str) -> bool {
    log.iter()
        .position(|l| l == first)
        .is_some_and(|i| log[i + 1..].iter().any(|l| l == then))
}

fn has(log: &[String], line: &str) -> bool {
    log.iter().any(|l| l == line)
}

// ---------------------------------------------------------------------------------------------
// 1. Every power operation and boot device
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_operations_and_boot_devices() {
    let fleet = fleet("ipmi-ops").await;
    let sim = IpmiSim::start();
    // The OS takes 3 s to shut down after an ACPI soft off.
    sim.set_soft_off_delay(Some(Duration::from_secs(3)));
    // ipmi_port as a string, as Ironic's clients often send it.
    let info = serde_json::json!({
        "ipmi_address": "127.0.0.1",
        "ipmi_port": sim.port().to_string(),
        "ipmi_username": USERNAME,
        "ipmi_password": PASSWORD,
    })
    .to_string();
    let id = enroll(&fleet, &info, &[]).await;
    check_bmc_power(&fleet, &sim, false, "before any request");

    // The password never comes back out.
    let shown = show(&fleet, &id).await;
    fleet.ensure(
        !shown.to_string().contains(PASSWORD) && shown["driver_info"]["ipmi_password"] == "******",
        || format!("node show leaks or does not mask the password: {shown}"),
    );

    let limit = Duration::from_secs(30);
    // on
    let d = power(&fleet, Some(&sim), &id, "on", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "on");
    fleet.ensure(has(&d.commands, "set power 1"), || {
        format!("on: no power up reached the BMC: {:?}", d.commands)
    });
    check_bmc_power(&fleet, &sim, true, "after on");

    // off
    let d = power(&fleet, Some(&sim), &id, "off", None, limit).await;
    check_done(&fleet, &d, PowerState::Off, "off");
    fleet.ensure(has(&d.commands, "set power 0"), || {
        format!("off: no power down reached the BMC: {:?}", d.commands)
    });
    check_bmc_power(&fleet, &sim, false, "after off");

    // reboot from on: off, then on; it ends on.
    power(&fleet, Some(&sim), &id, "on", None, limit).await;
    let d = power(&fleet, Some(&sim), &id, "reboot", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "reboot");
    fleet.ensure(in_order(&d.commands, "set power 0", "set power 1"), || {
        format!("reboot: want off then on at the BMC: {:?}", d.commands)
    });
    check_bmc_power(&fleet, &sim, true, "after reboot");

    // soft off: the OS shuts down after 3 s; nothing forces it.
    let d = power(&fleet, Some(&sim), &id, "soft-off", Some(30), limit).await;
    check_done(&fleet, &d, PowerState::Off, "soft-off");
    fleet.ensure(
        has(&d.commands, "set shutdown 1") && !has(&d.commands, "set power 0"),
        || {
            format!(
                "soft-off: want one ACPI soft off and no hard off: {:?}",
                d.commands
            )
        },
    );
    fleet.ensure(
        d.took >= Duration::from_millis(2900) && d.took < Duration::from_secs(10),
        || format!("soft-off took {:?}; the OS takes 3 s", d.took),
    );
    check_bmc_power(&fleet, &sim, false, "after soft-off");

    // soft reboot: soft off, wait for the OS, power on.
    power(&fleet, Some(&sim), &id, "on", None, limit).await;
    let d = power(&fleet, Some(&sim), &id, "soft-reboot", Some(30), limit).await;
    check_done(&fleet, &d, PowerState::On, "soft-reboot");
    fleet.ensure(
        in_order(&d.commands, "set shutdown 1", "set power 1") && !has(&d.commands, "set power 0"),
        || {
            format!(
                "soft-reboot: want soft off, then on, no hard off: {:?}",
                d.commands
            )
        },
    );
    fleet.ensure(d.took >= Duration::from_millis(2900), || {
        format!(
            "soft-reboot took {:?}; the OS takes 3 s to shut down",
            d.took
        )
    });
    check_bmc_power(&fleet, &sim, true, "after soft-reboot");

    // History: one entry per request, all by ctl, all ok.
    let hist = power_history(&fleet, &id).await;
    let events: Vec<&str> = hist.iter().map(|e| text(&e["event"])).collect();
    let want = [
        PowerTarget::On,
        PowerTarget::Off,
        PowerTarget::On,
        PowerTarget::Reboot,
        PowerTarget::SoftOff,
        PowerTarget::On,
        PowerTarget::SoftReboot,
    ]
    .map(PowerTarget::as_str);
    fleet.ensure(
        events == want
            && hist.iter().all(|e| {
                e["user"] == "ctl"
                    && e["result"] == "ok"
                    && e["severity"] == "INFO"
                    && e["conductor"] == "c1"
            }),
        || format!("power history: {hist:#?}"),
    );

    // Boot devices, one-time then persistent. ipmi_sim hands only the device to its
    // chassis_control program and reports byte 1 of parameter 5 as 0 whatever was set, so the
    // once/persistent flag is checked in Ferric's status and history only.
    let cases = BOOT_DEVICES;
    for persistent in [false, true] {
        for (device, sim_name, ipmitool_name) in cases {
            let skip = sim.commands().len();
            let s = boot_device(&fleet, &id, device.as_str(), persistent).await;
            let what = format!("boot device {} persistent={persistent}", device.as_str());
            fleet.ensure(
                s.boot_device == Some(device)
                    && s.boot_persistent == persistent
                    && s.last_error.is_none(),
                || {
                    format!(
                        "{what}: status boot_device {:?} persistent {} last_error {:?}",
                        s.boot_device, s.boot_persistent, s.last_error
                    )
                },
            );
            let log: Vec<String> = sim.commands().into_iter().skip(skip).collect();
            fleet.ensure(
                has(&log, &format!("set boot {sim_name}"))
                    && sim.boot_file().as_deref() == Some(sim_name),
                || {
                    format!(
                        "{what}: chassis_control got {log:?}, boot file {:?}",
                        sim.boot_file()
                    )
                },
            );
            let out =
                tokio::task::block_in_place(|| sim.ipmitool(&["chassis", "bootparam", "get", "5"]));
            let shown = String::from_utf8_lossy(&out.stdout);
            fleet.ensure(
                out.status.success()
                    && shown.contains(&format!("Boot Device Selector : {ipmitool_name}")),
                || {
                    format!(
                        "{what}: ipmitool chassis bootparam get 5: {}",
                        describe(&out)
                    )
                },
            );
        }
    }
    let out = fleet.ctl_ok(&["node", "history", &id, "--json"]).await;
    let all: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    let boots: Vec<&str> = all
        .iter()
        .filter(|e| e["event_type"] == "boot device" && e["result"] == "ok")
        .map(|e| text(&e["event"]))
        .collect();
    fleet.ensure(
        boots
            == [
                "pxe",
                "disk",
                "bios",
                "cdrom",
                "pxe (persistent)",
                "disk (persistent)",
                "bios (persistent)",
                "cdrom (persistent)",
            ],
        || format!("boot device history: {all:#?}"),
    );
    // Setting boot devices changed no power.
    check_bmc_power(&fleet, &sim, true, "after the boot device changes");
    fleet.check_fencing_history().await;
}

/// A power request that reached its target: status and BMC agree, nothing left over.
fn check_done(fleet: &Fleet, d: &Done, want: PowerState, what: &str) {
    let s = &d.status;
    fleet.ensure(
        s.power_state == Some(want)
            && s.last_error.is_none()
            && s.fault.is_none()
            && s.power_op.is_none()
            && s.target_power_state.is_none(),
        || {
            format!(
                "after {what}: want {want:?}; status power {:?} last_error {:?} fault {:?} op {:?} target {:?}",
                s.power_state, s.last_error, s.fault, s.power_op, s.target_power_state
            )
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A soft off the OS never completes, under each policy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_off_timeout_under_each_policy() {
    let fleet = fleet("ipmi-soft-timeout").await;
    // Two machines whose OS ignores ACPI soft off, one node per policy, run side by side.
    let (sim_err, id_err) = stubborn_node(&fleet, "error").await;
    let (sim_hard, id_hard) = stubborn_node(&fleet, "hard-off").await;
    let limit = Duration::from_secs(30);
    tokio::join!(
        power(&fleet, Some(&sim_err), &id_err, "on", None, limit),
        power(&fleet, Some(&sim_hard), &id_hard, "on", None, limit),
    );
    check_bmc_power(&fleet, &sim_err, true, "policy error node, after on");
    check_bmc_power(&fleet, &sim_hard, true, "policy hard-off node, after on");

    let (err, hard) = tokio::join!(
        power(&fleet, Some(&sim_err), &id_err, "soft-off", Some(4), limit),
        power(
            &fleet,
            Some(&sim_hard),
            &id_hard,
            "soft-off",
            Some(4),
            limit
        ),
    );

    // Policy error: power left on, the operation failed with a fault.
    let s = &err.status;
    fleet.ensure(
        s.power_state == Some(PowerState::On)
            && s.last_error.as_deref().is_some_and(|e| {
                e.contains("the OS did not shut down within 4 s") && e.contains("power left on")
            })
            && s.fault.as_deref() == Some("power failure")
            && s.power_op.is_none(),
        || {
            format!(
                "policy error: status power {:?} last_error {:?} fault {:?} op {:?}",
                s.power_state, s.last_error, s.fault, s.power_op
            )
        },
    );
    fleet.ensure(
        has(&err.commands, "set shutdown 1") && !has(&err.commands, "set power 0"),
        || {
            format!(
                "policy error: want a soft off and no hard off: {:?}",
                err.commands
            )
        },
    );
    fleet.ensure(
        err.took >= Duration::from_secs(4) && err.took < Duration::from_secs(12),
        || format!("policy error: ended after {:?}, timeout 4 s", err.took),
    );
    check_bmc_power(
        &fleet,
        &sim_err,
        true,
        "policy error, after the soft-off timeout",
    );
    let shown = show(&fleet, &id_err).await;
    fleet.ensure(
        shown["fault"] == "power failure"
            && text(&shown["last_error"]).contains("did not shut down within 4 s")
            && shown["power_state"] == "power on",
        || format!("policy error: node show {shown:#}"),
    );
    let hist = power_history(&fleet, &id_err).await;
    let last = hist.last().cloned().unwrap_or_default();
    fleet.ensure(
        last["event"] == "soft power off"
            && last["severity"] == "ERROR"
            && text(&last["result"]).contains("did not shut down within 4 s"),
        || format!("policy error: last power history entry {last:#}"),
    );

    // Policy hard-off: forced off after the timeout, and the history says so.
    let s = &hard.status;
    fleet.ensure(
        s.power_state == Some(PowerState::Off)
            && s.last_error.is_none()
            && s.fault.is_none()
            && s.power_op.is_none(),
        || {
            format!(
                "policy hard-off: status power {:?} last_error {:?} fault {:?} op {:?}",
                s.power_state, s.last_error, s.fault, s.power_op
            )
        },
    );
    fleet.ensure(
        in_order(&hard.commands, "set shutdown 1", "set power 0"),
        || {
            format!(
                "policy hard-off: want a soft off, then a hard off: {:?}",
                hard.commands
            )
        },
    );
    fleet.ensure(
        hard.took >= Duration::from_secs(4) && hard.took < Duration::from_secs(12),
        || format!("policy hard-off: ended after {:?}, timeout 4 s", hard.took),
    );
    check_bmc_power(
        &fleet,
        &sim_hard,
        false,
        "policy hard-off, after the timeout",
    );
    let hist = power_history(&fleet, &id_hard).await;
    let last = hist.last().cloned().unwrap_or_default();
    fleet.ensure(
        text(&last["event"]).starts_with("soft power off")
            && text(&last["event"]).contains("forced off")
            && last["severity"] == "INFO"
            && last["result"] == "ok",
        || format!("policy hard-off: last power history entry {last:#}"),
    );

    // The failed node is not stuck: a hard off works and clears the power fault.
    let d = power(&fleet, Some(&sim_err), &id_err, "off", None, limit).await;
    check_done(
        &fleet,
        &d,
        PowerState::Off,
        "off after the soft-off failure",
    );
    check_bmc_power(
        &fleet,
        &sim_err,
        false,
        "policy error node, after a hard off",
    );
    fleet.check_fencing_history().await;
}

/// A soft reboot whose OS ignores the ACPI request, under policy hard-off: forced off, then on;
/// as for a soft power off, the node's history must say that power was forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_reboot_timeout_under_hard_off_says_it_forced() {
    let fleet = fleet("ipmi-soft-reboot-forced").await;
    let (sim, id) = stubborn_node(&fleet, "hard-off").await;
    let limit = Duration::from_secs(30);
    power(&fleet, Some(&sim), &id, "on", None, limit).await;
    let d = power(&fleet, Some(&sim), &id, "soft-reboot", Some(4), limit).await;
    check_done(&fleet, &d, PowerState::On, "soft-reboot");
    fleet.ensure(
        in_order(&d.commands, "set shutdown 1", "set power 0")
            && in_order(&d.commands, "set power 0", "set power 1"),
        || format!("want soft off, forced off, on at the BMC: {:?}", d.commands),
    );
    fleet.ensure(d.took >= Duration::from_secs(4), || {
        format!("forced before the 4 s timeout: {:?}", d.took)
    });
    check_bmc_power(&fleet, &sim, true, "after the forced soft reboot");
    let hist = power_history(&fleet, &id).await;
    let last = hist.last().cloned().unwrap_or_default();
    fleet.ensure(
        text(&last["event"]).starts_with("soft rebooting")
            && text(&last["event"]).contains("forced off")
            && last["result"] == "ok",
        || {
            format!(
                "a soft reboot that forced the power off does not say so: last power history \
                 entry {last:#} (BMC commands {:?})",
                d.commands
            )
        },
    );
    fleet.check_fencing_history().await;
}

// ---------------------------------------------------------------------------------------------
// 3. disable_power_off
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_power_off_refuses_off_and_reboots_by_reset() {
    let fleet = fleet("ipmi-no-off").await;
    let sim = IpmiSim::start();
    let id = enroll(
        &fleet,
        &driver_info(sim.port(), PASSWORD),
        &["--disable-power-off"],
    )
    .await;
    let limit = Duration::from_secs(30);
    let d = power(&fleet, Some(&sim), &id, "on", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "on");
    check_bmc_power(&fleet, &sim, true, "after on");

    // Off and soft off are refused by ctl itself; no request is recorded.
    let (seq_before, _) = request_seqs(&fleet, &id).await;
    let skip = sim.commands().len();
    for action in ["off", "soft-off"] {
        let out = fleet.ctl(&["node", "power", &id, action]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        fleet.ensure(
            out.status.code() == Some(1)
                && stderr.contains("disable_power_off")
                && stderr.contains("refused"),
            || {
                format!(
                    "ctl node power {action} on a disable_power_off node: {}",
                    describe(&out)
                )
            },
        );
    }
    let (seq_after, _) = request_seqs(&fleet, &id).await;
    fleet.ensure(seq_after == seq_before, || {
        format!("a refused power off left a request: seq {seq_before} -> {seq_after}")
    });

    // Reboot becomes a reset: power stays on throughout.
    let d = power(&fleet, Some(&sim), &id, "reboot", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "reboot");
    fleet.ensure(
        has(&d.commands, "set reset 1") && !d.commands.iter().any(|c| c.starts_with("set power")),
        || {
            format!(
                "reboot with power off disabled: want a reset only: {:?}",
                d.commands
            )
        },
    );
    check_bmc_power(&fleet, &sim, true, "after the reset");
    let all: Vec<String> = sim.commands().into_iter().skip(skip).collect();
    fleet.ensure(!has(&all, "set power 0"), || {
        format!("power was cut on a disable_power_off node: {all:?}")
    });
    let hist = power_history(&fleet, &id).await;
    fleet.ensure(
        hist.len() == 2 && hist[1]["event"] == "rebooting" && hist[1]["result"] == "ok",
        || format!("power history: {hist:#?}"),
    );
    fleet.check_fencing_history().await;
}

/// "Ironic will avoid ever issuing an explicit power off request" for such nodes (the NC-SI
/// spec): a soft reboot must not end in a forced power off, whatever the soft-off policy says.
/// Ferric soft-reboots such a node by reset, as it does a reboot: an ACPI soft off would have
/// the OS power the machine off, which is what the flag forbids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_power_off_soft_reboot_timeout_never_forces_power_off() {
    let fleet = fleet("ipmi-no-off-soft").await;
    let sim = IpmiSim::start();
    sim.set_soft_off_delay(None);
    let id = enroll(
        &fleet,
        &driver_info(sim.port(), PASSWORD),
        &["--disable-power-off", "--soft-off-policy", "hard-off"],
    )
    .await;
    let limit = Duration::from_secs(30);
    let d = power(&fleet, Some(&sim), &id, "on", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "on");

    let d = power(&fleet, Some(&sim), &id, "soft-reboot", Some(3), limit).await;
    fleet.ensure(
        has(&d.commands, "set reset 1") && !has(&d.commands, "set shutdown 1"),
        || {
            format!(
                "soft-reboot of a disable_power_off node must be a reset, no ACPI soft off: {:?}",
                d.commands
            )
        },
    );
    let hist = power_history(&fleet, &id).await;
    fleet.ensure(!has(&d.commands, "set power 0"), || {
        format!(
            "soft-reboot on a disable_power_off node forced the power off after the soft \
             timeout: BMC commands {:?}; status power {:?} last_error {:?}; history {:?}",
            d.commands,
            d.status.power_state,
            d.status.last_error,
            hist.last()
        )
    });
    check_bmc_power(&fleet, &sim, true, "after the soft reboot timeout");
    fleet.ensure(d.status.power_op.is_none(), || {
        format!("the operation is still recorded: {:?}", d.status.power_op)
    });
    fleet.check_fencing_history().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Credentials and unreachable BMCs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error_and_the_right_one_works() {
    let fleet = fleet("ipmi-wrong-pw").await;
    let sim = IpmiSim::start();
    let bad = enroll(&fleet, &driver_info(sim.port(), WRONG_PASSWORD), &[]).await;
    let limit = Duration::from_secs(30);

    // Twice: the first failure leaves the node ready for the next request.
    for attempt in 1..=2 {
        let d = power(&fleet, Some(&sim), &bad, "on", None, limit).await;
        let s = &d.status;
        let err = s.last_error.clone().unwrap_or_default();
        fleet.ensure(
            (err.contains("credentials") || err.contains("login"))
                && err.contains(&format!("127.0.0.1:{}", sim.port()))
                && !err.contains(WRONG_PASSWORD)
                && s.power_state != Some(PowerState::On)
                && s.power_op.is_none(),
            || {
                format!(
                    "attempt {attempt}: wrong password: last_error {:?} power {:?} op {:?}",
                    s.last_error, s.power_state, s.power_op
                )
            },
        );
        // Not a transient error: no retries, no waiting out a timeout.
        fleet.ensure(d.took < Duration::from_secs(10), || {
            format!("attempt {attempt}: a rejected login took {:?}", d.took)
        });
        fleet.ensure(!d.commands.iter().any(|c| c.starts_with("set ")), || {
            format!("a command went through without a login: {:?}", d.commands)
        });
        check_bmc_power(&fleet, &sim, false, "after the rejected login");
    }
    // Rejected logins leave no half-open session behind: only ipmitool's own.
    let sessions = active_sessions(&fleet, &sim);
    fleet.ensure(sessions == 1, || {
        format!("{sessions} sessions active after two rejected logins (want only ipmitool's)")
    });
    let hist = power_history(&fleet, &bad).await;
    fleet.ensure(
        hist.len() == 2
            && hist.iter().all(|e| {
                e["severity"] == "ERROR"
                    && (text(&e["result"]).contains("credentials")
                        || text(&e["result"]).contains("login"))
            }),
        || format!("wrong password: power history {hist:#?}"),
    );
    let shown = show(&fleet, &bad).await.to_string();
    fleet.ensure(!shown.contains(WRONG_PASSWORD), || {
        format!("node show leaks the password: {shown}")
    });

    // The same BMC with the right password (no `node update` in ctl yet: a second node).
    let good = enroll(&fleet, &driver_info(sim.port(), PASSWORD), &[]).await;
    let d = power(&fleet, Some(&sim), &good, "on", None, limit).await;
    check_done(&fleet, &d, PowerState::On, "on with the right password");
    check_bmc_power(&fleet, &sim, true, "after on with the right password");
    let logs = fleet.conductor("c1").log();
    fleet.ensure(
        !logs.contains(WRONG_PASSWORD) && !logs.contains(PASSWORD),
        || "the conductor logged a BMC password".to_string(),
    );
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable_within_a_bounded_time() {
    let fleet = fleet("ipmi-closed").await;
    // Nothing listens on this UDP port (the kernel answers ICMP port unreachable).
    let port = free_udp_port();
    let id = enroll(&fleet, &driver_info(port, PASSWORD), &[]).await;
    let d = power(&fleet, None, &id, "on", None, Duration::from_secs(75)).await;
    let s = &d.status;
    fleet.ensure(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable") && e.contains(&format!("127.0.0.1:{port}")))
            && s.power_op.is_none()
            && s.power_state.is_none(),
        || {
            format!(
                "closed port: last_error {:?} power {:?} op {:?}",
                s.last_error, s.power_state, s.power_op
            )
        },
    );
    // Retries included, within Ironic's 60 s for a hard power action.
    fleet.ensure(d.took <= Duration::from_secs(62), || {
        format!("closed port: the request ended after {:?}", d.took)
    });
    let hist = power_history(&fleet, &id).await;
    fleet.ensure(
        hist.len() == 1
            && hist[0]["severity"] == "ERROR"
            && text(&hist[0]["result"]).contains("unreachable"),
        || format!("closed port: power history {hist:#?}"),
    );
    let retries = fleet
        .conductor("c1")
        .log()
        .matches("BMC error; retrying")
        .count();
    fleet.note(&format!(
        "closed port: failed after {:.1} s and {retries} retries",
        d.took.as_secs_f64()
    ));
    fleet.check_fencing_history().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_bmc_mid_operation_is_unreachable_and_the_node_recovers() {
    let fleet = fleet("ipmi-frozen").await;
    let sim = IpmiSim::start();
    sim.set_soft_off_delay(None);
    let id = enroll(&fleet, &driver_info(sim.port(), PASSWORD), &[]).await;
    let limit = Duration::from_secs(30);
    power(&fleet, Some(&sim), &id, "on", None, limit).await;
    check_bmc_power(&fleet, &sim, true, "after on");

    // A soft off the OS never completes keeps the operation polling the BMC for 10 s: freeze
    // the BMC while it does (after the graceful request is recorded as sent).
    fleet
        .ctl_ok(&["node", "power", &id, "soft-off", "--timeout", "10"])
        .await;
    let (seq, _) = request_seqs(&fleet, &id).await;
    fleet
        .wait_until(limit, "the soft off is sent and recorded", async || {
            let s = fleet.status(&id).await?;
            match &s.power_op {
                Some(op) if op.seq == seq && op.soft_sent => Ok(()),
                other => Err(format!(
                    "power_op {other:?}, power_seq_done {}",
                    s.power_seq_done
                )),
            }
        })
        .await;
    fleet.ensure(has(&sim.commands(), "set shutdown 1"), || {
        format!(
            "soft off recorded as sent but not at the BMC: {:?}",
            sim.commands()
        )
    });
    let frozen_at = Instant::now();
    sim.freeze();
    fleet.note("ipmi_sim frozen (SIGSTOP)");

    let s = fleet
        .wait_power_done(&id, seq, Duration::from_secs(60))
        .await;
    let took = frozen_at.elapsed();
    fleet.note(&format!(
        "frozen BMC: operation ended {:.1} s after the freeze: last_error {:?}",
        took.as_secs_f64(),
        s.last_error
    ));
    sim.thaw();
    fleet.note("ipmi_sim thawed (SIGCONT)");
    fleet.ensure(
        s.last_error.as_deref().is_some_and(|e| {
            e.contains("unreachable") && e.contains(&format!("127.0.0.1:{}", sim.port()))
        }) && s.power_op.is_none()
            && s.target_power_state.is_none(),
        || {
            format!(
                "frozen BMC: last_error {:?} op {:?} target {:?}",
                s.last_error, s.power_op, s.target_power_state
            )
        },
    );
    let hist = power_history(&fleet, &id).await;
    let last = hist.last().cloned().unwrap_or_default();
    fleet.ensure(
        last["event"] == "soft power off"
            && last["severity"] == "ERROR"
            && text(&last["result"]).contains("unreachable"),
        || format!("frozen BMC: last power history entry {last:#}"),
    );

    // The OS never shut down: still on. The node is not stuck: the next request works.
    check_bmc_power(&fleet, &sim, true, "after the thaw");
    let d = power(&fleet, Some(&sim), &id, "off", None, limit).await;
    check_done(&fleet, &d, PowerState::Off, "off after the thaw");
    check_bmc_power(&fleet, &sim, false, "after off");
    let sessions = active_sessions(&fleet, &sim);
    fleet.note(&format!("active sessions after the thaw: {sessions}"));
    fleet.ensure(sessions <= 3, || {
        format!(
            "{sessions} sessions active on the BMC after the thaw (ours and ipmitool's expected)"
        )
    });
    fleet.check_fencing_history().await;
}

// ---------------------------------------------------------------------------------------------
// 5. No session leak
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_requests_leak_no_session() {
    let fleet = fleet("ipmi-sessions").await;
    let sim = IpmiSim::start();
    let id = enroll(&fleet, &driver_info(sim.port(), PASSWORD), &[]).await;
    let limit = Duration::from_secs(30);
    let skip = sim.commands().len();
    let started = Instant::now();
    // 100 requests, each a read, a power change and a read back at the BMC: 300 commands,
    // far more than the BMC's 63 session slots.
    for i in 0..100 {
        let (action, want) = if i % 2 == 0 {
            ("on", PowerState::On)
        } else {
            ("off", PowerState::Off)
        };
        let d = power_quiet(&fleet, None, &id, action, None, limit).await;
        check_done(&fleet, &d, want, &format!("request {i} ({action})"));
    }
    let took = started.elapsed();
    let log: Vec<String> = sim.commands().into_iter().skip(skip).collect();
    let changes = log.iter().filter(|c| c.starts_with("set power")).count();
    let reads = log.iter().filter(|c| *c == "get power").count();
    fleet.note(&format!(
        "100 requests in {:.1} s: {changes} power changes and {reads} power reads at the BMC",
        took.as_secs_f64()
    ));
    fleet.ensure(changes == 100 && reads >= 200, || {
        format!("want 100 power changes and at least 200 reads at the BMC: {changes}, {reads}")
    });
    // Ends off (the last request was off); the BMC still answers a new client.
    check_bmc_power(&fleet, &sim, false, "after 100 requests");
    let sessions = active_sessions(&fleet, &sim);
    fleet.note(&format!("active sessions after 100 requests: {sessions}"));
    fleet.ensure(sessions <= 2, || {
        format!("{sessions} sessions active after 100 requests: want the conductor's one and ipmitool's")
    });
    let hist = power_history(&fleet, &id).await;
    fleet.ensure(
        hist.len() == 100 && hist.iter().all(|e| e["result"] == "ok"),
        || {
            format!(
                "power history: {} entries, not all ok: {hist:#?}",
                hist.len()
            )
        },
    );
    fleet.check_fencing_history().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Invalid driver_info at enroll
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_driver_info_is_refused_at_enroll() {
    let fleet = fleet("ipmi-enroll").await;
    let cases = [
        (
            serde_json::json!({"ipmi_port": 623, "ipmi_username": USERNAME, "ipmi_password": PASSWORD}),
            "ipmi_address is required",
        ),
        (
            serde_json::json!({"ipmi_address": "", "ipmi_username": USERNAME}),
            "ipmi_address is required",
        ),
        (
            serde_json::json!({"ipmi_address": "127.0.0.1", "ipmi_port": 70000, "ipmi_password": PASSWORD}),
            "ipmi_port 70000 is not a port number",
        ),
        (
            serde_json::json!({"ipmi_address": "127.0.0.1", "ipmi_port": 0}),
            "ipmi_port 0 is not a port number",
        ),
        (
            serde_json::json!({"ipmi_address": "127.0.0.1", "ipmi_port": "65536"}),
            "is not a port number",
        ),
        (
            serde_json::json!({"ipmi_address": "127.0.0.1", "ipmi_port": -1}),
            "is not a port number",
        ),
    ];
    for (i, (info, why)) in cases.iter().enumerate() {
        let info = info.to_string();
        let name = format!("bad-{i}");
        let out = fleet
            .ctl(&[
                "node",
                "create",
                "--driver",
                "ipmi",
                "--name",
                &name,
                "--driver-info",
                &info,
            ])
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        fleet.ensure(
            out.status.code() == Some(1)
                && stderr.contains("invalid driver_info")
                && stderr.contains(why)
                && !stderr.contains(PASSWORD)
                && out.stdout.is_empty(),
            || {
                format!(
                    "ctl node create with driver_info {info}: want {why:?}: {}",
                    describe(&out)
                )
            },
        );
    }
    let snap = fleet.snapshot().await.unwrap_or_else(|e| fleet.fail(&e));
    fleet.ensure(
        snap.nodes.is_empty() && snap.names.is_empty() && snap.statuses.is_empty(),
        || {
            format!(
                "refused enrollments left records: nodes {:?} names {:?} statuses {:?}",
                snap.nodes.keys(),
                snap.names.keys(),
                snap.statuses.keys()
            )
        },
    );
    let listed = fleet.ctl_ok(&["node", "list", "--json"]).await;
    fleet.ensure(listed.trim() == "[]", || format!("node list: {listed}"));

    // The same command with a valid driver_info is accepted (the checks are not blanket).
    let id = fleet
        .create_nodes(
            1,
            &[
                "--driver",
                "ipmi",
                "--name",
                "good",
                "--driver-info",
                &driver_info(623, PASSWORD),
            ],
        )
        .await
        .remove(0);
    let snap = fleet.snapshot().await.unwrap_or_else(|e| fleet.fail(&e));
    fleet.ensure(
        snap.nodes.len() == 1 && snap.nodes.contains_key(&id),
        || format!("after a valid create: nodes {:?}", snap.nodes.keys()),
    );
}
