//! Node actions: states, power, provision verbs, maintenance, boot device, validation and agent
//! heartbeats. Each action is recorded as intent in the node's spec (compare-and-swap) and
//! answered 202 once this gateway's copy shows it; whichever conductor owns the node (now or
//! after a failover) carries it out. Checks and messages follow Ironic's API controller.
//!
//! Every action goes parse -> check -> apply: `parse` turns the request body into a typed
//! request (pure; what Ironic refuses before looking the node up), `check` judges it against
//! the node's spec and status (pure; an [`Intent`] or Ironic's error), then the fleet checks
//! that read this gateway's copy (a conductor serves the node, the concurrency caps), and
//! [`apply`] writes the intent and answers. One module per action: [`power`], [`provision`],
//! [`boot_device`], [`heartbeat`]; the console's is `crate::console::states`.

mod boot_device;
mod heartbeat;
mod power;
mod provision;

pub use boot_device::set_boot_device;
pub use heartbeat::heartbeat;
pub(crate) use heartbeat::inspecting;
pub use power::power;
pub(crate) use provision::protected;
pub use provision::provision;

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
use ferric_model::{BootDevice, PowerTarget, Verb};
use serde_json::{json, Map, Value};

/// 202 with `Location` pointing at the node's states (Ironic's answer to an action).
fn accepted(state: &AppState, headers: &HeaderMap, ident: &str) -> Response {
    accepted_at(state, headers, ident, "states")
}

/// 202 with `Location` pointing at `/v1/nodes/<ident>/<path>`.
fn accepted_at(state: &AppState, headers: &HeaderMap, ident: &str, path: &str) -> Response {
    let base = request::base_url(state, headers);
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "{base}/v1/nodes/{}/{path}",
        request::url_encode(ident)
    )) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// The cluster-wide caps on concurrent deploys and cleans, counted over the gateway's copy of
/// the cluster (so several gateways, or requests racing each other, may overshoot a little: the
/// cap protects the fleet's networks and image servers from stampedes, not an exact quota).
pub(crate) fn check_concurrency(state: &AppState, verb: Verb) -> Result<(), ApiError> {
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

/// 503 when no conductor at all is alive: nothing holds the node, so a client is better told
/// now. A node whose driver or conductor group no live conductor serves is held by a caretaker
/// (another live conductor): its requests are accepted as intent (202) and run once a conductor
/// that serves it joins; the node's body and `validate` say why it waits.
pub(crate) fn require_conductor(state: &AppState, node: &NodeRef) -> Result<(), ApiError> {
    if state.informer.read().any_conductor() {
        return Ok(());
    }
    let spec = &node.spec.spec;
    Err(ApiError::Unavailable(format!(
        "No conductor is alive to hold node {} (driver \"{}\", conductor group \"{}\"); the request cannot be accepted now. Please retry later.",
        spec.id, spec.driver, spec.conductor_group
    )))
}

/// Why no live conductor can work on `node` now (None: one serves its driver and group).
pub(crate) fn unserved_reason(state: &AppState, node: &NodeRef) -> Option<String> {
    let spec = &node.spec.spec;
    if state
        .informer
        .read()
        .served(&spec.driver, &spec.conductor_group)
    {
        return None;
    }
    let held = match node.holder.as_deref() {
        Some(holder) => format!(
            "; conductor {holder} holds the node as caretaker and requests wait until one joins"
        ),
        None => String::new(),
    };
    Some(format!(
        "No live conductor serves driver \"{}\" in conductor group \"{}\"{held}.",
        spec.driver, spec.conductor_group
    ))
}

pub(crate) fn who(caller: &Caller) -> String {
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
        json!(node_json::provision_state_str(
            node_json::provision_state(&node),
            v
        )),
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

/// What an action records in the node's spec, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intent {
    Power {
        target: PowerTarget,
        timeout_s: Option<u32>,
    },
    Provision {
        verb: Verb,
        maintenance_ok: bool,
        /// The verb's arguments as JSON text ("" when none).
        args: String,
    },
    BootDevice {
        device: BootDevice,
        persistent: bool,
    },
    /// Into maintenance with a reason, or out of it (which clears the reason; the owner clears
    /// the fault).
    Maintenance {
        on: bool,
        reason: Option<String>,
    },
    Console {
        enabled: bool,
    },
}

/// Writes `intent` into the node's spec (compare-and-swap, in `cluster`), waits until this
/// gateway's copy shows it, and gives Ironic's answer: 202 with `Location` (204 for the boot
/// device, as gophercloud insists). `who` is recorded with power, provision and boot device
/// requests (the node's history names the requester).
pub(crate) async fn apply(
    state: &AppState,
    headers: &HeaderMap,
    ident: &str,
    node: &NodeRef,
    who: &str,
    intent: Intent,
) -> Result<Response, ApiError> {
    let uuid = node.id().to_string();
    // The write starts from this gateway's copy (no read first); `cluster` reads etcd when
    // the copy turns out to be behind.
    let cached = || node.view();
    let rev = match intent {
        Intent::Power { target, timeout_s } => {
            let view = state
                .cluster
                .request_power(cached(), &uuid, target, timeout_s, who)
                .await?;
            Some(view.spec_rev)
        }
        Intent::Provision {
            verb,
            maintenance_ok,
            ref args,
        } => {
            let view = state
                .cluster
                .request_provision(cached(), &uuid, verb, maintenance_ok, args, who)
                .await?;
            Some(view.spec_rev)
        }
        Intent::BootDevice { device, persistent } => {
            let view = state
                .cluster
                .request_boot_device(cached(), &uuid, device, persistent, who)
                .await?;
            Some(view.spec_rev)
        }
        Intent::Maintenance { on, ref reason } => {
            let view = state
                .cluster
                .update_spec_from(cached(), &uuid, |_, spec| {
                    spec.maintenance = on;
                    spec.maintenance_reason = if on { reason.clone() } else { None };
                    Ok(())
                })
                .await?;
            Some(view.spec_rev)
        }
        Intent::Console { enabled } => {
            // Read from etcd, not the copy: another gateway may have changed it a moment ago.
            // Nothing to write when it already is so (Ironic logs "already enabled" and
            // accepts).
            let current = state.cluster.get_node(&uuid).await?;
            if current.spec.console_enabled != enabled {
                let view = state
                    .cluster
                    .update_spec(&uuid, |_, spec| {
                        spec.console_enabled = enabled;
                        Ok(())
                    })
                    .await?;
                Some(view.spec_rev)
            } else {
                None
            }
        }
    };
    if let Some(rev) = rev {
        state.settle(rev).await;
    }
    Ok(match intent {
        // Ironic answers 204 here (gophercloud insists on it), not 202.
        Intent::BootDevice { .. } => StatusCode::NO_CONTENT.into_response(),
        Intent::Console { .. } => accepted_at(state, headers, ident, "states/console"),
        _ => accepted(state, headers, ident),
    })
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
    let intent = Intent::Maintenance { on: true, reason };
    apply(&state, &headers, &ident, &node, "", intent).await
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
    let intent = Intent::Maintenance {
        on: false,
        reason: None,
    };
    apply(&state, &headers, &ident, &node, "", intent).await
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

/// A node's `kind` interface: its own, else its driver's default.
fn interface_of<'a>(spec: &'a ferric_model::NodeSpec, kind: &str) -> Option<&'a str> {
    spec.interface(kind)
}

