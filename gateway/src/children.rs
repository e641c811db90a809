//! Records that belong to a node, served as Ironic serves them: `/v1/ports`, `/v1/portgroups`,
//! `/v1/volume/connectors`, `/v1/volume/targets` (create, show, list with filters, `fields`,
//! `detail` and pagination, JSON Patch, delete), their node-scoped lists, and a node's VIFs.
//! One generic implementation over [`Resource`]; [`resources`] says what differs per kind.
//! Reads come from the gateway's copy; each write is one etcd transaction that also claims
//! the record's unique values (MAC, name, VIF, ...) and is answered once the copy shows it.

pub mod resources;
pub mod vifs;

use crate::auth::Caller;
use crate::child_cache::{Child, ChildIndex, Entry};
use crate::error::ApiError;
use crate::informer::CacheState;
use crate::json_patch;
use crate::node_json::iso8601;
use crate::policy::ChildOp;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_cluster::children::{ChildOutcome, ChildWrite, IndexKey, Unique};
use ferric_cluster::Keyspace;
use ferric_model::{encode, now_ms, NodeId};
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

/// Ironic's `max_limit`.
const MAX_LIMIT: usize = 1000;

/// What differs between ports, port groups, volume connectors and volume targets.
pub trait Resource: Child {
    /// For messages: "port", "portgroup", "volume connector", "volume target".
    const NOUN: &'static str;
    /// Ironic's not-found message prefix ("Port", "Portgroup", ...).
    const TITLE: &'static str;
    /// Path under `/v1` ("ports", "volume/connectors").
    const PATH: &'static str;
    /// The list's key in a collection body ("ports", "connectors", ...).
    const COLLECTION: &'static str;
    /// The etcd kind (see `ferric_cluster::children`).
    const ETCD_KIND: &'static str;
    /// The version that introduced the resource (below it: 404).
    const SINCE: u32;
    /// Every field with the version that introduced it.
    const FIELDS: &'static [(&'static str, u32)];
    const DEFAULT_FIELDS: &'static [&'static str];
    /// Fields a create body may carry (with their versions from `FIELDS`).
    const CREATE: &'static [&'static str];
    const PATCHABLE: &'static [&'static str];
    /// Query parameters of a list besides the common ones.
    const FILTERS: &'static [&'static str];

    fn index(c: &CacheState) -> &ChildIndex<Self>;
    /// Every field by its API name (no links).
    fn to_doc(&self) -> Map<String, Value>;
    /// A record from a document (a create body, or a patched document); `old` on a patch.
    fn from_doc(doc: &Map<String, Value>, old: Option<&Self>, ctx: &Ctx) -> Result<Self, ApiError>;
    fn indexes(&self, keys: &Keyspace) -> Vec<IndexKey>;
    /// Extra filters of a list (already checked against `FILTERS`).
    fn matches(&self, _f: &ListFilter) -> bool {
        true
    }
    /// Links to sub-resources (a port group's `ports`).
    fn sub_links(&self, _base: &str, _doc: &mut Map<String, Value>) {}
    /// Ironic's conductor changes these only on a powered-off node (and deletes them also
    /// in the states a node may be deleted in): the actions named in its refusal.
    const POWER_OFF_ACTIONS: Option<(&'static str, &'static str)> = None;
    /// Refuses a delete (a port group with ports).
    fn check_delete(&self, _cache: &CacheState) -> Result<(), ApiError> {
        Ok(())
    }
}

/// What `from_doc` may look at.
pub struct Ctx<'a> {
    pub cache: &'a CacheState,
    pub node: NodeId,
    pub now: u64,
}

