//! OpenIPMI `ipmi_sim` BMCs on free loopback UDP ports, each in a temporary directory and its
//! own process group, killed on drop (also when the test panics), with `ipmitool` as an
//! independent client.
//!
//! Chassis control always: `chassis_control.sh` keeps the machine's power and boot device in
//! files (the independent record tests check). Serial over LAN when asked
//! ([`IpmiSim::with_sol`]): the machine's serial port is a TCP server run by the test (ipmi_sim
//! connects out to it) that prints a prompt, echoes what it receives and records it.

use crate::ports::free_udp_port;
use crate::process::run_bounded;
use ferric_model::BootDevice;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "Ferr1c-BMC-s3cret";
/// What the machine prints on its serial line when ipmi_sim connects.
pub const PROMPT: &[u8] = b"\r\nsol-machine login: ";

/// Every boot device with ipmi_sim's name for its selector (what chassis_control records) and
/// ipmitool's for the flags it reads back (`chassis bootparam get 5`).
pub const BOOT_DEVICES: [(BootDevice, &str, &str); 4] = [
    (BootDevice::Pxe, "pxe", "Force PXE"),
    (
        BootDevice::Disk,
        "default",
        "Force Boot from default Hard-Drive",
    ),
    (BootDevice::Bios, "bios", "Force Boot into BIOS Setup"),
    (BootDevice::Cdrom, "cdrom", "Force Boot from CD/DVD"),
];

/// The chassis_control program, written into each simulator's directory.
const CHASSIS_CONTROL: &str = include_str!("ipmi_sim/chassis_control.sh");

/// A running `ipmi_sim`.
pub struct IpmiSim {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    /// The machine's serial line, with SOL.
    pub serial: Option<SerialPort>,
}

impl IpmiSim {
    /// Starts a simulator with chassis control, powered off, and waits until it answers an
    /// RMCP ping.
    pub fn start() -> IpmiSim {
        IpmiSim::start_with(false)
    }

    /// Starts a simulator with chassis control and Serial over LAN, and waits until it answers
    /// an RMCP ping and has connected to its serial port.
    pub fn with_sol() -> IpmiSim {
        IpmiSim::start_with(true)
    }

