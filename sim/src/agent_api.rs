//! The HTTP face of each simulated agent's command API, where its heartbeats' default
//! `callback_url` points: IPA's `GET`/`POST /v1/commands/` and `GET /v1/commands/<id>` under
//! `/agent/<system>` (the unversioned `/commands/...` forms too), with IPA's token check, busy
//! and not-found answers and `?wait=true` (see `commands` for the commands themselves).
//!
//! While the system's agent is not running (none configured, the machine off or booted from
//! disk, the run ended by `stop_after`, death, `finalize_rescue` or `lockdown`) nothing answers:
//! a request is held unanswered until its client gives up (or the server drops it when it
//! stops), like a request to an unreachable BMC. Every request to a known system is logged
//! (`LogOp::AgentCommand`), an answered one before its answer, a held one when it ends (with
//! `status: None`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use reqwest::Url;
use serde_json::{Map, Value};

use crate::commands::{step_of, Fault};
use crate::fleet::{stopped, SimState};
use crate::log::{client_of, LogOp, Record};

/// Largest command body accepted: a deploy step may carry a configdrive inline.
pub const MAX_COMMAND_BODY_BYTES: usize = 16 * 1024 * 1024;
/// What answers instead of an agent with `garbage_commands`.
const GARBAGE: &str = "<html>not an agent</html>";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/agent/{system}/v1/commands", any(collection))
        .route("/agent/{system}/v1/commands/", any(collection))
        .route("/agent/{system}/v1/commands/{id}", any(one))
        .route("/agent/{system}/commands", any(collection))
        .route("/agent/{system}/commands/", any(collection))
        .route("/agent/{system}/commands/{id}", any(one))
}

async fn collection(
    State(state): State<Arc<SimState>>,
    Path(system): Path<String>,
    req: Request,
) -> Response {
    handle(state, system, None, req).await
}

async fn one(
    State(state): State<Arc<SimState>>,
    Path((system, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(state, system, Some(id), req).await
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    List,
    Poll(String),
    Run,
    NotAllowed,
}

impl Ask {
    fn of(method: &Method, id: Option<String>) -> Self {
        match (method, id) {
            (&Method::GET, None) => Ask::List,
            (&Method::GET, Some(id)) => Ask::Poll(id),
            (&Method::POST, None) => Ask::Run,
            _ => Ask::NotAllowed,
        }
    }
}

/// The query parameters IPA reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    agent_token: Option<String>,
    /// `wait=true` (any case): answer once the command finished.
    wait: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut q = Query::default();
        let Some(raw) = query else { return q };
        let Ok(url) = Url::parse(&format!("http://q/?{raw}")) else {
            return q;
        };
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "agent_token" if q.agent_token.is_none() => q.agent_token = Some(v.into_owned()),
                "wait" => q.wait = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        q
    }
}

/// A POST body's `name` and `params`, or IPA's 400.
type RunBody = Result<(String, Map<String, Value>), Fault>;

/// A POST body: IPA's `name` and `params`, or its 400.
fn parse_run(body: &Result<Bytes, Fault>) -> RunBody {
    let bytes = body.as_ref().map_err(Clone::clone)?;
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Fault::bad_request(&format!("Failed to decode JSON object: {e}")))?;
    match (v.get("name"), v.get("params")) {
        (Some(Value::String(name)), Some(Value::Object(params))) => {
            Ok((name.clone(), params.clone()))
        }
        _ => Err(Fault::bad_request("Missing or invalid name or params")),
    }
}

async fn read_body(body: Body) -> Result<Bytes, Fault> {
    match Limited::new(body, MAX_COMMAND_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Fault::too_large()),
        Err(_) => Err(Fault::bad_request("The request body could not be read.")),
    }
}

/// What the agent does with a request, decided under the system's lock.
#[derive(Debug)]
enum Decision {
    /// No agent is running: nothing answers.
    Hold,
    Garbage,
    Answer(StatusCode, Value),
    /// `wait=true` on running command `id` of run `run_id`.
    Wait {
        run_id: u64,
        id: String,
    },
}

