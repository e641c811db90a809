//! `Fence`: the question the power actor asks right before every BMC command ("may a command
//! leave now?"). A BMC cannot check a fencing token, so the conductor's self-fencing deadline is
//! checked here instead; the conductor implements this trait over its lease, which keeps this
//! crate free of the cluster crate.

use std::time::Duration;

/// The conductor's permission to command BMCs.
pub trait Fence: Send + Sync {
    /// Ok while this conductor certainly still owns its nodes and at least `budget` remains
    /// before its self-fencing deadline (the time between this check and the packet leaving).
    /// Err says why no command may leave; it is final for the caller's node.
    fn may_send(&self, budget: Duration) -> Result<(), &'static str>;
}
