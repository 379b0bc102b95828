//! LoadBalancer IPAM, the rules: which addresses each Service of type LoadBalancer should hold,
//! which held addresses nobody wants any more, and the status each Service should show. The
//! IPAM calls and status writes are `lib.rs`'s; everything here is pure and unit-tested.
//!
//! A Service is ours when it is of type LoadBalancer without a `loadBalancerClass` (a class
//! names another implementation). It gets one address per IP family (`spec.ipFamilies`, else the
//! families of its cluster IPs, else IPv4), from any enabled LoadBalancer IPPool, or from the
//! pools the `gingham.io/ipv4pools` / `gingham.io/ipv6pools` annotations list (JSON lists of
//! pool names, Calico's format); or exactly the addresses `spec.loadBalancerIP` or the
//! `gingham.io/loadBalancerIPs` annotation (a JSON list) names. The addresses go to
//! `status.loadBalancer.ingress`, and the condition `gingham.io/LoadBalancerAddresses` says
//! whether every request was met and, when not, why (another Service holds the address, no
//! pool, a full pool, a bad annotation).
//!
//! The IPAM handle carries the Service's UID, so a Service deleted and created again under the
//! same name starts afresh, and the addresses of a deleted Service, or of one that is no longer
//! of type LoadBalancer, are released.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_api::cache::Snapshot;
use gingham_api::resources::core::Service;
use gingham_api::resources::{AllowedUse, IPAMBlock, IPPool};
use gingham_ipam::{block, Family, LoadBalancerRequest, Wanted, ATTR_NAMESPACE, ATTR_POD_UID, ATTR_SERVICE};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const IPV4_POOLS: &str = "gingham.io/ipv4pools";
pub const IPV6_POOLS: &str = "gingham.io/ipv6pools";
pub const ADDRESSES: &str = "gingham.io/loadBalancerIPs";
pub const CONDITION: &str = "gingham.io/LoadBalancerAddresses";

/// A Service's addresses as the IPAM blocks record them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// `namespace/name` of the Service.
    pub key: String,
    pub addresses: Vec<IpAddr>,
}

/// Every LoadBalancer allocation, by handle.
pub fn holdings(blocks: &Snapshot<IPAMBlock>) -> BTreeMap<String, Holding> {
    let mut out: BTreeMap<String, Holding> = BTreeMap::new();
    for b in blocks.values().filter(|b| block::is_load_balancer(&b.spec)) {
        for (address, attr) in block::allocations(&b.spec) {
            let (Some(handle), Some(ns), Some(svc)) =
                (&attr.handle_id, attr.secondary.get(ATTR_NAMESPACE), attr.secondary.get(ATTR_SERVICE))
            else {
                continue;
            };
            let held = out.entry(handle.clone()).or_insert_with(|| Holding { key: format!("{ns}/{svc}"), addresses: Vec::new() });
            held.addresses.push(address);
        }
    }
    out
}

/// Whether Gingham assigns this Service's addresses.
pub fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

/// The IPAM handle of a Service's addresses.
pub fn handle(svc: &Service) -> String {
    let m = &svc.metadata;
    let (ns, name) = (m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default());
    match &m.uid {
        Some(uid) => format!("lb.{ns}.{name}.{uid}"),
        None => format!("lb.{ns}.{name}"),
    }
}

/// What to do for one Service of ours.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    pub key: String,
    pub handle: String,
    /// Held addresses that still meet a request.
    pub keep: Vec<IpAddr>,
    /// Requests no held address meets: for the IPAM.
    pub assign: Vec<LoadBalancerRequest>,
    /// Held addresses no request wants any more.
    pub release: Vec<IpAddr>,
    /// Requests that cannot be met, found without asking the IPAM.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub services: Vec<Work>,
    /// Handles whose Service is gone or no longer ours: release everything they hold.
    pub orphans: Vec<String>,
    /// Services that are no longer ours but still show the status we wrote.
    pub cleared: Vec<String>,
}

