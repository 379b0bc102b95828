//! The FIB's two large tables (the routes the agent wants, and our routes the kernel holds),
//! shaped for memory. A node learning a full table from its ToR holds 100,000 of each, and
//! nearly all of them say the same thing (via the ToR, through one nexthop object): so each
//! distinct value is kept once, with a count of the routes that have it, and a route is its
//! key and the number of its value. An IPv4 key is packed into 64 bits, and those keys live in
//! a [`PackedMap`] (a sorted array). A route costs 12 bytes per table this way, where a hash
//! map took 22 and ordered maps of full entries 83 and 166 (counted by the allocator:
//! `agent/tests/fib_memory.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

use gingham_bgp::rib::{FastHash, Interner, PackedMap};
use ipnetwork::{IpNetwork, Ipv4Network};

use super::plan::{Class, RouteKey, WantKey};

/// A key that usually fits in 64 bits (an IPv4 prefix and a little more).
pub trait PackedKey: Copy + Eq + Hash {
    fn pack(&self) -> Option<u64>;
    fn unpack(bits: u64) -> Self;
}

fn v4(prefix: &IpNetwork) -> Option<(u64, u64)> {
    match prefix {
        IpNetwork::V4(p) => Some((u64::from(u32::from(p.ip())), u64::from(p.prefix()))),
        IpNetwork::V6(_) => None,
    }
}

fn v4_prefix(addr: u64, len: u64) -> IpNetwork {
    // Only ever unpacked from what `pack` made of a valid prefix.
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(addr as u32), len as u8).expect("a packed prefix length is at most 32"))
}

const CLASSES: [Class; 4] = [Class::Endpoint, Class::Blackhole, Class::Static, Class::Learned];

impl PackedKey for WantKey {
    fn pack(&self) -> Option<u64> {
        let class = CLASSES.iter().position(|c| *c == self.class)? as u64;
        v4(&self.prefix).map(|(addr, len)| (addr << 16) | (len << 8) | class)
    }

    fn unpack(bits: u64) -> Self {
        WantKey { prefix: v4_prefix(bits >> 16, (bits >> 8) & 0xff), class: CLASSES[(bits & 0xff) as usize] }
    }
}

/// Metrics below this pack (every class's default and any sane configured one); others take
/// the wide map.
const PACKED_METRICS: u32 = 1 << 26;

impl PackedKey for RouteKey {
    fn pack(&self) -> Option<u64> {
        if self.metric >= PACKED_METRICS {
            return None;
        }
        v4(&self.prefix).map(|(addr, len)| (addr << 32) | (len << 26) | u64::from(self.metric))
    }

    fn unpack(bits: u64) -> Self {
        RouteKey { prefix: v4_prefix(bits >> 32, (bits >> 26) & 0x3f), metric: (bits as u32) & (PACKED_METRICS - 1) }
    }
}

/// A map whose values are interned and whose keys are packed where they fit. Iteration order
/// is unspecified.
#[derive(Clone, Debug)]
pub struct Store<K, T> {
    /// Value numbers (a number that cannot be 0 leaves the map's entries 12 octets).
    packed: PackedMap<NonZeroU32>,
    wide: HashMap<K, NonZeroU32, FastHash>,
    values: Interner<T>,
}

impl<K, T> Default for Store<K, T> {
    fn default() -> Self {
        Store { packed: PackedMap::default(), wide: HashMap::default(), values: Interner::default() }
    }
}

impl<K: PackedKey, T: Clone + Eq + Hash> Store<K, T> {
    fn number(&self, key: &K) -> Option<NonZeroU32> {
        match key.pack() {
            Some(bits) => self.packed.get(&bits).copied(),
            None => self.wide.get(key).copied(),
        }
    }

