//! Unit tests of the node decisions: every verb, outcome and takeover on plain data.

use super::*;
use crate::decide::agent::{
    next_call, on_answer, on_heartbeat, wait_timeout, AgentCall, CallResult, CommandResult,
    CommandState, Heartbeat, Then,
};
use ferric_model::HeartbeatRecord;
use ferric_model::{NodeId, PowerState, PowerTarget};

fn spec() -> NodeSpec {
    NodeSpec::new(NodeId::new_random(), "fake-hardware", 0)
}

fn owned(token: i64) -> NodeStatus {
    NodeStatus {
        owner: Some("c1".into()),
        fence: token,
        ..NodeStatus::default()
    }
}

fn preq(seq: u64, target: PowerTarget) -> PowerRequest {
    PowerRequest {
        seq,
        target,
        timeout_s: None,
        requested_by: "t".into(),
        requested_at_ms: 0,
    }
}

fn vreq(seq: u64, verb: Verb) -> ProvisionRequest {
    ProvisionRequest {
        seq,
        verb,
        maintenance_ok: false,
        args: String::new(),
        requested_by: "t".into(),
        requested_at_ms: 0,
    }
}

#[test]
fn a_new_owner_takes_over_before_anything_else() {
    let mut s = spec();
    s.power_request = Some(preq(1, PowerTarget::On));
    assert_eq!(
        next_step(&s, &NodeStatus::default(), "c1", FenceToken(5)),
        Step::TakeOver
    );
    // Same owner name but an older token (a previous run of the same conductor).
    assert_eq!(
        next_step(&s, &owned(4), "c1", FenceToken(5)),
        Step::TakeOver
    );
    assert_eq!(
        next_step(&s, &owned(5), "c1", FenceToken(5)),
        Step::Power(preq(1, PowerTarget::On))
    );
}

#[test]
fn power_comes_before_provision_and_done_requests_are_idle() {
    let mut s = spec();
    s.power_request = Some(preq(2, PowerTarget::Off));
    s.provision_request = Some(vreq(1, Verb::Manage));
    let mut st = owned(5);
    assert!(matches!(
        next_step(&s, &st, "c1", FenceToken(5)),
        Step::Power(_)
    ));
    st = power_finished(
        &st,
        2,
        &Outcome::Done {
            power: PowerState::Off,
            note: None,
        },
        1,
    );
    assert!(matches!(
        next_step(&s, &st, "c1", FenceToken(5)),
        Step::Provision(_)
    ));
    st.provision_seq_done = 1;
    assert_eq!(next_step(&s, &st, "c1", FenceToken(5)), Step::Idle);
}

#[test]
fn takeover_fails_busy_states_and_keeps_waits() {
    let mut st = owned(3);
    st.provision_state = ProvisionState::Deploying;
    let t = take_over(&st, "c2", FenceToken(9), 1_000, None);
    assert_eq!(t.provision_state, ProvisionState::DeployFailed);
    assert_eq!(t.owner.as_deref(), Some("c2"));
    assert_eq!(t.fence, 9);
    let err = t.last_error.unwrap();
    assert!(err.contains("c1") && err.contains("deploying"), "{err}");

    st.provision_state = ProvisionState::CleanWait;
    st.deadline_ms = Some(77);
    let t = take_over(&st, "c2", FenceToken(9), 1_000, None);
    assert_eq!(t.provision_state, ProvisionState::CleanWait);
    assert_eq!(t.deadline_ms, Some(77));
    assert_eq!(t.last_error, None);
}

#[test]
fn only_a_recovering_takeover_is_written() {
    let quiet = owned(3);
    assert!(!takeover_needs_write(
        &quiet,
        &take_over(&quiet, "c2", FenceToken(9), 1, None)
    ));
    let mut busy = owned(3);
    busy.provision_state = ProvisionState::Cleaning;
    assert!(takeover_needs_write(
        &busy,
        &take_over(&busy, "c2", FenceToken(9), 1, None)
    ));
    let mut powering = owned(3);
    powering.target_power_state = Some(PowerTarget::On);
    assert!(takeover_needs_write(
        &powering,
        &take_over(&powering, "c2", FenceToken(9), 1, None)
    ));
}

