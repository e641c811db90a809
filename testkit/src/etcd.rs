//! A throwaway single-member etcd in a temporary directory on free loopback ports (never
//! 2379/2380), ready once it answers a linearizable read, killed and reaped on drop.

use crate::ports::free_port;
use crate::process::{file_tail, Proc};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's etcd 3.4 (overridable with `FERRIC_TEST_ETCD`).
pub const ETCD: &str = "/usr/bin/etcd";

fn etcd_program() -> PathBuf {
    std::env::var_os("FERRIC_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ETCD))
}

/// A throwaway single-member etcd in a temporary directory on free loopback ports.
pub struct Etcd {
    proc: Option<Proc>,
    client_port: u16,
    peer_port: u16,
    starts: usize,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits (bounded) until it is ready (see [`ready`]).
    pub fn start() -> Etcd {
        let mut last_error = String::new();
        // A port found free can be taken by someone else before etcd binds it: try new ones.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("ferric-etcd-")
                .tempdir()
                .expect("create etcd tempdir");
            let mut etcd = Etcd {
                proc: None,
                client_port: free_port(),
                peer_port: free_port(),
                starts: 0,
                dir,
            };
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn port(&self) -> u16 {
        self.client_port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.is_running())
    }

    fn launch(&mut self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        // Fast elections: a restarted etcd serves again within a second.
        let args: Vec<String> = vec![
            "--name=t".into(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=t={peer}"),
            "--initial-cluster-state=new".into(),
            "--heartbeat-interval=10".into(),
            "--election-timeout=100".into(),
        ];
        self.starts += 1;
        let proc = Proc::spawn(
            &format!("etcd#{}", self.starts),
            etcd_program(),
            &args,
            self.log_path(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready(self.client_port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if let Some(status) = proc.try_exit() {
                return Err(format!(
                    "etcd exited with {status} before it was ready\n{}",
                    proc.log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("etcd not ready after 20 s\n{}", proc.log_tail(30)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (bounded; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.signal(Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Drop kills it if it is still running.
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("etcd did not restart: {e}");
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- etcd (port {}) log {}:\n{}",
            self.client_port,
            self.log_path().display(),
            file_tail(&self.log_path(), lines)
        )
    }
}

/// True once etcd on `port` serves a linearizable range read (which needs an elected leader
/// and an applied log), through its JSON gateway: a bare HTTP/1.0 request, so that readiness
/// does not depend on the client library under test.
pub fn ready(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // Key "ferric-testkit-ready", base64.
    let body = r#"{"key":"ZmVycmljLXRlc3RraXQtcmVhZHk="}"#;
    let req = format!(
        "POST /v3/kv/range HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") && answer.replace(' ', "").contains("\"revision\":")
}

/// Writes `delegations/<id>` naming `to` under `prefix`, unfenced: a test's stand-in for a
/// bucket's holder handing the node on, so that `to` may reserve the node itself
/// (`Cluster::acquire`). Conductors never write delegations this way.
pub async fn hand_on(url: &str, prefix: &str, id: &ferric_model::NodeId, to: &str) {
    let mut client = etcd_client::Client::connect([url], None)
        .await
        .expect("etcd answers");
    let key = format!("{}/delegations/{id}", prefix.trim_end_matches('/'));
    let value = ferric_model::encode(&ferric_model::DelegationRecord {
        conductor: to.to_string(),
    });
    client.put(key, value, None).await.expect("delegation put");
}
