//! Gingham next to real routers: an FRR top-of-rack that announces a default route and the
//! fabric subnet, a second external router (BIRD), and a router two hops away. The node keeps
//! its own routes, is nobody's transit, cannot have its pod addresses captured, and BGPFilters
//! change what crosses a session. Needs root; every test builds and removes its own lab.
//!
//! ```text
//!   node-1 198.18.0.11 ─┐                       ┌─ ToR, FRR AS 65001, 198.18.0.13
//!   node-2 198.18.0.12 ─┼── fabric 198.18.0.0/24 ┤
//!                        │                       └─ router, BIRD AS 65002, 198.18.0.14 (node-1 only)
//! ```

use std::time::Duration;

use gingham_api::resources::{BGPFilter, BGPFilterRule, BGPFilterSpec, BGPPeer, BGPPeerSpec, FilterAction, FilterSource, MatchOperator};
use gingham_integration::daemons::{Bird, Frr};
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::{wait_for, Netns};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn block_of(addr: std::net::Ipv4Addr) -> String {
    format!("{}/26", ipnetwork::Ipv4Network::new(addr, 26).unwrap().network())
}

fn agent_log(lab: &Cluster, i: usize) -> String {
    lab.nodes[i].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default()
}

/// `ip route show PREFIX` on node `i` (every route for exactly that prefix, any protocol).
fn routes_for(lab: &Cluster, i: usize, prefix: &str) -> String {
    lab.fabric.hosts[i].ns.exec("ip", &["route", "show", "exact", prefix]).unwrap_or_default()
}

fn wait_until(lab: &Cluster, i: usize, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    wait_for(what, timeout, || ok().then_some(())).unwrap_or_else(|e| {
        let all = lab.fabric.hosts[i].ns.exec("ip", &["route", "show"]).unwrap_or_default();
        panic!("{e}\nroutes on node {i}:\n{all}\nagent log:\n{}", agent_log(lab, i))
    });
}

const TOR: &str = r#"
router bgp 65001
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 timers connect 2
 neighbor 198.18.0.12 remote-as 64512
 neighbor 198.18.0.12 timers connect 2
 address-family ipv4 unicast
  network 198.18.0.0/24
  network 198.18.113.0/24
  neighbor 198.18.0.11 default-originate
  neighbor 198.18.0.12 default-originate
 exit-address-family
"#;

const ROUTER: &str = r#"
router id 198.18.0.14;
protocol device {}
protocol bgp node1 {
  local 198.18.0.14 as 65002; neighbor 198.18.0.11 as 64512;
  ipv4 { import all; export none; };
}
"#;

fn tor_peer() -> BGPPeer {
    BGPPeer::new("tor", BGPPeerSpec { peer_ip: Some("198.18.0.13".into()), as_number: Some(65001), ..Default::default() })
}

fn router_peer() -> BGPPeer {
    BGPPeer::new(
        "router",
        BGPPeerSpec { node: Some("node-1".into()), peer_ip: Some("198.18.0.14".into()), as_number: Some(65002), ..Default::default() },
    )
}

fn rule(action: FilterAction, cidr: &str, source: Option<FilterSource>) -> BGPFilterRule {
    BGPFilterRule { action, cidr: Some(cidr.into()), match_operator: Some(MatchOperator::Equal), source, ..Default::default() }
}

