//! Node actions: states, power, provision verbs, maintenance, boot device, validation and agent
//! heartbeats. Each action is recorded as intent in the node's spec (compare-and-swap) and
//! answered 202 once this gateway's copy shows it; whichever conductor owns the node (now or
//! after a failover) carries it out. Checks and messages follow Ironic's API controller.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::node_json::{self, iso8601};
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::{AppState, Caller};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_cluster::heartbeats::HeartbeatRecord;
use ferric_model::provision::on_verb;
use ferric_model::{now_ms, BootDevice, PowerTarget, ProvisionState, Verb};
use serde_json::{json, Map, Value};

/// 202 with `Location` pointing at the node's states (Ironic's answer to an action).
fn accepted(state: &AppState, headers: &HeaderMap, ident: &str) -> Response {
    let base = request::base_url(state, headers);
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "{base}/v1/nodes/{}/states",
        request::url_encode(ident)
    )) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// 503 when no live conductor could carry the action out (it would wait, unseen, until one
/// starts; a client is better told now).
/// The cluster-wide caps on concurrent deploys and cleans, counted over the gateway's copy of
/// the cluster (so several gateways, or requests racing each other, may overshoot a little: the
/// cap protects the fleet's networks and image servers from stampedes, not an exact quota).
fn check_concurrency(state: &AppState, verb: Verb) -> Result<(), ApiError> {
    use ferric_model::ProvisionState as S;
    let (what, states, cap) = match verb {
        Verb::Deploy | Verb::Rebuild => (
            "deploys",
            &[S::Deploying, S::WaitCallBack, S::DeployHold][..],
            state.config.max_concurrent_deploys,
        ),
        Verb::Provide | Verb::Clean | Verb::Undeploy => (
            "cleans",
            &[S::Cleaning, S::CleanWait, S::CleanHold][..],
            state.config.max_concurrent_cleans,
        ),
        _ => return Ok(()),
    };
    let copy = state.informer.read();
    let busy: usize = states
        .iter()
        .map(|s| copy.provision_counts.get(s).copied().unwrap_or(0))
        .sum();
    if busy >= cap {
        return Err(ApiError::Unavailable(format!(
            "The maximum number of concurrent {what} ({cap}) has been reached ({busy} in progress); try again later."
        )));
    }
    Ok(())
}

fn require_conductor(state: &AppState, node: &NodeRef) -> Result<(), ApiError> {
    let spec = &node.spec.spec;
    if state
        .informer
        .read()
        .served(&spec.driver, &spec.conductor_group)
    {
        return Ok(());
    }
    Err(ApiError::Unavailable(format!(
        "No conductor is serving driver \"{}\" in conductor group \"{}\"; the request cannot be carried out now. Please retry later.",
        spec.driver, spec.conductor_group
    )))
}

fn who(caller: &Caller) -> String {
    format!("api:{}", caller.name)
}

pub async fn states(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    let st = node.status();
    let mut out = Map::new();
    out.insert(
        "console_enabled".into(),
        json!(node.spec.spec.console_enabled),
    );
    out.insert(
        "last_error".into(),
        json!(st.last_error.as_deref().or(node.status_error())),
    );
    out.insert(
        "power_state".into(),
        json!(st.power_state.map(|p| p.as_str())),
    );
    out.insert(
        "provision_state".into(),
        json!(node_json::provision_state_str(st.provision_state, v)),
    );
    out.insert(
        "target_power_state".into(),
        json!(node_json::target_power_state(&node)),
    );
    out.insert(
        "target_provision_state".into(),
        json!(node_json::target_provision_state(&node)
            .and_then(|t| node_json::provision_state_str(t, v))),
    );
    out.insert(
        "provision_updated_at".into(),
        json!(st.provision_updated_at_ms.map(iso8601)),
    );
    if v.at_least(12) {
        out.insert("raid_config".into(), json!({}));
        out.insert("target_raid_config".into(), json!({}));
    }
    if v.at_least(version::V_BOOT_MODE) {
        out.insert("boot_mode".into(), Value::Null);
        out.insert("secure_boot".into(), Value::Null);
    }
    Ok(request::json(StatusCode::OK, &Value::Object(out)))
}

