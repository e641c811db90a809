//! The continuous workload of a chaos run, through the Ironic API of both gateways (as clients
//! behind a load balancer would: a request that cannot connect to one gateway goes to the
//! other): power toggles and soft power offs, provision verbs, console viewers typing and
//! reading their echo, readers of the event stream resuming by `Last-Event-ID`, and a compute
//! stand-in (the conductors' webhook) recording every delivery. It records what the API
//! answered and what each reader saw; the invariants are checked from these records and etcd's,
//! never from the conductors' view of themselves.

use super::schedule::{below, Rng};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The microversion the workload speaks (soft power off needs 1.27).
const API_VERSION: &str = "1.78";
/// How long one request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn now_ms() -> u64 {
    ferric_model::now_ms()
}

/// One request to change a node, and what became of it at the API.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub node: String,
    /// `power` or `provision`.
    pub kind: &'static str,
    /// The target sent (`power on`, `soft power off`, `manage`, ...).
    pub target: String,
    pub sent_ms: u64,
    /// The HTTP status, None when no answer came (the request may or may not have landed).
    pub status: Option<u16>,
    /// The gateway that answered (or was last tried).
    pub gateway: usize,
    /// For an accepted request: when the node was seen to have finished it (no target left),
    /// and what it showed then; None if it was not seen to finish within the workload's wait.
    pub finished_ms: Option<u64>,
    pub outcome: Option<String>,
}

impl Request {
    pub fn accepted(&self) -> bool {
        self.status == Some(202)
    }
}

/// A power event as a reader of `/v1/ferric/events` or the webhook saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenEvent {
    pub node: String,
    pub seq: u64,
    pub at_ms: u64,
    /// Which reader (stream reader index, or `usize::MAX` for the webhook).
    pub reader: usize,
}

/// One echo a console viewer got for a marker it typed.
#[derive(Debug, Clone, Serialize)]
pub struct Echo {
    pub node: String,
    pub marker: u64,
    pub at_ms: u64,
}

/// Everything the workload saw.
#[derive(Debug, Default, Serialize)]
pub struct Records {
    pub requests: Vec<Request>,
    pub stream: Vec<SeenEvent>,
    pub webhook: Vec<SeenEvent>,
    pub echoes: Vec<Echo>,
    /// Each stream reader's reconnects (resumes with `Last-Event-ID`).
    pub stream_resumes: usize,
    /// Console viewer reconnects.
    pub viewer_reconnects: usize,
    /// `reconnecting` control messages the viewers got from a gateway.
    pub viewer_told_reconnecting: usize,
}

pub type Shared = Arc<Mutex<Records>>;

/// The two gateways, used as a client behind a load balancer uses them.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub gateways: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

/// What a request got.
pub enum Answer {
    Got {
        status: u16,
        body: Value,
        gateway: usize,
    },
    /// Sent (or perhaps sent) and not answered.
    Lost { gateway: usize, error: String },
}

impl Api {
    pub fn new(gateways: Vec<String>) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(1))
                .build()
                .expect("a reqwest client"),
            gateways: Arc::new(gateways),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sends to the preferred gateway; a request that could not connect goes to the other one
    /// (it cannot have landed). One that connected and got no answer is `Lost`.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let n = self.gateways.len();
        let first = self.next.load(Ordering::Relaxed) % n;
        let mut last = Answer::Lost {
            gateway: first,
            error: "no gateway".into(),
        };
        for k in 0..n {
            let g = (first + k) % n;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.gateways[g]))
                .header("X-OpenStack-Ironic-API-Version", API_VERSION);
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                    // A gateway that cannot reach etcd answers 503: the other one may.
                    if status == 503 && k + 1 < n {
                        self.next.store(g + 1, Ordering::Relaxed);
                        last = Answer::Got {
                            status,
                            body,
                            gateway: g,
                        };
                        continue;
                    }
                    return Answer::Got {
                        status,
                        body,
                        gateway: g,
                    };
                }
                Err(e) if e.is_connect() => {
                    self.next.store(g + 1, Ordering::Relaxed);
                    last = Answer::Lost {
                        gateway: g,
                        error: format!("connect: {e}"),
                    };
                    continue;
                }
                Err(e) => {
                    self.next.store(g + 1, Ordering::Relaxed);
                    return Answer::Lost {
                        gateway: g,
                        error: e.to_string(),
                    };
                }
            }
        }
        last
    }

    /// The node's document, or None while no gateway answers it.
    pub async fn node(&self, id: &str) -> Option<Value> {
        match self
            .send(reqwest::Method::GET, &format!("/v1/nodes/{id}"), None)
            .await
        {
            Answer::Got {
                status: 200, body, ..
            } => Some(body),
            _ => None,
        }
    }
}

