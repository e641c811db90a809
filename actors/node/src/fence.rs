//! The power actor's `Fence` over this conductor's lease: a BMC command leaves only while the
//! lease is certainly alive and enough time remains before the self-fencing deadline.

use ferric_cluster::SelfFence;
use ferric_power::Fence;
use std::time::Duration;

/// The conductor's `SelfFence`, as the power actor asks it.
#[derive(Debug, Clone)]
pub struct LeaseFence(pub SelfFence);

impl Fence for LeaseFence {
    fn may_send(&self, budget: Duration) -> Result<(), &'static str> {
        self.0.check(budget)
    }
}