/// The conflict message of a unique value held by another record (Ironic's words).
pub fn taken(u: &Unique) -> ApiError {
    ApiError::Conflict(match u {
        Unique::PortMac(m) => format!("A port with MAC address {m} already exists."),
        Unique::PortName(n) => format!("A port with name {n} already exists."),
        Unique::PortgroupMac(m) => format!("A portgroup with MAC address {m} already exists."),
        Unique::PortgroupName(n) => format!("A portgroup with name {n} already exists."),
        Unique::Vif(v) => format!("Unable to attach VIF because VIF {v} is already attached to another Ironic port or portgroup."),
        Unique::Connector { kind, id } => format!(
            "A volume connector with type {kind} and connector ID {id} already exists."
        ),
        Unique::BootIndex(i) => {
            format!("A volume target with boot index '{i}' for the same node already exists.")
        }
        Unique::VolumeId(v) => {
            format!("A volume target with volume ID {v} for the same node already exists.")
        }
    })
}

pub(crate) fn not_found<R: Resource>(ident: &str) -> ApiError {
    ApiError::NotFound(format!("{} {ident} could not be found.", R::TITLE))
}

pub(crate) fn schema_error(what: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Schema error for {what}: {msg}"))
}

fn gate<R: Resource>(v: ApiVersion) -> Result<(), ApiError> {
    if v.at_least(R::SINCE) {
        Ok(())
    } else {
        Err(ApiError::no_such_resource())
    }
}

fn since<R: Resource>(name: &str) -> Option<u32> {
    R::FIELDS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A record as the API shows it: fields of the version (or only `fields`), plus links.
pub(crate) fn render<R: Resource>(
    r: &R,
    v: ApiVersion,
    base: &str,
    fields: Option<&[String]>,
) -> Value {
    let mut doc = r.to_doc();
    doc.insert(
        "links".into(),
        serde_json::to_value(crate::node_json::links(
            base,
            &format!("{}/{}", R::PATH, r.uuid()),
        ))
        .unwrap_or(Value::Null),
    );
    r.sub_links(base, &mut doc);
    doc.retain(|k, _| {
        since::<R>(k).is_none_or(|s| v.at_least(s))
            && fields.is_none_or(|f| k == "links" || f.iter().any(|x| x == k))
    });
    Value::Object(doc)
}

/// `?fields=`, checked against the version (406) and the field names (400).
fn fields_param<R: Resource>(p: &Params, v: ApiVersion) -> Result<Option<Vec<String>>, ApiError> {
    let Some(names) = p.list("fields") else {
        return Ok(None);
    };
    if !v.at_least(crate::version::V_FIELDS) {
        return Err(ApiError::not_acceptable());
    }
    let mut invalid = Vec::new();
    for n in &names {
        match since::<R>(n) {
            Some(s) if !v.at_least(s) => return Err(ApiError::not_acceptable()),
            Some(_) => {}
            None => invalid.push(n.as_str()),
        }
    }
    // Ironic's `check_for_invalid_fields` (ports, port groups, volume resources; nodes have
    // their own message).
    if !invalid.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Field(s) \"{}\" are not valid",
            invalid.join(", ")
        )));
    }
    Ok(Some(names))
}

pub(crate) fn lookup<R: Resource>(
    state: &AppState,
    ident: &str,
) -> Result<Arc<Entry<R>>, ApiError> {
    R::index(&state.informer.read())
        .lookup(ident)
        .ok_or_else(|| not_found::<R>(ident))
}

/// Whether the caller sees the records of `node`: cluster-wide callers all, a project-scoped
/// caller those of nodes its project owns or leases (Ironic's port and volume policies follow
/// the node's owner and lessee).
fn visible(caller: &Caller, cache: &CacheState, node: &NodeId) -> bool {
    match &caller.project {
        None => true,
        Some(p) => cache
            .node(node)
            .is_some_and(|n| crate::policy::relation(p, &n.spec.spec).is_some()),
    }
}

/// A project-scoped caller's write of a record of `node`, refused as Ironic's default policies
/// refuse it (`policy::check_child_write`); a node not of its project is answered `hidden()`,
/// as if it did not exist.
fn check_write<R: Resource>(
    caller: &Caller,
    cache: &CacheState,
    node: &NodeId,
    op: ChildOp,
    hidden: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    let Some(project) = &caller.project else {
        return Ok(());
    };
    let rel = cache
        .node(node)
        .and_then(|n| crate::policy::relation(project, &n.spec.spec))
        .ok_or_else(hidden)?;
    crate::policy::check_child_write(caller, rel, R::ETCD_KIND, op).map_err(ApiError::Forbidden)
}

