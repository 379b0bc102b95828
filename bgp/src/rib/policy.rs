//! Route policy, for import and export alike: an ordered list of rules, first match wins,
//! matching on prefix lists (with ge/le, as routers write them, or their complement),
//! communities and where the route came from, and able to set communities and LOCAL_PREF.

use ipnetwork::IpNetwork;

use crate::wire::{Family, PathAttributes};

/// `prefix` with optional `ge`/`le` bounds. Without bounds only the exact prefix matches;
/// with them, any prefix inside `prefix` whose length lies in the bounds (a missing `le` is
/// the address size, a missing `ge` is `prefix`'s own length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: IpNetwork,
    pub ge: Option<u8>,
    pub le: Option<u8>,
}

impl PrefixMatch {
    pub fn matches(&self, p: &IpNetwork) -> bool {
        if p.is_ipv4() != self.prefix.is_ipv4() || !self.prefix.contains(p.network()) || p.prefix() < self.prefix.prefix() {
            return false;
        }
        let max = if p.is_ipv4() { 32 } else { 128 };
        match (self.ge, self.le) {
            (None, None) => p.prefix() == self.prefix.prefix(),
            (ge, le) => {
                let lo = ge.unwrap_or(self.prefix.prefix());
                let hi = le.unwrap_or(max);
                (lo..=hi).contains(&p.prefix())
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyAction {
    #[default]
    Accept,
    Reject,
}

/// Where a route came from, as a policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource {
    /// Originated by this speaker.
    Local,
    /// Learned from a peer not marked external.
    Internal,
    /// Learned from a peer marked external (`NeighborConfig::external`).
    External,
}

/// A rule's condition on [`RouteSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceMatch {
    Local,
    /// Learned from any peer.
    Peers,
    Internal,
    External,
}

impl SourceMatch {
    pub fn matches(self, source: RouteSource) -> bool {
        matches!(
            (self, source),
            (SourceMatch::Local, RouteSource::Local)
                | (SourceMatch::Peers, RouteSource::Internal | RouteSource::External)
                | (SourceMatch::Internal, RouteSource::Internal)
                | (SourceMatch::External, RouteSource::External)
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// `None`: routes of either family.
    pub family: Option<Family>,
    /// Empty: any prefix.
    pub prefixes: Vec<PrefixMatch>,
    /// The rule matches prefixes that match none of `prefixes` instead.
    pub negate_prefixes: bool,
    /// Empty: any route; otherwise the route must carry one of these communities.
    pub communities: Vec<u32>,
    /// `None`: any source.
    pub source: Option<SourceMatch>,
    pub action: PolicyAction,
    /// Added to the route's communities when accepted by this rule.
    pub add_communities: Vec<u32>,
    pub set_local_pref: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<PolicyRule>,
    /// What happens to a route no rule matched.
    pub default: PolicyAction,
}

/// The outcome for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reject,
    /// Accepted as received.
    Accept,
    /// Accepted with these attributes.
    Modified(Box<PathAttributes>),
}

impl PolicyRule {
    fn matches(&self, prefix: &IpNetwork, attrs: &PathAttributes, source: RouteSource) -> bool {
        self.family.is_none_or(|f| (f == Family::IPV4_UNICAST) == prefix.is_ipv4())
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|m| m.matches(prefix)) != self.negate_prefixes)
            && (self.communities.is_empty() || self.communities.iter().any(|c| attrs.communities.contains(c)))
            && self.source.is_none_or(|s| s.matches(source))
    }
}

impl Policy {
    /// Accepts everything.
    pub fn accept_all() -> Policy {
        Policy { rules: Vec::new(), default: PolicyAction::Accept }
    }

