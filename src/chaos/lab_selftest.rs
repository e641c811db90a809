//! `ferric chaos-lab-selftest` (hidden): proves the lab and the etcd cluster work on this
//! machine. The outer part builds a lab (drv, e1..e3, c1), runs the inner part in drv's
//! namespace, destroys the lab and prints one JSON summary on stdout (with what of the run is
//! left, which must be nothing). The inner part starts etcd on e1..e3, kills the leader and times
//! the re-election, stops and restarts a member, cuts c1 from e1..e3 (its TCP must stall
//! silently while its link to drv works), takes c1's whole link down, and slows the leader's
//! disk. Nothing is ever sent from the host's namespace to a lab address.

use super::etcd3::{Etcd3, EtcdTiming};
use super::lab::{Lab, LabSpec};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the lab description, logs and etcd data.
    #[arg(long)]
    pub dir: PathBuf,
    /// Internal: run the inner part with this lab description.
    #[arg(long, hide = true)]
    pub inner: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.inner {
        Some(lab) => {
            let summary = inner(&lab, &args.dir).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        None => outer(&args.dir).await,
    }
}

async fn outer(dir: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut lab = Lab::create(
        &LabSpec {
            hosts: ["drv", "e1", "e2", "e3", "c1"].map(String::from).to_vec(),
        },
        dir,
    )?;
    eprintln!("lab {} on {}/24", lab.run_id, lab.subnet);
    let inner_log = std::fs::File::create(dir.join("inner.log"))?;
    let mut cmd = lab.command("drv", std::env::current_exe()?);
    cmd.arg("chaos-lab-selftest")
        .arg("--dir")
        .arg(dir)
        .arg("--inner")
        .arg(lab.description_path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(inner_log);
    crate::sys::die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().context("starting the inner part")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let outcome = tokio::select! {
        out = child.wait_with_output() => out.map_err(anyhow::Error::from),
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
        _ = tokio::time::sleep(Duration::from_secs(150)) => Err(anyhow::anyhow!("inner part timed out")),
    };
    // The inner part (if still running) dies with the lab: destroy kills every process in it.
    let destroy_errors = lab.destroy();
    let leftovers = Lab::leftovers(&lab.run_id);
    let (inner_ok, inner) = match &outcome {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let parsed: Value = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or(Value::Null);
            (out.status.success(), parsed)
        }
        Err(_) => (false, Value::Null),
    };
    let summary = json!({
        "run_id": lab.run_id,
        "inner_ok": inner_ok,
        "inner_error": outcome.as_ref().err().map(|e| format!("{e:#}")),
        "inner": inner,
        "destroy_errors": destroy_errors,
        "leftovers": leftovers,
        "exists_after": Lab::exists(&lab.run_id),
    });
    println!("{}", serde_json::to_string(&summary)?);
    if !inner_ok {
        bail!(
            "the inner part failed; see {}",
            dir.join("inner.log").display()
        );
    }
    if !destroy_errors.is_empty() || !leftovers.is_empty() {
        bail!("lab clean-up incomplete: {destroy_errors:?} {leftovers:?}");
    }
    Ok(())
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: etcd\r\n\r\n";

/// Reads what arrives within `timeout`: Ok(bytes) or the error kind (TimedOut/WouldBlock =
/// nothing came).
fn read_some(s: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, ErrorKind> {
    s.set_read_timeout(Some(timeout)).map_err(|e| e.kind())?;
    let mut buf = vec![0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(e) => Err(e.kind()),
    }
}

fn stalled(r: &Result<Vec<u8>, ErrorKind>) -> bool {
    matches!(r, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

async fn inner(lab_path: &Path, dir: &Path) -> anyhow::Result<Value> {
    let lab = Lab::load(lab_path)?;
    if !lab.is_inside("drv") {
        bail!("the inner part must run in {}", lab.ns("drv"));
    }
    let t0 = Instant::now();
    let mut etcd = Etcd3::start(&lab, &["e1", "e2", "e3"], dir, EtcdTiming::default()).await?;
    let start_ms = t0.elapsed().as_millis();
    let comms: Vec<String> = (0..etcd.len())
        .map(|i| {
            etcd.pid(i)
                .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();

    // A write and a read through all three endpoints.
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    client.put("chaos-selftest/hello", "world", None).await?;
    let got = client.get("chaos-selftest/hello", None).await?;
    let read_back = got.kvs().first().map(|kv| kv.value().to_vec()) == Some(b"world".to_vec());
    drop(client);

    // Kill the leader; time until a new one takes a write.
    let old = etcd
        .wait_for_leader(Duration::from_secs(10))
        .await
        .context("no leader")?;
    etcd.kill(old);
    let reelect = etcd
        .wait_leader(Duration::from_secs(20))
        .await
        .context("no new leader after killing the old one")?;
    let new_leader = etcd.wait_for_leader(Duration::from_secs(10)).await;
    etcd.restart(old)?;
    let rejoin_killed = rejoin(&mut etcd, old).await;

    // Stop (SIGTERM) a follower and restart it.
    let leader_now = etcd
        .wait_for_leader(Duration::from_secs(10))
        .await
        .context("no leader")?;
    let follower = (0..etcd.len()).find(|i| *i != leader_now).unwrap_or(0);
    let stopped_on_sigterm = etcd.stop(follower);
    let running_after_stop = etcd.is_running(follower);
    etcd.restart(follower)?;
    let rejoin_stopped = rejoin(&mut etcd, follower).await;

    // Pause (SIGSTOP) a follower: the other two still take writes; resumed, it catches up.
    let leader_now = etcd
        .wait_for_leader(Duration::from_secs(10))
        .await
        .context("no leader")?;
    let paused = (0..etcd.len()).find(|i| *i != leader_now).unwrap_or(0);
    let pause_sent = etcd.pause(paused);
    let write_while_paused = etcd.wait_leader(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resume_sent = etcd.resume(paused);
    let rejoin_paused = rejoin(&mut etcd, paused).await;

    let cut = tokio::task::block_in_place(|| cut_test(&lab, &etcd))?;
    let write_after_heal = etcd.wait_leader(Duration::from_secs(10)).await;

    // Slow disk on the leader: puts slow down while strace delays its fsyncs, and recover.
    let l = etcd
        .wait_for_leader(Duration::from_secs(10))
        .await
        .context("no leader before slow disk")?;
    let endpoints = etcd.endpoints();
    let before = put_latencies(&endpoints, Duration::from_millis(800)).await?;
    let delay = Duration::from_millis(200);
    let (slow, during) = tokio::join!(etcd.slow_disk(l, delay, Duration::from_secs(3)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        put_latencies(&endpoints, Duration::from_millis(2000)).await
    });
    let slow = slow?;
    let during = during?;
    let after = put_latencies(&endpoints, Duration::from_millis(800)).await?;
    let alive_after_slow = etcd.is_running(l);

    Ok(json!({
        "etcd_start_ms": start_ms,
        "etcd_comms": comms,
        "endpoints": etcd.endpoints(),
        "read_back": read_back,
        "old_leader": old,
        "old_leader_host": etcd.host(old),
        "pause": {
            "member": paused,
            "sent": pause_sent && resume_sent,
            "write_while_paused_ms": write_while_paused.map(|d| d.as_millis()),
            "rejoin_ms": rejoin_paused.map(|d| d.as_millis()),
        },
        "new_leader": new_leader,
        "reelection_ms": reelect.as_millis(),
        "rejoin_after_kill_ms": rejoin_killed.map(|d| d.as_millis()),
        "stopped_on_sigterm": stopped_on_sigterm,
        "running_after_stop": running_after_stop,
        "rejoin_after_stop_ms": rejoin_stopped.map(|d| d.as_millis()),
        "cut": cut,
        "write_after_heal_ms": write_after_heal.map(|d| d.as_millis()),
        "slow_disk": {
            "member": l,
            "delay_ms": delay.as_millis(),
            "report": slow,
            "put_median_ms_before": median_ms(&before),
            "put_median_ms_during": median_ms(&during),
            "put_max_ms_during": during.iter().max().map(|d| d.as_millis()),
            "put_median_ms_after": median_ms(&after),
            "alive_after": alive_after_slow,
        },
    }))
}

/// Time until member `i` answers status itself and knows a leader.
async fn rejoin(etcd: &mut Etcd3, i: usize) -> Option<Duration> {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((_, leader)) = etcd.member_status(i).await {
            if leader != 0 {
                return Some(t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Puts one at a time for `window`; their latencies.
async fn put_latencies(endpoints: &[String], window: Duration) -> anyhow::Result<Vec<Duration>> {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    let mut c = etcd_client::Client::connect(endpoints, Some(opts)).await?;
    let end = Instant::now() + window;
    let mut lat = Vec::new();
    while Instant::now() < end || lat.is_empty() {
        let t = Instant::now();
        c.put("chaos-selftest/latency", "x", None).await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn median_ms(v: &[Duration]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1000.0)
}

/// c1 is cut from e1..e3: an established connection to e1's client port stalls (writes succeed,
/// nothing comes back, no error), a new connection to e2 times out (no refusal, no
/// unreachable), c1's link to drv still carries an echo, drv still reaches etcd; after heal the
/// stalled request is answered on the same connection. Then c1's whole link goes down and up.
fn cut_test(lab: &Lab, etcd: &Etcd3) -> anyhow::Result<Value> {
    let echo = TcpListener::bind((lab.ip("drv"), 0))?;
    let echo_addr = echo.local_addr()?;
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let e1: SocketAddr = (lab.ip("e1"), 2379).into();
    let e2: SocketAddr = (lab.ip("e2"), 2379).into();
    let (mut to_e1, mut to_drv) = lab.in_host("c1", || {
        Ok((
            TcpStream::connect_timeout(&e1, Duration::from_secs(2))?,
            TcpStream::connect_timeout(&echo_addr, Duration::from_secs(2))?,
        ))
    })?;
    to_e1.write_all(HEALTH)?;
    let before = read_some(&mut to_e1, Duration::from_secs(2));
    let health_before = before
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).contains("200 OK"))
        .unwrap_or(false);

    lab.cut("c1", &["e1", "e2", "e3"])?;
    lab.cut("c1", &["e1", "e2", "e3"])?; // idempotent
    let is_cut = lab.is_cut("c1", "e1") && lab.is_cut("e3", "c1") && !lab.is_cut("c1", "drv");
    let write_during = to_e1.write_all(HEALTH).map_err(|e| e.kind());
    let t = Instant::now();
    let during = read_some(&mut to_e1, Duration::from_secs(2));
    let stall_ms = t.elapsed().as_millis();
    let socket_error_during = to_e1.take_error()?.map(|e| e.to_string());
    let t = Instant::now();
    let new_conn = lab.in_host("c1", || {
        Ok(TcpStream::connect_timeout(&e2, Duration::from_millis(1500)).map_err(|e| e.kind()))
    })?;
    let new_conn_ms = t.elapsed().as_millis();
    to_drv.write_all(b"ping")?;
    let echo_during = read_some(&mut to_drv, Duration::from_secs(2)) == Ok(b"ping".to_vec());
    let drv_to_etcd = tokio::runtime::Handle::current().block_on(async {
        let mut c = etcd_client::Client::connect(
            etcd.endpoints(),
            Some(etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3))),
        )
        .await?;
        c.put("chaos-selftest/during-cut", "1", None).await?;
        anyhow::Ok(())
    });

    lab.heal("c1", &["e1", "e2", "e3"])?;
    lab.heal("c1", &["e1", "e2", "e3"])?; // idempotent
    let healed = !lab.is_cut("c1", "e1") && !lab.is_cut("c1", "e3");
    let t = Instant::now();
    let after = read_some(&mut to_e1, Duration::from_secs(15));
    let resumed_ms = t.elapsed().as_millis();
    let resumed_same_connection = after
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).contains("200 OK"))
        .unwrap_or(false);

    // The whole link.
    lab.link_down("c1")?;
    lab.link_down("c1")?;
    to_drv.write_all(b"ping")?;
    let link_down_stalls = stalled(&read_some(&mut to_drv, Duration::from_secs(2)));
    lab.link_up("c1")?;
    lab.link_up("c1")?;
    let link_up_echo = read_some(&mut to_drv, Duration::from_secs(15)) == Ok(b"ping".to_vec());

    Ok(json!({
        "health_before": health_before,
        "is_cut": is_cut,
        "write_during_ok": write_during.is_ok(),
        "read_during": format!("{:?}", during.as_ref().map(|b| b.len())),
        "read_stalled": stalled(&during),
        "stall_ms": stall_ms,
        "socket_error_during": socket_error_during,
        "new_connection_during": format!("{:?}", new_conn.as_ref().map(|_| "connected")),
        "new_connection_timed_out": matches!(new_conn, Err(ErrorKind::TimedOut | ErrorKind::WouldBlock)),
        "new_connection_ms": new_conn_ms,
        "echo_to_drv_during": echo_during,
        "drv_put_during": drv_to_etcd.as_ref().err().map(|e| format!("{e:#}")),
        "drv_put_during_ok": drv_to_etcd.is_ok(),
        "healed": healed,
        "resumed_same_connection": resumed_same_connection,
        "resumed_ms": resumed_ms,
        "link_down_stalls": link_down_stalls,
        "link_up_echo": link_up_echo,
    }))
}
