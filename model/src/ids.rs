//! Identifiers: node uuids, unique node names, conductor names, and the fencing token.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A node's identity. Ironic clients address nodes by uuid or by unique name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub uuid::Uuid);

impl NodeId {
    pub fn new_random() -> Self {
        NodeId(uuid::Uuid::new_v4())
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for NodeId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(NodeId)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is longer than 255 characters")]
    TooLong,
    #[error("name {0:?} contains {1:?}; allowed are letters, digits and - . _ ~")]
    BadChar(String, char),
    #[error("name {0:?} looks like a uuid; node names must not be uuids")]
    LooksLikeUuid(String),
}

/// A node's unique name. Ironic allows RFC 3986 unreserved characters; a name that parses as a
/// uuid would be ambiguous in `/v1/nodes/{uuid-or-name}` and is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 255 {
            return Err(NameError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(NameError::BadChar(s.to_string(), c));
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return Err(NameError::LooksLikeUuid(s.to_string()));
        }
        Ok(NodeName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conductor's name, unique among live conductors (its membership key is `conductors/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConductorName(String);

impl ConductorName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        // Same alphabet as node names: the name becomes part of an etcd key.
        NodeName::parse(s).map(|n| ConductorName(n.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConductorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing token of one ownership of one node: the etcd `create_revision` of its
/// reservation key. A new acquisition (by anyone) always has a larger revision, so a write that
/// compares the token fails for every owner but the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FenceToken(pub i64);

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ironic_rules() {
        assert!(NodeName::parse("rack1-node_07.a~b").is_ok());
        assert_eq!(NodeName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            NodeName::parse("a b"),
            Err(NameError::BadChar(_, ' '))
        ));
        assert!(matches!(
            NodeName::parse("a/b"),
            Err(NameError::BadChar(_, '/'))
        ));
        assert!(matches!(
            NodeName::parse("1be26c0b-03f2-4d2e-ae87-c02d7f33c123"),
            Err(NameError::LooksLikeUuid(_))
        ));
        assert_eq!(NodeName::parse(&"x".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn node_id_round_trips_through_text() {
        let id = NodeId::new_random();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("not-a-uuid".parse::<NodeId>().is_err());
    }
}
