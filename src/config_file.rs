//! `--config FILE`: the options of `ferric conductor` and `ferric gateway` from a TOML file.
//!
//! The file has one table per role, `[conductor]` and `[gateway]`, and an `[etcd]` table both
//! roles read. Keys are the long option names (`lease-ttl`, or `lease_ttl`), values what the
//! option takes: a string, a number, a boolean (a flag: `true` sets it), or a list (the option
//! given once per item). An option given on the command line wins over the file, and so does
//! its environment variable (`FERRIC_...`, see `--help`); the file wins over the defaults. A key
//! no option of the role has is an error naming the file, the table and the key, so a typo is
//! never silently ignored.
//!
//! It works on the command line itself: the file's options are added to the arguments before
//! clap reads them, so every value is checked exactly as if it had been typed.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::Path;

/// The roles that read a config file, and their table.
pub const ROLES: [&str; 2] = ["conductor", "gateway"];

/// The arguments with the config file's options of `role` added (`args[0]` is the program; the
/// role's subcommand is found in them). Arguments without `--config` come back unchanged.
pub fn expand(args: Vec<OsString>, command: &clap::Command) -> anyhow::Result<Vec<OsString>> {
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(role_at) = strs
        .iter()
        .position(|a| ROLES.contains(&a.as_str()) || a == "check")
    else {
        return Ok(args);
    };
    let role = strs[role_at].as_str();
    let Some(path) = config_path(&strs[role_at + 1..]) else {
        return Ok(args);
    };
    if role == "check" {
        // `ferric check` reads the file itself, for both roles.
        return Ok(args);
    }
    let sub = command
        .find_subcommand(role)
        .with_context(|| format!("no subcommand {role}"))?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {path}"))?;
    let extra = options(&text, Path::new(&path), role, sub, &strs[role_at + 1..])?;
    let mut out = args;
    out.splice(
        role_at + 1..role_at + 1,
        extra.into_iter().map(OsString::from),
    );
    Ok(out)
}

/// The value of `--config` in the subcommand's arguments.
pub fn config_path(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    })
}

/// The arguments the file gives `role`, skipping options given on the command line (`given`)
/// or through their environment variable.
pub fn options(
    text: &str,
    path: &Path,
    role: &str,
    sub: &clap::Command,
    given: &[String],
) -> anyhow::Result<Vec<String>> {
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    for table in doc.keys() {
        if table != "etcd" && !ROLES.contains(&table.as_str()) {
            bail!(
                "{}: unknown table [{table}] (tables: [etcd], [conductor], [gateway])",
                path.display()
            );
        }
    }
    let mut out = Vec::new();
    for table in ["etcd", role] {
        let Some(entries) = doc.get(table) else {
            continue;
        };
        let entries = entries
            .as_table()
            .with_context(|| format!("{}: [{table}] must be a table", path.display()))?;
        for (key, value) in entries {
            let long = key.replace('_', "-");
            let arg = sub
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .with_context(|| {
                    format!(
                        "{}: [{table}] has \"{key}\", which is not an option of `ferric {role}` (see `ferric {role} --help`)",
                        path.display()
                    )
                })?;
            if long == "config" {
                bail!(
                    "{}: [{table}] cannot name another config file",
                    path.display()
                );
            }
            let on_command_line = given
                .iter()
                .any(|g| *g == format!("--{long}") || g.starts_with(&format!("--{long}=")));
            let from_env = arg
                .get_env()
                .is_some_and(|name| std::env::var_os(name).is_some());
            if on_command_line || from_env {
                continue;
            }
            let flag = matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
            push_value(&mut out, &long, value, flag)
                .with_context(|| format!("{}: [{table}] {key}", path.display()))?;
        }
    }
    Ok(out)
}

fn push_value(
    out: &mut Vec<String>,
    long: &str,
    v: &toml::Value,
    flag: bool,
) -> anyhow::Result<()> {
    use toml::Value as V;
    match v {
        V::Boolean(b) if flag => {
            if *b {
                out.push(format!("--{long}"));
            }
        }
        V::Boolean(_) => bail!("is a boolean, and this option takes a value"),
        _ if flag => bail!("is a flag: give it true or false"),
        V::String(s) => out.push(format!("--{long}={s}")),
        V::Integer(i) => out.push(format!("--{long}={i}")),
        V::Float(f) => out.push(format!("--{long}={f}")),
        V::Array(items) => {
            for item in items {
                push_value(out, long, item, flag)?;
            }
        }
        V::Datetime(_) | V::Table(_) => bail!("must be a string, a number, a boolean or a list"),
    }
    Ok(())
}

