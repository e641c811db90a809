//! `ferric bench api --target URL`: one load client for any Ironic-compatible endpoint, Ferric's
//! gateway or OpenStack Ironic, so the two are measured the same way.
//!
//! The suite enrolls `fake-hardware` nodes of its own (a random tag as their resource class and
//! name prefix, so lists and cleanup find them and nothing else), then runs its workloads one
//! after the other, each at a fixed concurrency and after a warm-up: enroll; list (detail,
//! `fields`, filters); manage, provide, power on and off, deploy and undeploy, each timed until
//! every node has reached its state; port create and lookup by MAC; delete. Every node and
//! port it made is deleted at the end, also when a workload fails.
//!
//! "All reached" is watched on the endpoint's event stream where it has one (Ferric's
//! `/v1/ferric/events`: one connection, no requests), confirmed by one list at the end; an
//! endpoint without one is polled with a list of the suite's nodes (their states only), one
//! poll at a time with a pause as long as the poll itself, so the watching takes at most one
//! connection half the time.

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The microversion the suite asks for (or the endpoint's highest, when lower).
const WANT_VERSION: (u32, u32) = (1, 95);
/// How long a transition may take before the suite gives up on it.
const REACH_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a request answered 409 or 503 is retried.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// The shortest pause between two polls.
const POLL_MIN: Duration = Duration::from_millis(250);

/// How the suite signs in to a target.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Drive this Ironic-compatible endpoint (the API's root URL, e.g. http://127.0.0.1:6385),
    /// Ferric or Ironic, instead of starting a Ferric cluster of its own.
    #[arg(long, visible_alias = "ironic")]
    pub target: Option<String>,
    /// A Keystone token, sent as X-Auth-Token.
    #[arg(long, env = "OS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// User for HTTP basic auth, or, with --keystone, the Keystone user.
    #[arg(long)]
    pub user: Option<String>,
    /// Password of --user (better given in the environment).
    #[arg(long, env = "FERRIC_BENCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Keystone's URL (e.g. http://keystone:5000): --user and --password are exchanged for a
    /// token scoped to --project, or to the system without one.
    #[arg(long)]
    pub keystone: Option<String>,
    /// The Keystone project to scope the token to (in the Default domain).
    #[arg(long)]
    pub project: Option<String>,
    /// Requests (nodes, for the transitions) of each workload made before its clock starts.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Concurrent clients of the list workloads (1: the latency one client sees).
    #[arg(long, default_value_t = 1)]
    pub list_clients: usize,
    /// Workloads to leave out (comma-separated names, e.g. deploy,undeploy).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What the suite runs with.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub clients: usize,
    pub list_clients: usize,
    pub list_samples: usize,
    pub warmup: usize,
    pub skip: Vec<String>,
    /// A cluster the bench started itself: each workload's profile.
    pub profiler: Option<Arc<crate::bench_profile::Profiler>>,
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    None,
    Token(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::Basic { .. } => "http basic",
        })
    }
}

impl TargetArgs {
    /// The credentials the flags give (a Keystone token fetched now).
    pub async fn auth(&self) -> anyhow::Result<Auth> {
        if let Some(t) = &self.token {
            return Ok(Auth::Token(t.clone()));
        }
        match (&self.user, &self.password, &self.keystone) {
            (Some(u), Some(p), Some(ks)) => Ok(Auth::Token(
                keystone_token(ks, u, p, self.project.as_deref()).await?,
            )),
            (Some(u), Some(p), None) => Ok(Auth::Basic {
                user: u.clone(),
                password: p.clone(),
            }),
            (Some(_), None, _) => bail!("--user needs --password (or FERRIC_BENCH_PASSWORD)"),
            (None, _, Some(_)) => bail!("--keystone needs --user and --password"),
            _ => Ok(Auth::None),
        }
    }

    pub fn options(&self, nodes: usize, clients: usize, list_samples: usize) -> Options {
        Options {
            nodes,
            clients,
            list_clients: self.list_clients.max(1),
            list_samples,
            warmup: self.warmup,
            skip: self.skip.clone(),
            profiler: None,
        }
    }
}

/// A Keystone v3 password token (Default domain), project- or system-scoped.
async fn keystone_token(
    url: &str,
    user: &str,
    password: &str,
    project: Option<&str>,
) -> anyhow::Result<String> {
    let scope = match project {
        Some(p) => json!({"project": {"name": p, "domain": {"id": "default"}}}),
        None => json!({"system": {"all": true}}),
    };
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": scope,
    }});
    let url = format!("{}/v3/auth/tokens", url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach Keystone at {url}"))?;
    let status = resp.status();
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match token {
        Some(t) if status.is_success() => Ok(t),
        _ => bail!(
            "Keystone refused user {user:?}: {status} {}",
            resp.text().await.unwrap_or_default()
        ),
    }
}