/// What the workload does, and to which nodes.
pub struct Plan {
    pub power: Vec<String>,
    pub provision: Vec<String>,
    pub console: Vec<String>,
    /// Stream readers.
    pub readers: usize,
    /// How long a worker waits for an accepted request to finish before it moves on (the
    /// invariant checks at the end look again).
    pub finish_wait: Duration,
}

/// The running workload: the workers that change nodes, and the watchers (console viewers,
/// stream readers) that are stopped after the cluster has quiesced, so that they see the last
/// changes too.
pub struct Running {
    pub workers: Vec<tokio::task::JoinHandle<()>>,
    pub watchers: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts every worker (until `stop` turns true) and watcher (until `stop_watching` does).
pub fn start(
    api: Api,
    plan: Plan,
    seed: u64,
    records: Shared,
    stop: watch::Receiver<bool>,
    stop_watching: watch::Receiver<bool>,
) -> Running {
    let mut tasks = Vec::new();
    for (i, node) in plan.power.iter().enumerate() {
        let w = Worker::new(
            &api,
            node,
            seed ^ (0x100 + i as u64),
            &records,
            &stop,
            plan.finish_wait,
        );
        tasks.push(tokio::spawn(w.power()));
    }
    for (i, node) in plan.provision.iter().enumerate() {
        let w = Worker::new(
            &api,
            node,
            seed ^ (0x10000 + i as u64),
            &records,
            &stop,
            plan.finish_wait,
        );
        tasks.push(tokio::spawn(w.provision()));
    }
    let workers = std::mem::take(&mut tasks);
    let stop = stop_watching;
    for node in &plan.console {
        tasks.push(tokio::spawn(viewer(
            api.clone(),
            node.clone(),
            records.clone(),
            stop.clone(),
        )));
    }
    for r in 0..plan.readers {
        tasks.push(tokio::spawn(stream_reader(
            api.clone(),
            r,
            records.clone(),
            stop.clone(),
        )));
    }
    Running {
        workers,
        watchers: tasks,
    }
}

struct Worker {
    api: Api,
    node: String,
    rng: Rng,
    records: Shared,
    stop: watch::Receiver<bool>,
    finish_wait: Duration,
}

impl Worker {
    fn new(
        api: &Api,
        node: &str,
        seed: u64,
        records: &Shared,
        stop: &watch::Receiver<bool>,
        finish_wait: Duration,
    ) -> Worker {
        Worker {
            api: api.clone(),
            node: node.to_string(),
            rng: Rng::new(seed),
            records: records.clone(),
            stop: stop.clone(),
            finish_wait,
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `ms`, or less if the run stops.
    async fn pause(&mut self, ms: u64) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = until_stopped(self.stop.clone()) => {}
        }
    }

    /// Power toggles: on, off, and a soft power off when on.
    async fn power(mut self) {
        while !self.stopped() {
            let Some(doc) = self.api.node(&self.node).await else {
                self.pause(300).await;
                continue;
            };
            let on = doc["power_state"] == "power on";
            let target = match (on, below(&mut self.rng, 3)) {
                (true, 0) => "soft power off",
                (true, _) => "power off",
                (false, _) => "power on",
            };
            let body = json!({ "target": target, "timeout": 10 });
            self.request("power", target, "states/power", body, |d| {
                d["target_power_state"].is_null()
            })
            .await;
            let ms = 200 + below(&mut self.rng, 1500);
            self.pause(ms).await;
        }
    }

