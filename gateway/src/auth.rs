//! Who is calling: `noauth` (everyone is admin; only on loopback unless forced), `http_basic`
//! (an htpasswd file of bcrypt hashes, as Ironic's `auth_strategy = http_basic` reads it, so
//! `OS_AUTH_TYPE=http_basic` clients work; every user is admin), bearer tokens with a role
//! (`admin` may change anything, `reader` may only read), and `keystone`: the `X-Auth-Token`
//! is validated with Keystone (as keystonemiddleware does) and its scope and roles are mapped
//! to Ironic's default policies (see [`Caller::from_keystone`] and `policy.rs`). Secrets are
//! masked for everyone.
//!
//! Browsers cannot set headers on a websocket (`new WebSocket(url, protocols)`), so a websocket
//! upgrade may instead offer its credentials as the subprotocol `ferric.auth.<base64url>`
//! ([`Auth::authenticate_websocket`]): the base64url (RFC 4648 §5, unpadded) of what the header
//! would carry, the token, or `user:password` under http_basic. Kubernetes' API server does the
//! same (`base64url.bearer.authorization.k8s.io.<token>`). It never goes in the URL: URLs end up
//! in access logs and browser histories.

use crate::error::ApiError;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// What a caller may do, cluster-wide or (for a project-scoped Keystone token) on the nodes
/// its project owns or leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    /// Changes anything but cannot enroll or delete (Ironic's system member and service).
    Member,
    /// Keystone's `manager` role (between member and admin in Ironic's project policies).
    Manager,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Member => "member",
            Role::Reader => "reader",
        }
    }

    /// May change things (not only read).
    pub fn writes(self) -> bool {
        self >= Role::Member
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as `requested_by` of the actions it asks for.
    pub name: String,
    pub role: Role,
    /// None: cluster-wide (every auth mode but a project-scoped Keystone token). Some: the
    /// project the token is scoped to; the caller sees and acts on nodes that project owns or
    /// leases only, as Ironic's project-scoped policies say.
    pub project: Option<String>,
    /// Keystone's role names (lower case, implied roles included); empty for other modes.
    pub roles: Vec<String>,
}

