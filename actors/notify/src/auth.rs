//! Credentials for the receivers: Keystone password auth (a service user scoped to a project;
//! the token is cached until shortly before it expires and renewed at once when the receiver
//! answers 401), a static token, or HTTP basic auth. Secrets never appear in `Debug` output or
//! in error messages.

use crate::wire::{snippet, SendError};
use serde_json::json;
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

#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// Sent as `X-Auth-Token` (what OpenStack services take) and as a bearer token.
    Token(Secret),
    Basic {
        user: String,
        password: Secret,
    },
    Keystone(KeystoneConfig),
}

/// Credentials with the Keystone token cache.
pub struct Authenticator {
    creds: Credentials,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

impl Authenticator {
    pub fn new(creds: Credentials) -> Self {
        Authenticator {
            creds,
            cached: Mutex::new(None),
        }
    }

    pub fn describe(&self) -> String {
        match &self.creds {
            Credentials::None => "no auth".into(),
            Credentials::Token(_) => "a static token".into(),
            Credentials::Basic { user, .. } => format!("basic auth as {user}"),
            Credentials::Keystone(k) => format!(
                "Keystone at {} as {} (domain {}), project {} (domain {})",
                k.url, k.user, k.user_domain, k.project, k.project_domain
            ),
        }
    }

    /// Adds the credentials to a request (getting a Keystone token first if needed).
    pub async fn apply(
        &self,
        client: &reqwest::Client,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        Ok(match &self.creds {
            Credentials::None => req,
            Credentials::Token(t) => req
                .header("X-Auth-Token", t.expose())
                .bearer_auth(t.expose()),
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Credentials::Keystone(k) => {
                let token = self.keystone_token(client, k).await?;
                req.header("X-Auth-Token", token.expose())
            }
        })
    }

    /// Whether a 401 may be cured by a new token (then the cached one is dropped).
    pub async fn renew_after_401(&self) -> bool {
        if matches!(self.creds, Credentials::Keystone(_)) {
            *self.cached.lock().await = None;
            true
        } else {
            false
        }
    }

    async fn keystone_token(
        &self,
        client: &reqwest::Client,
        k: &KeystoneConfig,
    ) -> Result<Secret, SendError> {
        // One fetch at a time: concurrent requests wait for it instead of each asking.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
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
            .map_err(|e| crate::deliverer::transport_error(&url, e))?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.unwrap_or_default();
        if status == 401 || status == 403 {
            return Err(SendError::Auth {
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
            return Err(SendError::Status {
                url,
                status,
                detail: format!("Keystone did not issue a token: {}", snippet(&bytes)),
            });
        }
        let Some(token) = token else {
            return Err(SendError::Garbage {
                url,
                detail: "Keystone's answer has no X-Subject-Token header".into(),
            });
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
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
            "got a Keystone token for event delivery"
        );
        Ok(token)
    }
}

/// `POST .../v3/auth/tokens`, whether or not the configured URL ends in `/v3`.
fn tokens_url(base: &str) -> String {
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
mod tests {
    use super::*;

    #[test]
    fn keystone_times_parse() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_ms("2015-08-27T09:49:58.000000Z"),
            Some(1_440_668_998_000)
        );
        assert_eq!(
            parse_utc_ms("2000-03-01T00:00:01.5+00:00"),
            Some(951_868_801_500)
        );
        assert_eq!(parse_utc_ms("yesterday"), None);
        assert_eq!(parse_utc_ms("2015-13-27T09:49:58Z"), None);
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(renew_after(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            tokens_url("http://k:5000/v3/"),
            "http://k:5000/v3/auth/tokens"
        );
        assert_eq!(tokens_url("http://k:5000"), "http://k:5000/v3/auth/tokens");
    }

    #[test]
    fn secrets_never_show() {
        let c = Credentials::Keystone(KeystoneConfig {
            url: "u".into(),
            user: "nova".into(),
            password: Secret::new("hunter2"),
            user_domain: "Default".into(),
            project: "service".into(),
            project_domain: "Default".into(),
        });
        assert!(!format!("{c:?}").contains("hunter2"));
        let b = Credentials::Basic {
            user: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!Authenticator::new(b).describe().contains("hunter2"));
    }
}
