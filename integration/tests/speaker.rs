//! The full speaker (RIB + sessions) in real topologies. Needs root.
//!
//! Test 1, topology:
//! ```text
//!   h1 Gingham AS 65000, RR client of BIRD (IPv4 and IPv6 sessions)
//!   h2 BIRD route reflector AS 65000; clients: Gingham, GoBGP
//!   h3 FRR AS 65003, eBGP with Gingham; originates 198.19.9.0/24 and 198.19.3.0/24
//!   h4 GoBGP AS 65000, client of BIRD; originates 198.19.4.0/24
//!   BIRD itself originates 198.19.9.0/24 with AS_PATH 65099
//! ```
//! Verifies:
//! 1. as a client of BIRD's reflector we learn GoBGP's route with ORIGINATOR_ID and
//!    CLUSTER_LIST, and our route reaches GoBGP through BIRD;
//! 2. eBGP with FRR: FRR holds our route with AS_PATH "65000" and next hop 198.18.0.11;
//! 3. IPv6: BIRD holds our IPv6 prefix with our IPv6 next hop;
//! 4. ECMP: 198.19.9.0/24 from FRR (eBGP, AS_PATH 65003) and from BIRD (iBGP, AS_PATH 65099)
//!    tie past MED, so our best route has both next hops;
//! 5. a ROUTE-REFRESH from BIRD gets our routes resent;
//! 6. our ROUTE-REFRESH to BIRD comes back as a complete BoRR..EoRR cycle (RFC 7313).
//!
//! Test 2: max-prefix tear-down against GoBGP sending one prefix too many.

use std::time::Duration;

use gingham_bgp::fsm::State;
use gingham_bgp::speaker::{self, MaxPrefixAction, MaxPrefixes, NeighborConfig, SpeakerConfig, SpeakerHandle};
use gingham_bgp::wire::Family;
use gingham_integration::daemons::{Bird, Frr, GoBgp};
use gingham_integration::netns::{wait_for, Fabric};
use gingham_integration::sessions::NsRuntime;

fn start_speaker(rt: &NsRuntime, neighbors: Vec<NeighborConfig>, originate: Vec<&'static str>) -> SpeakerHandle {
    rt.block_on(async move {
        let mut config = SpeakerConfig::new("198.18.0.11".parse().unwrap(), 65000);
        config.listen = vec!["0.0.0.0:179".parse().unwrap(), "[::]:179".parse().unwrap()];
        let (handle, mut changes) = speaker::spawn(config).expect("speaker");
        // Nobody installs routes here; keep the stream moving.
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        for n in neighbors {
            handle.add_peer(n).await.unwrap();
        }
        for p in originate {
            handle.originate(p.parse().unwrap(), vec![]).await.unwrap();
        }
        handle
    })
}

fn neighbor(addr: &str, asn: u32) -> NeighborConfig {
    let mut n = NeighborConfig::new(addr.parse().unwrap(), asn);
    n.connect_retry = Duration::from_secs(2);
    n.hold_time = 9;
    n
}

const BIRD_RR: &str = r#"
router id 198.18.0.12;
protocol device {}
protocol direct { ipv4; ipv6; }
protocol static s9 { ipv4; route 198.19.9.0/24 unreachable; }
protocol bgp gingham4 { local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000; rr client; rr cluster id 10.255.0.2;
  ipv4 { import all; export filter { if net = 198.19.9.0/24 then bgp_path.prepend(65099); accept; }; }; }
protocol bgp gingham6 { local 2001:db8:18::c as 65000; neighbor 2001:db8:18::b as 65000; rr client; rr cluster id 10.255.0.2;
  ipv6 { import all; export all; }; }
protocol bgp gobgp { local 198.18.0.12 as 65000; neighbor 198.18.0.14 as 65000; rr client; rr cluster id 10.255.0.2;
  ipv4 { import all; export all; }; }
"#;

const FRR: &str = r#"
router bgp 65003
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 65000
 neighbor 198.18.0.11 timers connect 2
 address-family ipv4 unicast
  network 198.19.9.0/24
  network 198.19.3.0/24
  neighbor 198.18.0.11 activate
 exit-address-family
"#;

const GOBGP: &str = r#"
[global.config]
  as = 65000
  router-id = "198.18.0.14"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.12"
    peer-as = 65000
"#;

