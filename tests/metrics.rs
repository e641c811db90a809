//! A conductor's `/metrics` against independent records, through real processes: node actors
//! and reservations against etcd's reservation keys, BMC commands against `ferric sim`'s own
//! log of what each conductor sent, the lease's keepalives and self-fencing deadline against
//! the TTL it was started with.

use ferric_testkit::{free_port, Fleet, Gateway, Sim};
use std::time::Duration;

fn scrape(port: u16) -> String {
    ferric_testkit::http::http(port, "GET", "/metrics", &[], None)
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        })
        .unwrap_or_default()
}

/// The value of the series `name{labels}` (labels exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conductors_metrics_match_etcd_and_the_bmcs_log() {
    let mut fleet = Fleet::new("metrics").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    fleet.start_conductor("c1", &["--lease-ttl", "3", "--metrics-listen", &listen]);
    let sim = Sim::start(dir.path(), 3, &[]).await;
    let mut ids = Vec::new();
    for system in 0..3 {
        let info = sim.driver_info(system, "password");
        ids.push(
            fleet
                .create_nodes(1, &["--driver", "redfish", "--driver-info", &info])
                .await
                .remove(0),
        );
    }
    // Enrolled and with nothing going on, the nodes are parked: served with no actor each.
    let c = "conductor=\"c1\"";
    fleet
        .wait_until(Duration::from_secs(20), "nodes parked", async || {
            let t = scrape(port);
            (value(&t, &format!("ferric_node_parked{{{c}}}")) == Some(3.0))
                .then_some(())
                .ok_or(t)
        })
        .await;
    for id in &ids {
        let seq = fleet.power_seq_done(id).await;
        fleet.ctl_ok(&["node", "power", id, "on"]).await;
        fleet
            .wait_power_done(id, seq + 1, Duration::from_secs(20))
            .await;
    }
    // Nodes, actors and reservations: etcd's reservation keys of c1.
    let snap = fleet.wait_settled(Duration::from_secs(10), &["c1"]).await;
    let held = snap.counts().get("c1").copied().unwrap_or(0) as f64;
    assert_eq!(held, 3.0);
    let text = fleet
        .wait_until(Duration::from_secs(10), "actors reported", async || {
            let t = scrape(port);
            (value(&t, &format!("ferric_node_actors{{{c}}}")) == Some(held))
                .then_some(t.clone())
                .ok_or(t)
        })
        .await;
    assert_eq!(
        value(&text, &format!("ferric_reservations_held{{{c}}}")),
        Some(held),
        "{text}"
    );
    // Each power request woke its parked node (the simulator's log below has the commands).
    let wakes = value(&text, &format!("ferric_node_wakes_total{{{c}}}"));
    assert!(wakes.is_some_and(|w| w >= 3.0), "{text}");
    // BMC commands: every power on c1 sent, as the simulator logged them.
    let ons: usize = (0..3)
        .map(|s| {
            sim.commands(s)
                .iter()
                .filter(|e| e["op"] == "redfish" && e["action"] == "On" && e["client"] == "c1")
                .count()
        })
        .sum();
    assert_eq!(ons, 3);
    let sent = value(
        &text,
        &format!(
            "ferric_bmc_commands_total{{{c},driver=\"redfish\",command=\"power on\",outcome=\"ok\"}}"
        ),
    );
    assert_eq!(sent, Some(ons as f64), "{text}");
    let reads = value(
        &text,
        &format!(
            "ferric_bmc_command_seconds_count{{{c},driver=\"redfish\",command=\"power state\"}}"
        ),
    )
    .unwrap_or(0.0);
    let logged_reads: usize = (0..3)
        .map(|s| {
            sim.commands(s)
                .iter()
                .filter(|e| e["method"] == "GET" && e["client"] == "c1")
                .count()
        })
        .sum();
    assert!(
        reads >= 3.0 && reads <= logged_reads as f64,
        "{reads} state reads counted, {logged_reads} GETs logged"
    );
    // The lease: keepalives every TTL/3 acknowledged, the deadline ahead by at most the TTL.
    let text = fleet
        .wait_until(Duration::from_secs(10), "keepalives counted", async || {
            let t = scrape(port);
            (value(&t, &format!("ferric_lease_keepalive_seconds_count{{{c}}}")).unwrap_or(0.0)
                >= 2.0)
                .then_some(t.clone())
                .ok_or(t)
        })
        .await;
    let left =
        value(&text, &format!("ferric_fence_deadline_seconds_left{{{c}}}")).expect("the deadline");
    assert!(left > 0.0 && left <= 3.0, "{left}");
    assert_eq!(
        value(&text, &format!("ferric_self_fences_total{{{c}}}")),
        Some(0.0)
    );
    // Status writes went through the batched writer.
    let batches = value(&text, &format!("ferric_etcd_write_batch_size_count{{{c}}}"));
    assert!(batches.is_some_and(|b| b >= 1.0), "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    // The alert rules and the dashboard in deploy/ use only series that conductors and
    // gateways expose.
    let gw = Gateway::start(&fleet, dir.path(), "gw", &[]);
    let r = ferric_testkit::http::api(gw.port, "GET", "/v1/nodes", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let gateway = ferric_testkit::http::api(gw.port, "GET", "/metrics", None).body;
    assert_eq!(
        value(&gateway, "ferric_nodes_unowned"),
        Some(0.0),
        "every node has its conductor: {gateway}"
    );
    let exposed = format!("{}\n{gateway}", scrape(port));
    let root = ferric_testkit::workspace_root();
    for file in [
        "deploy/prometheus/ferric-alerts.yml",
        "deploy/grafana/ferric.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut names: Vec<&str> = text
            .match_indices("ferric_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 8, "{file}: {names:?}");
        for name in names {
            let shown = exposed
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
            assert!(shown, "{file} uses {name}, which nothing exposes");
        }
    }
    fleet.check_fencing_history().await;
}
