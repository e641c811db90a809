//! The chaos lab on this machine, through the real binary (`ferric chaos-lab-selftest`): a lab of
//! network namespaces with a 3-member etcd, its faults (leader kill, stop/restart, pause, a cut
//! that must stall TCP silently, link down, slow disk), and its clean-up: after a normal run, after
//! SIGTERM to the outer process, and after SIGKILL (the next run sweeps it). Needs root. The test
//! itself only reads the host's namespace list, links and routes; it never sends traffic to a lab
//! address.

use ferric_testkit::fleet::ferric_bin;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn can_run() -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if euid.as_deref() != Some("0") {
        eprintln!("skipping: the chaos lab needs root");
        return false;
    }
    true
}

fn out(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What of run `fc<pid>` the host can still see: namespaces, interfaces, blackhole routes.
fn leftovers(pid: u32) -> Vec<String> {
    let run = format!("fc{pid}");
    let mut left: Vec<String> = out(&["ip", "netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("{run}-")))
        .map(|l| format!("namespace {l}"))
        .collect();
    for l in out(&["ip", "-o", "link", "show"]).lines() {
        let name = l.split_whitespace().nth(1).unwrap_or("");
        let rest = name.strip_prefix(&run).unwrap_or("0");
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            left.push(format!("interface {name}"));
        }
    }
    for l in out(&["ip", "-4", "route", "show", "type", "blackhole"]).lines() {
        if l.contains("10.251.") && l.ends_with(&format!("metric {pid}")) {
            left.push(format!("route {l}"));
        }
    }
    left
}

fn selftest(dir: &std::path::Path) -> Child {
    Command::new(ferric_bin())
        .args(["chaos-lab-selftest", "--dir"])
        .arg(dir)
        .env("FERRIC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting ferric chaos-lab-selftest")
}

/// Waits until etcd of the run has written its first log lines (the lab is built and the inner
/// part runs).
fn wait_started(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("etcd-e3.log").exists() {
        assert!(Instant::now() < deadline, "the lab never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "ferric chaos-lab-selftest hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_to_the_outer_process_removes_the_lab() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = selftest(tmp.path());
    let pid = child.id();
    wait_started(tmp.path());
    assert!(
        !leftovers(pid).is_empty(),
        "the lab should exist while it runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert!(!st.success(), "an interrupted selftest must fail");
    assert_eq!(leftovers(pid), Vec::<String>::new());
    // Nothing of the run's etcd survives either.
    let etcds = out(&["pgrep", "-f", &tmp.path().to_string_lossy()]);
    assert_eq!(etcds.trim(), "", "processes of the run are left");
}

#[test]
fn lab_and_etcd_faults_and_the_sweep_of_a_killed_run() {
    if !can_run() {
        return;
    }
    // A run whose outer process is SIGKILLed leaves its lab (its children die with it, by
    // parent-death signal); the next run sweeps it.
    let killed_dir = tempfile::tempdir().unwrap();
    let mut killed = selftest(killed_dir.path());
    let killed_pid = killed.id();
    wait_started(killed_dir.path());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(
        !leftovers(killed_pid).is_empty(),
        "a SIGKILLed run cannot clean up"
    );

    let tmp = tempfile::tempdir().unwrap();
    let child = selftest(tmp.path());
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}"));
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());
    assert_eq!(
        leftovers(killed_pid),
        Vec::<String>::new(),
        "the stale lab was not swept"
    );
    assert_eq!(
        leftovers(pid),
        Vec::<String>::new(),
        "the lab was not removed"
    );
    assert_eq!(summary["leftovers"], serde_json::json!([]));
    assert_eq!(summary["destroy_errors"], serde_json::json!([]));
    assert_eq!(summary["run_id"], format!("fc{pid}"));
    assert!(
        output.status.success() && summary["inner_ok"] == true,
        "inner part failed; see {}/inner.log",
        tmp.path().display()
    );

    let inner = &summary["inner"];
    assert_eq!(
        inner["etcd_comms"],
        serde_json::json!(["etcd", "etcd", "etcd"])
    );
    assert_eq!(inner["read_back"], true);
    let reelection = inner["reelection_ms"].as_u64().unwrap();
    assert!(reelection < 10_000, "re-election took {reelection} ms");
    assert_ne!(inner["new_leader"], inner["old_leader"]);
    assert!(inner["rejoin_after_kill_ms"].is_u64());
    assert_eq!(inner["stopped_on_sigterm"], true);
    assert_eq!(inner["running_after_stop"], false);
    assert!(inner["rejoin_after_stop_ms"].is_u64());
    assert!(inner["pause"]["write_while_paused_ms"].is_u64());
    assert!(inner["pause"]["rejoin_ms"].is_u64());

    // The cut is a silent drop: the write is accepted, nothing comes back, no socket error, a
    // new connection times out (not refused, not unreachable); the link to drv carries on; after
    // heal the very same connection gets its answer.
    let cut = &inner["cut"];
    for key in [
        "health_before",
        "is_cut",
        "write_during_ok",
        "read_stalled",
        "new_connection_timed_out",
        "echo_to_drv_during",
        "drv_put_during_ok",
        "healed",
        "resumed_same_connection",
        "link_down_stalls",
        "link_up_echo",
    ] {
        assert_eq!(cut[key], true, "cut.{key}: {cut}");
    }
    assert!(cut["socket_error_during"].is_null(), "{cut}");
    assert!(inner["write_after_heal_ms"].is_u64());

    // Slow disk: puts wait for the delayed fsyncs, strace detaches on SIGINT, etcd runs on.
    let slow = &inner["slow_disk"];
    assert_eq!(slow["report"]["detached_on_sigint"], true, "{slow}");
    assert_eq!(slow["report"]["etcd_untraced_after"], true, "{slow}");
    assert!(
        slow["report"]["syncs_delayed"].as_u64().unwrap() > 0,
        "{slow}"
    );
    assert!(
        slow["put_median_ms_during"].as_f64().unwrap() >= 150.0,
        "{slow}"
    );
    assert!(
        slow["put_median_ms_after"].as_f64().unwrap() < 100.0,
        "{slow}"
    );
    assert_eq!(slow["alive_after"], true);
}
