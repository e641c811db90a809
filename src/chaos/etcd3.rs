//! The 3-member etcd cluster of a chaos run, one member per lab host: start, leader, kill, stop,
//! restart, and a slow disk (fsyncs delayed by strace fault injection).
//!
//! Runs in the inner process (inside a lab namespace), which talks to the members directly.
//! Members listen on `http://<host ip>:2379` (clients) and `:2380` (peers): free inside a fresh
//! namespace. Timing defaults to heartbeat 100 ms, election timeout 1000 ms (a loaded 2-core
//! machine must not cause spurious elections); etcd 3.4 then raises any lease TTL under 1.5 s to
//! 1.5 s (REFERENCE.md).

use super::lab::{Lab, LabProc};
use anyhow::{bail, Context};
use etcd_client::{Client, ConnectOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Raft timing of the members.
#[derive(Debug, Clone, Copy)]
pub struct EtcdTiming {
    pub heartbeat: Duration,
    pub election: Duration,
}

impl Default for EtcdTiming {
    fn default() -> Self {
        EtcdTiming {
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
        }
    }
}

struct Member {
    host: String,
    client_url: String,
    /// Raft member id, learned at start (stable across restarts: same data dir).
    id: u64,
    proc: LabProc,
}

pub struct Etcd3 {
    members: Vec<Member>,
}

/// What `slow_disk` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlowDiskReport {
    /// fsync/fdatasync calls strace saw (each delayed).
    pub syncs_delayed: usize,
    /// strace exited on SIGINT (true) or needed SIGTERM (false).
    pub detached_on_sigint: bool,
    /// After strace exited, etcd is alive and no longer traced.
    pub etcd_untraced_after: bool,
}

fn client_opts(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
}

/// (member id, leader id) as member `url` sees them.
async fn status(url: &str, timeout: Duration) -> Option<(u64, u64)> {
    let fut = async {
        let mut c = Client::connect([url], Some(client_opts(timeout)))
            .await
            .ok()?;
        let s = c.status().await.ok()?;
        Some((s.header()?.member_id(), s.leader()))
    };
    tokio::time::timeout(timeout * 2, fut).await.ok().flatten()
}

impl Etcd3 {
    /// Starts one member on each of `hosts` (data in `dir/<host>.etcd`, logs in
    /// `dir/etcd-<host>.log`) and waits up to 30 s until the cluster has a leader and takes a
    /// write.
    pub async fn start(
        lab: &Lab,
        hosts: &[&str],
        dir: &Path,
        timing: EtcdTiming,
    ) -> anyhow::Result<Etcd3> {
        std::fs::create_dir_all(dir)?;
        let token = format!(
            "{}-{}",
            lab.run_id,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let initial: Vec<String> = hosts
            .iter()
            .map(|h| format!("{h}=http://{}:2380", lab.ip(h)))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for h in hosts {
            let ip = lab.ip(h);
            let client_url = format!("http://{ip}:2379");
            let peer_url = format!("http://{ip}:2380");
            let data: PathBuf = dir.join(format!("{h}.etcd"));
            let args: Vec<String> = [
                "--name",
                h,
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--heartbeat-interval",
                &timing.heartbeat.as_millis().to_string(),
                "--election-timeout",
                &timing.election.as_millis().to_string(),
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let proc = lab.spawn(
                h,
                &format!("etcd-{h}"),
                "etcd",
                args,
                dir.join(format!("etcd-{h}.log")),
            )?;
            members.push(Member {
                host: h.to_string(),
                client_url,
                id: 0,
                proc,
            });
        }
        let mut etcd = Etcd3 { members };
        if etcd.wait_leader(Duration::from_secs(30)).await.is_none() {
            bail!(
                "etcd cluster has no leader after 30 s\n{}",
                etcd.log_tails(15)
            );
        }
        for i in 0..etcd.members.len() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some((id, _)) =
                    status(&etcd.members[i].client_url, Duration::from_secs(1)).await
                {
                    etcd.members[i].id = id;
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "etcd member {} does not answer status\n{}",
                        etcd.members[i].host,
                        etcd.log_tails(15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(etcd)
    }

    fn log_tails(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.proc.log.display(), m.proc.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    #[allow(dead_code)] // clippy's len_without_is_empty
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All client URLs. `ferric conductor/gateway --etcd` takes them comma separated
    /// (`endpoints().join(",")`, split by `EtcdConfig::new`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn host(&self, i: usize) -> &str {
        &self.members[i].host
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].proc.pid()
    }

    /// Member `i`'s own answer to status: (its member id, the leader id it knows; 0 if none).
    pub async fn member_status(&self, i: usize) -> Option<(u64, u64)> {
        status(&self.members[i].client_url, Duration::from_secs(1)).await
    }

    /// The index of the leader: the member that the majority of the answering members name,
    /// provided it answers too. None while there is none (or it cannot be told).
    pub async fn leader(&mut self) -> Option<usize> {
        let mut answers = Vec::new();
        for i in 0..self.members.len() {
            if !self.members[i].proc.is_running() {
                continue;
            }
            if let Some((id, leader)) = self.member_status(i).await {
                answers.push((i, id, leader));
            }
        }
        let n = answers.len();
        for &(i, id, _) in &answers {
            let votes = answers.iter().filter(|(_, _, l)| *l == id).count();
            if votes * 2 > n {
                return Some(i);
            }
        }
        None
    }

    /// Polls `leader()` every 100 ms for up to `timeout`.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].proc.is_running()
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].proc.kill();
    }

    /// SIGSTOP / SIGCONT member `i` (a hung member).
    pub fn pause(&mut self, i: usize) -> bool {
        self.members[i].proc.pause()
    }

    pub fn resume(&mut self, i: usize) -> bool {
        self.members[i].proc.resume()
    }

    /// SIGTERM member `i` and wait (10 s, then SIGKILL); true if it exited on SIGTERM.
    pub fn stop(&mut self, i: usize) -> bool {
        self.members[i].proc.stop(Duration::from_secs(10))
    }

    /// Starts member `i` again (stopping it first if alive) on its data dir, with
    /// `--initial-cluster-state existing`.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let p = &mut self.members[i].proc;
        if let Some(pos) = p.args.iter().position(|a| a == "--initial-cluster-state") {
            p.args[pos + 1] = "existing".into();
        }
        p.restart()
    }

