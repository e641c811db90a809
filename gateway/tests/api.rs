//! The gateway's API, request by request, against a real etcd: every endpoint, the status codes
//! and Ironic error bodies clients rely on, microversion negotiation, validation messages that
//! name the offending field, and what etcd holds after each write.

mod support;

use ferric_model::{BootDevice, PowerState, PowerTarget, ProvisionState, Verb};
use serde_json::{json, Value};
use support::World;

fn fake() -> Value {
    json!({"driver": "fake-hardware"})
}

#[tokio::test]
async fn version_discovery_and_negotiation() {
    let w = World::new().await;
    // Root and /v1 are public and carry the version headers, like Ironic's.
    let r = w.call_with("GET", "/", None, &[]).await;
    r.expect(200);
    assert_eq!(r.json["versions"][0]["version"], "1.95");
    assert_eq!(r.json["versions"][0]["min_version"], "1.1");
    assert_eq!(
        r.json["default_version"]["links"][0]["href"],
        "http://ferric.test:6385/v1/"
    );
    assert_eq!(
        r.header("x-openstack-ironic-api-minimum-version"),
        Some("1.1")
    );
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.95")
    );
    let r = w.call_with("GET", "/v1", None, &[]).await;
    r.expect(200);
    assert_eq!(r.json["id"], "v1");
    assert!(r.json["nodes"].is_array());
    // No header: 1.1. `latest`: the maximum. Both header spellings.
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.1"));
    assert!(r.json.get("conductors").is_none(), "conductors are 1.49+");
    let r = w
        .call_with(
            "GET",
            "/v1/",
            None,
            &[("X-OpenStack-Ironic-API-Version", "latest")],
        )
        .await;
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.95"));
    assert!(r.json["conductors"].is_array());
    let r = w
        .call_with(
            "GET",
            "/v1/nodes",
            None,
            &[("OpenStack-API-Version", "baremetal 1.46")],
        )
        .await;
    r.expect(200);
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.46"));
    assert_eq!(r.header("openstack-api-version"), Some("baremetal 1.46"));
    // Out of range, another major, garbage: 406 with the range, in Ironic's error body.
    for bad in ["1.96", "1.0", "2.1", "one.two", "1.999999999999"] {
        let r = w
            .call_with(
                "GET",
                "/v1/nodes",
                None,
                &[("X-OpenStack-Ironic-API-Version", bad)],
            )
            .await;
        r.expect(406);
        assert_eq!(
            r.header("x-openstack-ironic-api-maximum-version"),
            Some("1.95")
        );
        assert!(r.header("x-openstack-ironic-api-version").is_none());
        assert!(!r.fault().is_empty());
    }
    let r = w
        .call_with(
            "GET",
            "/v1/nodes",
            None,
            &[("X-OpenStack-Ironic-API-Version", "1.96")],
        )
        .await;
    r.expect_error(406, "The supported version range is: [1.1, 1.95]");
    // Unknown paths and methods: Ironic's error body too.
    w.get("/v1/chassis")
        .await
        .expect_error(404, "could not be found");
    let r = w.call("POST", "/v1/conductors", Some(json!({}))).await;
    r.expect(405);
    assert!(!r.fault().is_empty());
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.95")
    );
}

#[tokio::test]
async fn enroll_show_and_list_with_fields_detail_and_versions() {
    let w = World::new().await;
    let r = w
        .call(
            "POST",
            "/v1/nodes",
            Some(json!({"driver": "fake-hardware", "name": "node-1",
                        "driver_info": {"ipmi_address": "10.1.1.1", "ipmi_password": "s3cret", "snmp_auth_key": "k"},
                        "properties": {"cpus": 8}, "resource_class": "bm.large",
                        "instance_info": {"configdrive": "H4sI", "root_gb": 10}})),
        )
        .await;
    r.expect(201);
    let id = r.json["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("http://ferric.test:6385/v1/nodes/{id}").as_str())
    );
    assert_eq!(r.json["provision_state"], "enroll");
    assert_eq!(r.json["driver_info"]["ipmi_password"], "******");
    assert_eq!(r.json["driver_info"]["snmp_auth_key"], "******");
    assert_eq!(r.json["driver_info"]["ipmi_address"], "10.1.1.1");
    assert_eq!(r.json["instance_info"]["configdrive"], "******");
    assert_eq!(r.json["reservation"], Value::Null);
    assert_eq!(
        r.json["links"][0]["href"],
        format!("http://ferric.test:6385/v1/nodes/{id}")
    );
    // The secret is stored, not masked, in etcd.
    let view = w.cluster.get_node(&id).await.unwrap();
    assert!(view.spec.driver_info.contains("s3cret"));
    assert_eq!(view.spec.resource_class.as_deref(), Some("bm.large"));

    // Read-your-writes: the node is visible by uuid and name right after the 201.
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    r.expect(200);
    assert_eq!(r.json["name"], "node-1");
    assert_eq!(r.json["properties"]["cpus"], 8);
    assert!(r.json["states"].is_array());
    w.get("/v1/nodes/node-1").await.expect(200);
    w.get("/v1/nodes/nope")
        .await
        .expect_error(404, "Node nope could not be found.");
    w.get("/v1/nodes/bad%20name")
        .await
        .expect_error(400, "Expected UUID or name");

    // Default list fields, then fields= and detail.
    let r = w.get("/v1/nodes").await;
    r.expect(200);
    let n = &r.json["nodes"][0];
    let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "instance_uuid",
            "links",
            "maintenance",
            "name",
            "power_state",
            "provision_state",
            "uuid"
        ]
    );
    assert!(
        r.json.get("next").is_none(),
        "a partial page has no next link"
    );
    let r = w.get("/v1/nodes?fields=uuid,driver").await;
    let keys: Vec<&str> = r.json["nodes"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["driver", "links", "uuid"]);
    let r = w.get(&format!("/v1/nodes/{id}?fields=name")).await;
    assert_eq!(r.json.as_object().unwrap().len(), 2, "{}", r.text);
    w.get("/v1/nodes?fields=bogus")
        .await
        .expect_error(400, "Field bogus is not a valid field.");
    w.get("/v1/nodes?fields=name&detail=true")
        .await
        .expect_error(400, "Can not specify ?detail=True and fields");
    let r = w.get("/v1/nodes?detail=true").await;
    assert_eq!(r.json["nodes"][0]["driver_info"]["ipmi_password"], "******");
    let r = w.get("/v1/nodes/detail").await;
    assert_eq!(r.json["nodes"][0]["resource_class"], "bm.large");
    w.get("/v1/nodes/detail?fields=name")
        .await
        .expect_error(400, "Unexpected arguments: fields");
    w.get("/v1/nodes?frobnicate=1")
        .await
        .expect_error(400, "Unexpected arguments: frobnicate");

    // Older microversions hide newer fields and refuse newer features.
    let old = |path: &str, ver: &'static str| {
        let path = path.to_string();
        let w = &w;
        async move {
            w.call_with(
                "GET",
                &path,
                None,
                &[("X-OpenStack-Ironic-API-Version", ver)],
            )
            .await
        }
    };
    let r = old(&format!("/v1/nodes/{id}"), "1.20").await;
    r.expect(200);
    assert!(r.json.get("resource_class").is_none());
    assert!(r.json.get("conductor").is_none());
    assert!(r.json.get("name").is_some());
    old(&format!("/v1/nodes/{id}"), "1.4").await.expect(200);
    old("/v1/nodes/node-1", "1.4").await.expect(406); // names in URLs are 1.5+
    let r = old(&format!("/v1/nodes/{id}"), "1.94").await;
    assert!(r.json.get("disable_power_off").is_none());
    assert!(r.json.get("fault").is_some());
    old("/v1/nodes?fields=name", "1.7").await.expect(406);
    old("/v1/nodes?fields=disable_power_off", "1.94")
        .await
        .expect(406);
    old("/v1/nodes?detail=true", "1.42")
        .await
        .expect_error(400, "Invalid query parameter ?detail=");
    old("/v1/nodes?provision_state=enroll", "1.8")
        .await
        .expect(406);
    old("/v1/nodes?conductor_group=x", "1.45").await.expect(406);
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(&json!({"driver": "fake-hardware", "disable_power_off": true}).to_string()),
            &[("X-OpenStack-Ironic-API-Version", "1.90")],
        )
        .await;
    r.expect(406);
    let r = w
        .call_with("POST", "/v1/nodes", Some(&fake().to_string()), &[])
        .await;
    r.expect_error(406, "\"enroll\" state, which needs API version 1.11");
}

