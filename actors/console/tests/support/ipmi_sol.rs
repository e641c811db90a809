//! Test harness: one OpenIPMI `ipmi_sim` BMC with Serial over LAN on a free loopback UDP port,
//! its "serial port" a TCP server run by the test (ipmi_sim connects out to it) that prints a
//! prompt, echoes what it receives and records it, plus `ipmitool` as an independent client.
//! Everything started here is killed on drop, also when the test panics.
//! (Adapted from actors/power/tests/support/ipmi_sim.rs.)

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "Ferr1c-SOL-s3cret";
pub const PROMPT: &[u8] = b"\r\nsol-machine login: ";

/// The machine's side of the serial line: a TCP server ipmi_sim connects to.
pub struct SerialPort {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    conn: Arc<Mutex<Option<TcpStream>>>,
    stop: Arc<AtomicBool>,
    connects: Arc<Mutex<u32>>,
}

impl SerialPort {
    fn start() -> SerialPort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the serial port");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let conn: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(Mutex::new(0));
        let (r, c, s, n) = (
            received.clone(),
            conn.clone(),
            stop.clone(),
            connects.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                *n.lock().unwrap() += 1;
                let _ = stream.write_all(PROMPT);
                *c.lock().unwrap() = stream.try_clone().ok();
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.load(Ordering::SeqCst) {
                                    break;
                                }
                                r.lock().unwrap().extend_from_slice(&buf[..n]);
                                // Echo, like a terminal in cooked mode.
                                let _ = stream.write_all(&buf[..n]);
                            }
                        }
                    }
                });
            }
        });
        SerialPort {
            port,
            received,
            conn,
            stop,
            connects,
        }
    }

    /// Bytes the machine received over the serial line.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    /// The machine prints `bytes` on its serial line.
    pub fn say(&self, bytes: &[u8]) {
        let mut c = self.conn.lock().unwrap();
        let stream = c
            .as_mut()
            .expect("ipmi_sim is connected to the serial port");
        stream.write_all(bytes).expect("write to ipmi_sim");
    }

    pub fn connected(&self) -> bool {
        self.conn.lock().unwrap().is_some()
    }
}

impl Drop for SerialPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(c) = self.conn.lock().unwrap().take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A running `ipmi_sim` with SOL, killed with its process group on drop.
pub struct SolBmc {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    pub serial: SerialPort,
}

impl SolBmc {
    /// Starts the serial port, then the simulator, and waits until the simulator answers an
    /// RMCP ping and has connected to the serial port.
    pub fn start() -> SolBmc {
        let mut last = String::new();
        for _ in 0..5 {
            match SolBmc::try_start() {
                Ok(bmc) => return bmc,
                Err(e) => last = e,
            }
        }
        panic!("ipmi_sim did not start: {last}");
    }

    fn try_start() -> Result<SolBmc, String> {
        let serial = SerialPort::start();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_udp_port();
        let path = dir.path();
        fs::create_dir(path.join("state")).map_err(|e| e.to_string())?;
        fs::write(path.join("lan.conf"), lan_conf(port, serial.port)).map_err(|e| e.to_string())?;
        fs::write(path.join("bmc.emu"), BMC_EMU).map_err(|e| e.to_string())?;
        let child = spawn_ipmi_sim(path)?;
        let mut bmc = SolBmc {
            dir,
            port,
            child,
            serial,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = bmc.child.try_wait() {
                return Err(format!(
                    "ipmi_sim exited with {status}: {}",
                    fs::read_to_string(bmc.dir.path().join("ipmi_sim.out")).unwrap_or_default()
                ));
            }
            if rmcp_ping(port, Duration::from_millis(100)) && bmc.serial.connected() {
                return Ok(bmc);
            }
        }
        Err(format!(
            "ipmi_sim on port {port} did not answer a ping and connect its serial port in 5 s"
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ironic `driver_info` for this BMC (cipher suite 3: ipmi_sim has no suite 17, ipmitool's
    /// default).
    pub fn driver_info(&self) -> String {
        serde_json::json!({
            "ipmi_address": "127.0.0.1",
            "ipmi_port": self.port,
            "ipmi_username": USERNAME,
            "ipmi_password": PASSWORD,
            "ipmi_cipher_suite": 3,
        })
        .to_string()
    }

    fn ipmitool_cmd(&self, args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut cmd = Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port])
            .args(["-U", USERNAME, "-E", "-C", "3"])
            .env("IPMI_PASSWORD", PASSWORD)
            .args(args);
        cmd
    }

    /// Runs `ipmitool ... <args>` against this BMC with no input, bounded to 20 s.
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        run_bounded(self.ipmitool_cmd(args), Duration::from_secs(20))
    }

    /// An outside `sol activate` with no input: Ok if it got an operational session (it then
    /// reads EOF and deactivates it at once), Err with what it said if refused.
    pub fn outside_activate(&self) -> Result<(), String> {
        let out = self.ipmitool(&["sol", "activate"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("SOL Session operational") {
            Ok(())
        } else {
            Err(text)
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl SolBmc {
    /// The BMC dies (SIGKILL of ipmi_sim); its serial port stays.
    pub fn stop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The BMC comes back on the same port with the same configuration, and waits until it
    /// answers a ping and has connected its serial port again.
    pub fn restart(&mut self) {
        self.stop();
        let before = *self.serial.connects.lock().unwrap();
        self.child = spawn_ipmi_sim(self.dir.path()).expect("restart ipmi_sim");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if rmcp_ping(self.port, Duration::from_millis(100))
                && *self.serial.connects.lock().unwrap() > before
            {
                return;
            }
        }
        panic!("ipmi_sim on port {} did not come back", self.port);
    }
}

fn spawn_ipmi_sim(path: &Path) -> Result<Child, String> {
    let log = fs::File::create(path.join("ipmi_sim.out")).map_err(|e| e.to_string())?;
    Command::new("ipmi_sim")
        .arg("-n")
        .arg("-c")
        .arg(path.join("lan.conf"))
        .arg("-f")
        .arg(path.join("bmc.emu"))
        .arg("-s")
        .arg(path.join("state"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run ipmi_sim (apt-get install openipmi): {e}"))
}

impl Drop for SolBmc {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

const BMC_EMU: &str = "\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
";

fn lan_conf(port: u16, serial: u16) -> String {
    format!(
        r#"name "ferric-console-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  sol "tcp:127.0.0.1:{serial}" 115200
  user 2 true "{USERNAME}" "{PASSWORD}" admin 10 md5
"#
    )
}

/// A UDP port nothing listens on right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP port")
        .port()
}

/// RMCP/ASF presence ping (IPMI v2.0 13.2.3): the harness's own readiness check.
fn rmcp_ping(port: u16, timeout: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(timeout));
    let ping = [
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00,
    ];
    if sock.send_to(&ping, ("127.0.0.1", port)).is_err() {
        sleep(timeout);
        return false;
    }
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Ok(n) => n >= 9 && buf[8] == 0x40,
        Err(_) => {
            sleep(timeout);
            false
        }
    }
}

/// Runs a command to completion or kills it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("collect output"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            let out = rx.recv().expect("reaper thread").expect("collect output");
            panic!("{cmd:?} did not finish in {limit:?}: {out:?}");
        }
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
    }
}

/// The runtime dir's pid file for `node`, if any.
pub fn pid_file(runtime_dir: &Path, node: &str) -> Option<String> {
    fs::read_to_string(runtime_dir.join("consoles").join(format!("{node}.pid"))).ok()
}
