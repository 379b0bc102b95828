//! Route policy for each session, computed from the datastore's view (sans-IO): the BGPFilter
//! rules the BGPPeer names, then Gingham's defaults, which make a node safe to plug into a
//! fabric.
//!
//! | session with          | export (after filters)                     | import (after filters)        |
//! |-----------------------|--------------------------------------------|-------------------------------|
//! | another node (mesh, reflector, peerSelector) | our routes and the cluster's; never an external peer's | everything |
//! | an external router    | our routes only (affine blocks, borrowed /32s): no transit | everything outside the IP pools |
//!
//! Calico differs: its BIRD imports everything from every peer ("we have to trust the ToR/RR")
//! and exports every route inside the pools, including other nodes' blocks learned over the
//! mesh; it never re-exports non-pool routes either.

use std::sync::Arc;

use gingham_api::resources::{BGPFilterRule, BGPFilterSpec, FilterAction, FilterSource, MatchOperator};
use gingham_bgp::rib::policy::{Policy, PolicyAction, PolicyRule, PrefixMatch, SourceMatch};
use gingham_bgp::wire::Family;
use ipnetwork::IpNetwork;

fn rule(r: &BGPFilterRule, family: Family) -> PolicyRule {
    let (prefixes, negate) = match r.condition() {
        None => (Vec::new(), false),
        Some(c) => {
            let exact = matches!(c.operator, MatchOperator::Equal | MatchOperator::NotEqual);
            let m = if exact {
                PrefixMatch { prefix: c.cidr, ge: None, le: None }
            } else {
                PrefixMatch { prefix: c.cidr, ge: Some(c.min), le: Some(c.max) }
            };
            (vec![m], matches!(c.operator, MatchOperator::NotEqual | MatchOperator::NotIn))
        }
    };
    PolicyRule {
        family: Some(family),
        prefixes,
        negate_prefixes: negate,
        source: r.source.map(|FilterSource::RemotePeers| SourceMatch::Peers),
        action: match r.action {
            FilterAction::Accept => PolicyAction::Accept,
            FilterAction::Reject => PolicyAction::Reject,
        },
        ..Default::default()
    }
}

fn filter_rules(filters: &[&BGPFilterSpec], export: bool) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for f in filters {
        let (v4, v6) = if export { (&f.export_v4, &f.export_v6) } else { (&f.import_v4, &f.import_v6) };
        out.extend(v4.iter().map(|r| rule(r, Family::IPV4_UNICAST)));
        out.extend(v6.iter().map(|r| rule(r, Family::IPV6_UNICAST)));
    }
    out
}

/// What we send a peer: the filters' verdict first, then our own routes always, the cluster's
/// only to another node, and an external router's never.
pub fn export(filters: &[&BGPFilterSpec], to_external: bool) -> Arc<Policy> {
    let mut rules = filter_rules(filters, true);
    rules.push(PolicyRule { source: Some(SourceMatch::Local), action: PolicyAction::Accept, ..Default::default() });
    if !to_external {
        rules.push(PolicyRule { source: Some(SourceMatch::Internal), action: PolicyAction::Accept, ..Default::default() });
    }
    Arc::new(Policy { rules, default: PolicyAction::Reject })
}

/// What we take from a peer: the filters' verdict first; from an external router nothing
/// inside an IP pool, so no router can capture pod addresses.
pub fn import(filters: &[&BGPFilterSpec], from_external: bool, pools: &[IpNetwork]) -> Option<Arc<Policy>> {
    let mut rules = filter_rules(filters, false);
    if from_external && !pools.is_empty() {
        let prefixes = pools.iter().map(|p| PrefixMatch { prefix: *p, ge: Some(p.prefix()), le: None }).collect();
        rules.push(PolicyRule { prefixes, action: PolicyAction::Reject, ..Default::default() });
    }
    (!rules.is_empty()).then(|| Arc::new(Policy { rules, default: PolicyAction::Accept }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_bgp::rib::policy::{RouteSource, Verdict};
    use gingham_bgp::wire::PathAttributes;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn verdict(p: &Policy, prefix: &str, source: RouteSource) -> bool {
        p.evaluate(&net(prefix), &PathAttributes::default(), source) != Verdict::Reject
    }

    fn filter(yaml: &str) -> BGPFilterSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn no_transit_by_default() {
        let to_router = export(&[], true);
        assert!(verdict(&to_router, "198.19.0.0/26", RouteSource::Local));
        assert!(!verdict(&to_router, "198.19.0.64/26", RouteSource::Internal), "another node's block stays in the cluster");
        assert!(!verdict(&to_router, "0.0.0.0/0", RouteSource::External), "a router's routes never reach another router");
        let to_node = export(&[], false);
        assert!(verdict(&to_node, "198.19.0.64/26", RouteSource::Internal), "reflection inside the cluster");
        assert!(!verdict(&to_node, "0.0.0.0/0", RouteSource::External), "nor another node");
    }

    #[test]
    fn a_filter_can_let_one_prefix_through() {
        let f = filter("exportV4:\n- {action: Accept, matchOperator: Equal, cidr: 203.0.113.0/24, source: RemotePeers}\n");
        let p = export(&[&f], true);
        assert!(verdict(&p, "203.0.113.0/24", RouteSource::External));
        assert!(!verdict(&p, "203.0.113.0/25", RouteSource::External), "Equal is exact");
        assert!(!verdict(&p, "0.0.0.0/0", RouteSource::External));
    }

    #[test]
    fn filter_rules_apply_to_their_family_only() {
        let f = filter("exportV4:\n- {action: Reject}\nimportV6:\n- {action: Reject, matchOperator: NotIn, cidr: '2001:db8::/32'}\n");
        let out = export(&[&f], true);
        assert!(!verdict(&out, "198.19.0.0/26", RouteSource::Local), "exportV4 Reject stops our IPv4 routes");
        assert!(verdict(&out, "2001:db8:19::/122", RouteSource::Local), "but not IPv6 ones");
        let inp = import(&[&f], true, &[]).unwrap();
        assert!(!verdict(&inp, "2001:db9::/32", RouteSource::External));
        assert!(verdict(&inp, "2001:db8:1::/48", RouteSource::External));
        assert!(verdict(&inp, "203.0.113.0/24", RouteSource::External), "importV6 rules leave IPv4 alone");
    }

    #[test]
    fn routers_cannot_announce_pod_addresses_unless_a_filter_says_so() {
        let pools = [net("198.19.0.0/16")];
        let p = import(&[], true, &pools).unwrap();
        for hijack in ["198.19.0.0/16", "198.19.4.0/24", "198.19.4.7/32"] {
            assert!(!verdict(&p, hijack, RouteSource::External), "{hijack}");
        }
        assert!(verdict(&p, "198.18.5.0/24", RouteSource::External));
        assert!(verdict(&p, "198.0.0.0/8", RouteSource::External), "a covering aggregate is no hijack: pod routes are more specific");
        assert!(import(&[], false, &pools).is_none(), "other nodes announce pool blocks by design");
        let rack = filter("importV4:\n- {action: Accept, matchOperator: In, cidr: 198.19.0.0/16, prefixLength: {min: 26, max: 26}}\n");
        let p = import(&[&rack], true, &pools).unwrap();
        assert!(verdict(&p, "198.19.4.0/26", RouteSource::External), "an AS-per-rack fabric hands the blocks on, if the operator says so");
        assert!(!verdict(&p, "198.19.4.7/32", RouteSource::External));
    }
}
