//! Ferric's own endpoints, where Ironic clients never look: the node change stream
//! (`/v1/ferric/events`, server-sent events with resume by `Last-Event-ID`, which is the etcd
//! revision; it carries spec, status, reservation, heartbeat and conductor changes and every
//! power event of the outbox as `record: "power_event"` with the node's `seq`), conductors with their node counts, the OpenAPI document, `/healthz` and
//! `/metrics`.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::node_json::iso8601;
use crate::request::{self, Params};
use crate::AppState;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferric_cluster::{PrefixWatch, WatchEvent, WatchLost};
use ferric_model::HeartbeatRecord;
use ferric_model::{
    decode, EventRecord, NodeId, NodeSpec, NodeStatus, ProvisionState, ReservationRecord,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

/// The OpenAPI 3.0 document of the whole API (hand-written, checked by tests).
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub async fn healthz(State(state): State<AppState>) -> Response {
    let problem = state.informer.problem();
    let revision = state.informer.revision();
    let conductors = state.informer.read().conductors.len();
    match problem {
        None => request::json(
            StatusCode::OK,
            &json!({"status": "ok", "revision": revision, "conductors": conductors}),
        ),
        Some(p) => request::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "problem": p, "revision": revision}),
        ),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let (by_state, maintenance, conductors, nodes, unowned) = {
        let cache = state.informer.read();
        let unowned = cache
            .specs
            .keys()
            .filter(|id| cache.holder(id).is_none())
            .count();
        let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
        for s in ProvisionState::ALL {
            by_state.insert(s.as_str(), 0);
        }
        let mut maintenance = 0u64;
        for (id, spec) in &cache.specs {
            let ps = cache
                .statuses
                .get(id)
                .map_or(ProvisionState::Enroll, |s| s.status.provision_state);
            *by_state.entry(ps.as_str()).or_insert(0) += 1;
            if spec.spec.maintenance {
                maintenance += 1;
            }
        }
        (
            by_state,
            maintenance,
            cache.conductors.len(),
            cache.specs.len(),
            unowned,
        )
    };
    let mut gauges: Vec<crate::metrics::Gauge<'_>> = Vec::new();
    for (s, n) in &by_state {
        gauges.push((
            "ferric_nodes",
            "Nodes by provision state (the gateway's copy).",
            vec![("provision_state", s.to_string())],
            *n as f64,
        ));
    }
    gauges.push((
        "ferric_nodes_total",
        "Enrolled nodes.",
        vec![],
        nodes as f64,
    ));
    gauges.push((
        "ferric_nodes_unowned",
        "Nodes no conductor holds a reservation for (none live, or a failover in progress).",
        vec![],
        unowned as f64,
    ));
    gauges.push((
        "ferric_nodes_maintenance",
        "Nodes in maintenance.",
        vec![],
        maintenance as f64,
    ));
    let power_failures = {
        let cache = state.informer.read();
        cache
            .statuses
            .values()
            .filter(|s| s.status.fault.as_deref() == Some(ferric_model::faults::POWER_FAILURE))
            .count()
    };
    gauges.push((
        "ferric_nodes_power_failure",
        "Nodes with the fault \"power failure\" (their BMC stopped answering, or a power operation failed).",
        vec![],
        power_failures as f64,
    ));
    let conductors_now: Vec<ferric_model::ConductorRecord> =
        state.informer.read().conductors.values().cloned().collect();
    // Grouped by metric (the exposition format wants one block per name).
    type Field = fn(&ferric_model::SyncReport) -> f64;
    let per_conductor: [(&str, &str, Field); 5] = [
        (
            "ferric_sync_reads_total",
            "Power state reads by power sync, as the conductor last reported.",
            |s| s.reads as f64,
        ),
        (
            "ferric_sync_failed_reads_total",
            "Power state reads by power sync that failed.",
            |s| s.failed_reads as f64,
        ),
        (
            "ferric_sync_sweeps_total",
            "Power sync sweeps finished.",
            |s| s.sweeps as f64,
        ),
        (
            "ferric_sync_last_sweep_seconds",
            "Duration of the conductor's last finished power sync sweep.",
            |s| s.last_sweep_ms as f64 / 1000.0,
        ),
        (
            "ferric_sync_last_sweep_nodes",
            "Nodes the conductor's last finished power sync sweep asked.",
            |s| s.last_sweep_nodes as f64,
        ),
    ];
    for (name, help, field) in per_conductor {
        for c in &conductors_now {
            gauges.push((
                name,
                help,
                vec![("conductor", c.name.clone())],
                field(&c.sync),
            ));
        }
    }
    gauges.push((
        "ferric_conductors_alive",
        "Live conductors (membership records on a lease).",
        vec![],
        conductors as f64,
    ));
    gauges.push((
        "ferric_gateway_cache_revision",
        "The etcd revision of the gateway's copy.",
        vec![],
        state.informer.revision() as f64,
    ));
    gauges.push((
        "ferric_gateway_cache_up",
        "1 while the gateway's copy follows etcd.",
        vec![],
        if state.informer.problem().is_none() {
            1.0
        } else {
            0.0
        },
    ));
    let mut resp = state.metrics.render(&gauges).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