#[test]
fn a_power_operation_is_recorded_then_resumed_with_its_deadline() {
    let mut s = spec();
    let req = preq(4, PowerTarget::SoftOff);
    s.power_request = Some(req.clone());
    let (st, plan, phase) = power_start(&s, &owned(1), &req, 1_000);
    assert_eq!(phase, Phase::Begin);
    assert_eq!(plan.deadline_ms, 1_000 + 600_000);
    let op = st.power_op.clone().unwrap();
    assert_eq!((op.seq, op.soft_sent), (4, false));
    assert_eq!(st.target_power_state, Some(PowerTarget::SoftOff));

    // Another conductor takes over after the graceful request went out.
    let mut taken = st.clone();
    taken.power_op.as_mut().unwrap().soft_sent = true;
    let (_, plan2, phase2) = power_start(&s, &taken, &req, 50_000);
    assert_eq!(phase2, Phase::SoftSent);
    assert_eq!(plan2.deadline_ms, plan.deadline_ms);

    let done = power_finished(
        &taken,
        4,
        &Outcome::Failed {
            error: "the OS did not shut down".into(),
            fault: true,
            power: Some(PowerState::On),
        },
        2,
    );
    assert_eq!(done.power_seq_done, 4);
    assert_eq!(done.power_op, None);
    assert_eq!(done.fault.as_deref(), Some(POWER_FAULT));
    assert_eq!(done.power_state, Some(PowerState::On));
    let ok = power_finished(
        &done,
        5,
        &Outcome::Done {
            power: PowerState::Off,
            note: None,
        },
        3,
    );
    assert_eq!(ok.fault, None);
    assert_eq!(ok.last_error, None);
}