pub fn plan(services: &Snapshot<Service>, holdings: &BTreeMap<String, Holding>, pools: &[IPPool]) -> Plan {
    let mut out = Plan::default();
    // Holder of each address, for telling a Service who has the address it asks for.
    let holder: BTreeMap<IpAddr, (&str, &str)> =
        holdings.iter().flat_map(|(h, held)| held.addresses.iter().map(move |a| (*a, (h.as_str(), held.key.as_str())))).collect();
    let mut wanted_handles = std::collections::BTreeSet::new();
    for (key, svc) in &services.objects {
        if !is_ours(svc) {
            if carries_our_status(svc) {
                out.cleared.push(key.clone());
            }
            continue;
        }
        let handle = handle(svc);
        wanted_handles.insert(handle.clone());
        let held = holdings.get(&handle).map(|h| h.addresses.clone()).unwrap_or_default();
        let mut work = Work { key: key.clone(), handle: handle.clone(), ..Default::default() };
        let requests = match requests(svc, &handle) {
            Ok(r) => r,
            Err(problem) => {
                // A broken request keeps what the Service has until it is fixed.
                work.keep = held;
                work.problems.push(problem);
                out.services.push(work);
                continue;
            }
        };
        let mut unused = held;
        for request in requests {
            let meets = |a: &IpAddr| match request.want {
                Wanted::Address(want) => *a == want,
                Wanted::Any(family) => family_of(*a) == family && in_allowed_pool(*a, request.pools.as_deref(), pools),
            };
            if let Some(i) = unused.iter().position(meets) {
                work.keep.push(unused.remove(i));
                continue;
            }
            match request.want {
                Wanted::Address(a) => match holder.get(&a) {
                    Some((h, other)) if *h != handle => work.problems.push(format!("{a} is already held by Service {other}")),
                    _ => work.assign.push(request),
                },
                Wanted::Any(_) => work.assign.push(request),
            }
        }
        work.release = unused;
        out.services.push(work);
    }
    if services.synced {
        out.orphans = holdings.keys().filter(|h| !wanted_handles.contains(*h)).cloned().collect();
    }
    out
}

/// The requests a Service makes, or why they cannot be read.
pub fn requests(svc: &Service, handle: &str) -> Result<Vec<LoadBalancerRequest>, String> {
    let spec = svc.spec.as_ref().ok_or("no spec")?;
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let list = |key: &str| -> Result<Option<Vec<String>>, String> {
        annotations
            .get(key)
            .map(|text| serde_json::from_str::<Vec<String>>(text).map_err(|e| format!("annotation {key}: not a JSON list of strings: {e}")))
            .transpose()
    };
    let pools = BTreeMap::from([(Family::V4, list(IPV4_POOLS)?), (Family::V6, list(IPV6_POOLS)?)]);
    let mut addresses = Vec::new();
    for text in list(ADDRESSES)?.unwrap_or_default() {
        addresses.push(text.parse::<IpAddr>().map_err(|_| format!("annotation {ADDRESSES}: {text:?} is not an IP address"))?);
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
        let ip: IpAddr = ip.parse().map_err(|_| format!("spec.loadBalancerIP: {ip:?} is not an IP address"))?;
        if addresses.is_empty() {
            addresses.push(ip);
        } else if !addresses.contains(&ip) {
            return Err(format!("spec.loadBalancerIP {ip} is not among the addresses of annotation {ADDRESSES}; set one of them"));
        }
    }
    if addresses.iter().filter(|a| a.is_ipv4()).count() > 1 || addresses.iter().filter(|a| a.is_ipv6()).count() > 1 {
        return Err(format!("annotation {ADDRESSES}: at most one address per IP family"));
    }
    let mut attrs = BTreeMap::from([
        (ATTR_NAMESPACE.to_string(), svc.metadata.namespace.clone().unwrap_or_default()),
        (ATTR_SERVICE.to_string(), svc.metadata.name.clone().unwrap_or_default()),
    ]);
    if let Some(uid) = &svc.metadata.uid {
        attrs.insert(ATTR_POD_UID.to_string(), uid.clone());
    }
    let request = |want: Wanted, family: Family| LoadBalancerRequest {
        handle: handle.to_string(),
        attrs: attrs.clone(),
        want,
        pools: pools[&family].clone(),
    };
    if !addresses.is_empty() {
        return Ok(addresses.into_iter().map(|a| request(Wanted::Address(a), family_of(a))).collect());
    }
    Ok(families(svc).into_iter().map(|f| request(Wanted::Any(f), f)).collect())
}

/// `spec.ipFamilies`, else the families of the cluster IPs, else IPv4.
fn families(svc: &Service) -> Vec<Family> {
    let spec = svc.spec.as_ref();
    let mut out: Vec<Family> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        let ips = spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten();
        out = ips.filter_map(|ip| ip.parse::<IpAddr>().ok()).map(family_of).collect();
    }
    out.dedup();
    if out.is_empty() {
        out.push(Family::V4);
    }
    out
}

fn family_of(a: IpAddr) -> Family {
    if a.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Whether `a` lies in a LoadBalancer pool the request may use.
fn in_allowed_pool(a: IpAddr, named: Option<&[String]>, pools: &[IPPool]) -> bool {
    pools
        .iter()
        .filter(|p| p.spec.allows(AllowedUse::LoadBalancer))
        .filter(|p| named.is_none_or(|n| n.iter().any(|n| p.metadata.name.as_deref() == Some(n.as_str()))))
        .any(|p| p.spec.network().is_some_and(|net| net.contains(a)))
}

fn our_condition(svc: &Service) -> Option<&Condition> {
    svc.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == CONDITION)
}

