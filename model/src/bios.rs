//! A node's cached BIOS settings (`bios/<uuid>`), read from the BMC by the node's owner when the
//! node is verified (`manage`) and when cleaning ends, as Ironic caches them, and served by the
//! gateway's `/v1/nodes/{id}/bios` without asking the BMC.

use crate::codec::Record;
use serde::{Deserialize, Serialize};

/// One setting: its current value and, when the BMC publishes an attribute registry, what the
/// registry says about it (Ironic's `registry_fields`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BiosSetting {
    pub name: String,
    /// The value as text (Ironic stores every value as a string; `null` stays `None`).
    pub value: Option<String>,
    pub attribute_type: Option<String>,
    pub allowable_values: Option<Vec<String>>,
    pub lower_bound: Option<i64>,
    pub upper_bound: Option<i64>,
    pub min_length: Option<i64>,
    pub max_length: Option<i64>,
    pub read_only: Option<bool>,
    pub reset_required: Option<bool>,
    pub unique: Option<bool>,
    /// When the setting was first cached.
    pub created_at_ms: u64,
    /// When its value or registry fields last changed (None: never since it was cached).
    pub updated_at_ms: Option<u64>,
}

impl BiosSetting {
    /// Whether two readings of a setting differ in anything but their timestamps.
    fn same_reading(&self, other: &BiosSetting) -> bool {
        let bare = |s: &BiosSetting| BiosSetting {
            created_at_ms: 0,
            updated_at_ms: None,
            ..s.clone()
        };
        bare(self) == bare(other)
    }
}

/// All cached settings of a node, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BiosRecord {
    pub settings: Vec<BiosSetting>,
    /// When the BMC was last read.
    pub read_at_ms: u64,
    /// The conductor that read it.
    pub conductor: String,
}

impl Record for BiosRecord {
    const KIND: &'static str = "BIOS settings";
    const VERSION: u8 = 1;
}

impl BiosRecord {
    /// The record after a new reading `fresh` (timestamps unset) at `now_ms`: a setting seen
    /// before keeps its `created_at`, and its `updated_at` moves only when something in it
    /// changed; settings the BMC no longer reports are dropped (Ironic's `sync_node_setting`).
    pub fn merge(
        previous: Option<&BiosRecord>,
        mut fresh: Vec<BiosSetting>,
        now_ms: u64,
        conductor: &str,
    ) -> BiosRecord {
        fresh.sort_by(|a, b| a.name.cmp(&b.name));
        fresh.dedup_by(|a, b| a.name == b.name);
        for s in &mut fresh {
            let before = previous.and_then(|p| p.get(&s.name));
            match before {
                Some(old) if old.same_reading(s) => {
                    s.created_at_ms = old.created_at_ms;
                    s.updated_at_ms = old.updated_at_ms;
                }
                Some(old) => {
                    s.created_at_ms = old.created_at_ms;
                    s.updated_at_ms = Some(now_ms);
                }
                None => {
                    s.created_at_ms = now_ms;
                    s.updated_at_ms = None;
                }
            }
        }
        BiosRecord {
            settings: fresh,
            read_at_ms: now_ms,
            conductor: conductor.to_string(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&BiosSetting> {
        self.settings
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.settings[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    fn setting(name: &str, value: &str) -> BiosSetting {
        BiosSetting {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_reading_keeps_creation_times_and_moves_update_times_of_changes_only() {
        let first = BiosRecord::merge(
            None,
            vec![
                setting("ProcTurboMode", "Enabled"),
                setting("BootMode", "Uefi"),
            ],
            100,
            "c1",
        );
        assert_eq!(first.settings[0].name, "BootMode", "sorted by name");
        assert_eq!(first.get("ProcTurboMode").unwrap().created_at_ms, 100);
        assert_eq!(first.get("ProcTurboMode").unwrap().updated_at_ms, None);
        let second = BiosRecord::merge(
            Some(&first),
            vec![
                setting("ProcTurboMode", "Disabled"),
                setting("NumCores", "8"),
            ],
            200,
            "c2",
        );
        let turbo = second.get("ProcTurboMode").unwrap();
        assert_eq!((turbo.created_at_ms, turbo.updated_at_ms), (100, Some(200)));
        assert_eq!(second.get("NumCores").unwrap().created_at_ms, 200);
        assert!(
            second.get("BootMode").is_none(),
            "gone from the BMC: dropped"
        );
        let third = BiosRecord::merge(
            Some(&second),
            vec![setting("ProcTurboMode", "Disabled")],
            300,
            "c2",
        );
        assert_eq!(third.get("ProcTurboMode").unwrap().updated_at_ms, Some(200));
        assert_eq!(decode::<BiosRecord>(&encode(&third)).unwrap(), third);
    }
}
