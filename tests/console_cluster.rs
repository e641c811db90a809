//! Serial consoles through real conductor processes against OpenIPMI's `ipmi_sim` SOL:
//!
//! - SIGKILL a conductor holding 20 consoles: none of its `ipmitool` processes remains (read
//!   from /proc), every console is active on the new owner within TTL + 5 s (its record in
//!   etcd), the BMC's one session is the new owner's (an outside `sol activate` is refused), and
//!   bytes flow both ways through the new owner's console server.
//! - Restart a conductor on the same host (SIGTERM, and SIGKILL): never two console processes
//!   for one BMC, and every console comes back.

use ferric_model::decode;
use ferric_model::ConsoleRecord;
use ferric_testkit::viewer::{connect, connect_bearer, read_until, type_keys, Ws};
use ferric_testkit::Fleet;
use ferric_testkit::IpmiSim;
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Every `consoles/<uuid>` record.
async fn consoles(fleet: &Fleet) -> HashMap<String, ConsoleRecord> {
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key("consoles/"))
        .await
        .unwrap_or_else(|e| fleet.fail(&e));
    kvs.into_iter()
        .filter_map(|kv| {
            let id = kv.key.rsplit('/').next()?.to_string();
            Some((id, decode::<ConsoleRecord>(&kv.value).ok()?))
        })
        .collect()
}

/// Live `ipmitool ... sol activate` processes per BMC port, from /proc (zombies excluded).
fn sol_processes() -> HashMap<u16, Vec<u32>> {
    let mut by_port: HashMap<u16, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return by_port;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let is_sol = args.iter().any(|a| a.ends_with("ipmitool"))
            && args.windows(2).any(|w| w[0] == "sol" && w[1] == "activate");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !is_sol || zombie {
            continue;
        }
        if let Some(port) = args
            .windows(2)
            .find(|w| w[0] == "-p")
            .and_then(|w| w[1].parse().ok())
        {
            by_port.entry(port).or_default().push(pid);
        }
    }
    by_port
}

/// Waits until every node's console is active on `conductor`.
async fn all_active_on(fleet: &Fleet, ids: &[String], conductor: &str, within: Duration) {
    fleet
        .wait_until(
            within,
            &format!("every console is active on {conductor}"),
            async || {
                let recs = consoles(fleet).await;
                let missing: Vec<String> = ids
                    .iter()
                    .filter(|id| {
                        !recs
                            .get(*id)
                            .is_some_and(|r| r.conductor == conductor && r.state == "active")
                    })
                    .map(|id| {
                        format!(
                            "{id}: {:?}",
                            recs.get(id)
                                .map(|r| (&r.conductor, &r.state, &r.last_error))
                        )
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} not yet: {}", missing.len(), missing[0]))
                }
            },
        )
        .await;
}

/// One `ipmi` node per BMC, consoles enabled; their uuids.
async fn ipmi_nodes_with_consoles(fleet: &Fleet, bmcs: &[IpmiSim]) -> Vec<String> {
    let mut ids = Vec::new();
    for b in bmcs {
        let info = b.driver_info();
        ids.push(
            fleet
                .create_nodes(1, &["--driver", "ipmi", "--driver-info", &info])
                .await
                .remove(0),
        );
    }
    fleet
        .ctl_ok(&["node", "console", &ids.join(","), "on"])
        .await;
    ids
}

/// Types `keys` (and Enter) into the viewer; waits until the machine's serial port got them.
async fn types_through(fleet: &Fleet, ws: &mut Ws, bmc: &IpmiSim, keys: &str) {
    type_keys(ws, format!("{keys}\r").as_bytes()).await;
    fleet
        .wait_until(
            Duration::from_secs(10),
            &format!("the serial port gets the keystrokes {keys:?}"),
            async || {
                let got = String::from_utf8_lossy(&bmc.serial().received()).to_string();
                got.contains(keys).then_some(()).ok_or(got)
            },
        )
        .await;
}

