//! Versioned encoding of persisted records: one format-version byte, then the postcard body.
//!
//! postcard is not self-describing, so any change to a record's fields is a new format version.
//! Each record type names its current version and knows how to read the previous one
//! ([`Record::migrate`]); a reader that meets a version newer than it knows reports it instead of
//! guessing, so a rolling upgrade never silently misreads a record written by a newer conductor.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty {kind} record")]
    Empty { kind: &'static str },
    #[error("{kind} record has format version {version}, this build reads up to {current}")]
    UnknownVersion {
        kind: &'static str,
        version: u8,
        current: u8,
    },
    #[error("corrupt {kind} record (format version {version}): {reason}")]
    Corrupt {
        kind: &'static str,
        version: u8,
        reason: String,
    },
}

/// A record persisted in etcd.
pub trait Record: Serialize + DeserializeOwned {
    /// Human name used in errors ("node spec", "conductor", ...).
    const KIND: &'static str;
    /// The format version this build writes.
    const VERSION: u8;

    /// The format version to write this record in, and its body, given the body in the current
    /// version. The default is the current version; a record whose newest fields are unset
    /// may write the older format those fields were added after, which older builds read.
    fn encode_body(&self, body: Vec<u8>) -> (u8, Vec<u8>) {
        (Self::VERSION, body)
    }

    /// Reads a body written in an older format version. The default knows no older formats.
    fn migrate(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        let _ = body;
        Err(CodecError::UnknownVersion {
            kind: Self::KIND,
            version,
            current: Self::VERSION,
        })
    }
}

pub fn encode<R: Record>(record: &R) -> Vec<u8> {
    // Serializing plain structs of owned data into a Vec cannot fail.
    let body = postcard::to_allocvec(record).expect("postcard encoding into a Vec");
    let (version, body) = record.encode_body(body);
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(version);
    out.extend(body);
    out
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, CodecError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or(CodecError::Empty { kind: R::KIND })?;
    if version == R::VERSION {
        body_of::<R>(version, body)
    } else if version < R::VERSION {
        R::migrate(version, body)
    } else {
        Err(CodecError::UnknownVersion {
            kind: R::KIND,
            version,
            current: R::VERSION,
        })
    }
}

/// Decodes one exact body (no trailing bytes) of a given version; for `migrate` implementations.
pub fn body_of<T: DeserializeOwned>(version: u8, body: &[u8]) -> Result<T, CodecError> {
    let kind = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("record");
    let kind: &'static str = match kind {
        // Keep error text stable and readable for the types we persist.
        "NodeSpec" => "node spec",
        "NodeStatus" => "node status",
        "ConductorRecord" => "conductor",
        "ReservationRecord" => "reservation",
        _ => "record",
    };
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(CodecError::Corrupt {
            kind,
            version,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(CodecError::Corrupt {
            kind,
            version,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// An old format of a test record, as a build from before a field was added wrote it.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct WidgetV1 {
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Widget {
        name: String,
        size: u32,
    }

    impl Record for WidgetV1 {
        const KIND: &'static str = "widget";
        const VERSION: u8 = 1;
    }

    impl Record for Widget {
        const KIND: &'static str = "widget";
        const VERSION: u8 = 2;
        fn migrate(version: u8, body: &[u8]) -> Result<Self, CodecError> {
            match version {
                1 => {
                    let old: WidgetV1 = body_of(version, body)?;
                    Ok(Widget {
                        name: old.name,
                        size: 0,
                    })
                }
                _ => Err(CodecError::UnknownVersion {
                    kind: Self::KIND,
                    version,
                    current: Self::VERSION,
                }),
            }
        }
    }

    #[test]
    fn round_trip_keeps_the_record() {
        let w = Widget {
            name: "a".into(),
            size: 7,
        };
        let bytes = encode(&w);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Widget>(&bytes).unwrap(), w);
    }

    #[test]
    fn previous_format_is_migrated() {
        let old = encode(&WidgetV1 { name: "old".into() });
        assert_eq!(old[0], 1);
        assert_eq!(
            decode::<Widget>(&old).unwrap(),
            Widget {
                name: "old".into(),
                size: 0
            }
        );
    }

    #[test]
    fn newer_unknown_and_corrupt_records_are_errors_not_panics() {
        let mut newer = encode(&Widget {
            name: "n".into(),
            size: 1,
        });
        newer[0] = 9;
        assert!(matches!(
            decode::<Widget>(&newer),
            Err(CodecError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            decode::<Widget>(&[]),
            Err(CodecError::Empty { .. })
        ));
        assert!(matches!(
            decode::<Widget>(&[0]),
            Err(CodecError::UnknownVersion { version: 0, .. })
        ));
        // Truncated body, trailing garbage, random bytes: all Corrupt, none panic.
        let good = encode(&Widget {
            name: "abc".into(),
            size: 300,
        });
        assert!(matches!(
            decode::<Widget>(&good[..good.len() - 1]),
            Err(CodecError::Corrupt { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Widget>(&trailing),
            Err(CodecError::Corrupt { .. })
        ));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200usize {
            let mut junk = vec![2u8];
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                junk.push(seed as u8);
            }
            let _ = decode::<Widget>(&junk);
        }
    }
}
