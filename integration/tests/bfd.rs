//! BFD (RFC 5880/5881) against BIRD's `protocol bfd` and FRR's bfdd, IPv4 and IPv6, in
//! namespaces. Needs root.
//!
//! ```text
//!   h1 gingham-bfd driver 198.18.0.11 / 2001:db8:18::b
//!   h2 BIRD               198.18.0.12 / 2001:db8:18::c     one bridge
//!   h3 FRR bfdd           198.18.0.13 / 2001:db8:18::d
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gingham_bfd::driver::{self, BfdHandle, Change, DriverConfig, Peering, SessionStatus};
use gingham_bfd::{ControlPacket, Diagnostic, State};
use gingham_integration::daemons::{Bfdd, Bird, Frr};
use gingham_integration::netns::{wait_for, Fabric, Netns};
use gingham_integration::sessions::NsRuntime;

const T: Duration = Duration::from_secs(20);

fn peering(local: IpAddr, tx_ms: u64) -> Peering {
    Peering { local: Some(local), min_tx: Duration::from_millis(tx_ms), min_rx: Duration::from_millis(300), multiplier: 3 }
}

struct Ours {
    rt: NsRuntime,
    handle: BfdHandle,
    changes: Arc<Mutex<Vec<(Instant, Change)>>>,
}

impl Ours {
    fn start(ns: &Netns) -> Ours {
        let _already =
            tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let rt = NsRuntime::new(ns).expect("runtime in h1");
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = changes.clone();
        let handle = rt.block_on(async move {
            let (handle, mut rx) = driver::spawn(DriverConfig::default());
            tokio::spawn(async move {
                while let Some(c) = rx.recv().await {
                    sink.lock().unwrap().push((Instant::now(), c));
                }
            });
            handle
        });
        Ours { rt, handle, changes }
    }

    fn set(&self, want: &[(IpAddr, Peering)]) {
        let h = self.handle.clone();
        let want: BTreeMap<IpAddr, Peering> = want.iter().copied().collect();
        self.rt.block_on(async move { h.set(want).await }).expect("sessions set");
    }

    fn session(&self, peer: IpAddr) -> Option<SessionStatus> {
        let h = self.handle.clone();
        self.rt.block_on(async move { h.sessions().await }).ok()?.into_iter().find(|s| s.peer == peer)
    }

    fn state(&self, peer: IpAddr) -> Option<State> {
        self.session(peer).map(|s| s.state)
    }

    fn changes_for(&self, peer: IpAddr) -> Vec<(Instant, Change)> {
        self.changes.lock().unwrap().iter().filter(|(_, c)| c.peer == peer).copied().collect()
    }
}

