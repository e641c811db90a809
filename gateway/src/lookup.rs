//! `GET /v1/lookup` (1.22, public like heartbeats): a booted ramdisk finds its node by its
//! MACs (or `node_uuid`) and gets the agent token of this boot, as Ironic's `ramdisk.py` does.
//!
//! - Only a node whose state has an agent working (`ProvisionState::agent_may_look_up`) is
//!   found; any other answer is the same 404, so a caller learns nothing about other nodes.
//! - The first lookup of a boot issues the token: 244 random bits, of which only the SHA-256
//!   is stored (`agent-tokens/<uuid>`); later lookups get `******`. The node's conductor
//!   wipes the record when it boots the ramdisk again and when the agent's work ends.
//! - A heartbeat of a node with a token record must carry that token (`AgentTokenRecord::matches`);
//!   agents that never look up keep the pinning rules of heartbeats.
//! - At most [`LOOKUPS_PER_WINDOW`] lookups per node per [`WINDOW`] per gateway, then 429: a
//!   ramdisk retrying in a tight loop cannot make a gateway read etcd without bound.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_model::port::normalize_mac;
use ferric_model::{now_ms, AgentTokenRecord, NodeId, PortRecord};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const LOOKUPS_PER_WINDOW: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Ironic's `[api]ramdisk_heartbeat_timeout` default: how often the agent heartbeats.
const HEARTBEAT_TIMEOUT_S: u64 = 300;
/// What a lookup answers for a token issued before.
const MASKED: &str = "******";

/// Lookups per node in the current window.
#[derive(Default)]
pub struct Limiter(Mutex<HashMap<NodeId, (Instant, u32)>>);

impl Limiter {
    /// Counts a lookup of `node`; false once the node had its share of the window.
    fn admit(&self, node: NodeId, now: Instant) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            // Forget closed windows rather than grow with every node ever looked up.
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = map.entry(node).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= LOOKUPS_PER_WINDOW
    }
}

/// A fresh token: two v4 uuids from the OS's generator (244 random bits).
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn not_found() -> ApiError {
    ApiError::NotFound("The resource could not be found.".into())
}

/// The node the ramdisk is: by uuid, else the one node all its known MACs' ports belong to.
fn find(state: &AppState, node_uuid: Option<uuid::Uuid>, macs: &[String]) -> Option<NodeRef> {
    let cache = state.informer.read();
    let node = match node_uuid {
        Some(u) => cache.lookup(&u.to_string())?,
        None => {
            let ports = <PortRecord as crate::children::Resource>::index(&cache);
            let mut ids: Vec<NodeId> = macs
                .iter()
                .filter_map(|m| ports.by_mac(m).map(|e| e.record.node))
                .collect();
            ids.sort();
            ids.dedup();
            match ids.as_slice() {
                [one] => cache.node(one)?,
                _ => return None,
            }
        }
    };
    let allowed = node
        .status
        .as_ref()
        .is_some_and(|s| s.status.provision_state.agent_may_look_up());
    allowed.then_some(node)
}

pub async fn lookup(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(version::V_RAMDISK) {
        return Err(not_found());
    }
    let params = Params::parse(q.as_deref())?;
    params.only(&["addresses", "node_uuid"])?;
    let node_uuid = params.uuid("node_uuid")?;
    let given = params.list("addresses").unwrap_or_default();
    let macs: Vec<String> = given.iter().filter_map(|a| normalize_mac(a)).collect();
    if macs.len() < given.len() {
        tracing::warn!(
            invalid = given.len() - macs.len(),
            "lookup: invalid MAC addresses ignored"
        );
    }
    if macs.is_empty() && node_uuid.is_none() {
        return Err(ApiError::BadRequest(
            "At least one of 'addresses' and 'node_uuid' parameters is required".into(),
        ));
    }
    state.read_barrier().await?;
    let Some(node) = find(&state, node_uuid, &macs) else {
        tracing::info!(
            ?node_uuid,
            ?macs,
            "lookup: no node with an agent at work matches"
        );
        return Err(not_found());
    };
    let id = node.id();
    if !state.lookups.admit(id, Instant::now()) {
        return Err(ApiError::TooManyRequests(format!(
            "Too many lookups for node {id}; at most {LOOKUPS_PER_WINDOW} per {} s.",
            WINDOW.as_secs()
        )));
    }
    let token = match state.cluster.agent_token(&id).await {
        Ok(Some(_)) => MASKED.to_string(),
        Ok(None) | Err(ferric_cluster::ClusterError::Corrupt { .. }) => {
            let token = new_token();
            let rec = AgentTokenRecord {
                sha256: AgentTokenRecord::hash(&token),
                issued_at_ms: now_ms(),
                issued_by: state.config.name.clone(),
            };
            if state.cluster.issue_agent_token(&id, &rec).await? {
                tracing::info!(node = %id, "agent token issued");
                token
            } else {
                MASKED.to_string()
            }
        }
        Err(e) => return Err(e.into()),
    };
    let base = request::base_url(&state, &headers);
    Ok(request::json(StatusCode::OK, &answer(&node, &token, &base)))
}

/// Ironic's lookup answer: the node's restricted view and the agent's configuration.
fn answer(node: &NodeRef, token: &str, base: &str) -> Value {
    let spec = &node.spec.spec;
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!({}));
    let mut instance_info = parse(&spec.instance_info);
    crate::secrets::mask_instance_info(&mut instance_info);
    let out_of_band = matches!(spec.interface("management"), Some("redfish"));
    json!({
        "node": {
            "uuid": spec.id.to_string(),
            "properties": parse(&spec.properties),
            "instance_info": instance_info,
            "driver_internal_info": {},
            "links": crate::node_json::links(base, &format!("nodes/{}", spec.id)),
        },
        "config": {
            "metrics": {"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                        "prepend_host_reverse": true, "global_prefix": null},
            "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
            "heartbeat_timeout": HEARTBEAT_TIMEOUT_S,
            "agent_containers": {"allow_arbitrary_containers": false, "allowed_containers": [],
                                 "container_steps_file": "/etc/ironic-python-agent/mysteps.yaml",
                                 "runner": "podman", "pull_options": "--tls-verify=false",
                                 "run_options": "--rm --network=host --tls-verify=false"},
            "agent_token": token,
            "agent_token_required": true,
            "agent_md5_checksum_enable": false,
            "disable_deep_image_inspection": false,
            "permitted_image_formats": ["raw", "qcow2", "iso"],
            "agent_skip_bmc_detect": out_of_band,
            "enable_bios_bootloader_install": false,
            "tls_min_version": "",
            "tls_cipher_suites": "",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_hash() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        let rec = AgentTokenRecord {
            sha256: AgentTokenRecord::hash(&t),
            issued_at_ms: 1,
            issued_by: "gw".into(),
        };
        assert!(rec.matches(Some(&t)));
        assert!(!rec.matches(Some("other")));
        assert!(!rec.matches(None));
        assert!(!rec.sha256.contains(&t), "only the hash is kept");
    }

    #[test]
    fn lookups_are_limited_per_node_and_window() {
        let l = Limiter::default();
        let (a, b) = (NodeId::new_random(), NodeId::new_random());
        let t0 = Instant::now();
        for _ in 0..LOOKUPS_PER_WINDOW {
            assert!(l.admit(a, t0));
        }
        assert!(!l.admit(a, t0 + Duration::from_secs(1)));
        assert!(l.admit(b, t0), "other nodes have their own share");
        assert!(l.admit(a, t0 + WINDOW), "a new window");
    }
}
