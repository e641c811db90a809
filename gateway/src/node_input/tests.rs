//! Unit tests of request parsing: enroll and PATCH bodies on JSON, their refusals in Ironic's words.

use super::*;
use serde_json::json;

fn v(minor: u32) -> ApiVersion {
    ApiVersion {
        minor,
        new_header: false,
    }
}

fn drivers() -> Drivers {
    Drivers {
        known: vec!["fake-hardware".into(), "ipmi".into()],
        live: Default::default(),
    }
}

#[test]
fn create_validates_like_ironic() {
    let spec = create(
        &json!({"driver": "fake-hardware", "name": "n1", "properties": {"cpus": 4},
                "driver_info": {"ipmi_password": "x"}, "maintenance": "true",
                "conductor_group": "Rack-1", "deploy_interface": "direct", "owner": null}),
        v(95),
        &drivers(),
        7,
    )
    .unwrap();
    assert_eq!(spec.name.unwrap().as_str(), "n1");
    assert!(spec.maintenance);
    assert_eq!(spec.conductor_group, "rack-1");
    assert_eq!(spec.interfaces["deploy_interface"], "direct");
    assert_eq!(spec.properties, r#"{"cpus":4}"#);

    let err = |body: Value, minor: u32| create(&body, v(minor), &drivers(), 0).unwrap_err();
    let e = err(json!({"driver": "fake-hardware", "bogus": 1}), 95);
    assert!(e.to_string().contains("'bogus' was unexpected"), "{e}");
    let e = err(json!({"name": "x"}), 95);
    assert!(
        e.to_string().contains("'driver' is a required property"),
        "{e}"
    );
    let e = err(json!({"driver": "nope"}), 95);
    assert!(e.to_string().contains("No valid host"), "{e}");
    let e = err(json!({"driver": "fake-hardware", "maintenance": 7}), 95);
    assert!(e.to_string().contains("maintenance"), "{e}");
    let e = err(json!({"driver": "fake-hardware", "properties": []}), 95);
    assert!(e.to_string().contains("properties"), "{e}");
    let e = err(json!({"driver": "fake-hardware", "owner": 7}), 95);
    assert!(e.to_string().contains("owner"), "{e}");
    let e = err(json!({"driver": "fake-hardware", "owner": "p1"}), 49);
    assert!(matches!(e, ApiError::NotAcceptable(_)), "{e}");
    let e = err(json!({"driver": "ipmi", "power_interface": "redfish"}), 95);
    assert!(
        e.to_string().contains("'ironic.hardware.interfaces.power' entrypoint: redfish. Valid interfaces are ipmitool."),
        "{e}"
    );
    let e = err(
        json!({"driver": "fake-hardware", "retired_reason": "x"}),
        95,
    );
    assert!(e.to_string().contains("only be set when retired"), "{e}");
    let spec = create(
        &json!({"driver": "fake-hardware", "owner": "p1", "lessee": "p2", "description": "d",
                "automated_clean": false, "retired": true, "retired_reason": "eol",
                "network_data": {"links": [], "networks": [], "services": []}, "shard": "s1"}),
        v(95),
        &drivers(),
        0,
    )
    .unwrap();
    assert_eq!(spec.owner.as_deref(), Some("p1"));
    assert_eq!(spec.lessee.as_deref(), Some("p2"));
    assert_eq!(spec.description.as_deref(), Some("d"));
    assert_eq!(spec.automated_clean, Some(false));
    assert!(spec.retired);
    assert_eq!(spec.retired_reason.as_deref(), Some("eol"));
    assert_eq!(
        spec.network_data,
        r#"{"links":[],"networks":[],"services":[]}"#
    );
    assert_eq!(spec.shard.as_deref(), Some("s1"));
    assert!(matches!(
        err(
            json!({"driver": "fake-hardware", "disable_power_off": true}),
            94
        ),
        ApiError::NotAcceptable(_)
    ));
    assert!(matches!(
        err(json!({"driver": "fake-hardware"}), 10),
        ApiError::NotAcceptable(_)
    ));
    let e = err(json!({"driver": "fake-hardware", "name": "detail"}), 95);
    assert!(e.to_string().contains("reserved"), "{e}");
    let e = err(json!({"driver": "fake-hardware", "uuid": "nope"}), 95);
    assert!(e.to_string().contains("Expected UUID"), "{e}");
    let e = err(json!([1]), 95);
    assert!(e.to_string().contains("not of type 'object'"), "{e}");
}

#[test]
fn malformed_driver_info_is_refused_at_enroll_naming_the_key() {
    let create_with = |info: Value| {
        create(
            &json!({"driver": "ipmi", "driver_info": info}),
            v(95),
            &drivers(),
            0,
        )
    };
    // What the drivers accept is accepted, and stored exactly as sent.
    let spec = create_with(json!({"ipmi_address": "10.0.0.5", "ipmi_port": "623",
        "ipmi_password": "pw", "deploy_kernel": "http://x/k"}))
    .unwrap();
    assert_eq!(
        spec.driver_info,
        r#"{"deploy_kernel":"http://x/k","ipmi_address":"10.0.0.5","ipmi_password":"pw","ipmi_port":"623"}"#
    );
    assert_eq!(spec.driver_info().unwrap().ipmi().port, Some(623));
    // Not yet complete is fine at enroll (Ironic validates a driver's needs later).
    assert!(create_with(json!({})).is_ok());
    assert!(create_with(json!(null)).is_ok());
    for (info, key) in [
        (json!({"ipmi_port": "abc"}), "ipmi_port"),
        (json!({"ipmi_port": 70000}), "ipmi_port"),
        (json!({"ipmi_port": true}), "ipmi_port"),
        (json!({"ipmi_address": 10}), "ipmi_address"),
        (json!({"ipmi_password": 1234567}), "ipmi_password"),
        (json!({"redfish_verify_ca": 3}), "redfish_verify_ca"),
        (
            json!({"agent_callback_timeout": "soon"}),
            "agent_callback_timeout",
        ),
        (json!({"fake_step_secs": [1]}), "fake_step_secs"),
    ] {
        let e = create_with(info.clone()).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{info}: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Invalid driver_info") && text.contains(key),
            "{info}: {text}"
        );
        assert!(!text.contains("1234567"), "a secret in the error: {text}");
    }
    for info in [json!([1]), json!("{}"), json!(5)] {
        let e = create_with(info.clone()).unwrap_err();
        assert!(
            matches!(&e, ApiError::BadRequest(m) if m.contains("'driver_info'")),
            "{info}: {e:?}"
        );
    }
}