/// Sends one control packet from inside `ns` with the given TTL, as an attacker (or a
/// misrouted packet) would.
fn send_from(ns: &Netns, from: IpAddr, to: IpAddr, ttl: u32, packet: ControlPacket) {
    let file = File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this short-lived thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let sock = std::net::UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
        sock.set_ttl(ttl).unwrap();
        let mut buf = BytesMut::new();
        packet.encode(&mut buf);
        sock.send_to(&buf, SocketAddr::new(to, driver::CONTROL_PORT)).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn sessions_with_bird_and_frr_come_up_detect_a_cut_link_keep_gtsm_and_change_intervals_without_a_flap() {
    let fabric = Fabric::new(3).expect("fabric");
    let (h1, h2, h3) = (&fabric.hosts[0], &fabric.hosts[1], &fabric.hosts[2]);
    let (us4, us6) = (IpAddr::V4(h1.v4), IpAddr::V6(h1.v6));
    let (bird4, bird6) = (IpAddr::V4(h2.v4), IpAddr::V6(h2.v6));
    let (frr4, frr6) = (IpAddr::V4(h3.v4), IpAddr::V6(h3.v6));
    let bird = Bird::start(
        &h2.ns,
        &format!(
            r#"router id {bird4};
protocol device {{}}
protocol bfd {{
  interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
  neighbor {us4} local {bird4};
  neighbor {us6} local {bird6};
}}
"#
        ),
    )
    .expect("BIRD");
    let bfdd = Bfdd::start(
        &h3.ns,
        &format!(
            "bfd\n peer {us4} local-address {frr4}\n  receive-interval 300\n  transmit-interval 300\n !\n peer {us6} local-address {frr6}\n  receive-interval 300\n  transmit-interval 300\n !\n!\n"
        ),
    )
    .expect("bfdd");
    let ours = Ours::start(&h1.ns);
    let all = [(bird4, peering(us4, 300)), (bird6, peering(us6, 300)), (frr4, peering(us4, 300)), (frr6, peering(us6, 300))];
    ours.set(&all);
    let logs = || format!("{}\n{}", bird.daemon.log_tail(), bfdd.daemon.log_tail());
    let check = |what: &str, ok: &dyn Fn() -> bool| {
        if let Err(e) = wait_for(what, T, || ok().then_some(())) {
            panic!("{e}\n{}", logs());
        }
    };

    // 1. Up on both ends, both families, both daemons.
    for peer in [bird4, bird6, frr4, frr6] {
        check(&format!("our session with {peer} Up"), &|| ours.state(peer) == Some(State::Up));
    }
    check("BIRD sees us Up (v4)", &|| bird.bfd_state(&us4.to_string()).as_deref() == Some("Up"));
    check("BIRD sees us Up (v6)", &|| bird.bfd_state(&us6.to_string()).as_deref() == Some("Up"));
    check("bfdd sees us up (v4)", &|| bfdd.status(&us4.to_string()).as_deref() == Some("up"));
    check("bfdd sees us up (v6)", &|| bfdd.status(&us6.to_string()).as_deref() == Some("up"));
    let s = ours.session(frr4).unwrap();
    assert_eq!(s.detection_time, Some(Duration::from_millis(900)), "3 x max(300 ms, 300 ms)");

    // 2. GTSM: a packet that would take the session down, but sent with TTL 64, is ignored;
    //    the same packet with TTL 255 takes it down (so the first one did reach us).
    let s = ours.session(bird4).unwrap();
    let forged = ControlPacket {
        diag: Diagnostic::None,
        state: State::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_disc: s.remote_disc,
        your_disc: s.local_disc,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    };
    send_from(&h2.ns, bird4, us4, 64, forged);
    std::thread::sleep(Duration::from_secs(1));
    let after = ours.session(bird4).unwrap();
    assert_eq!((after.state, after.downs), (State::Up, 0), "a packet with TTL 64 must not reach the session");
    send_from(&h2.ns, bird4, us4, 255, forged);
    check("the TTL 255 copy takes the session down", &|| ours.session(bird4).is_some_and(|s| s.downs == 1));
    let down = ours.changes_for(bird4).into_iter().find(|(_, c)| c.to == State::Down).unwrap().1;
    assert_eq!(down.diagnostic, Diagnostic::NeighborSignaledSessionDown);
    check("and it comes back", &|| ours.state(bird4) == Some(State::Up));

    // 3. Intervals changed while Up: a poll sequence, no flap on either side.
    ours.set(&[(bird4, peering(us4, 300)), (bird6, peering(us6, 300)), (frr4, peering(us4, 100)), (frr6, peering(us6, 300))]);
    check("bfdd uses our new 100 ms transmit interval", &|| {
        bfdd.peer(&us4.to_string()).and_then(|p| p.get("remote-transmit-interval")?.as_u64()) == Some(100)
    });
    let s = ours.session(frr4).unwrap();
    assert_eq!((s.state, s.downs), (State::Up, 0), "no flap while the interval changed: {:?}\n{}", ours.changes_for(frr4), logs());
    assert_eq!(bfdd.status(&us4.to_string()).as_deref(), Some("up"));

    // 4. BIRD's port on the bridge goes down: both sessions with it are declared down by
    //    detection time (about 3 x 300 ms); FRR's stay up.
    let cut = Instant::now();
    fabric.bridge.ip(&["link", "set", "p2", "down"]).unwrap();
    for peer in [bird4, bird6] {
        check(&format!("{peer} declared down"), &|| ours.state(peer) == Some(State::Down));
        let (at, c) = *ours.changes_for(peer).iter().rev().find(|(_, c)| c.to == State::Down).unwrap();
        assert_eq!(c.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert!(!c.peer_admin_down);
        println!("link cut -> BFD down for {peer}: {:?}", at.duration_since(cut));
    }
    assert_eq!(ours.state(frr4), Some(State::Up));
    fabric.bridge.ip(&["link", "set", "p2", "up"]).unwrap();
    for peer in [bird4, bird6] {
        check(&format!("{peer} Up again"), &|| ours.state(peer) == Some(State::Up));
    }

    // 5. The other direction: our port goes down, and bfdd and BIRD declare us down.
    fabric.bridge.ip(&["link", "set", "p1", "down"]).unwrap();
    for addr in [us4, us6] {
        check(&format!("bfdd declares {addr} down by detection time"), &|| {
            bfdd.peer(&addr.to_string()).is_some_and(|p| {
                p.get("status").and_then(|v| v.as_str()) == Some("down")
                    && p.get("diagnostic").and_then(|v| v.as_str()) == Some("control detection time expired")
            })
        });
        check(&format!("BIRD declares {addr} down"), &|| bird.bfd_state(&addr.to_string()).as_deref() == Some("Down"));
    }
    fabric.bridge.ip(&["link", "set", "p1", "up"]).unwrap();
    for peer in [bird4, bird6, frr4, frr6] {
        check(&format!("{peer} Up again"), &|| ours.state(peer) == Some(State::Up));
    }
    check("bfdd sees us up again", &|| bfdd.status(&us4.to_string()).as_deref() == Some("up"));

    // 6. Deconfigured: the peer is told AdminDown, which RFC 5882 3.2 says is no failure.
    ours.set(&[(bird4, peering(us4, 300)), (bird6, peering(us6, 300))]);
    for addr in [us4, us6] {
        check(&format!("bfdd sees {addr} administratively down"), &|| {
            bfdd.peer(&addr.to_string()).is_some_and(|p| {
                p.get("status").and_then(|v| v.as_str()) == Some("down")
                    && p.get("remote-diagnostic").and_then(|v| v.as_str()) == Some("administratively down")
            })
        });
    }
    assert!(ours.session(frr4).is_none());
}

/// RFC 5882 4.3.2 at the speaker: a peer whose BGP went away without a NOTIFICATION (killed:
/// the kernel closed its socket) keeps its routes as stale; BFD Down then ends that only when
/// the peer's BFD is control-plane independent (its C bit set): then forwarding failed too.
#[test]
fn bfd_down_flushes_a_restarting_peers_stale_routes_only_with_the_c_bit() {
    use gingham_bgp::speaker::{self, BfdSignal, NeighborConfig, SpeakerConfig};
    use gingham_bgp::wire::Family;
    let fabric = Fabric::new(2).expect("fabric");
    let config = r#"
router id 198.18.0.12;
protocol device {}
protocol static originated { ipv4; route 198.19.7.0/24 unreachable; }
protocol bgp gingham { local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000; graceful restart on;
  ipv4 { import all; export all; }; }
"#;
    let mut bird = Bird::start(&fabric.hosts[1].ns, config).expect("BIRD");
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let handle = rt.block_on(async move {
        let mut config = SpeakerConfig::new("198.18.0.11".parse().unwrap(), 65000);
        config.listen = vec!["0.0.0.0:179".parse().unwrap()];
        let (handle, mut changes) = speaker::spawn(config).expect("speaker");
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        let mut n = NeighborConfig::new("198.18.0.12".parse().unwrap(), 65000);
        n.connect_retry = Duration::from_secs(1);
        handle.add_peer(n).await.unwrap();
        handle
    });
    let has_route = || {
        let h = handle.clone();
        rt.block_on(async move { h.routes(Family::IPV4_UNICAST).await.unwrap() }).iter().any(|(p, _)| p.to_string() == "198.19.7.0/24")
    };
    let bfd = |signal| {
        let h = handle.clone();
        rt.block_on(async move { h.bfd_changed("198.18.0.12".parse().unwrap(), signal).await.unwrap() });
    };
    wait_for("BIRD's route", T, || has_route().then_some(())).unwrap_or_else(|e| panic!("{e}\n{}", bird.daemon.log_tail()));
    bfd(BfdSignal::Up);
    bird.daemon.kill();
    std::thread::sleep(Duration::from_secs(1));
    assert!(has_route(), "kept as stale while BIRD restarts");
    bfd(BfdSignal::Down { remote_cpi: false });
    std::thread::sleep(Duration::from_millis(500));
    assert!(has_route(), "C bit clear: the BFD failure may be the restart itself; stale routes stay");
    bfd(BfdSignal::Down { remote_cpi: true });
    wait_for("stale routes flushed", Duration::from_secs(5), || (!has_route()).then_some(())).unwrap();
}

/// The agents with BFD on every session: the node mesh (`nodeToNodeMeshBFD`) and a BIRD
/// top-of-rack (`bfd on`) that the nodes peer with through a BGPPeer with `waitForUp`. Hold
/// times are 90 s, so anything faster is BFD's doing.
///
/// ```text
///   node-1 198.18.0.11 ─┐
///   node-2 198.18.0.12 ─┼── fabric ── ToR, BIRD AS 65010, 198.18.0.14
///   node-3 198.18.0.13 ─┘
/// ```
mod lab {
    use super::*;
    use gingham_api::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec, BfdSpec};
    use gingham_integration::bench_failover::{cut_node3_and_wait, tor_config};
    use gingham_integration::lab::{pinger_counts, start_pinger, Cluster, LabOptions};
    use serde_json::Value;

    fn logs(lab: &Cluster) -> String {
        lab.nodes.iter().filter_map(|n| n.agent.as_ref().map(|a| a.log_tail())).collect::<Vec<_>>().join("\n---\n")
    }

    fn peer(lab: &Cluster, i: usize, addr: &str) -> Option<Value> {
        lab.status(i).ok()?["peers"].as_array()?.iter().find(|p| p["address"] == addr).cloned()
    }

    fn bfd_state(lab: &Cluster, i: usize, addr: &str) -> Option<String> {
        peer(lab, i, addr)?["bfd"]["state"].as_str().map(str::to_owned)
    }

    fn block_of(addr: std::net::Ipv4Addr) -> String {
        format!("{}/26", ipnetwork::Ipv4Network::new(addr, 26).unwrap().network())
    }

    /// node-3 is dual-homed (fabric and a direct uplink to the BIRD ToR, each with its BFD'd
    /// session); with the fabric port down, a client behind the ToR reaches node-3's pod over the
    /// uplink again, the hold time being 90 s (the bench counts the pings lost on the way).
    #[test]
    fn a_dual_homed_nodes_pod_is_reached_over_its_second_path_when_the_first_is_cut() {
        let r = gingham_integration::bench_failover::second_path(90, true).unwrap();
        println!("{r:?}");
        assert!(r.sent > r.lost, "{r:?}");
    }

    #[test]
    fn a_cut_node_link_is_withdrawn_everywhere_by_bfd_and_an_agent_restart_still_loses_nothing() {
        let mut options = LabOptions::new(3);
        options.extra_hosts = 1;
        options.hold_time = 90;
        let mut lab = Cluster::new(options).unwrap();
        let bfd = BfdSpec::default();
        lab.modify::<BGPConfiguration>("default", |c| c.spec.node_to_node_mesh_bfd = Some(bfd.clone())).unwrap();
        let tor_peer = BGPPeerSpec {
            peer_ip: Some("198.18.0.14".into()),
            as_number: Some(65010),
            bfd: Some(BfdSpec { wait_for_up: true, ..Default::default() }),
            ..Default::default()
        };
        lab.create(&BGPPeer::new("tor", tor_peer)).unwrap();
        let check = |lab: &Cluster, what: &str, t: Duration, ok: &dyn Fn() -> bool| {
            if let Err(e) = wait_for(what, t, || ok().then_some(())) {
                panic!("{e}\n{}", logs(lab));
            }
        };

        // waitForUp: no ToR yet, so no BFD, so the ToR sessions are not even attempted.
        for i in 0..3 {
            check(&lab, "the ToR session held for BFD", T, &|| {
                peer(&lab, i, "198.18.0.14").is_some_and(|p| p["state"] == "Idle" && p["bfd"]["holdingBgp"] == true)
            });
        }
        let tor = Bird::start(&lab.fabric.hosts[3].ns, &tor_config(90, true)).unwrap();
        let pods: Vec<std::net::Ipv4Addr> = (0..3).map(|i| lab.add_pod(i, &format!("p{i}")).unwrap().address).collect();
        lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", tor.daemon.log_tail()));
        for (i, node) in ["198.18.0.11", "198.18.0.12", "198.18.0.13"].iter().enumerate() {
            check(&lab, "BIRD's BFD session with the node Up", T, &|| tor.bfd_state(node).as_deref() == Some("Up"));
            for other in ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"] {
                if other != *node {
                    check(&lab, &format!("node {i}: BFD with {other} Up"), T, &|| bfd_state(&lab, i, other).as_deref() == Some("Up"));
                }
            }
        }
        let block3 = block_of(pods[2]);
        check(&lab, "the ToR learned node-3's block", T, &|| tor.routes_from("n3").contains(&block3));
        check(&lab, "node-1 reaches node-3's pod", T, &|| lab.ping(&lab.pods[0], pods[2]));
        let metrics = lab.http_get(0, "/metrics").unwrap();
        assert!(metrics.contains("bfd_session_state{peer=\"198.18.0.13\",state=\"Up\"} 1"), "{metrics}");

        // Node-3's port on the fabric goes down. Hold timers (90 s) would take minutes; BFD
        // takes about 3 x 300 ms on the ToR and on every other node.
        let seen = cut_node3_and_wait(&lab, &tor, &block3, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&lab)));
        println!("link cut -> node-3's block gone: ToR {:?}, node-1 {:?}, node-2 {:?}", seen[0], seen[1], seen[2]);
        for i in 0..2 {
            let p = peer(&lab, i, "198.18.0.13").unwrap();
            assert_eq!(p["bfd"]["state"], "Down", "{p}");
            assert_eq!(p["bfd"]["diagnostic"], "control detection time expired", "{p}");
            assert!(p["info"].as_str().unwrap().contains("BfdDown"), "closed because of BFD: {p}");
        }
        assert!(tor.protocol_info("n3").is_some_and(|i| !i.starts_with("Established")));

        // The link comes back: BFD, BGP, the block and the pod are all back.
        lab.fabric.bridge.ip(&["link", "set", "p3", "up"]).unwrap();
        lab.wait_established(Duration::from_secs(60)).unwrap();
        check(&lab, "the ToR learned node-3's block again", T, &|| tor.routes_from("n3").contains(&block3));
        check(&lab, "node-1 reaches node-3's pod again", T, &|| lab.ping(&lab.pods[0], pods[2]));

        // An agent killed and restarted 3 s later: its BFD sessions go down on every peer
        // (detection 0.9 s), but its BGP sessions closed first (the kernel closes the sockets)
        // and the peers keep its routes for the restart (RFC 5882 4.3.2; our C bit is 0).
        let mut pings = Vec::new();
        for (from, to) in [(0, 1), (1, 0), (2, 1)] {
            pings.push((from, to, start_pinger(&lab.pods[from], pods[to], "0.05", 12).unwrap()));
        }
        std::thread::sleep(Duration::from_secs(2));
        lab.nodes[1].agent.as_mut().unwrap().kill();
        check(&lab, "node-1 sees node-2's BFD go down", Duration::from_secs(10), &|| {
            bfd_state(&lab, 0, "198.18.0.12").as_deref() == Some("Down")
        });
        std::thread::sleep(Duration::from_secs(2));
        lab.start_agent(1).unwrap();
        for (from, to, ping) in pings {
            let (sent, received) = pinger_counts(ping).unwrap();
            assert!(sent > 100, "pod {from} -> pod {to}: only {sent} sent");
            assert_eq!(sent, received, "pod {from} -> pod {to}: pings lost across an agent restart with BFD\n{}", logs(&lab));
        }
        lab.wait_established(Duration::from_secs(60)).unwrap();
        check(&lab, "BFD with the restarted node Up again", T, &|| bfd_state(&lab, 0, "198.18.0.12").as_deref() == Some("Up"));
    }

    const FRR_TOR: &str = r#"