fn conductor_json(c: &ferric_model::ConductorRecord, nodes: usize) -> Value {
    json!({
        "name": c.name,
        "alive": true,
        "conductor_group": c.conductor_group,
        "drivers": c.drivers,
        "nodes": nodes,
        "running": c.running,
        "version": c.version,
        "started_at": iso8601(c.started_at_ms),
    })
}

pub async fn conductors(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.read_barrier().await?;
    let list: Vec<Value> = {
        let cache = state.informer.read();
        let counts = cache.holder_counts();
        cache
            .conductors
            .values()
            .map(|c| conductor_json(c, counts.get(c.name.as_str()).copied().unwrap_or(0)))
            .collect()
    };
    Ok(request::json(
        StatusCode::OK,
        &json!({ "conductors": list }),
    ))
}

pub async fn conductor(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.read_barrier().await?;
    let doc = {
        let cache = state.informer.read();
        let counts = cache.holder_counts();
        cache
            .conductors
            .get(&name)
            .map(|c| conductor_json(c, counts.get(c.name.as_str()).copied().unwrap_or(0)))
    };
    doc.map(|d| request::json(StatusCode::OK, &d))
        .ok_or_else(|| ApiError::NotFound(format!("Conductor {name} could not be found.")))
}

/// One change as the stream shows it; None for keys the stream does not report.
pub(crate) fn describe(prefix: &str, ev: &WatchEvent) -> Option<(i64, Option<NodeId>, Value)> {
    let (key, value, rev) = match ev {
        WatchEvent::Put {
            key,
            value,
            mod_rev,
            ..
        } => (key, Some(value), *mod_rev),
        WatchEvent::Delete { key, mod_rev } => (key, None, *mod_rev),
    };
    let key = std::str::from_utf8(key).ok()?;
    let (kind, leaf) = key.strip_prefix(prefix)?.split_once('/')?;
    if kind == "conductors" {
        let mut doc = json!({"revision": rev, "record": "conductor", "conductor": leaf, "deleted": value.is_none()});
        if let Some(c) = value.and_then(|v| decode::<ferric_model::ConductorRecord>(v).ok()) {
            doc["drivers"] = json!(c.drivers);
            doc["conductor_group"] = json!(c.conductor_group);
        }
        return Some((rev, None, doc));
    }
    if kind == "events" {
        // A power event of the outbox: written once, never changed, so the stream shows each
        // exactly once. Its deletion (compaction after delivery) is housekeeping, not shown.
        let value = value?;
        let (node, seq) = leaf.split_once('/')?;
        let id: NodeId = node.parse().ok()?;
        let mut doc = json!({
            "revision": rev,
            "node": id.to_string(),
            "record": "power_event",
            "seq": seq.parse::<u64>().ok()?,
        });
        match decode::<EventRecord>(value) {
            Ok(ev) => {
                doc["instance_uuid"] = json!(ev.instance_uuid.map(|u| u.to_string()));
                doc["power_state"] = json!(ev.power_state.map(|p| p.as_str()));
                doc["previous_power_state"] = json!(ev.previous_power_state.map(|p| p.as_str()));
                doc["at"] = json!(iso8601(ev.at_ms));
                doc["conductor"] = json!(ev.conductor);
            }
            Err(e) => doc["error"] = json!(format!("the event record cannot be read: {e}")),
        }
        return Some((rev, Some(id), doc));
    }
    let id: NodeId = leaf.parse().ok()?;
    let record = match kind {
        "nodes" => "spec",
        "status" => "status",
        "reservations" => "reservation",
        "heartbeats" => "heartbeat",
        _ => return None,
    };
    let mut doc = json!({
        "revision": rev,
        "node": id.to_string(),
        "record": record,
        "deleted": value.is_none(),
    });
    if let Some(v) = value {
        match record {
            "spec" => {
                let decoded = decode::<NodeSpec>(v);
                if let Err(e) = &decoded {
                    doc["error"] = json!(format!("the spec record cannot be read: {e}"));
                }
                if let Ok(s) = decoded {
                    doc["name"] = json!(s.name.as_ref().map(|n| n.as_str()));
                    doc["driver"] = json!(s.driver);
                    doc["maintenance"] = json!(s.maintenance);
                    doc["maintenance_reason"] = json!(s.maintenance_reason);
                    doc["conductor_group"] = json!(s.conductor_group);
                    doc["instance_uuid"] = json!(s.instance_uuid.map(|u| u.to_string()));
                    doc["power_request"] = json!(s.power_request.as_ref().map(|r| json!({"seq": r.seq, "target": r.target.as_str(), "requested_by": r.requested_by})));
                    doc["provision_request"] = json!(s.provision_request.as_ref().map(|r| json!({"seq": r.seq, "target": r.verb.as_str(), "requested_by": r.requested_by})));
                }
            }
            "status" => {
                let decoded = decode::<NodeStatus>(v);
                if let Err(e) = &decoded {
                    doc["error"] = json!(format!("the status record cannot be read: {e}"));
                }
                if let Ok(s) = decoded {
                    doc["power_state"] = json!(s.power_state.map(|p| p.as_str()));
                    doc["target_power_state"] =
                        json!(s.target_power_state.map(|p| p.final_state().as_str()));
                    doc["provision_state"] = json!(s.provision_state.as_str());
                    doc["target_provision_state"] =
                        json!(s.target_provision_state.map(|p| p.as_str()));
                    doc["last_error"] = json!(s.last_error);
                    doc["fault"] = json!(s.fault);
                    doc["conductor"] = json!(s.owner);
                }
            }
            "reservation" => {
                if let Ok(r) = decode::<ReservationRecord>(v) {
                    doc["conductor"] = json!(r.conductor);
                }
            }
            _ => {
                if let Ok(h) = decode::<HeartbeatRecord>(v) {
                    doc["agent_version"] = json!(h.agent_version);
                    doc["agent_status"] = json!(h.agent_status);
                }
            }
        }
    }
    Some((rev, Some(id), doc))
}

