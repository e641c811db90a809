//! The API's one error type and its one `IntoResponse`: Ironic's status codes and Ironic's error
//! body, `{"error_message": "<JSON text of {faultcode, faultstring, debuginfo}>"}`, which
//! python-ironicclient, openstacksdk and gophercloud all parse. Internal details (etcd endpoints,
//! decode errors) are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferric_cluster::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: invalid input, an action refused in the node's state or in maintenance.
    #[error("{0}")]
    BadRequest(String),
    /// 401; `challenge` is the `WWW-Authenticate` value.
    #[error("{msg}")]
    Unauthorized {
        msg: String,
        challenge: &'static str,
    },
    /// 401 under Keystone: keystonemiddleware's answer (its body, and a challenge naming
    /// Keystone, where clients get tokens).
    #[error("The request you have made requires authentication.")]
    KeystoneUnauthorized { uri: String },
    /// 403: authenticated, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: microversion outside the supported range, or a feature of a newer microversion.
    #[error("{0}")]
    NotAcceptable(String),
    /// 409: locked (a conductor is working on the node), invalid state, concurrent change.
    #[error("{0}")]
    Conflict(String),
    #[error("The request body is larger than {0} bytes.")]
    TooLarge(usize),
    /// 429: a rate limit (ramdisk lookups per node).
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: no conductor can act on the node, etcd unreachable, the gateway's copy is behind.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a corrupt record; the detail goes to the log only.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl ApiError {
    /// Ironic's `NotAcceptable` without details ("Request not acceptable.").
    pub fn not_acceptable() -> Self {
        ApiError::NotAcceptable("Request not acceptable.".into())
    }

    /// What Ironic answers for a path it does not serve, or not at the request's microversion.
    pub fn no_such_resource() -> Self {
        ApiError::NotFound("The resource could not be found.".into())
    }

    /// Ironic's `NodeNotFound`.
    pub fn node_not_found(ident: &str) -> Self {
        ApiError::NotFound(format!("Node {ident} could not be found."))
    }

    /// Ironic's `InvalidStateRequested` (400).
    pub fn invalid_state(action: &str, node: &str, state: &str) -> Self {
        ApiError::BadRequest(format!(
            "The requested action \"{action}\" can not be performed on node \"{node}\" while it is in state \"{state}\"."
        ))
    }

    /// Ironic's `NodeLocked` (409): clients retry these.
    pub fn locked(node: &str, host: &str) -> Self {
        ApiError::Conflict(format!(
            "Node {node} is locked by host {host}, please retry after the current operation is completed."
        ))
    }

    /// Ironic's `NodeInMaintenance` (400).
    pub fn in_maintenance(op: &str, node: &str) -> Self {
        ApiError::BadRequest(format!(
            "The {op} operation can't be performed on node {node} because it's in maintenance mode."
        ))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } | ApiError::KeystoneUnauthorized { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Cluster(e) => match e {
                ClusterError::Unreachable { .. }
                | ClusterError::Etcd { .. }
                | ClusterError::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
                ClusterError::NodeNotFound(_) => StatusCode::NOT_FOUND,
                ClusterError::NameTaken(_)
                | ClusterError::NodeExists(_)
                | ClusterError::Busy { .. }
                | ClusterError::Conflict(_)
                | ClusterError::Corrupt { .. } => StatusCode::CONFLICT,
                ClusterError::InvalidState(_) | ClusterError::Invalid(_) => StatusCode::BAD_REQUEST,
                ClusterError::Fenced(_) | ClusterError::Internal(_) | ClusterError::Config(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// The `faultstring` a client sees.
    pub fn faultstring(&self) -> String {
        match self {
            ApiError::Internal(_) => {
                "An internal error occurred in the Ferric gateway; see its log.".into()
            }
            ApiError::Cluster(e) => match e {
                ClusterError::Unreachable { .. } | ClusterError::Etcd { .. } => {
                    "The cluster's etcd is unavailable; please retry.".into()
                }
                ClusterError::NodeNotFound(n) => format!("Node {n} could not be found."),
                ClusterError::NameTaken(n) => format!("A node with name {n} already exists."),
                ClusterError::NodeExists(n) => format!("A node with UUID {n} already exists."),
                ClusterError::InvalidState(t) => format!(
                    "The requested action \"{}\" can not be performed while the node is in state \"{}\".",
                    t.action,
                    t.state.as_str()
                ),
                ClusterError::Busy { node, what } => format!(
                    "Node {node} is locked: {what}; please retry after the current operation is completed."
                ),
                ClusterError::Conflict(n) => format!(
                    "Node {n} was changed concurrently too many times; please retry."
                ),
                ClusterError::Invalid(msg) => msg.clone(),
                ClusterError::ShuttingDown(what) => {
                    format!("{what} is shutting down; please retry.")
                }
                // A record an admin has to repair: say which and how (409: the request may
                // succeed once the record is deleted or replaced).
                ClusterError::Corrupt { key, source } => format!(
                    "The record {key} in etcd cannot be read ({source}). Delete the node, or replace its spec with PATCH (with at least the driver) or PUT /v1/nodes/<uuid>; `ferric ctl node repair` shows the raw records."
                ),
                ClusterError::Fenced(_)
                | ClusterError::Internal(_)
                | ClusterError::Config(_) => {
                    "An internal error occurred in the Ferric gateway; see its log.".into()
                }
            },
            other => other.to_string(),
        }
    }
}

/// Ironic's error body for `status` and `faultstring`.
pub fn error_body(status: StatusCode, faultstring: &str) -> String {
    let faultcode = if status.is_server_error() {
        "Server"
    } else {
        "Client"
    };
    // Ironic puts the fault object, serialized, as a string inside `error_message`.
    let inner = serde_json::json!({
        "faultcode": faultcode,
        "faultstring": faultstring,
        "debuginfo": null,
    })
    .to_string();
    serde_json::json!({ "error_message": inner }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        if let ApiError::KeystoneUnauthorized { uri } = &self {
            let body = serde_json::json!({"error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }});
            let challenge = format!("Keystone uri=\"{uri}\"");
            let mut resp = (status, axum::Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
        let body = error_body(status, &self.faultstring());
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // No `Retry-After`, on purpose: python-ironicclient and openstacksdk retry 409 and 503
        // by status code alone (5 x 2 s), and python-ironicclient's error mapping passes a
        // `Retry-After` value to the exception class of any status, which only the 413 class
        // accepts: on a 409 or 503 it crashes the client with a TypeError (seen with
        // `baremetal --max-retries 0 node undeploy` of a protected node). Ironic sends none.
        if let ApiError::Unauthorized { challenge, .. } = self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_ironic_error_message_with_json_inside() {
        let body = error_body(StatusCode::NOT_FOUND, "Node x could not be found.");
        let outer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let inner: serde_json::Value =
            serde_json::from_str(outer["error_message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["faultcode"], "Client");
        assert_eq!(inner["faultstring"], "Node x could not be found.");
        assert!(inner["debuginfo"].is_null());
        let body = error_body(StatusCode::SERVICE_UNAVAILABLE, "x");
        assert!(body.contains("Server"));
    }

    #[test]
    fn cluster_errors_map_to_ironic_codes() {
        let e = ApiError::from(ClusterError::NameTaken("n".into()));
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e = ApiError::from(ClusterError::Unreachable {
            endpoints: "http://10.0.0.1:2379".into(),
            reason: "refused".into(),
        });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        // The endpoint is logged, not returned.
        assert!(!e.faultstring().contains("10.0.0.1"));
    }

    /// The body a client gets: (status, faultcode, faultstring).
    fn answer(e: ClusterError) -> (StatusCode, String, String) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status();
        let body =
            futures::executor::block_on(axum::body::to_bytes(resp.into_body(), 1 << 16)).unwrap();
        let outer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let inner: serde_json::Value =
            serde_json::from_str(outer["error_message"].as_str().unwrap()).unwrap();
        (
            status,
            inner["faultcode"].as_str().unwrap().to_string(),
            inner["faultstring"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn refused_requests_are_400_with_their_message() {
        let (status, code, msg) = answer(ClusterError::Invalid(
            "node n1 has disable_power_off set: power off is refused".into(),
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code, "Client");
        assert_eq!(
            msg,
            "node n1 has disable_power_off set: power off is refused"
        );
    }

    #[test]
    fn a_stopping_gateway_is_503_not_400() {
        let (status, code, msg) = answer(ClusterError::ShuttingDown("the gateway"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code, "Server");
        assert_eq!(msg, "the gateway is shutting down; please retry.");
    }

    #[test]
    fn internal_failures_are_500_and_keep_their_detail_in_the_log() {
        let secret_detail = "consoles/6f1a vanished while it was being read";
        for e in [
            ClusterError::Internal("unexpected etcd txn response".into()),
            ClusterError::Internal(secret_detail.into()),
            ClusterError::Config("cannot read /etc/ferric/etcd-ca.pem: denied".into()),
            ClusterError::Fenced("n1".into()),
        ] {
            let shown = e.to_string();
            let (status, code, msg) = answer(e);
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{shown}");
            assert_eq!(code, "Server", "{shown}");
            assert_eq!(
                msg, "An internal error occurred in the Ferric gateway; see its log.",
                "{shown}"
            );
        }
    }

    #[test]
    fn every_cluster_error_kind_has_its_status() {
        let unavailable = ClusterError::Unreachable {
            endpoints: "http://127.0.0.1:2379".into(),
            reason: "refused".into(),
        };
        let cases = [
            (unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (
                ClusterError::ShuttingDown("the gateway"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                ClusterError::NodeNotFound("n".into()),
                StatusCode::NOT_FOUND,
            ),
            (ClusterError::NameTaken("n".into()), StatusCode::CONFLICT),
            (ClusterError::NodeExists("n".into()), StatusCode::CONFLICT),
            (
                ClusterError::Busy {
                    node: "n".into(),
                    what: "deploying".into(),
                },
                StatusCode::CONFLICT,
            ),
            (ClusterError::Conflict("n".into()), StatusCode::CONFLICT),
            (
                ClusterError::Corrupt {
                    key: "/ferric/nodes/x".into(),
                    source: ferric_model::CodecError::Empty { kind: "node spec" },
                },
                StatusCode::CONFLICT,
            ),
            (ClusterError::Invalid("no".into()), StatusCode::BAD_REQUEST),
            (
                ClusterError::Internal("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ClusterError::Config("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ClusterError::Fenced("n".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            assert_eq!(ApiError::from(e).status(), want, "{shown}");
        }
    }
}
