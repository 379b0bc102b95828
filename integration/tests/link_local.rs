//! BGP over an unnumbered link against FRR's `neighbor IF interface`: the link between node-1
//! and the router carries only IPv6 link-local addresses; the session runs between them, IPv4
//! and IPv6 routes go both ways with link-local next hops (RFC 8950 for IPv4), both kernels
//! install them on that link, and a packet crosses. Needs root.
//!
//! ```text
//!   node-1 (fabric 198.18.0.11) ── ll-node ═══ ll-tor ── FRR AS 65010, lo 198.18.44.1/32
//!                                   link-local addresses only      and 2001:db8:44::1/128
//! ```

use std::time::Duration;

use gingham_api::resources::{BGPPeer, BGPPeerSpec};
use gingham_integration::daemons::Frr;
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::{self, wait_for, Netns};

/// FRR's end of the link: a fixed MAC, so its EUI-64 link-local address is known.
const TOR_MAC: &str = "02:00:00:00:00:02";
const TOR_LL: &str = "fe80::ff:fe00:2";

const FRR: &str = r#"
router bgp 65010
 bgp router-id 198.18.44.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor ll-tor interface remote-as 64512
 address-family ipv4 unicast
  network 198.18.44.1/32
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:44::1/128
  neighbor ll-tor activate
 exit-address-family
"#;

#[test]
fn an_unnumbered_link_to_frr_carries_the_session_the_routes_and_the_packets() {
    let mut lab = Cluster::new(LabOptions::new(1)).unwrap();
    let tor = Netns::new("gtor").unwrap();
    let pod = lab.add_pod(0, "a").unwrap().address;
    let node_ns = &lab.fabric.hosts[0].ns;
    netns::ip(&["link", "add", "ll-node", "netns", node_ns.name(), "type", "veth", "peer", "name", "ll-tor", "netns", tor.name()]).unwrap();
    tor.ip(&["link", "set", "ll-tor", "address", TOR_MAC]).unwrap();
    tor.ip(&["link", "set", "lo", "up"]).unwrap();
    tor.ip(&["addr", "add", "198.18.44.1/32", "dev", "lo"]).unwrap();
    tor.ip(&["addr", "add", "2001:db8:44::1/128", "dev", "lo"]).unwrap();
    tor.ip(&["link", "set", "ll-tor", "up"]).unwrap();
    node_ns.ip(&["link", "set", "ll-node", "up"]).unwrap();
    let frr = Frr::start_with_bfd(&tor, FRR).unwrap();

    let spec = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some(format!("{TOR_LL}%ll-node")),
        as_number: Some(65010),
        extended_next_hop: true,
        ..Default::default()
    };
    lab.create(&BGPPeer::new("tor-unnumbered", spec)).unwrap();
    let logs = |lab: &Cluster| format!("{}\n{}", lab.nodes[0].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default(), frr.logs());
    let t = Duration::from_secs(60);
    wait_for("FRR's unnumbered session Established", t, || frr.established("ll-tor").then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));

    // Nothing but link-local addresses on the link, at both ends.
    for (ns, link) in [(node_ns, "ll-node"), (&tor, "ll-tor")] {
        let addrs = ns.exec("ip", &["-o", "addr", "show", "dev", link]).unwrap();
        assert!(addrs.lines().all(|l| l.contains("scope link")), "{link}: {addrs}");
    }

    // Ours: FRR's routes with its link-local next hop, on the link.
    let node_ll = node_ns.exec("ip", &["-o", "-6", "addr", "show", "dev", "ll-node", "scope", "link"]).unwrap();
    let node_ll = node_ll.split_whitespace().skip_while(|w| *w != "inet6").nth(1).and_then(|a| a.split('/').next()).unwrap().to_owned();
    for (family, prefix, via) in
        [("-4", "198.18.44.1", format!("via inet6 {TOR_LL} dev ll-node")), ("-6", "2001:db8:44::1", format!("via {TOR_LL} dev ll-node"))]
    {
        let route = wait_for(&format!("{prefix} in node-1's kernel"), t, || {
            let r = node_ns.exec("ip", &[family, "route", "show", "exact", prefix]).ok()?;
            r.contains(&via).then_some(r)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
        assert!(route.contains("proto 80"), "{route}");
    }

    // Theirs: node-1's block with node-1's link-local address as next hop, installed by zebra.
    let block = format!("{}/26", ipnetwork::Ipv4Network::new(pod, 26).unwrap().network());
    wait_for("zebra installed node-1's block via the link", t, || {
        let r = tor.exec("ip", &["route", "show", "exact", &block]).ok()?;
        r.contains(&format!("via inet6 {node_ll} dev ll-tor")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{:?}", logs(&lab), frr.vtysh(&format!("show bgp ipv4 unicast {block}"))));

    // A packet crosses the unnumbered link both ways.
    wait_for("the pod reaches 198.18.44.1", t, || lab.ping(&lab.pods[0], "198.18.44.1".parse().unwrap()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    // What the kernel reads back (gateway and interface) matches what was installed: the FIB's
    // periodic pass (every 5 s) finds no drift to repair.
    std::thread::sleep(Duration::from_secs(6));
    let routes = &lab.status(0).unwrap()["routes"];
    assert_eq!((routes["repaired"].as_u64(), routes["notInstalled"].as_u64()), (Some(0), Some(0)), "{routes}\n{}", logs(&lab));

    // The session goes with the BGPPeer, and its routes with it.
    lab.delete::<BGPPeer>("tor-unnumbered").unwrap();
    wait_for("FRR's routes gone from node-1", t, || {
        let r = node_ns.exec("ip", &["route", "show", "exact", "198.18.44.1"]).ok()?;
        r.trim().is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
}
