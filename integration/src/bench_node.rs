//! Node benchmarks (`gingham-lab bench-node`), each side by side with its reference in one run:
//! CNI ADD/DEL latency against Debian's `bridge` + `host-local`, installing 100,000 routes
//! through the FIB syncer against `ip -batch`, pod-created-to-route-on-another-node latency by stage, and
//! agent memory with 3 and 20 nodes.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::lab::{metric_sample, run_plugin, workspace_binary, Cluster, LabOptions};
use crate::netns::{wait_for, Netns, TempDir};
use crate::proc_stats;
use crate::update_tap::UpdateTap;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Latencies {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// ADD then DEL of `pods` pods, sequentially or all at once; per-invocation wall time.
fn measure(pods: usize, concurrent: bool, invoke: &(dyn Fn(&str, usize, &Netns) -> Result<String> + Sync)) -> Result<Latencies> {
    let namespaces: Vec<Netns> = (0..pods).map(|_| Netns::new("gbench")).collect::<Result<_>>()?;
    let timed = |cmd: &str, i: usize| -> Result<Duration> {
        let t = Instant::now();
        invoke(cmd, i, &namespaces[i])?;
        Ok(t.elapsed())
    };
    let run = |cmd: &str| -> Result<Vec<Duration>> {
        if concurrent {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..pods).map(|i| s.spawn(move || timed(cmd, i))).collect();
                hs.into_iter().map(|h| h.join().expect("no panic")).collect()
            })
        } else {
            (0..pods).map(|i| timed(cmd, i)).collect()
        }
    };
    let add = run("ADD")?;
    let del = run("DEL")?;
    Ok(Latencies { add, del })
}

pub fn cni_latency(pods: usize) -> Result<String> {
    let lab = Cluster::new(LabOptions::new(1))?;
    let node_ns = &lab.fabric.hosts[0].ns;
    let cni_dir = Path::new("/usr/lib/cni");
    let bridge = cni_dir.join("bridge");
    anyhow::ensure!(bridge.is_file(), "{} missing: apt-get install containernetworking-plugins", bridge.display());
    let state = TempDir::new("gingham-hostlocal")?;
    let reference_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "reference", "type": "bridge", "bridge": "cni0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "198.19.128.0/17", "dataDir": state.path},
    });
    let gingham = |cmd: &str, i: usize, ns: &Netns| lab.cni(0, cmd, &format!("{:064x}", i + 1), ns, &format!("bench-{i}"));
    let reference = |cmd: &str, i: usize, ns: &Netns| {
        run_plugin(node_ns, &bridge, cmd, &format!("{:064x}", i + 1), ns, &format!("ref-{i}"), &reference_conf)
    };
    let mut out = format!("CNI latency, {pods} pods, plugin invoked in the node namespace as a runtime does (ms)\n");
    out.push_str(&format!(
        "{:<36} {:>9} {:>9} {:>9} {:>9} {:>16} {:>16}\n",
        "plugin / mode", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "agent ADD mean", "IPAM assign mean"
    ));
    for concurrent in [false, true] {
        let mode = if concurrent { "concurrent" } else { "sequential" };
        // The agent times each assignment from the request to the IPAM writer's answer, its
        // queue included: with concurrent ADDs, how long they wait for their address.
        let before = agent_add_totals(&lab)?;
        let mut ours = measure(pods, concurrent, &gingham)?;
        let after = agent_add_totals(&lab)?;
        let mean = |i: usize| (after[i].0 - before[i].0) / (after[i].1 - before[i].1).max(1.0) * 1000.0;
        let mut theirs = measure(pods, concurrent, &reference)?;
        let row = |l: &mut Latencies| {
            [percentile(&mut l.add, 0.5), percentile(&mut l.add, 0.99), percentile(&mut l.del, 0.5), percentile(&mut l.del, 0.99)]
        };
        let (a, b) = (row(&mut ours), row(&mut theirs));
        out.push_str(&format!(
            "{:<36} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>16.2} {:>16.2}\n",
            format!("gingham, {mode}"),
            ms(a[0]),
            ms(a[1]),
            ms(a[2]),
            ms(a[3]),
            mean(0),
            mean(1)
        ));
        out.push_str(&format!(
            "{:<36} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            format!("bridge + host-local, {mode}"),
            ms(b[0]),
            ms(b[1]),
            ms(b[2]),
            ms(b[3])
        ));
        let r = |i: usize| a[i].as_secs_f64() / b[i].as_secs_f64();
        out.push_str(&format!(
            "{:<36} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x\n",
            format!("gingham / reference, {mode}"),
            r(0),
            r(1),
            r(2),
            r(3)
        ));
    }
    Ok(out)
}

