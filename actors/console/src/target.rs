//! Which console a node has: the console interface (the node's `console_interface`, else its
//! driver's default) and the endpoint parsed from Ironic's `driver_info` keys. Pure: no I/O.
//!
//! | interface | also accepted as | default for driver | endpoint from driver_info |
//! |---|---|---|---|
//! | `ipmitool` | `ipmitool-socat`, `ipmitool-shellinabox` | `ipmi` | `ipmi_address`, `ipmi_port` (623), `ipmi_username`, `ipmi_password`, `ipmi_cipher_suite` |
//! | `ferric-sim` | | | `redfish_address`, `redfish_system_id` |
//! | `fake` | | `fake-hardware` | none |
//! | `no-console` | | `redfish` | enabling fails with a clear error |

use crate::error::ConsoleError;
use ferric_model::{DriverInfo, DriverInfoError, NodeSpec};

/// Interface names this build serves, as written in `console_interface`.
pub const INTERFACES: &[&str] = &[
    "ipmitool",
    "ipmitool-socat",
    "ipmitool-shellinabox",
    "ferric-sim",
    "fake",
    "no-console",
];

/// A node's console endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum ConsoleTarget {
    Ipmitool(IpmitoolTarget),
    FerricSim(SimTarget),
    Fake,
}

/// An IPMI BMC reached with `ipmitool -I lanplus`.
#[derive(Clone, PartialEq, Eq)]
pub struct IpmitoolTarget {
    pub address: String,
    pub port: u16,
    pub username: String,
    /// Passed to ipmitool in `IPMI_PASSWORD` only; never on a command line, never logged.
    pub password: String,
    /// `-C <n>` (Ironic's `ipmi_cipher_suite`); None: ipmitool's default.
    pub cipher_suite: Option<u8>,
}

/// A `ferric sim` BMC's simulated serial port (a websocket).
#[derive(Clone, PartialEq, Eq)]
pub struct SimTarget {
    /// `http://host:port/sim/systems/<id>/serial` (DELETE clears a stale session).
    pub http_url: String,
    /// The same path as `ws://`.
    pub ws_url: String,
}

impl std::fmt::Debug for ConsoleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the password.
        f.write_str(&self.describe())
    }
}

impl ConsoleTarget {
    /// The console of `spec`: its `console_interface` if set, else its driver's default.
    pub fn from_spec(spec: &NodeSpec) -> Result<Self, ConsoleError> {
        Self::resolve(
            &spec.driver,
            spec.interfaces.get("console_interface").map(String::as_str),
            &spec.driver_info,
        )
    }

    /// `driver_info` is the node's JSON object text.
    pub fn resolve(
        driver: &str,
        console_interface: Option<&str>,
        driver_info: &str,
    ) -> Result<Self, ConsoleError> {
        // Parsed only for interfaces that read it: a `fake` console never fails on it.
        Self::resolve_with(driver, console_interface, || DriverInfo::parse(driver_info))
    }

    /// [`ConsoleTarget::resolve`] with the node's parsed `driver_info`.
    pub fn resolve_info(
        driver: &str,
        console_interface: Option<&str>,
        info: &DriverInfo,
    ) -> Result<Self, ConsoleError> {
        Self::resolve_with(driver, console_interface, || Ok(info.clone()))
    }

    fn resolve_with(
        driver: &str,
        console_interface: Option<&str>,
        info: impl FnOnce() -> Result<DriverInfo, DriverInfoError>,
    ) -> Result<Self, ConsoleError> {
        let interface = match console_interface.map(str::trim).filter(|s| !s.is_empty()) {
            Some(i) => i,
            None => match driver {
                "ipmi" => "ipmitool",
                "fake-hardware" => "fake",
                _ => "no-console",
            },
        };
        let info = || info().map_err(|e| ConsoleError::Config(e.to_string()));
        match interface {
            "ipmitool" | "ipmitool-socat" | "ipmitool-shellinabox" => {
                Ok(ConsoleTarget::Ipmitool(parse_ipmi(&info()?)?))
            }
            "ferric-sim" => Ok(ConsoleTarget::FerricSim(parse_sim(&info()?)?)),
            "fake" => Ok(ConsoleTarget::Fake),
            "no-console" => Err(ConsoleError::Config(format!(
                "driver {driver:?} has no serial console here (console_interface \"no-console\"); \
                 set console_interface to \"ipmitool\" for an IPMI BMC or \"ferric-sim\" for a ferric sim BMC"
            ))),
            other => Err(ConsoleError::UnknownInterface {
                name: other.to_string(),
                known: INTERFACES.join(", "),
            }),
        }
    }

