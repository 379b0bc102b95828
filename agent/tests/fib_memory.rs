//! What a full table costs in the FIB's table (the routes wanted, and the mirror of ours in the
//! kernel, by slot), counted by the allocator in a test binary of its own: 100,000 routes from
//! one ToR, all via one gateway through one nexthop object.

use std::net::Ipv4Addr;
use std::sync::Arc;

use gingham_agent::fib::plan::{Form, Hop, RouteKey, RouteKind};
use gingham_agent::fib::store::Routes;
use gingham_agent::fib::Target;
use gingham_bgp::counting_alloc::{live, Counting};
use gingham_bgp::rib::Gateway;
use ipnetwork::IpNetwork;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROUTES: u32 = 100_000;

#[test]
fn a_full_table_costs_a_few_dozen_bytes_a_route() {
    let gateways: Arc<[Gateway]> = Arc::from([Gateway::new("198.18.0.1".parse().unwrap())]);
    let hops = Arc::from([Hop { via: "198.18.0.1".parse().unwrap(), dev: Some(2) }]);
    let form = Form { kind: RouteKind::Unicast, scope: 0, oif: Some(2), hops, nh_id: Some(0x4748_0000) };
    let before = live();
    let mut routes = Routes::default();
    for i in 0..ROUTES {
        let key = RouteKey { prefix: IpNetwork::new(Ipv4Addr::from((10u32 << 24) | (i << 8)).into(), 24).unwrap(), metric: 2048 };
        routes.set_want(key, Some(Target::Gateways(gateways.clone())));
        routes.set_ours(key, Some(form.clone()));
    }
    let per_route = (live() - before) / ROUTES as isize;
    assert_eq!((routes.wanted_len(), routes.ours_len(), routes.forms().count()), (ROUTES as usize, ROUTES as usize, 1));
    // 12-octet entries in a sorted array, at most a sixteenth of them in a hash table beside it
    // (17 octets a slot, at least 7/16 full): 12 to 15 bytes a route.
    assert!(per_route <= 16, "{per_route} bytes a route for what is wanted and what is ours");
}