/// Ironic's `args.integer`: integers, and strings of one.
fn integer(name: &str, v: &Value) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest(format!("Expected an integer for {name}: {v}"));
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
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
    let target = request::req_string(&obj, "target")?;
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
    let node = request::lookup(&state, &ident, v).await?;
    let st = node.status();
    // Only Ironic's spellings (not `ctl`'s short forms).
    let target = PowerTarget::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == target)
        .ok_or_else(|| {
            ApiError::invalid_state(
                &target,
                &ident,
                st.power_state.map_or("None", |p| p.as_str()),
            )
        })?;
    if matches!(
        st.provision_state,
        ProvisionState::Cleaning | ProvisionState::CleanWait
    ) {
        return Err(ApiError::invalid_state(
            target.as_str(),
            &ident,
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
    require_conductor(&state, &node)?;
    let timeout_s = timeout.map(|t| u32::try_from(t).unwrap_or(u32::MAX));
    let view = state
        .cluster
        .request_power(&node.id().to_string(), target, timeout_s, &who(&caller))
        .await?;
    state.settle(view.spec_rev).await;
    Ok(accepted(&state, &headers, &ident))
}

const PROVISION_ARGS: &[&str] = &[
    "target",
    "configdrive",
    "clean_steps",
    "deploy_steps",
    "rescue_password",
    "disable_ramdisk",
    "service_steps",
    "runbook",
    // Ferric: run manual cleaning although the node is in maintenance.
    "maintenance_ok",
];

/// The minimum version of each verb (Ironic's `MIN_VERB_VERSIONS` and later verb checks).
fn verb_version(target: &str) -> u32 {
    match target {
        "manage" | "provide" => 4,
        "inspect" => 6,
        "abort" => 13,
        "clean" => 15,
        "adopt" => 17,
        "rescue" | "unrescue" => 38,
        "deploy" | "undeploy" => version::V_DEPLOY_VERBS,
        "unhold" => version::V_UNHOLD,
        "service" => version::V_SERVICE,
        _ => 1,
    }
}

fn steps(obj: &Map<String, Value>, name: &str) -> Result<Option<Vec<Value>>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            for (i, step) in items.iter().enumerate() {
                let ok = step.as_object().is_some_and(|s| {
                    s.get("interface").is_some_and(Value::is_string)
                        && s.get("step")
                            .is_some_and(|v| v.as_str().is_some_and(|t| !t.is_empty()))
                });
                if !ok {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid {name}: step {i} must be an object with \"interface\" and \"step\""
                    )));
                }
            }
            Ok(Some(items.clone()))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "Expected types <class 'NoneType'>, <class 'list'> for {name}: {other}"
        ))),
    }
}

