//! Router-level test harness: a throwaway etcd per test, the gateway's router driven without a
//! socket (`tower::ServiceExt::oneshot`), and a stand-in conductor that registers itself,
//! reserves nodes and writes their status the way a real owner does (fenced), so that tests
//! control exactly what the API should report.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use ferric_cluster::{AcquireOutcome, Cluster, EtcdConfig, LeaseKeeper};
use ferric_gateway::{app, AppState, Auth, GatewayConfig};
use ferric_model::{now_ms, ConductorRecord, FenceToken, NodeId, NodeStatus};
use serde_json::Value;
use std::time::{Duration, Instant};
use tower::ServiceExt;

pub const LATEST: &str = "1.95";

pub use ferric_testkit::Etcd;

/// What a request got back.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// The `faultstring` of an Ironic error body (panics if the body is not one).
    pub fn fault(&self) -> String {
        let inner = self.json["error_message"]
            .as_str()
            .unwrap_or_else(|| panic!("not an Ironic error body: {}", self.text));
        let inner: Value = serde_json::from_str(inner).expect("error_message holds JSON");
        assert!(inner["debuginfo"].is_null(), "{inner}");
        let code = inner["faultcode"].as_str().unwrap_or("");
        assert!(code == "Client" || code == "Server", "{inner}");
        inner["faultstring"].as_str().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }

    /// Asserts an Ironic error with `status` whose message contains `needle`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let f = self.fault();
        assert!(
            f.contains(needle),
            "fault {f:?} does not contain {needle:?}"
        );
    }
}

/// One gateway (as a router) over a fresh etcd and key prefix.
pub struct World {
    pub etcd: Etcd,
    pub cluster: Cluster,
    pub state: AppState,
    pub router: Router,
    pub version: String,
    pub conductors: Vec<(String, LeaseKeeper)>,
}

impl World {
    pub async fn new() -> World {
        World::with_auth(Auth::NoAuth).await
    }

    pub async fn with_auth(auth: Auth) -> World {
        World::with_config(auth, |_| {}).await
    }

    /// A world whose gateway configuration `tweak` adjusts.
    pub async fn with_config(auth: Auth, tweak: impl FnOnce(&mut GatewayConfig)) -> World {
        let etcd = Etcd::start();
        let mut cfg = EtcdConfig::new(&etcd.url());
        cfg.prefix = "/gw-test/".into();
        let cluster = Cluster::connect(&cfg).await.expect("connect etcd");
        let mut config = GatewayConfig {
            public_url: Some("http://ferric.test:6385".into()),
            ..GatewayConfig::default()
        };
        tweak(&mut config);
        let state = AppState::new(cluster.clone(), config, auth);
        let router = app(state.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.informer.problem().is_some() {
            assert!(Instant::now() < deadline, "the gateway's copy did not load");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        World {
            etcd,
            cluster,
            state,
            router,
            version: LATEST.into(),
            conductors: Vec::new(),
        }
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("host", "ignored.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(30), self.router.clone().oneshot(req))
            .await
            .expect("request took over 30 s (likely deadlocked)")
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// A request at the world's default microversion.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| b.to_string());
        self.call_with(
            method,
            path,
            body.as_deref(),
            &[("X-OpenStack-Ironic-API-Version", &self.version)],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None).await
    }

    /// Enrolls a node through the API and returns its uuid.
    pub async fn enroll(&self, body: Value) -> String {
        let r = self.call("POST", "/v1/nodes", Some(body)).await;
        r.expect(201);
        r.json["uuid"].as_str().expect("uuid").to_string()
    }

    /// A stand-in conductor serving fake-hardware (and ipmi) in the default group.
    pub async fn start_conductor(&mut self, name: &str) {
        self.start_conductor_at(name, "").await;
    }

    /// Like [`World::start_conductor`], advertising `console_address` as its console server.
    pub async fn start_conductor_at(&mut self, name: &str, console_address: &str) {
        let lease = LeaseKeeper::grant(&self.cluster, Duration::from_secs(10))
            .await
            .expect("lease");
        let rec = ConductorRecord {
            name: name.into(),
            address: String::new(),
            console_address: console_address.into(),
            drivers: vec!["fake-hardware".into(), "ipmi".into()],
            conductor_group: String::new(),
            version: "test".into(),
            started_at_ms: now_ms(),
            lease_id: lease.id,
            running: 0,
            sync: Default::default(),
            hardware: Vec::new(),
            buckets: true,
        };
        self.cluster
            .register_conductor(&rec, Duration::from_secs(5))
            .await
            .expect("register");
        self.conductors.push((name.into(), lease));
        self.wait_for_copy().await;
    }

    /// Ends a stand-in conductor's membership at once (its reservations go with its lease).
    pub async fn stop_conductor(&mut self, name: &str) {
        let pos = self
            .conductors
            .iter()
            .position(|(n, _)| n == name)
            .expect("conductor");
        let (_, lease) = self.conductors.remove(pos);
        lease.stop();
        self.cluster.revoke_lease(lease.id).await.expect("revoke");
        self.wait_for_copy().await;
    }

    /// Reserves a node for conductor `name` (its fencing token): as if its bucket's holder had
    /// handed it on to `name`.
    pub async fn own(&self, name: &str, id: &str) -> FenceToken {
        let lease = &self
            .conductors
            .iter()
            .find(|(n, _)| n == name)
            .expect("conductor")
            .1;
        let id: NodeId = id.parse().expect("uuid");
        ferric_testkit::etcd::hand_on(&self.etcd.url(), "/gw-test/", &id, name).await;
        let out = self
            .cluster
            .acquire(&[id], lease.id, name)
            .await
            .expect("acquire");
        match &out[0].1 {
            AcquireOutcome::Acquired(a) => {
                self.wait_for_copy().await;
                a.token
            }
            other => panic!("could not reserve {id}: {other:?}"),
        }
    }

    /// Writes a node's status as its owner (read, change, fenced write).
    pub async fn set_status(&self, id: &str, token: FenceToken, f: impl FnOnce(&mut NodeStatus)) {
        let view = self.cluster.get_node(id).await.expect("node");
        let mut st = view.status.clone();
        st.owner = view.reservation.clone();
        st.fence = token.0;
        st.updated_at_ms = now_ms();
        f(&mut st);
        let id: NodeId = id.parse().expect("uuid");
        self.cluster
            .write_status(&id, token, &st)
            .await
            .expect("status write");
        self.wait_for_copy().await;
    }

    /// The lease of stand-in conductor `name`.
    pub fn lease_of(&self, name: &str) -> i64 {
        self.conductors
            .iter()
            .find(|(n, _)| n == name)
            .expect("conductor")
            .1
            .id
    }

    /// Serves this world's gateway on a loopback port until the returned sender is dropped.
    pub async fn serve(&self) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ferric_gateway::serve(
            listener,
            self.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    /// Waits until the gateway's copy has everything etcd has now.
    pub async fn wait_for_copy(&self) {
        let rev = self.cluster.revision().await.expect("revision");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.informer.revision() < rev {
            assert!(
                Instant::now() < deadline,
                "the gateway's copy did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
