//! Ferric's gateway: OpenStack Ironic's REST API v1 (what existing bare-metal clients speak)
//! over Ferric's etcd-backed cluster, plus Ferric's extensions under `/v1/ferric/`. Stateless:
//! any number of gateways may serve one cluster. Reads come from a watch-fed copy of the cluster
//! ([`informer`]); writes record intent in etcd through `ferric_cluster` and never talk to a
//! conductor. A write is answered only once this gateway's copy has seen it, so a read that
//! follows a write on the same gateway sees it (read-your-writes).
//!
//! Entry points: [`app`] builds the router (tests drive it without a socket), [`serve`] runs it
//! on a listener until a shutdown future completes.

pub mod auth;
pub mod child_cache;
pub mod error;
pub mod informer;
pub mod json_patch;
pub mod metrics;
pub mod node_input;
pub mod node_json;
pub mod secrets;
pub mod version;

mod actions;
mod bios;
mod children;
mod console;
mod create_batch;
mod dashboard;
mod drivers;
mod event_hub;
mod extensions;
mod fleet;
mod inspection;
mod lookup;
mod nodes;
mod policy;
mod request;
mod root;
mod traits;

pub use auth::{Auth, Caller, Role};
pub use error::ApiError;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use ferric_cluster::Cluster;
use ferric_model::{PortRecord, PortgroupRecord, VolumeConnectorRecord, VolumeTargetRecord};
use informer::Informer;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument;
use version::ApiVersion;

/// Largest request body accepted (413 above it). A node with large `properties` is a few KB;
/// 1 MiB leaves room for config drives passed inline.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Settings of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Recorded with the heartbeats it accepts.
    pub name: String,
    /// Drivers a node may be enrolled with although no live conductor serves them yet (this
    /// build's drivers; the conductors validate a node's driver info).
    pub known_drivers: Vec<String>,
    /// Base URL of links in responses (`http://host:6385`); default: from the request's Host.
    pub public_url: Option<String>,
    pub body_limit: usize,
    /// Cluster-wide caps (Ironic's `max_concurrent_deploy` / `max_concurrent_clean`): a deploy
    /// or clean asked for while this many nodes are already deploying or cleaning gets 503.
    pub max_concurrent_deploys: usize,
    pub max_concurrent_cleans: usize,
    /// How long a console viewer's websocket stays open across a failover (the node's console
    /// coming back on its new owner: the dead conductor's lease TTL plus the reopening) before
    /// it is closed with 1011.
    pub console_reconnect: Duration,
    /// Callers that are the compute service: their power requests go through the race guard
    /// (`ferric_model::delivery::guard`). Empty: no guard.
    pub compute_callers: Vec<String>,
    /// How long an acknowledged power change still protects against the compute service.
    pub compute_ack_grace: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            name: "gateway".into(),
            known_drivers: vec!["fake-hardware".into(), "ipmi".into(), "redfish".into()],
            public_url: None,
            body_limit: BODY_LIMIT,
            max_concurrent_deploys: 1000,
            max_concurrent_cleans: 1000,
            console_reconnect: console::RECONNECT_DEFAULT,
            compute_callers: Vec::new(),
            compute_ack_grace: Duration::from_secs(60),
        }
    }
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub cluster: Cluster,
    pub informer: Arc<Informer>,
    pub config: GatewayConfig,
    pub auth: Auth,
    pub metrics: metrics::Metrics,
    /// The highest etcd revision this gateway wrote; reads wait until the copy has it.
    last_write: AtomicI64,
    creator: create_batch::Creator,
    stop: tokio::sync::watch::Sender<bool>,
    /// Turns true when the server shuts down: long-lived responses (event streams) end, so
    /// that a graceful shutdown does not wait for them forever.
    closing: tokio::sync::watch::Sender<bool>,
    /// The cluster's console secret, read (or created) once, on the first console opened.
    console_secret: tokio::sync::OnceCell<String>,
    /// Recent `/v1/lookup` requests per node (`lookup::Limiter`).
    pub(crate) lookups: lookup::Limiter,
    /// Dashboard sessions this gateway read lately.
    pub(crate) sessions: dashboard::SessionCache,
    /// The last fleet summary (`/v1/ferric/summary`).
    pub(crate) summaries: fleet::SummaryCache,
    /// The last delivery figures (`/v1/ferric/deliveries`).
    pub(crate) deliveries: fleet::DeliveriesCache,
    /// The one watch every event stream of this gateway reads (`/v1/ferric/events`).
    pub(crate) event_hub: Arc<event_hub::Hub>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the informer's watch; the create batcher ends with its last sender.
        let _ = self.stop.send(true);
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Starts following the cluster (must run inside a tokio runtime).
    pub fn new(cluster: Cluster, config: GatewayConfig, auth: Auth) -> AppState {
        // Many clients' power and provision requests at once share etcd transactions.
        let cluster = cluster.with_spec_batching();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let event_hub = Arc::<event_hub::Hub>::default();
        let informer = Informer::start(cluster.clone(), stop_rx, event_hub.clone());
        let creator = create_batch::Creator::spawn(cluster.clone());
        AppState(Arc::new(Inner {
            cluster,
            informer,
            config,
            auth,
            metrics: metrics::Metrics::default(),
            last_write: AtomicI64::new(0),
            creator,
            stop,
            closing: tokio::sync::watch::channel(false).0,
            console_secret: tokio::sync::OnceCell::new(),
            lookups: lookup::Limiter::default(),
            sessions: dashboard::SessionCache::default(),
            summaries: fleet::SummaryCache::default(),
            deliveries: fleet::DeliveriesCache::default(),
            event_hub,
        }))
    }

    /// Resolves once the server is shutting down.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Notes a write at `rev` for read-your-writes.
    pub(crate) fn wrote(&self, rev: i64) {
        self.last_write.fetch_max(rev, Ordering::Relaxed);
    }

    /// Waits (bounded) until the copy has every write this gateway made, and was loaded at all.
    pub(crate) async fn read_barrier(&self) -> Result<(), ApiError> {
        let target = self.last_write.load(Ordering::Relaxed).max(1);
        if self.informer.wait_for(target, informer::CATCH_UP).await {
            Ok(())
        } else {
            Err(ApiError::Unavailable(format!(
                "This gateway's copy of the cluster is behind ({}); please retry.",
                self.informer
                    .problem()
                    .unwrap_or_else(|| "catching up".into())
            )))
        }
    }

    /// Waits (bounded) until the copy has everything etcd has now (after a lost
    /// compare-and-swap, or before answering that something does not exist).
    pub(crate) async fn catch_up(&self) -> Result<(), ApiError> {
        let now = self.cluster.revision().await?;
        self.settle(now).await;
        Ok(())
    }

    /// Waits (bounded) until the copy has a write at `rev`, then notes it.
    pub(crate) async fn settle(&self, rev: i64) {
        self.wrote(rev);
        if !self.informer.wait_for(rev, informer::CATCH_UP).await {
            tracing::warn!(rev, "copy did not reach a write in time; answering anyway");
        }
    }
}

