//! The Debian package (`[package.metadata.deb]` in Cargo.toml, `scripts/build-deb.sh`) is built
//! and checked in the test suite, without a release build: the debug binary this test run built
//! is put where cargo-deb looks for the release one (`<target>/release/ferric`, in a target
//! directory of this test's own) and `cargo deb --no-build --strip` packs it. Then the package
//! is checked as a user would receive it: `dpkg-deb --info` (name, version, `Depends` on
//! ipmitool), `dpkg-deb --contents`, and the tree `dpkg-deb -x` extracts: the binary runs, its
//! example config is the one in deploy/, the units verify with `systemd-analyze verify` running
//! the packaged binary, and the config and docs are deploy/'s.
//!
//! cargo-deb is installed from crates.io (`cargo install cargo-deb --locked`) when missing, as
//! `scripts/build-deb.sh` does; that takes minutes once per machine.

use ferric_testkit::fleet::ferric_bin;
use ferric_testkit::{run_bounded, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: Command, limit: Duration, what: &str) -> String {
    let start = Instant::now();
    let out = run_bounded(cmd, limit);
    assert!(out.status.success(), "{what}: {}", text(&out));
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ensure_cargo_deb() {
    let mut probe = Command::new(cargo());
    probe.args(["deb", "--version"]);
    if run_bounded(probe, Duration::from_secs(30)).status.success() {
        return;
    }
    eprintln!("cargo-deb is missing: installing it from crates.io (minutes, once per machine)");
    let mut install = Command::new(cargo());
    install.args(["install", "cargo-deb", "--locked"]);
    // Its own temporary target directory, not this run's.
    install.env_remove("CARGO_TARGET_DIR");
    ok(
        install,
        Duration::from_secs(30 * 60),
        "cargo install cargo-deb",
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_debian_package_builds_and_installs_what_it_should() {
    ensure_cargo_deb();
    let root = workspace_root();
    let dir = tempfile::Builder::new()
        .prefix("ferric-deb-")
        .tempdir()
        .unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(ferric_bin(), target.join("release/ferric")).unwrap();
    let out_dir = dir.path().join("out");

    let mut deb = Command::new(cargo());
    deb.current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "deb",
            "-p",
            "ferric",
            "--no-build",
            "--strip",
            "--fast",
            "-o",
        ])
        .arg(&out_dir);
    ok(deb, Duration::from_secs(600), "cargo deb --no-build");
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb_file = &debs[0];
    let version = env!("CARGO_PKG_VERSION");
    let name = deb_file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("ferric_{version}-")) && name.ends_with(".deb"),
        "{name}"
    );

    // The control file.
    let mut info = Command::new("dpkg-deb");
    info.arg("--info").arg(deb_file);
    let info = ok(info, Duration::from_secs(60), "dpkg-deb --info");
    let field = |f: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{f}: ")))
            .unwrap_or_else(|| panic!("no {f} in:\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "ferric", "{info}");
    assert!(field("Version").starts_with(version), "{info}");
    let depends = field("Depends");
    assert!(
        depends.split(',').any(|d| d.trim().starts_with("ipmitool")),
        "Depends: {depends}"
    );

    // What it installs.
    let mut contents = Command::new("dpkg-deb");
    contents.arg("--contents").arg(deb_file);
    let contents = ok(contents, Duration::from_secs(60), "dpkg-deb --contents");
    let files = [
        "./usr/bin/ferric",
        "./lib/systemd/system/ferric-conductor.service",
        "./lib/systemd/system/ferric-gateway.service",
        "./usr/share/doc/ferric/examples/ferric.toml",
        "./usr/share/doc/ferric/GUIDE.md",
        "./usr/share/doc/ferric/examples/ferric-alerts.yml",
        "./usr/share/doc/ferric/examples/grafana-ferric.json",
    ];
    for f in files {
        assert!(
            contents.lines().any(|l| l.ends_with(f)),
            "{f} not in the package:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/ferric")),
        "the binary is not executable:\n{contents}"
    );

    // The extracted tree.
    let tree = dir.path().join("tree");
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(deb_file).arg(&tree);
    ok(x, Duration::from_secs(120), "dpkg-deb -x");
    let bin = tree.join("usr/bin/ferric");
    let mut v = Command::new(&bin);
    v.arg("--version");
    assert_eq!(
        ok(v, Duration::from_secs(30), "ferric --version").trim(),
        format!("ferric {version}")
    );
    let mut example = Command::new(&bin);
    example.args(["check", "--example"]);
    let example = ok(example, Duration::from_secs(30), "ferric check --example");
    assert_eq!(
        example,
        read(&root.join("deploy/ferric.example.toml")),
        "the packaged binary's example config differs from deploy/ferric.example.toml"
    );
    for (packaged, source) in [
        (
            "usr/share/doc/ferric/examples/ferric.toml",
            "deploy/ferric.example.toml",
        ),
        ("usr/share/doc/ferric/GUIDE.md", "deploy/GUIDE.md"),
        (
            "lib/systemd/system/ferric-conductor.service",
            "deploy/systemd/ferric-conductor.service",
        ),
        (
            "lib/systemd/system/ferric-gateway.service",
            "deploy/systemd/ferric-gateway.service",
        ),
    ] {
        assert_eq!(
            read(&tree.join(packaged)),
            read(&root.join(source)),
            "{packaged}"
        );
    }
    // The packaged units as systemd reads them, with ExecStart's /usr/bin/ferric pointed at the
    // packaged binary. (`systemd-analyze verify --root=<tree>` would need systemd's own units,
    // such as sysinit.target, inside the tree.)
    let units_dir = dir.path().join("units");
    std::fs::create_dir_all(&units_dir).unwrap();
    let mut units = Vec::new();
    for unit in ["ferric-conductor.service", "ferric-gateway.service"] {
        let packaged = read(&tree.join("lib/systemd/system").join(unit));
        assert!(packaged.contains("ExecStart=/usr/bin/ferric "), "{unit}");
        let path = units_dir.join(unit);
        std::fs::write(
            &path,
            packaged.replace("/usr/bin/ferric", &bin.display().to_string()),
        )
        .unwrap();
        units.push(path);
    }
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").args(&units);
    let out = run_bounded(verify, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
}
