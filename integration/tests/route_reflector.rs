//! Gingham's full speaker (RIB + sessions) as a route reflector for a BIRD client and an FRR
//! client. Needs root.
//!
//! ```text
//!   h1 Gingham RR 198.18.0.11, cluster 10.255.0.1     all iBGP AS 65000
//!   h2 BIRD client 198.18.0.12 originates 198.19.2.0/24
//!   h3 FRR  client 198.18.0.13 originates 198.19.3.0/24
//! ```
//! Verifies:
//! 1. each client's route is in the other's RIB with ORIGINATOR_ID (the originating client)
//!    and CLUSTER_LIST (our cluster id), next hop unchanged;
//! 2. a withdrawal at BIRD propagates to FRR;
//! 3. the best-path stream for the FIB carried the client routes with their next hops.

use std::collections::HashMap;
use std::time::Duration;

use gingham_bgp::speaker::{self, FibUpdate, NeighborConfig, RouteChange, SpeakerConfig};
use gingham_integration::daemons::{Bird, Frr};
use gingham_integration::netns::{wait_for, Fabric};
use gingham_integration::sessions::NsRuntime;
use ipnetwork::IpNetwork;
use serde_json::Value;
use tokio::sync::watch;

const BIRD: &str = r#"
router id 198.18.0.12;
protocol device {}
protocol direct { ipv4; }
protocol static s4 { ipv4; route 198.19.2.0/24 unreachable; }
protocol bgp reflector {
  local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000;
  ipv4 { import all; export where source = RTS_STATIC; };
}
"#;

const FRR: &str = r#"
router bgp 65000
 bgp router-id 198.18.0.13
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 65000
 neighbor 198.18.0.11 timers connect 2
 address-family ipv4 unicast
  network 198.19.3.0/24
  neighbor 198.18.0.11 activate
 exit-address-family
"#;

#[test]
fn gingham_reflects_between_bird_and_frr_clients() {
    let fabric = Fabric::new(3).unwrap();
    let bird = Bird::start(&fabric.hosts[1].ns, BIRD).unwrap();
    let frr = Frr::start(&fabric.hosts[2].ns, FRR).unwrap();
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let (fib_tx, fib) = watch::channel(HashMap::<IpNetwork, Vec<String>>::new());
    let handle = rt.block_on(async move {
        let mut config = SpeakerConfig::new("198.18.0.11".parse().unwrap(), 65000);
        config.cluster_id = Some("10.255.0.1".parse().unwrap());
        config.listen = vec!["0.0.0.0:179".parse().unwrap()];
        let (handle, mut changes) = speaker::spawn(config).expect("speaker");
        for addr in ["198.18.0.12", "198.18.0.13"] {
            let mut n = NeighborConfig::new(addr.parse().unwrap(), 65000);
            n.rr_client = true;
            n.connect_retry = Duration::from_secs(2);
            handle.add_peer(n).await.unwrap();
        }
        // Mirror the FIB stream into a map the test can read.
        tokio::spawn(async move {
            while let Some(update) = changes.recv().await {
                let FibUpdate::Routes(batch) = update else { continue };
                fib_tx.send_modify(|m| {
                    for RouteChange { prefix, best } in batch {
                        match best {
                            Some(b) => m.insert(prefix, b.next_hops.iter().map(|h| h.addr.to_string()).collect()),
                            None => m.remove(&prefix),
                        };
                    }
                });
            }
        });
        handle
    });
    let logs = || format!("--- bird\n{}\n--- frr\n{}", bird.daemon.log_tail(), frr.daemon.log_tail());
    let t = Duration::from_secs(40);

    // 1. FRR's route reflected to BIRD.
    wait_for("BIRD has FRR's route", t, || bird.routes_from("reflector").contains(&"198.19.3.0/24".to_string()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let at_bird = bird.route_all("198.19.3.0/24");
    assert!(at_bird.contains("BGP.originator_id: 198.18.0.13"), "{at_bird}");
    assert!(at_bird.contains("BGP.cluster_list: 10.255.0.1"), "{at_bird}");
    assert!(at_bird.contains("BGP.next_hop: 198.18.0.13"), "{at_bird}");

    // BIRD's route reflected to FRR.
    let route = wait_for("FRR has BIRD's route", t, || frr.route("ipv4", "198.19.2.0/24")).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let path = &route["paths"][0];
    assert_eq!(path["originatorId"], "198.18.0.12", "{route}");
    let clusters = path["clusterList"]["list"].as_array().cloned().unwrap_or_default();
    assert_eq!(clusters, vec![Value::from("10.255.0.1")], "{route}");
    assert_eq!(path["nexthops"][0]["ip"], "198.18.0.12", "{route}");

    // 3. The FIB stream saw both, with the clients as next hops.
    wait_for("FIB stream", t, || {
        let m = fib.borrow();
        (m.get(&"198.19.2.0/24".parse().unwrap()) == Some(&vec!["198.18.0.12".to_string()])
            && m.get(&"198.19.3.0/24".parse().unwrap()) == Some(&vec!["198.18.0.13".to_string()]))
        .then_some(())
    })
    .unwrap();

    // 2. Withdrawal propagates.
    bird.cmd("disable s4").unwrap();
    wait_for("FRR drops BIRD's route", t, || frr.route("ipv4", "198.19.2.0/24").is_none().then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait_for("FIB stream withdrawal", t, || (!fib.borrow().contains_key(&"198.19.2.0/24".parse().unwrap())).then_some(())).unwrap();

    let peers = rt.block_on({
        let h = handle.clone();
        async move { h.peers().await.unwrap() }
    });
    assert_eq!(peers.len(), 2);
    for p in &peers {
        assert_eq!(p.state, gingham_bgp::fsm::State::Established, "{:?}", p.config.address);
        assert_eq!(p.prefixes_accepted, usize::from(p.config.address.to_string() == "198.18.0.13"), "only FRR's route is left");
    }
    // BIRD still holds FRR's route from us; FRR holds nothing from us any more.
    let advertised: Vec<usize> = peers.iter().map(|p| p.prefixes_advertised).collect();
    assert_eq!(advertised, vec![1, 0]);
    drop(handle);
}
