//! Delivery of a node's power events (`events/<uuid>/<seq>`) to their receivers: the compute
//! service (Nova's `power-update`) and a generic webhook. The cursor (`delivery/<uuid>`) says how
//! far each receiver has got; it is written only by the node's owner, fenced like the status, so
//! a new owner resumes exactly where the old one stopped. Which events a receiver takes and what
//! Nova is told are pure functions here.
//!
//! Results per event live in the cursor (the last [`LaneCursor::RECENT`] per receiver), not in
//! the event records: events stay immutable once written, so a stream of them (the gateway's
//! `/v1/ferric/events`) shows each one exactly once, and one fenced write per node records a
//! whole batch.

use crate::codec::Record;
use crate::ids::NodeId;
use crate::node::EventRecord;
use crate::power::PowerState;
use serde::{Deserialize, Serialize};

/// A receiver of power events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Sink {
    /// Nova's `os-server-external-events` (`--compute-url`).
    Compute,
    /// A generic JSON webhook (`--notify-url`).
    Webhook,
}

impl Sink {
    pub const ALL: [Sink; 2] = [Sink::Compute, Sink::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Compute => "compute",
            Sink::Webhook => "webhook",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Sink::Compute => 0,
            Sink::Webhook => 1,
        }
    }

    /// Whether this receiver is sent `ev` at all. Nova is told only about nodes with an
    /// instance whose new state is on or off, as Ironic does; the webhook gets every event
    /// (standalone users have no instances).
    pub fn applies_to(self, ev: &EventRecord) -> bool {
        match self {
            Sink::Compute => nova_tag(ev).is_some(),
            Sink::Webhook => true,
        }
    }
}

/// Nova's `tag` of a `power-update` event, None when Nova is not to be told.
pub fn nova_tag(ev: &EventRecord) -> Option<&'static str> {
    ev.instance_uuid?;
    match ev.power_state? {
        PowerState::On => Some("POWER_ON"),
        PowerState::Off => Some("POWER_OFF"),
        PowerState::Error => None,
    }
}

/// How one event ended for one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Accepted (the receiver's per-event code, e.g. Nova's 200).
    Delivered { code: u16 },
    /// Refused for this event alone (Nova's 404 for an unknown instance, 400, 422): recorded
    /// and skipped, never retried.
    Refused { code: u16 },
}

impl Outcome {
    pub fn code(self) -> u16 {
        match self {
            Outcome::Delivered { code } | Outcome::Refused { code } => code,
        }
    }
}

/// The result of one event at one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResult {
    pub seq: u64,
    pub outcome: Outcome,
    /// When the receiver answered.
    pub at_ms: u64,
    /// Requests it took (1 = first try).
    pub attempts: u32,
}

/// One receiver's progress through a node's events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCursor {
    /// Every event with `seq <= done` is finished for this receiver: delivered, refused, or
    /// not for it. The next one to send is the first applicable event after it.
    pub done: u64,
    /// Results of the last events sent (oldest first, at most [`LaneCursor::RECENT`]); events
    /// that were not for this receiver have none.
    pub recent: Vec<DeliveryResult>,
}

impl LaneCursor {
    pub const RECENT: usize = 64;

    /// Records a result and moves `done` to its event (results come in order per node).
    pub fn record(&mut self, r: DeliveryResult) {
        self.done = self.done.max(r.seq);
        self.recent.push(r);
        if self.recent.len() > Self::RECENT {
            let excess = self.recent.len() - Self::RECENT;
            self.recent.drain(..excess);
        }
    }

    pub fn result_of(&self, seq: u64) -> Option<&DeliveryResult> {
        self.recent.iter().rev().find(|r| r.seq == seq)
    }
}

/// The value of `delivery/<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCursor {
    pub node: NodeId,
    pub compute: LaneCursor,
    pub webhook: LaneCursor,
    /// The conductor that wrote it, and its fencing token.
    pub conductor: String,
    pub fence: i64,
    pub updated_at_ms: u64,
}

impl DeliveryCursor {
    pub fn new(node: NodeId) -> Self {
        DeliveryCursor {
            node,
            compute: LaneCursor::default(),
            webhook: LaneCursor::default(),
            conductor: String::new(),
            fence: 0,
            updated_at_ms: 0,
        }
    }

    pub fn lane(&self, sink: Sink) -> &LaneCursor {
        match sink {
            Sink::Compute => &self.compute,
            Sink::Webhook => &self.webhook,
        }
    }

    pub fn lane_mut(&mut self, sink: Sink) -> &mut LaneCursor {
        match sink {
            Sink::Compute => &mut self.compute,
            Sink::Webhook => &mut self.webhook,
        }
    }
}

impl Record for DeliveryCursor {
    const KIND: &'static str = "delivery cursor";
    const VERSION: u8 = 1;
}

/// A request to re-send a node's pending events now (`resend/<uuid>`), written by a gateway
/// that refused a power request of the compute service because of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendRecord {
    /// The event the compute service has not acknowledged.
    pub seq: u64,
    pub by: String,
    pub at_ms: u64,
}