pub async fn provision(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, PROVISION_ARGS)?;
    let target = request::req_string(&obj, "target")?;
    let configdrive = match obj.get("configdrive") {
        None | Some(Value::Null) => None,
        Some(c @ (Value::String(_) | Value::Object(_))) => Some(c.clone()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Expected types <class 'NoneType'>, <class 'dict'>, <class 'str'> for configdrive: {other}"
            )))
        }
    };
    let clean_steps = steps(&obj, "clean_steps")?;
    let deploy_steps = steps(&obj, "deploy_steps")?;
    let service_steps = steps(&obj, "service_steps")?;
    let rescue_password = request::opt_string(&obj, "rescue_password")?;
    let disable_ramdisk = request::opt_bool(&obj, "disable_ramdisk")?;
    let runbook = request::opt_string(&obj, "runbook")?;
    let maintenance_ok = request::opt_bool(&obj, "maintenance_ok")?.unwrap_or(false);

    if !v.at_least(verb_version(&target)) {
        return Err(ApiError::not_acceptable());
    }
    let node = request::lookup(&state, &ident, v).await?;
    let spec = &node.spec.spec;
    let st = node.status();
    let uuid = spec.id.to_string();
    if matches!(target.as_str(), "active" | "rebuild" | "deploy") && spec.maintenance {
        return Err(ApiError::in_maintenance("provisioning", &uuid));
    }
    // A verb the state machine does not take here: 409 while a conductor holds the node (the
    // client should retry), 400 otherwise (Ironic's order of checks).
    let verb = Verb::parse(&target);
    let refuse = || {
        if let Some(host) = node_json::reservation(&node) {
            ApiError::locked(&uuid, host)
        } else {
            ApiError::invalid_state(&target, &uuid, st.provision_state.as_str())
        }
    };
    let verb = verb.ok_or_else(refuse)?;
    if let Some(p) = spec.pending_provision(st) {
        return Err(ApiError::Conflict(format!(
            "Node {uuid} is locked by host {}, please retry after the current operation is completed (provision action \"{}\" has not been taken up yet).",
            node.holder.as_deref().unwrap_or("(no conductor yet)"),
            p.verb.as_str()
        )));
    }
    on_verb(st.provision_state, verb).map_err(|_| refuse())?;
    if runbook.is_some() {
        return Err(ApiError::BadRequest(
            "Ferric has no runbooks; \"runbook\" is not supported.".into(),
        ));
    }
    if configdrive.is_some() && !matches!(verb, Verb::Deploy | Verb::Rebuild) {
        return Err(ApiError::BadRequest(
            "Adding a config drive is only supported when setting provision state to active, rebuild"
                .into(),
        ));
    }
    if clean_steps.is_some() && verb != Verb::Clean {
        return Err(ApiError::BadRequest(
            "\"clean_steps\" is only valid when setting target provision state to clean".into(),
        ));
    }
    if deploy_steps.is_some() {
        if !v.at_least(version::V_DEPLOY_STEPS) {
            return Err(ApiError::not_acceptable());
        }
        if !matches!(verb, Verb::Deploy | Verb::Rebuild) {
            return Err(ApiError::BadRequest(
                "\"deploy_steps\" is only valid when setting target provision state to active or rebuild".into(),
            ));
        }
    }
    if rescue_password.is_some() && verb != Verb::Rescue {
        return Err(ApiError::BadRequest(
            "\"rescue_password\" is only valid when setting target provision state to rescue"
                .into(),
        ));
    }
    if verb == Verb::Abort {
        if st.provision_state == ProvisionState::InspectWait
            && !v.at_least(version::V_INSPECT_ABORT)
        {
            return Err(ApiError::not_acceptable());
        }
        if st.provision_state == ProvisionState::WaitCallBack
            && !v.at_least(version::V_DEPLOY_WAIT_ABORT)
        {
            return Err(ApiError::not_acceptable());
        }
    }
    if service_steps.is_some() && verb != Verb::Service {
        return Err(ApiError::BadRequest(
            "\"service_steps\" is only valid when setting target provision state to service".into(),
        ));
    }
    if let Some(_d) = disable_ramdisk {
        if !v.at_least(version::V_CLEAN_DISABLE_RAMDISK) {
            return Err(ApiError::not_acceptable());
        }
        if verb != Verb::Clean {
            return Err(ApiError::BadRequest(
                "\"disable_ramdisk\" is only valid when setting target provision state to clean"
                    .into(),
            ));
        }
    }
    if maintenance_ok && verb != Verb::Clean {
        return Err(ApiError::BadRequest(
            "\"maintenance_ok\" is only valid when setting target provision state to clean".into(),
        ));
    }
    match verb {
        Verb::Clean if clean_steps.as_ref().is_none_or(|s| s.is_empty()) => {
            return Err(ApiError::BadRequest(
                "\"clean_steps\" is required when setting target provision state to clean".into(),
            ))
        }
        Verb::Rescue if rescue_password.as_deref().is_none_or(|p| p.trim().is_empty()) => {
            return Err(ApiError::BadRequest(
                "A non-empty \"rescue_password\" is required when setting target provision state to rescue".into(),
            ))
        }
        Verb::Service if service_steps.as_ref().is_none_or(|s| s.is_empty()) => {
            return Err(ApiError::BadRequest(
                "\"service_steps\" is required when setting target provision state to service"
                    .into(),
            ))
        }
        _ => {}
    }
    // Refused in maintenance (Ironic's conductor refuses these with 400): the operator may
    // still ask for manual cleaning explicitly, to diagnose the node.
    if spec.maintenance {
        let op = match verb {
            Verb::Clean if !maintenance_ok => Some("cleaning"),
            Verb::Rescue => Some("rescuing"),
            Verb::Unrescue => Some("unrescuing"),
            Verb::Service => Some("servicing"),
            _ => None,
        };
        if let Some(op) = op {
            return Err(ApiError::in_maintenance(op, &uuid));
        }
    }
    require_conductor(&state, &node)?;
    check_concurrency(&state, verb)?;
    let mut args = Map::new();
    for (k, v) in obj.iter() {
        if !matches!(k.as_str(), "target" | "maintenance_ok") && !v.is_null() {
            args.insert(k.clone(), v.clone());
        }
    }
    let args = if args.is_empty() {
        String::new()
    } else {
        Value::Object(args).to_string()
    };
    let view = state
        .cluster
        .request_provision(&uuid, verb, maintenance_ok, &args, &who(&caller))
        .await?;
    state.settle(view.spec_rev).await;
    Ok(accepted(&state, &headers, &ident))
}

