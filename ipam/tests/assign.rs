//! IPAM behaviour on the memory backend: what a node gets, when it claims and borrows, and
//! that releases and repairs leave nothing behind.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use gingham_api::datastore::memory::MemoryStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{
    BlockAffinity, GinghamNode, GinghamNodeSpec, IPAMBlock, IPAMConfiguration, IPAMConfigurationSpec, IPAMHandle, IPPool, IPPoolSpec,
    IPReservation, IPReservationSpec,
};
use gingham_ipam::{block, AssignArgs, Ipam, IpamError, LeakReason};
use ipnetwork::IpNetwork;

async fn setup(pools: &[(&str, &str, u8)], nodes: &[&str]) -> Ipam<MemoryStore> {
    let store = Store::new(MemoryStore::new());
    for (name, cidr, block) in pools {
        store
            .create(&IPPool::new(name, IPPoolSpec { cidr: cidr.to_string(), block_size: Some(*block), ..Default::default() }))
            .await
            .unwrap();
    }
    for n in nodes {
        store.create(&GinghamNode::new(n, GinghamNodeSpec::default())).await.unwrap();
    }
    Ipam::new(store)
}

fn v4(handle: &str, node: &str) -> AssignArgs {
    AssignArgs {
        handle: handle.into(),
        node: node.into(),
        attrs: BTreeMap::from([("node".to_string(), node.to_string()), ("pod".to_string(), handle.to_string())]),
        ipv4: true,
        ipv6: false,
    }
}

async fn affine_blocks(ipam: &Ipam<MemoryStore>, node: &str) -> Vec<IpNetwork> {
    let (affs, _) = ipam.store().list::<BlockAffinity>().await.unwrap();
    affs.into_iter().filter(|a| a.spec.node == node).map(|a| a.spec.cidr.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_node_claims_a_block_and_fills_it_before_claiming_another() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 30)], &["a"]).await;
    let mut got = Vec::new();
    for i in 0..5 {
        let a = ipam.assign(&v4(&format!("c{i}"), "a")).await.unwrap().ipv4.unwrap();
        assert!(!a.borrowed);
        got.push(a);
    }
    let blocks = affine_blocks(&ipam, "a").await;
    assert_eq!(blocks.len(), 2, "four addresses fit a /30; the fifth needs a second block");
    assert!(got[..4].iter().all(|a| a.block == got[0].block) && got[4].block != got[0].block);
    let distinct: HashSet<IpAddr> = got.iter().map(|a| a.address).collect();
    assert_eq!(distinct.len(), 5);
}

#[tokio::test]
async fn dual_stack_assigns_one_of_each_and_a_retry_returns_the_same() {
    let ipam = setup(&[("v4", "198.19.0.0/16", 26), ("v6", "2001:db8:19::/48", 122)], &["a"]).await;
    let args = AssignArgs { ipv6: true, ..v4("c1", "a") };
    let first = ipam.assign(&args).await.unwrap();
    assert!(first.ipv4.as_ref().unwrap().address.is_ipv4());
    assert!(first.ipv6.as_ref().unwrap().address.is_ipv6());
    let again = ipam.assign(&args).await.unwrap();
    assert_eq!(again, first, "a retried ADD for the same container must not take new addresses");
    let freed = ipam.release_handle("c1").await.unwrap();
    assert_eq!(freed.len(), 2);
    assert!(ipam.release_handle("c1").await.unwrap().is_empty(), "release is idempotent");
    assert!(ipam.store().get::<IPAMHandle>("c1").await.unwrap().is_none());
}

#[tokio::test]
async fn dual_stack_failure_gives_the_first_address_back() {
    let ipam = setup(&[("v4", "198.19.0.0/16", 26)], &["a"]).await;
    let e = ipam.assign(&AssignArgs { ipv6: true, ..v4("c1", "a") }).await.unwrap_err();
    assert!(matches!(e, IpamError::NoPool { .. }), "{e}");
    let report = ipam.check().await.unwrap();
    assert_eq!(report.allocations, 0, "the IPv4 address taken before the IPv6 failure leaked");
}

