//! The `fake` console (driver `fake-hardware`): an in-process echo terminal with a prompt, so
//! that the console path can be tried without hardware. Nothing to clean up.

use super::{Cancel, Ended, Io};
use bytes::Bytes;
use tokio::sync::mpsc;

pub const PROMPT: &str = "fake$ ";

pub async fn run(io: &Io<'_>, cancel: &mut Cancel) -> Ended {
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    io.hub.set_input(Some(tx));
    io.report.active(None);
    io.hub.publish(Bytes::from(format!(
        "\r\nFerric fake console of node {} (an echo terminal)\r\n{PROMPT}",
        io.node
    )));
    let mut after_cr = false;
    loop {
        tokio::select! {
            keys = rx.recv() => {
                let Some(keys) = keys else { break };
                let mut out = Vec::with_capacity(keys.len() + 8);
                for &b in keys.iter() {
                    match b {
                        b'\n' if after_cr => {}
                        b'\r' | b'\n' => {
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(PROMPT.as_bytes());
                        }
                        // Backspace and DEL rub out the character.
                        0x08 | 0x7f => out.extend_from_slice(b"\x08 \x08"),
                        _ => out.push(b),
                    }
                    after_cr = b == b'\r';
                }
                io.hub.publish(Bytes::from(out));
            }
            _ = cancel.cancelled() => break,
        }
    }
    io.hub.set_input(None);
    Ended::Stopped
}
