//! A node's `driver_info` (Ironic's per-node driver settings), parsed once: the keys Ferric
//! reads are typed fields, every other key is kept as given.
//!
//! The spec stores the JSON object text a client sent; this is the one parser of it. Parsing
//! checks types (a port is a port, a flag a flag), not whether a driver has what it needs: a
//! node may be enrolled before its BMC details are known, and the drivers check what they
//! require when they connect. Values are accepted exactly as the drivers accepted them before
//! this type existed (ports and timeouts also as strings, as Ironic's clients often send them).
//!
//! | key | type | read by |
//! |---|---|---|
//! | `ipmi_address`, `ipmi_username` | string | ipmi power, ipmitool console |
//! | `ipmi_password` | string (secret) | ipmi power, ipmitool console |
//! | `ipmi_port` | port, number or string (623 when absent) | ipmi power, ipmitool console |
//! | `ipmi_cipher_suite` | 0 to 17, number or string | ipmitool console |
//! | `redfish_address`, `redfish_system_id`, `redfish_username` | string | redfish power, ferric-sim console |
//! | `redfish_password` | string (secret) | redfish power |
//! | `redfish_verify_ca` | boolean, boolean word, or a CA bundle path | redfish power |
//! | `agent_callback_timeout` | seconds, number or string | agent waits (a Ferric extension) |
//! | `fake_step_secs` | seconds, number or string | the `fake` deploy interface |
//! | `fake_fail_states` | comma-separated string or list of state names | the `fake` deploy interface |
//! | `ferric_power_sync` | `observe` or `enforce` | power sync: this node's policy instead of the cluster's |

use crate::provision::ProvisionState;
use crate::sync::SyncPolicy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Why a `driver_info` cannot be used. The text never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverInfoError {
    #[error("driver_info is not JSON: {0}")]
    NotJson(String),
    #[error("driver_info must be a JSON object, not {0}")]
    NotObject(&'static str),
    /// A key Ferric reads holds a value of the wrong type or out of range; `reason` names it.
    #[error("{reason}")]
    Key { key: &'static str, reason: String },
}

impl DriverInfoError {
    /// The offending key, if the error is about one.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            DriverInfoError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A secret value: usable, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

/// Keys whose values are secrets (passwords, keys such as `*_key` and `sslkey`, tokens,
/// secrets, passphrases, credentials): never returned by the API, never logged. The one rule for
/// the API's masking, `ctl`'s display and `Debug`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "passphrase",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k.ends_with("key")
}

/// The IPMI keys. Strings are as given (an empty string is not "absent" here; drivers decide).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpmiKeys {
    pub address: Option<String>,
    /// 1 to 65535.
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// 0 to 17.
    pub cipher_suite: Option<u8>,
}

/// How a redfish BMC's certificate is checked (`redfish_verify_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyCa {
    Yes,
    No,
    /// Against this CA bundle (a path on the conductor).
    Bundle(String),
}

/// The Redfish keys. Strings are as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedfishKeys {
    pub address: Option<String>,
    pub system_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub verify_ca: Option<VerifyCa>,
}

/// A node's parsed `driver_info`.
#[derive(Clone, PartialEq)]
pub struct DriverInfo {
    ipmi: IpmiKeys,
    redfish: RedfishKeys,
    agent_callback_timeout_s: Option<f64>,
    fake_step_s: Option<f64>,
    fake_fail_states: Vec<ProvisionState>,
    power_sync: Option<SyncPolicy>,
    /// The object as given, typed keys included: what is stored and shown, so that round trips
    /// are exact (`"623"` stays a string).
    raw: Map<String, Value>,
}

impl Default for DriverInfo {
    fn default() -> Self {
        DriverInfo::from_map(Map::new()).expect("an empty driver_info is valid")
    }
}

impl fmt::Debug for DriverInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints a secret: typed secrets are `Secret`s, and the other keys are shown
        // masked.
        f.debug_struct("DriverInfo")
            .field("ipmi", &self.ipmi)
            .field("redfish", &self.redfish)
            .field("agent_callback_timeout_s", &self.agent_callback_timeout_s)
            .field("fake_step_s", &self.fake_step_s)
            .field("fake_fail_states", &self.fake_fail_states)
            .field("power_sync", &self.power_sync)
            .field("raw", &Value::Object(self.masked()))
            .finish()
    }
}

