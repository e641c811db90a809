//! The `redfish` driver: DMTF Redfish over HTTPS (or HTTP), with Ironic's `driver_info` keys.
//!
//! Four calls cover what Ferric needs (`GET` the system for `PowerState`, `POST` its
//! `ComputerSystem.Reset` action, `PATCH` its boot override, `GET` its `Bios` resource and
//! attribute registry, see `bios`), so this talks HTTP directly with
//! reqwest instead of pulling in a Redfish object model: less code to trust, and the requests are
//! exactly the ones Ironic's sushy sends.

mod bios;

use crate::bmc::{Bmc, BmcError, BmcFuture, PowerAction};
use ferric_model::driver_info::VerifyCa;
use ferric_model::{BiosSetting, BootDevice, DriverInfo, PowerState};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Parsed and validated `driver_info` of a redfish node.
#[derive(Clone, PartialEq, Eq)]
pub struct RedfishInfo {
    /// Scheme, host and port: `https://10.0.0.5` or `http://127.0.0.1:8000`.
    pub address: String,
    /// The system's path: `/redfish/v1/Systems/<id>`.
    pub system: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub verify: Verify,
}

impl std::fmt::Debug for RedfishInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishInfo")
            .field("address", &self.address)
            .field("system", &self.system)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("verify", &self.verify)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Verify the BMC's certificate against the system roots.
    Yes,
    No,
    /// Verify against this CA bundle (PEM).
    Ca(PathBuf),
}

impl RedfishInfo {
    /// Validates the JSON object of a node's `driver_info` (see [`RedfishInfo::from_driver_info`]).
    pub fn parse(info: &Value) -> Result<Self, String> {
        let info = DriverInfo::from_value(info.clone()).map_err(|e| e.to_string())?;
        Self::from_driver_info(&info)
    }

    /// What a redfish node needs from its `driver_info`, checked like Ironic checks it.
    pub fn from_driver_info(info: &DriverInfo) -> Result<Self, String> {
        let keys = info.redfish();
        // Ironic reads an empty string as unset.
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let address = text(&keys.address).ok_or("redfish_address is required")?;
        let address = if address.contains("://") {
            address
        } else {
            // Ironic's default scheme.
            format!("https://{address}")
        };
        let url = reqwest::Url::parse(&address)
            .map_err(|e| format!("redfish_address {address:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "redfish_address {address:?} must be an http(s) URL with a host"
            ));
        }
        let address = address.trim_end_matches('/').to_string();
        let system = text(&keys.system_id).ok_or("redfish_system_id is required")?;
        let system = if system.starts_with('/') {
            system.trim_end_matches('/').to_string()
        } else {
            format!("/redfish/v1/Systems/{system}")
        };
        if system.contains("..") || system.contains(char::is_whitespace) {
            return Err(format!("redfish_system_id {system:?} is not a valid path"));
        }
        let verify = match &keys.verify_ca {
            None | Some(VerifyCa::Yes) => Verify::Yes,
            Some(VerifyCa::No) => Verify::No,
            Some(VerifyCa::Bundle(path)) => Verify::Ca(PathBuf::from(path)),
        };
        Ok(RedfishInfo {
            address,
            system,
            username: text(&keys.username),
            password: keys
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .filter(|p| !p.is_empty()),
            verify,
        })
    }
}

/// Idle connections kept per Redfish service (host and port), shared by all its systems.
const MAX_IDLE_PER_SERVICE: usize = 256;

/// HTTP clients shared by all redfish nodes of a conductor (connection pools are per client;
/// one client per node would cost far more memory than the node's actor).
#[derive(Debug)]
pub struct RedfishClients {
    user_agent: String,
    timeout: Duration,
    verify: Mutex<Option<reqwest::Client>>,
    insecure: Mutex<Option<reqwest::Client>>,
    with_ca: Mutex<HashMap<PathBuf, reqwest::Client>>,
}

