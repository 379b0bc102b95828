//! RFC 8950 against FRR: IPv4 routes over an IPv6 session with IPv6 next hops, installed in
//! the kernel as `via inet6` on both ends (FRR's zebra installs ours), and a packet crosses.
//! Needs root.
//!
//! ```text
//!   node-1 198.18.0.11 / 2001:db8:18::b ─┐
//!   node-2 198.18.0.12 / 2001:db8:18::c ─┼── fabric ── FRR AS 65010, 2001:db8:18::d (IPv6
//!                                          session with node-1 only), 198.18.33.1 on lo
//! ```

use std::time::Duration;

use gingham_api::resources::{BGPPeer, BGPPeerSpec};
use gingham_integration::daemons::Frr;
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::wait_for;

const FRR: &str = r#"
router bgp 65010
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 2001:db8:18::b remote-as 64512
 neighbor 2001:db8:18::b capability extended-nexthop
 address-family ipv4 unicast
  network 198.18.33.0/24
  neighbor 2001:db8:18::b activate
 exit-address-family
 address-family ipv6 unicast
  neighbor 2001:db8:18::b activate
 exit-address-family
"#;

#[test]
fn ipv4_routes_with_ipv6_next_hops_reach_the_kernel_on_both_ends_and_carry_packets() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    options.ipv6 = true;
    let mut lab = Cluster::new(options).unwrap();
    let frr_ns = &lab.fabric.hosts[2].ns;
    frr_ns.ip(&["addr", "add", "198.18.33.1/24", "dev", "lo"]).unwrap();
    frr_ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let frr = Frr::start_with_bfd(frr_ns, FRR).unwrap();
    let spec = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some("2001:db8:18::d".into()),
        as_number: Some(65010),
        extended_next_hop: true,
        ..Default::default()
    };
    lab.create(&BGPPeer::new("frr6", spec)).unwrap();
    let pod = lab.add_pod(0, "a").unwrap().address;
    let logs = |lab: &Cluster| format!("{}\n{}", lab.nodes[0].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default(), frr.logs());
    lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", frr.logs()));
    let t = Duration::from_secs(30);

    // Ours: FRR's IPv4 prefix, next hop FRR's IPv6 address, in node-1's kernel as `via inet6`.
    let route = wait_for("198.18.33.0/24 via inet6 in node-1's kernel", t, || {
        let r = lab.fabric.hosts[0].ns.exec("ip", &["route", "show", "exact", "198.18.33.0/24"]).ok()?;
        r.contains("via inet6 2001:db8:18::d").then_some(r)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert!(route.contains("proto 80"), "{route}");

    // Theirs: node-1's block with node-1's IPv6 address as next hop, in FRR's table and kernel.
    let block = format!("{}/26", ipnetwork::Ipv4Network::new(pod, 26).unwrap().network());
    wait_for("FRR holds node-1's block via 2001:db8:18::b", t, || {
        let v = frr.route("ipv4", &block)?;
        v.to_string().contains("2001:db8:18::b").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    wait_for("zebra installed it", t, || {
        let r = lab.fabric.hosts[2].ns.exec("ip", &["route", "show", "exact", &block]).ok()?;
        r.contains("via inet6 2001:db8:18::b").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));

    // A packet crosses both ways over the IPv6 next hops.
    wait_for("the pod reaches 198.18.33.1", t, || lab.ping(&lab.pods[0], "198.18.33.1".parse().unwrap()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    // The route read back from the kernel (RTA_VIA) matches what was installed: the FIB's
    // periodic pass (every 5 s) finds no drift to repair.
    std::thread::sleep(Duration::from_secs(6));
    let routes = &lab.status(0).unwrap()["routes"];
    assert_eq!((routes["repaired"].as_u64(), routes["notInstalled"].as_u64()), (Some(0), Some(0)), "{routes}");
    // node-2 has only IPv4 and IPv6 sessions without the capability: the IPv4 route with an
    // IPv6 next hop never reaches it (and FRR's routes are not passed on anyway).
    let on_node2 = lab.fabric.hosts[1].ns.exec("ip", &["route", "show", "exact", "198.18.33.0/24"]).unwrap();
    assert!(on_node2.trim().is_empty(), "{on_node2}");
}
