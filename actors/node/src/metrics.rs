//! This process's node figures (a conductor's): node actors running, reservations held, and
//! power sync's state reads. Process-wide, as one conductor process runs one session at a time;
//! the conductor registers them for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub struct NodeMetrics {
    pub actors: Gauge,
    pub parked: Gauge,
    pub wakes: Counter,
    pub reservations: Gauge,
    pub sync_reads: Family<ResultLabel, Counter>,
    pub agent_calls: Family<ResultLabel, Counter>,
    pub standby_buckets: Gauge,
    pub standby_ready: Gauge,
    pub standby_specs: Gauge,
    pub standby_statuses: Gauge,
    pub takeover_reads: Family<KindLabel, Counter>,
}

pub static NODES: LazyLock<NodeMetrics> = LazyLock::new(|| NodeMetrics {
    actors: Gauge::default(),
    parked: Gauge::default(),
    wakes: Counter::default(),
    reservations: Gauge::default(),
    sync_reads: Family::default(),
    agent_calls: Family::default(),
    standby_buckets: Gauge::default(),
    standby_ready: Gauge::default(),
    standby_specs: Gauge::default(),
    standby_statuses: Gauge::default(),
    takeover_reads: Family::default(),
});

/// Registers this process's node figures.
pub fn register(registry: &mut Registry) {
    let m = &*NODES;
    registry.register(
        "ferric_node_actors",
        "Nodes this conductor runs: with an actor of their own, or parked at rest (ferric_node_parked of them)",
        m.actors.clone(),
    );
    registry.register(
        "ferric_node_parked",
        "Nodes at rest kept as records by the supervisor instead of an actor each",
        m.parked.clone(),
    );
    registry.register(
        "ferric_node_wakes",
        "Parked nodes whose actor was started again for a message (a spec change, a heartbeat, a sweep's read)",
        m.wakes.clone(),
    );
    registry.register(
        "ferric_reservations_held",
        "Node reservations this conductor holds on its lease",
        m.reservations.clone(),
    );
    registry.register(
        "ferric_sync_reads",
        "Power state reads of power sync, by result",
        m.sync_reads.clone(),
    );
    registry.register(
        "ferric_agent_calls",
        "Calls to agents' command APIs, by result (answered, busy, unreachable, refused)",
        m.agent_calls.clone(),
    );
    registry.register(
        "ferric_standby_buckets",
        "Buckets whose specs this conductor keeps as their holder's warm standby (the rendezvous runner-up)",
        m.standby_buckets.clone(),
    );
    registry.register(
        "ferric_standby_ready_buckets",
        "Standby buckets read and kept current by the watch (a takeover of one reads only its statuses)",
        m.standby_ready.clone(),
    );
    registry.register(
        "ferric_standby_specs",
        "Node specs the warm standby keeps",
        m.standby_specs.clone(),
    );
    registry.register(
        "ferric_standby_statuses",
        "Node statuses the warm standby keeps, current through a watch of each bucket's statuses",
        m.standby_statuses.clone(),
    );
    registry.register(
        "ferric_takeover_reads",
        "Reads of buckets taken over, by kind: full (specs and statuses), standby (statuses, with the standby's specs) or warm (delegations and reservations, with the standby's specs and statuses)",
        m.takeover_reads.clone(),
    );
}
