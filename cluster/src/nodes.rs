//! Node records and user intent: create, read, list, request power or provision actions, delete.
//! `ctl` and the gateway both go through these functions, so the same validation applies to both.
//! Every change of a spec is a compare-and-swap on its `mod_revision`.

use crate::{get_prefix, reservations::BATCH, Cluster, ClusterError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use ferric_model::provision::{on_verb, InvalidTransition};
use ferric_model::{
    decode, encode, now_ms, BootDevice, BootDeviceRequest, CodecError, FenceToken, HistoryEntry,
    NodeHistory, NodeId, NodeSpec, NodeStatus, PowerRequest, PowerTarget, ProvisionRequest, Verb,
};
use std::collections::HashMap;
use tracing::Instrument;

/// A node as readers see it: spec, status and who holds it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub spec: NodeSpec,
    /// `mod_revision` of the spec: the compare-and-swap token for changes.
    pub spec_rev: i64,
    /// The owner's last observation; the default (`enroll`, power unknown) if none yet.
    pub status: NodeStatus,
    /// Set when the status record exists but cannot be read.
    pub status_error: Option<String>,
    /// The conductor holding the reservation, if any.
    pub reservation: Option<String>,
}

impl Cluster {
    /// Enrolls nodes in batches of up to 120 per transaction. Each node is created only if its
    /// uuid and its name are free; the result for each comes back in input order.
    pub async fn create_nodes(
        &self,
        nodes: Vec<NodeSpec>,
    ) -> Result<Vec<Result<NodeId, ClusterError>>, ClusterError> {
        let mut out = Vec::with_capacity(nodes.len());
        for chunk in nodes.chunks(BATCH) {
            // etcd refuses a Txn that writes one key twice, so duplicate names within a batch are
            // caught here rather than failing the whole batch.
            let mut seen = std::collections::HashSet::new();
            let mut ops = Vec::new();
            let mut slots = Vec::new();
            for spec in chunk {
                if let Some(name) = &spec.name {
                    if !seen.insert(name.as_str().to_string()) {
                        slots.push(Err(ClusterError::NameTaken(name.to_string())));
                        continue;
                    }
                }
                let node_key = self.keys().node(&spec.id);
                let mut when = vec![Compare::create_revision(
                    node_key.clone(),
                    CompareOp::Equal,
                    0,
                )];
                let mut then = vec![TxnOp::put(node_key, encode(spec), None)];
                let mut otherwise = vec![];
                if let Some(name) = &spec.name {
                    let name_key = self.keys().name(name.as_str());
                    when.push(Compare::create_revision(
                        name_key.clone(),
                        CompareOp::Equal,
                        0,
                    ));
                    then.push(TxnOp::put(name_key.clone(), spec.id.to_string(), None));
                    otherwise.push(TxnOp::get(name_key, None));
                }
                ops.push(TxnOp::txn(
                    Txn::new().when(when).and_then(then).or_else(otherwise),
                ));
                slots.push(Ok(spec));
            }
            let resp = self.txn_all(ops).await?;
            let mut responses = resp.op_responses().into_iter();
            for slot in slots {
                let spec = match slot {
                    Ok(spec) => spec,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                let result = match responses.next() {
                    Some(TxnOpResponse::Txn(t)) if t.succeeded() => Ok(spec.id),
                    Some(TxnOpResponse::Txn(t)) => {
                        let name_taken = matches!(t.op_responses().first(), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty());
                        match (&spec.name, name_taken) {
                            (Some(name), true) => Err(ClusterError::NameTaken(name.to_string())),
                            _ => Err(ClusterError::NodeExists(spec.id.to_string())),
                        }
                    }
                    _ => Err(ClusterError::Internal(
                        "unexpected etcd txn response".into(),
                    )),
                };
                out.push(result);
            }
        }
        Ok(out)
    }

    /// Resolves a uuid or a unique name to a node id.
    pub async fn resolve(&self, id_or_name: &str) -> Result<NodeId, ClusterError> {
        if let Ok(id) = id_or_name.parse::<NodeId>() {
            return Ok(id);
        }
        let resp = self
            .kv()
            .get(self.keys().name(id_or_name), None)
            .await
            .map_err(|e| self.err(e))?;
        let kv = resp
            .kvs()
            .first()
            .ok_or_else(|| ClusterError::NodeNotFound(id_or_name.to_string()))?;
        std::str::from_utf8(kv.value())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClusterError::Corrupt {
                key: self.keys().name(id_or_name),
                source: CodecError::Corrupt {
                    kind: "name",
                    version: 0,
                    reason: "not a uuid".into(),
                },
            })
    }

