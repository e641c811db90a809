//! What goes over the wire, pure: the bodies sent to Nova and to the webhook, and what their
//! answers mean per event. Tested on bytes.

use ferric_model::delivery::nova_tag;
use ferric_model::{EventRecord, Outcome};
use serde_json::{json, Value};

/// The microversion header Nova needs for `power-update` (added in compute 2.76).
pub const NOVA_VERSION_HEADER: (&str, &str) = ("OpenStack-API-Version", "compute 2.76");

/// Why a whole request failed (every event in it is retried later, after a backoff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("{url} answered HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} refused the credentials (HTTP {status}): {detail}")]
    Auth {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} answered something that is not a valid reply: {detail}")]
    Garbage { url: String, detail: String },
}

impl SendError {
    /// The metric label of this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Connect { .. } => "connect",
            SendError::Timeout { .. } => "timeout",
            SendError::Status { status, .. } if *status == 404 => "not_found",
            SendError::Status { status, .. } if *status >= 500 => "server_error",
            SendError::Status { .. } => "client_error",
            SendError::Auth { .. } => "auth",
            SendError::Garbage { .. } => "garbage",
        }
    }
}

/// Nova's `POST /os-server-external-events` body: only `name`, `server_uuid` and `tag` (the
/// schema allows no other field; `status` defaults to completed).
pub fn nova_body(events: &[&EventRecord]) -> Value {
    let list: Vec<Value> = events
        .iter()
        .filter_map(|ev| {
            Some(json!({
                "name": "power-update",
                "server_uuid": ev.instance_uuid?.to_string(),
                "tag": nova_tag(ev)?,
            }))
        })
        .collect();
    json!({ "events": list })
}

/// The webhook's body: the same events with Ferric's sequence numbers.
pub fn webhook_body(events: &[&EventRecord]) -> Value {
    let list: Vec<Value> = events.iter().map(|ev| event_json(ev)).collect();
    json!({ "events": list })
}

/// One event as Ferric shows it (the webhook, `ctl node events --json`).
pub fn event_json(ev: &EventRecord) -> Value {
    json!({
        "node": ev.node.to_string(),
        "seq": ev.seq,
        "instance_uuid": ev.instance_uuid.map(|u| u.to_string()),
        "power_state": ev.power_state.map(|p| p.as_str()),
        "previous_power_state": ev.previous_power_state.map(|p| p.as_str()),
        "at_ms": ev.at_ms,
        "conductor": ev.conductor,
    })
}

/// What Nova's answer says about each event sent (in the order sent): `Some(outcome)` when
/// final, None when the event is to be sent again. `Err` when the answer as a whole is a
/// failure. Nova answers 200 when every event was accepted, 207 with a `code` per event when
/// some were not (404: unknown instance; 400/422: not dispatchable), and 404
/// `itemNotFound` when no event was accepted.
pub fn nova_outcomes(
    url: &str,
    status: u16,
    body: &[u8],
    sent: &[&EventRecord],
) -> Result<Vec<Option<Outcome>>, SendError> {
    let garbage = |detail: String| SendError::Garbage {
        url: url.to_string(),
        detail,
    };
    let text = || snippet(body);
    match status {
        200 | 207 => {
            let doc: Value = serde_json::from_slice(body)
                .map_err(|e| garbage(format!("not JSON ({e}): {}", text())))?;
            let list = doc["events"]
                .as_array()
                .ok_or_else(|| garbage(format!("no \"events\" list: {}", text())))?;
            if list.len() != sent.len() {
                return Err(garbage(format!(
                    "{} results for {} events",
                    list.len(),
                    sent.len()
                )));
            }
            list.iter()
                .zip(sent)
                .map(|(r, ev)| {
                    let same = ev
                        .instance_uuid
                        .is_some_and(|u| r["server_uuid"].as_str() == Some(&u.to_string()));
                    if !same {
                        return Err(garbage(format!(
                            "results do not match the events sent: {}",
                            text()
                        )));
                    }
                    // 200 without a per-event code: accepted (older Novas).
                    let code = match r.get("code") {
                        None if status == 200 => 200,
                        None => return Ok(None),
                        Some(c) => match c.as_u64() {
                            Some(c) => c as u16,
                            None => return Err(garbage(format!("code {c} is not a number"))),
                        },
                    };
                    Ok(per_event(code))
                })
                .collect()
        }
        404 => {
            let doc: Option<Value> = serde_json::from_slice(body).ok();
            if doc
                .as_ref()
                .is_some_and(|d| d.get("itemNotFound").is_some())
            {
                // "No instances found for any event": every event refused with 404.
                Ok(vec![Some(Outcome::Refused { code: 404 }); sent.len()])
            } else {
                Err(SendError::Status {
                    url: url.to_string(),
                    status,
                    detail: format!(
                        "not Nova's answer to external events; is the compute URL the compute endpoint (ending in /v2.1)? {}",
                        text()
                    ),
                })
            }
        }
        401 | 403 => Err(SendError::Auth {
            url: url.to_string(),
            status,
            detail: text(),
        }),
        _ => Err(SendError::Status {
            url: url.to_string(),
            status,
            detail: text(),
        }),
    }
}