impl DriverInfo {
    /// Parses the JSON object text a spec stores.
    pub fn parse(text: &str) -> Result<Self, DriverInfoError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DriverInfoError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, DriverInfoError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            other => Err(DriverInfoError::NotObject(kind(&other))),
        }
    }

    pub fn from_map(raw: Map<String, Value>) -> Result<Self, DriverInfoError> {
        let ipmi = IpmiKeys {
            address: text(&raw, "ipmi_address")?,
            port: port(&raw, "ipmi_port")?,
            username: text(&raw, "ipmi_username")?,
            password: text(&raw, "ipmi_password")?.map(Secret),
            cipher_suite: cipher_suite(&raw, "ipmi_cipher_suite")?,
        };
        let redfish = RedfishKeys {
            address: text(&raw, "redfish_address")?,
            system_id: text(&raw, "redfish_system_id")?,
            username: text(&raw, "redfish_username")?,
            password: text(&raw, "redfish_password")?.map(Secret),
            verify_ca: verify_ca(&raw, "redfish_verify_ca")?,
        };
        Ok(DriverInfo {
            ipmi,
            redfish,
            agent_callback_timeout_s: seconds(&raw, "agent_callback_timeout")?,
            fake_step_s: seconds(&raw, "fake_step_secs")?,
            fake_fail_states: states(&raw, "fake_fail_states")?,
            power_sync: text(&raw, "ferric_power_sync")?
                .map(|s| SyncPolicy::parse(&s).map_err(|e| bad("ferric_power_sync", e)))
                .transpose()?,
            raw,
        })
    }

    pub fn ipmi(&self) -> &IpmiKeys {
        &self.ipmi
    }

    pub fn redfish(&self) -> &RedfishKeys {
        &self.redfish
    }

    /// `agent_callback_timeout` in milliseconds, capped at a day; None when absent or not
    /// above zero (the conductor's default applies).
    pub fn agent_callback_timeout_ms(&self) -> Option<u64> {
        self.agent_callback_timeout_s
            .filter(|s| *s > 0.0)
            .map(|s| (s.min(86_400.0) * 1000.0) as u64)
    }

    /// `fake_step_secs` in milliseconds, between 0 and an hour (0 when absent).
    pub fn fake_step_ms(&self) -> u64 {
        self.fake_step_s
            .map_or(0, |s| (s.clamp(0.0, 3600.0) * 1000.0) as u64)
    }

    /// `fake_fail_states`: where the fake deploy interface fails (names this build does not
    /// know are left out).
    pub fn fake_fail_states(&self) -> &[ProvisionState] {
        &self.fake_fail_states
    }

    /// `ferric_power_sync`: this node's power sync policy, when it overrides the cluster's.
    pub fn power_sync(&self) -> Option<SyncPolicy> {
        self.power_sync
    }

    /// Any key, as given.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    /// The object as given (typed keys included).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The object with every secret replaced by `******`, for showing.
    pub fn masked(&self) -> Map<String, Value> {
        let mut out = self.raw.clone();
        for (k, v) in out.iter_mut() {
            if is_secret_key(k) {
                *v = Value::String("******".into());
            }
        }
        out
    }

    /// The JSON object text, as a spec stores it.
    pub fn to_json_text(&self) -> String {
        serde_json::to_string(&self.raw).expect("a JSON map serializes")
    }
}

impl TryFrom<Value> for DriverInfo {
    type Error = DriverInfoError;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        DriverInfo::from_value(v)
    }
}

impl std::str::FromStr for DriverInfo {
    type Err = DriverInfoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DriverInfo::parse(s)
    }
}

impl Serialize for DriverInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DriverInfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        DriverInfo::from_map(map).map_err(serde::de::Error::custom)
    }
}

/// "a number", "a string", ...: how errors name a value's type (values themselves may be
/// secrets).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bad(key: &'static str, reason: String) -> DriverInfoError {
    DriverInfoError::Key { key, reason }
}

fn text(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, DriverInfoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            key,
            format!("{key} must be a string, not {}", kind(other)),
        )),
    }
}

/// A whole number, also as a string (surrounding blanks allowed).
fn whole(obj: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, DriverInfoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("{key} {n} is not a whole number"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(key, format!("{key} {s:?} is not a whole number"))),
        Some(other) => Err(bad(
            key,
            format!("{key} must be a number, not {}", kind(other)),
        )),
    }
}

fn port(obj: &Map<String, Value>, key: &'static str) -> Result<Option<u16>, DriverInfoError> {
    let not_a_port = || match &obj[key] {
        Value::String(s) => bad(key, format!("{key} {s:?} is not a port number")),
        other => bad(key, format!("{key} {other} is not a port number")),
    };
    match whole(obj, key) {
        Ok(None) => Ok(None),
        Ok(Some(p)) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
        Ok(Some(_)) => Err(not_a_port()),
        Err(_) if matches!(obj[key], Value::Number(_) | Value::String(_)) => Err(not_a_port()),
        Err(e) => Err(e),
    }
}

fn cipher_suite(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<u8>, DriverInfoError> {
    match whole(obj, key)? {
        None => Ok(None),
        Some(c) if c <= 17 => Ok(Some(c as u8)),
        Some(c) => Err(bad(
            key,
            format!("{key} {c} is not an IPMI cipher suite (0 to 17)"),
        )),
    }
}

/// Seconds, as a number or a numeric string.
fn seconds(obj: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, DriverInfoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(key, format!("{key} {s:?} is not a number of seconds"))),
        Some(other) => Err(bad(
            key,
            format!("{key} must be a number of seconds, not {}", kind(other)),
        )),
    }
}

fn verify_ca(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<VerifyCa>, DriverInfoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(VerifyCa::Yes)),
        Some(Value::Bool(false)) => Ok(Some(VerifyCa::No)),
        Some(Value::String(s)) => Ok(Some(match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => VerifyCa::Yes,
            "false" | "no" | "0" | "off" => VerifyCa::No,
            _ => VerifyCa::Bundle(s.clone()),
        })),
        Some(other) => Err(bad(
            key,
            format!(
                "{key} must be a boolean or a CA bundle path, not {}",
                kind(other)
            ),
        )),
    }
}

fn states(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Vec<ProvisionState>, DriverInfoError> {
    let wrong = |what: &str| {
        bad(
            key,
            format!("{key} must be a comma-separated string or a list of state names, not {what}"),
        )
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .filter_map(|p| ProvisionState::parse(p.trim()))
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(ProvisionState::parse(s)),
                other => Err(wrong(&format!("a list holding {}", kind(other)))),
            })
            .filter_map(Result::transpose)
            .collect(),
        Some(other) => Err(wrong(kind(other))),
    }
}

#[cfg(test)]
mod tests;
