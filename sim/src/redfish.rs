//! The Redfish face of the fleet: service root, systems collection, system resource, reset action,
//! boot override PATCH, BIOS resource and its attribute registry (`bios`), with Basic auth, the per-system behaviour (unreachable, latency,
//! failures) and Redfish error bodies. Every request addressed to a known system is logged.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};

use crate::fleet::SimState;
use crate::log::{client_of, LogOp, Record};
use crate::system::{BootEnabled, BootMode, BootTarget, ResetType};

/// Largest request body accepted; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const RESET_SUFFIX: &str = "Actions/ComputerSystem.Reset";

// Redfish Base registry message ids used in error bodies.
const MSG_GENERAL: &str = "Base.1.0.GeneralError";
const MSG_MALFORMED_JSON: &str = "Base.1.0.MalformedJSON";
const MSG_PARAM_MISSING: &str = "Base.1.0.ActionParameterMissing";
const MSG_PARAM_NOT_IN_LIST: &str = "Base.1.0.ActionParameterValueNotInList";
const MSG_PROP_NOT_IN_LIST: &str = "Base.1.0.PropertyValueNotInList";
const MSG_PROP_UNKNOWN: &str = "Base.1.0.PropertyUnknown";
const MSG_PROP_TYPE: &str = "Base.1.0.PropertyValueTypeError";
const MSG_NOT_FOUND: &str = "Base.1.0.ResourceMissingAtURI";
const MSG_UNAUTHORIZED: &str = "Base.1.0.InsufficientPrivilege";
const MSG_INTERNAL: &str = "Base.1.0.InternalError";
const MSG_NOT_ALLOWED: &str = "Base.1.0.ActionNotSupported";
const MSG_TOO_LARGE: &str = "Base.1.0.GeneralError";

/// A JSON answer with the headers Redfish clients expect.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}

/// A Redfish error body: `error.code` is the general error, the specific one is in the
/// extended info (as BMCs and sushy-tools do).
pub(crate) fn error(status: StatusCode, message_id: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": MSG_GENERAL,
            "message": message,
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_0_0.Message",
                "MessageId": message_id,
                "Message": message,
                "Severity": if status.is_server_error() { "Critical" } else { "Warning" },
                "Resolution": "None",
            }],
        }
    });
    let mut resp = json_response(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ferric-sim\""),
        );
    }
    resp
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        MSG_UNAUTHORIZED,
        "authentication required: HTTP Basic with the simulator's credentials",
    )
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        MSG_NOT_FOUND,
        &format!("no resource at {path}"),
    )
}

fn auth_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
}

pub(crate) async fn versions() -> Response {
    json_response(StatusCode::OK, &json!({ "v1": "/redfish/v1/" }))
}

/// The service root: the one Redfish resource readable without credentials. No `SessionService`,
/// so sushy's "auto" authentication falls back to Basic.
pub(crate) async fn service_root() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
            "@odata.id": "/redfish/v1/",
            "Id": "RootService",
            "Name": "Ferric simulated BMC fleet",
            "RedfishVersion": "1.6.0",
            "UUID": "00000000-0000-0000-0000-0000000f3e51",
            "Systems": { "@odata.id": "/redfish/v1/Systems" },
            "Registries": { "@odata.id": "/redfish/v1/Registries" },
        }),
    )
}

/// The registry collection, the BIOS attribute registry's file and the registry itself
/// (`which`: the path after `/redfish/v1/Registries`), behind the fleet's credentials.
pub(crate) async fn registries(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    if !state.authorized(auth_header(&headers)) {
        return unauthorized();
    }
    let path = req.uri().path().trim_end_matches('/');
    let file = format!("/redfish/v1/Registries/{}", crate::bios::REGISTRY);
    let body = match path {
        "/redfish/v1/Registries" => crate::bios::registries(),
        p if p == file => crate::bios::registry_file(),
        p if p.strip_prefix(file.as_str()) == Some("/Registry") => crate::bios::registry(),
        p => return not_found(p),
    };
    json_response(StatusCode::OK, &body)
}

pub(crate) async fn systems(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if !state.authorized(auth_header(&headers)) {
        return unauthorized();
    }
    let members: Vec<Value> = state
        .ids()
        .iter()
        .map(|id| json!({ "@odata.id": format!("/redfish/v1/Systems/{id}") }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "@odata.id": "/redfish/v1/Systems",
            "Name": "Computer System Collection",
            "Members@odata.count": members.len(),
            "Members": members,
        }),
    )
}

