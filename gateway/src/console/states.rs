//! Ironic's console state API: `GET|PUT /v1/nodes/{node}/states/console` (the intent is
//! `spec.console_enabled`, compare-and-swap like every other action).

use crate::actions::{apply, Intent};
use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::node_json::iso8601;
use crate::request;
use crate::version::ApiVersion;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_model::ConsoleRecord;
use ferric_model::NodeId;
use serde_json::{json, Map, Value};

/// `GET /v1/nodes/{node}/states/console`: Ironic's `{"console_enabled", "console_info"}`.
/// While enabled, `console_info` is `{"type": "websocket", "url": <this gateway's console
/// websocket>, "ferric": {...}}`, the extra object showing the session as its conductor
/// records it (`consoles/<uuid>`).
pub async fn states(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    if !node.spec.spec.console_enabled {
        return Ok(request::json(
            StatusCode::OK,
            &json!({"console_enabled": false, "console_info": null}),
        ));
    }
    // One key, read per request (the copy does not follow `consoles/`). Without it the answer
    // is still Ironic's; only the extras say less.
    let record = match state.cluster.get_console(&id).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(node = %id, error = %e, "cannot read the console record");
            None
        }
    };
    let info = json!({
        "type": "websocket",
        "url": websocket_url(&request::base_url(&state, &headers), &id),
        "ferric": session_json(node.holder.as_deref(), record.as_ref()),
    });
    Ok(request::json(
        StatusCode::OK,
        &json!({"console_enabled": true, "console_info": info}),
    ))
}

/// `ws[s]://host/v1/nodes/<uuid>/console/ws` from the base URL of links (`http[s]://host`).
fn websocket_url(base: &str, id: &NodeId) -> String {
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/v1/nodes/{id}/console/ws")
}

/// Ferric's view of the session: `starting` until the owner records one (or when the record
/// could not be read: `unknown`), then the record's `active` or `reconnecting`.
fn session_json(holder: Option<&str>, record: Option<&Option<ConsoleRecord>>) -> Value {
    match record {
        None => json!({"state": "unknown", "conductor": holder}),
        Some(None) => json!({"state": "starting", "conductor": holder, "last_error": null}),
        Some(Some(r)) => json!({
            "state": r.state,
            "conductor": r.conductor,
            "interface": r.interface,
            "started_at": iso8601(r.started_at_ms),
            "active_since": r.active_since_ms.map(iso8601),
            "last_error": r.last_error,
        }),
    }
}

/// Ironic's `args.boolean` (oslo's `bool_from_string(strict=True)`).
fn enabled_arg(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    let v = match obj.get("enabled") {
        None | Some(Value::Null) => {
            return Err(ApiError::BadRequest(
                "Missing mandatory parameter: enabled".into(),
            ))
        }
        Some(v) => v,
    };
    crate::node_input::parse_bool(v).ok_or_else(|| {
        let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        ApiError::BadRequest(format!(
            "Invalid enabled: Unrecognized value '{shown}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ))
    })
}

/// Whether the node takes `enabled`: a node whose console interface is `no-console` cannot
/// enable it; disabling is always taken. Maintenance does not matter.
fn check(enabled: bool, node: &NodeRef) -> Result<Intent, ApiError> {
    let spec = &node.spec.spec;
    if enabled
        && spec
            .interfaces
            .get("console_interface")
            .is_some_and(|i| i == "no-console")
    {
        return Err(ApiError::BadRequest(format!(
            "Driver {} does not support console (disabled or not implemented).",
            spec.driver
        )));
    }
    Ok(Intent::Console { enabled })
}

/// `PUT /v1/nodes/{node}/states/console {"enabled": bool}`: records the intent; the owner
/// starts or stops the console. 202 with `Location` to the console state, also when nothing
/// changes (Ironic logs "already enabled" and accepts). Maintenance does not matter.
pub async fn set_enabled(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["enabled"])?;
    let enabled = enabled_arg(&obj)?;
    let node = request::lookup(&state, &ident, v).await?;
    let intent = check(enabled, &node)?;
    // Ironic's `get_topic_for`: with no conductor alive nothing would ever open it, unseen.
    // A node no live conductor serves is held by a caretaker; its console opens once a
    // conductor that serves it joins.
    if enabled {
        crate::actions::require_conductor(&state, &node)?;
    }
    apply(&state, &headers, &ident, &node, "", intent).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        let id: NodeId = "6f1a0c8e-8f0a-4b7e-9a51-1c2d3e4f5a6b".parse().unwrap();
        assert_eq!(
            websocket_url("http://gw:6385", &id),
            format!("ws://gw:6385/v1/nodes/{id}/console/ws")
        );
        assert_eq!(
            websocket_url("https://gw.example", &id),
            format!("wss://gw.example/v1/nodes/{id}/console/ws")
        );
    }
    #[test]
    fn enabled_is_an_ironic_boolean() {
        let obj = |v: Value| {
            let mut m = Map::new();
            m.insert("enabled".into(), v);
            m
        };
        assert!(enabled_arg(&obj(json!(true))).unwrap());
        assert!(!enabled_arg(&obj(json!("false"))).unwrap());
        assert!(enabled_arg(&obj(json!("maybe"))).is_err());
        assert!(enabled_arg(&obj(json!(2))).is_err());
        assert!(enabled_arg(&obj(json!({}))).is_err());
        assert!(enabled_arg(&obj(Value::Null)).is_err());
        assert!(enabled_arg(&Map::new()).is_err());
    }

    #[test]
    fn no_console_refuses_enabling_only() {
        use crate::actions::tests::{node, with_spec};
        use ferric_model::ProvisionState;
        let n = node(ProvisionState::Available);
        assert_eq!(check(true, &n).unwrap(), Intent::Console { enabled: true });
        let none = with_spec(&n, |s| {
            s.interfaces
                .insert("console_interface".into(), "no-console".into());
        });
        assert_eq!(
            check(true, &none).unwrap_err().to_string(),
            "Driver fake-hardware does not support console (disabled or not implemented)."
        );
        assert_eq!(
            check(false, &none).unwrap(),
            Intent::Console { enabled: false }
        );
    }
}