/// Which records a list shows.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub node: Option<NodeId>,
    pub address: Option<String>,
    pub portgroup: Option<Uuid>,
    pub pxe_enabled: Option<bool>,
}

/// Where a list is asked for: `/v1/<path>`, `/v1/nodes/{node}/<path>`, `/v1/portgroups/{pg}/ports`.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Node(String),
    Portgroup(String),
}

const COMMON: &[&str] = &[
    "fields", "limit", "marker", "sort_key", "sort_dir", "detail",
];

#[allow(clippy::too_many_arguments)]
async fn list_impl<R: Resource>(
    state: AppState,
    v: ApiVersion,
    caller: &Caller,
    headers: HeaderMap,
    q: Option<String>,
    scope: Scope,
    detail_route: bool,
) -> Result<Response, ApiError> {
    gate::<R>(v)?;
    if matches!(scope, Scope::Node(_))
        && R::ETCD_KIND == ferric_cluster::children::PORTGROUPS
        && !v.at_least(crate::version::V_PORTGROUPS_SUB)
    {
        return Err(ApiError::no_such_resource());
    }
    let p = Params::parse(q.as_deref())?;
    let mut allowed: Vec<&str> = COMMON.to_vec();
    allowed.extend_from_slice(R::FILTERS);
    if detail_route {
        allowed.retain(|a| *a != "fields" && *a != "detail");
    }
    p.only(&allowed)?;
    let fields = fields_param::<R>(&p, v)?;
    let detail = p.bool("detail")?;
    if let Some(d) = detail {
        // Ports and port groups take `detail` from 1.43 (Ironic's `get_request_return_fields`);
        // volume lists always did (Nova's cleanup sends it at 1.32).
        let gated = [
            ferric_cluster::children::PORTS,
            ferric_cluster::children::PORTGROUPS,
        ]
        .contains(&R::ETCD_KIND);
        if gated && !v.at_least(crate::version::V_DETAIL) {
            return Err(ApiError::BadRequest(format!(
                "Invalid query parameter ?detail={d} received."
            )));
        }
    }
    if fields.is_some() && detail == Some(true) {
        return Err(ApiError::BadRequest(
            "Can not specify ?detail=True and fields in the same request.".into(),
        ));
    }
    let (limit, dir) = p.limit_and_dir(MAX_LIMIT)?;
    let desc = dir == "desc";
    let sort_key = p.get("sort_key").unwrap_or("id").to_string();
    if sort_key != "id"
        && (since::<R>(&sort_key).is_none()
            || matches!(
                sort_key.as_str(),
                "extra" | "internal_info" | "local_link_connection" | "properties" | "links"
            ))
    {
        return Err(ApiError::BadRequest(format!(
            "The sort_key value {sort_key} is an invalid field for sorting"
        )));
    }
    let marker = p.uuid("marker")?;
    let mut filter = ListFilter {
        pxe_enabled: p.bool("pxe_enabled")?,
        ..Default::default()
    };
    if let Some(a) = p.get("address") {
        filter.address = Some(ferric_model::port::normalize_mac(a).ok_or_else(|| {
            ApiError::BadRequest(format!("Expected a MAC address but received {a}."))
        })?);
    }
    let node_param = match &scope {
        Scope::Node(n) => Some(n.clone()),
        _ => p.get("node").or(p.get("node_uuid")).map(str::to_string),
    };
    if let Some(n) = p.get("node_uuid") {
        uuid::Uuid::parse_str(n)
            .map_err(|_| ApiError::BadRequest(format!("Expected UUID for node_uuid: {n}")))?;
    }
    let pg_param = match &scope {
        Scope::Portgroup(g) => Some(g.clone()),
        _ => p.get("portgroup").map(str::to_string),
    };
    state.read_barrier().await?;
    let base = request::base_url(&state, &headers);
    let (items, full): (Vec<Value>, Option<String>) = {
        let cache = state.informer.read();
        if let Some(n) = &node_param {
            filter.node = Some(
                cache
                    .lookup(n)
                    .filter(|node| visible(caller, &cache, &node.id()))
                    .ok_or_else(|| ApiError::node_not_found(n))?
                    .id(),
            );
        }
        if let Some(g) = &pg_param {
            filter.portgroup = Some(
                cache
                    .children
                    .portgroups
                    .lookup(g)
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("Portgroup {g} could not be found."))
                    })?
                    .record
                    .uuid,
            );
        }
        let index = R::index(&cache);
        let marker_entry = match marker {
            None => None,
            Some(m) => Some(
                index
                    .get(&m)
                    .ok_or_else(|| not_found::<R>(&m.to_string()))?,
            ),
        };
        // Candidates: one by MAC, a node's, or all in creation order.
        let candidates: Box<dyn Iterator<Item = Arc<Entry<R>>>> = if let Some(a) = &filter.address {
            Box::new(index.by_mac(a).into_iter())
        } else if let Some(n) = &filter.node {
            Box::new(index.of_node(n).into_iter())
        } else {
            Box::new(index.by_created.iter().filter_map(|(_, u)| index.get(u)))
        };
        let mut picked: Vec<Arc<Entry<R>>> = candidates
            .filter(|e| filter.node.is_none_or(|n| e.record.node() == n))
            .filter(|e| e.record.matches(&filter))
            .filter(|e| visible(caller, &cache, &e.record.node()))
            .collect();
        let key_of = |e: &Entry<R>| -> (String, u64, Uuid) {
            let r = &e.record;
            let v = if sort_key == "id" || sort_key == "created_at" {
                String::new()
            } else {
                match r.to_doc().get(&sort_key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            };
            (v, r.created_at_ms(), r.uuid())
        };
        picked.sort_by_cached_key(|e| key_of(e));
        if desc {
            picked.reverse();
        }
        if let Some(m) = &marker_entry {
            let mk = key_of(m);
            picked.retain(|e| {
                let k = key_of(e);
                if desc {
                    k < mk
                } else {
                    k > mk
                }
            });
        }
        picked.truncate(limit);
        let full = (picked.len() == limit && filter.address.is_none())
            .then(|| picked.last().map(|e| e.record.uuid().to_string()))
            .flatten();
        let shown: Option<Vec<String>> = if detail_route || detail == Some(true) {
            None
        } else {
            Some(
                fields.unwrap_or_else(|| R::DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect()),
            )
        };
        (
            picked
                .iter()
                .map(|e| render(&e.record, v, &base, shown.as_deref()))
                .collect(),
            full,
        )
    };
    let mut body = Map::new();
    body.insert(R::COLLECTION.into(), Value::Array(items));
    if let Some(last) = full {
        let path = match (&scope, detail_route) {
            (Scope::All, false) => R::PATH.to_string(),
            (Scope::All, true) => format!("{}/detail", R::PATH),
            (Scope::Node(n), _) => format!("nodes/{n}/{}", R::PATH),
            (Scope::Portgroup(g), _) => format!("portgroups/{g}/ports"),
        };
        body.insert(
            "next".into(),
            Value::String(request::next_link(&base, &path, &p, limit, &last)),
        );
    }
    Ok(request::json(StatusCode::OK, &Value::Object(body)))
}

