//! This process's BMC command figures (a conductor's): commands by driver, command and outcome,
//! and their latency by driver and command. Process-wide, so that every power actor counts into
//! the same series without a handle passed down; the conductor registers them for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub driver: String,
    pub command: String,
    /// `ok`, `error` (the BMC refused or failed), `timeout` (no answer in time).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub driver: String,
    pub command: String,
}

fn latency() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub struct BmcMetrics {
    pub commands: Family<CommandLabels, Counter>,
    pub seconds: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

pub static BMC: LazyLock<BmcMetrics> = LazyLock::new(|| BmcMetrics {
    commands: Family::default(),
    seconds: Family::new_with_constructor(latency),
});

impl BmcMetrics {
    /// One command that went to a BMC and how it ended.
    pub fn observe(&self, driver: &str, command: &str, outcome: &str, took: Duration) {
        self.commands
            .get_or_create(&CommandLabels {
                driver: driver.into(),
                command: command.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.seconds
            .get_or_create(&LatencyLabels {
                driver: driver.into(),
                command: command.into(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Registers this process's BMC figures.
pub fn register(registry: &mut Registry) {
    registry.register(
        "ferric_bmc_commands",
        "Commands sent to BMCs, by driver, command and outcome",
        BMC.commands.clone(),
    );
    registry.register(
        "ferric_bmc_command_seconds",
        "Time from sending a BMC command to its answer, by driver and command",
        BMC.seconds.clone(),
    );
}
