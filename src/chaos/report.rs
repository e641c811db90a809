//! The report of a chaos run: the seed and options, each fault with what it did (nodes moved and
//! how long the failover took, how long etcd took to take writes again), every invariant
//! violation, the failover distribution and what the workload did. Written as JSON; a summary
//! is printed.

use super::history::Gap;
use super::invariants::{Summary, Violation};
use super::schedule::{Fault, Step};
use super::workload::Records;
use super::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What one fault did.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    #[serde(flatten)]
    pub fault: Fault,
    pub description: String,
    pub hold_s: f64,
    pub started_ms: u64,
    /// When the fault was healed (restart, SIGCONT, link up).
    pub healed_ms: Option<u64>,
    pub ended_ms: u64,
    /// Nodes the faulted conductor owned.
    pub nodes: usize,
    /// Time until every one of them was owned by another conductor; None if that did not
    /// happen within the bound (a violation of the failover promise, reported as such).
    #[serde(serialize_with = "opt_secs")]
    pub failover: Option<Duration>,
    /// The faulted process had to be started again (killed, or it exited after fencing).
    pub restarted: bool,
    /// The etcd member killed or stopped.
    pub member: Option<usize>,
    /// Time from an etcd member's loss until a new leader took a write.
    #[serde(serialize_with = "opt_secs")]
    pub writes_resumed: Option<Duration>,
    /// Nodes that changed owner while only etcd was faulted (the aim is none).
    pub nodes_lost: Option<usize>,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0),
        None => s.serialize_none(),
    }
}

impl FaultRecord {
    pub fn new(step: &Step, started_ms: u64) -> FaultRecord {
        FaultRecord {
            fault: step.fault,
            description: step.fault.to_string(),
            hold_s: step.hold.as_secs_f64(),
            started_ms,
            healed_ms: None,
            ended_ms: started_ms,
            nodes: 0,
            failover: None,
            restarted: false,
            member: None,
            writes_resumed: None,
            nodes_lost: None,
        }
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.fault.conductor().is_some() {
            parts.push(match self.failover {
                Some(d) => format!("{} nodes moved in {:.2} s", self.nodes, d.as_secs_f64()),
                None => format!("{} nodes NOT all moved", self.nodes),
            });
        }
        if let Some(d) = self.writes_resumed {
            parts.push(format!(
                "etcd took writes again after {:.2} s",
                d.as_secs_f64()
            ));
        }
        if let Some(n) = self.nodes_lost {
            parts.push(format!("{n} nodes changed owner"));
        }
        if self.restarted {
            parts.push("restarted".into());
        }
        parts.push(format!(
            "{:.1} s in all",
            (self.ended_ms - self.started_ms) as f64 / 1000.0
        ));
        parts.join("; ")
    }
}

