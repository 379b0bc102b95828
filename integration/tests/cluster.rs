//! The product end to end: clusters of namespaces running the real gingham-agent, pods made by
//! invoking the real gingham-cni binary as a runtime does, routes exchanged over our BGP.
//! Every test builds its own cluster (random namespace names) and removes it on drop.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use gingham_api::resources::{BGPPeer, BGPPeerSpec, GinghamNode, IPAMBlock};
use gingham_integration::daemons::bird::Bird;
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::wait_for;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Waits until node `i` has a route (of ours) for `prefix`.
fn wait_route(lab: &Cluster, i: usize, prefix: &str, present: bool, timeout: Duration) {
    wait_for(&format!("route {prefix} {} on {}", if present { "present" } else { "gone" }, lab.nodes[i].name), timeout, || {
        let routes = lab.routes(i).ok()?;
        (routes.lines().any(|l| l.split_whitespace().next() == Some(prefix)) == present).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nroutes:\n{}\nagent log:\n{}", lab.routes(i).unwrap_or_default(), agent_log(lab, i)));
}

fn agent_log(lab: &Cluster, i: usize) -> String {
    lab.nodes[i].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default()
}

fn block_of(addr: Ipv4Addr) -> String {
    let net = ipnetwork::Ipv4Network::new(addr, 26).unwrap();
    format!("{}/26", net.network())
}

#[test]
fn pods_ping_across_a_three_node_mesh_without_encapsulation() {
    let mut lab = Cluster::new(LabOptions::new(3)).unwrap();
    for n in 0..3 {
        lab.add_pod(n, &format!("web-{n}")).unwrap();
    }
    lab.wait_established(Duration::from_secs(60)).unwrap();
    for i in 0..3 {
        for pod in &lab.pods {
            if pod.node != i {
                wait_route(&lab, i, &block_of(pod.address), true, Duration::from_secs(30));
            }
        }
    }
    for from in &lab.pods {
        for to in &lab.pods {
            assert!(lab.ping(from, to.address), "{} ({}) cannot reach {} ({})", from.name, from.address, to.name, to.address);
        }
    }

    // On the wire between the nodes, the packet carries the pods' own addresses: no tunnel.
    let (a, b) = (&lab.pods[0], &lab.pods[1]);
    let capture = lab
        .fabric
        .bridge
        .command("tshark")
        .args(["-i", "br0", "-c", "2", "-a", "duration:15", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.proto"])
        .args(["-f", &format!("host {} and host {}", a.address, b.address)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        lab.ping(a, b.address);
    }
    let out = String::from_utf8(capture.wait_with_output().unwrap().stdout).unwrap();
    let first = out.lines().next().unwrap_or_else(|| panic!("no packet captured on the fabric: {out:?}"));
    let fields: Vec<&str> = first.split('\t').collect();
    assert_eq!(fields[0], a.address.to_string(), "outer source is the pod's own address: {first}");
    assert_eq!(fields[1], b.address.to_string());
    assert_eq!(fields[2], "1", "ICMP directly in IP, not encapsulated: {first}");
    for i in 0..3 {
        let links = lab.fabric.hosts[i].ns.exec("ip", &["-d", "link", "show"]).unwrap();
        for kind in ["ipip", "vxlan", "gre", "wireguard", "geneve"] {
            assert!(!links.contains(&format!(" {kind} ")), "{kind} device on node {i}");
        }
        assert!(!lab.routes(i).unwrap().contains("encap"));
    }

    // Both ends of a pod's veth are made with one queue each way (a veth uses one; asking for
    // it up front spares a wait for RCU under the RTNL lock per pod).
    for pod in &lab.pods {
        let host = lab.fabric.hosts[pod.node].ns.exec("ip", &["-d", "-o", "link", "show", "type", "veth"]).unwrap();
        let inside = pod.ns.exec("ip", &["-d", "-o", "link", "show", "eth0"]).unwrap();
        for (side, links) in [("host", &host), ("pod", &inside)] {
            let link = links.lines().find(|l| l.contains("cali") || side == "pod").unwrap_or_else(|| panic!("no {side} veth: {links}"));
            assert!(link.contains("numtxqueues 1 numrxqueues 1"), "{} {side} end: {link}", pod.name);
        }
    }
}

#[test]
fn deleting_a_pod_removes_its_route_interface_and_address() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let keep = lab.add_pod(0, "keep").unwrap().address;
    let pod = lab.add_pod(0, "doomed").unwrap();
    let (addr, container) = (pod.address, pod.container_id.clone());
    let host_route = addr.to_string();
    wait_route(&lab, 0, &host_route, true, Duration::from_secs(10));
    let links = lab.fabric.hosts[0].ns.exec("ip", &["-o", "link", "show"]).unwrap();
    assert_eq!(links.matches("cali").count(), 2);

    let gone = lab.delete_pod("doomed").unwrap();
    wait_route(&lab, 0, &host_route, false, Duration::from_secs(10));
    // DEL returns before the kernel has finished deleting the veth (that takes ~20 ms).
    wait_for("the pod's veth to go", Duration::from_secs(5), || {
        let links = lab.fabric.hosts[0].ns.exec("ip", &["-o", "link", "show"]).ok()?;
        (links.matches("cali").count() == 1).then_some(())
    })
    .expect("the pod's veth is gone, the other stays");
    // DEL is idempotent: the runtime may repeat it, even without the namespace.
    lab.cni(0, "DEL", &container, &gone.ns, "doomed").unwrap();
    drop(gone);

    let held = lab.allocated_v4().unwrap();
    assert_eq!(held, HashSet::from([keep]), "the deleted pod's address is free again");
}

#[test]
fn a_block_claimed_on_one_node_is_routed_on_the_others_and_withdrawn_when_the_node_goes() {
    let mut lab = Cluster::new(LabOptions::new(3)).unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let addr = lab.add_pod(2, "p").unwrap().address;
    let block = block_of(addr);
    for i in 0..2 {
        wait_route(&lab, i, &block, true, Duration::from_secs(10));
    }
    let q = lab.add_pod(0, "q").unwrap().address;
    // The reply needs the way back: q's block, just claimed on node 1, must have reached node 3.
    wait_route(&lab, 2, &block_of(q), true, Duration::from_secs(10));
    assert!(lab.ping(lab.pods.last().unwrap(), addr));

    // The node leaves the cluster: its agent stops and its GinghamNode is deleted (what
    // `kubectl delete node` leads to). The others drop the session and the routes within the
    // hold time (9 s here).
    let pod = lab.delete_pod("p").unwrap();
    drop(pod);
    lab.nodes[2].agent.take();
    let rt = rt();
    let store = lab.store().unwrap();
    rt.block_on(store.delete_latest::<GinghamNode>("node-3")).unwrap();
    let started = std::time::Instant::now();
    for i in 0..2 {
        wait_route(&lab, i, &block, false, Duration::from_secs(9));
    }
    eprintln!("routes withdrawn after {:?}", started.elapsed());
}

#[test]
fn a_route_reflector_topology_without_the_mesh_works() {
    let mut options = LabOptions::new(3);
    options.mesh = false;
    options.reflectors = vec![0];
    let mut lab = Cluster::new(options).unwrap();
    let a = lab.add_pod(1, "a").unwrap().address;
    let b = lab.add_pod(2, "b").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let peers_of = |i: usize| -> Vec<String> {
        lab.status(i).unwrap()["peers"].as_array().unwrap().iter().map(|p| p["address"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(peers_of(1), ["198.18.0.11"], "a client peers with the reflector only");
    assert_eq!(peers_of(0).len(), 2);
    wait_route(&lab, 1, &block_of(b), true, Duration::from_secs(15));
    wait_route(&lab, 2, &block_of(a), true, Duration::from_secs(15));
    let (pa, pb) = (&lab.pods[0], &lab.pods[1]);
    assert!(lab.ping(pa, b) && lab.ping(pb, a));
    // The route between clients points at the other client, not at the reflector.
    // (Its line may name the nexthop object too: `PREFIX nhid N via ...`.)
    let routes = lab.routes(1).unwrap();
    let line = routes.lines().find(|l| l.starts_with(&format!("{} ", block_of(b)))).unwrap_or_default();
    assert!(line.contains("via 198.18.0.13 "), "{routes}");
}

#[test]
fn a_bird_top_of_rack_router_selected_by_a_bgp_peer_learns_every_block() {
    let mut options = LabOptions::new(3);
    options.labels = vec!["rack=r1".into(); 3];
    options.extra_hosts = 1;
    let mut lab = Cluster::new(options).unwrap();
    let tor = &lab.fabric.hosts[3];
    let config = format!(
        "router id {};\nprotocol device {{}}\nprotocol kernel {{ ipv4 {{ export none; import none; }}; }}\n{}",
        tor.v4,
        (0..3)
            .map(|i| format!(
                "protocol bgp node{i} {{ local {} as 65001; neighbor 198.18.0.{} as 64512; ipv4 {{ import all; export none; }}; }}\n",
                tor.v4,
                11 + i
            ))
            .collect::<String>()
    );
    let bird = Bird::start(&tor.ns, &config).unwrap();
    let spec = BGPPeerSpec {
        node_selector: Some("rack == 'r1'".into()),
        peer_ip: Some(tor.v4.to_string()),
        as_number: Some(65001),
        ..Default::default()
    };
    let rt = rt();
    rt.block_on(lab.store().unwrap().create(&BGPPeer::new("tor", spec))).unwrap();
    let mut blocks = Vec::new();
    for n in 0..3 {
        blocks.push(block_of(lab.add_pod(n, &format!("p{n}")).unwrap().address));
    }
    for (i, block) in blocks.iter().enumerate() {
        wait_for(&format!("BIRD learning {block} from node {i}"), Duration::from_secs(60), || {
            let routes = bird.routes_from(&format!("node{i}"));
            routes.iter().any(|r| r.starts_with(block.as_str())).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", bird.cmd("show protocols all").unwrap_or_default(), agent_log(&lab, i)));
    }
    // eBGP: BIRD sees the node as next hop and our AS in the path.
    let detail = bird.route_all(&blocks[0]);
    assert!(detail.contains("198.18.0.11") && detail.contains("64512"), "{detail}");
}

#[test]
fn fifty_concurrent_adds_give_fifty_distinct_working_pods() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let probe = lab.add_pod(1, "probe").unwrap().address;
    let namespaces: Vec<_> = (0..50).map(|_| gingham_integration::netns::Netns::new("gpod").unwrap()).collect();
    let lab = &lab;
    // Fifty plugin processes at once against one agent, as a runtime starting a burst of pods.
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| s.spawn(move || lab.cni(0, "ADD", &format!("{:064x}", i + 1000), ns, &format!("burst-{i}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let mut addrs = HashSet::new();
    for out in &results {
        let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let a: ipnetwork::Ipv4Network = v["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{out}")).parse().unwrap();
        addrs.insert(a.ip());
    }
    assert_eq!(addrs.len(), 50, "50 distinct addresses");
    let from = lab.pods.iter().find(|p| p.address == probe).unwrap();
    for block in addrs.iter().map(|a| block_of(*a)).collect::<HashSet<_>>() {
        wait_route(lab, 1, &block, true, Duration::from_secs(20));
    }
    wait_route(lab, 0, &block_of(probe), true, Duration::from_secs(20));
    let unreachable: Vec<_> = addrs.iter().filter(|a| !lab.ping(from, **a)).collect();
    assert!(unreachable.is_empty(), "not answering from the other node: {unreachable:?}");
    for (i, ns) in namespaces.iter().enumerate() {
        lab.cni(0, "DEL", &format!("{:064x}", i + 1000), ns, &format!("burst-{i}")).unwrap();
    }
    wait_for("every veth removed after DEL", Duration::from_secs(10), || {
        let links = lab.fabric.hosts[0].ns.exec("ip", &["-o", "link", "show"]).ok()?;
        (links.matches("cali").count() == 0).then_some(())
    })
    .unwrap();
}

/// Block usage under concurrency: 100 plugin processes at once on each of three nodes, all
/// racing for blocks of one pool. 300 addresses in /26 blocks need 6; a node may hold one
/// partly used block of slack.
#[test]
fn three_hundred_concurrent_adds_claim_no_more_blocks_than_needed() {
    let lab = Cluster::new(LabOptions::new(3)).unwrap();
    let namespaces: Vec<_> = (0..300).map(|_| gingham_integration::netns::Netns::new("gpod").unwrap()).collect();
    let lab = &lab;
    let started = std::time::Instant::now();
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| s.spawn(move || lab.cni(i % 3, "ADD", &format!("{:064x}", i + 5000), ns, &format!("churn-{i}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let took = started.elapsed();
    let addrs: HashSet<Ipv4Addr> = results
        .iter()
        .map(|out| {
            let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
            v["ips"][0]["address"].as_str().unwrap().parse::<ipnetwork::Ipv4Network>().unwrap().ip()
        })
        .collect();
    assert_eq!(addrs.len(), 300, "300 distinct addresses");
    let blocks = rt().block_on(lab.store().unwrap().list::<IPAMBlock>()).unwrap().0;
    let per_node = |n: &str| blocks.iter().filter(|b| b.spec.affinity.as_deref() == Some(&format!("host:{n}"))).count();
    let counts: Vec<usize> = (1..=3).map(|i| per_node(&format!("node-{i}"))).collect();
    eprintln!("300 concurrent ADDs on 3 nodes in {:.1} s: blocks per node {counts:?}, {} in all", took.as_secs_f64(), blocks.len());
    assert!(blocks.len() <= 6 + 3, "{} blocks for 300 addresses: {counts:?}", blocks.len());
    assert!(counts.iter().all(|c| *c <= 3), "a node claimed more than 2 blocks + 1 of slack: {counts:?}");
    let check = std::process::Command::new(gingham_integration::lab::workspace_binary("ginghamctl").unwrap())
        .args(["--datastore", &format!("sqlite:{}", lab.db.display()), "ipam", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

#[test]
fn check_verifies_the_pod_and_del_of_an_unknown_container_succeeds() {
    let mut lab = Cluster::new(LabOptions::new(1)).unwrap();
    lab.add_pod(0, "web").unwrap();
    let pod = &lab.pods[0];
    lab.cni(0, "CHECK", &pod.container_id, &pod.ns, "web").expect("CHECK of an intact pod");
    // Someone removes the pod's address by hand: CHECK must notice.
    pod.ns.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    let err = lab.cni(0, "CHECK", &pod.container_id, &pod.ns, "web").unwrap_err().to_string();
    assert!(err.contains("\"code\":101") && err.contains("does not have"), "{err}");
    let unknown = gingham_integration::netns::Netns::new("gpod").unwrap();
    let err = lab.cni(0, "CHECK", "feedface", &unknown, "ghost").unwrap_err().to_string();
    assert!(err.contains("\"code\":3"), "{err}");
    lab.cni(0, "DEL", "feedface", &unknown, "ghost").expect("DEL of a container that was never added succeeds");
}

/// Graceful restart end to end: the agent on one node is killed with SIGKILL and started again
/// while a pod on it pings a pod on another node every 50 ms; not one ping may be lost, and
/// afterwards the routes are all still there.
#[test]
fn an_agent_killed_and_restarted_during_a_ping_loses_nothing() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let a = lab.add_pod(0, "a").unwrap().address;
    let b = lab.add_pod(1, "b").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    wait_route(&lab, 0, &block_of(b), true, Duration::from_secs(15));
    wait_route(&lab, 1, &block_of(a), true, Duration::from_secs(15));
    let ping = gingham_integration::lab::start_pinger(&lab.pods[0], b, "0.05", 15).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.nodes[0].agent.as_mut().unwrap().kill();
    std::thread::sleep(Duration::from_secs(2));
    lab.start_agent(0).unwrap();
    lab.wait_established(Duration::from_secs(30)).unwrap();
    let (sent, received) = gingham_integration::lab::pinger_counts(ping).unwrap();
    assert!(sent > 100, "{sent} sent");
    assert_eq!(sent, received, "pings lost across the restart: {received} of {sent} answered");
    // After the restart has settled (End-of-RIB both ways), nothing of ours was removed.
    std::thread::sleep(Duration::from_secs(6));
    let routes = lab.routes(0).unwrap();
    assert!(routes.contains(&block_of(b)) && routes.contains(&format!("{a} dev cali")), "{routes}");
    assert!(lab.ping(&lab.pods[1], a));
}

/// The FIB syncer repairs drift: a route of ours deleted by hand comes back, a route with our
/// protocol that nobody wants goes, and routes of other protocols are left alone. The status
/// endpoint serves metrics meanwhile.
#[test]
fn kernel_route_drift_is_repaired_and_foreign_routes_are_left_alone() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let b = lab.add_pod(1, "b").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let block = block_of(b);
    wait_route(&lab, 0, &block, true, Duration::from_secs(15));
    let node = &lab.fabric.hosts[0].ns;
    node.ip(&["route", "del", &block]).unwrap();
    node.ip(&["route", "add", "198.19.250.0/24", "via", "198.18.0.12", "proto", "80"]).unwrap();
    node.ip(&["route", "add", "198.19.251.0/24", "via", "198.18.0.12", "proto", "static"]).unwrap();
    wait_route(&lab, 0, &block, true, Duration::from_secs(12));
    wait_route(&lab, 0, "198.19.250.0/24", false, Duration::from_secs(12));
    let all = node.exec("ip", &["route", "show"]).unwrap();
    assert!(all.contains("198.19.251.0/24 via 198.18.0.12 dev eth0 proto static"), "a static route was touched: {all}");

    // Strays of our protocol of every kind we install (a blackhole, a scope-link host route, a
    // learned route at our metric) go within one repair period: the deletes name them exactly.
    node.ip(&["route", "add", "blackhole", "198.19.252.0/26", "proto", "80", "metric", "1"]).unwrap();
    node.ip(&["route", "add", "198.19.253.7/32", "dev", "eth0", "scope", "link", "proto", "80"]).unwrap();
    node.ip(&["route", "add", "198.19.254.0/24", "via", "198.18.0.12", "proto", "80", "metric", "2048"]).unwrap();
    wait_for("the strays to go", Duration::from_secs(12), || {
        let ours = lab.routes(0).ok()?;
        ["198.19.252.0/26", "198.19.253.7 ", "198.19.254.0/24"].iter().all(|s| !ours.contains(s)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.routes(0).unwrap_or_default()));
    let log = std::fs::read_to_string(&lab.nodes[0].log).unwrap();
    assert!(!log.contains("route not installed"), "every removal succeeded at the first attempt:\n{log}");

    let metrics = lab.http_get(0, "/metrics").unwrap();
    assert!(metrics.contains("gingham_bgp_sessions{state=\"Established\"} 1"), "{metrics}");
    assert!(metrics.contains("gingham_routes_programmed"), "{metrics}");
    assert_eq!(lab.http_get(0, "/readyz").unwrap().trim(), "ready");
    // The operator's view of the same agent, from inside the node.
    let ctl = gingham_integration::lab::workspace_binary("ginghamctl").unwrap();
    let status = node.exec(ctl.to_str().unwrap(), &["node", "status"]).unwrap();
    assert!(status.contains("198.18.0.12    mesh        Established"), "{status}");
}

/// Dual stack: nodes peer over IPv6 as well, pods get one IPv4 and one IPv6 address, and both
/// cross the fabric unencapsulated.
#[test]
fn dual_stack_pods_reach_each_other_over_ipv4_and_ipv6() {
    let mut options = LabOptions::new(2);
    options.ipv6 = true;
    let mut lab = Cluster::new(options).unwrap();
    lab.add_pod(0, "a").unwrap();
    lab.add_pod(1, "b").unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let (a, b) = (&lab.pods[0], &lab.pods[1]);
    let (a6, b6) = (a.address6.expect("an IPv6 address"), b.address6.expect("an IPv6 address"));
    assert!(a6.to_string().starts_with("2001:db8:19:"), "{a6}");
    let peers =
        lab.status(0).unwrap()["peers"].as_array().unwrap().iter().map(|p| p["address"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(peers.contains(&"2001:db8:18::c".to_string()), "an IPv6 session too: {peers:?}");
    let block6 = |addr: std::net::Ipv6Addr| format!("{}/122", ipnetwork::Ipv6Network::new(addr, 122).unwrap().network());
    wait_for("IPv6 block routes", Duration::from_secs(20), || {
        (lab.routes6(0).ok()?.contains(&block6(b6)) && lab.routes6(1).ok()?.contains(&block6(a6))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", lab.routes6(0).unwrap_or_default(), agent_log(&lab, 0)));
    wait_route(&lab, 0, &block_of(b.address), true, Duration::from_secs(20));
    wait_route(&lab, 1, &block_of(a.address), true, Duration::from_secs(20));
    assert!(lab.ping6(a, b6), "IPv6 across nodes");
    assert!(lab.ping6(b, a6));
    assert!(lab.ping(a, b.address), "IPv4 still works");
}

/// A runtime that replaced a pod's sandbox and sends the DEL for the old one late: the old
/// sandbox's address is freed, and the new sandbox (whose host veth has the same name, being
/// named after the pod) keeps its interface, route and reachability.
#[test]
fn a_late_del_of_an_old_sandbox_leaves_the_new_one_working() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let peer = lab.add_pod(1, "peer").unwrap().address;
    let old = lab.add_pod(0, "web").unwrap();
    let (old_id, old_addr) = (old.container_id.clone(), old.address);
    let old_ns = lab.pods.pop().unwrap().ns;
    // The new sandbox of the same pod.
    let new_ns = gingham_integration::netns::Netns::new("gpod").unwrap();
    let new_id = format!("{:0>64}", "feed");
    let out = lab.cni(0, "ADD", &new_id, &new_ns, "web").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new_addr: Ipv4Addr = v["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    lab.pods.push(gingham_integration::lab::Pod {
        name: "web".into(),
        node: 0,
        container_id: new_id,
        address: new_addr,
        address6: None,
        ns: new_ns,
    });
    lab.wait_established(Duration::from_secs(60)).unwrap();
    wait_route(&lab, 1, &block_of(new_addr), true, Duration::from_secs(20));
    wait_route(&lab, 0, &block_of(peer), true, Duration::from_secs(20));
    let from = lab.pods.iter().find(|p| p.name == "peer").unwrap();
    assert!(lab.ping(from, new_addr), "the new sandbox answers before the late DEL");

    lab.cni(0, "DEL", &old_id, &old_ns, "web").unwrap();
    drop(old_ns);
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.ping(from, new_addr), "and after it");
    assert!(lab.routes(0).unwrap().contains(&format!("{new_addr} dev cali")), "{}", lab.routes(0).unwrap());
    wait_route(&lab, 0, &old_addr.to_string(), false, Duration::from_secs(10));
    let held = lab.allocated_v4().unwrap();
    assert_eq!(held, HashSet::from([peer, new_addr]), "the old sandbox's address is free, the new one's kept");
}

/// CNI GC: without the list of valid attachments nothing is released (an error says why); with
/// it, under either key spelling runtimes send, only the attachments missing from it are.
#[test]
fn gc_releases_only_attachments_missing_from_the_valid_list() {
    let mut lab = Cluster::new(LabOptions::new(1)).unwrap();
    let a = lab.add_pod(0, "a").unwrap().address;
    let b = lab.add_pod(0, "b").unwrap().address;
    let (a_id, b_id) = (lab.pods[0].container_id.clone(), lab.pods[1].container_id.clone());
    let held = |lab: &Cluster| lab.allocated_v4().unwrap();
    let nowhere = gingham_integration::netns::Netns::new("gpod").unwrap();
    let err = lab.cni_with(0, "GC", "", &nowhere, "", serde_json::json!({})).unwrap_err().to_string();
    assert!(err.contains("\"code\":7") && err.contains("valid-attachments"), "{err}");
    assert_eq!(held(&lab), HashSet::from([a, b]), "nothing released without the list");

    let keep_a = serde_json::json!({"cni.dev/valid-attachments": [{"containerID": a_id, "ifname": "eth0"}, {"containerID": b_id, "ifname": "eth0"}]});
    lab.cni_with(0, "GC", "", &nowhere, "", keep_a).unwrap();
    assert_eq!(held(&lab), HashSet::from([a, b]), "both are valid");

    let only_a = serde_json::json!({"cni.dev/attachments": [{"containerID": a_id, "ifname": "eth0"}]});
    lab.cni_with(0, "GC", "", &nowhere, "", only_a).unwrap();
    assert_eq!(held(&lab), HashSet::from([a]), "b was stale");
    wait_route(&lab, 0, &b.to_string(), false, Duration::from_secs(10));
}

/// A pod whose namespace disappears without a CNI DEL (a crashed runtime; containerd sends no
/// GC): its interface goes with the namespace, and after the grace the agent releases its
/// address, route and handle by itself. The pod that stays is untouched.
#[test]
fn a_pod_gone_without_a_del_is_reclaimed() {
    let mut lab = Cluster::new(LabOptions::new(1)).unwrap();
    let keep = lab.add_pod(0, "keep").unwrap().address;
    let lost = lab.add_pod(0, "lost").unwrap().address;
    let pod = lab.pods.pop().unwrap();
    wait_route(&lab, 0, &lost.to_string(), true, Duration::from_secs(10));
    let started = std::time::Instant::now();
    drop(pod.ns);
    wait_route(&lab, 0, &lost.to_string(), false, Duration::from_secs(60));
    let store = lab.store().unwrap();
    let rt = rt();
    wait_for("the address released", Duration::from_secs(60), || {
        let (blocks, _) = rt.block_on(store.list::<IPAMBlock>()).ok()?;
        let held: HashSet<std::net::IpAddr> =
            blocks.iter().flat_map(|b| gingham_ipam::block::allocations(&b.spec).into_iter().map(|(a, _)| a).collect::<Vec<_>>()).collect();
        (held == HashSet::from([std::net::IpAddr::V4(keep)])).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_log(&lab, 0)));
    eprintln!("reclaimed {:?} after the namespace went", started.elapsed());
    let report = rt.block_on(gingham_ipam::Ipam::new(store.clone()).check()).unwrap();
    assert!(report.leaks.is_empty() && report.duplicates.is_empty(), "{report:?}");
    let (handles, _) = rt.block_on(store.list::<gingham_api::resources::IPAMHandle>()).unwrap();
    assert_eq!(handles.len(), 1, "only the kept pod's handle: {handles:?}");
    let metrics = lab.http_get(0, "/metrics").unwrap();
    assert!(metrics.contains("gingham_ipam_reclaimed_addresses_total 1"), "{metrics}");
    assert!(lab.routes(0).unwrap().contains(&format!("{keep} dev cali")), "the other pod keeps its route");
}
