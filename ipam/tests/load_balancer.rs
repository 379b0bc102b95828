//! LoadBalancer IPAM on the memory backend: Services get addresses from LoadBalancer pools only,
//! a named address is handed out once, pods never get a LoadBalancer address, and a release by
//! handle leaves the IPAM consistent.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use gingham_api::datastore::memory::MemoryStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{AllowedUse, GinghamNode, GinghamNodeSpec, IPAMBlock, IPPool, IPPoolSpec, IPReservation, IPReservationSpec};
use gingham_ipam::{block, AssignArgs, Family, Ipam, IpamError, LoadBalancerRequest, Wanted, ATTR_SERVICE};

fn lb_pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            block_size: Some(if cidr.contains(':') { 126 } else { 30 }),
            allowed_uses: Some(vec![AllowedUse::LoadBalancer]),
            ..Default::default()
        },
    )
}

async fn setup() -> Ipam<MemoryStore> {
    let store = Store::new(MemoryStore::new());
    let pods = IPPoolSpec { cidr: "198.19.0.0/28".into(), block_size: Some(30), ..Default::default() };
    store.create(&IPPool::new("pods", pods)).await.unwrap();
    store.create(&lb_pool("lb", "198.18.113.0/29")).await.unwrap();
    store.create(&lb_pool("lb-b", "198.18.114.0/30")).await.unwrap();
    store.create(&lb_pool("lb6", "2001:db8:113::/125")).await.unwrap();
    store.create(&GinghamNode::new("node-1", GinghamNodeSpec::default())).await.unwrap();
    Ipam::new(store)
}

fn request(service: &str, want: Wanted) -> LoadBalancerRequest {
    LoadBalancerRequest {
        handle: format!("lb.shop.{service}"),
        attrs: BTreeMap::from([("namespace".to_string(), "shop".to_string()), (ATTR_SERVICE.to_string(), service.to_string())]),
        want,
        pools: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn services_get_load_balancer_addresses_once_and_retries_return_the_same() {
    let ipam = setup().await;
    let a = ipam.assign_load_balancer(&request("web", Wanted::Any(Family::V4))).await.unwrap();
    assert!("198.18.113.0/29".parse::<ipnetwork::IpNetwork>().unwrap().contains(a), "{a} comes from the first pool by name");
    assert_eq!(ipam.assign_load_balancer(&request("web", Wanted::Any(Family::V4))).await.unwrap(), a, "a retry");
    let v6 = ipam.assign_load_balancer(&request("web", Wanted::Any(Family::V6))).await.unwrap();
    assert!(v6.is_ipv6());
    // Every address of both IPv4 pools, then exhaustion.
    let mut seen = HashSet::from([a]);
    for i in 0..11 {
        let got = ipam.assign_load_balancer(&request(&format!("s{i}"), Wanted::Any(Family::V4))).await.unwrap();
        assert!(seen.insert(got), "{got} handed out twice");
    }
    let full = ipam.assign_load_balancer(&request("one-too-many", Wanted::Any(Family::V4))).await.unwrap_err();
    assert!(matches!(full, IpamError::LoadBalancerExhausted { .. }), "{full}");
    // The blocks belong to no node.
    let (blocks, _) = ipam.store().list::<IPAMBlock>().await.unwrap();
    let lb_blocks = blocks.iter().filter(|b| block::is_load_balancer(&b.spec)).count();
    assert_eq!(lb_blocks, 4, "two /30 blocks of lb, one of lb-b, one /126 of lb6");
    assert!(blocks.iter().filter(|b| block::is_load_balancer(&b.spec)).all(|b| block::affine_node(&b.spec).is_none()));
    // Released by handle: the address is free again and the check is clean.
    assert_eq!(ipam.release_handle("lb.shop.web").await.unwrap().len(), 2);
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, 11);
    assert!(ipam.assign_load_balancer(&request("one-too-many", Wanted::Any(Family::V4))).await.is_ok());
}

#[tokio::test]
async fn a_named_address_goes_to_the_first_service_and_the_second_is_told_who_holds_it() {
    let ipam = setup().await;
    let wanted = Wanted::Address(ip("198.18.113.5"));
    assert_eq!(ipam.assign_load_balancer(&request("web", wanted.clone())).await.unwrap(), ip("198.18.113.5"));
    assert_eq!(ipam.assign_load_balancer(&request("web", wanted.clone())).await.unwrap(), ip("198.18.113.5"), "a retry");
    let second = ipam.assign_load_balancer(&request("shop-2", wanted.clone())).await.unwrap_err();
    assert_eq!(second.to_string(), "198.18.113.5 is already held by Service shop/web");
    // The "any" path never hands it out either.
    let others: HashSet<IpAddr> = assign_any_n(&ipam, 3).await;
    assert!(!others.contains(&ip("198.18.113.5")));
    let outside = ipam.assign_load_balancer(&request("x", Wanted::Address(ip("198.19.0.1")))).await.unwrap_err();
    assert!(matches!(outside, IpamError::NotInLoadBalancerPool { .. }), "a pod pool's address: {outside}");
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "the refused requests left no handle counts behind: {report:?}");
}