/// The whole API as a router.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/nodes", get(nodes::list).post(nodes::create))
        .route("/nodes/detail", get(nodes::list_detail))
        .route("/nodes/validate", get(actions::validate_query))
        .route(
            "/nodes/{node}",
            get(nodes::show)
                .patch(nodes::patch)
                .put(nodes::replace)
                .delete(nodes::delete),
        )
        .route("/nodes/{node}/states", get(actions::states))
        .route("/nodes/{node}/states/power", put(actions::power))
        .route("/nodes/{node}/states/provision", put(actions::provision))
        .route(
            "/nodes/{node}/states/console",
            get(console::states).put(console::set_enabled),
        )
        .route("/nodes/{node}/console/ws", get(console::websocket))
        .route(
            "/nodes/{node}/maintenance",
            put(actions::maintenance_on).delete(actions::maintenance_off),
        )
        .route(
            "/nodes/{node}/management/boot_device",
            get(actions::boot_device).put(actions::set_boot_device),
        )
        .route(
            "/nodes/{node}/management/boot_device/supported",
            get(actions::boot_devices_supported),
        )
        .route("/nodes/{node}/validate", get(actions::validate))
        .route(
            "/nodes/{node}/traits",
            get(traits::list).put(traits::replace).delete(traits::clear),
        )
        .route(
            "/nodes/{node}/traits/{trait}",
            put(traits::add).delete(traits::remove),
        )
        .route("/nodes/{node}/bios", get(bios::list))
        .route("/nodes/{node}/bios/{name}", get(bios::show))
        .route("/drivers", get(drivers::list))
        .route("/drivers/{name}", get(drivers::show))
        .route("/drivers/{name}/properties", get(drivers::properties))
        .route(
            "/drivers/{name}/raid/logical_disk_properties",
            get(drivers::raid_logical_disk_properties),
        )
        .route("/nodes/{node}/history", get(root::history))
        .route("/nodes/{node}/history/{event}", get(root::history_event))
        .route(
            "/nodes/{node}/ports",
            get(children::list_of_node::<PortRecord>),
        )
        .route(
            "/nodes/{node}/portgroups",
            get(children::list_of_node::<PortgroupRecord>),
        )
        .route("/nodes/{node}/volume", get(children::node_volume_index))
        .route(
            "/nodes/{node}/volume/connectors",
            get(children::list_of_node::<VolumeConnectorRecord>),
        )
        .route(
            "/nodes/{node}/volume/targets",
            get(children::list_of_node::<VolumeTargetRecord>),
        )
        .route(
            "/nodes/{node}/vifs",
            get(children::vifs::list).post(children::vifs::attach),
        )
        .route("/nodes/{node}/vifs/{vif}", delete(children::vifs::detach))
        .route(
            "/ports",
            get(children::list::<PortRecord>).post(children::create::<PortRecord>),
        )
        .route("/ports/detail", get(children::list_detail::<PortRecord>))
        .route(
            "/ports/{id}",
            get(children::show::<PortRecord>)
                .patch(children::patch::<PortRecord>)
                .delete(children::delete::<PortRecord>),
        )
        .route(
            "/portgroups",
            get(children::list::<PortgroupRecord>).post(children::create::<PortgroupRecord>),
        )
        .route(
            "/portgroups/detail",
            get(children::list_detail::<PortgroupRecord>),
        )
        .route(
            "/portgroups/{id}",
            get(children::show::<PortgroupRecord>)
                .patch(children::patch::<PortgroupRecord>)
                .delete(children::delete::<PortgroupRecord>),
        )
        .route("/portgroups/{id}/ports", get(children::list_of_portgroup))
        .route("/volume", get(children::volume_index))
        .route(
            "/volume/connectors",
            get(children::list::<VolumeConnectorRecord>)
                .post(children::create::<VolumeConnectorRecord>),
        )
        .route(
            "/volume/connectors/detail",
            get(children::list_detail::<VolumeConnectorRecord>),
        )
        .route(
            "/volume/connectors/{id}",
            get(children::show::<VolumeConnectorRecord>)
                .patch(children::patch::<VolumeConnectorRecord>)
                .delete(children::delete::<VolumeConnectorRecord>),
        )
        .route(
            "/volume/targets",
            get(children::list::<VolumeTargetRecord>).post(children::create::<VolumeTargetRecord>),
        )
        .route(
            "/volume/targets/detail",
            get(children::list_detail::<VolumeTargetRecord>),
        )
        .route(
            "/volume/targets/{id}",
            get(children::show::<VolumeTargetRecord>)
                .patch(children::patch::<VolumeTargetRecord>)
                .delete(children::delete::<VolumeTargetRecord>),
        )
        .route("/conductors", get(root::conductors))
        .route("/conductors/{name}", get(root::conductor))
        .route("/heartbeat/{node}", post(actions::heartbeat))
        .route("/lookup", get(lookup::lookup))
        .route(
            "/continue_inspection",
            post(inspection::continue_inspection),
        )
        .route("/nodes/{node}/inventory", get(inspection::inventory))
        .route("/ferric/events", get(extensions::events))
        .route("/ferric/openapi.json", get(extensions::openapi))
        .route("/ferric/conductors", get(extensions::conductors))
        .route("/ferric/conductors/{name}", get(extensions::conductor))
        .route("/ferric/summary", get(fleet::summary))
        .route("/ferric/nodes", get(fleet::nodes))
        .route("/ferric/nodes/{node}/actions", get(fleet::actions))
        .route("/ferric/deliveries", get(fleet::deliveries));
    let inner = Router::new()
        .route("/", get(root::root))
        .route("/v1", get(root::v1_index))
        .nest("/v1", v1)
        .route("/healthz", get(extensions::healthz))
        .route("/metrics", get(extensions::metrics))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/api/config", get(dashboard::config))
        .route(
            "/dashboard/api/session",
            get(dashboard::session)
                .post(dashboard::sign_in)
                .delete(dashboard::sign_out),
        )
        .route("/dashboard/{*path}", get(dashboard::asset))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    // Ironic (pecan) accepts a trailing slash on every path (`/v1/nodes/` is what
    // python-ironicclient asks for); the path is normalised before routing.
    Router::new()
        .fallback_service(inner)
        .layer(middleware::map_request(strip_trailing_slash))
}