#[test]
fn a_tor_announcing_default_and_the_fabric_never_takes_the_node_off_the_network() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 2;
    let mut lab = Cluster::new(options).unwrap();
    for i in 0..2 {
        // The node's own default route, as a provisioning system leaves it.
        lab.fabric.hosts[i].ns.ip(&["route", "add", "default", "via", "198.18.0.13", "proto", "boot"]).unwrap();
    }
    let tor = Frr::start(&lab.fabric.hosts[2].ns, TOR).unwrap();
    let router = Bird::start(&lab.fabric.hosts[3].ns, ROUTER).unwrap();
    let store = lab.store().unwrap();
    rt().block_on(async {
        store.create(&tor_peer()).await.unwrap();
        store.create(&router_peer()).await.unwrap();
    });
    let a = lab.add_pod(0, "a").unwrap().address;
    let b = lab.add_pod(1, "b").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    for (i, peer) in [(0, "198.18.0.11"), (1, "198.18.0.12")] {
        wait_until(&lab, i, "the ToR session", Duration::from_secs(30), || tor.established(peer));
        wait_until(&lab, i, "the ToR's routes", Duration::from_secs(30), || routes_for(&lab, i, "198.18.113.0/24").contains("proto 80"));
    }

    // The node's own default and connected routes are untouched and keep winning; the learned
    // ones sit beside them at our metric.
    for i in 0..2 {
        let default = routes_for(&lab, i, "0.0.0.0/0");
        // `ip route` leaves out `proto boot`, the protocol of a route added by hand.
        assert!(default.lines().any(|l| l.trim() == "default via 198.18.0.13 dev eth0"), "node {i}: {default}");
        assert!(default.contains("proto 80 metric 2048"), "node {i}: {default}");
        let fabric = routes_for(&lab, i, "198.18.0.0/24");
        assert!(fabric.contains("proto kernel scope link"), "node {i}: {fabric}");
        let to_peer = lab.fabric.hosts[i].ns.exec("ip", &["route", "get", "198.18.0.14"]).unwrap();
        assert!(!to_peer.contains(" via "), "the fabric is still directly reachable: {to_peer}");
        let status = lab.status(i).unwrap();
        assert_eq!(status["routes"]["notInstalled"], 0, "node {i}: {}", status["routes"]);
    }
    wait_until(&lab, 0, "b's block on node-1", Duration::from_secs(20), || routes_for(&lab, 0, &block_of(b)).contains("proto 80"));
    wait_until(&lab, 1, "a's block on node-2", Duration::from_secs(20), || routes_for(&lab, 1, &block_of(a)).contains("proto 80"));
    assert!(lab.ping(&lab.pods[0], b) && lab.ping(&lab.pods[1], a), "pods reach each other across nodes");

    // No transit: the second router gets node-1's own block and nothing it learned elsewhere.
    wait_until(&lab, 0, "BIRD learning node-1's block", Duration::from_secs(30), || router.routes_from("node1").contains(&block_of(a)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(router.routes_from("node1"), [block_of(a)], "{}", router.cmd("show route").unwrap_or_default());

    // A router announcing a pod's address does not capture its traffic.
    let hijack = format!("{b}/32");
    tor.configure(&["router bgp 65001", "address-family ipv4 unicast", &format!("network {hijack}")]).unwrap();
    wait_until(&lab, 0, "the ToR announcing the pod /32", Duration::from_secs(20), || {
        tor.route("ipv4", &hijack).is_some() && lab.status(0).ok().is_some_and(|s| rejected_from(&s, "198.18.0.13") > 0)
    });
    assert!(!routes_for(&lab, 0, &hijack).contains("proto 80"), "{}", routes_for(&lab, 0, &hijack));
    assert!(lab.ping(&lab.pods[0], b), "b still reached through node-2");

    // BGPFilter export: exactly one ToR prefix may go to the second router.
    let export = BGPFilterSpec {
        export_v4: vec![rule(FilterAction::Accept, "198.18.113.0/24", Some(FilterSource::RemotePeers))],
        ..Default::default()
    };
    rt().block_on(store.create(&BGPFilter::new("to-router", export))).unwrap();
    lab.modify::<BGPPeer>("router", |p| p.spec.filters = vec!["to-router".into()]).unwrap();
    wait_until(&lab, 0, "BIRD learning the allowed prefix", Duration::from_secs(20), || {
        router.routes_from("node1").contains(&"198.18.113.0/24".to_string())
    });
    let mut got = router.routes_from("node1");
    got.sort();
    let mut want = vec![block_of(a), "198.18.113.0/24".to_string()];
    want.sort();
    assert_eq!(got, want, "node-1's block and the one allowed prefix");
    assert!(router.established("node1"), "a filter change does not reset the session");

    // BGPFilter import: the ToR's prefix refused again, from both nodes' kernels, and so gone
    // from the second router too.
    let import = BGPFilterSpec { import_v4: vec![rule(FilterAction::Reject, "198.18.113.0/24", None)], ..Default::default() };
    rt().block_on(store.create(&BGPFilter::new("from-tor", import))).unwrap();
    lab.modify::<BGPPeer>("tor", |p| p.spec.filters = vec!["from-tor".into()]).unwrap();
    for i in 0..2 {
        wait_until(&lab, i, "the refused prefix to go", Duration::from_secs(20), || {
            !routes_for(&lab, i, "198.18.113.0/24").contains("proto 80")
        });
    }
    wait_until(&lab, 0, "BIRD losing it", Duration::from_secs(20), || {
        !router.routes_from("node1").contains(&"198.18.113.0/24".to_string())
    });
    assert!(routes_for(&lab, 0, "0.0.0.0/0").contains("proto 80"), "the ToR's other routes stay");
}

fn rejected_from(status: &serde_json::Value, peer: &str) -> u64 {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"] == peer)
        .map(|p| p["prefixesReceived"].as_u64().unwrap_or(0).saturating_sub(p["prefixesAccepted"].as_u64().unwrap_or(0)))
        .unwrap_or(0)
}

/// A router two hops away (behind the ToR, which here is a plain forwarding namespace): its
/// routes are installed via the gateway the node's own route to it names, follow that route
/// when it changes, and `reachableBy` makes the session independent of that route.
#[test]
fn multihop_routes_resolve_through_the_nodes_routes_and_follow_them() {
    let mut options = LabOptions::new(1);
    options.extra_hosts = 1;
    let lab = Cluster::new(options).unwrap();
    let tor = &lab.fabric.hosts[1].ns;
    tor.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let far = Netns::new("gfar").unwrap();
    let tmp = format!("f{}", gingham_integration::netns::unique_suffix());
    gingham_integration::netns::ip(&[
        "link",
        "add",
        &tmp[..tmp.len().min(15)],
        "netns",
        tor.name(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        far.name(),
    ])
    .unwrap();
    tor.ip(&["link", "set", &tmp[..tmp.len().min(15)], "name", "far0"]).unwrap();
    tor.ip(&["addr", "add", "198.18.200.1/24", "dev", "far0"]).unwrap();
    tor.ip(&["link", "set", "far0", "up"]).unwrap();
    far.ip(&["addr", "add", "198.18.200.2/24", "dev", "eth0"]).unwrap();
    far.ip(&["link", "set", "eth0", "up"]).unwrap();
    far.ip(&["link", "set", "lo", "up"]).unwrap();
    far.ip(&["route", "add", "default", "via", "198.18.200.1"]).unwrap();
    let node = &lab.fabric.hosts[0].ns;
    node.ip(&["route", "add", "198.18.200.0/24", "via", "198.18.0.12", "proto", "static"]).unwrap();
    let bird = Bird::start(
        &far,
        "router id 198.18.200.2;\nprotocol device {}\nprotocol static { ipv4; route 198.18.114.0/24 blackhole; }\n\
         protocol bgp node1 { local 198.18.200.2 as 65003; neighbor 198.18.0.11 as 64512; multihop; ipv4 { import all; export all; }; }\n",
    )
    .unwrap();
    let store = lab.store().unwrap();
    let far_peer = BGPPeer::new("far", BGPPeerSpec { peer_ip: Some("198.18.200.2".into()), as_number: Some(65003), ..Default::default() });
    rt().block_on(store.create(&far_peer)).unwrap();
    wait_until(&lab, 0, "the multihop session", Duration::from_secs(40), || bird.established("node1"));
    let learned = || routes_for(&lab, 0, "198.18.114.0/24");
    wait_until(&lab, 0, "the far router's route via the resolved gateway", Duration::from_secs(20), || {
        learned().contains("via 198.18.0.12") && learned().contains("proto 80")
    });

    // The node's route to the far subnet moves to another gateway: ours follows.
    node.ip(&["route", "replace", "198.18.200.0/24", "via", "198.18.0.13", "proto", "static"]).unwrap();
    let moved = std::time::Instant::now();
    wait_until(&lab, 0, "the learned route to follow", Duration::from_secs(3), || learned().contains("via 198.18.0.13"));
    eprintln!("learned route followed its gateway in {:?}", moved.elapsed());
    node.ip(&["route", "replace", "198.18.200.0/24", "via", "198.18.0.12", "proto", "static"]).unwrap();
    wait_until(&lab, 0, "and back", Duration::from_secs(3), || learned().contains("via 198.18.0.12"));

    // reachableBy: the agent routes the peer itself; the operator's route can go.
    lab.modify::<BGPPeer>("far", |p| p.spec.reachable_by = Some("198.18.0.12".into())).unwrap();
    wait_until(&lab, 0, "the route to the peer", Duration::from_secs(10), || {
        routes_for(&lab, 0, "198.18.200.2/32").contains("via 198.18.0.12 dev eth0 proto 80 metric 2")
    });
    node.ip(&["route", "del", "198.18.200.0/24", "via", "198.18.0.12", "proto", "static"]).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(learned().contains("via 198.18.0.12"), "still resolved, through the peer route: {}", learned());
    assert!(bird.established("node1"), "{}", bird.cmd("show protocols all node1").unwrap_or_default());

    // Without reachableBy nothing routes to the far subnet any more: the learned route goes and
    // /status says why (until the session itself times out).
    lab.modify::<BGPPeer>("far", |p| p.spec.reachable_by = None).unwrap();
    let problem = wait_for("the unreachable next hop reported", Duration::from_secs(8), || {
        let s = lab.status(0).ok()?;
        let p = s["routes"]["problems"].as_array()?.iter().find(|p| p["prefix"] == "198.18.114.0/24")?.clone();
        Some(p)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}
{}",
            agent_log(&lab, 0)
        )
    });
    assert_eq!(problem["reason"], "unreachable", "{problem}");
    assert!(!learned().contains("proto 80"), "{}", learned());
    node.ip(&["route", "add", "198.18.200.0/24", "via", "198.18.0.12", "proto", "static"]).unwrap();
    wait_until(&lab, 0, "reinstalled once reachable", Duration::from_secs(5), || learned().contains("via 198.18.0.12"));
    // Our route to a peer that is deconfigured goes with it.
    lab.modify::<BGPPeer>("far", |p| p.spec.reachable_by = Some("198.18.0.12".into())).unwrap();
    wait_until(&lab, 0, "the route to the peer", Duration::from_secs(10), || routes_for(&lab, 0, "198.18.200.2/32").contains("proto 80"));
    rt().block_on(store.delete_latest::<BGPPeer>("far")).unwrap();
    wait_until(&lab, 0, "the peer route to go", Duration::from_secs(10), || !routes_for(&lab, 0, "198.18.200.2/32").contains("proto 80"));
}

