//! The simulator over a real socket: `serve_state` on port 0, keep-alive, the command log seen by
//! the caller's handle, and shutdown, also with a request to an unreachable system held open.

use std::time::Duration;

mod support;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Reads one HTTP/1.1 response with a Content-Length (or none, for 204): (status, body).
async fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    r.read_line(&mut status_line).await.expect("a status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.expect("a body");
    (status, String::from_utf8(body).expect("UTF-8"))
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nAuthorization: Basic YWRtaW46cGFzc3dvcmQ=\r\n\
         User-Agent: ferric-conductor/c7\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn serves_redfish_over_keep_alive_and_stops_on_request() {
    let mut sim = support::start_systems(10).await;
    let mut conn = BufReader::new(TcpStream::connect(sim.addr).await.unwrap());
    // Several requests on one connection, as pooling clients send them.
    for i in 0..10 {
        let path = format!("/redfish/v1/Systems/sim-{i}/Actions/ComputerSystem.Reset");
        conn.get_mut()
            .write_all(request("POST", &path, r#"{"ResetType":"On"}"#).as_bytes())
            .await
            .unwrap();
        let (status, _) = read_response(&mut conn).await;
        assert_eq!(status, 204);
    }
    conn.get_mut()
        .write_all(request("GET", "/redfish/v1/Systems/sim-9", "").as_bytes())
        .await
        .unwrap();
    let (status, body) = read_response(&mut conn).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["PowerState"], "On");

    let log = sim.state.log().since(0);
    assert_eq!(log.len(), 11);
    assert!(log.iter().all(|e| e.client.as_deref() == Some("c7")));

    sim.served
        .stop(Duration::from_secs(10), "the server stops promptly")
        .await;
    assert!(
        TcpStream::connect(sim.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn stops_even_while_an_unreachable_system_holds_a_request() {
    let mut sim = support::start_systems(2).await;
    let id = sim.state.ids()[0].clone();
    let mut control = BufReader::new(TcpStream::connect(sim.addr).await.unwrap());
    control
        .get_mut()
        .write_all(
            request(
                "PUT",
                &format!("/sim/systems/{id}/behaviour"),
                r#"{"unreachable": true}"#,
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(read_response(&mut control).await.0, 200);

    let mut held = TcpStream::connect(sim.addr).await.unwrap();
    held.write_all(request("GET", &format!("/redfish/v1/Systems/{id}"), "").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(500), held.read(&mut buf))
            .await
            .is_err(),
        "an unreachable system must not answer"
    );
    // The command arrived and is on record as unanswered.
    let log = sim.state.log().since(0);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, None);

    sim.served
        .stop(
            Duration::from_secs(10),
            "a held request must not keep the server from stopping",
        )
        .await;
    // The held connection is closed without an answer.
    let n = timeout(Duration::from_secs(5), held.read(&mut buf))
        .await
        .expect("the connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer, just a closed connection");
}