/// Nova's per-event code: 2xx accepted, 4xx refused for good, anything else sent again.
fn per_event(code: u16) -> Option<Outcome> {
    match code {
        200..=299 => Some(Outcome::Delivered { code }),
        400..=499 => Some(Outcome::Refused { code }),
        _ => None,
    }
}

/// The webhook: any 2xx accepts every event of the request.
pub fn webhook_outcomes(
    url: &str,
    status: u16,
    body: &[u8],
    sent: usize,
) -> Result<Vec<Option<Outcome>>, SendError> {
    match status {
        200..=299 => Ok(vec![Some(Outcome::Delivered { code: status }); sent]),
        401 | 403 => Err(SendError::Auth {
            url: url.to_string(),
            status,
            detail: snippet(body),
        }),
        _ => Err(SendError::Status {
            url: url.to_string(),
            status,
            detail: snippet(body),
        }),
    }
}

/// The start of a reply body, printable, for error messages.
pub use ferric_keystone::snippet;

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_model::{NodeId, PowerState};

    fn ev(seq: u64, state: PowerState) -> EventRecord {
        EventRecord {
            node: NodeId::new_random(),
            seq,
            instance_uuid: Some(uuid::Uuid::new_v4()),
            power_state: Some(state),
            previous_power_state: None,
            at_ms: 1,
            conductor: "c1".into(),
        }
    }

    #[test]
    fn nova_gets_exactly_three_fields_per_event() {
        let a = ev(1, PowerState::On);
        let b = ev(2, PowerState::Off);
        let body = nova_body(&[&a, &b]);
        let list = body["events"].as_array().unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1);
        assert_eq!(list.len(), 2);
        for (item, (e, tag)) in list.iter().zip([(&a, "POWER_ON"), (&b, "POWER_OFF")]) {
            let obj = item.as_object().unwrap();
            assert_eq!(obj.len(), 3, "{item}");
            assert_eq!(item["name"], "power-update");
            assert_eq!(item["tag"], tag);
            assert_eq!(item["server_uuid"], e.instance_uuid.unwrap().to_string());
        }
    }

    #[test]
    fn novas_answers_per_event() {
        let a = ev(1, PowerState::On);
        let b = ev(2, PowerState::Off);
        let sent = [&a, &b];
        let ua = a.instance_uuid.unwrap();
        let ub = b.instance_uuid.unwrap();
        let ok = format!(
            r#"{{"events":[{{"name":"power-update","server_uuid":"{ua}","tag":"POWER_ON","status":"completed","code":200}},{{"name":"power-update","server_uuid":"{ub}","tag":"POWER_OFF","status":"failed","code":404}}]}}"#
        );
        assert_eq!(
            nova_outcomes("u", 207, ok.as_bytes(), &sent).unwrap(),
            vec![
                Some(Outcome::Delivered { code: 200 }),
                Some(Outcome::Refused { code: 404 })
            ]
        );
        // Only the code: a random UUID may contain "404" too.
        let retry = ok.replace(r#""code":404"#, r#""code":500"#);
        assert_ne!(retry, ok);
        assert_eq!(
            nova_outcomes("u", 207, retry.as_bytes(), &sent).unwrap()[1],
            None
        );
        let all_unknown =
            br#"{"itemNotFound": {"message": "No instances found for any event", "code": 404}}"#;
        assert_eq!(
            nova_outcomes("u", 404, all_unknown, &sent).unwrap(),
            vec![Some(Outcome::Refused { code: 404 }); 2]
        );
        let wrong_url = nova_outcomes("u", 404, b"<html>Not Found</html>", &sent).unwrap_err();
        assert_eq!(wrong_url.kind(), "not_found");
        assert!(wrong_url.to_string().contains("/v2.1"), "{wrong_url}");
        for garbage in [&b"not json"[..], b"{}", br#"{"events": []}"#] {
            let e = nova_outcomes("u", 200, garbage, &sent).unwrap_err();
            assert_eq!(e.kind(), "garbage", "{e}");
        }
        let swapped = format!(
            r#"{{"events":[{{"server_uuid":"{ub}","code":200}},{{"server_uuid":"{ua}","code":200}}]}}"#
        );
        assert_eq!(
            nova_outcomes("u", 200, swapped.as_bytes(), &sent)
                .unwrap_err()
                .kind(),
            "garbage"
        );
        assert_eq!(
            nova_outcomes("u", 401, b"", &sent).unwrap_err().kind(),
            "auth"
        );
        assert_eq!(
            nova_outcomes("u", 503, b"", &sent).unwrap_err().kind(),
            "server_error"
        );
    }

    #[test]
    fn webhook_carries_ferrics_sequence() {
        let a = ev(9, PowerState::On);
        let body = webhook_body(&[&a]);
        assert_eq!(body["events"][0]["seq"], 9);
        assert_eq!(body["events"][0]["power_state"], "power on");
        assert_eq!(webhook_outcomes("u", 204, b"", 3).unwrap().len(), 3);
        assert!(webhook_outcomes("u", 500, b"", 3).is_err());
    }

    #[test]
    fn snippets_are_short_and_printable() {
        assert_eq!(snippet(b"a\nb"), "a b");
        assert!(snippet(&[b'x'; 500]).ends_with("..."));
    }
}
