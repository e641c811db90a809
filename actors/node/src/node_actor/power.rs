//! The node's power path: the `PowerActor` child (spawned on demand, linked), users' power and
//! boot-device requests, the deploy interface's hardware work, and recording how each ended.

use super::effects::{history, power_event, record, Extras};
use super::in_flight::InFlight;
use super::provision::drive;
use super::reconcile::Flow;
use super::{NodeMsg, NodeState};
use crate::decide::node_state::{
    boot_finished, hardware_done, power_finished, power_start, Hardware, HARD_TIMEOUT_S,
};
use crate::error::NodeError;
use ferric_model::{
    now_ms, BootDevice, BootDeviceRequest, HistoryKind, PowerRequest, PowerState, PowerTarget,
    ProvisionState, RequestKind, Requester,
};
use ferric_power::op::{Phase, Plan};
use ferric_power::{Outcome, PowerActor, PowerArgs, PowerEvent, PowerMsg};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The sequence number of the power actor's work for provisioning (boot device and power of
/// the deploy interface), apart from the users' requests, which count up from 1.
const HW_SEQ: u64 = u64::MAX;

/// Starts a user's power request on the power actor; its `Finished` event ends it.
pub(super) async fn start_power(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    req: PowerRequest,
) -> Result<Flow, NodeError> {
    if !state.may_command() {
        return Ok(Flow::Wait);
    }
    let spec = state.spec_now();
    let span = request_span(state, RequestKind::Power, req.seq, req.target.as_str());
    state.op_span = span.clone();
    let (next, plan, phase) = power_start(&spec, &state.status, &req, now_ms());
    if next.power_op != state.status.power_op && plan.target.is_soft() {
        // Record a graceful operation before the first BMC command: its deadline must survive
        // a takeover. A hard operation needs no record: a new owner finds the request pending
        // in the spec and re-checks the hardware.
        record(state, next, Extras::default())
            .instrument(span.clone())
            .await?;
    } else {
        state.status = next;
    }
    match power_actor(myself, state).await {
        Ok(power) => {
            state.in_flight = InFlight::Power(req.seq);
            let _ = power.send_message(PowerMsg::traced(PowerMsg::Run(plan, phase), &span));
            Ok(Flow::Wait)
        }
        Err(error) => {
            let outcome = Outcome::Failed {
                error,
                fault: false,
                power: None,
            };
            finish_power(state, req.seq, outcome).await?;
            Ok(Flow::Again)
        }
    }
}

/// The span of a user's request of `kind` when traces are exported (else a disabled one): a
/// child of the span that wrote the request into the spec (the gateway's etcd write), when the
/// spec recorded it.
pub(super) fn request_span(
    state: &NodeState,
    kind: RequestKind,
    seq: u64,
    what: &str,
) -> tracing::Span {
    if !ferric_telemetry::enabled() {
        return tracing::Span::none();
    }
    let name = match kind {
        RequestKind::Power => "power",
        RequestKind::Provision => "provision",
        RequestKind::BootDevice => "boot device",
    };
    let span = tracing::info_span!(
        "node request",
        otel.name = %format_args!("{name} {what}"),
        node = %state.id,
        seq,
        conductor = %state.ctx.me,
    );
    let parent = state.spec.as_deref().and_then(|s| s.traceparent(kind, seq));
    ferric_telemetry::set_parent(&span, parent);
    span
}

/// Starts a user's boot-device request; its `BootDone` event ends it.
pub(super) async fn start_boot_device(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    req: BootDeviceRequest,
) -> Result<Flow, NodeError> {
    if !state.may_command() {
        return Ok(Flow::Wait);
    }
    let span = request_span(state, RequestKind::BootDevice, req.seq, req.device.as_str());
    match power_actor(myself, state).await {
        Ok(power) => {
            state.in_flight = InFlight::BootDevice(req.seq);
            let boot = PowerMsg::Boot {
                seq: req.seq,
                device: req.device,
                persistent: req.persistent,
            };
            let _ = power.send_message(PowerMsg::traced(boot, &span));
            Ok(Flow::Wait)
        }
        Err(error) => {
            let next = boot_finished(&state.status, &req, &Err(error.clone()));
            let entry = history(
                state,
                HistoryKind::BootDevice,
                req.device.as_str(),
                req.requested_by.as_str(),
                Some(error),
            );
            record(state, next, Extras::history(entry)).await?;
            Ok(Flow::Again)
        }
    }
}

