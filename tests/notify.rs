//! Delivery of power events to a compute service, end to end: real etcd, real `ferric`
//! conductors and gateway, and testkit's stand-in Nova with its own Keystone (which checks every
//! request against Nova's schema and records everything). Expectations come from the outbox in
//! etcd (`events/<uuid>/<seq>`), not from the deliverer's view of itself.

use ferric_model::{decode, delivery::nova_tag, EventRecord};
use ferric_testkit::compute::{ComputeService, Credentials, Mode};
use ferric_testkit::http::api;
use ferric_testkit::{free_port, Fleet, Gateway};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(30);

fn creds() -> Credentials {
    Credentials {
        user: "ironic".into(),
        password: "s3cret-pw".into(),
        domain: "Default".into(),
        project: "service".into(),
    }
}

/// Conductor flags for delivery to `svc` with Keystone auth; a short backoff cap and timeout
/// keep the failure phases short in real time.
fn notify_args(svc: &ComputeService, password: &str, metrics_port: u16) -> Vec<String> {
    [
        "--lease-ttl",
        "2",
        "--bmc-min-gap-ms",
        "0",
        "--compute-url",
        &svc.compute_url(),
        "--keystone-url",
        &svc.keystone_url(),
        "--keystone-user",
        "ironic",
        "--keystone-password",
        password,
        "--keystone-project",
        "service",
        "--notify-url",
        &svc.hook_url(),
        "--notify-timeout",
        "1",
        "--notify-backoff-max",
        "0.5",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Sets each node's instance_uuid through the API; returns node -> instance.
fn attach_instances(gw: &Gateway, ids: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in ids {
        let inst = uuid::Uuid::new_v4().to_string();
        let body = format!(r#"[{{"op": "add", "path": "/instance_uuid", "value": "{inst}"}}]"#);
        let r = api(gw.port, "PATCH", &format!("/v1/nodes/{id}"), Some(&body));
        assert_eq!(r.status, 200, "PATCH instance_uuid: {}", r.body);
        out.insert(id.clone(), inst);
    }
    out
}

/// Requests `target` (on | off) for `ids` and waits until every owner has done it; returns how
/// long that took.
async fn power(fleet: &Fleet, ids: &[String], target: &str) -> Duration {
    let start = Instant::now();
    let list = ids.join(",");
    fleet.ctl_ok(&["node", "power", &list, target]).await;
    for id in ids {
        let seq = fleet.spec(id).await.power_request.map_or(0, |r| r.seq);
        fleet.wait_power_done(id, seq, WITHIN).await;
    }
    start.elapsed()
}

/// The outbox in etcd: node -> events in seq order.
async fn outbox(fleet: &Fleet) -> BTreeMap<String, Vec<EventRecord>> {
    let (_, kvs) = fleet
        .inspect
        .get_prefix(&fleet.inspect.key("events/"))
        .await
        .unwrap_or_else(|e| fleet.fail(&e));
    let mut out: BTreeMap<String, Vec<EventRecord>> = BTreeMap::new();
    for kv in kvs {
        let ev: EventRecord = decode(&kv.value).unwrap_or_else(|e| fleet.fail(&e.to_string()));
        out.entry(ev.node.to_string()).or_default().push(ev);
    }
    for v in out.values_mut() {
        v.sort_by_key(|e| e.seq);
    }
    out
}

/// Collapses consecutive repeats (re-deliveries of the same event).
fn dedup<T: PartialEq + Clone>(v: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if out.last() != Some(x) {
            out.push(x.clone());
        }
    }
    out
}

/// Nova got every applicable event of the outbox, in order per instance, with repeats only
/// of the same event; the webhook got every event, by seq, in order per node. Err: what is
/// missing.
async fn check_delivered(
    fleet: &Fleet,
    svc: &ComputeService,
    instances: &BTreeMap<String, String>,
    skip_unknown: &[String],
) -> Result<(), String> {
    let outbox = outbox(fleet).await;
    let accepted = svc.accepted();
    let hook = svc.hook_events();
    for (node, events) in &outbox {
        // Nova: the tags of events that concern an instance (Ferric's own rule, checked
        // against the outbox).
        let want: Vec<(String, String)> = events
            .iter()
            .filter_map(|e| Some((e.instance_uuid?.to_string(), nova_tag(e)?.to_string())))
            .collect();
        let inst = instances.get(node);
        let got: Vec<(String, String)> = accepted
            .iter()
            .filter(|(i, _)| Some(i) == inst)
            .cloned()
            .collect();
        // A repeat can only be a re-delivery: the outbox alternates, so collapsing both
        // sides compares the sequences of distinct events. An instance Nova does not know
        // has its events refused (checked by the caller).
        let unknown = inst.is_some_and(|i| skip_unknown.contains(i));
        if !unknown && dedup(&got) != dedup(&want) {
            return Err(format!(
                "node {node}: Nova got {:?}, the outbox has {:?}",
                got.iter().map(|g| &g.1).collect::<Vec<_>>(),
                want.iter().map(|g| &g.1).collect::<Vec<_>>()
            ));
        }
        // The webhook carries seqs: exactly every event, in order, repeats only adjacent.
        let seqs: Vec<u64> = hook
            .iter()
            .filter(|e| e["node"] == node.as_str())
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        let want_seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        if sorted != seqs {
            return Err(format!("node {node}: webhook seqs out of order: {seqs:?}"));
        }
        if dedup(&seqs) != want_seqs {
            return Err(format!(
                "node {node}: webhook got seqs {seqs:?}, the outbox has {want_seqs:?}"
            ));
        }
    }
    let violations = svc.violations();
    if !violations.is_empty() {
        return Err(format!("requests Nova would refuse: {violations:?}"));
    }
    Ok(())
}

async fn wait_delivered(
    fleet: &Fleet,
    svc: &ComputeService,
    instances: &BTreeMap<String, String>,
    skip_unknown: &[String],
    within: Duration,
    what: &str,
) {
    fleet
        .wait_until(within, what, async || {
            check_delivered(fleet, svc, instances, skip_unknown).await
        })
        .await;
}

fn metrics(port: u16) -> String {
    ferric_testkit::http::http(port, "GET", "/metrics", &[], None)
        .map(|r| r.body)
        .unwrap_or_default()
}

/// Batching, Keystone tokens (cached, renewed on expiry and on 401), 404 per event recorded
/// and skipped, 500s, garbage and hanging answers, and an outage while power operations go on
/// at normal speed; afterwards every event arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_a_failing_compute_service() {
    // The endpoint is down for two minutes, as the issue asks: power operations go on
    // throughout (hundreds of events pile up), then everything arrives, in order.
    const OUTAGE: Duration = Duration::from_secs(120);
    let mut fleet = Fleet::new("notify-deliver").await;
    let svc = ComputeService::start(creds(), Duration::from_secs(4)).await;
    let mport = free_port();
    let args = notify_args(&svc, "s3cret-pw", mport);
    fleet.start_conductor("c1", &refs(&args));
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet.create_nodes(6, &[]).await;
    fleet.wait_settled(WITHIN, &["c1"]).await;
    // Five nodes with an instance; the sixth has none (Nova hears nothing of it).
    let instances = attach_instances(&gw, &ids[..5]);
    let baseline = power(&fleet, &ids, "on").await;
    power(&fleet, &ids, "off").await;
    wait_delivered(
        &fleet,
        &svc,
        &instances,
        &[],
        WITHIN,
        "the first events reached Nova and the webhook",
    )
    .await;
    // (Batching is checked after the outage below, where a backlog is certain: these few
    // events may each go out at once, up to four requests in flight, when they arrive a
    // moment apart.)
    fleet.ensure(svc.tokens_issued() <= 2, || {
        format!(
            "{} tokens for a few requests: not cached",
            svc.tokens_issued()
        )
    });
    fleet.note("phase: unknown instance -> 404 per event, recorded and skipped");
    let unknown = instances[&ids[0]].clone();
    svc.set_unknown(&unknown, true);
    power(&fleet, &ids, "on").await;
    let skip = vec![unknown.clone()];
    wait_delivered(
        &fleet,
        &svc,
        &instances,
        &skip,
        WITHIN,
        "the others' events arrived",
    )
    .await;
    fleet
        .wait_until(
            WITHIN,
            "Nova answered 404 for the unknown instance",
            async || {
                svc.not_found()
                    .iter()
                    .any(|(i, _)| *i == unknown)
                    .then_some(())
                    .ok_or_else(|| format!("{:?}", svc.not_found()))
            },
        )
        .await;
    svc.set_unknown(&unknown, false);
    let out = fleet.ctl_ok(&["node", "events", &ids[0]]).await;
    fleet.ensure(out.contains("refused 404"), || {
        format!("ctl node events:\n{out}")
    });

    for mode in [Mode::Fail500, Mode::Garbage, Mode::Hang, Mode::Down] {
        fleet.note(&format!("phase: compute service {mode:?}"));
        let before = svc.requests().len();
        svc.set_mode(mode).await;
        let start = Instant::now();
        let mut ops = 0;
        let mut slowest = Duration::ZERO;
        let phase = if mode == Mode::Down {
            OUTAGE
        } else {
            Duration::from_secs(2)
        };
        while start.elapsed() < phase || ops < 2 {
            let target = if ops % 2 == 0 { "off" } else { "on" };
            slowest = slowest.max(power(&fleet, &ids, target).await);
            ops += 1;
        }
        // Power operations ran at normal speed meanwhile.
        fleet.ensure(slowest < baseline * 3 + Duration::from_secs(2), || {
            format!("a power operation took {slowest:?} during {mode:?} (baseline {baseline:?})")
        });
        if matches!(mode, Mode::Fail500 | Mode::Garbage) {
            fleet.ensure(svc.requests().len() > before, || {
                format!("no retry during {mode:?}")
            });
        }
        let m = metrics(mport);
        fleet.ensure(
            m.contains("ferric_notify_failures_total{conductor=\"c1\",sink=\"compute\""),
            || format!("metrics show no failure during {mode:?}:\n{m}"),
        );
        svc.set_mode(Mode::Up).await;
        wait_delivered(
            &fleet,
            &svc,
            &instances,
            &skip,
            WITHIN,
            &format!("everything arrived after {mode:?}"),
        )
        .await;
        if mode == Mode::Down {
            // The outage left a backlog of every node's events: it goes out in batches.
            let reqs = svc.requests();
            let batched = reqs[before..]
                .iter()
                .any(|r| r.path == "compute" && r.results.len() > 1);
            fleet.ensure(batched, || {
                format!(
                    "no request after the outage carried more than one event: {:?}",
                    &reqs[before..]
                )
            });
        }
    }
    fleet.note("phase: tokens revoked -> 401 -> a new token");
    let issued = svc.tokens_issued();
    svc.revoke_tokens();
    // Whatever the last phase left, this makes events.
    power(&fleet, &ids, "off").await;
    power(&fleet, &ids, "on").await;
    wait_delivered(
        &fleet,
        &svc,
        &instances,
        &skip,
        WITHIN,
        "everything arrived after the 401",
    )
    .await;
    fleet.ensure(
        svc.tokens_issued() > issued && svc.unauthorized() > 0,
        || {
            format!(
                "issued {} (was {issued}), 401s {}",
                svc.tokens_issued(),
                svc.unauthorized()
            )
        },
    );
    // Cursors in etcd say what was delivered.
    let out = fleet.ctl_ok(&["node", "events", &ids[1]]).await;
    fleet.ensure(out.contains("delivered 200"), || {
        format!("ctl node events:\n{out}")
    });
    // The pending gauge is refreshed every 100 ms.
    fleet
        .wait_until(
            WITHIN,
            "the metrics show the deliveries and nothing pending",
            async || {
                let m = metrics(mport);
                for needle in [
                "ferric_notify_events_delivered_total{conductor=\"c1\",sink=\"compute\"}",
                "ferric_notify_delivery_latency_seconds_count{conductor=\"c1\",sink=\"compute\"}",
                "ferric_notify_events_pending{conductor=\"c1\",sink=\"compute\"} 0",
            ] {
                if !m.contains(needle) {
                    return Err(format!("{needle} missing:\n{m}"));
                }
            }
                Ok(())
            },
        )
        .await;
    // No secret in any log.
    let logs = fleet.logs() + &fleet.conductor("c1").log();
    fleet.ensure(!logs.contains("s3cret-pw"), || {
        "the Keystone password is in a log".into()
    });
}

/// SIGKILL of the delivering conductor mid-stream: nothing is lost, order per node is kept,
/// and the only repeats are re-deliveries of the same event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_deliverer_loses_nothing() {
    let mut fleet = Fleet::new("notify-kill").await;
    let svc = ComputeService::start(creds(), Duration::from_secs(60)).await;
    let a1 = notify_args(&svc, "s3cret-pw", free_port());
    let mut a2 = notify_args(&svc, "s3cret-pw", free_port());
    // The survivor reads the events of the nodes it takes over in one bulk read (what it does
    // from 64 nodes on), c1 node by node.
    a2.extend(["--notify-bulk-load-min".to_string(), "1".to_string()]);
    fleet.start_conductor("c1", &refs(&a1));
    fleet.start_conductor("c2", &refs(&a2));
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet.create_nodes(8, &[]).await;
    fleet.wait_settled(WITHIN, &["c1", "c2"]).await;
    let instances = attach_instances(&gw, &ids);
    // A slow compute service keeps deliveries in flight while the owner dies.
    svc.set_delay(Duration::from_millis(300));
    for round in 0..3 {
        power(&fleet, &ids, if round % 2 == 0 { "on" } else { "off" }).await;
    }
    fleet.note("SIGKILL c1 while deliveries are in flight");
    fleet.conductor("c1").signal(Signal::SIGKILL);
    fleet.wait_settled(WITHIN, &["c2"]).await;
    for round in 3..5 {
        power(&fleet, &ids, if round % 2 == 0 { "on" } else { "off" }).await;
    }
    svc.set_delay(Duration::ZERO);
    wait_delivered(
        &fleet,
        &svc,
        &instances,
        &[],
        WITHIN,
        "every event arrived after the failover",
    )
    .await;
    assert!(
        fleet.conductor("c2").log().contains("in one bulk read"),
        "the survivor read the events of the nodes it took over in one bulk read"
    );
}

