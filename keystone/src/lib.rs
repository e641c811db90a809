//! Keystone v3, the two ways Ferric talks to it:
//!
//! - [`ServiceToken`]: a service user's own token (password auth scoped to a project), cached
//!   until shortly before it expires. The conductors deliver power events to Nova with it, and
//!   the gateway validates callers' tokens with it.
//! - [`TokenValidator`]: what a caller's `X-Auth-Token` is worth (`GET /v3/auth/tokens` with
//!   the token in `X-Subject-Token`, as keystonemiddleware does): who, which scope, which roles.
//!   Each answer is cached by the token's SHA-256 until the earlier of its expiry and a cache
//!   lifetime (keystonemiddleware's `token_cache_time`, 300 s), so a revoked token stops working
//!   within that lifetime at most.
//!
//! Secrets never appear in `Debug` output, logs or error messages.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A secret string; `Debug` shows `******`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("******")
    }
}

/// Keystone v3 password authentication of a service user.
#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    /// Keystone's endpoint (`http://keystone:5000` or `.../v3`).
    pub url: String,
    pub user: String,
    pub password: Secret,
    pub user_domain: String,
    pub project: String,
    pub project_domain: String,
}

impl KeystoneConfig {
    pub fn describe(&self) -> String {
        format!(
            "Keystone at {} as {} (domain {}), project {} (domain {})",
            self.url, self.user, self.user_domain, self.project, self.project_domain
        )
    }
}

/// Why Keystone gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoneError {
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("no answer from {url} in time")]
    Timeout { url: String },
    #[error("{url} answered HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} refused the credentials (HTTP {status}): {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} answered something that is not a valid reply: {detail}")]
    Garbage { url: String, detail: String },
}

/// A transport failure, with its causes (reqwest's text names the URL, never credentials:
/// they travel in headers).
pub fn transport_error(url: &str, e: reqwest::Error) -> KeystoneError {
    if e.is_timeout() {
        return KeystoneError::Timeout {
            url: url.to_string(),
        };
    }
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    KeystoneError::Connect {
        url: url.to_string(),
        detail,
    }
}

/// The first 200 bytes of a body, printable.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 200 {
        format!("{text}...")
    } else {
        text
    }
}

/// A service user's token, fetched on first use and renewed shortly before it expires (or at
/// once after [`ServiceToken::invalidate`], when a receiver answered 401).
pub struct ServiceToken {
    config: KeystoneConfig,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

impl ServiceToken {
    pub fn new(config: KeystoneConfig) -> Self {
        ServiceToken {
            config,
            cached: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &KeystoneConfig {
        &self.config
    }

    /// Drops the cached token: the next [`ServiceToken::get`] asks Keystone again.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// The token, from the cache or from Keystone. `purpose` goes in the log line of a fetch.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        purpose: &str,
    ) -> Result<Secret, KeystoneError> {
        // One fetch at a time: concurrent requests wait for it instead of each asking.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let k = &self.config;
        let url = tokens_url(&k.url);
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": k.user, "domain": {"name": k.user_domain}, "password": k.password.expose()}}},
            "scope": {"project": {"name": k.project, "domain": {"name": k.project_domain}}}
        }});
        let resp = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(&url, e))?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.unwrap_or_default();
        if status == 401 || status == 403 {
            return Err(KeystoneError::Refused {
                url,
                status,
                detail: format!(
                    "Keystone refused the credentials of user {} for project {}: {}",
                    k.user,
                    k.project,
                    snippet(&bytes)
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(KeystoneError::Status {
                url,
                status,
                detail: format!("Keystone did not issue a token: {}", snippet(&bytes)),
            });
        }
        let Some(token) = token else {
            return Err(KeystoneError::Garbage {
                url,
                detail: "Keystone's answer has no X-Subject-Token header".into(),
            });
        };
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let lifetime = doc["token"]["expires_at"]
            .as_str()
            .and_then(parse_utc_ms)
            .map(|exp| Duration::from_millis(exp.saturating_sub(ferric_model::now_ms())))
            .unwrap_or(Duration::from_secs(300));
        let token = Secret::new(token);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + renew_after(lifetime),
        });
        tracing::info!(
            keystone = %k.url,
            user = %k.user,
            valid_s = lifetime.as_secs(),
            "got a Keystone token for {purpose}"
        );
        Ok(token)
    }
}

/// What Keystone says a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_id: String,
    pub user_name: String,
    /// The project the token is scoped to, if any.
    pub project: Option<Project>,
    /// Scoped to the whole system (`"system": {"all": true}`).
    pub system_all: bool,
    /// Role names, lower case, with the roles they imply (Keystone puts those in the token).
    pub roles: Vec<String>,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
}

