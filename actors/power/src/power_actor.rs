//! `PowerActor`: a child of a `NodeActor` that exists while the node has a BMC session open or
//! a power operation in flight. It owns the node's BMC session, runs one BMC command at a time
//! with a minimum gap between commands, retries transient errors with backoff, and checks the
//! node's fence and the conductor's self-fencing deadline right before every command (BMCs cannot
//! check fencing tokens). Waiting is done between messages, never inside one, so a stop (hand-over,
//! shutdown) is handled after the command in flight, not after a ten-minute soft power off.

use crate::bmc::{Bmc, BmcError, BmcSettings, PowerAction};
use crate::fence::Fence;
use crate::op::{decide, Decision, Phase, Plan};
use ferric_model::{now_ms, BiosSetting, BootDevice, NodeId, PowerState};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// What the power actor tells its node actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerEvent {
    /// The graceful shutdown request of operation `seq` was sent (recorded so that a new owner
    /// does not send it again).
    SoftSent {
        seq: u64,
    },
    Finished {
        seq: u64,
        outcome: Outcome,
    },
    BootDone {
        seq: u64,
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the target; `note` says how when it matters (forced off after a soft timeout).
    Done {
        power: PowerState,
        note: Option<String>,
    },
    Failed {
        error: String,
        /// A fault worth recording on the node (OS did not shut down, BMC error state).
        fault: bool,
        /// The power state last read, if any.
        power: Option<PowerState>,
    },
}

pub type Notify = Arc<dyn Fn(PowerEvent) + Send + Sync>;

pub struct PowerArgs {
    pub node: NodeId,
    pub bmc: Box<dyn Bmc>,
    pub settings: Arc<BmcSettings>,
    /// The conductor's self-fencing deadline, asked right before every command.
    pub fence: Arc<dyn Fence>,
    /// Set by the supervisor when the node actor is being stopped: no new BMC command.
    pub stopping: Arc<AtomicBool>,
    pub notify: Notify,
}

pub enum PowerMsg {
    /// Start (or resume, in `phase`) an operation.
    Run(Plan, Phase),
    /// Take the next step of the running operation.
    Step,
    Boot {
        seq: u64,
        device: BootDevice,
        persistent: bool,
    },
    Read(RpcReplyPort<Result<PowerState, String>>),
    /// A message whose BMC commands are traced as children of `span` (the node's request;
    /// with `Run`, until the operation ends). Sent only when traces are exported
    /// ([`PowerMsg::traced`]).
    Traced(Box<PowerMsg>, tracing::Span),
    /// Reads the BIOS settings (None: the driver or machine has none).
    Bios(RpcReplyPort<Result<Option<Vec<BiosSetting>>, String>>),
    IdleCheck,
}

impl PowerMsg {
    /// `msg`, traced under `span` when that is a recorded span.
    pub fn traced(msg: PowerMsg, span: &tracing::Span) -> PowerMsg {
        if span.is_disabled() {
            msg
        } else {
            PowerMsg::Traced(Box::new(msg), span.clone())
        }
    }
}

struct Op {
    plan: Plan,
    phase: Phase,
    last_power: Option<PowerState>,
    /// Consecutive transient errors.
    errors: u32,
}

pub struct PowerState_ {
    node: NodeId,
    bmc: Box<dyn Bmc>,
    settings: Arc<BmcSettings>,
    fence: Arc<dyn Fence>,
    stopping: Arc<AtomicBool>,
    notify: Notify,
    op: Option<Op>,
    last_command: Option<Instant>,
    last_activity: Instant,
    /// The pending idle check. It holds a reference to this actor (its channels and cell,
    /// about 5 KB) while it sleeps, so it is ended with the actor: left to run out its 30 s
    /// it kept every session a sweep's read had opened and closed in memory that long, 1.5
    /// sessions' worth per node at a 20 s sweep interval (found with parked nodes, issue 17).
    idle_timer: tokio::task::AbortHandle,
    /// The span the BMC commands of the current message or operation are children of.
    span: tracing::Span,
}

pub struct PowerActor;

/// A command must leave this long before the self-fencing deadline. The deadline already keeps
/// a margin before etcd can expire the lease and hand the node to another conductor; this only
/// covers the time between the check and the packet leaving. (Requiring the whole command to
/// finish before the deadline is impossible with short TTLs and slow BMCs, and not needed: what
/// must never happen is a command *sent* by a conductor that may have lost the node.)
const SEND_BUDGET: Duration = Duration::from_millis(50);

