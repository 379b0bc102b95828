//! What a full table costs in the Loc-RIB, counted by the allocator (a test binary of its own,
//! its tests one at a time, so nothing else allocates meanwhile): a node learning 100,000
//! prefixes from its ToR keeps them in one sorted array of 12-octet entries (the path, the
//! ToR with its one shared attribute set, kept once and named by a number), with the latest few
//! in a hash table beside it; under two ToRs, each prefix's second path takes 12 octets more in
//! a second array.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use gingham_bgp::counting_alloc::{live, Counting};
use gingham_bgp::rib::decision::DecisionConfig;
use gingham_bgp::rib::*;
use gingham_bgp::wire::*;
use ipnetwork::Ipv4Network;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PREFIXES: u32 = 100_000;

/// Held by a test from its first allocation to its assertion: a failing test's panic (its
/// backtrace read from debug info) allocates megabytes, which another test must not count.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn tor(n: u8) -> RibPeer {
    RibPeer {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)),
        local_address: "198.18.0.254".parse().unwrap(),
        router_id: Ipv4Addr::new(10, 0, 0, n),
        local_as: 65000,
        peer_as: 65000,
        rr_client: false,
        keep_original_next_hop: false,
        next_hop_self: false,
        allow_own_as: 0,
        families: vec![Family::IPV4_UNICAST],
        codec: SessionCodec::new(true, false),
        import: None,
        export: None,
        external: false,
        extended_next_hop: false,
        link: None,
    }
}

/// Bytes a prefix the Loc-RIB grows by while `tors` ToRs each send the same full table.
fn bytes_a_prefix(tors: u8) -> isize {
    let mut rib = Rib::new(RibConfig {
        router_id: "198.18.0.254".parse().unwrap(),
        cluster_id: None,
        multipath: true,
        decision: DecisionConfig::default(),
    });
    for n in 1..=tors {
        rib.peer_up(u32::from(n), tor(n));
    }
    let before = live();
    for n in 1..=tors {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([])),
            next_hop: Some(Ipv4Addr::new(198, 18, 0, n)),
            ..Default::default()
        };
        for chunk in (0..PREFIXES).collect::<Vec<_>>().chunks(1000) {
            let nlri: Vec<Ipv4Network> =
                chunk.iter().map(|i| Ipv4Network::new(Ipv4Addr::from((10 << 24) + (i << 8)), 24).unwrap()).collect();
            rib.apply_update(u32::from(n), &Update { attributes: attributes.clone(), nlri, ..Default::default() });
        }
    }
    assert_eq!(rib.prefix_count(), PREFIXES as usize);
    for n in 1..=tors {
        assert_eq!(rib.accepted(u32::from(n)), PREFIXES as usize, "ToR {n}'s paths are all kept");
    }
    let best = rib.best(&"10.0.1.0/24".parse().unwrap()).expect("a best route");
    assert_eq!(best.next_hops.len(), usize::from(tors), "an ECMP route over every ToR");
    let per_prefix = (live() - before) / PREFIXES as isize;
    eprintln!("{tors} ToR(s): {per_prefix} bytes a prefix");
    per_prefix
}

#[test]
fn a_full_table_from_one_tor_costs_about_12_bytes_a_prefix() {
    let _alone = alone();
    let per_prefix = bytes_a_prefix(1);
    // 12-octet entries (the path is a number: the ToR's one attribute set is kept once; the
    // number and the groups' bits fit in 32 bits), and at most a sixteenth of them in the side
    // table (17 octets a slot, at least 7/16 full).
    assert!(per_prefix <= 15, "{per_prefix} bytes a prefix");
}

#[test]
fn a_full_table_from_two_tors_costs_about_24_bytes_a_prefix() {
    let _alone = alone();
    let per_prefix = bytes_a_prefix(2);
    // The first array as above, and a second of 12-octet entries (the second path's number),
    // each with its side table.
    assert!(per_prefix <= 30, "{per_prefix} bytes a prefix");
}