#[tokio::test]
async fn reserved_addresses_are_never_handed_out() {
    let ipam = setup(&[("pool", "198.19.0.0/29", 29)], &["a"]).await;
    let spec = IPReservationSpec { reserved_cidrs: vec!["198.19.0.0/30".into(), "198.19.0.7".into()] };
    ipam.store().create(&IPReservation::new("r", spec)).await.unwrap();
    let mut got = Vec::new();
    loop {
        match ipam.assign(&v4(&format!("c{}", got.len()), "a")).await {
            Ok(a) => got.push(a.ipv4.unwrap().address.to_string()),
            Err(IpamError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, ["198.19.0.4", "198.19.0.5", "198.19.0.6"]);
}

/// The issue's scenario: a /29 pool of /30 blocks and three nodes. Two nodes claim the two
/// blocks; the third has none to claim and borrows; everyone borrows once their block is full;
/// the ninth request finds nothing.
#[tokio::test]
async fn small_pool_exhausts_and_borrows_as_calico_does() {
    let ipam = setup(&[("pool", "198.19.0.0/29", 30)], &["a", "b", "c"]).await;
    let mut held: Vec<(String, IpAddr, bool)> = Vec::new();
    for round in 0..3 {
        for node in ["a", "b", "c"] {
            if held.len() == 8 {
                break;
            }
            let a = ipam.assign(&v4(&format!("{node}{round}"), node)).await.unwrap().ipv4.unwrap();
            held.push((node.to_string(), a.address, a.borrowed));
        }
    }
    let a_blocks = affine_blocks(&ipam, "a").await;
    let b_blocks = affine_blocks(&ipam, "b").await;
    assert_eq!((a_blocks.len(), b_blocks.len()), (1, 1));
    assert!(affine_blocks(&ipam, "c").await.is_empty(), "no block was left for c to claim");
    for (node, addr, borrowed) in &held {
        let own = affine_blocks(&ipam, node).await.iter().any(|b| b.contains(*addr));
        assert_eq!(*borrowed, !own, "{node} got {addr}: borrowed flag must say whether it is outside the node's block");
    }
    assert!(held.iter().filter(|(n, _, _)| n == "c").all(|(_, _, b)| *b));
    let distinct: HashSet<IpAddr> = held.iter().map(|h| h.1).collect();
    assert_eq!(distinct.len(), 8, "all eight addresses handed out once each");
    match ipam.assign(&v4("one-too-many", "a")).await {
        Err(IpamError::Exhausted { strict: false, .. }) => {}
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn strict_affinity_refuses_to_borrow() {
    let ipam = setup(&[("pool", "198.19.0.0/29", 30)], &["a", "b", "c"]).await;
    let config = IPAMConfigurationSpec { strict_affinity: true, ..Default::default() };
    ipam.store().create(&IPAMConfiguration::new("default", config)).await.unwrap();
    ipam.assign(&v4("a0", "a")).await.unwrap();
    ipam.assign(&v4("b0", "b")).await.unwrap();
    match ipam.assign(&v4("c0", "c")).await {
        Err(IpamError::Exhausted { strict: true, .. }) => {}
        other => panic!("c must not borrow under strictAffinity, got {other:?}"),
    }
    for i in 1..4 {
        ipam.assign(&v4(&format!("a{i}"), "a")).await.unwrap();
    }
    assert!(matches!(ipam.assign(&v4("a4", "a")).await, Err(IpamError::Exhausted { strict: true, .. })));
    let (blocks, _) = ipam.store().list::<IPAMBlock>().await.unwrap();
    let b_block = blocks.iter().find(|b| block::affine_node(&b.spec) == Some("b")).unwrap();
    assert_eq!(block::in_use(&b_block.spec), 1, "a took nothing from b's block");
}

#[tokio::test]
async fn a_node_with_many_small_blocks_refills_an_old_one_before_claiming() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 31)], &["a"]).await;
    let mut got = Vec::new();
    for i in 0..12 {
        got.push(ipam.assign(&v4(&format!("c{i}"), "a")).await.unwrap().ipv4.unwrap());
    }
    assert_eq!(affine_blocks(&ipam, "a").await.len(), 6, "two addresses per /31");
    // Room in the second block: found among six full-or-not blocks, not a seventh claimed.
    ipam.release_addresses(&[got[3].address]).await.unwrap();
    let again = ipam.assign(&v4("c12", "a")).await.unwrap().ipv4.unwrap();
    assert_eq!(again.address, got[3].address);
    assert_eq!(affine_blocks(&ipam, "a").await.len(), 6);
    let next = ipam.assign(&v4("c13", "a")).await.unwrap().ipv4.unwrap();
    assert_eq!(affine_blocks(&ipam, "a").await.len(), 7, "all six full: the next claims");
    let distinct: HashSet<IpAddr> = got[..3].iter().chain(&got[4..]).map(|a| a.address).chain([again.address, next.address]).collect();
    assert_eq!(distinct.len(), 13);
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn release_by_address_is_idempotent_and_updates_the_handle() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 26)], &["a"]).await;
    let a = ipam.assign(&v4("c1", "a")).await.unwrap().ipv4.unwrap();
    assert_eq!(ipam.release_addresses(&[a.address]).await.unwrap(), vec![a.address]);
    assert!(ipam.release_addresses(&[a.address]).await.unwrap().is_empty());
    assert!(ipam.store().get::<IPAMHandle>("c1").await.unwrap().is_none(), "the handle held nothing more");
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn a_departed_node_gives_back_its_empty_blocks() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 30)], &["a"]).await;
    for i in 0..5 {
        ipam.assign(&v4(&format!("c{i}"), "a")).await.unwrap();
    }
    for i in 0..4 {
        ipam.release_handle(&format!("c{i}")).await.unwrap();
    }
    let out = ipam.release_node("a").await.unwrap();
    assert_eq!((out.released.len(), out.kept.len()), (1, 1), "{out:?}");
    let (blocks, _) = ipam.store().list::<IPAMBlock>().await.unwrap();
    assert_eq!(blocks.len(), 1);
    ipam.release_handle("c4").await.unwrap();
    let out = ipam.release_node("a").await.unwrap();
    assert_eq!(out.released.len(), 1);
    assert!(ipam.store().list::<IPAMBlock>().await.unwrap().0.is_empty());
    assert!(ipam.store().list::<BlockAffinity>().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn a_retired_node_releases_its_pods_everywhere_and_its_blocks() {
    // /30 blocks in a /29: a fills its block, b its own, and a borrows nothing (strict off, but
    // b's block is full too); a third pod on b borrows from a's block once a frees one.
    let ipam = setup(&[("pool", "198.19.0.0/29", 30)], &["a", "b"]).await;
    for i in 0..4 {
        ipam.assign(&v4(&format!("a{i}"), "a")).await.unwrap();
        ipam.assign(&v4(&format!("b{i}"), "b")).await.unwrap();
    }
    ipam.release_handle("a0").await.unwrap();
    let borrowed = ipam.assign(&v4("b-borrowed", "b")).await.unwrap().ipv4.unwrap();
    assert!(borrowed.borrowed, "{borrowed:?}");
    let out = ipam.retire_node("b").await.unwrap();
    assert_eq!(out.handles.len(), 5, "b's four pods and the one it borrowed for: {out:?}");
    assert_eq!(out.addresses.len(), 5);
    assert_eq!((out.blocks.released.len(), out.blocks.kept.len()), (1, 0));
    assert_eq!(affine_blocks(&ipam, "a").await.len(), 1, "a keeps its block");
    assert!(ipam.store().get::<IPAMHandle>("a1").await.unwrap().is_some(), "a's pods keep their addresses");
    let (blocks, _) = ipam.store().list::<IPAMBlock>().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(block::in_use(&blocks[0].spec), 3, "only a's three pods remain");
    assert_eq!(ipam.retire_node("b").await.unwrap(), Default::default(), "idempotent");
}

#[tokio::test]
async fn check_finds_leaks_and_repair_fixes_them() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 26)], &["a", "b"]).await;
    let kept = ipam.assign(&v4("kept", "a")).await.unwrap().ipv4.unwrap();
    let lost = ipam.assign(&v4("lost", "a")).await.unwrap().ipv4.unwrap();
    ipam.assign(&v4("on-b", "b")).await.unwrap();
    // A crashed DEL: the handle is gone but the block still holds the address.
    ipam.store().delete_latest::<IPAMHandle>("lost").await.unwrap();
    // Node b is deleted without its pods being cleaned up.
    ipam.store().delete_latest::<GinghamNode>("b").await.unwrap();
    // A claim that died between its two steps.
    let dangling = BlockAffinity::new(
        "a-198-19-0-192-26",
        gingham_api::resources::BlockAffinitySpec { node: "a".into(), cidr: "198.19.0.192/26".into(), ..Default::default() },
    );
    ipam.store().create(&dangling).await.unwrap();

    let report = ipam.check().await.unwrap();
    assert!(!report.is_clean());
    let leaks: Vec<(IpAddr, LeakReason)> = report.leaks.iter().map(|l| (l.address, l.reason.clone())).collect();
    assert!(leaks.contains(&(lost.address, LeakReason::HandleMissing)), "{leaks:?}");
    assert!(leaks.iter().any(|(_, r)| *r == LeakReason::NodeMissing("b".into())), "{leaks:?}");
    assert!(!leaks.iter().any(|(a, _)| *a == kept.address));
    assert_eq!(report.orphan_blocks.len(), 1);
    assert_eq!(report.dangling_affinities, ["a-198-19-0-192-26"]);

    let repaired = ipam.repair().await.unwrap();
    assert_eq!(repaired.released.len(), 2);
    assert_eq!(repaired.blocks_released.len(), 1, "b's block, empty after the repair, is released");
    let after = ipam.check().await.unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.allocations, 1, "the live allocation survived the repair");
}

