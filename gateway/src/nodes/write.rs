//! Changing nodes: enroll (`POST /v1/nodes`), JSON Patch and delete, each checked against the
//! node as read inside its compare-and-swap, and answered once the copy shows the write.

use super::drivers;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::informer::{NodeRef, SpecEntry};
use crate::json_patch::{Op, PatchOp};
use crate::node_input::{self};
use crate::node_json::{self, Render};
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::{AppState, SETTLE};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_cluster::repair::{continue_sequences, NodeRecords};
use ferric_cluster::{ClusterError, NodeView};
use ferric_model::{now_ms, NodeId, ProvisionState};
use std::sync::{Arc, Mutex};

/// Provision states in which Ironic lets a node be changed although a transition is under way.
fn update_allowed(s: ProvisionState) -> bool {
    use ProvisionState as S;
    matches!(
        s,
        S::DeployFailed
            | S::Inspecting
            | S::InspectFailed
            | S::InspectWait
            | S::CleanFailed
            | S::Error
            | S::Verifying
            | S::AdoptFailed
            | S::RescueFailed
            | S::UnrescueFailed
            | S::Servicing
            | S::ServiceHold
            | S::ServiceFailed
    )
}

/// The node as the copy shows it once it has `rev` (or as etcd said, if the copy is late).
async fn settled_node(state: &AppState, id: NodeId, view: Option<&NodeView>) -> NodeRef {
    let rev = view.map_or(0, |v| v.spec_rev);
    let present = state
        .informer
        .wait_until(SETTLE, |c| c.specs.get(&id).is_some_and(|s| s.rev >= rev))
        .await;
    let cached = present.then(|| state.informer.read().node(&id)).flatten();
    if let Some(n) = cached {
        state.wrote(n.spec.rev);
        return n;
    }
    tracing::warn!(node = %id, "copy did not show a write in time; answering from etcd");
    match view {
        Some(v) => NodeRef::from_view(v),
        None => match state.cluster.get_node(&id.to_string()).await {
            Ok(v) => NodeRef::from_view(&v),
            Err(_) => NodeRef {
                spec: Arc::new(SpecEntry::new(
                    ferric_model::NodeSpec::new(id, "", now_ms()),
                    0,
                )),
                status: None,
                holder: None,
            },
        },
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let drivers = drivers(&state);
    let spec = node_input::create(&body, v, &drivers, creation_ms())?;
    let id = state.creator.create(spec).await?;
    let node = settled_node(&state, id, None).await;
    let base = request::base_url(&state, &headers);
    let mut resp = request::json(StatusCode::CREATED, &Render::full(v, &base).node(&node));
    if let Ok(loc) = HeaderValue::from_str(&format!("{base}/v1/nodes/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Ironic refuses most changes while a provision transition is under way.
fn check_patch_state(node: &NodeRef, ops: &[PatchOp], v: ApiVersion) -> Result<(), ApiError> {
    let spec = &node.spec.spec;
    let state = node.status().provision_state;
    let only_removes_instance =
        ops.len() == 1 && matches!(&ops[0].op, Op::Remove { path } if path == "/instance_uuid");
    if spec.maintenance && only_removes_instance {
        return Ok(());
    }
    if node_json::target_provision_state(node).is_some() && !update_allowed(state) {
        return Err(ApiError::Conflict(format!(
            "Node {} can not be updated while a state transition is in progress.",
            spec.id
        )));
    }
    if state == ProvisionState::Inspecting && v.at_least(version::V_INSPECT_WAIT) {
        return Err(ApiError::Conflict(format!(
            "Cannot update node \"{}\" while it is in state \"inspecting\".",
            spec.id
        )));
    }
    Ok(())
}

pub async fn patch(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["reset_interfaces"])?;
    let reset = params.bool("reset_interfaces")?;
    if reset.is_some() && !v.at_least(version::V_RESET_INTERFACES) {
        return Err(ApiError::not_acceptable());
    }
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let ops = crate::json_patch::parse(&body)
        .map_err(|e| ApiError::BadRequest(format!("Schema error for patch: {e}")))?;
    node_input::check_patch(&ops, v)?;
    let node = request::lookup(&state, &ident, v).await?;
    if let Some(project) = &caller.project {
        let rel = crate::policy::relation(project, &node.spec.spec)
            .ok_or_else(|| ApiError::node_not_found(&ident))?;
        let fields = ops.iter().flat_map(|op| {
            ["path", "from"].into_iter().filter_map(|k| {
                let p = op.raw.get(k)?.as_str()?;
                p.trim_start_matches('/').split('/').next()
            })
        });
        crate::policy::check_patch_fields(&caller, rel, fields).map_err(ApiError::Forbidden)?;
    }
    let drivers = drivers(&state);
    let id = node.id().to_string();
    let patch_readable = |view: &NodeView, spec: &mut ferric_model::NodeSpec| {
        let fresh = NodeRef::from_view(view);
        check_patch_state(&fresh, &ops, v)?;
        node_input::apply_patch(&fresh, &ops, v, &drivers, reset == Some(true), spec)
    };
    let result = if node.spec_unreadable() {
        None
    } else {
        Some(state.cluster.update_node(&id, patch_readable).await)
    };
    let view = match result {
        Some(Ok(view)) => view,
        Some(Err(e)) if !matches!(e, ApiError::Cluster(ClusterError::Corrupt { .. })) => {
            return Err(e)
        }
        // The spec cannot be read (as the copy says, or as etcd said just now): the patch
        // applies to a stand-in built from what can be read, and must make it a valid spec.
        _ => {
            state
                .cluster
                .replace_spec(&id, |records| {
                    let view = records
                        .view()
                        .ok_or_else(|| ApiError::node_not_found(&id))?;
                    let mut spec = view.spec.clone();
                    let readable = matches!(records.spec(), Some(Ok(_)));
                    if readable {
                        patch_readable(&view, &mut spec)?;
                        return Ok(spec);
                    }
                    let fresh = NodeRef::from_view(&view);
                    check_patch_state(&fresh, &ops, v)?;
                    node_input::apply_patch(
                        &fresh,
                        &ops,
                        v,
                        &drivers,
                        reset == Some(true),
                        &mut spec,
                    )?;
                    valid_replacement(&mut spec, records, &drivers)?;
                    Ok::<_, ApiError>(spec)
                })
                .await?
        }
    };
    let node = settled_node(&state, view.spec.id, Some(&view)).await;
    let base = request::base_url(&state, &headers);
    Ok(request::json(
        StatusCode::OK,
        &Render::full(v, &base).viewed_by(&caller).node(&node),
    ))
}

/// Completes a spec that replaces an unreadable one: a driver is required (the stand-in
/// knows one only when the record's leading fields could be read), the creation time is now
/// (the old one is unknown), and the owner's request sequences continue.
fn valid_replacement(
    spec: &mut ferric_model::NodeSpec,
    records: &NodeRecords,
    drivers: &crate::node_input::Drivers,
) -> Result<(), ApiError> {
    if spec.driver.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "The spec record of node {} cannot be read and its driver is unknown: the patch must set /driver (and whatever else the node needs, e.g. /driver_info), or PUT a full node body.",
            records.id
        )));
    }
    drivers.check(&spec.driver, &spec.conductor_group)?;
    spec.created_at_ms = now_ms();
    let (status, _) = records.status();
    continue_sequences(spec, None, &status);
    Ok(())
}

