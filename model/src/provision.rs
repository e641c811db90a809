//! Ironic's provision state machine as pure functions: states, user verbs, internal events, transitions.
//!
//! The transition table mirrors the `add_transition` calls of Ironic's
//! `ironic/common/state_machine.py`, and the state spellings and sets
//! (`STABLE_STATES`, `STUCK_STATES_TREATED_AS_FAIL`, ...) mirror
//! `ironic/common/states.py`, so that API clients written for Ironic see the
//! same states and get the same answers. Ironic feeds user verbs and
//! conductor events into one machine; here they are split into [`on_verb`]
//! (what the API may ask) and [`on_event`] (what a conductor reports when
//! work finishes), because the API must never be able to fire an internal
//! event such as "done".

use std::fmt;

// Short names keep the transition tables readable; the two enums share
// variant names (`Rescue`), so neither is glob-imported.
use ProvisionState as S;
use Verb as V;

/// A node's provision state, spelled as Ironic spells it (see [`ProvisionState::as_str`]).
///
/// The enum is persisted with postcard, which encodes the variant index:
/// never reorder or remove variants; append new ones at the end (and to [`ProvisionState::ALL`]).
/// The serde names are Ironic's spellings so that JSON output matches Ironic's API.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ProvisionState {
    #[serde(rename = "enroll")]
    Enroll,
    #[serde(rename = "verifying")]
    Verifying,
    #[serde(rename = "manageable")]
    Manageable,
    #[serde(rename = "available")]
    Available,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "deploying")]
    Deploying,
    #[serde(rename = "wait call-back")]
    WaitCallBack,
    #[serde(rename = "deploy failed")]
    DeployFailed,
    #[serde(rename = "deploy hold")]
    DeployHold,
    #[serde(rename = "deleting")]
    Deleting,
    #[serde(rename = "cleaning")]
    Cleaning,
    #[serde(rename = "clean wait")]
    CleanWait,
    #[serde(rename = "clean failed")]
    CleanFailed,
    #[serde(rename = "clean hold")]
    CleanHold,
    #[serde(rename = "inspecting")]
    Inspecting,
    #[serde(rename = "inspect wait")]
    InspectWait,
    #[serde(rename = "inspect failed")]
    InspectFailed,
    #[serde(rename = "adopting")]
    Adopting,
    #[serde(rename = "adopt failed")]
    AdoptFailed,
    #[serde(rename = "rescuing")]
    Rescuing,
    #[serde(rename = "rescue wait")]
    RescueWait,
    #[serde(rename = "rescue failed")]
    RescueFailed,
    #[serde(rename = "rescue")]
    Rescue,
    #[serde(rename = "unrescuing")]
    Unrescuing,
    #[serde(rename = "unrescue failed")]
    UnrescueFailed,
    #[serde(rename = "servicing")]
    Servicing,
    #[serde(rename = "service wait")]
    ServiceWait,
    #[serde(rename = "service failed")]
    ServiceFailed,
    #[serde(rename = "service hold")]
    ServiceHold,
    #[serde(rename = "error")]
    Error,
}

