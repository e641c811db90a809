//! The remediation policy (`config/remediation`) and its cluster-wide rate limit
//! (`remediation/budget`): conductors start an attempt only after taking a slot of the current
//! window with a compare-and-swap, so the limit holds however many conductors there are.

use crate::{Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ferric_model::{decode, encode, RemediationBudget as Budget, RemediationPolicy};

/// The answer to a request for a remediation slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Granted,
    /// The window is used up; ask again after this many milliseconds.
    Later(u64),
}

impl Cluster {
    /// `config/remediation`.
    pub fn remediation_policy_key(&self) -> String {
        self.keys().remediation_policy()
    }

    fn remediation_budget_key(&self) -> String {
        self.keys().remediation_budget()
    }

    /// The policy; the default (no rules: off) when none was set.
    pub async fn remediation_policy(&self) -> Result<RemediationPolicy, ClusterError> {
        let key = self.remediation_policy_key();
        Ok(self
            .get_record(key)
            .await?
            .map(|(r, _)| r)
            .unwrap_or_default())
    }

    /// Replaces the policy (an empty rule list turns remediation off).
    pub async fn set_remediation_policy(
        &self,
        policy: &RemediationPolicy,
    ) -> Result<(), ClusterError> {
        for rule in &policy.rules {
            if rule.fault.trim().is_empty() || rule.attempts == 0 {
                return Err(ClusterError::Invalid(
                    "a remediation rule needs a fault and at least one attempt".into(),
                ));
            }
        }
        if !policy.rules.is_empty() && (policy.max_per_window == 0 || policy.window_secs == 0) {
            return Err(ClusterError::Invalid(
                "the remediation rate limit needs max_per_window > 0 and window_secs > 0".into(),
            ));
        }
        self.kv()
            .put(self.remediation_policy_key(), encode(policy), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Takes one slot of the current window of `policy`'s rate limit, cluster-wide.
    pub async fn take_remediation_slot(
        &self,
        policy: &RemediationPolicy,
        now_ms: u64,
    ) -> Result<Slot, ClusterError> {
        let key = self.remediation_budget_key();
        let window_ms = u64::from(policy.window_secs.max(1)) * 1000;
        for _ in 0..16 {
            let resp = self
                .kv()
                .get(key.clone(), None)
                .await
                .map_err(|e| self.err(e))?;
            let (budget, rev) = match resp.kvs().first() {
                None => (None, 0),
                // A corrupt budget is replaced: the limit is a guard, not a record.
                Some(kv) => (decode::<Budget>(kv.value()).ok(), kv.mod_revision()),
            };
            let next = match budget {
                Some(b) if now_ms < b.window_start_ms + window_ms => {
                    if b.used >= policy.max_per_window {
                        return Ok(Slot::Later(b.window_start_ms + window_ms - now_ms));
                    }
                    Budget {
                        window_start_ms: b.window_start_ms,
                        used: b.used + 1,
                    }
                }
                _ => Budget {
                    window_start_ms: now_ms,
                    used: 1,
                },
            };
            let cmp = if rev == 0 {
                Compare::create_revision(key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
            };
            let txn =
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(key.clone(), encode(&next), None)]);
            if self
                .kv()
                .txn(txn)
                .await
                .map_err(|e| self.err(e))?
                .succeeded()
            {
                return Ok(Slot::Granted);
            }
        }
        Err(ClusterError::Conflict("remediation budget".into()))
    }
}