    pub fn evaluate(&self, prefix: &IpNetwork, attrs: &PathAttributes, source: RouteSource) -> Verdict {
        let rule = self.rules.iter().find(|r| r.matches(prefix, attrs, source));
        let Some(rule) = rule else {
            return match self.default {
                PolicyAction::Accept => Verdict::Accept,
                PolicyAction::Reject => Verdict::Reject,
            };
        };
        if rule.action == PolicyAction::Reject {
            return Verdict::Reject;
        }
        if rule.add_communities.is_empty() && rule.set_local_pref.is_none() {
            return Verdict::Accept;
        }
        let mut a = attrs.clone();
        for c in &rule.add_communities {
            if !a.communities.contains(c) {
                a.communities.push(*c);
            }
        }
        if let Some(lp) = rule.set_local_pref {
            a.local_pref = Some(lp);
        }
        Verdict::Modified(Box::new(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, ge: Option<u8>, le: Option<u8>) -> PrefixMatch {
        PrefixMatch { prefix: p.parse().unwrap(), ge, le }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_lists_with_ge_and_le() {
        assert!(m("198.19.0.0/16", None, None).matches(&net("198.19.0.0/16")));
        assert!(!m("198.19.0.0/16", None, None).matches(&net("198.19.1.0/24")));
        assert!(m("198.19.0.0/16", Some(24), Some(26)).matches(&net("198.19.1.0/24")));
        assert!(m("198.19.0.0/16", Some(24), Some(26)).matches(&net("198.19.1.64/26")));
        assert!(!m("198.19.0.0/16", Some(24), Some(26)).matches(&net("198.19.1.0/27")));
        assert!(!m("198.19.0.0/16", Some(24), None).matches(&net("198.18.1.0/24")), "outside");
        assert!(m("198.19.0.0/16", None, Some(20)).matches(&net("198.19.16.0/20")));
        assert!(!m("198.19.0.0/16", None, Some(20)).matches(&net("198.19.16.0/24")));
        assert!(!m("198.19.0.0/16", None, Some(20)).matches(&net("2001:db8::/32")));
    }

    #[test]
    fn first_matching_rule_wins_and_can_tag() {
        let tag = (65000 << 16) | 1;
        let policy = Policy {
            rules: vec![
                PolicyRule {
                    prefixes: vec![m("198.19.0.0/16", Some(24), Some(32))],
                    add_communities: vec![tag],
                    set_local_pref: Some(200),
                    ..Default::default()
                },
                PolicyRule { communities: vec![(65000 << 16) | 666], action: PolicyAction::Reject, ..Default::default() },
            ],
            default: PolicyAction::Accept,
        };
        let plain = PathAttributes::default();
        let ext = RouteSource::External;
        match policy.evaluate(&net("198.19.1.0/24"), &plain, ext) {
            Verdict::Modified(a) => assert_eq!((a.communities.clone(), a.local_pref), (vec![tag], Some(200))),
            other => panic!("{other:?}"),
        }
        let blackholed = PathAttributes { communities: vec![(65000 << 16) | 666], ..Default::default() };
        assert_eq!(policy.evaluate(&net("10.0.0.0/8"), &blackholed, ext), Verdict::Reject);
        assert_eq!(policy.evaluate(&net("10.0.0.0/8"), &plain, ext), Verdict::Accept);
        let strict = Policy { rules: vec![], default: PolicyAction::Reject };
        assert_eq!(strict.evaluate(&net("10.0.0.0/8"), &plain, ext), Verdict::Reject);
    }

    #[test]
    fn negated_prefixes_and_sources() {
        // No transit: our own routes go, external ones only inside 203.0.113.0/24.
        let policy = Policy {
            rules: vec![
                PolicyRule {
                    prefixes: vec![m("203.0.113.0/24", Some(24), None)],
                    negate_prefixes: true,
                    source: Some(SourceMatch::External),
                    action: PolicyAction::Reject,
                    ..Default::default()
                },
                PolicyRule { source: Some(SourceMatch::Peers), action: PolicyAction::Accept, ..Default::default() },
                PolicyRule { source: Some(SourceMatch::Local), action: PolicyAction::Accept, ..Default::default() },
            ],
            default: PolicyAction::Reject,
        };
        let a = PathAttributes::default();
        assert_eq!(policy.evaluate(&net("0.0.0.0/0"), &a, RouteSource::External), Verdict::Reject);
        assert_eq!(policy.evaluate(&net("203.0.113.128/25"), &a, RouteSource::External), Verdict::Accept);
        assert_eq!(policy.evaluate(&net("0.0.0.0/0"), &a, RouteSource::Internal), Verdict::Accept);
        assert_eq!(policy.evaluate(&net("198.19.0.0/26"), &a, RouteSource::Local), Verdict::Accept);
        assert!(SourceMatch::Peers.matches(RouteSource::Internal) && !SourceMatch::Peers.matches(RouteSource::Local));
    }
}