/// Anything else: Redfish paths need credentials before they say "not found".
pub(crate) async fn fallback(State(state): State<Arc<SimState>>, req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/redfish/") {
        if !state.authorized(auth_header(req.headers())) {
            return unauthorized();
        }
        return not_found(path);
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

pub(crate) async fn system_resource(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    handle(state, id, None, req).await
}

pub(crate) async fn system_subresource(
    State(state): State<Arc<SimState>>,
    Path((id, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(state, id, Some(rest), req).await
}

/// What a request to a system asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    GetBios,
    Patch,
    Reset,
    NotAllowed(&'static str),
    NotFound,
}

fn classify(method: &Method, rest: Option<&str>) -> Op {
    match rest.map(|r| r.trim_end_matches('/')) {
        None | Some("") => match *method {
            Method::GET | Method::HEAD => Op::Get,
            Method::PATCH => Op::Patch,
            _ => Op::NotAllowed("GET, HEAD, PATCH"),
        },
        Some("Bios") => match *method {
            Method::GET | Method::HEAD => Op::GetBios,
            _ => Op::NotAllowed("GET, HEAD"),
        },
        Some(RESET_SUFFIX) => match *method {
            Method::POST => Op::Reset,
            _ => Op::NotAllowed("POST"),
        },
        Some(_) => Op::NotFound,
    }
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

/// The action a request asks for, as sent, for the log (also when invalid).
fn action_of(op: Op, body: Option<&Value>) -> Option<String> {
    let body = body?;
    let v = match op {
        Op::Reset => body.get("ResetType"),
        Op::Patch => body
            .get("Boot")
            .and_then(|b| b.get("BootSourceOverrideTarget")),
        _ => None,
    }?;
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// One request to a known-or-unknown system: decide the answer, log it, answer.
async fn handle(state: Arc<SimState>, id: String, rest: Option<String>, req: Request) -> Response {
    let Some(idx) = state.index_of(&id) else {
        // Not a system of this fleet: nothing reached a system, so nothing to log.
        return not_found(req.uri().path());
    };
    let received = SystemTime::now();
    let (parts, body) = req.into_parts();
    let op = classify(&parts.method, rest.as_deref());
    let body = read_body(body).await;
    let parsed: Option<Result<Value, serde_json::Error>> = match &body {
        Ok(b) if !b.is_empty() => Some(serde_json::from_slice(b)),
        _ => None,
    };
    let action = action_of(op, parsed.as_ref().and_then(|p| p.as_ref().ok()));
    let client = client_of(
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let traceparent = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let record = |status: Option<StatusCode>| Record {
        received,
        action: action.clone(),
        status: status.map(|s| s.as_u16()),
        client: client.clone(),
        traceparent: traceparent.clone(),
        ..Record::new(
            LogOp::Redfish,
            &id,
            parts.method.as_str(),
            parts.uri.path().to_string(),
        )
    };

    let (behaviour, fail) = {
        let mut s = state.lock(idx);
        let fail = s.roll_failure();
        (s.behaviour.clone(), fail)
    };
    if behaviour.unreachable {
        // Received but never answered, and without effect. The client gives up and closes the
        // connection (which drops this future), or the server drops it when it stops.
        state.record(record(None));
        return std::future::pending().await;
    }
    let latency = behaviour.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let resp = if !state.authorized(auth_header(&parts.headers)) {
        unauthorized()
    } else if let Err(BodyError::TooLarge) = body {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            MSG_TOO_LARGE,
            &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    } else if fail {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            MSG_INTERNAL,
            "simulated BMC failure (failure_rate)",
        )
    } else if let Err(BodyError::Broken) = body {
        error(
            StatusCode::BAD_REQUEST,
            MSG_MALFORMED_JSON,
            "the request body could not be read",
        )
    } else {
        match op {
            Op::Get => get_system(&state, idx),
            Op::GetBios => json_response(StatusCode::OK, &crate::bios::bios(&id, idx)),
            Op::Patch => match &parsed {
                Some(Ok(v)) => patch_system(&state, idx, v),
                Some(Err(e)) => malformed(e),
                None => malformed_empty(),
            },
            Op::Reset => match &parsed {
                Some(Ok(v)) => reset_system(&state, idx, v),
                Some(Err(e)) => malformed(e),
                None => malformed_empty(),
            },
            Op::NotAllowed(allow) => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    MSG_NOT_ALLOWED,
                    &format!("{} is not allowed here", parts.method),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            Op::NotFound => not_found(parts.uri.path()),
        }
    };
    // Logged before answering: a client that saw the answer can find it in the log.
    state.record(record(Some(resp.status())));
    resp
}

fn malformed(e: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        MSG_MALFORMED_JSON,
        &format!("the request body is not valid JSON: {e}"),
    )
}

fn malformed_empty() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        MSG_MALFORMED_JSON,
        "the request body is empty; a JSON object is required",
    )
}

fn get_system(state: &SimState, idx: usize) -> Response {
    let id = state.id(idx);
    let (power, boot) = {
        let s = state.lock(idx);
        (s.power(), s.boot)
    };
    let uri = format!("/redfish/v1/Systems/{id}");
    let targets: Vec<&str> = BootTarget::ALL.iter().map(|t| t.as_str()).collect();
    let resets: Vec<&str> = ResetType::ALL.iter().map(|r| r.as_str()).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
            "@odata.id": uri,
            "Id": id,
            "Name": format!("Simulated system {id}"),
            "SystemType": "Physical",
            "PowerState": power.as_str(),
            "Status": { "State": "Enabled", "Health": "OK" },
            "Bios": { "@odata.id": format!("{uri}/Bios") },
            "Boot": {
                "BootSourceOverrideTarget": boot.target.as_str(),
                "BootSourceOverrideEnabled": boot.enabled.as_str(),
                "BootSourceOverrideMode": boot.mode.as_str(),
                "BootSourceOverrideTarget@Redfish.AllowableValues": targets,
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": format!("{uri}/{RESET_SUFFIX}"),
                    "ResetType@Redfish.AllowableValues": resets,
                }
            },
        }),
    )
}