/// `PUT /v1/nodes/{node}` (Ferric extension; Ironic has none): replaces the node's spec with
/// a full node body, validated as `POST /v1/nodes` validates it. Meant for a node whose spec
/// record cannot be read; on a readable one it keeps the creation time and pending requests,
/// and is refused while a state transition is under way, as PATCH is.
pub async fn replace(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let drivers = drivers(&state);
    let given = node_input::create(&body, v, &drivers, creation_ms())?;
    if body.get("uuid").is_some_and(|u| !u.is_null()) && given.id != id {
        return Err(ApiError::BadRequest(format!(
            "The uuid of a node cannot change (the body names {}, the node is {id}).",
            given.id
        )));
    }
    let view = state
        .cluster
        .replace_spec(&id.to_string(), |records| {
            let mut spec = given.clone();
            spec.id = records.id;
            match records.spec() {
                Some(Ok(old)) => {
                    let view = records
                        .view()
                        .ok_or_else(|| ApiError::node_not_found(&ident))?;
                    check_patch_state(&NodeRef::from_view(&view), &[], v)?;
                    spec.created_at_ms = old.created_at_ms;
                    continue_sequences(&mut spec, Some(&old), &view.status);
                }
                _ => valid_replacement(&mut spec, records, &drivers)?,
            }
            Ok::<_, ApiError>(spec)
        })
        .await?;
    let node = settled_node(&state, view.spec.id, Some(&view)).await;
    let base = request::base_url(&state, &headers);
    Ok(request::json(
        StatusCode::OK,
        &Render::full(v, &base).node(&node),
    ))
}

