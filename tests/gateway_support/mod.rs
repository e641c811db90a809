//! Shared by the gateway's multi-process tests: `ferric gateway` processes on free ports, a
//! minimal HTTP/1.1 client (so that tests see exactly the bytes on the wire), and the Python
//! virtualenv with the real OpenStack clients (`baremetal`, openstacksdk).

#![allow(dead_code)]

use crate::common::{free_port, Fleet, Proc, FERRIC};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `ferric gateway`.
pub struct Gateway {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
}

impl Gateway {
    /// Starts a gateway of `fleet` with extra arguments and waits (bounded) for `/healthz`.
    pub fn start(fleet: &Fleet, dir: &Path, name: &str, extra: &[&str]) -> Gateway {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--etcd".into(),
            fleet.url(),
            "--prefix".into(),
            fleet.prefix.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--name".into(),
            name.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(name, FERRIC, &args, dir.join(format!("{name}.log")));
        let gw = Gateway {
            proc,
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(port, "GET", "/healthz", &[], None) {
                if r.status == 200 {
                    return gw;
                }
            }
            if !gw.proc.is_running() || Instant::now() > deadline {
                panic!(
                    "gateway {name} did not become healthy\n{}",
                    gw.proc.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `faultstring` of Ironic's error body.
    pub fn fault(&self) -> String {
        let outer = self.json();
        let inner: serde_json::Value = serde_json::from_str(
            outer["error_message"]
                .as_str()
                .unwrap_or_else(|| panic!("not an Ironic error: {}", self.body)),
        )
        .expect("error_message holds JSON");
        inner["faultstring"].as_str().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A request over a fresh connection (`Connection: close`), bounded by a 30 s timeout.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    s.write_all(req.as_bytes())?;
    // A server may answer (413) before reading a large body; a failed write is not the end.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Reply {
        status,
        head: head.to_string(),
        body,
    })
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// `http` at the latest microversion.
pub fn api(port: u16, method: &str, path: &str, body: Option<&str>) -> Reply {
    http(
        port,
        method,
        path,
        &[("X-OpenStack-Ironic-API-Version", "latest")],
        body.map(str::as_bytes),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The virtualenv with python-ironicclient and openstacksdk: the one `scripts/install-deps.sh`
/// made (`$FERRIC_PYVENV`, default `target/pyvenv`), or one made here from
/// `tests/python-requirements.txt` when it is missing (bounded by pip's own time).
pub fn pyvenv() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("FERRIC_PYVENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/pyvenv"));
    if venv.join("bin/baremetal").exists() && venv.join("bin/python").exists() {
        return venv;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(status.success(), "cannot create {}", venv.display());
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(root.join("tests/python-requirements.txt"))
        .output()
        .expect("pip");
    assert!(
        out.status.success(),
        "pip install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

/// Runs a program of the virtualenv with `env`, killed after `timeout`.
pub fn run_venv(program: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let venv = pyvenv();
    let mut cmd = Command::new(venv.join("bin").join(program));
    cmd.args(args)
        .envs(env.iter().copied())
        // The clients cache the negotiated version per endpoint in ~/.cache; keep it per test.
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("ferric-test-cache"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let pid = child.id();
    // Output is read by a thread so that a chatty client never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{program} {} did not finish in {timeout:?}", args.join(" "));
        }
    }
}