router bgp 65010
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 bfd
 neighbor 198.18.0.12 remote-as 64512
 neighbor 198.18.0.12 bfd
 neighbor 2001:db8:18::b remote-as 64512
 neighbor 2001:db8:18::b bfd
 neighbor 2001:db8:18::c remote-as 64512
 neighbor 2001:db8:18::c bfd
 address-family ipv4 unicast
  neighbor 198.18.0.11 activate
  neighbor 198.18.0.12 activate
 exit-address-family
 address-family ipv6 unicast
  neighbor 2001:db8:18::b activate
  neighbor 2001:db8:18::c activate
 exit-address-family
"#;

    /// FRR's bgpd with `neighbor X bfd` (through zebra to bfdd), IPv4 and IPv6 sessions: both
    /// ends agree BFD is Up, and when a node stops hearing BFD while TCP still works, the
    /// sessions on both ends are closed because of BFD (ours with Cease / BFD Down, RFC 9384)
    /// and come back once BFD does.
    #[test]
    fn frr_tears_bgp_down_with_bfd_on_both_families_and_so_do_we() {
        let mut options = LabOptions::new(2);
        options.extra_hosts = 1;
        options.hold_time = 90;
        options.ipv6 = true;
        let mut lab = Cluster::new(options).unwrap();
        let frr = Frr::start_with_bfd(&lab.fabric.hosts[2].ns, FRR_TOR).unwrap();
        for (name, ip) in [("tor4", "198.18.0.13"), ("tor6", "2001:db8:18::d")] {
            let spec =
                BGPPeerSpec { peer_ip: Some(ip.into()), as_number: Some(65010), bfd: Some(BfdSpec::default()), ..Default::default() };
            lab.create(&BGPPeer::new(name, spec)).unwrap();
        }
        lab.add_pod(0, "p0").unwrap();
        lab.wait_established(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", frr.logs()));
        let frr_bfd = |addr: &str| -> Option<String> {
            let v = frr.json(&format!("show bgp neighbors {addr} json")).ok()?;
            v.get(addr)?.get("peerBfdInfo")?.get("status")?.as_str().map(str::to_owned)
        };
        let check = |lab: &Cluster, what: &str, ok: &dyn Fn() -> bool| {
            if let Err(e) = wait_for(what, T, || ok().then_some(())) {
                panic!("{e}\n{}\n{}", logs(lab), frr.logs());
            }
        };
        let nodes = [["198.18.0.11", "2001:db8:18::b"], ["198.18.0.12", "2001:db8:18::c"]];
        for (i, addrs) in nodes.iter().enumerate() {
            for (addr, tor) in addrs.iter().zip(["198.18.0.13", "2001:db8:18::d"]) {
                check(&lab, &format!("FRR: BFD with {addr} Up"), &|| frr_bfd(addr).as_deref() == Some("Up"));
                check(&lab, &format!("node {i}: BFD with {tor} Up"), &|| bfd_state(&lab, i, tor).as_deref() == Some("Up"));
            }
        }
        let dropped_before: Vec<u64> = nodes[1]
            .iter()
            .map(|a| frr.json(&format!("show bgp neighbors {a} json")).ok().and_then(|v| v[a]["connectionsDropped"].as_u64()).unwrap_or(0))
            .collect();

        // node-2 stops hearing BFD (its input drops UDP 3784); its TCP sessions still work.
        let ns = &lab.fabric.hosts[1].ns;
        ns.exec("nft", &["add", "table", "inet", "bfdtest"]).unwrap();
        ns.exec("nft", &["add", "chain", "inet", "bfdtest", "input", "{ type filter hook input priority 0 ; }"]).unwrap();
        ns.exec("nft", &["add", "rule", "inet", "bfdtest", "input", "udp", "dport", "3784", "drop"]).unwrap();
        for (addr, before) in nodes[1].iter().zip(&dropped_before) {
            let summary = |n: &serde_json::Value| {
                format!(
                    "dropped {} reset {} notification {} bfd {}",
                    n["connectionsDropped"], n["lastResetDueTo"], n["lastNotificationReason"], n["peerBfdInfo"]
                )
            };
            let closed = wait_for(&format!("FRR closed the session with {addr} because of BFD"), T, || {
                let v = frr.json(&format!("show bgp neighbors {addr} json")).ok()?;
                let n = &v[*addr];
                // TCP works and the hold time is 90 s: only BFD (FRR's own, or our Cease) closes it.
                let closed = n["connectionsDropped"].as_u64().unwrap_or(0) > *before && n["peerBfdInfo"]["status"] == "Down";
                closed.then_some(())
            });
            if let Err(e) = closed {
                let now = frr.json(&format!("show bgp neighbors {addr} json")).unwrap();
                panic!("{e}: {}\n{}\n{}", summary(&now[*addr]), logs(&lab), frr.logs());
            }
            let n = frr.json(&format!("show bgp neighbors {addr} json")).unwrap();
            println!("FRR on {addr}: {} / {}", n[*addr]["lastResetDueTo"], n[*addr]["lastNotificationReason"]);
        }
        // The session's last error says BfdDown only until it is established again, which can be
        // at once (the ToR connects to us), so the agent's log is the lasting witness.
        let closed_log = |tor: &str| {
            let log = lab.nodes[1].agent.as_ref().and_then(|a| a.log.as_ref()).and_then(|p| std::fs::read_to_string(p).ok());
            log.is_some_and(|l| l.lines().any(|line| line.contains("BFD down: closing the session") && line.contains(tor)))
        };
        for tor in ["198.18.0.13", "2001:db8:18::d"] {
            check(&lab, &format!("node-2 closed {tor} because of BFD"), &|| {
                closed_log(tor) || peer(&lab, 1, tor).is_some_and(|p| p["info"].as_str().is_some_and(|i| i.contains("BfdDown")))
            });
        }
        ns.exec("nft", &["delete", "table", "inet", "bfdtest"]).unwrap();
        lab.wait_established(Duration::from_secs(60)).unwrap();
        for addr in nodes[1] {
            check(&lab, &format!("FRR: BFD with {addr} Up again"), &|| frr_bfd(addr).as_deref() == Some("Up"));
        }
    }
}
