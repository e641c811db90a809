//! Reading requests the way Ironic does: query parameters (with Ironic's messages for unknown
//! arguments, booleans, integers and uuids), JSON bodies (bounded, 413 above the limit, 400
//! naming what is malformed), node identifiers (uuid or name), and the base URL of links.

use crate::error::ApiError;
use crate::informer::NodeRef;
use crate::node_input::parse_bool;
use crate::version::{self, ApiVersion};
use crate::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

/// Query parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub fn url_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(ApiError::BadRequest(format!(
                        "Malformed percent-encoding in query string: {s}"
                    )));
                };
                out.push(h * 16 + l);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest("Query string is not UTF-8.".into()))
}

/// Percent-encoding of a query value (for `next` links).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((url_decode(k)?, url_decode(v)?));
        }
        Ok(Params { pairs })
    }

    /// 400 for any parameter not in `allowed` (pecan's "Unexpected arguments").
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut extra: Vec<&str> = self
            .pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !allowed.contains(k))
            .collect();
        extra.dedup();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(ApiError::BadRequest(format!(
                "Unexpected arguments: {}",
                extra.join(", ")
            )))
        }
    }

    /// The last value of `name` (later parameters win, as in pecan).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_bool(&Value::String(v.into())).map(Some).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Invalid {name}: Unrecognized value '{v}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
                ))
            }),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => {
                v.trim().parse().map(Some).map_err(|_| {
                    ApiError::BadRequest(format!("Expected an integer for {name}: {v}"))
                })
            }
        }
    }

    /// A list's `limit` (at most `max`; `max` when absent) and `sort_dir` (`asc` or `desc`),
    /// refused in Ironic's words.
    pub fn limit_and_dir(&self, max: usize) -> Result<(usize, &str), ApiError> {
        let limit = match self.int("limit")? {
            None => max,
            Some(l) if l <= 0 => return Err(ApiError::BadRequest("Limit must be positive".into())),
            Some(l) => (l as u64).min(max as u64) as usize,
        };
        let sort_dir = self.get("sort_dir").unwrap_or("asc");
        if sort_dir != "asc" && sort_dir != "desc" {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort direction: {sort_dir}. Acceptable values are 'asc' or 'desc'"
            )));
        }
        Ok((limit, sort_dir))
    }

    pub fn uuid(&self, name: &str) -> Result<Option<uuid::Uuid>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => uuid::Uuid::parse_str(v)
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("Expected UUID for {name}: {v}"))),
        }
    }

    /// A comma-separated list, lower-cased and de-duplicated (Ironic's `string_list`).
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|v| {
            let mut out: Vec<String> = Vec::new();
            for item in v.split(',') {
                let item = item.trim().to_ascii_lowercase();
                if !item.is_empty() && !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        })
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Reads a JSON body of at most `limit` bytes. An empty body reads as `null`.
pub async fn json_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Value, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    let mut data = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("Cannot read the request body: {e}")))?;
        if data.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        data.extend_from_slice(&chunk);
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&data)
        .map_err(|e| ApiError::BadRequest(format!("The request body is not valid JSON: {e}")))
}

/// An action body: a JSON object whose keys must all be in `allowed` (null or empty: `{}`).
pub fn action_object(
    body: Value,
    allowed: &[&str],
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let obj = match body {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(ApiError::BadRequest(format!(
                "The request body must be a JSON object, not {other}"
            )))
        }
    };
    let extra: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !extra.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Unexpected arguments: {}",
            extra.join(", ")
        )));
    }
    Ok(obj)
}

/// An optional string argument of an action body.
pub fn opt_string(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Expected string for {name}: {other}"
        ))),
    }
}

/// A mandatory string argument of an action body.
pub fn req_string(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, ApiError> {
    opt_string(obj, name)?
        .ok_or_else(|| ApiError::BadRequest(format!("Missing mandatory parameter: {name}")))
}

/// An optional boolean argument (booleans and their usual string spellings).
pub fn opt_bool(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<bool>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_bool(v)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("Invalid {name}: {v} is not a boolean"))),
    }
}

/// `http://host:port` for links: the configured public URL, or the request's Host.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ApiError::Internal(format!("cannot serialize response: {e}")).into_response(),
    }
}

/// Ironic's `next` link of a full page: the same query without `limit` and `marker`, then
/// the page's limit and its last item as the marker. Shared by every paginated list.
pub fn next_link(base: &str, path: &str, params: &Params, limit: usize, last: &str) -> String {
    let mut q = String::new();
    for (k, val) in params.pairs() {
        if k != "limit" && k != "marker" {
            q.push_str(&format!("{}={}&", url_encode(k), url_encode(val)));
        }
    }
    format!("{base}/v1/{path}?{q}limit={limit}&marker={last}")
}

/// Validates a node identifier from a path (Ironic's `uuid_or_name`).
pub fn check_ident(ident: &str, version: ApiVersion) -> Result<(), ApiError> {
    if uuid::Uuid::parse_str(ident).is_ok() {
        return Ok(());
    }
    let valid_name = !ident.is_empty()
        && ident.len() <= 255
        && ident
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    if !valid_name {
        return Err(ApiError::BadRequest(format!(
            "Expected UUID or name for node: {ident}"
        )));
    }
    if !version.at_least(version::V_NODE_NAME) {
        return Err(ApiError::not_acceptable());
    }
    Ok(())
}

/// A node by uuid or name from this gateway's copy (after the read-your-writes barrier).
pub async fn lookup(
    state: &AppState,
    ident: &str,
    version: ApiVersion,
) -> Result<NodeRef, ApiError> {
    check_ident(ident, version)?;
    state.read_barrier().await?;
    state
        .informer
        .read()
        .lookup(ident)
        .ok_or_else(|| ApiError::node_not_found(ident))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = Params::parse(Some(
            "provision_state=clean+failed&fields=uuid%2Cname&a=1&a=2",
        ))
        .unwrap();
        assert_eq!(p.get("provision_state"), Some("clean failed"));
        assert_eq!(p.list("fields").unwrap(), vec!["uuid", "name"]);
        assert_eq!(p.get("a"), Some("2"));
        assert!(p.only(&["provision_state", "fields"]).is_err());
        assert!(Params::parse(Some("x=%zz")).is_err());
        assert_eq!(url_encode("clean failed"), "clean%20failed");
        let p = Params::parse(Some("maintenance=yes&limit=x")).unwrap();
        assert_eq!(p.bool("maintenance").unwrap(), Some(true));
        assert!(p.int("limit").is_err());
    }
}
