//! The `ipmitool` console: `ipmitool -I lanplus ... sol activate` as a child process.
//!
//! - Opening: `sol deactivate` first (a stale session of a dead conductor holds the BMC's one
//!   SOL payload; "already de-activated" counts as done), then `sol activate` with plain pipes:
//!   with a pty, a dying parent leaves the payload busy for the BMC's session timeout; with
//!   pipes, ipmitool sees its stdin close and deactivates the payload itself. The session is
//!   active once ipmitool prints `[SOL Session operational`; a throwaway CR follows (ipmi_sim
//!   and some BMCs drop the first keystroke of a session).
//! - The password goes through `IPMI_PASSWORD` (`-E`), never the command line (anyone can read
//!   `/proc/*/cmdline`), and is never logged; error texts are scrubbed of it.
//! - The child leads its own process group, is forked from the spawner thread with parent-death
//!   signal SIGINT (ipmitool closes its session on SIGINT; see `sys.rs` for why), and has a pid
//!   file for the sweep.
//! - Stop: close stdin (ipmitool deactivates and exits), SIGINT after `stop_grace`, SIGKILL of
//!   the process group after another `stop_grace` followed by our own `sol deactivate`. The
//!   child is always reaped and its pid file removed.

use super::{Cancel, Ended, Io};
use crate::context::ConsoleSettings;
use crate::escape::{EscapeEncoder, ESCAPE};
use crate::pidfile;
use crate::spawner;
use crate::sys::die_with_parent;
use crate::target::IpmitoolTarget;
use bytes::Bytes;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

const OPERATIONAL: &[u8] = b"[SOL Session operational";

/// What ipmitool says on stderr, last lines first kept (for error messages).
#[derive(Default)]
struct Tail(String);

impl Tail {
    fn push(&mut self, line: &str) {
        let line = line.trim();
        // With pipes ipmitool warns that stdin is no terminal: noise, not a cause.
        if line.is_empty() || line.starts_with("tcgetattr") || line.starts_with("tcsetattr") {
            return;
        }
        if !self.0.is_empty() {
            self.0.push_str("; ");
        }
        self.0.push_str(line);
        if self.0.len() > 1024 {
            let cut = self.0.len() - 1024;
            let cut = (cut..self.0.len())
                .find(|&i| self.0.is_char_boundary(i))
                .unwrap_or(self.0.len());
            self.0.drain(..cut);
        }
    }
}

/// `ipmitool -I lanplus -H .. -p .. [-U ..] [-C ..] [-E]`, password in the environment.
fn command(t: &IpmitoolTarget, s: &ConsoleSettings, line_buffered: bool) -> Command {
    let mut cmd = match (&s.stdbuf, line_buffered) {
        (Some(stdbuf), true) => {
            // stdbuf execs ipmitool: same pid, same process group, same parent-death signal.
            let mut cmd = Command::new(stdbuf);
            cmd.arg("-oL").arg(&s.ipmitool);
            cmd
        }
        _ => Command::new(&s.ipmitool),
    };
    cmd.args(["-I", "lanplus", "-H", &t.address, "-p", &t.port.to_string()]);
    if !t.username.is_empty() {
        cmd.args(["-U", &t.username]);
    }
    if let Some(c) = t.cipher_suite {
        cmd.args(["-C", &c.to_string()]);
    }
    // IPMITOOL_PASSWORD takes precedence over IPMI_PASSWORD: never inherit one.
    cmd.env_remove("IPMITOOL_PASSWORD");
    cmd.env_remove("IPMI_PASSWORD");
    if !t.password.is_empty() {
        cmd.arg("-E").env("IPMI_PASSWORD", &t.password);
    }
    cmd
}

fn scrub(text: String, t: &IpmitoolTarget) -> String {
    if t.password.is_empty() {
        text
    } else {
        text.replace(&t.password, "******")
    }
}

/// `ipmitool ... sol deactivate`: frees the BMC's SOL payload, whoever holds it.
pub async fn deactivate(t: &IpmitoolTarget, s: &ConsoleSettings) -> Result<(), String> {
    let mut cmd = command(t, s, false);
    cmd.args(["sol", "deactivate"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut cmd, Signal::SIGTERM);
    let child = spawner::spawn(cmd)
        .await
        .map_err(|e| format!("cannot run {}: {e}", s.ipmitool.display()))?;
    let limit = s.open_timeout;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("sol deactivate: {e}")),
        // Dropping the child (kill_on_drop) killed it.
        Err(_) => {
            return Err(format!(
                "sol deactivate: no answer from {}:{} within {} s",
                t.address,
                t.port,
                limit.as_secs()
            ))
        }
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() || text.contains("already de-activated") {
        return Ok(());
    }
    let mut tail = Tail::default();
    text.lines().for_each(|l| tail.push(l));
    Err(scrub(
        format!("sol deactivate failed ({}): {}", out.status, tail.0),
        t,
    ))
}

/// The running `sol activate` child.
struct Proc {
    child: Child,
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    /// The keystroke writer, owning stdin once the session is active.
    writer: Option<tokio::task::JoinHandle<()>>,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Tail>>,
}