    /// The canonical interface name (`ipmitool`, `ferric-sim`, `fake`).
    pub fn interface(&self) -> &'static str {
        match self {
            ConsoleTarget::Ipmitool(_) => "ipmitool",
            ConsoleTarget::FerricSim(_) => "ferric-sim",
            ConsoleTarget::Fake => "fake",
        }
    }

    /// Where the session goes, without secrets (for records, logs and status).
    pub fn describe(&self) -> String {
        match self {
            ConsoleTarget::Ipmitool(t) => t.describe(),
            ConsoleTarget::FerricSim(t) => t.ws_url.clone(),
            ConsoleTarget::Fake => "fake (in-process echo terminal)".into(),
        }
    }
}

impl IpmitoolTarget {
    pub fn describe(&self) -> String {
        let cipher = self
            .cipher_suite
            .map(|c| format!(" -C {c}"))
            .unwrap_or_default();
        format!(
            "ipmitool -I lanplus -H {} -p {} -U {}{cipher} sol activate",
            self.address, self.port, self.username
        )
    }
}

/// A string key, blank meaning unset.
fn text(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.trim().is_empty())
}

fn parse_ipmi(info: &DriverInfo) -> Result<IpmitoolTarget, ConsoleError> {
    let keys = info.ipmi();
    let address = text(&keys.address)
        .ok_or_else(|| ConsoleError::Config("ipmi_address is required".into()))?;
    // It becomes one argument of ipmitool: refuse anything that is not a host name or address
    // (an option-looking value would be read as one).
    if address.starts_with('-')
        || address.contains(char::is_whitespace)
        || address.contains('/')
        || address.contains('\0')
    {
        return Err(ConsoleError::Config(format!(
            "ipmi_address {address:?} is not a host name or IP address"
        )));
    }
    let username = text(&keys.username).unwrap_or_default();
    if username.len() > 16 || username.starts_with('-') || username.contains('\0') {
        return Err(ConsoleError::Config(
            "ipmi_username must be at most 16 bytes and not start with '-'".into(),
        ));
    }
    let password = keys
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_default();
    if password.len() > 20 || password.contains('\0') {
        return Err(ConsoleError::Config(
            "ipmi_password is longer than 20 bytes".into(),
        ));
    }
    Ok(IpmitoolTarget {
        address,
        port: keys.port.unwrap_or(623),
        username,
        password,
        cipher_suite: keys.cipher_suite,
    })
}

