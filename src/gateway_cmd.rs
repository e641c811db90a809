//! `ferric gateway`: serves OpenStack Ironic's REST API (and Ferric's extensions) over the
//! cluster in etcd. Stateless: run as many as you like. SIGTERM/SIGINT stop accepting
//! connections and finish the requests in flight.

use crate::ctl::EtcdArgs;
use anyhow::Context;
use ferric_gateway::{AppState, Auth, GatewayConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Address to serve the API on (Ironic's port is 6385).
    #[arg(long, env = "FERRIC_LISTEN", default_value = "127.0.0.1:6385")]
    pub listen: SocketAddr,
    /// How callers authenticate: noauth (everyone is admin; loopback only unless
    /// --allow-insecure-noauth), http_basic (bcrypt htpasswd file, like Ironic's), token
    /// (file of `<token> <admin|reader>` lines; `Authorization: Bearer` or `X-Auth-Token`), or
    /// keystone (`X-Auth-Token` validated with Keystone, roles mapped to Ironic's policies;
    /// needs --keystone-url, --keystone-user and --keystone-password).
    #[arg(long, env = "FERRIC_AUTH", default_value = "noauth")]
    pub auth: String,
    /// The htpasswd file (http_basic) or token file (token).
    #[arg(long, env = "FERRIC_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Allow noauth on a non-loopback address (anyone who reaches it controls the fleet).
    #[arg(long)]
    pub allow_insecure_noauth: bool,
    /// Base URL in links of responses (default: http://<Host header>).
    #[arg(long, env = "FERRIC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Name of this gateway (recorded with the heartbeats it accepts; default: gateway@<listen>).
    #[arg(long, env = "FERRIC_GATEWAY_NAME")]
    pub name: Option<String>,
    /// Cluster-wide cap on nodes deploying at once (503 beyond it; Ironic's max_concurrent_deploy).
    #[arg(long, env = "FERRIC_MAX_CONCURRENT_DEPLOYS", default_value_t = 1000)]
    pub max_concurrent_deploys: usize,
    /// Cluster-wide cap on nodes cleaning at once (provide, clean, undeploy; 503 beyond it).
    #[arg(long, env = "FERRIC_MAX_CONCURRENT_CLEANS", default_value_t = 1000)]
    pub max_concurrent_cleans: usize,
    /// How long a console viewer's websocket stays open across a failover (the node's console
    /// reopening on its new owner: the dead conductor's lease TTL plus the reopening), in
    /// seconds, before it is closed with 1011.
    #[arg(
        long,
        env = "FERRIC_CONSOLE_RECONNECT",
        value_name = "SECONDS",
        default_value_t = GatewayConfig::default().console_reconnect.as_secs()
    )]
    pub console_reconnect: u64,
    /// Callers that are the compute service: user names as authenticated, or `role:<name>`
    /// for a Keystone role (`role:service`); their power requests are checked by the race
    /// guard (see README, "The race guard").
    #[arg(long, value_delimiter = ',', env = "FERRIC_COMPUTE_CALLERS")]
    pub compute_callers: Vec<String>,
    /// How long after the compute service acknowledged a power change its requests that would
    /// reverse it are still refused, in seconds.
    #[arg(long, default_value_t = 60.0, env = "FERRIC_COMPUTE_ACK_GRACE")]
    pub compute_ack_grace: f64,
    /// Turn the race guard off (the compute service's power requests are never refused for
    /// unacknowledged changes, as in Ironic).
    #[arg(long)]
    pub no_compute_guard: bool,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// `http://127.0.0.1:4317`): API requests, their etcd writes, the conductors' work and BMC
    /// commands, linked into one trace per request. Off by default.
    #[arg(long, env = "FERRIC_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub keystone: KeystoneArgs,
}

