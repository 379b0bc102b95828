//! BGPFilter: ordered accept/reject rules for what a BGPPeer's session imports and exports,
//! with Calico v3's field names so Calico YAML applies unchanged. A peer lists filters by name
//! in `spec.filters`; their rules are tried in that order, first match wins, and a route no
//! rule matches gets Gingham's default treatment (export: only the cluster's own routes;
//! import: everything outside the IP pools).

use ipnetwork::IpNetwork;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, ValidationError};
use super::{Kind, KindInfo};

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "BGPFilter", plural = "bgpfilters")]
#[serde(rename_all = "camelCase")]
pub struct BGPFilterSpec {
    /// Rules for IPv4 routes we advertise to the peer.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BGPFilterRule>,
    /// Rules for IPv4 routes the peer sends us.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BGPFilterRule>,
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BGPFilterRule>,
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BGPFilterRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPFilterRule {
    pub action: FilterAction,
    /// Matched with `matchOperator` (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    /// With `In`/`NotIn`: the prefix lengths inside `cidr` that match (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// `RemotePeers`: only routes learned from BGP peers (not the node's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FilterSource>,
    /// Calico matches the route's outgoing interface; Gingham refuses the field (not built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterAction {
    #[default]
    Accept,
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchOperator {
    /// The route's prefix is exactly `cidr`.
    Equal,
    NotEqual,
    /// The route's prefix lies inside `cidr` (or is it).
    In,
    NotIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterSource {
    RemotePeers,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

/// A rule's prefix condition, checked: the network, the operator and the length bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixCondition {
    pub cidr: IpNetwork,
    pub operator: MatchOperator,
    /// Inclusive; for `Equal`/`NotEqual` both are the CIDR's own length.
    pub min: u8,
    pub max: u8,
}

impl BGPFilterRule {
    /// The rule's prefix condition (`None`: any prefix). Call after validation.
    pub fn condition(&self) -> Option<PrefixCondition> {
        let cidr: IpNetwork = self.cidr.as_deref()?.parse().ok()?;
        let operator = self.match_operator?;
        let bits = if cidr.is_ipv4() { 32 } else { 128 };
        let (min, max) = match operator {
            MatchOperator::Equal | MatchOperator::NotEqual => (cidr.prefix(), cidr.prefix()),
            MatchOperator::In | MatchOperator::NotIn => {
                let p = self.prefix_length.unwrap_or_default();
                (p.min.unwrap_or(cidr.prefix()), p.max.unwrap_or(bits))
            }
        };
        Some(PrefixCondition { cidr, operator, min, max })
    }

    fn validate(&self, field: &str, v6: bool) -> Check {
        if self.interface.is_some() {
            return Err(ValidationError::new(
                format!("{field}.interface"),
                "matching on the outgoing interface is not supported by Gingham; use cidr and source",
            ));
        }
        let bits: u8 = if v6 { 128 } else { 32 };
        match (&self.cidr, self.match_operator) {
            (None, None) => {
                if self.prefix_length.is_some() {
                    return Err(ValidationError::new(format!("{field}.prefixLength"), "needs cidr and matchOperator In or NotIn"));
                }
            }
            (Some(_), None) => return Err(ValidationError::new(format!("{field}.matchOperator"), "required with cidr")),
            (None, Some(_)) => return Err(ValidationError::new(format!("{field}.cidr"), "required with matchOperator")),
            (Some(text), Some(op)) => {
                let net = validate::cidr(&format!("{field}.cidr"), text)?;
                if net.is_ipv6() != v6 {
                    let family = if v6 { "IPv6" } else { "IPv4" };
                    return Err(ValidationError::new(format!("{field}.cidr"), format!("{text} is not an {family} CIDR")));
                }
                if let Some(p) = self.prefix_length {
                    if matches!(op, MatchOperator::Equal | MatchOperator::NotEqual) {
                        return Err(ValidationError::new(format!("{field}.prefixLength"), "only with matchOperator In or NotIn"));
                    }
                    let min = p.min.unwrap_or(net.prefix());
                    let max = p.max.unwrap_or(bits);
                    if min > bits || max > bits {
                        return Err(ValidationError::new(format!("{field}.prefixLength"), format!("lengths are 0..={bits}")));
                    }
                    if min < net.prefix() || min > max {
                        return Err(ValidationError::new(
                            format!("{field}.prefixLength"),
                            format!("min {min} and max {max} must satisfy {} <= min <= max", net.prefix()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Kind for BGPFilter {
    const INFO: KindInfo = super::BGP_FILTER;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())?;
        let s = &self.spec;
        for (name, rules, v6) in [
            ("spec.exportV4", &s.export_v4, false),
            ("spec.importV4", &s.import_v4, false),
            ("spec.exportV6", &s.export_v6, true),
            ("spec.importV6", &s.import_v6, true),
        ] {
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(&format!("{name}[{i}]"), v6)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> BGPFilter {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn calicos_sample_applies_unchanged() {
        // Calico's documented sample, less the interface rules Gingham does not build.
        let f = filter(
            "apiVersion: gingham.io/v1\nkind: BGPFilter\nmetadata: {name: my-filter}\nspec:\n  exportV4:\n  - {action: Accept, matchOperator: In, cidr: 77.0.0.0/16, source: RemotePeers}\n  importV4:\n  - {action: Accept, matchOperator: In, cidr: 55.0.0.0/16, prefixLength: {min: 30}}\n  - {action: Reject, matchOperator: NotIn, cidr: 44.0.0.0/16}\n  exportV6:\n  - {action: Reject, source: RemotePeers}\n  importV6:\n  - {action: Accept, matchOperator: Equal, cidr: '5000::0/64'}\n  - {action: Reject}\n",
        );
        assert!(f.validate().is_ok(), "{:?}", f.validate());
        let c = f.spec.import_v4[0].condition().unwrap();
        assert_eq!((c.min, c.max), (30, 32));
        assert_eq!(f.spec.export_v6[0].condition(), None);
    }

    #[test]
    fn each_mistake_names_its_field() {
        let rule = |r: BGPFilterRule| BGPFilter::new("f", BGPFilterSpec { import_v4: vec![r], ..Default::default() });
        let base = BGPFilterRule { cidr: Some("198.51.100.0/24".into()), match_operator: Some(MatchOperator::In), ..Default::default() };
        assert!(rule(base.clone()).validate().is_ok());
        let cases = [
            (BGPFilterRule { match_operator: None, ..base.clone() }, "spec.importV4[0].matchOperator"),
            (BGPFilterRule { cidr: None, ..base.clone() }, "spec.importV4[0].cidr"),
            (BGPFilterRule { cidr: Some("2001:db8::/32".into()), ..base.clone() }, "spec.importV4[0].cidr"),
            (BGPFilterRule { cidr: Some("198.51.100.1/24".into()), ..base.clone() }, "spec.importV4[0].cidr"),
            (
                BGPFilterRule { prefix_length: Some(PrefixLength { min: Some(16), max: None }), ..base.clone() },
                "spec.importV4[0].prefixLength",
            ),
            (
                BGPFilterRule { prefix_length: Some(PrefixLength { min: None, max: Some(33) }), ..base.clone() },
                "spec.importV4[0].prefixLength",
            ),
            (
                BGPFilterRule { match_operator: Some(MatchOperator::Equal), prefix_length: Some(PrefixLength::default()), ..base.clone() },
                "spec.importV4[0].prefixLength",
            ),
            (BGPFilterRule { interface: Some("eth0".into()), ..base.clone() }, "spec.importV4[0].interface"),
        ];
        for (r, field) in cases {
            let e = rule(r.clone()).validate().unwrap_err();
            assert_eq!(e.field, field, "{r:?} -> {e}");
        }
    }
}