pub async fn list<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    list_impl::<R>(state, v, &caller, headers, q, Scope::All, false).await
}

pub async fn list_detail<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    list_impl::<R>(state, v, &caller, headers, q, Scope::All, true).await
}

pub async fn list_of_node<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(node): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    request::check_ident(&node, v)?;
    list_impl::<R>(state, v, &caller, headers, q, Scope::Node(node), false).await
}

pub async fn list_of_portgroup(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(pg): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(crate::version::V_PORTGROUPS_SUB) {
        return Err(ApiError::no_such_resource());
    }
    list_impl::<ferric_model::PortRecord>(
        state,
        v,
        &caller,
        headers,
        q,
        Scope::Portgroup(pg),
        false,
    )
    .await
}

pub async fn show<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    gate::<R>(v)?;
    let p = Params::parse(q.as_deref())?;
    p.only(&["fields"])?;
    let fields = fields_param::<R>(&p, v)?;
    state.read_barrier().await?;
    let e = lookup::<R>(&state, &ident)?;
    if !visible(&caller, &state.informer.read(), &e.record.node()) {
        return Err(not_found::<R>(&ident));
    }
    let base = request::base_url(&state, &headers);
    Ok(request::json(
        StatusCode::OK,
        &render(&e.record, v, &base, fields.as_deref()),
    ))
}

