//! `GET|POST /v1/nodes/{node}/vifs` and `DELETE .../vifs/{vif}` (1.28) with the semantics of
//! Ironic's `noop` and `flat` network interfaces: a VIF is recorded on a free port or port
//! group of the node (`internal_info.tenant_vif_port_id`), chosen as Ironic's
//! `get_free_port_like_object` chooses (`ferric_model::port::choose_free`). Each attach is a
//! compare-and-swap on the chosen record's revision that also claims the VIF's index entry, so
//! concurrent attaches never share a port and a VIF is never on two nodes.
//!
//! Codes, for Nova (which reads 409 on attach as "already attached" and does not retry it):
//! attaching a VIF already on this node succeeds (204); a VIF on another node is 409 (Ironic's
//! `VifAlreadyAttached`); no free port is 400 (Ironic's `NoFreePhysicalPorts` is `Invalid`, and a
//! 409 there would make Nova believe the VIF attached); detaching a VIF that is not attached is
//! 400 (`VifNotAttached`).

use super::{commit, taken, Resource};
use crate::error::ApiError;
use crate::request::{self, Params};
use crate::version::{ApiVersion, V_VIFS, V_VIF_PORT};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_cluster::children::ChildWrite;
use ferric_model::port::{choose_free, PortLike, VifChoice, TENANT_VIF_KEY};
use ferric_model::{encode, now_ms, NodeId, PortRecord, PortgroupRecord};
use serde_json::{json, Value};
use uuid::Uuid;

fn gate(v: ApiVersion) -> Result<(), ApiError> {
    if v.at_least(V_VIFS) {
        Ok(())
    } else {
        Err(ApiError::no_such_resource())
    }
}

fn node_id(state: &AppState, ident: &str) -> Result<NodeId, ApiError> {
    state
        .informer
        .read()
        .lookup(ident)
        .map(|n| n.id())
        .ok_or_else(|| ApiError::node_not_found(ident))
}

/// The node's ports and port groups as the VIF choice sees them.
fn port_likes(state: &AppState, node: &NodeId) -> Vec<PortLike> {
    let cache = state.informer.read();
    let c = &cache.children;
    let mut out: Vec<PortLike> = c
        .portgroups
        .of_node(node)
        .iter()
        .map(|g| PortLike {
            uuid: g.record.uuid,
            is_group: true,
            group: None,
            pxe_enabled: true,
            vif: crate::child_cache::Child::vif(&g.record),
        })
        .collect();
    out.extend(c.ports.of_node(node).iter().map(|p| PortLike {
        uuid: p.record.uuid,
        is_group: false,
        group: p.record.portgroup,
        pxe_enabled: p.record.pxe_enabled,
        vif: crate::child_cache::Child::vif(&p.record),
    }));
    out
}

pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    gate(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?.id();
    // Ironic lists ports, then port groups.
    let mut objs = port_likes(&state, &node);
    objs.sort_by_key(|o| o.is_group);
    let vifs: Vec<Value> = objs
        .iter()
        .filter_map(|o| o.vif.as_ref().map(|id| json!({ "id": id })))
        .collect();
    Ok(request::json(StatusCode::OK, &json!({ "vifs": vifs })))
}

/// Rewrites the VIF of a port or port group with a compare-and-swap; `None` if it changed.
/// `holds` is the VIF the record held when it was chosen (none for an attach): the record is
/// read again here, and if it no longer holds that, it changed since the choice.
async fn set_vif(
    state: &AppState,
    uuid: Uuid,
    is_group: bool,
    holds: Option<&str>,
    vif: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    fn edit(internal_info: &str, extra: &str, vif: Option<&str>) -> (String, String) {
        let mut ii = super::json_text(internal_info);
        let mut ex = super::json_text(extra);
        if let Some(m) = ii.as_object_mut() {
            match vif {
                Some(v) => {
                    m.insert(TENANT_VIF_KEY.into(), Value::String(v.into()));
                }
                None => {
                    m.remove(TENANT_VIF_KEY);
                }
            }
        }
        if vif.is_none() {
            if let Some(m) = ex.as_object_mut() {
                m.remove("vif_port_id");
            }
        }
        (ii.to_string(), ex.to_string())
    }
    let keys = state.cluster.keys();
    let w = if is_group {
        let old = super::lookup::<PortgroupRecord>(state, &uuid.to_string())?;
        if crate::child_cache::Child::vif(&old.record).as_deref() != holds {
            return Ok(None);
        }
        let mut r = old.record.clone();
        (r.internal_info, r.extra) = edit(&r.internal_info, &r.extra, vif);
        r.updated_at_ms = Some(now_ms());
        ChildWrite {
            node: r.node,
            key: old.key.clone(),
            value: Some(encode(&r)),
            expect: Some(old.rev),
            moved_from: None,
            after: r.indexes(keys),
            before: old.record.indexes(keys),
        }
    } else {
        let old = super::lookup::<PortRecord>(state, &uuid.to_string())?;
        if crate::child_cache::Child::vif(&old.record).as_deref() != holds {
            return Ok(None);
        }
        let mut r = old.record.clone();
        (r.internal_info, r.extra) = edit(&r.internal_info, &r.extra, vif);
        r.updated_at_ms = Some(now_ms());
        ChildWrite {
            node: r.node,
            key: old.key.clone(),
            value: Some(encode(&r)),
            expect: Some(old.rev),
            moved_from: None,
            after: r.indexes(keys),
            before: old.record.indexes(keys),
        }
    };
    commit(state, w).await
}