fn fake(step_secs: f64, fail: &str) -> NodeSpec {
    let mut s = spec();
    s.driver_info = format!(r#"{{"fake_step_secs": {step_secs}, "fake_fail_states": "{fail}"}}"#);
    s
}

/// Runs provisioning work to its end, as the node actor does, without timing.
fn drive(spec: &NodeSpec, mut st: NodeStatus, req: &ProvisionRequest) -> NodeStatus {
    let (next, work) = begin_provision(spec, &st, req, 0, 1000);
    st = next;
    let mut work = work.unwrap_or(None);
    while let Some(w) = work {
        let (next, more) = match w {
            Work::Verify => step_done(spec, &st, ProvisionState::Verifying, Ok(()), 0),
            Work::Step { state, ok, .. } => step_done(
                spec,
                &st,
                state,
                if ok {
                    Ok(())
                } else {
                    Err(format!("step in {} failed", state.as_str()))
                },
                0,
            ),
            Work::Hardware { state, hw } => hardware_done(spec, &st, state, hw, Ok(()), 0, 0, 1000),
        };
        st = next;
        work = more;
    }
    st
}

#[test]
fn the_fake_deploy_interface_drives_the_main_path() {
    let s = fake(0.0, "");
    let mut st = owned(1);
    for (seq, verb, want) in [
        (1, Verb::Manage, ProvisionState::Manageable),
        (2, Verb::Provide, ProvisionState::Available),
        (3, Verb::Deploy, ProvisionState::Active),
        (4, Verb::Rebuild, ProvisionState::Active),
        (5, Verb::Rescue, ProvisionState::Rescue),
        (6, Verb::Unrescue, ProvisionState::Active),
        (7, Verb::Undeploy, ProvisionState::Available),
        (8, Verb::Manage, ProvisionState::Manageable),
        (9, Verb::Inspect, ProvisionState::Manageable),
        (10, Verb::Clean, ProvisionState::Manageable),
        (11, Verb::Adopt, ProvisionState::Active),
        (12, Verb::Service, ProvisionState::Active),
    ] {
        st = drive(&s, st, &vreq(seq, verb));
        assert_eq!(st.provision_state, want, "after {verb:?}: {st:?}");
        assert_eq!(st.target_provision_state, None);
        assert_eq!(st.last_error, None);
        assert_eq!(st.provision_seq_done, seq);
    }
}

#[test]
fn a_failing_fake_step_lands_in_the_failed_state() {
    let s = fake(0.0, "deploying, cleaning");
    let mut st = owned(1);
    st.provision_state = ProvisionState::Available;
    st = drive(&s, st, &vreq(1, Verb::Deploy));
    assert_eq!(st.provision_state, ProvisionState::DeployFailed);
    assert!(st.last_error.unwrap().contains("deploying"));
    let mut st = owned(1);
    st.provision_state = ProvisionState::Manageable;
    st = drive(&s, st, &vreq(1, Verb::Provide));
    assert_eq!(st.provision_state, ProvisionState::CleanFailed);
    assert_eq!(
        deploy_interface(&s).unwrap(),
        DeployInterface::Fake {
            step_ms: 0,
            fail_in: vec![ProvisionState::Deploying, ProvisionState::Cleaning]
        }
    );
}

fn agent_spec() -> NodeSpec {
    let mut s = spec();
    s.driver = "redfish".into();
    s
}

fn hb(at_ms: u64, token: &str) -> HeartbeatRecord {
    HeartbeatRecord {
        at_ms,
        callback_url: "http://127.0.0.1:9999/".into(),
        agent_version: None,
        agent_token: Some(token.into()),
        agent_verify_ca: None,
        agent_status: None,
        agent_status_message: None,
        recorded_by: "gw".into(),
    }
}

/// What the gateway records when inspection data arrives (`error`: the data carried one).
fn inspection_result(at_ms: u64, error: Option<&str>) -> HeartbeatRecord {
    use ferric_model::heartbeat::{INSPECTION_DATA, INSPECTION_ERROR};
    HeartbeatRecord {
        callback_url: String::new(),
        agent_token: None,
        agent_status: Some(
            if error.is_some() {
                INSPECTION_ERROR
            } else {
                INSPECTION_DATA
            }
            .into(),
        ),
        agent_status_message: error.map(str::to_string),
        ..hb(at_ms, "")
    }
}

#[test]
fn inspect_wait_ends_with_the_inspection_data_not_a_heartbeat() {
    let s = agent_spec();
    let mut st = owned(1);
    st.provision_state = ProvisionState::Manageable;
    let (st, _) = begin_provision(&s, &st, &vreq(1, Verb::Inspect), 0, 1000);
    let (st, _) = hardware_done(
        &s,
        &st,
        ProvisionState::Inspecting,
        Hardware::BootRamdisk,
        Ok(()),
        10,
        10,
        1000,
    );
    assert_eq!(st.provision_state, ProvisionState::InspectWait);
    assert!(matches!(
        on_heartbeat(&s, &st, &hb(20, "t"), 1, 20, 1000),
        Heartbeat::Ignored(_)
    ));
    // The agent's token (pinned or not) does not apply to the gateway's record.
    let mut pinned = st.clone();
    pinned.agent.as_mut().unwrap().token = Some("t".into());
    let (done, work) = progress(on_heartbeat(
        &s,
        &pinned,
        &inspection_result(21, None),
        2,
        21,
        1000,
    ));
    assert_eq!(done.provision_state, ProvisionState::Inspecting);
    assert_eq!(
        work,
        Some(Work::Hardware {
            state: ProvisionState::Inspecting,
            hw: Hardware::PowerOff
        })
    );
    let (failed, _) = progress(on_heartbeat(
        &s,
        &st,
        &inspection_result(22, Some("no disks found")),
        3,
        22,
        1000,
    ));
    assert_eq!(failed.provision_state, ProvisionState::InspectFailed);
    assert!(failed
        .last_error
        .as_deref()
        .unwrap()
        .contains("no disks found"));
    // Inspection data means nothing to a node that waits for something else.
    let mut cleaning = owned(1);
    cleaning.provision_state = ProvisionState::Manageable;
    let (c, _) = begin_provision(&s, &cleaning, &vreq(1, Verb::Provide), 0, 1000);
    let (c, _) = hardware_done(
        &s,
        &c,
        ProvisionState::Cleaning,
        Hardware::BootRamdisk,
        Ok(()),
        10,
        10,
        1000,
    );
    assert_eq!(c.provision_state, ProvisionState::CleanWait);
    assert!(matches!(
        on_heartbeat(&s, &c, &inspection_result(23, None), 4, 23, 1000),
        Heartbeat::Ignored(_)
    ));
}

fn progress(h: Heartbeat) -> (NodeStatus, Option<Work>) {
    match h {
        Heartbeat::Progress { status, work, .. } => (*status, work),
        other => panic!("expected progress, got {other:?}"),
    }
}

/// IPA as a pure function: every command succeeds at once; `get_*_steps` reports IPA's
/// generic steps. Returns the answer and the call as `name [step]`.
fn ipa(call: &AgentCall) -> (CallResult, String) {
    let AgentCall::Run { name, step, params } = call else {
        panic!("only posts expected here: {call:?}");
    };
    let short = name.split_once('.').unwrap().1;
    let steps = |kind: &str| {
        let list = if kind == "deploy" {
            serde_json::json!([
                { "step": "write_image", "priority": 0, "interface": "deploy" },
                { "step": "apply_configuration", "priority": 0, "interface": "raid" },
            ])
        } else {
            serde_json::json!([
                { "step": "erase_devices", "priority": 10, "interface": "deploy" },
                { "step": "erase_devices_metadata", "priority": 99, "interface": "deploy" },
            ])
        };
        serde_json::json!({
            format!("{kind}_steps"): { "GenericHardwareManager": list },
            "hardware_manager_version": { "generic_hardware_manager": "1.2" },
        })
    };
    let result = match short {
        "get_clean_steps" => steps("clean"),
        "get_deploy_steps" => steps("deploy"),
        "get_service_steps" => steps("service"),
        "get_partition_uuids" => serde_json::json!({ "root uuid": "0x1234" }),
        _ => serde_json::json!({ "step": params.get("step") }),
    };
    let shown = match step {
        Some(st) => format!("{name} {st}"),
        None => name.clone(),
    };
    (
        CallResult::Command(CommandResult {
            id: "c".into(),
            name: short.into(),
            state: CommandState::Succeeded,
            result,
        }),
        shown,
    )
}

/// A heartbeat, then the conductor's calls answered by `ipa` until the agent's part ends.
fn heartbeat_and_commands(
    s: &NodeSpec,
    st: &NodeStatus,
    beat: &HeartbeatRecord,
    rev: i64,
    now: u64,
) -> (NodeStatus, Option<Work>, Vec<String>) {
    let mut st = match on_heartbeat(s, st, beat, rev, now, 1000) {
        Heartbeat::Drive(Some(next)) => *next,
        Heartbeat::Drive(None) => st.clone(),
        other => {
            return {
                let (st, work) = progress(other);
                (st, work, vec![])
            }
        }
    };
    let mut calls = Vec::new();
    for _ in 0..50 {
        let Some(call) = next_call(s, &st) else {
            return (st, None, calls);
        };
        let (result, shown) = ipa(&call);
        calls.push(shown);
        let answer = on_answer(s, &st, &call, result, now, 3);
        if let Some(next) = answer.status {
            st = *next;
        }
        if answer.then == Then::Stop {
            return (st, answer.work, calls);
        }
    }
    panic!("the agent's part did not end: {st:?}");
}

#[test]
fn the_agent_drives_a_deploy_through_wait_call_back() {
    let s = agent_spec();
    let mut st = owned(1);
    st.provision_state = ProvisionState::Available;
    let (st, work) = begin_provision(&s, &st, &vreq(1, Verb::Deploy), 10, 1000);
    assert_eq!(st.provision_state, ProvisionState::Deploying);
    let boot = Work::Hardware {
        state: ProvisionState::Deploying,
        hw: Hardware::BootRamdisk,
    };
    assert_eq!(work, Ok(Some(boot)));
    let (st, work) = hardware_done(
        &s,
        &st,
        ProvisionState::Deploying,
        Hardware::BootRamdisk,
        Ok(()),
        20,
        20,
        1000,
    );
    assert_eq!(work, None);
    assert_eq!(st.provision_state, ProvisionState::WaitCallBack);
    assert_eq!(st.target_provision_state, Some(ProvisionState::Active));
    assert_eq!(st.deadline_ms, Some(1020));
    let agent = st.agent.clone().unwrap();
    assert!(agent.steps.is_empty(), "the agent reports its steps");
    assert_eq!(agent.booted_at_ms, 20);
    // Sent before the ramdisk boot: stale.
    assert!(matches!(
        on_heartbeat(&s, &st, &hb(19, "t"), 5, 30, 1000),
        Heartbeat::Ignored(_)
    ));
    let Heartbeat::Drive(Some(linked)) = on_heartbeat(&s, &st, &hb(25, "t"), 6, 30, 1000) else {
        panic!("the first heartbeat links the agent");
    };
    assert_eq!(linked.agent.as_ref().unwrap().token.as_deref(), Some("t"));
    assert_eq!(
        linked.agent_link.as_ref().unwrap().url,
        "http://127.0.0.1:9999/"
    );
    // The same agent again, with half the timeout left, changes nothing; with less, the
    // deadline moves (Ironic's heartbeat touches the node).
    assert_eq!(
        on_heartbeat(&s, &linked, &hb(26, "t"), 7, 400, 1000),
        Heartbeat::Drive(None)
    );
    let Heartbeat::Drive(Some(touched)) = on_heartbeat(&s, &linked, &hb(26, "t"), 7, 600, 1000)
    else {
        panic!("the deadline moves");
    };
    assert_eq!(touched.deadline_ms, Some(1600));
    // Another token does nothing.
    assert_eq!(
        on_heartbeat(&s, &linked, &hb(26, "x"), 7, 31, 1000),
        Heartbeat::WrongToken
    );
    let (st, work, calls) = heartbeat_and_commands(&s, &st, &hb(27, "t"), 8, 40);
    // Ironic's order for a whole-disk image booting in UEFI.
    assert_eq!(
        calls,
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step deploy.write_image",
            "standby.get_partition_uuids",
            "image.install_bootloader",
            "standby.power_off",
        ]
    );
    assert_eq!(st.provision_state, ProvisionState::Deploying);
    assert_eq!(st.deadline_ms, None);
    let finish = Work::Hardware {
        state: ProvisionState::Deploying,
        hw: Hardware::BootDisk,
    };
    assert_eq!(work, Some(finish));
    let (st, work) = hardware_done(
        &s,
        &st,
        ProvisionState::Deploying,
        Hardware::BootDisk,
        Ok(()),
        50,
        50,
        1000,
    );
    assert_eq!((st.provision_state, work), (ProvisionState::Active, None));
    assert_eq!(st.agent, None);
    assert_eq!(st.target_provision_state, None);
}