/// The nodes a project-scoped caller's stream shows: those its project owns or leases, as
/// the gateway's copy of the cluster has them once it has caught up with the change (so a node
/// given to the project shows its changes from that spec change on). Conductor changes are
/// the system's and not shown; a node's deletion is not either (the node is no longer there to
/// be the project's).
#[derive(Clone)]
struct ProjectScope {
    project: String,
    informer: Arc<crate::informer::Informer>,
}

impl ProjectScope {
    /// Which of `nodes` the project may see, read once the copy has reached `rev`; None when
    /// it has not in time (the stream ends and the client resumes from its last id).
    async fn visible(
        &self,
        rev: i64,
        nodes: impl Iterator<Item = Option<NodeId>>,
    ) -> Option<HashSet<NodeId>> {
        if !self.informer.wait_for(rev, crate::informer::CATCH_UP).await {
            return None;
        }
        let cache = self.informer.read();
        Some(
            nodes
                .flatten()
                .filter(|id| {
                    cache
                        .specs
                        .get(id)
                        .is_some_and(|s| crate::policy::relation(&self.project, &s.spec).is_some())
                })
                .collect(),
        )
    }
}

struct Feed {
    watch: PrefixWatch,
    closing: tokio::sync::watch::Receiver<bool>,
    prefix: String,
    node: Option<NodeId>,
    project: Option<ProjectScope>,
    queue: VecDeque<Event>,
    done: bool,
}

