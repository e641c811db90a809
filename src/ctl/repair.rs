//! `ferric ctl node repair`: a node's raw records in etcd, which of them cannot be decoded and
//! why, and the two ways out the API offers too: delete the node (freeing its name), or
//! replace its spec with a JSON node body validated as `POST /v1/nodes` validates one.
//! Non-interactive (flags, no prompts), because scripts and tests run it.

use anyhow::Context;
use ferric_cluster::repair::{continue_sequences, spec_parts, NodeRecords, RawRecord};
use ferric_cluster::{Cluster, ClusterError};
use ferric_gateway::node_input::{self, Drivers};
use ferric_gateway::version::ApiVersion;
use ferric_model::{
    decode, now_ms, Bucket, ConsoleRecord, DelegationRecord, ProvisionState, ReservationRecord,
};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct RepairArgs {
    /// The node's uuid, or its name in the name index.
    node: String,
    /// Delete the node: spec, status, history and its name index entry (as `DELETE
    /// /v1/nodes/<id>`; refused in the provision states the API refuses, unless --force).
    #[arg(long, conflicts_with = "spec_file")]
    delete: bool,
    /// With --delete: delete whatever the node's status says.
    #[arg(long, requires = "delete")]
    force: bool,
    /// Replace the spec with this JSON node body (the body of `POST /v1/nodes`; its uuid, if
    /// any, must be the node's). Keeps the creation time and pending requests when the old
    /// spec is readable.
    #[arg(long, value_name = "FILE")]
    spec_file: Option<PathBuf>,
}

/// Provision states the API deletes nodes in (outside maintenance), as Ironic.
fn delete_allowed(s: ProvisionState) -> bool {
    matches!(
        s,
        ProvisionState::Manageable | ProvisionState::Enroll | ProvisionState::AdoptFailed
    )
}

pub(super) async fn run(cluster: &Cluster, args: RepairArgs) -> anyhow::Result<()> {
    let records = cluster.node_records(&args.node).await?;
    print_records(&records)?;
    if args.delete {
        let force = args.force;
        let id = cluster
            .delete_node_records(&records.id.to_string(), |_, view| {
                let state = view.status.provision_state;
                if !force && !view.spec.maintenance && !delete_allowed(state) {
                    return Err(ClusterError::Invalid(format!(
                        "node {} is in provision state \"{}\"; the API deletes nodes only in manageable, enroll or adopt failed (or in maintenance); --force deletes it anyway",
                        view.spec.id,
                        state.as_str()
                    )));
                }
                Ok(())
            })
            .await?;
        out!("deleted node {id} (spec, status, history and name index entries)");
    } else if let Some(path) = &args.spec_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let drivers = Drivers {
            known: ferric_gateway::GatewayConfig::default().known_drivers,
            live: Default::default(),
        };
        let given = node_input::create(&body, ApiVersion::latest(), &drivers, now_ms())
            .map_err(|e| anyhow::anyhow!("invalid node body: {}", e.faultstring()))?;
        if body.get("uuid").is_some_and(|u| !u.is_null()) && given.id != records.id {
            anyhow::bail!(
                "the body names node {}, this is node {}; the uuid of a node cannot change",
                given.id,
                records.id
            );
        }
        let view = cluster
            .replace_spec(&records.id.to_string(), |r| {
                let mut spec = given.clone();
                spec.id = r.id;
                let (status, _) = r.status();
                match r.spec() {
                    Some(Ok(old)) => {
                        spec.created_at_ms = old.created_at_ms;
                        continue_sequences(&mut spec, Some(&old), &status);
                    }
                    _ => continue_sequences(&mut spec, None, &status),
                }
                Ok::<_, ClusterError>(spec)
            })
            .await?;
        out!(
            "replaced the spec of node {} (revision {})",
            view.spec.id,
            view.spec_rev
        );
    }
    Ok(())
}

