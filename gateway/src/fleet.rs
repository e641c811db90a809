//! The fleet at a glance, for the dashboard and anyone else who wants it (Ferric extensions,
//! served from the gateway's copy like every read):
//!
//! - `GET /v1/ferric/summary`: counts by provision state, power state, maintenance and fault,
//!   nodes without a live holder, and the live conductors with their node counts. One pass
//!   over the copy, shared by every caller for [`SUMMARY_FOR`] (50 dashboards following a
//!   busy fleet cost one pass a second, not fifty).
//! - `GET /v1/ferric/nodes`: server-side search and paging: `q` (name substring, uuid prefix or
//!   a port's MAC), `provision_state`, `power_state`, `maintenance`, `fault` (a fault or `any`),
//!   `conductor`, `unowned` (no live conductor holds it), `limit` (≤ 1000) and `marker`; the answer has the matching total and the next
//!   marker. A browser never loads a 100,000-node fleet.
//! - `GET /v1/ferric/nodes/{node}/actions`: every action the dashboard offers, whether the API
//!   would take it now and if not why, from the same checks the requests make
//!   (`ferric_cluster::nodes::{power_refusal, provision_refusal}`).
//!
//! A project-scoped caller sees and counts only its project's nodes, as in the node list.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::informer::{CacheState, NodeRef};
use crate::node_json::{iso8601, provision_state, target_power_state, target_provision_state};
use crate::request::{self, Params};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use ferric_cluster::nodes::{power_refusal, provision_refusal};
use ferric_model::{PowerTarget, ProvisionState, Verb};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one computed summary is served to every caller (cluster-wide callers only).
pub const SUMMARY_FOR: Duration = Duration::from_secs(1);

/// The last cluster-wide summary and when it was computed.
#[derive(Default)]
pub struct SummaryCache(Mutex<Option<(Instant, i64, Value)>>);

fn in_scope(caller: &Caller, n: &NodeRef) -> bool {
    match &caller.project {
        None => true,
        Some(p) => crate::policy::relation(p, &n.spec.spec).is_some(),
    }
}

fn power_str(n: &NodeRef) -> &'static str {
    n.status().power_state.map_or("unknown", |p| p.as_str())
}

fn summarize(cache: &CacheState, caller: &Caller) -> Value {
    let mut provision: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut power: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in ["power on", "power off", "unknown"] {
        power.insert(p, 0);
    }
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (mut nodes, mut maintenance, mut unowned) = (0u64, 0u64, 0u64);
    let mut held: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    for id in cache.specs.keys() {
        let Some(n) = cache.node(id) else { continue };
        if !in_scope(caller, &n) {
            continue;
        }
        nodes += 1;
        *provision.entry(provision_state(&n).as_str()).or_default() += 1;
        *power.entry(power_str(&n)).or_default() += 1;
        if n.spec.spec.maintenance {
            maintenance += 1;
        }
        if let Some(f) = &n.status().fault {
            *faults.entry(f.clone()).or_default() += 1;
        }
        match cache.holder(id) {
            Some(h) if cache.conductors.contains_key(&*h) => {
                *held.entry(h).or_default() += 1;
            }
            _ => unowned += 1,
        }
    }
    let conductors: Vec<Value> = cache
        .conductors
        .values()
        .map(|c| {
            json!({
                "name": c.name,
                "alive": true,
                "nodes": held.get(c.name.as_str()).copied().unwrap_or(0),
                "running": c.running,
                "version": c.version,
                "started_at": iso8601(c.started_at_ms),
                "conductor_group": c.conductor_group,
                "drivers": c.drivers,
            })
        })
        .collect();
    json!({
        "revision": cache.revision,
        "nodes": nodes,
        "provision_state": provision,
        "power_state": power,
        "maintenance": maintenance,
        "faults": faults,
        "unowned": unowned,
        "conductors": conductors,
    })
}

