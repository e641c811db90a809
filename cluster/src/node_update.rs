//! Spec changes that may rename a node: the same compare-and-swap as `update_spec`, plus the
//! `names/<name>` index moved in the same transaction, so that a renamed node is found by its
//! new name at once, its old name is free again, and two nodes never share a name. The change
//! closure may fail with the caller's own error type (the gateway's API errors).

use crate::{Cluster, ClusterError, NodeView};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use ferric_model::{encode, now_ms, NodeSpec};

impl Cluster {
    /// Changes a node's spec with compare-and-swap on its revision, retrying (up to 16 times)
    /// when someone else changed it in between; `change` runs again on each fresh read. A new
    /// name must be free, or the result is [`ClusterError::NameTaken`].
    pub async fn update_node<F, E>(&self, id_or_name: &str, mut change: F) -> Result<NodeView, E>
    where
        F: FnMut(&NodeView, &mut NodeSpec) -> Result<(), E>,
        E: From<ClusterError>,
    {
        for _ in 0..16 {
            let mut view = self.get_node(id_or_name).await?;
            let mut spec = view.spec.clone();
            change(&view, &mut spec)?;
            if spec.id != view.spec.id {
                return Err(
                    ClusterError::Invalid("the uuid of a node cannot change".into()).into(),
                );
            }
            spec.updated_at_ms = now_ms();
            let key = self.keys().node(&spec.id);
            let mut when = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                view.spec_rev,
            )];
            let mut then = vec![TxnOp::put(key, encode(&spec), None)];
            let mut otherwise = vec![];
            let renamed = view.spec.name != spec.name;
            if renamed {
                if let Some(new) = &spec.name {
                    let name_key = self.keys().name(new.as_str());
                    when.push(Compare::create_revision(
                        name_key.clone(),
                        CompareOp::Equal,
                        0,
                    ));
                    then.push(TxnOp::put(name_key.clone(), spec.id.to_string(), None));
                    otherwise.push(TxnOp::get(name_key, None));
                }
                if let Some(old) = &view.spec.name {
                    then.push(TxnOp::delete(self.keys().name(old.as_str()), None));
                }
            }
            let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
            let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
            if resp.succeeded() {
                view.spec_rev = resp.header().map_or(0, |h| h.revision());
                view.spec = spec;
                return Ok(view);
            }
            let name_taken = matches!(resp.op_responses().first(), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty());
            if let (true, Some(new)) = (name_taken, &spec.name) {
                return Err(ClusterError::NameTaken(new.to_string()).into());
            }
        }
        Err(ClusterError::Conflict(id_or_name.to_string()).into())
    }
}
