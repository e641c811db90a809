//! `ferric conductor`: joins the cluster and runs node actors for its share of the nodes.

use crate::ctl::EtcdArgs;
use anyhow::Context;
use ferric_node::{ConductorConfig, NodeSupervisor};
use ractor::Actor;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// A TOML file with this role's options (`[etcd]` and `[conductor]`/`[gateway]` tables,
    /// keys named as the long options); the command line and `FERRIC_*` variables win over it.
    /// `ferric check --config F` checks it.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Unique name of this conductor (its membership key).
    #[arg(long, env = "FERRIC_CONDUCTOR_NAME")]
    pub name: String,
    /// Lease TTL in seconds: a dead conductor's nodes move within about this long.
    #[arg(long, default_value_t = 5.0, env = "FERRIC_LEASE_TTL")]
    pub lease_ttl: f64,
    /// Hardware types this conductor serves (Ironic's driver names).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fake-hardware,ipmi,redfish"
    )]
    pub drivers: Vec<String>,
    /// Conductor group served (Ironic's conductor_group; empty is the default group).
    #[arg(long, default_value = "")]
    pub conductor_group: String,
    /// Address this conductor advertises for its internal endpoints.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub address: String,
    /// Reservation batches (of up to 120 nodes) in flight at once.
    #[arg(long, default_value_t = 8)]
    pub acquire_parallel: usize,
    /// Keep an actor for every held node, also while it is at rest. By default a node with
    /// nothing going on is parked: its actor ends and its records stay in memory until a
    /// message for it (a spec change, a heartbeat, a sweep's read) starts one again.
    #[arg(long, env = "FERRIC_KEEP_IDLE_ACTORS")]
    pub keep_idle_actors: bool,
    /// Do not keep the specs and statuses of the buckets this conductor would take over if
    /// their holder died (the warm standby: about 320 bytes per node it follows, half of it the
    /// status; a read of those records after each membership change and a watch of each
    /// bucket's statuses; a takeover then reads only delegations and reservations). Without it
    /// a takeover reads specs and statuses.
    #[arg(long, env = "FERRIC_NO_WARM_STANDBY")]
    pub no_warm_standby: bool,
    /// Keep only the specs in the warm standby, not the statuses (a takeover then reads the
    /// statuses), to compare.
    #[arg(long, env = "FERRIC_NO_STANDBY_STATUSES")]
    pub no_standby_statuses: bool,
    /// Minimum time between two commands to the same BMC, in milliseconds (BMCs fall over when
    /// hammered; Ironic keeps 5 s for IPMI).
    #[arg(long, default_value_t = 500, env = "FERRIC_BMC_MIN_GAP_MS")]
    pub bmc_min_gap_ms: u64,
    /// Timeout of one BMC command, in seconds.
    #[arg(long, default_value_t = 10.0, env = "FERRIC_BMC_TIMEOUT")]
    pub bmc_timeout: f64,
    /// How long a node in a wait state (`wait call-back`, `clean wait`, ...) waits for its
    /// agent's next heartbeat, in seconds (Ironic's `*_callback_timeout`, default 1800); a node
    /// may set its own in `driver_info.agent_callback_timeout`.
    #[arg(long, default_value_t = 1800.0, env = "FERRIC_CALLBACK_TIMEOUT")]
    pub callback_timeout: f64,
    /// Timeout of one request to an agent's command API, in seconds (Ironic's
    /// `[agent]command_timeout`).
    #[arg(long, default_value_t = 60.0, env = "FERRIC_AGENT_COMMAND_TIMEOUT")]
    pub agent_command_timeout: f64,
    /// How often a command the agent runs is polled between its heartbeats, in seconds; also
    /// the wait before calling an agent that did not answer again.
    #[arg(long, default_value_t = 2.0, env = "FERRIC_AGENT_POLL_INTERVAL")]
    pub agent_poll_interval: f64,
    /// Calls in a row an agent may leave unanswered before its node's wait state fails (Ironic's
    /// `[agent]max_command_attempts`).
    #[arg(long, default_value_t = 3, env = "FERRIC_AGENT_MAX_ATTEMPTS")]
    pub agent_max_attempts: u32,
    /// Where the console server listens (the gateway proxies viewers to it). Loopback unless
    /// configured; the gateway must be able to reach it.
    #[arg(long, default_value = "127.0.0.1:0", env = "FERRIC_CONSOLE_LISTEN")]
    pub console_listen: String,
    /// This conductor's private runtime directory (console pid files, swept on start). Default:
    /// `$XDG_RUNTIME_DIR/ferric/<name>`, or `<temp dir>/ferric-<name>`. Two conductors must not
    /// share one.
    #[arg(long, env = "FERRIC_RUNTIME_DIR")]
    pub runtime_dir: Option<std::path::PathBuf>,
    /// A console viewer that sends nothing for this many seconds is disconnected.
    #[arg(long, default_value_t = 600.0)]
    pub console_idle_timeout: f64,
    /// Output kept per console and replayed to a new viewer, in KiB.
    #[arg(long, default_value_t = 64)]
    pub console_replay_kib: usize,
    /// Serve no consoles at all (enabled consoles stay enabled in the spec, unserved here).
    #[arg(long)]
    pub no_consoles: bool,
    /// Power sync: seconds between the starts of two sweeps that read the power state of every
    /// node this conductor owns, spread evenly over the interval; 0 turns sweeps off.
    #[arg(long, default_value_t = 60.0, env = "FERRIC_SYNC_INTERVAL")]
    pub sync_interval: f64,
    /// Power sync: reads in flight at once on this conductor.
    #[arg(long, default_value_t = 16, env = "FERRIC_SYNC_WORKERS")]
    pub sync_workers: usize,
    /// Power sync: seconds after a power request or operation during which the `enforce`
    /// policy pushes nothing (default: twice the interval).
    #[arg(long, env = "FERRIC_SYNC_GRACE")]
    pub sync_grace: Option<f64>,
    /// Power sync: failed reads in a row that put a node into maintenance with the fault
    /// `power failure` (Ironic's `power_state_sync_max_retries`).
    #[arg(long, default_value_t = 3, env = "FERRIC_SYNC_MAX_FAILURES")]
    pub sync_max_failures: u32,
    /// Power sync: seconds between probes of a node in power failure; one that answers leaves
    /// the fault (and the maintenance the fault set).
    #[arg(long, default_value_t = 30.0, env = "FERRIC_SYNC_FAILURE_INTERVAL")]
    pub sync_failure_interval: f64,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// `http://127.0.0.1:4317`): API requests, their etcd writes, the conductors' work and BMC
    /// commands, linked into one trace per request. Off by default.
    #[arg(long, env = "FERRIC_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Power sync's settings from the flags, checked.