pub async fn summary(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    state.read_barrier().await?;
    if caller.project.is_some() {
        let doc = summarize(&state.informer.read(), &caller);
        return Ok(request::json(StatusCode::OK, &doc));
    }
    let revision = state.informer.revision();
    if let Some((at, rev, doc)) = state.summaries.0.lock().unwrap().as_ref() {
        if *rev == revision || at.elapsed() < SUMMARY_FOR {
            return Ok(request::json(StatusCode::OK, doc));
        }
    }
    let doc = summarize(&state.informer.read(), &caller);
    *state.summaries.0.lock().unwrap() = Some((Instant::now(), revision, doc.clone()));
    Ok(request::json(StatusCode::OK, &doc))
}

/// One search of the node list.
struct Search {
    q: Option<String>,
    /// The node a MAC in `q` belongs to.
    mac_node: Option<ferric_model::NodeId>,
    provision_state: Option<ProvisionState>,
    power_state: Option<String>,
    maintenance: Option<bool>,
    /// A fault, or `any`.
    fault: Option<String>,
    conductor: Option<String>,
}

impl Search {
    fn parse(p: &Params, cache: &CacheState) -> Result<Search, ApiError> {
        let provision_state = match p.get("provision_state").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(ProvisionState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!("Provision state \"{s}\" is not valid"))
            })?),
        };
        let power_state = p.get("power_state").filter(|s| !s.is_empty());
        if let Some(ps) = power_state {
            if !matches!(ps, "power on" | "power off" | "unknown") {
                return Err(ApiError::BadRequest(format!(
                    "Power state \"{ps}\" is not valid (power on, power off or unknown)"
                )));
            }
        }
        let q = p
            .get("q")
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
        let mac_node = q
            .as_deref()
            .and_then(|q| cache.children.ports.by_mac(q).map(|port| port.record.node));
        Ok(Search {
            q,
            mac_node,
            provision_state,
            power_state: power_state.map(str::to_string),
            maintenance: p.bool("maintenance")?,
            fault: p.get("fault").filter(|s| !s.is_empty()).map(str::to_string),
            conductor: p
                .get("conductor")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    fn matches(&self, n: &NodeRef) -> bool {
        let spec = &n.spec.spec;
        let st = n.status();
        self.q.as_deref().is_none_or(|q| {
            self.mac_node == Some(spec.id)
                || spec.id.to_string().starts_with(q)
                || spec
                    .name
                    .as_ref()
                    .is_some_and(|name| name.as_str().to_lowercase().contains(q))
        }) && self.provision_state.is_none_or(|s| provision_state(n) == s)
            && self
                .power_state
                .as_deref()
                .is_none_or(|p| power_str(n) == p)
            && self.maintenance.is_none_or(|m| spec.maintenance == m)
            && self.fault.as_deref().is_none_or(|f| match f {
                "any" => st.fault.is_some(),
                f => st.fault.as_deref() == Some(f),
            })
            && self
                .conductor
                .as_deref()
                .is_none_or(|c| n.holder.as_deref() == Some(c))
    }
}

fn row(n: &NodeRef) -> Value {
    let spec = &n.spec.spec;
    let st = n.status();
    let last_error = n
        .spec
        .unreadable
        .as_deref()
        .map(str::to_string)
        .or_else(|| n.status_error().map(str::to_string))
        .or_else(|| st.last_error.clone());
    json!({
        "uuid": spec.id.to_string(),
        "name": spec.name.as_ref().map(|x| x.as_str()),
        "driver": spec.driver,
        "power_state": st.power_state.map(|p| p.as_str()),
        "target_power_state": target_power_state(n),
        "provision_state": provision_state(n).as_str(),
        "target_provision_state": target_provision_state(n).map(|s| s.as_str()),
        "maintenance": spec.maintenance,
        "maintenance_reason": spec.maintenance_reason,
        "fault": st.fault,
        "last_error": last_error,
        "conductor": n.holder.as_deref(),
        "updated_at": crate::node_json::updated_at_ms(spec, st).map(iso8601),
    })
}

pub async fn nodes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&[
        "q",
        "provision_state",
        "power_state",
        "maintenance",
        "fault",
        "conductor",
        "unowned",
        "limit",
        "marker",
    ])?;
    let (limit, _) = params.limit_and_dir(1000)?;
    let marker = params.uuid("marker")?;
    state.read_barrier().await?;
    let cache = state.informer.read();
    let search = Search::parse(&params, &cache)?;
    // Nodes no live conductor holds (the overview's "unowned").
    let unowned = params.bool("unowned")?;
    let held_live = |n: &NodeRef| {
        n.holder
            .as_deref()
            .is_some_and(|h| cache.conductors.contains_key(h))
    };
    let (mut total, mut page, mut past_marker, mut more) =
        (0usize, Vec::new(), marker.is_none(), false);
    // Creation order, as Ironic's default sort.
    for (_, id) in &cache.by_created {
        let Some(n) = cache.node(id) else { continue };
        if !in_scope(&caller, &n)
            || !search.matches(&n)
            || unowned.is_some_and(|u| u == held_live(&n))
        {
            continue;
        }
        total += 1;
        if !past_marker {
            past_marker = marker.is_some_and(|m| m == id.0);
        } else if page.len() < limit {
            page.push(row(&n));
        } else {
            more = true;
        }
    }
    let next = more
        .then(|| {
            page.last()
                .and_then(|r| r["uuid"].as_str().map(str::to_string))
        })
        .flatten();
    if let Some(m) = marker.filter(|_| !past_marker) {
        return Err(ApiError::NotFound(format!("Node {m} could not be found.")));
    }
    Ok(request::json(
        StatusCode::OK,
        &json!({"nodes": page, "total": total, "next": next}),
    ))
}

