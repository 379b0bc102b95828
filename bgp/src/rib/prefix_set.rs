//! Compact prefix keys and sets. An IPv4 prefix packs into a `u64` (address << 8 | length),
//! which halves the tables against keying by `IpNetwork` (20 octets); IPv6 keeps the full type.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

use super::fast_hash::FastHash;

pub(crate) fn v4_key(p: &Ipv4Network) -> u64 {
    (u64::from(u32::from(p.network())) << 8) | u64::from(p.prefix())
}

pub(crate) fn v4_from_key(k: u64) -> IpNetwork {
    let addr = Ipv4Addr::from((k >> 8) as u32);
    // Keys only ever come from valid prefixes.
    IpNetwork::V4(Ipv4Network::new(addr, (k & 0xff) as u8).unwrap_or_else(|_| Ipv4Network::from(addr)))
}

/// A set of prefixes of both families.
#[derive(Debug, Default)]
pub struct PrefixSet {
    v4: HashSet<u64, FastHash>,
    v6: HashSet<IpNetwork>,
}

impl PrefixSet {
    pub fn insert(&mut self, p: IpNetwork) -> bool {
        match p {
            IpNetwork::V4(v4) => self.v4.insert(v4_key(&v4)),
            IpNetwork::V6(_) => self.v6.insert(p),
        }
    }

    pub fn remove(&mut self, p: &IpNetwork) -> bool {
        match p {
            IpNetwork::V4(v4) => self.v4.remove(&v4_key(v4)),
            IpNetwork::V6(_) => self.v6.remove(p),
        }
    }

    pub fn contains(&self, p: &IpNetwork) -> bool {
        match p {
            IpNetwork::V4(v4) => self.v4.contains(&v4_key(v4)),
            IpNetwork::V6(_) => self.v6.contains(p),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Gives back capacity beyond `n` prefixes (a full table withdrawn at once grows the set to
    /// it, and a hash set keeps its capacity).
    pub fn shrink_to(&mut self, n: usize) {
        self.v4.shrink_to(n);
        self.v6.shrink_to(n);
    }

    pub fn extend(&mut self, it: impl IntoIterator<Item = IpNetwork>) {
        for p in it {
            self.insert(p);
        }
    }

    /// Removes and returns up to `n` prefixes, so large sets are worked off in bounded steps.
    /// The IPv4 ones come in key order: the tables they are looked up in next are sorted
    /// arrays that a walk in order reads block by block, where hash order costs a search each.
    pub fn take(&mut self, n: usize) -> Vec<IpNetwork> {
        let mut keys: Vec<u64> = self.v4.iter().take(n).copied().collect();
        keys.sort_unstable();
        for k in &keys {
            self.v4.remove(k);
        }
        let mut out: Vec<IpNetwork> = keys.into_iter().map(v4_from_key).collect();
        if out.len() < n {
            let v6: Vec<IpNetwork> = self.v6.iter().take(n - out.len()).copied().collect();
            for p in &v6 {
                self.v6.remove(p);
            }
            out.extend(v6);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.v4.iter().map(|k| v4_from_key(*k)).chain(self.v6.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_take_drains() {
        let mut s = PrefixSet::default();
        for p in ["0.0.0.0/0", "198.19.0.0/24", "198.19.0.0/25", "255.255.255.255/32", "2001:db8::/48"] {
            assert!(s.insert(p.parse().unwrap()));
        }
        assert!(!s.insert("198.19.0.0/24".parse().unwrap()));
        assert!(s.contains(&"198.19.0.0/25".parse().unwrap()));
        let mut all: Vec<String> = s.take(3).into_iter().chain(s.take(10)).map(|p| p.to_string()).collect();
        all.sort();
        assert_eq!(all, vec!["0.0.0.0/0", "198.19.0.0/24", "198.19.0.0/25", "2001:db8::/48", "255.255.255.255/32"]);
        assert!(s.is_empty());
    }

    #[test]
    fn take_gives_ipv4_prefixes_in_key_order() {
        let mut s = PrefixSet::default();
        for i in (0..200u32).rev() {
            s.insert(IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0xC612_0000 + (i << 8)), 24).unwrap()));
        }
        let mut taken = Vec::new();
        while !s.is_empty() {
            let chunk = s.take(64);
            assert!(chunk.windows(2).all(|w| w[0] < w[1]), "a chunk in order: {chunk:?}");
            taken.extend(chunk);
        }
        assert_eq!(taken.len(), 200);
    }
}
