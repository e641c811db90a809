//! `ferric bench compare --ironic URL`: the suite of `ferric bench api --target` against a
//! given Ironic, then against a Ferric cluster this command starts (etcd, conductors, one
//! gateway), one after the other and never both under load at once; then the ratios, as JSON,
//! a Markdown table and an SVG chart (`plotters`).

use crate::bench_target::{Endpoint, Server, SuiteResult, TargetArgs, Workload};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Nodes each endpoint enrolls (and deletes afterwards).
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Concurrent clients of the write workloads and lookups.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Samples of each list workload.
    #[arg(long, default_value_t = 50)]
    pub list_samples: usize,
    /// Conductors of the Ferric cluster.
    #[arg(long, default_value_t = 3)]
    pub conductors: usize,
    /// Where compare.json, compare.md and compare.svg go.
    #[arg(long, default_value = "target/bench-compare")]
    pub out: PathBuf,
    /// Only redraw compare.md and compare.svg from the compare.json in --out (no run).
    #[arg(long)]
    pub replot: bool,
    /// The Ironic endpoint (`--ironic URL`) and its credentials.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// One workload's ratio: how many times Ferric is faster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub workload: String,
    /// What is compared: `rate`, `p50 latency` or `all reached`.
    pub measure: String,
    pub ironic: f64,
    pub ferric: f64,
    pub unit: String,
    /// Ferric's advantage: > 1 is faster.
    pub times: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub machine: String,
    pub nodes: usize,
    pub clients: usize,
    pub ironic: SuiteResult,
    pub ferric: SuiteResult,
    pub ratios: Vec<Ratio>,
}

/// The figure that answers "how much faster" for a workload, from both results.
fn ratio(i: &Workload, f: &Workload) -> Ratio {
    let (measure, unit, a, b, times) = match (i.reached_s, f.reached_s) {
        (Some(a), Some(b)) => ("all reached", "s", a, b, a / b),
        _ if i.name.starts_with("list") || i.name == "port lookup" => {
            ("p50 latency", "ms", i.p50_ms, f.p50_ms, i.p50_ms / f.p50_ms)
        }
        _ => ("rate", "/s", i.rate, f.rate, f.rate / i.rate),
    };
    Ratio {
        workload: i.name.clone(),
        measure: measure.into(),
        ironic: a,
        ferric: b,
        unit: unit.into(),
        times,
    }
}

pub fn ratios(ironic: &SuiteResult, ferric: &SuiteResult) -> Vec<Ratio> {
    ironic
        .workloads
        .iter()
        .filter_map(|i| {
            let f = ferric.workloads.iter().find(|f| f.name == i.name)?;
            Some(ratio(i, f))
        })
        .collect()
}

fn figure(v: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{v:.0}/s"),
        "ms" => format!("{v:.1} ms"),
        _ => format!("{v:.2} s"),
    }
}

/// The Markdown table of a comparison.
pub fn table(c: &Comparison) -> String {
    let mut out = format!(
        "{} fake-hardware nodes, {} clients, on {}; Ironic {} (API {}), watched by {}; Ferric API {}, watched by {}\n\n| workload | measure | Ironic | Ferric | Ferric is |\n|---|---|---|---|---|\n",
        c.nodes,
        c.clients,
        c.machine,
        c.ironic.target,
        c.ironic.max_version,
        c.ironic.watched_by,
        c.ferric.max_version,
        c.ferric.watched_by
    );
    for r in &c.ratios {
        out.push_str(&format!(
            "| {} | {} | {} | {} | ×{:.1} |\n",
            r.workload,
            r.measure,
            figure(r.ironic, &r.unit),
            figure(r.ferric, &r.unit),
            r.times
        ));
    }
    for (name, why) in c.ironic.skipped.iter().chain(&c.ferric.skipped) {
        out.push_str(&format!("\n{name}: skipped ({why})"));
    }
    out
}

