//! `POST /v1/heartbeat/{node}` (the ramdisk agent's heartbeat): parse the body, check it
//! against the node (the agent token pinned while the node waits), record it.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::request;
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_model::now_ms;
use ferric_model::HeartbeatRecord;
use serde_json::{Map, Value};

const AGENT_STATES: &[&str] = &["start", "end", "error"];

const HEARTBEAT_ARGS: &[&str] = &[
    "callback_url",
    "agent_version",
    "agent_token",
    "agent_verify_ca",
    "agent_status",
    "agent_status_message",
];

/// A heartbeat as the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatBody {
    pub callback_url: String,
    pub agent_version: Option<String>,
    pub agent_token: Option<String>,
    pub agent_verify_ca: Option<String>,
    pub agent_status: Option<String>,
    pub agent_status_message: Option<String>,
}

/// The body alone, before the node is looked up: fields this microversion does not know.
pub(crate) fn parse(obj: &Map<String, Value>, v: ApiVersion) -> Result<HeartbeatBody, ApiError> {
    let body = HeartbeatBody {
        callback_url: request::req_string(obj, "callback_url")?,
        agent_version: request::opt_string(obj, "agent_version")?,
        agent_token: request::opt_string(obj, "agent_token")?,
        agent_verify_ca: request::opt_string(obj, "agent_verify_ca")?,
        agent_status: request::opt_string(obj, "agent_status")?,
        agent_status_message: request::opt_string(obj, "agent_status_message")?,
    };
    if body.agent_version.is_some() && !v.at_least(version::V_AGENT_VERSION) {
        return Err(ApiError::BadRequest(
            "Field \"agent_version\" not recognised".into(),
        ));
    }
    if (body.agent_status.is_some() || body.agent_status_message.is_some())
        && !v.at_least(version::V_AGENT_STATUS)
    {
        return Err(ApiError::BadRequest(
            "Fields \"agent_status\" and \"agent_status_message\" not recognised.".into(),
        ));
    }
    if body.agent_verify_ca.is_some() && !v.at_least(version::V_VERIFY_CA) {
        return Err(ApiError::BadRequest(
            "Field \"agent_verify_ca\" not recognised in this version".into(),
        ));
    }
    Ok(body)
}

/// States in which the ramdisk's inspection data, not heartbeats, moves the node on (the data
/// may come while the conductor still confirms the ramdisk boot).
pub(crate) fn inspecting(state: ferric_model::ProvisionState) -> bool {
    matches!(
        state,
        ferric_model::ProvisionState::Inspecting | ferric_model::ProvisionState::InspectWait
    )
}

