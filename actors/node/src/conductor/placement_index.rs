//! The placement inputs (driver, conductor group) of every node this conductor knows, interned:
//! 100k nodes share a handful of drivers and groups, so a node costs two integers. Rendezvous
//! placement over the live conductors that serve a node's (driver, group) says who owns it; when
//! none does, rendezvous over all live conductors picks its *caretaker*, which holds the node
//! (reservation, fence, status) without touching its hardware until a capable conductor joins.

use ferric_cluster::placement::owner_of;
use ferric_model::{ConductorRecord, NodeId};
use std::collections::{BTreeMap, HashMap};

/// Placement inputs of one node, as indexes into the interned strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    /// `UNREADABLE`: the spec is unreadable; placed over all conductors so its owner reports it.
    driver: u32,
    group: u32,
}

pub const UNREADABLE: u32 = u32::MAX;

/// The members that may own each placement, filled in during one placement pass (membership
/// does not change within a pass).
#[derive(Debug, Default)]
pub struct Eligible(HashMap<Place, Vec<String>>);

#[derive(Debug, Default)]
pub struct PlacementIndex {
    interned: Vec<String>,
    intern_ix: HashMap<String, u32>,
    nodes: HashMap<NodeId, Place>,
}

impl PlacementIndex {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&ix) = self.intern_ix.get(s) {
            return ix;
        }
        let ix = self.interned.len() as u32;
        self.interned.push(s.to_string());
        self.intern_ix.insert(s.to_string(), ix);
        ix
    }

    /// `placement`: (driver, conductor group) of a node, or why its spec cannot be read.
    pub fn place_of(&mut self, placement: Result<(String, String), String>) -> Place {
        match placement {
            Ok((driver, group)) => Place {
                driver: self.intern(&driver),
                group: self.intern(&group),
            },
            Err(_) => Place {
                driver: UNREADABLE,
                group: UNREADABLE,
            },
        }
    }

    /// Records (or replaces) a node's placement inputs.
    pub fn insert(&mut self, id: NodeId, placement: Result<(String, String), String>) {
        let place = self.place_of(placement);
        self.nodes.insert(id, place);
    }

    pub fn remove(&mut self, id: &NodeId) {
        self.nodes.remove(id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    #[cfg(test)]
    pub fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.nodes.keys()
    }

    /// Whether conductor `c` may own a node placed at `place`.
    fn eligible(&self, place: Place, c: &ConductorRecord) -> bool {
        place.driver == UNREADABLE
            || c.serves(
                &self.interned[place.driver as usize],
                &self.interned[place.group as usize],
            )
    }

    /// The conductor among `members` that should own `id`: the rendezvous winner among those
    /// that serve its driver and group or, when none does, among all of them (its caretaker).
    /// None for an unknown node or when there are no members. Which members may own each
    /// placement is worked out once per placement pass (a handful: drivers × groups) in
    /// `eligible`, not once per node and member.
    #[cfg(test)]
    pub fn owner_cached<'a>(
        &self,
        id: &NodeId,
        members: &'a BTreeMap<String, ConductorRecord>,
        eligible: &mut Eligible,
    ) -> Option<&'a str> {
        let place = *self.nodes.get(id)?;
        let names = self.names(place, members, eligible);
        let pick = owner_of(id, names.iter().map(String::as_str))
            .or_else(|| owner_of(id, members.keys().map(String::as_str)))?;
        // The name borrowed from `members`, which outlives the cache.
        members.get_key_value(pick).map(|(k, _)| k.as_str())
    }

    /// The members that may own nodes placed at `place`, worked out once per pass.
    fn names<'c>(
        &self,
        place: Place,
        members: &BTreeMap<String, ConductorRecord>,
        eligible: &'c mut Eligible,
    ) -> &'c Vec<String> {
        eligible.0.entry(place).or_insert_with(|| {
            members
                .values()
                .filter(|c| self.eligible(place, c))
                .map(|c| c.name.clone())
                .collect()
        })
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// For a node of a bucket `me` holds: `Some(None)` when it belongs to `me` (it serves the
    /// node's driver and group, or nobody among `members` does, or its spec is unreadable),
    /// `Some(Some(delegate))` when it goes to the rendezvous winner among those that serve it;
    /// None for an unknown node.
    pub fn owner_where_not(
        &self,
        id: &NodeId,
        me: &str,
        members: &BTreeMap<String, ConductorRecord>,
        eligible: &mut Eligible,
    ) -> Option<Option<String>> {
        let place = *self.nodes.get(id)?;
        let names = self.names(place, members, eligible);
        if names.is_empty() || names.iter().any(|n| n == me) {
            return Some(None);
        }
        Some(owner_of(id, names.iter().map(String::as_str)).map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conductor(name: &str, drivers: &[&str], group: &str) -> ConductorRecord {
        ConductorRecord {
            name: name.into(),
            address: String::new(),
            console_address: String::new(),
            drivers: drivers.iter().map(|d| d.to_string()).collect(),
            conductor_group: group.into(),
            version: String::new(),
            started_at_ms: 0,
            lease_id: 1,
            running: 0,
            sync: Default::default(),
            hardware: Vec::new(),
            buckets: true,
        }
    }

    #[test]
    fn strings_are_interned_once() {
        let mut ix = PlacementIndex::default();
        let a = ix.place_of(Ok(("ipmi".into(), "".into())));
        let b = ix.place_of(Ok(("ipmi".into(), "".into())));
        assert_eq!(a, b);
        assert_eq!(ix.interned.len(), 2);
        let u = ix.place_of(Err("garbage".into()));
        assert_eq!(u.driver, UNREADABLE);
    }

    #[test]
    fn only_conductors_serving_the_driver_and_group_own_a_node() {
        let mut ix = PlacementIndex::default();
        let owner = |ix: &PlacementIndex, id: &NodeId, members: &[ConductorRecord]| {
            let members: BTreeMap<String, ConductorRecord> = members
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect();
            ix.owner_cached(id, &members, &mut Eligible::default())
                .map(str::to_string)
        };
        let members = [
            conductor("a", &["ipmi"], ""),
            conductor("b", &["redfish"], ""),
            conductor("c", &["ipmi"], "rack2"),
        ];
        let id = NodeId(uuid::Uuid::from_u128(1));
        assert_eq!(owner(&ix, &id, &members), None, "unknown node");
        ix.insert(id, Ok(("redfish".into(), "".into())));
        assert_eq!(owner(&ix, &id, &members), Some("b".to_string()));
        ix.insert(id, Ok(("ipmi".into(), "rack2".into())));
        assert_eq!(owner(&ix, &id, &members), Some("c".to_string()));
        // Nobody serves it, or its spec is unreadable: placed over everyone (a caretaker, or
        // the owner that reports the unreadable spec).
        let all = owner_of(&id, members.iter().map(|c| c.name.as_str())).map(str::to_string);
        assert!(all.is_some());
        ix.insert(id, Ok(("redfish".into(), "rack2".into())));
        assert_eq!(owner(&ix, &id, &members), all, "nobody serves it");
        ix.insert(id, Ok(("ipmi".into(), "rack9".into())));
        assert_eq!(owner(&ix, &id, &members), all, "a group with no member");
        ix.insert(id, Err("bad".into()));
        assert_eq!(owner(&ix, &id, &members), all);
        assert_eq!(owner(&ix, &id, &members[..0]), None, "no conductors");
        ix.remove(&id);
        assert_eq!(owner(&ix, &id, &members), None);
    }
}
