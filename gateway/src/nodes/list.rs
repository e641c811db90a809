//! Listing nodes: `GET /v1/nodes[/detail]` with Ironic's filters, sorting and pagination over
//! the gateway's copy.

use super::{needs, requested_fields, MAX_LIMIT};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::informer::{CacheState, NodeRef};
use crate::node_json::{self, NodeList, Render};
use crate::request::{self, Params};
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_model::{NodeId, ProvisionState};
use std::cmp::Ordering;
use std::ops::Bound;

const LIST_PARAMS: &[&str] = &[
    "chassis_uuid",
    "instance_uuid",
    "associated",
    "maintenance",
    "retired",
    "provision_state",
    "marker",
    "limit",
    "sort_key",
    "sort_dir",
    "driver",
    "fields",
    "resource_class",
    "fault",
    "conductor_group",
    "detail",
    "conductor",
    "owner",
    "description_contains",
    "lessee",
    "project",
    "shard",
    "sharded",
    "include_children",
    "parent_node",
    "instance_name",
];

/// Fields Ironic refuses to sort by.
const UNSORTABLE: &[&str] = &[
    "properties",
    "driver_info",
    "extra",
    "instance_info",
    "driver_internal_info",
    "clean_step",
    "deploy_step",
    "raid_config",
    "target_raid_config",
    "traits",
    "network_data",
    "service_step",
];

/// Ironic's valid `fault` values.
const FAULTS: &[&str] = &[
    "power failure",
    "clean failure",
    "rescue abort failure",
    "service failure",
];

/// One filter of a node list.
struct Filters {
    maintenance: Option<bool>,
    associated: Option<bool>,
    provision_state: Option<ProvisionState>,
    driver: Option<String>,
    resource_class: Option<String>,
    fault: Option<String>,
    conductor_group: Option<String>,
    conductor: Option<String>,
    instance_uuid: Option<uuid::Uuid>,
    retired: Option<bool>,
    sharded: Option<bool>,
    owner: Option<String>,
    lessee: Option<String>,
    /// `project`: nodes whose owner or lessee it is.
    project: Option<String>,
    /// The caller's project when its token is project-scoped: the same, and not optional.
    scope: Option<String>,
    /// Any of these shards (Ironic takes a comma-separated list).
    shards: Option<Vec<String>>,
    description_contains: Option<String>,
    /// A filter on a field Ferric always reports as null (parent node, chassis): nothing
    /// matches.
    impossible: bool,
}

