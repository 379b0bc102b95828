//! Failover benchmark (`gingham-lab bench-failover`): three nodes and a BIRD top-of-rack; node-3's
//! port on the fabric bridge goes down, and the clock runs until the ToR and both other nodes
//! have withdrawn node-3's pod block. Once with BFD (the mesh's `nodeToNodeMeshBFD`, the ToR's
//! `bfd on`, 300 ms x 3), once with the BGP hold time alone, in one run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gingham_api::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec, BfdSpec};

use crate::daemons::Bird;
use crate::lab::{Cluster, LabOptions};
use crate::netns::wait_for;

/// The BIRD ToR (198.18.0.14, AS 65010) of a three-node lab, with `bfd on` towards the nodes
/// when asked; also the ToR of `integration/tests/bfd.rs`.
pub fn tor_config(hold: u16, bfd: bool) -> String {
    let bfd_on = if bfd { "bfd on;" } else { "" };
    format!(
        r#"
router id 198.18.0.14;
protocol device {{}}
protocol bfd {{
  interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
}}
template bgp node {{
  local 198.18.0.14 as 65010; hold time {hold}; {bfd_on}
  # BIRD waits 60 s after an error before it accepts the session again by default.
  error wait time 1, 5;
  ipv4 {{ import all; export none; }};
}}
protocol bgp n1 from node {{ neighbor 198.18.0.11 as 64512; }}
protocol bgp n2 from node {{ neighbor 198.18.0.12 as 64512; }}
protocol bgp n3 from node {{ neighbor 198.18.0.13 as 64512; }}
"#
    )
}

/// Seconds until the ToR, node-1 and node-2 no longer route node-3's block.
fn one(hold: u16, bfd: bool) -> Result<[Duration; 3]> {
    let mut options = LabOptions::new(3);
    options.extra_hosts = 1;
    options.hold_time = hold;
    let mut lab = Cluster::new(options)?;
    let spec = bfd.then(BfdSpec::default);
    lab.modify::<BGPConfiguration>("default", |c| c.spec.node_to_node_mesh_bfd = spec.clone())?;
    let tor_peer = BGPPeerSpec { peer_ip: Some("198.18.0.14".into()), as_number: Some(65010), bfd: spec.clone(), ..Default::default() };
    lab.create(&BGPPeer::new("tor", tor_peer))?;
    let tor = Bird::start(&lab.fabric.hosts[3].ns, &tor_config(hold, bfd))?;
    let pod = lab.add_pod(2, "behind-the-cut")?.address;
    lab.wait_established(Duration::from_secs(60))?;
    let block = format!("{}/26", ipnetwork::Ipv4Network::new(pod, 26)?.network());
    wait_for("the ToR learned node-3's block", Duration::from_secs(30), || tor.routes_from("n3").contains(&block).then_some(()))?;
    if bfd {
        wait_for("BFD Up", Duration::from_secs(30), || (tor.bfd_state("198.18.0.13").as_deref() == Some("Up")).then_some(()))?;
    }
    // Without BFD a node keeps the routes of a peer whose hold timer expired as stale for the
    // graceful-restart time (120 s by default) on top of the hold time.
    cut_node3_and_wait(&lab, &tor, &block, Duration::from_secs(u64::from(hold) + 300))
}

/// Sets node-3's port on the fabric bridge down and waits until node-3's `block` is gone from
/// the ToR (protocol `n3`) and from node-1's and node-2's kernels: the times since the cut.
pub fn cut_node3_and_wait(lab: &Cluster, tor: &Bird, block: &str, timeout: Duration) -> Result<[Duration; 3]> {
    let cut = Instant::now();
    lab.fabric.bridge.ip(&["link", "set", "p3", "down"])?;
    let mut seen: [Option<Duration>; 3] = [None; 3];
    wait_for("node-3's block withdrawn everywhere", timeout, || {
        if seen[0].is_none() && !tor.routes_from("n3").iter().any(|r| r == block) {
            seen[0] = Some(cut.elapsed());
        }
        for (i, slot) in seen.iter_mut().enumerate().skip(1) {
            let routes = lab.fabric.hosts[i - 1].ns.exec("ip", &["route", "show", "exact", block]).unwrap_or_default();
            if slot.is_none() && !routes.contains("via 198.18.0.13") {
                *slot = Some(cut.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        seen.iter().all(Option::is_some).then_some(())
    })
    .with_context(|| {
        let routes: Vec<String> =
            (0..2).map(|i| lab.fabric.hosts[i].ns.exec("ip", &["route", "show", "exact", block]).unwrap_or_default()).collect();
        format!(
            "withdrawn so far (ToR, node-1, node-2): {seen:?}; ToR has {:?}; nodes: {routes:?}\nnode-1: {}\nToR: {}",
            tor.routes_from("n3"),
            lab.status(0).map(|s| s["peers"].to_string()).unwrap_or_default(),
            tor.cmd("show bfd sessions").unwrap_or_default()
        )
    })?;
    Ok(seen.map(|s| s.unwrap_or_default()))
}

pub fn failover(hold: u16) -> Result<()> {
    println!("Failover: node-3's fabric port down; time until its block is withdrawn (hold time {hold} s)");
    let with = one(hold, true)?;
    let without = one(hold, false)?;
    println!("| detection           | ToR (BIRD) |   node-1 |   node-2 |      all |");
    println!("|---------------------|-----------:|---------:|---------:|---------:|");
    for (name, t) in [("BFD 300 ms x 3", with), ("hold timer only", without)] {
        let all = t.iter().max().copied().unwrap_or_default();
        println!(
            "| {name:<19} | {:>8.2} s | {:>6.2} s | {:>6.2} s | {:>6.2} s |",
            t[0].as_secs_f64(),
            t[1].as_secs_f64(),
            t[2].as_secs_f64(),
            all.as_secs_f64()
        );
    }
    let ratio = with.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64()
        / without.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64().max(1e-9);
    println!("BFD / hold timer: {ratio:.3}x");
    Ok(())
}