fn parse_sim(info: &DriverInfo) -> Result<SimTarget, ConsoleError> {
    let keys = info.redfish();
    let address = text(&keys.address)
        .ok_or_else(|| ConsoleError::Config("redfish_address is required".into()))?;
    let address = address.trim().trim_end_matches('/');
    let rest = if let Some(rest) = address.strip_prefix("http://") {
        rest
    } else if address.starts_with("https://") {
        return Err(ConsoleError::Config(format!(
            "redfish_address {address:?}: ferric-sim consoles speak plain http/ws only"
        )));
    } else if address.contains("://") {
        return Err(ConsoleError::Config(format!(
            "redfish_address {address:?} must be an http URL"
        )));
    } else {
        address
    };
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('@') {
        return Err(ConsoleError::Config(format!(
            "redfish_address {address:?} must be an http URL with a host (and no credentials)"
        )));
    }
    let system = text(&keys.system_id)
        .ok_or_else(|| ConsoleError::Config("redfish_system_id is required".into()))?;
    let id = system
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if id.is_empty()
        || id == ".."
        || id == "."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
    {
        return Err(ConsoleError::Config(format!(
            "redfish_system_id {system:?} does not end in a system id"
        )));
    }
    let path = format!("/sim/systems/{id}/serial");
    Ok(SimTarget {
        http_url: format!("http://{rest}{path}"),
        ws_url: format!("ws://{rest}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(driver: &str, iface: Option<&str>, info: &str) -> Result<ConsoleTarget, String> {
        ConsoleTarget::resolve(driver, iface, info).map_err(|e| e.to_string())
    }

    #[test]
    fn driver_defaults_and_interface_names() {
        let ipmi =
            r#"{"ipmi_address":"10.0.0.5","ipmi_username":"admin","ipmi_password":"s3cret"}"#;
        let t = resolve("ipmi", None, ipmi).unwrap();
        assert_eq!(t.interface(), "ipmitool");
        let ConsoleTarget::Ipmitool(i) = &t else {
            panic!()
        };
        assert_eq!((i.port, i.cipher_suite), (623, None));
        for name in ["ipmitool-socat", "ipmitool-shellinabox", "ipmitool"] {
            assert_eq!(resolve("redfish", Some(name), ipmi).unwrap(), t);
        }
        assert_eq!(
            resolve("fake-hardware", None, "{}").unwrap(),
            ConsoleTarget::Fake
        );
        let e = resolve("redfish", None, "{}").unwrap_err();
        assert!(e.contains("no serial console"), "{e}");
        let e = resolve("ipmi", Some("telnet"), ipmi).unwrap_err();
        assert!(e.contains("unknown console_interface \"telnet\""), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_descriptions() {
        let t = resolve(
            "ipmi",
            None,
            r#"{"ipmi_address":"h","ipmi_port":"6230","ipmi_username":"u","ipmi_password":"s3cret","ipmi_cipher_suite":3}"#,
        )
        .unwrap();
        let shown = format!("{t:?} {}", t.describe());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            t.describe(),
            "ipmitool -I lanplus -H h -p 6230 -U u -C 3 sol activate"
        );
    }

    #[test]
    fn bad_ipmi_info_is_refused() {
        for (info, want) in [
            (r#"{}"#, "ipmi_address is required"),
            (r#"{"ipmi_address":"-oops"}"#, "not a host name"),
            (r#"{"ipmi_address":"h","ipmi_port":70000}"#, "not a port"),
            (
                r#"{"ipmi_address":"h","ipmi_port":true}"#,
                "must be a number",
            ),
            (
                r#"{"ipmi_address":"h","ipmi_cipher_suite":99}"#,
                "cipher suite",
            ),
            (r#"[]"#, "JSON object"),
        ] {
            let e = resolve("ipmi", None, info).unwrap_err();
            assert!(e.contains(want), "{info}: {e}");
        }
    }

    #[test]
    fn sim_serial_url_from_redfish_keys() {
        let t = resolve(
            "redfish",
            Some("ferric-sim"),
            r#"{"redfish_address":"http://127.0.0.1:8000/","redfish_system_id":"/redfish/v1/Systems/sys-0001"}"#,
        )
        .unwrap();
        let ConsoleTarget::FerricSim(s) = t else {
            panic!()
        };
        assert_eq!(
            s.http_url,
            "http://127.0.0.1:8000/sim/systems/sys-0001/serial"
        );
        assert_eq!(s.ws_url, "ws://127.0.0.1:8000/sim/systems/sys-0001/serial");
        let plain = resolve(
            "redfish",
            Some("ferric-sim"),
            r#"{"redfish_address":"127.0.0.1:8000","redfish_system_id":"sys-2"}"#,
        )
        .unwrap();
        assert_eq!(
            plain.describe(),
            "ws://127.0.0.1:8000/sim/systems/sys-2/serial"
        );
        for info in [
            r#"{"redfish_address":"https://h","redfish_system_id":"a"}"#,
            r#"{"redfish_address":"http://h","redfish_system_id":"/redfish/v1/Systems/.."}"#,
            r#"{"redfish_address":"http://u:p@h","redfish_system_id":"a"}"#,
        ] {
            assert!(
                resolve("redfish", Some("ferric-sim"), info).is_err(),
                "{info}"
            );
        }
    }
}
