//! `PUT /v1/nodes/{node}/states/provision`: parse the body, check the verb against the node
//! (Ironic's order of checks and messages), apply.

use super::{apply, check_concurrency, require_conductor, who, Intent};
use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::node_json;
use crate::request;
use crate::version::{self, ApiVersion};
use crate::{AppState, Caller};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use ferric_model::provision::on_verb;
use ferric_model::{ProvisionState, Verb};
use serde_json::{Map, Value};

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

/// A provision request as the client wrote it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProvisionBody {
    pub target: String,
    pub configdrive: Option<Value>,
    pub clean_steps: Option<Vec<Value>>,
    pub deploy_steps: Option<Vec<Value>>,
    pub service_steps: Option<Vec<Value>>,
    pub rescue_password: Option<String>,
    pub disable_ramdisk: Option<bool>,
    pub runbook: Option<String>,
    pub maintenance_ok: bool,
    /// The verb's arguments as recorded with the request: the body without `target`,
    /// `maintenance_ok` and nulls, as JSON text ("" when none).
    pub args: String,
}

/// The body alone, before the node is looked up: Ironic answers these before a 404.
pub(crate) fn parse(obj: &Map<String, Value>, v: ApiVersion) -> Result<ProvisionBody, ApiError> {
    let target = request::req_string(obj, "target")?;
    let configdrive = match obj.get("configdrive") {
        None | Some(Value::Null) => None,
        Some(c @ (Value::String(_) | Value::Object(_))) => Some(c.clone()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Expected types <class 'NoneType'>, <class 'dict'>, <class 'str'> for configdrive: {other}"
            )))
        }
    };
    let clean_steps = steps(obj, "clean_steps")?;
    let deploy_steps = steps(obj, "deploy_steps")?;
    let service_steps = steps(obj, "service_steps")?;
    let rescue_password = request::opt_string(obj, "rescue_password")?;
    let disable_ramdisk = request::opt_bool(obj, "disable_ramdisk")?;
    let runbook = request::opt_string(obj, "runbook")?;
    let maintenance_ok = request::opt_bool(obj, "maintenance_ok")?.unwrap_or(false);
    if !v.at_least(verb_version(&target)) {
        return Err(ApiError::not_acceptable());
    }
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
    Ok(ProvisionBody {
        target,
        configdrive,
        clean_steps,
        deploy_steps,
        service_steps,
        rescue_password,
        disable_ramdisk,
        runbook,
        maintenance_ok,
        args,
    })
}

/// Whether the node takes the verb now, with these arguments, at this microversion.
pub(crate) fn check(
    body: &ProvisionBody,
    node: &NodeRef,
    v: ApiVersion,
) -> Result<Intent, ApiError> {
    let target = &body.target;
    let spec = &node.spec.spec;
    let st = node.status();
    let uuid = spec.id.to_string();
    if matches!(target.as_str(), "active" | "rebuild" | "deploy") && spec.maintenance {
        return Err(ApiError::in_maintenance("provisioning", &uuid));
    }
    // A verb the state machine does not take here: 409 while a conductor holds the node (the
    // client should retry), 400 otherwise (Ironic's order of checks).
    let verb = Verb::parse(target);
    let refuse = || {
        if let Some(host) = node_json::reservation(node) {
            ApiError::locked(&uuid, host)
        } else {
            ApiError::invalid_state(target, &uuid, st.provision_state.as_str())
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
    check_arguments(body, verb, st.provision_state, v)?;
    // Ironic's `NodeProtected` (403) and `NodeIsRetired` (400).
    if spec.protected && matches!(verb, Verb::Undeploy | Verb::Rebuild) {
        return Err(protected(&uuid));
    }
    if spec.retired && verb == Verb::Provide {
        return Err(ApiError::BadRequest(format!(
            "The providing operation can't be performed on node {uuid} because it is retired."
        )));
    }
    // Refused in maintenance (Ironic's conductor refuses these with 400): the operator may
    // still ask for manual cleaning explicitly, to diagnose the node.
    if spec.maintenance {
        let op = match verb {
            Verb::Clean if !body.maintenance_ok => Some("cleaning"),
            Verb::Rescue => Some("rescuing"),
            Verb::Unrescue => Some("unrescuing"),
            Verb::Service => Some("servicing"),
            _ => None,
        };
        if let Some(op) = op {
            return Err(ApiError::in_maintenance(op, &uuid));
        }
    }
    Ok(Intent::Provision {
        verb,
        maintenance_ok: body.maintenance_ok,
        args: body.args.clone(),
    })
}

/// Ironic's `NodeProtected` (403).
pub(crate) fn protected(uuid: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "Node {uuid} is protected and cannot be undeployed, rebuilt or deleted"
    ))
}

