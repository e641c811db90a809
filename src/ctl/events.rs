//! `ferric ctl node events`: a node's power events (the outbox) and how far each got at the
//! compute service and the webhook, read from the events and the delivery cursor.

use ferric_cluster::Cluster;
use serde_json::{json, Value};
use std::io::Write;

/// How far one event got at one receiver, in words.
fn delivery_state(
    cursor: Option<&ferric_model::DeliveryCursor>,
    sink: ferric_model::Sink,
    ev: &ferric_model::EventRecord,
) -> (String, Value) {
    use ferric_model::Outcome;
    if !sink.applies_to(ev) {
        return ("not applicable".into(), json!({"state": "not applicable"}));
    }
    let Some(lane) = cursor.map(|c| c.lane(sink)) else {
        return ("pending".into(), json!({"state": "pending"}));
    };
    if ev.seq > lane.done {
        return ("pending".into(), json!({"state": "pending"}));
    }
    match lane.result_of(ev.seq) {
        Some(r) => {
            let word = match r.outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Refused { .. } => "refused",
            };
            (
                format!(
                    "{word} {} at {} ({} tries)",
                    r.outcome.code(),
                    r.at_ms,
                    r.attempts
                ),
                json!({"state": word, "code": r.outcome.code(), "at_ms": r.at_ms, "attempts": r.attempts}),
            )
        }
        None => ("done".into(), json!({"state": "done"})),
    }
}

/// `ctl node events`: the outbox of one node with the delivery state of each event.
pub(super) async fn run(cluster: &Cluster, node: &str, as_json: bool) -> anyhow::Result<()> {
    use ferric_model::Sink;
    let id = cluster.resolve(node).await?;
    let read = cluster.node_events(&id).await?;
    let cursor = match &read.cursor {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("the delivery cursor cannot be read: {e}");
            None
        }
        None => None,
    };
    let mut list = Vec::new();
    for (seq, ev) in &read.events {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                if as_json {
                    list.push(json!({"seq": seq, "error": e.to_string()}));
                } else {
                    out!("{seq:>6}  <unreadable event: {e}>");
                }
                continue;
            }
        };
        let (compute, compute_json) = delivery_state(cursor, Sink::Compute, ev);
        let (hook, hook_json) = delivery_state(cursor, Sink::Webhook, ev);
        if as_json {
            list.push(json!({
                "seq": ev.seq,
                "at_ms": ev.at_ms,
                "instance_uuid": ev.instance_uuid.map(|u| u.to_string()),
                "power_state": ev.power_state.map(|p| p.as_str()),
                "previous_power_state": ev.previous_power_state.map(|p| p.as_str()),
                "conductor": ev.conductor,
                "compute": compute_json,
                "webhook": hook_json,
            }));
        } else {
            out!(
                "{:>6}  {}  {:<9} -> {:<9}  instance {}  by {}  compute: {}  webhook: {}",
                ev.seq,
                ev.at_ms,
                ev.previous_power_state.map_or("None", |p| p.as_str()),
                ev.power_state.map_or("None", |p| p.as_str()),
                ev.instance_uuid.map_or("-".to_string(), |u| u.to_string()),
                ev.conductor,
                compute,
                hook
            );
        }
    }
    if as_json {
        let doc = json!({
            "node": id.to_string(),
            "events": list,
            "cursor": cursor.map(|c| json!({
                "compute_done": c.compute.done,
                "webhook_done": c.webhook.done,
                "conductor": c.conductor,
                "fence": c.fence,
                "updated_at_ms": c.updated_at_ms,
            })),
        });
        out!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        match cursor {
            Some(c) => out!(
                "cursor: compute done to {}, webhook done to {}; written by {} (fence {}) at {}",
                c.compute.done,
                c.webhook.done,
                c.conductor,
                c.fence,
                c.updated_at_ms
            ),
            None => out!("cursor: none yet (nothing delivered)"),
        }
    }
    Ok(())
}
