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

    /// States a ramdisk agent works in, where it may look its node up (Ironic's
    /// `LOOKUP_ALLOWED_STATES`); its token lives as long as the node stays in them.
    pub fn agent_may_look_up(self) -> bool {
        matches!(
            self,
            S::Deploying
                | S::WaitCallBack
                | S::Cleaning
                | S::CleanWait
                | S::Inspecting
                | S::InspectWait
                | S::Rescuing
                | S::RescueWait
                | S::Servicing
                | S::ServiceWait
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
mod tests;
