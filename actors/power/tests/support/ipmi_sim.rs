//! Test harness: one OpenIPMI `ipmi_sim` BMC on a free loopback UDP port in a temporary
//! directory, with `chassis_control.sh` keeping the machine's power and boot device in files
//! (the independent record tests check), plus `ipmitool` as an independent client.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ferric_power::ipmi::IpmiConfig;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "Ferr1c-BMC-s3cret";

/// The chassis_control program, embedded (the path is relative to this file) and written into
/// each simulator's directory, so that test binaries of any crate can include this harness.
const CHASSIS_CONTROL: &str = include_str!("chassis_control.sh");

/// A running `ipmi_sim`, killed (with its process group and any pending soft off) on drop,
/// including when the test panics.
pub struct IpmiSim {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl IpmiSim {
    /// Starts a simulator, powered off, and waits until it answers an RMCP ping.
    pub fn start() -> IpmiSim {
        // A port picked free can be taken before ipmi_sim binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            match IpmiSim::try_start() {
                Ok(sim) => return sim,
                Err(e) => last = e,
            }
        }
        panic!("ipmi_sim did not start: {last}");
    }

    fn try_start() -> Result<IpmiSim, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_udp_port();
        let path = dir.path();
        fs::create_dir(path.join("state")).map_err(|e| e.to_string())?;
        fs::write(path.join("power"), "0\n").map_err(|e| e.to_string())?;
        fs::write(path.join("chassis_control.sh"), CHASSIS_CONTROL).map_err(|e| e.to_string())?;
        fs::write(path.join("lan.conf"), lan_conf(port, path)).map_err(|e| e.to_string())?;
        fs::write(path.join("bmc.emu"), BMC_EMU).map_err(|e| e.to_string())?;
        let log = fs::File::create(path.join("ipmi_sim.out")).map_err(|e| e.to_string())?;
        let child = Command::new("ipmi_sim")
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
            // Its own process group, so that drop kills it and the chassis_control children
            // it may be running, and a Ctrl-C of the test run does not reach it twice.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run ipmi_sim: {e}"))?;
        let mut sim = IpmiSim { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = sim.child.try_wait() {
                return Err(format!(
                    "ipmi_sim exited with {status}: {}",
                    fs::read_to_string(sim.dir.path().join("ipmi_sim.out")).unwrap_or_default()
                ));
            }
            if rmcp_ping(port, Duration::from_millis(100)) {
                return Ok(sim);
            }
        }
        Err(format!(
            "ipmi_sim on port {port} did not answer a ping in 5 s"
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

    /// A client configuration for this BMC with the given per-answer timeout.
    pub fn config(&self, timeout: Duration) -> IpmiConfig {
        IpmiConfig {
            address: "127.0.0.1".into(),
            port: self.port,
            username: USERNAME.into(),
            password: PASSWORD.into(),
            timeout,
        }
    }

    /// The power state recorded by chassis_control.
    pub fn power_file(&self) -> bool {
        self.read("power").trim() == "1"
    }

    /// The boot device recorded by chassis_control (ipmi_sim names: none, pxe, default, cdrom,
    /// bios), if one was ever set.
    pub fn boot_file(&self) -> Option<String> {
        fs::read_to_string(self.dir().join("boot"))
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
        fs::write(self.dir().join("soft_off_delay"), text).unwrap();
    }

    /// Makes every chassis_control call fail (ipmi_sim then answers completion code 0xFF).
    pub fn set_failing(&self, failing: bool) {
        let path = self.dir().join("fail");
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

    /// Runs `ipmitool -I lanplus ... -C 3 <args>` against this BMC, bounded to 20 s.
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut cmd = Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port])
            .args([
                "-U", USERNAME, "-P", PASSWORD, "-C", "3", "-N", "1", "-R", "3",
            ])
            .args(args);
        run_bounded(cmd, Duration::from_secs(20))
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

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir().join(name)).unwrap_or_default()
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

const BMC_EMU: &str = "\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
";

fn lan_conf(port: u16, dir: &Path) -> String {
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
  user 2 true "{USERNAME}" "{PASSWORD}" admin 10 md5
"#,
        script = dir.join("chassis_control.sh").display(),
        dir = dir.display(),
    )
}

/// A UDP port nothing listens on right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP port")
        .port()
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

/// Runs a command to completion or kills it (by pid) after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let pid = Pid::from_raw(child.id() as i32);
    // Collecting in a thread keeps a chatty child from blocking on a full pipe.
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

/// Polls `probe` every 100 ms until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}