impl Filters {
    fn parse(p: &Params, v: ApiVersion) -> Result<Filters, ApiError> {
        let provision_state = match p.get("provision_state") {
            None => None,
            Some(s) => {
                if !v.at_least(version::V_PROVISION_STATE_FILTER) {
                    return Err(ApiError::not_acceptable());
                }
                Some(ProvisionState::parse(s).ok_or_else(|| {
                    ApiError::BadRequest(format!("Provision state \"{s}\" is not valid"))
                })?)
            }
        };
        let gated = |name: &str, minor: u32| -> Result<Option<String>, ApiError> {
            match p.get(name) {
                None => Ok(None),
                Some(val) => {
                    needs(v, minor)?;
                    Ok(Some(val.to_string()))
                }
            }
        };
        let driver = gated("driver", version::V_DRIVER_FILTER)?;
        let resource_class = gated("resource_class", version::V_RESOURCE_CLASS)?;
        let fault = gated("fault", version::V_FAULT)?;
        if let Some(f) = &fault {
            if !FAULTS.contains(&f.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "Unrecognized fault \"{f}\" is specified, allowed faults are {}",
                    FAULTS.join(", ")
                )));
            }
        }
        let conductor_group = gated("conductor_group", version::V_CONDUCTOR_GROUP)?;
        let conductor = gated("conductor", version::V_CONDUCTORS)?;
        let owner = gated("owner", version::V_OWNER)?;
        let lessee = gated("lessee", version::V_LESSEE)?;
        let shard = gated("shard", version::V_SHARD)?;
        let sharded = match p.bool("sharded")? {
            Some(b) => {
                needs(v, version::V_SHARD)?;
                Some(b)
            }
            None => None,
        };
        let parent = gated("parent_node", version::V_CHILD_NODES)?;
        if p.get("include_children").is_some() {
            needs(v, version::V_CHILD_NODES)?;
            p.bool("include_children")?;
        }
        if p.get("instance_name").is_some() {
            needs(v, version::V_INSTANCE_NAME)?;
        }
        let description_contains = gated("description_contains", version::V_DESCRIPTION)?;
        let project = gated("project", version::V_OWNER)?;
        let impossible = parent.is_some() || p.uuid("chassis_uuid")?.is_some();
        Ok(Filters {
            maintenance: p.bool("maintenance")?,
            associated: p.bool("associated")?,
            provision_state,
            driver,
            resource_class,
            fault,
            conductor_group: conductor_group.map(|g| g.to_ascii_lowercase()),
            conductor,
            instance_uuid: p.uuid("instance_uuid")?,
            retired: match p.bool("retired")? {
                Some(b) => {
                    needs(v, version::V_RETIRED)?;
                    Some(b)
                }
                None => None,
            },
            sharded,
            owner,
            lessee,
            project,
            scope: None,
            shards: shard.map(|s| s.split(',').map(|x| x.trim().to_string()).collect()),
            description_contains,
            impossible,
        })
    }

    fn matches(&self, n: &NodeRef) -> bool {
        let spec = &n.spec.spec;
        let st = n.status();
        !self.impossible
            && self.maintenance.is_none_or(|m| spec.maintenance == m)
            && self
                .associated
                .is_none_or(|a| spec.instance_uuid.is_some() == a)
            && self
                .provision_state
                .is_none_or(|s| crate::node_json::provision_state(n) == s)
            && self.driver.as_deref().is_none_or(|d| spec.driver == d)
            && self
                .resource_class
                .as_deref()
                .is_none_or(|r| spec.resource_class.as_deref() == Some(r))
            && self
                .fault
                .as_deref()
                .is_none_or(|f| st.fault.as_deref() == Some(f))
            && self
                .conductor_group
                .as_deref()
                .is_none_or(|g| spec.conductor_group == g)
            && self
                .conductor
                .as_deref()
                .is_none_or(|c| n.holder.as_deref() == Some(c))
            && self
                .instance_uuid
                .is_none_or(|u| spec.instance_uuid == Some(u))
            && self.retired.is_none_or(|r| spec.retired == r)
            && self.sharded.is_none_or(|sh| spec.shard.is_some() == sh)
            && self
                .owner
                .as_deref()
                .is_none_or(|o| spec.owner.as_deref() == Some(o))
            && self
                .lessee
                .as_deref()
                .is_none_or(|l| spec.lessee.as_deref() == Some(l))
            && [&self.project, &self.scope].iter().all(|p| {
                p.as_deref().is_none_or(|p| {
                    spec.owner.as_deref() == Some(p) || spec.lessee.as_deref() == Some(p)
                })
            })
            && self.shards.as_ref().is_none_or(|shards| {
                spec.shard
                    .as_ref()
                    .is_some_and(|s| shards.iter().any(|x| x == s))
            })
            && self.description_contains.as_deref().is_none_or(|d| {
                spec.description
                    .as_deref()
                    .is_some_and(|desc| desc.contains(d))
            })
    }
}

/// A value to sort by; one key never mixes kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SortVal {
    Null,
    Int(u64),
    Bool(bool),
    Str(String),
}