    /// Reads one node (spec, status and who owns it, in one transaction).
    pub async fn get_node(&self, id_or_name: &str) -> Result<NodeView, ClusterError> {
        let id = self.resolve(id_or_name).await?;
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys().node(&id), None),
            TxnOp::get(self.keys().status(&id), None),
            TxnOp::get(self.keys().reservation(&id), None),
            TxnOp::get(self.keys().delegation(&id), None),
            TxnOp::get(self.keys().bucket(ferric_model::Bucket::of(&id)), None),
        ]);
        let resp = self.kv().txn(txn).await.map_err(|e| self.err(e))?;
        let ops = resp.op_responses();
        let first = |i: usize| match ops.get(i) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
            _ => None,
        };
        let spec_kv = first(0).ok_or_else(|| ClusterError::NodeNotFound(id_or_name.to_string()))?;
        let spec = decode::<NodeSpec>(spec_kv.value()).map_err(|source| ClusterError::Corrupt {
            key: self.keys().node(&id),
            source,
        })?;
        let (status, status_error) = status_of(first(1).as_ref().map(|kv| kv.value()));
        let value = |i: usize| first(i).map(|kv| kv.value().to_vec());
        let reservation = crate::buckets::node_holder(
            value(2).as_deref(),
            value(3).as_deref(),
            value(4).as_deref(),
        );
        Ok(NodeView {
            spec,
            spec_rev: spec_kv.mod_revision(),
            status,
            status_error,
            reservation,
        })
    }

    /// Every node, sorted by uuid. Specs that cannot be read are returned separately (key and
    /// error) so that one corrupt record never hides the rest.
    pub async fn list_nodes(&self) -> Result<(Vec<NodeView>, Vec<(String, String)>), ClusterError> {
        let (rev, specs) = get_prefix(self, &self.keys().nodes(), None, false).await?;
        let (_, statuses) = get_prefix(self, &self.keys().statuses(), Some(rev), false).await?;
        let owners = self.owners(Some(rev)).await?;
        let mut status_by: HashMap<NodeId, etcd_client::KeyValue> = statuses
            .into_iter()
            .filter_map(|kv| Some((self.keys().node_id_of(kv.key())?, kv)))
            .collect();
        let mut views = Vec::with_capacity(specs.len());
        let mut corrupt = Vec::new();
        for kv in specs {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            match decode::<NodeSpec>(kv.value()) {
                Ok(spec) => {
                    let (status, status_error) =
                        status_of(status_by.remove(&spec.id).as_ref().map(|kv| kv.value()));
                    let reservation = owners.holder(&spec.id).map(str::to_string);
                    views.push(NodeView {
                        spec,
                        spec_rev: kv.mod_revision(),
                        status,
                        status_error,
                        reservation,
                    });
                }
                Err(e) => corrupt.push((key, e.to_string())),
            }
        }
        Ok((views, corrupt))
    }

    /// Changes a node's spec with compare-and-swap, retrying on concurrent changes. `change`
    /// sees the current view and either edits the spec or refuses.
    pub async fn update_spec<F>(
        &self,
        id_or_name: &str,
        change: F,
    ) -> Result<NodeView, ClusterError>
    where
        F: FnMut(&NodeView, &mut NodeSpec) -> Result<(), ClusterError>,
    {
        self.update_spec_from(None, id_or_name, change).await
    }

    /// Like [`Cluster::update_spec`], first from `cached`, a copy of the node the caller holds
    /// (the gateway's watch-fed one) instead of a read: one etcd request instead of two when
    /// the copy is current, which it nearly always is. When the compare-and-swap fails (the
    /// spec changed since) or `change` refuses on the copy (which may be a moment behind, say
    /// a status that has just moved on), it goes on from what etcd holds, so the answer is the
    /// one `update_spec` would give.
    pub async fn update_spec_from<F>(
        &self,
        cached: Option<NodeView>,
        id_or_name: &str,
        mut change: F,
    ) -> Result<NodeView, ClusterError>
    where
        F: FnMut(&NodeView, &mut NodeSpec) -> Result<(), ClusterError>,
    {
        let mut cached = cached;
        for _ in 0..16 {
            let from_copy = cached.is_some();
            let mut view = match cached.take() {
                Some(v) => v,
                None => self.get_node(id_or_name).await?,
            };
            let span = spec_write_span(&view.spec.id);
            let spec = match span.in_scope(|| changed(&view, &mut change)) {
                Ok(spec) => spec,
                Err(_) if from_copy => continue,
                Err(e) => return Err(e),
            };
            let key = self.keys().node(&spec.id);
            let written = match self.spec_writer() {
                Some(writer) => {
                    writer
                        .cas(key, view.spec_rev, encode(&spec))
                        .instrument(span)
                        .await?
                }
                None => {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            view.spec_rev,
                        )])
                        .and_then([TxnOp::put(key, encode(&spec), None)]);
                    self.send_spec_txn(txn, span).await?
                }
            };
            if let Some(rev) = written {
                view.spec_rev = rev;
                view.spec = spec;
                return Ok(view);
            }
        }
        Err(ClusterError::Conflict(id_or_name.to_string()))
    }

    /// Like [`Cluster::update_spec`], but only while the reservation's create revision is
    /// `token`: the owner's own changes to the spec (maintenance on a fault, remediation's
    /// requests) never come from a conductor that lost the node.
    pub async fn update_spec_fenced<F>(
        &self,
        id: &NodeId,
        token: FenceToken,
        mut change: F,
    ) -> Result<NodeView, ClusterError>
    where
        F: FnMut(&NodeView, &mut NodeSpec) -> Result<(), ClusterError>,
    {
        for _ in 0..16 {
            let mut view = self.get_node(&id.to_string()).await?;
            let span = spec_write_span(id);
            let spec = span.in_scope(|| changed(&view, &mut change))?;
            let key = self.keys().node(id);
            let mut when = self.fence_compares(id, token);
            when.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                view.spec_rev,
            ));
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::put(key, encode(&spec), None)]);
            if let Some(rev) = self.send_spec_txn(txn, span).await? {
                view.spec_rev = rev;
                view.spec = spec;
                return Ok(view);
            }
            if !self.owns(id, token).await? {
                return Err(ClusterError::Fenced(id.to_string()));
            }
        }
        Err(ClusterError::Conflict(id.to_string()))
    }

    /// Sends a spec write's transaction: the new revision when its compare held.
    async fn send_spec_txn(
        &self,
        txn: Txn,
        span: tracing::Span,
    ) -> Result<Option<i64>, ClusterError> {
        let resp = self
            .kv()
            .txn(txn)
            .instrument(span)
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Asks for a power action. Refused while another power action is pending (Ironic answers
    /// 409 while a node is locked by a power operation).
    pub async fn request_power(
        &self,
        cached: Option<NodeView>,
        id_or_name: &str,
        target: PowerTarget,
        timeout_s: Option<u32>,
        requested_by: &str,
    ) -> Result<NodeView, ClusterError> {
        self.update_spec_from(
            cached,
            id_or_name,
            power_change(target, timeout_s, requested_by),
        )
        .await
    }

    /// Asks for a provision verb. The verb is checked against the node's current state here so
    /// the caller gets Ironic's error at once; the owner checks again when it takes it up.
    pub async fn request_provision(
        &self,
        cached: Option<NodeView>,
        id_or_name: &str,
        verb: Verb,
        maintenance_ok: bool,
        args: &str,
        requested_by: &str,
    ) -> Result<NodeView, ClusterError> {
        self.update_spec_from(cached, id_or_name, |view, spec| {
            provision_refusal(&view.spec, &view.status, verb, maintenance_ok)?;
            if verb == Verb::Undeploy {
                // Tear down ends the instance (Ironic's `do_node_tear_down` empties
                // `instance_info` and `instance_uuid`); recorded with the request, in one write.
                spec.instance_info = "{}".into();
                spec.instance_uuid = None;
            }
            let mut args = args.to_string();
            if matches!(verb, Verb::Deploy | Verb::Rebuild) {
                args = spec.store_configdrive(&args);
            }
            spec.provision_request = Some(ProvisionRequest {
                seq: spec.next_provision_seq(),
                verb,
                maintenance_ok,
                args,
                requested_by: requested_by.to_string(),
                requested_at_ms: now_ms(),
            });
            Ok(())
        })
        .await
    }

    /// Asks for a boot device change (Ironic's `PUT .../management/boot_device`).
    pub async fn request_boot_device(
        &self,
        cached: Option<NodeView>,
        id_or_name: &str,
        device: BootDevice,
        persistent: bool,
        requested_by: &str,
    ) -> Result<NodeView, ClusterError> {
        self.update_spec_from(cached, id_or_name, |view, spec| {
            if let Some(p) = view.spec.pending_boot_device(&view.status) {
                return Err(ClusterError::Busy {
                    node: view.spec.id.to_string(),
                    what: format!(
                        "boot device change to \"{}\" is still in progress",
                        p.device.as_str()
                    ),
                });
            }
            spec.boot_device_request = Some(BootDeviceRequest {
                seq: spec.next_boot_seq(),
                device,
                persistent,
                requested_by: requested_by.to_string(),
                requested_at_ms: now_ms(),
            });
            Ok(())
        })
        .await
    }

    /// A node's history (oldest first); empty when nothing was recorded yet. An unreadable
    /// entry is shown in its place as an entry that says so (severity ERROR), logged, and never
    /// hides the rest.
    pub async fn node_history(&self, id_or_name: &str) -> Result<NodeHistory, ClusterError> {
        let id = self.resolve(id_or_name).await?;
        let (_, kvs) = get_prefix(self, &self.keys().history(&id), None, false).await?;
        let mut entries: Vec<HistoryEntry> = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            match decode::<HistoryEntry>(kv.value()) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let key = String::from_utf8_lossy(kv.key());
                    tracing::error!(%key, error = %e, "unreadable history entry");
                    // Placed at the time of the entry before it, so that sorting keeps it there.
                    let at_ms = entries.last().map_or(0, |p| p.at_ms);
                    entries.push(unreadable_history_entry(&key, &e, at_ms));
                }
            }
        }
        Ok(NodeHistory { entries })
    }

    /// Deletes a node's spec, name and status (and history) in one transaction, if nothing
    /// changed since it was read. `check` may refuse (e.g. a state Ironic does not delete in).
    /// A node whose spec cannot be read is deleted too, its name freed: `check` then sees a
    /// stand-in spec (see [`crate::repair::NodeRecords::view`]) with the real status.
    pub async fn delete_node<F>(&self, id_or_name: &str, check: F) -> Result<(), ClusterError>
    where
        F: Fn(&NodeView) -> Result<(), ClusterError>,
    {
        self.delete_node_records(id_or_name, |_, view| check(view))
            .await
            .map(|_| ())
    }
}