/// Which server a target is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Ferric,
    Ironic,
}

/// An Ironic-compatible endpoint, checked.
pub struct Endpoint {
    pub base: String,
    http: reqwest::Client,
    auth: Auth,
    pub version: String,
    pub max_version: String,
    pub server: Server,
}

impl Endpoint {
    /// Checks that `url` answers like Ironic's API root, picks the microversion and checks
    /// that the credentials may read nodes.
    pub async fn connect(url: &str, auth: Auth, clients: usize) -> anyhow::Result<Endpoint> {
        let base = url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients + 4)
            .timeout(Duration::from_secs(120))
            .build()?;
        let not_ironic = |why: String| {
            anyhow!(
                "{base} does not answer like an Ironic API ({why}); give the API's root URL, e.g. http://127.0.0.1:6385"
            )
        };
        let resp = http
            .get(format!("{base}/"))
            .send()
            .await
            .map_err(|e| not_ironic(format!("GET /: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let root: Value = serde_json::from_str(&text).map_err(|_| {
            not_ironic(format!(
                "GET / gave {status} and no JSON: {:?}",
                text.chars().take(120).collect::<String>()
            ))
        })?;
        let max_version = root["default_version"]["version"]
            .as_str()
            .or_else(|| root["versions"][0]["version"].as_str())
            .ok_or_else(|| not_ironic(format!("GET / has no API version: {root}")))?
            .to_string();
        let max = parse_version(&max_version)
            .ok_or_else(|| not_ironic(format!("its version {max_version:?} is not N.M")))?;
        anyhow::ensure!(
            max >= (1, 31),
            "{base} speaks Ironic API {max_version}; the suite needs 1.31 or later"
        );
        let v = max.min(WANT_VERSION);
        let mut ep = Endpoint {
            base,
            http,
            auth,
            version: format!("{}.{}", v.0, v.1),
            max_version,
            server: Server::Ironic,
        };
        let (status, body) = ep.call(Method::GET, "/v1/nodes?limit=1", None).await?;
        match status {
            200 => {}
            401 => bail!(
                "{} refused the credentials (401: {}); give --token, --user and --password (HTTP basic), or --keystone with --user, --password and --project",
                ep.base,
                fault(&body)
            ),
            403 => bail!(
                "{} does not let these credentials list nodes (403: {}); the suite needs an admin",
                ep.base,
                fault(&body)
            ),
            _ => bail!(
                "GET {}/v1/nodes answered {status}: {}",
                ep.base,
                fault(&body)
            ),
        }
        let (status, _) = ep.call(Method::GET, "/v1/ferric/summary", None).await?;
        if status == 200 {
            ep.server = Server::Ferric;
        }
        Ok(ep)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-OpenStack-Ironic-API-Version", &self.version);
        match &self.auth {
            Auth::None => r,
            Auth::Token(t) => r.header("X-Auth-Token", t),
            Auth::Basic { user, password } => r.basic_auth(user, Some(password)),
        }
    }

    /// One request; its status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut r = self.request(method.clone(), path);
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, bytes.to_vec()))
    }

    /// A request that must answer `want`; its JSON body (Null when empty).
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        want: &[u16],
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.call(method.clone(), path, body).await?;
        anyhow::ensure!(
            want.contains(&status),
            "{method} {path}: {status} {}",
            fault(&bytes)
        );
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The message of an Ironic error body (`error_message`, itself JSON with `faultstring`), or
/// the body's start.
fn fault(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(m) = v["error_message"].as_str() {
        let inner: Value = serde_json::from_str(m).unwrap_or(Value::Null);
        return inner["faultstring"].as_str().unwrap_or(m).to_string();
    }
    if let Some(m) = v["error"]["message"].as_str() {
        return m.to_string();
    }
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    /// Requests timed (after the warm-up).
    pub requests: usize,
    pub concurrency: usize,
    /// Requests per second while they were sent.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// For transitions: seconds from the first timed request until every timed node had
    /// reached the state.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reached_s: Option<f64>,
    /// Per request, on a cluster the bench started: CPU of each process group and etcd's
    /// counters, over the timed part (for transitions, until all reached).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<crate::bench_profile::Profile>,
}