fn carries_our_status(svc: &Service) -> bool {
    our_condition(svc).is_some()
}

/// The Service with the status it should show for `addresses` and `problems`; `None` when it
/// shows that already.
pub fn with_status(svc: &Service, addresses: &[IpAddr], problems: &[String], now: Time) -> Option<Service> {
    let mut addresses = addresses.to_vec();
    addresses.sort();
    let ingress: Vec<LoadBalancerIngress> =
        addresses.iter().map(|a| LoadBalancerIngress { ip: Some(a.to_string()), ..Default::default() }).collect();
    let (status, reason, message) = match problems.is_empty() {
        true => ("True", "Assigned", format!("assigned {}", addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", "))),
        false => ("False", "NotAssigned", problems.join("; ")),
    };
    let current = our_condition(svc);
    let shown = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone()).unwrap_or_default();
    let same_condition = current.is_some_and(|c| c.status == status && c.reason == reason && c.message == message);
    if shown == ingress && same_condition {
        return None;
    }
    let since = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: svc.metadata.generation,
    };
    let mut out = svc.clone();
    let st = out.status.get_or_insert_with(ServiceStatus::default);
    st.load_balancer = Some(LoadBalancerStatus { ingress: (!ingress.is_empty()).then_some(ingress) });
    let conditions = st.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != CONDITION);
    conditions.push(condition);
    Some(out)
}

