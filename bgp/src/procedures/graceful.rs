//! Graceful restart in the receiving speaker's role (RFC 4724 4.2), for one peer: which of its
//! paths are kept as stale while it restarts, and when they go.
//!
//! A session's paths are named by the id the driver gave the session. When a peer that
//! negotiated graceful restart goes down without a NOTIFICATION (or with one under the N bit,
//! RFC 8538), its session's paths are retained under that id and the next session gets a new
//! one; they are flushed when the restart time passes without the peer coming back, when the
//! peer has sent End-of-RIB for every family, or [`STALE_PATH_TIME`] after it came back.

use std::time::Duration;

use super::TimerOp;
use crate::fsm::DownReason;
use crate::rib::PeerId;
use crate::wire::Family;

/// How long a re-established peer's stale routes may wait for its End-of-RIB (FRR's
/// `stalepath-time` default): the restart time no longer applies once the peer is back.
pub const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// What the current (or last) session negotiated about graceful restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrState {
    /// The peer's restart time: how long its routes may stay stale.
    pub restart_time: Duration,
    /// The peer's N bit (RFC 8538): a NOTIFICATION does not end the helper role either.
    pub notification: bool,
    /// The peer set the Restart State bit: it restarted too and defers its own table until it
    /// has ours, so waiting for its End-of-RIB would deadlock (RFC 4724 4.1).
    pub restarting: bool,
}

/// What the driver does for the helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrAction {
    /// Keep this session's paths in the RIB as stale (they stay usable, nobody re-learns
    /// them); the next session needs a new id.
    Retain(PeerId),
    /// Withdraw every path of this id.
    Flush(PeerId),
    /// The stale-routes timer.
    Timer(TimerOp),
}

#[derive(Clone, Debug, Default)]
struct Stale {
    /// The id the paths were learned under.
    retired: PeerId,
    /// Families whose End-of-RIB has not come since the peer came back.
    awaiting: Vec<Family>,
}

#[derive(Clone, Debug, Default)]
pub struct GracefulHelper {
    negotiated: Option<GrState>,
    stale: Option<Stale>,
}

impl GracefulHelper {
    /// What the current (or last) session negotiated; `None` without graceful restart.
    pub fn negotiated(&self) -> Option<GrState> {
        self.negotiated
    }

    /// The id whose paths are stale, while there is one.
    pub fn stale(&self) -> Option<PeerId> {
        self.stale.as_ref().map(|s| s.retired)
    }

    /// A session came up. Stale paths of the last one now wait for End-of-RIB (fresh routes
    /// replace them one by one), no longer for the restart time.
    pub fn established(&mut self, negotiated: Option<GrState>) -> Vec<GrAction> {
        self.negotiated = negotiated;
        match self.stale {
            Some(_) => vec![GrAction::Timer(TimerOp::Start(STALE_PATH_TIME))],
            None => Vec::new(),
        }
    }

    /// The session `session` went down; `families` are those it carried.
    pub fn down(&mut self, session: PeerId, families: Vec<Family>, reason: &DownReason) -> Vec<GrAction> {
        let mut out = Vec::new();
        // Paths still stale from an earlier restart do not survive a second one.
        if let Some(previous) = self.stale.take() {
            out.push(GrAction::Flush(previous.retired));
        }
        match self.negotiated.filter(|gr| reason.allows_graceful_restart(gr.notification)) {
            Some(gr) => {
                out.push(GrAction::Retain(session));
                out.push(GrAction::Timer(TimerOp::Start(gr.restart_time)));
                self.stale = Some(Stale { retired: session, awaiting: families });
            }
            None => {
                out.push(GrAction::Flush(session));
                out.push(GrAction::Timer(TimerOp::Stop));
            }
        }
        out
    }

