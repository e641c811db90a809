//! A minimal HTTP/1.1 client (so that tests see exactly the bytes on the wire) and the Python
//! virtualenv with the real OpenStack clients (`baremetal`, openstacksdk).

use crate::process::run_bounded;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

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

/// `http` at microversion `version`, with a JSON body.
pub fn api_at(
    port: u16,
    method: &str,
    path: &str,
    version: &str,
    body: Option<&serde_json::Value>,
) -> Reply {
    let body = body.map(serde_json::Value::to_string);
    http(
        port,
        method,
        path,
        &[("X-OpenStack-Ironic-API-Version", version)],
        body.as_deref().map(str::as_bytes),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The virtualenv with python-ironicclient, openstacksdk and Ansible: the one
/// `scripts/install-deps.sh` made (`$FERRIC_PYVENV`, default `target/pyvenv`), or one made (or
/// brought up to date) here from `tests/python-requirements.txt` when it is missing or was made
/// from another version of that file (bounded by pip's own time), as that script does.
pub fn pyvenv() -> PathBuf {
    let root = crate::workspace_root();
    let venv = std::env::var_os("FERRIC_PYVENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/pyvenv"));
    let requirements = root.join("tests/python-requirements.txt");
    let wanted = std::fs::read(&requirements).expect("tests/python-requirements.txt");
    let stamp = venv.join(".requirements");
    if venv.join("bin/python").exists() && std::fs::read(&stamp).ok().as_ref() == Some(&wanted) {
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
        .arg(&requirements)
        .output()
        .expect("pip");
    assert!(
        out.status.success(),
        "pip install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("scripts/install-collections.py"))
        .arg(&requirements)
        .output()
        .expect("scripts/install-collections.py");
    assert!(
        out.status.success(),
        "installing Ansible collections failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, &wanted).expect("write the virtualenv's stamp");
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
        );
    run_bounded(cmd, timeout)
}

/// GETs `url` with `client` and reads the answer as JSON; `what` names the server in the panic.
pub async fn get_json(client: &reqwest::Client, url: &str, what: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what} does not answer GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what} answered GET {url} with no JSON: {e}"))
}
