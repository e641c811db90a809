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

/// The cluster's power sync settings (`config/sync`); the default when none was set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncConfig {
    pub policy: SyncPolicy,
}

impl Record for SyncConfig {
    const KIND: &'static str = "sync config";
    const VERSION: u8 = 1;
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
        };
        assert_eq!(decode::<SyncConfig>(&encode(&c)).unwrap(), c);
        assert!(decode::<SyncConfig>(&[1, 9]).is_err());
    }
}
