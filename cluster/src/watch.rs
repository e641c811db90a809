//! Prefix watches, as plain events. A conductor runs one watch per prefix it follows
//! (`conductors/`, `nodes/`, `reservations/`), never one per node. No `prev_kv`: on mass deletes
//! (a lease expiring with 10,000 reservations) it makes etcd's watch replies late and huge.

use crate::{Cluster, ClusterError};
use etcd_client::{
    EventType, WatchFilterType, WatchOptions, WatchRequestSender, WatchResponseStream, WatchStream,
};
use ferric_model::Bucket;

#[derive(Debug, Clone)]
pub enum WatchEvent {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        create_rev: i64,
        mod_rev: i64,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
        mod_rev: i64,
    },
}

/// Why a watch ended; either way the caller re-reads the prefix and watches again.
#[derive(Debug, thiserror::Error)]
pub enum WatchLost {
    #[error("watch fell behind etcd's compaction (compacted at revision {0})")]
    Compacted(i64),
    #[error("watch stream ended: {0}")]
    Ended(String),
}

pub struct PrefixWatch {
    stream: WatchStream,
    /// The last revision delivered to the caller.
    pub revision: i64,
}

impl Cluster {
    /// Watches every key under `prefix` from revision `from` on.
    pub async fn watch_prefix(&self, prefix: &str, from: i64) -> Result<PrefixWatch, ClusterError> {
        self.watch_with(prefix, WatchOptions::new().with_start_revision(from), from)
            .await
    }

    /// Watches only the deletes under `prefix` from revision `from` on. etcd drops the puts
    /// before they are encoded or sent (the filter runs where the watch is notified), so a
    /// watcher that needs to know only when keys go away costs etcd nothing for every key
    /// written: conductors follow `reservations/` so, and at a million nodes and ten
    /// conductors that is ten million watch events fewer in a cold start.
    pub async fn watch_prefix_deletes(
        &self,
        prefix: &str,
        from: i64,
    ) -> Result<PrefixWatch, ClusterError> {
        let opts = WatchOptions::new()
            .with_start_revision(from)
            .with_filters([WatchFilterType::NoPut]);
        self.watch_with(prefix, opts, from).await
    }

    async fn watch_with(
        &self,
        prefix: &str,
        opts: WatchOptions,
        from: i64,
    ) -> Result<PrefixWatch, ClusterError> {
        let stream = self
            .watch_client()
            .watch(prefix, Some(opts.with_prefix()))
            .await
            .map_err(|e| self.err(e))?;
        Ok(PrefixWatch {
            stream,
            revision: from - 1,
        })
    }
}

impl PrefixWatch {
    /// The next batch of events (all events of one or more revisions, in order).
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, WatchLost> {
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(WatchLost::Ended("closed by etcd".into())),
                Err(e) => return Err(WatchLost::Ended(e.to_string())),
            };
            if resp.compact_revision() > 0 {
                return Err(WatchLost::Compacted(resp.compact_revision()));
            }
            if resp.canceled() {
                return Err(WatchLost::Ended(format!(
                    "canceled: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                continue;
            }
            let out = events_of(&resp);
            if let Some(last) = out.last() {
                self.revision = self.revision.max(last.mod_rev());
            }
            return Ok(out);
        }
    }
}

impl WatchEvent {
    pub fn key(&self) -> &[u8] {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn mod_rev(&self) -> i64 {
        match self {
            WatchEvent::Put { mod_rev, .. } | WatchEvent::Delete { mod_rev, .. } => *mod_rev,
        }
    }
}

fn events_of(resp: &etcd_client::WatchResponse) -> Vec<WatchEvent> {
    resp.events()
        .iter()
        .filter_map(|ev| {
            let kv = ev.kv()?;
            Some(match ev.event_type() {
                EventType::Put => WatchEvent::Put {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_rev: kv.create_revision(),
                    mod_rev: kv.mod_revision(),
                    lease: kv.lease(),
                },
                EventType::Delete => WatchEvent::Delete {
                    key: kv.key().to_vec(),
                    mod_rev: kv.mod_revision(),
                },
            })
        })
        .collect()
}

/// Watches of single buckets' statuses (`status/<bucket>` ranges), all on one stream, each
/// under an id the caller picks (unique per stream: etcd refuses an id in use). The warm
/// standby keeps the statuses of the buckets it would take over so.
pub struct BucketWatches {
    sender: WatchRequestSender,
    keys: crate::Keyspace,
}

/// What the watches of a [`BucketWatches`] stream deliver.
pub struct BucketWatchEvents {
    stream: WatchResponseStream,
}

/// One answer of a [`BucketWatchEvents`] stream.
#[derive(Debug)]
pub enum BucketNews {
    /// Events of watch `id`: all events of one or more revisions, in order.
    Events(i64, Vec<WatchEvent>),
    /// Watch `id` ended (canceled by the caller or by etcd, or compacted past).
    Ended(i64, String),
}

impl Cluster {
    /// Opens a stream of bucket status watches with its first watch: `id` over `bucket`'s
    /// statuses from revision `from` on.
    pub async fn watch_bucket_statuses(
        &self,
        id: i64,
        bucket: Bucket,
        from: i64,
    ) -> Result<(BucketWatches, BucketWatchEvents), ClusterError> {
        let keys = self.keys().clone();
        let (start, opts) = bucket_watch(&keys, id, bucket, from);
        let stream = self
            .watch_client()
            .watch(start, Some(opts))
            .await
            .map_err(|e| self.err(e))?;
        let (sender, stream) = stream.split();
        Ok((BucketWatches { sender, keys }, BucketWatchEvents { stream }))
    }
}

/// The watch of `bucket`'s status range: from its marker (the range's first key) on.
fn bucket_watch(
    keys: &crate::Keyspace,
    id: i64,
    bucket: Bucket,
    from: i64,
) -> (String, WatchOptions) {
    let start = keys.status_marker(bucket);
    let end = crate::prefix_end(start.as_bytes());
    let opts = WatchOptions::new()
        .with_range(end)
        .with_start_revision(from)
        .with_watch_id(id);
    (start, opts)
}

impl BucketWatches {
    /// Adds watch `id` over `bucket`'s statuses from revision `from` on.
    pub async fn add(&mut self, id: i64, bucket: Bucket, from: i64) -> Result<(), WatchLost> {
        let (start, opts) = bucket_watch(&self.keys, id, bucket, from);
        self.sender
            .watch(start, Some(opts))
            .await
            .map_err(|e| WatchLost::Ended(e.to_string()))
    }

    /// Ends watch `id` (etcd answers with its [`BucketNews::Ended`]).
    pub async fn cancel(&mut self, id: i64) -> Result<(), WatchLost> {
        self.sender
            .cancel(id)
            .await
            .map_err(|e| WatchLost::Ended(e.to_string()))
    }
}

impl BucketWatchEvents {
    /// The next answer with news; `Err` when the stream itself ended (every watch on it did).
    pub async fn next(&mut self) -> Result<BucketNews, WatchLost> {
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(WatchLost::Ended("closed by etcd".into())),
                Err(e) => return Err(WatchLost::Ended(e.to_string())),
            };
            let id = resp.watch_id();
            if resp.compact_revision() > 0 {
                let why = WatchLost::Compacted(resp.compact_revision()).to_string();
                return Ok(BucketNews::Ended(id, why));
            }
            if resp.canceled() {
                return Ok(BucketNews::Ended(id, resp.cancel_reason().to_string()));
            }
            if resp.events().is_empty() {
                continue;
            }
            return Ok(BucketNews::Events(id, events_of(&resp)));
        }
    }
}
