//! The real `baremetal` CLI (python-ironicclient), many commands without paying Python's
//! start-up and the client's imports (about 1.5 s) each time: a fork server
//! (`tests/clients/baremetal_forks.py`) imports the client once and runs every command in a
//! forked child, so each command is still a fresh process running the installed client's own
//! `main`, with its own argv and environment.

use crate::http::pyvenv;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::Duration;

pub struct Baremetal {
    inner: Mutex<Server>,
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl Baremetal {
    /// Starts the fork server (in its own process group, ended with its children on drop).
    pub fn start() -> Baremetal {
        let script = crate::workspace_root().join("tests/clients/baremetal_forks.py");
        let mut cmd = Command::new(pyvenv().join("bin/python"));
        cmd.arg(script)
            // The clients cache the negotiated version per endpoint in ~/.cache.
            .env(
                "XDG_CACHE_HOME",
                std::env::temp_dir().join("ferric-test-cache"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd.spawn().expect("start the baremetal fork server");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Baremetal {
            inner: Mutex::new(Server {
                child,
                stdin,
                answers,
            }),
        }
    }

    /// Runs `baremetal <args>` with `env` added to the environment; panics (after ending the
    /// server) if it takes longer than `limit`.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
        let mut server = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let env: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let request = serde_json::json!({ "argv": args, "env": env });
        writeln!(server.stdin, "{request}").expect("write to the fork server");
        server.stdin.flush().expect("flush to the fork server");
        let line = match server.answers.recv_timeout(limit) {
            Ok(line) => line,
            Err(e) => {
                server.stop();
                panic!(
                    "`baremetal {}` gave no answer within {limit:?}: {e}",
                    args.join(" ")
                );
            }
        };
        let answer: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("fork server said {line:?}: {e}"));
        let text = |k: &str| answer[k].as_str().unwrap_or_default().as_bytes().to_vec();
        let code = answer["code"].as_i64().unwrap_or(70) as i32;
        Output {
            status: ExitStatus::from_raw((code & 0xff) << 8),
            stdout: text("stdout"),
            stderr: text("stderr"),
        }
    }
}

impl Server {
    fn stop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Baremetal {
    fn drop(&mut self) {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
    }
}

/// The exit status and both outputs of a command, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `baremetal` CLI against one gateway under `noauth`, failing the fleet's test (with the
/// gateway's log) when a command does not end as expected.
pub struct NoauthCli<'a> {
    pub fleet: &'a crate::Fleet,
    pub gw: &'a crate::Gateway,
    pub baremetal: Baremetal,
}

/// Bound on one CLI command (the client retries 409 and 503 on its own).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(180);

impl<'a> NoauthCli<'a> {
    pub fn new(fleet: &'a crate::Fleet, gw: &'a crate::Gateway) -> Self {
        NoauthCli {
            fleet,
            gw,
            baremetal: Baremetal::start(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let env = [
            ("OS_ENDPOINT", self.gw.url.as_str()),
            ("OS_AUTH_TYPE", "none"),
        ];
        self.baremetal.run(args, &env, CLI_TIMEOUT)
    }

    /// Runs a command that must succeed, returning its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            self.fleet.fail(&format!(
                "`baremetal {}` failed: {}\n{}",
                args.join(" "),
                text(&out),
                self.gw.proc.log_tail(30)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail (without the client's retries), returning its stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let mut all = vec!["--max-retries", "0"];
        all.extend(args);
        let out = self.run(&all);
        if out.status.success() {
            self.fleet.fail(&format!(
                "`baremetal {}` should have failed: {}",
                args.join(" "),
                text(&out)
            ));
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if err.contains("Unable to establish connection") {
            self.fleet.fail(&format!(
                "`baremetal {}` lost its connection: {err}\n{}",
                args.join(" "),
                self.gw.proc.log_tail(40)
            ));
        }
        err
    }

    /// A command's `-f json` output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// One field of `node show`.
    pub fn field(&self, node: &str, field: &str) -> String {
        self.ok(&["node", "show", node, "-f", "value", "-c", field])
            .trim()
            .to_string()
    }
}