/// Every agent state: boot, one heartbeat per step, the conductor's part; and what it ends in.
#[test]
fn every_agent_verb_reaches_its_end_state() {
    let s = agent_spec();
    for (from, verb, want) in [
        (
            ProvisionState::Manageable,
            Verb::Provide,
            ProvisionState::Available,
        ),
        (
            ProvisionState::Manageable,
            Verb::Inspect,
            ProvisionState::Manageable,
        ),
        (
            ProvisionState::Manageable,
            Verb::Clean,
            ProvisionState::Manageable,
        ),
        (
            ProvisionState::Active,
            Verb::Rebuild,
            ProvisionState::Active,
        ),
        (ProvisionState::Active, Verb::Rescue, ProvisionState::Rescue),
        (
            ProvisionState::Rescue,
            Verb::Unrescue,
            ProvisionState::Active,
        ),
        (
            ProvisionState::Active,
            Verb::Service,
            ProvisionState::Active,
        ),
        (
            ProvisionState::Active,
            Verb::Undeploy,
            ProvisionState::Available,
        ),
    ] {
        let mut st = owned(1);
        st.provision_state = from;
        let (mut st, work) = begin_provision(&s, &st, &vreq(1, verb), 0, 1000);
        let mut work = work.unwrap();
        let mut rev = 0;
        for _ in 0..20 {
            match work {
                Some(Work::Hardware { state, hw }) => {
                    (st, work) =
                        hardware_done(&s, &st, state, hw, Ok(()), rev as u64, rev as u64, 1000)
                }
                Some(Work::Step { state, ok, .. }) => {
                    (st, work) = step_done(&s, &st, state, step_ok(ok), rev as u64)
                }
                Some(Work::Verify) => unreachable!(),
                None if st.provision_state.is_wait() => {
                    rev += 1;
                    // Inspection ends with the inspection data, the rest with heartbeats.
                    let mut beat = hb(rev as u64, "t");
                    if st.provision_state == ProvisionState::InspectWait {
                        beat = inspection_result(rev as u64, None);
                    }
                    (st, work, _) = heartbeat_and_commands(&s, &st, &beat, rev, rev as u64);
                }
                None => break,
            }
        }
        assert_eq!(st.provision_state, want, "{verb:?} from {from}: {st:?}");
        assert_eq!(st.last_error, None);
        assert_eq!(st.agent, None);
        assert_eq!(st.fault, None);
    }
}

