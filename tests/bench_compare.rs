//! `ferric bench compare` against a real OpenStack Ironic (PyPI `ironic`, all-in-one, sqlite,
//! noauth, fake-hardware: `bench/ironic/start-ironic.sh`) and a Ferric cluster it starts: every
//! workload measured on both, the ratios written as JSON, a table and a chart, and nothing the
//! suite made left on the Ironic (read back from its API). `ferric bench api --target` against
//! endpoints that are not Ironic-like, lack fake-hardware or refuse the credentials: clear
//! errors.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ferric_testkit::http::http;
use ferric_testkit::serve::Served;
use ferric_testkit::{free_port, workspace_root, Proc};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const VERSION: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "1.95");

/// Every workload the suite runs on an endpoint with fake deploys.
const WORKLOADS: &[&str] = &[
    "enroll",
    "list detail",
    "list fields",
    "list filtered",
    "manage",
    "provide",
    "power on",
    "power off",
    "deploy",
    "undeploy",
    "port create",
    "port lookup",
    "delete",
];

fn ferric(args: &[&str], limit: Duration) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferric"));
    cmd.args(args).current_dir(workspace_root());
    ferric_testkit::run_bounded(cmd, limit)
}

#[tokio::test]
async fn compare_with_a_real_ironic() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = workspace_root().join("bench/ironic/start-ironic.sh");
    let ironic_dir = dir.path().join("ironic");
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--dir",
        &ironic_dir.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ironic = Proc::spawn(
        "ironic",
        &script,
        &args,
        dir.path().join("start-ironic.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if http(port, "GET", "/v1", &[VERSION], None).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            ironic.is_running() && Instant::now() < deadline,
            "Ironic did not answer within 120 s:\n{}\n{}",
            ironic.log(),
            std::fs::read_to_string(ironic_dir.join("ironic.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = dir.path().join("out");
    let url = format!("http://127.0.0.1:{port}");
    let run = ferric(
        &[
            "bench",
            "--dir",
            &dir.path().join("bench").to_string_lossy(),
            "compare",
            "--ironic",
            &url,
            "--nodes",
            "24",
            "--clients",
            "8",
            "--warmup",
            "4",
            "--list-samples",
            "5",
            "--conductors",
            "1",
            "--out",
            &out.to_string_lossy(),
        ],
        Duration::from_secs(600),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "bench compare failed:\n{said}");

    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(c["ironic"]["server"], "ironic", "{c}");
    assert_eq!(c["ironic"]["watched_by"], "polling");
    assert_eq!(c["ferric"]["server"], "ferric");
    // (The bench says why it fell back to polling: once in CI, debug build, the stream did
    // not open; the run's output then shows the reason.)
    assert_eq!(c["ferric"]["watched_by"], "event stream", "{said}");
    let names: Vec<&str> = c["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, WORKLOADS, "{said}");
    for side in ["ironic", "ferric"] {
        for w in c[side]["workloads"].as_array().unwrap() {
            let p50 = w["p50_ms"].as_f64().unwrap();
            assert!(
                p50 > 0.0 && w["rate"].as_f64().unwrap() > 0.0,
                "{side}: {w}"
            );
            if [
                "manage",
                "provide",
                "power on",
                "power off",
                "deploy",
                "undeploy",
            ]
            .contains(&w["name"].as_str().unwrap())
            {
                assert!(w["reached_s"].as_f64().unwrap() > 0.0, "{side}: {w}");
            }
        }
        assert_eq!(
            c[side]["workloads"][0]["requests"], 20,
            "24 nodes less the warm-up of 4"
        );
    }
    for r in c["ratios"].as_array().unwrap() {
        let times = r["times"].as_f64().unwrap();
        assert!(times.is_finite() && times > 0.0, "{r}");
    }
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap();
    for name in WORKLOADS {
        assert!(svg.contains(name), "the chart names {name}");
        assert!(table.contains(&format!("| {name} |")), "{table}");
    }

    // The Ironic's own record: nothing of the suite's is left.
    for path in ["/v1/nodes", "/v1/ports"] {
        let r = http(port, "GET", path, &[VERSION], None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let key = path.rsplit('/').next().unwrap();
        assert_eq!(list[key], serde_json::json!([]), "{path} after the suite");
    }
    ironic.signal(Signal::SIGTERM);
    assert!(
        ironic.wait_exit(Duration::from_secs(30)).await.is_some(),
        "Ironic did not stop on SIGTERM"
    );
}

/// A stand-in for what is not a usable Ironic: `mode` decides how.
async fn stand_in(mode: &'static str) -> Served {
    let root = move || async move {
        match mode {
            "not ironic" => (StatusCode::OK, "hello from a web server").into_response(),
            _ => axum::Json(serde_json::json!({
                "name": "OpenStack Ironic API",
                "default_version": {"id": "v1", "version": "1.95", "min_version": "1.1"}
            }))
            .into_response(),
        }
    };
    let nodes = move || async move {
        match mode {
            "refuses" => (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": {"code": 401, "message": "The request you have made requires authentication."}})),
            )
                .into_response(),
            _ => axum::Json(serde_json::json!({"nodes": []})).into_response(),
        }
    };
    let app = axum::Router::new()
        .route("/", get(root))
        .route("/v1/nodes", get(nodes));
    Served::start(|listener, shutdown| async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    })
    .await
}

#[tokio::test]
async fn unusable_endpoints_get_clear_errors() {
    for (mode, expected) in [
        ("not ironic", "does not answer like an Ironic API"),
        ("refuses", "refused the credentials (401"),
        (
            "no fake-hardware",
            "does not enable the fake-hardware hardware type",
        ),
    ] {
        let server = stand_in(mode).await;
        let url = format!("http://{}", server.addr);
        let run = tokio::task::spawn_blocking(move || {
            ferric(
                &["bench", "api", "--target", &url, "--nodes", "5"],
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&run.stderr).to_string();
        assert!(!run.status.success(), "{mode}: the bench went on");
        assert!(said.contains(expected), "{mode}: {said}");
    }
}