impl ProvisionState {
    /// Every state, in declaration (and therefore postcard index) order.
    pub const ALL: &'static [ProvisionState] = &[
        S::Enroll,
        S::Verifying,
        S::Manageable,
        S::Available,
        S::Active,
        S::Deploying,
        S::WaitCallBack,
        S::DeployFailed,
        S::DeployHold,
        S::Deleting,
        S::Cleaning,
        S::CleanWait,
        S::CleanFailed,
        S::CleanHold,
        S::Inspecting,
        S::InspectWait,
        S::InspectFailed,
        S::Adopting,
        S::AdoptFailed,
        S::Rescuing,
        S::RescueWait,
        S::RescueFailed,
        S::Rescue,
        S::Unrescuing,
        S::UnrescueFailed,
        S::Servicing,
        S::ServiceWait,
        S::ServiceFailed,
        S::ServiceHold,
        S::Error,
    ];

    /// Ironic's spelling of the state, as it appears in `provision_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            S::Enroll => "enroll",
            S::Verifying => "verifying",
            S::Manageable => "manageable",
            S::Available => "available",
            S::Active => "active",
            S::Deploying => "deploying",
            S::WaitCallBack => "wait call-back",
            S::DeployFailed => "deploy failed",
            S::DeployHold => "deploy hold",
            S::Deleting => "deleting",
            S::Cleaning => "cleaning",
            S::CleanWait => "clean wait",
            S::CleanFailed => "clean failed",
            S::CleanHold => "clean hold",
            S::Inspecting => "inspecting",
            S::InspectWait => "inspect wait",
            S::InspectFailed => "inspect failed",
            S::Adopting => "adopting",
            S::AdoptFailed => "adopt failed",
            S::Rescuing => "rescuing",
            S::RescueWait => "rescue wait",
            S::RescueFailed => "rescue failed",
            S::Rescue => "rescue",
            S::Unrescuing => "unrescuing",
            S::UnrescueFailed => "unrescue failed",
            S::Servicing => "servicing",
            S::ServiceWait => "service wait",
            S::ServiceFailed => "service failed",
            S::ServiceHold => "service hold",
            S::Error => "error",
        }
    }

    /// The state spelled `s` in Ironic's spelling (exact, case-sensitive, as Ironic compares).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|state| state.as_str() == s)
    }

    /// Ironic's `STABLE_STATES`: states left only on a user's request.
    pub fn is_stable(self) -> bool {
        matches!(
            self,
            S::Enroll | S::Manageable | S::Available | S::Active | S::Error | S::Rescue
        )
    }

    /// The "... failed" states and `error` (which is also stable, as in Ironic).
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            S::DeployFailed
                | S::CleanFailed
                | S::InspectFailed
                | S::AdoptFailed
                | S::RescueFailed
                | S::UnrescueFailed
                | S::ServiceFailed
                | S::Error
        )
    }

    /// States waiting on something outside the conductor (usually the ramdisk's heartbeat).
    pub fn is_wait(self) -> bool {
        matches!(
            self,
            S::WaitCallBack | S::CleanWait | S::InspectWait | S::RescueWait | S::ServiceWait
        )
    }

    /// States parked by a `hold` step until an operator says `unhold` or `abort`.
    pub fn is_hold(self) -> bool {
        matches!(self, S::DeployHold | S::CleanHold | S::ServiceHold)
    }

    /// A state a conductor is actively working in (verifying, deploying, cleaning, ...): not stable, not failed, not wait, not hold.
    ///
    /// These are exactly Ironic's `STUCK_STATES_TREATED_AS_FAIL`: the work lives
    /// in the conductor's memory, so it cannot be resumed by anyone else.
    pub fn is_busy(self) -> bool {
        !(self.is_stable() || self.is_failed() || self.is_wait() || self.is_hold())
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provisioning action a user asks for through the API (`PUT .../states/provision`).
///
/// Persisted with postcard like [`ProvisionState`]: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Manage,
    Provide,
    Inspect,
    Clean,
    Deploy,
    Rebuild,
    /// Ironic's internal event name is "delete"; its API targets are "deleted" and "undeploy".
    Undeploy,
    Abort,
    Adopt,
    Rescue,
    Unrescue,
    Unhold,
    Service,
}

impl Verb {
    /// Every verb, in declaration order.
    pub const ALL: &'static [Verb] = &[
        V::Manage,
        V::Provide,
        V::Inspect,
        V::Clean,
        V::Deploy,
        V::Rebuild,
        V::Undeploy,
        V::Abort,
        V::Adopt,
        V::Rescue,
        V::Unrescue,
        V::Unhold,
        V::Service,
    ];

    /// The verb's canonical API target.
    pub fn as_str(self) -> &'static str {
        match self {
            V::Manage => "manage",
            V::Provide => "provide",
            V::Inspect => "inspect",
            V::Clean => "clean",
            V::Deploy => "deploy",
            V::Rebuild => "rebuild",
            V::Undeploy => "undeploy",
            V::Abort => "abort",
            V::Adopt => "adopt",
            V::Rescue => "rescue",
            V::Unrescue => "unrescue",
            V::Unhold => "unhold",
            V::Service => "service",
        }
    }

    /// Accepts Ironic's API targets: "active" and "deploy" -> Deploy; "deleted" and "undeploy" -> Undeploy; and the others by name.
    ///
    /// Ironic's internal name "delete" is not an API target, so it is refused here too.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(V::Deploy),
            "deleted" => Some(V::Undeploy),
            _ => Self::ALL.iter().copied().find(|verb| verb.as_str() == s),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Internal events that the conductor feeds in when work finishes.
