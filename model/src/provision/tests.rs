//! Unit tests of the provision state machine: every verb and event from every state.

use super::*;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::IntoDeserializer;
use serde::Deserialize;

/// The expected user transitions, written out per state from Ironic's
/// `state_machine.py` (independently of `on_verb`, which is organised by verb).
fn expected_verbs(state: ProvisionState) -> &'static [(Verb, ProvisionState)] {
    match state {
        S::Enroll => &[(V::Manage, S::Verifying)],
        S::Verifying => &[],
        S::Manageable => &[
            (V::Provide, S::Cleaning),
            (V::Inspect, S::Inspecting),
            (V::Clean, S::Cleaning),
            (V::Adopt, S::Adopting),
        ],
        S::Available => &[(V::Manage, S::Manageable), (V::Deploy, S::Deploying)],
        S::Active => &[
            (V::Rebuild, S::Deploying),
            (V::Undeploy, S::Deleting),
            (V::Rescue, S::Rescuing),
            (V::Service, S::Servicing),
        ],
        S::Deploying => &[],
        S::WaitCallBack => &[(V::Undeploy, S::Deleting), (V::Abort, S::DeployFailed)],
        S::DeployFailed => &[
            (V::Deploy, S::Deploying),
            (V::Rebuild, S::Deploying),
            (V::Undeploy, S::Deleting),
        ],
        S::DeployHold => &[(V::Abort, S::DeployFailed), (V::Unhold, S::WaitCallBack)],
        S::Deleting => &[],
        S::Cleaning => &[],
        S::CleanWait => &[(V::Abort, S::CleanFailed)],
        S::CleanFailed => &[(V::Manage, S::Manageable)],
        S::CleanHold => &[(V::Abort, S::CleanFailed), (V::Unhold, S::CleanWait)],
        S::Inspecting => &[],
        S::InspectWait => &[(V::Abort, S::InspectFailed)],
        S::InspectFailed => &[(V::Manage, S::Manageable), (V::Inspect, S::Inspecting)],
        S::Adopting => &[],
        S::AdoptFailed => &[(V::Manage, S::Manageable), (V::Adopt, S::Adopting)],
        S::Rescuing => &[],
        S::RescueWait => &[(V::Undeploy, S::Deleting), (V::Abort, S::RescueFailed)],
        S::RescueFailed => &[
            (V::Undeploy, S::Deleting),
            (V::Rescue, S::Rescuing),
            (V::Unrescue, S::Unrescuing),
        ],
        S::Rescue => &[
            (V::Undeploy, S::Deleting),
            (V::Rescue, S::Rescuing),
            (V::Unrescue, S::Unrescuing),
        ],
        S::Unrescuing => &[],
        S::UnrescueFailed => &[
            (V::Undeploy, S::Deleting),
            (V::Rescue, S::Rescuing),
            (V::Unrescue, S::Unrescuing),
        ],
        S::Servicing => &[],
        S::ServiceWait => &[(V::Undeploy, S::Deleting), (V::Abort, S::ServiceFailed)],
        S::ServiceFailed => &[
            (V::Undeploy, S::Deleting),
            (V::Abort, S::Active),
            (V::Rescue, S::Rescuing),
            (V::Service, S::Servicing),
        ],
        S::ServiceHold => &[
            (V::Abort, S::ServiceFailed),
            (V::Unhold, S::ServiceWait),
            (V::Service, S::Servicing),
        ],
        S::Error => &[(V::Rebuild, S::Deploying), (V::Undeploy, S::Deleting)],
    }
}