/// A BIOS read may take this many command timeouts (it is several requests).
pub const BIOS_TIMEOUTS: u32 = 4;

/// Consecutive transient BMC errors tolerated within one operation.
const MAX_TRANSIENT: u32 = 5;

impl Actor for PowerActor {
    type Msg = PowerMsg;
    type State = PowerState_;
    type Arguments = PowerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PowerMsg>,
        args: PowerArgs,
    ) -> Result<PowerState_, ActorProcessingErr> {
        let idle_timer = schedule(&myself, args.settings.idle_timeout, || PowerMsg::IdleCheck);
        Ok(PowerState_ {
            node: args.node,
            bmc: args.bmc,
            settings: args.settings,
            fence: args.fence,
            stopping: args.stopping,
            notify: args.notify,
            op: None,
            last_command: None,
            last_activity: Instant::now(),
            idle_timer,
            span: tracing::Span::none(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PowerMsg>,
        state: &mut PowerState_,
    ) -> Result<(), ActorProcessingErr> {
        state.idle_timer.abort();
        state.bmc.close();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PowerMsg>,
        msg: PowerMsg,
        state: &mut PowerState_,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, PowerMsg::IdleCheck) {
            // The idle check itself is not activity: counting it kept every session open for
            // good once it had been used (found when parking idle nodes, issue 17).
            state.last_activity = Instant::now();
        }
        // An operation's span lasts until it ends; any other message's only while it is handled.
        let mut restore = None;
        let msg = match msg {
            PowerMsg::Traced(msg, span) if matches!(*msg, PowerMsg::Run(..)) => {
                state.span = span;
                *msg
            }
            PowerMsg::Traced(msg, span) => {
                restore = Some(std::mem::replace(&mut state.span, span));
                *msg
            }
            // A new operation that is not traced is not part of the last one.
            msg @ PowerMsg::Run(..) => {
                state.span = tracing::Span::none();
                msg
            }
            msg => msg,
        };
        let result = self.handle_msg(myself, msg, state).await;
        if let Some(span) = restore {
            state.span = span;
        }
        result
    }
}

impl PowerActor {
    async fn handle_msg(
        &self,
        myself: ActorRef<PowerMsg>,
        msg: PowerMsg,
        state: &mut PowerState_,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PowerMsg::Traced(..) => unreachable!("unwrapped above"),
            PowerMsg::Run(plan, phase) => {
                state.op = Some(Op {
                    plan,
                    phase,
                    last_power: None,
                    errors: 0,
                });
                myself.send_message(PowerMsg::Step)?;
            }
            PowerMsg::Step => step(&myself, state).await,
            PowerMsg::Boot {
                seq,
                device,
                persistent,
            } => {
                let result = match command(state, "set boot device", |bmc| {
                    bmc.set_boot_device(device, persistent)
                })
                .await
                {
                    Ok(()) => Ok(()),
                    Err(Gate::Fenced(why)) => return stop_fenced(&myself, state, why),
                    Err(Gate::Bmc(e)) => Err(e.to_string()),
                };
                (state.notify)(PowerEvent::BootDone { seq, result });
            }
            PowerMsg::Read(reply) => {
                let result = match command(state, "power state", |bmc| bmc.power_state()).await {
                    Ok(p) => Ok(p),
                    Err(Gate::Fenced(why)) => {
                        let _ = reply.send(Err(why.to_string()));
                        return stop_fenced(&myself, state, why);
                    }
                    Err(Gate::Bmc(e)) => Err(e.to_string()),
                };
                let _ = reply.send(result);
            }
            PowerMsg::Bios(reply) => {
                // Several requests (the settings, and the attribute registry through the
                // registry collection): bounded as a whole by a few command timeouts.
                let within = state.settings.command_timeout * BIOS_TIMEOUTS;
                let result =
                    match command_within(state, within, "bios settings", |bmc| bmc.bios_settings())
                        .await
                    {
                        Ok(s) => Ok(s),
                        Err(Gate::Fenced(why)) => {
                            let _ = reply.send(Err(why.to_string()));
                            return stop_fenced(&myself, state, why);
                        }
                        Err(Gate::Bmc(e)) => Err(e.to_string()),
                    };
                let _ = reply.send(result);
            }
            PowerMsg::IdleCheck => {
                let idle = state.settings.idle_timeout;
                if state.op.is_none() && state.last_activity.elapsed() >= idle {
                    // The session has been idle: close it and leave the node one actor again.
                    myself.stop(Some("idle".into()));
                } else {
                    state.idle_timer = schedule(&myself, idle, || PowerMsg::IdleCheck);
                }
            }
        }
        Ok(())
    }
}

