//! A node's configuration comes from the cluster and changes while the agents run: the
//! GinghamNode's `asNumber` and `routeReflectorClusterID` take effect without a restart, and
//! `--metrics-addr` serves `/metrics` (only) on the node's address for a scraper on another
//! host. Needs root; each test removes what it built.

use std::net::SocketAddr;
use std::time::Duration;

use gingham_api::resources::{BGPConfiguration, GinghamNode};
use gingham_integration::lab::{http_get_in, Cluster, LabOptions, METRICS_PORT};
use gingham_integration::netns::wait_for;

fn logs(lab: &Cluster) -> String {
    lab.nodes.iter().filter_map(|n| n.agent.as_ref().map(|a| a.log_tail())).collect::<Vec<_>>().join("\n---\n")
}

fn block_of(addr: std::net::Ipv4Addr) -> String {
    format!("{}/26", ipnetwork::Ipv4Network::new(addr, 26).unwrap().network())
}

/// How often an agent logged its start.
fn starts(log: &str) -> usize {
    log.lines().filter(|l| l.contains("gingham_agent") && l.contains(" starting ")).count()
}

/// (state, AS) of node `i`'s session with `peer`.
fn session(lab: &Cluster, i: usize, peer: &str) -> Option<(String, u64)> {
    let status = lab.status(i).ok()?;
    let p = status["peers"].as_array()?.iter().find(|p| p["address"] == peer)?.clone();
    Some((p["state"].as_str()?.to_string(), p["asNumber"].as_u64()?))
}

#[test]
fn as_number_changes_live_and_metrics_are_scraped_from_another_host() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let a = lab.add_pod(0, "a").unwrap().address;
    lab.add_pod(1, "b").unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap();

    // Prometheus on another host reaches the metrics, and nothing else, on the node's address.
    let from_node2 = &lab.fabric.hosts[1].ns;
    let metrics_at = SocketAddr::new(lab.nodes[0].address.into(), METRICS_PORT);
    let metrics = http_get_in(from_node2, metrics_at, "/metrics").unwrap();
    assert!(metrics.contains("gingham_bgp_sessions{state=\"Established\"} 1"), "{metrics}");
    let status = http_get_in(from_node2, metrics_at, "/status").unwrap_err().to_string();
    assert!(status.contains("404"), "{status}");
    let private = SocketAddr::new(lab.nodes[0].address.into(), gingham_integration::lab::STATUS_PORT);
    assert!(http_get_in(from_node2, private, "/status").is_err(), "status stays on the node's loopback");

    lab.modify::<GinghamNode>("node-1", |n| n.spec.bgp.as_mut().unwrap().as_number = Some(64600)).unwrap();
    let changed = std::time::Instant::now();
    wait_for("node-2 peers with node-1 as AS 64600", Duration::from_secs(30), || {
        (session(&lab, 1, "198.18.0.11")? == ("Established".to_string(), 64600)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    wait_for("node-1 Established with node-2", Duration::from_secs(30), || {
        (session(&lab, 0, "198.18.0.12")?.0 == "Established").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    eprintln!("eBGP session up {:.1} s after the AS change", changed.elapsed().as_secs_f64());
    wait_for("node-2 routes to node-1's block over eBGP", Duration::from_secs(20), || {
        lab.routes(1).ok()?.contains(&block_of(a)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    let b = &lab.pods[1];
    assert!(lab.ping(b, a), "pods still reach each other");

    // node-2's report in the datastore, read from outside every node (another machine).
    let ctl = gingham_integration::lab::workspace_binary("ginghamctl").unwrap();
    let datastore = format!("sqlite:{}", lab.db.display());
    let report = wait_for("node-2's stored report shows the eBGP session", Duration::from_secs(30), || {
        let out = std::process::Command::new(&ctl).args(["--datastore", &datastore, "node", "status", "node-2"]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().any(|l| l.contains("198.18.0.11") && l.contains("Established")).then_some(text)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert!(report.contains("Reported by the agent at"), "{report}");
    let json =
        std::process::Command::new(&ctl).args(["--datastore", &datastore, "-o", "json", "node", "status", "node-2"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let peer = json["status"]["peers"].as_array().unwrap().iter().find(|p| p["address"] == "198.18.0.11").cloned().unwrap();
    assert_eq!(peer["asNumber"], 64600, "{peer}");
    assert!(lab.nodes.iter().all(|n| n.agent.is_some()), "no agent restarted");
    let log = std::fs::read_to_string(&lab.nodes[0].log).unwrap();
    assert_eq!(starts(&log), 1, "node-1's agent started once:\n{log}");
}

#[test]
fn a_node_becomes_a_route_reflector_without_a_restart() {
    let mut lab = Cluster::new(LabOptions::new(3)).unwrap();
    let b = lab.add_pod(1, "b").unwrap().address;
    let c = lab.add_pod(2, "c").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();

    lab.modify::<GinghamNode>("node-1", |n| n.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("224.0.0.7".into())).unwrap();
    lab.modify::<BGPConfiguration>("default", |c| c.spec.node_to_node_mesh_enabled = Some(false)).unwrap();
    wait_for("node-2 and node-3 drop their mesh session", Duration::from_secs(30), || {
        (session(&lab, 1, "198.18.0.13").is_none() && session(&lab, 2, "198.18.0.12").is_none()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    wait_for("clients up with the reflector", Duration::from_secs(30), || {
        let up = |i: usize| session(&lab, i, "198.18.0.11").is_some_and(|s| s.0 == "Established");
        (up(1) && up(2)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    // node-3's block reaches node-2 only through the reflector, with node-3 as next hop.
    let route = wait_for("node-3's block reflected to node-2", Duration::from_secs(30), || {
        lab.routes(1).ok()?.lines().find(|l| l.starts_with(&block_of(c))).map(str::to_owned)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert!(route.contains("via 198.18.0.13"), "{route}");
    let (pb, pc) = (&lab.pods[0], &lab.pods[1]);
    assert!(lab.ping(pb, c) && lab.ping(pc, b), "pods on the two clients reach each other");
    let log = std::fs::read_to_string(&lab.nodes[0].log).unwrap();
    assert_eq!(starts(&log), 1, "node-1's agent started once");
}