/// The answer to `ask`, and the asynchronous command to finish later if one started (its run
/// and id). Effects on the agent (a command accepted, its death, its exit) happen here, under
/// the system's lock.
fn decide(
    state: &SimState,
    idx: usize,
    ask: &Ask,
    query: &Query,
    run: Option<RunBody>,
) -> (Decision, Option<(u64, String, Duration)>, Option<String>) {
    let mut s = state.lock(idx);
    let Some(agent) = s.agent.as_mut().filter(|a| a.serving()) else {
        let node = s.agent.as_ref().map(|a| a.config.node.clone());
        return (Decision::Hold, None, node);
    };
    let node = Some(agent.config.node.clone());
    if agent.config.garbage_commands {
        return (Decision::Garbage, None, node);
    }
    if !agent.token_ok(query.agent_token.as_deref()) {
        return (fault(Fault::unauthorized()), None, node);
    }
    let ok = |v: Value| Decision::Answer(StatusCode::OK, v);
    let decision = match ask {
        Ask::NotAllowed => fault(Fault::method_not_allowed()),
        Ask::List => ok(agent.commands().list_json()),
        Ask::Poll(id) => match agent.commands().get(id) {
            None => fault(Fault::not_found("Command Result", id)),
            Some(c) if query.wait && c.status == crate::commands::Status::Running => {
                Decision::Wait {
                    run_id: agent.run_id(),
                    id: id.clone(),
                }
            }
            Some(c) => ok(c.to_json()),
        },
        Ask::Run => {
            let mut time = agent.config.command_time();
            let posted = run
                .unwrap_or_else(|| Err(Fault::bad_request("Missing or invalid name or params")))
                .and_then(|(name, params)| {
                    time = agent.config.time_of(&name, &params);
                    agent.post_command(&name, &params, state.id(idx), idx)
                });
            let p = match posted {
                Ok(p) => p,
                Err(f) => return (fault(f), None, node),
            };
            let id = p.accepted.id;
            if p.died {
                // An asynchronous command was accepted (and never finishes); a synchronous one
                // dies with its agent, unanswered.
                let c = agent.commands().get(&id).map(|c| c.to_json());
                return match c {
                    Some(c) if p.accepted.is_async && !query.wait => (ok(c), None, node),
                    _ => (Decision::Hold, None, node),
                };
            }
            let later = p
                .accepted
                .is_async
                .then(|| (agent.run_id(), id.clone(), time));
            let decision = if p.accepted.is_async && query.wait {
                Decision::Wait {
                    run_id: agent.run_id(),
                    id,
                }
            } else {
                ok(agent
                    .commands()
                    .get(&id)
                    .map(|c| c.to_json())
                    .unwrap_or_default())
            };
            return (decision, later, node);
        }
    };
    (decision, None, node)
}

fn fault(f: Fault) -> Decision {
    Decision::Answer(
        StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        f.body(),
    )
}

/// Waits until command `id` of run `run_id` finished: its JSON, or `None` when it never will
/// (the run ended first, the agent was replaced, the simulator stops).
async fn wait_done(state: &SimState, idx: usize, run_id: u64, id: &str) -> Option<Value> {
    let mut closed = state.closed_signal();
    loop {
        let mut changes = {
            let s = state.lock(idx);
            let agent = s.agent.as_ref().filter(|a| a.run_id() == run_id)?;
            let c = agent.commands().get(id)?;
            if c.status != crate::commands::Status::Running {
                return Some(c.to_json());
            }
            if !agent.serving() {
                return None;
            }
            agent.subscribe()
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The agent was replaced: check once more, then give up.
                    let s = state.lock(idx);
                    let c = s.agent.as_ref().filter(|a| a.run_id() == run_id)?.commands().get(id)?;
                    return (c.status != crate::commands::Status::Running).then(|| c.to_json());
                }
            }
            _ = stopped(&mut closed) => return None,
        }
    }
}

/// Logs a held request when it ends (its client gave up, or the server dropped it).
struct Held<'a> {
    state: &'a SimState,
    record: Option<Record>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            self.state.record(r);
        }
    }
}

/// Holds a request unanswered until it is dropped; logs it then.
async fn hold(state: &SimState, record: Record) -> Response {
    let _held = Held {
        state,
        record: Some(record),
    };
    std::future::pending().await
}