/// `driver_info` keys among `keys` that are absent or empty.
fn missing_keys<'a>(info: &ferric_model::DriverInfo, keys: &[&'a str]) -> Vec<&'a str> {
    keys.iter()
        .copied()
        .filter(|k| info.get(k).is_none_or(|v| v.is_null() || v == ""))
        .collect()
}

fn ok() -> Value {
    json!({"result": true, "reason": null})
}

fn failed(reason: String) -> Value {
    json!({"result": false, "reason": reason})
}

/// Ferric's answer to Ironic's driver interface validation (`ConductorManager.validate_driver_
/// interfaces`): every interface answers true, or false with a reason, never null. When no live
/// conductor serves the node, every interface is false with that reason (Ironic cannot validate
/// without a conductor either). Power and management need the driver info the driver reads;
/// deploy needs what the deploy interface reads (`direct`: `instance_info.image_source`;
/// `fake`: nothing); console needs its endpoint; boot, network, storage and the `no-*`
/// interfaces are no-ops here and always pass.
fn validation(state: &AppState, node: &NodeRef) -> Value {
    let spec = &node.spec.spec;
    let uuid = spec.id.to_string();
    let unserved = unserved_reason(state, node);
    let info = spec.driver_info();
    let power = match &info {
        Err(e) => failed(format!("Invalid driver_info: {e}")),
        Ok(info) => {
            let required: &[&str] = match spec.driver.as_str() {
                "ipmi" => &["ipmi_address"],
                "redfish" => &["redfish_address", "redfish_system_id"],
                _ => &[],
            };
            let missing = missing_keys(info, required);
            if missing.is_empty() {
                ok()
            } else {
                failed(format!(
                    "Missing the following properties in node's driver_info: {}",
                    missing.join(", ")
                ))
            }
        }
    };
    let deploy = match interface_of(spec, "deploy") {
        Some("fake") => ok(),
        _ => {
            let instance: Value = serde_json::from_str(&spec.instance_info).unwrap_or_default();
            let has_image = instance
                .get("image_source")
                .is_some_and(|v| !v.is_null() && v != "");
            if has_image {
                ok()
            } else {
                failed(format!(
                    "Node {uuid} failed to validate deploy image info. Some parameters were missing. Missing are: ['instance_info.image_source']"
                ))
            }
        }
    };
    let console = match (interface_of(spec, "console"), &info) {
        (Some("fake" | "no-console"), _) => ok(),
        (_, Err(e)) => failed(format!("Invalid driver_info: {e}")),
        (Some("ipmitool" | "ipmitool-socat" | "ipmitool-shellinabox"), Ok(info)) => {
            let missing = missing_keys(info, &["ipmi_address"]);
            if missing.is_empty() {
                ok()
            } else {
                failed(format!(
                    "Missing the following IPMI credentials in node's driver_info: {missing:?}."
                ))
            }
        }
        (Some("ferric-sim"), Ok(info)) => {
            let missing = missing_keys(info, &["redfish_address", "redfish_system_id"]);
            if missing.is_empty() {
                ok()
            } else {
                failed(format!(
                    "Missing the following properties in node's driver_info: {}",
                    missing.join(", ")
                ))
            }
        }
        (other, _) => failed(format!(
            "The console interface {} is not served by Ferric.",
            other.unwrap_or("(none)")
        )),
    };
    let mut out = Map::new();
    // Every interface kind but `vendor`, which validate does not report.
    for &kind in ferric_model::interfaces::KINDS
        .iter()
        .filter(|k| **k != "vendor")
    {
        let name = interface_of(spec, kind).unwrap_or("");
        let v = match (&unserved, kind) {
            (Some(reason), _) => failed(reason.clone()),
            (None, _) if ferric_model::interfaces::unimplemented(kind, name) => failed(format!(
                "Ferric accepts the {name} {kind} interface for compatibility with Ironic's clients but does not implement it: {kind} operations do nothing on this node."
            )),
            // The redfish BIOS interface reads the settings with the node's Redfish
            // credentials: valid when power is.
            (None, "power" | "management") => power.clone(),
            (None, "bios") if name == "redfish" => power.clone(),
            (None, "deploy") => deploy.clone(),
            (None, "console") => console.clone(),
            (None, _) => ok(),
        };
        out.insert(kind.into(), v);
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

#[cfg(test)]
pub(crate) mod tests {
    //! Fixtures for the actions' parse and check tests: request bodies and nodes as plain data.

    use super::*;
    use crate::informer::{SpecEntry, StatusEntry};
    use ferric_model::{NodeId, NodeSpec, NodeStatus, ProvisionState};
    use std::sync::Arc;

    pub(crate) const V_OLD: ApiVersion = ApiVersion {
        minor: 1,
        new_header: false,
    };
    pub(crate) const V_LATEST: ApiVersion = ApiVersion {
        minor: version::MAX_MINOR,
        new_header: false,
    };

    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    /// A node of the fake driver in `state`, held by no conductor.
    pub(crate) fn node(state: ProvisionState) -> NodeRef {
        let id: NodeId = "6f1a0c8e-8f0a-4b7e-9a51-1c2d3e4f5a6b".parse().unwrap();
        let spec = NodeSpec::new(id, "fake-hardware", 1);
        let status = NodeStatus {
            provision_state: state,
            ..NodeStatus::default()
        };
        NodeRef {
            spec: Arc::new(SpecEntry::new(spec, 1)),
            status: Some(Arc::new(StatusEntry {
                status,
                error: None,
            })),
            holder: None,
        }
    }

    pub(crate) fn with_spec(n: &NodeRef, f: impl FnOnce(&mut NodeSpec)) -> NodeRef {
        let mut spec = n.spec.spec.clone();
        f(&mut spec);
        NodeRef {
            spec: Arc::new(SpecEntry::new(spec, n.spec.rev + 1)),
            ..n.clone()
        }
    }

    pub(crate) fn with_status(n: &NodeRef, f: impl FnOnce(&mut NodeStatus)) -> NodeRef {
        let mut status = n.status().clone();
        f(&mut status);
        NodeRef {
            status: Some(Arc::new(StatusEntry {
                status,
                error: None,
            })),
            ..n.clone()
        }
    }

    #[test]
    fn an_accepted_verb_shows_the_state_it_enters_as_ironic_answers_it() {
        use ferric_model::{ProvisionRequest, Verb};
        let n = node(ProvisionState::Manageable);
        let pending = with_spec(&n, |s| {
            s.provision_request = Some(ProvisionRequest {
                seq: 1,
                verb: Verb::Inspect,
                maintenance_ok: false,
                args: String::new(),
                requested_by: "t".into(),
                requested_at_ms: 0,
            })
        });
        // The CLI's `inspect --wait` must not see `manageable` before the conductor took it.
        assert_eq!(
            node_json::provision_state(&pending),
            ProvisionState::Inspecting
        );
        assert_eq!(
            node_json::target_provision_state(&pending),
            Some(ProvisionState::Manageable)
        );
        // Taken up (the status's sequence caught up): the status speaks.
        let taken = with_status(&pending, |st| {
            st.provision_seq_done = 1;
            st.provision_state = ProvisionState::InspectWait;
        });
        assert_eq!(
            node_json::provision_state(&taken),
            ProvisionState::InspectWait
        );
        assert_eq!(node_json::provision_state(&n), ProvisionState::Manageable);
    }
}
