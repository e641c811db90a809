//! What a node actor has going on besides its mailbox: the one BMC operation or agent call in
//! flight (one operation at a time per node, as Ironic's node lock gives) and the timers it has
//! armed.

use crate::decide::node_state::Hardware;
use ferric_model::{PowerTarget, ProvisionState};

/// The one BMC operation the node's power actor is running. Neon's storage controller keeps
/// one reconciler handle per shard for the same reason: a second operation never starts while
/// one runs, and a finished one is matched to what was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum InFlight {
    #[default]
    Idle,
    /// A user's power request (its sequence number).
    Power(u64),
    /// A user's boot-device request (its sequence number).
    BootDevice(u64),
    /// Power sync's push of the last requested state (`enforce`).
    Enforce(PowerTarget),
    /// The deploy interface's hardware work for a provisioning state, and when it started.
    Hardware {
        state: ProvisionState,
        hw: Hardware,
        started_ms: u64,
    },
    /// A call to the node's agent (its command API) in the given wait state.
    Agent(ProvisionState),
}

impl InFlight {
    pub(super) fn is_busy(self) -> bool {
        self != InFlight::Idle
    }

    /// A user's power operation (its session must not be pulled from under it).
    pub(super) fn is_power(self) -> bool {
        matches!(self, InFlight::Power(_) | InFlight::Enforce(_))
    }

    /// Ends whatever was in flight, returning it.
    pub(super) fn take(&mut self) -> InFlight {
        std::mem::take(self)
    }
}

/// Timers armed with ractor's `send_after`; each is armed at most once at a time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// A `Reconcile` is due (a retry after a failed write, or a child that ended).
    pub(super) retry: bool,
    /// A `Remediate` is due (the rate limit's next window, or an etcd error).
    pub(super) remedy: bool,
    /// The provisioning state whose timed step is due.
    pub(super) step: Option<ProvisionState>,
    /// The wait-state deadline a `WaitDeadline` is due for.
    pub(super) deadline: Option<u64>,
    /// A power-failure probe is due.
    pub(super) probe: bool,
    /// An `AgentTimer` is due (a poll of a running command, or a retry).
    pub(super) agent: bool,
    /// A `SpecAt` is due (the spec could not be read after a lost watch).
    pub(super) spec_at: bool,
}

impl Timers {
    /// Whether any timer is armed.
    pub(super) fn any(&self) -> bool {
        let Timers {
            retry,
            remedy,
            step,
            deadline,
            probe,
            agent,
            spec_at,
        } = self;
        *retry || *remedy || step.is_some() || deadline.is_some() || *probe || *agent || *spec_at
    }
}
