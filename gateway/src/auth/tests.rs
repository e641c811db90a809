//! Unit tests of authentication: every mode, header and subprotocol, on requests without a socket.

use super::*;

fn hdr(k: &'static str, v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(k, HeaderValue::from_str(v).unwrap());
    h
}

#[test]
fn base64_round_trips() {
    assert_eq!(base64_decode("YWRtaW46c2VjcmV0").unwrap(), b"admin:secret");
    assert_eq!(base64_decode("YQ==").unwrap(), b"a");
    assert!(base64_decode("a*b").is_none());
    // The two alphabets differ in digits 62 and 63 only.
    assert_eq!(base64_decode("+/8").unwrap(), [0xfb, 0xff]);
    assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
    assert!(base64url_decode("+/8").is_none());
    assert!(base64_decode("-_8").is_none());
}

/// A websocket upgrade's headers offering `protocols`, plus `extra`.
fn upgrade(protocols: &str, extra: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = hdr("sec-websocket-protocol", protocols);
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn denied_with(r: Result<Caller, ApiError>) -> String {
    match r {
        Err(ApiError::Unauthorized { msg, .. }) => msg,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_tokens_may_come_as_a_subprotocol() {
    let auth = Auth::token_file(
        "0123456789abcdef0123 admin\nreadonly-token-0000000 reader\n",
        "f",
    )
    .unwrap();
    // base64url of the admin token; the auth subprotocol is taken out of the request.
    let mut h = upgrade(
        "ferric.console, ferric.auth.MDEyMzQ1Njc4OWFiY2RlZjAxMjM",
        &[],
    );
    assert_eq!(
        auth.authenticate_websocket(&mut h).await.unwrap().role,
        Role::Admin
    );
    assert_eq!(h["sec-websocket-protocol"], "ferric.console");
    let mut h = upgrade(
        "ferric.auth.cmVhZG9ubHktdG9rZW4tMDAwMDAwMA,ferric.console",
        &[],
    );
    assert_eq!(
        auth.authenticate_websocket(&mut h).await.unwrap(),
        Caller::new("token:reader", Role::Reader)
    );
    // Alone, it leaves no subprotocol header behind.
    let mut h = upgrade("ferric.auth.MDEyMzQ1Njc4OWFiY2RlZjAxMjM", &[]);
    assert!(auth.authenticate_websocket(&mut h).await.is_ok());
    assert!(!h.contains_key("sec-websocket-protocol"));

    // The header's 401s: unknown, malformed, ambiguous, missing.
    for offered in [
        "ferric.console, ferric.auth.bm9wZS1ub3BlLW5vcGUtbm9wZQ",
        "ferric.console, ferric.auth.MDEy*zQ1",
        "ferric.console, ferric.auth.",
        "ferric.auth.MDEyMzQ1Njc4OWFiY2RlZjAxMjM, ferric.auth.bm9wZS1ub3BlLW5vcGUtbm9wZQ",
    ] {
        let mut h = upgrade(offered, &[]);
        let msg = denied_with(auth.authenticate_websocket(&mut h).await);
        assert_eq!(msg, "Invalid token.", "{offered}");
        assert!(!format!("{h:?}").contains("ferric.auth"), "{offered}");
    }
    let msg = denied_with(
        auth.authenticate_websocket(&mut upgrade("ferric.console", &[]))
            .await,
    );
    assert_eq!(msg, "Authentication required (bearer token).");

    // Header credentials decide alone, either way.
    let mut h = upgrade(
        "ferric.console, ferric.auth.MDEyMzQ1Njc4OWFiY2RlZjAxMjM",
        &[("authorization", "Bearer nope-nope-nope-nope")],
    );
    assert_eq!(
        denied_with(auth.authenticate_websocket(&mut h).await),
        "Invalid token."
    );
    let mut h = upgrade(
        "ferric.console, ferric.auth.bm9wZS1ub3BlLW5vcGUtbm9wZQ",
        &[("x-auth-token", "readonly-token-0000000")],
    );
    assert_eq!(
        auth.authenticate_websocket(&mut h).await.unwrap().role,
        Role::Reader
    );
    // Other requests never look at subprotocols.
    let h = upgrade("ferric.auth.MDEyMzQ1Njc4OWFiY2RlZjAxMjM", &[]);
    assert!(auth.authenticate(&h).await.is_err());
}

#[tokio::test]
async fn websocket_basic_credentials_may_come_as_a_subprotocol() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let auth = Auth::htpasswd(&format!("admin:{hash}\n"), "f").unwrap();
    // base64url of `admin:secret`, as `Authorization: Basic` carries it (base64).
    let mut h = upgrade("ferric.console, ferric.auth.YWRtaW46c2VjcmV0", &[]);
    assert_eq!(
        auth.authenticate_websocket(&mut h).await.unwrap(),
        Caller::new("admin", Role::Admin)
    );
    // admin:wrong; admin (no colon).
    let mut h = upgrade("ferric.console, ferric.auth.YWRtaW46d3Jvbmc", &[]);
    assert_eq!(
        denied_with(auth.authenticate_websocket(&mut h).await),
        "Invalid user or password."
    );
    let mut h = upgrade("ferric.console, ferric.auth.YWRtaW4", &[]);
    assert_eq!(
        denied_with(auth.authenticate_websocket(&mut h).await),
        "Malformed HTTP Basic credentials."
    );
    // Under noauth the offer is ignored (and still not passed on).
    let mut h = upgrade("ferric.console, ferric.auth.YWRtaW46d3Jvbmc", &[]);
    assert_eq!(
        Auth::NoAuth
            .authenticate_websocket(&mut h)
            .await
            .unwrap()
            .name,
        "noauth"
    );
    assert_eq!(h["sec-websocket-protocol"], "ferric.console");
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_and_caches() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let auth = Auth::htpasswd(&format!("# users\nadmin:{hash}\n"), "f").unwrap();
    let ok = hdr("authorization", "Basic YWRtaW46c2VjcmV0");
    assert_eq!(auth.authenticate(&ok).await.unwrap().name, "admin");
    assert_eq!(auth.authenticate(&ok).await.unwrap().role, Role::Admin);
    // admin:wrong
    let bad = hdr("authorization", "Basic YWRtaW46d3Jvbmc=");
    assert!(matches!(
        auth.authenticate(&bad).await,
        Err(ApiError::Unauthorized { .. })
    ));
    assert!(auth.authenticate(&HeaderMap::new()).await.is_err());
    assert!(Auth::htpasswd("admin:{SHA}abc", "f").is_err());
    assert!(Auth::htpasswd("", "f").is_err());
}

#[tokio::test]
async fn tokens_have_roles() {
    let auth = Auth::token_file(
        "0123456789abcdef0123 admin\nreadonly-token-0000000 reader\n",
        "f",
    )
    .unwrap();
    let admin = auth
        .authenticate(&hdr("authorization", "Bearer 0123456789abcdef0123"))
        .await
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    let reader = auth
        .authenticate(&hdr("x-auth-token", "readonly-token-0000000"))
        .await
        .unwrap();
    assert_eq!(reader.role, Role::Reader);
    assert!(authorize(&reader, &Method::GET, "/v1/nodes").is_ok());
    assert!(matches!(
        authorize(&reader, &Method::PATCH, "/v1/nodes/x"),
        Err(ApiError::Forbidden(_))
    ));
    assert!(auth
        .authenticate(&hdr("authorization", "Bearer nope-nope-nope-nope"))
        .await
        .is_err());
    assert!(Auth::token_file("short admin", "f").is_err());
    assert!(Auth::token_file("0123456789abcdef0123 root", "f").is_err());
}

fn token(roles: &[&str], project: Option<&str>, system: bool) -> ferric_keystone::TokenInfo {
    ferric_keystone::TokenInfo {
        user_id: "u1".into(),
        user_name: "alice".into(),
        project: project.map(|name| ferric_keystone::Project {
            id: format!("id-{name}"),
            name: name.into(),
            domain_id: "default".into(),
        }),
        system_all: system,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        expires_at_ms: u64::MAX,
    }
}

#[test]
fn keystone_personas_map_to_ironic_policies() {
    let c = |roles: &[&str], project: Option<&str>, system: bool| {
        Caller::from_keystone(&token(roles, project, system), "service")
            .map(|c| (c.role, c.project))
    };
    // System scope (Keystone puts implied roles in the token: admin implies member, reader).
    assert_eq!(
        c(&["admin", "member", "reader"], None, true),
        Some((Role::Admin, None))
    );
    assert_eq!(
        c(&["member", "reader"], None, true),
        Some((Role::Member, None))
    );
    assert_eq!(c(&["reader"], None, true), Some((Role::Reader, None)));
    assert_eq!(c(&["service"], None, true), Some((Role::Admin, None)));
    // Nova's user: `service` in the service project acts on every node as a system member.
    assert_eq!(
        c(&["service"], Some("service"), false),
        Some((Role::Member, None))
    );
    // `service` elsewhere, and project roles: scoped to the project.
    assert_eq!(
        c(&["service", "member"], Some("demo"), false),
        Some((Role::Member, Some("id-demo".into())))
    );
    assert_eq!(
        c(&["admin", "member", "reader"], Some("admin"), false),
        Some((Role::Admin, Some("id-admin".into())))
    );
    assert_eq!(
        c(&["manager", "member", "reader"], Some("demo"), false),
        Some((Role::Manager, Some("id-demo".into())))
    );
    // No role Ironic knows, or a token scoped to nothing.
    assert_eq!(c(&["heat_stack_owner"], Some("demo"), false), None);
    assert_eq!(c(&["member"], None, false), None);
    assert_eq!(c(&[], None, true), None);
}

#[test]
fn members_change_but_do_not_enroll_or_delete() {
    let m = Caller::new("nova", Role::Member);
    let ok = |c: &Caller, method: Method, path: &str| authorize(c, &method, path).is_ok();
    assert!(ok(&m, Method::PATCH, "/v1/nodes/n1"));
    assert!(ok(&m, Method::PUT, "/v1/nodes/n1/states/power"));
    assert!(ok(&m, Method::POST, "/v1/nodes/n1/vifs"));
    assert!(ok(&m, Method::DELETE, "/v1/nodes/n1/vifs/v1"));
    assert!(ok(&m, Method::DELETE, "/v1/nodes/n1/maintenance"));
    assert!(!ok(&m, Method::POST, "/v1/nodes"));
    assert!(!ok(&m, Method::POST, "/v1/nodes/"));
    assert!(!ok(&m, Method::DELETE, "/v1/nodes/n1"));
    assert!(!ok(&m, Method::POST, "/v1/ports"));
    assert!(!ok(&m, Method::DELETE, "/v1/portgroups/pg"));
    let r = Caller::new("r", Role::Reader);
    assert!(ok(&r, Method::GET, "/v1/nodes"));
    assert!(!ok(&r, Method::PATCH, "/v1/nodes/n1"));
    let a = Caller::new("a", Role::Admin);
    assert!(ok(&a, Method::DELETE, "/v1/nodes/n1"));
}

#[test]
fn compute_callers_match_by_name_or_role() {
    let mut nova = Caller::new("nova", Role::Member);
    nova.roles = vec!["service".into()];
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(nova.is_one_of(&list(&["nova"])));
    assert!(nova.is_one_of(&list(&["role:service"])));
    assert!(nova.is_one_of(&list(&["role:Service"])));
    assert!(!nova.is_one_of(&list(&["role:admin", "ironic"])));
    assert!(!Caller::new("role:service", Role::Admin).is_one_of(&list(&["role:service"])));
}

#[tokio::test]
async fn a_dashboard_session_is_rechecked_against_the_credentials_as_they_are_now() {
    use ferric_model::SessionProof;
    // A token in the file: its digest is kept (never the token), and its role is read again.
    let auth = Auth::token_file("0123456789abcdef0123 reader\n", "f").unwrap();
    let proof = auth.proof_of(&hdr("authorization", "Bearer 0123456789abcdef0123"));
    assert!(matches!(&proof, SessionProof::TokenDigest(d) if d.len() == 32));
    let c = auth
        .recheck("token:reader", Role::Admin, &proof)
        .await
        .unwrap();
    assert_eq!(c.role, Role::Reader, "the file's role, not the session's");
    // The same proof against a token file without that token (a restarted gateway whose
    // file no longer lists it): the session ends.
    let other = Auth::token_file("ffffffffffffffffffff admin\n", "f").unwrap();
    assert!(matches!(
        other.recheck("token:reader", Role::Reader, &proof).await,
        Err(ApiError::Unauthorized { .. })
    ));
    // A proof of another mode never passes.
    assert!(auth
        .recheck("x", Role::Admin, &SessionProof::KeystoneToken("t".into()))
        .await
        .is_err());
    // http_basic: the user must still be in the file.
    let hash = bcrypt::hash("secret", 4).unwrap();
    let basic = Auth::htpasswd(&format!("admin:{hash}\n"), "f").unwrap();
    assert_eq!(basic.proof_of(&HeaderMap::new()), SessionProof::User);
    assert_eq!(
        basic
            .recheck("admin", Role::Admin, &SessionProof::User)
            .await
            .unwrap()
            .name,
        "admin"
    );
    assert!(basic
        .recheck("mallory", Role::Admin, &SessionProof::User)
        .await
        .is_err());
}
