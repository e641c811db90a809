//! The vocabulary of node history entries: what kind of change an entry records
//! ([`HistoryKind`]) and who asked for it ([`Requester`]). Both are persisted as the plain
//! strings older builds wrote (in JSON and in postcard alike), and any string still decodes, so
//! records written by older or newer builds keep reading.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of change a history entry records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum HistoryKind {
    Power,
    BootDevice,
    Provision,
    Maintenance,
    Takeover,
    Console,
    Remediation,
    /// Power sync: what a sweep found (an out-of-band change, failed reads, a recovery) and
    /// what the `enforce` policy pushed.
    Sync,
    /// A kind this build does not know (written by another build).
    Other(String),
}

impl HistoryKind {
    pub fn as_str(&self) -> &str {
        match self {
            HistoryKind::Power => "power",
            HistoryKind::BootDevice => "boot device",
            HistoryKind::Provision => "provision",
            HistoryKind::Maintenance => "maintenance",
            HistoryKind::Takeover => "takeover",
            HistoryKind::Console => "console",
            HistoryKind::Remediation => "remediation",
            HistoryKind::Sync => "sync",
            HistoryKind::Other(s) => s,
        }
    }
}

impl From<&str> for HistoryKind {
    fn from(s: &str) -> Self {
        match s {
            "power" => HistoryKind::Power,
            "boot device" => HistoryKind::BootDevice,
            "provision" => HistoryKind::Provision,
            "maintenance" => HistoryKind::Maintenance,
            "takeover" => HistoryKind::Takeover,
            "console" => HistoryKind::Console,
            "remediation" => HistoryKind::Remediation,
            "sync" => HistoryKind::Sync,
            other => HistoryKind::Other(other.to_string()),
        }
    }
}

/// Who asked for the change a history entry records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Requester {
    /// The owning conductor, on its own (takeover, a fault, provisioning work).
    Conductor,
    /// The node's deploy agent (a heartbeat).
    Agent,
    /// Automatic remediation.
    Remediation,
    /// `ferric ctl`.
    Ctl,
    /// The API, caller not recorded (maintenance changes).
    Api,
    /// An API caller: holds the whole text, `api:<caller>`; build it with
    /// [`Requester::api_caller`].
    ApiCaller(String),
    /// A requester this build does not know (written by another build, or a tool).
    Other(String),
}

impl Requester {
    pub fn api_caller(caller: &str) -> Self {
        Requester::ApiCaller(format!("api:{caller}"))
    }

    /// The API caller's name, for [`Requester::ApiCaller`].
    pub fn caller(&self) -> Option<&str> {
        match self {
            Requester::ApiCaller(s) => s.strip_prefix("api:"),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Requester::Conductor => "conductor",
            Requester::Agent => "agent",
            Requester::Remediation => "remediation",
            Requester::Ctl => "ctl",
            Requester::Api => "api",
            Requester::ApiCaller(s) | Requester::Other(s) => s,
        }
    }
}

impl From<&str> for Requester {
    fn from(s: &str) -> Self {
        match s {
            "conductor" => Requester::Conductor,
            "agent" => Requester::Agent,
            "remediation" => Requester::Remediation,
            "ctl" => Requester::Ctl,
            "api" => Requester::Api,
            s if s.starts_with("api:") => Requester::ApiCaller(s.to_string()),
            other => Requester::Other(other.to_string()),
        }
    }
}

/// The string conversions serde and callers share, for both enums.
macro_rules! string_conversions {
    ($t:ty) => {
        impl From<String> for $t {
            fn from(s: String) -> Self {
                <$t>::from(s.as_str())
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.as_str().to_string()
            }
        }

        impl std::str::FromStr for $t {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(<$t>::from(s))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

string_conversions!(HistoryKind);
string_conversions!(Requester);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string the node actor writes today, and what it reads as.
    const KINDS: &[(&str, HistoryKind)] = &[
        ("power", HistoryKind::Power),
        ("boot device", HistoryKind::BootDevice),
        ("provision", HistoryKind::Provision),
        ("maintenance", HistoryKind::Maintenance),
        ("takeover", HistoryKind::Takeover),
        ("console", HistoryKind::Console),
        ("remediation", HistoryKind::Remediation),
        ("sync", HistoryKind::Sync),
    ];

    #[test]
    fn kinds_read_and_write_todays_strings() {
        for (text, kind) in KINDS {
            assert_eq!(HistoryKind::from(*text), *kind);
            assert_eq!(kind.as_str(), *text);
            assert_eq!(text.parse::<HistoryKind>().unwrap(), *kind);
            assert_eq!(kind.to_string(), *text);
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(text));
            assert_eq!(
                serde_json::from_value::<HistoryKind>(serde_json::json!(text)).unwrap(),
                *kind
            );
            // postcard: the same bytes as the plain string field older builds wrote.
            let bytes = postcard::to_allocvec(kind).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&text.to_string()).unwrap());
            assert_eq!(postcard::from_bytes::<HistoryKind>(&bytes).unwrap(), *kind);
        }
        let unknown = HistoryKind::from("firmware");
        assert_eq!(unknown, HistoryKind::Other("firmware".into()));
        assert_eq!(unknown.as_str(), "firmware");
        let bytes = postcard::to_allocvec(&"firmware".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<HistoryKind>(&bytes).unwrap(),
            unknown
        );
    }

    #[test]
    fn requesters_read_and_write_todays_strings() {
        for (text, who) in [
            ("conductor", Requester::Conductor),
            ("agent", Requester::Agent),
            ("remediation", Requester::Remediation),
            ("ctl", Requester::Ctl),
            ("api", Requester::Api),
            ("api:alice", Requester::api_caller("alice")),
            ("bench", Requester::Other("bench".into())),
            ("ctl (root)", Requester::Other("ctl (root)".into())),
        ] {
            assert_eq!(Requester::from(text), who);
            assert_eq!(who.as_str(), text);
            assert_eq!(who, text);
            assert_eq!(serde_json::to_string(&who).unwrap(), format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<Requester>(&format!("\"{text}\"")).unwrap(),
                who
            );
            let bytes = postcard::to_allocvec(&who).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&text.to_string()).unwrap());
            assert_eq!(postcard::from_bytes::<Requester>(&bytes).unwrap(), who);
        }
        assert_eq!(Requester::api_caller("alice").caller(), Some("alice"));
        assert_eq!(Requester::Api.caller(), None);
    }

    #[test]
    fn a_history_entry_with_enums_has_todays_bytes() {
        // What `HistoryEntry` will look like once its fields switch to the enums: the encoded
        // record must not change.
        #[derive(Serialize)]
        struct Typed {
            kind: HistoryKind,
            requested_by: Requester,
        }
        #[derive(Serialize)]
        struct Plain {
            kind: String,
            requested_by: String,
        }
        let typed = Typed {
            kind: HistoryKind::BootDevice,
            requested_by: Requester::api_caller("bob"),
        };
        let plain = Plain {
            kind: "boot device".into(),
            requested_by: "api:bob".into(),
        };
        assert_eq!(
            postcard::to_allocvec(&typed).unwrap(),
            postcard::to_allocvec(&plain).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            serde_json::to_value(&plain).unwrap()
        );
    }
}
