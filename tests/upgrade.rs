//! Issue 15: an upgrade from the previous release's records. `tests/fixtures/upgrade-534a6b7.json`
//! holds every (unleased) key a cluster run by the release at commit 534a6b7 (node status format
//! 2, without `agent_link`) wrote, and that release's gateway answers for its nodes and ports;
//! `scripts/make-upgrade-fixture.sh` made it with that release's real binary. Here the keys go
//! into a fresh etcd, this build's conductors and gateway start on them, and the test checks
//! etcd's keys and the API: every node is owned again, the API answers what the old gateway
//! answered, statuses are rewritten in format 3 only when written, a power request and a
//! provision verb on old nodes work end to end, and a status in a format newer than this build
//! knows leaves its node alone (no panic, no write).
//!
//! And the rolling upgrade from the release that reserved every node one by one (before
//! buckets): while a conductor of that release is live, this build's conductors hold nothing,
//! and they take the fleet when it has left.

use base64::Engine as _;
use ferric_model::{
    decode, encode, now_ms, ConductorRecord, EventRecord, NodeStatus, PowerState, ProvisionState,
    Record,
};
use ferric_testkit::http::api_at;
use ferric_testkit::{Fleet, Gateway, Snapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const FIXTURE: &str = include_str!("fixtures/upgrade-534a6b7.json");

/// Fields of a node answer that legitimately differ after the upgrade: who holds the node now,
/// when it was last written, and link lists (they carry the answering gateway's address).
const NODE_FIELDS_IGNORED: &[&str] = &[
    "updated_at",
    "reservation",
    "conductor",
    "links",
    "ports",
    "portgroups",
    "states",
    "volume",
];

/// Fields both releases answer that must be among the compared ones (so that none of them
/// drops out of the comparison unnoticed).
const NODE_FIELDS_REQUIRED: &[&str] = &[
    "uuid",
    "name",
    "driver",
    "driver_info",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "maintenance",
    "maintenance_reason",
    "fault",
    "last_error",
    "console_enabled",
    "instance_uuid",
    "instance_info",
    "properties",
    "extra",
    "owner",
    "description",
    "resource_class",
    "traits",
    "created_at",
    "provision_updated_at",
    "automated_clean",
    "protected",
    "retired",
    "deploy_interface",
    "power_interface",
];

const PORT_FIELDS_IGNORED: &[&str] = &["links", "updated_at"];
const PORT_FIELDS_REQUIRED: &[&str] = &[
    "uuid",
    "address",
    "node_uuid",
    "pxe_enabled",
    "physical_network",
    "extra",
    "local_link_connection",
    "created_at",
];

struct OldKey {
    key: String,
    value: Vec<u8>,
}

fn old_keys(fixture: &Value) -> Vec<OldKey> {
    fixture["keys"]
        .as_array()
        .expect("fixture keys")
        .iter()
        .map(|kv| OldKey {
            key: kv["key"].as_str().expect("key").to_string(),
            value: base64::engine::general_purpose::STANDARD
                .decode(kv["value"].as_str().expect("value"))
                .expect("base64 value"),
        })
        .collect()
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {list:?}"))
}

/// Compares the fields both answers have (minus `ignored`); returns the compared field names.
fn same_fields(
    what: &str,
    old: &Value,
    new: &Value,
    ignored: &[&str],
    required: &[&str],
) -> Result<BTreeSet<String>, String> {
    let (old, new) = (old.as_object().unwrap(), new.as_object().unwrap());
    let both: BTreeSet<String> = old
        .keys()
        .filter(|k| new.contains_key(*k) && !ignored.contains(&k.as_str()))
        .cloned()
        .collect();
    let missing: Vec<&&str> = required.iter().filter(|f| !both.contains(**f)).collect();
    if !missing.is_empty() {
        return Err(format!("{what}: fields not answered by both: {missing:?}"));
    }
    let differ: Vec<String> = both
        .iter()
        .filter(|k| old[*k] != new[*k])
        .map(|k| format!("{k}: old {} new {}", old[k], new[k]))
        .collect();
    if differ.is_empty() {
        Ok(both)
    } else {
        Err(format!("{what} differs: {}", differ.join("; ")))
    }
}

fn status_version(snap: &Snapshot, id: &str) -> Option<u8> {
    snap.statuses.get(id).map(|kv| kv.value[0])
}

fn keys_under(snap: &Snapshot, prefix: &str, kind: &str, id: &str) -> Vec<String> {
    let want = format!("{prefix}{kind}/{id}/");
    snap.other
        .iter()
        .filter(|kv| kv.key.starts_with(&want))
        .map(|kv| kv.key[want.len()..].to_string())
        .collect()
}

#[tokio::test]
async fn records_of_the_previous_release_are_served_by_this_build() {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let version = fixture["api_version"].as_str().expect("api_version");
    let old_nodes = fixture["api"]["nodes"].as_array().expect("nodes").clone();
    let old_ports = fixture["api"]["ports"].as_array().expect("ports").clone();
    let id_of = |name: &str| {
        by_name(&old_nodes, name)["uuid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (available, active, tagged, maint) = (
        id_of("upg-available"),
        id_of("upg-active"),
        id_of("upg-tagged"),
        id_of("upg-maint"),
    );

    let mut fleet = Fleet::new("upgrade").await;
    // The previous release's records, as it left them; one status (upg-maint's) as a newer
    // release would have written it: a format version above this build's.
    let newer = NodeStatus::VERSION + 1;
    let mut kv = fleet.inspect.client().kv_client();
    let keys = old_keys(&fixture);
    for k in &keys {
        let mut value = k.value.clone();
        if k.key == format!("status/{maint}") {
            value[0] = newer;
        }
        kv.put(fleet.inspect.key(&k.key), value, None)
            .await
            .expect("put a fixture key");
    }
    for k in keys.iter().filter(|k| k.key.starts_with("status/")) {
        assert_eq!(
            k.value[0], 2,
            "{}: the fixture's statuses are format 2",
            k.key
        );
    }
    let loaded = fleet.snapshot().await.expect("snapshot");
    let maint_status = loaded.statuses[&maint].clone();
    fleet.note(&format!(
        "{} fixture keys loaded at revision {}",
        keys.len(),
        loaded.revision
    ));

    fleet.start_conductor("c1", &["--lease-ttl", "2"]);
    fleet.start_conductor("c2", &["--lease-ttl", "2"]);
    let pids = [fleet.conductor("c1").pid(), fleet.conductor("c2").pid()];
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&fleet, dir.path(), "gw1", &[]);

    // Every node is owned again: a reservation held by a live conductor, in etcd.
    fleet
        .wait_until(
            Duration::from_secs(30),
            "every node of the fixture is reserved by c1 or c2",
            async || {
                let snap = fleet.snapshot().await?;
                for n in &old_nodes {
                    let id = n["uuid"].as_str().unwrap();
                    match snap.holder(id) {
                        Some((h, _)) if h == "c1" || h == "c2" => {}
                        other => return Err(format!("{}: holder {other:?}", n["name"])),
                    }
                }
                Ok(())
            },
        )
        .await;
    fleet.note("every node reserved");

    // The API answers every node and port as the old gateway did (same microversion), for the
    // fields both have. The node whose status is newer answers its spec and says why.
    let (nodes, compared) = fleet
        .wait_until(
            Duration::from_secs(20),
            "the gateway answers every node and port as the previous release did",
            async || {
                let r = api_at(gw.port, "GET", "/v1/nodes?detail=True", version, None);
                let nodes = r.json()["nodes"].as_array().cloned().unwrap_or_default();
                if nodes.len() != old_nodes.len() {
                    return Err(format!("{} nodes: {}", nodes.len(), r.body));
                }
                let mut compared = BTreeSet::new();
                for old in &old_nodes {
                    let name = old["name"].as_str().unwrap();
                    let new = by_name(&nodes, name);
                    if name == "upg-maint" {
                        continue;
                    }
                    compared =
                        same_fields(name, old, new, NODE_FIELDS_IGNORED, NODE_FIELDS_REQUIRED)?;
                }
                let r = api_at(gw.port, "GET", "/v1/ports?detail=True", version, None);
                let ports = r.json()["ports"].as_array().cloned().unwrap_or_default();
                if ports.len() != old_ports.len() {
                    return Err(format!("{} ports: {}", ports.len(), r.body));
                }
                for old in &old_ports {
                    let new = ports
                        .iter()
                        .find(|p| p["uuid"] == old["uuid"])
                        .ok_or_else(|| format!("port {} missing", old["uuid"]))?;
                    same_fields(
                        &format!("port {}", old["address"]),
                        old,
                        new,
                        PORT_FIELDS_IGNORED,
                        PORT_FIELDS_REQUIRED,
                    )?;
                }
                Ok((nodes, compared))
            },
        )
        .await;
    fleet.note(&format!("node fields compared: {compared:?}"));

    // A status nobody had to write since is still format 2 in etcd, and reads (above).
    let snap = fleet.snapshot().await.expect("snapshot");
    let untouched: Vec<&String> = snap
        .statuses
        .iter()
        .filter(|(id, kv)| {
            **id != maint
                && loaded
                    .statuses
                    .get(*id)
                    .is_some_and(|o| o.mod_rev == kv.mod_rev)
        })
        .map(|(id, _)| id)
        .collect();
    fleet.ensure(!untouched.is_empty(), || {
        "the new conductors rewrote every old status without being asked to".into()
    });
    for id in &untouched {
        assert_eq!(status_version(&snap, id), Some(2), "untouched status {id}");
    }
    for (id, kv) in &snap.statuses {
        let v = kv.value[0];
        fleet.ensure(v == 2 || v == 3 || *id == maint, || {
            format!("status {id} has format {v}")
        });
    }

    // A power request on an old node, end to end: the API takes it, the owner carries it out and
    // writes the status in format 3, an event continues the node's outbox sequence and a history
    // entry continues its history.
    let before_events = keys_under(&snap, &fleet.prefix, "events", &available);
    let before_history = keys_under(&snap, &fleet.prefix, "history", &available);
    let r = api_at(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{available}/states/power"),
        version,
        Some(&json!({"target": "power on"})),
    );
    assert_eq!(r.status, 202, "power on: {}", r.body);
    let status = fleet
        .wait_status(
            &available,
            Duration::from_secs(30),
            "upg-available is powered on",
            |s| match s.power_state {
                Some(PowerState::On) if s.target_power_state.is_none() => Ok(()),
                _ => Err(format!("{:?} → {:?}", s.power_state, s.target_power_state)),
            },
        )
        .await;
    let snap = fleet.snapshot().await.expect("snapshot");
    assert_eq!(status_version(&snap, &available), Some(NodeStatus::VERSION));
    assert_eq!(status_version(&snap, &available), Some(3));
    let events = keys_under(&snap, &fleet.prefix, "events", &available);
    let new_events: Vec<&String> = events
        .iter()
        .filter(|k| !before_events.contains(k))
        .collect();
    assert_eq!(
        new_events.len(),
        1,
        "one new event after {before_events:?}: {events:?}"
    );
    let last_old: u64 = before_events
        .iter()
        .map(|k| k.parse().unwrap())
        .max()
        .unwrap();
    assert_eq!(new_events[0].parse::<u64>().unwrap(), last_old + 1);
    assert_eq!(status.event_seq, last_old + 1);
    let event_kv = snap
        .other
        .iter()
        .find(|kv| {
            kv.key
                .ends_with(&format!("events/{available}/{}", new_events[0]))
        })
        .unwrap();
    let event: EventRecord = decode(&event_kv.value).expect("event");
    assert_eq!(
        (event.power_state, event.previous_power_state),
        (Some(PowerState::On), Some(PowerState::Off))
    );
    assert!(
        ["c1", "c2"].contains(&event.conductor.as_str()),
        "{event:?}"
    );
    let history = keys_under(&snap, &fleet.prefix, "history", &available);
    let last_old_history: u64 = before_history
        .iter()
        .map(|k| k.parse().unwrap())
        .max()
        .unwrap();
    assert!(
        history
            .iter()
            .any(|k| k.parse::<u64>().unwrap() == last_old_history + 1),
        "history continues after {last_old_history}: {history:?}"
    );
    fleet.note("power on done");

    // A provision verb on the node the old release deployed: undeploy tears it down (cleaning
    // with the fake deploy interface) to available, and empties its instance fields.
    let r = api_at(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{active}/states/provision"),
        version,
        Some(&json!({"target": "deleted"})),
    );
    assert_eq!(r.status, 202, "undeploy: {}", r.body);
    fleet
        .wait_status(
            &active,
            Duration::from_secs(30),
            "upg-active is torn down to available",
            |s| match (s.provision_state, s.target_provision_state) {
                (ProvisionState::Available, None) => Ok(()),
                other => Err(format!("{other:?} last_error {:?}", s.last_error)),
            },
        )
        .await;
    let spec = fleet.spec(&active).await;
    assert!(spec.instance_uuid.is_none(), "{spec:?}");
    assert!(matches!(spec.instance_info.as_str(), "" | "{}"), "{spec:?}");
    let snap = fleet.snapshot().await.expect("snapshot");
    assert_eq!(status_version(&snap, &active), Some(3));
    let node = api_at(
        gw.port,
        "GET",
        &format!("/v1/nodes/{active}"),
        version,
        None,
    )
    .json();
    assert_eq!(node["provision_state"], "available", "{node}");
    assert_eq!(node["instance_uuid"], Value::Null, "{node}");
    fleet.note("undeploy done");

    // The node whose status is newer: listed with its spec and an error that says why; a power
    // request on it is never carried out; its status key is never written; no conductor died.
    let shown = by_name(&nodes, "upg-maint");
    let old_shown = by_name(&old_nodes, "upg-maint");
    for f in [
        "uuid",
        "name",
        "driver",
        "maintenance",
        "maintenance_reason",
        "created_at",
    ] {
        assert_eq!(shown[f], old_shown[f], "upg-maint {f}");
    }
    let err = shown["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(&format!("format version {newer}")),
        "upg-maint last_error: {shown}"
    );
    let r = api_at(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{maint}/states/power"),
        version,
        Some(&json!({"target": "power off"})),
    );
    // The gateway may refuse it (it cannot read the status either) or queue it; never a 5xx.
    fleet.note(&format!("power off of upg-maint: {} {}", r.status, r.body));
    assert!(
        r.status < 500,
        "power off of upg-maint: {} {}",
        r.status,
        r.body
    );
    // A request to a served node made after it is done first; then upg-maint's must still be
    // untouched (its owner's mailbox is past it).
    let r = api_at(
        gw.port,
        "PUT",
        &format!("/v1/nodes/{tagged}/states/provision"),
        version,
        Some(&json!({"target": "provide"})),
    );
    assert_eq!(r.status, 202, "provide: {}", r.body);
    fleet
        .wait_status(
            &tagged,
            Duration::from_secs(30),
            "upg-tagged is provided",
            |s| match (s.provision_state, s.target_provision_state) {
                (ProvisionState::Available, None) => Ok(()),
                other => Err(format!("{other:?} last_error {:?}", s.last_error)),
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = fleet.snapshot().await.expect("snapshot");
    let now = &snap.statuses[&maint];
    assert_eq!(
        (now.mod_rev, &now.value),
        (maint_status.mod_rev, &maint_status.value),
        "the status written in a newer format was not touched"
    );
    assert_eq!(
        keys_under(&snap, &fleet.prefix, "history", &maint),
        keys_under(&loaded, &fleet.prefix, "history", &maint),
        "no history entry for the node with a newer status"
    );
    assert_eq!(
        keys_under(&snap, &fleet.prefix, "events", &maint),
        keys_under(&loaded, &fleet.prefix, "events", &maint),
        "no event for the node with a newer status"
    );
    let holder = snap.holder(&maint).map(|(h, _)| h);
    let log = match holder.as_deref() {
        Some(h @ ("c1" | "c2")) => fleet.conductor(h).log(),
        other => fleet.fail(&format!("upg-maint holder {other:?}")),
    };
    fleet.ensure(
        log.contains("status written by a newer version; not touching this node"),
        || "the owner of upg-maint does not say why it leaves the node alone".into(),
    );
    for (name, pid) in ["c1", "c2"].iter().zip(pids) {
        let c = fleet.conductor(name);
        fleet.ensure(c.is_running() && c.pid() == pid, || {
            format!("conductor {name} did not stay up")
        });
        fleet.ensure(!c.log().contains("panicked"), || {
            format!("conductor {name} panicked")
        });
    }
    fleet.note("done");
}

/// A conductor of the release before buckets reserves every node it places on itself without
/// looking at bucket keys, so a bucket holder and it could both drive one node. Its membership
/// record (format 3, without `buckets`; here a stand-in on a lease of its own, as that release
/// wrote it) makes this build's conductors let go of every bucket and every handed-on node, and
/// its leaving makes them take the fleet again. Checked in etcd's keys.
#[tokio::test]
async fn conductors_hold_nothing_while_one_of_the_release_before_buckets_is_live() {
    let mut fleet = Fleet::new("upgrade-mixed").await;
    let ids = fleet.create_nodes(12, &[]).await;
    // c2 serves no fake-hardware: the nodes of its buckets are handed on to c1, so both the
    // bucket table and the delegate's table are exercised.
    fleet.start_conductor("c1", &["--lease-ttl", "2", "--drivers", "fake-hardware"]);
    fleet.start_conductor("c2", &["--lease-ttl", "2", "--drivers", "ipmi"]);
    let all_held_by_c1 = async |what: &str| {
        fleet
            .wait_until(Duration::from_secs(30), what, async || {
                let snap = fleet.snapshot().await?;
                if snap.buckets.len() != 4096 {
                    return Err(format!("{} bucket keys", snap.buckets.len()));
                }
                for id in &ids {
                    match snap.holder(id) {
                        Some((h, _)) if h == "c1" => {}
                        other => return Err(format!("{id}: holder {other:?}")),
                    }
                }
                Ok(snap)
            })
            .await
    };
    let snap = all_held_by_c1("every bucket held and every node run by c1").await;
    let handed_on = ids
        .iter()
        .filter(|id| snap.delegations.contains_key(*id))
        .count();
    fleet.note(&format!("{handed_on} of 12 nodes handed on from c2 to c1"));

    // The stand-in of a conductor of the previous release joins.
    let client = fleet.inspect.client();
    let lease = client
        .lease_client()
        .grant(60, None)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("grant the stand-in's lease: {e}")))
        .id();
    let old = ConductorRecord {
        name: "old".into(),
        address: "127.0.0.1:1".into(),
        console_address: "127.0.0.1:1".into(),
        drivers: vec!["fake-hardware".into()],
        conductor_group: String::new(),
        version: "0.1.0".into(),
        started_at_ms: now_ms(),
        lease_id: lease,
        running: 0,
        sync: Default::default(),
        hardware: Vec::new(),
        buckets: false,
    };
    // Format 3: the same fields without the last one.
    let mut v3 = encode(&old);
    v3.pop();
    v3[0] = 3;
    fleet.ensure(
        decode::<ConductorRecord>(&v3).ok() == Some(old.clone()),
        || "the stand-in's record does not read back as a conductor of an older build".into(),
    );
    client
        .kv_client()
        .put(
            fleet.inspect.key("conductors/old"),
            v3,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("register the stand-in: {e}")));

    fleet
        .wait_until(
            Duration::from_secs(30),
            "no bucket key and no reservation left",
            async || {
                let snap = fleet.snapshot().await?;
                if !snap.buckets.is_empty() || !snap.reservations.is_empty() {
                    return Err(format!(
                        "{} bucket keys, {} reservations",
                        snap.buckets.len(),
                        snap.reservations.len()
                    ));
                }
                if let Some(id) = ids.iter().find(|id| snap.holder(id).is_some()) {
                    return Err(format!("{id} is still held"));
                }
                Ok(())
            },
        )
        .await;
    fleet.note("c1 and c2 hold nothing while the older conductor is live");
    for name in ["c1", "c2"] {
        let c = fleet.conductor(name);
        fleet.ensure(c.is_running(), || format!("{name} did not stay up"));
        fleet.ensure(
            c.log().contains("conductors of an older build are live"),
            || format!("{name} does not say why it holds nothing"),
        );
    }

    // The older conductor leaves (here: its lease ends, as when it stops).
    client
        .lease_client()
        .revoke(lease)
        .await
        .unwrap_or_else(|e| fleet.fail(&format!("revoke the stand-in's lease: {e}")));
    all_held_by_c1("after the older conductor left, every bucket held and every node run by c1")
        .await;
    for name in ["c1", "c2"] {
        fleet.ensure(!fleet.conductor(name).log().contains("panicked"), || {
            format!("conductor {name} panicked")
        });
    }
    fleet.note("done");
}
