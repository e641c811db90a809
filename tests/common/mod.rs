//! Multi-process test harness: a throwaway etcd server, the real `ferric` binary in separate
//! processes, and independent inspection of what they wrote to etcd (current keys and the full
//! revision history).
//!
//! Everything a test starts is owned by a value whose `Drop` kills it by pid (never by name) and
//! reaps it, so a failing or panicking test leaves no processes behind. Every child runs in its
//! own process group so that a Ctrl-C on `cargo test` does not hit it half-way through a check.
//! Every wait is bounded and, when it runs out, panics with the tails of all process logs.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod sim;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use ferric_model::{decode, CodecError, ConductorRecord, NodeSpec, NodeStatus, ReservationRecord};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The binary under test.
pub const FERRIC: &str = env!("CARGO_BIN_EXE_ferric");
/// Debian's etcd 3.4.
pub const ETCD: &str = "/usr/bin/etcd";

/// Largest etcd response the inspection client accepts (a full read of a few thousand records
/// is a few MB; the client default of 4 MiB is too tight for history reads).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Unique names and free ports
// ---------------------------------------------------------------------------------------------

/// A random-enough 64-bit value without a `rand` dependency: std's `RandomState` is seeded from
/// the OS once per process, and the counter makes every call differ.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Wall-clock time as `HH:MM:SS.ffffff` UTC, to line test notes up with the processes' logs.
pub fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// A prefix no other test (in this or another run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("/ferric-test/{test}-{:016x}/", random_u64())
}

