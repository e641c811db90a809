//! A throwaway single-member etcd on free loopback ports (never 2379/2380), killed and reaped on
//! drop. Shared by the gateway's router tests and the console crate's record tests (by path).

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind port 0");
        if p != 2379 && p != 2380 {
            return p;
        }
    }
}

pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (c, p) = (free_port(), free_port());
            let url = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
            let child = Command::new("etcd")
                .args([
                    "--name",
                    "t",
                    "--data-dir",
                    &dir.path().join("data").to_string_lossy(),
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster",
                    &format!("t={peer}"),
                    "--initial-cluster-state",
                    "new",
                    "--heartbeat-interval",
                    "10",
                    "--election-timeout",
                    "100",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start etcd (apt-get install etcd-server)");
            let mut etcd = Etcd {
                child,
                url,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = etcd.child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(etcd.url.trim_start_matches("http://")).is_ok() {
                    return etcd;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = etcd.child.kill();
            let _ = etcd.child.wait();
        }
        panic!("etcd did not start");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