/// Wrong credentials and a wrong compute URL: a clear error in the log and in the metrics,
/// and power operations unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_url_are_reported() {
    let mut fleet = Fleet::new("notify-wrong").await;
    let svc = ComputeService::start(creds(), Duration::from_secs(60)).await;
    let m1 = free_port();
    let m2 = free_port();
    let bad_pw = notify_args(&svc, "wrong-pw", m1);
    let mut bad_url = notify_args(&svc, "s3cret-pw", m2);
    let i = bad_url.iter().position(|a| a == "--compute-url").unwrap();
    bad_url[i + 1] = format!("http://127.0.0.1:{}/nova-nowhere", svc.port);
    fleet.start_conductor("c1", &refs(&bad_pw));
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet.create_nodes(2, &[]).await;
    fleet.wait_settled(WITHIN, &["c1"]).await;
    attach_instances(&gw, &ids);
    power(&fleet, &ids, "on").await;
    fleet
        .wait_until(
            WITHIN,
            "c1 logs and counts the refused credentials",
            async || {
                let log = fleet.conductor("c1").log();
                let m = metrics(m1);
                (log.contains("Keystone refused the credentials")
                    && m.contains("kind=\"auth\"")
                    && m.contains("ferric_notify_failing{conductor=\"c1\",sink=\"compute\"} 1"))
                .then_some(())
                .ok_or(m)
            },
        )
        .await;
    fleet.ensure(!fleet.conductor("c1").log().contains("wrong-pw"), || {
        "password logged".into()
    });
    fleet.conductor("c1").signal(Signal::SIGTERM);
    fleet.conductor("c1").wait_exit(WITHIN).await;
    fleet.start_conductor("c2", &refs(&bad_url));
    fleet.wait_settled(WITHIN, &["c2"]).await;
    power(&fleet, &ids, "off").await;
    fleet
        .wait_until(WITHIN, "c2 logs and counts the wrong URL", async || {
            let log = fleet.conductor("c2").log();
            let m = metrics(m2);
            (log.contains("is the compute URL the compute endpoint")
                && m.contains("kind=\"not_found\""))
            .then_some(())
            .ok_or(m)
        })
        .await;
}

