//! One system's serial port, as plain data: what the machine prints (boot lines, a login prompt,
//! the echo of what is typed), the one session that may be attached to it, and the output kept
//! while none is.
//!
//! A real serial port drops what nobody reads; this one keeps the newest [`RING_BYTES`] bytes
//! produced while no session is open and hands them to the next session first, so that a test
//! that connects after powering on still sees the boot lines. While a session is open and its
//! queue is full (a client that does not read), output is dropped like a UART overrun.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::system::BootTarget;

/// Output kept while no session is open.
pub const RING_BYTES: usize = 4096;
/// A typed line longer than this is still echoed, but only its first bytes are kept for the
/// answer (bounded memory whatever a client sends).
pub const MAX_LINE: usize = 4096;
/// Output chunks queued for a session before output is dropped.
pub const SESSION_QUEUE: usize = 256;

/// Output for the session attached to a port.
pub type OutputSender = mpsc::Sender<Vec<u8>>;

#[derive(Debug, Default)]
pub struct SerialPort {
    ring: VecDeque<u8>,
    line: Vec<u8>,
    /// The last input byte was `\r`, so a `\n` right after it ends nothing (CR LF is one end).
    after_cr: bool,
    session: Option<Session>,
    /// Sessions ever attached; the current one's number.
    sessions: u64,
    /// Bytes dropped because a session did not read its output.
    overrun: u64,
}

#[derive(Debug)]
struct Session {
    seq: u64,
    out: OutputSender,
}

/// A session is already open; its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy(pub u64);

impl SerialPort {
    /// Attaches a session that receives output on `out`, starting with the kept output.
    /// Returns its number on this port (from 1).
    pub fn attach(&mut self, out: OutputSender) -> Result<u64, Busy> {
        if let Some(s) = &self.session {
            return Err(Busy(s.seq));
        }
        self.sessions += 1;
        self.session = Some(Session {
            seq: self.sessions,
            out,
        });
        if !self.ring.is_empty() {
            let kept: Vec<u8> = self.ring.drain(..).collect();
            self.emit(kept);
        }
        Ok(self.sessions)
    }

    /// Detaches session `seq` if it is still the attached one (a session that was deactivated
    /// and replaced must not detach its successor). Returns whether it was.
    pub fn detach(&mut self, seq: u64) -> bool {
        if self.session.as_ref().is_some_and(|s| s.seq == seq) {
            self.session = None;
            true
        } else {
            false
        }
    }

    /// Drops the attached session, if any (its output queue closes, which ends it). Returns its
    /// number.
    pub fn deactivate(&mut self) -> Option<u64> {
        self.session.take().map(|s| s.seq)
    }

    /// The attached session's number.
    pub fn session(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.seq)
    }

    /// Bytes of output kept for the next session.
    pub fn kept(&self) -> usize {
        self.ring.len()
    }

    pub fn overrun(&self) -> u64 {
        self.overrun
    }

    /// The machine `id` booted from `from`: what the console shows, then the login prompt.
    pub fn boot(&mut self, id: &str, from: BootTarget) {
        self.line.clear();
        self.after_cr = false;
        let what = if from == BootTarget::Pxe {
            "the agent ramdisk"
        } else {
            "the operating system"
        };
        let out = format!(
            "ferric-sim {id} booting from {}\r\nLoading {what} ...\r\n{}",
            from.as_str(),
            prompt(id)
        );
        self.emit(out.into_bytes());
    }

    /// Bytes typed on the console of the running machine `id`: echoed; each line (ended by CR,
    /// LF or CR LF) is answered and followed by a new prompt. Not called while the machine is
    /// off (nothing runs to read the input).
    pub fn input(&mut self, id: &str, bytes: &[u8]) {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\nyou typed: ");
                    out.append(&mut self.line);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(prompt(id).as_bytes());
                }
                _ => {
                    out.push(b);
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                    }
                }
            }
        }
        if !out.is_empty() {
            self.emit(out);
        }
    }

    fn emit(&mut self, bytes: Vec<u8>) {
        let bytes = match &self.session {
            Some(s) => match s.out.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(b)) => {
                    self.overrun += b.len() as u64;
                    return;
                }
                // The session is ending but has not detached yet: keep the output.
                Err(mpsc::error::TrySendError::Closed(b)) => b,
            },
            None => bytes,
        };
        self.ring.extend(bytes);
        let excess = self.ring.len().saturating_sub(RING_BYTES);
        self.ring.drain(..excess);
    }
}