/// The node's power actor, spawned (linked to this node actor) if it is not running.
pub(super) async fn power_actor(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<ActorRef<PowerMsg>, String> {
    if let Some(p) = &state.power {
        return Ok(p.clone());
    }
    let spec = state.spec.as_deref().ok_or("no readable spec")?;
    let bmc = (state.ctx.connect)(
        &spec.driver,
        &state.info,
        state.status.power_state,
        &state.ctx.bmc,
    )
    .map_err(|e| e.to_string())?;
    let me = myself.clone();
    let args = PowerArgs {
        node: state.id,
        bmc,
        settings: state.ctx.bmc.clone(),
        fence: Arc::new(crate::fence::LeaseFence(state.ctx.fence.clone())),
        stopping: state.stopping.clone(),
        notify: Arc::new(move |ev| {
            let _ = me.send_message(NodeMsg::Power(ev));
        }),
    };
    let (power, _) = Actor::spawn_linked(None, PowerActor, args, myself.get_cell())
        .await
        .map_err(|e| format!("cannot start the power actor: {e}"))?;
    state.power = Some(power.clone());
    Ok(power)
}

/// Reads the power state through the node's driver (what `manage` verifies, and remediation's
/// power check).
pub(super) async fn read_power(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<PowerState, String> {
    send_read(myself, state).await?.answer().await
}

/// A power read sent to the node's power actor, its answer still to come.
pub(super) struct PendingRead {
    answer: ractor::concurrency::OneshotReceiver<Result<PowerState, String>>,
    deadline: tokio::time::Instant,
}

impl PendingRead {
    /// The answer, waiting at most until the read's deadline (the BMC's command timeout and
    /// gap, and a second more).
    pub(super) async fn answer(self) -> Result<PowerState, String> {
        // `within` stops at the read's deadline at the latest.
        self.within(Duration::MAX)
            .await
            .unwrap_or_else(|_| Err("no answer from the power actor: timed out".into()))
    }

    /// The answer if it comes within `wait`; otherwise the read is still pending.
    pub(super) async fn within(
        mut self,
        wait: Duration,
    ) -> Result<Result<PowerState, String>, PendingRead> {
        let until = tokio::time::Instant::now()
            .checked_add(wait)
            .map_or(self.deadline, |at| at.min(self.deadline));
        match tokio::time::timeout_at(until, &mut self.answer).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Ok(Err("no answer from the power actor: it stopped".into())),
            Err(_) => Err(self),
        }
    }
}

/// Sends a power read to the node's power actor (spawning it if need be) without waiting for
/// the answer.
pub(super) async fn send_read(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
) -> Result<PendingRead, String> {
    if !state.may_command() {
        return Err("conductor is fenced or stopping".into());
    }
    let power = power_actor(myself, state).await?;
    let timeout = state.ctx.bmc.command_timeout + state.ctx.bmc.min_gap + Duration::from_secs(1);
    let span = tracing::Span::current();
    let (tx, answer) = ractor::concurrency::oneshot();
    power
        .cast(PowerMsg::traced(PowerMsg::Read(tx.into()), &span))
        .map_err(|e| format!("no answer from the power actor: {e}"))?;
    Ok(PendingRead {
        answer,
        deadline: tokio::time::Instant::now() + timeout,
    })
}

/// An event of the power actor: records what ended.
pub(super) async fn on_power_event(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    event: PowerEvent,
) -> Result<(), NodeError> {
    match event {
        PowerEvent::SoftSent { seq } => {
            let mut next = state.status.clone();
            if let Some(op) = next.power_op.as_mut().filter(|op| op.seq == seq) {
                op.soft_sent = true;
                record(state, next, Extras::default()).await?;
            }
        }
        PowerEvent::BootDone {
            seq: HW_SEQ,
            result,
        } => hardware_boot_done(myself, state, result).await?,
        PowerEvent::Finished {
            seq: super::sync::SYNC_SEQ,
            outcome,
        } => super::sync::finish_push(state, outcome).await?,
        PowerEvent::Finished {
            seq: HW_SEQ,
            outcome,
        } => {
            if let InFlight::Hardware {
                state: s,
                hw,
                started_ms,
            } = state.in_flight.take()
            {
                let (result, power) = match outcome {
                    Outcome::Done { power, .. } => (Ok(()), Some(power)),
                    Outcome::Failed { error, power, .. } => (Err(error), power),
                };
                finish_hardware(myself, state, (s, hw, started_ms), result, power).await?;
            }
        }
        PowerEvent::Finished { seq, outcome } => {
            if state.in_flight == InFlight::Power(seq) {
                state.in_flight = InFlight::Idle;
            }
            finish_power(state, seq, outcome).await?;
        }
        PowerEvent::BootDone { seq, result } => {
            if state.in_flight == InFlight::BootDevice(seq) {
                state.in_flight = InFlight::Idle;
            }
            let Some(req) = state
                .spec
                .as_ref()
                .and_then(|s| s.boot_device_request.clone())
                .filter(|r| r.seq == seq)
            else {
                return Ok(());
            };
            let next = boot_finished(&state.status, &req, &result);
            let action = format!(
                "{}{}",
                req.device.as_str(),
                if req.persistent { " (persistent)" } else { "" }
            );
            let entry = history(
                state,
                HistoryKind::BootDevice,
                &action,
                req.requested_by.as_str(),
                result.err(),
            );
            record(state, next, Extras::history(entry)).await?;
        }
    }
    Ok(())
}

/// Records the end of power operation `seq`: status, history and (if the observed power state
/// changed) an event, in one fenced transaction.
async fn finish_power(state: &mut NodeState, seq: u64, outcome: Outcome) -> Result<(), NodeError> {
    let req = state
        .spec
        .as_ref()
        .and_then(|s| s.power_request.clone())
        .filter(|r| r.seq == seq);
    let before = state.status.power_state;
    let mut next = power_finished(&state.status, seq, &outcome, now_ms());
    let (action, error) = match (&outcome, &req) {
        (Outcome::Done { note, .. }, Some(r)) => (
            match note {
                Some(n) => format!("{}: {n}", r.target.as_str()),
                None => r.target.as_str().to_string(),
            },
            None,
        ),
        (Outcome::Failed { error, .. }, Some(r)) => {
            (r.target.as_str().to_string(), Some(error.clone()))
        }
        (_, None) => ("power".to_string(), None),
    };
    let who = req
        .as_ref()
        .map_or("conductor".to_string(), |r| r.requested_by.clone());
    let entry = history(state, HistoryKind::Power, &action, who.as_str(), error);
    let event = power_event(state, &mut next, before);
    // The request's span ends with the write of its outcome.
    let span = std::mem::replace(&mut state.op_span, tracing::Span::none());
    record(state, next, Extras::history(entry).with_event(event))
        .instrument(span)
        .await
}

/// Starts the deploy interface's hardware work `hw` of provisioning state `pstate` on the power
/// actor; its events finish it. Waits while another operation is in flight: the pass after it
/// ends finds the work again (`provision::resume`).
pub(super) async fn start_hardware(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    pstate: ProvisionState,
    hw: Hardware,
) -> Result<Flow, NodeError> {
    if !state.may_command() || state.in_flight.is_busy() {
        return Ok(Flow::Wait);
    }
    if hw == Hardware::BootRamdisk {
        // The ramdisk about to boot looks its node up and gets a fresh token.
        super::agent::wipe_agent_token(state).await?;
    }
    let power = match power_actor(myself, state).await {
        Ok(p) => p,
        Err(e) => {
            return finish_hardware(myself, state, (pstate, hw, now_ms()), Err(e), None).await
        }
    };
    state.in_flight = InFlight::Hardware {
        state: pstate,
        hw,
        started_ms: now_ms(),
    };
    // Traced under the provision request that started it, if any.
    let span = tracing::Span::current();
    let _ = match hw {
        Hardware::BootRamdisk => power.send_message(PowerMsg::traced(
            PowerMsg::Boot {
                seq: HW_SEQ,
                device: BootDevice::Pxe,
                persistent: false,
            },
            &span,
        )),
        Hardware::BootDisk => power.send_message(PowerMsg::traced(
            PowerMsg::Boot {
                seq: HW_SEQ,
                device: BootDevice::Disk,
                persistent: true,
            },
            &span,
        )),
        Hardware::PowerOff => {
            let plan = hw_plan(state, PowerTarget::Off);
            power.send_message(PowerMsg::traced(PowerMsg::Run(plan, Phase::Begin), &span))
        }
    };
    Ok(Flow::Wait)
}

/// How long the machine gets to power itself off after the agent was told to (Ironic's
/// `post_deploy_get_power_state_retries` times `..._retry_interval`: 6 × 5 s).
const AGENT_POWER_OFF_GRACE_S: u64 = 30;

fn hw_plan(state: &NodeState, target: PowerTarget) -> Plan {
    let spec = state.spec.as_deref();
    Plan {
        seq: HW_SEQ,
        target,
        deadline_ms: now_ms() + u64::from(HARD_TIMEOUT_S) * 1000,
        timeout_s: HARD_TIMEOUT_S,
        policy: spec.map(|s| s.soft_off_policy).unwrap_or_default(),
        disable_power_off: spec.is_some_and(|s| s.disable_power_off),
    }
}

/// The boot device of the hardware work is set: now the power half (a reboot powers on a node
/// that is off).
async fn hardware_boot_done(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    result: Result<(), String>,
) -> Result<(), NodeError> {
    let InFlight::Hardware {
        state: pstate,
        hw,
        started_ms,
    } = state.in_flight
    else {
        return Ok(());
    };
    if let Err(e) = result {
        state.in_flight = InFlight::Idle;
        let error = format!("setting the boot device failed: {e}");
        return finish_hardware(myself, state, (pstate, hw, started_ms), Err(error), None)
            .await
            .map(|_| ());
    }
    let device = if hw == Hardware::BootRamdisk {
        BootDevice::Pxe
    } else {
        BootDevice::Disk
    };
    state.status.boot_device = Some(device);
    state.status.boot_persistent = hw == Hardware::BootDisk;
    let agent_off = hw == Hardware::BootDisk
        && state
            .spec
            .as_deref()
            .is_some_and(|spec| crate::decide::agent::agent_powers_off(spec, &state.status));
    let plan = if agent_off {
        // The agent was told to power the machine off (`standby.power_off`) and may still be
        // shutting down: wait for off, force it after the grace (Ironic's tear_down_agent),
        // then power on.
        Plan {
            target: PowerTarget::SoftReboot,
            deadline_ms: now_ms() + AGENT_POWER_OFF_GRACE_S * 1000,
            timeout_s: AGENT_POWER_OFF_GRACE_S as u32,
            policy: ferric_model::SoftOffPolicy::HardOff,
            ..hw_plan(state, PowerTarget::Reboot)
        }
    } else {
        hw_plan(state, PowerTarget::Reboot)
    };
    match state.power.clone() {
        Some(power) if state.may_command() => {
            let _ = power.send_message(PowerMsg::Run(plan, Phase::Begin));
        }
        _ => {
            // Stopping, or the power actor is gone (its supervision event schedules a retry).
            state.in_flight = InFlight::Idle;
        }
    }
    Ok(())
}

/// Records the end of hardware work: status (with the power state observed and an event if it
/// changed), history, and the work that follows.
async fn finish_hardware(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    (pstate, hw, started): (ProvisionState, Hardware, u64),
    result: Result<(), String>,
    power: Option<PowerState>,
) -> Result<Flow, NodeError> {
    let Some(spec) = state.spec.clone() else {
        return Ok(Flow::Go);
    };
    let timeout = state.callback_timeout_ms();
    let before_power = state.status.power_state;
    let mut base = state.status.clone();
    if power.is_some() {
        base.power_state = power;
    }
    let (mut next, more) = hardware_done(
        &spec,
        &base,
        pstate,
        hw,
        result.clone(),
        started,
        now_ms(),
        timeout,
    );
    if next == state.status {
        return Ok(Flow::Go);
    }
    let action = format!(
        "{}: \"{}\" -> \"{}\"",
        hw.as_str(),
        pstate.as_str(),
        next.provision_state.as_str()
    );
    let entry = history(
        state,
        HistoryKind::Provision,
        &action,
        Requester::Conductor,
        result.err(),
    );
    let event = power_event(state, &mut next, before_power);
    record(state, next, Extras::history(entry).with_event(event)).await?;
    Box::pin(drive(myself, state, more)).await
}