impl Proc {
    fn tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Waits up to `limit` for the child to exit, draining its stdout meanwhile (a child blocked
    /// on a full pipe could not exit).
    async fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut buf = [0u8; 4096];
        let mut open = true;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            tokio::select! {
                status = self.child.wait() => return status.ok(),
                r = self.stdout.read(&mut buf), if open => {
                    if !matches!(r, Ok(n) if n > 0) {
                        open = false;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Ends the child (see the module docs) and reaps it. Returns whether the BMC side may still
    /// be held (the child had to be killed).
    async fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        // Closing stdin: ipmitool reads EOF, deactivates the payload and exits.
        drop(self.stdin.take());
        if let Some(writer) = self.writer.take() {
            writer.abort();
            let _ = writer.await;
        }
        if let Some(status) = self.wait_for(grace).await {
            return (Some(status), false);
        }
        if let Some(pid) = self.raw_pid() {
            let _ = kill(pid, Signal::SIGINT);
        }
        if let Some(status) = self.wait_for(grace).await {
            return (Some(status), false);
        }
        if let Some(pid) = self.raw_pid() {
            // Not reaped yet, so the group id cannot have been reused.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
        }
        let status = self.wait_for(Duration::from_secs(10)).await;
        (status, true)
    }

    fn raw_pid(&self) -> Option<Pid> {
        self.pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .map(Pid::from_raw)
    }
}

fn find_marker(buf: &[u8]) -> Option<usize> {
    let start = buf
        .windows(OPERATIONAL.len())
        .position(|w| w == OPERATIONAL)?;
    let nl = buf[start..].iter().position(|&b| b == b'\n')?;
    Some(start + nl + 1)
}

fn exit_text(what: &str, status: Option<ExitStatus>, tail: &str, pre: &[u8]) -> String {
    let status = status.map_or("an unknown status".to_string(), |s| s.to_string());
    let mut said = String::from_utf8_lossy(pre).trim().to_string();
    if !tail.is_empty() {
        if !said.is_empty() {
            said.push_str("; ");
        }
        said.push_str(tail);
    }
    if said.is_empty() {
        format!("{what} ({status})")
    } else {
        format!("{what} ({status}): {said}")
    }
}

enum PumpEnd {
    Cancelled,
    Lost(String),
}

pub async fn run(t: &IpmitoolTarget, io: &Io<'_>, cancel: &mut Cancel) -> Ended {
    let s = io.settings;
    tokio::select! {
        r = deactivate(t, s) => if let Err(e) = r {
            return Ended::Failed(e);
        },
        _ = cancel.cancelled() => return Ended::Stopped,
    }
    if cancel.is_cancelled() {
        return Ended::Stopped;
    }

    let mut cmd = command(t, s, true);
    cmd.arg("-e")
        .arg(OsStr::from_bytes(&[ESCAPE]))
        .args(["sol", "activate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No kill_on_drop: if this task is dropped (runtime shutdown), the child's stdin closes with
    // it and ipmitool frees the payload itself; a SIGKILL would leave the payload busy.
    die_with_parent(&mut cmd, Signal::SIGINT);
    let mut child = match spawner::spawn(cmd).await {
        Ok(c) => c,
        Err(e) => {
            return Ended::Failed(format!("cannot run {}: {e}", s.ipmitool.display()));
        }
    };
    let pid = child.id();
    if let Some(pid) = pid {
        if let Err(e) = pidfile::write(&s.runtime_dir, &io.node, pid) {
            tracing::warn!(node = %io.node, pid, error = %e, "cannot write the console pid file");
        }
    }
    let stderr = Arc::new(Mutex::new(Tail::default()));
    if let Some(err) = child.stderr.take() {
        let tail = stderr.clone();
        let node = io.node;
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(%node, line = %line, "ipmitool");
                tail.lock().unwrap_or_else(|p| p.into_inner()).push(&line);
            }
        });
    }
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ended::Failed("ipmitool started without pipes".into());
    };
    let mut p = Proc {
        child,
        pid,
        stdin: Some(stdin),
        writer: None,
        stdout,
        stderr,
    };

    let end = session(t, io, cancel, &mut p).await;
    let ended = match end {
        Err(failed) => failed,
        Ok(PumpEnd::Cancelled) => {
            let (_, forced) = p.stop(s.stop_grace).await;
            if forced {
                tracing::warn!(node = %io.node, "ipmitool had to be killed; deactivating the SOL payload");
                if let Err(e) = deactivate(t, s).await {
                    tracing::warn!(node = %io.node, error = %e, "could not deactivate the SOL payload");
                }
            }
            Ended::Stopped
        }
        Ok(PumpEnd::Lost(why)) => {
            // The child closed its stdout: it is exiting (or must).
            let status = match p.wait_for(s.stop_grace).await {
                Some(st) => Some(st),
                None => p.stop(s.stop_grace).await.0,
            };
            Ended::Lost(scrub(exit_text(&why, status, &p.tail(), &[]), t))
        }
    };
    if let Some(writer) = p.writer.take() {
        writer.abort();
    }
    if let Some(pid) = pid {
        pidfile::remove(&s.runtime_dir, &io.node, pid);
    }
    ended
}

/// Waits for the operational line, then pumps bytes until the session ends or is cancelled.
/// `Err` is a failure to open (the child already reaped).
async fn session(
    t: &IpmitoolTarget,
    io: &Io<'_>,
    cancel: &mut Cancel,
    p: &mut Proc,
) -> Result<PumpEnd, Ended> {
    let s = io.settings;
    let mut buf = vec![0u8; 8192];
    let mut pre: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + s.open_timeout;
    // Without stdbuf the operational line may sit in ipmitool's stdio buffer: a child that
    // is still running after `settle` is taken as active (failures exit quickly).
    let settle = tokio::time::Instant::now() + s.settle;
    let settles = s.stdbuf.is_none();
    let leftover = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(settle), if settles => break std::mem::take(&mut pre),
            r = p.stdout.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    pre.extend_from_slice(&buf[..n]);
                    if let Some(at) = find_marker(&pre) {
                        break pre.split_off(at);
                    }
                    if pre.len() > 64 * 1024 {
                        pre.drain(..pre.len() - 4096);
                    }
                }
                _ => {
                    let status = p.wait_for(s.stop_grace).await;
                    let status = match status {
                        Some(st) => Some(st),
                        None => p.stop(s.stop_grace).await.0,
                    };
                    return Err(Ended::Failed(scrub(
                        exit_text("sol activate failed", status, &p.tail(), &pre),
                        t,
                    )));
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let (status, _) = p.stop(s.stop_grace).await;
                let _ = deactivate(t, s).await;
                return Err(Ended::Failed(scrub(
                    exit_text(
                        &format!("sol activate: no operational session within {} s", s.open_timeout.as_secs()),
                        status,
                        &p.tail(),
                        &pre,
                    ),
                    t,
                )));
            }
            _ = cancel.cancelled() => return Ok(PumpEnd::Cancelled),
        }
    };

    // Keystrokes are written by their own task: ipmitool is single-threaded, and while it is
    // blocked writing output to a full pipe it reads no input; a pump that waited on a full
    // stdin pipe would stop draining stdout, and both would wait forever (a large paste).
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let Some(stdin) = p.stdin.take() else {
        return Ok(PumpEnd::Lost("ipmitool has no input".into()));
    };
    p.writer = Some(tokio::spawn(write_keys(stdin, rx)));
    io.hub.set_input(Some(tx));
    io.report.active(p.pid);
    if !leftover.is_empty() {
        io.hub.publish(Bytes::from(leftover));
    }
    let end = loop {
        tokio::select! {
            r = p.stdout.read(&mut buf) => match r {
                Ok(n) if n > 0 => io.hub.publish(Bytes::copy_from_slice(&buf[..n])),
                Ok(_) => break PumpEnd::Lost("ipmitool exited".into()),
                Err(e) => break PumpEnd::Lost(format!("reading from ipmitool: {e}")),
            },
            _ = cancel.cancelled() => break PumpEnd::Cancelled,
        }
    };
    io.hub.set_input(None);
    Ok(end)
}

