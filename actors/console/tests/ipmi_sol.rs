//! IPMI consoles against a real BMC implementation (OpenIPMI's `ipmi_sim` with Serial over
//! LAN to a TCP "serial port" run by the test), through the real `ipmitool` and the conductor's
//! console websocket; checked with an independent `ipmitool` and in /proc. Run:
//! `cargo test -p ferric-console --test ipmi_sol` (needs `ipmi_sim` and `ipmitool`).

mod support;

use ferric_console::hub::CLOSE_DISABLED;
use ferric_console::{ConsoleActor, ConsoleTarget, SessionState, StopReason};
use ferric_model::NodeId;
use ferric_testkit::ipmi_sim::{IpmiSim, PASSWORD};
use ferric_testkit::process::process_gone;
use ferric_testkit::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::*;

fn target(bmc: &IpmiSim) -> ConsoleTarget {
    ConsoleTarget::resolve("ipmi", None, &bmc.driver_info()).unwrap()
}

/// Polls (blocking calls on the blocking pool) until `probe` holds or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new console for `node` on `bmc` (a runtime of its own, as the next conductor run) is
/// active at once: a payload a killed session left is cleared, not waited out.
fn activates_at_once(runtime_dir: &std::path::Path, node: NodeId, bmc: &IpmiSim) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let svc = service(settings(runtime_dir)).await;
        let mut c = Console::start(svc.context(), node, target(bmc)).await;
        let t = Instant::now();
        c.wait_active().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "took {:?}",
            t.elapsed()
        );
        ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    });
}