fn sort_value(key: &str, n: &NodeRef) -> SortVal {
    let spec = &n.spec.spec;
    let st = n.status();
    let s = |v: Option<&str>| v.map_or(SortVal::Null, |v| SortVal::Str(v.to_string()));
    match key {
        "uuid" => SortVal::Str(spec.id.to_string()),
        "name" => s(spec.name.as_ref().map(|x| x.as_str())),
        "created_at" => SortVal::Int(spec.created_at_ms),
        "updated_at" => node_json::updated_at_ms(spec, st).map_or(SortVal::Null, SortVal::Int),
        "provision_updated_at" => st
            .provision_updated_at_ms
            .map_or(SortVal::Null, SortVal::Int),
        "driver" => SortVal::Str(spec.driver.clone()),
        "provision_state" => SortVal::Str(st.provision_state.as_str().into()),
        "target_provision_state" => s(node_json::target_provision_state(n).map(|p| p.as_str())),
        "power_state" => s(st.power_state.map(|p| p.as_str())),
        "target_power_state" => s(node_json::target_power_state(n)),
        "maintenance" => SortVal::Bool(spec.maintenance),
        "maintenance_reason" => s(spec.maintenance_reason.as_deref()),
        "console_enabled" => SortVal::Bool(spec.console_enabled),
        "disable_power_off" => SortVal::Bool(spec.disable_power_off),
        "conductor_group" => SortVal::Str(spec.conductor_group.clone()),
        "resource_class" => s(spec.resource_class.as_deref()),
        "instance_uuid" => s(spec.instance_uuid.map(|u| u.to_string()).as_deref()),
        "fault" => s(st.fault.as_deref()),
        "last_error" => s(st.last_error.as_deref()),
        "reservation" => s(node_json::reservation(n)),
        "conductor" => s(n.holder.as_deref()),
        "description" => s(spec.description.as_deref()),
        "owner" => s(spec.owner.as_deref()),
        "lessee" => s(spec.lessee.as_deref()),
        "shard" => s(spec.shard.as_deref()),
        "retired" => SortVal::Bool(spec.retired),
        "protected" => SortVal::Bool(spec.protected),
        "automated_clean" => spec.automated_clean.map_or(SortVal::Null, SortVal::Bool),
        k if node_json::INTERFACES.contains(&k) => s(spec.interfaces.get(k).map(String::as_str)),
        _ => SortVal::Null,
    }
}

struct Page {
    nodes: Vec<NodeRef>,
    limit: usize,
}

