//! Failover benchmark (`gingham-lab bench-failover`): three nodes and a BIRD top-of-rack; node-3's
//! port on the fabric bridge goes down, and the clock runs until the ToR and both other nodes
//! have withdrawn node-3's pod block. Once with BFD (the mesh's `nodeToNodeMeshBFD`, the ToR's
//! `bfd on`, 300 ms x 3), once with the BGP hold time alone, in one run.
//!
//! Then the second path ([`second_path`]): node-3 also has a direct uplink to the ToR with its
//! own session, a backup; a client behind the ToR pings a pod on node-3 100 times a second
//! while node-3's fabric port goes down, and the pings lost until both directions have moved to
//! the uplink are counted, again with and without BFD.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gingham_api::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec, BfdSpec};

use crate::daemons::Bird;
use crate::lab::{Cluster, LabOptions};
use crate::netns::{self, wait_for, Netns};

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

/// Three nodes with the hold time `hold` everywhere, a fourth host for the ToR (198.18.0.14,
/// AS 65010) configured as every node's peer, and BFD (300 ms x 3) on the mesh and towards the
/// ToR when `bfd`; the ToR itself is the caller's to start. Returns the lab and the BFD setting.
fn lab_with_tor(hold: u16, bfd: bool) -> Result<(Cluster, Option<BfdSpec>)> {
    let mut options = LabOptions::new(3);
    options.extra_hosts = 1;
    options.hold_time = hold;
    let lab = Cluster::new(options)?;
    let spec = bfd.then(BfdSpec::default);
    lab.modify::<BGPConfiguration>("default", |c| c.spec.node_to_node_mesh_bfd = spec.clone())?;
    let tor_peer = BGPPeerSpec { peer_ip: Some("198.18.0.14".into()), as_number: Some(65010), bfd: spec.clone(), ..Default::default() };
    lab.create(&BGPPeer::new("tor", tor_peer))?;
    Ok((lab, spec))
}

/// Seconds until the ToR, node-1 and node-2 no longer route node-3's block.
fn one(hold: u16, bfd: bool) -> Result<[Duration; 3]> {
    let (mut lab, _) = lab_with_tor(hold, bfd)?;
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
    println!();
    failover_second_path(hold)
}

/// The ToR of the second-path scenario: the sessions of [`tor_config`], one more to node-3 over
/// its direct uplink (198.18.2.1 - 198.18.2.13), and a client subnet (198.18.3.0/24) behind
/// it. The fabric path is the primary one both ways: routes over the uplink get a lower local
/// preference here, and the client subnet goes to node-3 over it with a longer AS path.
fn second_path_tor_config(hold: u16, bfd: bool) -> String {
    let bfd_on = if bfd { "bfd on;" } else { "" };
    format!(
        r#"
router id 198.18.0.14;
protocol device {{}}
protocol direct {{ ipv4; interface "to-cli"; }}
protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; }}
protocol bfd {{
  interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
  interface "n3-b" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
}}
template bgp node {{
  local 198.18.0.14 as 65010; hold time {hold}; {bfd_on}
  error wait time 1, 5;
  ipv4 {{ import all; export where net = 198.18.3.0/24; }};
}}
protocol bgp n1 from node {{ neighbor 198.18.0.11 as 64512; }}
protocol bgp n2 from node {{ neighbor 198.18.0.12 as 64512; }}
protocol bgp n3 from node {{ neighbor 198.18.0.13 as 64512; }}
protocol bgp n3b from node {{
  local 198.18.2.1 as 65010; neighbor 198.18.2.13 as 64512;
  ipv4 {{
    import filter {{ bgp_local_pref = 50; accept; }};
    export filter {{ if net = 198.18.3.0/24 then {{ bgp_path.prepend(65010); accept; }} reject; }};
  }};
}}
"#
    )
}

/// What the client behind the ToR saw while node-3's fabric port was down.
#[derive(Clone, Copy, Debug)]
pub struct SecondPath {
    pub sent: u64,
    pub lost: u64,
    /// From the cut until a ping made it through again.
    pub outage: Duration,
}

