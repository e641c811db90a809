//! Rendezvous (highest-random-weight) placement of nodes on live conductors. Pure: every
//! conductor computes the same answer from the same membership, so no coordinator is needed, and
//! a membership change moves only the nodes whose winner changed (about 1/N of them).

use ferric_model::NodeId;

/// A stable 64-bit hash of (node, conductor). It must be identical on every build and machine,
/// so it is written out here instead of using std's randomly seeded hasher.
pub fn weight(node: &NodeId, conductor: &str) -> u64 {
    // FNV-1a over both inputs, then a splitmix64 finaliser for avalanche: FNV alone leaves
    // correlated high bits for inputs that differ only in their last byte (c1, c2, c3).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .as_bytes()
        .iter()
        .chain([0xffu8].iter())
        .chain(conductor.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The conductor that should own `node`, among `conductors` that pass `eligible`. Ties (never in
/// practice) break by name so that every conductor agrees.
pub fn owner_of<'a, I>(node: &NodeId, conductors: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    conductors
        .into_iter()
        .max_by(|a, b| weight(node, a).cmp(&weight(node, b)).then_with(|| b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ids(n: usize) -> Vec<NodeId> {
        // Deterministic ids so the test never depends on a random draw.
        (0..n as u128)
            .map(|i| {
                NodeId(uuid::Uuid::from_u128(
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ))
            })
            .collect()
    }

    #[test]
    fn balance_within_ten_percent_over_three_conductors_for_30k_nodes() {
        let names = ["c1", "c2", "c3"];
        let mut count: HashMap<&str, usize> = HashMap::new();
        for id in ids(30_000) {
            *count.entry(owner_of(&id, names).unwrap()).or_default() += 1;
        }
        for name in names {
            let n = count[name] as f64;
            assert!(
                (n - 10_000.0).abs() <= 1_000.0,
                "{name} owns {n} of 30000: {count:?}"
            );
        }
    }

    #[test]
    fn adding_a_conductor_moves_about_one_nth() {
        let before = ["c1", "c2", "c3"];
        let after = ["c1", "c2", "c3", "c4"];
        let nodes = ids(30_000);
        let mut moved = 0;
        for id in &nodes {
            let a = owner_of(id, before).unwrap();
            let b = owner_of(id, after).unwrap();
            if a != b {
                // Every move goes to the newcomer: nodes never shuffle among the old members.
                assert_eq!(b, "c4");
                moved += 1;
            }
        }
        let share = moved as f64 / nodes.len() as f64;
        assert!((share - 0.25).abs() < 0.025, "moved {share}");
    }

    #[test]
    fn removing_a_conductor_moves_only_its_nodes() {
        let nodes = ids(10_000);
        for id in &nodes {
            let a = owner_of(id, ["c1", "c2", "c3"]).unwrap();
            let b = owner_of(id, ["c1", "c3"]).unwrap();
            if a != "c2" {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn nobody_owns_anything_without_conductors() {
        assert_eq!(owner_of(&NodeId::new_random(), []), None);
    }
}