/// Selects one page from the copy (under its read lock; no `.await` in here).
#[allow(clippy::too_many_arguments)]
fn select(
    cache: &CacheState,
    filters: &Filters,
    sort_key: &str,
    desc: bool,
    marker: Option<NodeId>,
    limit: usize,
) -> Result<Page, ApiError> {
    let marker_node = match marker {
        None => None,
        Some(id) => Some(
            cache
                .node(&id)
                .ok_or_else(|| ApiError::node_not_found(&id.to_string()))?,
        ),
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    if sort_key == "id" || sort_key == "created_at" {
        // Creation order has an index: a page costs its own size, not the fleet's.
        let start = marker_node.map(|m| (m.spec.spec.created_at_ms, m.id()));
        let iter: Box<dyn Iterator<Item = &(u64, NodeId)>> = match (start, desc) {
            (None, false) => Box::new(cache.by_created.iter()),
            (None, true) => Box::new(cache.by_created.iter().rev()),
            (Some(k), false) => Box::new(
                cache
                    .by_created
                    .range((Bound::Excluded(k), Bound::Unbounded)),
            ),
            (Some(k), true) => Box::new(
                cache
                    .by_created
                    .range((Bound::Unbounded, Bound::Excluded(k)))
                    .rev(),
            ),
        };
        for (_, id) in iter {
            if out.len() >= limit {
                break;
            }
            if let Some(n) = cache.node(id) {
                if filters.matches(&n) {
                    out.push(n);
                }
            }
        }
    } else {
        let mut all: Vec<(SortVal, NodeId, NodeRef)> = cache
            .specs
            .keys()
            .filter_map(|id| cache.node(id))
            .filter(|n| filters.matches(n))
            .map(|n| (sort_value(sort_key, &n), n.id(), n))
            .collect();
        let cmp = |a: &(SortVal, NodeId), b: &(SortVal, NodeId)| {
            let o = a.0.cmp(&b.0).then(a.1.cmp(&b.1));
            if desc {
                o.reverse()
            } else {
                o
            }
        };
        all.sort_by(|a, b| cmp(&(a.0.clone(), a.1), &(b.0.clone(), b.1)));
        let after = marker_node.map(|m| (sort_value(sort_key, &m), m.id()));
        for (val, id, n) in all {
            if out.len() >= limit {
                break;
            }
            if let Some(a) = &after {
                if cmp(&(val, id), a) != Ordering::Greater {
                    continue;
                }
            }
            out.push(n);
        }
    }
    Ok(Page { nodes: out, limit })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    list_nodes(state, v, &caller, headers, q, false).await
}

pub async fn list_detail(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    list_nodes(state, v, &caller, headers, q, true).await
}

async fn list_nodes(
    state: AppState,
    v: ApiVersion,
    caller: &Caller,
    headers: HeaderMap,
    q: Option<String>,
    detail_route: bool,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref())?;
    if detail_route {
        let allowed: Vec<&str> = LIST_PARAMS
            .iter()
            .copied()
            .filter(|p| *p != "fields" && *p != "detail")
            .collect();
        params.only(&allowed)?;
    } else {
        params.only(LIST_PARAMS)?;
    }
    let fields = requested_fields(&params, v)?;
    let detail = params.bool("detail")?;
    if let Some(d) = detail {
        if !v.at_least(version::V_DETAIL) {
            return Err(ApiError::BadRequest(format!(
                "Invalid query parameter ?detail={d} received."
            )));
        }
    }
    if fields.is_some() && detail == Some(true) {
        return Err(ApiError::BadRequest(
            "Can not specify ?detail=True and fields in the same request.".into(),
        ));
    }
    let mut filters = Filters::parse(&params, v)?;
    // A project-scoped caller lists its project's nodes only (Ironic's `list_all` is the
    // system's).
    filters.scope = caller.project.clone();
    let (limit, sort_dir) = params.limit_and_dir(MAX_LIMIT)?;
    let sort_key = params.get("sort_key").unwrap_or("id");
    if let Some(since) = node_json::field_since(sort_key) {
        if !v.at_least(since) {
            return Err(ApiError::not_acceptable());
        }
    }
    if UNSORTABLE.contains(&sort_key)
        || (sort_key != "id" && node_json::field_since(sort_key).is_none())
    {
        return Err(ApiError::BadRequest(format!(
            "The sort_key value {sort_key} is an invalid field for sorting"
        )));
    }
    let marker = params.uuid("marker")?.map(NodeId);
    let base = request::base_url(&state, &headers);
    let render = if detail_route || detail == Some(true) {
        Render::full(v, &base)
    } else {
        Render::only(
            v,
            &base,
            fields.as_deref().unwrap_or(node_json::DEFAULT_LIST_FIELDS),
        )
    }
    .viewed_by(caller);
    state.read_barrier().await?;
    let page = {
        let cache = state.informer.read();
        select(
            &cache,
            &filters,
            sort_key,
            sort_dir == "desc",
            marker,
            limit,
        )?
    };
    // Ironic: a full page has a `next` link (an instance_uuid lookup never does).
    let next = (page.nodes.len() == page.limit && filters.instance_uuid.is_none())
        .then(|| page.nodes.last().map(|n| n.id()))
        .flatten()
        .map(|last| {
            let path = if detail_route {
                "nodes/detail"
            } else {
                "nodes"
            };
            request::next_link(&base, path, &params, page.limit, &last.to_string())
        });
    let body = NodeList {
        nodes: &page.nodes,
        render: &render,
        next,
    };
    Ok(request::json(StatusCode::OK, &body))
}