/// A Service that is no longer ours without the addresses and the condition we gave it.
pub fn without_our_status(svc: &Service) -> Option<Service> {
    if !carries_our_status(svc) {
        return None;
    }
    let mut out = svc.clone();
    let st = out.status.get_or_insert_with(ServiceStatus::default);
    // A Service with another class gets its ingress from that implementation from now on.
    st.load_balancer = None;
    if let Some(c) = st.conditions.as_mut() {
        c.retain(|c| c.type_ != CONDITION);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::snapshot;
    use gingham_api::resources::IPPoolSpec;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc(name: &str, edit: impl FnOnce(&mut Service)) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("shop".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.spec = Some(ServiceSpec { type_: Some("LoadBalancer".into()), ..Default::default() });
        edit(&mut s);
        s
    }

    fn pools() -> Vec<IPPool> {
        let lb = |name: &str, cidr: &str| {
            IPPool::new(name, IPPoolSpec { cidr: cidr.into(), allowed_uses: Some(vec![AllowedUse::LoadBalancer]), ..Default::default() })
        };
        vec![lb("lb", "198.18.113.0/24"), lb("lb-b", "198.18.114.0/24"), lb("lb6", "2001:db8:113::/112")]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn held(key: &str, addrs: &[&str]) -> Holding {
        Holding { key: key.into(), addresses: addrs.iter().map(|a| ip(a)).collect() }
    }

    #[test]
    fn one_address_per_family_from_the_named_pools() {
        let dual = svc("web", |s| {
            s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
            s.metadata.annotations = Some(BTreeMap::from([(IPV4_POOLS.to_string(), r#"["lb-b"]"#.to_string())]));
        });
        let r = requests(&dual, "h").unwrap();
        assert_eq!(
            r.iter().map(|r| (&r.want, r.pools.clone())).collect::<Vec<_>>(),
            [(&Wanted::Any(Family::V4), Some(vec!["lb-b".to_string()])), (&Wanted::Any(Family::V6), None)]
        );
        assert_eq!(r[0].attrs[ATTR_SERVICE], "web");
        let from_cluster_ips = svc("db", |s| s.spec.as_mut().unwrap().cluster_ips = Some(vec!["fd00:96::1".into()]));
        assert_eq!(requests(&from_cluster_ips, "h").unwrap()[0].want, Wanted::Any(Family::V6));
        assert_eq!(requests(&svc("x", |_| {}), "h").unwrap()[0].want, Wanted::Any(Family::V4), "IPv4 by default");
    }

    #[test]
    fn named_addresses_and_their_mistakes() {
        let one = svc("web", |s| s.spec.as_mut().unwrap().load_balancer_ip = Some("198.18.113.5".into()));
        assert_eq!(requests(&one, "h").unwrap()[0].want, Wanted::Address(ip("198.18.113.5")));
        let both = svc("web", |s| {
            s.metadata.annotations = Some(BTreeMap::from([(ADDRESSES.to_string(), r#"["198.18.113.5", "2001:db8:113::5"]"#.to_string())]));
        });
        assert_eq!(requests(&both, "h").unwrap().len(), 2);
        let bad = |edit: fn(&mut Service)| requests(&svc("web", edit), "h").unwrap_err();
        assert!(bad(|s| s.spec.as_mut().unwrap().load_balancer_ip = Some("nope".into())).contains("spec.loadBalancerIP"));
        let e = bad(|s| s.metadata.annotations = Some(BTreeMap::from([(ADDRESSES.to_string(), "198.18.113.5".to_string())])));
        assert!(e.contains("not a JSON list"), "{e}");
        let e = bad(|s| {
            s.metadata.annotations = Some(BTreeMap::from([(ADDRESSES.to_string(), r#"["198.18.113.5","198.18.113.6"]"#.to_string())]))
        });
        assert!(e.contains("one address per IP family"), "{e}");
        let e = bad(|s| {
            s.metadata.annotations = Some(BTreeMap::from([(ADDRESSES.to_string(), r#"["198.18.113.5"]"#.to_string())]));
            s.spec.as_mut().unwrap().load_balancer_ip = Some("198.18.113.9".into());
        });
        assert!(e.contains("set one of them"), "{e}");
    }

    #[test]
    fn held_addresses_are_kept_released_or_refused_to_another_service() {
        let web = svc("web", |s| s.spec.as_mut().unwrap().load_balancer_ip = Some("198.18.113.5".into()));
        let copy = svc("copycat", |s| s.spec.as_mut().unwrap().load_balancer_ip = Some("198.18.113.5".into()));
        let moved = svc("moved", |s| s.metadata.annotations = Some(BTreeMap::from([(IPV4_POOLS.to_string(), r#"["lb-b"]"#.into())])));
        let not_lb = svc("was-lb", |s| s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into()));
        let holdings = BTreeMap::from([
            (handle(&web), held("shop/web", &["198.18.113.5"])),
            (handle(&moved), held("shop/moved", &["198.18.113.7"])),
            (handle(&not_lb), held("shop/was-lb", &["198.18.113.8"])),
            ("lb.shop.deleted.uid-old".to_string(), held("shop/deleted", &["198.18.113.9"])),
        ]);
        let p = plan(&snapshot(vec![web.clone(), copy, moved.clone(), not_lb.clone()]), &holdings, &pools());
        let work = |name: &str| p.services.iter().find(|w| w.key == format!("shop/{name}")).unwrap().clone();
        assert_eq!((work("web").keep, work("web").assign.len()), (vec![ip("198.18.113.5")], 0));
        assert_eq!(work("copycat").problems, ["198.18.113.5 is already held by Service shop/web"]);
        assert!(work("copycat").assign.is_empty(), "the IPAM is not asked for what the cache says is taken");
        let moved_work = work("moved");
        assert_eq!((moved_work.release, moved_work.assign.len()), (vec![ip("198.18.113.7")], 1), "left its pool: a new address");
        let mut orphans = p.orphans.clone();
        orphans.sort();
        assert_eq!(orphans, ["lb.shop.deleted.uid-old".to_string(), handle(&not_lb)]);
        // Not before the Service list is in: a Service not seen yet is not a deleted one.
        let unsynced = gingham_api::cache::Snapshot { synced: false, ..snapshot(vec![web]) };
        assert!(plan(&unsynced, &holdings, &pools()).orphans.is_empty());
    }

    #[test]
    fn status_shows_the_addresses_and_why_some_are_missing() {
        let web = svc("web", |_| {});
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let shown = with_status(&web, &[ip("2001:db8:113::1"), ip("198.18.113.1")], &[], t0.clone()).unwrap();
        let ingress = shown.status.as_ref().unwrap().load_balancer.as_ref().unwrap().ingress.clone().unwrap();
        assert_eq!(ingress.iter().map(|i| i.ip.clone().unwrap()).collect::<Vec<_>>(), ["198.18.113.1", "2001:db8:113::1"]);
        assert_eq!(our_condition(&shown).unwrap().status, "True");
        assert!(with_status(&shown, &[ip("198.18.113.1"), ip("2001:db8:113::1")], &[], t1.clone()).is_none(), "nothing to write");
        let failing = with_status(&shown, &[ip("198.18.113.1")], &["no enabled IPv6 LoadBalancer IPPool".into()], t1.clone()).unwrap();
        let c = our_condition(&failing).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.last_transition_time.clone()), ("False", "NotAssigned", t1.clone()));
        assert!(c.message.contains("no enabled IPv6"));
        let mut cleared_svc = failing.clone();
        cleared_svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let p = plan(&snapshot(vec![cleared_svc.clone()]), &BTreeMap::new(), &pools());
        assert_eq!(p.cleared, ["shop/web"]);
        let cleared = without_our_status(&cleared_svc).unwrap();
        assert!(cleared.status.as_ref().unwrap().load_balancer.is_none() && our_condition(&cleared).is_none());
        assert!(without_our_status(&cleared).is_none());
    }
}
