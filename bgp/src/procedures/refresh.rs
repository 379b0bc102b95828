//! Route refresh (RFC 2918) and enhanced route refresh (RFC 7313), for one peer.
//!
//! Answering: a request is answered with the whole table of the family, between BoRR and EoRR
//! when both sides negotiated enhanced route refresh. Receiving: between the peer's BoRR and
//! EoRR its prefixes of that family that it does not send again are stale, and EoRR withdraws
//! them.

use ipnetwork::IpNetwork;

use crate::rib::PrefixSet;
use crate::wire::{Family, RefreshSubtype};

/// One step of the answer to a route refresh request, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A ROUTE-REFRESH message with this subtype (BoRR or EoRR) for the requested family.
    Marker(RefreshSubtype),
    /// Our table for the peer, all of it again (its Adj-RIB-Out reset first).
    Table,
}

/// The answer to a request: the table, framed by BoRR/EoRR under enhanced route refresh.
pub fn answer(enhanced: bool) -> Vec<Reply> {
    if enhanced {
        vec![Reply::Marker(RefreshSubtype::Begin), Reply::Table, Reply::Marker(RefreshSubtype::End)]
    } else {
        vec![Reply::Table]
    }
}

#[derive(Debug, Default)]
pub struct InboundRefresh {
    /// Between BoRR and EoRR: the family and its prefixes not re-announced yet.
    refreshing: Option<(Family, PrefixSet)>,
    cycles: u64,
}

impl InboundRefresh {
    /// A new session: a cycle the old one left open is over.
    pub fn reset(&mut self) {
        self.refreshing = None;
    }

    /// BoRR: `current` are the peer's prefixes of `family` in the RIB now.
    pub fn begin(&mut self, family: Family, current: impl IntoIterator<Item = IpNetwork>) {
        let mut pending = PrefixSet::default();
        pending.extend(current);
        self.refreshing = Some((family, pending));
    }

    /// The peer announced or withdrew these prefixes: they are no longer stale.
    pub fn seen(&mut self, prefixes: impl IntoIterator<Item = IpNetwork>) {
        if let Some((_, pending)) = self.refreshing.as_mut() {
            for prefix in prefixes {
                pending.remove(&prefix);
            }
        }
    }

    /// EoRR: the prefixes the peer did not send again, to withdraw. `None` when no cycle of
    /// this family was open (an EoRR without BoRR is ignored, RFC 7313 4).
    pub fn end(&mut self, family: Family) -> Option<PrefixSet> {
        let (_, pending) = self.refreshing.take_if(|(f, _)| *f == family)?;
        self.cycles += 1;
        Some(pending)
    }

    /// Completed BoRR..EoRR cycles.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn an_enhanced_answer_frames_the_table() {
        assert_eq!(answer(false), vec![Reply::Table]);
        assert_eq!(answer(true), vec![Reply::Marker(RefreshSubtype::Begin), Reply::Table, Reply::Marker(RefreshSubtype::End)]);
    }

    #[test]
    fn what_the_peer_did_not_resend_by_eorr_is_withdrawn() {
        let mut r = InboundRefresh::default();
        r.begin(Family::IPV4_UNICAST, [net("198.18.1.0/24"), net("198.18.2.0/24"), net("198.18.3.0/24")]);
        r.seen([net("198.18.1.0/24"), net("198.18.3.0/24")]);
        let stale = r.end(Family::IPV4_UNICAST).expect("a cycle was open");
        assert_eq!(stale.iter().collect::<Vec<_>>(), vec![net("198.18.2.0/24")]);
        assert_eq!(r.cycles(), 1);
    }

    #[test]
    fn an_eorr_without_its_borr_is_ignored() {
        let mut r = InboundRefresh::default();
        assert!(r.end(Family::IPV4_UNICAST).is_none());
        r.begin(Family::IPV6_UNICAST, [net("2001:db8::/64")]);
        assert!(r.end(Family::IPV4_UNICAST).is_none(), "another family's EoRR");
        assert_eq!(r.cycles(), 0);
        r.reset();
        assert!(r.end(Family::IPV6_UNICAST).is_none(), "the session that opened the cycle is gone");
    }
}
