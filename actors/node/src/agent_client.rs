//! The client of the agent's command API (ironic-python-agent's `/v1/commands/`), as Ironic's
//! `agent_client.py` uses it: `POST {url}/v1/commands/?wait=false&agent_token=T` with
//! `{"name", "params"}`, `GET {url}/v1/commands/{id}` and `GET {url}/v1/commands/`. Every
//! request is bounded by the command timeout; TLS is verified per node (the CA the agent sent,
//! or `driver_info.agent_verify_ca`). Answers are read into [`CallResult`] by pure functions.
//!
//! A certificate the agent sent is trusted as itself (pinned: the server's certificate must be
//! that one, byte for byte), then as a CA. IPA's automatic TLS makes a self-signed ECDSA
//! certificate signed with SHA-512, a signature webpki does not verify; pinning needs no
//! verification of the certificate's own signature, and the handshake still proves the agent
//! holds its key.

use crate::decide::agent::{AgentCall, CallResult, CommandResult, CommandState};
use futures::future::BoxFuture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Ironic's `[agent]command_timeout`: one request to the agent, answer included.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest part of a body quoted in an error.
const MAX_QUOTE: usize = 200;
/// Longest answer read from an agent.
const MAX_ANSWER: usize = 4 << 20;

/// How a node's agent is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTarget {
    /// The agent's API (its heartbeat's `callback_url`).
    pub url: String,
    pub token: Option<String>,
    pub verify: Verify,
}

/// How the agent's TLS certificate is verified.
#[derive(Debug, Clone, PartialEq)]
pub enum Verify {
    /// Against the system's roots.
    System,
    /// Not at all (`agent_verify_ca: false`).
    Off,
    /// Against this CA only (PEM: the agent's own, or a file's content).
    Ca(String),
    /// Against the CA in this file (`agent_verify_ca: /path`).
    File(String),
}

impl Verify {
    /// The CA the agent sent with its heartbeat, else the node's `agent_verify_ca` (a boolean
    /// or a path), else the system's roots (Ironic's `_get_verify`).
    pub fn for_node(agent_ca: Option<&str>, driver_info: Option<&Value>) -> Verify {
        if let Some(pem) = agent_ca.filter(|p| !p.trim().is_empty()) {
            return Verify::Ca(pem.to_string());
        }
        match driver_info {
            Some(Value::Bool(false)) => Verify::Off,
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "false" | "0" | "no" | "off" => Verify::Off,
                "true" | "1" | "yes" | "on" | "" => Verify::System,
                _ => Verify::File(s.clone()),
            },
            _ => Verify::System,
        }
    }
}

/// The agent's command API as node actors use it (tests give scripted ones).
pub trait AgentApi: Send + Sync {
    fn call<'a>(
        &'a self,
        target: &'a AgentTarget,
        call: &'a AgentCall,
    ) -> BoxFuture<'a, CallResult>;
}

/// The real client, over HTTP(S).
pub struct HttpAgents {
    client: reqwest::Client,
    timeout: Duration,
    user_agent: String,
}

impl HttpAgents {
    /// `me`: the conductor's name, sent in `User-Agent`.
    pub fn new(me: &str, timeout: Duration) -> Result<Self, String> {
        let user_agent = format!("ferric-conductor/{me}");
        let client = builder(&user_agent, timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpAgents {
            client,
            timeout,
            user_agent,
        })
    }

    /// The client for `verify`: the shared one for the system's roots, else one of its own.
    fn client_for(&self, verify: &Verify) -> Result<reqwest::Client, String> {
        let b = builder(&self.user_agent, self.timeout);
        let b = match verify {
            Verify::System => return Ok(self.client.clone()),
            Verify::Off => b.danger_accept_invalid_certs(true),
            Verify::Ca(pem) => with_ca(b, pem.as_bytes())?,
            Verify::File(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read agent_verify_ca {path}: {e}"))?;
                with_ca(b, &pem)?
            }
        };
        b.build().map_err(|e| e.to_string())
    }
}