#[test]
fn malformed_driver_info_is_refused_at_patch_naming_the_key() {
    let mut spec = NodeSpec::new(NodeId::new_random(), "ipmi", 0);
    spec.driver_info = r#"{"ipmi_address":"h"}"#.into();
    let node = NodeRef {
        spec: std::sync::Arc::new(crate::informer::SpecEntry::new(spec.clone(), 1)),
        status: None,
        holder: None,
    };
    let patch = |ops: Value| {
        let ops = json_patch::parse(&ops).unwrap();
        let mut next = spec.clone();
        apply_patch(&node, &ops, v(95), &drivers(), false, &mut next).map(|()| next)
    };
    let ok =
        patch(json!([{"op": "add", "path": "/driver_info/ipmi_port", "value": "6230"}])).unwrap();
    assert_eq!(ok.driver_info, r#"{"ipmi_address":"h","ipmi_port":"6230"}"#);
    for (ops, key) in [
        (
            json!([{"op": "add", "path": "/driver_info/ipmi_port", "value": "abc"}]),
            "ipmi_port",
        ),
        (
            json!([{"op": "replace", "path": "/driver_info", "value": {"ipmi_address": ["h"]}}]),
            "ipmi_address",
        ),
        (
            json!([{"op": "add", "path": "/driver_info/fake_fail_states", "value": 1}]),
            "fake_fail_states",
        ),
    ] {
        let e = patch(ops.clone()).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{ops}: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Invalid driver_info") && text.contains(key),
            "{ops}: {text}"
        );
    }
    let e = patch(json!([{"op": "replace", "path": "/driver_info", "value": [1]}])).unwrap_err();
    assert!(e.to_string().contains("'driver_info'"), "{e}");
}

#[test]
fn names_follow_the_version() {
    assert!(check_name("Node_1", v(10), "%NAME%").is_ok());
    assert!(check_name("Node_1", v(9), "%NAME%").is_err());
    assert!(check_name("node-1.rack", v(9), "%NAME%").is_ok());
    assert!(matches!(
        check_name("n", v(4), "%NAME%"),
        Err(ApiError::NotAcceptable(_))
    ));
}

#[test]
fn patch_fields_are_checked_before_reading() {
    let ops =
        json_patch::parse(&json!([{"op": "replace", "path": "/power_state", "value": "power on"}]))
            .unwrap();
    let e = check_patch(&ops, v(95)).unwrap_err();
    assert!(e.to_string().contains("Cannot patch /power_state"), "{e}");
    let ops =
        json_patch::parse(&json!([{"op": "add", "path": "/disable_power_off", "value": true}]))
            .unwrap();
    assert!(matches!(
        check_patch(&ops, v(90)),
        Err(ApiError::NotAcceptable(_))
    ));
    let ops =
        json_patch::parse(&json!([{"op": "add", "path": "/properties/a", "value": 1}])).unwrap();
    assert!(check_patch(&ops, v(1)).is_ok());
}
