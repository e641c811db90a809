//! A dashboard sign-in (`dashboard/sessions/<sha256 of the session id>`, on a lease that ends
//! with the session): who signed in, as what, and the session's CSRF token. Stored in etcd so
//! that any gateway serves it and a gateway restart signs nobody out; the session id itself is
//! only in the browser's HttpOnly cookie (the key is its digest).

use crate::codec::Record;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The caller as authenticated at sign-in.
    pub user: String,
    /// `admin`, `manager`, `member` or `reader`.
    pub role: String,
    /// A project-scoped Keystone caller's project (None: cluster-wide).
    pub project: Option<String>,
    /// Keystone's role names (empty for other modes).
    pub roles: Vec<String>,
    /// Sent back by the page on every mutating request (`X-CSRF-Token`).
    pub csrf: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// What re-checks the sign-in on every use, as the credentials would be checked now: the
    /// digest of a `token`-mode token (never the token), or the Keystone token itself (which
    /// the gateway validates again, so an expired or revoked token ends the session).
    pub proof: SessionProof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionProof {
    /// `http_basic`: the user must still be in the password file.
    User,
    /// `token`: the token's digest must still be in the token file.
    TokenDigest(Vec<u8>),
    /// `keystone`: the token, validated again on use (cached as any token's validation).
    KeystoneToken(String),
}

impl Record for SessionRecord {
    const KIND: &'static str = "dashboard session";
    const VERSION: u8 = 1;
}