#[tokio::test]
async fn a_batch_gets_what_one_by_one_would_and_spills_into_a_claim() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 29)], &["a"]).await;
    let first = ipam.assign(&v4("c0", "a")).await.unwrap().ipv4.unwrap();
    // Seven fit the first /29 beside c0; the other three need a second block.
    let batch: Vec<AssignArgs> = (1..11).map(|i| v4(&format!("c{i}"), "a")).collect();
    let results = ipam.assign_many(&batch).await;
    let got: Vec<_> = results.into_iter().map(|r| r.unwrap().ipv4.unwrap()).collect();
    assert!(got[..7].iter().all(|a| a.block == first.block && !a.borrowed), "{got:?}");
    assert!(got[7..].iter().all(|a| a.block != first.block && !a.borrowed), "{got:?}");
    assert_eq!(affine_blocks(&ipam, "a").await.len(), 2);
    let distinct: HashSet<IpAddr> = got.iter().map(|a| a.address).chain([first.address]).collect();
    assert_eq!(distinct.len(), 11);
    // The store agrees: each handle holds its one address, counted once.
    let (blocks, _) = ipam.store().list::<IPAMBlock>().await.unwrap();
    for (args, a) in batch.iter().zip(&got) {
        let b = blocks.iter().find(|b| b.spec.cidr == a.block.to_string()).unwrap();
        assert_eq!(block::holder(&b.spec, a.address).and_then(|h| h.handle_id.clone()).as_deref(), Some(args.handle.as_str()));
        let handle = ipam.store().get::<IPAMHandle>(&args.handle).await.unwrap().unwrap();
        assert_eq!(handle.spec.block.values().sum::<u32>(), 1, "{}", args.handle);
    }
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn a_handle_twice_in_a_batch_or_retried_gets_one_address() {
    let ipam = setup(&[("pool", "198.19.0.0/24", 26)], &["a"]).await;
    let before = ipam.assign(&v4("old", "a")).await.unwrap().ipv4.unwrap();
    let batch = vec![v4("c1", "a"), v4("old", "a"), v4("c1", "a"), v4("c2", "a")];
    let got: Vec<_> = ipam.assign_many(&batch).await.into_iter().map(|r| r.unwrap().ipv4.unwrap().address).collect();
    assert_eq!(got[1], before.address, "a retried ADD keeps its address");
    assert_eq!(got[0], got[2], "the same container asked twice in one batch gets one address");
    assert_ne!(got[0], got[3]);
    let report = ipam.check().await.unwrap();
    assert_eq!(report.allocations, 3);
    assert!(report.is_clean());
}

#[tokio::test]
async fn a_batch_that_fails_its_second_family_gives_the_first_back() {
    let ipam = setup(&[("v4", "198.19.0.0/16", 26)], &["a"]).await;
    ipam.assign(&v4("c0", "a")).await.unwrap();
    let batch = vec![AssignArgs { ipv6: true, ..v4("c1", "a") }, v4("c2", "a"), AssignArgs { ipv6: true, ..v4("c3", "a") }];
    let results = ipam.assign_many(&batch).await;
    assert!(matches!(results[0], Err(IpamError::NoPool { .. })), "{:?}", results[0]);
    assert!(results[1].as_ref().unwrap().ipv4.is_some());
    assert!(matches!(results[2], Err(IpamError::NoPool { .. })), "{:?}", results[2]);
    let report = ipam.check().await.unwrap();
    assert_eq!(report.allocations, 2, "only c0 and c2 hold addresses");
    assert!(report.is_clean());
}
