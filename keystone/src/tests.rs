use super::*;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn keystone_times_parse() {
    assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_utc_ms("2015-08-27T09:49:58.000000Z"),
        Some(1_440_668_998_000)
    );
    assert_eq!(
        parse_utc_ms("2000-03-01T00:00:01.5+00:00"),
        Some(951_868_801_500)
    );
    assert_eq!(parse_utc_ms("yesterday"), None);
    assert_eq!(parse_utc_ms("2015-13-27T09:49:58Z"), None);
}

#[test]
fn tokens_are_renewed_before_they_expire() {
    assert_eq!(
        renew_after(Duration::from_secs(3600)),
        Duration::from_secs(3540)
    );
    assert_eq!(renew_after(Duration::from_secs(10)), Duration::from_secs(9));
    assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    assert_eq!(
        tokens_url("http://k:5000/v3/"),
        "http://k:5000/v3/auth/tokens"
    );
    assert_eq!(tokens_url("http://k:5000"), "http://k:5000/v3/auth/tokens");
}

#[test]
fn secrets_never_show() {
    let k = KeystoneConfig {
        url: "u".into(),
        user: "nova".into(),
        password: Secret::new("hunter2"),
        user_domain: "Default".into(),
        project: "service".into(),
        project_domain: "Default".into(),
    };
    assert!(!format!("{k:?}").contains("hunter2"));
    assert!(!k.describe().contains("hunter2"));
}

/// A token as Keystone 30 answers `GET /v3/auth/tokens` (trimmed: no catalog).
fn body(expires: &str, project: bool) -> Value {
    let mut t = json!({"token": {
        "methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "be6f", "name": "alice",
                 "password_expires_at": null},
        "audit_ids": ["cUSm"], "expires_at": expires, "issued_at": "2026-12-04T23:30:33.000000Z",
        "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "Reader"}]
    }});
    if project {
        t["token"]["project"] =
            json!({"domain": {"id": "default", "name": "Default"}, "id": "p1", "name": "demo"});
    } else {
        t["token"]["system"] = json!({"all": true});
    }
    t
}

#[test]
fn token_bodies_are_read() {
    let p = TokenInfo::from_body(&body("2026-12-05T00:30:33.000000Z", true)).unwrap();
    assert_eq!(p.user_name, "alice");
    assert_eq!(p.project.as_ref().unwrap().id, "p1");
    assert!(!p.system_all);
    assert!(p.has_role("member") && p.has_role("reader") && !p.has_role("admin"));
    let s = TokenInfo::from_body(&body("2026-12-05T00:30:33.000000Z", false)).unwrap();
    assert!(s.system_all && s.project.is_none());
    assert_eq!(TokenInfo::from_body(&json!({"token": {"user": {}}})), None);
    assert_eq!(TokenInfo::from_body(&json!([1])), None);
}

#[derive(Default)]
struct Counts {
    issued: AtomicUsize,
    validated: AtomicUsize,
}

/// A stand-in Keystone: issues "svc" to the service user, knows the subject token "good".
async fn stand_in(counts: Arc<Counts>) -> String {
    let issue = {
        let counts = counts.clone();
        move || async move {
            counts.issued.fetch_add(1, Ordering::SeqCst);
            let exp = "2099-01-01T00:00:00Z";
            (
                StatusCode::CREATED,
                [("X-Subject-Token", "svc")],
                axum::Json(body(exp, true)),
            )
                .into_response()
        }
    };
    let check = move |h: HeaderMap| async move {
        counts.validated.fetch_add(1, Ordering::SeqCst);
        if h.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some("svc") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match h.get("x-subject-token").and_then(|v| v.to_str().ok()) {
            Some("good") => axum::Json(body("2099-01-01T00:00:00Z", true)).into_response(),
            Some("old") => axum::Json(body("2001-01-01T00:00:00Z", true)).into_response(),
            Some("weird") => "not json".into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    };
    let app = Router::new().route("/v3/auth/tokens", post(issue).get(check));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn validator(url: &str) -> TokenValidator {
    TokenValidator::new(
        ServiceToken::new(KeystoneConfig {
            url: url.into(),
            user: "ironic".into(),
            password: Secret::new("pw"),
            user_domain: "Default".into(),
            project: "service".into(),
            project_domain: "Default".into(),
        }),
        Duration::from_secs(5),
        Duration::from_secs(300),
    )
}

#[tokio::test]
async fn answers_are_cached_and_unknown_tokens_rejected() {
    let counts = Arc::new(Counts::default());
    let v = validator(&stand_in(counts.clone()).await);
    let a = v.validate("good").await.unwrap();
    assert_eq!(a.user_name, "alice");
    v.validate("good").await.unwrap();
    assert_eq!(
        counts.validated.load(Ordering::SeqCst),
        1,
        "second look cached"
    );
    assert_eq!(counts.issued.load(Ordering::SeqCst), 1);
    assert_eq!(v.validate("nope").await, Err(Rejected::Invalid));
    assert_eq!(v.validate("old").await, Err(Rejected::Invalid));
    assert!(matches!(
        v.validate("weird").await,
        Err(Rejected::Unavailable(KeystoneError::Garbage { .. }))
    ));
    // Rejections are not cached: Keystone is asked again.
    let before = counts.validated.load(Ordering::SeqCst);
    assert_eq!(v.validate("nope").await, Err(Rejected::Invalid));
    assert_eq!(counts.validated.load(Ordering::SeqCst), before + 1);
    // The service token was fetched once for all of that.
    assert_eq!(counts.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keystone_down_is_unavailable_not_invalid() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let v = validator(&url);
    assert!(matches!(
        v.validate("good").await,
        Err(Rejected::Unavailable(KeystoneError::Connect { .. }))
    ));
}
