//! `ferric bench api`: the gateway under load, as Ironic clients use it. Three conductors and
//! one `ferric gateway` process on a fresh key prefix. First the suite every endpoint gets
//! (`bench_target`, the same client `--target` and `compare` use). Then Ferric's own: nodes
//! enrolled with traits and Nova's list; every node managed and provided (each timed until all
//! have reached the state, read from etcd, not from the gateway); last, a deploy wave with 2 s
//! steps during which one conductor is SIGKILLed, timed until every node is `active` or
//! `deploy failed`.

use crate::procs::{self, Etcd, Proc};
use ferric_cluster::placement::bucket_owner;
use ferric_cluster::{Cluster, EtcdConfig};
use ferric_model::{Bucket, ProvisionState};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Concurrent API clients (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 3)]
    pub conductors: usize,
    #[arg(long, default_value_t = 5.0)]
    pub lease_ttl: f64,
    /// Samples of `GET /v1/nodes?detail=true&limit=1000`, and of Nova's
    /// `GET /v1/nodes?fields=uuid,name,traits&limit=1000`.
    #[arg(long, default_value_t = 50)]
    pub list_samples: usize,
    /// Stop after the suite and Nova's list (no deploy wave with a conductor's death).
    #[arg(long)]
    pub lists_only: bool,
    /// Stop after the suite (the workloads every endpoint gets).
    #[arg(long)]
    pub suite_only: bool,
    /// `--target URL` and its credentials: drive that endpoint instead (`bench_target`).
    #[command(flatten)]
    pub target: crate::bench_target::TargetArgs,
}

/// A keep-alive HTTP/1.1 connection to the gateway (requests one at a time).
pub(crate) struct Conn {
    io: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub(crate) async fn open(port: u16) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::new(s),
            host: format!("127.0.0.1:{port}"),
        })
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-OpenStack-Ironic-API-Version: 1.95\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.io.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.io.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.io.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.io.read_exact(&mut buf).await?;
        Ok((status, buf))
    }
}