/// Ironic's rule for volume records: an update needs the node powered off; a delete too,
/// unless the node is in a state it may be deleted in.
fn check_power_off<R: Resource>(
    state: &AppState,
    node: &NodeId,
    delete: bool,
) -> Result<(), ApiError> {
    let Some((update, deletion)) = R::POWER_OFF_ACTIONS else {
        return Ok(());
    };
    let Some(n) = state.informer.read().node(node) else {
        return Ok(());
    };
    let st = n.status();
    use ferric_model::{PowerState, ProvisionState as P};
    let deletable = matches!(
        st.provision_state,
        P::Manageable | P::Enroll | P::AdoptFailed
    );
    if st.power_state == Some(PowerState::Off) || (delete && deletable) {
        return Ok(());
    }
    Err(ApiError::invalid_state(
        if delete { deletion } else { update },
        &node.to_string(),
        st.power_state.map_or("None", |p| p.as_str()),
    ))
}

/// A write, answered once the copy has it.
async fn commit(state: &AppState, w: ChildWrite) -> Result<Option<i64>, ApiError> {
    match state.cluster.write_child(&w).await? {
        ChildOutcome::Done(rev) => {
            state.settle(rev).await;
            Ok(Some(rev))
        }
        ChildOutcome::Taken(u) => Err(taken(&u)),
        ChildOutcome::NodeGone => Err(ApiError::BadRequest(format!(
            "Node {} could not be found.",
            w.node
        ))),
        ChildOutcome::Changed => Ok(None),
    }
}

fn body_object(what: &str, body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        other => Err(schema_error(
            what,
            format!("{other} is not of type 'object'"),
        )),
    }
}

/// The node a document names (`node_uuid`, or `node_ident` at 1.94): 400 if unknown, as Ironic.
fn doc_node(cache: &CacheState, doc: &Map<String, Value>) -> Result<NodeId, ApiError> {
    let ident = doc
        .get("node_ident")
        .or(doc.get("node_uuid"))
        .and_then(Value::as_str)
        .ok_or_else(|| schema_error("node", "'node_uuid' is a required property"))?;
    cache
        .lookup(ident)
        .map(|n| n.id())
        .ok_or_else(|| ApiError::BadRequest(format!("Node {ident} could not be found.")))
}