/// The expected internal transitions, written out per state. Only
/// cleaning's `done` depends on `manual`.
fn expected_events(state: ProvisionState, manual: bool) -> &'static [(Event, ProvisionState)] {
    use Event as E;
    match state {
        S::Enroll | S::Manageable | S::Available | S::Active | S::Rescue | S::Error => &[],
        S::Verifying => &[(E::Done, S::Manageable), (E::Fail, S::Enroll)],
        S::Deploying => &[
            (E::Done, S::Active),
            (E::Fail, S::DeployFailed),
            (E::Wait, S::WaitCallBack),
            (E::Hold, S::DeployHold),
        ],
        S::WaitCallBack => &[
            (E::Fail, S::DeployFailed),
            (E::Resume, S::Deploying),
            (E::Hold, S::DeployHold),
        ],
        S::DeployFailed | S::DeployHold => &[],
        S::Deleting => &[(E::Done, S::Cleaning), (E::Fail, S::Error)],
        S::Cleaning if manual => &[
            (E::Done, S::Manageable),
            (E::Fail, S::CleanFailed),
            (E::Wait, S::CleanWait),
            (E::Hold, S::CleanHold),
        ],
        S::Cleaning => &[
            (E::Done, S::Available),
            (E::Fail, S::CleanFailed),
            (E::Wait, S::CleanWait),
            (E::Hold, S::CleanHold),
        ],
        S::CleanWait => &[
            (E::Fail, S::CleanFailed),
            (E::Resume, S::Cleaning),
            (E::Hold, S::CleanHold),
        ],
        S::CleanFailed | S::CleanHold => &[],
        S::Inspecting => &[
            (E::Done, S::Manageable),
            (E::Fail, S::InspectFailed),
            (E::Wait, S::InspectWait),
        ],
        S::InspectWait => &[
            (E::Done, S::Manageable),
            (E::Fail, S::InspectFailed),
            (E::Resume, S::Inspecting),
        ],
        S::InspectFailed => &[],
        S::Adopting => &[(E::Done, S::Active), (E::Fail, S::AdoptFailed)],
        S::AdoptFailed => &[],
        S::Rescuing => &[
            (E::Done, S::Rescue),
            (E::Fail, S::RescueFailed),
            (E::Wait, S::RescueWait),
        ],
        S::RescueWait => &[(E::Fail, S::RescueFailed), (E::Resume, S::Rescuing)],
        S::RescueFailed => &[],
        S::Unrescuing => &[(E::Done, S::Active), (E::Fail, S::UnrescueFailed)],
        S::UnrescueFailed => &[],
        S::Servicing => &[
            (E::Done, S::Active),
            (E::Fail, S::ServiceFailed),
            (E::Wait, S::ServiceWait),
            (E::Hold, S::ServiceHold),
        ],
        S::ServiceWait => &[
            (E::Fail, S::ServiceFailed),
            (E::Resume, S::Servicing),
            (E::Hold, S::ServiceHold),
        ],
        S::ServiceFailed => &[(E::Wait, S::ServiceWait), (E::Hold, S::ServiceHold)],
        S::ServiceHold => &[(E::Fail, S::ServiceFailed)],
    }
}