fn builder(user_agent: &str, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

fn with_ca(b: reqwest::ClientBuilder, pem: &[u8]) -> Result<reqwest::ClientBuilder, String> {
    let certs = pem_certificates(pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // A certificate that cannot be a trust anchor can still be pinned.
    let _ = roots.add_parsable_certificates(certs.iter().cloned());
    let roots = (!roots.is_empty())
        .then(|| {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .ok()
        })
        .flatten();
    let verifier = PinnedOrRoots {
        pinned: certs,
        roots,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(b.use_preconfigured_tls(config))
}

/// The certificates of a PEM text.
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the agent's CA certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the agent's CA certificate holds no certificate".into());
    }
    Ok(certs)
}

/// Trusts a server whose certificate is one of `pinned`, byte for byte, or one that chains to
/// them as CAs. The handshake's signature is verified as always: the server holds the key.
#[derive(Debug)]
struct PinnedOrRoots {
    pinned: Vec<CertificateDer<'static>>,
    roots: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.roots {
            Some(roots) => {
                roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::General(
                "the agent's certificate is not the one it sent".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `{url}/v1/commands/` (and the id), with the query.
pub fn command_url(
    base: &str,
    id: Option<&str>,
    query: &[(&str, &str)],
) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| format!("the agent's callback URL {base} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the agent's callback URL {base} is not http(s)"));
    }
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| format!("the agent's callback URL {base} cannot take a path"))?;
        segs.pop_if_empty().extend(["v1", "commands"]);
        match id {
            Some(id) => {
                segs.push(id);
            }
            None => {
                segs.push("");
            }
        }
    }
    url.set_query(None);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

impl AgentApi for HttpAgents {
    fn call<'a>(
        &'a self,
        target: &'a AgentTarget,
        call: &'a AgentCall,
    ) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let client = match self.client_for(&target.verify) {
                Ok(c) => c,
                Err(e) => return CallResult::Refused(e),
            };
            let token = target.token.as_deref();
            let mut query: Vec<(&str, &str)> = Vec::new();
            let (url, req) = match call {
                AgentCall::Run { name, params, .. } => {
                    query.push(("wait", "false"));
                    query.extend(token.map(|t| ("agent_token", t)));
                    let url = match command_url(&target.url, None, &query) {
                        Ok(u) => u,
                        Err(e) => return CallResult::Refused(e),
                    };
                    let body = json!({ "name": name, "params": params });
                    (url.clone(), client.post(url).json(&body))
                }
                AgentCall::Poll { id } => {
                    query.extend(token.map(|t| ("agent_token", t)));
                    let url = match command_url(&target.url, Some(id), &query) {
                        Ok(u) => u,
                        Err(e) => return CallResult::Refused(e),
                    };
                    (url.clone(), client.get(url))
                }
                AgentCall::Find { .. } => {
                    query.extend(token.map(|t| ("agent_token", t)));
                    let url = match command_url(&target.url, None, &query) {
                        Ok(u) => u,
                        Err(e) => return CallResult::Refused(e),
                    };
                    (url.clone(), client.get(url))
                }
            };
            let shown = format!("{}{}", origin(&url), url.path());
            let answer = async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let mut body = Vec::new();
                let mut resp = resp;
                while let Some(chunk) = resp.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER {
                        return Ok((status, None));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>((status, Some(body)))
            };
            match answer.await {
                Err(e) => CallResult::Unreachable(describe(&e, self.timeout)),
                Ok((_, None)) => {
                    CallResult::Refused(format!("{shown} answered more than {MAX_ANSWER} bytes"))
                }
                Ok((status, Some(body))) => read_answer(call, status, &body),
            }
        })
    }
}

fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// A transport error with its causes, never with the URL (it carries the agent token; the
/// caller names the agent).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let part = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.is_connect() => "connect failed".to_string(),
            Some(r) if r.is_request() => "request failed".to_string(),
            Some(r) if r.is_body() || r.is_decode() => "reading the answer failed".to_string(),
            Some(r) if r.is_builder() => "the request could not be built".to_string(),
            Some(_) => "HTTP error".to_string(),
            None => err.to_string(),
        };
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
        cur = err.source();
    }
    text
}

/// The start of a body, printable, for errors.
fn quote(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTE + 1)
        .collect();
    if text.chars().count() > MAX_QUOTE {
        format!("{}...", text.chars().take(MAX_QUOTE).collect::<String>())
    } else {
        text
    }
}

/// What an answer of the agent means for `call` (pure).
pub fn read_answer(call: &AgentCall, status: u16, body: &[u8]) -> CallResult {
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let fault = doc
            .as_ref()
            .and_then(|d| d.get("faultstring"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| quote(body));
        return match status {
            409 => CallResult::Busy(fault),
            401 | 403 => CallResult::Refused(format!(
                "the agent refused the agent token (HTTP {status}): {fault}"
            )),
            _ if fault.to_ascii_lowercase().contains("agent is busy") => CallResult::Busy(fault),
            _ => CallResult::Refused(format!("the agent answered HTTP {status}: {fault}")),
        };
    }
    let Some(doc) = doc else {
        return CallResult::Refused(format!("the agent's answer is not JSON: {}", quote(body)));
    };
    match call {
        AgentCall::Find { .. } => {
            let Some(list) = doc.get("commands").and_then(Value::as_array) else {
                return CallResult::Refused(format!(
                    "the agent's command list has no \"commands\": {}",
                    quote(body)
                ));
            };
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                match read_command(item) {
                    Ok(c) => out.push(c),
                    Err(e) => return CallResult::Refused(e),
                }
            }
            CallResult::Listed(out)
        }
        _ => match read_command(&doc) {
            Ok(c) => CallResult::Command(c),
            Err(e) => CallResult::Refused(e),
        },
    }
}

