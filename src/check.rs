//! `ferric check --config F`: validates a config file for both roles as they would read it,
//! reaches the etcd cluster it names (TLS and authentication as configured), and reports the
//! cluster's version, members and leader and whether Ferric's prefix can be read. Exits non-zero
//! with what is wrong.

use crate::config_file;
use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The config file to check.
    #[arg(long, required_unless_present = "example")]
    pub config: Option<PathBuf>,
    /// Print an example config file with every option at its default, and stop.
    #[arg(long)]
    pub example: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.example {
        print!("{}", config_file::example(&crate::Cli::command()));
        return Ok(());
    }
    let config = args.config.context("--config is required")?;
    let path = config.display().to_string();
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read the config file {path}"))?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{path} is not valid TOML"))?;
    let mut etcd = None;
    for role in config_file::ROLES {
        // Each role with a table; a file with neither is read as the conductor's.
        let read_as_conductor = role == "conductor" && !doc.contains_key("gateway");
        if !doc.contains_key(role) && !read_as_conductor {
            continue;
        }
        let argv: Vec<OsString> = ["ferric", role, "--config", &path]
            .iter()
            .map(OsString::from)
            .collect();
        let argv = config_file::expand(argv, &crate::Cli::command())?;
        let cli = match crate::Cli::try_parse_from(&argv) {
            Ok(cli) => cli,
            Err(e) => bail!("[{role}] of {path}: {}", e.to_string().trim()),
        };
        let n = argv.len() - 4;
        println!("config: [{role}] ok ({n} options from the file)");
        if etcd.is_none() {
            etcd = match cli.cmd {
                crate::Cmd::Conductor(a) => Some(a.etcd.clone()),
                crate::Cmd::Gateway(a) => Some(a.etcd.clone()),
                _ => None,
            };
        }
    }
    let etcd = etcd.context("no etcd settings")?;
    let cfg = etcd.config();
    let tls = if cfg.ca_cert.is_some() {
        "TLS"
    } else {
        "plain"
    };
    let auth = match &cfg.user {
        Some(u) => format!("user {u}"),
        None => "no authentication".into(),
    };
    println!(
        "etcd: {} ({tls}, {auth}), prefix {}",
        cfg.endpoints.join(","),
        cfg.prefix
    );
    let cluster = ferric_cluster::Cluster::connect(&cfg)
        .await
        .with_context(|| format!("cannot reach etcd at {}", cfg.endpoints.join(",")))?;
    let facts = cluster
        .etcd_facts()
        .await
        .context("etcd answered, but not to a status, member list and read of the prefix")?;
    println!(
        "etcd: version {}, {} members",
        facts.version,
        facts.members.len()
    );
    for m in &facts.members {
        println!(
            "  {:016x} {}{}  {}",
            m.id,
            m.name,
            if m.leader { " (leader)" } else { "" },
            m.client_urls.join(",")
        );
    }
    println!(
        "etcd: {} keys under {} readable",
        facts.keys_under_prefix, cfg.prefix
    );
    println!("ok");
    Ok(())
}
