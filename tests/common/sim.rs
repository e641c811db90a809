//! `ferric sim` as a process for tests: start it on a free port, drive its control API, read
//! its command log (the independent record of what conductors sent to each BMC).

use super::{free_port, Proc, FERRIC};
use serde_json::{json, Value};
use std::time::Duration;

/// A `ferric sim` process: Redfish BMCs (`sim-<n>`), its control API and command log.
pub struct Sim {
    pub proc: Proc,
    pub url: String,
    pub log: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl Sim {
    pub async fn start(dir: &std::path::Path, systems: usize, extra: &[&str]) -> Sim {
        let port = free_port();
        let log = dir.join("sim-commands.jsonl");
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--systems".into(),
            systems.to_string(),
            "--log".into(),
            log.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn("sim", FERRIC, &args, dir.join("sim.log"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{url}/sim/healthz")).send().await.is_ok() {
                return Sim {
                    proc,
                    url,
                    log,
                    http,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ferric sim did not start:\n{}", proc.log_tail(20));
    }

    pub fn driver_info(&self, system: usize, password: &str) -> String {
        json!({
            "redfish_address": self.url,
            "redfish_system_id": format!("/redfish/v1/Systems/sim-{system}"),
            "redfish_username": "admin",
            "redfish_password": password,
        })
        .to_string()
    }

    pub async fn behaviour(&self, system: usize, b: Value) {
        let r = self
            .http
            .put(format!("{}/sim/systems/sim-{system}/behaviour", self.url))
            .json(&b)
            .send()
            .await
            .expect("sim control API");
        assert!(r.status().is_success(), "sim behaviour {b}: {}", r.status());
    }

    pub async fn power(&self, system: usize) -> String {
        let v: Value = self
            .http
            .get(format!("{}/sim/systems/sim-{system}", self.url))
            .send()
            .await
            .expect("sim control API")
            .json()
            .await
            .expect("JSON");
        v["power"]
            .as_str()
            .or(v["PowerState"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    /// The command log as the simulator wrote it to its file.
    pub fn commands(&self, system: usize) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let sys = format!("sim-{system}");
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["system"] == sys.as_str())
            .collect()
    }
}
