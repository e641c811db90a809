//! The conductor's console websocket over real sockets, with the in-process `fake` console:
//! authentication, fan-out, replay, the writer slot, back-pressure, oversized frames, idle
//! viewers, and the close codes when a console stops. Run: `cargo test -p ferric-console --test
//! viewers`.

mod support;

use ferric_console::hub::{
    CLOSE_DISABLED, CLOSE_IDLE, CLOSE_OWNER_CHANGED, CLOSE_TOO_BIG, CLOSE_TOO_SLOW,
};
use ferric_console::{ConsoleActor, ConsoleTarget, StopReason};
use ferric_model::NodeId;
use futures::SinkExt;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const FAKE_PROMPT: &[u8] = b"fake$ ";

/// A console service (its runtime dir in the returned temporary directory) and an active fake
/// console, with settings `tweak` adjusted.
async fn fake_console(
    tweak: impl FnOnce(&mut ferric_console::ConsoleSettings),
) -> (tempfile::TempDir, ferric_console::ConsoleService, Console) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    tweak(&mut s);
    let svc = service(s).await;
    let mut c = Console::start(svc.context(), NodeId::new_random(), ConsoleTarget::Fake).await;
    c.wait_active().await;
    (dir, svc, c)
}

#[tokio::test]
async fn wrong_or_missing_secret_is_refused_before_the_upgrade() {
    let (_dir, svc, c) = fake_console(|_| {}).await;
    let u = url(svc.local_addr(), &c.node, "rw");
    assert_eq!(try_connect(&u, None).await.err(), Some(401));
    assert_eq!(try_connect(&u, Some("Bearer wrong")).await.err(), Some(401));
    assert_eq!(
        try_connect(&u, Some(&format!("Basic {SECRET}")))
            .await
            .err(),
        Some(401)
    );
    let auth = format!("Bearer {SECRET}");
    // Authenticated, but no such console here / bad requests.
    let other = url(svc.local_addr(), &NodeId::new_random(), "rw");
    assert_eq!(try_connect(&other, Some(&auth)).await.err(), Some(404));
    let bad_mode = url(svc.local_addr(), &c.node, "admin");
    assert_eq!(try_connect(&bad_mode, Some(&auth)).await.err(), Some(400));
    assert!(try_connect(&u, Some(&auth)).await.is_ok());
}

#[tokio::test]
async fn every_viewer_gets_the_output_new_ones_the_replay_and_one_writes() {
    let (_dir, svc, c) = fake_console(|_| {}).await;
    let addr = svc.local_addr();

    let (mut w, hello) = viewer(addr, &c.node, "rw").await;
    assert_eq!(hello["writer"], true);
    assert_eq!(hello["node"], c.node.to_string());
    assert_eq!(hello["conductor"], "c-test");
    let state = next_text(&mut w).await;
    assert_eq!(state["type"], "state");
    assert_eq!(state["state"], "active");
    // The banner printed before anyone watched comes as replay.
    read_until(&mut w, FAKE_PROMPT).await;

    let (mut r, hello) = viewer(addr, &c.node, "ro").await;
    assert_eq!(hello["writer"], false);
    let (mut w2, hello) = viewer(addr, &c.node, "rw").await;
    assert_eq!(hello["writer"], false, "the writer slot is taken");

    type_keys(&mut w, b"uname -a").await;
    for ws in [&mut w, &mut r, &mut w2] {
        read_until(ws, b"uname -a").await;
    }
    // Keystrokes of read-only viewers go nowhere.
    type_keys(&mut r, b"rm -rf /").await;
    type_keys(&mut w2, b"reboot").await;
    type_keys(&mut w, b"\r").await;
    let seen = read_until(&mut r, b"\r\nfake$ ").await;
    assert!(!seen.text().contains("rm -rf") && !seen.text().contains("reboot"));

    // A viewer arriving now is replayed what happened, prompt included.
    let (mut late, _) = viewer(addr, &c.node, "ro").await;
    let replay = read_until(&mut late, b"uname -a\r\nfake$ ").await;
    assert!(
        replay.text().contains("Ferric fake console"),
        "{}",
        replay.text()
    );

    // The writer leaves: the waiting rw viewer is promoted and told so.
    w.close(None).await.unwrap();
    let promoted = read_control(&mut w2, |v| v["type"] == "writer").await;
    assert_eq!(promoted["writer"], true);
    type_keys(&mut w2, b"whoami").await;
    read_until(&mut r, b"whoami").await;
}