///
/// Persisted with postcard like [`ProvisionState`]: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The work of the current state succeeded.
    Done,
    /// The work of the current state failed (or its wait timed out).
    Fail,
    /// The work now waits on an outside callback (e.g. the ramdisk's heartbeat).
    Wait,
    /// The awaited callback arrived; work continues.
    Resume,
    /// A step asked to park the node until an operator acts.
    Hold,
}

impl Event {
    /// Every event, in declaration order.
    pub const ALL: &'static [Event] = &[
        Event::Done,
        Event::Fail,
        Event::Wait,
        Event::Resume,
        Event::Hold,
    ];

    /// Ironic's event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Done => "done",
            Event::Fail => "fail",
            Event::Wait => "wait",
            Event::Resume => "resume",
            Event::Hold => "hold",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verb or event that the machine does not accept in a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("action \"{action}\" is not allowed in provision state \"{state}\"")]
pub struct InvalidTransition {
    pub state: ProvisionState,
    /// The verb's or event's name as given by `as_str`.
    pub action: String,
}

impl InvalidTransition {
    fn new(state: ProvisionState, action: &str) -> Self {
        Self {
            state,
            action: action.to_owned(),
        }
    }
}

/// The state a node enters when a user asks `verb` in `state`, or an error (the API maps it to HTTP 400/409).
///
/// Ironic's table also lets "clean" move `deleting` to `cleaning` and "manage"
/// move `cleaning` to `manageable`; those are the conductor finishing its own
/// work, so they are [`on_event`]'s `Done` here and not user verbs.
pub fn on_verb(state: ProvisionState, verb: Verb) -> Result<ProvisionState, InvalidTransition> {
    let next = match (verb, state) {
        // enroll -> verifying checks the power credentials first.
        (V::Manage, S::Enroll) => S::Verifying,
        // Taking a node out of the pool, or out of a failure for other actions.
        (V::Manage, S::Available | S::CleanFailed | S::InspectFailed | S::AdoptFailed) => {
            S::Manageable
        }
        // Both enter cleaning; they differ only in where cleaning ends
        // (the caller records which one it was and passes it as `manual`).
        (V::Provide | V::Clean, S::Manageable) => S::Cleaning,
        (V::Inspect, S::Manageable | S::InspectFailed) => S::Inspecting,
        // Ironic accepts "active"/"deploy" as a retry of a failed deploy (Juno compatibility).
        (V::Deploy, S::Available | S::DeployFailed) => S::Deploying,
        (V::Rebuild, S::Active | S::DeployFailed | S::Error) => S::Deploying,
        (
            V::Undeploy,
            S::Active
            | S::WaitCallBack
            | S::DeployFailed
            | S::Error
            | S::Rescue
            | S::RescueWait
            | S::RescueFailed
            | S::UnrescueFailed
            | S::ServiceWait
            | S::ServiceFailed,
        ) => S::Deleting,
        // Abort is only possible where the conductor is not running code
        // (wait and hold states); it lands in the matching failed state.
        (V::Abort, S::WaitCallBack | S::DeployHold) => S::DeployFailed,
        (V::Abort, S::CleanWait | S::CleanHold) => S::CleanFailed,
        (V::Abort, S::InspectWait) => S::InspectFailed,
        (V::Abort, S::RescueWait) => S::RescueFailed,
        (V::Abort, S::ServiceWait | S::ServiceHold) => S::ServiceFailed,
        // Aborting a failed service gives the instance back as it is.
        (V::Abort, S::ServiceFailed) => S::Active,
        (V::Adopt, S::Manageable | S::AdoptFailed) => S::Adopting,
        (
            V::Rescue,
            S::Active | S::Rescue | S::RescueFailed | S::UnrescueFailed | S::ServiceFailed,
        ) => S::Rescuing,
        (V::Unrescue, S::Rescue | S::RescueFailed | S::UnrescueFailed) => S::Unrescuing,
        // Unhold returns to the wait state; the next heartbeat picks the work up again.
        (V::Unhold, S::DeployHold) => S::WaitCallBack,
        (V::Unhold, S::CleanHold) => S::CleanWait,
        (V::Unhold, S::ServiceHold) => S::ServiceWait,
        (V::Service, S::Active | S::ServiceHold | S::ServiceFailed) => S::Servicing,
        _ => return Err(InvalidTransition::new(state, verb.as_str())),
    };
    Ok(next)
}

