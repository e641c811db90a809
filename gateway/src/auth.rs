//! Who is calling: `noauth` (everyone is admin; only on loopback unless forced), `http_basic`
//! (an htpasswd file of bcrypt hashes, as Ironic's `auth_strategy = http_basic` reads it, so
//! `OS_AUTH_TYPE=http_basic` clients work; every user is admin), and bearer tokens with a role
//! (`admin` may change anything, `reader` may only read). Secrets are masked for everyone.

use crate::error::ApiError;
use axum::http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as `requested_by` of the actions it asks for.
    pub name: String,
    pub role: Role,
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
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

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
                "unknown --auth {other:?} (expected noauth, http_basic or token)"
            )),
        }
    }

    /// Identifies the caller of a request (401 when it cannot be).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let authz = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match self {
            Auth::NoAuth => Ok(Caller {
                name: "noauth".into(),
                role: Role::Admin,
            }),
            Auth::Basic { users, verified } => {
                let denied = |msg: &str| ApiError::Unauthorized {
                    msg: msg.into(),
                    challenge: BASIC_CHALLENGE,
                };
                let encoded = authz
                    .and_then(|a| strip_scheme(a, "basic"))
                    .ok_or_else(|| denied("Authentication required (HTTP Basic)."))?;
                let decoded = base64_decode(encoded)
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
                Ok(Caller {
                    name: user.to_string(),
                    role: Role::Admin,
                })
            }
            Auth::Token { tokens } => {
                let denied = |msg: &str| ApiError::Unauthorized {
                    msg: msg.into(),
                    challenge: BEARER_CHALLENGE,
                };
                // Bearer tokens, or OpenStack's X-Auth-Token (what keystoneauth's
                // token-based plugins send).
                let token = authz
                    .and_then(|a| strip_scheme(a, "bearer"))
                    .or_else(|| {
                        headers
                            .get("x-auth-token")
                            .and_then(|v| v.to_str().ok())
                            .map(str::trim)
                    })
                    .ok_or_else(|| denied("Authentication required (bearer token)."))?;
                let role = tokens
                    .get(&digest(&[token.as_bytes()]))
                    .copied()
                    .ok_or_else(|| denied("Invalid token."))?;
                Ok(Caller {
                    name: format!("token:{}", role.as_str()),
                    role,
                })
            }
        }
    }
}

/// Whether `role` may make this request: readers only read.
pub fn authorize(caller: &Caller, method: &Method, path: &str) -> Result<(), ApiError> {
    if caller.role == Role::Admin || method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "Access was denied to the following resource: {method} {path} (role {} may only read)",
        caller.role.as_str()
    )))
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Standard base64 (with or without padding); None when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
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
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hdr(k: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(k, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("YWRtaW46c2VjcmV0").unwrap(), b"admin:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a*b").is_none());
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = Auth::htpasswd(&format!("# users\nadmin:{hash}\n"), "f").unwrap();
        let ok = hdr("authorization", "Basic YWRtaW46c2VjcmV0");
        assert_eq!(auth.authenticate(&ok).await.unwrap().name, "admin");
        assert_eq!(auth.authenticate(&ok).await.unwrap().role, Role::Admin);
        // admin:wrong
        let bad = hdr("authorization", "Basic YWRtaW46d3Jvbmc=");
        assert!(matches!(
            auth.authenticate(&bad).await,
            Err(ApiError::Unauthorized { .. })
        ));
        assert!(auth.authenticate(&HeaderMap::new()).await.is_err());
        assert!(Auth::htpasswd("admin:{SHA}abc", "f").is_err());
        assert!(Auth::htpasswd("", "f").is_err());
    }

    #[tokio::test]
    async fn tokens_have_roles() {
        let auth = Auth::token_file(
            "0123456789abcdef0123 admin\nreadonly-token-0000000 reader\n",
            "f",
        )
        .unwrap();
        let admin = auth
            .authenticate(&hdr("authorization", "Bearer 0123456789abcdef0123"))
            .await
            .unwrap();
        assert_eq!(admin.role, Role::Admin);
        let reader = auth
            .authenticate(&hdr("x-auth-token", "readonly-token-0000000"))
            .await
            .unwrap();
        assert_eq!(reader.role, Role::Reader);
        assert!(authorize(&reader, &Method::GET, "/v1/nodes").is_ok());
        assert!(matches!(
            authorize(&reader, &Method::PATCH, "/v1/nodes/x"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(auth
            .authenticate(&hdr("authorization", "Bearer nope-nope-nope-nope"))
            .await
            .is_err());
        assert!(Auth::token_file("short admin", "f").is_err());
        assert!(Auth::token_file("0123456789abcdef0123 root", "f").is_err());
    }
}