/// An example config file with every option of both roles, commented out at its default, each
/// with its help, its environment variable and its default: `deploy/ferric.example.toml` is
/// this text (a test keeps them equal).
pub fn example(command: &clap::Command) -> String {
    let mut out = String::from(
        "# Ferric's configuration: `ferric conductor --config F`, `ferric gateway --config F`,\n\
         # checked by `ferric check --config F`. Keys are the long options; an option given on the\n\
         # command line, or through its environment variable, wins over this file. Every option\n\
         # is listed at its default, commented out. Generated from `--help` (see src/config_file.rs).\n",
    );
    let etcd: Vec<String> = [
        "etcd",
        "prefix",
        "etcd-user",
        "etcd-password",
        "etcd-ca",
        "etcd-cert",
        "etcd-key",
        "etcd-timeout",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (table, role) in [
        ("etcd", "conductor"),
        ("conductor", "conductor"),
        ("gateway", "gateway"),
    ] {
        let Some(sub) = command.find_subcommand(role) else {
            continue;
        };
        out.push_str(&format!("\n[{table}]\n"));
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            let is_etcd = etcd.iter().any(|e| e == long);
            if long == "config" || long == "help" || (table == "etcd") != is_etcd {
                continue;
            }
            if table == "gateway" && is_etcd {
                continue;
            }
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            for line in help.lines() {
                out.push_str(&format!("# {}\n", line).replace("# \n", "#\n"));
            }
            if let Some(env) = arg.get_env() {
                out.push_str(&format!("# Environment: {}\n", env.to_string_lossy()));
            }
            let flag = matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            let value = if flag {
                "false".to_string()
            } else if defaults.is_empty() {
                "\"\"   # no default".to_string()
            } else if defaults.len() == 1 && defaults[0].parse::<f64>().is_ok() {
                defaults[0].clone()
            } else if defaults.len() == 1 {
                format!("{:?}", defaults[0])
            } else {
                format!("{defaults:?}")
            };
            out.push_str(&format!("#{long} = {value}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn expanded(args: &[&str], text: &str) -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferric.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["ferric".into()];
        for a in args {
            argv.push(a.replace("FILE", &path.display().to_string()).into());
        }
        let out = expand(argv, &crate::Cli::command())?;
        Ok(out
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn the_files_options_come_in_unless_the_command_line_gives_them() {
        let text = r#"
            [etcd]
            prefix = "/prod/"
            etcd_timeout = 2.5
            [conductor]
            name = "c7"
            lease-ttl = 10
            drivers = ["redfish", "ipmi"]
            no-consoles = true
            [gateway]
            listen = "10.0.0.5:6385"
        "#;
        let out = expanded(&["conductor", "--config", "FILE", "--name", "c9"], text).unwrap();
        assert!(out.contains(&"--prefix=/prod/".to_string()), "{out:?}");
        assert!(out.contains(&"--etcd-timeout=2.5".to_string()));
        assert!(out.contains(&"--lease-ttl=10".to_string()));
        assert!(out.contains(&"--drivers=redfish".to_string()));
        assert!(out.contains(&"--drivers=ipmi".to_string()));
        assert!(out.contains(&"--no-consoles".to_string()));
        assert!(
            !out.iter().any(|a| a.contains("c7")),
            "the command line wins"
        );
        assert!(!out.iter().any(|a| a.contains("6385")), "not the gateway's");
        // And clap takes the result as typed.
        use clap::Parser;
        crate::Cli::try_parse_from(&out).unwrap();
    }

    #[test]
    fn the_example_in_deploy_is_every_option_at_its_default() {
        let text = example(&crate::Cli::command());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ferric.example.toml");
        if std::env::var_os("FERRIC_WRITE_EXAMPLE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let file = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            file == text,
            "deploy/ferric.example.toml is out of date: FERRIC_WRITE_EXAMPLE=1 cargo test -p ferric --bin ferric the_example"
        );
        // Uncommented, it is a valid config of both roles (defaults only).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("all.toml");
        let uncommented: String = text
            .lines()
            .filter(|l| !l.starts_with("# ") && *l != "#")
            .filter(|l| !l.contains("# no default"))
            .map(|l| l.strip_prefix('#').unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, uncommented).unwrap();
        use clap::Parser;
        for role in ROLES {
            // The conductor's name has no default: given on the command line.
            let out = expanded(
                &[role, "--config", &p.display().to_string(), "--name", "x"],
                "",
            );
            let out = match out {
                Ok(o) => o,
                Err(e) => panic!("{role}: {e:#}"),
            };
            assert!(out.iter().any(|a| a.starts_with("--etcd=")), "{out:?}");
            if let Err(e) = crate::Cli::try_parse_from(&out) {
                panic!("{role}: {e}");
            }
        }
    }

    #[test]
    fn the_guides_config_is_read_by_both_roles() {
        let guide = include_str!("../deploy/GUIDE.md");
        let start = guide.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let text = &guide[start..start + guide[start..].find("```").unwrap()];
        use clap::Parser;
        for role in ROLES {
            let out = expanded(&[role, "--config", "FILE"], text).unwrap();
            assert!(out.iter().any(|a| a.starts_with("--etcd-ca=")), "{out:?}");
            if let Err(e) = crate::Cli::try_parse_from(&out) {
                panic!("{role}: {e}");
            }
        }
    }

    #[test]
    fn typos_and_wrong_types_are_errors_that_say_where() {
        let e = expanded(
            &["conductor", "--config=FILE"],
            "[conductor]\nleas-ttl = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[conductor] has \"leas-ttl\""), "{e}");
        let e = expanded(&["gateway", "--config", "FILE"], "[gatway]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown table [gatway]"), "{e}");
        let e = expanded(
            &["conductor", "--config", "FILE"],
            "[conductor]\nno-consoles = 1\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("is a flag"), "{e:#}");
        let e = expanded(&["conductor", "--config", "FILE"], "[conductor\n").unwrap_err();
        assert!(e.to_string().contains("is not valid TOML"), "{e}");
        // Without --config nothing changes.
        assert_eq!(
            expanded(&["conductor", "--name", "x"], "").unwrap(),
            ["ferric", "conductor", "--name", "x"]
        );
    }
}