impl Caller {
    /// A cluster-wide caller of the non-Keystone modes.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Caller {
            name: name.into(),
            role,
            project: None,
            roles: Vec::new(),
        }
    }

    /// Whether the caller is named in `list`: by user name, or by a Keystone role as
    /// `role:<name>` (`role:service` is how Nova's user is usually recognised).
    pub fn is_one_of(&self, list: &[String]) -> bool {
        list.iter().any(|entry| match entry.strip_prefix("role:") {
            Some(role) => self.roles.iter().any(|r| r.eq_ignore_ascii_case(role)),
            None => *entry == self.name,
        })
    }

    /// Ironic's default policies (`ironic/common/policy.py`, scope enforced, new defaults), by
    /// persona:
    /// - system scope: `admin` is [`Role::Admin`], `member` is [`Role::Member`], `reader` is
    ///   [`Role::Reader`];
    /// - `service` in the service project (`rule:service_role`, how Nova's user is set up) acts
    ///   on every node as a system member does; `service` with system scope likewise, plus it
    ///   may enroll (Ironic's `SYSTEM_SERVICE` may create nodes);
    /// - any other project scope: the caller's highest of admin, manager, member, reader, on
    ///   the nodes whose `owner` or `lessee` is the project.
    ///
    /// None when the token carries no role Ironic's policies know (every request is then 403).
    pub fn from_keystone(info: &ferric_keystone::TokenInfo, service_project: &str) -> Option<Self> {
        let highest = [
            ("admin", Role::Admin),
            ("manager", Role::Manager),
            ("member", Role::Member),
            ("reader", Role::Reader),
        ]
        .into_iter()
        .find(|(name, _)| info.has_role(name))
        .map(|(_, r)| r);
        let service = info.has_role("service");
        let in_service_project = info
            .project
            .as_ref()
            .is_some_and(|p| p.name == service_project);
        let (role, project) = if info.system_all {
            let role = match (highest, service) {
                (Some(Role::Admin), _) | (_, true) => Role::Admin,
                (Some(Role::Manager | Role::Member), _) => Role::Member,
                (Some(Role::Reader), _) => Role::Reader,
                (None, false) => return None,
            };
            (role, None)
        } else if service && in_service_project {
            (Role::Member, None)
        } else {
            let project = info.project.as_ref()?;
            (highest?, Some(project.id.clone()))
        };
        Some(Caller {
            name: info.user_name.clone(),
            role,
            project,
            roles: info.roles.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
}

/// How callers authenticate.
pub enum Auth {
    NoAuth,
    /// user -> bcrypt hash; `verified` caches SHA-256 digests of credentials that passed, since
    /// bcrypt costs tens of milliseconds by design and clients authenticate every request.
    Basic {
        users: HashMap<String, String>,
        verified: Mutex<HashSet<[u8; 32]>>,
    },
    /// SHA-256 of the token -> role (looked up by digest so that comparing never leaks a
    /// token's prefix through timing).
    Token {
        tokens: HashMap<[u8; 32], Role>,
    },
    /// Tokens validated by Keystone; `service_project` is the project whose `service` users
    /// act on every node (Ironic's `[DEFAULT] rbac_service_project_name`, default `service`).
    Keystone {
        validator: Box<ferric_keystone::TokenValidator>,
        service_project: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

/// The websocket subprotocol that carries credentials, followed by their base64url.
pub use ferric_model::console_wire::AUTH_SUBPROTOCOL_PREFIX;

const BASIC_CHALLENGE: &str = "Basic realm=\"Baremetal API\"";
const BEARER_CHALLENGE: &str = "Bearer realm=\"Baremetal API\"";
/// Cached verified credentials are dropped wholesale past this many (a bound, not an LRU).
const VERIFIED_CAP: usize = 4096;

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl Auth {
    pub fn mode(&self) -> &'static str {
        match self {
            Auth::NoAuth => "noauth",
            Auth::Basic { .. } => "http_basic",
            Auth::Token { .. } => "token",
            Auth::Keystone { .. } => "keystone",
        }
    }

    /// Parses an htpasswd file (`user:$2y$...` lines; `#` comments). Only bcrypt entries are
    /// accepted: the other htpasswd formats are not safe to store passwords in.
    pub fn htpasswd(text: &str, path: &str) -> Result<Auth, AuthFileError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: &str| AuthFileError::Invalid {
                path: path.into(),
                line: i + 1,
                reason: reason.into(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| invalid("expected user:bcrypt-hash"))?;
            if user.is_empty() {
                return Err(invalid("empty user name"));
            }
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(invalid(
                    "only bcrypt hashes are supported (htpasswd -B); this one is not bcrypt",
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(AuthFileError::Invalid {
                path: path.into(),
                line: 0,
                reason: "no users".into(),
            });
        }
        Ok(Auth::Basic {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Parses a token file: `<token> <role>` per line, role `admin` or `reader`.
    pub fn token_file(text: &str, path: &str) -> Result<Auth, AuthFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: &str| AuthFileError::Invalid {
                path: path.into(),
                line: i + 1,
                reason: reason.into(),
            };
            let mut parts = line.split_whitespace();
            let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid("expected `<token> <role>`"));
            };
            if token.len() < 16 {
                return Err(invalid("tokens must be at least 16 characters"));
            }
            let role = match role {
                "admin" => Role::Admin,
                "reader" => Role::Reader,
                _ => return Err(invalid("role must be admin or reader")),
            };
            tokens.insert(digest(&[token.as_bytes()]), role);
        }
        if tokens.is_empty() {
            return Err(AuthFileError::Invalid {
                path: path.into(),
                line: 0,
                reason: "no tokens".into(),
            });
        }
        Ok(Auth::Token { tokens })
    }

    pub fn load(mode: &str, file: Option<&Path>) -> Result<Auth, String> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| {
                AuthFileError::Read {
                    path: p.display().to_string(),
                    source,
                }
                .to_string()
            })
        };
        match (mode, file) {
            ("noauth", _) => Ok(Auth::NoAuth),
            ("http_basic", Some(p)) => {
                Auth::htpasswd(&read(p)?, &p.display().to_string()).map_err(|e| e.to_string())
            }
            ("token", Some(p)) => {
                Auth::token_file(&read(p)?, &p.display().to_string()).map_err(|e| e.to_string())
            }
            ("http_basic" | "token", None) => Err(format!("--auth {mode} needs --auth-file")),
            (other, _) => Err(format!(
                "unknown --auth {other:?} (expected noauth, http_basic, token or keystone)"
            )),
        }
    }

    /// What a dashboard session keeps to re-check its sign-in on every use (see
    /// [`Auth::recheck`]), from the headers the sign-in was checked with.
    pub fn proof_of(&self, presented: &HeaderMap) -> ferric_model::SessionProof {
        use ferric_model::SessionProof;
        let header = |name: &str| {
            presented
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        match self {
            Auth::Token { .. } => {
                let authz = header("authorization");
                let token = strip_scheme(&authz, "bearer").unwrap_or("");
                SessionProof::TokenDigest(digest(&[token.as_bytes()]).to_vec())
            }
            Auth::Keystone { .. } => SessionProof::KeystoneToken(header("x-auth-token")),
            Auth::NoAuth | Auth::Basic { .. } => SessionProof::User,
        }
    }

    /// A dashboard session's caller as its sign-in would be judged now: the user still in the
    /// password file, the token still in the token file (with the role it has there now), the
    /// Keystone token still valid (its roles and scope as Keystone says now). 401 otherwise.
    pub async fn recheck(
        &self,
        user: &str,
        role: Role,
        proof: &ferric_model::SessionProof,
    ) -> Result<Caller, ApiError> {
        use ferric_model::SessionProof;
        let gone = || ApiError::Unauthorized {
            msg: "The dashboard session's sign-in no longer holds; sign in again.".into(),
            challenge: "Cookie",
        };
        match (self, proof) {
            (Auth::NoAuth, _) => Ok(Caller::new("noauth", Role::Admin)),
            (Auth::Basic { users, .. }, SessionProof::User) if users.contains_key(user) => {
                Ok(Caller::new(user, role))
            }
            (Auth::Token { tokens }, SessionProof::TokenDigest(d)) => {
                let key: [u8; 32] = d.as_slice().try_into().map_err(|_| gone())?;
                let now = tokens.get(&key).copied().ok_or_else(gone)?;
                Ok(Caller::new(format!("token:{}", now.as_str()), now))
            }
            (Auth::Keystone { .. }, SessionProof::KeystoneToken(t)) => {
                let mut h = HeaderMap::new();
                h.insert(
                    "x-auth-token",
                    HeaderValue::from_str(t).map_err(|_| gone())?,
                );
                self.authenticate(&h).await.map_err(|e| match e {
                    ApiError::KeystoneUnauthorized { .. } => gone(),
                    other => other,
                })
            }
            _ => Err(gone()),
        }
    }

    /// Identifies the caller of a request (401 when it cannot be).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.identify(Presented::Headers(headers)).await
    }

    /// Identifies the caller of a websocket upgrade: by its headers, like any request, when it
    /// has credentials there (`Authorization` or `X-Auth-Token`, which then decide alone), else
    /// by a `ferric.auth.<base64url>` subprotocol, judged exactly as the header would be (same
    /// roles, same 401s). The auth subprotocol is removed from `headers` either way, so that
    /// the secret goes no further than here (and is never selected in the response).
    pub async fn authenticate_websocket(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Caller, ApiError> {
        let offered = take_subprotocol_credentials(headers);
        let in_headers =
            headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-auth-token");
        match offered {
            Some(secret) if !in_headers => self.identify(Presented::Subprotocol(secret)).await,
            _ => self.authenticate(headers).await,
        }
    }

    async fn identify(&self, presented: Presented<'_>) -> Result<Caller, ApiError> {
        let headers = match presented {
            Presented::Headers(h) => Some(h),
            Presented::Subprotocol(_) => None,
        };
        let authz = headers
            .and_then(|h| h.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match self {
            Auth::NoAuth => Ok(Caller::new("noauth", Role::Admin)),
            Auth::Basic { users, verified } => {
                let denied = |msg: &str| ApiError::Unauthorized {
                    msg: msg.into(),
                    challenge: BASIC_CHALLENGE,
                };
                let decoded = match presented {
                    Presented::Headers(_) => authz
                        .and_then(|a| strip_scheme(a, "basic"))
                        .ok_or_else(|| denied("Authentication required (HTTP Basic)."))
                        .map(base64_decode)?,
                    Presented::Subprotocol(secret) => secret,
                }
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| denied("Malformed HTTP Basic credentials."))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| denied("Malformed HTTP Basic credentials."))?;
                let hash = users
                    .get(user)
                    .ok_or_else(|| denied("Invalid user or password."))?
                    .clone();
                let key = digest(&[user.as_bytes(), password.as_bytes(), hash.as_bytes()]);
                let known = verified
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&key);
                if !known {
                    let password = password.to_string();
                    let ok = tokio::task::spawn_blocking(move || {
                        bcrypt::verify(password, &hash).unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false);
                    if !ok {
                        return Err(denied("Invalid user or password."));
                    }
                    let mut set = verified.lock().unwrap_or_else(|e| e.into_inner());
                    if set.len() >= VERIFIED_CAP {
                        set.clear();
                    }
                    set.insert(key);
                }
                Ok(Caller::new(user, Role::Admin))
            }
            Auth::Token { tokens } => {
                let denied = |msg: &str| ApiError::Unauthorized {
                    msg: msg.into(),
                    challenge: BEARER_CHALLENGE,
                };
                // Bearer tokens, or OpenStack's X-Auth-Token (what keystoneauth's
                // token-based plugins send).
                let token = match presented {
                    Presented::Headers(h) => authz
                        .and_then(|a| strip_scheme(a, "bearer"))
                        .or_else(|| {
                            h.get("x-auth-token")
                                .and_then(|v| v.to_str().ok())
                                .map(str::trim)
                        })
                        .ok_or_else(|| denied("Authentication required (bearer token)."))?
                        .as_bytes()
                        .to_vec(),
                    // Malformed is just another token that is not in the file.
                    Presented::Subprotocol(secret) => secret.unwrap_or_default(),
                };
                let role = tokens
                    .get(&digest(&[token.as_slice()]))
                    .copied()
                    .ok_or_else(|| denied("Invalid token."))?;
                Ok(Caller::new(format!("token:{}", role.as_str()), role))
            }
            Auth::Keystone {
                validator,
                service_project,
            } => {
                let denied = || ApiError::KeystoneUnauthorized {
                    uri: validator.url().to_string(),
                };
                // keystonemiddleware reads X-Auth-Token (and X-Storage-Token, Swift's).
                let token = match presented {
                    Presented::Headers(h) => h
                        .get("x-auth-token")
                        .and_then(|v| v.to_str().ok())
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .ok_or_else(denied)?,
                    Presented::Subprotocol(secret) => secret
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(denied)?,
                };
                let info = match validator.validate(&token).await {
                    Ok(info) => info,
                    Err(ferric_keystone::Rejected::Invalid) => return Err(denied()),
                    Err(ferric_keystone::Rejected::Unavailable(e)) => {
                        tracing::warn!(error = %e, "cannot validate a caller's token with Keystone");
                        return Err(ApiError::Unavailable(
                            "The authentication service is unavailable; try again.".into(),
                        ));
                    }
                };
                Caller::from_keystone(&info, service_project).ok_or_else(|| {
                    ApiError::Forbidden(format!(
                        "User {} has no role the Baremetal API's policies know (admin, manager, member, reader or service).",
                        info.user_name
                    ))
                })
            }
        }
    }
}

