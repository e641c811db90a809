//! A websocket console viewer (tokio-tungstenite) with bounded reads: connect with headers
//! (refusals before the upgrade come back with their status and body), then read output,
//! control messages and the close frame.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The bound of every read and of the handshake.
pub const WAIT: Duration = Duration::from_secs(20);

/// A viewer refused before the upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// The body as JSON (Null if it is not JSON).
    pub body: Value,
}

impl Refused {
    /// The `faultstring` of Ironic's error body, or a note that the body is not one.
    pub fn fault(&self) -> String {
        self.body["error_message"]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v["faultstring"].as_str().map(String::from))
            .unwrap_or_else(|| format!("not an Ironic error body: {}", self.body))
    }
}

/// Opens a viewer sending `headers`; also the upgrade's response headers.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<(Ws, HeaderMap), Refused> {
    let mut req = url.into_client_request().expect("a websocket URL");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
            v.parse().expect("a header value"),
        );
    }
    match timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake does not hang")
    {
        Ok((ws, resp)) => Ok((ws, resp.headers().clone())),
        Err(tungstenite::Error::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null),
        }),
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// Opens a viewer with `Authorization: Bearer <token>` (none without a token).
pub async fn connect_bearer(url: &str, token: Option<&str>) -> Result<Ws, Refused> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    connect(url, &headers).await.map(|(ws, _)| ws)
}

/// The next data or close message (pings and pongs skipped).
pub async fn next(ws: &mut Ws) -> Message {
    loop {
        match timeout(WAIT, ws.next())
            .await
            .expect("a message in time (likely deadlocked)")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return m,
            Some(Err(e)) => panic!("viewer connection failed: {e}"),
            None => panic!("viewer connection ended without a close frame"),
        }
    }
}

/// The next message, which must be a JSON text frame.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON text frame"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// Reads (skipping output and other JSON) until a JSON frame of type `ty`.
pub async fn until_type(ws: &mut Ws, ty: &str) -> Value {
    read_control(ws, |v| v["type"] == ty).await
}

/// Reads (skipping output) until a control message matching `pred` arrives; returns it.
pub async fn read_control(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        match next(ws).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON text frame");
                if pred(&v) {
                    return v;
                }
            }
            Message::Close(f) => panic!("expected a control message, got a close: {f:?}"),
            _ => {}
        }
    }
}

/// What a viewer read: output bytes and control messages, in order.
#[derive(Debug, Default)]
pub struct Read {
    pub output: Vec<u8>,
    pub controls: Vec<Value>,
}

impl Read {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads until the output contains `needle` (panics after [`WAIT`] or on close).
pub async fn read_until(ws: &mut Ws, needle: &[u8]) -> Read {
    let mut got = Read::default();
    let read = async {
        while !find(&got.output, needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.output.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => got
                    .controls
                    .push(serde_json::from_str(t.as_str()).expect("JSON text frame")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!(
                    "expected output, got {other:?} after {:?}",
                    String::from_utf8_lossy(&got.output)
                ),
            }
        }
    };
    if timeout(WAIT, read).await.is_err() {
        panic!(
            "no {:?} in {WAIT:?}; got {:?} and {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&got.output),
            got.controls
        );
    }
    got
}

/// Reads (skipping data) until the close frame: its code and reason (1005 for a close frame
/// without a code).
pub async fn close_frame(ws: &mut Ws) -> (u16, String) {
    let read = async {
        loop {
            if let Message::Close(frame) = next(ws).await {
                return match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                };
            }
        }
    };
    timeout(WAIT, read).await.expect("a close frame in time")
}

/// Sends keystrokes (a binary frame).
pub async fn type_keys(ws: &mut Ws, keys: &[u8]) {
    ws.send(Message::binary(keys.to_vec()))
        .await
        .expect("send keystrokes");
}