enum Gate {
    /// The node or the whole conductor may no longer command this BMC.
    Fenced(&'static str),
    Bmc(BmcError),
}

/// Runs one BMC command after the fence checks and the per-BMC gap, bounded by the command
/// timeout.
async fn command<'a, T, F>(state: &'a mut PowerState_, what: &str, f: F) -> Result<T, Gate>
where
    F: FnOnce(&'a mut Box<dyn Bmc>) -> crate::bmc::BmcFuture<'a, T>,
{
    let timeout = state.settings.command_timeout;
    command_within(state, timeout, what, f).await
}

/// The least time between two commands to this node's BMC (none for `fake-hardware`).
fn gap(state: &PowerState_) -> Duration {
    if state.bmc.paced() {
        state.settings.min_gap
    } else {
        Duration::ZERO
    }
}

/// [`command`] bounded by `timeout` instead of the command timeout.
async fn command_within<'a, T, F>(
    state: &'a mut PowerState_,
    timeout: Duration,
    what: &str,
    f: F,
) -> Result<T, Gate>
where
    F: FnOnce(&'a mut Box<dyn Bmc>) -> crate::bmc::BmcFuture<'a, T>,
{
    if let Some(last) = state.last_command {
        tokio::time::sleep_until(last + gap(state)).await;
    }
    // fenced: checked after the gap, right before the command leaves.
    if state.stopping.load(Ordering::Acquire) {
        return Err(Gate::Fenced("node actor is stopping (node handed over)"));
    }
    state.fence.may_send(SEND_BUDGET).map_err(Gate::Fenced)?;
    let sent = Instant::now();
    state.last_command = Some(sent);
    let node = state.node;
    let driver = state.bmc.driver();
    let span = if state.span.is_disabled() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            parent: &state.span,
            "bmc command",
            otel.name = %format_args!("bmc {what}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            node = %node,
            driver,
            command = what,
            outcome = tracing::field::Empty,
        )
    };
    let result = tokio::time::timeout(timeout, f(&mut state.bmc))
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    };
    span.record("outcome", outcome);
    if outcome != "ok" {
        span.record("otel.status_code", "ERROR");
    }
    crate::metrics::BMC.observe(driver, what, outcome, sent.elapsed());
    match result {
        Ok(result) => result.map_err(Gate::Bmc),
        Err(_) => {
            tracing::warn!(%node, timeout_ms = timeout.as_millis() as u64, "BMC command timed out");
            Err(Gate::Bmc(BmcError::Unreachable {
                bmc: node.to_string(),
                reason: format!("no answer within {} ms", timeout.as_millis()),
            }))
        }
    }
}

fn stop_fenced(
    myself: &ActorRef<PowerMsg>,
    state: &mut PowerState_,
    why: &'static str,
) -> Result<(), ActorProcessingErr> {
    tracing::warn!(node = %state.node, why, "no further BMC commands");
    state.op = None;
    state.span = tracing::Span::none();
    myself.stop(Some(why.into()));
    Ok(())
}

async fn step(myself: &ActorRef<PowerMsg>, state: &mut PowerState_) {
    let Some(op) = state.op.as_ref() else { return };
    let plan = op.plan;
    let observed = match command(state, "power state", |bmc| bmc.power_state()).await {
        Ok(p) => p,
        Err(Gate::Fenced(why)) => {
            let _ = stop_fenced(myself, state, why);
            return;
        }
        Err(Gate::Bmc(e)) => return transient_or_fail(myself, state, e),
    };
    let op = state.op.as_mut().expect("checked above");
    op.last_power = Some(observed);
    op.errors = 0;
    match decide(&plan, op.phase, observed, now_ms()) {
        Decision::Send(action, next) => {
            match command(state, action.as_str(), |bmc| bmc.power(action)).await {
                Ok(()) => {}
                Err(Gate::Fenced(why)) => {
                    let _ = stop_fenced(myself, state, why);
                    return;
                }
                Err(Gate::Bmc(e)) => return transient_or_fail(myself, state, e),
            }
            if let Some(op) = state.op.as_mut() {
                op.phase = next;
            }
            if action == PowerAction::GracefulShutdown {
                (state.notify)(PowerEvent::SoftSent { seq: plan.seq });
            }
            // Read back after the gap (the command function waits for it).
            let _ = myself.send_message(PowerMsg::Step);
        }
        Decision::Poll => {
            let every = if matches!(state.op.as_ref().map(|o| o.phase), Some(Phase::SoftSent)) {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(250)
            };
            schedule(myself, every.max(gap(state)), || PowerMsg::Step);
        }
        Decision::Done { note } => finish(
            state,
            plan.seq,
            Outcome::Done {
                power: observed,
                note,
            },
        ),
        Decision::Failed { error, fault } => finish(
            state,
            plan.seq,
            Outcome::Failed {
                error,
                fault,
                power: Some(observed),
            },
        ),
    }
}

