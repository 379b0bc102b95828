//! One block's bookkeeping, sans-IO: which ordinals are free, who holds the rest. The datastore
//! code reads a block, calls these, and writes it back with CAS.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gingham_api::resources::{AllocationAttribute, IPAMBlockSpec};
use ipnetwork::IpNetwork;

/// The affinity string Calico stores in a block.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

/// The affinity of a LoadBalancer pool's blocks, as Calico writes it: they belong to no node.
pub const LOAD_BALANCER_AFFINITY: &str = "virtual:load-balancer";

/// The node a block is affine to, if any.
pub fn affine_node(spec: &IPAMBlockSpec) -> Option<&str> {
    spec.affinity.as_deref()?.strip_prefix("host:")
}

/// Whether the block holds LoadBalancer addresses (Services', never pods').
pub fn is_load_balancer(spec: &IPAMBlockSpec) -> bool {
    spec.affinity.as_deref() == Some(LOAD_BALANCER_AFFINITY)
}

/// A fresh block: every address free, handed out lowest first.
pub fn new_block(cidr: IpNetwork, node: Option<&str>, strict_affinity: bool) -> IPAMBlockSpec {
    let size = block_len(cidr);
    IPAMBlockSpec {
        cidr: cidr.to_string(),
        affinity: node.map(host_affinity),
        strict_affinity,
        allocations: vec![None; size],
        unallocated: (0..size as u32).collect(),
        ..Default::default()
    }
}

pub fn block_len(cidr: IpNetwork) -> usize {
    let host_bits = match cidr {
        IpNetwork::V4(n) => 32 - n.prefix() as u32,
        IpNetwork::V6(n) => 128 - n.prefix() as u32,
    };
    1usize << host_bits.min(16)
}

pub fn address_of(cidr: IpNetwork, ordinal: u32) -> IpAddr {
    match cidr {
        IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + ordinal)),
        IpNetwork::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + ordinal as u128)),
    }
}

pub fn ordinal_of(cidr: IpNetwork, addr: IpAddr) -> Option<u32> {
    if !cidr.contains(addr) {
        return None;
    }
    Some(match (cidr, addr) {
        (IpNetwork::V4(n), IpAddr::V4(a)) => u32::from(a) - u32::from(n.network()),
        (IpNetwork::V6(n), IpAddr::V6(a)) => (u128::from(a) - u128::from(n.network())) as u32,
        _ => return None,
    })
}

fn cidr_of(spec: &IPAMBlockSpec) -> IpNetwork {
    spec.cidr.parse().expect("a stored block has a valid CIDR")
}

/// Number of allocated addresses.
pub fn in_use(spec: &IPAMBlockSpec) -> usize {
    spec.allocations.iter().filter(|a| a.is_some()).count()
}

/// Whether a free address the caller may use exists.
pub fn has_free(spec: &IPAMBlockSpec, reserved: &dyn Fn(IpAddr) -> bool) -> bool {
    let cidr = cidr_of(spec);
    !spec.deleted && spec.unallocated.iter().any(|&o| !reserved(address_of(cidr, o)))
}

/// One allocation made by [`assign`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    pub address: IpAddr,
    pub sequence: u64,
}

/// Takes the first free, unreserved address for `handle`. `None` when the block has none.
pub fn assign(
    spec: &mut IPAMBlockSpec,
    handle: &str,
    secondary: &BTreeMap<String, String>,
    reserved: &dyn Fn(IpAddr) -> bool,
) -> Option<Allocated> {
    if spec.deleted {
        return None;
    }
    let cidr = cidr_of(spec);
    let pos = spec.unallocated.iter().position(|&o| !reserved(address_of(cidr, o)))?;
    let ordinal = spec.unallocated.remove(pos);
    Some(record(spec, ordinal, handle, secondary))
}

/// Why [`assign_address`] could not give the address.
#[derive(Clone, Debug, PartialEq)]
pub enum Unavailable {
    /// Another handle holds it.
    Held(AllocationAttribute),
    /// Not in this block, or the block is being deleted.
    NotHere,
}

/// Takes `addr` for `handle`; succeeds again, without a second allocation, when the handle
/// already holds it.
pub fn assign_address(
    spec: &mut IPAMBlockSpec,
    addr: IpAddr,
    handle: &str,
    secondary: &BTreeMap<String, String>,
) -> Result<Allocated, Unavailable> {
    let ordinal = ordinal_of(cidr_of(spec), addr).filter(|_| !spec.deleted).ok_or(Unavailable::NotHere)?;
    if let Some(attr) = holder(spec, addr) {
        return match attr.handle_id.as_deref() == Some(handle) {
            true => Ok(Allocated { address: addr, sequence: sequence_of(spec, addr).unwrap_or_default() }),
            false => Err(Unavailable::Held(attr.clone())),
        };
    }
    spec.unallocated.retain(|&o| o != ordinal);
    Ok(record(spec, ordinal, handle, secondary))
}

