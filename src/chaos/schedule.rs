//! The seeded fault schedule. A run prints its seed; the same seed, node count and options give
//! the same faults in the same order with the same victims and holds, so a failing run can be
//! replayed. (The timing of what the cluster does in between is not replayable: it is a real
//! cluster on a real machine.)

use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The seeded generator: ferric sim's SplitMix64, whose output for a seed never changes with a
/// dependency's version (a replay must pick the same faults years later).
pub use ferric_sim::Rng;

/// A number in `0..n` (n > 0) from `rng`.
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// One fault. Conductors, gateways and etcd members are numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL a conductor; restart it once its nodes have moved.
    KillConductor { conductor: usize },
    /// SIGSTOP a conductor for the hold (2 × TTL), then SIGCONT.
    FreezeConductor { conductor: usize },
    /// Cut a conductor's link to every etcd member (its BMC link stays up) for the hold.
    CutConductorEtcd { conductor: usize },
    /// Cut a gateway's whole link for the hold.
    CutGateway { gateway: usize },
    /// SIGKILL a gateway; restart it after the hold.
    KillGateway { gateway: usize },
    /// SIGKILL whichever etcd member leads; restart it after the hold.
    KillEtcdLeader,
    /// Stop an etcd member (SIGTERM) for the hold, then restart it.
    StopEtcdMember { member: usize },
    /// Delay an etcd member's fsyncs for the hold.
    SlowEtcdDisk { member: usize },
}

impl Fault {
    /// The fault's kind, for the report's tallies.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillConductor { .. } => "kill_conductor",
            Fault::FreezeConductor { .. } => "freeze_conductor",
            Fault::CutConductorEtcd { .. } => "cut_conductor_etcd",
            Fault::CutGateway { .. } => "cut_gateway",
            Fault::KillGateway { .. } => "kill_gateway",
            Fault::KillEtcdLeader => "kill_etcd_leader",
            Fault::StopEtcdMember { .. } => "stop_etcd_member",
            Fault::SlowEtcdDisk { .. } => "slow_etcd_disk",
        }
    }

    /// Whether the fault takes a conductor's nodes away from it (a failover follows).
    pub fn conductor(&self) -> Option<usize> {
        match self {
            Fault::KillConductor { conductor }
            | Fault::FreezeConductor { conductor }
            | Fault::CutConductorEtcd { conductor } => Some(*conductor),
            _ => None,
        }
    }

    pub const KINDS: [&'static str; 8] = [
        "kill_conductor",
        "freeze_conductor",
        "cut_conductor_etcd",
        "cut_gateway",
        "kill_gateway",
        "kill_etcd_leader",
        "stop_etcd_member",
        "slow_etcd_disk",
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillConductor { conductor } => write!(f, "SIGKILL conductor c{}", conductor + 1),
            Fault::FreezeConductor { conductor } => {
                write!(f, "SIGSTOP conductor c{} (then SIGCONT)", conductor + 1)
            }
            Fault::CutConductorEtcd { conductor } => {
                write!(
                    f,
                    "cut conductor c{}'s link to etcd (BMC link up)",
                    conductor + 1
                )
            }
            Fault::CutGateway { gateway } => write!(f, "cut gateway g{}'s link", gateway + 1),
            Fault::KillGateway { gateway } => write!(f, "SIGKILL gateway g{}", gateway + 1),
            Fault::KillEtcdLeader => write!(f, "SIGKILL the etcd leader"),
            Fault::StopEtcdMember { member } => {
                write!(f, "stop etcd member e{} (then restart)", member + 1)
            }
            Fault::SlowEtcdDisk { member } => {
                write!(f, "slow fsync on etcd member e{}", member + 1)
            }
        }
    }
}

/// A fault and how long it is held before recovery.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Step {
    pub fault: Fault,
    #[serde(serialize_with = "secs")]
    pub hold: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The schedule: first one of each kind in `kinds` (so even a short run covers them all), in
/// an order the seed shuffles, then random faults from `kinds` until `steps` are planned.
pub fn plan(
    seed: u64,
    steps: usize,
    kinds: &[&str],
    conductors: usize,
    gateways: usize,
    ttl: Duration,
) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<&str> = kinds.to_vec();
    for i in (1..order.len()).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let kind = match order.get(i) {
            Some(k) => *k,
            None => kinds[below(&mut rng, kinds.len() as u64) as usize],
        };
        let c = below(&mut rng, conductors as u64) as usize;
        let g = below(&mut rng, gateways as u64) as usize;
        let m = below(&mut rng, 3) as usize;
        let two_ttl = ttl * 2;
        let (fault, hold) = match kind {
            "kill_conductor" => (Fault::KillConductor { conductor: c }, Duration::ZERO),
            "freeze_conductor" => (Fault::FreezeConductor { conductor: c }, two_ttl),
            "cut_conductor_etcd" => (Fault::CutConductorEtcd { conductor: c }, two_ttl),
            "cut_gateway" => (Fault::CutGateway { gateway: g }, two_ttl),
            "kill_gateway" => (Fault::KillGateway { gateway: g }, ttl),
            "kill_etcd_leader" => (Fault::KillEtcdLeader, two_ttl),
            "stop_etcd_member" => (Fault::StopEtcdMember { member: m }, two_ttl),
            _ => (Fault::SlowEtcdDisk { member: m }, two_ttl),
        };
        out.push(Step { fault, hold });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_plans_the_same_faults() {
        let ttl = Duration::from_secs(3);
        let a = plan(42, 20, &Fault::KINDS, 3, 2, ttl);
        let b = plan(42, 20, &Fault::KINDS, 3, 2, ttl);
        let c = plan(43, 20, &Fault::KINDS, 3, 2, ttl);
        let faults = |p: &[Step]| p.iter().map(|s| s.fault).collect::<Vec<_>>();
        assert_eq!(faults(&a), faults(&b));
        assert_ne!(faults(&a), faults(&c));
    }

    #[test]
    fn a_short_run_covers_every_kind_first() {
        let p = plan(7, 8, &Fault::KINDS, 3, 2, Duration::from_secs(3));
        let mut kinds: Vec<_> = p.iter().map(|s| s.fault.kind()).collect();
        kinds.sort();
        let mut all = Fault::KINDS.to_vec();
        all.sort();
        assert_eq!(kinds, all);
    }

    #[test]
    fn splitmix_is_the_published_sequence() {
        // The first outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
