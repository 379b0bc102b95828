//! Service address ranges (`serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`)
//! advertised by every node, so a ToR spreads the traffic over them with ECMP. Needs root.
//!
//! ```text
//!   node-1 198.18.0.11 ─┐
//!   node-2 198.18.0.12 ─┴── fabric ── ToR, FRR AS 65010, 198.18.0.13 (maximum-paths 8)
//! ```

use std::time::Duration;

use gingham_api::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec, ServiceCidr};
use gingham_integration::daemons::Frr;
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::wait_for;
use serde_json::Value;

const TOR: &str = r#"
router bgp 65010
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 timers connect 2
 neighbor 198.18.0.12 remote-as 64512
 neighbor 198.18.0.12 timers connect 2
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
"#;

/// The next hops FRR uses for `prefix` (best path and its multipath siblings).
fn ecmp_next_hops(frr: &Frr, prefix: &str) -> Vec<String> {
    let Some(route) = frr.route("ipv4", prefix) else { return Vec::new() };
    let mut hops: Vec<String> = route["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["multipath"] == Value::Bool(true) || p["bestpath"]["overall"] == Value::Bool(true))
        .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops
}

#[test]
fn service_ranges_reach_the_tor_as_ecmp_routes_via_every_node_and_leave_with_the_configuration() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    let lab = Cluster::new(options).unwrap();
    let tor = Frr::start(&lab.fabric.hosts[2].ns, TOR).unwrap();
    let spec = BGPPeerSpec { peer_ip: Some("198.18.0.13".into()), as_number: Some(65010), ..Default::default() };
    lab.create(&BGPPeer::new("tor", spec)).unwrap();
    let cidrs = |list: &[&str]| Some(list.iter().map(|c| ServiceCidr { cidr: c.to_string() }).collect::<Vec<_>>());
    lab.modify::<BGPConfiguration>("default", |c| {
        c.spec.service_cluster_ips = cidrs(&["198.18.96.0/20"]);
        c.spec.service_external_ips = cidrs(&["198.18.112.0/24"]);
        c.spec.service_load_balancer_ips = cidrs(&["198.18.113.0/24"]);
    })
    .unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", tor.daemon.log_tail()));
    let both = vec!["198.18.0.11".to_string(), "198.18.0.12".to_string()];
    for prefix in ["198.18.96.0/20", "198.18.112.0/24", "198.18.113.0/24"] {
        wait_for(&format!("{prefix} via both nodes at the ToR"), Duration::from_secs(30), || {
            (ecmp_next_hops(&tor, prefix) == both).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", tor.route("ipv4", prefix), tor.daemon.log_tail()));
    }
    // No node keeps a route for the ranges (kube-proxy handles the traffic there). A node that
    // learned another's range before originating its own had one for a moment: it must go.
    for i in 0..2 {
        wait_for(&format!("node {i} without a route for 198.18.96.0/20"), Duration::from_secs(10), || {
            let routes = lab.fabric.hosts[i].ns.exec("ip", &["route", "show", "exact", "198.18.96.0/20"]).ok()?;
            routes.trim().is_empty().then_some(())
        })
        .unwrap();
    }

    // A range taken out of the configuration is withdrawn; the others stay.
    lab.modify::<BGPConfiguration>("default", |c| c.spec.service_cluster_ips = None).unwrap();
    wait_for("198.18.96.0/20 withdrawn", Duration::from_secs(30), || tor.route("ipv4", "198.18.96.0/20").is_none().then_some(())).unwrap();
    assert_eq!(ecmp_next_hops(&tor, "198.18.112.0/24"), both);
}
