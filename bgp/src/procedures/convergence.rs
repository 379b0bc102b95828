//! End-of-RIB bookkeeping for the whole speaker (RFC 4724 4.1): when every peer has delivered
//! its first table ("synced": the agent may then drop kernel routes that did not come back),
//! and, after our own restart, when route selection is final (until then only our own
//! prefixes go out, without End-of-RIB).

use std::time::Duration;

use super::TimerOp;
use crate::wire::Family;

/// One peer's first table: the families whose End-of-RIB has not come yet.
#[derive(Clone, Debug, Default)]
pub struct InitialTable {
    awaiting: Option<Vec<Family>>,
}

impl InitialTable {
    /// A session came up with these families. Only the first session counts: a peer that
    /// delivered its table once does not hold the speaker back again.
    pub fn established(&mut self, families: &[Family]) {
        self.awaiting.get_or_insert_with(|| families.to_vec());
    }

    pub fn end_of_rib(&mut self, family: Family) {
        if let Some(awaiting) = self.awaiting.as_mut() {
            awaiting.retain(|f| *f != family);
        }
    }

    /// Every family of the first session has ended.
    pub fn complete(&self) -> bool {
        self.awaiting.as_ref().is_some_and(Vec::is_empty)
    }
}

/// What the convergence logic needs to know of a configured peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerView {
    pub up: bool,
    /// `None`: the session did not negotiate graceful restart. `Some(true)`: the peer set the
    /// Restart State bit (it waits for our table before sending its own).
    pub gr_restarting: Option<bool>,
    pub initial_table_complete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvergenceAction {
    /// Every peer delivered its table, or the deadline passed.
    Synced,
    /// Route selection is final: every Established peer gets its whole table and End-of-RIB.
    SelectionFinal,
    /// The sync deadline.
    Timer(TimerOp),
}

#[derive(Clone, Debug)]
pub struct Convergence {
    /// We restarted with our forwarding state intact.
    restarting: bool,
    selection_final: bool,
    synced: bool,
    deadline: Duration,
}

impl Convergence {
    pub fn new(restarting: bool, deadline: Duration) -> Convergence {
        Convergence { restarting, selection_final: false, synced: false, deadline }
    }

    /// At start: peers that never come up must not hold the speaker back beyond the deadline.
    pub fn start(&self) -> Vec<ConvergenceAction> {
        vec![ConvergenceAction::Timer(TimerOp::Start(self.deadline))]
    }

    /// We restarted and selection is not final yet: only our own prefixes go out.
    pub fn deferring(&self) -> bool {
        self.restarting && !self.selection_final
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Re-evaluates after a peer came up, went away or sent End-of-RIB.
    pub fn evaluate(&mut self, peers: &[PeerView]) -> Vec<ConvergenceAction> {
        let mut out = Vec::new();
        if !self.synced && !peers.is_empty() && peers.iter().all(|p| p.initial_table_complete) {
            out.extend(self.set_synced());
        }
        // RFC 4724 4.1: selection is final once every peer is back and has sent End-of-RIB,
        // except peers that restarted too (they wait for ours) and peers without graceful
        // restart (they promise none).
        let waited_for = |p: &PeerView| match (p.up, p.gr_restarting) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(restarting)) => !restarting && !p.initial_table_complete,
        };
        if self.deferring() && !peers.iter().any(waited_for) {
            self.selection_final = true;
            out.push(ConvergenceAction::SelectionFinal);
        }
        out
    }

    /// The sync deadline passed.
    pub fn timer_expired(&mut self) -> Vec<ConvergenceAction> {
        if self.synced {
            return Vec::new();
        }
        self.set_synced()
    }

    fn set_synced(&mut self) -> Vec<ConvergenceAction> {
        self.synced = true;
        let mut out = vec![ConvergenceAction::Synced, ConvergenceAction::Timer(TimerOp::Stop)];
        // Everything came back (or the deadline passed): selection is final too.
        if self.deferring() {
            self.selection_final = true;
            out.push(ConvergenceAction::SelectionFinal);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConvergenceAction::*;

    fn peer(up: bool, gr_restarting: Option<bool>, complete: bool) -> PeerView {
        PeerView { up, gr_restarting, initial_table_complete: complete }
    }

    #[test]
    fn the_initial_table_counts_the_first_session_only() {
        let mut t = InitialTable::default();
        assert!(!t.complete(), "not up yet");
        t.established(&[Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
        t.end_of_rib(Family::IPV4_UNICAST);
        assert!(!t.complete());
        t.end_of_rib(Family::IPV6_UNICAST);
        assert!(t.complete());
        t.established(&[Family::IPV4_UNICAST]);
        assert!(t.complete(), "a second session does not reopen the first table");
    }

    #[test]
    fn synced_once_every_peer_delivered_its_table_and_not_before() {
        let mut c = Convergence::new(false, Duration::from_secs(120));
        assert_eq!(c.start(), vec![Timer(TimerOp::Start(Duration::from_secs(120)))]);
        assert!(c.evaluate(&[]).is_empty(), "no peers: only the deadline syncs");
        assert!(c.evaluate(&[peer(true, Some(false), true), peer(true, None, false)]).is_empty());
        assert_eq!(c.evaluate(&[peer(true, Some(false), true), peer(true, None, true)]), vec![Synced, Timer(TimerOp::Stop)]);
        assert!(c.synced());
        assert!(c.evaluate(&[peer(true, None, true)]).is_empty(), "synced once");
        assert!(c.timer_expired().is_empty());
    }

    #[test]
    fn the_deadline_syncs_without_every_table() {
        let mut c = Convergence::new(false, Duration::from_secs(8));
        assert!(c.evaluate(&[peer(false, None, false)]).is_empty());
        assert_eq!(c.timer_expired(), vec![Synced, Timer(TimerOp::Stop)]);
        assert!(c.synced());
    }

    #[test]
    fn after_our_restart_selection_waits_only_for_peers_that_promise_end_of_rib() {
        let mut c = Convergence::new(true, Duration::from_secs(120));
        assert!(c.deferring());
        // A peer without graceful restart and one that restarted too are not waited for; a
        // helper that has not finished its table is.
        let helper_busy = [peer(true, None, false), peer(true, Some(true), false), peer(true, Some(false), false)];
        assert!(c.evaluate(&helper_busy).is_empty());
        assert!(c.deferring());
        let helper_done = [peer(true, None, false), peer(true, Some(true), false), peer(true, Some(false), true)];
        assert_eq!(c.evaluate(&helper_done), vec![SelectionFinal]);
        assert!(!c.deferring());
        assert!(!c.synced(), "synced still needs every table");
    }

    #[test]
    fn after_our_restart_a_peer_that_is_not_back_holds_selection_until_the_deadline() {
        let mut c = Convergence::new(true, Duration::from_secs(120));
        assert!(c.evaluate(&[peer(false, None, false)]).is_empty());
        assert_eq!(c.timer_expired(), vec![Synced, Timer(TimerOp::Stop), SelectionFinal]);
        assert!(!c.deferring());
    }

    #[test]
    fn without_a_restart_nothing_is_deferred() {
        let mut c = Convergence::new(false, Duration::from_secs(120));
        assert!(!c.deferring());
        assert!(c.evaluate(&[peer(false, None, false)]).is_empty());
    }
}