async fn strip_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(pq) = pq.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Runs the API on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(state.clone());
    let shutdown = async move {
        shutdown.await;
        state.closing.send_replace(true);
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> ApiError {
    ApiError::no_such_resource()
}

/// Paths served without authentication: version discovery (as Ironic's public root), health,
/// and the ramdisk's heartbeat and inspection data (Ironic's `public_api_routes`: a ramdisk has
/// no credentials; its agent token, pinned by the first heartbeat of each boot, is what the
/// heartbeat is checked by, and inspection data is taken only for a node waiting for it).
fn public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/v1" | "/healthz" | "/v1/continue_inspection" | "/v1/lookup" | "/dashboard"
    ) || path.starts_with("/v1/heartbeat/")
        // The dashboard's files hold no data; its session API checks the cookie itself.
        || path.starts_with("/dashboard/")
}

/// Microversion negotiation and authentication of every API request.
async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let versioned = path == "/" || path == "/v1" || path.starts_with("/v1/");
    let mut version = None;
    if versioned {
        match version::requested(req.headers()) {
            Ok(v) => {
                req.extensions_mut().insert(v);
                version = Some(v);
            }
            Err(e) => return with_version_headers(e.into_response(), None),
        }
    }
    if !public(&path) {
        // Browsers cannot set headers on a websocket: the console's may carry its credentials
        // in a subprotocol instead (never in the URL, which ends up in logs).
        let websocket = console::is_websocket_path(&path);
        let method = req.method().clone();
        let session =
            dashboard::session_caller(&state, &method, req.headers_mut(), websocket).await;
        let authenticated = if let Some(from_session) = session {
            from_session
        } else if websocket {
            state.auth.authenticate_websocket(req.headers_mut()).await
        } else {
            state.auth.authenticate(req.headers()).await
        };
        let caller = match authenticated {
            Ok(c) => c,
            Err(e) => {
                let mut resp = e.into_response();
                if from_page(req.headers()) {
                    // A page's own request: no challenge, or the browser would put up its
                    // login prompt over the dashboard's sign-in.
                    resp.headers_mut()
                        .remove(axum::http::header::WWW_AUTHENTICATE);
                }
                return with_version_headers(resp, version);
            }
        };
        if let Err(e) = auth::authorize(&caller, req.method(), &path) {
            return with_version_headers(e.into_response(), version);
        }
        if let Err(e) = scoped_node_request(&state, &caller, req.method(), &path, version).await {
            return with_version_headers(e.into_response(), version);
        }
        req.extensions_mut().insert(caller);
    }
    let resp = next.run(req).await;
    if versioned {
        with_version_headers(resp, version)
    } else {
        resp
    }
}

