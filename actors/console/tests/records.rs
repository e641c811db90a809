//! Console records in a real etcd: `consoles/<uuid>` on the conductor's lease while the console
//! runs (state, pid, session without secrets), gone when it stops, never written without the
//! node's ownership (its bucket here); and the cluster-wide console secret, created once. Run:
//! `cargo test -p ferric-console --test records` (needs `etcd`).

mod support;

use ferric_cluster::buckets::BucketOutcome;
use ferric_cluster::{Cluster, EtcdConfig, LeaseKeeper};
use ferric_console::{
    ConsoleActor, ConsoleArgs, ConsoleEvent, ConsoleTarget, RecordTo, SessionState, StopReason,
};
use ferric_model::{now_ms, NodeId, NodeSpec};
use ractor::Actor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

async fn cluster(etcd: &ferric_testkit::Etcd) -> Cluster {
    let mut cfg = EtcdConfig::new(&etcd.url());
    cfg.prefix = format!("/console-test-{}/", NodeId::new_random());
    Cluster::connect(&cfg).await.expect("etcd answers")
}

/// Enrolls a node and takes its bucket on `lease`; the fencing token.
async fn reserved_node(c: &Cluster, lease: i64) -> (NodeId, ferric_model::FenceToken) {
    let id = NodeId::new_random();
    let created = c
        .create_nodes(vec![NodeSpec::new(id, "fake-hardware", now_ms())])
        .await
        .unwrap();
    assert!(created[0].is_ok());
    // The test's only node: its bucket is free.
    let bucket = ferric_model::Bucket::of(&id);
    match c
        .acquire_buckets(&[bucket], lease, "c-test")
        .await
        .unwrap()
        .remove(0)
        .1
    {
        BucketOutcome::Acquired(token) => (id, token),
        other => panic!("not acquired: {other:?}"),
    }
}

async fn start(
    ctx: Arc<ferric_console::ConsoleContext>,
    node: NodeId,
    target: ConsoleTarget,
    record: RecordTo,
) -> Console {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel::<ConsoleEvent>();
    let args = ConsoleArgs {
        node,
        target,
        ctx,
        record: Some(record),
        notify: Arc::new(move |e| {
            let _ = tx.send(e);
        }),
    };
    let (actor, _) = Actor::spawn(None, ConsoleActor, args).await.unwrap();
    Console {
        node,
        actor,
        events,
    }
}

