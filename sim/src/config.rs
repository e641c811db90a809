//! The simulator's configuration: fleet-wide settings, per-system behaviour (the defaults given at
//! start-up and the partial updates the control API applies), their validation, and the error type.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::system::Power;

/// Longest graceful shutdown time accepted: a day is "effectively never" and keeps
/// `Duration::from_secs_f64` far from overflow.
const MAX_GRACEFUL_SECS: f64 = 86_400.0;
/// Longest injected latency: an hour (clients give up long before).
const MAX_LATENCY_MS: u64 = 3_600_000;
/// About 400 MB of entries: far more than a benchmark run produces.
pub const DEFAULT_LOG_MEMORY_ENTRIES: usize = 1_000_000;
/// More systems than this is a typo, not a fleet (each costs a few hundred bytes).
pub const MAX_SYSTEMS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("no such systems: {0}")]
    UnknownSystems(String),
    #[error("cannot open the command log {path}")]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How one system's BMC and OS behave. Start-up flags give every system the same; the control API
/// changes them per system at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    /// Seconds the OS takes to complete a graceful shutdown or restart; `None`: it never does.
    pub graceful_shutdown_secs: Option<f64>,
    /// Added before every Redfish answer of this system.
    pub latency_ms: u64,
    /// Fraction of this system's Redfish requests answered 500 (with no effect).
    pub failure_rate: f64,
    /// The BMC accepts requests but never answers them (and does nothing).
    pub unreachable: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            graceful_shutdown_secs: Some(3.0),
            latency_ms: 0,
            failure_rate: 0.0,
            unreachable: false,
        }
    }
}

impl Behaviour {
    pub fn validate(&self) -> Result<(), SimError> {
        BehaviourPatch {
            graceful_shutdown_secs: Some(self.graceful_shutdown_secs),
            latency_ms: Some(self.latency_ms),
            failure_rate: Some(self.failure_rate),
            unreachable: Some(self.unreachable),
            power: None,
        }
        .validate()
    }

    /// Meaningful after [`Behaviour::validate`]; an invalid value (NaN) counts as 0 rather than
    /// panicking.
    pub fn graceful_shutdown(&self) -> Option<Duration> {
        self.graceful_shutdown_secs.map(|s| {
            Duration::try_from_secs_f64(s.clamp(0.0, MAX_GRACEFUL_SECS)).unwrap_or(Duration::ZERO)
        })
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.min(MAX_LATENCY_MS))
    }
}

/// A partial update of a system's behaviour from the control API: absent fields stay as they are.
/// `graceful_shutdown_secs: null` is a value ("never"), hence the double option.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourPatch {
    #[serde(default, deserialize_with = "present")]
    pub graceful_shutdown_secs: Option<Option<f64>>,
    pub latency_ms: Option<u64>,
    pub failure_rate: Option<f64>,
    pub unreachable: Option<bool>,
    /// Sets the power directly, e.g. to simulate a shutdown from inside the OS.
    pub power: Option<Power>,
}

/// Maps a present field (even `null`) to `Some`, so that absent (`None` by `default`) and `null`
/// (`Some(None)`) differ.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl BehaviourPatch {
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::InvalidConfig(m));
        if let Some(Some(s)) = self.graceful_shutdown_secs {
            if !(0.0..=MAX_GRACEFUL_SECS).contains(&s) {
                return bad(format!(
                    "graceful_shutdown_secs must be between 0 and {MAX_GRACEFUL_SECS}, or null for never (got {s})"
                ));
            }
        }
        if let Some(ms) = self.latency_ms {
            if ms > MAX_LATENCY_MS {
                return bad(format!(
                    "latency_ms must be at most {MAX_LATENCY_MS} (got {ms})"
                ));
            }
        }
        if let Some(r) = self.failure_rate {
            if !(0.0..=1.0).contains(&r) {
                return bad(format!("failure_rate must be between 0 and 1 (got {r})"));
            }
        }
        Ok(())
    }

    /// Applies the behaviour fields; the caller applies `power` (it is a state change, not a
    /// behaviour). Call [`BehaviourPatch::validate`] first.
    pub fn apply_to(&self, b: &mut Behaviour) {
        if let Some(g) = self.graceful_shutdown_secs {
            b.graceful_shutdown_secs = g;
        }
        if let Some(ms) = self.latency_ms {
            b.latency_ms = ms;
        }
        if let Some(r) = self.failure_rate {
            b.failure_rate = r;
        }
        if let Some(u) = self.unreachable {
            b.unreachable = u;
        }
    }
}