/// The /32 routes both sides install: 198.18.16.0 upwards, all inside 198.18.0.0/15.
fn bench_prefixes(n: usize) -> Vec<Ipv4Addr> {
    let base = u32::from(Ipv4Addr::new(198, 18, 16, 0));
    (0..n as u32).map(|i| Ipv4Addr::from(base + i)).collect()
}

/// An empty namespace whose gateway 198.18.1.2 is on a connected subnet.
pub(crate) fn route_ns() -> Result<Netns> {
    let ns = Netns::new("gfib")?;
    // A veth pair inside the namespace gives the gateway a connected subnet (this kernel has
    // no dummy module).
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])?;
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", "v0"])?;
    ns.ip(&["link", "set", "v0", "up"])?;
    ns.ip(&["link", "set", "v1", "up"])?;
    Ok(ns)
}

/// Routes of protocol 80 (the agent's) in `ns`.
pub(crate) fn count_routes(ns: &Netns) -> Result<usize> {
    Ok(ns.exec("ip", &["route", "show", "proto", "80"])?.lines().count())
}

/// How long one `ip -batch` of `lines` takes in `ns` (the file is written first, untimed).
pub(crate) fn time_ip_batch(ns: &Netns, dir: &TempDir, name: &str, lines: impl Iterator<Item = String>) -> Result<Duration> {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for line in lines {
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    drop(f);
    let t = Instant::now();
    ns.ip(&["-batch", path.to_str().context("path")?])?;
    Ok(t.elapsed())
}

pub fn fib_install(n: usize) -> Result<String> {
    let prefixes = bench_prefixes(n);
    // Reference: one `ip -batch` of the same routes, then one of their deletions.
    let reference_ns = route_ns()?;
    let dir = TempDir::new("gingham-fib")?;
    let batch = |verb: &'static str| prefixes.iter().map(move |p| format!("route {verb} {p}/32 via 198.18.1.2 proto 80"));
    let reference_add = time_ip_batch(&reference_ns, &dir, "add.batch", batch("add"))?;
    anyhow::ensure!(count_routes(&reference_ns)? == n, "ip -batch installed a different number of routes");
    let reference_del = time_ip_batch(&reference_ns, &dir, "del.batch", batch("del"))?;
    anyhow::ensure!(count_routes(&reference_ns)? == 0, "ip -batch left routes behind");

    // Ours: the agent's FIB syncer, in a namespace of its own.
    let ours_ns = route_ns()?;
    let file = std::fs::File::open(ours_ns.path())?;
    let keys: Vec<gingham_agent::fib::WantKey> = prefixes
        .iter()
        .map(|p| gingham_agent::fib::WantKey {
            prefix: ipnetwork::IpNetwork::new((*p).into(), 32).expect("/32"),
            class: gingham_agent::fib::Class::Learned,
        })
        .collect();
    let (ours_add, ours_del) = std::thread::spawn(move || -> Result<(Duration, Duration)> {
        // SAFETY: setns on this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns: {}", std::io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async move {
            let handle = gingham_agent::netlink::connect()?;
            let fib = gingham_agent::fib::spawn(handle, Default::default());
            let gateway = gingham_agent::fib::Target::Gateways(std::sync::Arc::from([gingham_bgp::rib::Gateway::new(
                "198.18.1.2".parse().expect("literal"),
            )]));
            let t = Instant::now();
            fib.set(keys.iter().map(|k| (*k, Some(gateway.clone()))).collect()).await;
            while fib.stats().await.programmed < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let add = t.elapsed();
            let t = Instant::now();
            fib.set(keys.iter().map(|k| (*k, None)).collect()).await;
            while fib.stats().await.removed < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok((add, t.elapsed()))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("fib thread panicked"))??;
    anyhow::ensure!(count_routes(&ours_ns)? == 0, "the FIB syncer left routes behind");
    let row = |name: &str, d: Duration| format!("{:<36} {:>10.2} {:>14.0}\n", name, d.as_secs_f64(), n as f64 / d.as_secs_f64());
    Ok(format!(
        "{n} routes (/32 via one gateway, protocol 80) installed in an empty namespace, then removed\n{:<36} {:>10} {:>14}\n{}{}{}{}{:<36} {:>9.2}x\n{:<36} {:>9.2}x\n",
        "installer",
        "seconds",
        "routes/s",
        row("gingham FIB syncer, install", ours_add),
        row("ip -batch (reference), install", reference_add),
        row("gingham FIB syncer, remove", ours_del),
        row("ip -batch (reference), remove", reference_del),
        "gingham / ip -batch, install",
        ours_add.as_secs_f64() / reference_add.as_secs_f64(),
        "gingham / ip -batch, remove",
        ours_del.as_secs_f64() / reference_del.as_secs_f64(),
    ))
}

/// Pod created on node A (CNI ADD invoked) -> its route in node B's kernel. Blocks are /32 here
/// so that every pod is a new route on B (with /26 blocks only a block's first pod is). The
/// clock starts when the plugin is invoked: the sandbox namespace exists before, as a runtime
/// makes it before it calls the plugin. Printed per stage: the IPAM assignment (node A's agent
/// times it; its mean), the CNI result, the UPDATE's arrival at node B (a packet socket in B's
/// namespace) and the route in B's kernel (`ip monitor route`).
pub fn route_latency(pods: usize) -> Result<String> {
    let mut options = LabOptions::new(2);
    options.block_size = 32;
    let mut lab = Cluster::new(options)?;
    lab.wait_established(Duration::from_secs(60))?;
    let mut monitor = std::process::Command::new("ip")
        .args(["-n", lab.fabric.hosts[1].ns.name(), "monitor", "route"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = monitor.stdout.take().context("monitor stdout")?;
    let (tx, routes) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    let tap = UpdateTap::start(&lab.fabric.hosts[1].ns)?;
    std::thread::sleep(Duration::from_millis(300));
    let ipam_before = ipam_assign_totals(&lab)?;
    let (mut cni, mut wire, mut kernel, mut install) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..pods {
        let sandbox = Netns::new("gpod")?;
        let t = Instant::now();
        let addr = lab.add_pod_in(0, &format!("lat-{i}"), sandbox)?.address;
        cni.push(t.elapsed());
        let deadline = t + Duration::from_secs(10);
        let arrived = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, announced) = tap.updates.recv_timeout(left).with_context(|| format!("no UPDATE for {addr} reached node 2"))?;
            if announced.contains(&(addr, 32)) {
                break at;
            }
        };
        let installed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = routes.recv_timeout(left).with_context(|| format!("route for {addr} never reached node 2"))?;
            if line.split_whitespace().next() == Some(addr.to_string().as_str()) && !line.starts_with("Deleted") {
                break at;
            }
        };
        wire.push(arrived.duration_since(t));
        kernel.push(installed.duration_since(t));
        install.push(installed.saturating_duration_since(arrived));
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    let ipam_after = ipam_assign_totals(&lab)?;
    let ipam_mean = (ipam_after.0 - ipam_before.0) / (ipam_after.1 - ipam_before.1).max(1.0) * 1000.0;
    let row = |what: &str, samples: &mut Vec<Duration>| {
        let (p50, p99, max) = (percentile(samples, 0.5), percentile(samples, 0.99), percentile(samples, 1.0));
        format!("{what:<44} {:>8.1} {:>8.1} {:>8.1}\n", ms(p50), ms(p99), ms(max))
    };
    Ok(format!(
        "Pod created on node 1 -> route in node 2's kernel, {pods} pods; ms since the CNI invocation\n{:<44} {:>8} {:>8} {:>8}\n{:<44} {:>8.1}   (mean; node 1's agent times it)\n{}{}{}{}target: route in node 2's kernel p50 <= 10 ms, p99 <= 20 ms\n",
        "stage",
        "p50",
        "p99",
        "max",
        "IPAM assign (inside the CNI ADD)",
        ipam_mean,
        row("CNI ADD result at the runtime", &mut cni),
        row("UPDATE arrives at node 2", &mut wire),
        row("route in node 2's kernel", &mut kernel),
        row("  of which node 2: UPDATE -> kernel", &mut install),
    ))
}

/// The agent's own time for CNI ADDs (from the request on its socket to the reply) and for
/// their address assignments, as (sum seconds, count) each.
fn agent_add_totals(lab: &Cluster) -> Result<[(f64, f64); 2]> {
    let metrics = lab.http_get(0, "/metrics")?;
    let add = |what: &str| metric_sample(&metrics, &format!("gingham_cni_request_seconds_{what}{{command=\"ADD\",result=\"ok\"}}"));
    // Before the first ADD the series does not exist yet.
    Ok([(add("sum").unwrap_or(0.0), add("count").unwrap_or(0.0)), ipam_assign_totals(lab)?])
}

/// Node 1's `gingham_ipam_assign_seconds` sum and count.
fn ipam_assign_totals(lab: &Cluster) -> Result<(f64, f64)> {
    let metrics = lab.http_get(0, "/metrics")?;
    Ok((metric_sample(&metrics, "gingham_ipam_assign_seconds_sum")?, metric_sample(&metrics, "gingham_ipam_assign_seconds_count")?))
}

fn rss_kib(pid: i32) -> Option<u64> {
    proc_stats::status(pid, "VmRSS:").ok()
}

pub fn agent_rss(sizes: &[usize]) -> Result<String> {
    let mut out = String::from(
        "Agent resident memory (VmRSS), full mesh, one pod per node; the anonymous part (RssAnon: heap and stacks) beside it, the rest is the binary's mapped pages\n",
    );
    out.push_str(&format!("{:<8} {:>10} {:>10} {:>14}\n", "nodes", "max MB", "mean MB", "max anon MB"));
    for &n in sizes {
        let mut lab = Cluster::new(LabOptions::new(n))?;
        for i in 0..n {
            lab.add_pod(i, &format!("p{i}"))?;
        }
        lab.wait_established(Duration::from_secs(120))?;
        std::thread::sleep(Duration::from_secs(3));
        let rss: Vec<u64> = lab.nodes.iter().filter_map(|node| rss_kib(node.agent.as_ref()?.pid)).collect();
        let anon: Vec<u64> = lab.nodes.iter().filter_map(|node| proc_stats::status(node.agent.as_ref()?.pid, "RssAnon:").ok()).collect();
        anyhow::ensure!(rss.len() == n && anon.len() == n, "could not read every agent's memory");
        let max = *rss.iter().max().unwrap_or(&0) as f64 / 1024.0;
        let mean = rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0;
        let max_anon = *anon.iter().max().unwrap_or(&0) as f64 / 1024.0;
        out.push_str(&format!("{:<8} {:>10.1} {:>10.1} {:>14.1}   target VmRSS < 20 MB\n", n, max, mean, max_anon));
    }
    Ok(out)
}

/// Checks that the binaries the benchmarks drive exist before building anything.
pub fn preflight() -> Result<()> {
    workspace_binary("gingham-agent")?;
    workspace_binary("gingham-cni")?;
    Ok(())
}

/// A full mesh of N nodes with one pod each (and, with `reflectors`, a route-reflector topology
/// instead: the mesh off, that many reflectors in one cluster, every other node their client):
/// time until every session is Established and every node has every other node's block, then
/// the idle CPU of all agents over `idle` and their memory. Targets for 100 nodes on a 2-core
/// machine: converged within 60 s, all agents together at most 20% of one core, at most 20 MB
/// each.
pub fn scale(sizes: &[usize], reflectors: usize, idle: Duration) -> Result<String> {
    let topology = if reflectors == 0 { "full mesh".to_string() } else { format!("{reflectors} route reflectors, mesh off") };
    let mut out = format!(
        "{topology}, one pod per node (idle CPU over {} s, all agents together)\n{:<7} {:>9} {:>14} {:>15} {:>13} {:>11} {:>11}\n",
        idle.as_secs(),
        "nodes",
        "sessions",
        "lab built s",
        "converged s",
        "idle CPU %",
        "RSS max MB",
        "RSS mean MB"
    );
    for &n in sizes {
        let t = Instant::now();
        let mut options = LabOptions::new(n);
        // Calico's default hold time (the lab's 9 s is for quick failure tests): keepalives every 30 s.
        options.hold_time = 90;
        if reflectors > 0 {
            options.mesh = false;
            options.reflectors = (0..reflectors).collect();
        }
        let mut lab = Cluster::new(options)?;
        for i in 0..n {
            lab.add_pod(i, &format!("p{i}"))?;
        }
        let built = t.elapsed();
        lab.wait_established(Duration::from_secs(300))?;
        let expected = n - 1;
        for i in 0..n {
            wait_for("every block route", Duration::from_secs(300), || {
                let routes = lab.routes(i).ok()?;
                (routes.lines().filter(|l| l.contains(" via ")).count() >= expected).then_some(())
            })?;
        }
        let converged = t.elapsed();
        let pids: Vec<i32> = lab.nodes.iter().filter_map(|node| node.agent.as_ref().map(|a| a.pid)).collect();
        let before: f64 = pids.iter().filter_map(|p| proc_stats::cpu_seconds(*p).ok()).sum();
        std::thread::sleep(idle);
        let after: f64 = pids.iter().filter_map(|p| proc_stats::cpu_seconds(*p).ok()).sum();
        let cpu = (after - before) / idle.as_secs_f64() * 100.0;
        let rss: Vec<u64> = pids.iter().filter_map(|p| rss_kib(*p)).collect();
        anyhow::ensure!(rss.len() == n, "could not read every agent's memory");
        let max = *rss.iter().max().unwrap_or(&0) as f64 / 1024.0;
        let mean = rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0;
        let sessions = if reflectors == 0 { n * (n - 1) / 2 } else { (n - reflectors) * reflectors + reflectors * (reflectors - 1) / 2 };
        out.push_str(&format!(
            "{:<7} {:>9} {:>14.1} {:>15.1} {:>13.1} {:>11.1} {:>11.1}\n",
            n,
            sessions,
            built.as_secs_f64(),
            converged.as_secs_f64(),
            cpu,
            max,
            mean
        ));
    }
    out.push_str("targets (100-node mesh): converged <= 60 s, idle CPU <= 20 %, RSS <= 20 MB per agent\n");
    Ok(out)
}
