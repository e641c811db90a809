//! A real Keystone (PyPI `keystone`, from the test virtualenv) with an sqlite database and
//! fernet tokens, bootstrapped by `keystone-manage` and served by the standard library's WSGI
//! server on a free loopback port. The test makes its projects, users and role assignments
//! through Keystone's own API, and gets its tokens the way clients do.

use crate::process::run_bounded;
use crate::{free_port, Proc};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const ADMIN_PASSWORD: &str = "keystone-admin-secret";

/// Serves `keystone.server.wsgi`'s public application; oslo.config reads `sys.argv`, so the
/// arguments are taken off it first.
const SERVE: &str = r#"
import os, sys
conf, port = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[:1]
os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from keystone.server.wsgi import initialize_public_application
app = initialize_public_application()
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))
make_server("127.0.0.1", port, app, server_class=Server, handler_class=Handler).serve_forever()
"#;

pub struct Keystone {
    proc: Proc,
    /// `http://127.0.0.1:<port>` (clients add `/v3`).
    pub url: String,
    http: reqwest::Client,
    admin: String,
}

/// What a token is scoped to.
pub enum Scope<'a> {
    System,
    Project(&'a str),
}

impl Keystone {
    pub async fn start(dir: &Path) -> Keystone {
        let bin = crate::http::pyvenv().join("bin");
        let manage = bin.join("keystone-manage");
        assert!(
            manage.exists(),
            "{} is missing: run scripts/install-deps.sh (it installs tests/python-requirements.txt)",
            manage.display()
        );
        let dir = dir.join("keystone");
        std::fs::create_dir_all(&dir).expect("keystone dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let conf = dir.join("keystone.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nlog_file = {d}/keystone.log\n\
                 [database]\nconnection = sqlite:///{d}/keystone.db\n\
                 [token]\nprovider = fernet\nexpiration = 3600\n\
                 [fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
                 [fernet_receipts]\nkey_repository = {d}/fernet-keys\n\
                 [credential]\nkey_repository = {d}/credential-keys\n"
            ),
        )
        .expect("keystone.conf");
        let conf_s = conf.display().to_string();
        let steps: [Vec<String>; 4] = [
            vec!["db_sync".into()],
            vec![
                "fernet_setup".into(),
                "--keystone-user".into(),
                "root".into(),
                "--keystone-group".into(),
                "root".into(),
            ],
            vec![
                "credential_setup".into(),
                "--keystone-user".into(),
                "root".into(),
                "--keystone-group".into(),
                "root".into(),
            ],
            vec![
                "bootstrap".into(),
                "--bootstrap-password".into(),
                ADMIN_PASSWORD.into(),
                "--bootstrap-admin-url".into(),
                format!("{url}/v3"),
                "--bootstrap-public-url".into(),
                format!("{url}/v3"),
                "--bootstrap-region-id".into(),
                "RegionOne".into(),
            ],
        ];
        for step in steps {
            let mut cmd = Command::new(&manage);
            cmd.arg("--config-file").arg(&conf).args(&step);
            let out = run_bounded(cmd, Duration::from_secs(300));
            assert!(
                out.status.success(),
                "keystone-manage {} failed: {}",
                step[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let script = dir.join("serve.py");
        std::fs::write(&script, SERVE).expect("serve.py");
        let proc = Proc::spawn(
            "keystone",
            bin.join("python"),
            &[script.display().to_string(), conf_s, port.to_string()],
            dir.join("serve.log"),
        );
        let http = reqwest::Client::new();
        let mut ks = Keystone {
            proc,
            url,
            http,
            admin: String::new(),
        };
        for _ in 0..600 {
            if let Ok(t) = ks.try_token("admin", ADMIN_PASSWORD, &Scope::System).await {
                ks.admin = t;
                return ks;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Keystone did not issue a token on {}:\n{}",
            ks.url,
            ks.proc.log_tail(30)
        );
    }

    async fn try_token(
        &self,
        user: &str,
        password: &str,
        scope: &Scope<'_>,
    ) -> Result<String, String> {
        let scope = match scope {
            Scope::System => json!({"system": {"all": true}}),
            Scope::Project(p) => json!({"project": {"name": p, "domain": {"id": "default"}}}),
        };
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": scope,
        }});
        let r = self
            .http
            .post(format!("{}/v3/auth/tokens", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let token = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match token {
            Some(t) if status.is_success() => Ok(t),
            _ => Err(format!("{status}: {}", r.text().await.unwrap_or_default())),
        }
    }

    /// A token for `user`, as a client gets one (password auth).
    pub async fn token(&self, user: &str, password: &str, scope: Scope<'_>) -> String {
        self.try_token(user, password, &scope)
            .await
            .unwrap_or_else(|e| panic!("Keystone issued no token to {user}: {e}"))
    }

    async fn admin_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v3{path}", self.url))
            .header("X-Auth-Token", &self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("Keystone answers");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A project's id, creating the project if needed (`service` is not made by bootstrap).
    pub async fn project(&self, name: &str) -> String {
        let found = self
            .admin_call(
                reqwest::Method::GET,
                &format!("/projects?name={name}"),
                None,
            )
            .await;
        if let Some(id) = found["projects"][0]["id"].as_str() {
            return id.to_string();
        }
        let made = self
            .admin_call(
                reqwest::Method::POST,
                "/projects",
                Some(json!({"project": {"name": name, "domain_id": "default"}})),
            )
            .await;
        made["project"]["id"].as_str().expect("project id").into()
    }

    /// Creates a user and gives it `role` on the project (or on the system).
    pub async fn user(&self, name: &str, password: &str, role: &str, scope: Scope<'_>) -> String {
        let made = self
            .admin_call(
                reqwest::Method::POST,
                "/users",
                Some(json!({"user": {"name": name, "password": password, "domain_id": "default"}})),
            )
            .await;
        let user = made["user"]["id"].as_str().expect("user id").to_string();
        let roles = self
            .admin_call(reqwest::Method::GET, &format!("/roles?name={role}"), None)
            .await;
        let role_id = roles["roles"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("Keystone has no role {role}"))
            .to_string();
        let path = match scope {
            Scope::System => format!("/system/users/{user}/roles/{role_id}"),
            Scope::Project(p) => {
                let project = self.project(p).await;
                format!("/projects/{project}/users/{user}/roles/{role_id}")
            }
        };
        self.admin_call(reqwest::Method::PUT, &path, None).await;
        user
    }

    /// Puts a service in the catalog with its public endpoint (what clients find it by).
    pub async fn register(&self, service_type: &str, url: &str) {
        let made = self
            .admin_call(
                reqwest::Method::POST,
                "/services",
                Some(json!({"service": {"type": service_type, "name": service_type}})),
            )
            .await;
        let id = made["service"]["id"].as_str().expect("service id");
        self.admin_call(
            reqwest::Method::POST,
            "/endpoints",
            Some(json!({"endpoint": {"service_id": id, "interface": "public",
                                      "region_id": "RegionOne", "url": url}})),
        )
        .await;
    }

    /// Revokes a token (`DELETE /v3/auth/tokens`).
    pub async fn revoke(&self, token: &str) {
        let r = self
            .http
            .delete(format!("{}/v3/auth/tokens", self.url))
            .header("X-Auth-Token", &self.admin)
            .header("X-Subject-Token", token)
            .send()
            .await
            .expect("Keystone answers");
        assert_eq!(r.status().as_u16(), 204, "revoking a token");
    }
}