/// A route the kernel refuses (its pod's veth vanished under it) is reported once, counted,
/// shown in /status, retried only with a growing delay, and holds up no other route.
#[test]
fn a_route_the_kernel_refuses_is_reported_once_and_blocks_nothing() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let gone = lab.add_pod(0, "gone").unwrap().address;
    let peer = lab.add_pod(1, "peer").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let node = &lab.fabric.hosts[0].ns;
    let veth = node.exec("ip", &["-o", "route", "show", &format!("{gone}/32")]).unwrap();
    let veth = veth.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap().to_string();
    node.ip(&["link", "del", &veth]).unwrap();
    fn failures(lab: &Cluster) -> Option<String> {
        let metrics = lab.http_get(0, "/metrics").unwrap_or_default();
        metrics
            .lines()
            .find(|l| l.starts_with("gingham_route_failures_total{reason=\"kernel\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            // The series exists at 0 from the start; counted means at least one.
            .filter(|v| v.parse::<f64>().is_ok_and(|n| n >= 1.0))
    }
    wait_for("the refusal to be counted", Duration::from_secs(12), || failures(&lab))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent_log(&lab, 0)));
    let status = lab.status(0).unwrap();
    let problem = status["routes"]["problems"].as_array().unwrap().iter().find(|p| p["prefix"] == format!("{gone}/32")).cloned();
    let problem = problem.unwrap_or_else(|| panic!("{}", status["routes"]));
    assert!(problem["message"].as_str().unwrap_or_default().contains("No such device"), "{problem}");

    // Other routes go on: a new pod on the same node is reachable from the other node.
    let fresh = lab.add_pod(0, "fresh").unwrap().address;
    let from = lab.pods.iter().find(|p| p.address == peer).unwrap();
    wait_for("the new pod reachable", Duration::from_secs(20), || lab.ping(from, fresh).then_some(())).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(failures(&lab).as_deref(), Some("1"), "counted once, not at every retry");
    let log = std::fs::read_to_string(&lab.nodes[0].log).unwrap();
    let reports = log.lines().filter(|l| l.contains("route not installed") && l.contains(&format!("{gone}/32"))).count();
    assert_eq!(reports, 1, "reported once:\n{log}");
}

