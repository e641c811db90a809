//! A client of a running `ferric sim`'s control API, for the processes that start one as a child
//! (`ferric dev`, benchmarks).

use std::time::Duration;

use crate::agent::FleetAgentSpec;

/// A whole fleet's agents in one body can take a moment to apply.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach the simulator at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the simulator at {url} answered HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// `PUT /sim/agents` on the simulator whose base URL is `sim_url` (`http://host:port`). Returns
/// how many systems' agents were configured.
pub async fn put_agents(sim_url: &str, spec: &FleetAgentSpec) -> Result<usize, RemoteError> {
    let url = format!("{}/sim/agents", sim_url.trim_end_matches('/'));
    let unreachable = |source| RemoteError::Unreachable {
        url: url.clone(),
        source,
    };
    let resp = reqwest::Client::new()
        .put(&url)
        .timeout(TIMEOUT)
        .json(spec)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(unreachable)?;
    let systems = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["systems"].as_u64());
    match systems {
        Some(n) if status == 200 => Ok(n as usize),
        _ => Err(RemoteError::Refused { url, status, body }),
    }
}