/// How often, at most, a busy stream writes (what it has then goes in one write).
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// A comment on a quiet stream this often keeps proxies from closing it.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// A stream fed by the gateway's event hub, written as bytes: the ring's backlog after the
/// start, then the live changes; a stream of every node writes each batch's text as the hub
/// rendered it (no work per stream but the write). Ends (the client resumes with its last id)
/// when it falls behind; a comment every 15 s keeps idle connections open.
fn shared(
    sub: crate::event_hub::Subscription,
    node: Option<NodeId>,
    project: Option<ProjectScope>,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Response {
    use crate::event_hub::{frame, Batch, Item, Rendered};
    use axum::body::{Body, Bytes};
    use tokio::sync::broadcast::error::RecvError;
    struct Shared {
        backlog: VecDeque<Arc<Batch>>,
        live: tokio::sync::broadcast::Receiver<Item>,
        after: i64,
        node: Option<NodeId>,
        project: Option<ProjectScope>,
        closing: tokio::sync::watch::Receiver<bool>,
        first: Option<Bytes>,
        done: bool,
        last_write: Option<tokio::time::Instant>,
    }
    impl Shared {
        /// The text of the batch's changes this stream sends (None: none); `visible`: the
        /// nodes a project-scoped stream may show.
        fn render(&mut self, batch: &Batch, visible: Option<&HashSet<NodeId>>) -> Option<Bytes> {
            let from = self.after;
            if let Some(last) = batch.last_rev() {
                self.after = self.after.max(last);
            }
            let every = self.node.is_none() && visible.is_none();
            if every && batch.events.first().is_some_and(|r| r.rev > from) {
                return Some(batch.frames.clone());
            }
            let shown = |r: &Rendered| {
                (self.node.is_none() || r.node == self.node)
                    && visible.is_none_or(|v| r.node.is_some_and(|n| v.contains(&n)))
            };
            let seen: Vec<&Rendered> = batch
                .events
                .iter()
                .filter(|r| r.rev > from && shown(r))
                .collect();
            let mut text = String::new();
            for (i, r) in seen.iter().enumerate() {
                // The revision's id goes on its last change this stream shows.
                let last = if every {
                    r.last_of_rev
                } else {
                    seen.get(i + 1).is_none_or(|next| next.rev != r.rev)
                };
                frame(&mut text, r, last);
            }
            (!text.is_empty()).then(|| Bytes::from(text))
        }

        /// Renders the batch for this stream; false when a project-scoped stream cannot tell
        /// what its project may see (the stream ends; the client resumes).
        async fn send(&mut self, batch: &Batch) -> Result<Option<Bytes>, ()> {
            let visible = match (&self.project, batch.last_rev()) {
                (Some(scope), Some(rev)) => {
                    let nodes = batch.events.iter().map(|r| r.node);
                    Some(scope.visible(rev, nodes).await.ok_or(())?)
                }
                _ => None,
            };
            Ok(self.render(batch, visible.as_ref()))
        }
    }
    let ready = format!(
        "event: ready\ndata: {}\nid: {}\n\n",
        json!({"record": "ready", "revision": sub.after}),
        sub.after
    );
    let start = Shared {
        backlog: sub.backlog.into(),
        live: sub.live,
        after: sub.after,
        node,
        project,
        closing,
        first: Some(Bytes::from(ready)),
        done: false,
        last_write: None,
    };
    let stream = futures::stream::unfold(start, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, Infallible>(first), s));
        }
        // Text to send, held until WRITE_EVERY after the last write: a stream of a busy fleet
        // writes a few times a second, not once per etcd revision (what it costs the gateway
        // is mostly the writes); a quiet one writes a change at once.
        let mut pending: Vec<Bytes> = Vec::new();
        loop {
            let due = s.last_write.map(|at| at + WRITE_EVERY);
            let now = tokio::time::Instant::now();
            if !pending.is_empty() && (s.done || due.is_none_or(|d| d <= now)) {
                s.last_write = Some(now);
                let text = match pending.len() {
                    1 => pending.pop().unwrap_or_default(),
                    _ => Bytes::from(pending.concat()),
                };
                return Some((Ok(text), s));
            }
            if s.done {
                return None;
            }
            if let Some(batch) = s.backlog.pop_front() {
                match s.send(&batch).await {
                    Ok(Some(text)) => pending.push(text),
                    Ok(None) => {}
                    Err(()) => s.done = true,
                }
                continue;
            }
            let wake = match due {
                Some(d) if !pending.is_empty() => d,
                _ => now + KEEP_ALIVE,
            };
            let item = tokio::select! {
                i = s.live.recv() => Some(i),
                _ = s.closing.wait_for(|c| *c) => return None,
                _ = tokio::time::sleep_until(wake) => None,
            };
            let Some(item) = item else {
                if pending.is_empty() {
                    s.last_write = Some(tokio::time::Instant::now());
                    return Some((Ok(Bytes::from_static(b":\n\n")), s));
                }
                continue;
            };
            match item {
                Ok(Item::Changes(batch)) => match s.send(&batch).await {
                    Ok(Some(text)) => pending.push(text),
                    Ok(None) => {}
                    Err(()) => s.done = true,
                },
                Ok(Item::Reset(why)) => {
                    s.done = true;
                    let text = format!("event: reset\ndata: {}\n\n", json!({"reason": &*why}));
                    pending.push(Bytes::from(text));
                }
                // Behind the broadcast: end; the client resumes from its last id (the ring or
                // a watch of its own).
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => s.done = true,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Server-sent events of node changes. `id` is the etcd revision; it is sent on the last event
/// of each revision only, so a client that reconnects with `Last-Event-ID` (or, from a new
/// EventSource, `?last_event_id=`) gets every change after it, never a partial revision. The
/// stream opens with a `ready` event whose id is the revision it starts after. A resume point older than etcd's compaction ends the
/// stream with a `reset` event: the client then reads the nodes again and follows from now.
///
/// A project-scoped caller's stream shows the changes of its project's nodes only
/// ([`ProjectScope`]); `?node=` of a node that is not its project's is 404, as in the node API.
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["node", "last_event_id"])?;
    let project = caller.project.clone().map(|project| ProjectScope {
        project,
        informer: state.informer.clone(),
    });
    let node = match params.get("node") {
        None => None,
        Some(ident) => {
            let v = crate::version::ApiVersion::latest();
            let found = request::lookup(&state, ident, v).await?;
            if let Some(p) = &caller.project {
                if crate::policy::relation(p, &found.spec.spec).is_none() {
                    return Err(ApiError::NotFound(format!(
                        "Node {ident} could not be found."
                    )));
                }
            }
            Some(found.id())
        }
    };
    // The header a reconnecting EventSource sends; or the same as a parameter, for a client
    // that had to make a new EventSource (which cannot set headers) and still resumes.
    let resume = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .or_else(|| params.get("last_event_id").map(str::to_string));
    let after = match resume {
        Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "Last-Event-ID must be an etcd revision (an integer), not {text:?}"
            ))
        })?),
        None => None,
    }
    .map(|rev| rev.max(0));
    // Through this gateway's one shared watch when its ring reaches back far enough (or the
    // stream starts now); an older resume point gets a watch of its own.
    if let Some(sub) = state.event_hub.subscribe(after, state.informer.revision()) {
        return Ok(shared(sub, node, project, state.closing()));
    }
    let from = match after {
        Some(rev) => rev + 1,
        None => state.cluster.revision().await? + 1,
    };
    let prefix = state.cluster.keys().prefix().to_string();
    let watch = state.cluster.watch_prefix(&prefix, from).await?;
    // First, where the stream starts: a client has a resume point before any change comes
    // (a quiet fleet may send nothing for hours, and a gateway restart in between must not
    // cost the changes made while it was down).
    let ready = Event::default()
        .event("ready")
        .id((from - 1).to_string())
        .data(json!({"record": "ready", "revision": from - 1}).to_string());
    let feed = Feed {
        watch,
        closing: state.closing(),
        prefix,
        node,
        project,
        queue: VecDeque::from([ready]),
        done: false,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(ev) = feed.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), feed));
            }
            if feed.done {
                return None;
            }
            let next = tokio::select! {
                n = feed.watch.next() => n,
                _ = feed.closing.wait_for(|c| *c) => return None,
            };
            match next {
                Ok(events) => {
                    let described: Vec<(i64, Option<NodeId>, Value)> = events
                        .iter()
                        .filter_map(|e| describe(&feed.prefix, e))
                        .filter(|(_, id, _)| feed.node.is_none() || *id == feed.node)
                        .collect();
                    let visible = match (&feed.project, described.last()) {
                        (Some(scope), Some((rev, _, _))) => {
                            let nodes = described.iter().map(|(_, id, _)| *id);
                            match scope.visible(*rev, nodes).await {
                                Some(v) => Some(v),
                                None => return None,
                            }
                        }
                        _ => None,
                    };
                    let described: Vec<(i64, Value)> = described
                        .into_iter()
                        .filter(|(_, id, _)| {
                            visible
                                .as_ref()
                                .is_none_or(|v| id.is_some_and(|n| v.contains(&n)))
                        })
                        .map(|(rev, _, doc)| (rev, doc))
                        .collect();
                    for (i, (rev, doc)) in described.iter().enumerate() {
                        let mut ev = Event::default().event("node").data(doc.to_string());
                        let last_of_rev = described.get(i + 1).is_none_or(|(next, _)| next != rev);
                        if last_of_rev {
                            ev = ev.id(rev.to_string());
                        }
                        feed.queue.push_back(ev);
                    }
                }
                Err(WatchLost::Compacted(rev)) => {
                    feed.queue.push_back(Event::default().event("reset").data(
                        json!({"reason": "compacted", "compacted_revision": rev}).to_string(),
                    ));
                    feed.done = true;
                }
                Err(WatchLost::Ended(why)) => {
                    feed.queue.push_back(
                        Event::default()
                            .event("reset")
                            .data(json!({"reason": "watch ended", "detail": why}).to_string()),
                    );
                    feed.done = true;
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router, in OpenAPI's path syntax.
    const ROUTES: &[(&str, &[&str])] = &[
        ("/", &["get"]),
        ("/v1", &["get"]),
        ("/v1/nodes", &["get", "post"]),
        ("/v1/nodes/detail", &["get"]),
        ("/v1/nodes/validate", &["get"]),
        ("/v1/nodes/{node}", &["get", "patch", "put", "delete"]),
        ("/v1/nodes/{node}/states", &["get"]),
        ("/v1/nodes/{node}/states/power", &["put"]),
        ("/v1/nodes/{node}/states/provision", &["put"]),
        ("/v1/nodes/{node}/states/console", &["get", "put"]),
        ("/v1/nodes/{node}/console/ws", &["get"]),
        ("/v1/nodes/{node}/maintenance", &["put", "delete"]),
        ("/v1/nodes/{node}/management/boot_device", &["get", "put"]),
        (
            "/v1/nodes/{node}/management/boot_device/supported",
            &["get"],
        ),
        ("/v1/nodes/{node}/validate", &["get"]),
        ("/v1/nodes/{node}/history", &["get"]),
        ("/v1/nodes/{node}/traits", &["get", "put", "delete"]),
        ("/v1/nodes/{node}/traits/{trait}", &["put", "delete"]),
        ("/v1/drivers", &["get"]),
        ("/v1/drivers/{name}", &["get"]),
        ("/v1/drivers/{name}/properties", &["get"]),
        ("/v1/drivers/{name}/raid/logical_disk_properties", &["get"]),
        ("/v1/nodes/{node}/history/{event}", &["get"]),
        ("/v1/nodes/{node}/bios", &["get"]),
        ("/v1/nodes/{node}/bios/{name}", &["get"]),
        ("/v1/nodes/{node}/ports", &["get"]),
        ("/v1/nodes/{node}/portgroups", &["get"]),
        ("/v1/nodes/{node}/volume", &["get"]),
        ("/v1/nodes/{node}/volume/connectors", &["get"]),
        ("/v1/nodes/{node}/volume/targets", &["get"]),
        ("/v1/nodes/{node}/vifs", &["get", "post"]),
        ("/v1/nodes/{node}/vifs/{vif}", &["delete"]),
        ("/v1/ports", &["get", "post"]),
        ("/v1/ports/detail", &["get"]),
        ("/v1/ports/{id}", &["get", "patch", "delete"]),
        ("/v1/portgroups", &["get", "post"]),
        ("/v1/portgroups/detail", &["get"]),
        ("/v1/portgroups/{id}", &["get", "patch", "delete"]),
        ("/v1/portgroups/{id}/ports", &["get"]),
        ("/v1/volume", &["get"]),
        ("/v1/volume/connectors", &["get", "post"]),
        ("/v1/volume/connectors/detail", &["get"]),
        ("/v1/volume/connectors/{id}", &["get", "patch", "delete"]),
        ("/v1/volume/targets", &["get", "post"]),
        ("/v1/volume/targets/detail", &["get"]),
        ("/v1/volume/targets/{id}", &["get", "patch", "delete"]),
        ("/v1/conductors", &["get"]),
        ("/v1/conductors/{name}", &["get"]),
        ("/v1/heartbeat/{node}", &["post"]),
        ("/v1/continue_inspection", &["post"]),
        ("/v1/lookup", &["get"]),
        ("/v1/nodes/{node}/inventory", &["get"]),
        ("/v1/ferric/events", &["get"]),
        ("/v1/ferric/openapi.json", &["get"]),
        ("/v1/ferric/conductors", &["get"]),
        ("/v1/ferric/conductors/{name}", &["get"]),
        ("/v1/ferric/summary", &["get"]),
        ("/v1/ferric/nodes", &["get"]),
        ("/v1/ferric/nodes/{node}/actions", &["get"]),
        ("/v1/ferric/deliveries", &["get"]),
        ("/dashboard/api/config", &["get"]),
        ("/dashboard/api/session", &["get", "post", "delete"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
    ];

    #[test]
    fn openapi_documents_every_route_and_resolves_every_reference() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(
            paths.len(),
            ROUTES.len(),
            "documented paths: {:?}",
            paths.keys()
        );
        for (path, methods) in ROUTES {
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not documented"));
            for m in *methods {
                let op = &item[*m];
                assert!(op.is_object(), "{m} {path} is not documented");
                assert!(op["responses"].is_object(), "{m} {path} has no responses");
            }
        }
        // Every $ref points at something that exists.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        if k == "$ref" {
                            out.push(x.as_str().unwrap_or("").to_string());
                        } else {
                            refs(x, out);
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
        // The node schema lists every field the gateway can return.
        let props = doc["components"]["schemas"]["Node"]["properties"]
            .as_object()
            .unwrap();
        for (_, name, since) in crate::node_json::FIELDS {
            if *since <= crate::version::MAX_MINOR {
                assert!(props.contains_key(*name), "Node schema lacks {name}");
            }
        }
    }
}
