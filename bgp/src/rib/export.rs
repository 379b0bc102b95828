//! What a route looks like when it leaves for a given peer, or why it does not leave:
//! iBGP/eBGP rules (RFC 4271 5.1, 9.1.3) and route reflection (RFC 4456 6 and 8).
//!
//! | from \ to      | eBGP peer        | iBGP non-client         | iBGP client            |
//! |----------------|------------------|-------------------------|------------------------|
//! | local          | prepend, NH self | LP, NH self             | LP, NH self            |
//! | eBGP peer      | prepend, NH self | LP, NH kept             | LP, NH kept            |
//! | iBGP non-client| prepend, NH self | no (iBGP split horizon) | reflect (RR only)      |
//! | iBGP client    | prepend, NH self | reflect (RR only)       | reflect (RR only)      |
//!
//! `next_hop_self` on the target makes every NH "self" (Calico's `nextHopMode: Self`).
//! Over an IPv6 session that negotiated RFC 8950, "self" for an IPv4 route is our IPv6
//! address; an IPv4 route with an IPv6 next hop never goes to a peer that did not agree to it.
//! Reflecting sets ORIGINATOR_ID (when absent) and prepends our cluster id to CLUSTER_LIST.
//! Towards eBGP, LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are stripped, and a MED learned
//! from another AS is not passed on.

use std::net::IpAddr;

use super::{PeerId, RibConfig, RibPeer, LOCAL};
use crate::wire::{AsPath, Family, MpReach, NextHop, PathAttributes, Segment, SegmentType};

// Returned by value once per prefix and peer and consumed at once; boxing would add an
// allocation to the common case.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportDecision {
    Send(PathAttributes),
    /// Why not, for debugging and tests.
    Suppress(&'static str),
}

impl ExportDecision {
    pub fn into_attrs(self) -> Option<PathAttributes> {
        match self {
            ExportDecision::Send(a) => Some(a),
            ExportDecision::Suppress(_) => None,
        }
    }
}

fn set_next_hop_self(attrs: &mut PathAttributes, family: Family, local: IpAddr, extended_next_hop: bool) -> bool {
    let global = match (family, local) {
        (Family::IPV4_UNICAST, IpAddr::V4(a)) => {
            attrs.next_hop = Some(a);
            attrs.mp_reach = None;
            return true;
        }
        (Family::IPV6_UNICAST, IpAddr::V6(a)) => a,
        // RFC 8950: IPv4 in MP_REACH_NLRI with our IPv6 address, where the peer agreed to it.
        (Family::IPV4_UNICAST, IpAddr::V6(a)) if extended_next_hop => a,
        // No address of that family on this session to offer as next hop.
        _ => return false,
    };
    attrs.next_hop = None;
    attrs.mp_reach = Some(MpReach { family, next_hop: NextHop::V6 { global, link_local: None }, nlri: Vec::new() });
    true
}

/// Decides whether and how the best path (from `source_id`) goes to `target`.
pub fn transform(
    config: &RibConfig,
    family: Family,
    attrs: &PathAttributes,
    source_id: PeerId,
    source: Option<&RibPeer>,
    target_id: PeerId,
    target: &RibPeer,
) -> ExportDecision {
    if !target.families.contains(&family) {
        return ExportDecision::Suppress("family not negotiated");
    }
    if source_id == target_id {
        return ExportDecision::Suppress("learned from this peer");
    }
    let link_local_only = matches!(super::next_hop(attrs), Some(IpAddr::V6(a)) if a.is_unicast_link_local());
    let from_ibgp = source.is_some_and(|s| !s.ebgp());
    let from_ebgp = source.is_some_and(RibPeer::ebgp);
    let reflecting = from_ibgp && !target.ebgp();
    if reflecting {
        if config.cluster_id.is_none() {
            return ExportDecision::Suppress("iBGP split horizon");
        }
        let from_client = source.is_some_and(|s| s.rr_client);
        if !from_client && !target.rr_client {
            return ExportDecision::Suppress("non-client route to non-client");
        }
    }
    let mut out = attrs.clone();
    if target.ebgp() {
        let mut path = out.as_path.take().unwrap_or_default();
        // Confederation segments never leave the confederation.
        path.segments.retain(|s| !s.kind.is_confed());
        match path.segments.first_mut() {
            Some(Segment { kind: SegmentType::Sequence, asns }) if asns.len() < 255 => asns.insert(0, target.local_as),
            _ => path.segments.insert(0, Segment { kind: SegmentType::Sequence, asns: vec![target.local_as] }),
        }
        out.as_path = Some(path);
        out.local_pref = None;
        out.originator_id = None;
        out.cluster_list.clear();
        if from_ebgp {
            out.med = None;
        }
        let keep = target.keep_original_next_hop && super::next_hop(attrs).is_some() && !link_local_only;
        if !keep && !set_next_hop_self(&mut out, family, target.local_address, target.extended_next_hop) {
            return ExportDecision::Suppress("no local address of the route's family for next-hop-self");
        }
    } else {
        out.as_path.get_or_insert_with(AsPath::default);
        out.local_pref = Some(attrs.local_pref.unwrap_or(100));
        if (source_id == LOCAL || target.next_hop_self || link_local_only)
            && !set_next_hop_self(&mut out, family, target.local_address, target.extended_next_hop)
        {
            return ExportDecision::Suppress("no local address of the route's family for next-hop-self");
        }
        if reflecting {
            if let Some(s) = source {
                out.originator_id.get_or_insert(s.router_id);
            }
            let cluster = config.cluster_id.unwrap_or(config.router_id);
            out.cluster_list.insert(0, cluster);
        }
    }
    // A link-local next hop means nothing off its link (RFC 2545 3): one that is only
    // link-local was replaced by ours above, and the link-local half of a pair is dropped.
    if let Some(MpReach { next_hop: NextHop::V6 { link_local, .. }, .. }) = out.mp_reach.as_mut() {
        *link_local = None;
    }
    // An IPv4 route whose next hop is IPv6 only goes where RFC 8950 was agreed.
    let v6_next_hop = family == Family::IPV4_UNICAST && matches!(&out.mp_reach, Some(MpReach { next_hop: NextHop::V6 { .. }, .. }));
    if v6_next_hop && !target.extended_next_hop {
        return ExportDecision::Suppress("IPv6 next hop for IPv4 without the extended next hop capability");
    }
    ExportDecision::Send(out)
}