/// Provision states Ironic deletes nodes in (any state in maintenance): `available` too, as
/// Ironic's default `[conductor] allow_deleting_available_nodes = True`.
fn delete_allowed(s: ProvisionState) -> bool {
    matches!(
        s,
        ProvisionState::Manageable
            | ProvisionState::Enroll
            | ProvisionState::AdoptFailed
            | ProvisionState::Available
    )
}

fn check_delete(node: &NodeRef) -> Result<(), ApiError> {
    let spec = &node.spec.spec;
    let st = node.status();
    // Ironic's `destroy_node`: in maintenance a node with an instance may still be deleted
    // (its way out for a hopelessly broken node), as any state may.
    if let Some(instance) = spec.instance_uuid.filter(|_| !spec.maintenance) {
        return Err(ApiError::Conflict(format!(
            "Node {} is associated with instance {instance}.",
            spec.id
        )));
    }
    if spec.protected {
        return Err(crate::actions::protected(&spec.id.to_string()));
    }
    if !spec.maintenance && !delete_allowed(st.provision_state) {
        // With an unreadable spec, maintenance is unknown (taken as off): the state rule of
        // the readable status still holds, and the admin is told how to override it.
        let hint = if node.spec_unreadable() {
            format!(" (the spec record of this node cannot be read, so maintenance is unknown; `ferric ctl node repair {} --delete --force` deletes it anyway)", spec.id)
        } else {
            String::new()
        };
        return Err(ApiError::Conflict(format!(
            "Can not delete node \"{}\" while it is in provision state \"{}\". Valid provision states to perform deletion are: \"available\", \"manageable\", \"enroll\", \"adopt failed\", or set the node into maintenance mode{hint}",
            spec.id,
            st.provision_state.as_str()
        )));
    }
    if node_json::is_busy(spec, st) {
        return Err(ApiError::locked(
            &spec.id.to_string(),
            node.holder.as_deref().unwrap_or("(no conductor yet)"),
        ));
    }
    Ok(())
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?;
    check_delete(&node)?;
    let id = node.id();
    // The check runs again on the record read inside the delete's compare-and-swap; its own
    // error is kept aside so that the client gets Ironic's message and code.
    let refused: Mutex<Option<ApiError>> = Mutex::new(None);
    let result = state
        .cluster
        .delete_node(&id.to_string(), |view| {
            check_delete(&NodeRef::from_view(view)).map_err(|e| {
                let msg = e.to_string();
                *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                ClusterError::Invalid(msg)
            })
        })
        .await;
    if let Some(e) = refused.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    result?;
    if let Err(e) = state.cluster.delete_heartbeat(&id).await {
        tracing::warn!(node = %id, error = %e, "could not remove the heartbeat record of a deleted node");
    }
    state
        .informer
        .wait_until(SETTLE, |c| !c.specs.contains_key(&id))
        .await;
    state.wrote(state.informer.revision());
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

/// The creation time of a node enrolled now: the clock in milliseconds, but always after the
/// previous one this gateway gave. Lists are in creation order (Ironic's row order), with ties
/// broken by uuid, so two nodes enrolled one after the other within a millisecond were listed
/// in random order (a flaky pagination test found it).
fn creation_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(prev + 1)
}