/// The entry shown in place of a history record that cannot be decoded.
pub fn unreadable_history_entry(key: &str, error: &CodecError, at_ms: u64) -> HistoryEntry {
    HistoryEntry {
        at_ms,
        kind: ferric_model::HistoryKind::Other("unreadable".into()),
        action: "unreadable history entry".into(),
        requested_by: ferric_model::Requester::Other("ferric".into()),
        conductor: String::new(),
        result: format!("the record {key} cannot be decoded ({error}); it is kept as it is"),
        severity: "ERROR".into(),
    }
}

fn status_of(bytes: Option<&[u8]>) -> (NodeStatus, Option<String>) {
    match bytes.map(decode::<NodeStatus>) {
        None => (NodeStatus::default(), None),
        Some(Ok(s)) => (s, None),
        Some(Err(e)) => (NodeStatus::default(), Some(e.to_string())),
    }
}

/// The spec change of a power request, shared by the single and the bulk path.
/// The span of one spec write (compare-and-swap) when traces are exported, else a disabled one.
fn spec_write_span(id: &NodeId) -> tracing::Span {
    if ferric_telemetry::enabled() {
        tracing::info_span!("etcd spec write", node = %id, otel.kind = "client")
    } else {
        tracing::Span::none()
    }
}

/// The spec `change` makes of the view's, stamped, with the requests it added traced to the
/// current span (the write's).
fn changed<F>(view: &NodeView, change: &mut F) -> Result<NodeSpec, ClusterError>
where
    F: FnMut(&NodeView, &mut NodeSpec) -> Result<(), ClusterError>,
{
    let mut spec = view.spec.clone();
    change(view, &mut spec)?;
    spec.updated_at_ms = now_ms();
    spec.trace_requests(
        &view.spec,
        ferric_telemetry::current_traceparent().as_deref(),
    );
    Ok(spec)
}

