//! The control API under `/sim/` (not Redfish, no auth, not logged): read systems, change their
//! behaviour or power at run time, configure their deploy agents, read the command log, health.
//! The serial console websocket shares the prefix (`console`).
//!
//! | endpoint | body | answer |
//! |---|---|---|
//! | `GET /sim/healthz` | | `{"ok": true, "systems": n}` |
//! | `GET /sim/systems`, `GET /sim/systems/{id}` | | `SystemView`s (power, boot, behaviour, pending, run, agent, serial, nics; one system's also its inventory) |
//! | `PUT /sim/systems/{id}/behaviour`, `PUT /sim/behaviour` | `BehaviourPatch` | the view / `{"systems": n}` |
//! | `PUT /sim/systems/{id}/agent` | `AgentSpec` | the view |
//! | `DELETE /sim/systems/{id}/agent`, `DELETE /sim/agents` | | 204 |
//! | `PUT /sim/agents` | `FleetAgentSpec` (all validated before any is set) | `{"systems": n}` |
//! | `GET`/`DELETE /sim/systems/{id}/serial` | | websocket / 204 (see `console`) |
//! | `GET /sim/log?since=i` | | log entries from index `i` |
//!
//! A system's `nics` are `[{"name": "eth0", "mac": "52:54:00:..", "pxe": true}, ...]` and its
//! `inventory` is what its agent posts as `inventory` when inspecting (IPA's shape; both fixed by
//! the system's index, see `hardware`). An agent's view has its configuration (`inspect`
//! included) and the facts of its latest run: `heartbeats_sent`, `last_status`,
//! `inspection_status` (the HTTP status answered to the inspection post, or the error text),
//! `inspection_uuid` (the node a 2xx answer named), `callback_url` (where its command API is),
//! `died` (`die_after_commands` ended it) and `commands` (`[{"id", "name", "step", "status"}]` in
//! issue order: what Ironic asked of it).
//!
//! Errors are `{"error": "..."}`: 400 for an invalid body (unknown fields included), 404 for an
//! unknown system.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::agent::{AgentConfig, AgentSpec, FleetAgentSpec};
use crate::config::{BehaviourPatch, SimError};
use crate::console;
use crate::fleet::SimState;
use crate::redfish::MAX_BODY_BYTES;

/// Largest `PUT /sim/agents` body: room for a million systems.
const MAX_AGENTS_BODY_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/sim/healthz", get(healthz))
        .route("/sim/systems", get(list_systems))
        .route("/sim/systems/{id}", get(get_system))
        .route("/sim/systems/{id}/behaviour", put(put_system_behaviour))
        .route("/sim/behaviour", put(put_fleet_behaviour))
        .route(
            "/sim/systems/{id}/agent",
            put(put_system_agent).delete(delete_system_agent),
        )
        // A node per system: larger than other bodies (about 50 bytes a system).
        .route(
            "/sim/agents",
            put(put_fleet_agents)
                .layer(DefaultBodyLimit::max(MAX_AGENTS_BODY_BYTES))
                .delete(delete_fleet_agents),
        )
        .route(
            "/sim/systems/{id}/serial",
            get(console::open).delete(console::deactivate),
        )
        .route("/sim/log", get(get_log))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

pub(crate) fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn healthz(State(state): State<Arc<SimState>>) -> Response {
    Json(json!({ "ok": true, "systems": state.ids().len() })).into_response()
}

async fn list_systems(State(state): State<Arc<SimState>>) -> Response {
    Json(state.views()).into_response()
}

async fn get_system(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match state.view(&id) {
        Some(v) => Json(v).into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no system {id}")),
    }
}

/// Parses and validates a behaviour patch; any problem is the client's (400).
fn parse_patch(body: &Bytes) -> Result<BehaviourPatch, Box<Response>> {
    let invalid = |m: String| Box::new(control_error(StatusCode::BAD_REQUEST, m));
    let patch: BehaviourPatch =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid behaviour: {e}")))?;
    patch.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(patch)
}

async fn put_system_behaviour(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(idx) = state.index_of(&id) else {
        return control_error(StatusCode::NOT_FOUND, format!("no system {id}"));
    };
    let patch = match parse_patch(&body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    state.patch(idx, &patch);
    match state.view(&id) {
        Some(v) => Json(v).into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no system {id}")),
    }
}

async fn put_fleet_behaviour(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let patch = match parse_patch(&body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let n = state.ids().len();
    for idx in 0..n {
        state.patch(idx, &patch);
    }
    Json(json!({ "systems": n })).into_response()
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &Bytes,
) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid {what}: {e}"),
        ))
    })
}

fn validate_agent(spec: AgentSpec) -> Result<AgentConfig, Box<Response>> {
    spec.validate()
        .map_err(|e| Box::new(control_error(StatusCode::BAD_REQUEST, e.to_string())))
}

async fn put_system_agent(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(idx) = state.index_of(&id) else {
        return control_error(StatusCode::NOT_FOUND, format!("no system {id}"));
    };
    let config = match parse_json::<AgentSpec>("agent", &body).and_then(validate_agent) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    state.set_agent(idx, Some(config));
    match state.view(&id) {
        Some(v) => Json(v).into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no system {id}")),
    }
}

async fn delete_system_agent(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
) -> Response {
    let Some(idx) = state.index_of(&id) else {
        return control_error(StatusCode::NOT_FOUND, format!("no system {id}"));
    };
    state.set_agent(idx, None);
    StatusCode::NO_CONTENT.into_response()
}

/// Configures the agents of the systems named in `nodes`; all are validated before any is set.
async fn put_fleet_agents(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let spec = match parse_json::<FleetAgentSpec>("agents", &body) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    match state.configure_agents(&spec) {
        Ok(n) => Json(json!({ "systems": n })).into_response(),
        Err(e @ SimError::UnknownSystems(_)) => control_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn delete_fleet_agents(State(state): State<Arc<SimState>>) -> Response {
    for idx in 0..state.ids().len() {
        state.set_agent(idx, None);
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    since: u64,
}

async fn get_log(
    State(state): State<Arc<SimState>>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => Json(state.log().since(q.since)).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e.body_text()),
    }
}