fn action(action: &str, kind: &str, refusal: Option<String>) -> Value {
    json!({
        "action": action,
        "kind": kind,
        "allowed": refusal.is_none(),
        "reason": refusal,
    })
}

pub async fn actions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(v): Extension<crate::version::ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    if !in_scope(&caller, &node) {
        return Err(ApiError::node_not_found(&ident));
    }
    let spec = &node.spec.spec;
    let status = node.status();
    // Refusals that apply to every action, first match wins.
    let general = if !caller.role.writes() {
        Some(format!(
            "your role ({}) may not change nodes",
            caller.role.as_str()
        ))
    } else {
        node.spec.unreadable.as_ref().map(|why| why.to_string())
    };
    let served = {
        let cache = state.informer.read();
        cache.served(&spec.driver, &spec.conductor_group) || cache.any_conductor()
    };
    let mut list = Vec::new();
    for &target in PowerTarget::ALL {
        let refusal = general.clone().or_else(|| {
            (!served)
                .then(|| "no conductor is alive to act on the node".to_string())
                .or_else(|| {
                    power_refusal(spec, status, target)
                        .err()
                        .map(|e| e.to_string())
                })
        });
        list.push(action(target.as_str(), "power", refusal));
    }
    for &verb in Verb::ALL {
        let name = match verb {
            Verb::Undeploy => "deleted",
            v => v.as_str(),
        };
        let refusal = general.clone().or_else(|| {
            provision_refusal(spec, status, verb, true)
                .err()
                .map(|e| e.to_string())
        });
        let mut doc = action(name, "provision", refusal);
        if verb == Verb::Clean && spec.maintenance {
            doc["maintenance_ok"] = json!(true);
        }
        list.push(doc);
    }
    // A switch's two actions: turning it to the state it is in is refused, saying so.
    let switch = |now: bool, on: bool, already: &str, not: &str| {
        general
            .clone()
            .or_else(|| (now == on).then(|| if on { already } else { not }.to_string()))
    };
    let (m, c) = (spec.maintenance, spec.console_enabled);
    let (in_m, not_m) = (
        "the node is in maintenance already",
        "the node is not in maintenance",
    );
    let (on_c, off_c) = (
        "the console is enabled already",
        "the console is not enabled",
    );
    list.push(action(
        "maintenance set",
        "maintenance",
        switch(m, true, in_m, not_m),
    ));
    list.push(action(
        "maintenance unset",
        "maintenance",
        switch(m, false, in_m, not_m),
    ));
    list.push(action(
        "console enable",
        "console",
        switch(c, true, on_c, off_c),
    ));
    list.push(action(
        "console disable",
        "console",
        switch(c, false, on_c, off_c),
    ));
    let mut body = Map::new();
    body.insert("node".into(), json!(spec.id.to_string()));
    body.insert("actions".into(), Value::Array(list));
    Ok(request::json(StatusCode::OK, &Value::Object(body)))
}

