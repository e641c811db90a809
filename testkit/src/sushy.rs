//! sushy-tools' Redfish emulator (`sushy-emulator --fake`), a Redfish BMC nobody here wrote,
//! from the test virtualenv; its log records every request it served.

use crate::{free_port, Proc};
use serde_json::Value;
use std::time::Duration;

/// sushy's fake driver applies power changes after a random 1 to 11 s.
pub const SUSHY_WAIT: Duration = Duration::from_secs(60);

pub struct Sushy {
    proc: Proc,
    pub url: String,
    http: reqwest::Client,
}

impl Sushy {
    pub async fn start(dir: &std::path::Path) -> Sushy {
        let exe = crate::http::pyvenv().join("bin/sushy-emulator");
        assert!(
            exe.exists(),
            "{} is missing: run scripts/install-deps.sh (it installs tests/python-requirements.txt)",
            exe.display()
        );
        let port = free_port();
        let proc = Proc::spawn(
            "sushy",
            &exe,
            &[
                "--fake".into(),
                "-i".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            dir.join("sushy.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{url}/redfish/v1/Systems")).send().await {
                if r.status().is_success() {
                    return Sushy { proc, url, http };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "sushy-emulator did not answer on {url}:\n{}",
            proc.log_tail(30)
        );
    }

    pub async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.url);
        crate::http::get_json(&self.http, &url, "sushy-emulator").await
    }

    pub async fn first_system(&self) -> String {
        let v = self.get("/redfish/v1/Systems").await;
        v["Members"][0]["@odata.id"]
            .as_str()
            .expect("a system")
            .to_string()
    }
}

impl Sushy {
    /// The emulator's log: one line per request it served (and its start-up lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }

    /// The requests the emulator served so far that name a system (`/redfish/v1/Systems/...`),
    /// as its log lines; the test's own `Sushy::get`s among them.
    pub fn system_requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("/redfish/v1/Systems/"))
            .map(str::to_string)
            .collect()
    }
}
