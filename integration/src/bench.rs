//! The route-reflector benchmark: an injector BIRD client with N static /24s -> the reflector
//! under test -> a receiver BIRD client, all iBGP AS 65000, each in its own namespace. Measures
//! the time from starting the injector until the receiver holds all N prefixes, and the
//! reflector's peak RSS (VmHWM). The prefixes only ever live in BGP tables: no kernel FIB
//! takes them and no packet is sent to them.
//!
//! ```text
//!   h1 injector BIRD 198.18.0.11  ->  h2 reflector 198.18.0.12  ->  h3 receiver BIRD 198.18.0.13
//! ```

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::daemons::{Bird, Frr, GoBgp};
use crate::netns::{wait_for, Daemon, Fabric};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflector {
    Gingham,
    Bird,
    Frr,
    GoBgp,
}

impl Reflector {
    pub fn name(self) -> &'static str {
        match self {
            Reflector::Gingham => "Gingham",
            Reflector::Bird => "BIRD",
            Reflector::Frr => "FRR",
            Reflector::GoBgp => "GoBGP",
        }
    }
}

pub struct Measurement {
    pub reflector: Reflector,
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

fn injector_config(prefixes: usize) -> String {
    let mut c = String::from("router id 198.18.0.11;\nprotocol device {}\nprotocol static bulk { ipv4;\n");
    for i in 0..prefixes {
        // 10.0.0.0/24 upwards, one /24 after another.
        let n = (10u32 << 24) + ((i as u32) << 8);
        let _infallible = writeln!(c, "route {}.{}.{}.0/24 unreachable;", n >> 24, (n >> 16) & 255, (n >> 8) & 255);
    }
    c.push_str(
        "}\nprotocol bgp toreflector { local 198.18.0.11 as 65000; neighbor 198.18.0.12 as 65000; ipv4 { import none; export all; }; }\n",
    );
    c
}

const RECEIVER: &str = "router id 198.18.0.13;\nprotocol device {}\nprotocol bgp toreflector { local 198.18.0.13 as 65000; neighbor 198.18.0.12 as 65000; ipv4 { import all; export none; }; }\n";

fn bird_rr() -> String {
    "router id 198.18.0.12;\nprotocol device {}\n\
     protocol bgp inj { local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000; rr client; rr cluster id 10.255.0.1; ipv4 { import all; export all; }; }\n\
     protocol bgp rcv { local 198.18.0.12 as 65000; neighbor 198.18.0.13 as 65000; rr client; rr cluster id 10.255.0.1; ipv4 { import all; export all; }; }\n"
        .into()
}

const FRR_RR: &str = "router bgp 65000\n bgp router-id 198.18.0.12\n bgp cluster-id 10.255.0.1\n no bgp default ipv4-unicast\n\
 neighbor 198.18.0.11 remote-as 65000\n neighbor 198.18.0.13 remote-as 65000\n address-family ipv4 unicast\n\
  neighbor 198.18.0.11 activate\n  neighbor 198.18.0.11 route-reflector-client\n  neighbor 198.18.0.13 activate\n  neighbor 198.18.0.13 route-reflector-client\n exit-address-family\n";

fn gobgp_rr() -> String {
    let mut c = String::from("[global.config]\n  as = 65000\n  router-id = \"198.18.0.12\"\n");
    for n in ["198.18.0.11", "198.18.0.13"] {
        let _infallible = write!(
            c,
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{n}\"\n    peer-as = 65000\n  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"10.255.0.1\"\n"
        );
    }
    c
}

fn vm_hwm_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM missing")
}

/// Prefix count in the receiver's table.
fn received(bird: &Bird) -> usize {
    let out = bird.cmd("show route count").unwrap_or_default();
    // "100000 of 100000 routes for 100000 networks in table master4"
    out.lines().find_map(|l| l.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0)
}

/// Runs one reflector through the benchmark.
pub fn run(reflector: Reflector, prefixes: usize, gingham_bin: &std::path::Path) -> Result<Measurement> {
    let fabric = Fabric::new(3)?;
    let rr_ns = &fabric.hosts[1].ns;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let pid = match reflector {
        Reflector::Gingham => {
            let child = rr_ns
                .command(gingham_bin.to_str().context("binary path")?)
                .args(["speaker", "--router-id", "198.18.0.12", "--asn", "65000", "--cluster-id", "10.255.0.1"])
                .args(["--peer", "198.18.0.11:65000:client", "--peer", "198.18.0.13:65000:client"])
                .stdout(Stdio::null())
                .spawn()
                .context("starting the Gingham speaker")?;
            let d = Daemon::new("gingham-lab", child.id() as i32, None);
            let pid = d.pid;
            keep.push(Box::new(d));
            pid
        }
        Reflector::Bird => {
            let b = Bird::start(rr_ns, &bird_rr())?;
            let pid = b.daemon.pid;
            keep.push(Box::new(b));
            pid
        }
        Reflector::Frr => {
            let f = Frr::start(rr_ns, FRR_RR)?;
            let pid = f.daemon.pid;
            keep.push(Box::new(f));
            pid
        }
        Reflector::GoBgp => {
            let g = GoBgp::start(rr_ns, &gobgp_rr())?;
            let pid = g.daemon.pid;
            keep.push(Box::new(g));
            pid
        }
    };
    let receiver = Bird::start(&fabric.hosts[2].ns, RECEIVER)?;
    wait_for("receiver session up", Duration::from_secs(60), || receiver.established("toreflector").then_some(()))?;

    let start = Instant::now();
    let injector = Bird::start(&fabric.hosts[0].ns, &injector_config(prefixes))?;
    let deadline = start + Duration::from_secs(600);
    loop {
        if received(&receiver) >= prefixes {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} did not deliver {prefixes} prefixes in 10 minutes (receiver has {})", reflector.name(), received(&receiver));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss_kib = vm_hwm_kib(pid)?;
    drop(injector);
    drop(receiver);
    drop(keep);
    Ok(Measurement { reflector, seconds, peak_rss_kib })
}

/// The table the README shows. Ratios are each reflector's figure over Gingham's (above 1:
/// slower or bigger than Gingham).
pub fn table(results: &[Measurement], prefixes: usize) -> String {
    let ours = results.iter().find(|m| m.reflector == Reflector::Gingham);
    let mut lines = vec![
        format!("route reflector, {prefixes} prefixes, injector BIRD -> RR -> receiver BIRD (iBGP AS 65000)"),
        "| reflector | time to receiver (s) | peak RSS (MB) | time vs Gingham | RSS vs Gingham |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for m in results {
        let (tr, rr) = match ours {
            Some(o) => (format!("{:.2}x", m.seconds / o.seconds), format!("{:.2}x", m.peak_rss_kib as f64 / o.peak_rss_kib as f64)),
            None => ("-".into(), "-".into()),
        };
        lines.push(format!("| {} | {:.2} | {:.1} | {} | {} |", m.reflector.name(), m.seconds, m.peak_rss_kib as f64 / 1024.0, tr, rr));
    }
    lines.push(String::new());
    lines.join("\n")
}
