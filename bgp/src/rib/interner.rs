//! Each distinct value kept once, numbered, with the number of holders. The large tables (the
//! Loc-RIB's prefixes, the FIB's routes) hold 100,000 entries that nearly all say the same
//! thing (one ToR, one attribute set, one nexthop object): an entry holds a 4-octet number
//! instead of the value. Numbers are never 0 (an `Option` of one, or of an entry holding one,
//! costs nothing more) and never `u32::MAX` (free for a holder's own marker), and a freed
//! number is handed out again.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;

use super::FastHash;

#[derive(Clone, Debug)]
pub struct Interner<T> {
    /// Value `n` is at `n - 1`; `None` when free.
    values: Vec<Option<(T, u32)>>,
    numbers: HashMap<T, NonZeroU32, FastHash>,
    free: Vec<NonZeroU32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner { values: Vec::new(), numbers: HashMap::default(), free: Vec::new() }
    }
}

impl<T: Clone + Eq + Hash> Interner<T> {
    /// The number of `value`, counting one more holder.
    pub fn hold(&mut self, value: T) -> NonZeroU32 {
        if let Some(&n) = self.numbers.get(&value) {
            if let Some((_, holders)) = &mut self.values[index(n)] {
                *holders += 1;
            }
            return n;
        }
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.values.push(None);
                NonZeroU32::new(self.values.len() as u32).filter(|n| *n != NonZeroU32::MAX).expect("fewer than 2^32 - 1 distinct values")
            }
        };
        self.values[index(n)] = Some((value.clone(), 1));
        self.numbers.insert(value, n);
        n
    }

    /// One holder fewer has `n`; the last one takes it out. Its value either way.
    pub fn release(&mut self, n: NonZeroU32) -> T {
        let entry = &mut self.values[index(n)];
        let (value, holders) = entry.as_mut().expect("a held number");
        *holders -= 1;
        if *holders > 0 {
            return value.clone();
        }
        let (value, _) = entry.take().expect("checked above");
        // After a rewrite two numbers may hold equal values, and the map names only one.
        if self.numbers.get(&value) == Some(&n) {
            self.numbers.remove(&value);
        }
        self.free.push(n);
        value
    }

    pub fn get(&self, n: NonZeroU32) -> &T {
        &self.values[index(n)].as_ref().expect("a held number").0
    }

    /// Each distinct value once.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.values.iter().flatten().map(|(v, _)| v)
    }

    /// Each distinct value with the number of its holders.
    pub fn counted(&self) -> impl Iterator<Item = (&T, u32)> {
        self.values.iter().flatten().map(|(v, holders)| (v, *holders))
    }

    /// Rewrites values in place (each distinct one once, however many hold it).
    pub fn rewrite(&mut self, mut change: impl FnMut(&T) -> Option<T>) {
        let mut changed = false;
        for (value, _) in self.values.iter_mut().flatten() {
            if let Some(new) = change(value) {
                *value = new;
                changed = true;
            }
        }
        if changed {
            // Two numbers may now hold equal values: both stay valid, new holders get one.
            self.numbers = self.values.iter().zip(1..).filter_map(|(e, n)| Some((e.as_ref()?.0.clone(), NonZeroU32::new(n)?))).collect();
        }
    }
}

fn index(n: NonZeroU32) -> usize {
    n.get() as usize - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lives_while_held_and_its_number_is_reused_after() {
        let mut i: Interner<&str> = Interner::default();
        let a = i.hold("a");
        assert_eq!(i.hold("a"), a);
        let b = i.hold("b");
        assert_ne!(a, b);
        assert_eq!((*i.get(a), *i.get(b)), ("a", "b"));
        assert_eq!(i.release(a), "a");
        assert_eq!(i.counted().map(|(v, n)| (*v, n)).collect::<Vec<_>>(), [("a", 1), ("b", 1)]);
        assert_eq!(i.release(a), "a");
        assert_eq!(i.iter().copied().collect::<Vec<_>>(), ["b"], "gone with its last holder");
        assert_eq!(i.hold("c"), a, "a freed number is handed out again");
        assert_eq!(i.hold("a"), NonZeroU32::new(3).unwrap());
    }

    #[test]
    fn a_rewrite_reaches_every_holder_and_equal_values_stay_valid() {
        let mut i: Interner<String> = Interner::default();
        let a = i.hold("a".into());
        let b = i.hold("b".into());
        i.rewrite(|v| (v == "a").then(|| "b".to_string()));
        assert_eq!((i.get(a).as_str(), i.get(b).as_str()), ("b", "b"));
        let again = i.hold("b".into());
        assert!(again == a || again == b);
        i.release(a);
        i.release(b);
        assert_eq!(i.iter().count(), 1, "the number held twice is left");
        i.release(again);
        assert_eq!(i.iter().count(), 0);
    }
}