/// Whether a browser page's script sent the request (`fetch`, `EventSource`), not a
/// navigation or a non-browser client (Fetch Metadata headers, which scripts cannot forge).
fn from_page(headers: &axum::http::HeaderMap) -> bool {
    let is = |name: &str, value: &str| headers.get(name).is_some_and(|v| v == value);
    is("sec-fetch-site", "same-origin") && !is("sec-fetch-mode", "navigate")
}

/// A project-scoped caller's request on one node: the node must be its project's (else it is
/// not found, as in Ironic), and its role must allow the request (`policy.rs`).
async fn scoped_node_request(
    state: &AppState,
    caller: &auth::Caller,
    method: &axum::http::Method,
    path: &str,
    version: Option<version::ApiVersion>,
) -> Result<(), error::ApiError> {
    let Some(project) = &caller.project else {
        return Ok(());
    };
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let (Some(&"nodes"), Some(ident)) = (parts.get(2), parts.get(3)) else {
        return Ok(());
    };
    if matches!(*ident, "detail" | "validate") {
        return Ok(());
    }
    let node = request::lookup(
        state,
        ident,
        version.unwrap_or_else(version::ApiVersion::latest),
    )
    .await?;
    let rel = policy::relation(project, &node.spec.spec)
        .ok_or_else(|| error::ApiError::node_not_found(ident))?;
    policy::check_node_request(caller, rel, method, &parts[4..]).map_err(error::ApiError::Forbidden)
}

fn with_version_headers(mut resp: Response, version: Option<ApiVersion>) -> Response {
    let h = resp.headers_mut();
    let val = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    h.insert(version::HDR_MIN, val(version::min_string()));
    h.insert(version::HDR_MAX, val(version::max_string()));
    if let Some(v) = version {
        h.insert(version::HDR_VERSION, val(v.as_string()));
        if v.new_header {
            h.insert(
                version::HDR_OPENSTACK,
                val(format!("baremetal {}", v.as_string())),
            );
            h.insert(
                axum::http::header::VARY,
                HeaderValue::from_static("OpenStack-API-Version"),
            );
        }
    }
    resp
}

/// Metrics of every request, and Ironic's error body for the router's own 405s.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let mut resp = if ferric_telemetry::enabled() {
        // A server span per request, a child of the client's `traceparent` when it sends one.
        let span = tracing::info_span!(
            "http request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        let parent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        ferric_telemetry::set_parent(&span, parent);
        let resp = next.run(req).instrument(span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        if resp.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        resp
    } else {
        next.run(req).await
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        let mut r = ApiError::MethodNotAllowed(format!(
            "The method {method} is not allowed for this resource."
        ))
        .into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(axum::http::header::ALLOW, a);
        }
        for name in [version::HDR_MIN, version::HDR_MAX, version::HDR_VERSION] {
            if let Some(v) = resp.headers().get(name).cloned() {
                r.headers_mut().insert(name, v);
            }
        }
        resp = r;
    }
    if method != Method::OPTIONS {
        state.metrics.record(
            &route,
            method.as_str(),
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
    resp
}

/// How long an action waits for this gateway's copy to show what it wrote.
pub const SETTLE: Duration = informer::CATCH_UP;
