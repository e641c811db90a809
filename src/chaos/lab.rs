//! The lab: test hosts as Linux network namespaces on one bridge, their addresses, the link
//! faults between them, the processes started in them, and the clean-up of all of it.
//!
//! Layout of run `fc<pid>` (pid of the creating, "outer" process):
//! - namespace `fc<pid>-sw` holds the bridge `fc<pid>br`;
//! - per host `i` a namespace `fc<pid>-<host>` with the veth `fc<pid>h<i>` (address
//!   `10.251.X.(10+i)/24`) whose peer `fc<pid>s<i>` is a port of the bridge;
//! - in the host's own namespace only `ip route add blackhole 10.251.X.0/24 metric <pid>`
//!   (nothing of the lab can leave the machine; the metric records the owner for the sweep).
//!
//! Faults are silent drops, as a real partition looks to a sender:
//! - `cut(a, [b])` gives `a` a permanent neighbour entry for each `b` (and each `b` one for `a`)
//!   pointing at a MAC address nobody has. Frames still leave, the bridge floods them, every host
//!   discards them as not addressed to it: no error for the sender, no ICMP, established TCP
//!   connections just stall and retransmit, and resume on `heal`. (The kernel here has no tc
//!   classifiers and no netem, and a blackhole route would fail local sends at once with EINVAL.)
//! - `link_down(h)` sets the host's bridge port to the `disabled` STP state: the bridge drops
//!   everything from and to it, while the host's own interface keeps its carrier.
//!
//! The outer process creates and destroys; the inner one (run in the driver host's namespace)
//! loads the description from `lab.json`, starts processes and injects faults. Only the creator
//! destroys (its `Drop` does too). Everything runs `ip`/`tc`/`bridge` synchronously; each call
//! takes a few milliseconds.

use crate::procs::Proc;
use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// All labs live in this /16; each run takes one /24 of it.
const SUPERNET: [u8; 2] = [10, 251];
/// A locally administered unicast MAC that no lab interface has: where `cut` sends frames.
const NOWHERE_MAC: &str = "02:fe:00:00:00:01";
/// Serialises subnet allocation between concurrent creators on this machine.
const ALLOC_LOCK: &str = "/run/ferric-chaos-lab.lock";

static CREATED: AtomicBool = AtomicBool::new(false);

