//! Router-level tests of the simulator (no socket): every Redfish and control endpoint, their
//! errors, reset semantics on tokio's paused clock, failure injection with a fixed seed, and the
//! command log, all checked through what a client sees.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use ferric_sim::{app, Behaviour, LogEntry, SimConfig, SimState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// `admin:password` in Basic form.
const AUTH: &str = "Basic YWRtaW46cGFzc3dvcmQ=";
const CONDUCTOR: &str = "ferric-conductor/c1";

struct Sim {
    app: Router,
}

fn sim_with(cfg: SimConfig) -> Sim {
    let state = SimState::new(cfg).expect("valid config");
    Sim { app: app(state) }
}

fn sim() -> Sim {
    sim_with(SimConfig {
        systems: 3,
        ..SimConfig::default()
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The Redfish error body's specific message id (and checks its general shape).
    fn redfish_error(&self) -> String {
        let v = self.json();
        assert_eq!(v["error"]["code"], "Base.1.0.GeneralError", "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        v["error"]["@Message.ExtendedInfo"][0]["MessageId"]
            .as_str()
            .expect("an extended info message id")
            .to_string()
    }
}

impl Sim {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An authenticated Redfish request from conductor c1.
    async fn redfish(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, AUTH)
            .header(header::USER_AGENT, CONDUCTOR);
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("a request")).await
    }

    async fn get_system(&self, id: &str) -> Value {
        let a = self
            .redfish(Method::GET, &format!("/redfish/v1/Systems/{id}"), None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        a.json()
    }

    async fn power(&self, id: &str) -> String {
        self.get_system(id).await["PowerState"]
            .as_str()
            .expect("a PowerState")
            .to_string()
    }

    async fn reset(&self, id: &str, reset_type: &str) -> Answer {
        self.redfish(
            Method::POST,
            &format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            Some(json!({ "ResetType": reset_type })),
        )
        .await
    }

    async fn control(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let req = Request::builder().method(method).uri(path);
        let req = match body {
            Some(b) => req.body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("a request")).await
    }

    async fn behaviour(&self, id: &str, body: &str) {
        let a = self
            .control(
                Method::PUT,
                &format!("/sim/systems/{id}/behaviour"),
                Some(body),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
    }

    async fn log(&self, since: u64) -> Vec<LogEntry> {
        let a = self
            .control(Method::GET, &format!("/sim/log?since={since}"), None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        serde_json::from_slice(&a.body).expect("a log")
    }
}

fn raw(method: Method, path: &str, auth: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    b.body(body.into()).expect("a request")
}

const RESET_PATH: &str = "/redfish/v1/Systems/sim-0/Actions/ComputerSystem.Reset";

#[tokio::test]
async fn service_root_is_open_and_links_the_systems() {
    let s = sim();
    for path in ["/redfish/v1/", "/redfish/v1"] {
        let a = s.send(raw(Method::GET, path, None, Body::empty())).await;
        assert_eq!(a.status, StatusCode::OK);
        let v = a.json();
        assert_eq!(v["Systems"]["@odata.id"], "/redfish/v1/Systems");
        assert!(v["@odata.type"]
            .as_str()
            .unwrap()
            .starts_with("#ServiceRoot."));
    }
}

#[tokio::test]
async fn systems_collection_lists_every_system() {
    let s = sim();
    let a = s.redfish(Method::GET, "/redfish/v1/Systems", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["Members@odata.count"], 3);
    let members: Vec<&str> = v["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [
            "/redfish/v1/Systems/sim-0",
            "/redfish/v1/Systems/sim-1",
            "/redfish/v1/Systems/sim-2"
        ]
    );
}

#[tokio::test]
async fn system_resource_has_what_sushy_reads() {
    let s = sim();
    let v = s.get_system("sim-1").await;
    assert_eq!(v["Id"], "sim-1");
    assert_eq!(v["@odata.id"], "/redfish/v1/Systems/sim-1");
    assert!(v["@odata.type"]
        .as_str()
        .unwrap()
        .starts_with("#ComputerSystem."));
    assert!(v["Name"].as_str().is_some());
    assert_eq!(v["PowerState"], "Off");
    assert_eq!(v["Boot"]["BootSourceOverrideTarget"], "None");
    assert_eq!(v["Boot"]["BootSourceOverrideEnabled"], "Disabled");
    assert_eq!(
        v["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"],
        json!(["None", "Pxe", "Hdd", "Cd", "BiosSetup"])
    );
    let reset = &v["Actions"]["#ComputerSystem.Reset"];
    assert_eq!(
        reset["target"],
        "/redfish/v1/Systems/sim-1/Actions/ComputerSystem.Reset"
    );
    assert_eq!(
        reset["ResetType@Redfish.AllowableValues"],
        json!([
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "ForceOn",
            "Nmi",
            "PushPowerButton"
        ])
    );
}

#[tokio::test]
async fn every_path_but_the_service_root_needs_the_right_credentials() {
    let s = sim();
    let wrong = [
        None,
        Some("Basic YWRtaW46d3Jvbmc="), // admin:wrong
        Some("Bearer YWRtaW46cGFzc3dvcmQ="),
        Some("Basic !!!"),
    ];
    let requests = [
        (Method::GET, "/redfish/v1/Systems", None),
        (Method::GET, "/redfish/v1/Systems/sim-0", None),
        (Method::GET, "/redfish/v1/Managers", None),
        (Method::POST, RESET_PATH, Some(r#"{"ResetType":"On"}"#)),
        (
            Method::PATCH,
            "/redfish/v1/Systems/sim-0",
            Some(r#"{"Boot":{"BootSourceOverrideTarget":"Pxe"}}"#),
        ),
    ];
    for auth in wrong {
        for (method, path, body) in &requests {
            let body = body.map(Body::from).unwrap_or_else(Body::empty);
            let a = s.send(raw(method.clone(), path, auth, body)).await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert!(a.headers.contains_key(header::WWW_AUTHENTICATE));
            a.redfish_error();
        }
    }
    // Nothing changed, and the rejected requests to the system are on record as 401s.
    assert_eq!(s.power("sim-0").await, "Off");
    assert_eq!(
        s.get_system("sim-0").await["Boot"]["BootSourceOverrideTarget"],
        "None"
    );
    let log = s.log(0).await;
    let rejected: Vec<_> = log.iter().filter(|e| e.status == Some(401)).collect();
    assert_eq!(
        rejected.len(),
        4 * 3,
        "three system requests per credential"
    );
    assert!(rejected.iter().any(|e| e.action.as_deref() == Some("On")));
}

#[tokio::test]
async fn unknown_systems_and_paths_are_404() {
    let s = sim();
    let a = s
        .redfish(Method::GET, "/redfish/v1/Systems/sim-3", None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    a.redfish_error();
    let a = s
        .redfish(
            Method::POST,
            "/redfish/v1/Systems/nope/Actions/ComputerSystem.Reset",
            Some(json!({"ResetType": "On"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(s.log(0).await.is_empty(), "nothing reached a system");

    let a = s
        .redfish(Method::GET, "/redfish/v1/Systems/sim-0/SecureBoot", None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s.redfish(Method::GET, "/redfish/v1/Chassis", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s.control(Method::GET, "/elsewhere", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // The request to a known system's unknown sub-resource did reach it.
    let log = s.log(0).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/redfish/v1/Systems/sim-0/SecureBoot");
    assert_eq!(log[0].status, Some(404));
}

#[tokio::test]
async fn the_bios_resource_names_a_registry_published_under_registries() {
    let s = sim();
    let get = |path: String| {
        let s = &s;
        async move {
            let a = s.redfish(Method::GET, &path, None).await;
            assert_eq!(a.status, StatusCode::OK, "{path}");
            a.json()
        }
    };
    let system = s.get_system("sim-0").await;
    let bios_path = system["Bios"]["@odata.id"].as_str().unwrap().to_string();
    let bios = get(bios_path.clone()).await;
    assert_eq!(bios["Attributes"]["SerialNumber"], "FSIM00000000");
    assert_eq!(bios["Attributes"]["NumCores"], 8);
    let registry = bios["AttributeRegistry"].as_str().unwrap().to_string();
    // Found as a client finds it: root, Registries, the file named so, its location.
    let root = get("/redfish/v1/".into()).await;
    let files = get(root["Registries"]["@odata.id"].as_str().unwrap().into()).await;
    let file_path = files["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = get(file_path.clone()).await;
    assert_eq!(file["Id"], registry.as_str());
    let reg = get(file["Location"][0]["Uri"].as_str().unwrap().into()).await;
    let attrs = reg["RegistryEntries"]["Attributes"].as_array().unwrap();
    for name in bios["Attributes"].as_object().unwrap().keys() {
        assert!(
            attrs.iter().any(|a| a["AttributeName"] == name.as_str()),
            "{name} is not described by the registry"
        );
    }
    // The BIOS read reached the system and is in its log.
    let log = s.log(0).await;
    assert!(log
        .iter()
        .any(|e| e.path == bios_path && e.status == Some(200)));
    // Without credentials the registries are refused like any Redfish resource.
    let anon = s.control(Method::GET, &file_path, None).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let s = sim();
    let a = s
        .redfish(Method::DELETE, "/redfish/v1/Systems/sim-0", None)
        .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.headers.contains_key(header::ALLOW));
    a.redfish_error();
    let a = s.redfish(Method::GET, RESET_PATH, None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers[header::ALLOW], "POST");
}

#[tokio::test]
async fn hard_resets_apply_at_once() {
    let s = sim();
    let a = s.reset("sim-0", "On").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(a.body.is_empty());
    assert_eq!(s.power("sim-0").await, "On");
    assert_eq!(s.power("sim-1").await, "Off", "other systems untouched");
    assert_eq!(s.reset("sim-0", "Nmi").await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.power("sim-0").await, "On");
    assert_eq!(
        s.reset("sim-0", "ForceOff").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.power("sim-0").await, "Off");
    assert_eq!(
        s.reset("sim-0", "ForceOn").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.power("sim-0").await, "On");
    s.reset("sim-0", "ForceOff").await;
    assert_eq!(
        s.reset("sim-0", "ForceRestart").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.power("sim-0").await, "On");
    // The power button on an off machine powers it on.
    assert_eq!(
        s.reset("sim-1", "PushPowerButton").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.power("sim-1").await, "On");
}

#[tokio::test]
async fn invalid_reset_requests_are_400_and_change_nothing() {
    let s = sim();
    let cases: [(&str, &str); 7] = [
        (
            r#"{"ResetType":"Off"}"#,
            "Base.1.0.ActionParameterValueNotInList",
        ),
        (
            r#"{"ResetType":"on"}"#,
            "Base.1.0.ActionParameterValueNotInList",
        ),
        (
            r#"{"ResetType":1}"#,
            "Base.1.0.ActionParameterValueNotInList",
        ),
        (r#"{"Reset":"On"}"#, "Base.1.0.ActionParameterMissing"),
        (r#"["On"]"#, "Base.1.0.MalformedJSON"),
        (r#"{"ResetType":"On""#, "Base.1.0.MalformedJSON"),
        ("", "Base.1.0.MalformedJSON"),
    ];
    for (body, message_id) in cases {
        let a = s
            .send(raw(Method::POST, RESET_PATH, Some(AUTH), body.to_string()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.redfish_error(), message_id, "{body}");
    }
    assert_eq!(s.power("sim-0").await, "Off");
    let log = s.log(0).await;
    assert_eq!(
        log[0].action.as_deref(),
        Some("Off"),
        "invalid actions are logged as sent"
    );
    assert_eq!(log[0].status, Some(400));
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let s = sim();
    // Just under the limit is fine (padding in an ignored parameter)...
    let fits = format!(
        r#"{{"ResetType":"On","Pad":"{}"}}"#,
        "x".repeat(64 * 1024 - 40)
    );
    assert!(fits.len() <= 64 * 1024);
    let a = s
        .send(raw(Method::POST, RESET_PATH, Some(AUTH), fits))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // ...one byte over is not, and does nothing.
    s.reset("sim-0", "ForceOff").await;
    let over = format!(r#"{{"ResetType":"On","Pad":"{}"}}"#, "x".repeat(64 * 1024));
    let a = s
        .send(raw(Method::POST, RESET_PATH, Some(AUTH), over))
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    a.redfish_error();
    assert_eq!(s.power("sim-0").await, "Off");
    let a = s
        .send(raw(
            Method::PATCH,
            "/redfish/v1/Systems/sim-0",
            Some(AUTH),
            vec![b' '; 70_000],
        ))
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let a = s
        .control(Method::PUT, "/sim/behaviour", Some(&" ".repeat(70_000)))
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn patch_sets_the_boot_override() {
    let s = sim();
    let a = s
        .redfish(
            Method::PATCH,
            "/redfish/v1/Systems/sim-2",
            Some(json!({"Boot": {
                "BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once",
            }})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let boot = &s.get_system("sim-2").await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once");
    // One field at a time leaves the others.
    let a = s
        .redfish(
            Method::PATCH,
            "/redfish/v1/Systems/sim-2",
            Some(json!({"Boot": {"BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "Legacy"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let boot = &s.get_system("sim-2").await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Continuous");
    assert_eq!(boot["BootSourceOverrideMode"], "Legacy");
    assert_eq!(
        s.get_system("sim-1").await["Boot"]["BootSourceOverrideTarget"],
        "None"
    );
}

#[tokio::test]
async fn invalid_patches_are_400_and_change_nothing() {
    let s = sim();
    let cases = [
        (
            json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}),
            "Base.1.0.PropertyValueNotInList",
        ),
        (
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Twice"}}),
            "Base.1.0.PropertyValueNotInList",
        ),
        (
            json!({"Boot": {"BootSourceOverrideTarget": null}}),
            "Base.1.0.PropertyValueNotInList",
        ),
        (
            json!({"Boot": {"BootOrder": ["Pxe"]}}),
            "Base.1.0.PropertyUnknown",
        ),
        (json!({"Boot": {}}), "Base.1.0.PropertyUnknown"),
        (json!({"Boot": "Pxe"}), "Base.1.0.PropertyValueTypeError"),
        (json!({"AssetTag": "x"}), "Base.1.0.PropertyUnknown"),
        (json!({}), "Base.1.0.PropertyUnknown"),
        (json!([1]), "Base.1.0.MalformedJSON"),
    ];
    for (body, message_id) in cases {
        let a = s
            .redfish(
                Method::PATCH,
                "/redfish/v1/Systems/sim-0",
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.redfish_error(), message_id, "{body}");
    }
    let a = s
        .send(raw(
            Method::PATCH,
            "/redfish/v1/Systems/sim-0",
            Some(AUTH),
            "{nope",
        ))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.redfish_error(), "Base.1.0.MalformedJSON");
    let boot = &s.get_system("sim-0").await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "None");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Disabled");
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_turns_off_after_the_graceful_time() {
    let s = sim();
    s.reset("sim-0", "On").await;
    let a = s.reset("sim-0", "GracefulShutdown").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.power("sim-0").await,
        "On",
        "the OS is still shutting down"
    );
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["pending"]["reset"], "GracefulShutdown");
    assert_eq!(view["pending"]["due_in_ms"], 3000);
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(s.power("sim-0").await, "On");
    // Asking again does not push the deadline back.
    s.reset("sim-0", "GracefulShutdown").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.power("sim-0").await, "Off");
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["pending"], Value::Null);
}

#[tokio::test(start_paused = true)]
async fn graceful_time_is_per_system() {
    let s = sim();
    s.behaviour("sim-1", r#"{"graceful_shutdown_secs": 10}"#)
        .await;
    for id in ["sim-0", "sim-1"] {
        s.reset(id, "On").await;
        s.reset(id, "GracefulShutdown").await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.power("sim-0").await, "Off");
    assert_eq!(s.power("sim-1").await, "On");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(s.power("sim-1").await, "Off");
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_can_never_complete() {
    let s = sim_with(SimConfig {
        systems: 2,
        behaviour: Behaviour {
            graceful_shutdown_secs: None,
            ..Behaviour::default()
        },
        ..SimConfig::default()
    });
    s.reset("sim-0", "On").await;
    assert_eq!(
        s.reset("sim-0", "GracefulShutdown").await.status,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert_eq!(s.power("sim-0").await, "On");
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["pending"]["reset"], "GracefulShutdown");
    assert_eq!(view["pending"]["due_in_ms"], Value::Null);
    assert_eq!(view["behaviour"]["graceful_shutdown_secs"], Value::Null);
    // Only a hard power off ends it.
    s.reset("sim-0", "ForceOff").await;
    assert_eq!(s.power("sim-0").await, "Off");
}

#[tokio::test(start_paused = true)]
async fn force_off_cancels_a_pending_graceful_shutdown() {
    let s = sim();
    s.reset("sim-0", "On").await;
    s.reset("sim-0", "GracefulShutdown").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.reset("sim-0", "ForceOff").await;
    s.reset("sim-0", "On").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.power("sim-0").await,
        "On",
        "the old shutdown must not fire"
    );
}

#[tokio::test(start_paused = true)]
async fn an_os_shutdown_from_inside_cancels_the_pending_one() {
    let s = sim();
    s.reset("sim-0", "On").await;
    s.reset("sim-0", "GracefulShutdown").await;
    s.behaviour("sim-0", r#"{"power": "Off"}"#).await;
    assert_eq!(s.power("sim-0").await, "Off");
    s.behaviour("sim-0", r#"{"power": "On"}"#).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s.power("sim-0").await, "On");
}

#[tokio::test(start_paused = true)]
async fn graceful_restart_ends_on() {
    let s = sim();
    s.reset("sim-0", "On").await;
    assert_eq!(
        s.reset("sim-0", "GracefulRestart").await.status,
        StatusCode::NO_CONTENT
    );
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["pending"]["reset"], "GracefulRestart");
    assert_eq!(s.power("sim-0").await, "On");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.power("sim-0").await, "On");
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["pending"], Value::Null);
    // From Off a graceful restart is a boot.
    s.reset("sim-1", "GracefulRestart").await;
    assert_eq!(s.power("sim-1").await, "On");
}

#[tokio::test(start_paused = true)]
async fn push_power_button_on_a_running_os_shuts_it_down_gracefully() {
    let s = sim();
    s.reset("sim-0", "On").await;
    s.reset("sim-0", "PushPowerButton").await;
    assert_eq!(s.power("sim-0").await, "On");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.power("sim-0").await, "Off");
}

/// Statuses of `n` GETs of sim-0 on a fresh fleet with the given seed and a 30 % failure rate.
async fn failure_pattern(seed: u64, n: usize) -> Vec<u16> {
    let s = sim_with(SimConfig {
        systems: 2,
        seed,
        behaviour: Behaviour {
            failure_rate: 0.3,
            ..Behaviour::default()
        },
        ..SimConfig::default()
    });
    let mut out = Vec::new();
    for _ in 0..n {
        let a = s
            .redfish(Method::GET, "/redfish/v1/Systems/sim-0", None)
            .await;
        if a.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(a.redfish_error(), "Base.1.0.InternalError");
        }
        out.push(a.status.as_u16());
    }
    out
}

#[tokio::test]
async fn failure_rate_is_reproducible_from_the_seed() {
    let a = failure_pattern(42, 400).await;
    let b = failure_pattern(42, 400).await;
    let c = failure_pattern(43, 400).await;
    assert_eq!(a, b, "same seed, same failures");
    assert_ne!(a, c);
    let failures = a.iter().filter(|s| **s == 500).count();
    assert!((80..=160).contains(&failures), "{failures} of 400 at 30 %");
    assert!(a.iter().all(|s| *s == 200 || *s == 500));
}

#[tokio::test]
async fn a_failed_request_has_no_effect() {
    let s = sim();
    s.behaviour("sim-0", r#"{"failure_rate": 1.0}"#).await;
    let a = s.reset("sim-0", "On").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    a.redfish_error();
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["power"], "Off");
    // Other systems are unaffected.
    assert_eq!(s.reset("sim-1", "On").await.status, StatusCode::NO_CONTENT);
    s.behaviour("sim-0", r#"{"failure_rate": 0}"#).await;
    assert_eq!(s.reset("sim-0", "On").await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.power("sim-0").await, "On");
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_answer_of_that_system() {
    let s = sim();
    s.behaviour("sim-0", r#"{"latency_ms": 1500}"#).await;
    let t = tokio::time::Instant::now();
    assert_eq!(s.reset("sim-0", "On").await.status, StatusCode::NO_CONTENT);
    assert!(t.elapsed() >= Duration::from_millis(1500));
    let t = tokio::time::Instant::now();
    s.power("sim-1").await;
    assert!(t.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_system_never_answers_and_does_nothing() {
    let s = sim();
    s.behaviour("sim-0", r#"{"unreachable": true}"#).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(RESET_PATH)
        .header(header::AUTHORIZATION, AUTH)
        .header(header::USER_AGENT, CONDUCTOR)
        .body(Body::from(r#"{"ResetType":"On"}"#))
        .unwrap();
    let held = tokio::time::timeout(Duration::from_secs(3600), s.app.clone().oneshot(req)).await;
    assert!(held.is_err(), "an unreachable BMC must not answer");
    // Even without credentials, nothing comes back.
    let held = tokio::time::timeout(
        Duration::from_secs(60),
        s.app.clone().oneshot(raw(
            Method::GET,
            "/redfish/v1/Systems/sim-0",
            None,
            Body::empty(),
        )),
    )
    .await;
    assert!(held.is_err());
    // The control API still answers, other systems too, and the reset did nothing.
    let view = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(view["power"], "Off");
    assert_eq!(view["behaviour"]["unreachable"], true);
    assert_eq!(s.power("sim-1").await, "Off");
    // The log shows the command arrived and was never answered.
    let log = s.log(0).await;
    assert_eq!(log[0].action.as_deref(), Some("On"));
    assert_eq!(log[0].status, None);
    assert_eq!(log[0].client.as_deref(), Some("c1"));
    // Reachable again: answers as usual.
    s.behaviour("sim-0", r#"{"unreachable": false}"#).await;
    assert_eq!(s.reset("sim-0", "On").await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.power("sim-0").await, "On");
}

#[tokio::test]
async fn the_log_records_every_request_to_a_system() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("commands.jsonl");
    let s = sim_with(SimConfig {
        systems: 2,
        log_path: Some(file.clone()),
        ..SimConfig::default()
    });
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    s.reset("sim-0", "On").await;
    s.redfish(
        Method::PATCH,
        "/redfish/v1/Systems/sim-1",
        Some(json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})),
    )
    .await;
    // Another client, and one without a User-Agent.
    let a = s
        .send(
            Request::builder()
                .method(Method::GET)
                .uri("/redfish/v1/Systems/sim-1")
                .header(header::AUTHORIZATION, AUTH)
                .header(header::USER_AGENT, "python-requests/2.31.0")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    s.send(raw(
        Method::GET,
        "/redfish/v1/Systems/sim-0",
        Some(AUTH),
        Body::empty(),
    ))
    .await;
    // Not system requests: not logged.
    s.redfish(Method::GET, "/redfish/v1/Systems", None).await;
    s.redfish(Method::GET, "/redfish/v1/", None).await;
    s.control(Method::GET, "/sim/systems/sim-0", None).await;

    let log = s.log(0).await;
    let summary: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e.index,
                e.system.as_str(),
                e.method.as_str(),
                e.path.as_str(),
                e.action.as_deref(),
                e.status,
                e.client.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                0,
                "sim-0",
                "POST",
                RESET_PATH,
                Some("On"),
                Some(204),
                Some("c1")
            ),
            (
                1,
                "sim-1",
                "PATCH",
                "/redfish/v1/Systems/sim-1",
                Some("Pxe"),
                Some(204),
                Some("c1")
            ),
            (
                2,
                "sim-1",
                "GET",
                "/redfish/v1/Systems/sim-1",
                None,
                Some(200),
                Some("python-requests/2.31.0")
            ),
            (
                3,
                "sim-0",
                "GET",
                "/redfish/v1/Systems/sim-0",
                None,
                Some(200),
                None
            ),
        ]
    );
    let after_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for e in &log {
        assert!((before_ms..=after_ms).contains(&e.unix_ms));
        assert_eq!(e.time, ferric_sim::rfc3339_ms(e.unix_ms));
        assert_eq!(e.time.len(), "2026-01-01T00:00:00.000Z".len());
    }
    assert_eq!(s.log(2).await, log[2..]);
    assert!(s.log(4).await.is_empty());
    assert!(s.log(1000).await.is_empty());
    let a = s.control(Method::GET, "/sim/log?since=-1", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.log(0).await, log, "reading the log does not add to it");

    // The file holds the same entries, one JSON object per line, already written.
    let text = std::fs::read_to_string(&file).unwrap();
    let from_file: Vec<LogEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(from_file, log);
    assert!(text.ends_with('\n'));
    // The raw field names are part of the contract with tests in other crates.
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for field in [
        "index", "time", "unix_ms", "system", "method", "path", "action", "status", "client",
    ] {
        assert!(first.get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn memory_keeps_the_newest_entries_and_the_file_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("commands.jsonl");
    let s = sim_with(SimConfig {
        systems: 1,
        log_path: Some(file.clone()),
        log_memory_entries: 2,
        ..SimConfig::default()
    });
    for _ in 0..5 {
        s.power("sim-0").await;
    }
    let indexes = |v: Vec<LogEntry>| v.iter().map(|e| e.index).collect::<Vec<_>>();
    assert_eq!(
        indexes(s.log(0).await),
        [3, 4],
        "the gap shows in the indexes"
    );
    assert_eq!(indexes(s.log(4).await), [4]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 5);
}

#[tokio::test]
async fn the_log_file_is_appended_to_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("commands.jsonl");
    std::fs::write(&file, "{\"earlier\":true}\n").unwrap();
    let s = sim_with(SimConfig {
        systems: 1,
        log_path: Some(file.clone()),
        ..SimConfig::default()
    });
    s.reset("sim-0", "On").await;
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "{\"earlier\":true}");
}

#[tokio::test]
async fn control_api_reads_and_changes_behaviour() {
    let s = sim();
    let a = s.control(Method::GET, "/sim/healthz", None).await;
    assert_eq!(a.status, StatusCode::OK);

    let v = s
        .control(Method::GET, "/sim/systems/sim-1", None)
        .await
        .json();
    assert_eq!(v["id"], "sim-1");
    assert_eq!(v["power"], "Off");
    assert_eq!(
        v["behaviour"],
        json!({"graceful_shutdown_secs": 3.0, "latency_ms": 0, "failure_rate": 0.0, "unreachable": false})
    );

    // Only the given fields change, and only on that system.
    let a = s
        .control(
            Method::PUT,
            "/sim/systems/sim-1/behaviour",
            Some(r#"{"latency_ms": 5, "power": "On"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["behaviour"]["latency_ms"], 5);
    assert_eq!(v["behaviour"]["graceful_shutdown_secs"], 3.0);
    assert_eq!(v["power"], "On");
    assert_eq!(s.power("sim-1").await, "On");
    assert_eq!(s.power("sim-0").await, "Off");

    // The whole fleet at once.
    let a = s
        .control(
            Method::PUT,
            "/sim/behaviour",
            Some(r#"{"graceful_shutdown_secs": null, "power": "On"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let all = s.control(Method::GET, "/sim/systems", None).await.json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    for v in all {
        assert_eq!(v["power"], "On");
        assert_eq!(v["behaviour"]["graceful_shutdown_secs"], Value::Null);
    }
    assert_eq!(
        all[1]["behaviour"]["latency_ms"], 5,
        "untouched fields stay"
    );

    // Errors.
    let a = s.control(Method::GET, "/sim/systems/sim-9", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s
        .control(Method::PUT, "/sim/systems/sim-9/behaviour", Some("{}"))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    for bad in [
        r#"{"failure_rate": 2}"#,
        r#"{"graceful_shutdown_secs": -3}"#,
        r#"{"power": "Sideways"}"#,
        r#"{"behavior": {}}"#,
        r#"{"latency_ms": "slow"}"#,
        "{nope",
        "",
    ] {
        for path in ["/sim/systems/sim-0/behaviour", "/sim/behaviour"] {
            let a = s.control(Method::PUT, path, Some(bad)).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path} {bad}");
            assert!(a.json()["error"].as_str().is_some());
        }
    }
    let v = s
        .control(Method::GET, "/sim/systems/sim-0", None)
        .await
        .json();
    assert_eq!(
        v["behaviour"]["failure_rate"], 0.0,
        "a refused patch changes nothing"
    );
}

#[tokio::test]
async fn ids_follow_the_prefix_and_credentials_are_configurable() {
    let s = sim_with(SimConfig {
        systems: 2,
        id_prefix: "node".to_string(),
        username: "root".to_string(),
        password: "calvin".to_string(),
        ..SimConfig::default()
    });
    let a = s
        .send(raw(
            Method::GET,
            "/redfish/v1/Systems/node1",
            Some(AUTH),
            Body::empty(),
        ))
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "admin:password no longer works"
    );
    let a = s
        .send(raw(
            Method::GET,
            "/redfish/v1/Systems/node1",
            Some("Basic cm9vdDpjYWx2aW4="), // root:calvin
            Body::empty(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Id"], "node1");
    assert!(SimState::new(SimConfig {
        id_prefix: "bad/prefix".to_string(),
        ..SimConfig::default()
    })
    .is_err());
}

#[tokio::test]
async fn the_control_api_shows_each_machines_nics_and_its_inventory_as_the_bios_does() {
    let s = sim();
    let mut macs = std::collections::HashSet::new();
    for idx in 0..3u64 {
        let id = format!("sim-{idx}");
        let v = s
            .control(Method::GET, &format!("/sim/systems/{id}"), None)
            .await
            .json();
        assert_eq!(
            v["nics"],
            json!([
                {"name": "eth0", "mac": format!("52:54:00:00:00:{idx:02x}"), "pxe": true},
                {"name": "eth1", "mac": format!("52:54:01:00:00:{idx:02x}"), "pxe": false},
            ])
        );
        for nic in v["nics"].as_array().unwrap() {
            assert!(macs.insert(nic["mac"].to_string()), "{nic}");
        }
        let inv = &v["inventory"];
        assert_eq!(inv["interfaces"][0]["mac_address"], v["nics"][0]["mac"]);
        assert_eq!(inv["boot"]["pxe_interface"], v["nics"][0]["mac"]);
        assert_eq!(inv["cpu"]["count"], 8 << idx);
        assert_eq!(inv["memory"]["physical_mb"], 4096 * (8 << idx));
        // The BIOS resource describes the same machine.
        let bios = s
            .redfish(Method::GET, &format!("/redfish/v1/Systems/{id}/Bios"), None)
            .await
            .json();
        assert_eq!(bios["Attributes"]["NumCores"], inv["cpu"]["count"]);
        assert_eq!(
            bios["Attributes"]["SerialNumber"],
            inv["system_vendor"]["serial_number"]
        );
        let vmx = inv["cpu"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("vmx"));
        assert_eq!(
            bios["Attributes"]["ProcVirtualization"] == "Enabled",
            vmx,
            "{id}"
        );
    }
    // The list shows the NICs but leaves the inventories out.
    let all = s.control(Method::GET, "/sim/systems", None).await.json();
    for v in all.as_array().unwrap() {
        assert_eq!(v["nics"].as_array().map(Vec::len), Some(2));
        assert!(v.get("inventory").is_none(), "{v}");
    }
}
