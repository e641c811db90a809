//! The command log: an append-only record of every Redfish request that reached a system, every
//! heartbeat, inspection post and lookup a system's agent sent, every request to an agent's
//! command API (and the power changes its commands caused) and every serial console session, kept in
//! memory for `GET /sim/log` and optionally appended to a JSON-lines file. It is the independent
//! record that tests check conductors against, so an entry is written (to the file too) before the
//! request is answered: whatever a client saw answered is in the file even after a SIGKILL.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The prefix of the `User-Agent` Ferric's Redfish driver sends: `ferric-conductor/<name>`.
const CONDUCTOR_AGENT_PREFIX: &str = "ferric-conductor/";

/// What an entry records. Files written before kinds existed hold Redfish requests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogOp {
    /// A Redfish request that reached a system's BMC.
    #[default]
    Redfish,
    /// A heartbeat the system's agent sent to the Ironic API (`POST /v1/heartbeat/<node>`).
    Heartbeat,
    /// The inspection data the system's agent sent at the start of a ramdisk boot
    /// (`POST /v1/continue_inspection`).
    Inspection,
    /// The lookup the system's agent sent after its inspection post (`GET /v1/lookup`).
    Lookup,
    /// A serial console session was asked for: opened (`status` 101) or refused (409).
    SerialOpen,
    /// A serial console session ended; `detail` says why.
    SerialClose,
    /// A request to a system's agent command API (`/agent/<system>/v1/commands/...`): `action`
    /// is the full command name of a POST (`deploy.execute_deploy_step`), `list` or `poll` for
    /// a GET; `detail` the step of an `execute_*_step` (`deploy.write_image`); `status` `None`
    /// for a request held unanswered (no agent running), logged when its client gave up.
    AgentCommand,
    /// A finished agent command powered the machine off or rebooted it: `action` is the
    /// equivalent Redfish reset (`ForceOff`, `ForceRestart`), `detail` the command's id.
    AgentPower,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in this process's log, from 0, without gaps.
    pub index: u64,
    /// When the request reached the system (before any injected latency), RFC 3339 UTC with ms.
    /// For a heartbeat or an inspection post: when the agent sent it; for a serial session: when
    /// it opened or closed.
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    #[serde(default)]
    pub op: LogOp,
    pub system: String,
    /// The HTTP method and path of the request (an agent's are those it sent to the API).
    pub method: String,
    pub path: String,
    /// The `ResetType` of a reset, the `BootSourceOverrideTarget` of a PATCH, as sent (also when
    /// invalid); a heartbeat's `agent_status` when it carried one; the full command name of a
    /// POST to an agent's command API (`deploy.execute_deploy_step`), `list` or `poll` for its
    /// GETs; the reset an agent's command caused; `None` when there is none.
    pub action: Option<String>,
    /// The HTTP status answered; `None` when the system was unreachable and never answered, or
    /// when an agent's request got no answer (`detail` has the error).
    pub status: Option<u16>,
    /// Who sent the request: the conductor's name from `User-Agent: ferric-conductor/<name>`, else
    /// the header verbatim; `ferric-sim-agent` for heartbeats and inspection posts.
    pub client: Option<String>,
    /// A heartbeat's node (the uuid in its path); for an inspection post (whose request names no
    /// node) and a command API request, the node the agent is configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A heartbeat's number within its boot (from 1); a serial session's number on its system
    /// (from 1, the same on its open and close entries; on a refused open, the number of the
    /// session that holds the port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Why a heartbeat or inspection post got no answer, why the API refused an inspection post
    /// (its error message), why a serial session closed or was refused; the step of an
    /// `execute_*_step` command (`deploy.write_image`); the id of the command behind an
    /// `agent_power` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The W3C `traceparent` header of a Redfish request, when the client sent one (a conductor
    /// that exports traces sends its BMC command span's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An entry before the log numbers it.
#[derive(Debug, Clone)]
pub struct Record {
    pub received: SystemTime,
    pub op: LogOp,
    pub system: String,
    pub method: String,
    pub path: String,
    pub action: Option<String>,
    pub status: Option<u16>,
    pub client: Option<String>,
    pub node: Option<String>,
    pub seq: Option<u64>,
    pub detail: Option<String>,
    pub traceparent: Option<String>,
}

impl Record {
    /// A record of `op` on `system` now, with the other fields empty.
    pub fn new(op: LogOp, system: &str, method: &str, path: String) -> Self {
        Record {
            received: SystemTime::now(),
            op,
            system: system.to_string(),
            method: method.to_string(),
            path,
            action: None,
            status: None,
            client: None,
            node: None,
            seq: None,
            detail: None,
            traceparent: None,
        }
    }
}

/// Who sent a request, from its `User-Agent`.
pub fn client_of(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent?;
    Some(match ua.strip_prefix(CONDUCTOR_AGENT_PREFIX) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => ua.to_string(),
    })
}