/// Whether the caller may make this request at all (what depends on the node, for
/// project-scoped callers, is checked where the node is read):
/// - readers only read;
/// - members change anything but enroll or delete nodes, ports and port groups (Ironic's
///   `baremetal:node:create`/`delete` and `baremetal:port:create`/`delete` are system admin's);
/// - project-scoped callers reach the node API, and read ports, port groups and volume records
///   (of their project's nodes, filtered where they are read) and the change stream of those
///   nodes; conductors, the cluster's other events and metrics are the system's (Ironic's `baremetal:conductor:get` is `SYSTEM_READER`).
///   Creating, changing and deleting ports (Ironic: the owner's admin or manager) stays the
///   system's here.
pub fn authorize(caller: &Caller, method: &Method, path: &str) -> Result<(), ApiError> {
    let denied = |why: &str| {
        Err(ApiError::Forbidden(format!(
            "Access was denied to the following resource: {method} {path} ({why})"
        )))
    };
    let reads = method == Method::GET || method == Method::HEAD;
    if caller.project.is_some() {
        // The node API (each node checked where it is read: `policy.rs`) and the driver list.
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        return match (parts.get(2).copied(), parts.get(3).copied()) {
            (Some("nodes"), None | Some("detail")) if reads => Ok(()),
            (Some("nodes"), Some(ident)) if ident != "validate" && ident != "detail" => Ok(()),
            (Some("drivers"), _) if reads => Ok(()),
            // The dashboard's views, which count and list the project's nodes only (`fleet`),
            // and the change stream, which shows their changes only (`extensions::events`).
            (Some("ferric"), Some("summary" | "nodes" | "events")) if reads => Ok(()),
            // Each record's node is checked where it is read or written (`children`).
            (Some("ports" | "portgroups" | "volume"), _) => Ok(()),
            _ => denied(
                "the system's; a project-scoped token reads its project's nodes, ports and volume records, and acts on its nodes and their records",
            ),
        };
    }
    match caller.role {
        Role::Admin => Ok(()),
        _ if reads => Ok(()),
        Role::Reader => denied("role reader may only read"),
        Role::Member | Role::Manager if enrolls_or_deletes(method, path) => denied(&format!(
            "role {} may not enroll or delete; that needs admin",
            caller.role.as_str()
        )),
        Role::Member | Role::Manager => Ok(()),
    }
}