/// How long one read of every delivery cursor and event is served to every caller.
pub const DELIVERIES_FOR: Duration = Duration::from_secs(5);

/// The last `/v1/ferric/deliveries` answer and when it was read.
#[derive(Default)]
pub struct DeliveriesCache(tokio::sync::Mutex<Option<(Instant, Value)>>);

/// One receiver's figures over the whole fleet.
#[derive(Default)]
struct Lane {
    pending: u64,
    oldest_pending_ms: Option<u64>,
    delivered: u64,
    refused: u64,
    last_ms: Option<u64>,
    last_refusal: Option<String>,
    unreadable: u64,
}

/// `GET /v1/ferric/deliveries`: how far the compute service and the webhook are with the
/// fleet's power events: events waiting (and since when), the results recorded in the delivery
/// cursors (the last ones per node: delivered, refused), and the last delivery. Read from etcd
/// in two prefix reads, at most once per [`DELIVERIES_FOR`] for all callers. Cluster-wide
/// callers only (a project's view would need the same read filtered; not offered).
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    use ferric_model::{Outcome, Sink};
    if caller.project.is_some() {
        return Err(ApiError::Forbidden(
            "Delivery figures are for cluster-wide callers only.".into(),
        ));
    }
    let mut cached = state.deliveries.0.lock().await;
    if let Some((at, doc)) = cached.as_ref() {
        if at.elapsed() < DELIVERIES_FOR {
            return Ok(request::json(StatusCode::OK, doc));
        }
    }
    let ids: std::collections::HashSet<ferric_model::NodeId> =
        state.informer.read().specs.keys().copied().collect();
    let all = state.cluster.nodes_events(&ids).await?;
    let mut lanes: BTreeMap<&'static str, Lane> = BTreeMap::new();
    for n in all.values() {
        let cursor = match &n.cursor {
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => {
                for sink in Sink::ALL {
                    lanes.entry(sink.as_str()).or_default().unreadable += 1;
                }
                continue;
            }
            None => None,
        };
        for sink in Sink::ALL {
            let lane = lanes.entry(sink.as_str()).or_default();
            let done = cursor.map_or(0, |c| c.lane(sink).done);
            for (seq, ev) in &n.events {
                let Ok(ev) = ev else { continue };
                if *seq > done && sink.applies_to(ev) {
                    lane.pending += 1;
                    lane.oldest_pending_ms =
                        Some(lane.oldest_pending_ms.map_or(ev.at_ms, |o| o.min(ev.at_ms)));
                }
            }
            for r in cursor.iter().flat_map(|c| c.lane(sink).recent.iter()) {
                match r.outcome {
                    Outcome::Delivered { .. } => lane.delivered += 1,
                    Outcome::Refused { code } => {
                        lane.refused += 1;
                        lane.last_refusal = Some(format!(
                            "event {} of node {} refused with {code}",
                            r.seq,
                            cursor.map(|c| c.node.to_string()).unwrap_or_default()
                        ));
                    }
                }
                lane.last_ms = Some(lane.last_ms.map_or(r.at_ms, |l| l.max(r.at_ms)));
            }
        }
    }
    let receivers: Vec<Value> = Sink::ALL
        .iter()
        .map(|sink| {
            let l = lanes.remove(sink.as_str()).unwrap_or_default();
            json!({
                "receiver": sink.as_str(),
                "pending": l.pending,
                "oldest_pending_at": l.oldest_pending_ms.map(iso8601),
                "delivered": l.delivered,
                "failed": l.refused,
                "last_error": l.last_refusal,
                "last_delivery_at": l.last_ms.map(iso8601),
                "unreadable_cursors": l.unreadable,
            })
        })
        .collect();
    let doc = json!({
        "receivers": receivers,
        "nodes": ids.len(),
        "note": "delivered and failed count the results kept in each node's delivery cursor (its last 64 per receiver)",
    });
    *cached = Some((Instant::now(), doc.clone()));
    Ok(request::json(StatusCode::OK, &doc))
}