fn transient_or_fail(myself: &ActorRef<PowerMsg>, state: &mut PowerState_, e: BmcError) {
    let Some(op) = state.op.as_mut() else { return };
    op.errors += 1;
    let late = now_ms() >= op.plan.deadline_ms;
    if e.is_transient() && op.errors <= MAX_TRANSIENT && !late {
        let backoff =
            Duration::from_millis(500 * 2u64.pow(op.errors - 1)).min(Duration::from_secs(5));
        tracing::warn!(node = %state.node, error = %e, attempt = op.errors, backoff_ms = backoff.as_millis() as u64, "BMC error; retrying");
        schedule(myself, backoff, || PowerMsg::Step);
        return;
    }
    let (seq, power) = (op.plan.seq, op.last_power);
    finish(
        state,
        seq,
        Outcome::Failed {
            error: e.to_string(),
            fault: false,
            power,
        },
    );
}

fn finish(state: &mut PowerState_, seq: u64, outcome: Outcome) {
    state.op = None;
    state.span = tracing::Span::none();
    (state.notify)(PowerEvent::Finished { seq, outcome });
}

fn schedule(
    myself: &ActorRef<PowerMsg>,
    after: Duration,
    msg: impl FnOnce() -> PowerMsg + Send + 'static,
) -> tokio::task::AbortHandle {
    let me = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = me.send_message(msg());
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::BmcFuture;
    use ferric_model::{PowerTarget, SoftOffPolicy};
    use std::sync::Mutex;

    /// A fence the test opens and closes (the conductor's lease stands behind it in production).
    struct TestFence(AtomicBool);

    impl Fence for TestFence {
        fn may_send(&self, _budget: Duration) -> Result<(), &'static str> {
            if self.0.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err("test fence closed")
            }
        }
    }

    /// A machine that records every command it receives: the independent record of what left.
    struct Recorder {
        power: PowerState,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Bmc for Recorder {
        fn power_state(&mut self) -> BmcFuture<'_, PowerState> {
            self.log.lock().unwrap().push("read");
            let p = self.power;
            Box::pin(async move { Ok(p) })
        }

        fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()> {
            self.log.lock().unwrap().push(action.as_str());
            if action == PowerAction::On {
                self.power = PowerState::On;
            }
            Box::pin(async { Ok(()) })
        }

        fn set_boot_device(&mut self, _device: BootDevice, _persistent: bool) -> BmcFuture<'_, ()> {
            self.log.lock().unwrap().push("boot device");
            Box::pin(async { Ok(()) })
        }
    }

    async fn spawn(
        open: bool,
    ) -> (
        ActorRef<PowerMsg>,
        tokio::task::JoinHandle<()>,
        Arc<TestFence>,
        Arc<Mutex<Vec<&'static str>>>,
        tokio::sync::mpsc::UnboundedReceiver<PowerEvent>,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let bmc = Box::new(Recorder {
            power: PowerState::Off,
            log: log.clone(),
        });
        let (actor, handle, fence, rx) = spawn_with(open, bmc, Duration::from_millis(1)).await;
        (actor, handle, fence, log, rx)
    }

    async fn spawn_with(
        open: bool,
        bmc: Box<dyn Bmc>,
        min_gap: Duration,
    ) -> (
        ActorRef<PowerMsg>,
        tokio::task::JoinHandle<()>,
        Arc<TestFence>,
        tokio::sync::mpsc::UnboundedReceiver<PowerEvent>,
    ) {
        let fence = Arc::new(TestFence(AtomicBool::new(open)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let args = PowerArgs {
            node: NodeId::new_random(),
            bmc,
            settings: Arc::new(BmcSettings::new("test", Duration::from_secs(1), min_gap)),
            fence: fence.clone(),
            stopping: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(move |ev| {
                let _ = tx.send(ev);
            }),
        };
        let (actor, handle) = Actor::spawn(None, PowerActor, args).await.expect("spawn");
        (actor, handle, fence, rx)
    }

    fn power_on(seq: u64) -> Plan {
        Plan {
            seq,
            target: PowerTarget::On,
            deadline_ms: now_ms() + 60_000,
            timeout_s: 60,
            policy: SoftOffPolicy::Error,
            disable_power_off: false,
        }
    }

    #[tokio::test]
    async fn open_fence_lets_the_operation_run() {
        let (actor, handle, _fence, log, mut events) = spawn(true).await;
        actor
            .send_message(PowerMsg::Run(power_on(7), Phase::Begin))
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an outcome, likely deadlocked otherwise")
            .expect("event");
        assert_eq!(
            ev,
            PowerEvent::Finished {
                seq: 7,
                outcome: Outcome::Done {
                    power: PowerState::On,
                    note: None
                }
            }
        );
        assert_eq!(*log.lock().unwrap(), ["read", "power on", "read"]);
        actor.stop(None);
        handle.await.unwrap();
    }

    /// A session closes once nothing has used it for the idle timeout (30 s), also after it
    /// was used; one in use is kept.
    #[tokio::test(start_paused = true)]
    async fn an_idle_session_closes_after_its_timeout() {
        let (actor, handle, _fence, log, mut events) = spawn(true).await;
        actor
            .send_message(PowerMsg::Run(power_on(1), Phase::Begin))
            .unwrap();
        events.recv().await.expect("the outcome");
        // Used again 20 s later: 30 s from then it is still open at 45 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let read = ractor::call_t!(actor, PowerMsg::Read, 10_000).expect("an answer");
        assert_eq!(read, Ok(PowerState::On));
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!handle.is_finished(), "closed while in use");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the idle session closes")
            .unwrap();
        assert_eq!(*log.lock().unwrap(), ["read", "power on", "read", "read"]);
    }

    #[tokio::test]
    async fn closed_fence_sends_nothing_and_stops_the_actor() {
        let (actor, handle, fence, log, _events) = spawn(true).await;
        fence.0.store(false, Ordering::Release);
        let read = ractor::call_t!(actor, PowerMsg::Read, 10_000).expect("an answer");
        assert_eq!(read, Err("test fence closed".to_string()));
        actor
            .send_message(PowerMsg::Run(power_on(1), Phase::Begin))
            .ok();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the power actor stops once fenced, likely deadlocked otherwise")
            .unwrap();
        assert!(
            log.lock().unwrap().is_empty(),
            "no command may reach the BMC once the fence is closed"
        );
    }

    /// How long a power-on takes on the test clock (paused: only timers move it).
    async fn power_on_time(bmc: Box<dyn Bmc>, min_gap: Duration) -> Duration {
        let (actor, handle, _fence, mut events) = spawn_with(true, bmc, min_gap).await;
        let t0 = tokio::time::Instant::now();
        actor
            .send_message(PowerMsg::Run(power_on(3), Phase::Begin))
            .unwrap();
        let ev = events.recv().await.expect("an outcome");
        let took = t0.elapsed();
        assert!(
            matches!(
                ev,
                PowerEvent::Finished {
                    outcome: Outcome::Done {
                        power: PowerState::On,
                        ..
                    },
                    ..
                }
            ),
            "{ev:?}"
        );
        actor.stop(None);
        handle.await.unwrap();
        took
    }

    #[tokio::test(start_paused = true)]
    async fn a_real_bmc_keeps_the_gap_and_fake_hardware_answers_at_once() {
        let gap = Duration::from_millis(500);
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Box::new(Recorder {
            power: PowerState::Off,
            log: log.clone(),
        });
        // read, power on, read back: two gaps.
        let paced = power_on_time(recorder, gap).await;
        assert_eq!(*log.lock().unwrap(), ["read", "power on", "read"]);
        assert!(paced >= 2 * gap, "{paced:?}");
        let fake = Box::new(crate::fake::FakeHardware::new(Some(PowerState::Off)));
        assert_eq!(power_on_time(fake, gap).await, Duration::ZERO);
    }
}
