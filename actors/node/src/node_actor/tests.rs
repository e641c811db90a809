//! Unit tests of the node actor: the real actor, power actor and console actor, with an
//! in-memory store in place of etcd, a scripted machine in place of a BMC, and tokio's paused
//! clock (persisted deadlines follow it too), so each runs in milliseconds. What they check is
//! what an independent record would show: the store's records and the machine's command log.

use super::*;
use crate::decide::agent::{AgentCall, CallResult, CommandResult, CommandState};
use crate::decide::sync::SyncSettings;
use crate::store::memory::{Inner, MemStore};
use ferric_cluster::remediation::Slot;
use ferric_console::ConsoleSettings;
use ferric_model::clock::{install_test_source, system_ms};
use ferric_model::{
    AgentTokenRecord, BootDevice, PowerRequest, PowerTarget, ProvisionRequest, RemediationAction,
    RemediationRule, SoftOffPolicy, SyncConfig, SyncPolicy, Verb,
};
use ferric_power::bmc::BmcFuture;
use ferric_power::PowerAction;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Wall-clock milliseconds that follow tokio's (paused) clock.
fn tokio_clock() -> u64 {
    static BASE: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
    let (wall, at) = *BASE.get_or_init(|| (system_ms(), std::time::Instant::now()));
    let now = tokio::time::Instant::now().into_std();
    wall + now.saturating_duration_since(at).as_millis() as u64
}

/// A machine behind a scripted BMC: its power survives power-actor restarts (as hardware
/// does), and every command it gets is logged.
#[derive(Clone, Default)]
struct Machine(Arc<Mutex<MachineState>>);

#[derive(Default)]
struct MachineState {
    on: bool,
    /// The OS never acts on a graceful shutdown.
    ignores_graceful: bool,
    /// The BMC does not answer.
    unreachable: bool,
    /// Every command, as "power on", "graceful shutdown", "boot pxe", "read", "bios".
    log: Vec<String>,
    /// The BIOS settings the BMC reports (None: it has none).
    bios: Option<Vec<(String, String)>>,
    /// How long a power read takes to answer.
    read_delay: Duration,
}

impl Machine {
    fn new(on: bool) -> Self {
        let m = Machine::default();
        m.0.lock().unwrap().on = on;
        m
    }
    fn stubborn(on: bool) -> Self {
        let m = Machine::new(on);
        m.0.lock().unwrap().ignores_graceful = true;
        m
    }
    fn is_on(&self) -> bool {
        self.0.lock().unwrap().on
    }
    /// The machine changes by itself (its OS, the button).
    fn set_on(&self, on: bool) {
        self.0.lock().unwrap().on = on;
    }
    fn set_unreachable(&self, u: bool) {
        self.0.lock().unwrap().unreachable = u;
    }
    fn reads(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|c| *c == "read")
            .count()
    }
    /// The commands that changed something or could have (reads left out).
    fn commands(&self) -> Vec<String> {
        let log = self.0.lock().unwrap().log.clone();
        log.into_iter().filter(|c| c != "read").collect()
    }
}

struct MachineBmc(Machine);

impl Bmc for MachineBmc {
    fn power_state(&mut self) -> BmcFuture<'_, PowerState> {
        let mut m = self.0 .0.lock().unwrap();
        m.log.push("read".into());
        if m.unreachable {
            return Box::pin(async {
                Err(BmcError::Unreachable {
                    bmc: "machine".into(),
                    reason: "no answer".into(),
                })
            });
        }
        let p = if m.on {
            PowerState::On
        } else {
            PowerState::Off
        };
        let delay = m.read_delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(p)
        })
    }

    fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()> {
        let mut m = self.0 .0.lock().unwrap();
        m.log.push(action.as_str().to_string());
        match action {
            PowerAction::On | PowerAction::HardReset => m.on = true,
            PowerAction::ForceOff => m.on = false,
            PowerAction::GracefulShutdown if !m.ignores_graceful => m.on = false,
            PowerAction::GracefulShutdown => {}
        }
        Box::pin(async { Ok(()) })
    }

    fn set_boot_device(&mut self, device: BootDevice, _persistent: bool) -> BmcFuture<'_, ()> {
        let mut m = self.0 .0.lock().unwrap();
        m.log.push(format!("boot {}", device.as_str()));
        Box::pin(async { Ok(()) })
    }

    fn bios_settings(&mut self) -> BmcFuture<'_, Option<Vec<ferric_model::BiosSetting>>> {
        let mut m = self.0 .0.lock().unwrap();
        m.log.push("bios".into());
        let settings = m.bios.as_ref().map(|b| {
            b.iter()
                .map(|(name, value)| ferric_model::BiosSetting {
                    name: name.clone(),
                    value: Some(value.clone()),
                    ..Default::default()
                })
                .collect()
        });
        Box::pin(async move { Ok(settings) })
    }
}

const TOKEN: FenceToken = FenceToken(7);

struct Node {
    id: NodeId,
    store: Arc<MemStore>,
    actor: ActorRef<NodeMsg>,
    handle: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    policy: watch::Sender<Arc<RemediationPolicy>>,
    /// The cluster's sync config as the conductor's watch would change it.
    sync: watch::Sender<Arc<SyncConfig>>,
    consoles: Option<Arc<ConsoleContext>>,
    _dir: Option<tempfile::TempDir>,
}

struct Setup {
    spec: NodeSpec,
    status: Option<NodeStatus>,
    machine: Machine,
    agent: ScriptedAgent,
    policy: RemediationPolicy,
    consoles: bool,
    /// The drivers the conductor serves (the node's own unless a test says otherwise).
    serves: Vec<String>,
    sync: SyncConfig,
}

impl Setup {
    /// The node's status, as read at its start, is only the provision state `state`.
    fn starting_in(&mut self, state: ProvisionState) {
        self.status = Some(NodeStatus {
            provision_state: state,
            ..NodeStatus::default()
        });
    }

    fn new(driver: &str) -> Self {
        Setup {
            spec: NodeSpec::new(NodeId::new_random(), driver, 0),
            status: None,
            machine: Machine::new(false),
            agent: ScriptedAgent::default(),
            policy: RemediationPolicy::default(),
            consoles: false,
            serves: vec![driver.to_string()],
            sync: SyncConfig::default(),
        }
    }

    async fn start(self) -> Node {
        self.start_with(|_| {}).await
    }

    /// Starts the node after `prepare` changed the records it will read.
    async fn start_with(self, prepare: impl FnOnce(&mut Inner)) -> Node {
        let (args, parts) = self.args_with(prepare);
        let (actor, handle) = Actor::spawn(None, NodeActor, args).await.unwrap();
        parts.store.with(|i| i.watcher = Some(actor.clone()));
        Node {
            id: parts.id,
            store: parts.store,
            actor,
            handle,
            stopping: parts.stopping,
            policy: parts.policy,
            sync: parts.sync,
            consoles: parts.consoles,
            _dir: parts.dir,
        }
    }