pub(crate) async fn wait_healthy(port: u16, gw: &Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::open(port).await {
            if let Ok((200, _)) = c.request("GET", "/healthz", None).await {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("gateway not healthy; see {}", gw.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `f(i)` for i in 0..n on `clients` concurrent connections; returns the elapsed time.
pub(crate) async fn fan_out<F, Fut>(
    port: u16,
    clients: usize,
    n: usize,
    f: F,
) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (String, String, Option<String>, u16)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = next.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(port).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let (method, path, body, want) = f(i).await;
                let (status, resp) = conn.request(&method, &path, body.as_deref()).await?;
                if status != want {
                    anyhow::bail!(
                        "{method} {path}: {status} {}",
                        String::from_utf8_lossy(&resp)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed())
}

/// `PUT /v1/nodes/{id}/states/provision {"target": verb}` for every node; the time to send them.
pub(crate) async fn provision_all(
    port: u16,
    clients: usize,
    ids: &Arc<Vec<String>>,
    verb: &'static str,
) -> anyhow::Result<Duration> {
    let ids = ids.clone();
    fan_out(port, clients, ids.len(), move |i| {
        let id = ids[i].clone();
        async move {
            (
                "PUT".to_string(),
                format!("/v1/nodes/{id}/states/provision"),
                Some(format!(r#"{{"target": "{verb}"}}"#)),
                202,
            )
        }
    })
    .await
}

/// Waits until at least `n` nodes are in `state`.
async fn until_some(
    cluster: &Cluster,
    state: ProvisionState,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while count_in(cluster, state).await? < n {
        if Instant::now() > deadline {
            anyhow::bail!("fewer than {n} nodes reached {state} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn count_in(cluster: &Cluster, state: ProvisionState) -> anyhow::Result<usize> {
    let (views, _) = cluster.list_nodes().await?;
    Ok(views
        .iter()
        .filter(|v| v.status.provision_state == state)
        .count())
}

/// Waits (bounded) until `n` nodes rest in `state` (no target) and satisfy `done`; when.
pub(crate) async fn until_all(
    cluster: &Cluster,
    state: ProvisionState,
    n: usize,
    timeout: Duration,
    done: impl Fn(&ferric_cluster::NodeView) -> bool + Copy,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let (views, _) = cluster.list_nodes().await?;
        let got = views
            .iter()
            .filter(|v| {
                v.status.provision_state == state && v.status.target_provision_state.is_none()
            })
            .filter(|v| done(v))
            .count();
        if got >= n {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {got} of {n} nodes reached {state} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A benchmark's cluster: etcd under `prefix`, conductors and one gateway on a free port.
pub(crate) struct ApiCluster {
    pub cluster: Cluster,
    pub conductors: Vec<Proc>,
    pub gateway: Proc,
    pub port: u16,
}

impl ApiCluster {
    /// Starts `conductors` conductors and a gateway whose concurrency caps let `nodes` deploys
    /// and cleans run at once (the default caps, 1,000, would turn most of a bigger wave away
    /// with 503; benchmarks measure the conductors), and waits until all have joined.
    pub(crate) async fn start(
        dir: &Path,
        etcd: &Etcd,
        prefix: &str,
        conductors: usize,
        lease_ttl: f64,
        nodes: usize,
    ) -> anyhow::Result<ApiCluster> {
        let mut cfg = EtcdConfig::new(&etcd.url);
        cfg.prefix = prefix.into();
        cfg.timeout = Duration::from_secs(30);
        let cluster = Cluster::connect(&cfg).await?;
        let procs: Vec<Proc> = (1..=conductors)
            .map(|i| {
                procs::conductor(
                    dir,
                    &etcd.url,
                    prefix,
                    &format!("bench-c{i}"),
                    lease_ttl,
                    &[],
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let port = procs::free_port()?;
        let cap = nodes.max(1000).to_string();
        let gateway = procs::gateway(
            dir,
            &etcd.url,
            prefix,
            "bench-gateway",
            &format!("127.0.0.1:{port}"),
            &[
                "--max-concurrent-deploys",
                &cap,
                "--max-concurrent-cleans",
                &cap,
            ],
        )?;
        wait_healthy(port, &gateway).await?;
        // Let every conductor join before the load starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.list_conductors().await?.1.len() < conductors {
            if Instant::now() > deadline {
                anyhow::bail!("conductors did not join");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And until the buckets are where placement puts them: a cluster that has just started
        // hands most of its 4,096 buckets from the first conductor up to the others (a release,
        // an acquisition and a read each), and the first workload would otherwise pay for it
        // (at 1,000 nodes on three conductors: two etcd transactions per enrolled node instead
        // of 0.2, and a third of the rate).
        loop {
            let (_, members) = cluster.list_conductors().await?;
            let names: Vec<&str> = members.keys().map(String::as_str).collect();
            let (_, buckets) = cluster.list_buckets().await?;
            let placed = buckets.len() == usize::from(Bucket::COUNT)
                && buckets.iter().all(|(b, holder, _, _)| {
                    holder.as_deref() == bucket_owner(*b, names.iter().copied())
                });
            if placed {
                break;
            }
            if Instant::now() > deadline + Duration::from_secs(30) {
                anyhow::bail!("the conductors did not settle their buckets");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And until the gateway's copy has them too (it serves the drivers of live
        // conductors only: a client asking right away would be told there is no driver).
        let mut conn = Conn::open(port).await?;
        loop {
            if let Ok((200, _)) = conn.request("GET", "/v1/drivers/fake-hardware", None).await {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the gateway does not list the conductors' drivers");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(ApiCluster {
            cluster,
            conductors: procs,
            gateway,
            port,
        })
    }
}

pub async fn run(dir: &Path, etcd: &Etcd, args: ApiArgs) -> anyhow::Result<()> {
    let ApiCluster {
        cluster,
        mut conductors,
        gateway: gw,
        port,
    } = ApiCluster::start(
        dir,
        etcd,
        "/bench-api/",
        args.conductors,
        args.lease_ttl,
        args.nodes,
    )
    .await?;
    let n = args.nodes;
    println!(
        "api: {} conductors, 1 gateway, {n} fake-hardware nodes, {} clients",
        args.conductors, args.clients
    );

    // The suite every endpoint gets (`--target`), with the same client: its nodes are its
    // own and gone when it ends.
    let ep = crate::bench_target::Endpoint::connect(
        &format!("http://127.0.0.1:{port}"),
        crate::bench_target::Auth::None,
        args.clients,
    )
    .await?;
    let mut opts = args.target.options(n, args.clients, args.list_samples);
    opts.profiler = Some(Arc::new(crate::bench_profile::Profiler::new(
        &etcd.url,
        vec![
            ("etcd".into(), vec![etcd.proc.pid()]),
            ("gateway".into(), vec![gw.pid()]),
            (
                "conductors".into(),
                conductors.iter().map(|c| c.pid()).collect(),
            ),
        ],
    )));
    if let Some(p) = &opts.profiler {
        if !p.until_quiet(Duration::from_secs(60)).await {
            println!("(etcd was still busy after 60 s of waiting for the cluster to settle)");
        }
    }
    let suite = crate::bench_target::run_suite(std::sync::Arc::new(ep), &opts).await?;
    if let Some(path) = &args.target.json {
        std::fs::write(path, serde_json::to_vec_pretty(&suite)?)?;
        println!("result: {}", path.display());
    }
    if args.suite_only {
        return Ok(());
    }

    // Ferric's own: Nova's list with traits, and a deploy wave through a conductor's death.
    let took = fan_out(port, args.clients, n, |i| async move {
        let body = format!(r#"{{"driver": "fake-hardware", "name": "bench-{i:06}"}}"#);
        ("POST".to_string(), "/v1/nodes".to_string(), Some(body), 201)
    })
    .await?;
    println!(
        "enrolled {n} nodes again for Ferric's own phases in {:.2} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let (views, _) = cluster.list_nodes().await?;
    let ids: Arc<Vec<String>> = Arc::new(views.iter().map(|v| v.spec.id.to_string()).collect());
    anyhow::ensure!(ids.len() == n, "etcd holds {} nodes, not {n}", ids.len());

    // Wait until every node runs on a conductor, so that the verbs below are not queued
    // behind the initial reservations.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running: u64 = cluster
            .list_conductors()
            .await?
            .1
            .values()
            .map(|c| c.running)
            .sum();
        if running as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {running} of {n} node actors running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut conn = Conn::open(port).await?;
    // Nova's list (`baremetal node list --fields uuid,name,traits --limit 1000`), with traits.
    let traited = ids.clone();
    let took = fan_out(port, args.clients, n, move |i| {
        let id = traited[i].clone();
        async move {
            (
                "PUT".to_string(),
                format!("/v1/nodes/{id}/traits"),
                Some(r#"{"traits": ["CUSTOM_BENCH", "HW_CPU_X86_AVX2"]}"#.to_string()),
                204,
            )
        }
    })
    .await?;
    println!(
        "traits: PUT /v1/nodes/{{id}}/traits on {n} nodes in {:.2} s = {:.0}/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let mut samples = Vec::with_capacity(args.list_samples);
    for _ in 0..args.list_samples {
        let t = Instant::now();
        let (status, body) = conn
            .request("GET", "/v1/nodes?fields=uuid,name,traits&limit=1000", None)
            .await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status == 200, "list: {status}");
        anyhow::ensure!(
            body.windows(12).any(|w| w == b"CUSTOM_BENCH"),
            "the list shows no traits"
        );
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "list: GET /v1/nodes?fields=uuid,name,traits&limit=1000 p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms over {} requests (target p50 <= 15 ms)",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1],
        samples.len()
    );
    if args.lists_only {
        return Ok(());
    }

    for (verb, state) in [
        ("manage", ProvisionState::Manageable),
        ("provide", ProvisionState::Available),
    ] {
        let t0 = Instant::now();
        let sent = provision_all(port, args.clients, &ids, verb).await?;
        let done = until_all(&cluster, state, n, Duration::from_secs(300), |_| true).await?;
        println!(
            "{verb}: {n} requests accepted in {:.2} s; all {n} nodes {state} after {:.2} s (target <= 5 s for manage and provide)",
            sent.as_secs_f64(),
            done.duration_since(t0).as_secs_f64()
        );
    }

    // A deploy wave with 2 s steps, and one conductor SIGKILLed in the middle of it.
    let ids2 = ids.clone();
    fan_out(port, args.clients, n, move |i| {
        let id = ids2[i].clone();
        async move {
            (
                "PATCH".to_string(),
                format!("/v1/nodes/{id}"),
                Some(
                    r#"[{"op": "add", "path": "/driver_info/fake_step_secs", "value": 2}]"#
                        .to_string(),
                ),
                200,
            )
        }
    })
    .await?;
    let t0 = Instant::now();
    provision_all(port, args.clients, &ids, "active").await?;
    until_some(
        &cluster,
        ProvisionState::Deploying,
        n / 10,
        Duration::from_secs(60),
    )
    .await?;
    let victim = conductors.remove(0);
    let killed_at = Instant::now();
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(300);
    let (active, failed) = loop {
        let (views, _) = cluster.list_nodes().await?;
        let count = |s| {
            views
                .iter()
                .filter(|v| v.status.provision_state == s)
                .count()
        };
        let (active, failed) = (
            count(ProvisionState::Active),
            count(ProvisionState::DeployFailed),
        );
        if active + failed >= n {
            break (active, failed);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "after the kill: {active} active, {failed} deploy failed of {n} after 300 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "deploy wave with SIGKILL of 1 of {} conductors {:.2} s into it (2 s steps, TTL {} s): every node active or deploy failed {:.2} s after the kill ({active} active, {failed} deploy failed; none stuck)",
        args.conductors,
        killed_at.duration_since(t0).as_secs_f64(),
        args.lease_ttl,
        killed_at.elapsed().as_secs_f64()
    );
    drop(gw);
    Ok(())
}