/// Ports handed out in this process, so that two tests running in parallel never get the same.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A free loopback TCP port, never 2379/2380.
///
/// Ports are taken from *below* the kernel's ephemeral range when there is room: the etcd of a
/// test is stopped and restarted on the same port, and while it is down a conductor's outgoing
/// connection could otherwise be given that very port as its local port (a TCP self-connect), or
/// hold it so that etcd cannot bind it again. The port is checked free by binding it. Where the
/// ephemeral range leaves no room, the kernel picks one (bind to port 0).
pub fn free_port() -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = guard.get_or_insert_with(HashSet::new);
    let (low, _) = ephemeral_range();
    for _ in 0..1000 {
        let port = if low > 12_000 {
            10_000 + (random_u64() % u64::from(low - 10_000)) as u16
        } else {
            match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(_) => continue,
            }
        };
        if port == 2379 || port == 2380 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("found no free loopback port in 1000 tries");
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

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
    pub fn spawn(name: &str, program: &str, args: &[String], log: PathBuf) -> Proc {
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
            .unwrap_or_else(|e| panic!("cannot start {program} ({name}): {e}"));
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

    pub fn args(&self) -> &[String] {
        &self.args
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

    /// SIGKILL and reap.
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
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------------------------

/// A throwaway single-member etcd in a temporary directory on free loopback ports.
pub struct Etcd {
    proc: Option<Proc>,
    client_port: u16,
    peer_port: u16,
    starts: usize,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits (bounded) until `/health` answers true.
    pub fn start() -> Etcd {
        let mut last_error = String::new();
        // A port found free can be taken by someone else before etcd binds it: try new ones.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("ferric-etcd-")
                .tempdir()
                .expect("create etcd tempdir");
            let mut etcd = Etcd {
                proc: None,
                client_port: free_port(),
                peer_port: free_port(),
                starts: 0,
                dir,
            };
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn port(&self) -> u16 {
        self.client_port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.is_running())
    }

    fn launch(&mut self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let args: Vec<String> = [
            "--name",
            "t",
            "--data-dir",
            data.to_str().expect("utf-8 tempdir path"),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("t={peer}"),
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.starts += 1;
        let proc = Proc::spawn(
            &format!("etcd#{}", self.starts),
            ETCD,
            &args,
            self.log_path(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if health(self.client_port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.try_exit() {
                return Err(format!(
                    "etcd exited with {status} before it was healthy\n{}",
                    proc.log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd not healthy after 20 s\n{}",
                    proc.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (bounded; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.signal(Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Drop kills it if it is still running.
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("etcd did not restart: {e}");
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- etcd (port {}) log {}:\n{}",
            self.client_port,
            self.log_path().display(),
            file_tail(&self.log_path(), lines)
        )
    }
}

/// True if etcd's `/health` on `port` reports healthy (a bare HTTP/1.0 request: no client
/// library needed for one GET).
fn health(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.replace(' ', "").contains("\"health\":\"true\"")
}

// ---------------------------------------------------------------------------------------------
// The ferric binary
// ---------------------------------------------------------------------------------------------

/// Starts `ferric` processes of one test: one key prefix, one log directory.
pub struct Ferric {
    pub prefix: String,
    log_dir: PathBuf,
    started: AtomicU64,
}

impl Ferric {
    pub fn new(prefix: &str, log_dir: &Path) -> Ferric {
        Ferric {
            prefix: prefix.to_string(),
            log_dir: log_dir.to_path_buf(),
            started: AtomicU64::new(0),
        }
    }

    /// `ferric conductor --etcd URL --name NAME --prefix PREFIX ...args`.
    pub fn conductor(&self, etcd_url: &str, name: &str, args: &[&str]) -> Proc {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let mut all: Vec<String> = vec![
            "conductor".into(),
            "--etcd".into(),
            etcd_url.into(),
            "--name".into(),
            name.into(),
            "--prefix".into(),
            self.prefix.clone(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let log = self.log_dir.join(format!("{name}.{n}.log"));
        let mut proc = Proc::spawn(name, FERRIC, &all, log);
        // Keep only the extra args, so that a restart can pass them again.
        proc.args = args.iter().map(|s| s.to_string()).collect();
        proc
    }
}

/// Runs `ferric ctl --etcd URL --prefix P ...args` (bounded: killed after `CTL_TIMEOUT`).
pub async fn ctl(etcd_url: &str, prefix: &str, args: &[&str]) -> Output {
    ctl_with_timeout(etcd_url, prefix, args, CTL_TIMEOUT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "`ferric ctl {}` did not finish within {CTL_TIMEOUT:?}",
                args.join(" ")
            )
        })
}

pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Like [`ctl`], None if it did not finish within `timeout` (it is then killed).
pub async fn ctl_with_timeout(
    etcd_url: &str,
    prefix: &str,
    args: &[&str],
    timeout: Duration,
) -> Option<Output> {
    let mut cmd = tokio::process::Command::new(FERRIC);
    cmd.arg("ctl")
        .arg("--etcd")
        .arg(etcd_url)
        .arg("--prefix")
        .arg(prefix)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start ferric ctl");
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .ok()
        .map(|r| r.expect("wait for ferric ctl"))
}

/// A one-line description of a finished command, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n  stdout: {}\n  stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

// ---------------------------------------------------------------------------------------------
// etcd inspection
// ---------------------------------------------------------------------------------------------

/// One key as etcd holds it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_rev: i64,
    pub mod_rev: i64,
    pub lease: i64,
}

/// Every key under a prefix at one revision, split by kind and keyed by the last path element
/// (a node uuid, or a conductor or node name).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub nodes: BTreeMap<String, Kv>,
    pub statuses: BTreeMap<String, Kv>,
    pub reservations: BTreeMap<String, Kv>,
    pub conductors: BTreeMap<String, Kv>,
    pub names: BTreeMap<String, Kv>,
    pub other: Vec<Kv>,
}

impl Snapshot {
    pub fn status(&self, id: &str) -> Option<Result<NodeStatus, CodecError>> {
        self.statuses
            .get(id)
            .map(|kv| decode::<NodeStatus>(&kv.value))
    }

    pub fn spec(&self, id: &str) -> Option<Result<NodeSpec, CodecError>> {
        self.nodes.get(id).map(|kv| decode::<NodeSpec>(&kv.value))
    }

    /// The holder of a node's reservation and the reservation's create_revision (its fence).
    pub fn holder(&self, id: &str) -> Option<(String, i64)> {
        self.reservations.get(id).map(|kv| {
            let holder = decode::<ReservationRecord>(&kv.value)
                .map(|r| r.conductor)
                .unwrap_or_else(|e| format!("<unreadable reservation: {e}>"));
            (holder, kv.create_rev)
        })
    }

    pub fn conductor(&self, name: &str) -> Option<ConductorRecord> {
        self.conductors
            .get(name)
            .and_then(|kv| decode::<ConductorRecord>(&kv.value).ok())
    }

    /// Reservations held, by conductor.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for id in self.reservations.keys() {
            if let Some((holder, _)) = self.holder(id) {
                *out.entry(holder).or_insert(0) += 1;
            }
        }
        out
    }

    /// Nodes whose reservation is held by `conductor`.
    pub fn held_by(&self, conductor: &str) -> Vec<String> {
        self.reservations
            .keys()
            .filter(|id| self.holder(id).is_some_and(|(h, _)| h == conductor))
            .cloned()
            .collect()
    }

    /// Whether one node is settled: reserved by one of `live`. (A new owner writes the status
    /// only when it has something to record, so a status may still carry an earlier owner; that
    /// every status write came from the holder of the time is checked on the history.)
    pub fn node_problem(&self, id: &str, live: &[&str]) -> Option<String> {
        let Some((holder, _)) = self.holder(id) else {
            return Some(format!("node {id}: no reservation"));
        };
        if !live.contains(&holder.as_str()) {
            return Some(format!(
                "node {id}: reserved by {holder:?}, not a live conductor {live:?}"
            ));
        }
        match self.status(id) {
            Some(Err(e)) => Some(format!("node {id}: unreadable status: {e}")),
            _ => None,
        }
    }

    /// Every node is reserved by a live conductor, every live conductor is registered and
    /// reports as many running node actors as it holds reservations (it counts an actor only
    /// once the actor has started).
    pub fn check_settled(&self, live: &[&str]) -> Result<(), String> {
        let mut problems: Vec<String> = Vec::new();
        let counts = self.counts();
        for name in live {
            match self.conductor(name) {
                None => problems.push(format!("conductor {name} is not registered")),
                Some(rec) => {
                    let held = counts.get(*name).copied().unwrap_or(0) as u64;
                    if rec.running != held {
                        problems.push(format!(
                            "conductor {name} reports {} node actors running but holds {held} reservations",
                            rec.running
                        ));
                    }
                }
            }
        }
        if self.nodes.is_empty() {
            problems.push("no nodes".into());
        }
        for id in self.nodes.keys() {
            if let Some(p) = self.node_problem(id, live) {
                problems.push(p);
            }
        }
        for id in self.reservations.keys() {
            if !self.nodes.contains_key(id) {
                problems.push(format!("reservation for node {id}, which does not exist"));
            }
        }
        summarize(problems, self.revision)
    }
}

fn summarize(problems: Vec<String>, revision: i64) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} problems at revision {revision}:", problems.len());
    for p in problems.iter().take(8) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > 8 {
        msg.push_str("\n  ...");
    }
    Err(msg)
}

/// One event of etcd's history.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    pub put: bool,
    pub value: Vec<u8>,
    /// For puts; 0 for deletes.
    pub create_rev: i64,
}

/// Every event of the whole keyspace from revision 1 to `revision`.
#[derive(Debug, Clone)]
pub struct History {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// One lifetime of a reservation key, split where its value changes.
#[derive(Debug, Clone)]
struct Held {
    create_rev: i64,
    holder: String,
    from: i64,
    /// Revision of the delete or overwrite that ended it; None while it lasts.
    until: Option<i64>,
}

impl History {
    /// Events of keys under `prefix`.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .filter(move |e| e.key.starts_with(prefix))
    }

    /// The invariant behind fencing: every status put with (owner X, fence F) happened at a
    /// revision where the node's reservation key existed with create_revision F and holder X.
    /// Returns the violations (empty when the invariant holds) and the number of status puts
    /// checked.
    pub fn fencing_violations(&self, prefix: &str) -> (Vec<String>, usize) {
        let res_prefix = format!("{prefix}reservations/");
        let status_prefix = format!("{prefix}status/");
        let mut held: BTreeMap<&str, Vec<Held>> = BTreeMap::new();
        for e in self.under(&res_prefix) {
            let id = &e.key[res_prefix.len()..];
            let spans = held.entry(id).or_default();
            if let Some(last) = spans.last_mut() {
                if last.until.is_none() {
                    last.until = Some(e.revision);
                }
            }
            if e.put {
                spans.push(Held {
                    create_rev: e.create_rev,
                    holder: decode::<ReservationRecord>(&e.value)
                        .map(|r| r.conductor)
                        .unwrap_or_else(|err| format!("<unreadable reservation: {err}>")),
                    from: e.revision,
                    until: None,
                });
            }
        }
        let mut violations = Vec::new();
        let mut checked = 0;
        for e in self.under(&status_prefix).filter(|e| e.put) {
            checked += 1;
            let id = &e.key[status_prefix.len()..];
            let status = match decode::<NodeStatus>(&e.value) {
                Ok(s) => s,
                Err(err) => {
                    violations.push(format!(
                        "rev {}: unreadable status put for {id}: {err}",
                        e.revision
                    ));
                    continue;
                }
            };
            let Some(owner) = status.owner.as_deref() else {
                violations.push(format!(
                    "rev {}: status of {id} written without owner (fence {})",
                    e.revision, status.fence
                ));
                continue;
            };
            let ok = held.get(id).is_some_and(|spans| {
                spans.iter().any(|h| {
                    h.create_rev == status.fence
                        && h.holder == owner
                        && h.from <= e.revision
                        && h.until.is_none_or(|u| e.revision < u)
                })
            });
            if !ok {
                let spans: Vec<String> = held
                    .get(id)
                    .map(|s| {
                        s.iter()
                            .map(|h| {
                                format!(
                                    "{} fence {} revs {}..{}",
                                    h.holder,
                                    h.create_rev,
                                    h.from,
                                    h.until.map_or("now".into(), |u| u.to_string())
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                violations.push(format!(
                    "rev {}: status of {id} written by {owner} with fence {}, but the reservation was: [{}]",
                    e.revision,
                    status.fence,
                    spans.join("; ")
                ));
            }
        }
        (violations, checked)
    }

    /// The revision of the first delete of `key` after revision `after`.
    pub fn first_delete_after(&self, key: &str, after: i64) -> Option<i64> {
        self.events
            .iter()
            .find(|e| !e.put && e.revision > after && e.key == key)
            .map(|e| e.revision)
    }
}

/// An etcd-client connection for looking at what the processes under test wrote.
#[derive(Clone)]
pub struct Inspect {
    client: Client,
    pub prefix: String,
}

impl Inspect {
    pub async fn connect(url: &str, prefix: &str) -> Result<Inspect, String> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(20));
        let client =
            tokio::time::timeout(Duration::from_secs(10), Client::connect([url], Some(opts)))
                .await
                .map_err(|_| format!("connecting to etcd at {url} timed out"))?
                .map_err(|e| format!("cannot connect to etcd at {url}: {e}"))?;
        Ok(Inspect {
            client,
            prefix: prefix.to_string(),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// All keys under the prefix at one revision.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let (revision, kvs) = self.get_prefix(&self.prefix).await?;
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in kvs {
            let rest = &kv.key[self.prefix.len()..];
            let (kind, leaf) = rest.split_once('/').unwrap_or(("", rest));
            let leaf = leaf.to_string();
            match kind {
                "nodes" => {
                    snap.nodes.insert(leaf, kv);
                }
                "status" => {
                    snap.statuses.insert(leaf, kv);
                }
                "reservations" => {
                    snap.reservations.insert(leaf, kv);
                }
                "conductors" => {
                    snap.conductors.insert(leaf, kv);
                }
                "names" => {
                    snap.names.insert(leaf, kv);
                }
                _ => snap.other.push(kv),
            }
        }
        Ok(snap)
    }

    /// All keys under `prefix` (one read; the revision of the read).
    pub async fn get_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), String> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut resp = kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd get {prefix}: {e}"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(|kv| Kv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                create_rev: kv.create_revision(),
                mod_rev: kv.mod_revision(),
                lease: kv.lease(),
            })
            .collect();
        Ok((revision, kvs))
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> Result<i64, String> {
        let resp = self
            .client
            .kv_client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| format!("etcd get revision: {e}"))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// The whole history of the keyspace up to the current revision, read with a watch from
    /// revision 1 (etcd keeps it until compaction, and nothing compacts in these tests).
    ///
    /// The test owns this etcd, so every revision after 1 changed at least one key: watching all
    /// keys, the history is complete once an event of the current revision has arrived.
    pub async fn history(&self) -> Result<History, String> {
        let revision = self.revision().await?;
        let mut events = Vec::new();
        if revision <= 1 {
            return Ok(History { revision, events });
        }
        let mut watch = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut stream = watch
            .watch(
                "",
                Some(WatchOptions::new().with_all_keys().with_start_revision(1)),
            )
            .await
            .map_err(|e| format!("etcd watch from revision 1: {e}"))?;
        let read = async {
            loop {
                let resp = stream
                    .message()
                    .await
                    .map_err(|e| format!("history watch failed: {e}"))?
                    .ok_or("history watch closed by etcd")?;
                if resp.compact_revision() > 0 {
                    return Err(format!(
                        "history compacted at revision {}",
                        resp.compact_revision()
                    ));
                }
                if resp.canceled() {
                    return Err(format!("history watch canceled: {}", resp.cancel_reason()));
                }
                let mut done = false;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    if kv.mod_revision() > revision {
                        done = true;
                        continue;
                    }
                    done |= kv.mod_revision() == revision;
                    let put = matches!(ev.event_type(), EventType::Put);
                    events.push(Event {
                        revision: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        put,
                        value: kv.value().to_vec(),
                        create_rev: if put { kv.create_revision() } else { 0 },
                    });
                }
                // etcd never splits one revision's events over two watch responses.
                if done {
                    return Ok::<(), String>(());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| format!("reading history up to revision {revision} took over 60 s"))??;
        Ok(History { revision, events })
    }
}

// ---------------------------------------------------------------------------------------------
// A whole test setup
// ---------------------------------------------------------------------------------------------

/// One test's world: its own etcd, its own key prefix, its conductors, and their logs.
/// Field order is drop order: conductors die before etcd.
pub struct Fleet {
    conductors: BTreeMap<String, Proc>,
    /// Earlier incarnations (killed or stopped), kept for their logs.
    retired: Vec<Proc>,
    pub ferric: Ferric,
    pub etcd: Etcd,
    pub inspect: Inspect,
    pub prefix: String,
    started: Instant,
    notes: Mutex<Vec<String>>,
    dir: Option<TempDir>,
}

impl Fleet {
    pub async fn new(test: &str) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferric-{test}-"))
            .tempdir()
            .expect("create test tempdir");
        let etcd = Etcd::start();
        let prefix = unique_prefix(test);
        let inspect = match Inspect::connect(&etcd.url(), &prefix).await {
            Ok(i) => i,
            Err(e) => panic!("{e}\n{}", etcd.log_tail(30)),
        };
        Fleet {
            conductors: BTreeMap::new(),
            retired: Vec::new(),
            ferric: Ferric::new(&prefix, dir.path()),
            etcd,
            inspect,
            prefix,
            started: Instant::now(),
            notes: Mutex::new(Vec::new()),
            dir: Some(dir),
        }
    }

    pub fn url(&self) -> String {
        self.etcd.url()
    }

    /// Starts a conductor; its name must not be in use by a running one of this fleet.
    pub fn start_conductor(&mut self, name: &str, args: &[&str]) -> &Proc {
        if let Some(old) = self.conductors.remove(name) {
            if old.is_running() {
                let pid = old.pid();
                self.conductors.insert(name.to_string(), old);
                self.fail(&format!("conductor {name} is already running (pid {pid})"));
            }
            self.retired.push(old);
        }
        let proc = self.ferric.conductor(&self.etcd.url(), name, args);
        self.conductors.insert(name.to_string(), proc);
        &self.conductors[name]
    }

    /// Starts a conductor again with the arguments of its previous run (which must have exited).
    pub fn restart_conductor(&mut self, name: &str) -> &Proc {
        let args: Vec<String> = self.conductor(name).args().to_vec();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_conductor(name, &args)
    }

    pub fn conductor(&self, name: &str) -> &Proc {
        self.conductors
            .get(name)
            .unwrap_or_else(|| self.fail(&format!("no conductor named {name}")))
    }

    /// Names of conductors whose process is running.
    pub fn live(&self) -> Vec<String> {
        self.conductors
            .values()
            .filter(|p| p.is_running())
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Records (and prints) what the test does, with a UTC timestamp to compare with the logs.
    pub fn note(&self, msg: &str) {
        let line = format!("{} [{}] {msg}", utc_now(), self.prefix);
        println!("{line}");
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Tails of every log of this fleet.
    pub fn logs(&self) -> String {
        let lines = 60;
        let mut out = format!(
            "=== logs ({:.1} s into the test, prefix {}) ===\n",
            self.started.elapsed().as_secs_f64(),
            self.prefix
        );
        for p in self.retired.iter().chain(self.conductors.values()) {
            out.push_str(&p.log_tail(lines));
        }
        out.push_str(&self.etcd.log_tail(15));
        out.push_str("--- test notes:\n");
        for n in self.notes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str("    ");
            out.push_str(n);
            out.push('\n');
        }
        out
    }

    /// Panics with `msg` and the tails of all logs.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.logs())
    }

    /// `assert!` that prints all logs when it fails.
    pub fn ensure(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg());
        }
    }

    /// Polls `f` until it returns Ok (bounded by `timeout`), and returns its value. On timeout,
    /// panics with `what`, the last error of `f`, and all logs.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let last = match tokio::time::timeout(timeout, f()).await {
                Ok(Ok(v)) => return v,
                Ok(Err(e)) => e,
                Err(_) => format!("one check took over {timeout:?}"),
            };
            if start.elapsed() >= timeout {
                self.fail(&format!(
                    "timed out after {:.1} s waiting until {what}\nlast observation: {last}",
                    start.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    pub async fn ctl(&self, args: &[&str]) -> Output {
        match ctl_with_timeout(&self.url(), &self.prefix, args, CTL_TIMEOUT).await {
            Some(out) => out,
            None => self.fail(&format!(
                "`ferric ctl {}` did not finish within {CTL_TIMEOUT:?}",
                args.join(" ")
            )),
        }
    }

    /// Runs ctl and returns its stdout; fails the test if it does not exit 0.
    pub async fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        if !out.status.success() {
            self.fail(&format!(
                "`ferric ctl {}` failed: {}",
                args.join(" "),
                describe(&out)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctl node create --count N ...`: the uuids it printed.
    pub async fn create_nodes(&self, count: usize, extra: &[&str]) -> Vec<String> {
        let n = count.to_string();
        let mut args = vec!["node", "create", "--count", &n];
        args.extend_from_slice(extra);
        let out = self.ctl_ok(&args).await;
        let ids: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        self.ensure(ids.len() == count, || {
            format!(
                "ctl node create --count {count} printed {} lines, not {count}",
                ids.len()
            )
        });
        for id in &ids {
            self.ensure(id.parse::<uuid::Uuid>().is_ok(), || {
                format!("ctl node create printed {id:?}, not a uuid")
            });
        }
        ids
    }

    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        self.inspect.snapshot().await
    }

    /// Waits until every node is reserved by one of `live` with a consistent status.
    pub async fn wait_settled(&self, timeout: Duration, live: &[&str]) -> Snapshot {
        self.wait_until(
            timeout,
            &format!("every node is reserved by one of {live:?} with a matching status"),
            async || {
                let snap = self.snapshot().await?;
                snap.check_settled(live)?;
                Ok(snap)
            },
        )
        .await
    }

    pub async fn history(&self) -> History {
        match self.inspect.history().await {
            Ok(h) => h,
            Err(e) => self.fail(&e),
        }
    }

    /// Reads the whole history and fails on any status write by a non-holder or a stale fence.
    pub async fn check_fencing_history(&self) -> History {
        let history = self.history().await;
        let (violations, checked) = history.fencing_violations(&self.prefix);
        if !violations.is_empty() {
            let mut msg = format!(
                "{} of {checked} status writes violate fencing (history up to revision {}):",
                violations.len(),
                history.revision
            );
            for v in violations.iter().take(10) {
                msg.push_str("\n  ");
                msg.push_str(v);
            }
            self.fail(&msg);
        }
        self.note(&format!(
            "fencing history: {checked} status writes up to revision {}, all by the holder under its fence",
            history.revision
        ));
        history
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.conductors.values() {
            p.kill();
        }
        // Logs are kept when the test fails, or always with FERRIC_TEST_KEEP_LOGS=1.
        let keep = std::thread::panicking() || std::env::var_os("FERRIC_TEST_KEEP_LOGS").is_some();
        if keep {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("logs of {} kept in {}", self.prefix, kept.display());
            }
        }
    }
}