pub async fn maintenance_on(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    // The reason may come in the body (clients) or the query string (pecan allows both).
    let params = Params::parse(q.as_deref())?;
    params.only(&["reason"])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["reason"])?;
    let reason = request::opt_string(&obj, "reason")?.or(params.get("reason").map(String::from));
    let node = request::lookup(&state, &ident, v).await?;
    let view = state
        .cluster
        .update_spec(&node.id().to_string(), |_, spec| {
            spec.maintenance = true;
            spec.maintenance_reason = reason.clone();
            Ok(())
        })
        .await?;
    state.settle(view.spec_rev).await;
    Ok(accepted(&state, &headers, &ident))
}

pub async fn maintenance_off(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?;
    let view = state
        .cluster
        .update_spec(&node.id().to_string(), |_, spec| {
            // Leaving maintenance clears the reason here; the owner clears `fault` (status).
            spec.maintenance = false;
            spec.maintenance_reason = None;
            Ok(())
        })
        .await?;
    state.settle(view.spec_rev).await;
    Ok(accepted(&state, &headers, &ident))
}

pub async fn boot_device(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    let st = node.status();
    let body = json!({
        "boot_device": st.boot_device.map(|d| d.as_str()),
        "persistent": st.boot_device.map(|_| st.boot_persistent),
    });
    Ok(request::json(StatusCode::OK, &body))
}

pub async fn boot_devices_supported(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    request::lookup(&state, &ident, v).await?;
    let devices: Vec<&str> = BootDevice::ALL.iter().map(|d| d.as_str()).collect();
    Ok(request::json(
        StatusCode::OK,
        &json!({ "supported_boot_devices": devices }),
    ))
}