/// natOutgoing: a host beyond the ToR with no route back to the pod pool answers a pod only
/// when the pool masquerades; pod-to-pod traffic keeps the pod's own address either way.
#[test]
fn nat_outgoing_reaches_the_outside_and_keeps_pod_addresses_inside() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    let mut lab = Cluster::new(options).unwrap();
    let tor = &lab.fabric.hosts[2].ns;
    tor.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let far = Netns::new("gfar").unwrap();
    let tmp = format!("f{}", gingham_integration::netns::unique_suffix());
    let tmp = &tmp[..tmp.len().min(15)];
    gingham_integration::netns::ip(&["link", "add", tmp, "netns", tor.name(), "type", "veth", "peer", "name", "eth0", "netns", far.name()])
        .unwrap();
    tor.ip(&["link", "set", tmp, "name", "far0"]).unwrap();
    tor.ip(&["addr", "add", "198.18.200.1/24", "dev", "far0"]).unwrap();
    tor.ip(&["link", "set", "far0", "up"]).unwrap();
    far.ip(&["addr", "add", "198.18.200.2/24", "dev", "eth0"]).unwrap();
    far.ip(&["link", "set", "eth0", "up"]).unwrap();
    far.ip(&["route", "add", "default", "via", "198.18.200.1"]).unwrap();
    for i in 0..2 {
        lab.fabric.hosts[i].ns.ip(&["route", "add", "default", "via", "198.18.0.13"]).unwrap();
    }
    let a = lab.add_pod(0, "a").unwrap().address;
    let b = lab.add_pod(1, "b").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    wait_until(&lab, 0, "b's block", Duration::from_secs(20), || routes_for(&lab, 0, &block_of(b)).contains("proto 80"));
    wait_until(&lab, 1, "a's block", Duration::from_secs(20), || routes_for(&lab, 1, &block_of(a)).contains("proto 80"));
    let outside: std::net::Ipv4Addr = "198.18.200.2".parse().unwrap();
    let pod_a = &lab.pods[0];
    assert!(!lab.ping(pod_a, outside), "the far host has no route back to the pool");

    // The operator's own rules, which we must leave alone.
    lab.fabric.hosts[0].ns.exec("nft", &["add", "table", "inet", "operator"]).unwrap();
    let store = lab.store().unwrap();
    lab.modify::<gingham_api::resources::IPPool>("default-ipv4-ippool", |p| p.spec.nat_outgoing = true).unwrap();
    wait_for("the pod reaching the outside", Duration::from_secs(20), || lab.ping(pod_a, outside).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.fabric.hosts[0].ns.exec("nft", &["list", "ruleset"]).unwrap_or_default()));
    let rules = lab.fabric.hosts[0].ns.exec("nft", &["list", "table", "ip", "gingham"]).unwrap();
    assert!(rules.contains("masquerade"), "{rules}");

    // Inside the pools nothing is translated: b sees a's own address.
    let capture = lab.pods[1]
        .ns
        .command("tshark")
        .args(["-i", "eth0", "-c", "1", "-a", "duration:10", "-f", "icmp[icmptype] == icmp-echo", "-T", "fields", "-e", "ip.src"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        lab.ping(&lab.pods[0], b);
    }
    let seen = String::from_utf8(capture.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(seen.trim(), a.to_string(), "the source b sees");

    // Turning NAT off removes our table and nothing else.
    lab.modify::<gingham_api::resources::IPPool>("default-ipv4-ippool", |p| p.spec.nat_outgoing = false).unwrap();
    wait_for("our table gone", Duration::from_secs(20), || {
        lab.fabric.hosts[0].ns.exec("nft", &["list", "tables"]).ok().filter(|t| !t.contains("gingham")).map(|_| ())
    })
    .unwrap();
    assert!(!lab.ping(&lab.pods[0], outside));
    let tables = lab.fabric.hosts[0].ns.exec("nft", &["list", "tables"]).unwrap();
    assert!(tables.contains("table inet operator"), "{tables}");

    // An IPv6 pool with natOutgoing gets the same rule in the ip6 table.
    let pool6 = gingham_api::resources::IPPoolSpec { cidr: "2001:db8:19::/48".into(), nat_outgoing: true, ..Default::default() };
    rt().block_on(store.create(&gingham_api::resources::IPPool::new("v6", pool6))).unwrap();
    wait_for("the IPv6 NAT table", Duration::from_secs(20), || {
        let t = lab.fabric.hosts[0].ns.exec("nft", &["list", "table", "ip6", "gingham"]).ok()?;
        (t.contains("ip6 saddr @masq-pools ip6 daddr != @all-pools masquerade") && t.contains("2001:db8:19::/48")).then_some(())
    })
    .unwrap();
}