/// The login prompt of machine `id`.
pub fn prompt(id: &str) -> String {
    format!("\r\n{id} login: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Vec<u8>>) -> String {
        let mut all = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            all.extend(chunk);
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    #[test]
    fn output_without_a_session_is_kept_and_replayed_first() {
        let mut port = SerialPort::default();
        port.boot("s1", BootTarget::Pxe);
        let boot =
            "ferric-sim s1 booting from Pxe\r\nLoading the agent ramdisk ...\r\n\r\ns1 login: ";
        assert_eq!(port.kept(), boot.len());
        let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
        assert_eq!(port.attach(tx), Ok(1));
        assert_eq!(port.kept(), 0);
        port.input("s1", b"root\r\nx");
        assert_eq!(
            drain(&mut rx),
            format!("{boot}root\r\nyou typed: root\r\n\r\ns1 login: x")
        );
    }

    #[test]
    fn only_the_newest_bytes_are_kept() {
        let mut port = SerialPort::default();
        for _ in 0..100 {
            port.boot("s1", BootTarget::Hdd);
        }
        assert_eq!(port.kept(), RING_BYTES);
        let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
        port.attach(tx).unwrap();
        let got = drain(&mut rx);
        assert!(got.ends_with("s1 login: "), "{got:?}");
    }

    #[test]
    fn one_session_at_a_time_and_a_stale_one_cannot_detach_its_successor() {
        let mut port = SerialPort::default();
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        assert_eq!(port.attach(tx1), Ok(1));
        assert_eq!(port.attach(tx2.clone()), Err(Busy(1)));
        assert_eq!(port.deactivate(), Some(1));
        assert_eq!(port.deactivate(), None);
        assert_eq!(port.attach(tx2), Ok(2));
        assert!(!port.detach(1));
        assert_eq!(port.session(), Some(2));
        assert!(port.detach(2));
        assert_eq!(port.session(), None);
    }

    #[test]
    fn lines_end_at_cr_lf_or_both_and_a_boot_forgets_half_a_line() {
        let mut port = SerialPort::default();
        let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
        port.attach(tx).unwrap();
        port.input("s", b"a\rb\nc\r\n\xff");
        assert_eq!(
            drain(&mut rx),
            "a\r\nyou typed: a\r\n\r\ns login: b\r\nyou typed: b\r\n\r\ns login: \
             c\r\nyou typed: c\r\n\r\ns login: \u{fffd}"
        );
        port.boot("s", BootTarget::Hdd);
        port.input("s", b"\r");
        let got = drain(&mut rx);
        assert!(
            got.ends_with("login: \r\nyou typed: \r\n\r\ns login: "),
            "{got:?}"
        );
    }

    #[test]
    fn a_session_that_does_not_read_overruns() {
        let mut port = SerialPort::default();
        let (tx, mut rx) = mpsc::channel(1);
        port.attach(tx).unwrap();
        port.input("s", b"abc");
        port.input("s", b"def");
        assert_eq!(port.overrun(), 3);
        assert_eq!(drain(&mut rx), "abc");
        assert_eq!(port.kept(), 0);
    }

    #[test]
    fn output_for_a_session_that_is_gone_is_kept() {
        let mut port = SerialPort::default();
        let (tx, rx) = mpsc::channel(4);
        port.attach(tx).unwrap();
        drop(rx);
        port.input("s", b"abc");
        assert_eq!(port.kept(), 3);
    }
}