#[tokio::test]
async fn enroll_refuses_bad_input_naming_the_field() {
    let w = World::new().await;
    let post = |body: &str| {
        let body = body.to_string();
        let w = &w;
        async move {
            w.call_with(
                "POST",
                "/v1/nodes",
                Some(&body),
                &[("X-OpenStack-Ironic-API-Version", "1.95")],
            )
            .await
        }
    };
    post("{").await.expect_error(400, "not valid JSON");
    post("[]").await.expect_error(400, "not of type 'object'");
    post(r#"{"driver": "fake-hardware", "colour": "red"}"#)
        .await
        .expect_error(400, "'colour' was unexpected");
    post(r#"{"name": "x"}"#)
        .await
        .expect_error(400, "'driver' is a required property");
    post(r#"{"driver": 5}"#).await.expect_error(400, "'driver'");
    post(r#"{"driver": "fake-hardware", "maintenance": "perhaps"}"#)
        .await
        .expect_error(400, "'maintenance'");
    post(r#"{"driver": "fake-hardware", "properties": "cpus=4"}"#)
        .await
        .expect_error(400, "'properties'");
    post(r#"{"driver": "fake-hardware", "instance_uuid": "nope"}"#)
        .await
        .expect_error(400, "Expected UUID for instance_uuid");
    post(r#"{"driver": "fake-hardware", "name": "has space"}"#)
        .await
        .expect_error(400, "invalid name");
    post(r#"{"driver": "fake-hardware", "name": "detail"}"#)
        .await
        .expect_error(400, "reserved");
    post(r#"{"driver": "no-such-driver"}"#)
        .await
        .expect_error(400, "No valid host was found");
    // Fields Ferric does not store are refused naming the field; stored ones are checked.
    post(r#"{"driver": "fake-hardware", "parent_node": "x"}"#)
        .await
        .expect_error(400, "\"parent_node\"");
    post(r#"{"driver": "fake-hardware", "owner": 5}"#)
        .await
        .expect_error(400, "'owner'");
    post(r#"{"driver": "fake-hardware", "deploy_interface": "ansible"}"#)
        .await
        .expect_error(
            400,
            "'ironic.hardware.interfaces.deploy' entrypoint: ansible",
        );
    post(r#"{"driver": "fake-hardware", "conductor_group": "bad group!"}"#)
        .await
        .expect_error(400, "Invalid conductor group");
    // ipmi and redfish are known drivers even before a conductor serves them.
    post(r#"{"driver": "ipmi", "driver_info": {"ipmi_address": "127.0.0.1"}}"#)
        .await
        .expect(201);
    // 413 above the body limit, in Ironic's error body; nothing is created.
    let huge = format!(
        r#"{{"driver": "fake-hardware", "extra": {{"blob": "{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    post(&huge).await.expect_error(413, "larger than");
    // Duplicate name and uuid: 409.
    let id = w
        .enroll(json!({"driver": "fake-hardware", "name": "dup"}))
        .await;
    post(r#"{"driver": "fake-hardware", "name": "dup"}"#)
        .await
        .expect_error(409, "A node with name dup already exists.");
    post(&json!({"driver": "fake-hardware", "uuid": id}).to_string())
        .await
        .expect_error(409, "already exists");
    let (views, _) = w.cluster.list_nodes().await.unwrap();
    assert_eq!(views.len(), 2, "only the two valid nodes exist");
}

#[tokio::test]
async fn list_filters_sorting_and_pagination() {
    let mut w = World::new().await;
    w.start_conductor("c1").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut body = json!({"driver": "fake-hardware", "name": format!("n{i}")});
        if i % 2 == 0 {
            body["resource_class"] = json!("even");
        }
        if i == 3 {
            body["maintenance"] = json!(true);
            body["instance_uuid"] = json!("6d85703a-565d-469a-96ce-30b6de53079d");
        }
        if i == 6 {
            body["conductor_group"] = json!("Rack2");
        }
        ids.push(w.enroll(body).await);
    }
    let tok = w.own("c1", &ids[1]).await;
    w.set_status(&ids[1], tok, |s| {
        s.provision_state = ProvisionState::Manageable;
        s.power_state = Some(PowerState::On);
        s.fault = Some("power failure".into());
    })
    .await;
    let names = |r: &support::Resp| -> Vec<String> {
        r.json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&w.get("/v1/nodes").await).len(), 7);
    assert_eq!(names(&w.get("/v1/nodes?maintenance=true").await), ["n3"]);
    assert_eq!(names(&w.get("/v1/nodes?maintenance=False").await).len(), 6);
    assert_eq!(
        names(&w.get("/v1/nodes?provision_state=manageable").await),
        ["n1"]
    );
    assert_eq!(
        names(&w.get("/v1/nodes?provision_state=enroll").await).len(),
        6
    );
    w.get("/v1/nodes?provision_state=sideways")
        .await
        .expect_error(400, "Provision state \"sideways\" is not valid");
    assert_eq!(
        names(&w.get("/v1/nodes?resource_class=even").await),
        ["n0", "n2", "n4", "n6"]
    );
    assert_eq!(names(&w.get("/v1/nodes?associated=true").await), ["n3"]);
    assert_eq!(
        names(
            &w.get("/v1/nodes?instance_uuid=6d85703a-565d-469a-96ce-30b6de53079d")
                .await
        ),
        ["n3"]
    );
    assert_eq!(
        names(&w.get("/v1/nodes?fault=power%20failure").await),
        ["n1"]
    );
    w.get("/v1/nodes?fault=bad+luck")
        .await
        .expect_error(400, "Unrecognized fault");
    assert_eq!(
        names(&w.get("/v1/nodes?conductor_group=rack2").await),
        ["n6"]
    );
    assert_eq!(names(&w.get("/v1/nodes?conductor=c1").await), ["n1"]);
    assert_eq!(names(&w.get("/v1/nodes?driver=ipmi").await).len(), 0);
    assert_eq!(names(&w.get("/v1/nodes?owner=someone").await).len(), 0);
    w.get("/v1/nodes?maintenance=perhaps")
        .await
        .expect_error(400, "Invalid maintenance");
    w.get("/v1/nodes?associated=2").await.expect(400);

    // Pagination: creation order, `next` only on full pages, filters kept in `next`.
    let r = w.get("/v1/nodes?limit=3").await;
    assert_eq!(names(&r), ["n0", "n1", "n2"]);
    let next = r.json["next"].as_str().unwrap().to_string();
    assert!(
        next.starts_with("http://ferric.test:6385/v1/nodes?"),
        "{next}"
    );
    assert!(
        next.contains(&format!("limit=3&marker={}", ids[2])),
        "{next}"
    );
    let path = next.trim_start_matches("http://ferric.test:6385");
    let r = w.get(path).await;
    assert_eq!(names(&r), ["n3", "n4", "n5"]);
    let r = w
        .get(
            r.json["next"]
                .as_str()
                .unwrap()
                .trim_start_matches("http://ferric.test:6385"),
        )
        .await;
    assert_eq!(names(&r), ["n6"]);
    assert!(r.json.get("next").is_none());
    let r = w.get("/v1/nodes?resource_class=even&limit=2").await;
    let next = r.json["next"].as_str().unwrap();
    assert!(next.contains("resource_class=even"), "{next}");
    let r = w
        .get(next.trim_start_matches("http://ferric.test:6385"))
        .await;
    assert_eq!(names(&r), ["n4", "n6"]);
    // Sorting by other keys, both directions, with markers.
    let r = w.get("/v1/nodes?sort_key=name&sort_dir=desc&limit=2").await;
    assert_eq!(names(&r), ["n6", "n5"]);
    let r = w
        .get(&format!(
            "/v1/nodes?sort_key=name&sort_dir=desc&limit=2&marker={}",
            ids[5]
        ))
        .await;
    assert_eq!(names(&r), ["n4", "n3"]);
    let r = w.get("/v1/nodes?sort_key=id&sort_dir=desc&limit=1").await;
    assert_eq!(names(&r), ["n6"]);
    w.get("/v1/nodes?sort_key=properties")
        .await
        .expect_error(400, "invalid field for sorting");
    w.get("/v1/nodes?sort_key=colour")
        .await
        .expect_error(400, "invalid field for sorting");
    w.get("/v1/nodes?sort_dir=up")
        .await
        .expect_error(400, "Invalid sort direction: up");
    w.get("/v1/nodes?limit=0")
        .await
        .expect_error(400, "Limit must be positive");
    w.get("/v1/nodes?limit=ten")
        .await
        .expect_error(400, "Expected an integer for limit");
    w.get("/v1/nodes?marker=nope")
        .await
        .expect_error(400, "Expected UUID for marker");
    w.get("/v1/nodes?marker=6d85703a-565d-469a-96ce-30b6de53079d")
        .await
        .expect_error(404, "could not be found");
    // limit is capped at 1000.
    let r = w.get("/v1/nodes?limit=5000").await;
    assert_eq!(names(&r).len(), 7);
}

#[tokio::test]
async fn patch_set_unset_and_refusals() {
    let mut w = World::new().await;
    w.start_conductor("c1").await;
    let id = w
        .enroll(
            json!({"driver": "fake-hardware", "name": "p1", "properties": {"cpus": 4, "a/b": 1},
                       "driver_info": {"ipmi_password": "pw"}}),
        )
        .await;
    let patch = |ops: Value| {
        let w = &w;
        let id = id.clone();
        async move { w.call("PATCH", &format!("/v1/nodes/{id}"), Some(ops)).await }
    };
    let r = patch(json!([
        {"op": "add", "path": "/properties/memory_mb", "value": 1024},
        {"op": "remove", "path": "/properties/cpus"},
        {"op": "replace", "path": "/name", "value": "p1-renamed"},
        {"op": "add", "path": "/extra/rack", "value": "r7"},
        {"op": "add", "path": "/deploy_interface", "value": "direct"},
        {"op": "remove", "path": "/properties/a~1b"},
    ]))
    .await;
    r.expect(200);
    assert_eq!(r.json["properties"], json!({"memory_mb": 1024}));
    assert_eq!(r.json["name"], "p1-renamed");
    assert_eq!(r.json["extra"]["rack"], "r7");
    assert_eq!(r.json["deploy_interface"], "direct");
    assert_eq!(r.json["driver_info"]["ipmi_password"], "******");
    // The rename moved the name index: new name resolves, old one is free.
    w.get("/v1/nodes/p1-renamed").await.expect(200);
    w.get("/v1/nodes/p1").await.expect(404);
    assert!(w.cluster.resolve("p1-renamed").await.is_ok());
    assert!(w.cluster.resolve("p1").await.is_err());
    w.enroll(json!({"driver": "fake-hardware", "name": "p1"}))
        .await;
    // The masked secret was not overwritten by the mask.
    assert!(w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .driver_info
        .contains("\"pw\""));
    // Maintenance through PATCH; leaving it clears the reason.
    patch(json!([{"op": "replace", "path": "/maintenance", "value": "true"}]))
        .await
        .expect(200);
    let r = patch(json!([{"op": "replace", "path": "/maintenance", "value": false}])).await;
    assert_eq!(r.json["maintenance"], false);

    // Refusals, each naming the problem; nothing changes.
    let before = w.cluster.get_node(&id).await.unwrap().spec;
    patch(json!([{"op": "replace", "path": "/power_state", "value": "power on"}]))
        .await
        .expect_error(400, "Cannot patch /power_state");
    patch(json!([{"op": "replace", "path": "/maintenance", "value": 7}]))
        .await
        .expect_error(400, "'maintenance'");
    patch(json!([{"op": "remove", "path": "/extra/nope"}]))
        .await
        .expect_error(400, "Couldn't apply patch");
    patch(json!([{"op": "add", "path": "/extra/x", "value": 1, "colour": "red"}]))
        .await
        .expect_error(400, "'colour' was unexpected");
    patch(json!({"op": "add"}))
        .await
        .expect_error(400, "list of operations");
    patch(json!([{"op": "jump", "path": "/extra"}]))
        .await
        .expect_error(400, "jump");
    patch(json!([{"op": "replace", "path": "/driver", "value": "warp-drive"}]))
        .await
        .expect_error(400, "No valid host");
    patch(json!([{"op": "replace", "path": "/parent_node", "value": "p"}]))
        .await
        .expect_error(400, "\"parent_node\"");
    patch(json!([{"op": "replace", "path": "/protected", "value": true}]))
        .await
        .expect_error(
            409,
            "can only be made protected in provision states 'active' or 'rescue'",
        );
    patch(json!([{"op": "replace", "path": "/protected_reason", "value": "x"}]))
        .await
        .expect_error(400, "only be set when protected is True");
    patch(json!([{"op": "replace", "path": "/name", "value": "p1"}]))
        .await
        .expect_error(409, "A node with name p1 already exists");
    patch(json!([{"op": "test", "path": "/extra/rack", "value": "r8"}]))
        .await
        .expect_error(400, "test failed");
    patch(json!([{"op": "replace", "path": "/instance_uuid", "value": "not-a-uuid"}]))
        .await
        .expect_error(400, "Expected UUID for instance_uuid");
    let r = w
        .call_with(
            "PATCH",
            &format!("/v1/nodes/{id}"),
            Some(r#"[{"op": "replace", "path": "/disable_power_off", "value": true}]"#),
            &[("X-OpenStack-Ironic-API-Version", "1.94")],
        )
        .await;
    r.expect(406);
    let after = w.cluster.get_node(&id).await.unwrap().spec;
    assert_eq!(before, after, "refused patches changed nothing");

    // An instance uuid cannot be replaced by another one.
    patch(json!([{"op": "add", "path": "/instance_uuid", "value": "6d85703a-565d-469a-96ce-30b6de53079d"}]))
        .await
        .expect(200);
    patch(json!([{"op": "replace", "path": "/instance_uuid", "value": "7d85703a-565d-469a-96ce-30b6de53079d"}]))
        .await
        .expect_error(409, "is associated with instance");
    // While a transition is under way: 409.
    let tok = w.own("c1", &id).await;
    w.set_status(&id, tok, |s| {
        s.provision_state = ProvisionState::Deploying;
        s.target_provision_state = Some(ProvisionState::Active);
    })
    .await;
    patch(json!([{"op": "add", "path": "/extra/y", "value": 1}]))
        .await
        .expect_error(
            409,
            "can not be updated while a state transition is in progress",
        );
}

#[tokio::test]
async fn concurrent_patches_lose_nothing() {
    let w = World::new().await;
    let id = w.enroll(fake()).await;
    // 24 clients each add their own key at once: every compare-and-swap conflict is retried,
    // so all 24 keys end up in etcd.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let router = w.router.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let body = json!([{"op": "add", "path": format!("/extra/k{i}"), "value": i}]);
            let req = axum::http::Request::builder()
                .method("PATCH")
                .uri(format!("/v1/nodes/{id}"))
                .header("X-OpenStack-Ironic-API-Version", "1.95")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            router.oneshot(req).await.unwrap().status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    let conflict = codes.iter().filter(|c| **c == 409).count();
    assert_eq!(ok + conflict, 24, "only 200 or 409: {codes:?}");
    let extra: Value =
        serde_json::from_str(&w.cluster.get_node(&id).await.unwrap().spec.extra).unwrap();
    assert_eq!(
        extra.as_object().unwrap().len(),
        ok,
        "every accepted patch is in etcd: {extra}"
    );
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    assert_eq!(r.json["extra"], extra, "the gateway shows what etcd holds");
}

/// A node no live conductor serves (issue 11): requests are accepted as intent while any
/// conductor lives, and the body and `validate` say why nothing happens; the caretaker is named
/// in `conductor` and flagged.
#[tokio::test]
async fn a_node_no_live_conductor_serves_takes_intent_and_says_why() {
    let mut w = World::new().await;
    let id = w
        .enroll(json!({"driver": "redfish", "driver_info": {
            "redfish_address": "http://127.0.0.1:9", "redfish_system_id": "/redfish/v1/Systems/x"}}))
        .await;
    w.start_conductor("c1").await;
    let power = format!("/v1/nodes/{id}/states/power");
    w.call("PUT", &power, Some(json!({"target": "power on"})))
        .await
        .expect(202);
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/states/console"),
        Some(json!({"enabled": true})),
    )
    .await
    .expect(202);
    let spec = w.cluster.get_node(&id).await.unwrap().spec;
    assert_eq!(spec.power_request.unwrap().target, PowerTarget::On);
    assert!(spec.console_enabled);
    let r = w.get(&format!("/v1/nodes/{id}/validate")).await;
    assert_eq!(r.json["power"]["result"], false);
    let reason = r.json["power"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains(r#"No live conductor serves driver "redfish" in conductor group """#),
        "{reason}"
    );
    // c1 holds it as caretaker and says so in the status.
    let tok = w.own("c1", &id).await;
    w.set_status(&id, tok, |s| {
        s.unserved = Some(
            "no live conductor serves driver \"redfish\"; c1 holds the node as caretaker".into(),
        )
    })
    .await;
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    assert_eq!(r.json["conductor"], "c1");
    assert_eq!(r.json["ferric_caretaker"], true);
    assert!(r.json["ferric_unserved"]
        .as_str()
        .unwrap()
        .contains("c1 holds the node as caretaker"));
    let r = w.get(&format!("/v1/nodes/{id}/validate")).await;
    let reason = r.json["power"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("conductor c1 holds the node as caretaker"),
        "{reason}"
    );
    // A node its holder serves is not flagged.
    let other = w.enroll(fake()).await;
    w.own("c1", &other).await;
    let r = w.get(&format!("/v1/nodes/{other}")).await;
    assert_eq!(r.json["ferric_caretaker"], false);
    assert_eq!(r.json["ferric_unserved"], Value::Null);
}

#[tokio::test]
async fn power_provision_and_reservation_semantics() {
    let mut w = World::new().await;
    let id = w.enroll(fake()).await;
    // No conductor serves the node yet: 503, nothing recorded.
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/states/power"),
        Some(json!({"target": "power on"})),
    )
    .await
    .expect_error(503, "No conductor is alive");
    assert!(w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .power_request
        .is_none());
    w.start_conductor("c1").await;
    let power = |target: Value| {
        let w = &w;
        let id = id.clone();
        async move {
            w.call("PUT", &format!("/v1/nodes/{id}/states/power"), Some(target))
                .await
        }
    };
    let tok = w.own("c1", &id).await;
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    assert_eq!(r.json["conductor"], "c1");
    assert_eq!(r.json["reservation"], Value::Null, "idle: no reservation");

    let r = power(json!({"target": "power on", "timeout": 30})).await;
    r.expect(202);
    assert_eq!(
        r.header("location"),
        Some(format!("http://ferric.test:6385/v1/nodes/{id}/states").as_str())
    );
    let req = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .power_request
        .unwrap();
    assert_eq!((req.target, req.timeout_s), (PowerTarget::On, Some(30)));
    assert_eq!(req.requested_by, "api:noauth");
    // While pending: reservation is the owner, target is shown; a second action is 409.
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    assert_eq!(r.json["reservation"], "c1");
    assert_eq!(r.json["target_power_state"], "power on");
    power(json!({"target": "power off"}))
        .await
        .expect_error(409, "locked by host c1");
    // The owner finishes: reservation is null again.
    w.set_status(&id, tok, |s| {
        s.power_seq_done = req.seq;
        s.power_state = Some(PowerState::On);
    })
    .await;
    let r = w.get(&format!("/v1/nodes/{id}/states")).await;
    r.expect(200);
    assert_eq!(r.json["power_state"], "power on");
    assert_eq!(r.json["target_power_state"], Value::Null);
    assert_eq!(
        w.get(&format!("/v1/nodes/{id}")).await.json["reservation"],
        Value::Null
    );

    // Soft power off reports "power off" as the target, as Ironic does.
    power(json!({"target": "soft power off"})).await.expect(202);
    assert_eq!(
        w.get(&format!("/v1/nodes/{id}")).await.json["target_power_state"],
        "power off"
    );
    let seq = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .power_request
        .unwrap()
        .seq;
    w.set_status(&id, tok, |s| s.power_seq_done = seq).await;

    // Validation.
    power(json!({"target": "sideways"}))
        .await
        .expect_error(400, "\"sideways\" can not be performed");
    power(json!({"target": "on"}))
        .await
        .expect_error(400, "can not be performed");
    power(json!({"target": "power on", "timeout": 0}))
        .await
        .expect_error(400, "timeout has to be positive");
    power(json!({"target": "power on", "timeout": "soon"}))
        .await
        .expect_error(400, "Expected an integer for timeout");
    power(json!({"target": 1}))
        .await
        .expect_error(400, "Expected string for target");
    power(json!({}))
        .await
        .expect_error(400, "Missing mandatory parameter: target");
    power(json!({"target": "power on", "force": true}))
        .await
        .expect_error(400, "Unexpected arguments: force");
    let r = w
        .call_with(
            "PUT",
            &format!("/v1/nodes/{id}/states/power"),
            Some(r#"{"target": "soft power off"}"#),
            &[("X-OpenStack-Ironic-API-Version", "1.26")],
        )
        .await;
    r.expect(406);
    // disable_power_off refuses power off (409), as Ironic.
    w.call(
        "PATCH",
        &format!("/v1/nodes/{id}"),
        Some(json!([{"op": "replace", "path": "/disable_power_off", "value": true}])),
    )
    .await
    .expect(200);
    power(json!({"target": "power off"}))
        .await
        .expect_error(409, "Failed to set node power state to power off.");
    power(json!({"target": "rebooting"})).await.expect(202);

    // Provision verbs.
    let prov = |body: Value| {
        let w = &w;
        let id = id.clone();
        async move {
            w.call(
                "PUT",
                &format!("/v1/nodes/{id}/states/provision"),
                Some(body),
            )
            .await
        }
    };
    let seq = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .power_request
        .unwrap()
        .seq;
    w.set_status(&id, tok, |s| s.power_seq_done = seq).await;
    prov(json!({"target": "provide"}))
        .await
        .expect_error(400, "\"provide\" can not be performed on node");
    prov(json!({"target": "warp"}))
        .await
        .expect_error(400, "\"warp\" can not be performed");
    prov(json!({"target": "manage", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}))
        .await
        .expect_error(400, "\"clean_steps\" is only valid");
    prov(json!({"target": "manage", "bogus": 1}))
        .await
        .expect_error(400, "Unexpected arguments: bogus");
    let r = prov(json!({"target": "manage"})).await;
    r.expect(202);
    assert!(r.header("location").unwrap().ends_with("/states"));
    let req = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .provision_request
        .unwrap();
    assert_eq!(req.verb, Verb::Manage);
    let r = w.get(&format!("/v1/nodes/{id}")).await;
    assert_eq!(r.json["target_provision_state"], "manageable");
    assert_eq!(r.json["reservation"], "c1");
    prov(json!({"target": "manage"}))
        .await
        .expect_error(409, "locked by host c1");
    // Deletion is refused while the conductor works on the node.
    w.call("DELETE", &format!("/v1/nodes/{id}"), None)
        .await
        .expect(409);
    w.set_status(&id, tok, |s| {
        s.provision_seq_done = req.seq;
        s.provision_state = ProvisionState::Manageable;
    })
    .await;
    // Verbs of newer microversions and maintenance refusals.
    let r = w
        .call_with(
            "PUT",
            &format!("/v1/nodes/{id}/states/provision"),
            Some(r#"{"target": "provide"}"#),
            &[("X-OpenStack-Ironic-API-Version", "1.3")],
        )
        .await;
    r.expect(406);
    prov(json!({"target": "clean"}))
        .await
        .expect_error(400, "\"clean_steps\" is required");
    w.call(
        "PUT",
        &format!("/v1/nodes/{id}/maintenance"),
        Some(json!({"reason": "disk"})),
    )
    .await
    .expect(202);
    let steps = json!([{"interface": "deploy", "step": "erase_devices"}]);
    prov(json!({"target": "clean", "clean_steps": steps}))
        .await
        .expect_error(400, "because it's in maintenance mode");
    // Ferric's extension: manual cleaning in maintenance when asked explicitly.
    prov(json!({"target": "clean", "clean_steps": steps, "maintenance_ok": true}))
        .await
        .expect(202);
    let req = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .provision_request
        .unwrap();
    assert!(req.maintenance_ok);
    assert!(req.args.contains("erase_devices"));
    prov(json!({"target": "provide", "maintenance_ok": true}))
        .await
        .expect_error(409, "locked");
}

#[tokio::test]
async fn maintenance_boot_device_validate_states_and_delete() {
    let mut w = World::new().await;
    w.start_conductor("c1").await;
    let id = w
        .enroll(json!({"driver": "fake-hardware", "name": "m1"}))
        .await;
    let tok = w.own("c1", &id).await;
    let r = w
        .call(
            "PUT",
            "/v1/nodes/m1/maintenance",
            Some(json!({"reason": "fan"})),
        )
        .await;
    r.expect(202);
    let r = w.get("/v1/nodes/m1").await;
    assert_eq!(
        (
            r.json["maintenance"].clone(),
            r.json["maintenance_reason"].clone()
        ),
        (json!(true), json!("fan"))
    );
    // ironicclient sends {"reason": null} without a reason.
    w.call(
        "PUT",
        "/v1/nodes/m1/maintenance",
        Some(json!({"reason": null})),
    )
    .await
    .expect(202);
    w.call("PUT", "/v1/nodes/m1/maintenance", Some(json!({"why": 1})))
        .await
        .expect_error(400, "Unexpected arguments: why");
    w.call("DELETE", "/v1/nodes/m1/maintenance", None)
        .await
        .expect(202);
    let r = w.get("/v1/nodes/m1").await;
    assert_eq!(
        (
            r.json["maintenance"].clone(),
            r.json["maintenance_reason"].clone()
        ),
        (json!(false), Value::Null)
    );

    // Boot device: 204 like Ironic, read back once the owner applied it.
    let r = w.get("/v1/nodes/m1/management/boot_device").await;
    assert_eq!(r.json, json!({"boot_device": null, "persistent": null}));
    w.call(
        "PUT",
        "/v1/nodes/m1/management/boot_device",
        Some(json!({"boot_device": "pxe", "persistent": true})),
    )
    .await
    .expect(204);
    let req = w
        .cluster
        .get_node(&id)
        .await
        .unwrap()
        .spec
        .boot_device_request
        .unwrap();
    assert_eq!((req.device, req.persistent), (BootDevice::Pxe, true));
    w.call(
        "PUT",
        "/v1/nodes/m1/management/boot_device",
        Some(json!({"boot_device": "disk"})),
    )
    .await
    .expect(409);
    w.set_status(&id, tok, |s| {
        s.boot_seq_done = req.seq;
        s.boot_device = Some(BootDevice::Pxe);
        s.boot_persistent = true;
    })
    .await;
    let r = w.get("/v1/nodes/m1/management/boot_device").await;
    assert_eq!(r.json, json!({"boot_device": "pxe", "persistent": true}));
    w.call(
        "PUT",
        "/v1/nodes/m1/management/boot_device",
        Some(json!({"boot_device": "floppy"})),
    )
    .await
    .expect_error(400, "Invalid boot device floppy");
    let r = w.get("/v1/nodes/m1/management/boot_device/supported").await;
    assert!(r.json["supported_boot_devices"]
        .as_array()
        .unwrap()
        .contains(&json!("pxe")));

    // Validate: power and management follow the live conductors.
    let r = w.get("/v1/nodes/m1/validate").await;
    assert_eq!(r.json["power"]["result"], true);
    // The fake deploy interface needs nothing; no interface answers null.
    assert_eq!(r.json["deploy"]["result"], true);
    assert_eq!(r.json["storage"]["result"], true);
    w.get("/v1/nodes/validate?node=m1").await.expect(200);

    // States.
    let r = w.get("/v1/nodes/m1/states").await;
    for k in [
        "power_state",
        "provision_state",
        "target_power_state",
        "target_provision_state",
        "last_error",
        "console_enabled",
        "provision_updated_at",
    ] {
        assert!(r.json.get(k).is_some(), "{k} in {}", r.text);
    }

    // Delete: refused with an instance, refused in active (outside maintenance), allowed in
    // enroll; the name is free afterwards and the node is gone from etcd.
    w.call("PATCH", "/v1/nodes/m1", Some(json!([{"op": "add", "path": "/instance_uuid", "value": "6d85703a-565d-469a-96ce-30b6de53079d"}])))
        .await
        .expect(200);
    w.call("DELETE", "/v1/nodes/m1", None)
        .await
        .expect_error(409, "is associated with instance");
    w.call(
        "PATCH",
        "/v1/nodes/m1",
        Some(json!([{"op": "remove", "path": "/instance_uuid"}])),
    )
    .await
    .expect(200);
    w.set_status(&id, tok, |s| s.provision_state = ProvisionState::Active)
        .await;
    w.call("DELETE", "/v1/nodes/m1", None)
        .await
        .expect_error(409, "Can not delete node");
    w.set_status(&id, tok, |s| s.provision_state = ProvisionState::Enroll)
        .await;
    w.call("DELETE", "/v1/nodes/m1", None).await.expect(204);
    w.get("/v1/nodes/m1").await.expect(404);
    assert!(w.cluster.get_node(&id).await.is_err());
    w.call("DELETE", "/v1/nodes/m1", None).await.expect(404);
    w.enroll(json!({"driver": "fake-hardware", "name": "m1"}))
        .await;
    // In maintenance, a node with an instance may be deleted, as Ironic's `destroy_node`
    // allows (its way out for a broken node).
    w.call("PATCH", "/v1/nodes/m1", Some(json!([{"op": "add", "path": "/instance_uuid", "value": "6d85703a-565d-469a-96ce-30b6de53079d"}])))
        .await
        .expect(200);
    w.call(
        "PUT",
        "/v1/nodes/m1/maintenance",
        Some(json!({"reason": "BMC gone"})),
    )
    .await
    .expect(202);
    w.call("DELETE", "/v1/nodes/m1", None).await.expect(204);
    w.get("/v1/nodes/m1").await.expect(404);
}

#[tokio::test]
async fn conductors_history_and_heartbeat() {
    let mut w = World::new().await;
    w.start_conductor("c1").await;
    w.start_conductor("c2").await;
    let id = w.enroll(fake()).await;
    let tok = w.own("c2", &id).await;
    // The owner records what it did in the node's history (fenced, with its status).
    let writer = ferric_cluster::StatusWriter::spawn(w.cluster.clone(), 1);
    let view = w.cluster.get_node(&id).await.unwrap();
    let mut st = view.status.clone();
    st.owner = Some("c2".into());
    st.fence = tok.0;
    for (i, action) in ["power on", "power off"].iter().enumerate() {
        let entry = ferric_model::HistoryEntry {
            at_ms: 1_700_000_000_000 + i as u64,
            kind: "power".into(),
            action: action.to_string(),
            requested_by: "api:noauth".into(),
            conductor: "c2".into(),
            result: "ok".into(),
            severity: "INFO".into(),
        };
        st.history_seq = i as u64 + 1;
        writer
            .write_with(id.parse().unwrap(), tok, &st, Some(&entry), None)
            .await
            .unwrap();
    }
    w.wait_for_copy().await;
    let r = w.get(&format!("/v1/nodes/{id}/history")).await;
    r.expect(200);
    let events = r.json["history"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{}", r.text);
    assert_eq!(events[0]["event"], "power on");
    assert!(
        events[0].get("conductor").is_none(),
        "detail fields only with detail=true"
    );
    let r = w
        .get(&format!("/v1/nodes/{id}/history?detail=true&limit=1"))
        .await;
    assert_eq!(r.json["history"][0]["conductor"], "c2");
    assert_eq!(r.json["history"][0]["user"], "api:noauth");
    let next = r.json["next"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://ferric.test:6385")
        .to_string();
    let r = w.get(&next).await;
    assert_eq!(r.json["history"][0]["event"], "power off");
    let uuid = events[1]["uuid"].as_str().unwrap();
    let r = w.get(&format!("/v1/nodes/{id}/history/{uuid}")).await;
    r.expect(200);
    assert_eq!(r.json["event"], "power off");
    assert_eq!(r.json["event_type"], "power");
    w.get(&format!(
        "/v1/nodes/{id}/history/6d85703a-565d-469a-96ce-30b6de53079d"
    ))
    .await
    .expect_error(404, "could not be found");
    let r = w.get("/v1/ferric/conductors/c2").await;
    assert_eq!(r.json["nodes"], 1, "{}", r.text);
    w.get("/v1/ferric/conductors/c7").await.expect(404);
    let r = w.get("/v1/conductors").await;
    r.expect(200);
    let hosts: Vec<&str> = r.json["conductors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["c1", "c2"]);
    assert_eq!(r.json["conductors"][0]["alive"], true);
    assert!(r.json["conductors"][0].get("drivers").is_none());
    let r = w.get("/v1/conductors?detail=true").await;
    assert_eq!(
        r.json["conductors"][0]["drivers"],
        json!(["fake-hardware", "ipmi"])
    );
    let r = w.get("/v1/conductors/c2").await;
    r.expect(200);
    assert_eq!(r.header("x-ferric-node-count"), Some("1"));
    w.get("/v1/conductors/c9")
        .await
        .expect_error(404, "Conductor c9 could not be found.");
    let r = w.get("/v1/conductors?limit=1").await;
    assert!(r.json["next"].as_str().unwrap().contains("marker=c1"));
    let r = w
        .call_with(
            "GET",
            "/v1/conductors",
            None,
            &[("X-OpenStack-Ironic-API-Version", "1.48")],
        )
        .await;
    r.expect(404);
    let r = w.get("/v1/ferric/conductors").await;
    let c2 = r.json["conductors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c2")
        .unwrap()
        .clone();
    assert_eq!(c2["nodes"], 1);
    w.stop_conductor("c2").await;
    let r = w.get("/v1/conductors").await;
    assert_eq!(r.json["conductors"].as_array().unwrap().len(), 1);
    assert_eq!(
        w.get(&format!("/v1/nodes/{id}")).await.json["conductor"],
        Value::Null
    );

    let other = w.enroll(fake()).await;
    let r = w.get(&format!("/v1/nodes/{other}/history")).await;
    r.expect(200);
    assert_eq!(r.json["history"], json!([]), "no history yet");
    let r = w
        .call_with(
            "GET",
            &format!("/v1/nodes/{id}/history"),
            None,
            &[("X-OpenStack-Ironic-API-Version", "1.77")],
        )
        .await;
    r.expect(404);

    // Heartbeats are recorded in heartbeats/<uuid>.
    let hb = |body: Value| {
        let w = &w;
        let id = id.clone();
        async move {
            w.call("POST", &format!("/v1/heartbeat/{id}"), Some(body))
                .await
        }
    };
    // No token issued (no lookup): refused, as Ironic's conductor refuses it.
    let body = json!({"callback_url": "http://10.0.0.9:9999", "agent_token": "t0k", "agent_version": "9.0"});
    hb(body.clone())
        .await
        .expect_error(400, "Invalid or missing agent token received.");
    issue_token(&w, &id, "t0k").await;
    hb(body).await.expect(202);
    hb(json!({"callback_url": "http://10.0.0.9:9999", "agent_token": "t1k"}))
        .await
        .expect_error(400, "Invalid or missing agent token received.");
    let rec = w
        .cluster
        .last_heartbeat(&id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.callback_url, "http://10.0.0.9:9999");
    assert_eq!(rec.agent_version.as_deref(), Some("9.0"));
    hb(json!({"agent_token": "t"}))
        .await
        .expect_error(400, "Missing mandatory parameter: callback_url");
    hb(json!({"callback_url": "http://x:1"}))
        .await
        .expect_error(400, "Agent token is required");
    hb(json!({"callback_url": "ftp://x", "agent_token": "t"}))
        .await
        .expect_error(400, "callback_url");
    hb(json!({"callback_url": "http://x:1", "agent_token": "t", "agent_status": "dancing"}))
        .await
        .expect_error(400, "Agent status is invalid");
    hb(json!({"callback_url": "http://x:1", "agent_token": "t", "cpu": 1}))
        .await
        .expect_error(400, "Unexpected arguments: cpu");
    w.call(
        "POST",
        "/v1/heartbeat/6d85703a-565d-469a-96ce-30b6de53079d",
        Some(json!({"callback_url": "http://x:1", "agent_token": "t"})),
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn auth_basic_and_tokens() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let w =
        World::with_auth(ferric_gateway::Auth::htpasswd(&format!("ops:{hash}\n"), "t").unwrap())
            .await;
    // Version discovery stays public, like Ironic's root.
    w.call_with("GET", "/", None, &[]).await.expect(200);
    w.call_with("GET", "/healthz", None, &[]).await.expect(200);
    let r = w.get("/v1/nodes").await;
    r.expect_error(401, "Authentication required");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.95")
    );
    let bad = w
        .call_with(
            "GET",
            "/v1/nodes",
            None,
            &[("Authorization", "Basic b3BzOm5vcGU=")],
        )
        .await;
    bad.expect_error(401, "Invalid user or password");
    // ops:pw
    let ok = w
        .call_with(
            "GET",
            "/v1/nodes",
            None,
            &[
                ("Authorization", "Basic b3BzOnB3"),
                ("X-OpenStack-Ironic-API-Version", "1.95"),
            ],
        )
        .await;
    ok.expect(200);
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware"}"#),
            &[
                ("Authorization", "Basic b3BzOnB3"),
                ("X-OpenStack-Ironic-API-Version", "1.95"),
            ],
        )
        .await;
    r.expect(201);
    w.call_with("GET", "/metrics", None, &[]).await.expect(401);

    let w = World::with_auth(
        ferric_gateway::Auth::token_file(
            "admin-token-0123456789 admin\nreader-token-0123456789 reader\n",
            "t",
        )
        .unwrap(),
    )
    .await;
    let admin = [
        ("Authorization", "Bearer admin-token-0123456789"),
        ("X-OpenStack-Ironic-API-Version", "1.95"),
    ];
    let reader = [
        ("X-Auth-Token", "reader-token-0123456789"),
        ("X-OpenStack-Ironic-API-Version", "1.95"),
    ];
    let r = w
        .call_with(
            "POST",
            "/v1/nodes",
            Some(r#"{"driver": "fake-hardware", "driver_info": {"ipmi_password": "x"}}"#),
            &admin,
        )
        .await;
    r.expect(201);
    let id = r.json["uuid"].as_str().unwrap().to_string();
    let r = w
        .call_with("GET", &format!("/v1/nodes/{id}"), None, &reader)
        .await;
    r.expect(200);
    assert_eq!(
        r.json["driver_info"]["ipmi_password"], "******",
        "masked for readers"
    );
    let r = w
        .call_with("GET", &format!("/v1/nodes/{id}"), None, &admin)
        .await;
    assert_eq!(
        r.json["driver_info"]["ipmi_password"], "******",
        "masked for admins too"
    );
    w.call_with(
        "PATCH",
        &format!("/v1/nodes/{id}"),
        Some(r#"[{"op":"add","path":"/extra/a","value":1}]"#),
        &reader,
    )
    .await
    .expect_error(403, "may only read");
    w.call_with("DELETE", &format!("/v1/nodes/{id}"), None, &reader)
        .await
        .expect(403);
    w.call_with(
        "GET",
        "/v1/nodes",
        None,
        &[("Authorization", "Bearer wrong-token-000000000")],
    )
    .await
    .expect_error(401, "Invalid token");
    w.call_with("GET", "/metrics", None, &reader)
        .await
        .expect(200);
}

#[tokio::test]
async fn extensions_healthz_metrics_openapi_and_events() {
    let w = World::new().await;
    let r = w.call_with("GET", "/healthz", None, &[]).await;
    r.expect(200);
    assert_eq!(r.json["status"], "ok");
    let from = w.cluster.revision().await.unwrap();
    let id = w
        .enroll(json!({"driver": "fake-hardware", "name": "ev1"}))
        .await;
    w.get("/v1/nodes").await;
    let r = w.call_with("GET", "/metrics", None, &[]).await;
    r.expect(200);
    assert!(
        r.text.contains(
            "ferric_gateway_requests_total{route=\"/v1/nodes\",method=\"GET\",status=\"200\"}"
        ),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("ferric_nodes{provision_state=\"enroll\"} 1"),
        "{}",
        r.text
    );
    assert!(r.text.contains("ferric_conductors_alive 0"));
    assert!(r
        .text
        .contains("ferric_gateway_request_duration_seconds_bucket"));
    let r = w.get("/v1/ferric/openapi.json").await;
    r.expect(200);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3."));

    // The event stream resumes after Last-Event-ID: the enrollment above is replayed.
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri("/v1/ferric/events")
        .header("Last-Event-ID", from.to_string())
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = w.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.into_body().into_data_stream();
    use futures::StreamExt;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains(&id) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("event within 10 s")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: node"), "{text}");
    assert!(text.contains("\"record\":\"spec\""), "{text}");
    assert!(text.contains("id: "), "{text}");
    let r = w
        .call_with(
            "GET",
            "/v1/ferric/events",
            None,
            &[("Last-Event-ID", "yesterday")],
        )
        .await;
    r.expect_error(400, "Last-Event-ID");
}

/// Cluster-wide caps on concurrent deploys and cleans: 503 in Ironic's format once reached,
/// accepted again when a slot frees up, and nothing recorded for the refused request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploy_and_clean_caps() {
    let mut w = World::with_config(ferric_gateway::Auth::NoAuth, |c| {
        c.max_concurrent_deploys = 1;
        c.max_concurrent_cleans = 1;
    })
    .await;
    w.start_conductor("c1").await;
    let busy = w.enroll(fake()).await;
    let next = w.enroll(fake()).await;
    let tb = w.own("c1", &busy).await;
    let tn = w.own("c1", &next).await;
    w.set_status(&busy, tb, |s| s.provision_state = ProvisionState::Deploying)
        .await;
    w.set_status(&next, tn, |s| s.provision_state = ProvisionState::Available)
        .await;
    let deploy = |id: String| {
        let w = &w;
        async move {
            w.call(
                "PUT",
                &format!("/v1/nodes/{id}/states/provision"),
                Some(json!({"target": "active"})),
            )
            .await
        }
    };
    deploy(next.clone())
        .await
        .expect_error(503, "maximum number of concurrent deploys (1)");
    assert!(w
        .cluster
        .get_node(&next)
        .await
        .unwrap()
        .spec
        .provision_request
        .is_none());
    w.set_status(&busy, tb, |s| s.provision_state = ProvisionState::Active)
        .await;
    deploy(next.clone()).await.expect(202);

    // Cleaning: one node cleaning blocks a provide elsewhere.
    w.set_status(&busy, tb, |s| s.provision_state = ProvisionState::Cleaning)
        .await;
    let other = w.enroll(fake()).await;
    let to = w.own("c1", &other).await;
    w.set_status(&other, to, |s| {
        s.provision_state = ProvisionState::Manageable
    })
    .await;
    w.call(
        "PUT",
        &format!("/v1/nodes/{other}/states/provision"),
        Some(json!({"target": "provide"})),
    )
    .await
    .expect_error(503, "concurrent cleans");
}

/// Stores the record a lookup would have stored for `token` (the gateway keeps its hash).
async fn issue_token(w: &World, id: &str, token: &str) {
    let rec = ferric_model::AgentTokenRecord {
        sha256: ferric_model::AgentTokenRecord::hash(token),
        issued_at_ms: 0,
        issued_by: "test".into(),
    };
    assert!(w
        .cluster
        .issue_agent_token(&id.parse().unwrap(), &rec)
        .await
        .unwrap());
}

/// The agent's heartbeat is public under auth, as Ironic's `public_api_routes`: a ramdisk has
/// no credentials; the agent token is what the heartbeat is checked by. Everything else on the
/// node still needs credentials.
#[tokio::test]
async fn heartbeats_need_no_credentials_under_auth() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let w =
        World::with_auth(ferric_gateway::Auth::htpasswd(&format!("ops:{hash}\n"), "t").unwrap())
            .await;
    let spec = ferric_model::NodeSpec::new(ferric_model::NodeId::new_random(), "fake-hardware", 0);
    let id = spec.id.to_string();
    w.cluster.create_nodes(vec![spec]).await.unwrap();
    issue_token(&w, &id, "t0k").await;
    let body = json!({"callback_url": "http://127.0.0.1:9999", "agent_token": "t0k"}).to_string();
    let r = w
        .call_with(
            "POST",
            &format!("/v1/heartbeat/{id}"),
            Some(&body),
            &[("X-OpenStack-Ironic-API-Version", "1.72")],
        )
        .await;
    r.expect(202);
    assert!(w
        .cluster
        .last_heartbeat(&id.parse().unwrap())
        .await
        .unwrap()
        .is_some());
    w.call_with("GET", &format!("/v1/nodes/{id}"), None, &[])
        .await
        .expect_error(401, "Authentication required");
}

/// Issue 11: a node whose spec, status or a history entry cannot be decoded stays listed and
/// shown with the error in `last_error`, hides nothing else, and can be repaired (PATCH with a
/// driver, PUT with a full body) or deleted (which frees its name) through the API. Checked
/// against etcd's keys.
#[tokio::test]
async fn unreadable_records_stay_visible_and_repairable() {
    let mut w = World::new().await;
    // A member serving fake-hardware, so that actions get as far as the record.
    w.start_conductor("c1").await;
    let mut ids = Vec::new();
    for name in ["node-a", "node-b", "node-c", "node-d"] {
        ids.push(
            w.enroll(json!({"driver": "fake-hardware", "name": name, "extra": {"n": name}}))
                .await,
        );
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let inspect = ferric_testkit::inspect::Inspect::connect(&w.etcd.url(), "/gw-test/")
        .await
        .unwrap();
    let mut kv = inspect.client().kv_client();
    let key = |rest: String| format!("/gw-test/{rest}");
    kv.put(key(format!("nodes/{a}")), "garbage", None)
        .await
        .unwrap();
    kv.put(key(format!("status/{b}")), "garbage", None)
        .await
        .unwrap();
    let entry = ferric_model::HistoryEntry {
        at_ms: 1_700_000_000_000,
        kind: "power".into(),
        action: "power on".into(),
        requested_by: "api:noauth".into(),
        conductor: "c1".into(),
        result: "ok".into(),
        severity: "INFO".into(),
    };
    kv.put(key(format!("history/{c}/{:020}", 1)), "garbage", None)
        .await
        .unwrap();
    kv.put(
        key(format!("history/{c}/{:020}", 2)),
        ferric_model::encode(&entry),
        None,
    )
    .await
    .unwrap();
    w.wait_for_copy().await;

    // Visible: every list shape and show, by uuid and by name, with the error.
    for path in ["/v1/nodes?fields=uuid,name,last_error", "/v1/nodes/detail"] {
        let r = w.get(path).await;
        r.expect(200);
        let nodes = r.json["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 4, "{}", r.text);
        let by_id = |id: &str| nodes.iter().find(|n| n["uuid"] == id).unwrap().clone();
        assert_eq!(
            by_id(a)["name"],
            "node-a",
            "name from the index: {}",
            r.text
        );
        let err = by_id(a)["last_error"].as_str().unwrap().to_string();
        assert!(
            err.contains("spec record") && err.contains("cannot be read"),
            "{err}"
        );
        let err = by_id(b)["last_error"].as_str().unwrap().to_string();
        assert!(err.contains("status record"), "{err}");
        assert_eq!(by_id(d)["last_error"], Value::Null);
    }
    let r = w.get("/v1/nodes?fields=last_error").await;
    assert_eq!(r.json["nodes"].as_array().unwrap().len(), 4);
    for ident in [a.as_str(), "node-a"] {
        let r = w.get(&format!("/v1/nodes/{ident}")).await;
        r.expect(200);
        assert_eq!(r.json["uuid"], a.as_str());
        assert_eq!(r.json["created_at"], Value::Null, "unknown, not 1970");
        assert!(r.json["last_error"]
            .as_str()
            .unwrap()
            .contains("ferric ctl node repair"));
    }
    let r = w.get(&format!("/v1/nodes/{b}/states")).await;
    assert!(r.json["last_error"]
        .as_str()
        .unwrap()
        .contains("status record"));
    // The name stays taken; an action on the unreadable spec says what to do (not 500).
    w.call(
        "POST",
        "/v1/nodes",
        Some(json!({"driver": "fake-hardware", "name": "node-a"})),
    )
    .await
    .expect_error(409, "already exists");
    w.call(
        "PUT",
        &format!("/v1/nodes/{a}/states/power"),
        Some(json!({"target": "power on"})),
    )
    .await
    .expect_error(409, "cannot be read");
    // History shows the unreadable entry in its place.
    let r = w.get(&format!("/v1/nodes/{c}/history")).await;
    r.expect(200);
    let events = r.json["history"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{}", r.text);
    assert_eq!(events[0]["severity"], "ERROR");
    assert!(events[0]["event"]
        .as_str()
        .unwrap()
        .contains("cannot be decoded"));
    assert_eq!(events[1]["event"], "power on");

    // Recoverable: a PATCH must give the stand-in a driver, and then writes a valid spec.
    w.call(
        "PATCH",
        &format!("/v1/nodes/{a}"),
        Some(json!([{"op": "add", "path": "/extra/x", "value": "y"}])),
    )
    .await
    .expect_error(400, "must set /driver");
    let r = w
        .call(
            "PATCH",
            "/v1/nodes/node-a",
            Some(json!([{"op": "replace", "path": "/driver", "value": "fake-hardware"}])),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["last_error"], Value::Null, "{}", r.text);
    let snap = inspect.snapshot().await.unwrap();
    let spec = snap.spec(a).unwrap().expect("a valid spec in etcd");
    assert_eq!(spec.driver, "fake-hardware");
    assert_eq!(spec.name.as_ref().map(|n| n.as_str()), Some("node-a"));
    // PUT replaces a spec wholesale; a new name moves the index.
    kv.put(key(format!("nodes/{a}")), "garbage", None)
        .await
        .unwrap();
    w.wait_for_copy().await;
    w.call(
        "PUT",
        &format!("/v1/nodes/{a}"),
        Some(json!({"driver": "fake-hardware", "uuid": d})),
    )
    .await
    .expect_error(400, "cannot change");
    let r = w
        .call(
            "PUT",
            &format!("/v1/nodes/{a}"),
            Some(json!({"driver": "fake-hardware", "name": "node-a2", "extra": {"put": true}})),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["extra"], json!({"put": true}));
    let names = |kvs: Vec<ferric_testkit::inspect::Kv>| -> Vec<String> {
        kvs.into_iter().map(|kv| kv.key).collect()
    };
    let (_, kvs) = inspect.get_prefix("/gw-test/names/").await.unwrap();
    let names_now = names(kvs);
    assert!(
        names_now.contains(&"/gw-test/names/node-a2".to_string()),
        "{names_now:?}"
    );
    assert!(
        !names_now.contains(&"/gw-test/names/node-a".to_string()),
        "{names_now:?}"
    );

    // Delete frees the name, whatever can be read.
    kv.put(key(format!("nodes/{a}")), "garbage", None)
        .await
        .unwrap();
    w.wait_for_copy().await;
    w.call("DELETE", "/v1/nodes/node-a2", None)
        .await
        .expect(204);
    w.call("DELETE", &format!("/v1/nodes/{b}"), None)
        .await
        .expect(204);
    let (_, kvs) = inspect.get_prefix("/gw-test/names/").await.unwrap();
    let names_now = names(kvs);
    assert_eq!(
        names_now,
        vec!["/gw-test/names/node-c", "/gw-test/names/node-d"],
        "the names of deleted nodes are free"
    );
    let snap = inspect.snapshot().await.unwrap();
    assert!(snap.spec(a).is_none() && snap.spec(b).is_none());
    assert!(
        snap.status(b).is_none(),
        "the unreadable status went with its node"
    );
    let new_a = w
        .enroll(json!({"driver": "fake-hardware", "name": "node-a2"}))
        .await;
    assert_ne!(&new_a, a);
    let r = w.get("/v1/nodes").await;
    assert_eq!(r.json["nodes"].as_array().unwrap().len(), 3, "{}", r.text);
}
