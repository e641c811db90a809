//! Rendezvous (highest-random-weight) placement of buckets and nodes on live conductors. Pure:
//! every conductor computes the same answer from the same membership, so no coordinator is
//! needed, and a membership change moves only what its winner changed for (about 1/N).

use ferric_model::{Bucket, NodeId};

/// A stable 64-bit hash of (node, conductor). It must be identical on every build and machine,
/// so it is written out here instead of using std's randomly seeded hasher.
pub fn weight(node: &NodeId, conductor: &str) -> u64 {
    weight_of(node.as_bytes(), conductor)
}

/// [`weight`] of (bucket, conductor). The bucket's two bytes with a tag, so that a bucket and
/// a node never hash alike by accident.
pub fn bucket_weight(bucket: Bucket, conductor: &str) -> u64 {
    let [hi, lo] = bucket.0.to_be_bytes();
    weight_of(&[b'b', b'k', b't', hi, lo], conductor)
}

fn weight_of(key: &[u8], conductor: &str) -> u64 {
    // FNV-1a over both inputs, then a splitmix64 finaliser for avalanche: FNV alone leaves
    // correlated high bits for inputs that differ only in their last byte (c1, c2, c3).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
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

/// The conductor that should hold `bucket`: rendezvous over all of `conductors`, ties by name.
pub fn bucket_owner<'a, I>(bucket: Bucket, conductors: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    conductors.into_iter().max_by(|a, b| {
        bucket_weight(bucket, a)
            .cmp(&bucket_weight(bucket, b))
            .then_with(|| b.cmp(a))
    })
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
    fn buckets_spread_evenly_and_a_joiner_takes_only_its_share() {
        let ten: Vec<String> = (1..=10).map(|i| format!("c{i}")).collect();
        let names = |n: usize| ten[..n].iter().map(String::as_str);
        let mut count: HashMap<&str, usize> = HashMap::new();
        let mut moved = 0;
        for b in Bucket::all() {
            let owner = bucket_owner(b, names(10)).unwrap();
            *count.entry(owner).or_default() += 1;
            let before = bucket_owner(b, names(9)).unwrap();
            if before != owner {
                assert_eq!(owner, "c10", "a bucket moved between old members");
                moved += 1;
            }
        }
        // 409.6 each on average; a binomial spread of about 19.
        for (name, n) in &count {
            assert!(
                (*n as f64 - 409.6).abs() < 80.0,
                "{name} holds {n}: {count:?}"
            );
        }
        assert!((moved as f64 - 409.6).abs() < 80.0, "moved {moved}");
        assert_eq!(bucket_owner(Bucket(0), []), None);
    }

    #[test]
    fn nobody_owns_anything_without_conductors() {
        assert_eq!(owner_of(&NodeId::new_random(), []), None);
    }
}