impl RedfishClients {
    pub fn new(conductor: &str, timeout: Duration) -> Self {
        RedfishClients {
            user_agent: format!("ferric-conductor/{conductor}"),
            timeout,
            verify: Mutex::new(None),
            insecure: Mutex::new(None),
            with_ca: Mutex::new(HashMap::new()),
        }
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(self.user_agent.clone())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            // One Redfish service often fronts many systems (a chassis manager, sushy-tools
            // for VMs, `ferric sim`): the node actors' reads and commands to its systems reuse
            // idle connections instead of paying a TCP (and TLS) handshake each. A BMC of its
            // own keeps at most one or two, since each node sends one command at a time.
            .pool_max_idle_per_host(MAX_IDLE_PER_SERVICE)
    }

    pub fn client(&self, verify: &Verify) -> Result<reqwest::Client, BmcError> {
        let build_err =
            |e: reqwest::Error| BmcError::Config(format!("cannot build an HTTP client: {e}"));
        match verify {
            Verify::Yes => {
                let mut slot = self.verify.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(self.builder().build().map_err(build_err)?);
                }
                Ok(slot.clone().expect("set above"))
            }
            Verify::No => {
                let mut slot = self.insecure.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(
                        self.builder()
                            .danger_accept_invalid_certs(true)
                            .build()
                            .map_err(build_err)?,
                    );
                }
                Ok(slot.clone().expect("set above"))
            }
            Verify::Ca(path) => {
                let mut map = self.with_ca.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = map.get(path) {
                    return Ok(c.clone());
                }
                let pem = std::fs::read(path).map_err(|e| {
                    BmcError::Config(format!("redfish_verify_ca {}: {e}", path.display()))
                })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    BmcError::Config(format!("redfish_verify_ca {}: {e}", path.display()))
                })?;
                let client = self
                    .builder()
                    .add_root_certificate(cert)
                    .build()
                    .map_err(build_err)?;
                map.insert(path.clone(), client.clone());
                Ok(client)
            }
        }
    }
}

pub struct RedfishBmc {
    http: reqwest::Client,
    info: RedfishInfo,
    /// `address + system`, for error messages and requests.
    url: String,
}

impl RedfishBmc {
    pub fn new(info: RedfishInfo, clients: &RedfishClients) -> Result<Self, BmcError> {
        let http = clients.client(&info.verify)?;
        let url = format!("{}{}", info.address, info.system);
        Ok(RedfishBmc { http, info, url })
    }

    /// Adds the credentials, and the `traceparent` of the BMC command's span when traces are
    /// exported (what a BMC or a proxy in front of it can log).
    fn auth(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(tp) = ferric_telemetry::current_traceparent() {
            req = req.header("traceparent", tp);
        }
        match &self.info.username {
            Some(user) => req.basic_auth(user, self.info.password.as_deref()),
            None => req,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> BmcError {
        BmcError::Unreachable {
            bmc: self.url.clone(),
            reason: if e.is_timeout() {
                "no answer in time".into()
            } else {
                // reqwest's messages can contain the URL but never the credentials.
                e.to_string()
            },
        }
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, BmcError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let detail = redfish_message(&body).unwrap_or_else(|| format!("HTTP {status}"));
        let bmc = self.url.clone();
        Err(match status.as_u16() {
            401 | 403 => BmcError::Auth {
                bmc,
                reason: detail,
            },
            404 => BmcError::Config(format!("{bmc}: no such system ({detail})")),
            500..=599 => BmcError::Unreachable {
                bmc,
                reason: detail,
            },
            _ => BmcError::Refused {
                bmc,
                reason: detail,
            },
        })
    }
}

/// The message of a Redfish error body, if it has one.
fn redfish_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let err = v.get("error")?;
    let mut msg = err.get("message")?.as_str()?.to_string();
    if let Some(info) = err.get("@Message.ExtendedInfo").and_then(Value::as_array) {
        for i in info
            .iter()
            .filter_map(|i| i.get("Message").and_then(Value::as_str))
        {
            msg.push_str("; ");
            msg.push_str(i);
        }
    }
    Some(msg)
}

/// Redfish `PowerState` to Ferric's: a machine on its way off still runs its OS.
pub fn parse_power_state(v: &Value) -> Option<PowerState> {
    match v.get("PowerState")?.as_str()? {
        "On" | "PoweringOff" => Some(PowerState::On),
        "Off" | "PoweringOn" => Some(PowerState::Off),
        _ => None,
    }
}

pub fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Bios => "BiosSetup",
        BootDevice::Cdrom => "Cd",
    }
}