/// A viewer connected straight to a conductor's console server, as the gateway connects.
async fn viewer(fleet: &Fleet, rec: &ConsoleRecord, id: &str) -> Ws {
    let cluster = ferric_cluster::Cluster::connect(&{
        let mut c = ferric_cluster::EtcdConfig::new(&fleet.url());
        c.prefix = fleet.prefix.clone();
        c
    })
    .await
    .expect("etcd");
    let secret = cluster.console_secret().await.expect("console secret");
    let url = format!("ws://{}/console/{id}/ws?mode=rw", rec.address);
    connect_bearer(&url, Some(&secret))
        .await
        .unwrap_or_else(|r| panic!("websocket refused: {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_conductor_with_20_consoles() {
    let mut fleet = Fleet::new("console-kill").await;
    let ttl = ["--lease-ttl", "2", "--drivers", "ipmi"];
    fleet.start_conductor("c1", &ttl);
    let bmcs: Vec<IpmiSim> = (0..20).map(|_| IpmiSim::with_sol()).collect();
    let ids = ipmi_nodes_with_consoles(&fleet, &bmcs).await;
    all_active_on(&fleet, &ids, "c1", Duration::from_secs(60)).await;
    // The BMC's one session is taken: an outside activation is refused.
    let refused = bmcs[0].outside_activate();
    fleet.ensure(refused.is_err(), || {
        "an outside sol activate got the session".into()
    });
    let c1_pid = fleet.conductor("c1").pid();
    let ports: Vec<u16> = bmcs.iter().map(|b| b.port()).collect();
    let before = sol_processes();
    for p in &ports {
        fleet.ensure(before.get(p).map_or(0, Vec::len) == 1, || {
            format!("BMC port {p}: console processes {:?}", before.get(p))
        });
    }
    let c1_children: Vec<u32> = ports.iter().flat_map(|p| before[p].clone()).collect();

    fleet.conductor("c1").kill();
    let killed = Instant::now();
    fleet.start_conductor("c2", &ttl);
    fleet.note(&format!("c1 (pid {c1_pid}) killed; c2 started"));
    // None of c1's console processes outlives it.
    fleet
        .wait_until(
            Duration::from_secs(5),
            "c1's ipmitool processes are gone",
            async || {
                let live = sol_processes();
                let left: Vec<u32> = c1_children
                    .iter()
                    .filter(|pid| live.values().any(|v| v.contains(pid)))
                    .copied()
                    .collect();
                left.is_empty().then_some(()).ok_or(format!("{left:?}"))
            },
        )
        .await;
    // TTL 2 s + 5 s.
    all_active_on(&fleet, &ids, "c2", Duration::from_secs(7)).await;
    fleet.note(&format!(
        "all 20 consoles active on c2 {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    let after = sol_processes();
    for p in &ports {
        fleet.ensure(after.get(p).map_or(0, Vec::len) == 1, || {
            format!("BMC port {p} after the takeover: {:?}", after.get(p))
        });
    }
    fleet.ensure(bmcs[3].outside_activate().is_err(), || {
        "the new owner does not hold the BMC's session".into()
    });
    // Bytes both ways through the new owner's console server.
    let recs = consoles(&fleet).await;
    let mut ws = viewer(&fleet, &recs[&ids[5]], &ids[5]).await;
    types_through(&fleet, &mut ws, &bmcs[5], "hello-from-viewer").await;
    bmcs[5].serial().say(b"\r\nsaid-by-the-machine\r\n");
    read_until(&mut ws, b"said-by-the-machine").await;
    fleet.check_fencing_history().await;
}

async fn restart(kill: bool) {
    let mut fleet = Fleet::new(if kill {
        "console-restart-kill"
    } else {
        "console-restart-term"
    })
    .await;
    let runtime = tempfile::tempdir().unwrap();
    let rt = runtime.path().display().to_string();
    let args = [
        "--lease-ttl",
        "2",
        "--drivers",
        "ipmi",
        "--runtime-dir",
        rt.as_str(),
    ];
    fleet.start_conductor("c1", &args);
    let bmcs: Vec<IpmiSim> = (0..3).map(|_| IpmiSim::with_sol()).collect();
    let ids = ipmi_nodes_with_consoles(&fleet, &bmcs).await;
    all_active_on(&fleet, &ids, "c1", Duration::from_secs(30)).await;
    let ports: Vec<u16> = bmcs.iter().map(|b| b.port()).collect();
    let first = sol_processes();
    if kill {
        fleet.conductor("c1").kill();
    } else {
        fleet.conductor("c1").signal(Signal::SIGTERM);
        let exit = fleet
            .conductor("c1")
            .wait_exit(Duration::from_secs(30))
            .await;
        fleet.ensure(exit.is_some_and(|s| s.success()), || {
            format!("SIGTERM exit: {exit:?}")
        });
        // A clean stop leaves nothing behind and frees every BMC at once.
        let live = sol_processes();
        fleet.ensure(ports.iter().all(|p| !live.contains_key(p)), || {
            format!("console processes after SIGTERM: {live:?}")
        });
        fleet.ensure(bmcs[0].outside_activate().is_ok(), || {
            "the BMC's session is still taken after a clean stop".into()
        });
    }
    fleet.restart_conductor("c1");
    // Never two console processes for one BMC while the conductor comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = sol_processes();
        for p in &ports {
            let n = live.get(p).map_or(0, Vec::len);
            fleet.ensure(n <= 1, || {
                format!("BMC port {p} has {n} console processes: {live:?}")
            });
        }
        let recs = consoles(&fleet).await;
        let back = ids.iter().all(|id| {
            recs.get(id).is_some_and(|r| {
                r.conductor == "c1"
                    && r.state == "active"
                    && r.pid
                        .is_some_and(|pid| !first.values().any(|v| v.contains(&pid)))
            })
        });
        if back {
            break;
        }
        if Instant::now() > deadline {
            fleet.fail(&format!("consoles did not come back: {recs:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = sol_processes();
    for p in &ports {
        fleet.ensure(live.get(p).map_or(0, Vec::len) == 1, || {
            format!("BMC port {p} after the restart: {live:?}")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_restores_consoles() {
    restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_restores_consoles_without_duplicates() {
    restart(true).await;
}

/// The whole path a browser takes: Ironic's `PUT .../states/console`, the gateway's websocket,
/// the owner's console server, ipmitool, ipmi_sim, the serial port; then the owner is SIGKILLed
/// and the same viewer connection is carried over to the new owner and sees output again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_through_the_gateway_survives_the_owners_death() {
    let mut fleet = Fleet::new("console-gateway").await;
    let dir = tempfile::tempdir().unwrap();
    let ttl = ["--lease-ttl", "2", "--drivers", "ipmi"];
    fleet.start_conductor("c1", &ttl);
    let gw = ferric_testkit::Gateway::start(&fleet, dir.path(), "gw", &[]);
    let bmc = IpmiSim::with_sol();
    let info = bmc.driver_info();
    let id = fleet
        .create_nodes(1, &["--driver", "ipmi", "--driver-info", &info])
        .await
        .remove(0);
    let r = ferric_testkit::http::api(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(r#"{"enabled": true}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    all_active_on(
        &fleet,
        std::slice::from_ref(&id),
        "c1",
        Duration::from_secs(30),
    )
    .await;
    let r = ferric_testkit::http::api(
        gw.port,
        "GET",
        &format!("/v1/nodes/{id}/states/console"),
        None,
    );
    let url = r.json()["console_info"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    fleet.ensure(url.ends_with(&format!("/v1/nodes/{id}/console/ws")), || {
        r.body.clone()
    });
    let (mut ws, _) = connect(&url, &[])
        .await
        .unwrap_or_else(|r| panic!("websocket through the gateway refused: {r:?}"));
    ws.send(Message::Binary(b"typed-in-the-browser\r".to_vec().into()))
        .await
        .unwrap();
    fleet
        .wait_until(
            Duration::from_secs(10),
            "the serial port gets the keystrokes",
            async || {
                let got = String::from_utf8_lossy(&bmc.serial().received()).to_string();
                got.contains("typed-in-the-browser")
                    .then_some(())
                    .ok_or(got)
            },
        )
        .await;
    fleet.ensure(bmc.outside_activate().is_err(), || {
        "a second sol activate got the BMC's session while Ferric holds it".into()
    });

    fleet.conductor("c1").kill();
    fleet.start_conductor("c2", &ttl);
    all_active_on(
        &fleet,
        std::slice::from_ref(&id),
        "c2",
        Duration::from_secs(7),
    )
    .await;
    // The viewer is told, carried over, and sees the machine again.
    let mut texts = Vec::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if texts.iter().any(|t: &String| t.contains("\"reconnected\""))
            && String::from_utf8_lossy(&seen).contains("after-the-failover")
        {
            break;
        }
        if texts.iter().any(|t| t.contains("\"reconnected\"")) {
            bmc.serial().say(b"\r\nafter-the-failover\r\n");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(500)), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            Ok(Some(Ok(Message::Binary(b)))) => seen.extend_from_slice(&b),
            Ok(Some(Ok(_))) | Err(_) => {}
            other => fleet.fail(&format!(
                "viewer connection ended: {other:?}; texts {texts:?}"
            )),
        }
        if Instant::now() > deadline {
            fleet.fail(&format!(
                "no output after the failover; texts {texts:?}, output {:?}",
                String::from_utf8_lossy(&seen)
            ));
        }
    }
    fleet.ensure(texts.iter().any(|t| t.contains("\"reconnecting\"")), || {
        format!("the viewer was not told of the reconnect: {texts:?}")
    });
}

/// A BMC that dies mid-session: its console says so (reconnecting, with the error, in its
/// record) and retries with backoff; the other consoles of the same conductor keep their session
/// and their process; when the BMC is back, its console is active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_dying_mid_session_affects_nothing_else() {
    let mut fleet = Fleet::new("console-bmc-dies").await;
    fleet.start_conductor("c1", &["--lease-ttl", "5", "--drivers", "ipmi"]);
    let mut bmcs: Vec<IpmiSim> = (0..3).map(|_| IpmiSim::with_sol()).collect();
    let ids = ipmi_nodes_with_consoles(&fleet, &bmcs).await;
    all_active_on(&fleet, &ids, "c1", Duration::from_secs(30)).await;
    let before = consoles(&fleet).await;

    bmcs[0].stop();
    let rec = fleet
        .wait_until(
            Duration::from_secs(120),
            "the dead BMC's console reports it",
            async || {
                let r = consoles(&fleet).await.remove(&ids[0]);
                match r {
                    Some(r) if r.state == "reconnecting" && r.last_error.is_some() => Ok(r),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    fleet.note(&format!("dead BMC: {:?}", rec.last_error));
    // The others did not notice: same session, same process, still passing bytes.
    let now = consoles(&fleet).await;
    for id in &ids[1..] {
        let (b, n) = (&before[id], &now[id]);
        fleet.ensure(
            n.state == "active" && n.pid == b.pid && n.active_since_ms == b.active_since_ms,
            || format!("{id} was disturbed: {b:?} -> {n:?}"),
        );
    }
    let mut ws = viewer(&fleet, &now[&ids[1]], &ids[1]).await;
    types_through(&fleet, &mut ws, &bmcs[1], "still-here").await;

    bmcs[0].restart();
    // Backoff is capped at 30 s; the console comes back within it.
    all_active_on(&fleet, &ids[..1], "c1", Duration::from_secs(45)).await;
    fleet.ensure(bmcs[0].outside_activate().is_err(), || {
        "the console did not take the BMC's session back".into()
    });
}