fn step_ok(ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("failed".into())
    }
}

#[test]
fn wait_states_time_out_into_their_failed_states_but_not_in_maintenance() {
    let mut s = agent_spec();
    for (busy, wait, failed, fault) in [
        (
            ProvisionState::Deploying,
            ProvisionState::WaitCallBack,
            ProvisionState::DeployFailed,
            None,
        ),
        (
            ProvisionState::Cleaning,
            ProvisionState::CleanWait,
            ProvisionState::CleanFailed,
            Some("clean failure"),
        ),
        (
            ProvisionState::Inspecting,
            ProvisionState::InspectWait,
            ProvisionState::InspectFailed,
            None,
        ),
        (
            ProvisionState::Rescuing,
            ProvisionState::RescueWait,
            ProvisionState::RescueFailed,
            None,
        ),
        (
            ProvisionState::Servicing,
            ProvisionState::ServiceWait,
            ProvisionState::ServiceFailed,
            Some("service failure"),
        ),
    ] {
        s.maintenance = false;
        let mut st = owned(1);
        st.provision_state = busy;
        let (st, _) = hardware_done(&s, &st, busy, Hardware::BootRamdisk, Ok(()), 100, 100, 1000);
        assert_eq!(st.provision_state, wait);
        assert_eq!(wait_timeout(&s, &st, 1099), None, "not yet");
        let (failed_st, error) = wait_timeout(&s, &st, 1100).expect("timed out");
        assert_eq!(failed_st.provision_state, failed, "{wait}");
        assert!(error.contains("Timeout reached"), "{error}");
        assert_eq!(failed_st.fault.as_deref(), fault, "{wait}");
        assert_eq!(failed_st.deadline_ms, None);
        // In maintenance nothing advances the node: no timeout, heartbeats recorded only.
        s.maintenance = true;
        assert_eq!(wait_timeout(&s, &st, 5000), None);
        assert_eq!(
            on_heartbeat(&s, &st, &hb(200, "t"), 3, 200, 1000),
            Heartbeat::InMaintenance
        );
        // Leaving maintenance gives the agent a whole timeout again.
        let mut left = st.clone();
        crate::decide::agent::restart_wait_on_leaving_maintenance(&mut left, 5000, 1000);
        s.maintenance = false;
        assert_eq!(wait_timeout(&s, &left, 5999), None);
        assert!(wait_timeout(&s, &left, 6000).is_some());
    }
}