#[test]
fn every_state_and_verb_matches_the_table() {
    for &state in ProvisionState::ALL {
        let table = expected_verbs(state);
        for &verb in Verb::ALL {
            let expected = table.iter().find(|(v, _)| *v == verb).map(|&(_, s)| s);
            match (expected, on_verb(state, verb)) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{state} + {verb}"),
                (None, Err(err)) => {
                    assert_eq!(err.state, state);
                    assert_eq!(err.action, verb.as_str());
                }
                (want, got) => panic!("{state} + {verb}: want {want:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn every_state_and_event_matches_the_table() {
    for manual in [false, true] {
        for &state in ProvisionState::ALL {
            let table = expected_events(state, manual);
            for &event in Event::ALL {
                let expected = table.iter().find(|(e, _)| *e == event).map(|&(_, s)| s);
                match (expected, on_event(state, event, manual)) {
                    (Some(want), Ok(got)) => {
                        assert_eq!(got, want, "{state} + {event} (manual={manual})")
                    }
                    (None, Err(err)) => {
                        assert_eq!(err.state, state);
                        assert_eq!(err.action, event.as_str());
                    }
                    (want, got) => {
                        panic!("{state} + {event} (manual={manual}): want {want:?}, got {got:?}")
                    }
                }
            }
        }
    }
}

#[test]
fn allowed_verbs_lists_the_table_in_verb_order() {
    assert_eq!(
        allowed_verbs(S::Manageable),
        vec![V::Provide, V::Inspect, V::Clean, V::Adopt]
    );
    assert_eq!(allowed_verbs(S::Deploying), vec![]);
    for &state in ProvisionState::ALL {
        let mut want: Vec<Verb> = expected_verbs(state).iter().map(|&(v, _)| v).collect();
        want.sort_by_key(|v| Verb::ALL.iter().position(|w| w == v));
        assert_eq!(allowed_verbs(state), want, "{state}");
    }
}

#[test]
fn states_round_trip_through_ironic_spelling() {
    let spellings = [
        (S::Enroll, "enroll"),
        (S::Verifying, "verifying"),
        (S::Manageable, "manageable"),
        (S::Available, "available"),
        (S::Active, "active"),
        (S::Deploying, "deploying"),
        (S::WaitCallBack, "wait call-back"),
        (S::DeployFailed, "deploy failed"),
        (S::DeployHold, "deploy hold"),
        (S::Deleting, "deleting"),
        (S::Cleaning, "cleaning"),
        (S::CleanWait, "clean wait"),
        (S::CleanFailed, "clean failed"),
        (S::CleanHold, "clean hold"),
        (S::Inspecting, "inspecting"),
        (S::InspectWait, "inspect wait"),
        (S::InspectFailed, "inspect failed"),
        (S::Adopting, "adopting"),
        (S::AdoptFailed, "adopt failed"),
        (S::Rescuing, "rescuing"),
        (S::RescueWait, "rescue wait"),
        (S::RescueFailed, "rescue failed"),
        (S::Rescue, "rescue"),
        (S::Unrescuing, "unrescuing"),
        (S::UnrescueFailed, "unrescue failed"),
        (S::Servicing, "servicing"),
        (S::ServiceWait, "service wait"),
        (S::ServiceFailed, "service failed"),
        (S::ServiceHold, "service hold"),
        (S::Error, "error"),
    ];
    assert_eq!(spellings.len(), ProvisionState::ALL.len());
    for (i, &(state, text)) in spellings.iter().enumerate() {
        assert_eq!(ProvisionState::ALL[i], state, "ALL is in declaration order");
        assert_eq!(state.as_str(), text);
        assert_eq!(state.to_string(), text);
        assert_eq!(ProvisionState::parse(text), Some(state));
        let de: StrDeserializer<'_, ValueError> = text.into_deserializer();
        assert_eq!(ProvisionState::deserialize(de), Ok(state), "serde name");
    }
    for bad in [
        "",
        "Enroll",
        "wait callback",
        "deploy",
        "deleted",
        "deploy complete",
    ] {
        assert_eq!(ProvisionState::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn verbs_round_trip_and_accept_ironic_aliases() {
    let spellings = [
        (V::Manage, "manage"),
        (V::Provide, "provide"),
        (V::Inspect, "inspect"),
        (V::Clean, "clean"),
        (V::Deploy, "deploy"),
        (V::Rebuild, "rebuild"),
        (V::Undeploy, "undeploy"),
        (V::Abort, "abort"),
        (V::Adopt, "adopt"),
        (V::Rescue, "rescue"),
        (V::Unrescue, "unrescue"),
        (V::Unhold, "unhold"),
        (V::Service, "service"),
    ];
    assert_eq!(spellings.len(), Verb::ALL.len());
    for (i, &(verb, text)) in spellings.iter().enumerate() {
        assert_eq!(Verb::ALL[i], verb, "ALL is in declaration order");
        assert_eq!(verb.as_str(), text);
        assert_eq!(verb.to_string(), text);
        assert_eq!(Verb::parse(text), Some(verb));
        let de: StrDeserializer<'_, ValueError> = text.into_deserializer();
        assert_eq!(Verb::deserialize(de), Ok(verb), "serde name");
    }
    assert_eq!(Verb::parse("active"), Some(V::Deploy));
    assert_eq!(Verb::parse("deleted"), Some(V::Undeploy));
    for bad in ["", "delete", "Deploy", "available", "manageable", "done"] {
        assert_eq!(Verb::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn events_have_ironic_names() {
    let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(names, ["done", "fail", "wait", "resume", "hold"]);
    for &event in Event::ALL {
        let de: StrDeserializer<'_, ValueError> = event.as_str().into_deserializer();
        assert_eq!(Event::deserialize(de), Ok(event));
    }
}

#[test]
fn postcard_indices_are_declaration_order() {
    // Guards the append-only rule: stored nodes decode by index.
    for (i, state) in ProvisionState::ALL.iter().enumerate() {
        let bytes = postcard::to_allocvec(state).unwrap();
        assert_eq!(bytes, vec![i as u8], "{state}");
        assert_eq!(
            postcard::from_bytes::<ProvisionState>(&bytes).unwrap(),
            *state
        );
    }
    assert_eq!(postcard::to_allocvec(&S::Error).unwrap(), vec![29]);
    for (i, verb) in Verb::ALL.iter().enumerate() {
        assert_eq!(
            postcard::to_allocvec(verb).unwrap(),
            vec![i as u8],
            "{verb}"
        );
    }
    for (i, event) in Event::ALL.iter().enumerate() {
        assert_eq!(
            postcard::to_allocvec(event).unwrap(),
            vec![i as u8],
            "{event}"
        );
    }
}

#[test]
fn state_classes_match_ironic() {
    let stable = [
        S::Enroll,
        S::Manageable,
        S::Available,
        S::Active,
        S::Error,
        S::Rescue,
    ];
    let failed = [
        S::DeployFailed,
        S::CleanFailed,
        S::InspectFailed,
        S::AdoptFailed,
        S::RescueFailed,
        S::UnrescueFailed,
        S::ServiceFailed,
        S::Error,
    ];
    let wait = [
        S::WaitCallBack,
        S::CleanWait,
        S::InspectWait,
        S::RescueWait,
        S::ServiceWait,
    ];
    let hold = [S::DeployHold, S::CleanHold, S::ServiceHold];
    // Ironic's STUCK_STATES_TREATED_AS_FAIL.
    let busy = [
        S::Deploying,
        S::Cleaning,
        S::Verifying,
        S::Inspecting,
        S::Adopting,
        S::Rescuing,
        S::Unrescuing,
        S::Deleting,
        S::Servicing,
    ];
    for &state in ProvisionState::ALL {
        assert_eq!(state.is_stable(), stable.contains(&state), "{state} stable");
        assert_eq!(state.is_failed(), failed.contains(&state), "{state} failed");
        assert_eq!(state.is_wait(), wait.contains(&state), "{state} wait");
        assert_eq!(state.is_hold(), hold.contains(&state), "{state} hold");
        assert_eq!(state.is_busy(), busy.contains(&state), "{state} busy");
        let classes = [
            state.is_stable(),
            state.is_failed(),
            state.is_wait(),
            state.is_hold(),
            state.is_busy(),
        ];
        let count = classes.iter().filter(|&&c| c).count();
        // Only `error` is both stable and failed, as in Ironic.
        assert_eq!(count, if state == S::Error { 2 } else { 1 }, "{state}");
    }
}

#[test]
fn target_of_every_state() {
    let table: [(
        ProvisionState,
        Option<ProvisionState>,
        Option<ProvisionState>,
    ); 30] = [
        // (state, automated, manual)
        (S::Enroll, None, None),
        (S::Verifying, Some(S::Manageable), Some(S::Manageable)),
        (S::Manageable, None, None),
        (S::Available, None, None),
        (S::Active, None, None),
        (S::Deploying, Some(S::Active), Some(S::Active)),
        (S::WaitCallBack, Some(S::Active), Some(S::Active)),
        (S::DeployFailed, None, None),
        (S::DeployHold, Some(S::Active), Some(S::Active)),
        (S::Deleting, Some(S::Available), Some(S::Available)),
        (S::Cleaning, Some(S::Available), Some(S::Manageable)),
        (S::CleanWait, Some(S::Available), Some(S::Manageable)),
        (S::CleanFailed, None, None),
        (S::CleanHold, Some(S::Available), Some(S::Manageable)),
        (S::Inspecting, Some(S::Manageable), Some(S::Manageable)),
        (S::InspectWait, Some(S::Manageable), Some(S::Manageable)),
        (S::InspectFailed, None, None),
        (S::Adopting, Some(S::Active), Some(S::Active)),
        (S::AdoptFailed, None, None),
        (S::Rescuing, Some(S::Rescue), Some(S::Rescue)),
        (S::RescueWait, Some(S::Rescue), Some(S::Rescue)),
        (S::RescueFailed, None, None),
        (S::Rescue, None, None),
        (S::Unrescuing, Some(S::Active), Some(S::Active)),
        (S::UnrescueFailed, None, None),
        (S::Servicing, Some(S::Active), Some(S::Active)),
        (S::ServiceWait, Some(S::Active), Some(S::Active)),
        (S::ServiceFailed, None, None),
        (S::ServiceHold, Some(S::Active), Some(S::Active)),
        (S::Error, None, None),
    ];
    for (i, &(state, automated, manual)) in table.iter().enumerate() {
        assert_eq!(ProvisionState::ALL[i], state);
        assert_eq!(target_of(state, false), automated, "{state}");
        assert_eq!(target_of(state, true), manual, "{state} manual");
        // A target is always a stable state the node can actually reach.
        if let Some(t) = automated {
            assert!(t.is_stable(), "{state} -> {t}");
        }
    }
}

#[test]
fn ironic_target_of_keeps_targets_on_failed_states() {
    let failed = [
        (S::DeployFailed, S::Active, S::Active),
        (S::CleanFailed, S::Available, S::Manageable),
        (S::InspectFailed, S::Manageable, S::Manageable),
        (S::AdoptFailed, S::Active, S::Active),
        (S::RescueFailed, S::Rescue, S::Rescue),
        (S::UnrescueFailed, S::Active, S::Active),
        (S::ServiceFailed, S::Active, S::Active),
    ];
    for (state, automated, manual) in failed {
        assert_eq!(ironic_target_of(state, false), Some(automated), "{state}");
        assert_eq!(
            ironic_target_of(state, true),
            Some(manual),
            "{state} manual"
        );
    }
    for &state in ProvisionState::ALL {
        for manual in [false, true] {
            if state.is_stable() {
                assert_eq!(ironic_target_of(state, manual), None, "{state}");
            } else if !state.is_failed() {
                assert_eq!(ironic_target_of(state, manual), target_of(state, manual));
            }
        }
    }
}

#[test]
fn recovery_on_takeover_every_state() {
    use Recovery::{FailTo, Nothing, ResumeWaiting};
    let table = [
        (S::Enroll, Nothing),
        (S::Verifying, FailTo(S::Enroll)),
        (S::Manageable, Nothing),
        (S::Available, Nothing),
        (S::Active, Nothing),
        (S::Deploying, FailTo(S::DeployFailed)),
        (S::WaitCallBack, ResumeWaiting),
        (S::DeployFailed, Nothing),
        (S::DeployHold, Nothing),
        (S::Deleting, FailTo(S::Error)),
        (S::Cleaning, FailTo(S::CleanFailed)),
        (S::CleanWait, ResumeWaiting),
        (S::CleanFailed, Nothing),
        (S::CleanHold, Nothing),
        (S::Inspecting, FailTo(S::InspectFailed)),
        (S::InspectWait, ResumeWaiting),
        (S::InspectFailed, Nothing),
        (S::Adopting, FailTo(S::AdoptFailed)),
        (S::AdoptFailed, Nothing),
        (S::Rescuing, FailTo(S::RescueFailed)),
        (S::RescueWait, ResumeWaiting),
        (S::RescueFailed, Nothing),
        (S::Rescue, Nothing),
        (S::Unrescuing, FailTo(S::UnrescueFailed)),
        (S::UnrescueFailed, Nothing),
        (S::Servicing, FailTo(S::ServiceFailed)),
        (S::ServiceWait, ResumeWaiting),
        (S::ServiceFailed, Nothing),
        (S::ServiceHold, Nothing),
        (S::Error, Nothing),
    ];
    assert_eq!(table.len(), ProvisionState::ALL.len());
    for (i, &(state, want)) in table.iter().enumerate() {
        assert_eq!(ProvisionState::ALL[i], state);
        assert_eq!(recovery_on_takeover(state), want, "{state}");
        // Recovery must be a transition the machine itself allows.
        if let FailTo(to) = want {
            assert!(state.is_busy());
            assert_eq!(on_event(state, Event::Fail, false), Ok(to));
            assert_eq!(on_event(state, Event::Fail, true), Ok(to));
        }
    }
}

#[test]
fn main_path_enroll_to_deployed_and_back_to_available() {
    let step = |next: Result<ProvisionState, InvalidTransition>, want: ProvisionState| {
        let state = next.unwrap();
        assert_eq!(state, want);
        state
    };
    let s = step(on_verb(S::Enroll, V::Manage), S::Verifying);
    assert_eq!(target_of(s, false), Some(S::Manageable));
    let s = step(on_event(s, Event::Done, false), S::Manageable);
    let s = step(on_verb(s, V::Provide), S::Cleaning);
    assert_eq!(target_of(s, false), Some(S::Available));
    let s = step(on_event(s, Event::Done, false), S::Available);
    let s = step(on_verb(s, Verb::parse("active").unwrap()), S::Deploying);
    assert_eq!(target_of(s, false), Some(S::Active));
    let s = step(on_event(s, Event::Wait, false), S::WaitCallBack);
    assert_eq!(target_of(s, false), Some(S::Active));
    let s = step(on_event(s, Event::Resume, false), S::Deploying);
    let s = step(on_event(s, Event::Done, false), S::Active);
    assert_eq!(target_of(s, false), None);
    let s = step(on_verb(s, Verb::parse("deleted").unwrap()), S::Deleting);
    assert_eq!(target_of(s, false), Some(S::Available));
    let s = step(on_event(s, Event::Done, false), S::Cleaning);
    let s = step(on_event(s, Event::Done, false), S::Available);
    assert_eq!(target_of(s, false), None);
}

#[test]
fn manual_clean_returns_to_manageable() {
    let s = on_verb(S::Manageable, V::Clean).unwrap();
    assert_eq!(s, S::Cleaning);
    assert_eq!(target_of(s, true), Some(S::Manageable));
    let s = on_event(s, Event::Wait, true).unwrap();
    assert_eq!(s, S::CleanWait);
    assert_eq!(target_of(s, true), Some(S::Manageable));
    let s = on_event(s, Event::Hold, true).unwrap();
    assert_eq!(s, S::CleanHold);
    let s = on_verb(s, V::Unhold).unwrap();
    assert_eq!(s, S::CleanWait);
    let s = on_event(s, Event::Resume, true).unwrap();
    assert_eq!(s, S::Cleaning);
    assert_eq!(on_event(s, Event::Done, true), Ok(S::Manageable));
}

#[test]
fn failures_and_recoveries() {
    // A failed deploy can be retried, or torn down.
    let s = on_event(S::Deploying, Event::Fail, false).unwrap();
    assert_eq!(s, S::DeployFailed);
    assert_eq!(on_verb(s, V::Deploy), Ok(S::Deploying));
    assert_eq!(on_verb(s, V::Undeploy), Ok(S::Deleting));
    // A failed tear-down ends in error, from which a rebuild is allowed.
    let s = on_event(S::Deleting, Event::Fail, false).unwrap();
    assert_eq!(s, S::Error);
    assert_eq!(on_verb(s, V::Rebuild), Ok(S::Deploying));
    // Clean failures need an operator's "manage".
    let s = on_verb(S::CleanWait, V::Abort).unwrap();
    assert_eq!(s, S::CleanFailed);
    assert_eq!(on_verb(s, V::Manage), Ok(S::Manageable));
    // Rescue round trip.
    let s = on_verb(S::Active, V::Rescue).unwrap();
    let s = on_event(s, Event::Done, false).unwrap();
    assert_eq!(s, S::Rescue);
    let s = on_verb(s, V::Unrescue).unwrap();
    assert_eq!(on_event(s, Event::Done, false), Ok(S::Active));
    // Service hold, then abort, then abort again gives the instance back.
    let s = on_verb(S::Active, V::Service).unwrap();
    let s = on_event(s, Event::Hold, false).unwrap();
    assert_eq!(s, S::ServiceHold);
    let s = on_verb(s, V::Abort).unwrap();
    assert_eq!(s, S::ServiceFailed);
    assert_eq!(on_verb(s, V::Abort), Ok(S::Active));
    // Adoption.
    let s = on_verb(S::Manageable, V::Adopt).unwrap();
    assert_eq!(on_event(s, Event::Fail, false), Ok(S::AdoptFailed));
    assert_eq!(on_event(s, Event::Done, false), Ok(S::Active));
}

#[test]
fn error_message_names_action_and_state() {
    let err = on_verb(S::Active, V::Deploy).unwrap_err();
    assert_eq!(
        err.to_string(),
        "action \"deploy\" is not allowed in provision state \"active\""
    );
    let err = on_event(S::Available, Event::Done, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "action \"done\" is not allowed in provision state \"available\""
    );
}

#[test]
fn every_reachable_state_is_reachable_from_enroll() {
    // Sanity check on the whole graph: nothing in the table is an island.
    let mut seen = vec![S::Enroll];
    let mut todo = vec![S::Enroll];
    while let Some(state) = todo.pop() {
        let by_verb = Verb::ALL.iter().filter_map(|&v| on_verb(state, v).ok());
        let by_event = Event::ALL
            .iter()
            .flat_map(|&e| [on_event(state, e, false), on_event(state, e, true)])
            .filter_map(Result::ok);
        for next in by_verb.chain(by_event) {
            if !seen.contains(&next) {
                seen.push(next);
                todo.push(next);
            }
        }
    }
    for &state in ProvisionState::ALL {
        assert!(seen.contains(&state), "{state} unreachable");
    }
}
