//! Stopping an `ipmitool` console whose process ignores both a closed stdin and SIGINT (a
//! stand-in script for an ipmitool stuck on a dead BMC): the whole process group is killed after
//! the grace periods, the child is reaped, the pid file removed, and the payload deactivated.
//! Run: `cargo test -p ferric-console --test escalation`.

mod support;

use ferric_console::{ConsoleActor, ConsoleTarget, StopReason};
use ferric_model::NodeId;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::*;

const STUCK_IPMITOOL: &str = r#"#!/bin/sh
# Records each call; `sol deactivate` succeeds, `sol activate` reports an operational session
# and then ignores stdin EOF and SIGINT, with a child in its process group.
log="$(dirname "$0")/calls.log"
case "$*" in
  *deactivate*) echo deactivate >> "$log"; exit 0 ;;
esac
echo "activate $*" >> "$log"
trap '' INT
sleep 600 &
echo $! > "$(dirname "$0")/child.pid"
echo "[SOL Session operational.  Use ? for help]"
while :; do sleep 1; done
"#;

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z"),
    }
}

#[tokio::test]
async fn a_stuck_ipmitool_is_killed_with_its_group_reaped_and_the_payload_deactivated() {
    let tools = tempfile::tempdir().unwrap();
    let script = tools.path().join("ipmitool");
    std::fs::write(&script, STUCK_IPMITOOL).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.ipmitool = script;
    s.stop_grace = Duration::from_millis(300);
    let svc = service(s).await;
    let info = r#"{"ipmi_address":"127.0.0.1","ipmi_port":6230,"ipmi_username":"u","ipmi_password":"never-on-argv"}"#;
    let target = ConsoleTarget::resolve("ipmi", None, info).unwrap();
    let mut c = Console::start(svc.context(), NodeId::new_random(), target).await;
    let pid = c.wait_active().await.unwrap();
    let calls = std::fs::read_to_string(tools.path().join("calls.log")).unwrap();
    assert!(calls.starts_with("deactivate\nactivate "), "{calls}");
    assert!(!calls.contains("never-on-argv"), "{calls}");
    let child: u32 = std::fs::read_to_string(tools.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!gone(pid) && !gone(child));

    let t = Instant::now();
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    let took = t.elapsed();
    // stdin closed, 300 ms; SIGINT, 300 ms; then SIGKILL to the group.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Reaped (not even a zombie), and its group went with it.
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "not reaped"
    );
    assert!(
        ferric_testkit::wait_until(Duration::from_secs(2), || gone(child)),
        "the group's child {child} survived"
    );
    assert!(std::fs::read_dir(dir.path().join("consoles"))
        .unwrap()
        .next()
        .is_none());
    // Killed without freeing the payload: we deactivated it ourselves.
    let calls = std::fs::read_to_string(tools.path().join("calls.log")).unwrap();
    assert!(calls.ends_with("deactivate\n"), "{calls}");
    assert_eq!(calls.matches("deactivate").count(), 2, "{calls}");
}
