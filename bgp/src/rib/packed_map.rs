//! A map from 64-bit keys shaped for memory, for the tables a full routing table fills (the
//! Loc-RIB's IPv4 prefixes, the FIB's routes). A hash table keeps 1/8 to 9/16 of its slots
//! empty and pads each entry to its key's alignment: 100,000 routes of a u64 key and a u32
//! value took 2.2 MB, 22 octets a route. Here the entries sit in one array sorted by key, each
//! of them its key's two halves and its value (12 octets for that route), and only keys added
//! since the array was last rebuilt sit in a small hash table beside it. A removal from the
//! array leaves its entry vacant. Once the side table and the vacancies pass a sixteenth of
//! the array, it is rebuilt in place: each change costs moving at most about sixteen entries,
//! and none when keys arrive in order. A lookup searches a copy of every 32nd key (a few dozen
//! kilobytes that stay in cache), or starts from the block of the last lookup, then 32
//! entries.

use std::cell::Cell;
use std::collections::HashMap;

use super::fast_hash::FastHash;

/// The side table is rebuilt into the array once it and the vacancies pass
/// `array / REBUILD_SHARE`, and never below `REBUILD_AT_LEAST` (small maps stay a hash table).
const REBUILD_SHARE: usize = 16;
const REBUILD_AT_LEAST: usize = 512;
/// Every this many entries of the array, its key is in the index.
const BLOCK: usize = 32;

/// A key in two 32-bit halves: an entry then needs no 8-octet alignment (12 octets with a u32
/// value, not 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Halves([u32; 2]);

impl Halves {
    fn of(key: u64) -> Halves {
        Halves([(key >> 32) as u32, key as u32])
    }

    fn key(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
}

#[derive(Clone, Debug)]
struct Entry<V> {
    key: Halves,
    /// `None`: removed since the last rebuild.
    value: Option<V>,
}

#[derive(Clone, Debug)]
pub struct PackedMap<V> {
    /// Sorted by key, each key once. Keys change only in a rebuild (a removal leaves its key).
    array: Vec<Entry<V>>,
    /// The key of every [`BLOCK`]th entry of `array`, from the first.
    index: Vec<u64>,
    /// The block of the last lookup: a table is mostly walked in key order (an UPDATE's
    /// prefixes, a sorted batch of routes), and then the next key is in it or the one after,
    /// which spares the search of the index.
    finger: Cell<usize>,
    /// Keys not in `array` (a key is in one of the two, never both).
    recent: HashMap<u64, V, FastHash>,
    vacant: usize,
}

impl<V> Default for PackedMap<V> {
    fn default() -> Self {
        PackedMap { array: Vec::new(), index: Vec::new(), finger: Cell::new(0), recent: HashMap::default(), vacant: 0 }
    }
}

impl<V> PackedMap<V> {
    /// Where `key` is in the array, if it is.
    fn position(&self, key: u64) -> Option<usize> {
        let holds = |b: usize| self.index.get(b).is_some_and(|first| *first <= key) && self.index.get(b + 1).is_none_or(|next| key < *next);
        let last = self.finger.get();
        let block = if holds(last) {
            last
        } else if holds(last + 1) {
            last + 1
        } else {
            self.index.partition_point(|k| *k <= key).checked_sub(1)?
        };
        self.finger.set(block);
        let start = block * BLOCK;
        let entries = &self.array[start..(start + BLOCK).min(self.array.len())];
        entries.binary_search_by(|e| e.key.key().cmp(&key)).ok().map(|i| start + i)
    }

    pub fn get(&self, key: &u64) -> Option<&V> {
        if let Some(v) = self.recent.get(key) {
            return Some(v);
        }
        self.position(*key).and_then(|i| self.array[i].value.as_ref())
    }

    pub fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        match self.position(*key) {
            Some(i) => self.array[i].value.as_mut(),
            None => self.recent.get_mut(key),
        }
    }