/// Writes keystrokes to ipmitool's stdin, escaped (see `escape.rs`), starting with the
/// throwaway CR. Dropping the task (abort) closes stdin.
async fn write_keys(mut stdin: ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    let mut enc = EscapeEncoder::default();
    let mut out = Vec::new();
    enc.encode(b"\r", &mut out);
    loop {
        if stdin.write_all(&out).await.is_err() {
            // ipmitool is gone; the pump sees its stdout close.
            return;
        }
        let Some(keys) = rx.recv().await else { return };
        out.clear();
        enc.encode(&keys, &mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operational_marker_splits_ipmitool_chatter_from_console_output() {
        let buf = b"[SOL Session operational.  Use \x1d? for help]\n\rlogin: ";
        let at = find_marker(buf).unwrap();
        assert_eq!(&buf[at..], b"\rlogin: ");
        assert_eq!(find_marker(b"[SOL Session operational.  Use"), None);
    }

    #[test]
    fn the_password_is_in_the_environment_only() {
        let t = IpmitoolTarget {
            address: "10.0.0.5".into(),
            port: 623,
            username: "admin".into(),
            password: "s3cret".into(),
            cipher_suite: Some(3),
        };
        let s = ConsoleSettings::new("c1", "/tmp");
        let cmd = command(&t, &s, false);
        let std = cmd.as_std();
        let args: Vec<_> = std
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            ["-I", "lanplus", "-H", "10.0.0.5", "-p", "623", "-U", "admin", "-C", "3", "-E"]
        );
        let env: Vec<_> = std.get_envs().collect();
        assert!(env.contains(&(OsStr::new("IPMI_PASSWORD"), Some(OsStr::new("s3cret")))));
        assert!(env.contains(&(OsStr::new("IPMITOOL_PASSWORD"), None)));
        assert_eq!(
            scrub("bad password s3cret".into(), &t),
            "bad password ******"
        );
    }
}
