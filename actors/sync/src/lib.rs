//! Power sync sweeps: the pacing of one conductor's periodic power state reads.
//!
//! Every `interval`, the sweep takes the list of nodes this conductor runs and asks each to read
//! its power state, spread evenly over the interval (node *i* of *n* at `start + i × interval /
//! n`, never in bursts), with at most `concurrency` reads in flight: each ask carries a
//! semaphore permit that the node gives back when its read is done. A sweep that cannot finish
//! within the interval (slow BMCs, too small a concurrency) simply takes longer; the next one
//! starts when it is done. What a read finds is the node's business (`ferric-node`'s
//! `decide::sync`); this crate knows nothing of nodes but their ids.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Reads whose slots fall in the same tick start together (slots are rounded down to a multiple
/// of it). A conductor's threads then wake once per tick for a handful of reads of different
/// BMCs instead of once per read: at 33,000 nodes and 60 s, about 28 reads every 50 ms rather
/// than one every 1.8 ms, which halves the CPU a sweep costs (README, Performance). No BMC sees
/// more than its one read either way.
pub const TICK: Duration = Duration::from_millis(50);

/// Node `i`'s slot after the sweep's start: `i × spacing`, rounded down to a [`TICK`].
fn slot(spacing: Duration, i: usize) -> Duration {
    let at = spacing * u32::try_from(i).unwrap_or(u32::MAX);
    let ticks = at.as_nanos() / TICK.as_nanos();
    TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// How one conductor sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// From the start of one sweep to the start of the next (`--sync-interval`).
    pub interval: Duration,
    /// Reads in flight at once (`--sync-workers`).
    pub concurrency: usize,
}

/// What the sweeps did, for logs, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct SweepStats {
    pub sweeps: AtomicU64,
    /// Nodes asked in the last finished sweep.
    pub last_nodes: AtomicU64,
    /// Milliseconds from the first ask to the last read done in the last finished sweep.
    pub last_duration_ms: AtomicU64,
}

/// Runs sweeps until `list` answers None (the session ended). `list` gives the nodes to read
/// now; `ask` hands one node its read with the permit it must drop when done, and answers false
/// when the node is gone (the permit then comes back at once).
///
/// While `pause` is true (the conductor's keepalives go unanswered: etcd is behind), no read
/// starts; the rest of the sweep's schedule moves by the time paused, so reads do not come in a
/// burst afterwards. Reads write only what changed, but each one costs the conductor and the
/// BMC, and a conductor whose etcd is drowning should leave it the machine (`bench/MILLION.md`).
pub async fn run<Id, L, F, A>(
    settings: SweepSettings,
    stats: Arc<SweepStats>,
    mut pause: watch::Receiver<bool>,
    mut list: L,
    ask: A,
) where
    L: FnMut() -> F,
    F: Future<Output = Option<Vec<Id>>>,
    A: Fn(Id, OwnedSemaphorePermit) -> bool,
{
    let concurrency = settings.concurrency.max(1);
    let sem = Arc::new(Semaphore::new(concurrency));
    loop {
        let start = Instant::now();
        // Time paused so far in this sweep: the schedule's offset.
        let mut shift = Duration::ZERO;
        let Some(ids) = list().await else {
            return;
        };
        let n = ids.len();
        let spacing = settings.interval / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        for (i, id) in ids.into_iter().enumerate() {
            tokio::time::sleep_until(start + shift + slot(spacing, i)).await;
            if *pause.borrow_and_update() {
                let paused = Instant::now();
                // A closed sender (the session's lease keeper is gone) pauses nothing.
                let _ = pause.wait_for(|p| !*p).await;
                let waited = paused.elapsed();
                shift += waited;
                metrics::SWEEPS.paused(waited);
            }
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let _ = ask(id, permit);
        }
        // The sweep is done when every read has given its permit back.
        match sem.acquire_many(concurrency as u32).await {
            Ok(all) => drop(all),
            Err(_) => return,
        }
        let took = start.elapsed();
        metrics::SWEEPS.done(n, took);
        stats.sweeps.fetch_add(1, Ordering::Relaxed);
        stats.last_nodes.store(n as u64, Ordering::Relaxed);
        stats
            .last_duration_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
        if took.saturating_sub(shift) > settings.interval * 3 && n > 0 {
            tracing::warn!(nodes = n, took_ms = took.as_millis() as u64, interval_ms = settings.interval.as_millis() as u64, "a power sync sweep took more than three intervals (slow BMCs, or too few --sync-workers)");
        } else {
            tracing::debug!(
                nodes = n,
                took_ms = took.as_millis() as u64,
                "power sync sweep done"
            );
        }
        tokio::time::sleep_until(start + settings.interval).await;
    }
}

pub mod metrics {
    //! This process's sweep figures (a conductor's), registered for its `/metrics`.

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;
    use std::sync::LazyLock;
    use std::time::Duration;

    pub struct SweepMetrics {
        pub sweeps: Counter,
        pub last_seconds: Gauge<f64, AtomicU64>,
        pub last_nodes: Gauge,
        pub paused_seconds: Counter<f64, AtomicU64>,
    }

    pub static SWEEPS: LazyLock<SweepMetrics> = LazyLock::new(|| SweepMetrics {
        sweeps: Counter::default(),
        last_seconds: Gauge::default(),
        last_nodes: Gauge::default(),
        paused_seconds: Counter::default(),
    });

    impl SweepMetrics {
        pub fn done(&self, nodes: usize, took: Duration) {
            self.sweeps.inc();
            self.last_seconds.set(took.as_secs_f64());
            self.last_nodes.set(nodes as i64);
        }

        pub fn paused(&self, took: Duration) {
            self.paused_seconds.inc_by(took.as_secs_f64());
        }
    }

