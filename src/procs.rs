//! Child processes of `ferric dev` and `ferric bench`: a throwaway etcd and conductors. Every
//! child runs in its own process group, dies with this process (parent-death signal), and is
//! stopped by pid when its handle is dropped.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port (never 2379/2380, which a system etcd may want), for a child to
/// listen on.
///
/// Taken from below the kernel's ephemeral range when there is room, and checked free by
/// binding it. A port the kernel picks (bind to port 0) comes from the ephemeral range, where
/// every outgoing connection of the processes started meanwhile also takes its local port:
/// a million-node bench lost a conductor so ("Address already in use" on its metrics port,
/// which a sibling's connection to etcd had been given between the pick and the bind).
pub fn free_port() -> anyhow::Result<u16> {
    /// Ports this process handed out: two children started one after the other never get
    /// the same one before the first has bound it.
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FLOOR: u16 = 10_000;
    if low > FLOOR + 1_000 {
        let span = u64::from(low - FLOOR);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        for _ in 0..1000 {
            // xorshift: enough spread for picking ports.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = FLOOR + (seed % span) as u16;
            if port != 2379
                && port != 2380
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
                && HANDED_OUT
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(port)
            {
                return Ok(port);
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 2379 && port != 2380 {
            return Ok(port);
        }
    }
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if !self.wait_for_exit(grace) {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

pub(crate) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::sys::die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    Ok(Proc {
        name: name.to_string(),
        child,
        log,
    })
}

/// A throwaway single-member etcd on free loopback ports, data in `dir`.
pub struct Etcd {
    pub proc: Proc,
    pub url: String,
}

impl Etcd {
    pub async fn start(dir: &Path) -> anyhow::Result<Etcd> {
        Etcd::start_with(dir, &[]).await
    }

    /// [`Etcd::start`] with more flags (`ferric bench cold` tunes etcd for a million nodes).
    pub async fn start_with(dir: &Path, extra: &[&str]) -> anyhow::Result<Etcd> {
        let client = free_port()?;
        let peer = free_port()?;
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            "ferric-dev",
            "--data-dir",
            &dir.join("etcd-data").to_string_lossy(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("ferric-dev={peer_url}"),
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
            "--quota-backend-bytes",
            "8589934592",
        ])
        .args(extra);
        let proc = spawn("etcd", cmd, dir.join("etcd.log"))
            .context("is etcd installed? (apt-get install etcd-server)")?;
        let etcd = Etcd { proc, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cfg = ferric_cluster::EtcdConfig::new(&etcd.url);
            if ferric_cluster::Cluster::connect(&cfg).await.is_ok() {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                anyhow::bail!("etcd did not become ready; see {}", etcd.proc.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `ferric conductor` (this same executable) as a child.
pub fn conductor(
    dir: &Path,
    etcd: &str,
    prefix: &str,
    name: &str,
    ttl: f64,
    extra: &[String],
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "conductor",
        "--etcd",
        etcd,
        "--prefix",
        prefix,
        "--name",
        name,
    ])
    .arg("--lease-ttl")
    .arg(ttl.to_string())
    // Private to this cluster: a conductor sweeps the consoles recorded in its runtime
    // directory at start, and two local clusters must not sweep each other's.
    .arg("--runtime-dir")
    .arg(dir.join(format!("run-{name}")))
    .args(extra);
    spawn(name, cmd, dir.join(format!("{name}.log")))
}

/// Starts `ferric gateway` (this same executable) as a child on `listen`, without auth (it
/// listens on loopback only).
pub fn gateway(
    dir: &Path,
    etcd: &str,
    prefix: &str,
    name: &str,
    listen: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "gateway", "--etcd", etcd, "--prefix", prefix, "--listen", listen, "--name", name,
    ])
    .args(extra);
    spawn(name, cmd, dir.join(format!("{name}.log")))
}

/// Starts `ferric sim` (this same executable) with `systems` simulated BMCs on a free loopback
/// port, logging every command to `dir/sim-commands.jsonl`; returns it and its base URL.
pub async fn sim(dir: &Path, systems: usize, extra: &[String]) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--systems")
        .arg(systems.to_string())
        .arg("--log")
        .arg(dir.join("sim-commands.jsonl"))
        .args(extra);
    let proc = spawn("sim", cmd, dir.join("sim.log"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((proc, url));
        }
        if Instant::now() > deadline {
            anyhow::bail!("ferric sim did not start; see {}", proc.log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// driver_info of a `redfish` node pointing at system `index` of a `ferric sim` at `url`.
pub fn sim_driver_info(url: &str, index: usize) -> String {
    serde_json::json!({
        "redfish_address": url,
        "redfish_system_id": format!("/redfish/v1/Systems/sim-{index}"),
        "redfish_username": "admin",
        "redfish_password": "password",
    })
    .to_string()
}
