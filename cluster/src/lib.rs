//! Everything that talks to etcd: the keyspace, the connection, the lease keeper with its
//! self-fencing deadline, membership, placement, batched reservations, fenced status writes, and
//! the node-intent functions shared by `ctl` and the gateway. No other crate holds an etcd client.

pub mod batch_gate;
pub mod bios;
pub mod buckets;
pub mod bulk;
pub mod children;
pub mod consoles;
pub mod delivery;
pub mod error;
pub mod feed;
pub mod fence;
pub mod health;
pub mod heartbeats;
pub mod keyspace;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod node_update;
pub mod nodes;
pub mod placement;
pub mod remediation;
pub mod repair;
pub mod reservations;
pub mod sessions;
pub mod snapshot;
pub mod spec_writer;
pub mod status;
pub mod sync;
pub mod watch;

pub use delivery::NodeEvents;
pub use error::ClusterError;
pub use keyspace::Keyspace;
pub use lease::{FenceClock, LeaseKeeper, LeaseState, SelfFence};
pub use nodes::NodeView;
pub use reservations::{AcquireOutcome, Acquired};
pub use snapshot::{OwnershipSnapshot, Snapshot, SnapshotNode};
pub use status::StatusWriter;
pub use watch::{BucketNews, BucketWatchEvents, BucketWatches, PrefixWatch, WatchEvent, WatchLost};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach etcd. etcd is Ferric's trust boundary: production clusters use TLS and auth.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Bound on connecting and on every single request; an unreachable etcd is an error, not a hang.
    pub timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: &str) -> Self {
        EtcdConfig {
            endpoints: endpoints
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            prefix: "/ferric/".into(),
            user: None,
            password: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A handle on the cluster's etcd, cheap to clone (one shared gRPC channel).
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    keys: Keyspace,
    endpoints: String,
    /// Spec compare-and-swaps go through this group commit when set
    /// ([`Cluster::with_spec_batching`]).
    spec_writer: Option<spec_writer::SpecWriter>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

/// HTTP/2 keepalive pings towards etcd. etcd's `--grpc-keepalive-min-time` defaults to 5 s: a
/// client that pings more often gets GOAWAY ("too many pings") and loses every stream on the
/// connection, watches and lease keepalives included.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Large reads (a full list of 100k node records is about 34 MB) are paged, but one page of
/// 10,000 records still exceeds the client's default 4 MiB receive limit.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl Cluster {
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, ClusterError> {
        let endpoints = cfg.endpoints.join(",");
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_timeout(cfg.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, cfg.timeout);
        if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if cfg.ca_cert.is_some() || cfg.client_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
                tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
            }
            opts = opts.with_tls(tls);
        }
        let client = tokio::time::timeout(
            cfg.timeout,
            Client::connect(cfg.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| ClusterError::Unreachable {
            endpoints: endpoints.clone(),
            reason: format!("no answer within {:?}", cfg.timeout),
        })?
        .map_err(|e| ClusterError::Unreachable {
            endpoints: endpoints.clone(),
            reason: e.to_string(),
        })?;
        let cluster = Cluster {
            client,
            keys: Keyspace::new(&cfg.prefix),
            endpoints,
            spec_writer: None,
        };
        // The client connects lazily; ask once so that a wrong address fails here, clearly.
        cluster.revision().await?;
        Ok(cluster)
    }

    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// This handle, with its spec compare-and-swaps ([`Cluster::update_spec_from`]) sharing
    /// etcd transactions with concurrent ones (see [`spec_writer`]). For a process that writes
    /// many nodes' specs at once: the gateway.
    pub fn with_spec_batching(mut self) -> Cluster {
        self.spec_writer = Some(spec_writer::SpecWriter::spawn(self.clone()));
        self
    }

    pub(crate) fn spec_writer(&self) -> Option<&spec_writer::SpecWriter> {
        self.spec_writer.as_ref()
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub(crate) fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// One transaction applying all of `ops` (nested transactions carry their own compares).
    pub(crate) async fn txn_all(
        &self,
        ops: Vec<etcd_client::TxnOp>,
    ) -> Result<etcd_client::TxnResponse, ClusterError> {
        self.kv()
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) fn lease_client(&self) -> etcd_client::LeaseClient {
        self.client.lease_client()
    }

    pub(crate) fn watch_client(&self) -> etcd_client::WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn err(&self, e: etcd_client::Error) -> ClusterError {
        ClusterError::from_etcd(&self.endpoints, e)
    }

    /// One record and the revision it was written at; None when the key is absent, and
    /// `ClusterError::Corrupt` (naming the key) when it cannot be decoded.
    pub(crate) async fn get_record<R: ferric_model::Record>(
        &self,
        key: String,
    ) -> Result<Option<(R, i64)>, ClusterError> {
        let resp = self
            .kv()
            .get(key.clone(), None)
            .await
            .map_err(|e| self.err(e))?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => ferric_model::decode(kv.value())
                .map(|r| Some((r, kv.mod_revision())))
                .map_err(|source| ClusterError::Corrupt { key, source }),
        }
    }

    /// The current etcd revision (also a cheap liveness probe).
    pub async fn revision(&self) -> Result<i64, ClusterError> {
        let resp = self
            .kv()
            .get(
                format!("{}\0", self.keys.prefix()),
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Revokes a lease: every key on it is deleted in one revision. Used on graceful shutdown
    /// and by `ctl conductor evict`.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), ClusterError> {
        match self.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            // Already expired or revoked: the outcome the caller wanted.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path)
        .map_err(|e| ClusterError::Config(format!("cannot read {}: {e}", path.display())))
}

/// Paged read of a whole prefix at one revision. etcd 3.4 rescans the remainder of the range for
/// every page, so pages are large (10,000 keys) rather than many.
pub(crate) async fn get_prefix(
    cluster: &Cluster,
    prefix: &str,
    revision: Option<i64>,
    keys_only: bool,
) -> Result<(i64, Vec<etcd_client::KeyValue>), ClusterError> {
    let mut out = Vec::new();
    let rev = for_each_in_prefix(cluster, prefix, revision, keys_only, |kv| out.push(kv)).await?;
    Ok((rev, out))
}

/// Like [`get_prefix`], but hands each record to `f` page by page, so that a reader that keeps
/// only a digest (placement inputs of 100k nodes) never holds every record at once.
///
/// etcd 3.4 answers a page by walking its index over the whole rest of the range, limit or
/// not, so paging through n keys costs n²/(2 × page) index steps: at a million nodes, about
/// 50 million for one read of the `nodes/` prefix. When the first page says the range holds
/// more than [`SPLIT_ABOVE`] keys, the rest is read in sub-ranges by the next two characters
/// (keys under a node prefix are uuids), each paged on its own: every page then walks only
/// its sub-range, and the read is linear again. The sub-ranges cover the whole range in key
/// order, whatever the keys are; they are merely small when the keys are hex.
pub(crate) async fn for_each_in_prefix(
    cluster: &Cluster,
    prefix: &str,
    revision: Option<i64>,
    keys_only: bool,
    mut f: impl FnMut(etcd_client::KeyValue),
) -> Result<i64, ClusterError> {
    let end = prefix_end(prefix.as_bytes());
    let mut rev = revision.unwrap_or(0);
    let first = read_page(cluster, prefix.as_bytes(), &end, rev, keys_only).await?;
    if rev == 0 {
        rev = first.revision;
    }
    let mut after = first.next_start;
    let total = first.count;
    let more = first.more;
    first.kvs.into_iter().for_each(&mut f);
    if !more {
        return Ok(rev);
    }
    let ranges = if total > SPLIT_ABOVE {
        split_range(prefix.as_bytes(), &end)
    } else {
        vec![(prefix.as_bytes().to_vec(), end.clone())]
    };
    for (lo, hi) in ranges {
        if hi <= after {
            continue;
        }
        let mut start = lo.max(after.clone());
        loop {
            let page = read_page(cluster, &start, &hi, rev, keys_only).await?;
            if let Some(next) = &page.last_next {
                start = next.clone();
                after = next.clone();
            }
            page.kvs.into_iter().for_each(&mut f);
            if !page.more {
                break;
            }
        }
    }
    Ok(rev)
}

/// Keys in a range above which [`for_each_in_prefix`] reads it in sub-ranges.
pub(crate) const SPLIT_ABOVE: i64 = 5 * PAGE;
const PAGE: i64 = 10_000;

struct Page {
    kvs: Vec<etcd_client::KeyValue>,
    revision: i64,
    /// Keys in the range (etcd's count, all pages).
    count: i64,
    more: bool,
    /// Just after the page's last key, when it has one.
    last_next: Option<Vec<u8>>,
    /// Where the next page starts (`last_next`, or the page's start when it is empty).
    next_start: Vec<u8>,
}

async fn read_page(
    cluster: &Cluster,
    start: &[u8],
    end: &[u8],
    rev: i64,
    keys_only: bool,
) -> Result<Page, ClusterError> {
    let mut opts = etcd_client::GetOptions::new()
        .with_range(end.to_vec())
        .with_limit(PAGE)
        .with_revision(rev);
    if keys_only {
        opts = opts.with_keys_only();
    }
    let mut resp = cluster
        .kv()
        .get(start.to_vec(), Some(opts))
        .await
        .map_err(|e| cluster.err(e))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let count = resp.count();
    let more = resp.more();
    let kvs = resp.take_kvs();
    let last_next = kvs.last().map(|last| {
        let mut k = last.key().to_vec();
        k.push(0);
        k
    });
    let next_start = last_next.clone().unwrap_or_else(|| start.to_vec());
    Ok(Page {
        kvs,
        revision,
        count,
        more,
        last_next,
        next_start,
    })
}

/// Contiguous sub-ranges covering `[prefix, end)` in key order: one for each two lowercase hex
/// characters after `prefix`, and the gaps between them (so that no key is ever skipped).
pub(crate) fn split_range(prefix: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    const HEX: &[u8] = b"0123456789abcdef";
    let with = |tail: &[u8]| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(tail);
        k
    };
    let mut points = vec![prefix.to_vec(), end.to_vec()];
    for &a in HEX {
        points.push(with(&[a]));
        points.push(with(&[a + 1]));
        for &b in HEX {
            points.push(with(&[a, b]));
            points.push(with(&[a, b + 1]));
        }
    }
    points.sort();
    points.dedup();
    points
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// The end of the key range of all keys starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::{prefix_end, split_range};

    #[test]
    fn split_ranges_cover_the_prefix_in_order_and_part_hex_keys() {
        let prefix = b"/p/nodes/";
        let end = prefix_end(prefix);
        let ranges = split_range(prefix, &end);
        assert_eq!(ranges.first().map(|r| r.0.as_slice()), Some(&prefix[..]));
        assert_eq!(ranges.last().map(|r| r.1.clone()), Some(end.clone()));
        for w in ranges.windows(2) {
            assert_eq!(w[0].1, w[1].0, "contiguous");
            assert!(w[0].0 < w[0].1, "not empty");
        }
        let key = |tail: &[u8]| [&prefix[..], tail].concat();
        let holder = |k: &[u8]| -> Vec<usize> {
            (0..ranges.len())
                .filter(|&i| ranges[i].0.as_slice() <= k && k < ranges[i].1.as_slice())
                .collect()
        };
        // Every key under the prefix, hex or not, lies in exactly one range.
        for tail in [
            &b""[..],
            b"\x00",
            b"-",
            b"0",
            b"00",
            b"0g",
            b"9~",
            b":",
            b"A1",
            b"f",
            b"ff",
            b"ff\xff",
            b"g",
            b"\xff\xff",
        ] {
            assert_eq!(holder(&key(tail)).len(), 1, "{tail:?}");
        }
        // Two uuids share a range exactly when they share their first two characters.
        let a = holder(&key(b"3f2a0c1e-0000-4000-8000-000000000000"));
        let b = holder(&key(b"3fffffff-ffff-4fff-bfff-ffffffffffff"));
        let c = holder(&key(b"40000000-0000-4000-8000-000000000000"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ranges[a[0]],
            (key(b"3f"), key(b"3g")),
            "a range of its own for the pair"
        );
    }
}