/// The node is busy with an earlier request.
fn busy(spec: &NodeSpec, what: String) -> ClusterError {
    ClusterError::Busy {
        node: spec.id.to_string(),
        what,
    }
}

/// Why `verb` cannot be asked of a node with this spec and status now, as the API refuses it
/// (the same checks the request itself makes; the dashboard shows them on disabled actions).
pub fn provision_refusal(
    spec: &NodeSpec,
    status: &NodeStatus,
    verb: Verb,
    maintenance_ok: bool,
) -> Result<(), ClusterError> {
    if let Some(p) = spec.pending_provision(status) {
        let what = format!(
            "provision action \"{}\" has not been taken up yet",
            p.verb.as_str()
        );
        return Err(busy(spec, what));
    }
    if spec.maintenance {
        // Ironic refuses these in maintenance (400); manual cleaning may be asked for
        // explicitly, to diagnose a faulty node without returning it to the pool.
        let refused = match verb {
            Verb::Deploy | Verb::Rebuild => Some("deploying"),
            Verb::Clean if !maintenance_ok => Some("cleaning (without maintenance_ok)"),
            Verb::Rescue | Verb::Unrescue => Some("rescue operations"),
            Verb::Service => Some("servicing"),
            _ => None,
        };
        if let Some(what) = refused {
            return Err(ClusterError::Invalid(format!(
                "node {} is in maintenance: {what} is refused",
                spec.id
            )));
        }
    }
    on_verb(status.provision_state, verb)
        .map_err(|e: InvalidTransition| ClusterError::InvalidState(e))?;
    if spec.protected && matches!(verb, Verb::Undeploy | Verb::Rebuild) {
        return Err(ClusterError::Invalid(format!(
            "Node {} is protected and cannot be undeployed, rebuilt or deleted",
            spec.id
        )));
    }
    Ok(())
}