/// Whether the heartbeat may be recorded for this node.
pub(crate) fn check(body: &HeartbeatBody, node: &NodeRef) -> Result<(), ApiError> {
    let scheme_ok = body
        .callback_url
        .split_once("://")
        .is_some_and(|(scheme, rest)| scheme.contains("http") && !rest.is_empty());
    if !body.callback_url.is_empty() && !scheme_ok {
        return Err(ApiError::BadRequest(
            "An issue with the supplied \"callback_url\" has been detected.".into(),
        ));
    }
    if body.agent_token.is_none() {
        return Err(ApiError::BadRequest(
            "Agent token is required for heartbeat processing.".into(),
        ));
    }
    let pinned = node
        .status
        .as_ref()
        .filter(|st| st.status.provision_state.is_wait())
        .and_then(|st| st.status.agent.as_ref())
        .and_then(|a| a.token.clone());
    if pinned.is_some_and(|t| Some(&t) != body.agent_token.as_ref()) {
        // Not recorded: it must not replace the last heartbeat of the node's real agent.
        return Err(ApiError::BadRequest(
            "Invalid or missing agent token received.".into(),
        ));
    }
    if let Some(s) = &body.agent_status {
        if !AGENT_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Agent status is invalid. Valid states are {}.",
                AGENT_STATES.join(",")
            )));
        }
    }
    Ok(())
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_RAMDISK) {
        return Err(ApiError::no_such_resource());
    }
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, HEARTBEAT_ARGS)?;
    let body = parse(&obj, v)?;
    let node = request::lookup(&state, &ident, v).await?;
    check(&body, &node)?;
    // Only the token the lookup of this boot issued counts, as in Ironic's conductor
    // (`is_agent_token_valid`): with no token issued (no lookup yet, or the agent's work
    // ended), any token is refused, so that nobody can name a callback URL for a node whose
    // agent has not looked it up.
    let valid = match state.cluster.agent_token(&node.id()).await {
        Ok(rec) => rec.is_some_and(|r| r.matches(body.agent_token.as_deref())),
        Err(ferric_cluster::ClusterError::Corrupt { key, source }) => {
            // Unreadable: no token can be checked against it (the conductor wipes it when it
            // boots the ramdisk again).
            tracing::warn!(%key, error = %source, "unreadable agent token record");
            false
        }
        Err(e) => return Err(e.into()),
    };
    if !valid {
        return Err(ApiError::BadRequest(
            "Invalid or missing agent token received.".into(),
        ));
    }
    if node
        .status
        .as_ref()
        .is_some_and(|st| inspecting(st.status.provision_state))
    {
        // Accepted, not recorded: inspection ends with the inspection data, whose record in
        // the heartbeat's place must not be replaced before the conductor takes it.
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let rec = HeartbeatRecord {
        at_ms: now_ms(),
        callback_url: body.callback_url,
        agent_version: body.agent_version,
        agent_token: body.agent_token,
        agent_verify_ca: body.agent_verify_ca,
        agent_status: body.agent_status,
        agent_status_message: body.agent_status_message,
        recorded_by: state.config.name.clone(),
    };
    let rev = state.cluster.record_heartbeat(&node.id(), &rec).await?;
    state.wrote(rev);
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, obj, with_status, V_LATEST, V_OLD};
    use super::*;
    use ferric_model::{AgentProgress, ProvisionState};
    use serde_json::json;

    fn body(token: Option<&str>) -> HeartbeatBody {
        HeartbeatBody {
            callback_url: "http://192.0.2.10:9999".into(),
            agent_version: None,
            agent_token: token.map(str::to_string),
            agent_verify_ca: None,
            agent_status: None,
            agent_status_message: None,
        }
    }

    #[test]
    fn fields_need_their_microversion() {
        let all = json!({
            "callback_url": "http://a:1",
            "agent_version": "9",
            "agent_token": "t",
            "agent_status": "start",
        });
        assert_eq!(
            parse(&obj(all.clone()), V_LATEST)
                .unwrap()
                .agent_status
                .as_deref(),
            Some("start")
        );
        assert_eq!(
            parse(&obj(all), V_OLD).unwrap_err().to_string(),
            "Field \"agent_version\" not recognised"
        );
        assert!(matches!(
            parse(&obj(json!({"agent_token": "t"})), V_LATEST),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn tokens_and_urls_are_checked_against_the_node() {
        let n = node(ProvisionState::Available);
        assert!(check(&body(Some("t")), &n).is_ok());
        assert_eq!(
            check(&body(None), &n).unwrap_err().to_string(),
            "Agent token is required for heartbeat processing."
        );
        let mut ftp = body(Some("t"));
        ftp.callback_url = "ftp://x".into();
        assert_eq!(
            check(&ftp, &n).unwrap_err().to_string(),
            "An issue with the supplied \"callback_url\" has been detected."
        );
        let mut odd = body(Some("t"));
        odd.agent_status = Some("dancing".into());
        assert_eq!(
            check(&odd, &n).unwrap_err().to_string(),
            "Agent status is invalid. Valid states are start,end,error."
        );
        // A waiting node's pinned token: only its own agent may heartbeat.
        let waiting = with_status(&node(ProvisionState::CleanWait), |s| {
            s.agent = Some(AgentProgress {
                state: ProvisionState::Cleaning,
                steps: vec![],
                done: 0,
                booted_at_ms: 0,
                token: Some("real".into()),
                heartbeat_rev: 0,
                last_heartbeat_ms: None,
                maintenance_ok: false,
            })
        });
        assert!(check(&body(Some("real")), &waiting).is_ok());
        assert_eq!(
            check(&body(Some("other")), &waiting)
                .unwrap_err()
                .to_string(),
            "Invalid or missing agent token received."
        );
    }
}
