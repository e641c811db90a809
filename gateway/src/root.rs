//! Version discovery (`GET /`, `GET /v1`), conductors (`/v1/conductors`) and node history
//! (`/v1/nodes/{node}/history`), in Ironic's shapes.

use crate::error::ApiError;
use crate::node_json::{iso8601, links, Link};
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_model::{ConductorRecord, HistoryEntry, NodeId};
use serde_json::{json, Map, Value};

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": version::min_string(),
        "version": version::max_string(),
    })
}

pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = request::base_url(&state, &headers);
    let body = json!({
        "name": "OpenStack Ironic API",
        "description": "Ferric: an Ironic-compatible conductor cluster for bare-metal fleets.",
        "default_version": version_doc(&base),
        "versions": [version_doc(&base)],
    });
    request::json(StatusCode::OK, &body)
}

fn resource_links(base: &str, name: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{name}/"), "rel": "self"},
        {"href": format!("{base}/{name}/"), "rel": "bookmark"},
    ])
}

pub async fn v1_index(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
) -> Response {
    let base = request::base_url(&state, &headers);
    let mut doc = Map::new();
    doc.insert("id".into(), json!("v1"));
    doc.insert(
        "links".into(),
        json!([
            {"href": format!("{base}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html", "rel": "describedby", "type": "text/html"},
        ]),
    );
    doc.insert(
        "media_types".into(),
        json!({"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}),
    );
    // Only the resources Ferric serves are advertised.
    doc.insert("nodes".into(), resource_links(&base, "nodes"));
    doc.insert("drivers".into(), resource_links(&base, "drivers"));
    doc.insert("ports".into(), resource_links(&base, "ports"));
    if v.at_least(version::V_PORTGROUPS) {
        doc.insert("portgroups".into(), resource_links(&base, "portgroups"));
    }
    if v.at_least(version::V_VOLUME) {
        doc.insert("volume".into(), resource_links(&base, "volume"));
    }
    if v.at_least(version::V_RAMDISK) {
        doc.insert("heartbeat".into(), resource_links(&base, "heartbeat"));
    }
    if v.at_least(version::V_CONDUCTORS) {
        doc.insert("conductors".into(), resource_links(&base, "conductors"));
    }
    doc.insert("version".into(), version_doc(&base));
    request::json(StatusCode::OK, &Value::Object(doc))
}

const CONDUCTOR_FIELDS: &[&str] = &[
    "hostname",
    "conductor_group",
    "alive",
    "drivers",
    "created_at",
    "updated_at",
];
const CONDUCTOR_DEFAULT: &[&str] = &["hostname", "conductor_group", "alive"];

fn conductor_doc(c: &ConductorRecord, base: &str, fields: &[&str]) -> Value {
    let mut m = Map::new();
    for f in CONDUCTOR_FIELDS {
        if !fields.contains(f) {
            continue;
        }
        let v = match *f {
            "hostname" => json!(c.name),
            "conductor_group" => json!(c.conductor_group),
            // Membership records live on the conductor's lease: a listed conductor is alive.
            "alive" => json!(true),
            "drivers" => json!(c.drivers),
            "created_at" => json!(iso8601(c.started_at_ms)),
            _ => Value::Null,
        };
        m.insert((*f).into(), v);
    }
    m.insert(
        "links".into(),
        json!(links(base, &format!("conductors/{}", c.name))
            .iter()
            .map(|l: &Link| json!({"href": l.href, "rel": l.rel}))
            .collect::<Vec<_>>()),
    );
    Value::Object(m)
}

fn conductor_fields(
    params: &Params,
    detail: Option<bool>,
    v: ApiVersion,
) -> Result<Vec<String>, ApiError> {
    let fields = params.list("fields");
    if fields.is_some() && !v.at_least(version::V_FIELDS) {
        return Err(ApiError::not_acceptable());
    }
    if fields.is_some() && detail == Some(true) {
        return Err(ApiError::BadRequest(
            "Can not specify ?detail=True and fields in the same request.".into(),
        ));
    }
    match fields {
        Some(f) => {
            if let Some(bad) = f.iter().find(|f| !CONDUCTOR_FIELDS.contains(&f.as_str())) {
                return Err(ApiError::BadRequest(format!(
                    "Field(s) \"{bad}\" are not valid"
                )));
            }
            Ok(f)
        }
        None if detail == Some(true) => {
            Ok(CONDUCTOR_FIELDS.iter().map(|s| s.to_string()).collect())
        }
        None => Ok(CONDUCTOR_DEFAULT.iter().map(|s| s.to_string()).collect()),
    }
}

pub async fn conductors(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_CONDUCTORS) {
        return Err(ApiError::no_such_resource());
    }
    let params = Params::parse(q.as_deref())?;
    params.only(&[
        "marker", "limit", "sort_key", "sort_dir", "fields", "detail",
    ])?;
    let detail = params.bool("detail")?;
    let fields = conductor_fields(&params, detail, v)?;
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let (limit, sort_dir) = params.limit_and_dir(1000)?;
    let sort_key = params.get("sort_key").unwrap_or("id");
    if !matches!(
        sort_key,
        "id" | "hostname" | "conductor_group" | "created_at" | "updated_at"
    ) {
        return Err(ApiError::BadRequest(format!(
            "The sort_key value {sort_key} is an invalid field for sorting"
        )));
    }
    state.read_barrier().await?;
    let mut list: Vec<ConductorRecord> =
        state.informer.read().conductors.values().cloned().collect();
    list.sort_by(|a, b| {
        let o = match sort_key {
            "hostname" => a.name.cmp(&b.name),
            "conductor_group" => a
                .conductor_group
                .cmp(&b.conductor_group)
                .then(a.name.cmp(&b.name)),
            _ => a
                .started_at_ms
                .cmp(&b.started_at_ms)
                .then(a.name.cmp(&b.name)),
        };
        if sort_dir == "desc" {
            o.reverse()
        } else {
            o
        }
    });
    if let Some(marker) = params.get("marker") {
        let pos = list
            .iter()
            .position(|c| c.name == marker)
            .ok_or_else(|| ApiError::NotFound(format!("Conductor {marker} could not be found.")))?;
        list.drain(..=pos);
    }
    list.truncate(limit);
    let base = request::base_url(&state, &headers);
    let docs: Vec<Value> = list
        .iter()
        .map(|c| conductor_doc(c, &base, &field_refs))
        .collect();
    let mut body = json!({ "conductors": docs });
    if list.len() == limit {
        if let Some(last) = list.last() {
            let mut q = String::new();
            for (k, val) in params.pairs() {
                if k != "limit" && k != "marker" {
                    q.push_str(&format!(
                        "{}={}&",
                        request::url_encode(k),
                        request::url_encode(val)
                    ));
                }
            }
            body["next"] = json!(format!(
                "{base}/v1/conductors?{q}limit={limit}&marker={}",
                request::url_encode(&last.name)
            ));
        }
    }
    Ok(request::json(StatusCode::OK, &body))
}

pub async fn conductor(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_CONDUCTORS) {
        return Err(ApiError::no_such_resource());
    }
    let params = Params::parse(q.as_deref())?;
    params.only(&["fields"])?;
    let fields = match params.list("fields") {
        None => CONDUCTOR_FIELDS.iter().map(|s| s.to_string()).collect(),
        Some(_) => conductor_fields(&params, None, v)?,
    };
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    state.read_barrier().await?;
    let (rec, nodes) = {
        let cache = state.informer.read();
        let rec = cache.conductors.get(&name).cloned();
        let nodes = cache
            .holder_counts()
            .get(name.as_str())
            .copied()
            .unwrap_or(0);
        (rec, nodes)
    };
    let rec =
        rec.ok_or_else(|| ApiError::NotFound(format!("Conductor {name} could not be found.")))?;
    let base = request::base_url(&state, &headers);
    let mut resp = request::json(StatusCode::OK, &conductor_doc(&rec, &base, &field_refs));
    // Ferric extension, in a header so that Ironic clients never see it in the body.
    if let Ok(v) = axum::http::HeaderValue::from_str(&nodes.to_string()) {
        resp.headers_mut().insert("x-ferric-node-count", v);
    }
    Ok(resp)
}

/// The uuids of a node's history entries: derived from the node and each entry's content (and
/// how many identical entries came before it), so that an entry keeps its uuid across reads
/// and gateways, and when older entries are dropped from the bounded history.
fn event_uuids(node: &NodeId, entries: &[HistoryEntry]) -> Vec<uuid::Uuid> {
    use sha2::{Digest, Sha256};
    let mut seen: std::collections::HashMap<[u8; 32], u64> = std::collections::HashMap::new();
    entries
        .iter()
        .map(|e| {
            let mut h = Sha256::new();
            h.update(node.as_bytes());
            h.update(e.at_ms.to_le_bytes());
            for part in [
                e.kind.as_str(),
                &e.action,
                e.requested_by.as_str(),
                &e.conductor,
                &e.result,
            ] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            let base: [u8; 32] = h.finalize().into();
            let n = seen.entry(base).or_insert(0);
            *n += 1;
            let d = Sha256::new()
                .chain_update(base)
                .chain_update(n.to_le_bytes())
                .finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&d[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
        .collect()
}

fn event_text(e: &HistoryEntry) -> String {
    if e.result == "ok" || e.result.is_empty() {
        e.action.clone()
    } else {
        format!("{}: {}", e.action, e.result)
    }
}

fn history_doc(
    base: &str,
    node: &NodeId,
    uuid: uuid::Uuid,
    e: &HistoryEntry,
    detail: bool,
) -> Value {
    let mut event = event_text(e);
    if !detail && event.chars().count() > 255 {
        event = event.chars().take(251).collect::<String>() + "...";
    }
    let mut m = Map::new();
    m.insert("uuid".into(), json!(uuid.to_string()));
    m.insert("created_at".into(), json!(iso8601(e.at_ms)));
    m.insert("severity".into(), json!(e.severity));
    m.insert("event".into(), json!(event));
    if detail {
        m.insert("event_type".into(), json!(e.kind));
        m.insert("conductor".into(), json!(e.conductor));
        m.insert("user".into(), json!(e.requested_by));
    }
    m.insert(
        "links".into(),
        json!([{"href": format!("{base}/v1/nodes/{node}/history/{uuid}"), "rel": "self"}]),
    );
    Value::Object(m)
}

pub async fn history(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_HISTORY) {
        return Err(ApiError::no_such_resource());
    }
    let params = Params::parse(q.as_deref())?;
    params.only(&["detail", "marker", "limit", "sort_key", "sort_dir"])?;
    let detail = params.bool("detail")?.unwrap_or(false);
    let marker = params.uuid("marker")?;
    let (limit, sort_dir) = params.limit_and_dir(1000)?;
    if let Some(k) = params.get("sort_key") {
        if k != "created_at" {
            return Err(ApiError::BadRequest(format!(
                "The sort_key value {k} is an invalid field for sorting"
            )));
        }
    }
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let hist = state.cluster.node_history(&id.to_string()).await?;
    let base = request::base_url(&state, &headers);
    let uuids = event_uuids(&id, &hist.entries);
    let mut entries: Vec<(uuid::Uuid, &HistoryEntry)> =
        uuids.iter().copied().zip(hist.entries.iter()).collect();
    if sort_dir == "desc" {
        entries.reverse();
    }
    if let Some(m) = marker {
        let pos = entries.iter().position(|(u, _)| *u == m).ok_or_else(|| {
            ApiError::NotFound(format!("Node history record {m} could not be found."))
        })?;
        entries.drain(..=pos);
    }
    entries.truncate(limit);
    let docs: Vec<Value> = entries
        .iter()
        .map(|(u, e)| history_doc(&base, &id, *u, e, detail))
        .collect();
    let mut body = json!({ "history": docs });
    if entries.len() == limit {
        if let Some((u, _)) = entries.last() {
            body["next"] = json!(format!(
                "{base}/v1/nodes/{id}/history?sort_key=created_at&sort_dir={sort_dir}&detail={detail}&limit={limit}&marker={u}"
            ));
        }
    }
    Ok(request::json(StatusCode::OK, &body))
}

pub async fn history_event(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path((ident, event)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_HISTORY) {
        return Err(ApiError::no_such_resource());
    }
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let wanted = uuid::Uuid::parse_str(&event)
        .map_err(|_| ApiError::BadRequest(format!("Expected UUID or name for event: {event}")))?;
    let hist = state.cluster.node_history(&id.to_string()).await?;
    let base = request::base_url(&state, &headers);
    let uuids = event_uuids(&id, &hist.entries);
    uuids
        .iter()
        .zip(hist.entries.iter())
        .find(|(u, _)| **u == wanted)
        .map(|(u, e)| request::json(StatusCode::OK, &history_doc(&base, &id, *u, e, true)))
        .ok_or_else(|| {
            ApiError::NotFound(format!("Node history record {event} could not be found."))
        })
}