#[test]
fn work_asked_for_in_maintenance_hears_its_agent() {
    let mut s = agent_spec();
    s.maintenance = true;
    let mut req = vreq(1, Verb::Clean);
    req.maintenance_ok = true;
    s.provision_request = Some(req.clone());
    let mut st = owned(1);
    st.provision_state = ProvisionState::Manageable;
    let (st, _) = begin_provision(&s, &st, &req, 0, 1000);
    let (st, _) = hardware_done(
        &s,
        &st,
        ProvisionState::Cleaning,
        Hardware::BootRamdisk,
        Ok(()),
        10,
        10,
        1000,
    );
    assert_eq!(st.provision_state, ProvisionState::CleanWait);
    assert!(st.agent.as_ref().unwrap().maintenance_ok);
    let (st, work, _) = heartbeat_and_commands(&s, &st, &hb(20, "t"), 1, 20);
    assert_eq!(st.provision_state, ProvisionState::Cleaning);
    assert_eq!(
        work,
        Some(Work::Hardware {
            state: ProvisionState::Cleaning,
            hw: Hardware::PowerOff
        })
    );
}

#[test]
fn an_agent_error_or_failed_hardware_fails_the_state() {
    let s = agent_spec();
    let mut st = owned(1);
    st.provision_state = ProvisionState::Cleaning;
    let (st, _) = hardware_done(
        &s,
        &st,
        ProvisionState::Cleaning,
        Hardware::BootRamdisk,
        Ok(()),
        10,
        10,
        1000,
    );
    let mut bad = hb(20, "t");
    bad.agent_status = Some("error".into());
    bad.agent_status_message = Some("disk 3 did not erase".into());
    let (failed, _) = progress(on_heartbeat(&s, &st, &bad, 1, 20, 1000));
    assert_eq!(failed.provision_state, ProvisionState::CleanFailed);
    assert!(failed.last_error.as_deref().unwrap().contains("disk 3"));
    assert_eq!(failed.fault.as_deref(), Some("clean failure"));
    assert_eq!(failed.fault_at_ms, Some(20));

    let mut st = owned(1);
    st.provision_state = ProvisionState::Deploying;
    let (failed, work) = hardware_done(
        &s,
        &st,
        ProvisionState::Deploying,
        Hardware::BootRamdisk,
        Err("BMC unreachable".into()),
        5,
        5,
        1000,
    );
    assert_eq!(
        (failed.provision_state, work),
        (ProvisionState::DeployFailed, None)
    );
    assert!(failed.last_error.unwrap().contains("BMC unreachable"));
    assert_eq!(failed.fault, None, "a failed deploy is not a fault");
}