/// Runs a blocking harness call off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_both_ways_between_the_websocket_and_the_serial_port() {
    let bmc = std::sync::Arc::new(IpmiSim::with_sol());
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), target(&bmc)).await;
    let pid = c.wait_active().await.expect("ipmitool runs");

    // The password is in the child's environment only, never on its command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(PASSWORD));
    let status = c.status().await;
    assert!(!format!("{status:?}").contains(PASSWORD));
    assert!(status.session.contains(&format!("-p {}", bmc.port())));
    // Its pid file names it.
    let recorded = pid_file(dir.path(), &c.node.to_string()).expect("pid file");
    assert!(recorded.starts_with(&format!("{pid} ")), "{recorded}");

    let (mut ws, hello) = viewer(svc.local_addr(), &c.node, "rw").await;
    assert_eq!(hello["writer"], true);
    // Machine -> viewer.
    bmc.serial().say(b"\r\nKernel 6.1 booting...\r\n");
    read_until(&mut ws, b"Kernel 6.1 booting...").await;
    // Viewer -> machine (and the machine's echo back).
    type_keys(&mut ws, b"root\r").await;
    read_until(&mut ws, b"root\r").await;
    let b = bmc.clone();
    eventually(
        Duration::from_secs(10),
        "keystrokes at the serial port",
        move || String::from_utf8_lossy(&b.serial().received()).contains("root\r"),
    )
    .await;

    // Escape sequences typed by a user reach the machine as bytes and end nothing.
    let tricky: &[u8] = b"\r~.\r\x1d.\r\x1d\x1aZ\r";
    type_keys(&mut ws, tricky).await;
    let b = bmc.clone();
    eventually(
        Duration::from_secs(10),
        "escape bytes at the serial port",
        move || {
            let got = b.serial().received();
            got.windows(tricky.len()).any(|w| w == tricky)
        },
    )
    .await;
    bmc.serial().say(b"still alive\r\n");
    read_until(&mut ws, b"still alive").await;
    assert!(
        matches!(c.status().await.state, SessionState::Active { pid: Some(p), .. } if p == pid)
    );

    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    assert_eq!(close_frame(&mut ws).await.0, CLOSE_DISABLED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_paste_is_echoed_completely() {
    const PASTE: usize = 160 * 1024;
    // More than both pipe buffers (64 KiB each) at once: keystrokes waiting for ipmitool's stdin
    // must never keep its output from being drained. (ipmi_sim's serial line runs at 115200
    // baud, so this takes about half a minute.)
    let bmc = std::sync::Arc::new(IpmiSim::with_sol());
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), target(&bmc)).await;
    c.wait_active().await.unwrap();
    let (mut ws, _) = viewer(svc.local_addr(), &c.node, "rw").await;
    let paste: Vec<u8> = (0..PASTE)
        .map(|i| {
            if i % 80 == 79 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let (mut sink, mut stream) = futures::StreamExt::split(ws);
    let writer = tokio::spawn(async move {
        for chunk in paste.chunks(64 * 1024) {
            futures::SinkExt::send(
                &mut sink,
                tokio_tungstenite::tungstenite::Message::binary(chunk.to_vec()),
            )
            .await
            .unwrap();
        }
        sink
    });
    let mut echoed = 0usize;
    let t = Instant::now();
    while echoed < PASTE {
        match tokio::time::timeout(
            Duration::from_secs(30),
            futures::StreamExt::next(&mut stream),
        )
        .await
        .unwrap_or_else(|_| panic!("echo stalled after {echoed} bytes"))
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => echoed += b.len(),
            Some(Ok(_)) => {}
            other => panic!("viewer closed after {echoed} bytes: {other:?}"),
        }
    }
    let sink = writer.await.unwrap();
    ws = sink.reunite(stream).unwrap();
    assert!(t.elapsed() < Duration::from_secs(90));
    assert!(bmc.serial().received().len() >= PASTE);
    let _ = ws.close(None).await;
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_is_held_while_active_and_free_at_once_after_stop() {
    let bmc = std::sync::Arc::new(IpmiSim::with_sol());
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), target(&bmc)).await;
    let pid = c.wait_active().await.unwrap();

    let b = bmc.clone();
    let refused = blocking(move || b.outside_activate()).await;
    let said = refused.expect_err("a second SOL session must be refused");
    assert!(said.contains("already active"), "{said}");

    let t = Instant::now();
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(process_gone(pid), "ipmitool {pid} still runs after stop");
    assert!(pid_file(dir.path(), &c.node.to_string()).is_none());
    // No session timeout to wait out: another client gets the payload right away.
    let b = bmc.clone();
    blocking(move || b.outside_activate())
        .await
        .expect("the payload is free right after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ipmitool_session_is_reopened_and_viewers_see_it() {
    let bmc = std::sync::Arc::new(IpmiSim::with_sol());
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), target(&bmc)).await;
    let first = c.wait_active().await.unwrap();
    let (mut ws, _) = viewer(svc.local_addr(), &c.node, "rw").await;

    // The BMC session dies under us (SIGKILL: the payload stays busy on the BMC side).
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let state = c
        .wait_state("reconnecting", |s| {
            matches!(s, SessionState::Reconnecting { .. })
        })
        .await;
    let SessionState::Reconnecting {
        error,
        attempt,
        retry_in_ms,
    } = state
    else {
        unreachable!()
    };
    assert!(error.contains("ipmitool exited"), "{error}");
    assert_eq!((attempt, retry_in_ms), (1, 1000));
    let msg = read_control(&mut ws, |v| {
        v["type"] == "state" && v["state"] == "reconnecting"
    })
    .await;
    assert!(
        msg["error"].as_str().unwrap().contains("ipmitool exited"),
        "{msg}"
    );

    // Reopened: `sol deactivate` cleared the stale payload first, no session timeout waited.
    let t = Instant::now();
    let second = c.wait_active().await.unwrap();
    assert_ne!(first, second);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "reopen took {:?}",
        t.elapsed()
    );
    read_control(&mut ws, |v| v["type"] == "state" && v["state"] == "active").await;
    type_keys(&mut ws, b"after-reconnect\r").await;
    read_until(&mut ws, b"after-reconnect").await;
    let recorded = pid_file(dir.path(), &c.node.to_string()).unwrap();
    assert!(recorded.starts_with(&format!("{second} ")), "{recorded}");
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    assert!(process_gone(second));
}

