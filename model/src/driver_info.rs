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

use crate::provision::ProvisionState;
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

/// Keys of `driver_info` whose values are secrets: never returned by the API, never logged.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.ends_with("_key") || k.contains("secret") || k.contains("token")
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
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DriverInfo, DriverInfoError> {
        DriverInfo::from_value(v)
    }

    #[test]
    fn typed_keys_are_read_and_the_rest_is_kept() {
        let text = r#"{"deploy_kernel":"http://x/k","ipmi_address":"10.0.0.5","ipmi_cipher_suite":"3","ipmi_password":"s3cret","ipmi_port":"623","ipmi_username":"admin","vendor":{"a":[1,2]}}"#;
        let info = DriverInfo::parse(text).unwrap();
        let ipmi = info.ipmi();
        assert_eq!(ipmi.address.as_deref(), Some("10.0.0.5"));
        assert_eq!(ipmi.port, Some(623));
        assert_eq!(ipmi.username.as_deref(), Some("admin"));
        assert_eq!(ipmi.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(ipmi.cipher_suite, Some(3));
        assert_eq!(info.get("vendor"), Some(&json!({"a": [1, 2]})));
        // Exact round trip: the port stays a string, unknown keys stay.
        assert_eq!(info.to_json_text(), text);
        assert_eq!(serde_json::to_string(&info).unwrap(), text);
        let back: DriverInfo = serde_json::from_str(text).unwrap();
        assert_eq!(back, info);
        assert_eq!(DriverInfo::default().to_json_text(), "{}");
    }

    #[test]
    fn secrets_never_reach_debug() {
        let info = parse(
            json!({"ipmi_password": "s3cret-1", "redfish_password": "s3cret-2",
            "agent_token": "s3cret-3", "bmc_key": "s3cret-4", "ipmi_address": "h"}),
        )
        .unwrap();
        let shown = format!("{info:?} {info:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("******") && shown.contains("\"h\""),
            "{shown}"
        );
        assert_eq!(info.masked()["ipmi_password"], "******");
        assert_eq!(info.masked()["ipmi_address"], "h");
    }

    #[test]
    fn ports_are_accepted_as_the_drivers_accept_them() {
        for (v, want) in [
            (json!(623), 623),
            (json!("6230"), 6230),
            (json!(" 6230 "), 6230),
            (json!(1), 1),
            (json!(65535), 65535),
        ] {
            let info = parse(json!({ "ipmi_port": v })).unwrap();
            assert_eq!(info.ipmi().port, Some(want), "{v}");
        }
        assert_eq!(parse(json!({"ipmi_port": null})).unwrap().ipmi().port, None);
        for (v, why) in [
            (json!(0), "ipmi_port 0 is not a port number"),
            (json!(70000), "ipmi_port 70000 is not a port number"),
            (json!(-1), "ipmi_port -1 is not a port number"),
            (json!(6.5), "ipmi_port 6.5 is not a port number"),
            (json!("abc"), "ipmi_port \"abc\" is not a port number"),
            (json!("65536"), "ipmi_port \"65536\" is not a port number"),
            (json!(true), "ipmi_port must be a number, not a boolean"),
            (json!([623]), "ipmi_port must be a number, not an array"),
        ] {
            let e = parse(json!({ "ipmi_port": v })).unwrap_err();
            assert_eq!(e.to_string(), why, "{v}");
            assert_eq!(e.key(), Some("ipmi_port"));
        }
    }

    #[test]
    fn wrong_types_name_the_key_and_hide_the_value() {
        for (info, key, why) in [
            (
                json!({"ipmi_address": 5}),
                "ipmi_address",
                "must be a string, not a number",
            ),
            (
                json!({"ipmi_password": 12345678}),
                "ipmi_password",
                "must be a string",
            ),
            (
                json!({"redfish_address": ["x"]}),
                "redfish_address",
                "must be a string",
            ),
            (
                json!({"redfish_verify_ca": 3}),
                "redfish_verify_ca",
                "boolean or a CA bundle",
            ),
            (
                json!({"ipmi_cipher_suite": 99}),
                "ipmi_cipher_suite",
                "0 to 17",
            ),
            (
                json!({"ipmi_cipher_suite": "x"}),
                "ipmi_cipher_suite",
                "not a whole number",
            ),
            (
                json!({"agent_callback_timeout": "soon"}),
                "agent_callback_timeout",
                "seconds",
            ),
            (
                json!({"agent_callback_timeout": {}}),
                "agent_callback_timeout",
                "seconds",
            ),
            (json!({"fake_step_secs": true}), "fake_step_secs", "seconds"),
            (
                json!({"fake_fail_states": 3}),
                "fake_fail_states",
                "list of state names",
            ),
            (
                json!({"fake_fail_states": ["deploying", 1]}),
                "fake_fail_states",
                "list",
            ),
        ] {
            let e = parse(info.clone()).unwrap_err();
            assert_eq!(e.key(), Some(key), "{info}");
            let text = e.to_string();
            assert!(text.contains(key) && text.contains(why), "{info}: {text}");
            assert!(!text.contains("12345678"), "{text}");
        }
        assert_eq!(
            parse(json!([])).unwrap_err().to_string(),
            "driver_info must be a JSON object, not an array"
        );
        assert!(DriverInfo::parse("{")
            .unwrap_err()
            .to_string()
            .starts_with("driver_info is not JSON"));
    }

    #[test]
    fn redfish_keys_and_verify_ca_words() {
        let info = parse(
            json!({"redfish_address": "https://h", "redfish_system_id": "1",
            "redfish_username": "u", "redfish_password": "p"}),
        )
        .unwrap();
        let r = info.redfish();
        assert_eq!(
            (
                r.address.as_deref(),
                r.system_id.as_deref(),
                r.username.as_deref()
            ),
            (Some("https://h"), Some("1"), Some("u"))
        );
        assert_eq!(r.verify_ca, None);
        for (v, want) in [
            (json!(true), VerifyCa::Yes),
            (json!("Yes"), VerifyCa::Yes),
            (json!(false), VerifyCa::No),
            (json!("False"), VerifyCa::No),
            (json!("/etc/ca.pem"), VerifyCa::Bundle("/etc/ca.pem".into())),
        ] {
            let info = parse(json!({ "redfish_verify_ca": v })).unwrap();
            assert_eq!(info.redfish().verify_ca, Some(want), "{v}");
        }
    }

    #[test]
    fn timeouts_and_fake_deploy_keys() {
        let info = parse(
            json!({"agent_callback_timeout": "20", "fake_step_secs": 0.2,
            "fake_fail_states": "cleaning, nonsense ,deploying"}),
        )
        .unwrap();
        assert_eq!(info.agent_callback_timeout_ms(), Some(20_000));
        assert_eq!(info.fake_step_ms(), 200);
        assert_eq!(
            info.fake_fail_states(),
            &[ProvisionState::Cleaning, ProvisionState::Deploying]
        );
        let info = parse(json!({"agent_callback_timeout": 0, "fake_step_secs": 1e9,
            "fake_fail_states": ["deploying"]}))
        .unwrap();
        assert_eq!(info.agent_callback_timeout_ms(), None);
        assert_eq!(info.fake_step_ms(), 3_600_000);
        assert_eq!(info.fake_fail_states(), &[ProvisionState::Deploying]);
        let none = DriverInfo::default();
        assert_eq!(
            (none.agent_callback_timeout_ms(), none.fake_step_ms()),
            (None, 0)
        );
        assert_eq!(
            parse(json!({"agent_callback_timeout": 1e9}))
                .unwrap()
                .agent_callback_timeout_ms(),
            Some(86_400_000)
        );
    }
}