impl Record for ResendRecord {
    const KIND: &'static str = "resend request";
    const VERSION: u8 = 1;
}

/// What the compute service has acknowledged of a node's last power change, as the race guard
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Not sent yet, or sent and not answered with a final result.
    Pending,
    /// Delivered (or refused) at this time.
    At { at_ms: u64 },
}

/// The race guard's rule, pure. A power request of the compute service that would end the node
/// in `target` is refused when the node's last power event `last` (if it concerns an instance
/// and ended on or off) says otherwise and the compute service has not acknowledged it: still
/// pending, or acknowledged less than `grace_ms` before `now_ms`. Returns why, or None to let
/// it through.
pub fn guard(
    last: Option<&EventRecord>,
    ack: Ack,
    target: PowerState,
    now_ms: u64,
    grace_ms: u64,
) -> Option<String> {
    let ev = last?;
    let tag = nova_tag(ev)?;
    let state = ev.power_state?;
    if state == target {
        return None;
    }
    let reason = match ack {
        Ack::Pending => format!(
            "the compute service has not yet acknowledged power change {} of this node (to \"{}\", {tag}); it is being re-sent now",
            ev.seq,
            state.as_str()
        ),
        Ack::At { at_ms } if now_ms < at_ms.saturating_add(grace_ms) => format!(
            "the compute service acknowledged power change {} of this node (to \"{}\", {tag}) only {} ms ago (grace {} ms)",
            ev.seq,
            state.as_str(),
            now_ms.saturating_sub(at_ms),
            grace_ms
        ),
        Ack::At { .. } => return None,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn ev(seq: u64, instance: bool, state: Option<PowerState>) -> EventRecord {
        EventRecord {
            node: NodeId::new_random(),
            seq,
            instance_uuid: instance.then(uuid::Uuid::new_v4),
            power_state: state,
            previous_power_state: None,
            at_ms: 1000,
            conductor: "c1".into(),
        }
    }

    #[test]
    fn nova_hears_only_of_instances_turning_on_or_off() {
        assert_eq!(
            nova_tag(&ev(1, true, Some(PowerState::On))),
            Some("POWER_ON")
        );
        assert_eq!(
            nova_tag(&ev(1, true, Some(PowerState::Off))),
            Some("POWER_OFF")
        );
        assert_eq!(nova_tag(&ev(1, true, Some(PowerState::Error))), None);
        assert_eq!(nova_tag(&ev(1, true, None)), None);
        assert_eq!(nova_tag(&ev(1, false, Some(PowerState::On))), None);
        assert!(Sink::Webhook.applies_to(&ev(1, false, None)));
        assert!(!Sink::Compute.applies_to(&ev(1, false, Some(PowerState::On))));
    }

    #[test]
    fn recent_results_are_capped_and_move_done() {
        let mut lane = LaneCursor::default();
        for seq in 1..=100 {
            lane.record(DeliveryResult {
                seq,
                outcome: Outcome::Delivered { code: 200 },
                at_ms: seq,
                attempts: 1,
            });
        }
        assert_eq!(lane.done, 100);
        assert_eq!(lane.recent.len(), LaneCursor::RECENT);
        assert_eq!(lane.recent[0].seq, 100 - LaneCursor::RECENT as u64 + 1);
        assert!(lane.result_of(100).is_some());
        assert!(lane.result_of(1).is_none());
        let mut cursor = DeliveryCursor::new(NodeId::new_random());
        *cursor.lane_mut(Sink::Compute) = lane;
        assert_eq!(decode::<DeliveryCursor>(&encode(&cursor)).unwrap(), cursor);
    }

    #[test]
    fn the_guard_refuses_reversing_an_unacknowledged_change_only() {
        let on = ev(7, true, Some(PowerState::On));
        let off = PowerState::Off;
        // Pending: refused, whatever the time.
        let why = guard(Some(&on), Ack::Pending, off, 10_000, 60_000).unwrap();
        assert!(why.contains("not yet acknowledged power change 7"), "{why}");
        // Acknowledged within the grace: refused; after it: allowed.
        assert!(guard(Some(&on), Ack::At { at_ms: 5_000 }, off, 64_999, 60_000).is_some());
        assert!(guard(Some(&on), Ack::At { at_ms: 5_000 }, off, 65_000, 60_000).is_none());
        // Not a reversal: allowed.
        assert!(guard(Some(&on), Ack::Pending, PowerState::On, 0, 60_000).is_none());
        // Nothing Nova would have been told: allowed.
        for other in [
            ev(7, false, Some(PowerState::On)),
            ev(7, true, Some(PowerState::Error)),
            ev(7, true, None),
        ] {
            assert!(guard(Some(&other), Ack::Pending, off, 0, 60_000).is_none());
        }
        assert!(guard(None, Ack::Pending, off, 0, 60_000).is_none());
        // Grace 0 with an acknowledged event: allowed.
        assert!(guard(Some(&on), Ack::At { at_ms: 5_000 }, off, 5_000, 0).is_none());
    }
}