    /// Waits until a leader exists and a write succeeds (a put under `chaos-probe/`, through the
    /// running members); returns how long that took, None after `timeout`.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut n = 0u64;
        while Instant::now() < deadline {
            let mut live = Vec::new();
            for m in self.members.iter_mut() {
                if m.proc.is_running() {
                    live.push(m.client_url.clone());
                }
            }
            for url in live {
                n += 1;
                if self.probe_put(&url, n).await.is_ok() {
                    return Some(start.elapsed());
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// One put under `chaos-probe/` through member `url`.
    async fn probe_put(&self, url: &str, n: u64) -> anyhow::Result<()> {
        let t = Duration::from_millis(500);
        let fut = async {
            let mut c = Client::connect([url], Some(client_opts(t))).await?;
            c.put(
                format!("chaos-probe/{}", std::process::id()),
                n.to_string(),
                None,
            )
            .await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(t * 2, fut)
            .await
            .context("put timed out")?
    }

    /// Delays every fsync/fdatasync of member `i` by `delay` for `duration`, with
    /// `strace -f -p <pid> -e inject=...:delay_enter=<us>`; then stops strace with SIGINT (SIGTERM
    /// if it has not exited 10 s later; never SIGKILL, which could leave etcd's threads stopped)
    /// and checks that etcd runs on, untraced.
    pub async fn slow_disk(
        &mut self,
        i: usize,
        delay: Duration,
        duration: Duration,
    ) -> anyhow::Result<SlowDiskReport> {
        let m = &mut self.members[i];
        if !m.proc.is_running() {
            bail!("etcd member {} is not running", m.host);
        }
        let pid = m.proc.pid().context("no pid")?;
        let us = delay.as_micros();
        let dir = m
            .proc
            .log
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let trace_log = dir.join(format!("strace-{}.log", m.host));
        let _ = std::fs::remove_file(&trace_log);
        let mut cmd = Command::new("strace");
        cmd.args(["-qq", "-f", "-o"])
            .arg(&trace_log)
            .args(["-p", &pid.to_string()])
            .args(["-e", "trace=fdatasync,fsync"])
            .arg("-e")
            .arg(format!("inject=fdatasync:delay_enter={us}"))
            .arg("-e")
            .arg(format!("inject=fsync:delay_enter={us}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SIGTERM when this process dies: strace then detaches cleanly.
        crate::sys::die_with_parent(&mut cmd);
        let mut strace = super::lab::spawn_lasting(cmd).context("starting strace")?;
        tokio::time::sleep(duration).await;
        let spid = Pid::from_raw(strace.id() as i32);
        let _ = kill(spid, Signal::SIGINT);
        let mut detached_on_sigint = true;
        let mut exited = wait_child(&mut strace, Duration::from_secs(10)).await;
        if !exited {
            detached_on_sigint = false;
            let _ = kill(spid, Signal::SIGTERM);
            exited = wait_child(&mut strace, Duration::from_secs(10)).await;
        }
        if !exited {
            bail!("strace (pid {spid}) did not exit on SIGINT nor SIGTERM; left attached to etcd {pid}");
        }
        let syncs_delayed = std::fs::read_to_string(&trace_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("sync("))
            .count();
        let etcd_untraced_after = m.proc.is_running() && tracer_pid(pid) == Some(0);
        Ok(SlowDiskReport {
            syncs_delayed,
            detached_on_sigint,
            etcd_untraced_after,
        })
    }
}

async fn wait_child(child: &mut std::process::Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TracerPid of every thread of `pid`: Some(0) when none is traced.
fn tracer_pid(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut max = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).ok()?;
        let tp: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))?
            .trim()
            .parse()
            .ok()?;
        max = max.max(tp);
    }
    Some(max)
}