fn record(spec: &mut IPAMBlockSpec, ordinal: u32, handle: &str, secondary: &BTreeMap<String, String>) -> Allocated {
    let cidr = cidr_of(spec);
    // Allocations with the same handle and attributes share one attribute entry, as in Calico.
    let attr = AllocationAttribute { handle_id: Some(handle.to_string()), secondary: secondary.clone() };
    let index = match spec.attributes.iter().position(|a| *a == attr) {
        Some(i) => i,
        None => {
            spec.attributes.push(attr);
            spec.attributes.len() - 1
        }
    };
    spec.allocations[ordinal as usize] = Some(index as u32);
    spec.sequence_number += 1;
    spec.sequence_number_for_allocation.insert(ordinal.to_string(), spec.sequence_number);
    Allocated { address: address_of(cidr, ordinal), sequence: spec.sequence_number }
}

/// The handle holding `addr`, if it is allocated in this block.
pub fn holder(spec: &IPAMBlockSpec, addr: IpAddr) -> Option<&AllocationAttribute> {
    let ordinal = ordinal_of(cidr_of(spec), addr)?;
    let index = (*spec.allocations.get(ordinal as usize)?)?;
    spec.attributes.get(index as usize)
}

pub fn sequence_of(spec: &IPAMBlockSpec, addr: IpAddr) -> Option<u64> {
    let ordinal = ordinal_of(cidr_of(spec), addr)?;
    spec.sequence_number_for_allocation.get(&ordinal.to_string()).copied()
}

/// What a release asks for beyond the address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseCheck {
    /// Only release when the address is held by this handle.
    pub handle: Option<String>,
    /// Only release when the address still carries this allocation's sequence number: a stale
    /// release must not free an address that was released and handed out again.
    pub sequence: Option<u64>,
}

/// Frees `addr` and returns the handle that held it; `None` when it was already free or the
/// check does not match (both leave the block as it was).
pub fn release(spec: &mut IPAMBlockSpec, addr: IpAddr, check: &ReleaseCheck) -> Option<Option<String>> {
    let ordinal = ordinal_of(cidr_of(spec), addr)?;
    let index = spec.allocations.get(ordinal as usize).copied().flatten()?;
    let handle = spec.attributes.get(index as usize).and_then(|a| a.handle_id.clone());
    if check.handle.as_ref().is_some_and(|h| Some(h) != handle.as_ref()) {
        return None;
    }
    if check.sequence.is_some() && check.sequence != sequence_of(spec, addr) {
        return None;
    }
    free_ordinal(spec, ordinal);
    Some(handle)
}

/// Frees every address `handle` holds here; returns them.
pub fn release_handle(spec: &mut IPAMBlockSpec, handle: &str) -> Vec<IpAddr> {
    let cidr = cidr_of(spec);
    let ordinals: Vec<u32> = spec
        .allocations
        .iter()
        .enumerate()
        .filter(|(_, a)| a.and_then(|i| spec.attributes.get(i as usize)).is_some_and(|attr| attr.handle_id.as_deref() == Some(handle)))
        .map(|(o, _)| o as u32)
        .collect();
    for &o in &ordinals {
        free_ordinal(spec, o);
    }
    ordinals.into_iter().map(|o| address_of(cidr, o)).collect()
}

fn free_ordinal(spec: &mut IPAMBlockSpec, ordinal: u32) {
    spec.allocations[ordinal as usize] = None;
    spec.unallocated.push(ordinal);
    spec.sequence_number_for_allocation.remove(&ordinal.to_string());
    compact_attributes(spec);
}

/// Drops attribute entries no allocation points at any more and renumbers the rest.
fn compact_attributes(spec: &mut IPAMBlockSpec) {
    let mut used = vec![false; spec.attributes.len()];
    for i in spec.allocations.iter().flatten() {
        used[*i as usize] = true;
    }
    if used.iter().all(|u| *u) {
        return;
    }
    let mut remap = vec![0u32; used.len()];
    let mut kept = Vec::new();
    for (i, attr) in spec.attributes.drain(..).enumerate() {
        if used[i] {
            remap[i] = kept.len() as u32;
            kept.push(attr);
        }
    }
    spec.attributes = kept;
    for a in spec.allocations.iter_mut().flatten() {
        *a = remap[*a as usize];
    }
}

