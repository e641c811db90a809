//! The chaos suite's bounded CI schedule: `ferric chaos` builds a 3-member etcd cluster, three
//! conductors, two gateways, the simulated fleet and a driver host in network namespaces, runs
//! the workload through both gateways, injects one fault of every kind (SIGKILL and SIGSTOP of
//! a conductor, a conductor cut from etcd only, a gateway cut and killed, the etcd leader
//! killed, a member stopped, a member's fsyncs delayed) in the order the seed gives, and checks
//! the invariants after each fault and at the end from the BMC simulator's log, etcd's history
//! and what the API answered. The test reads the report, and checks itself that the run left no
//! namespace, route or process behind.

use ferric_testkit::fleet::ferric_bin;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The seed of the CI schedule (`FERRIC_CHAOS_SEED` replays another).
const SEED: u64 = 20261205;
/// The whole run is bounded: CI runs it in well under this.
const LIMIT: Duration = Duration::from_secs(540);

fn lab_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("fc{pid}-")))
        .map(String::from)
        .collect()
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !ferric_testkit::process::process_gone(pid) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

#[test]
fn every_invariant_holds_under_the_ci_fault_schedule() {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        panic!("the chaos suite builds network namespaces and must run as root");
    }
    let seed: u64 = std::env::var("FERRIC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let dir = tempfile::Builder::new()
        .prefix("ferric-chaos-test-")
        .tempdir()
        .unwrap();
    let report_path = dir.path().join("report.json");
    let out_path = dir.path().join("chaos.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(ferric_bin())
        .args(["chaos", "--seed", &seed.to_string()])
        .args(["--steps", "8", "--nodes", "60", "--lease-ttl", "3"])
        .arg("--dir")
        .arg(dir.path().join("run"))
        .arg("--report")
        .arg(&report_path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
    // Clean-up is checked in every case: after a run that was killed, the sweep of a later run
    // removes its lab; here the test sweeps at once.
    if status.is_none() {
        let _ = Command::new(ferric_bin())
            .args(["chaos", "--sweep"])
            .status();
    }
    let left = lab_namespaces(pid);
    let routes = Command::new("ip")
        .args(["route", "show", "type", "blackhole"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    let procs = processes_mentioning(&dir.path().display().to_string());
    let status =
        status.unwrap_or_else(|| panic!("ferric chaos did not end in {LIMIT:?}:\n{printed}"));
    assert!(
        left.is_empty(),
        "namespaces left behind: {left:?}\n{printed}"
    );
    assert!(
        procs.is_empty(),
        "processes left behind: {procs:?}\n{printed}"
    );
    let lab: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/lab.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    if let Some(subnet) = lab["subnet"].as_str() {
        assert!(
            !routes.contains(subnet),
            "the blackhole route for {subnet} was left behind: {routes}"
        );
    }
    assert!(
        status.success(),
        "ferric chaos failed ({status}):\n{printed}"
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report_path)
            .unwrap_or_else(|e| panic!("no report ({e}):\n{printed}")),
    )
    .unwrap();
    let ctx = || format!("seed {seed}\n{printed}\n{report:#}");
    assert_eq!(report["seed"], seed, "{}", ctx());
    assert_eq!(
        report["violations"].as_array().map(Vec::len),
        Some(0),
        "{}",
        ctx()
    );
    // One fault of every kind was injected.
    for kind in [
        "kill_conductor",
        "freeze_conductor",
        "cut_conductor_etcd",
        "cut_gateway",
        "kill_gateway",
        "kill_etcd_leader",
        "stop_etcd_member",
        "slow_etcd_disk",
    ] {
        assert!(
            report["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1,
            "no {kind} fault: {}",
            ctx()
        );
    }
    // Every conductor fault moved its nodes to another conductor; every etcd member loss let
    // writes through again.
    for f in report["faults"].as_array().unwrap() {
        if ["kill_conductor", "freeze_conductor", "cut_conductor_etcd"]
            .contains(&f["fault"].as_str().unwrap())
        {
            assert!(
                f["nodes"].as_u64().unwrap() > 0,
                "a conductor without nodes: {f}"
            );
            assert!(f["failover"].is_number(), "nodes not moved: {f}\n{}", ctx());
        }
        if ["kill_etcd_leader", "stop_etcd_member"].contains(&f["fault"].as_str().unwrap()) {
            assert!(f["writes_resumed"].is_number(), "etcd took no writes: {f}");
        }
    }
    // The checks read real records: commands the BMCs got, ownership epochs, history entries,
    // outbox events and console sessions (an empty record would pass every check).
    let c = &report["checked"];
    for (field, min) in [
        ("bmc_commands", 50),
        ("reservations_created", 60),
        ("history_entries", 20),
        ("outbox_events", 10),
        ("console_sessions", 3),
    ] {
        assert!(
            c[field].as_u64().unwrap_or(0) >= min,
            "checked {field} below {min}: {}",
            ctx()
        );
    }
    assert_eq!(report["checks"]["ok"], true, "{}", ctx());
    // The workload really ran through the faults: requests accepted, events read (and the
    // stream resumed), deliveries received, consoles echoing (and viewers reconnected).
    let w = &report["workload"];
    for (field, min) in [
        ("accepted", 20),
        ("stream_events", 10),
        ("stream_resumes", 1),
        ("webhook_events", 10),
        ("console_echoes", 10),
    ] {
        assert!(
            w[field].as_u64().unwrap_or(0) >= min,
            "workload {field} below {min}: {}",
            ctx()
        );
    }
}
