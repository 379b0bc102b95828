//! gingham-lab: builds topologies out of network namespaces on this machine (root).
//!
//! `gingham-lab up`: a Gingham cluster of N nodes with pods, BGP between the nodes, and a ping
//! matrix between all pods; then tears everything down (unless `--keep`).
//!
//! `gingham-lab interop`: our speaker against BIRD, FRR and GoBGP; prints the session table
//! and the routes exchanged, then tears everything down (unless `--keep`).

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gingham_integration::interop::{self, InteropLab, OUR_PREFIX_V4, OUR_PREFIX_V6};

#[derive(Parser)]
#[command(name = "gingham-lab", version, about = "Gingham labs built from network namespaces")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A whole cluster: nodes running gingham-agent, pods made through gingham-cni, BGP mesh.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// Keep the lab running until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Run the agents from this image with podman, as the DaemonSet would (build it with
        /// scripts/image.sh).
        #[arg(long)]
        image: Option<String>,
    },
    /// Peer our speaker with BIRD, FRR and GoBGP (iBGP/eBGP, IPv4/IPv6, 2/4-octet ASNs).
    Interop {
        /// Keep the lab running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Node benchmarks: CNI latency vs bridge+host-local, 100k routes vs ip -batch, pod-to-route
    /// latency across nodes by stage, agent memory with 3 and 20 nodes, a full table from the
    /// ToR into the kernel vs ip -batch and BIRD, and one of two ToRs going with and without
    /// nexthop objects.
    BenchNode {
        /// Comma-separated subset of cni,fib,latency,rss,table,scale,scale-rr (scale: 20, 50 and 100-node meshes; scale-rr: 150 nodes with 2 reflectors; several minutes each).
        #[arg(long, default_value = "cni,fib,latency,rss,table")]
        only: String,
        #[arg(long, default_value_t = 50)]
        pods: usize,
        #[arg(long, default_value_t = 100_000)]
        routes: usize,
    },
    /// Run a Gingham BGP speaker in this namespace until SIGTERM (used by the benchmark).
    Speaker {
        #[arg(long)]
        router_id: std::net::Ipv4Addr,
        #[arg(long)]
        asn: u32,
        /// Become a route reflector with this cluster id.
        #[arg(long)]
        cluster_id: Option<std::net::Ipv4Addr>,
        /// ADDRESS:AS, or ADDRESS:AS:client for a route-reflector client; repeatable.
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
    /// Route-reflector benchmark with our own injectors and counting receivers around the
    /// device (Gingham, BIRD, FRR, GoBGP), in one run, with ratios: fan-out to M clients,
    /// fan-in from many injectors, churn.
    BenchRr {
        #[arg(long, default_value_t = 100_000)]
        prefixes: usize,
        /// Comma-separated client counts for fan-out.
        #[arg(long, default_value = "1,10,50")]
        clients: String,
        /// Comma-separated subset of baseline,fanout,fanin,churn.
        #[arg(long, default_value = "baseline,fanout,fanin,churn")]
        scenarios: String,
        /// Comma-separated subset of gingham,bird,frr,gobgp.
        #[arg(long, default_value = "gingham,bird,frr,gobgp")]
        only: String,
        /// Churn: seconds of churn, and prefixes withdrawn (and announced again) per second.
        #[arg(long, default_value_t = 30)]
        churn_seconds: usize,
        #[arg(long, default_value_t = 10_000)]
        churn_rate: usize,
    },
    /// Failover: a node's fabric link cut, time until the ToR and the other nodes withdraw its
    /// block, then pings lost to a pod on a dual-homed node when its first path is cut; each
    /// with BFD and with the hold timer alone.
    BenchFailover {
        /// The BGP hold time on every session (Calico's default is 90 s).
        #[arg(long, default_value_t = 90)]
        hold_time: u16,
    },
    /// Soak: pod churn and peer flaps on 3 nodes for a long time; prints agent RSS, fds,
    /// threads and tasks over time, lost pings and `ipam check`.
    Soak {
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Seconds between one ADD + one DEL.
        #[arg(long, default_value_t = 2.0)]
        churn_every: f64,
        #[arg(long, default_value_t = 10)]
        churn_pods: usize,
        /// Minutes between peer flaps (node-3's agent restarted).
        #[arg(long, default_value_t = 5)]
        flap_every: u64,
    },
    /// Record golden BGP vectors from BIRD, FRR and GoBGP talking to each other (tshark).
    CaptureGolden {
        /// Fixture file to write.
        #[arg(long, default_value = "bgp/tests/golden/daemons.txt")]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let command = Cli::parse().command;
    if !matches!(command, Command::Speaker { .. }) {
        // Namespaces and daemons must not outlive an interrupted lab.
        gingham_integration::netns::cleanup_on_signals();
    }
    match command {
        Command::Up { nodes, pods_per_node, keep, image } => run_up(nodes, pods_per_node, keep, image),
        Command::Interop { keep } => run_interop(keep),
        Command::BenchNode { only, pods, routes } => {
            use gingham_integration::bench_node;
            bench_node::preflight()?;
            for part in only.split(',') {
                let table = match part.trim() {
                    "cni" => bench_node::cni_latency(pods)?,
                    "fib" => bench_node::fib_install(routes)?,
                    "latency" => bench_node::route_latency(100)?,
                    "rss" => bench_node::agent_rss(&[3, 20])?,
                    "table" => gingham_integration::bgperf::node_table::run(routes)?,
                    "scale" => bench_node::scale(&[20, 50, 100], 0, Duration::from_secs(30))?,
                    "scale-rr" => bench_node::scale(&[150], 2, Duration::from_secs(30))?,
                    other => anyhow::bail!("unknown benchmark {other}"),
                };
                println!("{table}");
            }
            Ok(())
        }
        Command::Speaker { router_id, asn, cluster_id, peers } => run_speaker(router_id, asn, cluster_id, &peers),
        Command::BenchRr { prefixes, clients, scenarios, only, churn_seconds, churn_rate } => {
            let options = gingham_integration::bgperf::Options {
                prefixes,
                clients: clients.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>()?,
                scenarios: scenarios.split(',').map(|s| s.trim().to_string()).collect(),
                devices: only.split(',').map(gingham_integration::bgperf::Device::parse).collect::<Result<_>>()?,
                churn_seconds,
                churn_rate,
            };
            gingham_integration::bgperf::run_all(&options, &std::env::current_exe()?)
        }
        Command::BenchFailover { hold_time } => gingham_integration::bench_failover::failover(hold_time),
        Command::Soak { minutes, churn_every, churn_pods, flap_every } => {
            let options = gingham_integration::soak::SoakOptions {
                duration: Duration::from_secs(minutes * 60),
                churn_every: Duration::from_secs_f64(churn_every),
                churn_pods,
                flap_every: Duration::from_secs(flap_every * 60),
                sample_every: Duration::from_secs(60),
                warm_up: Duration::from_secs((minutes * 60 / 6).min(600)),
            };
            print!("{}", gingham_integration::soak::run(&options)?);
            Ok(())
        }
        Command::CaptureGolden { out } => {
            gingham_integration::golden::capture(&out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn run_up(nodes: usize, pods_per_node: usize, keep: bool, image: Option<String>) -> Result<()> {
    use gingham_integration::lab::{Cluster, LabOptions};
    let from = image.as_ref().map(|i| format!(" (agents from image {i})")).unwrap_or_default();
    println!("building {nodes} nodes on 198.18.0.0/24, pods from 198.19.0.0/16{from} ...");
    let mut options = LabOptions::new(nodes);
    options.image = image;
    let mut lab = Cluster::new(options)?;
    for n in 0..nodes {
        for p in 0..pods_per_node {
            lab.add_pod(n, &format!("pod-{}-{}", n + 1, p + 1))?;
        }
    }
    if let Err(e) = lab.wait_established(Duration::from_secs(60)) {
        if keep {
            eprintln!("{e:#}\nlab kept for inspection (agent logs in {}); Ctrl-C to tear down", lab.dir.path.display());
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        return Err(e);
    }
    // Routes follow the sessions within a moment; wait until every node has every block.
    let blocks_expected = nodes.saturating_sub(1);
    for i in 0..nodes {
        gingham_integration::netns::wait_for("learned routes", Duration::from_secs(30), || {
            let routes = lab.routes(i).ok()?;
            (routes.lines().filter(|l| l.contains(" via ")).count() >= blocks_expected).then_some(())
        })?;
    }
    for i in 0..nodes {
        let s = lab.status(i)?;
        println!("\n== {} ({}) node status", s["node"].as_str().unwrap_or("?"), s["address"].as_str().unwrap_or("?"));
        println!("{:<16} {:<6} {:<16} {:<12} {:>8}", "PEER ADDRESS", "TYPE", "STATE", "SINCE (s)", "PREFIXES");
        for p in s["peers"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:<6} {:<16} {:<12} {:>8}",
                p["address"].as_str().unwrap_or("?"),
                p["type"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["sinceSeconds"].as_u64().map(|s| s.to_string()).unwrap_or("-".into()),
                p["prefixesReceived"].as_u64().unwrap_or(0)
            );
        }
        println!("routes ({}):", lab.nodes[i].name);
        for line in lab.routes(i)?.lines() {
            println!("  {line}");
        }
    }
    println!("\n== ping matrix (row pings column)");
    print!("{:<12}", "");
    for p in &lab.pods {
        print!(" {:>14}", p.address);
    }
    println!();
    let mut failures = 0;
    for from in &lab.pods {
        print!("{:<12}", from.name);
        for to in &lab.pods {
            let ok = lab.ping(from, to.address);
            failures += usize::from(!ok);
            print!(" {:>14}", if ok { "ok" } else { "LOST" });
        }
        println!();
    }
    let tunnels: usize = (0..nodes)
        .map(|i| lab.fabric.hosts[i].ns.exec("ip", &["-d", "link", "show"]).unwrap_or_default())
        .map(|links| ["ipip", "vxlan", "gre", "wireguard", "geneve"].iter().filter(|t| links.contains(&format!(" {t} "))).count())
        .sum();
    println!("\ntunnel devices on the nodes: {tunnels}; pods {}; lost pings {failures}", lab.pods.len());
    if keep {
        println!("lab kept (agent logs in {}); Ctrl-C to tear down", lab.dir.path.display());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    drop(lab);
    if failures > 0 {
        anyhow::bail!("{failures} pings lost");
    }
    Ok(())
}

fn run_interop(keep: bool) -> Result<()> {
    println!("building fabric: gingham (h1), BIRD (h2), FRR (h3), GoBGP (h4) ...");
    let lab = InteropLab::up()?;
    if let Err(e) = lab.converge(Duration::from_secs(60)) {
        eprintln!("{}", lab.logs());
        return Err(e);
    }
    // Let the peers take our routes in and a few keepalives pass.
    std::thread::sleep(Duration::from_secs(4));

    println!("\nGingham sessions (speaker in h1, router id {}):", interop::OUR_V4);
    println!(
        "{:<12} {:<16} {:>11} {:>11} {:<12} {:>6} {:>5} {:>9}  FAMILIES / LAST ERROR",
        "PEER", "ADDRESS", "LOCAL AS", "PEER AS", "STATE", "HOLD", "4-OCT", "PFX RCVD"
    );
    for (name, s) in lab.speaker.snapshots() {
        let (hold, four, caps) = match &s.negotiated {
            Some(n) => (
                n.hold_time.to_string(),
                if n.four_octet_as { "yes" } else { "no" },
                n.families.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(","),
            ),
            None => ("-".into(), "-", s.last_error.clone().unwrap_or_default()),
        };
        println!(
            "{:<12} {:<16} {:>11} {:>11} {:<12} {:>6} {:>5} {:>9}  {}",
            name,
            s.peer.ip(),
            s.local_as,
            s.peer_as,
            s.state,
            hold,
            four,
            s.prefixes_received,
            caps
        );
    }

    println!("\nRoutes our speaker received:");
    let view = lab.speaker.view();
    let mut rows: Vec<String> = view
        .received
        .iter()
        .flat_map(|(peer, table)| {
            table.iter().map(move |(p, a)| {
                format!(
                    "  {:<18} from {:<16} as-path [{}]",
                    p.to_string(),
                    peer.ip(),
                    a.as_path.as_ref().map(|p| p.to_string()).unwrap_or_default()
                )
            })
        })
        .collect();
    rows.sort();
    rows.iter().for_each(|r| println!("{r}"));

    println!("\nOur routes as the peers see them:");
    for (who, prefix, seen) in [
        ("BIRD (bird_ibgp)", OUR_PREFIX_V4, lab.bird.routes_from("bird_ibgp").contains(&OUR_PREFIX_V4.to_string())),
        ("BIRD (bird_ebgp)", OUR_PREFIX_V6, lab.bird.routes_from("bird_ebgp").contains(&OUR_PREFIX_V6.to_string())),
        ("FRR  ipv4", OUR_PREFIX_V4, lab.frr.route("ipv4", OUR_PREFIX_V4).is_some()),
        ("FRR  ipv6", OUR_PREFIX_V6, lab.frr.route("ipv6", OUR_PREFIX_V6).is_some()),
        ("GoBGP ipv4", OUR_PREFIX_V4, !lab.gobgp.paths("ipv4", OUR_PREFIX_V4).is_empty()),
        ("GoBGP ipv6", OUR_PREFIX_V6, !lab.gobgp.paths("ipv6", OUR_PREFIX_V6).is_empty()),
    ] {
        println!("  {who:<18} {prefix:<18} {}", if seen { "present" } else { "MISSING" });
    }
    if keep {
        println!("\nlab kept; namespaces: {}", lab.fabric.hosts.iter().map(|h| h.ns.name().to_owned()).collect::<Vec<_>>().join(" "));
        println!("press Ctrl-C to tear down");
        wait_for_ctrl_c();
    }
    println!("\ntearing down");
    Ok(())
}

fn wait_for_ctrl_c() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    if let Ok(rt) = rt {
        rt.block_on(async {
            let _either_way_we_tear_down = tokio::signal::ctrl_c().await;
        });
    }
}

/// A standalone speaker in the current namespace, for measurements against other daemons.
fn run_speaker(router_id: std::net::Ipv4Addr, asn: u32, cluster_id: Option<std::net::Ipv4Addr>, peers: &[String]) -> Result<()> {
    use gingham_bgp::speaker::{self, NeighborConfig, SpeakerConfig};
    // As the agent runs it: two workers, so peer tasks encode and write beside the RIB's task.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut config = SpeakerConfig::new(router_id, asn);
        config.cluster_id = cluster_id;
        config.listen = vec!["0.0.0.0:179".parse()?];
        // Nobody installs these routes (as BIRD's configuration here has no kernel protocol):
        // the stream of changes goes unread, so the speaker keeps none.
        let (handle, changes) = speaker::spawn(config)?;
        drop(changes);
        for p in peers {
            let mut parts = p.split(':');
            let addr = parts.next().unwrap_or_default().parse()?;
            let peer_as = parts.next().map(str::parse).transpose()?.unwrap_or(asn);
            let mut n = NeighborConfig::new(addr, peer_as);
            n.rr_client = parts.next() == Some("client");
            n.connect_retry = Duration::from_secs(1);
            handle.add_peer(n).await?;
        }
        println!("ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drop(handle);
        Ok::<(), anyhow::Error>(())
    })
}
