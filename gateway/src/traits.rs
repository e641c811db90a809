//! Node traits (1.37): `GET|PUT|DELETE /v1/nodes/{node}/traits` and
//! `PUT|DELETE /v1/nodes/{node}/traits/{trait}`, stored sorted in the node's spec.
//!
//! # Which names are valid
//!
//! Ironic accepts `CUSTOM_[A-Z0-9_]+` and every name in the os-traits library's list of
//! standard traits. Ferric does not carry that list (it grows with every os-traits release,
//! and a stale copy would refuse names Nova's Placement accepts). It accepts, besides the
//! `CUSTOM_` rule, any name in one of os-traits' namespaces (`COMPUTE_`, `HW_`, `MISC_`,
//! `OWNER_`, `STORAGE_`) made of the characters os-traits names use (`A-Z`, `0-9`, `_`), at
//! most 255 characters. So a misspelt standard name in those namespaces is accepted where
//! Ironic would refuse it; lower case, other namespaces, spaces and punctuation are refused as
//! Ironic refuses them.

use crate::error::ApiError;
use crate::request::{self, Params};
use crate::version::ApiVersion;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferric_cluster::ClusterError;
use ferric_model::NodeSpec;
use serde_json::{json, Value};

/// Ironic's `MINOR_37_NODE_TRAITS`.
pub const V_TRAITS: u32 = 37;

const NAMESPACES: &[&str] = &["CUSTOM_", "COMPUTE_", "HW_", "MISC_", "OWNER_", "STORAGE_"];

/// Whether `t` is a trait name Ferric accepts (see the module documentation).
pub fn valid_trait(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 255
        && NAMESPACES
            .iter()
            .any(|ns| t.strip_prefix(ns).is_some_and(|rest| !rest.is_empty()))
        && t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn check_trait(t: &str) -> Result<(), ApiError> {
    if valid_trait(t) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Schema error for trait: '{t}' is not valid under any of the given schemas"
        )))
    }
}

/// Ironic's limit (`MAX_TRAITS_PER_NODE`), with its message.
fn check_count(spec: &NodeSpec, n: usize) -> Result<(), ApiError> {
    if n > NodeSpec::MAX_TRAITS {
        return Err(ApiError::BadRequest(format!(
            "Could not modify traits for node {} as it would exceed the maximum number of traits per node ({n} vs. {})",
            spec.id,
            NodeSpec::MAX_TRAITS
        )));
    }
    Ok(())
}

