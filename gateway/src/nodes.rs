//! `/v1/nodes`: list (filters, `fields`, `detail`, pagination), show, enroll, JSON Patch and
//! delete, with Ironic's checks and messages. Reads come from the gateway's copy; writes go to
//! etcd with compare-and-swap and are answered once the copy shows them.
//!
//! Layout: [`list`] (filters, sorting, pages), [`write`] (enroll, patch, delete); this file has
//! `show` and what both use.

mod list;
mod write;

pub use list::{list, list_detail};
pub use write::{create, delete, patch, replace};

use crate::error::ApiError;
use crate::node_input::Drivers;
use crate::node_json::{self, Render, F};
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

/// Ironic's `max_limit`.
pub const MAX_LIMIT: usize = 1000;

/// The drivers a node may use, from the copy (taken before any `.await`).
pub(crate) fn drivers(state: &AppState) -> Drivers {
    Drivers {
        known: state.config.known_drivers.clone(),
        live: state.informer.read().live_drivers.clone(),
    }
}

fn needs(version: ApiVersion, minor: u32) -> Result<(), ApiError> {
    if version.at_least(minor) {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(format!(
            "Request not acceptable. The minimal required API version should be 1.{minor}"
        )))
    }
}

/// `?fields=` validated against the version (406 for newer fields, 400 for unknown ones).
pub(crate) fn requested_fields(
    params: &Params,
    version: ApiVersion,
) -> Result<Option<Vec<F>>, ApiError> {
    let Some(names) = params.list("fields") else {
        return Ok(None);
    };
    if !version.at_least(version::V_FIELDS) {
        return Err(ApiError::not_acceptable());
    }
    let mut out = Vec::new();
    for name in &names {
        match node_json::field_by_name(name) {
            Some((_, since)) if !version.at_least(since) => return Err(ApiError::not_acceptable()),
            Some((f, _)) => out.push(f),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "Field {name} is not a valid field."
                )))
            }
        }
    }
    Ok(Some(out))
}

pub async fn show(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["fields"])?;
    let fields = requested_fields(&params, v)?;
    let node = request::lookup(&state, &ident, v).await?;
    let base = request::base_url(&state, &headers);
    let render = match &fields {
        Some(f) => Render::only(v, &base, f),
        None => Render::full(v, &base),
    }
    .viewed_by(&caller);
    Ok(request::json(StatusCode::OK, &render.node(&node)))
}
