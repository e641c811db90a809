//! The viewer side of the console proxy: a bounded queue of what goes to one viewer, drained
//! by [`write_viewer`], and the close that ends it.

use super::super::QUEUE_BYTES;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use ferric_model::console_wire::CLOSE_TOO_SLOW;
use ferric_model::ControlFrame;
use futures::stream::SplitSink;
use futures::SinkExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a close frame may take to go out, and the peer to answer it.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a viewer closed for being too slow gets to read its close frame.
pub(super) const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A close for the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Close {
    pub(super) code: u16,
    pub(super) reason: String,
}

impl Close {
    pub(super) fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }

    pub(super) fn frame(&self) -> Message {
        Message::Close(Some(CloseFrame {
            code: self.code,
            reason: close_reason(&self.reason).into(),
        }))
    }
}

/// A close frame's reason is at most 123 bytes of UTF-8.
pub(super) fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

pub(super) enum Out {
    Msg(Message, usize),
    Close(Close),
}

/// The viewer's sending half, drained by [`write_viewer`] through a bounded queue.
pub(super) struct ToViewer {
    pub(super) tx: mpsc::Sender<Out>,
    pub(super) queued: Arc<AtomicUsize>,
    /// Abandons the queue and closes with this (a viewer too slow to take a close in turn).
    pub(super) kill: watch::Sender<Option<Close>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    Full,
    Gone,
}

impl ToViewer {
    pub(super) fn push(&self, msg: Message) -> Result<(), Push> {
        let len = match &msg {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        };
        if self.queued.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            return Err(Push::Full);
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(Out::Msg(msg, len)).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Push::Full,
                mpsc::error::TrySendError::Closed(_) => Push::Gone,
            }
        })
    }

    pub(super) fn control(&self, frame: ControlFrame) -> Result<(), Push> {
        self.push(Message::Text(frame.to_text().into()))
    }

    /// Closes after what is queued, or at once when the queue is full.
    pub(super) fn close(&self, c: Close) {
        if let Err(mpsc::error::TrySendError::Full(Out::Close(c))) = self.tx.try_send(Out::Close(c))
        {
            self.kill.send_replace(Some(c));
        }
    }

    pub(super) fn too_slow(&self) {
        self.kill.send_replace(Some(Close::new(
            CLOSE_TOO_SLOW,
            format!(
                "viewer too slow: more than {} KiB of console output waiting",
                QUEUE_BYTES / 1024
            ),
        )));
    }
}

pub(super) async fn killed(rx: &mut watch::Receiver<Option<Close>>) -> Close {
    let close = match rx.wait_for(Option::is_some).await {
        Ok(c) => c.clone(),
        Err(_) => None,
    };
    match close {
        Some(c) => c,
        // The session ended without killing: never.
        None => std::future::pending().await,
    }
}

pub(super) async fn write_viewer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    queued: Arc<AtomicUsize>,
    mut kill: watch::Receiver<Option<Close>>,
) {
    let close = loop {
        let out = tokio::select! {
            biased;
            c = killed(&mut kill) => break Some((c, SLOW_CLOSE_GRACE)),
            out = rx.recv() => out,
        };
        match out {
            Some(Out::Msg(msg, len)) => {
                tokio::select! {
                    biased;
                    c = killed(&mut kill) => break Some((c, SLOW_CLOSE_GRACE)),
                    r = sink.send(msg) => {
                        queued.fetch_sub(len, Ordering::Relaxed);
                        if r.is_err() {
                            return;
                        }
                    }
                }
            }
            Some(Out::Close(c)) => break Some((c, CLOSE_GRACE)),
            // The session ended without a close of ours (the viewer closed): finish its
            // closing handshake.
            None => break None,
        }
    };
    match close {
        Some((c, grace)) => {
            tracing::debug!(code = c.code, reason = %c.reason, "console viewer closed");
            let _ = tokio::time::timeout(grace, sink.send(c.frame())).await;
        }
        None => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= 123);
        assert!(long.starts_with(r));
        assert_eq!(close_reason("short"), "short");
    }
    #[tokio::test]
    async fn a_full_queue_is_too_slow_and_a_gone_writer_is_gone() {
        let (tx, mut rx) = mpsc::channel(2);
        let (kill, _kill_rx) = watch::channel(None);
        let to = ToViewer {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            kill,
        };
        to.push(Message::Binary(vec![0; 10].into())).unwrap();
        assert_eq!(
            to.push(Message::Binary(vec![0; QUEUE_BYTES].into())),
            Err(Push::Full)
        );
        to.push(Message::Binary(vec![0; 10].into())).unwrap();
        assert_eq!(to.push(Message::Binary(vec![0; 1].into())), Err(Push::Full));
        assert_eq!(to.queued.load(Ordering::Relaxed), 20);
        // A close that does not fit kills instead.
        to.close(Close::new(4410, "disabled"));
        assert_eq!(to.kill.borrow().as_ref().unwrap().code, 4410);
        rx.close();
        while rx.recv().await.is_some() {}
        assert_eq!(to.push(Message::Binary(vec![0; 1].into())), Err(Push::Gone));
    }
}