    fn start_with(sol: bool) -> IpmiSim {
        // A port picked free can be taken before ipmi_sim binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            match IpmiSim::try_start(sol) {
                Ok(sim) => return sim,
                Err(e) => last = e,
            }
        }
        panic!("ipmi_sim did not start: {last}");
    }

    fn try_start(sol: bool) -> Result<IpmiSim, String> {
        let serial = sol.then(SerialPort::start);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_udp_port();
        let path = dir.path();
        fs::create_dir(path.join("state")).map_err(|e| e.to_string())?;
        fs::write(path.join("power"), "0\n").map_err(|e| e.to_string())?;
        fs::write(path.join("chassis_control.sh"), CHASSIS_CONTROL).map_err(|e| e.to_string())?;
        let conf = lan_conf(port, path, serial.as_ref().map(|s| s.port));
        fs::write(path.join("lan.conf"), conf).map_err(|e| e.to_string())?;
        fs::write(path.join("bmc.emu"), BMC_EMU).map_err(|e| e.to_string())?;
        let child = spawn_ipmi_sim(path)?;
        let mut sim = IpmiSim {
            dir,
            port,
            child,
            serial,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = sim.child.try_wait() {
                return Err(format!(
                    "ipmi_sim exited with {status}: {}",
                    sim.read("ipmi_sim.out")
                ));
            }
            if rmcp_ping(port, Duration::from_millis(100))
                && sim.serial_connects().is_none_or(|n| n > 0)
            {
                return Ok(sim);
            }
        }
        Err(format!(
            "ipmi_sim on port {port} did not answer a ping (and connect its serial port) in 5 s"
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The serial line; panics if the simulator was started without SOL.
    pub fn serial(&self) -> &SerialPort {
        self.serial
            .as_ref()
            .expect("the simulator was started with SOL (IpmiSim::with_sol)")
    }

    fn serial_connects(&self) -> Option<u32> {
        self.serial.as_ref().map(|s| *s.connects.lock().unwrap())
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

    /// The power state recorded by chassis_control.
    pub fn power_file(&self) -> bool {
        self.read("power").trim() == "1"
    }

    /// The boot device recorded by chassis_control (ipmi_sim names: none, pxe, default, cdrom,
    /// bios), if one was ever set.
    pub fn boot_file(&self) -> Option<String> {
        fs::read_to_string(self.path("boot"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Every chassis_control call so far, e.g. `set power 1`, `get power`.
    pub fn commands(&self) -> Vec<String> {
        self.read("commands.log")
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Time from an ACPI soft off to power off; `None`: the OS never turns the machine off.
    pub fn set_soft_off_delay(&self, delay: Option<Duration>) {
        let text = match delay {
            Some(d) => format!("{}\n", d.as_secs_f64()),
            None => "never\n".into(),
        };
        fs::write(self.path("soft_off_delay"), text).unwrap();
    }

    /// Makes every chassis_control call fail (ipmi_sim then answers completion code 0xFF).
    pub fn set_failing(&self, failing: bool) {
        let path = self.path("fail");
        if failing {
            fs::write(path, "").unwrap();
        } else {
            let _ = fs::remove_file(path);
        }
    }

    /// SIGSTOP: the BMC stops answering, its socket still open.
    pub fn freeze(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGSTOP).unwrap();
    }

    pub fn thaw(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGCONT).unwrap();
    }

    /// The BMC dies (SIGKILL of its process group); its directory and serial port stay.
    pub fn stop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The BMC comes back on the same port with the same configuration, and waits until it
    /// answers a ping (and has connected its serial port again).
    pub fn restart(&mut self) {
        self.stop();
        let before = self.serial_connects();
        self.child = spawn_ipmi_sim(self.dir.path()).expect("restart ipmi_sim");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let serial_back = before.is_none_or(|b| self.serial_connects() > Some(b));
            if rmcp_ping(self.port, Duration::from_millis(100)) && serial_back {
                return;
            }
        }
        panic!("ipmi_sim on port {} did not come back", self.port);
    }

    /// `ipmitool -I lanplus ... -C 3` against this BMC (the password in the environment).
    fn ipmitool_cmd(&self, args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut cmd = Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port])
            .args(["-U", USERNAME, "-E", "-C", "3"])
            .env("IPMI_PASSWORD", PASSWORD)
            .args(args);
        cmd
    }

    /// Runs `ipmitool ... -N 1 -R 3 <args>` against this BMC, bounded to 20 s.
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        let mut all = vec!["-N", "1", "-R", "3"];
        all.extend_from_slice(args);
        run_bounded(self.ipmitool_cmd(&all), Duration::from_secs(20))
    }

    /// `ipmitool chassis power status` as seen by that independent client.
    pub fn ipmitool_power_is_on(&self) -> bool {
        let out = self.ipmitool(&["chassis", "power", "status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ipmitool failed: {out:?}");
        match text.trim() {
            "Chassis Power is on" => true,
            "Chassis Power is off" => false,
            other => panic!("unexpected ipmitool answer {other:?}"),
        }
    }

    /// Sessions open on the BMC's LAN channel, counting the one ipmitool opens to ask.
    pub fn active_sessions(&self) -> usize {
        let out = self.ipmitool(&["session", "info", "active"]);
        assert!(out.status.success(), "ipmitool failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "active sessions").then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no session count in {text:?}"))
    }

    /// An outside `sol activate` with no input: Ok if it got an operational session (it then
    /// reads EOF and deactivates it at once), Err with what it said if refused.
    pub fn outside_activate(&self) -> Result<(), String> {
        let out = run_bounded(
            self.ipmitool_cmd(&["sol", "activate"]),
            Duration::from_secs(20),
        );
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

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        // The soft-off child is in its own session: kill its group first, by the pid it wrote.
        if let Ok(pid) = fs::read_to_string(self.path("soft_off.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // SIGKILL works on a stopped process too; the group holds any chassis_control child.
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
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
        // Its own process group, so that drop kills it and the chassis_control children it may
        // be running, and a Ctrl-C of the test run does not reach it twice.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run ipmi_sim (apt-get install openipmi): {e}"))
}

const BMC_EMU: &str = "\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
";

fn lan_conf(port: u16, dir: &Path, serial: Option<u16>) -> String {
    let sol = serial
        .map(|s| format!("  sol \"tcp:127.0.0.1:{s}\" 115200\n"))
        .unwrap_or_default();
    format!(
        r#"name "ferric-test"
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
  chassis_control "/bin/sh {script} {dir}"
{sol}  user 2 true "{USERNAME}" "{PASSWORD}" admin 10 md5
"#,
        script = dir.join("chassis_control.sh").display(),
        dir = dir.display(),
    )
}

/// Sends an RMCP/ASF presence ping (IPMI v2.0 13.2.3) and waits for the pong: the harness's
/// own readiness check, independent of the client under test.
fn rmcp_ping(port: u16, timeout: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(timeout));
    // RMCP header (version 6, reserved, seq 0xFF = no ack, class ASF), then ASF IANA 4542,
    // type 0x80 (presence ping), tag, reserved, data length 0.
    let ping = [
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00,
    ];
    if sock.send_to(&ping, ("127.0.0.1", port)).is_err() {
        sleep(timeout);
        return false;
    }
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Ok(n) => n >= 9 && buf[8] == 0x40, // presence pong
        Err(_) => {
            // ICMP port unreachable comes back at once: do not spin.
            sleep(timeout);
            false
        }
    }
}

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
