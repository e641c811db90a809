//! ironic-python-agent's own command API (`tests/clients/ipa_agent_api.py`: IPA's werkzeug
//! application and command machinery, with stand-in extensions that touch no hardware), as a
//! process of the test. The conductor drives it like a ramdisk's agent; the commands it was
//! given are its record.

use crate::http::pyvenv;
use crate::ports::free_port;
use crate::process::Proc;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct IpaAgent {
    pub proc: Proc,
    pub port: u16,
    /// Where the agent's token goes (the ramdisk's lookup writes it; until then every request
    /// is refused).
    pub token_file: PathBuf,
    calls: PathBuf,
    /// Where its certificate is, when it serves HTTPS.
    tls: Option<PathBuf>,
}

impl IpaAgent {
    /// Starts the agent's API on a free loopback port and waits (bounded) until it listens.
    pub fn start(dir: &Path, name: &str) -> IpaAgent {
        Self::start_with(dir, name, false)
    }

    /// The same over HTTPS, with the self-signed certificate IPA's automatic TLS makes
    /// (`cert_pem` is what the agent sends as `agent_verify_ca`).
    pub fn start_tls(dir: &Path, name: &str) -> IpaAgent {
        Self::start_with(dir, name, true)
    }

    fn start_with(dir: &Path, name: &str, tls: bool) -> IpaAgent {
        let port = free_port();
        let token_file = dir.join(format!("{name}.token"));
        let calls = dir.join(format!("{name}.calls.jsonl"));
        let script = crate::workspace_root().join("tests/clients/ipa_agent_api.py");
        let tls_dir = dir.join(format!("{name}.tls"));
        let mut args = vec![
            script.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--calls".into(),
            calls.display().to_string(),
        ];
        if tls {
            std::fs::create_dir_all(&tls_dir).expect("the agent's TLS directory");
            args.push("--tls-dir".into());
            args.push(tls_dir.display().to_string());
        }
        let proc = Proc::spawn(
            name,
            pyvenv().join("bin/python"),
            &args,
            dir.join(format!("{name}.log")),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "IPA's agent API did not start:\n{}",
                proc.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        IpaAgent {
            proc,
            port,
            token_file,
            calls,
            tls: tls.then_some(tls_dir),
        }
    }

    /// The URL the agent advertises as its `callback_url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The agent's TLS certificate (PEM), when it serves HTTPS.
    pub fn cert_pem(&self) -> Option<String> {
        let dir = self.tls.as_ref()?;
        std::fs::read_to_string(dir.join("agent.crt")).ok()
    }

    /// Sets the token the agent's API accepts.
    pub fn set_token(&self, token: &str) {
        std::fs::write(&self.token_file, token).expect("write the agent's token file");
    }

    /// The commands the agent accepted, in order, as `name` or `name interface.step`.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|c| match c["step"].as_str() {
                Some(step) => format!("{} {step}", c["name"].as_str().unwrap_or("?")),
                None => c["name"].as_str().unwrap_or("?").to_string(),
            })
            .collect()
    }
}