/// Everything the simulator needs to start. `Default` is what `ferric sim` uses without flags
/// (except the seed, which the command picks at random and prints).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of systems; their ids are `<id_prefix><i>` for i in 0..systems.
    pub systems: usize,
    pub id_prefix: String,
    /// HTTP Basic credentials every system accepts.
    pub username: String,
    pub password: String,
    /// Also append the command log here, one JSON object per line, written before each answer.
    pub log_path: Option<PathBuf>,
    /// How many of the newest log entries `GET /sim/log` can return (memory is bounded; the file
    /// keeps everything).
    pub log_memory_entries: usize,
    /// Every system's behaviour at start.
    pub behaviour: Behaviour,
    /// Seeds the per-system failure draws.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            systems: 100,
            id_prefix: "sim-".to_string(),
            username: "admin".to_string(),
            password: "password".to_string(),
            log_path: None,
            log_memory_entries: DEFAULT_LOG_MEMORY_ENTRIES,
            behaviour: Behaviour::default(),
            seed: 0,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        if self.systems > MAX_SYSTEMS {
            return Err(SimError::InvalidConfig(format!(
                "at most {MAX_SYSTEMS} systems (got {})",
                self.systems
            )));
        }
        // Ids appear in URL paths unescaped.
        if !self
            .id_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(SimError::InvalidConfig(format!(
                "the id prefix may contain only ASCII letters, digits, '-', '_' and '.' (got {:?})",
                self.id_prefix
            )));
        }
        if self.log_memory_entries == 0 {
            return Err(SimError::InvalidConfig(
                "the log must keep at least one entry in memory".to_string(),
            ));
        }
        if self.username.contains(':') {
            return Err(SimError::InvalidConfig(
                "the username may not contain ':' (HTTP Basic auth)".to_string(),
            ));
        }
        self.behaviour.validate()
    }

    pub fn system_id(&self, i: usize) -> String {
        format!("{}{i}", self.id_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_absent_graceful_time_differ() {
        let p: BehaviourPatch =
            serde_json::from_str(r#"{"graceful_shutdown_secs": null}"#).unwrap();
        assert_eq!(p.graceful_shutdown_secs, Some(None));
        let p: BehaviourPatch = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(p.graceful_shutdown_secs, None);
        let mut b = Behaviour::default();
        p.apply_to(&mut b);
        assert_eq!(b.graceful_shutdown_secs, Some(3.0));
        assert_eq!(b.latency_ms, 5);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for body in [
            r#"{"failure_rate": 1.5}"#,
            r#"{"failure_rate": -0.1}"#,
            r#"{"graceful_shutdown_secs": -1}"#,
            r#"{"graceful_shutdown_secs": 1e300}"#,
            r#"{"latency_ms": 99999999999}"#,
        ] {
            let p: BehaviourPatch = serde_json::from_str(body).unwrap();
            assert!(p.validate().is_err(), "{body}");
        }
        assert!(serde_json::from_str::<BehaviourPatch>(r#"{"behavior": 1}"#).is_err());
    }

    #[test]
    fn id_prefix_must_be_path_safe() {
        let cfg = SimConfig {
            id_prefix: "a/b".to_string(),
            ..SimConfig::default()
        };
        assert!(cfg.validate().is_err());
        assert!(SimConfig::default().validate().is_ok());
    }
}