/// A horizontal bar per workload: Ferric's advantage, on a log scale.
pub fn chart(c: &Comparison, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let n = c.ratios.len().max(1);
    let height = 90 + 34 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let hi = c.ratios.iter().map(|r| r.times).fold(10.0f64, f64::max) * 2.0;
    let lo = c.ratios.iter().map(|r| r.times).fold(0.5f64, f64::min) * 0.8;
    // The suite's order from the top: segment i (from the bottom) is ratio n-1-i.
    let row = |i: usize| n - 1 - i;
    let names: Vec<String> = c
        .ratios
        .iter()
        .rev()
        .map(|r| format!("{} ({})", r.workload, r.measure))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Ferric vs Ironic, {} nodes, {} clients: times faster (log scale)",
                c.nodes, c.clients
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(250)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .label_style(("sans-serif", 14))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| format!("×{v}"))
        .draw()?;
    chart.draw_series(c.ratios.iter().enumerate().map(|(k, r)| {
        let i = row(k);
        let color = if r.times >= 1.0 {
            RGBColor(0x2b, 0x6c, 0xb0)
        } else {
            RGBColor(0xc0, 0x39, 0x2b)
        };
        let mut bar = Rectangle::new(
            [
                (1.0, SegmentValue::Exact(i)),
                (r.times, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        bar
    }))?;
    chart.draw_series(c.ratios.iter().enumerate().map(|(k, r)| {
        Text::new(
            format!("×{:.1}", r.times),
            (r.times * 1.08, SegmentValue::CenterOf(row(k))),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Writes compare.json, compare.md and compare.svg into `out`.
pub fn write(c: &Comparison, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("compare.json"), serde_json::to_vec_pretty(c)?)?;
    std::fs::write(out.join("compare.md"), table(c))?;
    chart(c, &out.join("compare.svg"))?;
    Ok(())
}

pub async fn run(dir: &Path, args: CompareArgs) -> anyhow::Result<()> {
    if args.replot {
        let path = args.out.join("compare.json");
        let c: Comparison = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        write(&c, &args.out)?;
        println!("{}", table(&c));
        return Ok(());
    }
    let url = args
        .target
        .target
        .clone()
        .context("--ironic URL: the Ironic to compare with")?;
    let opts = args
        .target
        .options(args.nodes, args.clients, args.list_samples);
    println!("machine: {}", crate::bench::machine());
    let ironic = Arc::new(Endpoint::connect(&url, args.target.auth().await?, args.clients).await?);
    anyhow::ensure!(
        ironic.server == Server::Ironic,
        "{url} is a Ferric gateway; give the Ironic to compare with"
    );
    println!("1/2 Ironic at {url}");
    let ironic = crate::bench_target::run_suite(ironic, &opts).await?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("ironic.json"),
        serde_json::to_vec_pretty(&ironic)?,
    )?;

    println!(
        "2/2 Ferric: etcd, {} conductors, 1 gateway",
        args.conductors
    );
    let etcd = crate::procs::Etcd::start(dir).await?;
    let cluster = crate::bench_api::ApiCluster::start(
        dir,
        &etcd,
        "/bench-compare/",
        args.conductors,
        5.0,
        args.nodes,
    )
    .await?;
    let url = format!("http://127.0.0.1:{}", cluster.port);
    let ferric =
        Arc::new(Endpoint::connect(&url, crate::bench_target::Auth::None, args.clients).await?);
    let ferric = crate::bench_target::run_suite(ferric, &opts).await?;
    drop(cluster);

    let c = Comparison {
        machine: crate::bench::machine(),
        nodes: args.nodes,
        clients: args.clients,
        ratios: ratios(&ironic, &ferric),
        ironic,
        ferric,
    };
    write(&c, &args.out)?;
    println!("\n{}", table(&c));
    println!(
        "\nwrote {0}/compare.json, {0}/compare.md and {0}/compare.svg",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(name: &str, rate: f64, p50: f64, reached: Option<f64>) -> Workload {
        Workload {
            name: name.into(),
            requests: 100,
            concurrency: 16,
            rate,
            p50_ms: p50,
            p99_ms: p50 * 2.0,
            max_ms: p50 * 3.0,
            reached_s: reached,
            profile: None,
        }
    }

    fn suite(server: Server, workloads: Vec<Workload>) -> SuiteResult {
        SuiteResult {
            target: "http://127.0.0.1:1".into(),
            server,
            api_version: "1.95".into(),
            max_version: "1.95".into(),
            nodes: 100,
            clients: 16,
            warmup: 10,
            watched_by: "polling".into(),
            machine: "test".into(),
            workloads,
            skipped: vec![],
        }
    }

    #[test]
    fn each_workload_is_compared_by_its_own_measure() {
        let i = suite(
            Server::Ironic,
            vec![
                wl("enroll", 40.0, 300.0, None),
                wl("list detail", 2.0, 450.0, None),
                wl("manage", 30.0, 400.0, Some(50.0)),
            ],
        );
        let f = suite(
            Server::Ferric,
            vec![
                wl("enroll", 1200.0, 10.0, None),
                wl("list detail", 100.0, 9.0, None),
                wl("manage", 900.0, 12.0, Some(2.0)),
            ],
        );
        let r = ratios(&i, &f);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].measure, "rate");
        assert!((r[0].times - 30.0).abs() < 1e-9);
        assert_eq!(r[1].measure, "p50 latency");
        assert!((r[1].times - 50.0).abs() < 1e-9);
        assert_eq!(r[2].measure, "all reached");
        assert!((r[2].times - 25.0).abs() < 1e-9);
        let c = Comparison {
            machine: "test".into(),
            nodes: 100,
            clients: 16,
            ironic: i,
            ferric: f,
            ratios: r,
        };
        let md = table(&c);
        assert!(
            md.contains("| manage | all reached | 50.00 s | 2.00 s | ×25.0 |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        write(&c, dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("compare.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("×25.0"), "{svg}");
        let back: Comparison =
            serde_json::from_slice(&std::fs::read(dir.path().join("compare.json")).unwrap())
                .unwrap();
        assert_eq!(back.ratios.len(), 3);
    }
}