pub async fn attach(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    gate(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    // Ironic's VIF body: `id` (a uuid or a name), anything else allowed; from 1.67 a
    // `port_uuid` or a `portgroup_uuid` names the object to attach to.
    let obj = match body {
        Value::Object(m) => m,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Schema error for vif: {other} is not of type 'object'"
            )))
        }
    };
    let vif = request::req_string(&obj, "id")?;
    let valid_name = !vif.is_empty()
        && vif.len() <= 255
        && vif
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    if !valid_name {
        return Err(ApiError::BadRequest(format!(
            "Expected UUID or name for id: {vif}"
        )));
    }
    let (want_port, want_group) = if v.at_least(V_VIF_PORT) {
        let port = request::opt_string(&obj, "port_uuid")?;
        let group = request::opt_string(&obj, "portgroup_uuid")?;
        if port.is_some() && group.is_some() {
            return Err(ApiError::BadRequest(
                "Cannot specify both port_uuid and portgroup_uuid".into(),
            ));
        }
        (port, group)
    } else {
        (None, None)
    };
    request::lookup(&state, &ident, v).await?;
    for _ in 0..8 {
        let node = node_id(&state, &ident)?;
        {
            let cache = state.informer.read();
            let c = &cache.children;
            let elsewhere = c
                .ports
                .by_vif
                .get(&vif)
                .and_then(|u| c.ports.get(u))
                .filter(|p| p.record.node != node)
                .map(|p| ("Port", p.record.uuid))
                .or_else(|| {
                    c.portgroups
                        .by_vif
                        .get(&vif)
                        .and_then(|u| c.portgroups.get(u))
                        .filter(|g| g.record.node != node)
                        .map(|g| ("Portgroup", g.record.uuid))
                });
            if let Some((kind, uuid)) = elsewhere {
                return Err(ApiError::Conflict(format!(
                    "Unable to attach VIF because VIF {vif} is already attached to Ironic {kind} {uuid}"
                )));
            }
        }
        let mut objs = port_likes(&state, &node);
        if let Some(o) = objs.iter().find(|o| o.vif.as_deref() == Some(vif.as_str())) {
            tracing::info!(%node, %vif, on = %o.uuid, "VIF already attached");
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // A named port: only it (a port in a group is then not free, as in Ironic); a named
        // group: it and its ports, and only the group itself can be chosen.
        if let Some(p) = &want_port {
            objs.retain(|o| !o.is_group && o.uuid.to_string() == *p);
        }
        if let Some(g) = &want_group {
            objs.retain(|o| {
                o.uuid.to_string() == *g || o.group.is_some_and(|x| x.to_string() == *g)
            });
        }
        let choice = match choose_free(&vif, &objs) {
            VifChoice::Free(u)
                if want_group.is_some()
                    && u.to_string() != *want_group.as_deref().unwrap_or("") =>
            {
                VifChoice::NoneFree
            }
            c => c,
        };
        let (uuid, is_group) = match choice {
            VifChoice::Attached(_) => return Ok(StatusCode::NO_CONTENT.into_response()),
            VifChoice::NoneFree => {
                return Err(ApiError::BadRequest(format!(
                    "Unable to attach VIF {vif}, not enough free physical ports."
                )))
            }
            VifChoice::Free(u) => (u, objs.iter().any(|o| o.uuid == u && o.is_group)),
        };
        match set_vif(&state, uuid, is_group, None, Some(&vif)).await {
            Ok(Some(rev)) => {
                tracing::info!(%node, %vif, on = %uuid, rev, "VIF attached");
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Ok(None) => state.catch_up().await?,
            // Taken: attached meanwhile (here or elsewhere); the next round says which.
            Err(ApiError::Conflict(_)) => state.catch_up().await?,
            Err(e) => return Err(e),
        }
    }
    Err(taken(&ferric_cluster::children::Unique::Vif(vif)))
}

pub async fn detach(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path((ident, vif)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    gate(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    request::lookup(&state, &ident, v).await?;
    for _ in 0..8 {
        let node = node_id(&state, &ident)?;
        let objs = port_likes(&state, &node);
        let Some(o) = objs.iter().find(|o| o.vif.as_deref() == Some(vif.as_str())) else {
            return Err(ApiError::BadRequest(format!(
                "Unable to detach VIF {vif} from node {node} because it is not attached to it."
            )));
        };
        if set_vif(&state, o.uuid, o.is_group, Some(&vif), None)
            .await?
            .is_some()
        {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        state.catch_up().await?;
    }
    Err(ApiError::Conflict(format!(
        "The ports of node {ident} were changed concurrently too many times; please retry."
    )))
}