impl TokenInfo {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Reads the `token` object of Keystone's answer; None when it is not one.
    pub fn from_body(doc: &Value) -> Option<TokenInfo> {
        let t = doc.get("token")?;
        let user = t.get("user")?;
        let project = t.get("project").and_then(|p| {
            Some(Project {
                id: p.get("id")?.as_str()?.to_string(),
                name: p.get("name").and_then(Value::as_str).unwrap_or("").into(),
                domain_id: p["domain"]["id"].as_str().unwrap_or("").into(),
            })
        });
        let roles = t
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("name")?.as_str())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        Some(TokenInfo {
            user_id: user.get("id")?.as_str()?.to_string(),
            user_name: user
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            project,
            system_all: t["system"]["all"].as_bool().unwrap_or(false),
            roles,
            expires_at_ms: parse_utc_ms(t.get("expires_at")?.as_str()?)?,
        })
    }
}

/// Why a caller's token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Keystone does not know it, or it expired or was revoked: 401 for the caller.
    #[error("the token is invalid or expired")]
    Invalid,
    /// Keystone could not be asked: 503 for the caller (retry), never a 401 that would make a
    /// client drop good credentials.
    #[error("cannot validate the token: {0}")]
    Unavailable(KeystoneError),
}

/// Validates callers' tokens with Keystone, with the service token, and caches the answers.
pub struct TokenValidator {
    service: ServiceToken,
    client: reqwest::Client,
    cache_time: Duration,
    cache: std::sync::Mutex<HashMap<[u8; 32], (Instant, TokenInfo)>>,
}

/// Cached answers are dropped wholesale past this many (a bound, not an LRU).
const CACHE_CAP: usize = 16_384;

impl TokenValidator {
    pub fn new(service: ServiceToken, timeout: Duration, cache_time: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("ferric-gateway")
            .build()
            .unwrap_or_default();
        TokenValidator {
            service,
            client,
            cache_time,
            cache: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn describe(&self) -> String {
        self.service.config().describe()
    }

    /// Keystone's URL (for `WWW-Authenticate: Keystone uri="..."`).
    pub fn url(&self) -> &str {
        &self.service.config().url
    }

    pub async fn validate(&self, token: &str) -> Result<TokenInfo, Rejected> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some((until, info)) if now < *until => return Ok(info.clone()),
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        let info = match self.ask(token).await {
            Err(Rejected::Unavailable(KeystoneError::Refused { .. })) => {
                // The service token may have been revoked: one new one, one more try.
                self.service.invalidate().await;
                self.ask(token).await?
            }
            other => other?,
        };
        let left = Duration::from_millis(info.expires_at_ms.saturating_sub(ferric_model::now_ms()));
        if left.is_zero() {
            return Err(Rejected::Invalid);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, (now + left.min(self.cache_time), info.clone()));
        Ok(info)
    }

    async fn ask(&self, token: &str) -> Result<TokenInfo, Rejected> {
        let service = self
            .service
            .get(&self.client, "validating callers' tokens")
            .await
            .map_err(Rejected::Unavailable)?;
        let url = tokens_url(self.url());
        let resp = self
            .client
            .get(&url)
            .header("X-Auth-Token", service.expose())
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|e| Rejected::Unavailable(transport_error(&url, e)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        match status {
            200 => {
                let doc: Value = serde_json::from_slice(&bytes).map_err(|_| {
                    Rejected::Unavailable(KeystoneError::Garbage {
                        url: url.clone(),
                        detail: snippet(&bytes),
                    })
                })?;
                TokenInfo::from_body(&doc).ok_or_else(|| {
                    Rejected::Unavailable(KeystoneError::Garbage {
                        url,
                        detail: "no token with a user and expires_at in the answer".into(),
                    })
                })
            }
            // Keystone answers 404 for a token it does not know or that expired or was
            // revoked.
            404 => Err(Rejected::Invalid),
            401 | 403 => Err(Rejected::Unavailable(KeystoneError::Refused {
                url,
                status,
                detail: format!(
                    "Keystone refused the service token of {}: {}",
                    self.service.config().user,
                    snippet(&bytes)
                ),
            })),
            _ => Err(Rejected::Unavailable(KeystoneError::Status {
                url,
                status,
                detail: snippet(&bytes),
            })),
        }
    }
}

/// `.../v3/auth/tokens`, whether or not the configured URL ends in `/v3`.
pub fn tokens_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    }
}

/// When to ask for a new token: shortly before expiry (a minute, or a tenth of a short
/// lifetime), so that no request goes out with a token about to expire.
pub fn renew_after(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10).min(Duration::from_secs(60));
    lifetime.saturating_sub(margin)
}

/// Milliseconds since the epoch of an ISO 8601 UTC time as Keystone writes it
/// (`2026-01-02T03:04:05.000000Z`; a `+00:00` offset is accepted too).
pub fn parse_utc_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (h, mi, se): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let frac_ms: u64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(secs * 1000 + frac_ms)
}

#[cfg(test)]
mod tests;