    pub fn register(registry: &mut Registry) {
        let m = &*SWEEPS;
        registry.register(
            "ferric_sync_sweeps",
            "Power sync sweeps finished on this conductor",
            m.sweeps.clone(),
        );
        registry.register(
            "ferric_sync_last_sweep_seconds",
            "Duration of this conductor's last finished power sync sweep",
            m.last_seconds.clone(),
        );
        registry.register(
            "ferric_sync_last_sweep_nodes",
            "Nodes asked in this conductor's last finished power sync sweep",
            m.last_nodes.clone(),
        );
        registry.register(
            "ferric_sync_paused_seconds",
            "Time this conductor's sweeps waited because etcd did not answer its keepalives",
            m.paused_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Asks recorded with the (paused) time they came at; each read holds its permit `hold`.
    async fn sweep(
        n: usize,
        settings: SweepSettings,
        hold: Duration,
        sweeps: usize,
    ) -> (Vec<(usize, Duration)>, Arc<SweepStats>) {
        let (_never, pause) = watch::channel(false);
        sweep_with(n, settings, hold, sweeps, pause).await
    }

    async fn sweep_with(
        n: usize,
        settings: SweepSettings,
        hold: Duration,
        sweeps: usize,
        pause: watch::Receiver<bool>,
    ) -> (Vec<(usize, Duration)>, Arc<SweepStats>) {
        let asks: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
        let stats = Arc::new(SweepStats::default());
        let t0 = Instant::now();
        let left = Arc::new(Mutex::new(sweeps));
        let recorded = asks.clone();
        run(
            settings,
            stats.clone(),
            pause,
            || {
                let left = left.clone();
                async move {
                    let mut l = left.lock().unwrap();
                    if *l == 0 {
                        return None;
                    }
                    *l -= 1;
                    Some((0..n).collect::<Vec<_>>())
                }
            },
            move |id, permit| {
                recorded.lock().unwrap().push((id, t0.elapsed()));
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    drop(permit);
                });
                true
            },
        )
        .await;
        let asks = asks.lock().unwrap().clone();
        (asks, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_spread_evenly_over_the_interval() {
        let settings = SweepSettings {
            interval: Duration::from_secs(60),
            concurrency: 8,
        };
        let (asks, stats) = sweep(600, settings, Duration::from_millis(50), 2).await;
        assert_eq!(asks.len(), 1200);
        // Node i of the first sweep at i × 100 ms; the second sweep one interval later.
        for (k, (id, at)) in asks.iter().enumerate() {
            let sweep = (k / 600) as u64;
            let want = Duration::from_millis(sweep * 60_000 + *id as u64 * 100);
            assert!(
                *at >= want && *at < want + Duration::from_millis(5),
                "ask {k} (node {id}) at {at:?}, want {want:?}"
            );
        }
        // No more than one ask in any 100 ms: no bursts.
        for w in asks.windows(2) {
            assert!(w[1].1 - w[0].1 >= Duration::from_millis(99));
        }
        assert_eq!(stats.sweeps.load(Ordering::Relaxed), 2);
        assert_eq!(stats.last_nodes.load(Ordering::Relaxed), 600);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_bounds_reads_in_flight_and_a_slow_sweep_takes_longer() {
        // 100 reads of 1 s each, 4 at a time, over an interval of 10 s: at least 25 s.
        let settings = SweepSettings {
            interval: Duration::from_secs(10),
            concurrency: 4,
        };
        let (asks, stats) = sweep(100, settings, Duration::from_secs(1), 1).await;
        assert_eq!(asks.len(), 100);
        for (k, (_, at)) in asks.iter().enumerate() {
            // Ask k waits for the permit of ask k - 4.
            assert!(
                *at >= Duration::from_secs((k / 4) as u64),
                "ask {k} at {at:?}"
            );
        }
        let took = stats.last_duration_ms.load(Ordering::Relaxed);
        assert!((25_000..26_500).contains(&took), "{took} ms");
    }

    #[tokio::test(start_paused = true)]
    async fn reads_wait_while_etcd_is_behind_and_the_schedule_moves_by_the_pause() {
        let settings = SweepSettings {
            interval: Duration::from_secs(60),
            concurrency: 8,
        };
        let (tx, pause) = watch::channel(false);
        // Behind from 10.05 s to 20.05 s: after node 100's read (10.0 s), before node 101's.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10_050)).await;
            tx.send_replace(true);
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.send_replace(false);
            // Held until the sweep ends: a closed sender pauses nothing either way.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let (asks, stats) = sweep_with(600, settings, Duration::from_millis(50), 1, pause).await;
        assert_eq!(asks.len(), 600);
        for (id, at) in &asks {
            let mut want = Duration::from_millis(*id as u64 * 100);
            if *id > 100 {
                // Node 101 was due at 10.1 s and waited until 20.05 s; the rest follow at the
                // same spacing from there.
                want += Duration::from_millis(9_950);
            }
            assert!(
                *at >= want && *at < want + Duration::from_millis(5),
                "node {id} at {at:?}, want {want:?}"
            );
        }
        let took = stats.last_duration_ms.load(Ordering::Relaxed);
        // The sweep's duration counts the pause: nodes went unread that long.
        assert!((69_900..70_100).contains(&took), "{took} ms");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_list_sweeps_nothing_and_waits_an_interval() {
        let settings = SweepSettings {
            interval: Duration::from_secs(5),
            concurrency: 2,
        };
        let t0 = Instant::now();
        let (asks, stats) = sweep(0, settings, Duration::ZERO, 3).await;
        assert!(asks.is_empty());
        assert_eq!(stats.sweeps.load(Ordering::Relaxed), 3);
        assert!(t0.elapsed() >= Duration::from_secs(15));
    }
}
