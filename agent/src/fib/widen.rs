//! Gateways coming back, sans-IO. When a ToR's session returns, every route it had shared
//! with the other ToR gains it again, one change from the speaker per prefix; those routes
//! still go through the group object the other ToR's routes were left in when it went. Moved
//! one by one to a new group, a full table is 100,000 route replaces. Held instead (each route
//! keeps forwarding via the gateways it has, all of which it still wants), they wait until
//! every route through their group wants the same gateways: then the group itself takes them,
//! one kernel operation. What never gets there (a ToR that returns with part of its table)
//! moves one route at a time once the changes go quiet, or after [`AT_MOST`] in any case.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::plan::RouteKey;

/// Held changes move one by one this long after the last of them...
pub const QUIET: Duration = Duration::from_millis(500);
/// ...and at most this long after the first: how long a route may go without a gateway it
/// has gained.
pub const AT_MOST: Duration = Duration::from_secs(5);
/// Held routes remembered by slot, so that what is carried out one by one is planned alone (a
/// route gaining a path now and then must not cost a plan of the whole table); past this many,
/// the whole table is planned instead, which costs less than remembering a table's worth.
pub const REMEMBERED: usize = 16 * 1024;

/// The groups with routes held, and since when.
#[derive(Debug)]
pub struct Widening {
    /// Changes held per group. A route changed twice counts twice: this only says when to
    /// look whether all of a group's routes want the same gateways, not that they do.
    held: HashMap<u32, usize>,
    /// Groups the kernel would not change: their routes wait for the release.
    refused: BTreeSet<u32>,
    /// The slots held, up to [`REMEMBERED`]; `None` past it.
    routes: Option<BTreeSet<RouteKey>>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Default for Widening {
    fn default() -> Self {
        Widening { held: HashMap::new(), refused: BTreeSet::new(), routes: Some(BTreeSet::new()), first: None, last: None }
    }
}

impl Widening {
    /// The route in slot `route`, through group `group`, waits to gain gateways.
    pub fn hold(&mut self, group: u32, route: RouteKey, now: Instant) {
        *self.held.entry(group).or_default() += 1;
        if let Some(routes) = &mut self.routes {
            routes.insert(route);
            if routes.len() > REMEMBERED {
                self.routes = None;
            }
        }
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
        let mut groups: Vec<u32> =
            self.held.iter().filter(|(g, n)| !self.refused.contains(*g) && **n >= routes_through(**g)).map(|(g, _)| *g).collect();
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

    /// The kernel would not give group `group` its routes' gateways: they are carried out
    /// one by one when due, and the group is not tried again until then.
    pub fn refused(&mut self, group: u32) {
        self.refused.insert(group);
    }

    /// Stops holding anything; returns the groups that still had routes held, and the slots
    /// held (`None`: too many to remember, plan every route).
    pub fn release(&mut self) -> (Vec<u32>, Option<BTreeSet<RouteKey>>) {
        let released = std::mem::take(self);
        let mut groups: Vec<u32> = released.held.into_keys().collect();
        groups.sort();
        (groups, released.routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(i: u32) -> RouteKey {
        RouteKey { prefix: ipnetwork::IpNetwork::new(std::net::Ipv4Addr::from(0xc613_0000 + i).into(), 32).unwrap(), metric: 2048 }
    }

    #[test]
    fn a_group_is_complete_once_as_many_changes_are_held_as_routes_go_through_it() {
        let t = Instant::now();
        let mut w = Widening::default();
        assert!(!w.is_holding());
        assert_eq!(w.due(), None);
        let routes = |g: u32| if g == 7 { 3 } else { 1 };
        w.hold(7, slot(1), t);
        w.hold(7, slot(2), t);
        w.hold(9, slot(3), t);
        assert_eq!(w.complete(routes), vec![9]);
        w.hold(7, slot(4), t);
        assert_eq!(w.complete(routes), vec![7, 9]);
        w.settled(9);
        assert!(w.is_holding());
        assert_eq!(w.complete(routes), vec![7]);
        w.refused(7);
        assert!(w.complete(routes).is_empty(), "not tried again");
        assert!(w.is_holding(), "its routes wait for the release");
        w.settled(7);
        assert!(!w.is_holding());
        assert_eq!(w.due(), None, "nothing held, nothing due");
    }

    #[test]
    fn held_changes_are_due_when_quiet_and_at_the_latest_after_at_most() {
        let t = Instant::now();
        let mut w = Widening::default();
        w.hold(1, slot(0), t);
        assert_eq!(w.due(), Some(t + QUIET));
        // Changes that keep coming push the quiet time out, never past AT_MOST.
        let mut now = t;
        while now < t + AT_MOST {
            now += QUIET / 2;
            w.hold(1, slot(0), now);
        }
        assert_eq!(w.due(), Some(t + AT_MOST));
        assert_eq!(w.release(), (vec![1], Some([slot(0)].into())), "one route, held many times");
        assert!(!w.is_holding());
        assert_eq!(w.due(), None);
        // Holding starts over.
        w.hold(2, slot(1), now);
        assert_eq!(w.due(), Some(now + QUIET));
    }

    #[test]
    fn past_what_is_remembered_the_release_plans_every_route() {
        let t = Instant::now();
        let mut w = Widening::default();
        for i in 0..REMEMBERED as u32 {
            w.hold(1, slot(i), t);
        }
        let (groups, routes) = w.release();
        assert_eq!((groups, routes.map(|r| r.len())), (vec![1], Some(REMEMBERED)));
        for i in 0..=REMEMBERED as u32 {
            w.hold(1, slot(i), t);
        }
        assert_eq!(w.release(), (vec![1], None));
        w.hold(1, slot(0), t);
        assert_eq!(w.release().1.map(|r| r.len()), Some(1), "remembering starts over");
    }
}
