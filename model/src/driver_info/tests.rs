//! Unit tests of driver_info: typed keys, kept keys, exact round trips, secrets never shown.

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
