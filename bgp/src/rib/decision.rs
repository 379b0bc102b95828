//! The BGP decision process (RFC 4271 9.1.2.2, RFC 4456 9), one tie-breaker at a time, each
//! named so "why is this the best path" has an answer.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::net::Ipv4Addr;

use crate::wire::{Origin, PathAttributes};

/// The step that decided between two paths, in evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    LocalPref,
    /// Our own origination beats the same prefix learned from a peer (as Cisco's weight and
    /// BIRD's preference do): every node originates the service ranges, and each must
    /// advertise its own rather than pass on another node's.
    LocallyOriginated,
    AsPathLength,
    Origin,
    Med,
    EbgpOverIbgp,
    RouterId,
    ClusterListLength,
    NeighborAddress,
    /// Identical in every respect (the same peer twice cannot happen; kept total for sorting).
    Equal,
}

impl Step {
    /// Paths that tie through MED may share the forwarding load (ECMP).
    pub fn allows_multipath(self) -> bool {
        self > Step::Med
    }
}

/// What the decision process needs to know about a path besides its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub attrs: &'a PathAttributes,
    /// Learned over eBGP (locally originated paths count as neither).
    pub ebgp: bool,
    /// Originated by this speaker.
    pub local: bool,
    /// The BGP identifier of the peer that sent it (ours for local paths).
    pub router_id: Ipv4Addr,
    pub neighbor: IpAddr,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecisionConfig {
    /// Compare MED even between paths from different neighbouring ASes.
    pub always_compare_med: bool,
}

fn origin_rank(o: Option<Origin>) -> u8 {
    match o {
        Some(Origin::Igp) => 0,
        Some(Origin::Egp) => 1,
        Some(Origin::Incomplete) | None => 2,
    }
}

