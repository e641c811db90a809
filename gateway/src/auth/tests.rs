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
        Caller {
            name: "token:reader".into(),
            role: Role::Reader
        }
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
        Caller {
            name: "admin".into(),
            role: Role::Admin
        }
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