/// The hosts of a lab, by name (lower-case letters and digits).
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabHost {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The host's interface, inside `ns`.
    pub veth: String,
    /// The bridge port of this host, inside the switch namespace.
    pub port: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Lab {
    pub run_id: String,
    pub creator_pid: u32,
    /// The lab's /24 (its network address).
    pub subnet: Ipv4Addr,
    pub switch_ns: String,
    pub bridge: String,
    pub hosts: Vec<LabHost>,
    pub dir: PathBuf,
    /// True only in the process that created the lab: it alone destroys.
    #[serde(skip)]
    owner: bool,
    #[serde(skip)]
    destroyed: bool,
}

/// Runs a command, returns its stdout; an error carries its stderr.
fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of all network namespaces (`ip netns list`).
fn netns_list() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The creator pid in a lab namespace's name `fc<pid>-<host>`.
fn ns_creator(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("fc")?;
    let (pid, host) = rest.split_once('-')?;
    if host.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Blackhole routes of labs in the host namespace: (subnet as `10.251.X.0/24`, owner pid).
fn lab_routes() -> Vec<(String, u32)> {
    let prefix = format!("{}.{}.", SUPERNET[0], SUPERNET[1]);
    run(&["ip", "-4", "route", "show", "type", "blackhole"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // "blackhole 10.251.7.0/24 metric 1234"
            let net = words.get(1)?;
            if !net.starts_with(&prefix) {
                return None;
            }
            let metric = words
                .iter()
                .position(|w| *w == "metric")
                .and_then(|p| words.get(p + 1))
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            Some((net.to_string(), metric))
        })
        .collect()
}

/// Whether `pid` is a running `ferric` process (a lab's creator still alive).
fn is_running_ferric(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "ferric")
        .unwrap_or(false)
}

/// Pids whose network namespace is `ns`.
fn ns_pids(ns: &str) -> Vec<i32> {
    run(&["ip", "netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in `ns` (SIGKILL, by pid), waits until none is left, deletes `ns`.
fn clear_ns(ns: &str, errors: &mut Vec<String>) {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = ns_pids(ns).into_iter().filter(|p| *p != me).collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            errors.push(format!("processes {pids:?} still in {ns} after SIGKILL"));
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(e) = run(&["ip", "netns", "del", ns]) {
        errors.push(format!("{e:#}"));
    }
}

/// Removes the namespaces and blackhole route of run `fc<pid>`.
fn clear_run(pid: u32, errors: &mut Vec<String>) {
    let prefix = format!("fc{pid}-");
    for ns in netns_list().iter().filter(|n| n.starts_with(&prefix)) {
        clear_ns(ns, errors);
    }
    for (net, owner) in lab_routes() {
        if owner == pid {
            let metric = pid.to_string();
            if let Err(e) = run(&["ip", "route", "del", "blackhole", &net, "metric", &metric]) {
                errors.push(format!("{e:#}"));
            }
        }
    }
}

impl Lab {
    /// Builds the lab for `spec` and writes its description to `dir/lab.json`. One lab per
    /// process (the run id is the pid). Leftovers of an earlier process with the same pid, and of
    /// dead creators (`sweep_stale`), are removed first.
    pub fn create(spec: &LabSpec, dir: &Path) -> anyhow::Result<Lab> {
        if spec.hosts.is_empty() || spec.hosts.len() > 200 {
            bail!("a lab needs 1 to 200 hosts");
        }
        for (i, h) in spec.hosts.iter().enumerate() {
            let ok = !h.is_empty()
                && h.len() <= 32
                && h != "sw"
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !ok {
                bail!("lab host name {h:?}: use lower-case letters and digits, not \"sw\"");
            }
            if spec.hosts[..i].contains(h) {
                bail!("lab host {h:?} named twice");
            }
        }
        if CREATED.swap(true, Ordering::SeqCst) {
            bail!("this process already created a lab (the run id is the pid)");
        }
        let pid = std::process::id();
        let run_id = format!("fc{pid}");
        for e in Lab::sweep_stale() {
            tracing::warn!(error = %e, "sweeping stale labs");
        }
        let mut errors = Vec::new();
        clear_run(pid, &mut errors);
        if !errors.is_empty() {
            bail!(
                "cannot clear leftovers of an earlier {run_id}: {}",
                errors.join("; ")
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let subnet = Self::allocate_subnet(pid)?;
        let o = subnet.octets();
        let hosts = spec
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| LabHost {
                name: h.clone(),
                ns: format!("{run_id}-{h}"),
                ip: Ipv4Addr::new(o[0], o[1], o[2], 10 + i as u8),
                veth: format!("{run_id}h{i}"),
                port: format!("{run_id}s{i}"),
            })
            .collect();
        // From here on, Drop removes whatever was built if a step fails.
        let lab = Lab {
            switch_ns: format!("{run_id}-sw"),
            bridge: format!("{run_id}br"),
            run_id,
            creator_pid: pid,
            subnet,
            hosts,
            dir: dir.to_path_buf(),
            owner: true,
            destroyed: false,
        };
        lab.build()?;
        let json = serde_json::to_vec_pretty(&lab)?;
        std::fs::write(lab.description_path(), json)?;
        Ok(lab)
    }

    /// Picks a free /24 of 10.251.0.0/16 (third octet from the pid) and adds its blackhole
    /// route, under a lock so two creators never pick the same one.
    fn allocate_subnet(pid: u32) -> anyhow::Result<Ipv4Addr> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ALLOC_LOCK)
            .with_context(|| format!("opening {ALLOC_LOCK}"))?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking the lab subnet allocation")?;
        let used_routes: Vec<String> = lab_routes().into_iter().map(|(n, _)| n).collect();
        let addrs = run(&["ip", "-4", "-o", "addr", "show"]).unwrap_or_default();
        let start = (pid % 254) as u8;
        for k in 0..254u8 {
            let x = 1 + start.wrapping_add(k) % 254;
            let net = format!("{}.{}.{x}.0/24", SUPERNET[0], SUPERNET[1]);
            let in_addrs = format!(" {}.{}.{x}.", SUPERNET[0], SUPERNET[1]);
            if used_routes.contains(&net) || addrs.contains(&in_addrs) {
                continue;
            }
            run(&[
                "ip",
                "route",
                "add",
                "blackhole",
                &net,
                "metric",
                &pid.to_string(),
            ])?;
            return Ok(Ipv4Addr::new(SUPERNET[0], SUPERNET[1], x, 0));
        }
        bail!("no free /24 left in 10.251.0.0/16")
    }

    fn build(&self) -> anyhow::Result<()> {
        for name in [&self.bridge]
            .into_iter()
            .chain(self.hosts.iter().flat_map(|h| [&h.veth, &h.port]))
        {
            if name.len() > 15 {
                bail!("interface name {name} is longer than 15 characters");
            }
        }
        let sw = self.switch_ns.as_str();
        run(&["ip", "netns", "add", sw])?;
        run(&["ip", "-n", sw, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "-n",
            sw,
            "link",
            "add",
            &self.bridge,
            "type",
            "bridge",
        ])?;
        run(&["ip", "-n", sw, "link", "set", &self.bridge, "up"])?;
        for h in &self.hosts {
            let ns = h.ns.as_str();
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            // Created directly in the two namespaces: the host's namespace never sees them.
            run(&[
                "ip", "link", "add", &h.veth, "netns", ns, "type", "veth", "peer", "name", &h.port,
                "netns", sw,
            ])?;
            run(&[
                "ip",
                "-n",
                sw,
                "link",
                "set",
                &h.port,
                "master",
                &self.bridge,
            ])?;
            run(&["ip", "-n", sw, "link", "set", &h.port, "up"])?;
            let cidr = format!("{}/24", h.ip);
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", &h.veth])?;
            run(&["ip", "-n", ns, "link", "set", &h.veth, "up"])?;
        }
        Ok(())
    }

    pub fn description_path(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    /// The description written by the creator (for the inner process). A loaded lab never
    /// destroys anything.
    pub fn load(path: &Path) -> anyhow::Result<Lab> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    fn host(&self, name: &str) -> &LabHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} in lab {}", self.run_id))
    }

    /// The host's address. Panics on a name not in the spec (a bug in the caller).
    pub fn ip(&self, host: &str) -> Ipv4Addr {
        self.host(host).ip
    }

    /// The host's namespace name. Panics on a name not in the spec.
    pub fn ns(&self, host: &str) -> &str {
        &self.host(host).ns
    }

    /// `ip netns exec <ns> <program>`: the caller adds arguments. `ip` execs the program, so a
    /// spawned child's pid is the program's.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(host)]).arg(program);
        cmd
    }

    /// Whether this process runs in `host`'s network namespace.
    pub fn is_inside(&self, host: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::metadata("/proc/self/ns/net");
        let theirs = std::fs::metadata(format!("/run/netns/{}", self.ns(host)));
        match (mine, theirs) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Runs `f` on a thread that has entered `host`'s network namespace: sockets it creates
    /// belong to that host (and stay there when the thread ends). For probes from a host that
    /// runs no process of ours; never use it for the host's own namespace.
    pub fn in_host<T: Send>(
        &self,
        host: &str,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {path}"))?;
                Ok(f()?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread in {path} panicked"))?
        })
    }

    /// Starts `program args` in `host`, stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        host: &str,
        name: &str,
        program: impl Into<PathBuf>,
        args: Vec<String>,
        log: PathBuf,
    ) -> anyhow::Result<LabProc> {
        let mut p = LabProc {
            host: host.to_string(),
            ns: self.ns(host).to_string(),
            name: name.to_string(),
            program: program.into(),
            args,
            log,
            proc: None,
        };
        p.start()?;
        Ok(p)
    }

    /// Silently drops all traffic between `a` and each of `peers`, both ways; `a`'s other links
    /// stay up. Idempotent.
    pub fn cut(&self, a: &str, peers: &[&str]) -> anyhow::Result<()> {
        for b in peers.iter().filter(|b| **b != a) {
            for (from, to) in [(self.host(a), self.host(b)), (self.host(b), self.host(a))] {
                run(&[
                    "ip",
                    "-n",
                    &from.ns,
                    "neigh",
                    "replace",
                    &to.ip.to_string(),
                    "lladdr",
                    NOWHERE_MAC,
                    "dev",
                    &from.veth,
                    "nud",
                    "permanent",
                ])?;
            }
        }
        Ok(())
    }

    /// Undoes `cut(a, peers)`. Idempotent.
    pub fn heal(&self, a: &str, peers: &[&str]) -> anyhow::Result<()> {
        for b in peers.iter().filter(|b| **b != a) {
            for (from, to) in [(self.host(a), self.host(b)), (self.host(b), self.host(a))] {
                let ip = to.ip.to_string();
                let show = run(&[
                    "ip",
                    "-n",
                    &from.ns,
                    "neigh",
                    "show",
                    &ip,
                    "dev",
                    &from.veth,
                    "nud",
                    "permanent",
                ])?;
                if !show.trim().is_empty() {
                    run(&["ip", "-n", &from.ns, "neigh", "del", &ip, "dev", &from.veth])?;
                }
            }
        }
        Ok(())
    }

    /// Whether traffic between `a` and `b` is cut (either direction).
    pub fn is_cut(&self, a: &str, b: &str) -> bool {
        [(self.host(a), self.host(b)), (self.host(b), self.host(a))]
            .iter()
            .any(|(from, to)| {
                run(&[
                    "ip",
                    "-n",
                    &from.ns,
                    "neigh",
                    "show",
                    &to.ip.to_string(),
                    "dev",
                    &from.veth,
                    "nud",
                    "permanent",
                ])
                .map(|s| s.contains(NOWHERE_MAC))
                .unwrap_or(false)
            })
    }

    /// Drops everything from and to `host` at its bridge port (its interface keeps its carrier).
    /// Idempotent.
    pub fn link_down(&self, host: &str) -> anyhow::Result<()> {
        self.port_state(host, "0")
    }

    /// Undoes `link_down`. Idempotent.
    pub fn link_up(&self, host: &str) -> anyhow::Result<()> {
        self.port_state(host, "3")
    }

    fn port_state(&self, host: &str, state: &str) -> anyhow::Result<()> {
        let port = &self.host(host).port;
        run(&[
            "bridge",
            "-n",
            &self.switch_ns,
            "link",
            "set",
            "dev",
            port,
            "state",
            state,
        ])?;
        Ok(())
    }

    /// Removes the lab: kills every process in its namespaces (by pid), deletes the namespaces
    /// (their veths go with them) and the blackhole route. Returns what could not be removed;
    /// never panics. Only the creator destroys; in any other process this does nothing.
    pub fn destroy(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.owner || self.destroyed {
            return errors;
        }
        self.destroyed = true;
        let pid = self.creator_pid;
        // Hosts first (their processes), then the switch, then whatever else carries the run id.
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.clone())
            .chain([self.switch_ns.clone()])
        {
            if netns_list().contains(&ns) {
                clear_ns(&ns, &mut errors);
            }
        }
        clear_run(pid, &mut errors);
        errors
    }

    /// Removes the labs whose creator is no longer a running `ferric` process (namespaces named
    /// `fc<pid>-*`, blackhole routes in 10.251.0.0/16 with metric `<pid>`). Returns the errors.
    pub fn sweep_stale() -> Vec<String> {
        let me = std::process::id();
        let mut pids: Vec<u32> = netns_list()
            .iter()
            .filter_map(|n| ns_creator(n))
            .chain(lab_routes().into_iter().map(|(_, p)| p))
            .filter(|p| *p != me && *p != 0 && !is_running_ferric(*p))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        let mut errors = Vec::new();
        for pid in pids {
            tracing::info!(run = %format!("fc{pid}"), "removing a stale lab");
            clear_run(pid, &mut errors);
        }
        errors
    }

    /// What of run `run_id` (`fc<pid>`) still exists: namespaces, interfaces named after it in
    /// the host's namespace, blackhole routes. Empty once it is gone.
    pub fn leftovers(run_id: &str) -> Vec<String> {
        let mut left = Vec::new();
        let Some(pid) = run_id
            .strip_prefix("fc")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            return vec![format!("{run_id:?} is not a run id")];
        };
        let prefix = format!("{run_id}-");
        for ns in netns_list().into_iter().filter(|n| n.starts_with(&prefix)) {
            left.push(format!("namespace {ns}"));
        }
        let links = run(&["ip", "-o", "link", "show"]).unwrap_or_default();
        for l in links.lines() {
            if let Some(name) = l.split_whitespace().nth(1) {
                let name = name.trim_end_matches(':');
                let name = name.split('@').next().unwrap_or(name);
                if name.starts_with(run_id)
                    && name[run_id.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_ascii_digit())
                {
                    left.push(format!("interface {name}"));
                }
            }
        }
        for (net, owner) in lab_routes() {
            if owner == pid {
                left.push(format!("route blackhole {net} metric {pid}"));
            }
        }
        left
    }

    pub fn exists(run_id: &str) -> bool {
        !Lab::leftovers(run_id).is_empty()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in self.destroy() {
            tracing::error!(run = %self.run_id, error = %e, "lab clean-up");
        }
    }
}

