//! Keystrokes to `ipmitool sol activate`, made transparent.
//!
//! ipmitool reads its stdin for escape sequences: the escape character right after a CR or LF
//! (or at the very start) followed by `.` ends the session, `^Z`/`^X` suspend ipmitool (with
//! plain pipes that stops the process with SIGTSTP), `B` sends a break, `?` prints help. A web
//! user typing Enter then `~.` would end the console for everybody.
//!
//! Two defences: ipmitool is started with `-e` [`ESCAPE`] (0x1D, Ctrl-], which nobody types by
//! accident; `man ipmitool` allows any single character and ipmitool 1.8.19 takes control
//! characters), and [`EscapeEncoder`] mirrors ipmitool's own state machine (its `last_was_cr`,
//! which starts true and persists across reads) to double the escape character exactly where
//! ipmitool would treat it as an escape: doubled, ipmitool sends one escape character to the
//! BMC and recognises nothing. So every byte a viewer types reaches the serial port unchanged,
//! and no byte sequence from a viewer can end, suspend or break the session.

/// The escape character passed to `ipmitool -e`: 0x1D (Ctrl-]).
pub const ESCAPE: u8 = 0x1d;

/// Mirrors ipmitool's escape state for the bytes written to its stdin (all of them must pass
/// through one encoder, including the throwaway CR sent after activation).
#[derive(Debug, Clone)]
pub struct EscapeEncoder {
    /// ipmitool's `last_was_cr`: the previous byte was CR or LF (true at start).
    after_newline: bool,
}

impl Default for EscapeEncoder {
    fn default() -> Self {
        EscapeEncoder {
            after_newline: true,
        }
    }
}

impl EscapeEncoder {
    /// Appends `input` to `out`, escaped.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.after_newline && b == ESCAPE {
                // ipmitool: escape pending, then the second escape character is sent as one
                // literal escape character, and it is not a newline.
                out.extend_from_slice(&[ESCAPE, ESCAPE]);
                self.after_newline = false;
            } else {
                out.push(b);
                self.after_newline = b == b'\r' || b == b'\n';
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ipmitool 1.8.19's `processSolUserInput`, reduced to what it sends and what it acts on.
    #[derive(Default)]
    struct Ipmitool {
        pending: bool,
        not_after_newline: bool,
        sent: Vec<u8>,
        commands: Vec<u8>,
    }

    impl Ipmitool {
        fn feed(&mut self, input: &[u8]) {
            for &ch in input {
                if self.pending {
                    self.pending = false;
                    match ch {
                        b'.' | 0x1a | 0x18 | b'B' | b'?' => {
                            self.commands.push(ch);
                            if ch != b'.' {
                                continue;
                            }
                        }
                        _ => {
                            if ch != ESCAPE {
                                self.sent.push(ESCAPE);
                            }
                            self.sent.push(ch);
                        }
                    }
                } else {
                    if !self.not_after_newline && ch == ESCAPE {
                        self.pending = true;
                        continue;
                    }
                    self.sent.push(ch);
                }
                self.not_after_newline = !(ch == b'\r' || ch == b'\n');
            }
        }
    }

    #[test]
    fn every_byte_reaches_the_bmc_and_nothing_is_a_command() {
        let inputs: Vec<Vec<u8>> = vec![
            vec![ESCAPE, b'.'],
            b"ls\r\x1d.\r\x1d\x1d\x1dB\n\x1d?\x1d\x1a".to_vec(),
            b"\r~.\r~~".to_vec(),
            (0u8..=255).collect(),
            [b'\r', ESCAPE].repeat(50),
        ];
        for input in inputs {
            // Split into chunks in every way a pipe could deliver them.
            for chunk in [1, 2, 3, 7, 1000] {
                let mut enc = EscapeEncoder::default();
                let mut tool = Ipmitool::default();
                for part in input.chunks(chunk) {
                    let mut out = Vec::new();
                    enc.encode(part, &mut out);
                    tool.feed(&out);
                }
                assert_eq!(tool.sent, input, "chunk {chunk}");
                assert!(tool.commands.is_empty(), "{:?}", tool.commands);
                assert!(!tool.pending);
            }
        }
    }
}