async fn assign_any_n(ipam: &Ipam<MemoryStore>, n: usize) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    for i in 0..n {
        out.insert(ipam.assign_load_balancer(&request(&format!("any{i}"), Wanted::Any(Family::V4))).await.unwrap());
    }
    out
}

#[tokio::test]
async fn named_pools_reserved_and_disabled_pools_are_honoured() {
    let ipam = setup().await;
    let mut only_b = request("web", Wanted::Any(Family::V4));
    only_b.pools = Some(vec!["lb-b".into()]);
    let got = ipam.assign_load_balancer(&only_b).await.unwrap();
    assert!("198.18.114.0/30".parse::<ipnetwork::IpNetwork>().unwrap().contains(got), "{got}");
    only_b.pools = Some(vec!["pods".into()]);
    let e = ipam.assign_load_balancer(&only_b).await.unwrap_err();
    assert_eq!(e.to_string(), "IPPool \"pods\" is not a LoadBalancer pool (allowedUses)");
    only_b.pools = Some(vec!["nope".into()]);
    assert!(ipam.assign_load_balancer(&only_b).await.unwrap_err().to_string().contains("does not exist"));
    let mut outside_named = request("db", Wanted::Address(ip("198.18.113.1")));
    outside_named.pools = Some(vec!["lb-b".into()]);
    assert!(matches!(ipam.assign_load_balancer(&outside_named).await.unwrap_err(), IpamError::NotInLoadBalancerPool { .. }));

    let reservation = IPReservationSpec { reserved_cidrs: vec!["198.18.113.6/32".into()] };
    ipam.store().create(&IPReservation::new("keep", reservation)).await.unwrap();
    let e = ipam.assign_load_balancer(&request("db", Wanted::Address(ip("198.18.113.6")))).await.unwrap_err();
    assert!(matches!(e, IpamError::Reserved { .. }), "{e}");

    let mut lb6 = ipam.store().get::<IPPool>("lb6").await.unwrap().unwrap();
    lb6.spec.disabled = true;
    ipam.store().update(&lb6).await.unwrap();
    let e = ipam.assign_load_balancer(&request("db", Wanted::Any(Family::V6))).await.unwrap_err();
    assert!(matches!(e, IpamError::NoLoadBalancerPool { .. }), "{e}");
}

#[tokio::test]
async fn pods_never_get_a_load_balancer_address() {
    let ipam = setup().await;
    // The pod pool has 16 addresses; after them the node must fail, not spill into lb.
    let mut pods = HashSet::new();
    for i in 0..16 {
        let args = AssignArgs { handle: format!("c{i}"), node: "node-1".into(), ipv4: true, ..Default::default() };
        pods.insert(ipam.assign(&args).await.unwrap().ipv4.unwrap().address);
    }
    assert!(pods.iter().all(|a| "198.19.0.0/28".parse::<ipnetwork::IpNetwork>().unwrap().contains(*a)), "{pods:?}");
    let args = AssignArgs { handle: "c16".into(), node: "node-1".into(), ipv4: true, ..Default::default() };
    assert!(matches!(ipam.assign(&args).await.unwrap_err(), IpamError::Exhausted { .. }));
    // Nor when a LoadBalancer block with free addresses exists (a pod may borrow from any block
    // of its pools, and only of its pools).
    ipam.assign_load_balancer(&request("web", Wanted::Any(Family::V4))).await.unwrap();
    assert!(matches!(ipam.assign(&args).await.unwrap_err(), IpamError::Exhausted { .. }));
}