pub async fn create<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    gate::<R>(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let doc = body_object(R::NOUN, body)?;
    for k in doc.keys() {
        if !R::CREATE.contains(&k.as_str()) {
            return Err(schema_error(
                R::NOUN,
                format!("Additional properties are not allowed ('{k}' was unexpected)"),
            ));
        }
        if since::<R>(k).is_some_and(|s| !v.at_least(s))
            || (k == "node_ident" && !v.at_least(crate::version::V_PORT_NODE_IDENT))
        {
            return Err(ApiError::not_acceptable());
        }
    }
    let record = create_record::<R>(&state, &caller, &doc).await?;
    let base = request::base_url(&state, &headers);
    let mut resp = request::json(StatusCode::CREATED, &render(&record, v, &base, None));
    if let Ok(loc) = HeaderValue::from_str(&format!("{base}/v1/{}/{}", R::PATH, record.uuid())) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Creates a record from a create body already checked against the request's microversion
/// (the API's `POST`, and what inspection creates for the NICs it finds).
pub(crate) async fn create_record<R: Resource>(
    state: &AppState,
    caller: &Caller,
    doc: &Map<String, Value>,
) -> Result<R, ApiError> {
    state.read_barrier().await?;
    if doc_node(&state.informer.read(), doc).is_err() {
        // Perhaps created through another gateway a moment ago: catch up with etcd once
        // before answering that the node does not exist.
        state.catch_up().await?;
    }
    let record = {
        let cache = state.informer.read();
        let node = doc_node(&cache, doc)?;
        check_write::<R>(caller, &cache, &node, ChildOp::Create, || {
            ApiError::BadRequest(format!("Node {node} could not be found."))
        })?;
        let ctx = Ctx {
            cache: &cache,
            node,
            now: now_ms(),
        };
        R::from_doc(doc, None, &ctx)?
    };
    let keys = state.cluster.keys();
    let key = keys.child(R::ETCD_KIND, &record.node(), &record.uuid());
    let w = ChildWrite {
        node: record.node(),
        key,
        value: Some(encode(&record)),
        expect: None,
        moved_from: None,
        after: record.indexes(keys),
        before: Vec::new(),
    };
    if commit(state, w).await?.is_none() {
        return Err(ApiError::Conflict(format!(
            "A {} with UUID {} already exists.",
            R::NOUN,
            record.uuid()
        )));
    }
    Ok(record)
}

pub async fn patch<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    gate::<R>(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let ops = json_patch::parse(&body).map_err(|e| schema_error("patch", e))?;
    for op in &ops {
        for path in [Some(op.op.path()), op.op.from()].into_iter().flatten() {
            let top = json_patch::top_field(path).unwrap_or_default();
            if !R::PATCHABLE.contains(&top.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "Cannot patch {path}. Only the following can be updated: {}",
                    R::PATCHABLE.join(", ")
                )));
            }
            if since::<R>(&top).is_some_and(|s| !v.at_least(s)) {
                return Err(ApiError::not_acceptable());
            }
        }
    }
    state.read_barrier().await?;
    for _ in 0..8 {
        let old = lookup::<R>(&state, &ident)?;
        let record = {
            let cache = state.informer.read();
            check_write::<R>(&caller, &cache, &old.record.node(), ChildOp::Update, || {
                not_found::<R>(&ident)
            })?;
            let mut doc = Value::Object(old.record.to_doc());
            for op in &ops {
                json_patch::apply_one(&mut doc, &op.op).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "Adding a new attribute ({}) to the root of the resource is not allowed. {e}",
                        op.op.path()
                    ))
                })?;
            }
            let doc = body_object(R::NOUN, doc)?;
            let node = doc_node(&cache, &doc)?;
            if node != old.record.node() {
                // Moved to another node: that one must be the caller's to change too.
                check_write::<R>(&caller, &cache, &node, ChildOp::Update, || {
                    ApiError::BadRequest(format!("Node {node} could not be found."))
                })?;
            }
            let ctx = Ctx {
                cache: &cache,
                node,
                now: now_ms(),
            };
            R::from_doc(&doc, Some(&old.record), &ctx)?
        };
        check_power_off::<R>(&state, &old.record.node(), false)?;
        let keys = state.cluster.keys();
        let key = keys.child(R::ETCD_KIND, &record.node(), &record.uuid());
        let w = ChildWrite {
            node: record.node(),
            moved_from: (key != old.key).then(|| old.key.clone()),
            key,
            value: Some(encode(&record)),
            expect: Some(old.rev),
            after: record.indexes(keys),
            before: old.record.indexes(keys),
        };
        if commit(&state, w).await?.is_some() {
            let base = request::base_url(&state, &headers);
            return Ok(request::json(
                StatusCode::OK,
                &render(&record, v, &base, None),
            ));
        }
        // Changed meanwhile: wait for the copy to show the change, then again.
        state.catch_up().await?;
    }
    Err(ApiError::Conflict(format!(
        "{} {ident} was changed concurrently too many times; please retry.",
        R::TITLE
    )))
}

