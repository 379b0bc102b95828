//! Our speaker against BIRD 2, FRR bgpd and GoBGP, each in its own namespace (topology in
//! `gingham_integration::interop`). Needs root.
//!
//! Verifies:
//! 1. all seven sessions (iBGP/eBGP x IPv4/IPv6, 2- and 4-octet ASNs, one without the
//!    4-octet capability) reach Established on both
//!    sides and stay up for more than two hold periods (hold 9 s, watched for 25 s);
//! 2. the prefixes each daemon originates are decoded with their AS_PATH and next hop;
//! 3. the prefixes we send are in each daemon's RIB, with the AS_PATH and next hop we sent.

use std::net::SocketAddr;
use std::time::Duration;

use gingham_bgp::wire::{Family, NextHop};
use gingham_integration::interop::{sessions, InteropLab, OUR_PREFIX_V4, OUR_PREFIX_V6};
use gingham_integration::netns::wait_for;
use serde_json::Value;

fn lab() -> InteropLab {
    let lab = InteropLab::up().expect("lab up");
    if let Err(e) = lab.converge(Duration::from_secs(60)) {
        panic!("{e}\n{}", lab.logs());
    }
    lab
}

#[test]
fn sessions_with_bird_frr_gobgp_establish_exchange_routes_and_stay_up() {
    let lab = lab();
    let t = Duration::from_secs(30);
    let check = |what: &str, ok: &dyn Fn() -> bool| {
        if let Err(e) = wait_for(what, t, || ok().then_some(())) {
            panic!("{e}\n{}", lab.logs());
        }
    };

    // 1. The daemons agree the sessions are up.
    check("BIRD bird_ibgp Established", &|| lab.bird.established("bird_ibgp"));
    check("BIRD bird_ebgp Established", &|| lab.bird.established("bird_ebgp"));
    check("FRR v4 Established", &|| lab.frr.established("198.18.0.11"));
    check("FRR v6 Established", &|| lab.frr.established("2001:db8:18::b"));
    check("GoBGP v4 Established", &|| lab.gobgp.established("198.18.0.11"));
    check("GoBGP v6 Established", &|| lab.gobgp.established("2001:db8:18::b"));

    // 2. What they sent us, decoded.
    let expect = [
        ("198.18.0.12", "198.19.2.0/24", "", "198.18.0.12"),
        ("2001:db8:18::c", "2001:db8:2::/48", "4200000002", "2001:db8:18::c"),
        ("198.18.0.13", "198.19.3.0/24", "", "198.18.0.13"),
        ("2001:db8:18::d", "2001:db8:3::/48", "65000", "2001:db8:18::d"),
        ("198.18.0.14", "198.19.4.0/24", "65014", "198.18.0.14"),
        ("2001:db8:18::e", "2001:db8:4::/48", "", "2001:db8:18::e"),
        // From a 2-octet session: AS_PATH "65000 23456 ..." merged with AS4_PATH.
        ("198.18.0.112", "198.19.5.0/24", "65000 4200000099", "198.18.0.112"),
    ];
    for (peer, prefix, path, nh) in expect {
        let addr = SocketAddr::new(peer.parse().unwrap(), 179);
        let attrs = wait_for(&format!("{prefix} from {peer}"), t, || {
            lab.speaker.view().received.get(&addr).and_then(|t| t.get(&prefix.parse().unwrap()).cloned())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
        assert_eq!(attrs.as_path.as_ref().map(|p| p.to_string()).as_deref(), Some(path), "{prefix} from {peer}");
        let got_nh = match (&attrs.next_hop, &attrs.mp_reach) {
            (Some(v4), _) => v4.to_string(),
            (None, Some(mp)) => match mp.next_hop {
                NextHop::V6 { global, .. } => global.to_string(),
                NextHop::V4(a) => a.to_string(),
            },
            _ => String::new(),
        };
        assert_eq!(got_nh, nh, "next hop of {prefix} from {peer}");
    }
    // BIRD closes its initial table with End-of-RIB for both families (FRR and GoBGP send it
    // only to peers that negotiated graceful restart, which these sessions do not).
    for s in sessions().into_iter().filter(|s| s.name.starts_with("bird")) {
        let key = (SocketAddr::new(s.peer, 179), s.family);
        check(&format!("End-of-RIB from {}", s.name), &|| lab.speaker.view().end_of_rib.contains(&key));
    }

    // 3. What we sent, in their RIBs.
    check("BIRD has our v4 route", &|| lab.bird.routes_from("bird_ibgp").contains(&OUR_PREFIX_V4.to_string()));
    check("BIRD has our v6 route", &|| lab.bird.routes_from("bird_ebgp").contains(&OUR_PREFIX_V6.to_string()));
    let bird_v6 = lab.bird.route_all(OUR_PREFIX_V6);
    assert!(bird_v6.contains("BGP.as_path: 4200000001"), "{bird_v6}");
    assert!(bird_v6.contains("BGP.next_hop: 2001:db8:18::b"), "{bird_v6}");
    let bird_v4 = lab.bird.route_all(OUR_PREFIX_V4);
    assert!(bird_v4.contains("BGP.local_pref: 100") && bird_v4.contains("BGP.next_hop: 198.18.0.11"), "{bird_v4}");

    // Through the 2-octet session BIRD rebuilds the 4-octet path from our AS4_PATH.
    check("BIRD has our route over the 2-octet session", &|| lab.bird.routes_from("bird_as2").contains(&OUR_PREFIX_V4.to_string()));
    let as2 = lab.bird.cmd("show route protocol bird_as2 all").unwrap();
    assert!(as2.contains("BGP.as_path: 65100 4200000077"), "{as2}");
    let snap = lab.speaker.snapshot("bird-as2").unwrap();
    assert!(!snap.negotiated.unwrap().four_octet_as, "bird-as2 must be a 2-octet session");

    check("FRR has our v4 route", &|| lab.frr.route("ipv4", OUR_PREFIX_V4).is_some());
    check("FRR has our v6 route", &|| lab.frr.route("ipv6", OUR_PREFIX_V6).is_some());
    let frr_v6 = lab.frr.route("ipv6", OUR_PREFIX_V6).unwrap();
    let path = &frr_v6["paths"][0];
    assert_eq!(path["aspath"]["string"], Value::from("4200000001"), "{frr_v6}");
    assert!(path["nexthops"].as_array().unwrap().iter().any(|n| n["ip"] == "2001:db8:18::b"), "{frr_v6}");
    let frr_v4 = lab.frr.route("ipv4", OUR_PREFIX_V4).unwrap();
    assert_eq!(frr_v4["paths"][0]["locPrf"], Value::from(100), "{frr_v4}");

    check("GoBGP has our v4 route", &|| !lab.gobgp.paths("ipv4", OUR_PREFIX_V4).is_empty());
    check("GoBGP has our v6 route", &|| !lab.gobgp.paths("ipv6", OUR_PREFIX_V6).is_empty());
    let gobgp_v4 = lab.gobgp.paths("ipv4", OUR_PREFIX_V4);
    let text = gobgp_v4[0].to_string();
    assert!(text.contains("\"as_paths\":[{\"asns\":[65000]") || text.contains("65000"), "{text}");
    assert!(text.contains("198.18.0.11"), "{text}");

    // 1 (cont.). Still up after more than two hold periods, with no session ever going down.
    std::thread::sleep(Duration::from_secs(25));
    let view = lab.speaker.view();
    assert!(view.downs.is_empty(), "sessions went down: {:?}", view.downs);
    for (name, snap) in lab.speaker.snapshots() {
        assert_eq!(snap.state, gingham_bgp::fsm::State::Established, "{name}");
        assert!(snap.uptime.unwrap() >= Duration::from_secs(25), "{name}");
        let n = snap.negotiated.unwrap();
        assert_eq!(n.hold_time, 9, "{name}");
        assert_eq!(n.four_octet_as, name != "bird-as2", "{name}");
        assert!(n.families == vec![Family::IPV4_UNICAST] || n.families == vec![Family::IPV6_UNICAST]);
    }
    assert!(lab.bird.established("bird_ibgp") && lab.frr.established("198.18.0.11") && lab.gobgp.established("198.18.0.11"));
}