#[tokio::test]
async fn a_viewer_that_never_reads_does_not_stall_the_others() {
    let (_dir, svc, c) = fake_console(|s| s.viewer_queue = 8).await;
    let addr = svc.local_addr();
    // Connects and then never reads a byte.
    let (mut stuck, _) = viewer(addr, &c.node, "ro").await;
    let (mut w, _) = viewer(addr, &c.node, "rw").await;
    read_until(&mut w, FAKE_PROMPT).await;

    // 8 MiB of echo: far more than the stuck viewer's queue and its socket buffers.
    let chunk: Vec<u8> = (0..60 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let total = 8 * 1024 * 1024 / chunk.len();
    let mut received = 0usize;
    let start = std::time::Instant::now();
    for i in 0..total {
        type_keys(&mut w, &chunk).await;
        // The writer reads its own echo as it goes: the console keeps flowing for it.
        let got = read_until(&mut w, &chunk[chunk.len() - 64..]).await;
        received += got.output.len();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stalled after {i} chunks"
        );
    }
    assert!(received >= total * chunk.len());
    assert_eq!(
        close_frame(&mut stuck).await.0,
        CLOSE_TOO_SLOW,
        "the stuck viewer is told why"
    );
    // The console itself is unaffected.
    assert_eq!(c.status().await.viewers, 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_viewer_and_garbage_is_just_bytes() {
    let (_dir, svc, c) = fake_console(|_| {}).await;
    let addr = svc.local_addr();
    let (mut big, _) = viewer(addr, &c.node, "rw").await;
    let (mut other, _) = viewer(addr, &c.node, "ro").await;
    big.send(Message::binary(vec![b'x'; 64 * 1024 + 1]))
        .await
        .unwrap();
    let (code, reason) = close_frame(&mut big).await;
    assert_eq!(code, CLOSE_TOO_BIG, "{reason}");
    assert!(reason.contains("64 KiB"), "{reason}");

    // The writer slot was freed; the next rw viewer writes garbage, which is echoed as bytes.
    let (mut w, hello) = viewer(addr, &c.node, "rw").await;
    assert_eq!(hello["writer"], true);
    let garbage = [
        0xff, 0x00, 0x1d, b'~', b'.', 0xc3, 0x28, 0x1b, b'[', b'2', b'J',
    ];
    type_keys(&mut w, &garbage).await;
    w.send(Message::text("{\"type\":\"resize\"}"))
        .await
        .unwrap();
    for ws in [&mut w, &mut other] {
        let got = read_until(ws, b"{\"type\":\"resize\"}").await;
        assert!(
            got.output.windows(garbage.len()).any(|x| x == garbage),
            "{:?}",
            got.output
        );
    }
    // Exactly 64 KiB is fine.
    type_keys(&mut w, &vec![b'y'; 64 * 1024]).await;
    read_until(&mut other, &[b'y'; 1024]).await;
    assert_eq!(c.status().await.viewers, 2);
}

#[tokio::test]
async fn an_idle_viewer_is_closed_and_the_console_stays() {
    let (_dir, svc, c) = fake_console(|s| s.idle_timeout = Duration::from_secs(1)).await;
    let addr = svc.local_addr();
    let (mut idle, _) = viewer(addr, &c.node, "ro").await;
    let (mut busy, _) = viewer(addr, &c.node, "rw").await;
    for _ in 0..6 {
        // An empty frame is a keepalive.
        type_keys(&mut busy, b"").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, reason) = close_frame(&mut idle).await;
    assert_eq!(code, CLOSE_IDLE);
    assert!(reason.contains("idle"), "{reason}");
    type_keys(&mut busy, b"still here").await;
    read_until(&mut busy, b"still here").await;
    assert!(matches!(
        c.status().await.state,
        ferric_console::SessionState::Active { .. }
    ));
}

#[tokio::test]
async fn disabling_closes_viewers_4410_and_losing_the_node_closes_them_4001() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(settings(dir.path())).await;
    let addr = svc.local_addr();

    let mut c = Console::start(svc.context(), NodeId::new_random(), ConsoleTarget::Fake).await;
    c.wait_active().await;
    let (mut v, _) = viewer(addr, &c.node, "ro").await;
    ConsoleActor::stop_and_wait(&c.actor, StopReason::Disabled, WAIT).await;
    assert_eq!(close_frame(&mut v).await.0, CLOSE_DISABLED);
    let u = url(addr, &c.node, "ro");
    let auth = format!("Bearer {SECRET}");
    assert_eq!(try_connect(&u, Some(&auth)).await.err(), Some(404));
    assert!(svc.registry().is_empty());

    // A console killed with its node actor (hand-over): 4001, the gateway reconnects.
    let mut c = Console::start(svc.context(), NodeId::new_random(), ConsoleTarget::Fake).await;
    c.wait_active().await;
    let (mut v, _) = viewer(addr, &c.node, "rw").await;
    c.actor.kill();
    let (code, reason) = close_frame(&mut v).await;
    assert_eq!(code, CLOSE_OWNER_CHANGED, "{reason}");
    assert!(reason.contains("reconnect"), "{reason}");

    // Shutting the service down closes what is left with 4001 too.
    let mut c = Console::start(svc.context(), NodeId::new_random(), ConsoleTarget::Fake).await;
    c.wait_active().await;
    let (mut v, _) = viewer(addr, &c.node, "ro").await;
    svc.shutdown().await;
    assert_eq!(close_frame(&mut v).await.0, CLOSE_OWNER_CHANGED);
}
