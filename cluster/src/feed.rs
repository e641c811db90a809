//! Consistent reads for watch-fed caches (the gateway's informer): every record under several
//! prefixes at one etcd revision, so that a cache built from them and then fed by a watch from
//! `revision + 1` never misses or double-applies a change.

use crate::{for_each_in_prefix, Cluster, ClusterError};

/// One key as read from etcd.
#[derive(Debug, Clone)]
pub struct FeedKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_rev: i64,
    pub mod_rev: i64,
}

impl Cluster {
    /// Every key under each of `prefixes`, all at the same revision (the current one when the
    /// first prefix is read), paged like every other large read. Fails with an etcd error when
    /// that revision is compacted away between pages; the caller simply reads again.
    pub async fn read_prefixes(
        &self,
        prefixes: &[String],
    ) -> Result<(i64, Vec<FeedKv>), ClusterError> {
        let mut revision: Option<i64> = None;
        let mut out = Vec::new();
        for prefix in prefixes {
            let rev = for_each_in_prefix(self, prefix, revision, false, |kv| {
                out.push(FeedKv {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_rev: kv.create_revision(),
                    mod_rev: kv.mod_revision(),
                })
            })
            .await?;
            revision.get_or_insert(rev);
        }
        match revision {
            Some(rev) => Ok((rev, out)),
            None => Ok((self.revision().await?, out)),
        }
    }
}
