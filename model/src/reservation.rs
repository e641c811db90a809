//! The records of ownership: the reservation record (`reservations/<uuid>` and
//! `buckets/<bucket>`, on the holder's lease: who owns a node or a bucket; the fencing token is
//! the key's create revision, not part of the value) and the delegation record
//! (`delegations/<uuid>`: whom a bucket's holder hands a node on to).

use crate::codec::Record;
use serde::{Deserialize, Serialize};

/// The value of `reservations/<uuid>` and of `buckets/<bucket>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub conductor: String,
    pub acquired_at_ms: u64,
}

impl Record for ReservationRecord {
    const KIND: &'static str = "reservation";
    const VERSION: u8 = 1;
}

/// The value of `delegations/<uuid>`. A delegate's reservation compares the whole value
/// (etcd compares bytes), so its encoding must stay the same for the same conductor: it has no
/// other field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRecord {
    pub conductor: String,
}

impl Record for DelegationRecord {
    const KIND: &'static str = "delegation";
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

    #[test]
    fn a_delegation_encodes_to_the_same_bytes_every_time() {
        let rec = DelegationRecord {
            conductor: "c2".into(),
        };
        assert_eq!(encode(&rec), [1, 2, 99, 50]);
        assert_eq!(decode::<DelegationRecord>(&encode(&rec)).unwrap(), rec);
    }
}
