//! Gateways coming back, sans-IO. When a ToR's session returns, every route it had shared
//! with the other ToR gains it again, one change from the speaker per prefix; those routes
//! still go through the group object the other ToR's routes were left in when it went. Moved
//! one by one to a new group, a full table is 100,000 route replaces. Held instead (each route
//! keeps forwarding via the gateways it has, all of which it still wants), they wait until
//! every route through their group wants the same gateways: then the group itself takes them,
//! one kernel operation. What never gets there (a ToR that returns with part of its table)
//! moves one route at a time once the changes go quiet, or after [`AT_MOST`] in any case.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Held changes move one by one this long after the last of them...
pub const QUIET: Duration = Duration::from_millis(500);
/// ...and at most this long after the first: how long a route may go without a gateway it
/// has gained.
pub const AT_MOST: Duration = Duration::from_secs(5);

/// The groups with routes held, and since when.
#[derive(Debug, Default)]
pub struct Widening {
    /// Changes held per group. A route changed twice counts twice: this only says when to
    /// look whether all of a group's routes want the same gateways, not that they do.
    held: HashMap<u32, usize>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Widening {
    /// One more route through group `group` waits to gain gateways.
    pub fn hold(&mut self, group: u32, now: Instant) {
        *self.held.entry(group).or_default() += 1;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the held changes are to be carried out one by one.
    pub fn due(&self) -> Option<Instant> {
        Some((self.first? + AT_MOST).min(self.last? + QUIET))
    }

    /// The groups with as many changes held as routes through them (`routes_through`): those
    /// whose routes may all want the same gateways now. Lowest id first.
    pub fn complete(&self, routes_through: impl Fn(u32) -> usize) -> Vec<u32> {
        let mut groups: Vec<u32> = self.held.iter().filter(|(g, n)| **n >= routes_through(**g)).map(|(g, _)| *g).collect();
        groups.sort();
        groups
    }

    /// Group `group`'s routes need no more waiting (the group took their gateways, or went).
    pub fn settled(&mut self, group: u32) {
        self.held.remove(&group);
        if self.held.is_empty() {
            *self = Widening::default();
        }
    }

    /// Stops holding anything; returns the groups that still had routes held.
    pub fn release(&mut self) -> Vec<u32> {
        let mut groups: Vec<u32> = std::mem::take(&mut self.held).into_keys().collect();
        groups.sort();
        *self = Widening::default();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_complete_once_as_many_changes_are_held_as_routes_go_through_it() {
        let t = Instant::now();
        let mut w = Widening::default();
        assert!(!w.is_holding());
        assert_eq!(w.due(), None);
        let routes = |g: u32| if g == 7 { 3 } else { 1 };
        w.hold(7, t);
        w.hold(7, t);
        w.hold(9, t);
        assert_eq!(w.complete(routes), vec![9]);
        w.hold(7, t);
        assert_eq!(w.complete(routes), vec![7, 9]);
        w.settled(9);
        assert!(w.is_holding());
        assert_eq!(w.complete(routes), vec![7]);
        w.settled(7);
        assert!(!w.is_holding());
        assert_eq!(w.due(), None, "nothing held, nothing due");
    }

    #[test]
    fn held_changes_are_due_when_quiet_and_at_the_latest_after_at_most() {
        let t = Instant::now();
        let mut w = Widening::default();
        w.hold(1, t);
        assert_eq!(w.due(), Some(t + QUIET));
        // Changes that keep coming push the quiet time out, never past AT_MOST.
        let mut now = t;
        while now < t + AT_MOST {
            now += QUIET / 2;
            w.hold(1, now);
        }
        assert_eq!(w.due(), Some(t + AT_MOST));
        assert_eq!(w.release(), vec![1]);
        assert!(!w.is_holding());
        assert_eq!(w.due(), None);
        // Holding starts over.
        w.hold(2, now);
        assert_eq!(w.due(), Some(now + QUIET));
    }
}