/// Builds the second-path lab, cuts node-3's fabric port under a 100/s ping and counts.
pub fn second_path(hold: u16, bfd: bool) -> Result<SecondPath> {
    let (mut lab, spec) = lab_with_tor(hold, bfd)?;
    // The uplink: its own session, sourced from the uplink's address so that it is the next hop.
    let uplink = BGPPeerSpec {
        node: Some("node-3".into()),
        peer_ip: Some("198.18.2.1".into()),
        as_number: Some(65010),
        source_address: Some(gingham_api::resources::SourceAddress::None),
        bfd: spec.clone(),
        ..Default::default()
    };
    lab.create(&BGPPeer::new("tor-uplink", uplink))?;
    let pod = lab.add_pod(2, "dual-homed")?.address;
    let (node3, tor_ns) = (&lab.fabric.hosts[2].ns, &lab.fabric.hosts[3].ns);
    netns::ip(&["link", "add", "uplink-b", "netns", node3.name(), "type", "veth", "peer", "name", "n3-b", "netns", tor_ns.name()])?;
    node3.ip(&["addr", "add", "198.18.2.13/24", "dev", "uplink-b"])?;
    node3.ip(&["link", "set", "uplink-b", "up"])?;
    tor_ns.ip(&["addr", "add", "198.18.2.1/24", "dev", "n3-b"])?;
    tor_ns.ip(&["link", "set", "n3-b", "up"])?;
    let client = Netns::new("gcli")?;
    netns::ip(&["link", "add", "cli0", "netns", client.name(), "type", "veth", "peer", "name", "to-cli", "netns", tor_ns.name()])?;
    client.ip(&["addr", "add", "198.18.3.2/24", "dev", "cli0"])?;
    client.ip(&["link", "set", "cli0", "up"])?;
    client.ip(&["route", "add", "default", "via", "198.18.3.1"])?;
    tor_ns.ip(&["addr", "add", "198.18.3.1/24", "dev", "to-cli"])?;
    tor_ns.ip(&["link", "set", "to-cli", "up"])?;
    tor_ns.sysctl("net.ipv4.ip_forward", "1")?;
    let tor = Bird::start(tor_ns, &second_path_tor_config(hold, bfd))?;
    lab.wait_established(Duration::from_secs(60))?;
    let block = format!("{}/26", ipnetwork::Ipv4Network::new(pod, 26)?.network());
    let t = Duration::from_secs(30);
    wait_for("the ToR learned node-3's block over both paths", t, || {
        let (fabric, up) = (tor.routes_from("n3"), tor.routes_from("n3b"));
        (fabric.contains(&block) && up.contains(&block)).then_some(())
    })?;
    if bfd {
        for addr in ["198.18.0.13", "198.18.2.13"] {
            wait_for("BFD Up", t, || (tor.bfd_state(addr).as_deref() == Some("Up")).then_some(()))?;
        }
    }
    let reaches = || {
        client
            .command("ping")
            .args(["-c", "1", "-W", "1", &pod.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    wait_for("the client reaches the pod", t, || reaches().then_some(()))?;
    // Both directions start on the fabric path.
    let via = |ns: &Netns, to: &str| ns.exec("ip", &["route", "get", to]).unwrap_or_default();
    anyhow::ensure!(
        via(tor_ns, &pod.to_string()).contains("198.18.0.13"),
        "ToR -> pod not on the fabric: {}",
        via(tor_ns, &pod.to_string())
    );
    anyhow::ensure!(via(node3, "198.18.3.2").contains("198.18.0.14"), "node-3 -> client not on the fabric: {}", via(node3, "198.18.3.2"));

    let pinger = client
        .command("ping")
        .args(["-q", "-i", "0.01", &pod.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    lab.fabric.bridge.ip(&["link", "set", "p3", "down"])?;
    // A stale fabric path outlives the hold timer by the graceful-restart time without BFD.
    let result = wait_for("a ping across the uplink", Duration::from_secs(u64::from(hold) + 300), || {
        std::thread::sleep(Duration::from_millis(50));
        reaches().then(|| cut.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    // SIGINT: ping prints its summary and exits.
    netns::run(std::process::Command::new("kill").args(["-INT", &pinger.id().to_string()]))?;
    let (sent, received) = crate::lab::pinger_counts(pinger)?;
    let outage = result.with_context(|| format!("ToR: {}\nnode-3: {}", tor.route_all(&block), via(node3, "198.18.3.2")))?;
    Ok(SecondPath { sent, lost: sent.saturating_sub(received), outage })
}

pub fn failover_second_path(hold: u16) -> Result<()> {
    println!("Second path: node-3 dual-homed (fabric + direct uplink to the ToR, hold time {hold} s); a client behind the ToR pings a pod on node-3 every 10 ms while node-3's fabric port goes down");
    let with = second_path(hold, true)?;
    let without = second_path(hold, false)?;
    println!("| detection           | pings sent | pings lost | outage until a ping crosses the uplink |");
    println!("|---------------------|-----------:|-----------:|---------------------------------------:|");
    for (name, r) in [("BFD 300 ms x 3", with), ("hold timer only", without)] {
        println!("| {name:<19} | {:>10} | {:>10} | {:>36.2} s |", r.sent, r.lost, r.outage.as_secs_f64());
    }
    println!("pings lost, BFD / hold timer: {:.3}x", with.lost as f64 / (without.lost as f64).max(1.0));
    Ok(())
}