#[test]
fn rr_client_of_bird_ebgp_with_frr_ipv6_and_ecmp() {
    let fabric = Fabric::new(4).unwrap();
    let bird = Bird::start(&fabric.hosts[1].ns, BIRD_RR).unwrap();
    let frr = Frr::start(&fabric.hosts[2].ns, FRR).unwrap();
    let gobgp = GoBgp::start(&fabric.hosts[3].ns, GOBGP).unwrap();

    gobgp.cli(&["global", "rib", "add", "-a", "ipv4", "198.19.4.0/24"]).unwrap();
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let v6 = {
        let mut n = neighbor("2001:db8:18::c", 65000);
        n.families = vec![Family::IPV6_UNICAST];
        n
    };
    let handle = start_speaker(
        &rt,
        vec![neighbor("198.18.0.12", 65000), v6, neighbor("198.18.0.13", 65003)],
        vec!["198.19.1.0/24", "2001:db8:1::/48"],
    );
    let logs =
        || format!("--- bird\n{}\n--- frr\n{}\n--- gobgp\n{}", bird.daemon.log_tail(), frr.daemon.log_tail(), gobgp.daemon.log_tail());
    let t = Duration::from_secs(40);
    let routes = |family| {
        let h = handle.clone();
        rt.block_on(async move { h.routes(family).await.unwrap() })
    };

    // 1. GoBGP's route reflected to us by BIRD.
    let r4 =
        wait_for("GoBGP's route via BIRD", t, || routes(Family::IPV4_UNICAST).into_iter().find(|(p, _)| p.to_string() == "198.19.4.0/24"))
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(r4.1.attrs.originator_id, Some("198.18.0.14".parse().unwrap()));
    assert_eq!(r4.1.attrs.cluster_list, vec!["10.255.0.2".parse::<std::net::Ipv4Addr>().unwrap()]);
    assert_eq!(r4.1.next_hops, vec![gingham_bgp::rib::Gateway::new("198.18.0.14".parse().unwrap())]);
    wait_for("our route at GoBGP via BIRD", t, || (!gobgp.paths("ipv4", "198.19.1.0/24").is_empty()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // 2. eBGP with FRR.
    let at_frr = wait_for("FRR has our route", t, || frr.route("ipv4", "198.19.1.0/24")).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(at_frr["paths"][0]["aspath"]["string"], "65000", "{at_frr}");
    assert_eq!(at_frr["paths"][0]["nexthops"][0]["ip"], "198.18.0.11", "{at_frr}");

    // 3. IPv6 with BIRD.

    let bird_v6 = wait_for("BIRD has our IPv6 route", t, || {
        let r = bird.route_all("2001:db8:1::/48");
        r.contains("2001:db8:1::/48").then_some(r)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert!(bird_v6.contains("BGP.next_hop: 2001:db8:18::b"), "{bird_v6}");

    // 4. ECMP over FRR and GoBGP-via-BIRD.
    let ecmp = wait_for("ECMP set for 198.19.9.0/24", t, || {
        routes(Family::IPV4_UNICAST).into_iter().find(|(p, b)| p.to_string() == "198.19.9.0/24" && b.next_hops.len() == 2).map(|(_, b)| b)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", routes(Family::IPV4_UNICAST), logs()));
    let mut hops: Vec<String> = ecmp.next_hops.iter().map(|h| h.addr.to_string()).collect();
    hops.sort();
    assert_eq!(hops, vec!["198.18.0.12", "198.18.0.13"]);

    let peers = rt.block_on({
        let h = handle.clone();
        async move { h.peers().await.unwrap() }
    });
    assert!(peers.iter().all(|p| p.state == State::Established), "{peers:?}");

    // 5. Route refresh: BIRD asks for our routes again (ROUTE-REFRESH) and we resend them.
    let before = bird.import_updates_received("gingham4").unwrap();
    bird.cmd("reload in gingham4").unwrap();
    wait_for("our routes resent after ROUTE-REFRESH", t, || (bird.import_updates_received("gingham4")? > before).then_some(())).unwrap();
    assert!(bird.routes_from("gingham4").contains(&"198.19.1.0/24".into()));

    // 6. Enhanced route refresh the other way: we ask, BIRD answers BoRR, its routes, EoRR;
    // nothing it resent is lost.
    let asked = {
        let h = handle.clone();
        rt.block_on(async move { h.refresh("198.18.0.12".parse().unwrap()).await.unwrap() })
    };
    assert!(asked);
    let bird_peer = || {
        let h = handle.clone();
        rt.block_on(async move { h.peers().await.unwrap() }).into_iter().find(|p| p.config.address.to_string() == "198.18.0.12").unwrap()
    };
    wait_for("a BoRR..EoRR cycle from BIRD", t, || (bird_peer().refresh_cycles >= 1).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let after: Vec<String> = routes(Family::IPV4_UNICAST).into_iter().map(|(p, _)| p.to_string()).collect();
    assert!(after.contains(&"198.19.4.0/24".to_string()) && after.contains(&"198.19.9.0/24".to_string()), "{after:?}");
}

#[test]
fn max_prefix_tears_down_a_gobgp_peer_sending_one_too_many() {
    let fabric = Fabric::new(2).unwrap();
    let gobgp = GoBgp::start(
        &fabric.hosts[1].ns,
        "[global.config]\n  as = 65002\n  router-id = \"198.18.0.12\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"198.18.0.11\"\n    peer-as = 65000\n",
    )
    .unwrap();
    for i in 0..3 {
        gobgp.cli(&["global", "rib", "add", "-a", "ipv4", &format!("198.19.{i}.0/24")]).unwrap();
    }
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let mut n = neighbor("198.18.0.12", 65002);
    n.max_prefixes = Some(MaxPrefixes { limit: 3, action: MaxPrefixAction::TearDown { restart: Some(Duration::from_secs(3)) } });
    let handle = start_speaker(&rt, vec![n], vec![]);
    let status = || {
        let h = handle.clone();
        rt.block_on(async move { h.peers().await.unwrap().remove(0) })
    };
    let t = Duration::from_secs(40);
    wait_for("three prefixes accepted", t, || (status().prefixes_accepted == 3).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", gobgp.daemon.log_tail()));
    assert_eq!(status().state, State::Established, "at the limit the session stays");

    gobgp.cli(&["global", "rib", "add", "-a", "ipv4", "198.19.3.0/24"]).unwrap();
    let down = wait_for("torn down", t, || {
        let s = status();
        (s.state != State::Established).then_some(s)
    })
    .unwrap();
    let err = down.last_error.unwrap_or_default();
    assert!(err.contains("MaximumPrefixesReached"), "{err}");
    // The peer task reports the state before the speaker has taken its Down event: wait for the
    // withdrawal rather than read it in the same instant.
    wait_for("the peer's routes withdrawn", t, || (status().prefixes_accepted == 0).then_some(())).unwrap();
    // GoBGP saw the NOTIFICATION.
    let nb = gobgp.json(&["neighbor", "198.18.0.11"]).unwrap();
    assert!(nb.pointer("/state/messages/received/notification").and_then(|v| v.as_u64()).unwrap_or(0) >= 1, "{nb}");
    // After the restart interval the session comes back and, GoBGP still sending four, is torn
    // down again: a second NOTIFICATION proves the restart.
    let notifications = || gobgp.notifications_received("198.18.0.11");
    wait_for("restarted and torn down again", t, || (notifications() >= 2).then_some(())).unwrap();
}

/// Test 3: after our own restart, a peer without graceful restart is not waited for (RFC 4724
/// 4.1: only peers that negotiated it promise an End-of-RIB), so our table reaches GoBGP at
/// once. "Synced", which lets the FIB drop routes that did not come back, still waits for every
/// peer's End-of-RIB; GoBGP without graceful restart sends none, so only the deadline sets it.
#[test]
fn restarting_speaker_does_not_wait_for_a_peer_without_graceful_restart() {
    let fabric = Fabric::new(2).unwrap();
    let gobgp = GoBgp::start(
        &fabric.hosts[1].ns,
        "[global.config]\n  as = 65002\n  router-id = \"198.18.0.12\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"198.18.0.11\"\n    peer-as = 65000\n",
    )
    .unwrap();
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let handle = rt.block_on(async move {
        let mut config = SpeakerConfig::new("198.18.0.11".parse().unwrap(), 65000);
        config.listen = vec!["0.0.0.0:179".parse().unwrap()];
        config.restarting = true;
        config.sync_deadline = Duration::from_secs(8);
        let (handle, mut changes) = speaker::spawn(config).expect("speaker");
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        handle.add_peer(neighbor("198.18.0.12", 65002)).await.unwrap();
        handle.originate("198.19.1.0/24".parse().unwrap(), vec![]).await.unwrap();
        handle
    });
    let started = std::time::Instant::now();
    wait_for("session up", Duration::from_secs(20), || gobgp.established("198.18.0.11").then_some(())).unwrap();
    wait_for("our table at GoBGP", Duration::from_secs(5), || (!gobgp.paths("ipv4", "198.19.1.0/24").is_empty()).then_some(())).unwrap();
    if started.elapsed() < Duration::from_secs(7) {
        assert!(!handle.is_synced(), "synced before GoBGP's End-of-RIB or the deadline");
    }
    wait_for("synced at the deadline", Duration::from_secs(20), || handle.is_synced().then_some(())).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(8), "synced before the deadline");
}