/// Why a power action to `target` cannot be asked of a node with this spec and status now, as
/// the API refuses it.
pub fn power_refusal(
    spec: &NodeSpec,
    status: &NodeStatus,
    target: PowerTarget,
) -> Result<(), ClusterError> {
    if let Some(p) = spec.pending_power(status) {
        let what = format!(
            "power action \"{}\" is still in progress",
            p.target.as_str()
        );
        return Err(busy(spec, what));
    }
    if spec.disable_power_off && matches!(target, PowerTarget::Off | PowerTarget::SoftOff) {
        return Err(ClusterError::Invalid(format!(
            "node {} has disable_power_off set: power off is refused",
            spec.id
        )));
    }
    Ok(())
}

pub(crate) fn power_change(
    target: PowerTarget,
    timeout_s: Option<u32>,
    requested_by: &str,
) -> impl Fn(&NodeView, &mut NodeSpec) -> Result<(), ClusterError> + '_ {
    move |view, spec| {
        power_refusal(&view.spec, &view.status, target)?;
        spec.power_request = Some(PowerRequest {
            seq: spec.next_power_seq(),
            target,
            timeout_s,
            requested_by: requested_by.to_string(),
            requested_at_ms: now_ms(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_history_entry_reads_as_an_error_entry_in_its_place() {
        let err = decode::<HistoryEntry>(b"garbage").unwrap_err();
        let e = unreadable_history_entry("/ferric/history/x/00000000000000000003", &err, 42);
        assert_eq!(e.at_ms, 42);
        assert_eq!(e.severity, "ERROR");
        assert!(e.result.contains("/ferric/history/x/00000000000000000003"));
        assert!(e.result.contains("cannot be decoded"));
        // It encodes like any entry, so every reader of history can show it.
        assert_eq!(decode::<HistoryEntry>(&encode(&e)).unwrap(), e);
    }
}