fn print_records(r: &NodeRecords) -> anyhow::Result<()> {
    out!("node {}", r.id);
    match r.spec() {
        None => out!("spec: none (the node does not exist)"),
        Some(Ok(spec)) => {
            out!("spec: ok");
            out!(
                "  name {} driver {} maintenance {}",
                spec.name.as_ref().map_or("-", |n| n.as_str()),
                spec.driver,
                spec.maintenance
            );
        }
        Some(Err(e)) => {
            out!("spec: UNREADABLE: {e}");
            if let Some(raw) = &r.spec {
                let parts = spec_parts(&r.id, &raw.value);
                out!(
                    "  readable: name {} driver {}",
                    parts.name.as_ref().map_or("-", |n| n.as_str()),
                    parts.driver.as_deref().unwrap_or("-")
                );
            }
        }
    }
    print_raw(r.spec.as_ref())?;
    match (&r.status, r.status()) {
        (None, _) => out!("status: none (no conductor has written one yet)"),
        (Some(_), (_, Some(e))) => out!("status: UNREADABLE: {e}"),
        (Some(_), (st, None)) => out!(
            "status: ok\n  power {} provision {} last_error {}",
            st.power_state.map_or("None", |p| p.as_str()),
            st.provision_state.as_str(),
            st.last_error.as_deref().unwrap_or("-")
        ),
    }
    print_raw(r.status.as_ref())?;
    let holder = |raw: &RawRecord| match decode::<ReservationRecord>(&raw.value) {
        Ok(res) => format!("held by {}", res.conductor),
        Err(e) => format!("UNREADABLE: {e}"),
    };
    let bucket = Bucket::of(&r.id);
    match &r.bucket {
        None => out!("bucket {bucket}: held by nobody (its nodes wait for a conductor)"),
        Some(raw) => out!("bucket {bucket}: {}", holder(raw)),
    }
    print_raw(r.bucket.as_ref())?;
    if let Some(raw) = &r.delegation {
        match decode::<DelegationRecord>(&raw.value) {
            Ok(d) if d.conductor.is_empty() => {
                out!("delegation: being taken back by the bucket's holder")
            }
            Ok(d) => out!("delegation: handed on to {}", d.conductor),
            Err(e) => out!("delegation: UNREADABLE: {e}"),
        }
        print_raw(Some(raw))?;
    }
    match &r.reservation {
        None => out!("reservation: none"),
        Some(raw) => out!("reservation: {}", holder(raw)),
    }
    print_raw(r.reservation.as_ref())?;
    out!(
        "owner: {}",
        r.view()
            .and_then(|v| v.reservation)
            .unwrap_or_else(|| "nobody".into())
    );
    if let Some(raw) = &r.console {
        match decode::<ConsoleRecord>(&raw.value) {
            Ok(_) => out!("console: ok"),
            Err(e) => out!("console: UNREADABLE: {e}"),
        }
        print_raw(Some(raw))?;
    }
    if r.names.is_empty() {
        out!("name index: no entry points at this node");
    }
    for n in &r.names {
        out!(
            "name index: {} -> {}",
            n.key,
            String::from_utf8_lossy(&n.value)
        );
    }
    let unreadable_history = r
        .history
        .iter()
        .filter(|h| decode::<ferric_model::HistoryEntry>(&h.value).is_err())
        .map(|h| h.key.as_str())
        .collect::<Vec<_>>();
    out!(
        "history: {} entries, {} unreadable{}",
        r.history.len(),
        unreadable_history.len(),
        if unreadable_history.is_empty() {
            String::new()
        } else {
            format!(" ({})", unreadable_history.join(", "))
        }
    );
    if matches!(r.spec(), Some(Err(_))) {
        out!(
            "to repair: --delete (frees the name), or --spec-file FILE with a JSON node body (as for POST /v1/nodes)"
        );
    }
    Ok(())
}

/// A record's key, revision and bytes (hex, and as text where printable), the first 256 bytes.
fn print_raw(raw: Option<&RawRecord>) -> anyhow::Result<()> {
    let Some(raw) = raw else {
        return Ok(());
    };
    let shown = &raw.value[..raw.value.len().min(256)];
    let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = shown
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let more = if raw.value.len() > shown.len() {
        format!(" (first {} of {} bytes)", shown.len(), raw.value.len())
    } else {
        String::new()
    };
    out!("  key {} mod_revision {}{more}", raw.key, raw.mod_rev);
    out!("  raw hex  {hex}");
    out!("  raw text {text}");
    Ok(())
}