    /// Returns the value `key` had.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if let Some(i) = self.position(key) {
            let old = self.array[i].value.replace(value);
            if old.is_none() {
                self.vacant -= 1;
            }
            return old;
        }
        let old = self.recent.insert(key, value);
        if old.is_none() {
            self.rebuild_if_due();
        }
        old
    }

    pub fn remove(&mut self, key: &u64) -> Option<V> {
        if let Some(v) = self.recent.remove(key) {
            return Some(v);
        }
        let i = self.position(*key)?;
        let old = self.array[i].value.take();
        if old.is_some() {
            self.vacant += 1;
            self.rebuild_if_due();
        }
        old
    }

    pub fn len(&self) -> usize {
        self.array.len() - self.vacant + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let settled = self.array.iter().filter_map(|e| e.value.as_ref().map(|v| (e.key.key(), v)));
        settled.chain(self.recent.iter().map(|(k, v)| (*k, v)))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.array.iter_mut().filter_map(|e| e.value.as_mut()).chain(self.recent.values_mut())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        for e in &mut self.array {
            if let Some(v) = &mut e.value {
                if !keep(e.key.key(), v) {
                    e.value = None;
                    self.vacant += 1;
                }
            }
        }
        self.recent.retain(|k, v| keep(*k, v));
        self.rebuild_if_due();
    }

    /// Moves everything into an array of exactly the entries there are.
    pub fn shrink_to_fit(&mut self) {
        if self.vacant > 0 || !self.recent.is_empty() {
            self.rebuild();
        }
        self.array.shrink_to_fit();
        self.index.shrink_to_fit();
    }

    fn rebuild_if_due(&mut self) {
        if self.recent.len() + self.vacant > (self.array.len() / REBUILD_SHARE).max(REBUILD_AT_LEAST) {
            self.rebuild();
        }
    }

    /// Drops the vacant entries and merges the side table's into the array, in place from its
    /// end: a table arriving in key order only appends. The array grows by exactly what it
    /// takes (a large one by remapping its pages, not copying them).
    fn rebuild(&mut self) {
        if self.vacant > 0 {
            self.array.retain(|e| e.value.is_some());
            self.vacant = 0;
        }
        if !self.recent.is_empty() {
            let recent = std::mem::take(&mut self.recent);
            let mut adds: Vec<Entry<V>> = recent.into_iter().map(|(k, v)| Entry { key: Halves::of(k), value: Some(v) }).collect();
            adds.sort_unstable_by_key(|e| e.key.key());
            let mut old = self.array.len();
            self.array.reserve_exact(adds.len());
            self.array.resize_with(old + adds.len(), || Entry { key: Halves::of(0), value: None });
            let mut write = self.array.len();
            while let Some(add) = adds.pop() {
                while old > 0 && self.array[old - 1].key.key() > add.key.key() {
                    old -= 1;
                    write -= 1;
                    self.array.swap(old, write);
                }
                write -= 1;
                self.array[write] = add;
            }
        }
        self.index = self.array.iter().step_by(BLOCK).map(|e| e.key.key()).collect();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroU32;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_entry_with_a_u32_value_takes_twelve_octets() {
        assert_eq!(std::mem::size_of::<Entry<NonZeroU32>>(), 12);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Retain(u64),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys, so inserts and removes meet the same keys in both places.
        let key = prop_oneof![0u64..2_000, any::<u64>()];
        prop_oneof![
            6 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => key.prop_map(Op::Remove),
            1 => (2u64..7).prop_map(Op::Retain),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// Whatever the order of changes and rebuilds, the map holds what an ordered map holds.
        #[test]
        fn it_holds_what_an_ordered_map_holds(ops in proptest::collection::vec(op(), 1..3_000)) {
            let mut ours: PackedMap<u32> = PackedMap::default();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(ours.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k), model.remove(&k)),
                    Op::Retain(m) => {
                        ours.retain(|k, _| k % m != 0);
                        model.retain(|k, _| k % m != 0);
                    }
                    Op::Shrink => ours.shrink_to_fit(),
                }
                prop_assert_eq!(ours.len(), model.len());
            }
            let mut all: Vec<(u64, u32)> = ours.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            prop_assert_eq!(all, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            for (k, v) in &model {
                prop_assert_eq!(ours.get(k), Some(v));
            }
            prop_assert!(ours.array.windows(2).all(|w| w[0].key.key() < w[1].key.key()), "the array stays sorted");
        }
    }

    #[test]
    fn a_large_map_lives_in_its_array_and_a_rebuild_leaves_no_vacancy() {
        let mut m: PackedMap<u32> = PackedMap::default();
        for k in (0..100_000u64).rev() {
            m.insert(k << 8, k as u32);
            if m.recent.is_empty() {
                assert_eq!(m.array.capacity(), m.array.len(), "a rebuilt array has no spare room");
            }
        }
        assert!(m.recent.len() <= 100_000 / REBUILD_SHARE, "{} keys beside the array", m.recent.len());
        for k in 0..50_000u64 {
            m.remove(&(k << 8));
        }
        m.shrink_to_fit();
        assert_eq!((m.array.len(), m.vacant, m.recent.len()), (50_000, 0, 0));
        assert_eq!(m.get(&(70_000 << 8)), Some(&70_000));
        *m.get_mut(&(70_000 << 8)).unwrap() += 1;
        assert_eq!(m.get(&(70_000 << 8)), Some(&70_001));
    }
}