/// Spawns `cmd` on a thread that lives as long as the process. The parent-death signal of
/// `die_with_parent` fires when the spawning *thread* exits, and tokio's blocking-pool threads
/// (where a task may find itself after `block_in_place`) exit when idle: a member spawned there
/// would get SIGTERM in the middle of a run.
pub(crate) fn spawn_lasting(cmd: Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // Never exits: the sender lives in this static.
        let _ = std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("lab spawner poisoned"))?
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("lab spawner gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("lab spawner gone"))?
}

/// A process started in a lab host: remembers its host, program and arguments so it can be
/// restarted the same way (arguments may be changed in between), logs to a file (appended
/// across restarts), is signalled by pid and stopped when dropped.
pub struct LabProc {
    pub host: String,
    pub ns: String,
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    proc: Option<Proc>,
}

impl LabProc {
    fn start(&mut self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(
            out,
            "--- ferric chaos: starting {} {:?}",
            self.name, self.args
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        crate::sys::die_with_parent(&mut cmd);
        let child = spawn_lasting(cmd)
            .with_context(|| format!("starting {} in {}", self.name, self.host))?;
        self.proc = Some(Proc {
            name: self.name.clone(),
            child,
            log: self.log.clone(),
        });
        Ok(())
    }

    /// The program's pid (`ip netns exec` execs it), while it has one.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.pid())
    }