impl Workload {
    fn new(name: &str, concurrency: usize, mut lat_ms: Vec<f64>, took: Duration) -> Workload {
        lat_ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if lat_ms.is_empty() {
                f64::NAN
            } else {
                lat_ms[((lat_ms.len() as f64 * q) as usize).min(lat_ms.len() - 1)]
            }
        };
        Workload {
            name: name.to_string(),
            requests: lat_ms.len(),
            concurrency,
            rate: lat_ms.len() as f64 / took.as_secs_f64().max(1e-9),
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            max_ms: lat_ms.last().copied().unwrap_or(f64::NAN),
            reached_s: None,
            profile: None,
        }
    }

    /// The line the suite prints.
    pub fn line(&self) -> String {
        let reached = self
            .reached_s
            .map(|s| format!("; all reached after {s:.2} s"))
            .unwrap_or_default();
        format!(
            "{:<16} {:>6} requests at {:>2} clients: {:>8.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{reached}",
            self.name,
            self.requests,
            self.concurrency,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

/// The suite's result against one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResult {
    pub target: String,
    pub server: Server,
    pub api_version: String,
    pub max_version: String,
    pub nodes: usize,
    pub clients: usize,
    pub warmup: usize,
    /// How "all reached" was watched: `event stream` or `polling`.
    pub watched_by: String,
    pub machine: String,
    pub workloads: Vec<Workload>,
    /// Workloads not run, with why.
    pub skipped: Vec<(String, String)>,
}

/// A node's states as the suite watches them.
#[derive(Debug, Clone, Default)]
struct States {
    provision: String,
    target_provision: Option<String>,
    power: Option<String>,
    target_power: Option<String>,
}

impl States {
    fn from_json(v: &Value) -> States {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        States {
            provision: s("provision_state").unwrap_or_default(),
            target_provision: s("target_provision_state"),
            power: s("power_state"),
            target_power: s("target_power_state"),
        }
    }
}

/// What a transition waits for.
#[derive(Debug, Clone, Copy)]
enum Goal {
    Provision(&'static str),
    Power(&'static str),
}

impl Goal {
    fn reached(self, s: &States) -> bool {
        match self {
            Goal::Provision(p) => s.provision == p && s.target_provision.is_none(),
            Goal::Power(p) => s.power.as_deref() == Some(p) && s.target_power.is_none(),
        }
    }
}

/// The nodes' latest states from Ferric's event stream (status changes).
struct StreamWatch {
    states: Mutex<HashMap<String, States>>,
    changed: tokio::sync::watch::Sender<u64>,
    /// False once the stream is lost for good (the suite polls then).
    alive: AtomicBool,
    task: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

impl StreamWatch {
    /// Opens the stream and returns once it has said where it starts.
    async fn open(ep: Arc<Endpoint>) -> anyhow::Result<Arc<StreamWatch>> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Built whole before the task starts: a task spawned inside `Arc::new_cyclic` could get
        // the stream's first message before the Arc existed (its thread descheduled meanwhile
        // on a loaded machine), find its weak reference dead and end, as if the watch had been
        // dropped (seen in CI: "the event stream ended before it opened").
        let watch = Arc::new(StreamWatch {
            states: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
            alive: AtomicBool::new(true),
            task: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&watch);
        let task = tokio::spawn(async move {
            follow_stream(ep, weak, ready_tx).await;
        });
        let _ = watch.task.set(task);
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the event stream did not open within 30 s")?
            .context("the event stream ended before it opened")?;
        Ok(watch)
    }

    fn apply(&self, doc: &Value) {
        if doc["record"] != "status" || doc["deleted"] == true {
            return;
        }
        let Some(node) = doc["node"].as_str() else {
            return;
        };
        self.states
            .lock()
            .unwrap()
            .insert(node.to_string(), States::from_json(doc));
        self.changed.send_modify(|n| *n += 1);
    }

    fn count(&self, ids: &[String], goal: Goal) -> usize {
        let states = self.states.lock().unwrap();
        ids.iter()
            .filter(|id| states.get(*id).is_some_and(|s| goal.reached(s)))
            .count()
    }
}

/// Reads the event stream, reconnecting with the last id; marks the watch dead when the
/// stream cannot go on (a reset, or no stream for 30 s).
async fn follow_stream(
    ep: Arc<Endpoint>,
    watch: std::sync::Weak<StreamWatch>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut last_id: Option<String> = None;
    let mut lost_since: Option<Instant> = None;
    loop {
        let mut req = ep.request(Method::GET, "/v1/ferric/events");
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        // No overall timeout on a stream: it is meant to stay open.
        let resp = req.timeout(Duration::from_secs(24 * 3600)).send().await;
        let mut body = match resp {
            Ok(r) if r.status().is_success() => r.bytes_stream(),
            other => {
                if lost_since.is_none() {
                    match &other {
                        Ok(r) => {
                            tracing::warn!(status = %r.status(), "the event stream was refused; trying again")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the event stream could not be opened; trying again")
                        }
                    }
                }
                if lost_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(30) {
                    if let Some(w) = watch.upgrade() {
                        w.alive.store(false, Ordering::Relaxed);
                        w.changed.send_modify(|n| *n += 1);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        lost_since = None;
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                let (mut event, mut data, mut id) = ("message", String::new(), None);
                for line in message.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = if v.trim() == "ready" {
                            "ready"
                        } else if v.trim() == "reset" {
                            "reset"
                        } else {
                            "node"
                        };
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    }
                }
                let Some(w) = watch.upgrade() else { return };
                match event {
                    "ready" => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    "reset" => {
                        w.alive.store(false, Ordering::Relaxed);
                        w.changed.send_modify(|n| *n += 1);
                        return;
                    }
                    _ => {
                        if let Ok(doc) = serde_json::from_str::<Value>(&data) {
                            w.apply(&doc);
                        }
                    }
                }
                if id.is_some() {
                    last_id = id;
                }
            }
        }
    }
}

/// The states of the suite's nodes, read with lists (paged).
async fn poll(ep: &Endpoint, tag: &str) -> anyhow::Result<HashMap<String, States>> {
    let mut out = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/nodes?resource_class={tag}&fields=uuid,provision_state,target_provision_state,power_state,target_power_state&limit=1000"
        );
        if let Some(m) = &marker {
            path.push_str(&format!("&marker={m}"));
        }
        let page = ep.expect(Method::GET, &path, None, &[200]).await?;
        let nodes = page["nodes"].as_array().cloned().unwrap_or_default();
        for n in &nodes {
            if let Some(id) = n["uuid"].as_str() {
                out.insert(id.to_string(), States::from_json(n));
            }
        }
        marker = nodes
            .last()
            .and_then(|n| n["uuid"].as_str())
            .map(str::to_string);
        if nodes.is_empty() || page.get("next").is_none() {
            return Ok(out);
        }
    }
}

/// How the suite learns that nodes have reached a state.
enum Watcher {
    Stream(Arc<StreamWatch>),
    Poll,
}

impl Watcher {
    /// Waits until every one of `ids` has reached `goal`; when, and how it was seen.
    async fn until(
        &self,
        ep: &Endpoint,
        tag: &str,
        ids: &[String],
        goal: Goal,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + REACH_TIMEOUT;
        if let Watcher::Stream(w) = self {
            let mut rx = w.changed.subscribe();
            loop {
                if w.count(ids, goal) == ids.len() {
                    let at = Instant::now();
                    // Confirmed by the list: the stream's view is not the record.
                    let states = poll(ep, tag).await?;
                    if ids
                        .iter()
                        .all(|id| states.get(id).is_some_and(|s| goal.reached(s)))
                    {
                        return Ok(at);
                    }
                    tracing::warn!("the event stream and the node list disagree; polling");
                    break;
                }
                if !w.alive.load(Ordering::Relaxed) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {} nodes reached {goal:?} after {REACH_TIMEOUT:?}",
                        w.count(ids, goal),
                        ids.len()
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
        }
        loop {
            let t = Instant::now();
            let states = poll(ep, tag).await?;
            let got = ids
                .iter()
                .filter(|id| states.get(*id).is_some_and(|s| goal.reached(s)))
                .count();
            if got == ids.len() {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {got} of {} nodes reached {goal:?} after {REACH_TIMEOUT:?}",
                    ids.len()
                );
            }
            tokio::time::sleep(t.elapsed().max(POLL_MIN)).await;
        }
    }
}

/// One request of a workload: method, path, body, the statuses that count as success.
type Req = (Method, String, Option<Value>, &'static [u16]);

/// Sends `make(i)` for every i of `items` on `clients` concurrent clients; each request's
/// latency (ms), in order of `items`, its answer, and the time they took.
async fn drive(
    ep: &Arc<Endpoint>,
    clients: usize,
    items: std::ops::Range<usize>,
    make: impl Fn(usize) -> Req + Send + Sync + 'static,
) -> anyhow::Result<(Vec<f64>, Vec<Value>, Duration)> {
    let start = items.start;
    let n = items.len();
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let out: Arc<Mutex<Vec<(f64, Value)>>> = Arc::new(Mutex::new(vec![(f64::NAN, Value::Null); n]));
    let retries = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(n.max(1)) {
        let (ep, next, make, out) = (ep.clone(), next.clone(), make.clone(), out.clone());
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                let (method, path, body, want) = make(start + k);
                let t = Instant::now();
                // 409 (Ironic: the node is locked by a task, e.g. its power sync) and 503 are
                // retried as Ironic's clients do; the latency is the whole wait.
                let mut backoff = Duration::from_millis(50);
                let (status, bytes) = loop {
                    let (status, bytes) = ep.call(method.clone(), &path, body.as_ref()).await?;
                    let busy = status == 409 || status == 503;
                    if !busy || want.contains(&status) || t.elapsed() > RETRY_FOR {
                        break (status, bytes);
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if !want.contains(&status) {
                    bail!("{method} {path}: {status} {}", fault(&bytes));
                }
                let doc = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                out.lock().unwrap()[k] = (ms, doc);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = t0.elapsed();
    let retried = retries.load(Ordering::Relaxed);
    if retried > 0 {
        println!("  ({retried} answers of 409 or 503 retried)");
    }
    let (lat, docs) = std::mem::take(&mut *out.lock().unwrap())
        .into_iter()
        .unzip();
    Ok((lat, docs, took))
}

/// The suite against one endpoint. Deletes what it made, also when a workload fails.
pub async fn run_suite(ep: Arc<Endpoint>, opts: &Options) -> anyhow::Result<SuiteResult> {
    let tag = format!("fbench-{:08x}", rand_u32());
    let mut result = SuiteResult {
        target: ep.base.clone(),
        server: ep.server.clone(),
        api_version: ep.version.clone(),
        max_version: ep.max_version.clone(),
        nodes: opts.nodes,
        clients: opts.clients,
        warmup: opts.warmup,
        watched_by: String::new(),
        machine: crate::bench::machine(),
        workloads: Vec::new(),
        skipped: Vec::new(),
    };
    // Interrupted (Ctrl-C, SIGTERM): the nodes made so far are removed all the same.
    let ran = tokio::select! {
        r = workloads(&ep, opts, &tag, &mut result) => r,
        s = interrupted() => Err(anyhow!("interrupted by {s}; removing the nodes tagged {tag}")),
    };
    let cleaned = cleanup(&ep, &tag).await;
    ran?;
    cleaned?;
    Ok(result)
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

/// The `<kind>_interface` fields that make a node fake-hardware through and through: `fake`
/// where the endpoint enables it but does not default to it. Errors when the endpoint does
/// not have fake-hardware with fake power and management; says whether deploys can run.
async fn fake_interfaces(ep: &Endpoint) -> anyhow::Result<(serde_json::Map<String, Value>, bool)> {
    let (status, body) = ep
        .call(Method::GET, "/v1/drivers/fake-hardware", None)
        .await?;
    if status == 404 {
        bail!(
            "{} does not enable the fake-hardware hardware type (Ironic: [DEFAULT]enabled_hardware_types); see bench/ironic/README.md",
            ep.base
        );
    }
    anyhow::ensure!(
        status == 200,
        "GET /v1/drivers/fake-hardware: {status} {}",
        fault(&body)
    );
    let d: Value = serde_json::from_slice(&body)?;
    let mut fields = serde_json::Map::new();
    let enabled = |kind: &str| -> Vec<String> {
        d[format!("enabled_{kind}_interfaces")]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for kind in ["power", "management"] {
        anyhow::ensure!(
            enabled(kind).iter().any(|n| n == "fake"),
            "{} does not enable the fake {kind} interface (Ironic: [DEFAULT]enabled_{kind}_interfaces must include fake); see bench/ironic/README.md",
            ep.base
        );
    }
    for kind in [
        "boot",
        "deploy",
        "inspect",
        "management",
        "power",
        "raid",
        "rescue",
        "vendor",
        "bios",
    ] {
        let default = d[format!("default_{kind}_interface")].as_str();
        if default != Some("fake") && enabled(kind).iter().any(|n| n == "fake") {
            fields.insert(format!("{kind}_interface"), json!("fake"));
        }
    }
    let deploys = enabled("deploy").iter().any(|n| n == "fake");
    Ok((fields, deploys))
}

async fn workloads(
    ep: &Arc<Endpoint>,
    opts: &Options,
    tag: &str,
    result: &mut SuiteResult,
) -> anyhow::Result<()> {
    let n = opts.nodes;
    anyhow::ensure!(n > 0, "--nodes must be at least 1");
    let w = opts.warmup.min(n / 2);
    let c = opts.clients.max(1);
    let skip = |name: &str| opts.skip.iter().any(|s| s == name);
    let (fields, deploys) = fake_interfaces(ep).await?;
    let watcher = match ep.server {
        Server::Ferric => match StreamWatch::open(ep.clone()).await {
            Ok(s) => {
                result.watched_by = "event stream".into();
                Watcher::Stream(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no event stream; polling");
                result.watched_by = "polling".into();
                Watcher::Poll
            }
        },
        Server::Ironic => {
            result.watched_by = "polling".into();
            Watcher::Poll
        }
    };
    println!(
        "target: {} ({:?}, API {} of {}), {n} nodes tagged {tag}, {c} clients, warm-up {w}, watched by {}",
        ep.base, ep.server, ep.version, ep.max_version, result.watched_by
    );
    let report = |result: &mut SuiteResult, wl: Workload| {
        println!("{}", wl.line());
        if let Some(p) = &wl.profile {
            println!("{}", p.line());
        }
        result.workloads.push(wl);
    };

    // Enroll.
    let body = Arc::new(fields);
    let tag_owned = tag.to_string();
    let enroll = move |i: usize| -> Req {
        let mut b = (*body).clone();
        b.insert("driver".into(), json!("fake-hardware"));
        b.insert("name".into(), json!(format!("{tag_owned}-{i:07}")));
        b.insert("resource_class".into(), json!(tag_owned));
        (
            Method::POST,
            "/v1/nodes".into(),
            Some(Value::Object(b)),
            &[201],
        )
    };
    let enroll = Arc::new(enroll);
    let e2 = enroll.clone();
    let (_, warm_docs, _) = drive(ep, c, 0..w, move |i| e2(i)).await?;
    let e3 = enroll.clone();
    let s0 = mark(opts).await;
    let (lat, docs, took) = drive(ep, c, w..n, move |i| e3(i)).await?;
    let enrolled = Workload::new("enroll", c, lat, took);
    let ids: Vec<String> = warm_docs
        .iter()
        .chain(docs.iter())
        .map(|d| {
            d["uuid"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("POST /v1/nodes answered without a uuid: {d}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let ids = Arc::new(ids);
    // Every node in the list before the next workload (a node's first status record is
    // written when something happens to it, so this is not watched on the stream).
    Watcher::Poll
        .until(ep, tag, &ids, Goal::Provision("enroll"))
        .await?;

    // Ferric: lists are measured once every new node is owned by a conductor (a cluster
    // still placing 5,000 new nodes is measuring that too). Ironic has no such step.
    let mut owned_after = None;
    if ep.server == Server::Ferric {
        let t = Instant::now();
        loop {
            let s = ep
                .expect(Method::GET, "/v1/ferric/summary", None, &[200])
                .await?;
            if s["unowned"] == 0 {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < REACH_TIMEOUT,
                "{} nodes still have no conductor after {REACH_TIMEOUT:?}",
                s["unowned"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        owned_after = Some(t.elapsed());
    }
    // The profile of enrollment includes the conductors' reservations of the new nodes.
    report(result, profiled(opts, enrolled, s0, n - w).await);
    if let Some(t) = owned_after {
        println!(
            "  (every node owned by a conductor {:.2} s after the last enroll)",
            t.as_secs_f64()
        );
    }

    // Lists.
    let lc = opts.list_clients;
    let samples = opts.list_samples.max(1);
    for (name, path) in [
        ("list detail", "/v1/nodes/detail?limit=1000".to_string()),
        (
            "list fields",
            "/v1/nodes?fields=uuid,name,power_state,provision_state,maintenance&limit=1000"
                .to_string(),
        ),
        (
            "list filtered",
            format!("/v1/nodes?resource_class={tag}&provision_state=enroll&maintenance=false&limit=1000"),
        ),
    ] {
        if skip(name) {
            result.skipped.push((name.into(), "--skip".into()));
            continue;
        }
        let warm = path.clone();
        drive(ep, lc, 0..w.min(samples), move |_| {
            (Method::GET, warm.clone(), None, &[200])
        })
        .await?;
        let s0 = mark(opts).await;
        let (lat, docs, took) = drive(ep, lc, 0..samples, move |_| {
            (Method::GET, path.clone(), None, &[200])
        })
        .await?;
        let wl = profiled(opts, Workload::new(name, lc, lat, took), s0, samples).await;
        anyhow::ensure!(
            docs.iter()
                .all(|d| d["nodes"].as_array().is_some_and(|a| !a.is_empty())),
            "{name}: a list came back empty"
        );
        report(result, wl);
    }

    // Transitions, each timed until every node has reached its state.
    let provision = |verb: &'static str| {
        let ids = ids.clone();
        move |i: usize| -> Req {
            (
                Method::PUT,
                format!("/v1/nodes/{}/states/provision", ids[i]),
                Some(json!({"target": verb})),
                &[202],
            )
        }
    };
    let power = |target: &'static str| {
        let ids = ids.clone();
        move |i: usize| -> Req {
            (
                Method::PUT,
                format!("/v1/nodes/{}/states/power", ids[i]),
                Some(json!({"target": target})),
                &[202],
            )
        }
    };
    type Make = Box<dyn Fn(usize) -> Req + Send + Sync>;
    let mut steps: Vec<(&str, Make, Goal)> = vec![
        (
            "manage",
            Box::new(provision("manage")),
            Goal::Provision("manageable"),
        ),
        (
            "provide",
            Box::new(provision("provide")),
            Goal::Provision("available"),
        ),
        (
            "power on",
            Box::new(power("power on")),
            Goal::Power("power on"),
        ),
        (
            "power off",
            Box::new(power("power off")),
            Goal::Power("power off"),
        ),
    ];
    if deploys {
        steps.push((
            "deploy",
            Box::new(provision("active")),
            Goal::Provision("active"),
        ));
        steps.push((
            "undeploy",
            Box::new(provision("deleted")),
            Goal::Provision("available"),
        ));
    } else {
        for name in ["deploy", "undeploy"] {
            result.skipped.push((
                name.into(),
                "the endpoint does not enable the fake deploy interface".into(),
            ));
        }
    }
    for (name, make, goal) in steps {
        let needed = matches!(name, "manage" | "provide");
        if skip(name) && !needed {
            result.skipped.push((name.into(), "--skip".into()));
            continue;
        }
        if name == "power on" {
            // From a known state: every node off first (not timed).
            let states = poll(ep, tag).await?;
            let on: Vec<usize> = (0..n)
                .filter(|&i| {
                    states
                        .get(&ids[i])
                        .is_none_or(|s| s.power.as_deref() != Some("power off"))
                })
                .collect();
            if !on.is_empty() {
                let off = power("power off");
                let on = Arc::new(on);
                let which = on.clone();
                drive(ep, c, 0..on.len(), move |k| off(which[k])).await?;
                let subset: Vec<String> = on.iter().map(|&i| ids[i].clone()).collect();
                watcher
                    .until(ep, tag, &subset, Goal::Power("power off"))
                    .await?;
            }
        }
        let make: Arc<Make> = Arc::new(make);
        let m = make.clone();
        drive(ep, c, 0..w, move |i| m(i)).await?;
        watcher.until(ep, tag, &ids[..w], goal).await?;
        let s0 = mark(opts).await;
        let t0 = Instant::now();
        let m = make.clone();
        let (lat, _, took) = drive(ep, c, w..n, move |i| m(i)).await?;
        let at = watcher.until(ep, tag, &ids[w..], goal).await?;
        let mut wl = profiled(opts, Workload::new(name, c, lat, took), s0, n - w).await;
        wl.reached_s = Some(at.duration_since(t0).as_secs_f64());
        if !(skip(name) && needed) {
            report(result, wl);
        }
    }

    // Ports: create one per node, then look each up by its MAC.
    let mac_tag = rand_u32();
    let mac = move |i: usize| {
        let b = mac_tag.to_be_bytes();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0],
            b[1] ^ ((i >> 24) as u8),
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8
        )
    };
    if !skip("port create") {
        let ids_p = ids.clone();
        let create = move |i: usize| -> Req {
            (
                Method::POST,
                "/v1/ports".into(),
                Some(json!({"node_uuid": ids_p[i], "address": mac(i)})),
                &[201],
            )
        };
        let create = Arc::new(create);
        let c1 = create.clone();
        drive(ep, c, 0..w, move |i| c1(i)).await?;
        let c2 = create.clone();
        let s0 = mark(opts).await;
        let (lat, _, took) = drive(ep, c, w..n, move |i| c2(i)).await?;
        let wl = Workload::new("port create", c, lat, took);
        report(result, profiled(opts, wl, s0, n - w).await);
        if !skip("port lookup") {
            let lookup = move |i: usize| -> Req {
                (
                    Method::GET,
                    format!("/v1/ports?address={}", mac(i)),
                    None,
                    &[200],
                )
            };
            let lookup = Arc::new(lookup);
            let l1 = lookup.clone();
            drive(ep, c, 0..w, move |i| l1(i)).await?;
            let l2 = lookup.clone();
            let s0 = mark(opts).await;
            let (lat, docs, took) = drive(ep, c, w..n, move |i| l2(i)).await?;
            let wl = profiled(opts, Workload::new("port lookup", c, lat, took), s0, n - w).await;
            anyhow::ensure!(
                docs.iter()
                    .all(|d| d["ports"].as_array().is_some_and(|a| a.len() == 1)),
                "port lookup: an address did not find exactly one port"
            );
            report(result, wl);
        }
    }

    // Delete every node (its ports go with it).
    if !skip("delete") {
        let ids_d = ids.clone();
        let s0 = mark(opts).await;
        let (lat, _, took) = drive(ep, c, 0..n, move |i| {
            (
                Method::DELETE,
                format!("/v1/nodes/{}", ids_d[i]),
                None,
                &[204],
            )
        })
        .await?;
        let wl = Workload::new("delete", c, lat, took);
        report(result, profiled(opts, wl, s0, n).await);
    }
    Ok(())
}

/// A reading before a workload, when the suite profiles (see [`crate::bench_profile`]).
async fn mark(opts: &Options) -> Option<crate::bench_profile::Sample> {
    match &opts.profiler {
        Some(p) => Some(p.sample().await),
        None => None,
    }
}

/// `wl` with its profile since `from`, per one of `requests`, when the suite profiles.
async fn profiled(
    opts: &Options,
    mut wl: Workload,
    from: Option<crate::bench_profile::Sample>,
    requests: usize,
) -> Workload {
    if let (Some(p), Some(from)) = (&opts.profiler, from) {
        wl.profile = Some(p.since(&from, requests).await);
    }
    wl
}

/// Deletes every node the suite made (tagged `tag`) that is still there, undeploying the
/// deployed ones first; says what could not be removed.
async fn cleanup(ep: &Endpoint, tag: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let states = match poll(ep, tag).await {
            Ok(s) => s,
            Err(e) => bail!("cleanup: cannot list the nodes tagged {tag}: {e}"),
        };
        if states.is_empty() {
            return Ok(());
        }
        for (id, s) in &states {
            if s.target_provision.is_some() {
                continue;
            }
            let path = format!("/v1/nodes/{id}");
            let (status, _) = ep.call(Method::DELETE, &path, None).await?;
            if status != 204 && status != 404 {
                let verb = match s.provision.as_str() {
                    "active" | "deploy failed" | "wait call-back" => "deleted",
                    "clean failed" | "inspect failed" | "adopt failed" => "manage",
                    _ => "abort",
                };
                let _ = ep
                    .call(
                        Method::PUT,
                        &format!("{path}/states/provision"),
                        Some(&json!({"target": verb})),
                    )
                    .await;
            }
        }
        if Instant::now() > deadline {
            let left: Vec<&String> = states.keys().collect();
            bail!(
                "cleanup: {} nodes tagged {tag} (resource class) are still there after 300 s: {left:?}",
                left.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `ferric bench api --target URL`.
pub async fn run(args: &TargetArgs, opts: Options) -> anyhow::Result<()> {
    let url = args.target.as_deref().unwrap_or_default();
    let auth = args.auth().await?;
    let ep = Arc::new(Endpoint::connect(url, auth, opts.clients).await?);
    println!("machine: {}", crate::bench::machine());
    let result = run_suite(ep, &opts).await?;
    for (name, why) in &result.skipped {
        println!("{name:<16} skipped: {why}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("result: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let w = Workload::new(
            "x",
            4,
            (1..=100).map(f64::from).rev().collect(),
            Duration::from_secs(2),
        );
        assert_eq!(w.requests, 100);
        assert_eq!(w.p50_ms, 51.0);
        assert_eq!(w.p99_ms, 100.0);
        assert_eq!(w.max_ms, 100.0);
        assert!((w.rate - 50.0).abs() < 1e-9);
    }

    #[test]
    fn goals_need_the_state_and_no_target() {
        let mut s = States {
            provision: "manageable".into(),
            target_provision: Some("available".into()),
            power: Some("power on".into()),
            target_power: None,
        };
        assert!(!Goal::Provision("manageable").reached(&s));
        s.target_provision = None;
        assert!(Goal::Provision("manageable").reached(&s));
        assert!(Goal::Power("power on").reached(&s));
        assert!(!Goal::Power("power off").reached(&s));
    }

    #[test]
    fn ironic_faults_are_read() {
        let body = br#"{"error_message": "{\"faultstring\": \"Node x could not be found.\", \"debuginfo\": null}"}"#;
        assert_eq!(fault(body), "Node x could not be found.");
        assert_eq!(fault(b"plain"), "plain");
    }
}
