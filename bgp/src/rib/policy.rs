//! Import policy: an ordered list of rules, first match wins, matching on prefix lists (with
//! ge/le, as routers write them) and communities, and able to set communities and LOCAL_PREF.

use ipnetwork::IpNetwork;

use crate::wire::PathAttributes;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyAction {
    Accept,
    Reject,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// Empty: any prefix.
    pub prefixes: Vec<PrefixMatch>,
    /// Empty: any route; otherwise the route must carry one of these communities.
    pub communities: Vec<u32>,
    pub action: PolicyAction,
    /// Added to the route's communities when accepted by this rule.
    pub add_communities: Vec<u32>,
    pub set_local_pref: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPolicy {
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

impl ImportPolicy {
    pub fn evaluate(&self, prefix: &IpNetwork, attrs: &PathAttributes) -> Verdict {
        let rule = self.rules.iter().find(|r| {
            (r.prefixes.is_empty() || r.prefixes.iter().any(|m| m.matches(prefix)))
                && (r.communities.is_empty() || r.communities.iter().any(|c| attrs.communities.contains(c)))
        });
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
        let policy = ImportPolicy {
            rules: vec![
                PolicyRule {
                    prefixes: vec![m("198.19.0.0/16", Some(24), Some(32))],
                    communities: vec![],
                    action: PolicyAction::Accept,
                    add_communities: vec![tag],
                    set_local_pref: Some(200),
                },
                PolicyRule {
                    prefixes: vec![],
                    communities: vec![(65000 << 16) | 666],
                    action: PolicyAction::Reject,
                    add_communities: vec![],
                    set_local_pref: None,
                },
            ],
            default: PolicyAction::Accept,
        };
        let plain = PathAttributes::default();
        match policy.evaluate(&net("198.19.1.0/24"), &plain) {
            Verdict::Modified(a) => assert_eq!((a.communities.clone(), a.local_pref), (vec![tag], Some(200))),
            other => panic!("{other:?}"),
        }
        let blackholed = PathAttributes { communities: vec![(65000 << 16) | 666], ..Default::default() };
        assert_eq!(policy.evaluate(&net("10.0.0.0/8"), &blackholed), Verdict::Reject);
        assert_eq!(policy.evaluate(&net("10.0.0.0/8"), &plain), Verdict::Accept);
        let strict = ImportPolicy { rules: vec![], default: PolicyAction::Reject };
        assert_eq!(strict.evaluate(&net("10.0.0.0/8"), &plain), Verdict::Reject);
    }
}