impl Bmc for RedfishBmc {
    fn driver(&self) -> &'static str {
        "redfish"
    }

    fn power_state(&mut self) -> BmcFuture<'_, PowerState> {
        Box::pin(async move {
            let resp = self
                .auth(self.http.get(&self.url))
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            let resp = self.check(resp).await?;
            let v: Value = resp.json().await.map_err(|e| BmcError::Protocol {
                bmc: self.url.clone(),
                reason: format!("system resource is not JSON: {e}"),
            })?;
            parse_power_state(&v).ok_or_else(|| BmcError::Protocol {
                bmc: self.url.clone(),
                reason: format!(
                    "no usable PowerState in the system resource (got {:?})",
                    v.get("PowerState")
                ),
            })
        })
    }

    fn power(&mut self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(async move {
            let reset = match action {
                PowerAction::On => "On",
                PowerAction::ForceOff => "ForceOff",
                PowerAction::GracefulShutdown => "GracefulShutdown",
                PowerAction::HardReset => "ForceRestart",
            };
            let url = format!("{}/Actions/ComputerSystem.Reset", self.url);
            let resp = self
                .auth(self.http.post(&url))
                .json(&json!({ "ResetType": reset }))
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            self.check(resp).await.map(|_| ())
        })
    }

    fn set_boot_device(&mut self, device: BootDevice, persistent: bool) -> BmcFuture<'_, ()> {
        Box::pin(async move {
            let body = json!({ "Boot": {
                "BootSourceOverrideTarget": boot_target(device),
                "BootSourceOverrideEnabled": if persistent { "Continuous" } else { "Once" },
            }});
            let resp = self
                .auth(self.http.patch(&self.url))
                .json(&body)
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            self.check(resp).await.map(|_| ())
        })
    }

    fn bios_settings(&mut self) -> BmcFuture<'_, Option<Vec<BiosSetting>>> {
        Box::pin(self.read_bios())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_info_is_validated_like_ironic() {
        let ok = RedfishInfo::parse(&json!({
            "redfish_address": "10.0.0.5",
            "redfish_system_id": "/redfish/v1/Systems/1",
            "redfish_username": "admin",
            "redfish_password": "secret",
            "redfish_verify_ca": "False",
        }))
        .unwrap();
        assert_eq!(ok.address, "https://10.0.0.5");
        assert_eq!(ok.system, "/redfish/v1/Systems/1");
        assert_eq!(ok.verify, Verify::No);
        assert!(!format!("{ok:?}").contains("secret"));

        let bare = RedfishInfo::parse(
            &json!({"redfish_address": "http://127.0.0.1:8000/", "redfish_system_id": "sim-1"}),
        )
        .unwrap();
        assert_eq!(bare.system, "/redfish/v1/Systems/sim-1");
        assert_eq!(bare.address, "http://127.0.0.1:8000");
        assert_eq!(bare.verify, Verify::Yes);

        for (bad, why) in [
            (json!({}), "redfish_address is required"),
            (
                json!({"redfish_address": "x"}),
                "redfish_system_id is required",
            ),
            (
                json!({"redfish_address": "ftp://x", "redfish_system_id": "1"}),
                "http(s)",
            ),
            (
                json!({"redfish_address": 5, "redfish_system_id": "1"}),
                "must be a string",
            ),
            (
                json!({"redfish_address": "x", "redfish_system_id": "1", "redfish_verify_ca": 3}),
                "redfish_verify_ca",
            ),
            (json!([]), "JSON object"),
        ] {
            let err = RedfishInfo::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn power_states_and_errors_are_read_from_redfish_bodies() {
        assert_eq!(
            parse_power_state(&json!({"PowerState": "On"})),
            Some(PowerState::On)
        );
        assert_eq!(
            parse_power_state(&json!({"PowerState": "PoweringOn"})),
            Some(PowerState::Off)
        );
        assert_eq!(parse_power_state(&json!({"PowerState": 1})), None);
        assert_eq!(parse_power_state(&json!({})), None);
        let body = r#"{"error": {"code": "Base.1.0.GeneralError", "message": "bad", "@Message.ExtendedInfo": [{"Message": "ResetType invalid"}]}}"#;
        assert_eq!(redfish_message(body).unwrap(), "bad; ResetType invalid");
        assert_eq!(redfish_message("<html>"), None);
    }
}