#[derive(Debug)]
pub struct CommandLog {
    // One lock for numbering, memory and file together keeps the file in index order. It is held
    // for one small write(2); that is the only fleet-wide lock on the request path.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The newest entries, at most `keep`; the file (if any) has them all.
    entries: VecDeque<LogEntry>,
    keep: usize,
    /// Index of the next entry (= entries ever appended).
    next: u64,
    file: Option<File>,
    file_failed: bool,
}

impl CommandLog {
    /// A log that keeps the newest `keep` entries in memory and also appends every entry to
    /// `path` (created if missing, never truncated).
    pub fn open(path: Option<&Path>, keep: usize) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(CommandLog {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                keep: keep.max(1),
                next: 0,
                file,
                file_failed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent log.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the record, writes it to the file (unbuffered: one write per entry) and keeps it.
    pub fn append(&self, r: Record) -> u64 {
        let unix_ms = r
            .received
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut inner = self.lock();
        let index = inner.next;
        inner.next += 1;
        let entry = LogEntry {
            index,
            time: rfc3339_ms(unix_ms),
            unix_ms,
            op: r.op,
            system: r.system,
            method: r.method,
            path: r.path,
            action: r.action,
            status: r.status,
            client: r.client,
            node: r.node,
            seq: r.seq,
            detail: r.detail,
            traceparent: r.traceparent,
        };
        if let Some(file) = inner.file.as_mut() {
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            // One write_all of a whole line to an O_APPEND file: a reader never sees half an
            // entry unless the process dies inside the call.
            if let Err(e) = file.write_all(&line) {
                if !inner.file_failed {
                    tracing::error!(error = %e, "cannot append to the command log file; entries stay in memory only");
                    inner.file_failed = true;
                }
            }
        }
        if inner.entries.len() == inner.keep {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry);
        index
    }

    /// Entries from index `since` on (empty when there are none yet). Entries that memory no
    /// longer holds are skipped: the first entry's `index` shows the gap.
    pub fn since(&self, since: u64) -> Vec<LogEntry> {
        let inner = self.lock();
        let oldest = inner.next - inner.entries.len() as u64;
        let skip = usize::try_from(since.saturating_sub(oldest)).unwrap_or(usize::MAX);
        inner.entries.iter().skip(skip).cloned().collect()
    }

    /// Entries ever appended (the next entry's index).
    pub fn len(&self) -> u64 {
        self.lock().next
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Proleptic Gregorian (year, month, day) for a count of days since 1970-01-01. Works in 400-year
/// eras (146,097 days each) counted from 0000-03-01, so that the leap day ends a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March-based month, 0..11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(system: &str) -> Record {
        Record {
            status: Some(200),
            ..Record::new(
                LogOp::Redfish,
                system,
                "GET",
                format!("/redfish/v1/Systems/{system}"),
            )
        }
    }

    #[test]
    fn memory_keeps_the_newest_entries_with_their_indexes() {
        let log = CommandLog::open(None, 3).unwrap();
        for i in 0..5 {
            assert_eq!(log.append(record(&format!("s{i}"))), i);
        }
        assert_eq!(log.len(), 5);
        let idx = |v: Vec<LogEntry>| v.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(idx(log.since(0)), [2, 3, 4]);
        assert_eq!(idx(log.since(3)), [3, 4]);
        assert_eq!(idx(log.since(5)), Vec::<u64>::new());
        assert_eq!(idx(log.since(u64::MAX)), Vec::<u64>::new());
        assert_eq!(log.since(4)[0].system, "s4");
    }

    #[test]
    fn entries_without_a_kind_are_redfish_requests_and_optional_fields_stay_out() {
        let old = r#"{"index":0,"time":"1970-01-01T00:00:00.000Z","unix_ms":0,"system":"s",
            "method":"GET","path":"/","action":null,"status":200,"client":null}"#;
        let e: LogEntry = serde_json::from_str(old).unwrap();
        assert_eq!(e.op, LogOp::Redfish);
        let log = CommandLog::open(None, 3).unwrap();
        log.append(record("s0"));
        let line = serde_json::to_value(&log.since(0)[0]).unwrap();
        assert_eq!(line["op"], "redfish");
        assert!(line.get("node").is_none() && line.get("detail").is_none());
        let ops = [LogOp::Heartbeat, LogOp::Inspection, LogOp::SerialClose];
        let names: Vec<String> = ops
            .iter()
            .map(|op| serde_json::to_value(op).unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [r#""heartbeat""#, r#""inspection""#, r#""serial_close""#]
        );
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_735_689_599_000), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn client_comes_from_the_user_agent() {
        assert_eq!(
            client_of(Some("ferric-conductor/c1")).as_deref(),
            Some("c1")
        );
        assert_eq!(
            client_of(Some("python-requests/2.31")).as_deref(),
            Some("python-requests/2.31")
        );
        assert_eq!(
            client_of(Some("ferric-conductor/")).as_deref(),
            Some("ferric-conductor/")
        );
        assert_eq!(client_of(None), None);
    }
}