/// The seed's race, played out: Nova's periodic sync (the stand-in's belief per instance,
/// Ferric's API read as Nova's user, "power off" when it sees on where it believes off) runs
/// while the event of the user's power on is still on its way (a compute service slower than
/// the delivery timeout). Returns the node's final power state and Nova's answer.
async fn race(guard: bool) -> (String, u16, String) {
    let mut fleet = Fleet::new(if guard {
        "notify-race-guard"
    } else {
        "notify-race-open"
    })
    .await;
    let svc = ComputeService::start(creds(), Duration::from_secs(60)).await;
    let args = notify_args(&svc, "s3cret-pw", free_port());
    fleet.start_conductor("c1", &refs(&args));
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let line = |u: &str, p: &str| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap());
    std::fs::write(
        &htpasswd,
        line("nova", "nova-pw") + &line("alice", "alice-pw"),
    )
    .unwrap();
    let mut gw_args = vec![
        "--auth",
        "http_basic",
        "--auth-file",
        htpasswd.to_str().unwrap(),
        "--compute-callers",
        "nova",
        "--compute-ack-grace",
        "1",
    ];
    if !guard {
        gw_args.push("--no-compute-guard");
    }
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &gw_args);
    let ids = fleet.create_nodes(1, &[]).await;
    let id = ids[0].clone();
    fleet.wait_settled(WITHIN, &["c1"]).await;
    let client = reqwest::Client::new();
    let call = async |user: &str,
                      pw: &str,
                      method: reqwest::Method,
                      path: &str,
                      body: Option<serde_json::Value>| {
        let mut req = client
            .request(method, format!("{}{path}", gw.url))
            .basic_auth(user, Some(pw))
            .header("X-OpenStack-Ironic-API-Version", "latest");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the gateway answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    };
    let inst = uuid::Uuid::new_v4().to_string();
    let patch = serde_json::json!([{"op": "add", "path": "/instance_uuid", "value": inst}]);
    let (st, body) = call(
        "alice",
        "alice-pw",
        reqwest::Method::PATCH,
        &format!("/v1/nodes/{id}"),
        Some(patch),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let power_path = format!("/v1/nodes/{id}/states/power");
    let set = |target: &str| serde_json::json!({"target": target});
    // The user stops the machine; Nova is told and believes "off".
    let (st, body) = call(
        "alice",
        "alice-pw",
        reqwest::Method::PUT,
        &power_path,
        Some(set("power off")),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    fleet
        .wait_until(WITHIN, "Nova was told POWER_OFF", async || {
            (svc.power_of(&inst).as_deref() == Some("POWER_OFF"))
                .then_some(())
                .ok_or_else(|| format!("{:?}", svc.power_of(&inst)))
        })
        .await;
    // Past the grace of that acknowledgement.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // From now on the compute service answers later than the delivery timeout: the next event
    // stays pending.
    svc.set_delay(Duration::from_secs(3));
    let (st, body) = call(
        "alice",
        "alice-pw",
        reqwest::Method::PUT,
        &power_path,
        Some(set("power on")),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let seq = fleet.spec(&id).await.power_request.map_or(0, |r| r.seq);
    fleet.wait_power_done(&id, seq, WITHIN).await;
    // Nova's periodic sync: reads Ferric, sees "power on" where it believes POWER_OFF (the
    // event has not arrived), and forces its own view.
    let (st, body) = call(
        "nova",
        "nova-pw",
        reqwest::Method::GET,
        &format!("/v1/nodes/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["power_state"], "power on");
    assert_eq!(
        svc.power_of(&inst).as_deref(),
        Some("POWER_OFF"),
        "the event arrived too early for the race"
    );
    let (nova_status, nova_body) = call(
        "nova",
        "nova-pw",
        reqwest::Method::PUT,
        &power_path,
        Some(set("power off")),
    )
    .await;
    fleet.note(&format!("Nova's power off: {nova_status} {nova_body}"));
    if nova_status == 202 {
        let seq = fleet.spec(&id).await.power_request.map_or(0, |r| r.seq);
        fleet.wait_power_done(&id, seq, WITHIN).await;
    }
    // The compute service recovers; every event arrives.
    svc.set_delay(Duration::ZERO);
    let mut instances = BTreeMap::new();
    instances.insert(id.clone(), inst.clone());
    wait_delivered(
        &fleet,
        &svc,
        &instances,
        &[],
        WITHIN,
        "every event reached Nova",
    )
    .await;
    let st = fleet.status(&id).await.unwrap_or_else(|e| fleet.fail(&e));
    let power = st.power_state.map_or("None", |p| p.as_str()).to_string();
    (power, nova_status, nova_body)
}

/// Without the guard (turned off by config) the seed's race happens: Nova's stale view powers
/// the machine off against the user's last request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_without_the_guard_powers_off_against_the_user() {
    let (power, status, body) = race(false).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        power, "power off",
        "the race did not happen: the test would not catch it"
    );
}

/// With the guard Nova's stale power off is refused with 409 and a reason, the pending event
/// is re-sent, and the machine stays on as the user last asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_guard_keeps_the_users_last_request() {
    let (power, status, body) = race(true).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("has not yet acknowledged power change"),
        "{body}"
    );
    assert_eq!(power, "power on");
}