    /// Provision verbs in a cycle: manage, provide, deploy, undeploy, and the recoveries from
    /// the failed states.
    async fn provision(mut self) {
        while !self.stopped() {
            let Some(doc) = self.api.node(&self.node).await else {
                self.pause(300).await;
                continue;
            };
            if !doc["target_provision_state"].is_null() {
                self.pause(300).await;
                continue;
            }
            let state = doc["provision_state"].as_str().unwrap_or("").to_string();
            let target = match state.as_str() {
                "enroll" | "clean failed" | "inspect failed" => "manage",
                "manageable" => "provide",
                "available" => "active",
                "active" | "deploy failed" => "deleted",
                _ => {
                    self.pause(300).await;
                    continue;
                }
            };
            let body = json!({ "target": target });
            self.request("provision", target, "states/provision", body, |d| {
                d["target_provision_state"].is_null()
                    && !d["provision_state"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("ing") || s.ends_with(" wait"))
            })
            .await;
            let ms = 200 + below(&mut self.rng, 1000);
            self.pause(ms).await;
        }
    }

    /// Sends one change, records the answer, and for an accepted one waits (bounded) until the
    /// node shows it finished.
    async fn request(
        &mut self,
        kind: &'static str,
        target: &str,
        path: &str,
        body: Value,
        finished: impl Fn(&Value) -> bool,
    ) {
        let sent_ms = now_ms();
        let answer = self
            .api
            .send(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{}/{path}", self.node),
                Some(&body),
            )
            .await;
        let (status, gateway, lost) = match &answer {
            Answer::Got {
                status, gateway, ..
            } => (Some(*status), *gateway, None),
            Answer::Lost { gateway, error } => (None, *gateway, Some(error.clone())),
        };
        let mut req = Request {
            node: self.node.clone(),
            kind,
            target: target.to_string(),
            sent_ms,
            status,
            gateway,
            finished_ms: None,
            outcome: lost.map(|e| format!("unanswered: {e}")),
        };
        if status == Some(202) || status.is_none() {
            let deadline = tokio::time::Instant::now() + self.finish_wait;
            while tokio::time::Instant::now() < deadline && !self.stopped() {
                self.pause(250).await;
                let Some(doc) = self.api.node(&self.node).await else {
                    continue;
                };
                if finished(&doc) {
                    req.finished_ms = Some(now_ms());
                    req.outcome = Some(format!(
                        "{} / {}{}",
                        doc["power_state"].as_str().unwrap_or("unknown"),
                        doc["provision_state"].as_str().unwrap_or("?"),
                        doc["last_error"]
                            .as_str()
                            .map(|e| format!(" / last_error: {e}"))
                            .unwrap_or_default()
                    ));
                    break;
                }
            }
        } else {
            // Refused (409 while busy, 503 while no gateway reaches etcd): wait a little.
            self.pause(300).await;
        }
        self.records.lock().unwrap().requests.push(req);
    }
}

/// A console viewer: opens the node's console websocket through a gateway, types a numbered
/// marker every second and records each echo; reconnects (to either gateway) when the
/// connection ends.
async fn viewer(api: Api, node: String, records: Shared, stop: watch::Receiver<bool>) {
    let mut marker = 0u64;
    let mut attempt = 0usize;
    while !*stop.borrow() {
        let g = attempt % api.gateways.len();
        attempt += 1;
        let url = format!(
            "{}/v1/nodes/{node}/console/ws",
            api.gateways[g].replacen("http://", "ws://", 1)
        );
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await;
        let mut ws = match conn {
            Ok(Ok((ws, _))) => ws,
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        if attempt > 1 {
            records.lock().unwrap().viewer_reconnects += 1;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seen = String::new();
        // A connection that carries no echo for a while is dead even if TCP does not know yet
        // (its gateway's link was cut): reconnect, through the other gateway.
        let mut last_echo = tokio::time::Instant::now();
        let stop_rx = stop.clone();
        loop {
            tokio::select! {
                _ = until_stopped(stop_rx.clone()) => return,
                _ = tick.tick() => {
                    if last_echo.elapsed() > Duration::from_secs(4) {
                        break;
                    }
                    marker += 1;
                    let line = format!("chaos-{marker}\r");
                    if ws.send(Message::Binary(line.into_bytes().into())).await.is_err() {
                        break;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        seen.push_str(&String::from_utf8_lossy(&b));
                        // "you typed: chaos-<n>" for each line that reached the machine.
                        while let Some(at) = seen.find("you typed: chaos-") {
                            let rest = &seen[at + "you typed: chaos-".len()..];
                            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                            if digits.len() == rest.len() {
                                break; // the number may go on in the next frame
                            }
                            if let Ok(n) = digits.parse::<u64>() {
                                last_echo = tokio::time::Instant::now();
                                records.lock().unwrap().echoes.push(Echo { node: node.clone(), marker: n, at_ms: now_ms() });
                            }
                            seen = rest[digits.len()..].to_string();
                        }
                        if seen.len() > 4096 {
                            let mut cut = seen.len() - 64;
                            while !seen.is_char_boundary(cut) {
                                cut += 1;
                            }
                            seen = seen[cut..].to_string();
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        if t.contains("\"reconnecting\"") {
                            records.lock().unwrap().viewer_told_reconnecting += 1;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A reader of `/v1/ferric/events`: records every power event with its per-node `seq`, and
/// resumes from the last `id:` it got (an etcd revision), on the other gateway if need be.
async fn stream_reader(api: Api, reader: usize, records: Shared, stop: watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("a reqwest client");
    let mut last_id: Option<String> = None;
    let mut attempt = reader;
    let mut first = true;
    while !*stop.borrow() {
        let g = attempt % api.gateways.len();
        attempt += 1;
        let mut req = http
            .get(format!("{}/v1/ferric/events", api.gateways[g]))
            .header("X-OpenStack-Ironic-API-Version", API_VERSION);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id.as_str());
        }
        let resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        if !first {
            records.lock().unwrap().stream_resumes += 1;
        }
        first = false;
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let stop_rx = stop.clone();
        // A stream that says nothing for longer than the gateway's keep-alive is dead (its
        // gateway was cut): resume elsewhere.
        loop {
            let chunk = tokio::select! {
                _ = until_stopped(stop_rx.clone()) => return,
                c = tokio::time::timeout(Duration::from_secs(20), body.next()) => c,
            };
            let bytes = match chunk {
                Ok(Some(Ok(b))) => b,
                _ => break,
            };
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf[..end].to_string();
                buf.drain(..end + 2);
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        last_id = Some(v.trim().to_string());
                    }
                }
                let Ok(doc) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if doc["record"] == "power_event" {
                    if let (Some(node), Some(seq)) = (doc["node"].as_str(), doc["seq"].as_u64()) {
                        records.lock().unwrap().stream.push(SeenEvent {
                            node: node.to_string(),
                            seq,
                            at_ms: now_ms(),
                            reader,
                        });
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The compute stand-in: the conductors' webhook, recording every event delivered (at least
/// once, in order per node, is what they promise).
pub async fn webhook(listen: std::net::SocketAddr, records: Shared) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/webhook", post(receive))
        .with_state(records);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/webhook"))
}

async fn receive(State(records): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    let at_ms = now_ms();
    let mut r = records.lock().unwrap();
    for ev in body["events"].as_array().into_iter().flatten() {
        if let (Some(node), Some(seq)) = (ev["node"].as_str(), ev["seq"].as_u64()) {
            r.webhook.push(SeenEvent {
                node: node.to_string(),
                seq,
                at_ms,
                reader: usize::MAX,
            });
        }
    }
    StatusCode::OK
}

/// Resolves when the run stops (the watch's guard is not held across an await, so the futures
/// that select on this stay `Send`).
async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