/// Every allocated address with its attributes.
pub fn allocations(spec: &IPAMBlockSpec) -> Vec<(IpAddr, &AllocationAttribute)> {
    let cidr = cidr_of(spec);
    spec.allocations
        .iter()
        .enumerate()
        .filter_map(|(o, a)| Some((address_of(cidr, o as u32), spec.attributes.get((*a)? as usize)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_reservations(_: IpAddr) -> bool {
        false
    }

    fn block() -> IPAMBlockSpec {
        new_block("198.19.0.0/30".parse().unwrap(), Some("n1"), false)
    }

    #[test]
    fn every_address_is_usable_including_first_and_last() {
        let mut b = block();
        let got: Vec<IpAddr> = (0..4).map(|_| assign(&mut b, "h", &BTreeMap::new(), &no_reservations).unwrap().address).collect();
        let want: Vec<IpAddr> = ["198.19.0.0", "198.19.0.1", "198.19.0.2", "198.19.0.3"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(got, want);
        assert!(assign(&mut b, "h", &BTreeMap::new(), &no_reservations).is_none());
        assert_eq!(b.attributes.len(), 1, "one attribute entry shared by the handle's four addresses");
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let mut b = block();
        let reserved = |a: IpAddr| a == "198.19.0.0".parse::<IpAddr>().unwrap();
        assert_eq!(assign(&mut b, "h", &BTreeMap::new(), &reserved).unwrap().address, "198.19.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn released_addresses_go_to_the_back_and_stale_releases_miss() {
        let mut b = block();
        let a = assign(&mut b, "h1", &BTreeMap::new(), &no_reservations).unwrap();
        assert_eq!(release(&mut b, a.address, &ReleaseCheck { sequence: Some(a.sequence), ..Default::default() }), Some(Some("h1".into())));
        assert!(b.attributes.is_empty());
        // The freed .0 is reused last: .1 .2 .3 come first.
        let next = assign(&mut b, "h2", &BTreeMap::new(), &no_reservations).unwrap();
        assert_eq!(next.address, "198.19.0.1".parse::<IpAddr>().unwrap());
        for _ in 0..2 {
            assign(&mut b, "h2", &BTreeMap::new(), &no_reservations).unwrap();
        }
        let reused = assign(&mut b, "h3", &BTreeMap::new(), &no_reservations).unwrap();
        assert_eq!(reused.address, a.address);
        // A release still carrying the first allocation's sequence number must not free h3's.
        assert_eq!(release(&mut b, a.address, &ReleaseCheck { sequence: Some(a.sequence), ..Default::default() }), None);
        assert_eq!(release(&mut b, a.address, &ReleaseCheck { handle: Some("h2".into()), ..Default::default() }), None);
        assert_eq!(holder(&b, a.address).unwrap().handle_id.as_deref(), Some("h3"));
    }

    #[test]
    fn a_named_address_is_taken_once() {
        let mut b = block();
        let addr: IpAddr = "198.19.0.2".parse().unwrap();
        let first = assign_address(&mut b, addr, "svc-a", &BTreeMap::new()).unwrap();
        assert_eq!(first.address, addr);
        assert_eq!(assign_address(&mut b, addr, "svc-a", &BTreeMap::new()), Ok(first), "the holder asking again gets it again");
        match assign_address(&mut b, addr, "svc-b", &BTreeMap::new()) {
            Err(Unavailable::Held(attr)) => assert_eq!(attr.handle_id.as_deref(), Some("svc-a")),
            other => panic!("{other:?}"),
        }
        assert_eq!(in_use(&b), 1);
        assert!(!b.unallocated.contains(&2), "the named address left the free list");
        let others: Vec<IpAddr> = (0..3).map(|_| assign(&mut b, "h", &BTreeMap::new(), &no_reservations).unwrap().address).collect();
        assert!(!others.contains(&addr));
        assert_eq!(assign_address(&mut b, "198.19.0.9".parse().unwrap(), "svc-a", &BTreeMap::new()), Err(Unavailable::NotHere));
    }

    #[test]
    fn release_by_handle_frees_exactly_that_handle() {
        let mut b = block();
        for h in ["a", "b", "a"] {
            assign(&mut b, h, &BTreeMap::new(), &no_reservations).unwrap();
        }
        assert_eq!(release_handle(&mut b, "a").len(), 2);
        assert_eq!(in_use(&b), 1);
        assert_eq!(allocations(&b)[0].1.handle_id.as_deref(), Some("b"));
        assert!(release_handle(&mut b, "a").is_empty(), "idempotent");
    }
}
