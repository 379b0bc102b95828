//! Which pools a node may use, and the blocks a pool splits into.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;

use gingham_api::resources::{AllowedUse, IPPool};
use gingham_api::selector::Selector;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNetwork) -> Family {
        if net.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A pool as IPAM uses it.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNetwork,
    pub block_size: u8,
    pub strict_affinity: Option<bool>,
}

impl Pool {
    pub fn from_resource(pool: &IPPool) -> Option<Pool> {
        Some(Pool {
            name: pool.metadata.name.clone()?,
            cidr: pool.spec.network()?,
            block_size: pool.spec.effective_block_size(),
            strict_affinity: pool.spec.strict_affinity,
        })
    }

    /// The block of this pool that contains `addr`.
    pub fn block_of(&self, addr: IpAddr) -> Option<IpNetwork> {
        if !self.cidr.contains(addr) {
            return None;
        }
        IpNetwork::new(addr, self.block_size).ok().map(|n| IpNetwork::new(n.network(), self.block_size).expect("same prefix"))
    }

    fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix()).min(127)
    }

    fn nth_block(&self, n: u128) -> IpNetwork {
        let step_bits = match self.cidr {
            IpNetwork::V4(_) => 32 - self.block_size as u32,
            IpNetwork::V6(_) => 128 - self.block_size as u32,
        };
        match self.cidr {
            IpNetwork::V4(p) => {
                let base = u32::from(p.network()) as u128 + (n << step_bits);
                IpNetwork::V4(Ipv4Network::new((base as u32).into(), self.block_size).expect("valid prefix"))
            }
            IpNetwork::V6(p) => {
                let base = u128::from(p.network()) + (n << step_bits);
                IpNetwork::V6(Ipv6Network::new(base.into(), self.block_size).expect("valid prefix"))
            }
        }
    }

    /// The first block not in `taken`, scanning from a node-specific starting point (so nodes
    /// claiming at the same time rarely race for the same block) and wrapping around. Costs at
    /// most one step per taken block, even in an IPv6 pool of 2^70 blocks.
    pub fn free_block(&self, node: &str, taken: &HashSet<IpNetwork>) -> Option<IpNetwork> {
        let count = self.block_count();
        let start = fnv(node) as u128 % count;
        let mut n = start;
        loop {
            let block = self.nth_block(n);
            if !taken.contains(&block) {
                return Some(block);
            }
            n = (n + 1) % count;
            if n == start {
                return None;
            }
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Pools `node` may take workload addresses of `family` from: enabled, allowing workloads, and
/// whose nodeSelector matches the node's labels. Sorted by name for a stable order.
pub fn eligible(pools: &[IPPool], family: Family, node_labels: &BTreeMap<String, String>) -> Vec<Pool> {
    let mut out: Vec<Pool> = pools
        .iter()
        .filter(|p| !p.spec.disabled && p.spec.allows(AllowedUse::Workload))
        .filter(|p| Selector::from_str(p.spec.effective_node_selector()).is_ok_and(|s| s.matches(node_labels)))
        .filter_map(Pool::from_resource)
        .filter(|p| Family::of(&p.cidr) == family)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_api::resources::IPPoolSpec;

    fn pool(name: &str, cidr: &str, block: u8) -> IPPool {
        IPPool::new(name, IPPoolSpec { cidr: cidr.into(), block_size: Some(block), ..Default::default() })
    }

    #[test]
    fn free_block_wraps_and_ends() {
        let p = Pool::from_resource(&pool("p", "198.19.0.0/29", 30)).unwrap();
        let mut taken = HashSet::new();
        let a = p.free_block("n1", &taken).unwrap();
        taken.insert(a);
        let b = p.free_block("n1", &taken).unwrap();
        assert_ne!(a, b);
        taken.insert(b);
        assert_eq!(p.free_block("n2", &taken), None);
        assert!(["198.19.0.0/30", "198.19.0.4/30"].contains(&a.to_string().as_str()));
    }

    #[test]
    fn huge_ipv6_pools_do_not_enumerate() {
        let p = Pool::from_resource(&pool("p", "2001:db8:19::/48", 122)).unwrap();
        let b = p.free_block("n1", &HashSet::new()).unwrap();
        assert!(p.cidr.contains(b.network()) && b.prefix() == 122);
        assert_eq!(p.block_of(b.network()), Some(b));
    }

    #[test]
    fn selection_honours_selector_family_and_disabled() {
        let mut labels = BTreeMap::new();
        labels.insert("rack".to_string(), "a".to_string());
        let mut rack_b = pool("b", "198.20.0.0/16", 26);
        rack_b.spec.node_selector = Some("rack == 'b'".into());
        let mut off = pool("c", "198.21.0.0/16", 26);
        off.spec.disabled = true;
        let pools = [pool("a", "198.19.0.0/16", 26), rack_b, off, pool("v6", "2001:db8::/48", 122)];
        let names: Vec<String> = eligible(&pools, Family::V4, &labels).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(eligible(&pools, Family::V6, &labels)[0].name, "v6");
    }
}