fn json_answer(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// One request to system `system`'s agent API: decide, log, answer (or hold).
async fn handle(
    state: Arc<SimState>,
    system: String,
    id: Option<String>,
    req: Request,
) -> Response {
    let Some(idx) = state.index_of(&system) else {
        // No such machine: nothing of the fleet is behind this path.
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let received = SystemTime::now();
    let (parts, body) = req.into_parts();
    let ask = Ask::of(&parts.method, id);
    let query = Query::parse(parts.uri.query());
    let run = match ask {
        Ask::Run => Some(parse_run(&read_body(body).await)),
        _ => None,
    };
    let (action, detail) = match (&ask, &run) {
        (Ask::List, _) => (Some("list".to_string()), None),
        (Ask::Poll(_), _) => (Some("poll".to_string()), None),
        (Ask::Run, Some(Ok((name, params)))) => (
            Some(name.clone()),
            name.contains(".execute_")
                .then(|| params.get("step").and_then(step_of))
                .flatten(),
        ),
        _ => (None, None),
    };
    let client = client_of(
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let (decision, later, node) = decide(&state, idx, &ask, &query, run);
    let record = |status: Option<StatusCode>| Record {
        received,
        action: action.clone(),
        status: status.map(|s| s.as_u16()),
        client: client.clone(),
        node: node.clone(),
        detail: detail.clone(),
        ..Record::new(
            LogOp::AgentCommand,
            &system,
            parts.method.as_str(),
            parts.uri.path().to_string(),
        )
    };
    if let Some((run_id, id, after)) = later {
        state.finish_command_after(idx, run_id, id, after);
    }
    let (status, body) = match decision {
        Decision::Hold => return hold(&state, record(None)).await,
        Decision::Garbage => {
            // Logged before answering: a client that saw the answer can find it in the log.
            state.record(record(Some(StatusCode::OK)));
            let mut resp = (StatusCode::OK, GARBAGE).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return resp;
        }
        Decision::Answer(status, body) => (status, body),
        Decision::Wait { run_id, id } => match wait_done(&state, idx, run_id, &id).await {
            Some(body) => (StatusCode::OK, body),
            None => return hold(&state, record(None)).await,
        },
    };
    state.record(record(Some(status)));
    json_answer(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_as_ipa_reads_them() {
        assert_eq!(Query::parse(None), Query::default());
        let q = Query::parse(Some("agent_token=a%2Bb&wait=True"));
        assert_eq!(q.agent_token.as_deref(), Some("a+b"));
        assert!(q.wait);
        assert!(!Query::parse(Some("wait=1")).wait);
    }

    #[test]
    fn run_bodies_need_a_name_and_params() {
        let body = |b: &str| parse_run(&Ok(Bytes::from(b.to_string())));
        let (name, params) = body(r#"{"name": "standby.sync", "params": {}}"#).unwrap();
        assert_eq!((name.as_str(), params.len()), ("standby.sync", 0));
        for bad in [
            r#"{"name": "standby.sync"}"#,
            r#"{"name": "standby.sync", "params": []}"#,
            r#"{"name": 1, "params": {}}"#,
            r#"[]"#,
        ] {
            let f = body(bad).unwrap_err();
            assert_eq!(
                (f.status, f.text.as_str()),
                (400, "400 Bad Request: Missing or invalid name or params"),
                "{bad}"
            );
        }
        let f = body("{").unwrap_err();
        assert!(f
            .text
            .starts_with("400 Bad Request: Failed to decode JSON object"));
    }

    #[test]
    fn methods_map_to_asks() {
        assert_eq!(Ask::of(&Method::GET, None), Ask::List);
        assert_eq!(Ask::of(&Method::POST, None), Ask::Run);
        assert_eq!(
            Ask::of(&Method::GET, Some("x".into())),
            Ask::Poll("x".into())
        );
        assert_eq!(Ask::of(&Method::DELETE, None), Ask::NotAllowed);
        assert_eq!(Ask::of(&Method::POST, Some("x".into())), Ask::NotAllowed);
    }
}