/// Reads `/v1/ferric/events` until `done` says enough (bounded by `within`): every
/// `power_event` as (node, seq), and the last `id` seen.
async fn read_stream(
    url: &str,
    last_id: Option<&str>,
    within: Duration,
    mut done: impl FnMut(&[(String, u64)]) -> bool,
) -> (Vec<(String, u64)>, Option<String>) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{url}/v1/ferric/events"));
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = req.send().await.expect("the stream opens");
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = Instant::now() + within;
    let mut buf = String::new();
    let mut seen = Vec::new();
    let mut last = last_id.map(str::to_string);
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("the stream stalled; seen {seen:?}"))
            .expect("the stream reads")
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut data = None;
            for line in frame.lines() {
                if let Some(id) = line.strip_prefix("id:") {
                    last = Some(id.trim().to_string());
                }
                if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<serde_json::Value>(d.trim()).ok();
                }
            }
            if let Some(d) = data.filter(|d| d["record"] == "power_event") {
                seen.push((
                    d["node"].as_str().unwrap_or("").to_string(),
                    d["seq"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    (seen, last)
}

/// `/v1/ferric/events` carries the outbox's power events; a client that reconnects with
/// `Last-Event-ID` after a conductor failover misses nothing and sees nothing twice per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_resumes_across_a_failover() {
    let mut fleet = Fleet::new("notify-stream").await;
    fleet.start_conductor("c1", &["--lease-ttl", "2", "--bmc-min-gap-ms", "0"]);
    fleet.start_conductor("c2", &["--lease-ttl", "2", "--bmc-min-gap-ms", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);
    let ids = fleet.create_nodes(6, &[]).await;
    fleet.wait_settled(WITHIN, &["c1", "c2"]).await;
    let stream = {
        let url = gw.url.clone();
        tokio::spawn(async move { read_stream(&url, None, WITHIN, |s| s.len() >= 12).await })
    };
    // Give the stream a moment to be attached; what it misses before is not asked of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first_seq = outbox(&fleet).await;
    power(&fleet, &ids, "on").await;
    power(&fleet, &ids, "off").await;
    let (mut seen, last) = stream.await.unwrap();
    fleet.note(&format!(
        "first connection saw {} events, last id {last:?}",
        seen.len()
    ));
    fleet.conductor("c1").signal(Signal::SIGKILL);
    fleet.wait_settled(WITHIN, &["c2"]).await;
    power(&fleet, &ids, "on").await;
    // Everything in the outbox after the first connection started, minus what it saw.
    let outbox_now = outbox(&fleet).await;
    let want: usize = outbox_now
        .iter()
        .map(|(n, evs)| evs.len() - first_seq.get(n).map_or(0, Vec::len))
        .sum();
    let (more, _) = read_stream(&gw.url, last.as_deref(), WITHIN, |s| {
        seen.len() + s.len() >= want
    })
    .await;
    seen.extend(more);
    for (node, evs) in &outbox_now {
        let before = first_seq.get(node).map_or(0, Vec::len);
        let want: Vec<u64> = evs[before..].iter().map(|e| e.seq).collect();
        let got: Vec<u64> = seen
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, s)| *s)
            .collect();
        fleet.ensure(got == want, || {
            format!("node {node}: the stream showed {got:?}, the outbox has {want:?}")
        });
    }
}
