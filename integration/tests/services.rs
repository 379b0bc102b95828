//! Service address ranges (`serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`)
//! advertised by every node, so a ToR spreads the traffic over them with ECMP; and the host
//! routes of `externalTrafficPolicy: Local` Services, from the nodes with a ready endpoint only;
//! LoadBalancer addresses handed out by gingham-controllers, dual stack. Needs root.
//!
//! ```text
//!   node-1 198.18.0.11 / 2001:db8:18::b ─┐
//!   node-2 198.18.0.12 / 2001:db8:18::c ─┴── fabric ── ToR, FRR AS 65010, 198.18.0.13 /
//!                                                      2001:db8:18::d (maximum-paths 8)
//! ```

use std::time::Duration;

use gingham_api::resources::core::Service;
use gingham_api::resources::{AllowedUse, BGPConfiguration, BGPPeer, BGPPeerSpec, IPPool, IPPoolSpec, ServiceCidr};
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

/// The next hops FRR uses for the IPv4 `prefix` (best path and its multipath siblings).
fn ecmp_next_hops(frr: &Frr, prefix: &str) -> Vec<String> {
    next_hops(frr, "ipv4", prefix)
}

fn next_hops(frr: &Frr, afi: &str, prefix: &str) -> Vec<String> {
    let Some(route) = frr.route(afi, prefix) else { return Vec::new() };
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

/// Two nodes peering with the FRR ToR (started by `start`), the three service ranges configured
/// (cluster 198.18.96.0/20, external 198.18.112.0/24, LoadBalancer 198.18.113.0/24), sessions up.
fn lab_with_ranges(start: fn(&gingham_integration::netns::Netns, &str) -> anyhow::Result<Frr>) -> (Cluster, Frr) {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    let lab = Cluster::new(options).unwrap();
    let tor = start(&lab.fabric.hosts[2].ns, TOR).unwrap();
    let spec = BGPPeerSpec { peer_ip: Some("198.18.0.13".into()), as_number: Some(65010), ..Default::default() };
    lab.create(&BGPPeer::new("tor", spec)).unwrap();
    let cidrs = |list: &[&str]| Some(list.iter().map(|c| ServiceCidr { cidr: c.to_string() }).collect::<Vec<_>>());
    lab.modify::<BGPConfiguration>("default", |c| {
        c.spec.service_cluster_ips = cidrs(&["198.18.96.0/20"]);
        c.spec.service_external_ips = cidrs(&["198.18.112.0/24"]);
        c.spec.service_load_balancer_ips = cidrs(&["198.18.113.0/24"]);
    })
    .unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", tor.logs()));
    (lab, tor)
}

#[test]
fn service_ranges_reach_the_tor_as_ecmp_routes_via_every_node_and_leave_with_the_configuration() {
    let (lab, tor) = lab_with_ranges(Frr::start);
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

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: LoadBalancer
  clusterIP: 198.18.96.10
  clusterIPs: [198.18.96.10]
  externalIPs: [198.18.112.10, 203.0.113.10]
  externalTrafficPolicy: Local
  ports: [{port: 80, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 198.18.113.5}]
"#;

/// `ginghamctl apply -f` of a YAML document on the lab's datastore.
fn ctl_apply(lab: &Cluster) -> impl Fn(&str) + '_ {
    let ctl = gingham_integration::lab::workspace_binary("ginghamctl").unwrap();
    move |yaml: &str| {
        let file = lab.dir.path.join("object.yaml");
        std::fs::write(&file, yaml).unwrap();
        let datastore = format!("sqlite:{}", lab.db.display());
        let out = std::process::Command::new(&ctl).args(["--datastore", &datastore, "apply", "-f"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The EndpointSlice of `web` with one endpoint on `node`.
fn slice(node: &str, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n  - addresses: [198.19.0.5]\n    nodeName: {node}\n    conditions: {{ready: {ready}}}\n"
    )
}

#[test]
fn a_local_service_is_routed_to_the_node_with_its_ready_endpoint_and_follows_it() {
    // With zebra this time: what the ToR selects is in its kernel, and a packet it sends
    // follows it.
    let (lab, tor) = lab_with_ranges(Frr::start_with_bfd);
    let tor_ns = &lab.fabric.hosts[2].ns;
    let apply = ctl_apply(&lab);
    let t = Duration::from_secs(30);
    let hosts = ["198.18.96.10/32", "198.18.112.10/32", "198.18.113.5/32"];
    let only_via = |node: &str| {
        let want = vec![node.to_string()];
        wait_for(&format!("{hosts:?} via {node} only"), t, || hosts.iter().all(|h| ecmp_next_hops(&tor, h) == want).then_some(()))
            .unwrap_or_else(|e| {
                panic!("{e}: {:?}\n{}", hosts.map(|h| ecmp_next_hops(&tor, h)), lab.nodes[0].agent.as_ref().unwrap().log_tail())
            })
    };

    apply(SERVICE);
    apply(&slice("node-1", true));
    only_via("198.18.0.11");
    // Outside every configured range: never advertised.
    assert!(tor.route("ipv4", "203.0.113.10/32").is_none());
    // The ranges stay ECMP via both nodes; the host routes only add the preferred node.
    assert_eq!(ecmp_next_hops(&tor, "198.18.112.0/24"), vec!["198.18.0.11".to_string(), "198.18.0.12".to_string()]);

    // The endpoint moves to node-2: so does the route.
    let moved = std::time::Instant::now();
    apply(&slice("node-2", true));
    only_via("198.18.0.12");
    eprintln!("host routes moved to node-2 at the ToR {:.2} s after the EndpointSlice changed", moved.elapsed().as_secs_f64());

    // Packets the ToR sends to the external IP arrive at node-2, not node-1 (counted before
    // routing in each node's namespace).
    let count = |i: usize| -> u64 {
        let out = lab.fabric.hosts[i].ns.exec("nft", &["list", "chain", "ip", "svccount", "pre"]).unwrap();
        out.split_whitespace().skip_while(|w| *w != "packets").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for i in 0..2 {
        let ns = &lab.fabric.hosts[i].ns;
        ns.exec("nft", &["add", "table", "ip", "svccount"]).unwrap();
        ns.exec("nft", &["add chain ip svccount pre { type filter hook prerouting priority -300 ; }"]).unwrap();
        ns.exec("nft", &["add rule ip svccount pre ip daddr 198.18.112.10 counter"]).unwrap();
    }
    let _no_reply_expected = tor_ns.exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", "198.18.112.10"]);
    let (at1, at2) = (count(0), count(1));
    for i in 0..2 {
        let _ = lab.fabric.hosts[i].ns.exec("nft", &["delete", "table", "ip", "svccount"]);
    }
    assert_eq!((at1, at2), (0, 3), "packets to 198.18.112.10 counted at node-1 and node-2");

    // Not ready any more: withdrawn, the ranges stay.
    let unready = std::time::Instant::now();
    apply(&slice("node-2", false));
    wait_for("host routes withdrawn", t, || hosts.iter().all(|h| tor.route("ipv4", h).is_none()).then_some(())).unwrap();
    eprintln!("host routes withdrawn at the ToR {:.2} s after the endpoint became not ready", unready.elapsed().as_secs_f64());
    assert_eq!(ecmp_next_hops(&tor, "198.18.112.0/24").len(), 2);
}

const DUAL_STACK_TOR: &str = r#"
router bgp 65010
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 timers connect 2
 neighbor 198.18.0.12 remote-as 64512
 neighbor 198.18.0.12 timers connect 2
 neighbor 2001:db8:18::b remote-as 64512
 neighbor 2001:db8:18::b timers connect 2
 neighbor 2001:db8:18::c remote-as 64512
 neighbor 2001:db8:18::c timers connect 2
 address-family ipv4 unicast
  neighbor 198.18.0.11 activate
  neighbor 198.18.0.12 activate
  maximum-paths 8
 exit-address-family
 address-family ipv6 unicast
  neighbor 2001:db8:18::b activate
  neighbor 2001:db8:18::c activate
  maximum-paths 8
 exit-address-family
"#;

const LB_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: LoadBalancer
  ipFamilies: [IPv4, IPv6]
  externalTrafficPolicy: Local
  ports: [{port: 80, protocol: TCP}]
"#;

/// The addresses in a Service's `status.loadBalancer.ingress`, and our condition's message.
fn load_balancer_status(lab: &Cluster, key: &str) -> (Vec<String>, Option<String>) {
    let Some(svc) = lab.get::<Service>(key).unwrap() else { return (Vec::new(), None) };
    let status = svc.status.unwrap_or_default();
    let ingress = status.load_balancer.and_then(|lb| lb.ingress).unwrap_or_default();
    let condition = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "gingham.io/LoadBalancerAddresses");
    (ingress.into_iter().filter_map(|i| i.ip).collect(), condition.map(|c| format!("{}: {}", c.status, c.message)))
}

/// Every address allocated in the lab's IPAM, pods' and Services'.
fn allocated_now(lab: &Cluster) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (blocks, _) = rt.block_on(lab.store().unwrap().list::<gingham_api::resources::IPAMBlock>()).unwrap();
    blocks.iter().flat_map(|b| gingham_ipam::block::allocations(&b.spec)).map(|(a, _)| a.to_string()).collect()
}

#[test]
fn load_balancer_services_get_addresses_from_their_pools_on_both_families_and_give_them_back() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    options.ipv6 = true;
    let lab = Cluster::new(options).unwrap();
    let tor = Frr::start(&lab.fabric.hosts[2].ns, DUAL_STACK_TOR).unwrap();
    for (name, ip) in [("tor4", "198.18.0.13"), ("tor6", "2001:db8:18::d")] {
        let spec = BGPPeerSpec { peer_ip: Some(ip.into()), as_number: Some(65010), ..Default::default() };
        lab.create(&BGPPeer::new(name, spec)).unwrap();
    }
    for (name, cidr) in [("lb", "198.18.113.0/24"), ("lb6", "2001:db8:113::/112")] {
        let spec = IPPoolSpec { cidr: cidr.into(), allowed_uses: Some(vec![AllowedUse::LoadBalancer]), ..Default::default() };
        lab.create(&IPPool::new(name, spec)).unwrap();
    }
    let cidrs = |list: &[&str]| Some(list.iter().map(|c| ServiceCidr { cidr: c.to_string() }).collect::<Vec<_>>());
    lab.modify::<BGPConfiguration>("default", |c| {
        c.spec.service_cluster_ips = cidrs(&["198.18.96.0/20", "2001:db8:96::/112"]);
        c.spec.service_load_balancer_ips = cidrs(&["198.18.113.0/24", "2001:db8:113::/112"]);
    })
    .unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", tor.logs()));
    let t = Duration::from_secs(30);
    let logs = |lab: &Cluster, controllers: &gingham_integration::netns::Daemon| {
        format!("{}\n{}\n{}", controllers.log_tail(), lab.nodes[0].agent.as_ref().unwrap().log_tail(), tor.daemon.log_tail())
    };

    // IPv6 service ranges go out like the IPv4 ones: ECMP via both nodes.
    let both6 = vec!["2001:db8:18::b".to_string(), "2001:db8:18::c".to_string()];
    wait_for("2001:db8:96::/112 via both nodes", t, || (next_hops(&tor, "ipv6", "2001:db8:96::/112") == both6).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {:?}", tor.route("ipv6", "2001:db8:96::/112")));

    let controllers = lab.start_controllers().unwrap();
    let apply = ctl_apply(&lab);
    let created = std::time::Instant::now();
    apply(LB_SERVICE);
    apply(&slice("node-1", true));
    let (ingress, condition) = wait_for("web's LoadBalancer addresses in its status", t, || {
        let (ingress, condition) = load_balancer_status(&lab, "shop/web");
        (ingress.len() == 2).then_some((ingress, condition))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", load_balancer_status(&lab, "shop/web"), logs(&lab, &controllers)));
    let assigned = created.elapsed();
    let (v4, v6) = (ingress[0].clone(), ingress[1].clone());
    assert!(v4.starts_with("198.18.113.") && v6.starts_with("2001:db8:113::"), "{ingress:?}");
    assert_eq!(condition.as_deref(), Some(format!("True: assigned {v4}, {v6}").as_str()));
    // The ToR learns both as host routes via the node with the endpoint, over each family.
    let host4 = format!("{v4}/32");
    let host6 = format!("{v6}/128");
    wait_for("the LoadBalancer addresses via node-1 at the ToR", t, || {
        let ok = next_hops(&tor, "ipv4", &host4) == ["198.18.0.11"] && next_hops(&tor, "ipv6", &host6) == ["2001:db8:18::b"];
        ok.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} {:?}\n{}", tor.route("ipv4", &host4), tor.route("ipv6", &host6), logs(&lab, &controllers)));
    eprintln!(
        "LoadBalancer Service: addresses in its status {:.2} s, host routes at the ToR {:.2} s after it was applied",
        assigned.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );

    // A second Service asking for web's IPv4 address is told who holds it and gets nothing.
    apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: copy\n  namespace: shop\nspec:\n  type: LoadBalancer\n  loadBalancerIP: {v4}\n"
    ));
    let refused = wait_for("copy refused", t, || load_balancer_status(&lab, "shop/copy").1).unwrap();
    assert_eq!(refused, format!("False: {v4} is already held by Service shop/web"));
    assert!(load_balancer_status(&lab, "shop/copy").0.is_empty());

    // web deleted: both host routes are withdrawn, its IPv6 address is free again and its IPv4
    // address goes to copy, which asked for it.
    let deleted = std::time::Instant::now();
    assert!(lab.delete::<Service>("shop/web").unwrap());
    wait_for("web's host routes withdrawn", t, || {
        (tor.route("ipv4", &host4).is_none() && tor.route("ipv6", &host6).is_none()).then_some(())
    })
    .unwrap();
    eprintln!("host routes withdrawn at the ToR {:.2} s after the Service was deleted", deleted.elapsed().as_secs_f64());
    let (ingress, condition) = wait_for("copy gets the address", t, || {
        Some(load_balancer_status(&lab, "shop/copy")).filter(|(i, _)| i == std::slice::from_ref(&v4))
    })
    .unwrap();
    assert_eq!((ingress, condition.as_deref()), (vec![v4.clone()], Some(format!("True: assigned {v4}").as_str())));
    let allocated = allocated_now(&lab);
    assert!(!allocated.contains(&v6), "web's IPv6 address released: {allocated:?}");
    assert!(allocated.contains(&v4), "held by copy now");
    // copy becomes a ClusterIP Service: its address is released too.
    apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: copy\n  namespace: shop\nspec:\n  type: ClusterIP\n");
    wait_for("copy's address released", t, || (!allocated_now(&lab).contains(&v4)).then_some(())).unwrap();
    // The ranges stay.
    assert_eq!(next_hops(&tor, "ipv6", "2001:db8:96::/112"), both6);
}