/// One command result of IPA's (`id`, `command_name`, `command_status`, `command_error`,
/// `command_result`).
fn read_command(v: &Value) -> Result<CommandResult, String> {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let bad = |why: &str| {
        Err(format!(
            "the agent's answer is not a command result ({why}): {}",
            quote(v.to_string().as_bytes())
        ))
    };
    let Some(id) = text("id").filter(|i| !i.is_empty()) else {
        return bad("no id");
    };
    let Some(name) = text("command_name") else {
        return bad("no command_name");
    };
    let state = match text("command_status") {
        Some("RUNNING") => CommandState::Running,
        Some("SUCCEEDED") => CommandState::Succeeded,
        Some("FAILED") => CommandState::Failed(command_error(v.get("command_error"))),
        Some("CLEAN_VERSION_MISMATCH" | "VERSION_MISMATCH") => CommandState::Failed(format!(
            "the agent's hardware managers changed (version mismatch): {}",
            command_error(v.get("command_error"))
        )),
        Some(other) => return bad(&format!("unknown command_status {other:?}")),
        None => return bad("no command_status"),
    };
    Ok(CommandResult {
        id: id.to_string(),
        name: name.to_string(),
        state,
        result: v.get("command_result").cloned().unwrap_or(Value::Null),
    })
}

/// The error text of a failed command (Ironic's `get_command_error`).
fn command_error(e: Option<&Value>) -> String {
    match e {
        None | Some(Value::Null) => "Invalid agent response: no command_error".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("details")
            .or_else(|| o.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> AgentCall {
        AgentCall::Run {
            name: "deploy.execute_deploy_step".into(),
            step: Some("deploy.write_image".into()),
            params: json!({}),
        }
    }

    #[test]
    fn urls_keep_the_agents_path_and_carry_the_token() {
        let u = command_url(
            "http://10.0.0.9:9999",
            None,
            &[("wait", "false"), ("agent_token", "t k")],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://10.0.0.9:9999/v1/commands/?wait=false&agent_token=t+k"
        );
        let u = command_url("http://127.0.0.1:8/agent/sim-3/", Some("a/b"), &[]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8/agent/sim-3/v1/commands/a%2Fb"
        );
        assert!(command_url("ftp://h", None, &[]).is_err());
        assert!(command_url("not a url", None, &[]).is_err());
    }

    #[test]
    fn ipa_answers_are_read_as_ironic_reads_them() {
        let ok = br#"{"id": "c1", "command_name": "execute_deploy_step", "command_status": "RUNNING", "command_error": null, "command_result": null}"#;
        match read_answer(&run(), 200, ok) {
            CallResult::Command(c) => {
                assert_eq!((c.id.as_str(), c.state), ("c1", CommandState::Running))
            }
            other => panic!("{other:?}"),
        }
        let failed = br#"{"id": "c1", "command_name": "x", "command_status": "FAILED", "command_error": {"type": "CommandExecutionError", "code": 500, "message": "Command execution failed", "details": "disk on fire"}, "command_result": null}"#;
        assert!(matches!(
            read_answer(&run(), 200, failed),
            CallResult::Command(CommandResult { state: CommandState::Failed(e), .. }) if e == "disk on fire"
        ));
        let busy = br#"{"faultcode": "Client", "faultstring": "Agent is busy: executing command execute_clean_step"}"#;
        assert!(matches!(
            read_answer(&run(), 409, busy),
            CallResult::Busy(_)
        ));
        let token =
            br#"{"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."}"#;
        assert!(matches!(
            read_answer(&run(), 401, token),
            CallResult::Refused(e) if e.contains("Token invalid")
        ));
        for garbage in [
            &b"<html>not an agent</html>"[..],
            b"{}",
            br#"{"id": "c", "command_name": "x", "command_status": "DANCING"}"#,
        ] {
            assert!(
                matches!(read_answer(&run(), 200, garbage), CallResult::Refused(_)),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        let find = AgentCall::Find {
            name: "deploy.execute_deploy_step".into(),
            step: None,
        };
        let list = format!(r#"{{"commands": [{}]}}"#, String::from_utf8_lossy(ok));
        assert!(
            matches!(read_answer(&find, 200, list.as_bytes()), CallResult::Listed(l) if l.len() == 1)
        );
        assert!(matches!(
            read_answer(&find, 200, ok),
            CallResult::Refused(_)
        ));
    }

    #[test]
    fn verification_follows_the_agent_then_the_node() {
        assert_eq!(
            Verify::for_node(Some("PEM"), Some(&json!(false))),
            Verify::Ca("PEM".into())
        );
        assert_eq!(Verify::for_node(None, Some(&json!(false))), Verify::Off);
        assert_eq!(Verify::for_node(None, Some(&json!("False"))), Verify::Off);
        assert_eq!(
            Verify::for_node(None, Some(&json!("/etc/ca.pem"))),
            Verify::File("/etc/ca.pem".into())
        );
        assert_eq!(Verify::for_node(None, None), Verify::System);
    }
}