    /// Whether the process is alive (not exited; a stopped process is alive).
    pub fn is_running(&mut self) -> bool {
        match self.proc.as_mut() {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `sig` by pid if the process is alive; false otherwise.
    pub fn signal(&mut self, sig: Signal) -> bool {
        if !self.is_running() {
            return false;
        }
        self.proc
            .as_ref()
            .is_some_and(|p| kill(Pid::from_raw(p.pid() as i32), sig).is_ok())
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            let _ = kill(Pid::from_raw(p.pid() as i32), Signal::SIGKILL);
            let _ = p.child.wait();
        }
    }

    pub fn pause(&mut self) -> bool {
        self.signal(Signal::SIGSTOP)
    }

    pub fn resume(&mut self) -> bool {
        self.signal(Signal::SIGCONT)
    }

    /// SIGTERM (after SIGCONT, so a paused process can act on it), SIGKILL after `grace`.
    /// True if it exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(p) = self.proc.as_mut() else {
            return true;
        };
        if let Ok(Some(_)) = p.child.try_wait() {
            return true;
        }
        p.signal(Signal::SIGCONT);
        p.signal(Signal::SIGTERM);
        if p.wait_for_exit(grace) {
            return true;
        }
        p.signal(Signal::SIGKILL);
        let _ = p.child.wait();
        false
    }

    /// Stops it if alive (SIGTERM, 10 s grace) and starts it again with `args` as they are now.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop(Duration::from_secs(10));
        self.start()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LabProc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        // Proc's own Drop then finds it exited.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_from_namespace_name() {
        assert_eq!(ns_creator("fc1234-e1"), Some(1234));
        assert_eq!(ns_creator("fc1234-sw"), Some(1234));
        assert_eq!(ns_creator("fc-e1"), None);
        assert_eq!(ns_creator("fc12x-e1"), None);
        assert_eq!(ns_creator("fc12-"), None);
        assert_eq!(ns_creator("other"), None);
    }
}
