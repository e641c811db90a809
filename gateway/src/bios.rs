//! A node's BIOS settings (1.40): `GET /v1/nodes/{node}/bios` and `.../bios/{name}`, served
//! from the cache its conductor writes when the node is managed or cleaned (`bios/<uuid>`),
//! never by asking the BMC. From 1.74 the list takes `detail=True` or `fields`, and a setting
//! carries its attribute registry fields, as in Ironic's `bios.py`.

use crate::error::ApiError;
use crate::node_json::{iso8601, links};
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use ferric_cluster::ClusterError;
use ferric_model::{BiosRecord, BiosSetting, NodeId};
use serde_json::{Map, Value};

/// Ironic's `MINOR_40_BIOS_INTERFACE`.
pub const V_BIOS: u32 = 40;
/// Ironic's `MINOR_74_BIOS_REGISTRY`: `detail`, `fields`, and the registry fields.
pub const V_BIOS_REGISTRY: u32 = 74;

/// Ironic's `_DEFAULT_RETURN_FIELDS`.
const DEFAULT_FIELDS: &[&str] = &["name", "value"];
/// Ironic's `_DEFAULT_FIELDS_WITH_REGISTRY`.
const REGISTRY_FIELDS: &[&str] = &[
    "name",
    "value",
    "attribute_type",
    "allowable_values",
    "lower_bound",
    "max_length",
    "min_length",
    "read_only",
    "reset_required",
    "unique",
    "upper_bound",
];
/// What `fields` may name (Ironic's `index_request_query_v74`).
const FIELDS: &[&str] = &[
    "allowable_values",
    "attribute_type",
    "created_at",
    "lower_bound",
    "links",
    "max_length",
    "min_length",
    "name",
    "node_uuid",
    "read_only",
    "reset_required",
    "unique",
    "updated_at",
    "value",
];

/// `GET /v1/nodes/{node}/bios[?detail=True|fields=...]`.
pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(V_BIOS) {
        return Err(ApiError::no_such_resource());
    }
    let params = Params::parse(q.as_deref())?;
    let registry = v.at_least(V_BIOS_REGISTRY);
    if registry {
        params.only(&["detail", "fields"])?;
    } else {
        params.only(&[])?;
    }
    let detail = params.bool("detail")?.unwrap_or(false);
    let fields = params.list("fields");
    if fields.is_some() && detail {
        return Err(ApiError::BadRequest(
            "Can not specify ?detail=True and fields in the same request.".into(),
        ));
    }
    if let Some(unknown) = fields
        .iter()
        .flatten()
        .find(|f| !FIELDS.contains(&f.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "Schema error for fields: '{unknown}' is not one of {FIELDS:?}"
        )));
    }
    let wanted: Vec<&str> = match (&fields, detail) {
        (Some(f), _) => f.iter().map(String::as_str).collect(),
        (None, true) => REGISTRY_FIELDS.to_vec(),
        (None, false) => DEFAULT_FIELDS.to_vec(),
    };
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let record = read(&state, &id).await?;
    let base = request::base_url(&state, &headers);
    let bios: Vec<Value> = record
        .iter()
        .flat_map(|r| r.settings.iter())
        .map(|s| setting_json(s, &id, &base, &wanted))
        .collect();
    let mut body = Map::new();
    body.insert("bios".into(), Value::Array(bios));
    Ok(request::json(StatusCode::OK, &Value::Object(body)))
}

/// `GET /v1/nodes/{node}/bios/{name}`: `{name: setting}`, with the registry fields from 1.74.
pub async fn show(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path((ident, name)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    if !v.at_least(V_BIOS) {
        return Err(ApiError::no_such_resource());
    }
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?;
    let id = node.id();
    let record = read(&state, &id).await?;
    let setting = record.as_ref().and_then(|r| r.get(&name)).ok_or_else(|| {
        ApiError::NotFound(format!("Node {id} doesn't have a BIOS setting '{name}'"))
    })?;
    let wanted = if v.at_least(V_BIOS_REGISTRY) {
        REGISTRY_FIELDS
    } else {
        DEFAULT_FIELDS
    };
    let base = request::base_url(&state, &headers);
    let mut body = Map::new();
    body.insert(name, setting_json(setting, &id, &base, wanted));
    Ok(request::json(StatusCode::OK, &Value::Object(body)))
}

async fn read(state: &AppState, id: &NodeId) -> Result<Option<BiosRecord>, ApiError> {
    match state.cluster.node_bios(id).await {
        Ok(r) => Ok(r),
        Err(ClusterError::Corrupt { key, source }) => {
            tracing::error!(%key, error = %source, "unreadable BIOS cache");
            Err(ApiError::Conflict(format!(
                "The cached BIOS settings of node {id} ({key}) cannot be read ({source}); they are read from the BMC again when the node is next managed or cleaned."
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// One setting as Ironic's `object_to_dict` builds it: `created_at` and `updated_at` always,
/// the `wanted` fields, and the links.
fn setting_json(s: &BiosSetting, node: &NodeId, base: &str, wanted: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("created_at".into(), iso8601(s.created_at_ms).into());
    m.insert(
        "updated_at".into(),
        s.updated_at_ms
            .map(iso8601)
            .map_or(Value::Null, Value::from),
    );
    let opt = |v: Option<i64>| v.map_or(Value::Null, Value::from);
    let flag = |v: Option<bool>| v.map_or(Value::Null, Value::from);
    for &f in wanted {
        let value = match f {
            "name" => Value::from(s.name.clone()),
            "value" => s.value.clone().map_or(Value::Null, Value::from),
            "node_uuid" => Value::from(node.to_string()),
            "attribute_type" => s.attribute_type.clone().map_or(Value::Null, Value::from),
            "allowable_values" => s.allowable_values.clone().map_or(Value::Null, Value::from),
            "lower_bound" => opt(s.lower_bound),
            "upper_bound" => opt(s.upper_bound),
            "min_length" => opt(s.min_length),
            "max_length" => opt(s.max_length),
            "read_only" => flag(s.read_only),
            "reset_required" => flag(s.reset_required),
            "unique" => flag(s.unique),
            // Always present; `links` is added below.
            _ => continue,
        };
        m.insert(f.to_string(), value);
    }
    let path = format!("nodes/{node}/bios/{}", request::url_encode(&s.name));
    m.insert(
        "links".into(),
        serde_json::to_value(links(base, &path)).unwrap_or(Value::Null),
    );
    Value::Object(m)
}
