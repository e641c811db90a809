//! `PUT /v1/nodes/{node}/states/power`: parse the body, check it against the node, apply.

use super::{apply, require_conductor, who, Intent};
use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::request;
use crate::version::{self, ApiVersion};
use crate::{AppState, Caller};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use ferric_model::delivery::{guard, Ack};
use ferric_model::{now_ms, PowerTarget, ProvisionState};
use serde_json::{Map, Value};

/// A power request as the client wrote it (the target is matched against the node's state
/// later: an unknown one is Ironic's invalid-state error, which names the node's power state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PowerBody {
    pub target: String,
    pub timeout: Option<i64>,
}

/// Ironic's `args.integer`: integers, and strings of one.
pub(crate) fn integer(name: &str, v: &Value) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest(format!("Expected an integer for {name}: {v}"));
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The body alone, before the node is looked up: Ironic answers these before a 404.
pub(crate) fn parse(obj: &Map<String, Value>, v: ApiVersion) -> Result<PowerBody, ApiError> {
    let target = request::req_string(obj, "target")?;
    let timeout = match obj.get("timeout") {
        None | Some(Value::Null) => None,
        Some(t) => Some(integer("timeout", t)?),
    };
    let soft = matches!(target.as_str(), "soft power off" | "soft rebooting");
    if (soft || timeout.is_some()) && !v.at_least(version::V_SOFT_POWER) {
        return Err(ApiError::not_acceptable());
    }
    if timeout.is_some_and(|t| t < 1) {
        return Err(ApiError::BadRequest(
            "timeout has to be positive integer".into(),
        ));
    }
    Ok(PowerBody { target, timeout })
}

/// Whether the node takes the request now; `ident` is how the client named it.
pub(crate) fn check(body: &PowerBody, node: &NodeRef, ident: &str) -> Result<Intent, ApiError> {
    let st = node.status();
    // Only Ironic's spellings (not `ctl`'s short forms).
    let target = PowerTarget::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == body.target)
        .ok_or_else(|| {
            ApiError::invalid_state(
                &body.target,
                ident,
                st.power_state.map_or("None", |p| p.as_str()),
            )
        })?;
    if matches!(
        st.provision_state,
        ProvisionState::Cleaning | ProvisionState::CleanWait
    ) {
        return Err(ApiError::invalid_state(
            target.as_str(),
            ident,
            st.provision_state.as_str(),
        ));
    }
    if node.spec.spec.disable_power_off && matches!(target, PowerTarget::Off | PowerTarget::SoftOff)
    {
        return Err(ApiError::Conflict(format!(
            "Failed to set node power state to {}.",
            target.as_str()
        )));
    }
    if let Some(p) = node.spec.spec.pending_power(st) {
        return Err(ApiError::Conflict(format!(
            "Node {} is locked by host {}, please retry after the current operation is completed (power action \"{}\" is in progress).",
            node.id(),
            node.holder.as_deref().unwrap_or("(no conductor yet)"),
            p.target.as_str()
        )));
    }
    Ok(Intent::Power {
        target,
        timeout_s: body.timeout.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
    })
}

pub async fn power(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["target", "timeout"])?;
    let body = parse(&obj, v)?;
    let node = request::lookup(&state, &ident, v).await?;
    let intent = check(&body, &node, &ident)?;
    require_conductor(&state, &node)?;
    if let Intent::Power { target, .. } = &intent {
        race_guard(&state, &caller, &node, *target).await?;
    }
    apply(&state, &headers, &ident, &node, &who(&caller), intent).await
}

