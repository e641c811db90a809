//! `--config` and `ferric check` through the real binary and a real etcd: a conductor started
//! with nothing but a config file joins the cluster under the file's name (etcd's membership
//! record is the witness), `ferric check` reports the etcd cluster the file names, and a typo,
//! a wrong value or an unreachable etcd each stop with a message saying what is wrong.

use ferric_testkit::fleet::ferric_bin;
use ferric_testkit::{run_bounded, Fleet, Proc};
use std::process::Command;
use std::time::Duration;

fn check(config: &std::path::Path) -> (bool, String) {
    let mut cmd = Command::new(ferric_bin());
    cmd.args(["check", "--config"]).arg(config);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conductor_runs_from_its_config_file_and_check_reports_etcd() {
    let fleet = Fleet::new("config").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ferric.toml");
    std::fs::write(
        &good,
        format!(
            r#"
[etcd]
etcd = "{}"
prefix = "{}"
etcd-timeout = 3

[conductor]
name = "from-file"
lease-ttl = 2
runtime-dir = "{}"

[gateway]
listen = "127.0.0.1:0"
"#,
            fleet.url(),
            fleet.prefix,
            dir.path().join("run").display()
        ),
    )
    .unwrap();

    let (ok, text) = check(&good);
    assert!(ok, "{text}");
    for want in [
        "config: [conductor] ok",
        "config: [gateway] ok",
        "etcd: version 3.",
        "1 members",
        "(leader)",
        "readable",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }

    // Only the file: the conductor takes its name, etcd and prefix from it.
    let _c = Proc::spawn(
        "from-file",
        ferric_bin(),
        &[
            "conductor".to_string(),
            "--config".to_string(),
            good.display().to_string(),
        ],
        dir.path().join("from-file.log"),
    );
    fleet
        .wait_until(
            Duration::from_secs(20),
            "from-file has its membership record",
            async || {
                let snap = fleet.snapshot().await?;
                let names: Vec<&String> = snap.conductors.keys().collect();
                snap.conductors
                    .contains_key("from-file")
                    .then_some(())
                    .ok_or(format!("{names:?}"))
            },
        )
        .await;

    // What is wrong, said clearly.
    for (name, text_of_file, want) in [
        (
            "typo.toml",
            "[conductor]\nleas-ttl = 3\n",
            "has \"leas-ttl\"",
        ),
        (
            "value.toml",
            "[conductor]\nlease-ttl = \"soon\"\n",
            "invalid value 'soon' for '--lease-ttl",
        ),
        (
            "unreachable.toml",
            "[etcd]\netcd = \"http://127.0.0.1:1\"\netcd-timeout = 1\n[conductor]\nname = \"x\"\n",
            "cannot reach etcd at http://127.0.0.1:1",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text_of_file).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok, "{name} passed: {text}");
        assert!(text.contains(want), "{name}: {want} not in:\n{text}");
    }
}

/// The systemd units in `deploy/` are valid as systemd reads them (`systemd-analyze verify`,
/// with the unit's binary pointed at this build), and the conductor's stops its console
/// children with it.
#[test]
fn the_systemd_units_verify() {
    let root = ferric_testkit::workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["ferric-conductor.service", "ferric-gateway.service"] {
        let text = std::fs::read_to_string(root.join("deploy/systemd").join(name)).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/ferric "), "{name}");
        let text = text.replace("/usr/bin/ferric", &ferric_bin().display().to_string());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let conductor = std::fs::read_to_string(&units[0]).unwrap();
    assert!(conductor.contains("KillMode=mixed"));
    assert!(conductor.contains("--config /etc/ferric/ferric.toml"));
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(&units);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// `etcdctl` against `url` (as `user`, when given); panics with its output on failure.
fn etcdctl(url: &str, user: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(url);
    if let Some(u) = user {
        cmd.arg("--user").arg(u);
    }
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "etcdctl {args:?}: {text}");
    text
}

/// The deployment guide's etcd authentication: a user whose role may touch only Ferric's
/// prefix runs a conductor and `ferric check`, and is refused everywhere else (etcd's own
/// answer, through `ferric ctl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_the_prefix_runs_a_conductor_and_nothing_else() {
    let etcd = ferric_testkit::Etcd::start();
    let url = etcd.url();
    let prefix = "/ferric/prod/";
    etcdctl(&url, None, &["user", "add", "root:root-pw"]);
    etcdctl(&url, None, &["user", "grant-role", "root", "root"]);
    etcdctl(&url, None, &["role", "add", "ferric"]);
    etcdctl(
        &url,
        None,
        &[
            "role",
            "grant-permission",
            "ferric",
            "--prefix=true",
            "readwrite",
            prefix,
        ],
    );
    etcdctl(&url, None, &["user", "add", "ferric:ferric-pw"]);
    etcdctl(&url, None, &["user", "grant-role", "ferric", "ferric"]);
    etcdctl(&url, None, &["auth", "enable"]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferric.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[etcd]
etcd = "{url}"
prefix = "{prefix}"
etcd-user = "ferric"
etcd-password = "ferric-pw"

[conductor]
name = "limited"
lease-ttl = 2
runtime-dir = "{}"
"#,
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(text.contains("user ferric"), "{text}");

    let _c = Proc::spawn(
        "limited",
        ferric_bin(),
        &[
            "conductor".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ],
        dir.path().join("limited.log"),
    );
    let ctl = |prefix: &str, args: &[&str]| {
        let mut cmd = Command::new(ferric_bin());
        cmd.args([
            "ctl",
            "--etcd",
            &url,
            "--prefix",
            prefix,
            "--etcd-user",
            "ferric",
            "--etcd-password",
            "ferric-pw",
        ])
        .args(args);
        run_bounded(cmd, Duration::from_secs(30))
    };
    // The conductor joined: its membership record, read as root.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let keys = etcdctl(
            &url,
            Some("root:root-pw"),
            &[
                "get",
                "--prefix",
                "--keys-only",
                &format!("{prefix}conductors/"),
            ],
        );
        if keys.contains("limited") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no membership record: {keys}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctl(
        prefix,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "n1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(prefix, &["node", "power", "n1", "on"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Anywhere else: etcd refuses.
    let out = ctl("/ferric/other/", &["node", "list"]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "another prefix was readable");
    assert!(err.contains("permission denied"), "{err}");
}