pub async fn delete<R: Resource>(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    gate::<R>(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    state.read_barrier().await?;
    for _ in 0..8 {
        let old = lookup::<R>(&state, &ident)?;
        {
            let cache = state.informer.read();
            check_write::<R>(&caller, &cache, &old.record.node(), ChildOp::Delete, || {
                not_found::<R>(&ident)
            })?;
            old.record.check_delete(&cache)?;
        }
        check_power_off::<R>(&state, &old.record.node(), true)?;
        let keys = state.cluster.keys();
        let w = ChildWrite {
            node: old.record.node(),
            key: old.key.clone(),
            value: None,
            expect: Some(old.rev),
            moved_from: None,
            after: Vec::new(),
            before: old.record.indexes(keys),
        };
        if commit(&state, w).await?.is_some() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        state.catch_up().await?;
    }
    Err(ApiError::Conflict(format!(
        "{} {ident} was changed concurrently too many times; please retry.",
        R::TITLE
    )))
}

/// `GET /v1/volume`: the index of the volume resources (1.32).
pub async fn volume_index(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    gate::<ferric_model::VolumeConnectorRecord>(v)?;
    let base = request::base_url(&state, &headers);
    let l =
        |p: &str| serde_json::to_value(crate::node_json::links(&base, p)).unwrap_or(Value::Null);
    Ok(request::json(
        StatusCode::OK,
        &serde_json::json!({
            "links": l("volume/"),
            "connectors": l("volume/connectors"),
            "targets": l("volume/targets"),
        }),
    ))
}

/// `GET /v1/nodes/{node}/volume`: the index of a node's volume resources (1.32).
pub async fn node_volume_index(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    gate::<ferric_model::VolumeConnectorRecord>(v)?;
    let id = request::lookup(&state, &ident, v).await?.id();
    let base = request::base_url(&state, &headers);
    let l = |p: &str| {
        serde_json::to_value(crate::node_json::links(
            &base,
            &format!("nodes/{id}/volume{p}"),
        ))
        .unwrap_or(Value::Null)
    };
    Ok(request::json(
        StatusCode::OK,
        &serde_json::json!({
            "links": l("/"),
            "connectors": l("/connectors"),
            "targets": l("/targets"),
        }),
    ))
}

// ---- shared field readers for `from_doc` ----

pub(crate) fn opt_str(
    what: &str,
    doc: &Map<String, Value>,
    k: &str,
) -> Result<Option<String>, ApiError> {
    match doc.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(o) => Err(schema_error(
            what,
            format!("{o} is not of type 'string', 'null'"),
        )),
    }
}

pub(crate) fn req_str(what: &str, doc: &Map<String, Value>, k: &str) -> Result<String, ApiError> {
    opt_str(what, doc, k)?
        .ok_or_else(|| schema_error(what, format!("'{k}' is a required property")))
}

pub(crate) fn object(what: &str, doc: &Map<String, Value>, k: &str) -> Result<String, ApiError> {
    match doc.get(k) {
        None | Some(Value::Null) => Ok("{}".into()),
        Some(v @ Value::Object(_)) => Ok(v.to_string()),
        Some(o) => Err(schema_error(
            what,
            format!("{o} is not of type 'object', 'null'"),
        )),
    }
}

pub(crate) fn boolean(doc: &Map<String, Value>, k: &str, default: bool) -> Result<bool, ApiError> {
    match doc.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => crate::node_input::parse_bool(v).ok_or_else(|| {
            ApiError::BadRequest(format!("Invalid {k}: Unrecognized value '{}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'", v.as_str().map_or(v.to_string(), str::to_string)))
        }),
    }
}

pub(crate) fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Map::new()))
}

pub(crate) fn time(ms: u64) -> Value {
    Value::String(iso8601(ms))
}

pub(crate) fn opt_time(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, time)
}

/// The uuid of a create body, or a new one.
pub(crate) fn new_uuid(
    what: &str,
    doc: &Map<String, Value>,
    old: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    if let Some(u) = old {
        return Ok(u);
    }
    match opt_str(what, doc, "uuid")? {
        None => Ok(Uuid::new_v4()),
        Some(s) => Uuid::parse_str(&s)
            .map_err(|_| ApiError::BadRequest(format!("Expected a UUID but received {s}."))),
    }
}