/// The state after an internal event in `state`. `manual` matters where Ironic's target differs: cleaning Done goes to `available` after provide/automated cleaning (manual=false) and back to `manageable` after a manual `clean` (manual=true); servicing Done -> active.
pub fn on_event(
    state: ProvisionState,
    event: Event,
    manual: bool,
) -> Result<ProvisionState, InvalidTransition> {
    let next = match (event, state) {
        (Event::Done, S::Verifying | S::Inspecting | S::InspectWait) => S::Manageable,
        (Event::Done, S::Deploying | S::Adopting | S::Unrescuing | S::Servicing) => S::Active,
        // Tear-down always continues with automated cleaning (Ironic's internal "clean").
        (Event::Done, S::Deleting) => S::Cleaning,
        // Ironic's internal "manage" ends a manual clean; "done" ends an automated one.
        (Event::Done, S::Cleaning) if manual => S::Manageable,
        (Event::Done, S::Cleaning) => S::Available,
        (Event::Done, S::Rescuing) => S::Rescue,

        // A failed verification rolls back to enroll rather than to a failed state.
        (Event::Fail, S::Verifying) => S::Enroll,
        (Event::Fail, S::Deploying | S::WaitCallBack) => S::DeployFailed,
        // A failed tear-down leaves the instance in an unknown condition.
        (Event::Fail, S::Deleting) => S::Error,
        (Event::Fail, S::Cleaning | S::CleanWait) => S::CleanFailed,
        (Event::Fail, S::Inspecting | S::InspectWait) => S::InspectFailed,
        (Event::Fail, S::Adopting) => S::AdoptFailed,
        (Event::Fail, S::Rescuing | S::RescueWait) => S::RescueFailed,
        (Event::Fail, S::Unrescuing) => S::UnrescueFailed,
        (Event::Fail, S::Servicing | S::ServiceWait | S::ServiceHold) => S::ServiceFailed,

        (Event::Wait, S::Deploying) => S::WaitCallBack,
        (Event::Wait, S::Cleaning) => S::CleanWait,
        (Event::Wait, S::Inspecting) => S::InspectWait,
        (Event::Wait, S::Rescuing) => S::RescueWait,
        // Ironic lets a failed service step be retried through the wait state.
        (Event::Wait, S::Servicing | S::ServiceFailed) => S::ServiceWait,

        (Event::Resume, S::WaitCallBack) => S::Deploying,
        (Event::Resume, S::CleanWait) => S::Cleaning,
        (Event::Resume, S::InspectWait) => S::Inspecting,
        (Event::Resume, S::RescueWait) => S::Rescuing,
        (Event::Resume, S::ServiceWait) => S::Servicing,

        (Event::Hold, S::Deploying | S::WaitCallBack) => S::DeployHold,
        (Event::Hold, S::Cleaning | S::CleanWait) => S::CleanHold,
        (Event::Hold, S::Servicing | S::ServiceWait | S::ServiceFailed) => S::ServiceHold,

        _ => return Err(InvalidTransition::new(state, event.as_str())),
    };
    Ok(next)
}

/// Ironic's `target_provision_state` while a node is in `state` (None for stable and failed states). Same `manual` meaning as above.
///
/// Ironic itself keeps the target on failed states (e.g. `deploy failed` shows
/// `active`); [`ironic_target_of`] reproduces that for API output.
pub fn target_of(state: ProvisionState, manual: bool) -> Option<ProvisionState> {
    if state.is_stable() || state.is_failed() {
        return None;
    }
    ironic_target_of(state, manual)
}

