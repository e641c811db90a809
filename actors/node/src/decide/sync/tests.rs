use super::*;
use ferric_model::{NodeId, PowerRequest};

const SETTINGS: SyncSettings = SyncSettings {
    grace_ms: 10_000,
    max_failures: 3,
};

fn spec_with(target: Option<PowerTarget>, at_ms: u64) -> NodeSpec {
    let mut s = NodeSpec::new(NodeId::new_random(), "fake-hardware", 0);
    s.power_request = target.map(|target| PowerRequest {
        seq: 1,
        target,
        timeout_s: None,
        requested_by: "alice".into(),
        requested_at_ms: at_ms,
    });
    s
}

fn status(power: PowerState) -> NodeStatus {
    NodeStatus {
        power_state: Some(power),
        power_seq_done: 1,
        ..NodeStatus::default()
    }
}

#[test]
fn a_matching_read_changes_nothing() {
    let spec = spec_with(Some(PowerTarget::On), 0);
    let out = on_read(
        &spec,
        &status(PowerState::On),
        Ok(PowerState::On),
        None,
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(out, SyncOutcome::default());
}

#[test]
fn observe_records_an_out_of_band_change_and_never_pushes() {
    let spec = spec_with(Some(PowerTarget::On), 0);
    let st = status(PowerState::On);
    let first = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        100_000,
    );
    let next = first.status.clone().unwrap();
    assert_eq!(next.power_state, Some(PowerState::Off));
    let (action, error) = first.history.clone().unwrap();
    assert!(action.contains("out-of-band"), "{action}");
    assert_eq!(error, None);
    assert_eq!(first.mismatch, Some(PowerState::Off));
    assert_eq!(first.push, None);
    // A second read the same: nothing more to record, still no push.
    let second = on_read(
        &spec,
        &next,
        Ok(PowerState::Off),
        first.mismatch,
        SyncPolicy::Observe,
        SETTINGS,
        200_000,
    );
    assert_eq!(second.status, None);
    assert_eq!(second.push, None);
}

#[test]
fn a_change_that_reaches_the_last_requests_target_is_named_its_result() {
    // A soft power off that timed out; the OS went down later.
    let spec = spec_with(Some(PowerTarget::SoftOff), 5_000);
    let out = on_read(
        &spec,
        &status(PowerState::On),
        Ok(PowerState::Off),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        100_000,
    );
    let (action, _) = out.history.unwrap();
    assert!(
        action.contains("the result of \"soft power off\" requested by alice"),
        "{action}"
    );
    assert_eq!(out.mismatch, None);
}

#[test]
fn enforce_pushes_only_on_the_second_read_after_the_grace() {
    let spec = spec_with(Some(PowerTarget::On), 50_000);
    let st = status(PowerState::Off);
    // First sighting: no push.
    let a = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        None,
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!((a.mismatch, a.push), (Some(PowerState::Off), None));
    // Second, but within the grace after the request (50 s + 10 s): no push.
    let b = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        a.mismatch,
        SyncPolicy::Enforce,
        SETTINGS,
        55_000,
    );
    assert_eq!(b.push, None);
    // Within the grace after the last power operation's end: no push.
    let mut recent = st.clone();
    recent.power_op_ended_ms = Some(95_000);
    let c = on_read(
        &spec,
        &recent,
        Ok(PowerState::Off),
        a.mismatch,
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(c.push, None);
    // Second, after the grace: restore on.
    let d = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        a.mismatch,
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(d.push, Some(PowerTarget::On));
}

#[test]
fn enforce_never_cuts_power_after_a_soft_off_nor_powers_off_what_must_stay_on() {
    let st = status(PowerState::On);
    let soft = spec_with(Some(PowerTarget::SoftOff), 0);
    let out = on_read(
        &soft,
        &st,
        Ok(PowerState::On),
        Some(PowerState::On),
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(out.mismatch, Some(PowerState::On));
    assert_eq!(out.push, None);
    let mut keep_on = spec_with(Some(PowerTarget::Off), 0);
    keep_on.disable_power_off = true;
    let out = on_read(
        &keep_on,
        &st,
        Ok(PowerState::On),
        Some(PowerState::On),
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(out.push, None);
    let hard = spec_with(Some(PowerTarget::Off), 0);
    let out = on_read(
        &hard,
        &st,
        Ok(PowerState::On),
        Some(PowerState::On),
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!(out.push, Some(PowerTarget::Off));
    // A pending request is not "last requested": nothing is pushed for it.
    let mut pending = hard.clone();
    pending.power_request.as_mut().unwrap().seq = 2;
    let out = on_read(
        &pending,
        &st,
        Ok(PowerState::On),
        Some(PowerState::On),
        SyncPolicy::Enforce,
        SETTINGS,
        100_000,
    );
    assert_eq!((out.mismatch, out.push), (None, None));
}

#[test]
fn failed_reads_count_to_a_power_failure_and_a_good_read_resets_the_count() {
    let spec = spec_with(None, 0);
    let mut st = status(PowerState::On);
    for n in 1..=3u32 {
        let out = on_read(
            &spec,
            &st,
            Err("timeout".into()),
            None,
            SyncPolicy::Observe,
            SETTINGS,
            1_000,
        );
        st = out.status.unwrap();
        assert_eq!(st.power_failures, n);
        let (action, error) = out.history.unwrap();
        assert_eq!(error.as_deref(), Some("timeout"));
        if n < 3 {
            assert_eq!(st.fault, None, "{action}");
        } else {
            assert_eq!(st.fault.as_deref(), Some(faults::POWER_FAILURE));
            assert_eq!(st.power_state, None);
            assert!(action.contains("power failure"), "{action}");
        }
    }
    let mut st2 = status(PowerState::On);
    st2.power_failures = 2;
    let out = on_read(
        &spec,
        &st2,
        Ok(PowerState::On),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        1_000,
    );
    assert_eq!(out.status.unwrap().power_failures, 0);
}

#[test]
fn recovery_lifts_only_the_maintenance_the_fault_set() {
    let mut spec = spec_with(None, 0);
    spec.maintenance = true;
    spec.maintenance_reason = Some("power failure: no answer".into());
    let mut st = status(PowerState::On);
    st.power_state = None;
    st.fault = Some(faults::POWER_FAILURE.into());
    st.power_failures = 5;
    st.fault_maintenance = Some("power failure: no answer".into());
    // A probe that still fails: nothing written.
    let out = on_read(
        &spec,
        &st,
        Err("timeout".into()),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        1_000,
    );
    assert_eq!(out, SyncOutcome::default());
    let out = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        1_000,
    );
    let next = out.status.unwrap();
    assert_eq!(
        (next.fault, next.power_failures, next.power_state),
        (None, 0, Some(PowerState::Off))
    );
    assert!(out.leave_maintenance);
    // A user changed the reason (their maintenance now): it stays.
    spec.maintenance_reason = Some("rack work".into());
    let out = on_read(
        &spec,
        &st,
        Ok(PowerState::Off),
        None,
        SyncPolicy::Observe,
        SETTINGS,
        1_000,
    );
    assert!(!out.leave_maintenance);
    assert!(out
        .history
        .unwrap()
        .0
        .contains("maintenance set by a user stays"));
}

#[test]
fn a_nodes_own_policy_wins() {
    assert_eq!(policy_for(None, SyncPolicy::Enforce), SyncPolicy::Enforce);
    assert_eq!(
        policy_for(Some(SyncPolicy::Observe), SyncPolicy::Enforce),
        SyncPolicy::Observe
    );
}
