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
use crate::version::{ApiVersion, V_VIFS};
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
        Err(ApiError::NotFound(
            "The resource could not be found.".into(),
        ))
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
async fn set_vif(
    state: &AppState,
    uuid: Uuid,
    is_group: bool,
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

/// Waits until the copy has everything etcd has now (after a lost compare-and-swap).
async fn catch_up(state: &AppState) -> Result<(), ApiError> {
    let now = state.cluster.revision().await?;
    state.settle(now).await;
    Ok(())
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
    let obj = request::action_object(body, &["id"])?;
    let vif = request::req_string(&obj, "id")?;
    if vif.is_empty() || vif.len() > 255 {
        return Err(ApiError::BadRequest(format!("Invalid VIF id: {vif:?}")));
    }
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
        let objs = port_likes(&state, &node);
        let (uuid, is_group) = match choose_free(&vif, &objs) {
            VifChoice::Attached(_) => return Ok(StatusCode::NO_CONTENT.into_response()),
            VifChoice::NoneFree => {
                return Err(ApiError::BadRequest(format!(
                    "Unable to attach VIF {vif}, not enough free physical ports."
                )))
            }
            VifChoice::Free(u) => (u, objs.iter().any(|o| o.uuid == u && o.is_group)),
        };
        match set_vif(&state, uuid, is_group, Some(&vif)).await {
            Ok(Some(_)) => return Ok(StatusCode::NO_CONTENT.into_response()),
            Ok(None) => catch_up(&state).await?,
            // Taken: attached meanwhile (here or elsewhere); the next round says which.
            Err(ApiError::Conflict(_)) => catch_up(&state).await?,
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
        if set_vif(&state, o.uuid, o.is_group, None).await?.is_some() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        catch_up(&state).await?;
    }
    Err(ApiError::Conflict(format!(
        "The ports of node {ident} were changed concurrently too many times; please retry."
    )))
}