/// Whether the arguments fit the verb (a verb the node takes in `state`).
fn check_arguments(
    body: &ProvisionBody,
    verb: Verb,
    state: ProvisionState,
    v: ApiVersion,
) -> Result<(), ApiError> {
    if body.runbook.is_some() {
        return Err(ApiError::BadRequest(
            "Ferric has no runbooks; \"runbook\" is not supported.".into(),
        ));
    }
    if body.configdrive.is_some() && !matches!(verb, Verb::Deploy | Verb::Rebuild) {
        return Err(ApiError::BadRequest(
            "Adding a config drive is only supported when setting provision state to active, rebuild"
                .into(),
        ));
    }
    if body.clean_steps.is_some() && verb != Verb::Clean {
        return Err(ApiError::BadRequest(
            "\"clean_steps\" is only valid when setting target provision state to clean".into(),
        ));
    }
    if body.deploy_steps.is_some() {
        if !v.at_least(version::V_DEPLOY_STEPS) {
            return Err(ApiError::not_acceptable());
        }
        if !matches!(verb, Verb::Deploy | Verb::Rebuild) {
            return Err(ApiError::BadRequest(
                "\"deploy_steps\" is only valid when setting target provision state to active or rebuild".into(),
            ));
        }
    }
    if body.rescue_password.is_some() && verb != Verb::Rescue {
        return Err(ApiError::BadRequest(
            "\"rescue_password\" is only valid when setting target provision state to rescue"
                .into(),
        ));
    }
    if verb == Verb::Abort {
        if state == ProvisionState::InspectWait && !v.at_least(version::V_INSPECT_ABORT) {
            return Err(ApiError::not_acceptable());
        }
        if state == ProvisionState::WaitCallBack && !v.at_least(version::V_DEPLOY_WAIT_ABORT) {
            return Err(ApiError::not_acceptable());
        }
    }
    if body.service_steps.is_some() && verb != Verb::Service {
        return Err(ApiError::BadRequest(
            "\"service_steps\" is only valid when setting target provision state to service".into(),
        ));
    }
    if body.disable_ramdisk.is_some() {
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
    if body.maintenance_ok && verb != Verb::Clean {
        return Err(ApiError::BadRequest(
            "\"maintenance_ok\" is only valid when setting target provision state to clean".into(),
        ));
    }
    match verb {
        Verb::Clean if body.clean_steps.as_ref().is_none_or(|s| s.is_empty()) => {
            Err(ApiError::BadRequest(
                "\"clean_steps\" is required when setting target provision state to clean".into(),
            ))
        }
        Verb::Rescue
            if body
                .rescue_password
                .as_deref()
                .is_none_or(|p| p.trim().is_empty()) =>
        {
            Err(ApiError::BadRequest(
                "A non-empty \"rescue_password\" is required when setting target provision state to rescue".into(),
            ))
        }
        Verb::Service if body.service_steps.as_ref().is_none_or(|s| s.is_empty()) => {
            Err(ApiError::BadRequest(
                "\"service_steps\" is required when setting target provision state to service"
                    .into(),
            ))
        }
        _ => Ok(()),
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
    let body = parse(&obj, v)?;
    let node = request::lookup(&state, &ident, v).await?;
    let intent = check(&body, &node, v)?;
    require_conductor(&state, &node)?;
    if let Intent::Provision { verb, .. } = &intent {
        check_concurrency(&state, *verb)?;
    }
    apply(&state, &headers, &ident, &node, &who(&caller), intent).await
}

#[cfg(test)]
mod tests {
    use super::super::tests::{node, obj, with_spec, V_LATEST, V_OLD};
    use super::*;
    use serde_json::json;

    fn parsed(body: Value) -> ProvisionBody {
        parse(&obj(body), V_LATEST).unwrap()
    }

    fn refused(body: Value, state: ProvisionState) -> String {
        let n = node(state);
        check(&parsed(body), &n, V_LATEST).unwrap_err().to_string()
    }

    #[test]
    fn parses_arguments_and_keeps_them_for_the_record() {
        let b = parsed(json!({
            "target": "clean",
            "clean_steps": [{"interface": "deploy", "step": "erase_devices"}],
            "maintenance_ok": true,
            "runbook": null,
        }));
        assert_eq!(b.target, "clean");
        assert!(b.maintenance_ok);
        assert_eq!(b.clean_steps.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            b.args,
            r#"{"clean_steps":[{"interface":"deploy","step":"erase_devices"}]}"#
        );
        assert_eq!(parsed(json!({"target": "manage"})).args, "");
    }

    #[test]
    fn malformed_bodies_are_400_and_new_verbs_need_their_version() {
        for (body, want) in [
            (json!({"target": "active", "configdrive": 3}), "Expected types <class 'NoneType'>, <class 'dict'>, <class 'str'> for configdrive: 3"),
            (json!({"target": "clean", "clean_steps": [{"step": "x"}]}), "Invalid clean_steps: step 0 must be an object with \"interface\" and \"step\""),
            (json!({"target": "clean", "clean_steps": "x"}), "Expected types <class 'NoneType'>, <class 'list'> for clean_steps: \"x\""),
        ] {
            let e = parse(&obj(body.clone()), V_LATEST).unwrap_err();
            assert!(matches!(&e, ApiError::BadRequest(_)), "{body}");
            assert_eq!(e.to_string(), want, "{body}");
        }
        assert!(matches!(
            parse(&obj(json!({"target": "deploy"})), V_OLD),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(parse(&obj(json!({"target": "active"})), V_OLD).is_ok());
    }

    #[test]
    fn verbs_follow_the_state_machine() {
        let n = node(ProvisionState::Manageable);
        assert_eq!(
            check(&parsed(json!({"target": "provide"})), &n, V_LATEST).unwrap(),
            Intent::Provision {
                verb: Verb::Provide,
                maintenance_ok: false,
                args: String::new()
            }
        );
        assert_eq!(
            refused(json!({"target": "deploy"}), ProvisionState::Manageable),
            format!(
                "The requested action \"deploy\" can not be performed on node \"{}\" while it is in state \"manageable\".",
                n.id()
            )
        );
        assert!(
            refused(json!({"target": "frobnicate"}), ProvisionState::Available)
                .contains("\"frobnicate\"")
        );
    }

    #[test]
    fn arguments_must_fit_the_verb() {
        let m = ProvisionState::Manageable;
        assert_eq!(
            refused(json!({"target": "clean"}), m),
            "\"clean_steps\" is required when setting target provision state to clean"
        );
        assert_eq!(
            refused(json!({"target": "provide", "configdrive": "x"}), m),
            "Adding a config drive is only supported when setting provision state to active, rebuild"
        );
        assert_eq!(
            refused(json!({"target": "provide", "maintenance_ok": true}), m),
            "\"maintenance_ok\" is only valid when setting target provision state to clean"
        );
        assert_eq!(
            refused(json!({"target": "provide", "runbook": "r"}), m),
            "Ferric has no runbooks; \"runbook\" is not supported."
        );
    }

    #[test]
    fn maintenance_refuses_what_ironic_refuses() {
        let n = with_spec(&node(ProvisionState::Available), |s| s.maintenance = true);
        let e = check(&parsed(json!({"target": "active"})), &n, V_LATEST).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("The provisioning operation can't be performed on node {} because it's in maintenance mode.", n.id())
        );
        let n = with_spec(&node(ProvisionState::Manageable), |s| s.maintenance = true);
        let steps = json!([{"interface": "deploy", "step": "erase_devices"}]);
        let clean = parsed(json!({"target": "clean", "clean_steps": steps}));
        assert!(check(&clean, &n, V_LATEST)
            .unwrap_err()
            .to_string()
            .contains("cleaning operation"));
        let clean_anyway =
            parsed(json!({"target": "clean", "clean_steps": steps, "maintenance_ok": true}));
        assert!(matches!(
            check(&clean_anyway, &n, V_LATEST).unwrap(),
            Intent::Provision {
                verb: Verb::Clean,
                maintenance_ok: true,
                ..
            }
        ));
    }
}
