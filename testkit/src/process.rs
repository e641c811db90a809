//! Child processes of a test: a guard that kills (with its process group) and reaps on drop,
//! also on panic; bounded runs of short commands; log tails for failure messages.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The last `lines` lines of a file (lossy UTF-8), or a note why it cannot be read. Runs of
/// lines that differ only in numbers and ids (one message per node) are shown as their first
/// and last line and a count, so that a tail shows what happened rather than one flood.
pub fn file_tail(path: &Path, lines: usize) -> String {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return format!("    [cannot read {}: {e}]\n", path.display()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    // Walk back from the end, grouping consecutive lines of one shape.
    let mut groups: Vec<(usize, usize)> = Vec::new(); // [first, last] indices, in reverse order
    let mut i = all.len();
    while i > 0 && groups.len() < lines {
        let last = i - 1;
        let shape = line_shape(all[last]);
        let mut first = last;
        while first > 0 && line_shape(all[first - 1]) == shape {
            first -= 1;
        }
        groups.push((first, last));
        i = first;
    }
    let mut out = String::new();
    if i > 0 {
        out.push_str(&format!("    [... {i} earlier lines]\n"));
    }
    for &(first, last) in groups.iter().rev() {
        out.push_str("    ");
        out.push_str(all[first]);
        out.push('\n');
        if last > first {
            if last > first + 1 {
                out.push_str(&format!("    [... {} similar lines]\n", last - first - 1));
            }
            out.push_str("    ");
            out.push_str(all[last]);
            out.push('\n');
        }
    }
    out
}

/// A log line with its digits and hex ids masked (the timestamp, node ids, revisions).
fn line_shape(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_ascii_hexdigit() { '#' } else { c })
        .collect()
}

fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log file {}: {e}", path.display()))
}

/// A child process started by the test, in its own process group, logging to a file.
/// `Drop` SIGKILLs it (by its pid, if not yet reaped) and reaps it.
pub struct Proc {
    name: String,
    args: Vec<String>,
    pid: u32,
    log: PathBuf,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Proc {
    /// Spawns `program args`, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: impl AsRef<Path>, args: &[String], log: PathBuf) -> Proc {
        let program = program.as_ref();
        let out = log_file(&log);
        let err = out.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // Plain text logs: they are read by the tests and printed on failures.
        cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({name}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            args: args.to_vec(),
            pid: child.id(),
            log,
            child: Mutex::new(child),
            exit: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The arguments to pass again on a restart (see [`Proc::keep_args`]).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Remembers `args` as the ones a restart passes again (not the full command line).
    pub fn keep_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited (reaping it), None while it runs.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            *exit = child.try_wait().ok().flatten();
        }
        *exit
    }

    pub fn is_running(&self) -> bool {
        self.try_exit().is_none()
    }

    /// Sends `sig` to this process (only while it has not been reaped, so the pid is still ours).
    pub fn signal(&self, sig: Signal) {
        let exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_some() {
            return;
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        // A zombie still owns its pid until reaped, which only happens under this lock.
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// SIGKILL (this process only, not its children) and reap.
    pub fn kill(&self) -> ExitStatus {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = *exit {
            return status;
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let status = child.wait().expect("wait for killed child");
        *exit = Some(status);
        status
    }

    /// Waits (polling, bounded) for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The whole log (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Current size of the log in bytes (to look only at what is logged after some point).
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// Whether the log, from byte offset `from` on, reports fencing: a line that mentions
    /// "fenc" (case-insensitive) other than in a `fence=<n>` field.
    pub fn logged_fencing_since(&self, from: usize) -> bool {
        self.log_since(from)
            .to_lowercase()
            .lines()
            .any(|l| l.replace("fence=", "").contains("fenc"))
    }

    /// The log from byte offset `from` on.
    pub fn log_since(&self, from: usize) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(b.get(from..).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let state = match self.try_exit() {
            None => "running".to_string(),
            Some(s) => format!("exited: {s}"),
        };
        format!(
            "--- {} (pid {}, {state}) log {}:\n{}",
            self.name,
            self.pid,
            self.log.display(),
            file_tail(&self.log, lines)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The process group is the one `spawn` made, led by this pid: its id cannot be reused
        // while a member lives, so this reaches only what the test started (children included).
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        self.kill();
    }
}

/// Runs a command to completion, or kills it (by pid) after `limit` and panics.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    // Collecting in a thread keeps a chatty child from blocking on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("collect output"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            let out = rx.recv().expect("reaper thread").expect("collect output");
            panic!("{cmd:?} did not finish in {limit:?}: {out:?}");
        }
    }
}

/// Polls `probe` every 100 ms until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
    }
}