fn reset_system(state: &Arc<SimState>, idx: usize, body: &Value) -> Response {
    let Some(obj) = body.as_object() else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_MALFORMED_JSON,
            "the request body must be a JSON object",
        );
    };
    let Some(v) = obj.get("ResetType") else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PARAM_MISSING,
            "the action ComputerSystem.Reset requires the parameter ResetType",
        );
    };
    let Some(reset) = v.as_str().and_then(ResetType::parse) else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PARAM_NOT_IN_LIST,
            &format!(
                "the value {v} for the parameter ResetType is not one of: {}",
                ResetType::ALL.map(|r| r.as_str()).join(", ")
            ),
        );
    };
    state.reset(idx, reset);
    StatusCode::NO_CONTENT.into_response()
}

/// Validates a whole PATCH before applying any of it.
fn patch_system(state: &SimState, idx: usize, body: &Value) -> Response {
    let Some(obj) = body.as_object() else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_MALFORMED_JSON,
            "the request body must be a JSON object",
        );
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "Boot") {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PROP_UNKNOWN,
            &format!("the property {k} is not known or not writable; only Boot is"),
        );
    }
    let Some(boot) = obj.get("Boot") else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PROP_UNKNOWN,
            "nothing to change: the body has no Boot property",
        );
    };
    let Some(boot) = boot.as_object() else {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PROP_TYPE,
            "the property Boot must be an object",
        );
    };
    if boot.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            MSG_PROP_UNKNOWN,
            "nothing to change: Boot is empty",
        );
    }
    let mut target = None;
    let mut enabled = None;
    let mut mode = None;
    for (k, v) in boot {
        let ok = match k.as_str() {
            "BootSourceOverrideTarget" => {
                target = v.as_str().and_then(BootTarget::parse);
                check_allowed(target.is_some(), BootTarget::ALL.iter().map(|x| x.as_str()))
            }
            "BootSourceOverrideEnabled" => {
                enabled = v.as_str().and_then(BootEnabled::parse);
                check_allowed(
                    enabled.is_some(),
                    BootEnabled::ALL.iter().map(|x| x.as_str()),
                )
            }
            "BootSourceOverrideMode" => {
                mode = v.as_str().and_then(BootMode::parse);
                check_allowed(mode.is_some(), BootMode::ALL.iter().map(|x| x.as_str()))
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    MSG_PROP_UNKNOWN,
                    &format!("the property Boot/{k} is not known or not writable"),
                )
            }
        };
        if let Err(allowed) = ok {
            return error(
                StatusCode::BAD_REQUEST,
                MSG_PROP_NOT_IN_LIST,
                &format!("the value {v} for the property Boot/{k} is not one of: {allowed}"),
            );
        }
    }
    let mut s = state.lock(idx);
    if let Some(t) = target {
        s.boot.target = t;
    }
    if let Some(e) = enabled {
        s.boot.enabled = e;
    }
    if let Some(m) = mode {
        s.boot.mode = m;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `Err(list of allowed values)` when a value was not in its enumeration.
fn check_allowed<'a>(valid: bool, allowed: impl Iterator<Item = &'a str>) -> Result<(), String> {
    if valid {
        Ok(())
    } else {
        Err(allowed.collect::<Vec<_>>().join(", "))
    }
}