/// Orders `a` against `b`: `Less` means `a` is better. Returns the deciding step.
pub fn compare(a: &Candidate<'_>, b: &Candidate<'_>, cfg: &DecisionConfig) -> (Ordering, Step) {
    let (x, y) = (a.attrs, b.attrs);
    // Highest LOCAL_PREF; absent means the default of 100 (RFC 4277 5.1.1).
    let lp = y.local_pref.unwrap_or(100).cmp(&x.local_pref.unwrap_or(100));
    if lp != Ordering::Equal {
        return (lp, Step::LocalPref);
    }
    let own = b.local.cmp(&a.local);
    if own != Ordering::Equal {
        return (own, Step::LocallyOriginated);
    }
    let len = |p: &PathAttributes| p.as_path.as_ref().map_or(0, |p| p.length());
    let l = len(x).cmp(&len(y));
    if l != Ordering::Equal {
        return (l, Step::AsPathLength);
    }
    let o = origin_rank(x.origin).cmp(&origin_rank(y.origin));
    if o != Ordering::Equal {
        return (o, Step::Origin);
    }
    // MED only means something between routes from the same neighbouring AS.
    let first = |p: &PathAttributes| p.as_path.as_ref().and_then(|p| p.first_asn());
    if cfg.always_compare_med || first(x) == first(y) {
        let m = x.med.unwrap_or(0).cmp(&y.med.unwrap_or(0));
        if m != Ordering::Equal {
            return (m, Step::Med);
        }
    }
    let e = b.ebgp.cmp(&a.ebgp);
    if e != Ordering::Equal {
        return (e, Step::EbgpOverIbgp);
    }
    // RFC 4456 9: a reflected route is compared by its ORIGINATOR_ID.
    let id = |c: &Candidate<'_>| u32::from(c.attrs.originator_id.unwrap_or(c.router_id));
    let r = id(a).cmp(&id(b));
    if r != Ordering::Equal {
        return (r, Step::RouterId);
    }
    let c = x.cluster_list.len().cmp(&y.cluster_list.len());
    if c != Ordering::Equal {
        return (c, Step::ClusterListLength);
    }
    let n = a.neighbor.cmp(&b.neighbor);
    if n != Ordering::Equal {
        return (n, Step::NeighborAddress);
    }
    (Ordering::Equal, Step::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AsPath;

    fn attrs() -> PathAttributes {
        PathAttributes { origin: Some(Origin::Igp), as_path: Some(AsPath::sequence([65001])), ..Default::default() }
    }

    fn cand<'a>(attrs: &'a PathAttributes, id: &str, nbr: &str, ebgp: bool) -> Candidate<'a> {
        Candidate { attrs, ebgp, local: false, router_id: id.parse().unwrap(), neighbor: nbr.parse().unwrap() }
    }

    fn decide(a: &PathAttributes, b: &PathAttributes) -> (Ordering, Step) {
        compare(&cand(a, "1.1.1.1", "198.18.0.1", false), &cand(b, "2.2.2.2", "198.18.0.2", false), &DecisionConfig::default())
    }

    #[test]
    fn each_tie_breaker_in_order() {
        let base = attrs();
        let mut hi_lp = base.clone();
        hi_lp.local_pref = Some(200);
        assert_eq!(decide(&base, &hi_lp), (Ordering::Greater, Step::LocalPref));
        let mine = Candidate { local: true, ..cand(&base, "9.9.9.9", "0.0.0.0", false) };
        let cfg = DecisionConfig::default();
        assert_eq!(compare(&mine, &cand(&base, "1.1.1.1", "198.18.0.1", false), &cfg), (Ordering::Less, Step::LocallyOriginated));
        assert_eq!(compare(&cand(&base, "1.1.1.1", "198.18.0.1", true), &mine, &cfg), (Ordering::Greater, Step::LocallyOriginated));
        assert!(!Step::LocallyOriginated.allows_multipath(), "our own and a learned copy never share the load");

        let mut long = base.clone();
        long.as_path = Some(AsPath::sequence([65001, 65002]));
        assert_eq!(decide(&long, &base), (Ordering::Greater, Step::AsPathLength));

        let mut incomplete = base.clone();
        incomplete.origin = Some(Origin::Incomplete);
        assert_eq!(decide(&base, &incomplete), (Ordering::Less, Step::Origin));

        let mut med = base.clone();
        med.med = Some(10);
        assert_eq!(decide(&med, &base), (Ordering::Greater, Step::Med));

        // Different neighbouring AS: MED is skipped unless always-compare.
        let mut other_as = base.clone();
        other_as.as_path = Some(AsPath::sequence([65009]));
        other_as.med = Some(10);
        assert_eq!(decide(&other_as, &base).1, Step::RouterId);
        let always = DecisionConfig { always_compare_med: true };
        let r = compare(&cand(&other_as, "1.1.1.1", "198.18.0.1", false), &cand(&base, "2.2.2.2", "198.18.0.2", false), &always);
        assert_eq!(r, (Ordering::Greater, Step::Med));

        let r = compare(&cand(&base, "1.1.1.1", "198.18.0.1", false), &cand(&base, "2.2.2.2", "198.18.0.2", true), &always);
        assert_eq!(r, (Ordering::Greater, Step::EbgpOverIbgp));

        assert_eq!(decide(&base, &base), (Ordering::Less, Step::RouterId));
        // ORIGINATOR_ID stands in for the router id of reflected routes.
        let mut reflected = base.clone();
        reflected.originator_id = Some("9.9.9.9".parse().unwrap());
        assert_eq!(decide(&reflected, &base), (Ordering::Greater, Step::RouterId));

        let mut cl = base.clone();
        cl.cluster_list = vec!["10.0.0.1".parse().unwrap()];
        let r = compare(&cand(&cl, "1.1.1.1", "198.18.0.1", false), &cand(&base, "1.1.1.1", "198.18.0.2", false), &always);
        assert_eq!(r, (Ordering::Greater, Step::ClusterListLength));

        let r = compare(&cand(&base, "1.1.1.1", "198.18.0.2", false), &cand(&base, "1.1.1.1", "198.18.0.1", false), &always);
        assert_eq!(r, (Ordering::Greater, Step::NeighborAddress));
    }

    #[test]
    fn multipath_allowed_only_past_med() {
        assert!(!Step::Med.allows_multipath());
        assert!(Step::EbgpOverIbgp.allows_multipath());
        assert!(Step::RouterId.allows_multipath());
    }
}