pub async fn set_boot_device(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(body, &["boot_device", "persistent"])?;
    let device = request::req_string(&obj, "boot_device")?;
    let persistent = request::opt_bool(&obj, "persistent")?.unwrap_or(false);
    let node = request::lookup(&state, &ident, v).await?;
    let device = BootDevice::parse(&device).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Invalid boot device {device} specified. Supported boot devices: {}",
            BootDevice::ALL
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    require_conductor(&state, &node)?;
    let view = state
        .cluster
        .request_boot_device(&node.id().to_string(), device, persistent, &who(&caller))
        .await?;
    state.settle(view.spec_rev).await;
    // Ironic answers 204 here (gophercloud insists on it), not 202.
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ferric's answer to Ironic's driver interface validation: power and management depend on a
/// live conductor serving the node's driver (and, for IPMI and Redfish, on the driver info the
/// driver needs); the other interfaces belong to work Ferric does not do yet.
fn validation(state: &AppState, node: &NodeRef) -> Value {
    let spec = &node.spec.spec;
    let served = state
        .informer
        .read()
        .served(&spec.driver, &spec.conductor_group);
    let info = spec.driver_info();
    let missing: Vec<&str> = match spec.driver.as_str() {
        "ipmi" => vec!["ipmi_address"],
        "redfish" => vec!["redfish_address", "redfish_system_id"],
        _ => vec![],
    }
    .into_iter()
    .filter(|k| {
        info.as_ref()
            .is_ok_and(|i| i.get(k).is_none_or(|v| v.is_null() || v == ""))
    })
    .collect();
    let power = if !served {
        json!({"result": false, "reason": format!("No conductor is serving driver \"{}\" in conductor group \"{}\".", spec.driver, spec.conductor_group)})
    } else if let Err(e) = &info {
        json!({"result": false, "reason": format!("Invalid driver_info: {e}")})
    } else if !missing.is_empty() {
        json!({"result": false, "reason": format!("Missing the following properties in node's driver_info: {}", missing.join(", "))})
    } else {
        json!({"result": true})
    };
    let mut out = Map::new();
    for iface in [
        "bios",
        "boot",
        "console",
        "deploy",
        "firmware",
        "inspect",
        "management",
        "network",
        "power",
        "raid",
        "rescue",
        "storage",
    ] {
        let v = match iface {
            "power" | "management" => power.clone(),
            _ => json!({"result": null, "reason": "not supported by Ferric"}),
        };
        out.insert(iface.into(), v);
    }
    Value::Object(out)
}

pub async fn validate(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    let node = request::lookup(&state, &ident, v).await?;
    Ok(request::json(StatusCode::OK, &validation(&state, &node)))
}

/// `GET /v1/nodes/validate?node=<ident>` (Ironic's older spelling).
pub async fn validate_query(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    params.only(&["node", "node_uuid"])?;
    let ident = params
        .get("node_uuid")
        .or(params.get("node"))
        .ok_or_else(|| ApiError::BadRequest("Missing mandatory parameter: node".into()))?
        .to_string();
    let node = request::lookup(&state, &ident, v).await?;
    Ok(request::json(StatusCode::OK, &validation(&state, &node)))
}

const AGENT_STATES: &[&str] = &["start", "end", "error"];

pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_RAMDISK) {
        return Err(ApiError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let obj = request::action_object(
        body,
        &[
            "callback_url",
            "agent_version",
            "agent_token",
            "agent_verify_ca",
            "agent_status",
            "agent_status_message",
        ],
    )?;
    let callback_url = request::req_string(&obj, "callback_url")?;
    let agent_version = request::opt_string(&obj, "agent_version")?;
    let agent_token = request::opt_string(&obj, "agent_token")?;
    let agent_verify_ca = request::opt_string(&obj, "agent_verify_ca")?;
    let agent_status = request::opt_string(&obj, "agent_status")?;
    let agent_status_message = request::opt_string(&obj, "agent_status_message")?;
    if agent_version.is_some() && !v.at_least(version::V_AGENT_VERSION) {
        return Err(ApiError::BadRequest(
            "Field \"agent_version\" not recognised".into(),
        ));
    }
    if (agent_status.is_some() || agent_status_message.is_some())
        && !v.at_least(version::V_AGENT_STATUS)
    {
        return Err(ApiError::BadRequest(
            "Fields \"agent_status\" and \"agent_status_message\" not recognised.".into(),
        ));
    }
    if agent_verify_ca.is_some() && !v.at_least(version::V_VERIFY_CA) {
        return Err(ApiError::BadRequest(
            "Field \"agent_verify_ca\" not recognised in this version".into(),
        ));
    }
    let node = request::lookup(&state, &ident, v).await?;
    let scheme_ok = callback_url
        .split_once("://")
        .is_some_and(|(scheme, rest)| scheme.contains("http") && !rest.is_empty());
    if !callback_url.is_empty() && !scheme_ok {
        return Err(ApiError::BadRequest(
            "An issue with the supplied \"callback_url\" has been detected.".into(),
        ));
    }
    if agent_token.is_none() {
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
    if pinned.is_some_and(|t| Some(&t) != agent_token.as_ref()) {
        // Not recorded: it must not replace the last heartbeat of the node's real agent.
        return Err(ApiError::BadRequest(
            "Invalid or missing agent token received.".into(),
        ));
    }
    if let Some(s) = &agent_status {
        if !AGENT_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Agent status is invalid. Valid states are {}.",
                AGENT_STATES.join(",")
            )));
        }
    }
    let rec = HeartbeatRecord {
        at_ms: now_ms(),
        callback_url,
        agent_version,
        agent_token,
        agent_verify_ca,
        agent_status,
        agent_status_message,
        recorded_by: state.config.name.clone(),
    };
    let rev = state.cluster.record_heartbeat(&node.id(), &rec).await?;
    state.wrote(rev);
    Ok(StatusCode::ACCEPTED.into_response())
}