#[test]
fn the_sweep_kills_a_console_a_previous_run_left() {
    let bmc = IpmiSim::with_sol();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeId::new_random();
    let (tx, rx) = std::sync::mpsc::channel();
    // A "conductor" whose runtime freezes with its console open: nothing of it runs any more,
    // nothing is stopped, nothing dropped (like a process that hangs or is gone while its child
    // lives on).
    let (runtime_dir, driver_info) = (dir.path().to_path_buf(), bmc.driver_info());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (svc, c) = rt.block_on(async move {
            let svc = service(settings(&runtime_dir)).await;
            let target = ConsoleTarget::resolve("ipmi", None, &driver_info).unwrap();
            let mut c = Console::start(svc.context(), node, target).await;
            let pid = c.wait_active().await.unwrap();
            tx.send(pid).unwrap();
            (svc, c)
        });
        std::mem::forget((svc, c));
        std::mem::forget(rt);
        loop {
            std::thread::park();
        }
    });
    let pid = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the console became active");
    // The orphan is alive and in session, not merely not yet dead: the BMC still refuses an
    // outside activation because its payload is held.
    assert!(
        bmc.outside_activate().is_err(),
        "the frozen conductor's console does not hold the BMC's session"
    );
    assert!(!process_gone(pid), "ipmitool {pid} should still run");

    // The next run of the conductor sweeps it.
    let swept = ferric_console::sweep_orphans(dir.path()).unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].node, Some(node));
    assert_eq!(swept[0].pid, Some(pid));
    assert_eq!(swept[0].outcome, ferric_console::SweepOutcome::Killed);
    assert!(process_gone(pid), "ipmitool {pid} survived the sweep");
    assert!(pid_file(dir.path(), &node.to_string()).is_none());
    // A second sweep finds nothing.
    assert!(ferric_console::sweep_orphans(dir.path())
        .unwrap()
        .is_empty());
    // The next activation clears the killed session's payload itself.
    activates_at_once(dir.path(), node, &bmc);
}

/// Runs as a separate process in `a_console_dies_with_its_conductor_process`: starts a console
/// against the BMC named in the environment, prints the ipmitool pid, and waits to be killed.
#[test]
#[ignore = "helper process of a_console_dies_with_its_conductor_process"]
fn helper_conductor_with_a_console() {
    let Ok(info) = std::env::var("FERRIC_CONSOLE_HELPER_INFO") else {
        return;
    };
    let dir = std::env::var("FERRIC_CONSOLE_HELPER_DIR").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let svc = service(settings(std::path::Path::new(&dir))).await;
        let target = ConsoleTarget::resolve("ipmi", None, &info).unwrap();
        let mut c = Console::start(svc.context(), NodeId::new_random(), target).await;
        let pid = c.wait_active().await.unwrap();
        println!("CONSOLE-PID {pid}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn a_console_dies_with_its_conductor_process() {
    let bmc = IpmiSim::with_sol();
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_conductor_with_a_console",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERRIC_CONSOLE_HELPER_INFO", bmc.driver_info())
        .env("FERRIC_CONSOLE_HELPER_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = helper.stdout.take().unwrap();
    let mut helper = Reap(helper);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // The test harness prints "test <name> ... " before it, on the same line.
            if let Some((_, pid)) = line.split_once("CONSOLE-PID ") {
                let _ = tx.send(pid.trim().parse::<u32>().unwrap());
            }
        }
    });
    let pid = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the helper's console became active");
    assert!(!process_gone(pid));

    // SIGKILL the "conductor": no cleanup code of it runs.
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(pid)),
        "ipmitool {pid} outlived its conductor"
    );
    // Its pid file is stale; the next start's sweep removes it without killing anything.
    let swept = ferric_console::sweep_orphans(dir.path()).unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].outcome, ferric_console::SweepOutcome::Gone);
    // The next owner gets the console at once: it went with stdin closing and SIGINT (which
    // usually free the payload themselves), and a payload still held is cleared by the new
    // owner's `sol deactivate`, not waited out.
    activates_at_once(dir.path(), NodeId::new_random(), &bmc);
}