    /// The node actor's arguments after `prepare` changed the records it will read, and what
    /// the test keeps of them.
    fn args_with(self, prepare: impl FnOnce(&mut Inner)) -> (NodeArgs, Parts) {
        install_test_source(tokio_clock);
        let id = self.spec.id;
        let store = Arc::new(MemStore::new(self.spec, self.status, TOKEN));
        store.with(prepare);
        let (policy, remediation) = watch::channel(Arc::new(self.policy));
        let (sync_tx, sync_config) = watch::channel(Arc::new(self.sync));
        let machine = self.machine;
        let dir = self.consoles.then(|| tempfile::tempdir().unwrap());
        let consoles = dir
            .as_ref()
            .map(|d| Arc::new(ConsoleContext::new(ConsoleSettings::new("c1", d.path()))));
        let ctx = Arc::new(NodeCtx {
            me: "c1".into(),
            drivers: self.serves,
            conductor_group: String::new(),
            store: store.clone(),
            fence: SelfFence::always_alive(),
            bmc: Arc::new(BmcSettings::new(
                "c1",
                Duration::from_secs(5),
                Duration::from_millis(50),
            )),
            connect: Arc::new(move |_, _, _, _| Ok(Box::new(MachineBmc(machine.clone())))),
            callback_timeout_ms: 60_000,
            agents: AgentCtx {
                api: Arc::new(self.agent.clone()),
                poll_interval: Duration::from_secs(2),
                retry_interval: Duration::from_secs(2),
                max_attempts: 3,
            },
            remediation,
            consoles: consoles.clone().map(|ctx| Consoles { ctx, records: None }),
            sync: SyncCtx {
                settings: SyncSettings {
                    grace_ms: 120_000,
                    max_failures: 3,
                },
                failure_interval: Duration::from_secs(30),
                config: sync_config,
                stats: Arc::default(),
            },
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let args = NodeArgs {
            id,
            token: TOKEN,
            initial: None,
            ctx,
            stopping: stopping.clone(),
        };
        let parts = Parts {
            id,
            store,
            stopping,
            policy,
            sync: sync_tx,
            consoles,
            dir,
        };
        (args, parts)
    }
}

/// What a test keeps of a node's arguments.
struct Parts {
    id: NodeId,
    store: Arc<MemStore>,
    stopping: Arc<AtomicBool>,
    policy: watch::Sender<Arc<RemediationPolicy>>,
    sync: watch::Sender<Arc<SyncConfig>>,
    consoles: Option<Arc<ConsoleContext>>,
    dir: Option<tempfile::TempDir>,
}

/// Waits (in virtual time, bounded) until `f` finds what it looks for in the records.
async fn until_in<T>(store: &MemStore, what: &str, f: impl Fn(&Inner) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4 * 3600);
    loop {
        if let Some(t) = store.with(|i| f(i)) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {:?}",
            store.with(|i| i.status.clone())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Alice's power request number `seq`, as the gateway writes it.
fn request_power(store: &MemStore, seq: u64, target: PowerTarget, timeout_s: Option<u32>) {
    store.user_change(|s| {
        s.power_request = Some(PowerRequest {
            seq,
            target,
            timeout_s,
            requested_by: "alice".into(),
            requested_at_ms: 0,
        })
    });
}

impl Node {
    /// Waits (in virtual time, bounded) until `f` finds what it looks for in the records.
    async fn until<T>(&self, what: &str, f: impl Fn(&Inner) -> Option<T>) -> T {
        until_in(&self.store, what, f).await
    }

    /// (kind, action, requested_by, result) of every history entry.
    /// The actions of the node's provisioning history entries, oldest first.
    fn provision_actions(&self) -> Vec<String> {
        self.history()
            .into_iter()
            .filter(|h| h.0 == "provision")
            .map(|h| h.1)
            .collect()
    }

    fn history(&self) -> Vec<(String, String, String, String)> {
        self.store.with(|i| {
            i.history
                .iter()
                .map(|h| {
                    (
                        h.kind.to_string(),
                        h.action.clone(),
                        h.requested_by.to_string(),
                        h.result.clone(),
                    )
                })
                .collect()
        })
    }

    fn power(&self, seq: u64, target: PowerTarget, timeout_s: Option<u32>) {
        request_power(&self.store, seq, target, timeout_s);
    }

    fn provision(&self, seq: u64, verb: Verb) {
        self.store.user_change(|s| {
            s.provision_request = Some(ProvisionRequest {
                seq,
                verb,
                maintenance_ok: false,
                args: String::new(),
                requested_by: "alice".into(),
                requested_at_ms: 0,
            })
        });
    }

    async fn provision_state(&self, want: ProvisionState) -> NodeStatus {
        self.until(&format!("provision state {want}"), |i| {
            i.status.clone().filter(|s| s.provision_state == want)
        })
        .await
    }
}

#[tokio::test(start_paused = true)]
async fn a_power_request_is_carried_out_and_recorded_with_its_event() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    let node = setup.start().await;
    node.power(1, PowerTarget::On, None);
    let st = node
        .until("power on done", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    assert_eq!(st.power_state, Some(PowerState::On));
    assert_eq!(st.owner.as_deref(), Some("c1"));
    assert_eq!(st.fence, TOKEN.0);
    assert!(machine.is_on());
    assert_eq!(machine.commands(), ["power on"]);
    let history = node.history();
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.0.as_str(),
            last.1.as_str(),
            last.2.as_str(),
            last.3.as_str()
        ),
        ("power", "power on", "alice", "ok")
    );
    let events = node.store.with(|i| i.events.clone());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].power_state, Some(PowerState::On));
    assert_eq!(events[0].previous_power_state, None);
    assert_eq!(events[0].seq, st.event_seq);
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_whose_watch_event_was_lost_is_read_after_the_snapshot() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    let node = setup.start().await;
    // The gateway accepts a power request while the conductor's watch is down: the record
    // changes, no watch event comes.
    let watcher = node.store.with(|i| i.watcher.take());
    node.power(1, PowerTarget::On, None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(machine.commands().is_empty(), "{:?}", machine.commands());
    // The conductor re-reads the cluster and tells each running actor its spec's revision.
    let rev = node.store.with(|i| {
        i.watcher = watcher;
        i.spec_rev
    });
    node.actor.send_message(NodeMsg::SpecAt(rev)).unwrap();
    let st = node
        .until("power on done", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    assert_eq!(st.power_state, Some(PowerState::On));
    assert_eq!(machine.commands(), ["power on"]);
    // An older or equal revision (a snapshot that raced the watch) reads nothing again.
    node.actor.send_message(NodeMsg::SpecAt(rev)).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(machine.commands(), ["power on"]);
}

#[tokio::test(start_paused = true)]
async fn a_soft_power_off_that_times_out_never_cuts_power_under_the_error_policy() {
    let machine = Machine::stubborn(true);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    setup.status = Some(NodeStatus {
        power_state: Some(PowerState::On),
        ..NodeStatus::default()
    });
    let node = setup.start().await;
    node.power(1, PowerTarget::SoftOff, Some(30));
    // The graceful operation is recorded (with its deadline) before the BMC hears of it.
    let op = node
        .until("soft off recorded", |i| {
            i.status.as_ref().and_then(|s| s.power_op.clone())
        })
        .await;
    assert_eq!(op.target, PowerTarget::SoftOff);
    let st = node
        .until("soft off ended", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    assert!(machine.is_on(), "power was cut");
    let cmds = machine.commands();
    assert!(cmds.contains(&"graceful shutdown".to_string()), "{cmds:?}");
    assert!(!cmds.contains(&"power off".to_string()), "{cmds:?}");
    assert_eq!(st.power_state, Some(PowerState::On));
    assert_eq!(st.fault.as_deref(), Some("power failure"));
    assert!(st.last_error.is_some());
    // The fault puts the node into maintenance, as the conductor's act.
    node.until("maintenance on the fault", |i| {
        i.spec.maintenance.then_some(())
    })
    .await;
    let entry = node
        .until("maintenance history", |i| {
            i.history.iter().find(|h| h.kind == "maintenance").cloned()
        })
        .await;
    assert_eq!(entry.requested_by, "conductor");
    assert!(node.history().iter().any(|h| h.0 == "power" && h.3 != "ok"));
}

#[tokio::test(start_paused = true)]
async fn a_soft_power_off_that_times_out_is_forced_under_the_hard_off_policy() {
    let machine = Machine::stubborn(true);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    setup.spec.soft_off_policy = SoftOffPolicy::HardOff;
    let node = setup.start().await;
    node.power(1, PowerTarget::SoftOff, Some(30));
    let st = node
        .until("soft off ended", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    assert!(!machine.is_on());
    let cmds = machine.commands();
    let graceful = cmds.iter().position(|c| c == "graceful shutdown").unwrap();
    let forced = cmds.iter().position(|c| c == "power off").unwrap();
    assert!(graceful < forced, "{cmds:?}");
    assert_eq!(st.power_state, Some(PowerState::Off));
    assert_eq!(st.fault, None);
    let last = node.history().last().cloned().unwrap();
    assert_eq!(last.0, "power");
    assert!(last.1.starts_with("soft power off: "), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn the_fake_interface_manages_and_provides_through_timed_steps() {
    let mut setup = Setup::new("fake-hardware");
    setup.spec.driver_info = r#"{"fake_step_secs": 5}"#.into();
    let node = setup.start().await;
    node.provision(1, Verb::Manage);
    node.provision_state(ProvisionState::Manageable).await;
    node.provision(2, Verb::Provide);
    let st = node.provision_state(ProvisionState::Available).await;
    assert_eq!(st.provision_seq_done, 2);
    assert_eq!(st.last_error, None);
    let actions = node.provision_actions();
    // Verification answered at once: the verb and its result are one transition.
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(
        actions[0],
        "manage: \"enroll\" -> \"verifying\" -> \"manageable\""
    );
    assert!(actions[1].starts_with("provide: \"manageable\" -> \"cleaning\""));
    assert!(actions[2].starts_with("\"cleaning\" -> \"available\""));
}

#[tokio::test(start_paused = true)]
async fn a_quick_verification_is_one_write_and_a_slow_one_shows_verifying_first() {
    // Answered at once: one status write, no `verifying` in the store ever.
    let node = Setup::new("fake-hardware").start().await;
    let writes = node.store.with(|i| i.writes_tried);
    node.provision(1, Verb::Manage);
    let st = node.provision_state(ProvisionState::Manageable).await;
    assert_eq!(node.store.with(|i| i.writes_tried), writes + 1);
    assert_eq!(st.provision_seq_done, 1);
    assert_eq!(st.power_state, Some(PowerState::Off), "the read's answer");

    // A BMC that takes 2 s to answer: `verifying` is written while the read is out, and the
    // same read (one, not a second one) ends the verification.
    let setup = Setup::new("fake-hardware");
    setup.machine.0.lock().unwrap().read_delay = Duration::from_secs(2);
    let machine = setup.machine.clone();
    let node = setup.start().await;
    let reads = machine.reads();
    let writes = node.store.with(|i| i.writes_tried);
    node.provision(1, Verb::Manage);
    node.provision_state(ProvisionState::Verifying).await;
    let st = node.provision_state(ProvisionState::Manageable).await;
    assert_eq!(st.provision_seq_done, 1);
    assert_eq!(
        machine.reads(),
        reads + 1,
        "one power read verified the node"
    );
    assert_eq!(node.store.with(|i| i.writes_tried), writes + 2);
    let actions = node.provision_actions();
    assert_eq!(
        actions,
        [
            "manage: \"enroll\" -> \"verifying\"",
            "\"verifying\" -> \"manageable\""
        ]
    );

    // A read that fails at once: back to `enroll` with the error, in one write.
    let setup = Setup::new("fake-hardware");
    setup.machine.set_unreachable(true);
    let node = setup.start().await;
    node.provision(1, Verb::Manage);
    let st = node
        .until("the failed verification", |i| {
            i.status.clone().filter(|s| s.provision_seq_done == 1)
        })
        .await;
    assert_eq!(st.provision_state, ProvisionState::Enroll);
    let error = st.last_error.unwrap_or_default();
    assert!(
        error.contains("failed to verify the node's driver"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn bios_settings_are_cached_when_the_node_is_verified_and_when_cleaning_ends() {
    let mut setup = Setup::new("redfish");
    setup.spec.driver_info = r#"{"fake_step_secs": 5}"#.into();
    for (k, v) in [("bios_interface", "redfish"), ("deploy_interface", "fake")] {
        setup.spec.interfaces.insert(k.into(), v.into());
    }
    setup.machine.0.lock().unwrap().bios = Some(vec![
        ("ProcTurboMode".into(), "Enabled".into()),
        ("BootMode".into(), "Uefi".into()),
    ]);
    let machine = setup.machine.clone();
    let node = setup.start().await;
    let bios_reads = || {
        machine
            .0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|c| *c == "bios")
            .count()
    };
    node.provision(1, Verb::Manage);
    node.provision_state(ProvisionState::Manageable).await;
    // Cached before the node became manageable: in the store already, read once.
    let cached = node
        .store
        .with(|i| i.bios.clone())
        .expect("cached by verify");
    let names: Vec<&str> = cached.settings.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["BootMode", "ProcTurboMode"]);
    assert_eq!(cached.conductor, "c1");
    assert_eq!(bios_reads(), 1);
    let first_read = cached.read_at_ms;

    // The BMC's settings change; cleaning's end reads them again.
    machine.0.lock().unwrap().bios = Some(vec![("ProcTurboMode".into(), "Disabled".into())]);
    node.provision(2, Verb::Provide);
    node.provision_state(ProvisionState::Available).await;
    let again = node
        .until("the BIOS cache after cleaning", |i| {
            i.bios.clone().filter(|b| b.read_at_ms > first_read)
        })
        .await;
    let turbo = again.get("ProcTurboMode").expect("still reported");
    assert_eq!(turbo.value.as_deref(), Some("Disabled"));
    assert_eq!(
        turbo.created_at_ms,
        cached.get("ProcTurboMode").unwrap().created_at_ms
    );
    assert!(turbo.updated_at_ms.is_some());
    assert!(
        again.get("BootMode").is_none(),
        "no longer reported: dropped"
    );
    assert_eq!(bios_reads(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_reading_bios_interface_or_settings_nothing_is_cached() {
    // A machine without settings, and one with settings behind the default `no-bios`.
    for (interface, settings) in [(Some("redfish"), None), (None, Some(vec![]))] {
        let mut setup = Setup::new("redfish");
        if let Some(i) = interface {
            setup
                .spec
                .interfaces
                .insert("bios_interface".into(), i.into());
        }
        setup.machine.0.lock().unwrap().bios = settings;
        let machine = setup.machine.clone();
        let node = setup.start().await;
        node.provision(1, Verb::Manage);
        node.provision_state(ProvisionState::Manageable).await;
        assert_eq!(node.store.with(|i| i.bios.clone()), None);
        let asked = machine.0.lock().unwrap().log.contains(&"bios".to_string());
        assert_eq!(asked, interface.is_some(), "{interface:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_is_a_fault_and_puts_the_node_into_maintenance() {
    let mut setup = Setup::new("fake-hardware");
    setup.spec.driver_info = r#"{"fake_step_secs": 1, "fake_fail_states": ["cleaning"]}"#.into();
    setup.starting_in(ProvisionState::Manageable);
    let node = setup.start().await;
    node.provision(1, Verb::Provide);
    let st = node.provision_state(ProvisionState::CleanFailed).await;
    assert_eq!(st.fault.as_deref(), Some("clean failure"));
    node.until("maintenance", |i| i.spec.maintenance.then_some(()))
        .await;
    // As in Ironic, where they are one save: no client sees the failure without maintenance
    // (one that leaves maintenance on seeing `clean failed` is not overridden afterwards).
    let written = node.store.with(|i| i.written.clone());
    let failed: Vec<_> = written
        .iter()
        .filter(|(s, _)| *s == ProvisionState::CleanFailed)
        .collect();
    assert!(!failed.is_empty(), "{written:?}");
    assert!(
        failed.iter().all(|(_, maintenance)| *maintenance),
        "{written:?}"
    );
    let st = node.store.with(|i| i.status.clone()).unwrap();
    assert_eq!(
        st.fault_maintenance.as_deref(),
        node.store
            .with(|i| i.spec.maintenance_reason.clone())
            .as_deref()
    );
}

fn heartbeat(at_ms: u64) -> HeartbeatRecord {
    HeartbeatRecord {
        at_ms,
        callback_url: "http://127.0.0.1:9/".into(),
        agent_version: None,
        agent_token: Some("tok".into()),
        agent_verify_ca: None,
        agent_status: None,
        agent_status_message: None,
        recorded_by: "gw".into(),
    }
}

/// An agent's command API, scripted: IPA's answers, a command list, and faults to inject.
/// What it was asked is its log, the independent record the tests check.
#[derive(Clone, Default)]
struct ScriptedAgent(Arc<Mutex<AgentScript>>);

#[derive(Default)]
struct AgentScript {
    /// Every call as `POST name [step]`, `GET id` or `LIST`.
    calls: Vec<String>,
    /// Commands of this boot: (id, short name, step, state, polls left while running).
    commands: Vec<(String, String, Option<String>, CommandState, u32)>,
    /// A command (short name or step) that ends FAILED.
    fail: Option<String>,
    /// Every call gets no answer.
    dead: bool,
    /// Every call is answered with this instead.
    answer: Option<CallResult>,
    /// Polls a command stays RUNNING.
    polls: u32,
}

impl ScriptedAgent {
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    fn posts(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("POST"))
            .collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut AgentScript) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

fn result_of(c: &(String, String, Option<String>, CommandState, u32)) -> CommandResult {
    let result = match &c.2 {
        Some(step) => {
            let (interface, name) = step.split_once('.').unwrap();
            serde_json::json!({ "clean_step": { "interface": interface, "step": name } })
        }
        None if c.1 == "get_clean_steps" => serde_json::json!({
            "clean_steps": { "GenericHardwareManager": [
                { "step": "erase_devices", "priority": 10, "interface": "deploy" },
                { "step": "erase_devices_metadata", "priority": 99, "interface": "deploy" },
                { "step": "burnin_cpu", "priority": 0, "interface": "deploy" },
            ]},
            "hardware_manager_version": { "generic_hardware_manager": "1.2" },
        }),
        None => serde_json::Value::Null,
    };
    CommandResult {
        id: c.0.clone(),
        name: c.1.clone(),
        state: c.3.clone(),
        result,
    }
}

impl crate::agent_client::AgentApi for ScriptedAgent {
    fn call<'a>(
        &'a self,
        _target: &'a crate::agent_client::AgentTarget,
        call: &'a AgentCall,
    ) -> futures::future::BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let mut s = self.0.lock().unwrap();
            s.calls.push(match call {
                AgentCall::Run { name, step, .. } => {
                    format!(
                        "POST {name}{}",
                        step.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
                    )
                }
                AgentCall::Poll { id } => format!("GET {id}"),
                AgentCall::Find { .. } => "LIST".into(),
            });
            if s.dead {
                return CallResult::Unreachable("connect failed".into());
            }
            if let Some(a) = &s.answer {
                return a.clone();
            }
            match call {
                AgentCall::Run { name, step, .. } => {
                    if s.commands
                        .last()
                        .is_some_and(|c| c.3 == CommandState::Running)
                    {
                        return CallResult::Busy("Agent is busy".into());
                    }
                    let short = name.split_once('.').unwrap().1.to_string();
                    let fails = s.fail.as_ref().is_some_and(|f| {
                        *f == short || step.as_deref().is_some_and(|st| st.ends_with(f.as_str()))
                    });
                    let sync = short.starts_with("get_");
                    let state = if fails && sync {
                        CommandState::Failed("simulated".into())
                    } else if sync {
                        CommandState::Succeeded
                    } else {
                        CommandState::Running
                    };
                    let polls = s.polls;
                    let id = format!("cmd-{}", s.commands.len() + 1);
                    s.commands.push((id, short, step.clone(), state, polls));
                    CallResult::Command(result_of(s.commands.last().unwrap()))
                }
                AgentCall::Poll { id } => {
                    let fail = s.fail.clone();
                    let Some(c) = s.commands.iter_mut().find(|c| c.0 == *id) else {
                        return CallResult::Refused("the agent answered HTTP 404".into());
                    };
                    if c.3 == CommandState::Running {
                        if c.4 > 0 {
                            c.4 -= 1;
                        } else if fail.is_some_and(|f| {
                            c.1 == f || c.2.as_deref().is_some_and(|st| st.ends_with(f.as_str()))
                        }) {
                            c.3 = CommandState::Failed("simulated failure".into());
                        } else {
                            c.3 = CommandState::Succeeded;
                        }
                    }
                    CallResult::Command(result_of(c))
                }
                AgentCall::Find { .. } => {
                    CallResult::Listed(s.commands.iter().map(result_of).collect())
                }
            }
        })
    }
}

/// A provided node in `clean wait` whose agent heartbeated once.
async fn cleaning(agent: ScriptedAgent, machine: Machine) -> Node {
    let mut setup = Setup::new("redfish");
    setup.machine = machine;
    setup.agent = agent;
    setup.starting_in(ProvisionState::Manageable);
    let node = setup.start().await;
    node.provision(1, Verb::Provide);
    node.provision_state(ProvisionState::CleanWait).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    node.store.heartbeat(heartbeat(ferric_model::now_ms()));
    node
}

/// The agent token pinned for the node's current boot, as the store holds the status.
fn pinned_token(i: &Inner) -> Option<String> {
    i.status.as_ref()?.agent.as_ref()?.token.clone()
}

#[tokio::test(start_paused = true)]
async fn the_token_this_boots_lookup_issued_wins_over_one_pinned_from_the_boot_before() {
    let agent = ScriptedAgent::default();
    agent.with(|a| a.polls = 1_000);
    let mut setup = Setup::new("redfish");
    setup.machine = Machine::new(false);
    setup.agent = agent.clone();
    setup.starting_in(ProvisionState::Manageable);
    let node = setup.start().await;
    node.provision(1, Verb::Provide);
    node.provision_state(ProvisionState::CleanWait).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The agent of the boot before, still heartbeating as this boot began: no token is issued
    // (the last one was wiped), so the gateway took its own, and it is pinned.
    let heartbeat_with = |token: &str| {
        let mut hb = heartbeat(ferric_model::now_ms());
        hb.agent_token = Some(token.into());
        node.store.heartbeat(hb);
    };
    heartbeat_with("stale");
    node.until("the stale token pinned", |i| {
        (pinned_token(i).as_deref() == Some("stale")).then_some(())
    })
    .await;
    // This boot's lookup issues a token.
    node.store.with(|i| {
        i.agent_token = Some(AgentTokenRecord {
            sha256: AgentTokenRecord::hash("issued"),
            issued_at_ms: ferric_model::now_ms(),
            issued_by: "gw".into(),
        })
    });
    heartbeat_with("other");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        node.store.with(|i| pinned_token(i)).as_deref(),
        Some("stale"),
        "a token neither pinned nor issued changes nothing"
    );
    heartbeat_with("issued");
    node.until("the issued token pinned", |i| {
        (pinned_token(i).as_deref() == Some("issued")).then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_conductor_cleans_through_the_agents_command_api() {
    let machine = Machine::new(false);
    let agent = ScriptedAgent::default();
    agent.with(|a| a.polls = 2);
    let node = cleaning(agent.clone(), machine.clone()).await;
    assert_eq!(
        machine.commands()[0],
        "boot pxe",
        "{:?}",
        machine.commands()
    );
    let st = node.provision_state(ProvisionState::Available).await;
    assert_eq!(st.agent, None);
    assert_eq!(st.agent_link, None);
    assert!(!machine.is_on(), "cleaning ends with the node off");
    // IPA's steps with a priority, highest first; each polled until it ended.
    assert_eq!(
        agent.posts(),
        [
            "POST clean.get_clean_steps",
            "POST clean.execute_clean_step deploy.erase_devices_metadata",
            "POST clean.execute_clean_step deploy.erase_devices",
        ]
    );
    let polls = agent
        .calls()
        .iter()
        .filter(|c| c.starts_with("GET"))
        .count();
    assert_eq!(polls, 6, "{:?}", agent.calls());
    assert!(
        !agent.calls().contains(&"LIST".to_string()),
        "an answered post is never looked for: {:?}",
        agent.calls()
    );
    node.until("the token wiped as the agent's work ended", |i| {
        (i.token_wipes == 2).then_some(())
    })
    .await;
    let steps: Vec<String> = node
        .history()
        .into_iter()
        .filter(|h| h.2 == "agent")
        .map(|h| h.1)
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps[2].starts_with("agent step deploy.erase_devices done (2 of 2)"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_command_fails_cleaning_with_the_agents_error() {
    let agent = ScriptedAgent::default();
    agent.with(|a| a.fail = Some("erase_devices".into()));
    let node = cleaning(agent.clone(), Machine::new(false)).await;
    let st = node.provision_state(ProvisionState::CleanFailed).await;
    let error = st.last_error.unwrap();
    assert!(
        error.contains("clean.execute_clean_step (deploy.erase_devices) failed on the agent: simulated failure"),
        "{error}"
    );
    assert_eq!(st.fault.as_deref(), Some("clean failure"));
}

#[tokio::test(start_paused = true)]
async fn garbage_from_the_agent_fails_the_state_at_once() {
    let agent = ScriptedAgent::default();
    agent.with(|a| {
        a.answer = Some(CallResult::Refused(
            "the agent's answer is not JSON: <html>".into(),
        ))
    });
    let node = cleaning(agent.clone(), Machine::new(false)).await;
    let st = node.provision_state(ProvisionState::CleanFailed).await;
    assert!(st.last_error.unwrap().contains("not JSON"));
    assert_eq!(agent.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_stops_answering_fails_the_state_after_the_attempts() {
    let agent = ScriptedAgent::default();
    agent.with(|a| a.polls = 100);
    let node = cleaning(agent.clone(), Machine::new(false)).await;
    node.until("a step running", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.agent_link.as_ref())
            .and_then(|l| l.command.as_ref())
            .and_then(|c| c.id.clone())
    })
    .await;
    agent.with(|a| a.dead = true);
    let before = agent.calls().len();
    let st = node.provision_state(ProvisionState::CleanFailed).await;
    let error = st.last_error.unwrap();
    assert!(
        error.contains("stopped answering (3 calls in a row"),
        "{error}"
    );
    assert_eq!(agent.calls().len() - before, 3);
}

#[tokio::test(start_paused = true)]
async fn a_new_owner_polls_the_command_in_the_status_and_finds_an_unrecorded_one() {
    // The previous owner posted a step and died before recording the agent's answer: the new
    // owner finds the command in the agent's list instead of running the step again.
    let agent = ScriptedAgent::default();
    agent.with(|a| {
        a.commands.push((
            "cmd-1".into(),
            "get_clean_steps".into(),
            None,
            CommandState::Succeeded,
            0,
        ));
        a.commands.push((
            "cmd-2".into(),
            "execute_clean_step".into(),
            Some("deploy.erase_devices_metadata".into()),
            CommandState::Running,
            1,
        ));
    });
    let mut setup = Setup::new("redfish");
    setup.agent = agent.clone();
    let booted = 1_000;
    setup.status = Some(NodeStatus {
        provision_state: ProvisionState::CleanWait,
        target_provision_state: Some(ProvisionState::Available),
        owner: Some("c0".into()),
        fence: 1,
        power_state: Some(PowerState::On),
        deadline_ms: Some(system_ms() + 3_600_000),
        agent: Some(ferric_model::AgentProgress {
            state: ProvisionState::Cleaning,
            steps: vec![
                "deploy.erase_devices_metadata".into(),
                "deploy.erase_devices".into(),
            ],
            done: 0,
            booted_at_ms: booted,
            token: Some("tok".into()),
            heartbeat_rev: 1,
            last_heartbeat_ms: Some(booted + 1),
            maintenance_ok: false,
        }),
        agent_link: Some(ferric_model::AgentLink {
            booted_at_ms: booted,
            url: "http://127.0.0.1:9/".into(),
            agent_version: None,
            verify_ca: None,
            steps_known: true,
            hardware_version: None,
            step_commands_done: 0,
            root_uuid: None,
            efi_uuid: None,
            command: Some(ferric_model::AgentCommand {
                name: "clean.execute_clean_step".into(),
                step: Some("deploy.erase_devices_metadata".into()),
                id: None,
                issued_at_ms: booted + 2,
            }),
            failures: 0,
        }),
        ..NodeStatus::default()
    });
    let node = setup.start().await;
    let st = node.provision_state(ProvisionState::Available).await;
    assert_eq!(st.last_error, None);
    let calls = agent.calls();
    assert_eq!(calls[0], "LIST", "{calls:?}");
    assert_eq!(
        agent.posts(),
        ["POST clean.execute_clean_step deploy.erase_devices"],
        "the step under way is not posted again"
    );
    assert!(calls.contains(&"GET cmd-2".to_string()), "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn inspection_data_that_comes_before_the_wait_ends_it_despite_later_heartbeats() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("redfish");
    setup.machine = machine.clone();
    setup.starting_in(ProvisionState::Manageable);
    let node = setup.start().await;
    node.provision(1, Verb::Inspect);
    node.provision_state(ProvisionState::Inspecting).await;
    // A fast ramdisk: its data, then a heartbeat, both before the boot is confirmed.
    let mut data = heartbeat(ferric_model::now_ms());
    data.agent_status = Some(ferric_model::heartbeat::INSPECTION_DATA.into());
    data.agent_token = None;
    node.store.heartbeat(data);
    node.store.heartbeat(heartbeat(ferric_model::now_ms()));
    let st = node.provision_state(ProvisionState::Manageable).await;
    assert_eq!(st.last_error, None);
    assert!(!machine.is_on(), "inspection ends with the machine off");
    assert_eq!(
        machine.commands()[0],
        "boot pxe",
        "{:?}",
        machine.commands()
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_fails_the_wait_state_at_its_deadline() {
    let mut setup = Setup::new("redfish");
    setup.starting_in(ProvisionState::Manageable);
    let node = setup.start().await;
    node.provision(1, Verb::Provide);
    let waiting = node.provision_state(ProvisionState::CleanWait).await;
    let deadline = waiting.deadline_ms.unwrap();
    let st = node.provision_state(ProvisionState::CleanFailed).await;
    assert!(ferric_model::now_ms() >= deadline);
    assert!(st
        .last_error
        .unwrap()
        .starts_with("Timeout reached while waiting for callback"));
    assert_eq!(st.fault.as_deref(), Some("clean failure"));
}

#[tokio::test(start_paused = true)]
async fn remediation_checks_power_and_returns_the_node_to_service() {
    let mut setup = Setup::new("fake-hardware");
    setup.spec.maintenance = true;
    setup.spec.maintenance_reason = Some("power failure".into());
    setup.status = Some(NodeStatus {
        owner: Some("c1".into()),
        fence: TOKEN.0,
        fault: Some("power failure".into()),
        fault_at_ms: Some(1),
        ..NodeStatus::default()
    });
    setup.policy = RemediationPolicy {
        rules: vec![RemediationRule {
            fault: "power failure".into(),
            action: RemediationAction::PowerCheck,
            attempts: 1,
        }],
        max_per_window: 10,
        window_secs: 60,
    };
    let node = setup.start().await;
    // The first slot is refused by the rate limit: the attempt waits for the next window.
    node.store.with(|i| i.slots.push_back(Slot::Later(30_000)));
    node.until("out of maintenance", |i| {
        (!i.spec.maintenance).then_some(())
    })
    .await;
    let st = node
        .until("fault cleared", |i| {
            i.status.clone().filter(|s| s.fault.is_none())
        })
        .await;
    assert_eq!(st.power_state, Some(PowerState::Off));
    let remediation: Vec<String> = node
        .history()
        .into_iter()
        .filter(|h| h.0 == "remediation")
        .map(|h| h.1)
        .collect();
    assert_eq!(remediation.len(), 2, "{remediation:?}");
    assert!(remediation[0].starts_with("remediation started: power-check"));
    assert!(remediation[1].starts_with("remediation succeeded"));
    assert!(node
        .history()
        .iter()
        .any(|h| h.0 == "maintenance" && h.2 == "remediation"));
    drop(node.policy);
}

#[tokio::test(start_paused = true)]
async fn a_fenced_write_stops_the_actor_before_any_bmc_command() {
    let machine = Machine::new(true);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    let node = setup.start().await;
    // Another conductor took the node: its reservation has a newer create revision.
    node.store.with(|i| i.reservation = Some(FenceToken(8)));
    node.power(1, PowerTarget::SoftOff, Some(30));
    tokio::time::timeout(Duration::from_secs(60), node.handle)
        .await
        .expect("the fenced actor did not stop")
        .unwrap();
    assert!(node.stopping.load(Ordering::Acquire));
    assert!(machine.commands().is_empty(), "{:?}", machine.commands());
    assert_eq!(node.store.with(|i| i.status.clone()), None);
    assert!(machine.is_on());
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_store_is_retried_with_backoff_and_nothing_is_lost() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    let node = setup.start().await;
    node.store.with(|i| i.unavailable = 3);
    let sent = tokio::time::Instant::now();
    node.power(1, PowerTarget::On, None);
    let st = node
        .until("power on recorded", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    // Three refusals: retried after 0.5, 1 and 2 s (plus jitter), not hammered.
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(3500), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(node.store.with(|i| i.writes_tried), 4);
    assert_eq!(st.power_state, Some(PowerState::On));
    assert_eq!(
        machine.commands(),
        ["power on"],
        "one command, not one per retry"
    );
    assert_eq!(node.store.with(|i| i.events.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn the_console_follows_the_spec_and_ends_before_the_actor_stops() {
    let mut setup = Setup::new("fake-hardware");
    setup.consoles = true;
    let node = setup.start().await;
    let consoles = node.consoles.clone().unwrap();
    node.store.user_change(|s| s.console_enabled = true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consoles.registry.get(&node.id).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.store.user_change(|s| s.console_enabled = false);
    while consoles.registry.get(&node.id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.store.user_change(|s| s.console_enabled = true);
    while consoles.registry.get(&node.id).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never reopened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A hand-over stops the node actor; the reservation is released only after that, so the
    // console must be gone by the time the actor has stopped.
    node.actor
        .stop_and_wait(Some(crate::supervisor::REASON_RELEASED.into()), None)
        .await
        .unwrap();
    assert!(consoles.registry.get(&node.id).is_none());
    assert!(consoles.registry.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_driver_info_in_etcd_is_a_status_error_until_fixed() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    // Written by an older gateway that did not check it.
    setup.spec.driver_info = r#"{"fake_step_secs": "soon"}"#.into();
    let node = setup.start().await;
    node.power(1, PowerTarget::On, None);
    let st = node
        .until("the error recorded", |i| {
            i.status.clone().filter(|s| s.last_error.is_some())
        })
        .await;
    let error = st.last_error.unwrap();
    assert!(error.starts_with("driver_info is unreadable"), "{error}");
    assert!(error.contains("fake_step_secs"), "{error}");
    assert_eq!(st.power_seq_done, 0);
    assert!(machine.commands().is_empty());
    // Fixed: the request that waited is carried out.
    node.store
        .user_change(|s| s.driver_info = r#"{"fake_step_secs": 1}"#.into());
    node.until("power on done", |i| {
        i.status.clone().filter(|s| s.power_seq_done == 1)
    })
    .await;
    assert_eq!(machine.commands(), ["power on"]);
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_status_record_is_rewritten_as_an_error_by_its_owner() {
    // The record exists but cannot be decoded (a torn or foreign write).
    let node = Setup::new("fake-hardware")
        .start_with(|i| i.status_error = Some("unexpected end of input".into()))
        .await;
    let st = node
        .until("the status rewritten", |i| {
            i.status.clone().filter(|_| i.status_error.is_none())
        })
        .await;
    assert_eq!(st.provision_state, ProvisionState::Error);
    assert!(st.last_error.unwrap().contains("unreadable"));
    assert_eq!(st.owner.as_deref(), Some("c1"));
    assert_eq!(st.fence, TOKEN.0);
}

/// A status a dead conductor `c0` left behind in `state`.
fn left_by_c0(state: ProvisionState, deadline_ms: Option<u64>) -> NodeStatus {
    NodeStatus {
        provision_state: state,
        target_provision_state: Some(ProvisionState::Active),
        owner: Some("c0".into()),
        fence: 3,
        power_state: Some(PowerState::On),
        deadline_ms,
        ..NodeStatus::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_caretaker_fails_a_busy_state_queues_requests_and_never_touches_the_bmc() {
    let machine = Machine::new(true);
    let mut setup = Setup::new("redfish");
    setup.machine = machine.clone();
    setup.serves = vec!["ipmi".into(), "fake-hardware".into()];
    setup.status = Some(left_by_c0(ProvisionState::Deploying, None));
    setup.spec.console_enabled = true;
    setup.consoles = true;
    let node = setup.start().await;
    let st = node.provision_state(ProvisionState::DeployFailed).await;
    let error = st.last_error.clone().unwrap();
    assert!(error.contains("conductor c0 stopped"), "{error}");
    assert!(
        error.contains(r#"no live conductor serves driver "redfish" in conductor group """#),
        "{error}"
    );
    assert_eq!(st.owner.as_deref(), Some("c1"));
    let unserved = st.unserved.clone().unwrap();
    assert!(
        unserved.contains("c1 holds the node as caretaker"),
        "{unserved}"
    );
    let history = node.history();
    assert!(
        history
            .iter()
            .any(|h| h.0 == "takeover" && h.1 == "taken over by c1 as caretaker"),
        "{history:?}"
    );
    // Requests are accepted intent: they stay queued, with nothing done about them.
    node.power(1, PowerTarget::Off, None);
    node.provision(1, Verb::Undeploy);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (st, spec) = node
        .store
        .with(|i| (i.status.clone().unwrap(), i.spec.clone()));
    assert_eq!(st.power_seq_done, 0);
    assert_eq!(st.provision_seq_done, 0);
    assert_eq!(st.provision_state, ProvisionState::DeployFailed);
    assert!(spec.pending_power(&st).is_some() && spec.pending_provision(&st).is_some());
    assert!(machine.0.lock().unwrap().log.is_empty(), "the BMC was used");
    let consoles = node.consoles.clone().unwrap();
    assert!(consoles.registry.get(&node.id).is_none(), "a console runs");
    // The node's driver becomes one this conductor serves: the condition ends and the queued
    // requests run, in order.
    node.store
        .user_change(|s| s.driver = "fake-hardware".into());
    let st = node
        .until("queued power off done", |i| {
            i.status.clone().filter(|s| s.power_seq_done == 1)
        })
        .await;
    assert_eq!(st.unserved, None);
    assert_eq!(machine.commands()[0], "power off");
    node.until("queued undeploy taken up", |i| {
        i.status.clone().filter(|s| s.provision_seq_done == 1)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consoles.registry.get(&node.id).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_caretaker_keeps_a_wait_states_deadline_and_its_timeout() {
    let machine = Machine::new(true);
    let mut setup = Setup::new("redfish");
    setup.machine = machine.clone();
    setup.serves = vec!["ipmi".into()];
    let deadline = tokio_clock() + 30_000;
    setup.status = Some(left_by_c0(ProvisionState::WaitCallBack, Some(deadline)));
    let node = setup.start().await;
    let st = node
        .until("caretaker's condition", |i| {
            i.status.clone().filter(|s| s.unserved.is_some())
        })
        .await;
    assert_eq!(st.provision_state, ProvisionState::WaitCallBack);
    assert_eq!(st.deadline_ms, Some(deadline), "the deadline moved");
    // The deadline still ends the wait, as it would for any owner.
    let st = node.provision_state(ProvisionState::DeployFailed).await;
    assert!(tokio_clock() >= deadline);
    assert!(st.last_error.is_some());
    assert!(machine.0.lock().unwrap().log.is_empty(), "the BMC was used");
}

#[tokio::test(start_paused = true)]
async fn a_request_of_a_replaced_spec_runs_even_when_its_sequence_restarted() {
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    setup.status = Some(NodeStatus {
        power_seq_done: 5,
        owner: Some("c1".into()),
        fence: TOKEN.0,
        ..NodeStatus::default()
    });
    let node = setup.start().await;
    // A repair replaced the spec without knowing the status: requests count from 1 again.
    node.power(1, PowerTarget::On, None);
    let st = node
        .until("the restarted request done", |i| {
            i.status
                .clone()
                .filter(|s| s.power_seq_done == 1 && s.power_state == Some(PowerState::On))
        })
        .await;
    assert_eq!(st.power_seq_done, 1);
    assert_eq!(machine.commands(), ["power on"]);
    assert!(node
        .history()
        .iter()
        .any(|h| h.1 == "power request sequence restarted by a replaced spec"));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_written_for_a_node_whose_spec_record_is_unreadable() {
    let machine = Machine::new(true);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    // Its dead owner left it deploying: a readable spec would fail it; this one may not.
    setup.status = Some(left_by_c0(ProvisionState::Deploying, None));
    let node = setup
        .start_with(|i| i.spec_error = Some("garbage".into()))
        .await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (tried, st) = node
        .store
        .with(|i| (i.writes_tried, i.status.clone().unwrap()));
    assert_eq!(tried, 0, "a status was written: {st:?}");
    assert_eq!(st.provision_state, ProvisionState::Deploying);
    assert!(machine.0.lock().unwrap().log.is_empty(), "the BMC was used");
    // A repaired spec: the node is taken over as usual.
    node.store.user_change(|s| s.name = None);
    let st = node.provision_state(ProvisionState::DeployFailed).await;
    assert!(st.last_error.unwrap().contains("conductor c0 stopped"));
}

impl Node {
    /// A sweep's read (as the conductor's sweeper sends it), answered when the actor has
    /// handled it.
    async fn sweep(&self) {
        self.actor
            .send_message(NodeMsg::Sync {
                probe: false,
                permit: None,
            })
            .unwrap();
        self.settle().await;
    }

    /// Waits until the actor has handled everything sent before.
    async fn settle(&self) {
        ractor::call_t!(self.actor, NodeMsg::Ping, 60_000).unwrap();
    }
}

/// A node whose last request (by alice) was `target`, done, with the machine in that state.
async fn synced(target: PowerTarget, machine: Machine, sync: SyncPolicy) -> Node {
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine;
    setup.sync = SyncConfig {
        policy: sync,
        ..SyncConfig::default()
    };
    // Enrolled nodes are not synced (as in Ironic): this one is in service.
    setup.starting_in(ProvisionState::Active);
    let node = setup.start().await;
    node.power(1, target, None);
    node.until("the request done", |i| {
        i.status.clone().filter(|s| s.power_seq_done == 1)
    })
    .await;
    node
}

#[tokio::test(start_paused = true)]
async fn a_sweep_records_an_out_of_band_change_with_its_event_and_observe_never_pushes() {
    let machine = Machine::new(false);
    let node = synced(PowerTarget::On, machine.clone(), SyncPolicy::Observe).await;
    let events = node.store.with(|i| i.events.len());
    node.sweep().await;
    assert_eq!(
        node.store.with(|i| i.events.len()),
        events,
        "nothing changed, no event"
    );
    machine.set_on(false); // the OS shut down
    node.sweep().await;
    let st = node.store.with(|i| i.status.clone().unwrap());
    assert_eq!(st.power_state, Some(PowerState::Off));
    let last = node.history().last().cloned().unwrap();
    assert_eq!(last.0, "sync");
    assert!(last.1.contains("out-of-band"), "{last:?}");
    let ev = node.store.with(|i| i.events.last().cloned().unwrap());
    assert_eq!(
        (ev.power_state, ev.previous_power_state),
        (Some(PowerState::Off), Some(PowerState::On))
    );
    // Long after the grace, sweep after sweep: observe never pushes.
    tokio::time::sleep(Duration::from_secs(600)).await;
    node.sweep().await;
    node.sweep().await;
    assert!(!machine.is_on());
    assert_eq!(machine.commands(), ["power on"]);
    // The cluster switches to enforce (the conductor's watch): two sweeps restore it.
    node.sync.send_replace(Arc::new(SyncConfig {
        policy: SyncPolicy::Enforce,
        ..SyncConfig::default()
    }));
    node.sweep().await;
    node.sweep().await;
    node.until("restored on", |i| {
        i.status
            .clone()
            .filter(|s| s.power_state == Some(PowerState::On))
    })
    .await;
    assert_eq!(machine.commands(), ["power on", "power on"]);
}

#[tokio::test(start_paused = true)]
async fn enforce_restores_the_last_request_on_the_second_sweep_after_the_grace_only() {
    let machine = Machine::new(false);
    let node = synced(PowerTarget::On, machine.clone(), SyncPolicy::Enforce).await;
    machine.set_on(false);
    // Within the grace (120 s after the request): two sweeps, no push.
    node.sweep().await;
    node.sweep().await;
    assert!(!machine.is_on());
    tokio::time::sleep(Duration::from_secs(121)).await;
    node.sweep().await;
    node.until("restored on", |i| {
        i.status
            .clone()
            .filter(|s| s.power_state == Some(PowerState::On))
    })
    .await;
    assert!(machine.is_on());
    assert_eq!(machine.commands(), ["power on", "power on"]);
    let last = node.history().last().cloned().unwrap();
    assert_eq!(last.0, "sync");
    assert!(last.1.starts_with("enforce: power on"), "{last:?}");
    // A node's own policy overrides the cluster's.
    node.store
        .user_change(|s| s.driver_info = r#"{"ferric_power_sync": "observe"}"#.into());
    machine.set_on(false);
    tokio::time::sleep(Duration::from_secs(300)).await;
    node.sweep().await;
    node.sweep().await;
    assert!(!machine.is_on(), "observe on this node: no push");
}

#[tokio::test(start_paused = true)]
async fn a_bmc_that_stops_answering_is_a_power_failure_until_it_answers_again() {
    let machine = Machine::new(true);
    let node = synced(PowerTarget::On, machine.clone(), SyncPolicy::Enforce).await;
    machine.set_unreachable(true);
    for n in 1..=3u32 {
        node.sweep().await;
        let st = node.store.with(|i| i.status.clone().unwrap());
        assert_eq!(st.power_failures, n);
    }
    let spec = node
        .until("maintenance for the power failure", |i| {
            i.spec.maintenance.then(|| i.spec.clone())
        })
        .await;
    let st = node
        .until("the fault's maintenance recorded", |i| {
            i.status.clone().filter(|s| s.fault_maintenance.is_some())
        })
        .await;
    assert_eq!(st.fault.as_deref(), Some("power failure"));
    assert_eq!(st.power_state, None);
    assert_eq!(st.fault_maintenance, spec.maintenance_reason);
    // Sweeps leave it alone now; probes every 30 s keep trying, quietly.
    let reads = machine.reads();
    node.sweep().await;
    assert_eq!(machine.reads(), reads, "a sweep read a node in maintenance");
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(machine.reads() >= reads + 2, "no probes");
    machine.set_unreachable(false);
    let st = node
        .until("recovered", |i| {
            i.status
                .clone()
                .filter(|s| s.fault.is_none() && !i.spec.maintenance)
        })
        .await;
    assert_eq!(
        (st.power_failures, st.power_state),
        (0, Some(PowerState::On))
    );
    let h = node.history();
    assert!(
        h.iter().any(|e| e.1.starts_with("power failure over")),
        "{h:?}"
    );
    // No push happened on the way: the machine was on all along (the request found it on).
    assert!(machine.commands().is_empty(), "{:?}", machine.commands());
}

#[tokio::test(start_paused = true)]
async fn a_users_maintenance_survives_the_recovery() {
    let machine = Machine::new(true);
    let node = synced(PowerTarget::On, machine.clone(), SyncPolicy::Observe).await;
    machine.set_unreachable(true);
    for _ in 0..3 {
        node.sweep().await;
    }
    node.until("fault maintenance", |i| {
        i.status.clone().filter(|s| s.fault_maintenance.is_some())
    })
    .await;
    // An operator takes the node over for rack work while it is down.
    node.store
        .user_change(|s| s.maintenance_reason = Some("rack work".into()));
    machine.set_unreachable(false);
    node.until("fault cleared", |i| {
        i.status.clone().filter(|s| s.fault.is_none())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let spec = node.store.with(|i| i.spec.clone());
    assert!(spec.maintenance);
    assert_eq!(spec.maintenance_reason.as_deref(), Some("rack work"));
}

/// A node actor that cannot read its records at start (etcd slow or unreachable) is started
/// again until it can: the node is never left held with no actor.
#[tokio::test(start_paused = true)]
async fn a_node_actor_that_cannot_start_is_started_again() {
    use crate::supervisor::{NodeEvent, NodeSupervisor, SupervisorMsg};
    let (args, parts) = Setup::new("fake-hardware").args_with(|i| i.reads_failing = 4);
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let args_sup = crate::supervisor::SupervisorArgs {
        events: tx,
        park: false,
    };
    let (sup, _handle) = Actor::spawn(None, NodeSupervisor, args_sup).await.unwrap();
    sup.send_message(SupervisorMsg::Start(Box::new(args)))
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(120), events.recv())
        .await
        .expect("an event within two minutes");
    assert!(
        matches!(first, Some(NodeEvent::Started { id, token }) if id == parts.id && token == TOKEN),
        "the first event is the start, not a stop: {first:?}"
    );
    assert_eq!(
        parts.store.with(|i| i.unavailable),
        0,
        "every refusal was met"
    );
    // It runs: it answers through the supervisor, for the node and reservation it was given.
    let (tx, rx) = ractor::concurrency::oneshot();
    sup.send_message(SupervisorMsg::Forward(parts.id, NodeMsg::Ping(tx.into())))
        .unwrap();
    let snap = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("an answer")
        .expect("the actor answers");
    assert_eq!((snap.id, snap.token), (parts.id, TOKEN));
    sup.stop(None);
}

/// Parking's figures of the supervisor.
async fn park_stats(
    sup: &ActorRef<crate::supervisor::SupervisorMsg>,
) -> crate::supervisor::ParkStats {
    let (tx, rx) = ractor::concurrency::oneshot();
    sup.send_message(crate::supervisor::SupervisorMsg::Parking(tx.into()))
        .unwrap();
    rx.await.unwrap()
}

/// How many nodes the supervisor keeps parked.
async fn parked_count(sup: &ActorRef<crate::supervisor::SupervisorMsg>) -> usize {
    park_stats(sup).await.parked
}

/// A node at rest is parked (its actor ends; the supervisor keeps its records), and what comes
/// for it starts an actor again from those records: a user's power request is carried out, a
/// sweep's read is made, the sequence numbers go on from where they were, and it parks again
/// once its BMC session closed. Stopping a parked node ends it at once. The machine's log and
/// the store's records are the independent account.
#[tokio::test(start_paused = true)]
async fn a_node_at_rest_is_parked_and_woken_by_what_comes_for_it() {
    use crate::supervisor::{NodeEvent, NodeSupervisor, SupervisorArgs, SupervisorMsg};
    let machine = Machine::new(false);
    let mut setup = Setup::new("fake-hardware");
    setup.machine = machine.clone();
    setup.status = Some(NodeStatus {
        provision_state: ProvisionState::Available,
        power_state: Some(PowerState::Off),
        ..NodeStatus::default()
    });
    let (args, parts) = setup.args_with(|_| {});
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let sup_args = SupervisorArgs {
        events: tx,
        park: true,
    };
    let (sup, _handle) = Actor::spawn(None, NodeSupervisor, sup_args).await.unwrap();
    sup.send_message(SupervisorMsg::Start(Box::new(args)))
        .unwrap();
    let started = events.recv().await;
    assert!(
        matches!(started, Some(NodeEvent::Started { .. })),
        "{started:?}"
    );
    let until_parked = |want: usize, what: &'static str| {
        let sup = sup.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            while parked_count(&sup).await != want {
                assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Nothing is going on after the first pass.
    until_parked(1, "parked after the first pass").await;
    let history_before = parts.store.with(|i| i.history.len());

    // A user's power request, as the conductor's watch forwards it.
    let forward_spec = || {
        let (spec, rev) = parts.store.with(|i| (i.spec.clone(), i.spec_rev));
        sup.send_message(SupervisorMsg::Forward(
            parts.id,
            NodeMsg::Spec(Box::new(spec), rev),
        ))
        .unwrap();
    };
    request_power(&parts.store, 1, PowerTarget::On, None);
    forward_spec();
    let st = until_in(&parts.store, "power on done", |i| {
        i.status.clone().filter(|s| s.power_seq_done == 1)
    })
    .await;
    assert_eq!(st.power_state, Some(PowerState::On));
    assert_eq!(machine.commands(), ["power on"]);
    // Woken: the BMC session stays open for its idle timeout, so the node is not at rest.
    assert_eq!(parked_count(&sup).await, 0);
    // The history and events go on from the parked status's sequence numbers.
    let (history, events_written) = parts.store.with(|i| (i.history.clone(), i.events.clone()));
    assert_eq!(history.len(), history_before + 1);
    assert_eq!(history.last().unwrap().action, "power on");
    assert_eq!(
        events_written.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(st.history_seq as usize, history.len());
    // Once the session has closed, it parks again.
    until_parked(1, "parked again after the session closed").await;

    // A sweep's read wakes it, is made, and it parks again.
    sup.send_message(SupervisorMsg::Forward(
        parts.id,
        NodeMsg::Sync {
            probe: false,
            permit: None,
        },
    ))
    .unwrap();
    let reads = || {
        machine
            .0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|c| *c == "read")
            .count()
    };
    let reads_before = reads();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while reads() == reads_before {
        assert!(tokio::time::Instant::now() < deadline, "no read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(machine.commands(), ["power on"]);
    until_parked(1, "parked again after the read").await;
    // A snapshot's revision the node is already at does not wake it, nor does a remediation
    // policy with nothing to do on it.
    let before = park_stats(&sup).await;
    let rev = parts.store.with(|i| i.spec_rev);
    sup.send_message(SupervisorMsg::Forward(parts.id, NodeMsg::SpecAt(rev)))
        .unwrap();
    sup.send_message(SupervisorMsg::Forward(parts.id, NodeMsg::Remediate))
        .unwrap();
    assert_eq!(park_stats(&sup).await, before);
    // A newer one does (the spec changed while the watch was down): it reads the spec.
    sup.send_message(SupervisorMsg::Forward(parts.id, NodeMsg::SpecAt(rev + 1)))
        .unwrap();
    assert_eq!(park_stats(&sup).await.wakes, before.wakes + 1);
    until_parked(1, "parked again after the spec read").await;

    // Off again through a parked node: the second request sees the first's outcome.
    request_power(&parts.store, 2, PowerTarget::Off, None);
    forward_spec();
    until_in(&parts.store, "power off done", |i| {
        i.status.clone().filter(|s| s.power_seq_done == 2)
    })
    .await;
    assert!(!machine.is_on());
    let seqs: Vec<u64> = parts
        .store
        .with(|i| i.events.iter().map(|e| e.seq).collect());
    assert_eq!(seqs, [1, 2]);
    until_parked(1, "parked after the power off").await;

    // In maintenance, a sweep's read is skipped without waking the node.
    parts.store.user_change(|s| {
        s.maintenance = true;
        s.maintenance_reason = Some("rack work".into());
    });
    forward_spec();
    until_parked(1, "parked in maintenance").await;
    let before = park_stats(&sup).await;
    let reads_before = reads();
    sup.send_message(SupervisorMsg::Forward(
        parts.id,
        NodeMsg::Sync {
            probe: false,
            permit: None,
        },
    ))
    .unwrap();
    assert_eq!(park_stats(&sup).await, before);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(reads(), reads_before);

    // Stopping a parked node ends it at once.
    sup.send_message(SupervisorMsg::Stop(vec![parts.id]))
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(&stopped, Ok(Some(NodeEvent::Stopped { id, reason, .. })) if *id == parts.id && reason == "released"),
        "{stopped:?}"
    );
    assert_eq!(parked_count(&sup).await, 0);
    sup.stop(None);
}

/// `park_at_start` parks a node handed over with its records exactly when a real actor's first
/// pass over the same records would only take it over in memory and come to rest: the actor is
/// started under a parking supervisor (reading the records from the store), and the store's
/// writes, the machine's commands and the supervisor's parked count are the independent
/// account. The records parked are the ones handed over, taken over in memory.
#[tokio::test(start_paused = true)]
async fn parking_at_start_is_what_the_first_pass_would_do() {
    use crate::supervisor::{NodeSupervisor, SupervisorArgs, SupervisorMsg};
    use ferric_model::faults;
    type Case = (&'static str, fn(&mut Setup), bool);
    fn owned_by_c0(status: ProvisionState, power: Option<PowerState>) -> Option<NodeStatus> {
        Some(NodeStatus {
            provision_state: status,
            power_state: power,
            owner: Some("c0".into()),
            fence: 3,
            ..NodeStatus::default()
        })
    }
    let cases: Vec<Case> = vec![
        (
            "available, off",
            |s| s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off)),
            true,
        ),
        (
            "active, on",
            |s| s.status = owned_by_c0(ProvisionState::Active, Some(PowerState::On)),
            true,
        ),
        (
            "manageable",
            |s| s.status = owned_by_c0(ProvisionState::Manageable, Some(PowerState::Off)),
            true,
        ),
        (
            "deploy failed",
            |s| s.status = owned_by_c0(ProvisionState::DeployFailed, Some(PowerState::On)),
            true,
        ),
        (
            "error",
            |s| s.status = owned_by_c0(ProvisionState::Error, None),
            true,
        ),
        ("enroll, no status yet", |s| s.status = None, true),
        (
            "in maintenance, no fault",
            |s| {
                s.status = owned_by_c0(ProvisionState::Active, Some(PowerState::On));
                s.spec.maintenance = true;
                s.spec.maintenance_reason = Some("rack work".into());
            },
            true,
        ),
        (
            "already this owner's",
            |s| {
                s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off));
                if let Some(st) = s.status.as_mut() {
                    st.owner = Some("c1".into());
                    st.fence = TOKEN.0;
                }
            },
            true,
        ),
        (
            "deploying",
            |s| s.status = owned_by_c0(ProvisionState::Deploying, Some(PowerState::On)),
            false,
        ),
        (
            "waiting for the agent",
            |s| {
                s.status = owned_by_c0(ProvisionState::WaitCallBack, Some(PowerState::On));
                if let Some(st) = s.status.as_mut() {
                    st.deadline_ms = Some(system_ms() + 3_600_000);
                }
            },
            false,
        ),
        (
            "verifying",
            |s| s.status = owned_by_c0(ProvisionState::Verifying, Some(PowerState::Off)),
            false,
        ),
        (
            "a power target left by the dead owner",
            |s| {
                s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off));
                if let Some(st) = s.status.as_mut() {
                    st.target_power_state = Some(PowerTarget::On);
                }
            },
            false,
        ),
        (
            "a power request pending",
            |s| {
                s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off));
                s.spec.power_request = Some(PowerRequest {
                    seq: 1,
                    target: PowerTarget::On,
                    timeout_s: None,
                    requested_by: "alice".into(),
                    requested_at_ms: 0,
                });
            },
            false,
        ),
        (
            "console enabled",
            |s| {
                s.status = owned_by_c0(ProvisionState::Active, Some(PowerState::On));
                s.spec.console_enabled = true;
            },
            false,
        ),
        (
            "in power failure",
            |s| {
                s.status = owned_by_c0(ProvisionState::Active, None);
                s.spec.maintenance = true;
                if let Some(st) = s.status.as_mut() {
                    st.fault = Some(faults::POWER_FAILURE.into());
                }
            },
            false,
        ),
        (
            "a fault without maintenance",
            |s| {
                s.status = owned_by_c0(ProvisionState::Active, Some(PowerState::On));
                if let Some(st) = s.status.as_mut() {
                    st.fault = Some(faults::POWER_FAILURE.into());
                }
            },
            false,
        ),
        (
            "a driver no one here serves",
            |s| {
                s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off));
                s.serves = vec!["redfish".into()];
            },
            false,
        ),
        (
            "caretaken before, served now",
            |s| {
                s.status = owned_by_c0(ProvisionState::Available, Some(PowerState::Off));
                if let Some(st) = s.status.as_mut() {
                    st.unserved = Some("nobody served it".into());
                }
            },
            false,
        ),
    ];
    for (what, prepare, parks) in cases {
        let mut setup = Setup::new("fake-hardware");
        prepare(&mut setup);
        let handed = Initial {
            spec: Ok(setup.spec.clone()),
            spec_rev: 10,
            status: setup.status.clone().map(Ok),
            hb_seen: 0,
        };
        let machine = setup.machine.clone();
        let before = setup.status.clone().unwrap_or_default();
        let (args, parts) = setup.args_with(|_| {});
        let mut handed_args = NodeArgs {
            id: args.id,
            token: args.token,
            initial: Some(handed),
            ctx: args.ctx.clone(),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let parked = park_at_start(&mut handed_args);
        assert_eq!(parked.is_some(), parks, "{what}: park_at_start");
        match &parked {
            Some(p) => {
                assert!(handed_args.initial.is_none(), "{what}");
                assert_eq!(p.status.owner.as_deref(), Some("c1"), "{what}");
                assert_eq!(p.status.fence, TOKEN.0, "{what}");
                let mut expected = before.clone();
                expected.owner = p.status.owner.clone();
                expected.fence = p.status.fence;
                expected.updated_at_ms = p.status.updated_at_ms;
                assert_eq!(p.status, expected, "{what}: only the takeover changed");
                assert_eq!(
                    (p.spec_rev, *p.spec.clone()),
                    (10, parts.store.with(|i| i.spec.clone())),
                    "{what}"
                );
            }
            None => {
                let back = handed_args
                    .initial
                    .as_ref()
                    .expect("the records stay for the actor");
                assert_eq!(
                    back.spec.as_ref().ok(),
                    Some(&parts.store.with(|i| i.spec.clone())),
                    "{what}"
                );
                assert_eq!(
                    back.status.as_ref().and_then(|s| s.as_ref().ok()),
                    Some(&before),
                    "{what}"
                );
            }
        }

        // The same records, read by a real actor under a parking supervisor.
        let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
        let sup_args = SupervisorArgs {
            events: tx,
            park: true,
        };
        let (sup, _handle) = Actor::spawn(None, NodeSupervisor, sup_args).await.unwrap();
        let rev = parts.store.with(|i| i.rev);
        sup.send_message(SupervisorMsg::Start(Box::new(args)))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let quiet = parts.store.with(|i| i.rev == rev && i.writes_tried == 0)
            && machine.commands().is_empty();
        let actor_parked = parked_count(&sup).await == 1;
        assert_eq!(
            actor_parked && quiet,
            parks,
            "{what}: the actor parked: {actor_parked}, wrote or commanded nothing: {quiet}"
        );
        sup.stop(None);
    }
}
