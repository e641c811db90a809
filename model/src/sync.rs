//! Power sync: how a conductor treats what its periodic reads of a node's power state find.
//! The cluster's policy lives in `config/sync`; a node may override it in its `driver_info`
//! (`ferric_power_sync`).

use crate::codec::Record;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a sweep does when the hardware's power state is not the last requested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SyncPolicy {
    /// Record what the hardware says (an OS shutdown, the button); never push.
    #[default]
    Observe,
    /// Restore the last requested power state, once the mismatch was seen on two sweeps in a
    /// row and the grace period after the last power request or operation has passed; never
    /// powering off a `disable_power_off` node, never cutting power after a soft power off.
    Enforce,
}

impl SyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Observe => "observe",
            SyncPolicy::Enforce => "enforce",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "observe" => Ok(SyncPolicy::Observe),
            "enforce" => Ok(SyncPolicy::Enforce),
            other => Err(format!(
                "unknown power sync policy {other:?}: observe or enforce"
            )),
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cluster's settings that conductors watch in `config/sync`: the power sync policy and,
/// beside it, the default of nodes' `automated_clean`; the default when none was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncConfig {
    pub policy: SyncPolicy,
    /// Ironic's `[conductor] automated_clean` (default true): whether `provide` and tear down
    /// clean a node whose own `automated_clean` is unset. Format version 2 appended it.
    pub automated_clean: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            policy: SyncPolicy::default(),
            automated_clean: true,
        }
    }
}

impl Record for SyncConfig {
    const KIND: &'static str = "sync config";
    /// 2: `automated_clean` appended.
    const VERSION: u8 = 2;

    fn migrate(version: u8, body: &[u8]) -> Result<Self, crate::codec::CodecError> {
        match version {
            // Version 1 had only the policy: automated cleaning was always on.
            1 => {
                let mut v2 = body.to_vec();
                v2.push(1);
                crate::codec::body_of(version, &v2)
            }
            _ => Err(crate::codec::CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
                current: Self::VERSION,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn policy_names_round_trip_and_bad_ones_are_refused() {
        for p in [SyncPolicy::Observe, SyncPolicy::Enforce] {
            assert_eq!(SyncPolicy::parse(p.as_str()), Ok(p));
        }
        assert_eq!(SyncPolicy::parse(" Enforce "), Ok(SyncPolicy::Enforce));
        assert!(SyncPolicy::parse("push")
            .unwrap_err()
            .contains("observe or enforce"));
        let c = SyncConfig {
            policy: SyncPolicy::Enforce,
            automated_clean: false,
        };
        assert_eq!(decode::<SyncConfig>(&encode(&c)).unwrap(), c);
        assert!(decode::<SyncConfig>(&[1, 9]).is_err());
        // A version-1 record (the policy only) reads with automated cleaning on.
        let v2 = encode(&c);
        let v1 = [1, v2[1]];
        assert_eq!(
            decode::<SyncConfig>(&v1).unwrap(),
            SyncConfig {
                policy: SyncPolicy::Enforce,
                automated_clean: true
            }
        );
    }
}