#[test]
fn a_rescue_abort_that_cannot_power_off_is_a_fault() {
    let s = agent_spec();
    let mut st = owned(1);
    st.provision_state = ProvisionState::RescueWait;
    let (st, work) = begin_provision(&s, &st, &vreq(1, Verb::Abort), 0, 1000);
    assert_eq!(st.provision_state, ProvisionState::RescueFailed);
    let off = Work::Hardware {
        state: ProvisionState::RescueFailed,
        hw: Hardware::PowerOff,
    };
    assert_eq!(work, Ok(Some(off)));
    let (ok, _) = hardware_done(
        &s,
        &st,
        ProvisionState::RescueFailed,
        Hardware::PowerOff,
        Ok(()),
        1,
        1,
        1000,
    );
    assert_eq!(ok.fault, None);
    let (bad, _) = hardware_done(
        &s,
        &st,
        ProvisionState::RescueFailed,
        Hardware::PowerOff,
        Err("no answer".into()),
        1,
        1,
        1000,
    );
    assert_eq!(bad.fault.as_deref(), Some("rescue abort failure"));
    assert_eq!(bad.provision_state, ProvisionState::RescueFailed);
}

#[test]
fn a_stale_step_result_changes_nothing() {
    let s = fake(0.0, "");
    let mut st = owned(1);
    st.provision_state = ProvisionState::Active;
    let (next, work) = step_done(&s, &st, ProvisionState::Deploying, Ok(()), 0);
    assert_eq!(next, st);
    assert_eq!(work, None);
}

#[test]
fn manage_verifies_through_the_driver() {
    let s = spec();
    let st = owned(1);
    let (verifying, work) = begin_provision(&s, &st, &vreq(1, Verb::Manage), 0, 1000);
    assert_eq!(work, Ok(Some(Work::Verify)));
    assert_eq!(verifying.provision_state, ProvisionState::Verifying);
    assert_eq!(
        verifying.target_provision_state,
        Some(ProvisionState::Manageable)
    );
    let (ok, more) = step_done(&s, &verifying, ProvisionState::Verifying, Ok(()), 1);
    assert_eq!(
        (ok.provision_state, more),
        (ProvisionState::Manageable, None)
    );
    let (failed, _) = step_done(
        &s,
        &verifying,
        ProvisionState::Verifying,
        Err("no answer".into()),
        1,
    );
    assert_eq!(failed.provision_state, ProvisionState::Enroll);
    assert!(failed.last_error.unwrap().contains("no answer"));
}