/// The race guard (seed 002): a power request of the compute service that would reverse a
/// power change the compute service has not acknowledged is refused with 409, and the pending
/// event is re-sent at once. See `ferric_model::delivery::guard` for the rule.
async fn race_guard(
    state: &AppState,
    caller: &Caller,
    node: &NodeRef,
    target: PowerTarget,
) -> Result<(), ApiError> {
    if !caller.is_one_of(&state.config.compute_callers) {
        return Ok(());
    }
    let id = node.id();
    let (cursor, last) = state.cluster.last_event(&id).await?;
    let Some(last) = last else {
        return Ok(());
    };
    let ack = match cursor.as_ref().map(|c| &c.compute) {
        Some(lane) if lane.done >= last.seq => Ack::At {
            at_ms: lane
                .result_of(last.seq)
                .map(|r| r.at_ms)
                .or(cursor.as_ref().map(|c| c.updated_at_ms))
                .unwrap_or(0),
        },
        _ => Ack::Pending,
    };
    let grace_ms = state.config.compute_ack_grace.as_millis() as u64;
    let Some(why) = guard(Some(&last), ack, target.final_state(), now_ms(), grace_ms) else {
        return Ok(());
    };
    if ack == Ack::Pending {
        if let Err(e) = state
            .cluster
            .request_resend(&id, last.seq, &who(caller))
            .await
        {
            tracing::warn!(node = %id, error = %e, "could not ask for the pending event to be re-sent");
        }
    }
    tracing::info!(node = %id, caller = %caller.name, target = target.as_str(), why, "power request of the compute service refused by the race guard");
    Err(ApiError::Conflict(format!(
        "Refused to set node {id} to {}: {why}. The node stays as last requested; the compute service will learn its state from the event.",
        target.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, obj, V_LATEST, V_OLD};
    use super::*;
    use ferric_model::PowerState;
    use serde_json::json;

    #[test]
    fn parses_targets_and_timeouts() {
        let b = parse(&obj(json!({"target": "power on"})), V_LATEST).unwrap();
        assert_eq!(b.target, "power on");
        assert_eq!(b.timeout, None);
        let b = parse(
            &obj(json!({"target": "rebooting", "timeout": "30"})),
            V_LATEST,
        )
        .unwrap();
        assert_eq!(b.timeout, Some(30));
        assert!(matches!(
            parse(&obj(json!({"timeout": 3})), V_LATEST),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse(&obj(json!({"target": "power on", "timeout": 0})), V_LATEST),
            Err(ApiError::BadRequest(m)) if m == "timeout has to be positive integer"
        ));
        assert!(matches!(
            parse(&obj(json!({"target": "power on", "timeout": "soon"})), V_LATEST),
            Err(ApiError::BadRequest(m)) if m == "Expected an integer for timeout: \"soon\""
        ));
    }

    #[test]
    fn soft_power_and_timeouts_need_their_microversion() {
        for body in [
            json!({"target": "soft power off"}),
            json!({"target": "soft rebooting"}),
            json!({"target": "power on", "timeout": 5}),
        ] {
            assert!(
                matches!(
                    parse(&obj(body.clone()), V_OLD),
                    Err(ApiError::NotAcceptable(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn checks_follow_the_node() {
        let body = |t: &str| PowerBody {
            target: t.into(),
            timeout: Some(7),
        };
        let mut n = node(ProvisionState::Available);
        assert_eq!(
            check(&body("power off"), &n, "n1").unwrap(),
            Intent::Power {
                target: PowerTarget::Off,
                timeout_s: Some(7)
            }
        );
        let e = check(&body("off"), &n, "n1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "The requested action \"off\" can not be performed on node \"n1\" while it is in state \"None\"."
        );
        n = super::super::tests::with_status(&n, |s| s.power_state = Some(PowerState::On));
        let e = check(&body("off"), &n, "n1").unwrap_err();
        assert!(e.to_string().contains("state \"power on\""), "{e}");
        let cleaning = node(ProvisionState::Cleaning);
        assert!(matches!(
            check(&body("power on"), &cleaning, "n1"),
            Err(ApiError::BadRequest(_))
        ));
        let guarded = super::super::tests::with_spec(&n, |s| s.disable_power_off = true);
        assert!(matches!(
            check(&body("soft power off"), &guarded, "n1"),
            Err(ApiError::Conflict(m)) if m == "Failed to set node power state to soft power off."
        ));
        assert!(check(&body("rebooting"), &guarded, "n1").is_ok());
    }
}