/// A distribution in seconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Distribution {
    pub count: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Distribution {
    pub fn of(mut values: Vec<f64>) -> Distribution {
        values.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| -> Option<f64> {
            if values.is_empty() {
                return None;
            }
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            Some((values[i] * 1000.0).round() / 1000.0)
        };
        Distribution {
            count: values.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReportViolation {
    /// The step after which it was found; None for the final checks.
    pub after_step: Option<usize>,
    #[serde(flatten)]
    pub violation: Violation,
}

#[derive(Debug, Serialize)]
pub struct WorkloadFigures {
    pub requests_sent: usize,
    pub accepted: usize,
    pub refused: BTreeMap<String, usize>,
    pub unanswered: usize,
    pub stream_events: usize,
    pub stream_resumes: usize,
    pub webhook_events: usize,
    pub console_echoes: usize,
    pub viewer_reconnects: usize,
    pub viewer_told_reconnecting: usize,
}

/// The size of the independent records the final checks read.
#[derive(Debug, Serialize, Default, Clone)]
pub struct Checked {
    /// Redfish requests conductors sent to the simulated BMCs.
    pub bmc_commands: usize,
    /// Reservations created (ownership epochs) in etcd's history.
    pub reservations_created: usize,
    /// Node history entries written during the run.
    pub history_entries: usize,
    /// Power events written to the outbox during the run.
    pub outbox_events: usize,
    /// Serial console sessions the BMCs opened for conductors.
    pub console_sessions: usize,
    /// Changes the history recorder saw in all.
    pub changes: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub lease_ttl_s: f64,
    pub steps: usize,
    pub faults: Vec<FaultRecord>,
    pub faults_by_kind: BTreeMap<&'static str, usize>,
    /// Conductor kills, freezes and etcd-link cuts: time until all its nodes had a new owner.
    pub failover: Distribution,
    /// etcd member losses: time until a write went through again.
    pub etcd_writes_resumed: Distribution,
    pub violations: Vec<ReportViolation>,
    /// Violations per invariant, and whether the checks saw everything (`ok` is false when the
    /// history recorder missed revisions: the checks are incomplete over them).
    pub checks: Summary,
    /// Why the history recorder had to watch again (etcd member lost, a stalled watch).
    pub recorder_rewatches: Vec<String>,
    /// How much the checks looked at (so a run whose records were empty cannot pass unseen).
    pub checked: Checked,
    pub workload: WorkloadFigures,
}

impl Report {
    pub fn new(
        args: &Args,
        seed: u64,
        steps: &[Step],
        faults: Vec<FaultRecord>,
        violations: Vec<(Option<usize>, Violation)>,
        records: &Records,
        ttl: Duration,
    ) -> Report {
        let mut by_kind = BTreeMap::new();
        for f in &faults {
            *by_kind.entry(f.fault.kind()).or_default() += 1;
        }
        let failover = Distribution::of(
            faults
                .iter()
                .filter(|f| f.fault.conductor().is_some() && f.nodes > 0)
                .filter_map(|f| f.failover.map(|d| d.as_secs_f64()))
                .collect(),
        );
        let etcd = Distribution::of(
            faults
                .iter()
                .filter_map(|f| f.writes_resumed.map(|d| d.as_secs_f64()))
                .collect(),
        );
        let mut refused = BTreeMap::new();
        for r in &records.requests {
            if let Some(s) = r.status.filter(|s| *s != 202) {
                *refused.entry(s.to_string()).or_default() += 1;
            }
        }
        let checks = Summary::new(
            violations.iter().map(|(_, v)| v.clone()).collect(),
            Vec::new(),
        );
        Report {
            checks,
            recorder_rewatches: Vec::new(),
            checked: Checked::default(),
            seed,
            nodes: args.nodes,
            lease_ttl_s: ttl.as_secs_f64(),
            steps: steps.len(),
            faults,
            faults_by_kind: by_kind,
            failover,
            etcd_writes_resumed: etcd,
            violations: violations
                .into_iter()
                .map(|(after_step, violation)| ReportViolation {
                    after_step,
                    violation,
                })
                .collect(),
            workload: WorkloadFigures {
                requests_sent: records.requests.len(),
                accepted: records.requests.iter().filter(|r| r.accepted()).count(),
                refused,
                unanswered: records
                    .requests
                    .iter()
                    .filter(|r| r.status.is_none())
                    .count(),
                stream_events: records.stream.len(),
                stream_resumes: records.stream_resumes,
                webhook_events: records.webhook.len(),
                console_echoes: records.echoes.len(),
                viewer_reconnects: records.viewer_reconnects,
                viewer_told_reconnecting: records.viewer_told_reconnecting,
            },
        }
    }

    /// What the history recorder missed and why it watched again.
    pub fn set_recorder(&mut self, gaps: Vec<Gap>, rewatches: Vec<String>) {
        self.checks = Summary::new(self.checks.violations.clone(), gaps);
        self.recorder_rewatches = rewatches;
    }

    /// Whether every check passed over complete records.
    pub fn ok(&self) -> bool {
        self.checks.ok
    }

    /// The summary printed at the end.
    pub fn print(&self) {
        println!(
            "ferric chaos: seed {}, {} faults, {} nodes, TTL {} s",
            self.seed,
            self.faults.len(),
            self.nodes,
            self.lease_ttl_s
        );
        for (k, n) in &self.faults_by_kind {
            println!("  {k:<20} {n}");
        }
        let d = &self.failover;
        println!(
            "  failover (s): n={} p50={:?} p99={:?} max={:?}",
            d.count, d.p50, d.p99, d.max
        );
        let e = &self.etcd_writes_resumed;
        println!(
            "  etcd writes resumed (s): n={} p50={:?} max={:?}",
            e.count, e.p50, e.max
        );
        let w = &self.workload;
        println!(
            "  workload: {} requests ({} accepted, {} unanswered, refused {:?}); {} stream events ({} resumes); {} webhook events; {} console echoes ({} viewer reconnects)",
            w.requests_sent, w.accepted, w.unanswered, w.refused, w.stream_events, w.stream_resumes, w.webhook_events, w.console_echoes, w.viewer_reconnects
        );
        let c = &self.checked;
        println!(
            "  checked: {} BMC commands against {} reservations, {} history entries, {} outbox events, {} console sessions ({} etcd changes)",
            c.bmc_commands, c.reservations_created, c.history_entries, c.outbox_events, c.console_sessions, c.changes
        );
        println!(
            "  invariant violations: {} {:?}; history recorder: {} gaps, {} re-watches",
            self.violations.len(),
            self.checks.by_invariant,
            self.checks.recorder_gaps.len(),
            self.recorder_rewatches.len()
        );
        for v in &self.violations {
            println!("    {}", v.violation);
        }
    }
}
