//! Credentials for the receivers: Keystone password auth (a service user scoped to a project;
//! the token is cached until shortly before it expires and renewed at once when the receiver
//! answers 401), a static token, or HTTP basic auth. Secrets never appear in `Debug` output or
//! in error messages.

use crate::wire::SendError;
pub use ferric_keystone::{KeystoneConfig, Secret};
use ferric_keystone::{KeystoneError, ServiceToken};

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

/// Credentials, with Keystone's token cache.
pub struct Authenticator {
    creds: Applied,
}

/// What goes on each request: a Keystone config becomes its cached service token.
enum Applied {
    None,
    Token(Secret),
    Basic { user: String, password: Secret },
    Keystone(ServiceToken),
}

impl Authenticator {
    pub fn new(creds: Credentials) -> Self {
        let creds = match creds {
            Credentials::None => Applied::None,
            Credentials::Token(t) => Applied::Token(t),
            Credentials::Basic { user, password } => Applied::Basic { user, password },
            Credentials::Keystone(k) => Applied::Keystone(ServiceToken::new(k)),
        };
        Authenticator { creds }
    }

    pub fn describe(&self) -> String {
        match &self.creds {
            Applied::None => "no auth".into(),
            Applied::Token(_) => "a static token".into(),
            Applied::Basic { user, .. } => format!("basic auth as {user}"),
            Applied::Keystone(k) => k.config().describe(),
        }
    }

    /// Adds the credentials to a request (getting a Keystone token first if needed).
    pub async fn apply(
        &self,
        client: &reqwest::Client,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        Ok(match &self.creds {
            Applied::None => req,
            Applied::Token(t) => req
                .header("X-Auth-Token", t.expose())
                .bearer_auth(t.expose()),
            Applied::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Applied::Keystone(k) => {
                let token = k.get(client, "event delivery").await.map_err(send_error)?;
                req.header("X-Auth-Token", token.expose())
            }
        })
    }

    /// Whether a 401 may be cured by a new token (then the cached one is dropped).
    pub async fn renew_after_401(&self) -> bool {
        match &self.creds {
            Applied::Keystone(k) => {
                k.invalidate().await;
                true
            }
            _ => false,
        }
    }
}

/// Keystone's failures as delivery failures (the same kinds, for the same metrics).
pub(crate) fn send_error(e: KeystoneError) -> SendError {
    match e {
        KeystoneError::Connect { url, detail } => SendError::Connect { url, detail },
        KeystoneError::Timeout { url } => SendError::Timeout { url, timeout_ms: 0 },
        KeystoneError::Status {
            url,
            status,
            detail,
        } => SendError::Status {
            url,
            status,
            detail,
        },
        KeystoneError::Refused {
            url,
            status,
            detail,
        } => SendError::Auth {
            url,
            status,
            detail,
        },
        KeystoneError::Garbage { url, detail } => SendError::Garbage { url, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