/// `--auth keystone`: the gateway's own service user, which validates callers' tokens (as
/// keystonemiddleware's `[keystone_authtoken]` section configures Ironic's).
#[derive(clap::Args)]
pub struct KeystoneArgs {
    /// Keystone's URL (`http://keystone:5000` or `.../v3`).
    #[arg(long, env = "FERRIC_KEYSTONE_URL")]
    pub keystone_url: Option<String>,
    #[arg(long, env = "FERRIC_KEYSTONE_USER")]
    pub keystone_user: Option<String>,
    #[arg(long, env = "FERRIC_KEYSTONE_PASSWORD", hide_env_values = true)]
    pub keystone_password: Option<String>,
    /// The project the gateway's user is scoped to.
    #[arg(long, default_value = "service", env = "FERRIC_KEYSTONE_PROJECT")]
    pub keystone_project: String,
    #[arg(long, default_value = "Default", env = "FERRIC_KEYSTONE_USER_DOMAIN")]
    pub keystone_user_domain: String,
    #[arg(
        long,
        default_value = "Default",
        env = "FERRIC_KEYSTONE_PROJECT_DOMAIN"
    )]
    pub keystone_project_domain: String,
    /// The project whose users with the `service` role act on every node (Nova's user;
    /// Ironic's `rbac_service_project_name`).
    #[arg(
        long,
        default_value = "service",
        env = "FERRIC_KEYSTONE_SERVICE_PROJECT"
    )]
    pub keystone_service_project: String,
    /// How long a validated token is trusted before Keystone is asked again, in seconds
    /// (never past its expiry; keystonemiddleware's `token_cache_time`).
    #[arg(long, default_value_t = 300, env = "FERRIC_KEYSTONE_CACHE_TIME")]
    pub keystone_cache_time: u64,
}

impl KeystoneArgs {
    fn auth(&self) -> anyhow::Result<Auth> {
        let need = |v: &Option<String>, flag: &str| {
            v.clone()
                .with_context(|| format!("--auth keystone needs {flag}"))
        };
        let config = ferric_keystone::KeystoneConfig {
            url: need(&self.keystone_url, "--keystone-url")?,
            user: need(&self.keystone_user, "--keystone-user")?,
            password: ferric_keystone::Secret::new(need(
                &self.keystone_password,
                "--keystone-password",
            )?),
            user_domain: self.keystone_user_domain.clone(),
            project: self.keystone_project.clone(),
            project_domain: self.keystone_project_domain.clone(),
        };
        Ok(Auth::Keystone {
            validator: Box::new(ferric_keystone::TokenValidator::new(
                ferric_keystone::ServiceToken::new(config),
                Duration::from_secs(10),
                Duration::from_secs(self.keystone_cache_time),
            )),
            service_project: self.keystone_service_project.clone(),
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let auth = if args.auth == "keystone" {
        args.keystone.auth()?
    } else {
        Auth::load(&args.auth, args.auth_file.as_deref()).map_err(anyhow::Error::msg)?
    };
    if matches!(auth, Auth::NoAuth)
        && !args.listen.ip().is_loopback()
        && !args.allow_insecure_noauth
    {
        anyhow::bail!(
            "--auth noauth on {} would let anyone who reaches it control the fleet; listen on a loopback address, choose --auth http_basic or token, or pass --allow-insecure-noauth",
            args.listen
        );
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cfg = args.etcd.config();
    // etcd may be starting too: keep trying (bounded by a signal).
    let cluster = loop {
        match ferric_cluster::Cluster::connect(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "etcd not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                }
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let config = GatewayConfig {
        name: args.name.unwrap_or_else(|| format!("gateway@{local}")),
        // This build's drivers, and the BMC protocols whose drivers conductors may bring.
        known_drivers: ferric_power::DRIVERS
            .iter()
            .chain(&["ipmi", "redfish"])
            .map(|d| d.to_string())
            .collect(),
        public_url: args.public_url,
        max_concurrent_deploys: args.max_concurrent_deploys,
        max_concurrent_cleans: args.max_concurrent_cleans,
        console_reconnect: Duration::from_secs(args.console_reconnect),
        compute_callers: if args.no_compute_guard {
            Vec::new()
        } else {
            args.compute_callers.clone()
        },
        compute_ack_grace: Duration::from_secs_f64(args.compute_ack_grace.clamp(0.0, 86_400.0)),
        ..GatewayConfig::default()
    };
    let mode = auth.mode();
    if let Auth::Keystone { validator, .. } = &auth {
        tracing::info!(keystone = %validator.describe(), "callers' tokens are validated by Keystone");
    }
    let state = AppState::new(cluster, config, auth);
    tracing::info!(listen = %local, auth = mode, prefix = %args.etcd.prefix, "gateway serving the Ironic API");
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
            _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight"),
        }
    };
    ferric_gateway::serve(listener, state, shutdown).await?;
    Ok(())
}