fn sync_options(args: &Args) -> anyhow::Result<ferric_node::SyncOptions> {
    let secs = |name: &str, v: f64, min: f64| -> anyhow::Result<Duration> {
        if !(v >= min && v <= 86_400.0) {
            anyhow::bail!("--{name} must be between {min} and 86400 seconds (got {v})");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let interval = if args.sync_interval == 0.0 {
        Duration::ZERO
    } else {
        secs("sync-interval", args.sync_interval, 0.001)?
    };
    if args.sync_workers == 0 || args.sync_workers > 4096 {
        anyhow::bail!("--sync-workers must be between 1 and 4096");
    }
    if args.sync_max_failures == 0 {
        anyhow::bail!("--sync-max-failures must be at least 1");
    }
    Ok(ferric_node::SyncOptions {
        interval,
        workers: args.sync_workers,
        grace: match args.sync_grace {
            Some(g) => secs("sync-grace", g, 0.0)?,
            None => interval * 2,
        },
        max_failures: args.sync_max_failures,
        failure_interval: secs("sync-failure-interval", args.sync_failure_interval, 0.1)?,
        ..ferric_node::SyncOptions::default()
    })
}

/// Delivery of power events (see README, "Power notifications").
#[derive(clap::Args)]
pub struct NotifyArgs {
    /// Nova's compute endpoint, e.g. `http://nova:8774/v2.1`: power changes of nodes with an
    /// instance go to `<url>/os-server-external-events` as `power-update` events.
    #[arg(long, env = "FERRIC_COMPUTE_URL")]
    pub compute_url: Option<String>,
    /// Keystone's URL for password auth towards the compute service (with --keystone-user,
    /// --keystone-password, --keystone-project).
    #[arg(long, env = "FERRIC_KEYSTONE_URL")]
    pub keystone_url: Option<String>,
    #[arg(long, env = "FERRIC_KEYSTONE_USER")]
    pub keystone_user: Option<String>,
    /// The service user's password (prefer the environment variable; never logged).
    #[arg(long, env = "FERRIC_KEYSTONE_PASSWORD", hide_env_values = true)]
    pub keystone_password: Option<String>,
    #[arg(long, env = "FERRIC_KEYSTONE_PROJECT")]
    pub keystone_project: Option<String>,
    #[arg(long, default_value = "Default", env = "FERRIC_KEYSTONE_USER_DOMAIN")]
    pub keystone_user_domain: String,
    #[arg(
        long,
        default_value = "Default",
        env = "FERRIC_KEYSTONE_PROJECT_DOMAIN"
    )]
    pub keystone_project_domain: String,
    /// A static token for the compute URL instead of Keystone (sent as X-Auth-Token and bearer).
    #[arg(long, env = "FERRIC_COMPUTE_TOKEN", hide_env_values = true)]
    pub compute_token: Option<String>,
    /// Basic auth for the compute URL instead of Keystone: `user:password`.
    #[arg(long, env = "FERRIC_COMPUTE_BASIC", hide_env_values = true)]
    pub compute_basic: Option<String>,
    /// A generic JSON webhook that gets every power event with Ferric's sequence number.
    #[arg(long, env = "FERRIC_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// A bearer token for the webhook.
    #[arg(long, env = "FERRIC_NOTIFY_TOKEN", hide_env_values = true)]
    pub notify_token: Option<String>,
    /// Basic auth for the webhook: `user:password`.
    #[arg(long, env = "FERRIC_NOTIFY_BASIC", hide_env_values = true)]
    pub notify_basic: Option<String>,
    /// Timeout of one delivery request, in seconds (a hanging receiver costs this per try).
    #[arg(long, default_value_t = 10.0, env = "FERRIC_NOTIFY_TIMEOUT")]
    pub notify_timeout: f64,
    /// Cap of the retry backoff after failed deliveries, in seconds.
    #[arg(long, default_value_t = 60.0, env = "FERRIC_NOTIFY_BACKOFF_MAX")]
    pub notify_backoff_max: f64,
    /// From how many nodes taken over at once their events are read in one bulk read of the
    /// event prefix rather than one read per node (tests set 1 to exercise the bulk path).
    #[arg(long, default_value_t = 64, hide = true)]
    pub notify_bulk_load_min: usize,
    /// Events per delivery request at most.
    #[arg(long, default_value_t = 500)]
    pub notify_batch: usize,
    /// Delivered events are deleted this many seconds after they were written (never before
    /// every configured receiver has them).
    #[arg(long, default_value_t = 86_400.0, env = "FERRIC_EVENT_RETENTION")]
    pub event_retention: f64,
    /// Serve this conductor's `/metrics` here (OpenMetrics: node actors, reservations, the
    /// lease and its self-fencing deadline, status writes, BMC commands, event delivery), e.g.
    /// `127.0.0.1:9185`.
    #[arg(long, env = "FERRIC_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

fn basic(text: &str, flag: &str) -> anyhow::Result<ferric_notify::Credentials> {
    let (user, password) = text
        .split_once(':')
        .with_context(|| format!("{flag} must be user:password"))?;
    Ok(ferric_notify::Credentials::Basic {
        user: user.to_string(),
        password: ferric_notify::Secret::new(password),
    })
}

impl NotifyArgs {
    fn config(&self, conductor: &str) -> anyhow::Result<ferric_notify::NotifyConfig> {
        use ferric_notify::{Authenticator, Credentials, Endpoint, KeystoneConfig, Secret};
        let mut cfg = ferric_notify::NotifyConfig::new(conductor);
        cfg.timeout = Duration::from_secs_f64(self.notify_timeout.clamp(0.1, 600.0));
        cfg.backoff_max = Duration::from_secs_f64(self.notify_backoff_max.clamp(0.1, 3600.0));
        cfg.bulk_load_min = self.notify_bulk_load_min.max(1);
        cfg.retention = Duration::from_secs_f64(self.event_retention.clamp(1.0, 365.0 * 86_400.0));
        cfg.batch_max = self.notify_batch.clamp(1, 10_000);
        if let Some(url) = &self.compute_url {
            let creds = match (&self.keystone_url, &self.compute_token, &self.compute_basic) {
                (Some(k), None, None) => {
                    let need = |v: &Option<String>, flag: &str| {
                        v.clone()
                            .with_context(|| format!("--keystone-url needs {flag}"))
                    };
                    Credentials::Keystone(KeystoneConfig {
                        url: k.clone(),
                        user: need(&self.keystone_user, "--keystone-user")?,
                        password: Secret::new(need(
                            &self.keystone_password,
                            "--keystone-password",
                        )?),
                        user_domain: self.keystone_user_domain.clone(),
                        project: need(&self.keystone_project, "--keystone-project")?,
                        project_domain: self.keystone_project_domain.clone(),
                    })
                }
                (None, Some(t), None) => Credentials::Token(Secret::new(t.clone())),
                (None, None, Some(b)) => basic(b, "--compute-basic")?,
                (None, None, None) => Credentials::None,
                _ => anyhow::bail!(
                    "give one of --keystone-url, --compute-token and --compute-basic, not several"
                ),
            };
            cfg.compute = Some(Endpoint {
                url: url.clone(),
                auth: Authenticator::new(creds),
            });
        }
        if let Some(url) = &self.notify_url {
            let creds = match (&self.notify_token, &self.notify_basic) {
                (Some(t), None) => Credentials::Token(Secret::new(t.clone())),
                (None, Some(b)) => basic(b, "--notify-basic")?,
                (None, None) => Credentials::None,
                _ => anyhow::bail!("give --notify-token or --notify-basic, not both"),
            };
            cfg.webhook = Some(Endpoint {
                url: url.clone(),
                auth: Authenticator::new(creds),
            });
        }
        Ok(cfg)
    }
}

/// The session tells the deliverer which nodes run here.
#[derive(Debug)]
struct Deliveries(ferric_notify::Notifier);

impl ferric_node::OwnershipHook for Deliveries {
    fn owned(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken) {
        self.0.owned(id, token);
    }
    fn owned_fresh(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken) {
        self.0.owned_fresh(id, token);
    }
    fn released(&self, id: ferric_model::NodeId, token: ferric_model::FenceToken) {
        self.0.released(id, token);
    }
    fn released_all(&self) {
        self.0.released_all();
    }
    fn event_written(
        &self,
        id: ferric_model::NodeId,
        token: ferric_model::FenceToken,
        event: &ferric_model::EventRecord,
    ) {
        self.0.written(id, token, event.clone());
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.lease_ttl >= 1.0 && args.lease_ttl <= 600.0) {
        anyhow::bail!("--lease-ttl must be between 1 and 600 seconds");
    }
    ferric_model::ConductorName::parse(&args.name).context("invalid --name")?;
    for d in &args.drivers {
        if !ferric_power::DRIVERS.contains(&d.as_str()) {
            anyhow::bail!(
                "driver {d:?} is not available in this build (available: {})",
                ferric_power::DRIVERS.join(", ")
            );
        }
    }
    let notify_cfg = args.notify.config(&args.name)?;
    let ttl = Duration::from_secs_f64(args.lease_ttl);
    let sync = sync_options(&args)?;
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: handing all nodes over"),
            _ = int.recv() => tracing::info!("SIGINT: handing all nodes over"),
        }
        let _ = shutdown_tx.send(true);
    });

    // etcd may not be up yet (or be restarting): keep trying until it answers or we are told
    // to stop.
    let cfg = args.etcd.config();
    let mut shutdown_wait = shutdown.clone();
    let cluster = loop {
        match ferric_cluster::Cluster::connect(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "etcd not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown_wait.changed() => return Ok(()),
                }
            }
        }
    };
    let consoles = if args.no_consoles {
        None
    } else {
        Some(start_consoles(&args, &cluster).await?)
    };
    let notifier = ferric_notify::spawn(cluster.clone(), notify_cfg, shutdown.clone());
    let _metrics = match &args.notify.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
            let registry = crate::metrics_server::registry(
                &args.name,
                notifier.stats.clone(),
                consoles.as_ref().map(|c| c.registry().clone()),
            );
            Some(AbortOnDrop(tokio::spawn(crate::metrics_server::serve(
                listener,
                std::sync::Arc::new(registry),
            ))))
        }
        None => None,
    };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let sup_args = ferric_node::SupervisorArgs {
        events: events_tx,
        park: !args.keep_idle_actors,
    };
    let (supervisor, sup_handle) = Actor::spawn(None, NodeSupervisor, sup_args)
        .await
        .context("starting the node supervisor")?;
    let config = ConductorConfig {
        name: args.name.clone(),
        ttl,
        drivers: args.drivers.clone(),
        conductor_group: args.conductor_group.clone(),
        address: args.address.clone(),
        console_address: consoles
            .as_ref()
            .map(|c| c.local_addr().to_string())
            .unwrap_or_default(),
        acquire_parallel: args.acquire_parallel,
        bmc: std::sync::Arc::new(ferric_power::BmcSettings::new(
            &args.name,
            Duration::from_secs_f64(args.bmc_timeout.clamp(0.1, 300.0)),
            Duration::from_millis(args.bmc_min_gap_ms),
        )),
        callback_timeout: Duration::from_secs_f64(args.callback_timeout.clamp(1.0, 86_400.0)),
        agents: ferric_node::node_actor::AgentCtx::http(
            &args.name,
            ferric_node::conductor::AgentSettings {
                command_timeout: Duration::from_secs_f64(
                    args.agent_command_timeout.clamp(0.1, 3_600.0),
                ),
                poll_interval: Duration::from_secs_f64(args.agent_poll_interval.clamp(0.05, 600.0)),
                max_attempts: args.agent_max_attempts.clamp(1, 100),
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot build the agents' HTTP client: {e}"))?,
        consoles: consoles.as_ref().map(|c| c.context()),
        sync,
        ownership_hook: Some(std::sync::Arc::new(Deliveries(notifier))),
        warm_standby: !args.no_warm_standby,
        standby_statuses: !args.no_standby_statuses,
    };
    tracing::info!(conductor = %args.name, etcd = %cluster.endpoints(), prefix = %cluster.keys().prefix(), ttl_s = args.lease_ttl, "conductor starting");
    let result = ferric_node::run(cluster, config, supervisor.clone(), events_rx, shutdown).await;
    supervisor.stop(None);
    let _ = sup_handle.await;
    if let Some(c) = consoles {
        c.shutdown().await;
    }
    tracing::info!(conductor = %args.name, "conductor stopped");
    result.map_err(Into::into)
}

/// The console server, after sweeping the console processes a previous run of this conductor
/// left behind (their BMC sessions are cleared again when the consoles reopen).
async fn start_consoles(
    args: &Args,
    cluster: &ferric_cluster::Cluster,
) -> anyhow::Result<ferric_console::ConsoleService> {
    let runtime_dir =
        args.runtime_dir
            .clone()
            .unwrap_or_else(|| match std::env::var_os("XDG_RUNTIME_DIR") {
                Some(d) => std::path::PathBuf::from(d).join("ferric").join(&args.name),
                None => std::env::temp_dir().join(format!("ferric-{}", args.name)),
            });
    let secret = cluster
        .console_secret()
        .await
        .context("reading the cluster's console secret")?;
    let mut settings = ferric_console::ConsoleSettings::new(&args.name, runtime_dir);
    settings.idle_timeout = Duration::from_secs_f64(args.console_idle_timeout.clamp(1.0, 86_400.0));
    settings.replay_bytes = args.console_replay_kib.clamp(1, 16 * 1024) * 1024;
    let mut cfg = ferric_console::ConsoleConfig::new(&secret, settings);
    cfg.listen = args.console_listen.clone();
    let service = ferric_console::ConsoleService::start(cfg)
        .await
        .context("starting the console server")?;
    for s in service.swept() {
        tracing::warn!(swept = ?s, "console process left by a previous run of this conductor");
    }
    Ok(service)
}

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
