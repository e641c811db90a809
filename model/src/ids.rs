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

/// The fencing token of one ownership of one node: the etcd `create_revision` of the key that
/// makes it the owner's. A new acquisition (by anyone) always has a larger revision, so a write
/// that compares the token fails for every owner but the current one.
///
/// Two kinds of key give ownership (DESIGN.md, "Placement"): most nodes are owned through their
/// bucket's key (`buckets/<bucket>`, [`Bucket::of`]), and the few that their bucket's holder
/// hands on (it does not serve their driver or group) through a reservation of their own
/// (`reservations/<uuid>`). The token says which by its sign: a per-node reservation's
/// revision as it is, a bucket's negated ([`FenceToken::bucket`]). The value is what status
/// records keep as their writer's fence: unique per ownership either way, since the two keys
/// are never created in one revision for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FenceToken(pub i64);

impl FenceToken {
    /// Ownership through the node's bucket key, created at `create_rev`.
    pub fn bucket(create_rev: i64) -> Self {
        FenceToken(-create_rev)
    }

    /// Whether the node is owned through its bucket's key (otherwise its own reservation).
    pub fn is_bucket(self) -> bool {
        self.0 < 0
    }

    /// The `create_revision` of the key the token stands for.
    pub fn revision(self) -> i64 {
        self.0.abs()
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_bucket() {
            write!(f, "b{}", self.revision())
        } else {
            self.0.fmt(f)
        }
    }
}

/// One of the 4,096 buckets nodes are placed and owned in: the first three hex digits of the
/// node's uuid, so that a bucket's records are one key range under each prefix (`nodes/`,
/// `status/`, ...). Ironic and Ferric make random (v4) uuids, which fill the buckets evenly;
/// nodes enrolled with uuids that share their first three digits share a bucket, and so a
/// conductor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(pub u16);

impl Bucket {
    pub const COUNT: u16 = 4096;

    pub fn of(id: &NodeId) -> Self {
        let b = id.0.as_bytes();
        Bucket(((b[0] as u16) << 4) | (b[1] as u16 >> 4))
    }

    /// All buckets, in key order.
    pub fn all() -> impl Iterator<Item = Bucket> {
        (0..Self::COUNT).map(Bucket)
    }

    /// Parses the three lowercase hex digits of a bucket key's leaf.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 3
            || !s
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return None;
        }
        u16::from_str_radix(s, 16).ok().map(Bucket)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_the_first_three_hex_digits_of_the_uuid() {
        let id: NodeId = "7f3a0c1e-0000-4000-8000-000000000000".parse().unwrap();
        assert_eq!(Bucket::of(&id), Bucket(0x7f3));
        assert_eq!(Bucket::of(&id).to_string(), "7f3");
        assert!(id.to_string().starts_with(&Bucket::of(&id).to_string()));
        assert_eq!(Bucket::parse("7f3"), Some(Bucket(0x7f3)));
        assert_eq!(Bucket::parse("fff"), Some(Bucket(4095)));
        for bad in ["7F3", "7f", "7f3a", "g00", "-01", ""] {
            assert_eq!(Bucket::parse(bad), None, "{bad}");
        }
        assert_eq!(Bucket::all().count(), 4096);
        let t = FenceToken::bucket(42);
        assert!(t.is_bucket() && t.revision() == 42 && t.to_string() == "b42");
        assert!(!FenceToken(42).is_bucket() && FenceToken(42).revision() == 42);
    }

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
