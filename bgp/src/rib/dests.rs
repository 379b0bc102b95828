//! A prefix's entry in the Loc-RIB (its best path's number and which update groups hold it from
//! us), and the IPv4 entries' store. Nearly every entry has a low path number (a table has a
//! handful of distinct paths, and numbers are handed out again once free) and bits for few
//! groups (a node has two or three: its mesh, its ToRs), so an entry fits in 32 bits and sits
//! with its key in 12 octets; one that does not (a path numbered past 16 bits, a group in a
//! slot past the fifteenth) sits in a second array of full entries, 16 octets.

use std::num::NonZeroU32;

use super::packed_map::PackedMap;

/// A path's number among the table's sources (see `table.rs`).
pub(super) type Source = NonZeroU32;
/// The source of a prefix with no path (never handed out).
pub(super) const TOMBSTONE: Source = NonZeroU32::MAX;
/// Bit of `Dest::advertised` that marks a change the FIB stream has not taken yet; the other
/// 31 are update-group slots.
pub(super) const FIB_BIT: u32 = 1 << 31;
pub(super) const SLOTS: usize = 31;

/// Best path plus the Adj-RIB-Out bits of groups with a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dest {
    pub(super) best: Source,
    pub(super) advertised: u32,
}

impl Dest {
    pub(super) fn live(&self) -> bool {
        self.best != TOMBSTONE
    }
}

/// A [`Dest`] in 32 bits: the best path's number in the high 16 (all ones for the tombstone),
/// the FIB bit, and the first 15 slots. Never 0: a number is never 0.
#[derive(Clone, Copy, Debug)]
struct Narrow(NonZeroU32);

const NARROW_TOMBSTONE: u32 = 0xffff;
const NARROW_SLOTS: u32 = 15;
const NARROW_FIB_BIT: u32 = 1 << NARROW_SLOTS;
const NARROW_SLOT_BITS: u32 = NARROW_FIB_BIT - 1;

impl Narrow {
    fn of(d: Dest) -> Option<Narrow> {
        let best = match d.best {
            TOMBSTONE => NARROW_TOMBSTONE,
            n if n.get() < NARROW_TOMBSTONE => n.get(),
            _ => return None,
        };
        let slots = d.advertised & !FIB_BIT;
        if slots & !NARROW_SLOT_BITS != 0 {
            return None;
        }
        let fib = if d.advertised & FIB_BIT != 0 { NARROW_FIB_BIT } else { 0 };
        NonZeroU32::new((best << 16) | fib | slots).map(Narrow)
    }

    fn dest(self) -> Dest {
        let bits = self.0.get();
        let best = match bits >> 16 {
            NARROW_TOMBSTONE => TOMBSTONE,
            n => NonZeroU32::new(n).expect("a narrow entry's number is never 0"),
        };
        let fib = if bits & NARROW_FIB_BIT != 0 { FIB_BIT } else { 0 };
        Dest { best, advertised: fib | (bits & NARROW_SLOT_BITS) }
    }
}

/// The IPv4 entries by packed prefix: narrow where they fit, full beside them where not; a key
/// is in one of the two, never both.
#[derive(Debug, Default)]
pub(super) struct V4Dests {
    narrow: PackedMap<Narrow>,
    full: PackedMap<Dest>,
}

impl V4Dests {
    pub(super) fn get(&self, key: u64) -> Option<Dest> {
        if let Some(n) = self.narrow.get(&key) {
            return Some(n.dest());
        }
        if self.full.is_empty() {
            return None;
        }
        self.full.get(&key).copied()
    }

    /// Inserts or replaces; returns the entry it replaced.
    pub(super) fn set(&mut self, key: u64, d: Dest) -> Option<Dest> {
        match Narrow::of(d) {
            Some(n) => {
                let old = self.narrow.insert(key, n).map(Narrow::dest);
                match old {
                    Some(_) => old,
                    None if self.full.is_empty() => None,
                    None => self.full.remove(&key),
                }
            }
            None => {
                let old = self.full.insert(key, d);
                old.or_else(|| self.narrow.remove(&key).map(Narrow::dest))
            }
        }
    }

    pub(super) fn remove(&mut self, key: u64) -> Option<Dest> {
        match self.narrow.remove(&key) {
            Some(n) => Some(n.dest()),
            None if self.full.is_empty() => None,
            None => self.full.remove(&key),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Dest)> + '_ {
        self.narrow.iter().map(|(k, n)| (k, n.dest())).chain(self.full.iter().map(|(k, d)| (k, *d)))
    }

    /// Keeps the entries for which `keep` says yes, after it changed them. A change must keep a
    /// narrow entry narrow (clearing bits does).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64, &mut Dest) -> bool) {
        self.narrow.retain(|k, n| {
            let mut d = n.dest();
            let kept = keep(k, &mut d);
            if kept {
                *n = Narrow::of(d).expect("a change that keeps an entry narrow");
            }
            kept
        });
        self.full.retain(|k, d| keep(k, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(best: u32, advertised: u32) -> Dest {
        Dest { best: NonZeroU32::new(best).unwrap(), advertised }
    }

    #[test]
    fn entries_that_fit_are_narrow_and_come_back_whole() {
        let all = [
            dest(1, 0),
            dest(0xfffe, FIB_BIT | 0x7fff),
            Dest { best: TOMBSTONE, advertised: FIB_BIT },
            Dest { best: TOMBSTONE, advertised: 1 << 14 },
        ];
        for d in all {
            assert_eq!(Narrow::of(d).map(Narrow::dest), Some(d), "{d:?}");
        }
        for wide in [dest(0xffff, 0), dest(1, 1 << 15), dest(70_000, 1), dest(1, 1 << 30)] {
            assert!(Narrow::of(wide).is_none(), "{wide:?}");
        }
    }

    #[test]
    fn an_entry_moves_between_the_arrays_as_it_grows_and_shrinks() {
        let mut m = V4Dests::default();
        assert_eq!(m.set(7, dest(3, 1)), None);
        assert_eq!(m.set(7, dest(3, 1 | (1 << 20))), Some(dest(3, 1)), "a slot past the fifteenth");
        assert_eq!((m.narrow.len(), m.full.len()), (0, 1));
        assert_eq!(m.get(7), Some(dest(3, 1 | (1 << 20))));
        m.set(8, dest(100_000, 0));
        m.set(9, dest(2, FIB_BIT));
        assert_eq!((m.narrow.len(), m.full.len()), (1, 2));
        m.retain(|_, d| {
            d.advertised &= !(1 << 20);
            true
        });
        assert_eq!(m.get(7), Some(dest(3, 1)));
        assert_eq!(m.set(7, dest(3, 1)), Some(dest(3, 1)));
        assert_eq!((m.narrow.len(), m.full.len()), (2, 1), "back in the narrow array");
        let mut all: Vec<(u64, Dest)> = m.iter().collect();
        all.sort_by_key(|(k, _)| *k);
        assert_eq!(all, [(7, dest(3, 1)), (8, dest(100_000, 0)), (9, dest(2, FIB_BIT))]);
        assert_eq!((m.remove(8), m.remove(9), m.remove(9)), (Some(dest(100_000, 0)), Some(dest(2, FIB_BIT)), None));
        m.retain(|_, _| false);
        assert_eq!(m.iter().count(), 0);
    }
}
