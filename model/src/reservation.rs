//! The reservation record (`reservations/<uuid>`, on the holder's lease): who owns a node. The
//! fencing token is the key's create revision, not part of the value.

use crate::codec::Record;
use serde::{Deserialize, Serialize};

/// The value of `reservations/<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub conductor: String,
    pub acquired_at_ms: u64,
}

impl Record for ReservationRecord {
    const KIND: &'static str = "reservation";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    /// Bytes written by the build before the record moved to its own module.
    const V1: &[u8] = &[1, 2, 99, 50, 130, 208, 149, 255, 188, 49];

    #[test]
    fn format_1_bytes_decode_and_encode_unchanged() {
        let rec = ReservationRecord {
            conductor: "c2".into(),
            acquired_at_ms: 1_700_000_000_002,
        };
        assert_eq!(decode::<ReservationRecord>(V1).unwrap(), rec);
        assert_eq!(encode(&rec), V1);
    }
}