    /// End-of-RIB for `family` from the current session: once every family's has come, what
    /// did not come back is flushed.
    pub fn end_of_rib(&mut self, family: Family) -> Vec<GrAction> {
        let Some(stale) = self.stale.as_mut() else { return Vec::new() };
        stale.awaiting.retain(|f| *f != family);
        if stale.awaiting.is_empty() {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// The stale-routes timer fired.
    pub fn timer_expired(&mut self) -> Vec<GrAction> {
        match self.stale.take() {
            Some(stale) => vec![GrAction::Flush(stale.retired)],
            None => Vec::new(),
        }
    }

    /// Stale paths go at once: the peer is removed, or its forwarding is known to be broken.
    pub fn flush(&mut self) -> Vec<GrAction> {
        match self.stale.take() {
            Some(stale) => vec![GrAction::Flush(stale.retired), GrAction::Timer(TimerOp::Stop)],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::DownReason;

    const V4: Family = Family::IPV4_UNICAST;
    const V6: Family = Family::IPV6_UNICAST;

    fn gr(secs: u64, notification: bool) -> Option<GrState> {
        Some(GrState { restart_time: Duration::from_secs(secs), notification, restarting: false })
    }

    #[test]
    fn a_peer_without_graceful_restart_loses_its_routes_at_once() {
        let mut h = GracefulHelper::default();
        assert!(h.established(None).is_empty());
        let out = h.down(1, vec![V4], &DownReason::ConnectionClosed);
        assert_eq!(out, vec![GrAction::Flush(1), GrAction::Timer(TimerOp::Stop)]);
        assert_eq!(h.stale(), None);
    }

    #[test]
    fn a_closed_connection_keeps_the_routes_for_the_restart_time() {
        let mut h = GracefulHelper::default();
        h.established(gr(120, false));
        let out = h.down(1, vec![V4], &DownReason::ConnectionClosed);
        assert_eq!(out, vec![GrAction::Retain(1), GrAction::Timer(TimerOp::Start(Duration::from_secs(120)))]);
        assert_eq!(h.stale(), Some(1));
        assert_eq!(h.timer_expired(), vec![GrAction::Flush(1)]);
        assert_eq!(h.stale(), None);
        assert!(h.timer_expired().is_empty(), "a second expiry has nothing left to flush");
    }

    #[test]
    fn a_notification_ends_the_helper_role_unless_the_n_bit_was_negotiated() {
        let cease = DownReason::NotificationReceived(crate::wire::ErrorCode::AdministrativeReset.notification(bytes::Bytes::new()));
        let mut without = GracefulHelper::default();
        without.established(gr(120, false));
        assert!(without.down(1, vec![V4], &cease).contains(&GrAction::Flush(1)));

        let hard = DownReason::NotificationReceived(crate::wire::ErrorCode::HardReset.notification(bytes::Bytes::new()));
        let mut with_n = GracefulHelper::default();
        with_n.established(gr(120, true));
        assert!(with_n.down(1, vec![V4], &cease).contains(&GrAction::Retain(1)), "RFC 8538: a Cease keeps the routes");
        let mut with_n = GracefulHelper::default();
        with_n.established(gr(120, true));
        assert!(with_n.down(1, vec![V4], &hard).contains(&GrAction::Flush(1)), "RFC 8538: a Hard Reset does not");
    }

    #[test]
    fn coming_back_swaps_the_restart_time_for_the_stale_path_time_and_end_of_rib_flushes() {
        let mut h = GracefulHelper::default();
        h.established(gr(120, false));
        h.down(1, vec![V4, V6], &DownReason::HoldTimerExpired);
        assert_eq!(h.established(gr(120, false)), vec![GrAction::Timer(TimerOp::Start(STALE_PATH_TIME))]);
        assert!(h.end_of_rib(V4).is_empty(), "IPv6 has not ended yet");
        assert_eq!(h.stale(), Some(1));
        assert_eq!(h.end_of_rib(V6), vec![GrAction::Flush(1), GrAction::Timer(TimerOp::Stop)]);
        assert_eq!(h.stale(), None);
        assert!(h.end_of_rib(V6).is_empty());
    }

    #[test]
    fn a_second_restart_before_the_first_finished_drops_the_older_stale_paths() {
        let mut h = GracefulHelper::default();
        h.established(gr(120, false));
        h.down(1, vec![V4], &DownReason::ConnectionClosed);
        h.established(gr(120, false));
        let out = h.down(2, vec![V4], &DownReason::ConnectionClosed);
        assert_eq!(out[..2], [GrAction::Flush(1), GrAction::Retain(2)]);
        assert_eq!(h.stale(), Some(2));
    }

    #[test]
    fn flushing_on_demand_stops_the_timer() {
        let mut h = GracefulHelper::default();
        h.established(gr(120, false));
        h.down(7, vec![V4], &DownReason::ConnectionClosed);
        assert_eq!(h.flush(), vec![GrAction::Flush(7), GrAction::Timer(TimerOp::Stop)]);
        assert!(h.flush().is_empty());
    }
}