/// The traits of a `PUT .../traits` body (`{"traits": [...]}`), validated, sorted, unique.
pub fn parse_body(body: &Value) -> Result<Vec<String>, ApiError> {
    let list = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("traits"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "A single node trait may be added via PUT /v1/nodes/<node identifier>/traits/<trait> with no body, or all node traits may be replaced via PUT /v1/nodes/<node identifier>/traits with the list of traits specified in the request body.".into(),
            )
        })?;
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let t = t.as_str().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Schema error for traits: {t} is not of type 'string'"
            ))
        })?;
        check_trait(t)?;
        out.push(t.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn needs_traits(v: ApiVersion) -> Result<(), ApiError> {
    if v.at_least(V_TRAITS) {
        Ok(())
    } else {
        Err(ApiError::not_acceptable())
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    needs_traits(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let node = request::lookup(&state, &ident, v).await?;
    Ok(request::json(
        StatusCode::OK,
        &json!({ "traits": node.spec.spec.traits }),
    ))
}

/// Writes the node's traits as `change` makes them from the current ones (compare-and-swap).
async fn write(
    state: &AppState,
    ident: &str,
    v: ApiVersion,
    change: impl Fn(&NodeSpec) -> Result<Vec<String>, ApiError>,
) -> Result<(), ApiError> {
    let node = request::lookup(state, ident, v).await?;
    let refused: std::sync::Mutex<Option<ApiError>> = std::sync::Mutex::new(None);
    let result = state
        .cluster
        .update_spec(&node.id().to_string(), |_, spec| match change(spec) {
            Ok(traits) => {
                spec.traits = traits;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(ClusterError::Invalid(msg))
            }
        })
        .await;
    if let Some(e) = refused.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let view = result?;
    state.settle(view.spec_rev).await;
    Ok(())
}

/// `PUT /v1/nodes/{node}/traits {"traits": [...]}`: replaces them all (204).
pub async fn replace(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    needs_traits(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let body = request::json_body(body, &headers, state.config.body_limit).await?;
    let traits = parse_body(&body)?;
    write(&state, &ident, v, |spec| {
        check_count(spec, traits.len())?;
        Ok(traits.clone())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/nodes/{node}/traits/{trait}`: adds one (204, `Location` of the trait).
pub async fn add(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path((ident, name)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    needs_traits(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    let bytes = axum::body::to_bytes(body, state.config.body_limit)
        .await
        .map_err(|_| ApiError::TooLarge(state.config.body_limit))?;
    let nonempty = !bytes.is_empty()
        && serde_json::from_slice::<Value>(&bytes)
            .map(|b| !(b.is_null() || b.as_object().is_some_and(|o| o.is_empty())))
            .unwrap_or(true);
    if nonempty {
        return Err(ApiError::BadRequest(
            "No body should be provided when adding a trait".into(),
        ));
    }
    check_trait(&name)?;
    write(&state, &ident, v, |spec| {
        let mut traits = spec.traits.clone();
        if let Err(at) = traits.binary_search(&name) {
            traits.insert(at, name.clone());
        }
        check_count(spec, traits.len())?;
        Ok(traits)
    })
    .await?;
    let base = request::base_url(&state, &headers);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "{base}/v1/nodes/{}/traits/{}",
        request::url_encode(&ident),
        request::url_encode(&name)
    )) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `DELETE /v1/nodes/{node}/traits`: removes them all (204).
pub async fn clear(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path(ident): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    needs_traits(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    write(&state, &ident, v, |_| Ok(Vec::new())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/nodes/{node}/traits/{trait}`: removes one (204; 404 when the node lacks it).
pub async fn remove(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    Path((ident, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    needs_traits(v)?;
    Params::parse(q.as_deref())?.only(&[])?;
    write(&state, &ident, v, |spec| {
        if !spec.traits.contains(&name) {
            return Err(ApiError::NotFound(format!(
                "Node {} doesn't have a trait '{name}'",
                spec.id
            )));
        }
        Ok(spec
            .traits
            .iter()
            .filter(|t| **t != name)
            .cloned()
            .collect())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_names_follow_os_traits_rules() {
        for ok in [
            "CUSTOM_GOLD",
            "CUSTOM_RAID_1",
            "HW_CPU_X86_AVX2",
            "COMPUTE_VOLUME_MULTI_ATTACH",
            "STORAGE_DISK_SSD",
            "MISC_SHARES_VIA_AGGREGATE",
            "OWNER_NOVA",
        ] {
            assert!(valid_trait(ok), "{ok}");
        }
        let long = format!("CUSTOM_{}", "A".repeat(249));
        assert!(!valid_trait(&long));
        assert!(valid_trait(&long[..255]));
        for bad in [
            "",
            "CUSTOM_",
            "custom_gold",
            "CUSTOM_gold",
            "GOLD",
            "CUSTOM-GOLD",
            "CUSTOM_A B",
            "HW_",
            "FOO_BAR",
        ] {
            assert!(!valid_trait(bad), "{bad}");
        }
    }

    #[test]
    fn a_body_replaces_sorted_and_unique_and_bad_bodies_are_refused() {
        let t = parse_body(&json!({"traits": ["CUSTOM_B", "CUSTOM_A", "CUSTOM_B"]})).unwrap();
        assert_eq!(t, ["CUSTOM_A", "CUSTOM_B"]);
        assert!(parse_body(&json!({"traits": ["bad"]})).is_err());
        assert!(parse_body(&json!({"traits": [1]})).is_err());
        assert!(parse_body(&json!({})).is_err());
        assert!(parse_body(&json!({"traits": [], "x": 1})).is_err());
        assert_eq!(
            parse_body(&json!({"traits": []})).unwrap(),
            Vec::<String>::new()
        );
        let spec = NodeSpec::new(ferric_model::NodeId::new_random(), "ipmi", 0);
        assert!(check_count(&spec, 50).is_ok());
        let e = check_count(&spec, 51).unwrap_err().to_string();
        assert!(e.contains("(51 vs. 50)"), "{e}");
    }
}
