//! What a full table costs in the Loc-RIB, counted by the allocator (a test binary of its own,
//! so nothing else allocates meanwhile): a node learning 100,000 prefixes from its ToR keeps
//! them in one sorted array of 24-octet entries under one shared attribute set, with the latest
//! few in a hash table beside it.

use std::net::{IpAddr, Ipv4Addr};

use gingham_bgp::counting_alloc::{live, Counting};
use gingham_bgp::rib::decision::DecisionConfig;
use gingham_bgp::rib::*;
use gingham_bgp::wire::*;
use ipnetwork::Ipv4Network;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PREFIXES: u32 = 100_000;

#[test]
fn a_full_table_from_one_tor_costs_about_24_bytes_a_prefix() {
    let mut rib = Rib::new(RibConfig {
        router_id: "198.18.0.254".parse().unwrap(),
        cluster_id: None,
        multipath: true,
        decision: DecisionConfig::default(),
    });
    let tor = RibPeer {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        local_address: "198.18.0.254".parse().unwrap(),
        router_id: Ipv4Addr::new(10, 0, 0, 1),
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
    };
    rib.peer_up(1, tor);
    let attributes = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence([])),
        next_hop: Some("198.18.0.1".parse().unwrap()),
        ..Default::default()
    };
    let before = live();
    for chunk in (0..PREFIXES).collect::<Vec<_>>().chunks(1000) {
        let nlri: Vec<Ipv4Network> = chunk.iter().map(|i| Ipv4Network::new(Ipv4Addr::from((10 << 24) + (i << 8)), 24).unwrap()).collect();
        rib.apply_update(1, &Update { attributes: attributes.clone(), nlri, ..Default::default() });
    }
    let per_prefix = (live() - before) / PREFIXES as isize;
    assert_eq!(rib.prefix_count(), PREFIXES as usize);
    // 24-octet entries, and at most a sixteenth of them in the side table (33 octets a slot,
    // at least 7/16 full).
    assert!(per_prefix <= 28, "{per_prefix} bytes a prefix");
}