async fn record_where(
    c: &Cluster,
    node: &NodeId,
    what: &str,
    pred: impl Fn(&Option<ferric_model::ConsoleRecord>) -> bool,
) -> Option<ferric_model::ConsoleRecord> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rec = c.get_console(node).await.unwrap();
        if pred(&rec) {
            return rec;
        }
        assert!(Instant::now() < deadline, "{what}: got {rec:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_console_record_lives_on_the_lease_while_the_console_runs() {
    let etcd = ferric_testkit::Etcd::start();
    let c = cluster(&etcd).await;
    let lease = LeaseKeeper::grant(&c, Duration::from_secs(5))
        .await
        .unwrap();
    let (node, token) = reserved_node(&c, lease.id).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let to = RecordTo {
        cluster: c.clone(),
        lease: lease.id,
        token,
    };

    let mut con = start(svc.context(), node, ConsoleTarget::Fake, to.clone()).await;
    con.wait_active().await;
    let rec = record_where(&c, &node, "active record", |r| {
        r.as_ref().is_some_and(|r| r.state == "active")
    })
    .await
    .unwrap();
    assert_eq!(rec.conductor, "c-test");
    assert_eq!(rec.address, svc.local_addr().to_string());
    assert_eq!(rec.interface, "fake");
    assert_eq!(rec.pid, None);
    assert!(rec.active_since_ms.is_some() && rec.started_at_ms > 0);
    assert_eq!(c.list_consoles().await.unwrap().len(), 1);

    ConsoleActor::stop_and_wait(&con.actor, StopReason::Disabled, WAIT).await;
    assert_eq!(c.get_console(&node).await.unwrap(), None, "deleted on stop");

    // An IPMI console that cannot connect: reconnecting with its error, and no secret stored.
    let info = serde_json::json!({
        "ipmi_address": "127.0.0.1",
        "ipmi_port": 9,
        "ipmi_username": "admin",
        "ipmi_password": "hunter2-secret",
        "ipmi_cipher_suite": 3,
    });
    let mut s = settings(dir.path());
    s.open_timeout = Duration::from_secs(2);
    s.ipmitool = "/nonexistent/ipmitool".into();
    let ctx = Arc::new(ferric_console::ConsoleContext::new(s));
    let target = ConsoleTarget::resolve("ipmi", None, &info.to_string()).unwrap();
    let mut con = start(ctx, node, target, to.clone()).await;
    con.wait_state("reconnecting", |s| {
        matches!(s, SessionState::Reconnecting { .. })
    })
    .await;
    let rec = record_where(&c, &node, "reconnecting record", |r| {
        r.as_ref().is_some_and(|r| r.state == "reconnecting")
    })
    .await
    .unwrap();
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.contains("/nonexistent/ipmitool")),
        "{rec:?}"
    );
    assert!(
        rec.session.contains("-H 127.0.0.1 -p 9 -U admin"),
        "{rec:?}"
    );
    let mut kv = etcd_client::Client::connect([etcd.url().as_str()], None)
        .await
        .unwrap();
    let raw = kv.get(c.console_key(&node), None).await.unwrap();
    let bytes = raw.kvs()[0].value();
    assert!(
        !bytes.windows(7).any(|w| w == b"hunter2"),
        "the password reached etcd"
    );
    assert_eq!(raw.kvs()[0].lease(), lease.id);
    ConsoleActor::stop_and_wait(&con.actor, StopReason::OwnerChanged, WAIT).await;
    assert_eq!(c.get_console(&node).await.unwrap(), None);

    // Without the node's bucket, no record is written (fenced).
    let bucket = ferric_model::Bucket::of(&node);
    assert_eq!(c.release_buckets(&[(bucket, token)]).await.unwrap(), 1);
    let inspect = ferric_testkit::Inspect::connect(&etcd.url(), "")
        .await
        .unwrap();
    let released = inspect.revision().await.unwrap();
    let mut con = start(svc.context(), node, ConsoleTarget::Fake, to).await;
    con.wait_active().await;
    assert_eq!(c.get_console(&node).await.unwrap(), None);
    // Once the console has stopped, its recorder has tried to write every state the console
    // went through (connecting, active) and has ended: only then does absence prove anything.
    ConsoleActor::stop_and_wait(&con.actor, StopReason::Disabled, WAIT).await;
    let key = c.console_key(&node);
    let history = inspect.history().await.unwrap();
    let puts: Vec<i64> = history
        .under(&key)
        .filter(|e| e.put && e.revision > released)
        .map(|e| e.revision)
        .collect();
    assert!(
        puts.is_empty(),
        "console record written without the reservation at {puts:?}"
    );
    assert_eq!(c.get_console(&node).await.unwrap(), None);
}

#[tokio::test]
async fn the_console_secret_is_created_once_for_everyone() {
    let etcd = ferric_testkit::Etcd::start();
    let c = cluster(&etcd).await;
    let (a, b, d) = tokio::join!(c.console_secret(), c.console_secret(), c.console_secret());
    let (a, b, d) = (a.unwrap(), b.unwrap(), d.unwrap());
    assert_eq!(a, b);
    assert_eq!(a, d);
    assert!(a.len() >= 32);
    // Another process (a gateway) connecting later reads the same one.
    let other = Cluster::connect(&{
        let mut cfg = EtcdConfig::new(&etcd.url());
        cfg.prefix = c.keys().prefix().to_string();
        cfg
    })
    .await
    .unwrap();
    assert_eq!(other.console_secret().await.unwrap(), a);
    assert!(c.console_secret_key().ends_with("config/console-secret"));
}
