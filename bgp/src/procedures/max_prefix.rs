//! The prefix limit on one peer (RFC 4486 and common router practice): warn once per crossing,
//! or close the session with Cease / Maximum Number of Prefixes Reached and maybe start it
//! again after a while.

use std::time::Duration;

use super::TimerOp;
use crate::wire::{ErrorCode, Family, Notification};

/// A limit on the prefixes a peer may send in each address family (counted after the import
/// checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPrefixes {
    pub limit: usize,
    pub action: MaxPrefixAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxPrefixAction {
    /// Log once per crossing and keep the session.
    WarnOnly,
    /// Close with Cease / Maximum Number of Prefixes Reached (RFC 4486); with a restart
    /// interval, start again after it, otherwise stay down until reconfigured.
    TearDown { restart: Option<Duration> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitAction {
    /// Log: the peer is over its limit.
    Warn { count: usize, limit: usize },
    /// Send this NOTIFICATION and close the session.
    TearDown(Notification),
    /// The restart timer.
    Timer(TimerOp),
}

#[derive(Clone, Debug, Default)]
pub struct PrefixLimit {
    config: Option<MaxPrefixes>,
    /// The warning was given for the current crossing.
    warned: bool,
}

impl PrefixLimit {
    pub fn new(config: Option<MaxPrefixes>) -> PrefixLimit {
        PrefixLimit { config, warned: false }
    }

    /// The peer now has `count` accepted prefixes of `family`.
    pub fn check(&mut self, family: Family, count: usize) -> Vec<LimitAction> {
        let Some(max) = self.config else { return Vec::new() };
        if count <= max.limit {
            self.warned = false;
            return Vec::new();
        }
        match max.action {
            MaxPrefixAction::WarnOnly if self.warned => Vec::new(),
            MaxPrefixAction::WarnOnly => {
                self.warned = true;
                vec![LimitAction::Warn { count, limit: max.limit }]
            }
            MaxPrefixAction::TearDown { restart } => {
                // RFC 4486 section 4: AFI, SAFI and the configured upper bound.
                let mut data = Vec::with_capacity(7);
                data.extend_from_slice(&family.afi.to_be_bytes());
                data.push(family.safi);
                data.extend_from_slice(&u32::try_from(max.limit).unwrap_or(u32::MAX).to_be_bytes());
                let mut out = vec![LimitAction::TearDown(ErrorCode::MaximumPrefixesReached.notification(data))];
                out.extend(restart.map(|after| LimitAction::Timer(TimerOp::Start(after))));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_never_acts() {
        let mut l = PrefixLimit::new(None);
        assert!(l.check(Family::IPV4_UNICAST, usize::MAX).is_empty());
    }

    #[test]
    fn a_warning_is_given_once_per_crossing() {
        let mut l = PrefixLimit::new(Some(MaxPrefixes { limit: 3, action: MaxPrefixAction::WarnOnly }));
        assert!(l.check(Family::IPV4_UNICAST, 3).is_empty(), "at the limit is allowed");
        assert_eq!(l.check(Family::IPV4_UNICAST, 4), vec![LimitAction::Warn { count: 4, limit: 3 }]);
        assert!(l.check(Family::IPV4_UNICAST, 5).is_empty());
        assert!(l.check(Family::IPV4_UNICAST, 2).is_empty());
        assert_eq!(l.check(Family::IPV4_UNICAST, 4).len(), 1, "a new crossing warns again");
    }

    #[test]
    fn tearing_down_sends_rfc_4486_data_and_asks_for_the_restart_timer() {
        let restart = Duration::from_secs(30);
        let mut l = PrefixLimit::new(Some(MaxPrefixes { limit: 258, action: MaxPrefixAction::TearDown { restart: Some(restart) } }));
        let out = l.check(Family::IPV6_UNICAST, 259);
        let LimitAction::TearDown(n) = &out[0] else { panic!("{out:?}") };
        assert_eq!((n.code, n.subcode), (6, 1));
        assert_eq!(&n.data[..], &[0, 2, 1, 0, 0, 1, 2], "AFI 2, SAFI 1, limit 258");
        assert_eq!(out[1], LimitAction::Timer(TimerOp::Start(restart)));

        let mut forever = PrefixLimit::new(Some(MaxPrefixes { limit: 1, action: MaxPrefixAction::TearDown { restart: None } }));
        assert_eq!(forever.check(Family::IPV4_UNICAST, 2).len(), 1, "no restart timer");
    }
}