/// Exactly what Ironic reports as `target_provision_state` in `state`: like
/// [`target_of`], but failed states keep the target of the operation that failed
/// (Ironic's `add_state(..., target=...)`; manual cleaning keeps `manageable`).
pub fn ironic_target_of(state: ProvisionState, manual: bool) -> Option<ProvisionState> {
    let target = match state {
        S::Enroll | S::Manageable | S::Available | S::Active | S::Rescue | S::Error => return None,
        S::Verifying | S::Inspecting | S::InspectWait | S::InspectFailed => S::Manageable,
        S::Deploying | S::WaitCallBack | S::DeployFailed | S::DeployHold => S::Active,
        S::Cleaning | S::CleanWait | S::CleanFailed | S::CleanHold if manual => S::Manageable,
        S::Cleaning | S::CleanWait | S::CleanFailed | S::CleanHold => S::Available,
        // Tear-down is followed by automated cleaning, which ends in available.
        S::Deleting => S::Available,
        S::Adopting | S::AdoptFailed => S::Active,
        S::Rescuing | S::RescueWait | S::RescueFailed => S::Rescue,
        S::Unrescuing | S::UnrescueFailed => S::Active,
        S::Servicing | S::ServiceWait | S::ServiceFailed | S::ServiceHold => S::Active,
    };
    Some(target)
}

/// Which verbs a user may issue in `state` (derived from on_verb; used for error messages).
pub fn allowed_verbs(state: ProvisionState) -> Vec<Verb> {
    Verb::ALL
        .iter()
        .copied()
        .filter(|&verb| on_verb(state, verb).is_ok())
        .collect()
}

/// What a new owner does with a node found in `state` after its previous conductor died (Ironic's stuck-state problem):
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was running; leave the node alone.
    Nothing,
    /// The node waits on an outside callback, which can reach the new owner as well.
    ResumeWaiting,
    /// The work died with the old conductor; move the node to this state.
    FailTo(ProvisionState),
}

/// Stable/failed/hold: Nothing. Wait states: ResumeWaiting (they keep their deadline). Busy states: FailTo(the matching failed state):
/// verifying->enroll, deploying->deploy failed, cleaning->clean failed, inspecting->inspect failed, deleting->error, adopting->adopt failed,
/// rescuing->rescue failed, unrescuing->unrescue failed, servicing->service failed.
///
/// The failed state is the one Ironic's "fail" event leads to, as Ironic's
/// takeover does for `STUCK_STATES_TREATED_AS_FAIL`.
pub fn recovery_on_takeover(state: ProvisionState) -> Recovery {
    match state {
        S::Verifying => Recovery::FailTo(S::Enroll),
        S::Deploying => Recovery::FailTo(S::DeployFailed),
        S::Cleaning => Recovery::FailTo(S::CleanFailed),
        S::Inspecting => Recovery::FailTo(S::InspectFailed),
        S::Deleting => Recovery::FailTo(S::Error),
        S::Adopting => Recovery::FailTo(S::AdoptFailed),
        S::Rescuing => Recovery::FailTo(S::RescueFailed),
        S::Unrescuing => Recovery::FailTo(S::UnrescueFailed),
        S::Servicing => Recovery::FailTo(S::ServiceFailed),
        S::WaitCallBack | S::CleanWait | S::InspectWait | S::RescueWait | S::ServiceWait => {
            Recovery::ResumeWaiting
        }
        S::Enroll
        | S::Manageable
        | S::Available
        | S::Active
        | S::Rescue
        | S::Error
        | S::DeployFailed
        | S::CleanFailed
        | S::InspectFailed
        | S::AdoptFailed
        | S::RescueFailed
        | S::UnrescueFailed
        | S::ServiceFailed
        | S::DeployHold
        | S::CleanHold
        | S::ServiceHold => Recovery::Nothing,
    }
}

#[cfg(test)]
mod tests {
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
                            panic!(
                                "{state} + {event} (manual={manual}): want {want:?}, got {got:?}"
                            )
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
}
