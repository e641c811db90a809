//! Whole test setups: the real `ferric` binary in separate processes (conductors, `ctl`, the
//! gateway, the Redfish simulator) around one throwaway etcd and one key prefix, with every
//! wait bounded and every failure printed with the tails of all logs.

use crate::etcd::Etcd;
use crate::http::http;
use crate::inspect::{History, Inspect, Snapshot};
use crate::ports::{free_port, unique_prefix};
use crate::process::Proc;
use crate::utc_now;
use ferric_model::{decode, NodeHistory, NodeSpec, NodeStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `ferric` binary under test: `$FERRIC_BIN`, or the one cargo built next to the running
/// test binary (`target/<profile>/deps/<test>` → `target/<profile>/ferric`); cargo builds it
/// for the root package's integration tests.
pub fn ferric_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FERRIC_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("the test binary's directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("the target directory")
    } else {
        dir
    };
    let bin = dir.join("ferric");
    assert!(
        bin.exists(),
        "no ferric binary at {} (set FERRIC_BIN, or run the root package's tests)",
        bin.display()
    );
    bin
}

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
        if !args.contains(&"--runtime-dir") {
            // Private to this fleet: a conductor sweeps the console processes recorded in its
            // runtime directory at start, and the default (`/tmp/ferric-<name>`) is shared by
            // every test's conductor of the same name, in other test binaries too.
            all.push("--runtime-dir".into());
            all.push(
                self.log_dir
                    .join(format!("run-{name}"))
                    .display()
                    .to_string(),
            );
        }
        let log = self.log_dir.join(format!("{name}.{n}.log"));
        let mut proc = Proc::spawn(name, ferric_bin(), &all, log);
        // Keep only the extra args, so that a restart can pass them again.
        proc.keep_args(args);
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
    let mut cmd = tokio::process::Command::new(ferric_bin());
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

    /// Runs ctl expecting a refusal: exit 1 with `needle` in its stderr, which it returns.
    pub async fn ctl_refused(&self, args: &[&str], needle: &str) -> String {
        let out = self.ctl(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        self.ensure(
            out.status.code() == Some(1) && stderr.contains(needle),
            || {
                format!(
                    "`ferric ctl {}` was not refused with {needle:?}: {}",
                    args.join(" "),
                    describe(&out)
                )
            },
        );
        stderr
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

    /// The node's status as etcd holds it, or why there is none (for [`Fleet::wait_until`]).
    pub async fn status(&self, id: &str) -> Result<NodeStatus, String> {
        self.snapshot().await?.status_ok(id)
    }

    /// The node's spec as etcd holds it; fails the test if there is none.
    pub async fn spec(&self, id: &str) -> NodeSpec {
        match self.snapshot().await.map(|s| s.spec(id)) {
            Ok(Some(Ok(s))) => s,
            other => self.fail(&format!("spec of {id}: {other:?}")),
        }
    }

    /// The node's history as etcd holds it (one key per entry).
    pub async fn node_history(&self, id: &str) -> NodeHistory {
        let (_, kvs) = match self
            .inspect
            .get_prefix(&format!("{}history/{id}/", self.prefix))
            .await
        {
            Ok(r) => r,
            Err(e) => self.fail(&e),
        };
        NodeHistory {
            entries: kvs
                .iter()
                .map(|kv| decode(&kv.value).expect("history entry"))
                .collect(),
        }
    }

    /// The node's last finished power request (0: none yet).
    pub async fn power_seq_done(&self, id: &str) -> u64 {
        self.status(id).await.map(|s| s.power_seq_done).unwrap_or(0)
    }

    /// Waits until the node's status passes `check` (Err: what is still missing); its status
    /// then.
    pub async fn wait_status(
        &self,
        id: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&NodeStatus) -> Result<(), String>,
    ) -> NodeStatus {
        self.wait_until(within, what, async || {
            let s = self.status(id).await?;
            check(&s).map(|()| s)
        })
        .await
    }

    /// Waits until the owner has finished power request `seq` of `id`; its status then.
    pub async fn wait_power_done(&self, id: &str, seq: u64, within: Duration) -> NodeStatus {
        let what = format!("power request {seq} of {id} is done");
        self.wait_status(id, within, &what, |s| {
            if s.power_seq_done >= seq {
                Ok(())
            } else {
                Err(format!(
                    "done {} < {seq}; power {:?} op {:?} last_error {:?}",
                    s.power_seq_done, s.power_state, s.power_op, s.last_error
                ))
            }
        })
        .await
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
                "{} violations of fencing in {checked} status writes and every reservation (history up to revision {}):",
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
            "fencing history: no reservation changed hands without a delete, and {checked} status writes up to revision {} were all by the holder under its fence",
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

/// A `ferric sim` process: Redfish BMCs (`sim-<n>`), its control API and its command log (the
/// independent record of what conductors sent to each BMC).
pub struct Sim {
    pub proc: Proc,
    pub url: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

impl Sim {
    /// Starts `ferric sim` with `systems` BMCs on a free port and waits (bounded) until it answers.
    pub async fn start(dir: &Path, systems: usize, extra: &[&str]) -> Sim {
        let port = free_port();
        let log = dir.join("sim-commands.jsonl");
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--systems".into(),
            systems.to_string(),
            "--log".into(),
            log.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn("sim", ferric_bin(), &args, dir.join("sim.log"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{url}/sim/healthz")).send().await.is_ok() {
                return Sim {
                    proc,
                    url,
                    log,
                    http,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ferric sim did not start:\n{}", proc.log_tail(20));
    }

    /// Ironic `driver_info` for BMC `system`.
    pub fn driver_info(&self, system: usize, password: &str) -> String {
        json!({
            "redfish_address": self.url,
            "redfish_system_id": format!("/redfish/v1/Systems/sim-{system}"),
            "redfish_username": "admin",
            "redfish_password": password,
        })
        .to_string()
    }

    /// Sets how BMC `system` behaves (the simulator's control API).
    pub async fn behaviour(&self, system: usize, b: Value) {
        let r = self
            .http
            .put(format!("{}/sim/systems/sim-{system}/behaviour", self.url))
            .json(&b)
            .send()
            .await
            .expect("sim control API");
        assert!(r.status().is_success(), "sim behaviour {b}: {}", r.status());
    }

    /// System `system` as the simulator's control API shows it.
    pub async fn system(&self, system: usize) -> Value {
        let url = format!("{}/sim/systems/sim-{system}", self.url);
        crate::http::get_json(&self.http, &url, "the sim control API").await
    }

    /// The machine's power as the simulator holds it.
    pub async fn power(&self, system: usize) -> String {
        let v = self.system(system).await;
        v["power"]
            .as_str()
            .or(v["PowerState"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    /// Runs an agent in system `system`'s ramdisk (the simulator's control API).
    pub async fn agent(&self, system: usize, agent: &Value) {
        let r = self
            .http
            .put(format!("{}/sim/systems/sim-{system}/agent", self.url))
            .json(agent)
            .send()
            .await
            .expect("sim control API");
        assert!(r.status().is_success(), "sim agent: {}", r.status());
    }

    /// The command log as the simulator wrote it to its file.
    pub fn commands(&self, system: usize) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let sys = format!("sim-{system}");
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["system"] == sys.as_str())
            .collect()
    }
}

/// A running `ferric gateway` of a fleet.
pub struct Gateway {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
}

impl Gateway {
    /// Starts a gateway of `fleet` with extra arguments and waits (bounded) for `/healthz`.
    pub fn start(fleet: &Fleet, dir: &Path, name: &str, extra: &[&str]) -> Gateway {
        Gateway::start_at(&fleet.url(), &fleet.prefix, dir, name, free_port(), extra)
    }

    /// Starts a gateway on `port` (a restart on the port of one that died) for the cluster at
    /// `etcd` under `prefix`, and waits (bounded) for `/healthz`.
    pub fn start_at(
        etcd: &str,
        prefix: &str,
        dir: &Path,
        name: &str,
        port: u16,
        extra: &[&str],
    ) -> Gateway {
        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--etcd".into(),
            etcd.into(),
            "--prefix".into(),
            prefix.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--name".into(),
            name.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(name, ferric_bin(), &args, dir.join(format!("{name}.log")));
        let gw = Gateway {
            proc,
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(port, "GET", "/healthz", &[], None) {
                if r.status == 200 {
                    return gw;
                }
            }
            if !gw.proc.is_running() || Instant::now() > deadline {
                panic!(
                    "gateway {name} did not become healthy\n{}",
                    gw.proc.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