#[test]
fn invalid_verbs_are_recorded_and_move_nothing() {
    let (next, work) = begin_provision(&spec(), &owned(1), &vreq(3, Verb::Provide), 0, 1000);
    assert!(work.is_err());
    assert_eq!(next.provision_state, ProvisionState::Enroll);
    assert_eq!(next.provision_seq_done, 3);
    assert!(next.last_error.unwrap().contains("enroll"));
}

#[test]
fn a_replaced_specs_restarted_sequence_is_new_work() {
    let mut spec = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
    let mut st = NodeStatus {
        power_seq_done: 5,
        provision_seq_done: 3,
        ..NodeStatus::default()
    };
    // No request, or one already done: nothing to rebase.
    assert!(rebase_sequences(&spec, &mut st).is_empty());
    spec.power_request = Some(PowerRequest {
        seq: 5,
        target: PowerTarget::On,
        timeout_s: None,
        requested_by: "alice".into(),
        requested_at_ms: 0,
    });
    assert!(rebase_sequences(&spec, &mut st).is_empty());
    assert_eq!(spec.pending_power(&st), None);
    // A repaired spec numbers from 1 again: that request is new and pending.
    spec.power_request.as_mut().unwrap().seq = 1;
    assert_eq!(rebase_sequences(&spec, &mut st), ["power"]);
    assert_eq!(st.power_seq_done, 0);
    assert_eq!(spec.pending_power(&st).map(|r| r.seq), Some(1));
    assert_eq!(st.provision_seq_done, 3, "other kinds untouched");
}

#[test]
fn automated_clean_false_skips_cleaning_but_not_a_manual_clean() {
    // The fake interface told to fail in cleaning shows whether cleaning ran.
    let mut s = fake(0.0, "cleaning");
    s.automated_clean = Some(false);
    let mut st = owned(1);
    st.provision_state = ProvisionState::Manageable;
    st = drive(&s, st, &vreq(1, Verb::Provide));
    assert_eq!(st.provision_state, ProvisionState::Available, "{st:?}");
    st.provision_state = ProvisionState::Active;
    st = drive(&s, st, &vreq(2, Verb::Undeploy));
    assert_eq!(st.provision_state, ProvisionState::Available, "{st:?}");
    st.provision_state = ProvisionState::Manageable;
    st = drive(&s, st, &vreq(3, Verb::Clean));
    assert_eq!(st.provision_state, ProvisionState::CleanFailed, "{st:?}");
    // The direct interface: no ramdisk boot either.
    let mut d = spec();
    d.driver = "ipmi".into();
    d.automated_clean = Some(false);
    let mut st = owned(1);
    st.provision_state = ProvisionState::Manageable;
    let (next, work) = begin_provision(&d, &st, &vreq(1, Verb::Provide), 0, 1000);
    assert_eq!(next.provision_state, ProvisionState::Cleaning);
    assert!(
        matches!(
            work,
            Ok(Some(Work::Step {
                after_ms: 0,
                ok: true,
                ..
            }))
        ),
        "{work:?}"
    );
    d.automated_clean = Some(true);
    let (_, work) = begin_provision(&d, &st, &vreq(1, Verb::Provide), 0, 1000);
    assert!(matches!(work, Ok(Some(Work::Hardware { .. }))), "{work:?}");
}

#[test]
fn a_retired_node_torn_down_ends_in_manageable() {
    let mut s = fake(0.0, "");
    s.retired = true;
    let mut st = owned(1);
    st.provision_state = ProvisionState::Active;
    st = drive(&s, st, &vreq(1, Verb::Undeploy));
    assert_eq!(st.provision_state, ProvisionState::Manageable, "{st:?}");
    assert_eq!(st.target_provision_state, None);
    s.automated_clean = Some(false);
    st.provision_state = ProvisionState::Active;
    st = drive(&s, st, &vreq(2, Verb::Undeploy));
    assert_eq!(st.provision_state, ProvisionState::Manageable, "{st:?}");
}