    pub fn get(&self, key: &K) -> Option<&T> {
        self.number(key).map(|n| self.values.get(n))
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.number(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: T) {
        let n = self.values.hold(value);
        let old = match key.pack() {
            Some(bits) => self.packed.insert(bits, n),
            None => self.wide.insert(key, n),
        };
        if let Some(old) = old {
            self.values.release(old);
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<T> {
        let n = match key.pack() {
            Some(bits) => self.packed.remove(&bits),
            None => self.wide.remove(key),
        }?;
        Some(self.values.release(n))
    }

    pub fn len(&self) -> usize {
        self.packed.len() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        let packed = self.packed.iter().map(|(bits, n)| (K::unpack(bits), self.values.get(*n)));
        packed.chain(self.wide.iter().map(|(k, n)| (*k, self.values.get(*n))))
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Each distinct value once.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }

    /// How many keys have a value that `matches`: a count per distinct value, without a walk
    /// over the keys.
    pub fn count_where(&self, mut matches: impl FnMut(&T) -> bool) -> usize {
        self.values.counted().filter(|(v, _)| matches(v)).map(|(_, refs)| refs as usize).sum()
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &T) -> bool) {
        let values = &mut self.values;
        let mut check = |key: K, n: NonZeroU32| {
            let kept = keep(&key, values.get(n));
            if !kept {
                values.release(n);
            }
            kept
        };
        self.packed.retain(|bits, n| check(K::unpack(bits), *n));
        self.wide.retain(|key, n| check(*key, *n));
    }

    /// Changes values wherever they are (every key with the value sees the new one), without
    /// a walk over the keys.
    pub fn rewrite_values(&mut self, change: impl FnMut(&T) -> Option<T>) {
        self.values.rewrite(change)
    }

    /// Gives back what deletions left: a full table gone leaves its maps' capacity.
    pub fn shrink_to_fit(&mut self) {
        self.packed.shrink_to_fit();
        self.wide.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn nth_v4_24(i: u32) -> IpNetwork {
        IpNetwork::new(Ipv4Addr::from((10u32 << 24) | (i << 8)).into(), 24).unwrap()
    }

    #[test]
    fn keys_pack_and_unpack_to_themselves_and_others_take_the_wide_map() {
        for class in CLASSES {
            for prefix in ["0.0.0.0/0", "198.19.255.255/32", "255.255.255.0/24"] {
                let w = WantKey { prefix: net(prefix), class };
                assert_eq!(WantKey::unpack(w.pack().unwrap()), w);
            }
        }
        for metric in [0, 1, 2, 2048, PACKED_METRICS - 1] {
            let k = RouteKey { prefix: net("198.19.4.0/22"), metric };
            assert_eq!(RouteKey::unpack(k.pack().unwrap()), k);
        }
        assert_eq!(RouteKey { prefix: net("198.19.4.0/22"), metric: PACKED_METRICS }.pack(), None);
        assert_eq!(WantKey { prefix: net("2001:db8::/64"), class: Class::Learned }.pack(), None);
        let mut s: Store<RouteKey, &str> = Store::default();
        let wide = RouteKey { prefix: net("198.19.4.0/22"), metric: u32::MAX };
        let v6 = RouteKey { prefix: net("2001:db8::/64"), metric: 1024 };
        let packed = RouteKey { prefix: net("198.19.4.0/22"), metric: 2048 };
        for k in [wide, v6, packed] {
            s.insert(k, "x");
        }
        let mut keys: Vec<RouteKey> = s.keys().collect();
        keys.sort();
        assert_eq!(keys, [packed, wide, v6]);
        assert_eq!(s.get(&wide), Some(&"x"));
    }

    #[test]
    fn a_value_lives_while_a_key_has_it_and_rewrites_reach_every_key() {
        let mut s: Store<WantKey, String> = Store::default();
        let key = |i| WantKey { prefix: nth_v4_24(i), class: Class::Learned };
        for i in 0..10 {
            s.insert(key(i), "via A".to_string());
        }
        s.insert(key(10), "via B".to_string());
        assert_eq!(s.values().count(), 2);
        // Overwriting and removing release the old value; the last key takes it out.
        s.insert(key(10), "via A".to_string());
        assert_eq!(s.values().collect::<Vec<_>>(), ["via A"]);
        assert_eq!(s.remove(&key(3)).as_deref(), Some("via A"));
        assert_eq!(s.remove(&key(3)), None);
        s.rewrite_values(|v| (v == "via A").then(|| "via A and B".to_string()));
        assert!(s.iter().all(|(_, v)| v == "via A and B"));
        assert_eq!(s.len(), 10);
        s.retain(|k, _| k.prefix != nth_v4_24(0));
        assert_eq!(s.len(), 9);
        s.retain(|_, _| false);
        assert!(s.is_empty());
        assert_eq!(s.values().count(), 0, "no value outlives its last key");
        // A new value after a rewrite made two equal: still one number per insert.
        s.insert(key(1), "via C".to_string());
        assert_eq!(s.get(&key(1)).map(String::as_str), Some("via C"));
    }
}
