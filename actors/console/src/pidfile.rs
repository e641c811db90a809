//! Pid files of console processes (`<runtime_dir>/consoles/<uuid>.pid`) and the sweep that kills
//! what a previous run of this conductor left behind.
//!
//! A pid file holds `<pid> <start time>`, the start time being field 22 of `/proc/<pid>/stat`
//! (clock ticks since boot). A pid alone can be reused by an unrelated process after the console
//! died; pid and start time together name one process, so the sweep never kills a stranger.
//!
//! Children of a live conductor die with it (parent-death signal, stdin closing); the sweep is
//! the backstop for the rest (a child stuck in a BMC retry loop, a changed signal disposition),
//! run once when the conductor starts, before any console of its own exists.

use ferric_model::NodeId;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory holding the pid files under a conductor's runtime dir.
pub fn dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("consoles")
}

/// `<runtime_dir>/consoles/<uuid>.pid`.
pub fn path(runtime_dir: &Path, node: &NodeId) -> PathBuf {
    dir(runtime_dir).join(format!("{node}.pid"))
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot. None if
/// the process does not exist (or is unreadable).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)`: field 3 (state) is index 0, so field 22 is index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Process state (field 3 of `/proc/<pid>/stat`): `Z` for a zombie, None if gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether the process `pid` with `start` still runs (exists and is not a zombie).
pub fn is_running(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Records a console process. Written atomically (temp file and rename), so a crash never
/// leaves a half-written file the sweep would misread.
pub fn write(runtime_dir: &Path, node: &NodeId, pid: u32) -> io::Result<()> {
    let start = start_time(pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} vanished before its pid file was written"),
        )
    })?;
    let dir = dir(runtime_dir);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{node}.pid.tmp"));
    std::fs::write(&tmp, format!("{pid} {start}\n"))?;
    std::fs::rename(&tmp, path(runtime_dir, node))
}

/// Removes a console's pid file, if it still names `pid` (a newer session's file is kept).
pub fn remove(runtime_dir: &Path, node: &NodeId, pid: u32) {
    let p = path(runtime_dir, node);
    if read(&p).is_some_and(|(recorded, _)| recorded == pid) {
        let _ = std::fs::remove_file(&p);
    }
}

fn read(path: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

/// What the sweep found for one pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The node, from the file name (None if the name is not a uuid).
    pub node: Option<NodeId>,
    pub file: PathBuf,
    pub pid: Option<u32>,
    pub outcome: SweepOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepOutcome {
    /// The process was alive with the recorded start time: its process group got SIGKILL.
    Killed,
    /// Killed, but it had not disappeared after a second (it will; it is not ours to reap).
    KillPending,
    /// No such process any more.
    Gone,
    /// The pid now belongs to another process (different start time): left alone.
    PidReused,
    /// The file could not be parsed: removed.
    Unreadable,
}

/// Kills every console process a previous run of this conductor left (pid file present,
/// process alive, start time matching) by SIGKILL to its process group, removes every pid file,
/// and reports what it did. The BMC side of a killed `ipmitool` session is freed by the next
/// activation's `sol deactivate`. A missing directory is an empty sweep.
pub fn sweep_orphans(runtime_dir: &Path) -> io::Result<Vec<Swept>> {
    let dir = dir(runtime_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let file = entry?.path();
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&file);
            continue;
        }
        let Some(stem) = name.strip_suffix(".pid") else {
            continue;
        };
        let node = stem.parse::<NodeId>().ok();
        let swept = match read(&file) {
            None => Swept {
                node,
                file: file.clone(),
                pid: None,
                outcome: SweepOutcome::Unreadable,
            },
            Some((pid, start)) => Swept {
                node,
                file: file.clone(),
                pid: Some(pid),
                outcome: kill_if_same(pid, start),
            },
        };
        match swept.outcome {
            SweepOutcome::Killed | SweepOutcome::KillPending => {
                tracing::warn!(node = ?swept.node, pid = ?swept.pid, "killed a console process left by a previous run")
            }
            _ => {
                tracing::info!(node = ?swept.node, pid = ?swept.pid, outcome = ?swept.outcome, "stale console pid file removed")
            }
        }
        let _ = std::fs::remove_file(&file);
        out.push(swept);
    }
    Ok(out)
}

fn kill_if_same(pid: u32, start: u64) -> SweepOutcome {
    let Ok(raw) = i32::try_from(pid) else {
        return SweepOutcome::Unreadable;
    };
    if raw <= 1 {
        return SweepOutcome::Unreadable;
    }
    match start_time(pid) {
        None => return SweepOutcome::Gone,
        Some(s) if s != start => return SweepOutcome::PidReused,
        Some(_) => {}
    }
    if proc_state(pid) == Some('Z') {
        return SweepOutcome::Gone;
    }
    // The console child leads its own process group (pgid == pid): kill the group, and the
    // process itself in case it left the group.
    let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if !is_running(pid, start) {
            return SweepOutcome::Killed;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    SweepOutcome::KillPending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let line = "13738 (a) b) c) R 13736 13736 5471 0 -1 4194304 102 0 0 0 0 0 0 0 20 0 1 0 1109842 3133440 380";
        assert_eq!(parse_start_time(line), Some(1109842));
        assert_eq!(parse_start_time("1 (x) R 2"), None);
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn sweep_leaves_reused_pids_alone_and_removes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let me = NodeId::new_random();
        let gone = NodeId::new_random();
        std::fs::create_dir_all(super::dir(dir.path())).unwrap();
        // Our own pid with a wrong start time: a reused pid, must not be killed.
        let mine = start_time(std::process::id()).unwrap();
        std::fs::write(
            path(dir.path(), &me),
            format!("{} {}\n", std::process::id(), mine + 1),
        )
        .unwrap();
        // A pid that cannot exist (above pid_max).
        std::fs::write(path(dir.path(), &gone), "99999999 5\n").unwrap();
        std::fs::write(super::dir(dir.path()).join("junk.pid"), "nonsense").unwrap();
        let mut report = sweep_orphans(dir.path()).unwrap();
        report.sort_by_key(|s| format!("{:?}", s.outcome));
        let outcomes: Vec<_> = report.iter().map(|s| s.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            vec![
                SweepOutcome::Gone,
                SweepOutcome::PidReused,
                SweepOutcome::Unreadable
            ]
        );
        assert_eq!(report[1].node, Some(me));
        assert_eq!(
            std::fs::read_dir(super::dir(dir.path())).unwrap().count(),
            0
        );
        assert!(sweep_orphans(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
