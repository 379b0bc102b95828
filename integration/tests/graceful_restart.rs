//! Graceful restart (RFC 4724) both ways with BIRD. Needs root.
//!
//! ```text
//!   h1 Gingham AS 65000 198.18.0.11  --iBGP, graceful restart--  h2 BIRD AS 65000 198.18.0.12
//! ```
//! Verifies:
//! 1. BIRD crashes (SIGKILL): we keep its routes while it is away; when it comes back with a
//!    changed table, new routes appear and after its End-of-RIB the routes it no longer has
//!    are flushed, while the ones it still has never went away;
//! 2. our speaker stops without NOTIFICATION: BIRD keeps our route while we are away, and
//!    holds it fresh again after we come back with the restart bit set; the restarted
//!    speaker reports "synced" once BIRD's End-of-RIB arrived.

use std::time::{Duration, Instant};

use gingham_bgp::speaker::{self, NeighborConfig, SpeakerConfig, SpeakerHandle};
use gingham_bgp::wire::Family;
use gingham_integration::daemons::Bird;
use gingham_integration::netns::{wait_for, Fabric};
use gingham_integration::sessions::NsRuntime;

fn bird_config(routes: &[&str]) -> String {
    let statics: String = routes.iter().map(|r| format!("route {r} unreachable; ")).collect();
    format!(
        "router id 198.18.0.12;\nprotocol device {{}}\nprotocol direct {{ ipv4; }}\nprotocol static {{ ipv4; {statics}}}\n\
         protocol bgp gingham {{ local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000; graceful restart on; graceful restart time 60;\n\
         connect delay time 1; error wait time 1, 5; ipv4 {{ import all; export where source = RTS_STATIC; }}; }}\n"
    )
}

fn speaker(rt: &NsRuntime, restarting: bool, originate: Vec<&'static str>) -> SpeakerHandle {
    rt.block_on(async move {
        let mut config = SpeakerConfig::new("198.18.0.11".parse().unwrap(), 65000);
        config.listen = vec!["0.0.0.0:179".parse().unwrap()];
        config.restarting = restarting;
        // The previous speaker's listener may take a moment to close.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (handle, mut changes) = loop {
            match speaker::spawn(config.clone()) {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "retrying bind");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        let mut n = NeighborConfig::new("198.18.0.12".parse().unwrap(), 65000);
        n.connect_retry = Duration::from_secs(1);
        handle.add_peer(n).await.unwrap();
        for p in originate {
            handle.originate(p.parse().unwrap(), vec![]).await.unwrap();
        }
        handle
    })
}

fn our_prefixes(rt: &NsRuntime, h: &SpeakerHandle) -> Vec<String> {
    let h = h.clone();
    rt.block_on(async move { h.routes(Family::IPV4_UNICAST).await.unwrap() }).into_iter().map(|(p, _)| p.to_string()).collect()
}

#[test]
fn bird_restarts_and_we_keep_its_routes_until_its_end_of_rib() {
    let fabric = Fabric::new(2).unwrap();
    let mut bird = Bird::start(&fabric.hosts[1].ns, &bird_config(&["198.19.2.0/24", "198.19.6.0/24"])).unwrap();
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let handle = speaker(&rt, false, vec![]);
    let t = Duration::from_secs(30);
    wait_for("BIRD's routes", t, || {
        let p = our_prefixes(&rt, &handle);
        (p.contains(&"198.19.2.0/24".into()) && p.contains(&"198.19.6.0/24".into())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bird.daemon.log_tail()));
    assert!(bird.established("gingham"));

    bird.daemon.kill();
    // While BIRD is gone its routes stay (stale), so forwarding continues.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let p = our_prefixes(&rt, &handle);
        assert!(p.contains(&"198.19.2.0/24".into()) && p.contains(&"198.19.6.0/24".into()), "stale routes flushed early: {p:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let peers = {
        let h = handle.clone();
        rt.block_on(async move { h.peers().await.unwrap() })
    };
    assert_ne!(peers[0].state, gingham_bgp::fsm::State::Established);

    // BIRD returns without 198.19.2.0/24 and with 198.19.5.0/24.
    drop(bird);
    let bird = Bird::start(&fabric.hosts[1].ns, &bird_config(&["198.19.5.0/24", "198.19.6.0/24"])).unwrap();
    wait_for("restart finished", t, || {
        let p = our_prefixes(&rt, &handle);
        (p.contains(&"198.19.5.0/24".into()) && !p.contains(&"198.19.2.0/24".into())).then_some(p)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", our_prefixes(&rt, &handle), bird.daemon.log_tail()));
    assert!(our_prefixes(&rt, &handle).contains(&"198.19.6.0/24".into()), "a route BIRD still has never goes away");
}

#[test]
fn we_restart_and_bird_keeps_our_routes() {
    let fabric = Fabric::new(2).unwrap();
    let bird = Bird::start(&fabric.hosts[1].ns, &bird_config(&[])).unwrap();
    let rt = NsRuntime::new(&fabric.hosts[0].ns).unwrap();
    let handle = speaker(&rt, false, vec!["198.19.1.0/24"]);
    let t = Duration::from_secs(30);
    wait_for("BIRD has our route", t, || bird.routes_from("gingham").contains(&"198.19.1.0/24".into()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", bird.daemon.log_tail()));

    // Stop: dropping the last handle closes every session without a NOTIFICATION.
    rt.block_on(async move { drop(handle) });
    wait_for("BIRD notices", t, || (!bird.established("gingham")).then_some(())).unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            bird.routes_from("gingham").contains(&"198.19.1.0/24".into()),
            "BIRD flushed our route during our restart\n{}",
            bird.daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = bird.cmd("show protocols all gingham").unwrap_or_default();
    // BIRD itself says it is holding our routes for a restart, with our 120 s restart time.
    assert!(info.contains("Neighbor graceful restart active"), "{info}");
    assert!(info.contains("Restart timer:"), "{info}");

    // Back, with the restart bit set and one more route.
    let handle = speaker(&rt, true, vec!["198.19.1.0/24", "198.19.7.0/24"]);
    // The agent learns when every peer has resent its table (BIRD's End-of-RIB, well before
    // the 120 s deadline), the moment it may drop kernel routes that did not come back.
    let synced = {
        let h = handle.clone();
        rt.block_on(async move { tokio::time::timeout(Duration::from_secs(30), h.wait_synced()).await })
    };
    assert!(matches!(synced, Ok(Ok(()))), "not synced from BIRD's End-of-RIB: {synced:?}");
    wait_for("session back", t, || bird.established("gingham").then_some(()))
        .unwrap_or_else(|e| panic!("{e} (was: {info})\n{}", bird.daemon.log_tail()));
    wait_for("both routes", t, || {
        let r = bird.routes_from("gingham");
        (r.contains(&"198.19.1.0/24".into()) && r.contains(&"198.19.7.0/24".into())).then_some(())
    })
    .unwrap();
    // Fresh now: BIRD ended the restart on our End-of-RIB and kept the route.
    wait_for("BIRD ends the restart", t, || {
        let info = bird.cmd("show protocols all gingham").unwrap_or_default();
        (!info.contains("Neighbor graceful restart active")).then_some(())
    })
    .unwrap();
    assert!(bird.routes_from("gingham").contains(&"198.19.1.0/24".into()));
}