/// `POST /v1/{nodes,ports,portgroups}` and `DELETE` of one of them.
fn enrolls_or_deletes(method: &Method, path: &str) -> bool {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let resource = matches!(parts.get(2), Some(&("nodes" | "ports" | "portgroups")));
    resource
        && ((method == Method::POST && parts.len() == 3)
            || (method == Method::DELETE && parts.len() == 4))
}

/// Where a request's credentials are read from.
enum Presented<'a> {
    Headers(&'a HeaderMap),
    /// What a `ferric.auth.` subprotocol decoded to; None when malformed.
    Subprotocol(Option<Vec<u8>>),
}

/// Removes every `ferric.auth.` subprotocol from the offered ones (dropping the header when
/// none is left) and returns the credentials: None when none was offered, Some(None) when they
/// are malformed (not base64url, or more than one offered: which would be meant is a guess).
fn take_subprotocol_credentials(headers: &mut HeaderMap) -> Option<Option<Vec<u8>>> {
    let mut offered = Vec::new();
    let mut others: Vec<&[u8]> = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for proto in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            match proto.strip_prefix(AUTH_SUBPROTOCOL_PREFIX.as_bytes()) {
                Some(encoded) => offered.push(encoded),
                None if proto.is_empty() => {}
                None => others.push(proto),
            }
        }
    }
    if offered.is_empty() {
        return None;
    }
    let secret = match offered.as_slice() {
        [one] => std::str::from_utf8(one).ok().and_then(base64url_decode),
        _ => None,
    };
    // Substrings of header values are valid header values.
    let kept = (!others.is_empty())
        .then(|| HeaderValue::from_bytes(&others.join(b", ".as_slice())).ok())
        .flatten();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Some(kept) = kept {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, kept);
    }
    Some(secret)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Standard base64 (with or without padding); None when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    decode_base64(s, *b"+/")
}

/// base64url (RFC 4648 §5, with or without padding); None when malformed.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    decode_base64(s, *b"-_")
}

/// Base64 whose last two digits (62 and 63) are `extra`.
fn decode_base64(s: &str, extra: [u8; 2]) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            _ if c == extra[0] => 62,
            _ if c == extra[1] => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
