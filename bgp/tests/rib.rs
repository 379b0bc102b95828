//! Loc-RIB, route reflection matrix, loop checks, ECMP and Adj-RIB-Out behaviour.

use std::net::{IpAddr, Ipv4Addr};

use gingham_bgp::rib::decision::DecisionConfig;
use gingham_bgp::rib::*;
use gingham_bgp::wire::*;
use ipnetwork::IpNetwork;

const ME: &str = "198.18.0.254";

fn rib(cluster: Option<&str>) -> Rib {
    Rib::new(RibConfig {
        router_id: ME.parse().unwrap(),
        cluster_id: cluster.map(|c| c.parse().unwrap()),
        multipath: true,
        decision: DecisionConfig::default(),
    })
}

fn peer(n: u8, asn: u32, client: bool) -> RibPeer {
    RibPeer {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)),
        local_address: ME.parse().unwrap(),
        router_id: Ipv4Addr::new(10, 0, 0, n),
        local_as: 65000,
        peer_as: asn,
        rr_client: client,
        keep_original_next_hop: false,
        next_hop_self: false,
        allow_own_as: 0,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        codec: SessionCodec::new(true, asn != 65000),
        import: None,
        export: None,
        external: false,
        extended_next_hop: false,
        link: None,
    }
}

fn announce(prefix: &str, path: &[u32], nh: &str) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(path.iter().copied())),
            next_hop: Some(nh.parse().unwrap()),
            ..Default::default()
        },
        nlri: vec![prefix.parse().unwrap()],
        ..Default::default()
    }
}

fn p(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// What `to` would receive for `prefix`, if anything.
fn exported(rib: &mut Rib, to: PeerId, prefix: &str) -> Option<PathAttributes> {
    rib.export_to(to, &[p(prefix)]).into_iter().find(|u| u.nlri.iter().any(|n| IpNetwork::V4(*n) == p(prefix))).map(|u| u.attributes)
}

#[test]
fn reflection_matrix() {
    // client 1, client 2, non-client 3, eBGP 4
    let mut r = rib(Some("10.255.0.1"));
    r.peer_up(1, peer(1, 65000, true));
    r.peer_up(2, peer(2, 65000, true));
    r.peer_up(3, peer(3, 65000, false));
    r.peer_up(4, peer(4, 65004, false));
    r.apply_update(1, &announce("198.19.1.0/24", &[], "198.18.0.1"));
    r.apply_update(3, &announce("198.19.3.0/24", &[], "198.18.0.3"));

    // client route -> other client and non-client, with ORIGINATOR_ID and CLUSTER_LIST
    let to2 = exported(&mut r, 2, "198.19.1.0/24").expect("client to client");
    assert_eq!(to2.originator_id, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(to2.cluster_list, vec!["10.255.0.1".parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(to2.next_hop, Some("198.18.0.1".parse().unwrap()), "iBGP keeps the next hop");
    assert!(exported(&mut r, 3, "198.19.1.0/24").is_some(), "client to non-client");
    assert!(exported(&mut r, 1, "198.19.1.0/24").is_none(), "never back to the sender");
    // non-client route -> clients only
    assert!(exported(&mut r, 1, "198.19.3.0/24").is_some());
    // eBGP gets everything with our AS prepended, next hop self, no iBGP attributes
    let to4 = exported(&mut r, 4, "198.19.1.0/24").unwrap();
    assert_eq!(to4.as_path.unwrap().to_string(), "65000");
    assert_eq!(to4.next_hop, Some(ME.parse().unwrap()));
    assert_eq!((to4.local_pref, to4.originator_id, to4.cluster_list.len()), (None, None, 0));
}

#[test]
fn non_client_to_non_client_is_not_reflected_and_no_rr_means_split_horizon() {
    let mut r = rib(Some("10.255.0.1"));
    r.peer_up(3, peer(3, 65000, false));
    r.peer_up(5, peer(5, 65000, false));
    r.apply_update(3, &announce("198.19.3.0/24", &[], "198.18.0.3"));
    assert!(exported(&mut r, 5, "198.19.3.0/24").is_none());

    let mut plain = rib(None);
    plain.peer_up(1, peer(1, 65000, true));
    plain.peer_up(2, peer(2, 65000, true));
    plain.apply_update(1, &announce("198.19.1.0/24", &[], "198.18.0.1"));
    assert!(exported(&mut plain, 2, "198.19.1.0/24").is_none());
}

#[test]
fn loops_are_dropped_on_import() {
    let mut r = rib(Some("10.255.0.1"));
    r.peer_up(4, peer(4, 65004, false));
    r.peer_up(1, peer(1, 65000, true));
    let res = r.apply_update(4, &announce("198.19.9.0/24", &[65004, 65000], "198.18.0.4"));
    assert_eq!((res.rejected, r.prefix_count()), (1, 0), "own AS in path");
    let mut u = announce("198.19.8.0/24", &[], "198.18.0.1");
    u.attributes.cluster_list = vec!["10.255.0.1".parse().unwrap()];
    assert_eq!(r.apply_update(1, &u).rejected, 1, "our cluster id in CLUSTER_LIST");
    let mut u = announce("198.19.7.0/24", &[], "198.18.0.1");
    u.attributes.originator_id = Some(ME.parse().unwrap());
    assert_eq!(r.apply_update(1, &u).rejected, 1, "our router id as ORIGINATOR_ID");
    assert_eq!(r.apply_update(1, &announce("198.19.6.0/24", &[], ME)).rejected, 1, "next hop is us");
    assert_eq!(r.prefix_count(), 0);
}

#[test]
fn equal_paths_form_an_ecmp_set_and_a_withdrawal_shrinks_it() {
    let mut r = rib(None);
    r.peer_up(1, peer(1, 65000, false));
    r.peer_up(2, peer(2, 65000, false));
    r.apply_update(1, &announce("198.19.5.0/24", &[], "198.18.0.1"));
    let res = r.apply_update(2, &announce("198.19.5.0/24", &[], "198.18.0.2"));
    assert_eq!(res.changed, vec![p("198.19.5.0/24")]);
    let best = r.best(&p("198.19.5.0/24")).unwrap();
    assert_eq!(best.next_hops.len(), 2);
    let withdraw = Update { withdrawn: vec!["198.19.5.0/24".parse().unwrap()], ..Default::default() };
    assert_eq!(r.apply_update(1, &withdraw).changed.len(), 1);
    assert_eq!(r.best(&p("198.19.5.0/24")).unwrap().next_hops, vec![Gateway::new("198.18.0.2".parse().unwrap())]);
    // A longer path is not part of the set.
    r.apply_update(1, &announce("198.19.5.0/24", &[65001], "198.18.0.1"));
    assert_eq!(r.best(&p("198.19.5.0/24")).unwrap().next_hops.len(), 1);
}

#[test]
fn peer_down_withdraws_what_was_reflected() {
    let mut r = rib(Some("10.255.0.1"));
    r.peer_up(1, peer(1, 65000, true));
    r.peer_up(2, peer(2, 65000, true));
    r.apply_update(1, &announce("198.19.1.0/24", &[], "198.18.0.1"));
    assert_eq!(r.export_all(2).len(), 1);
    assert_eq!(r.advertised(2), 1);
    let changed = r.peer_down(1);
    let updates = sent_to(&mut r, &changed, 2);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].withdrawn, vec!["198.19.1.0/24".parse().unwrap()]);
    assert_eq!(r.advertised(2), 0);
}

#[test]
fn a_peer_going_names_the_gateways_no_other_path_has() {
    // Two eBGP ToRs with the same prefixes (ECMP), and a third peer whose routes have ToR 2's
    // address as a third-party next hop.
    let mut r = rib(None);
    r.peer_up(1, peer(1, 65001, false));
    r.peer_up(2, peer(2, 65001, false));
    r.peer_up(3, peer(3, 65003, false));
    for prefix in ["198.19.1.0/24", "198.19.2.0/24"] {
        r.apply_update(1, &announce(prefix, &[65001], "198.18.0.1"));
        r.apply_update(2, &announce(prefix, &[65001], "198.18.0.2"));
    }
    r.apply_update(3, &announce("198.19.9.0/24", &[65003], "198.18.0.2"));

    assert_eq!(r.gateways_only_of(1), [Gateway::new("198.18.0.1".parse().unwrap())], "no other path has ToR 1 as next hop");
    r.peer_down(1);
    assert_eq!(r.best(&p("198.19.1.0/24")).unwrap().next_hops, [Gateway::new("198.18.0.2".parse().unwrap())]);
    let both = vec![Gateway::new("198.18.0.1".parse().unwrap()), Gateway::new("198.18.0.2".parse().unwrap())];
    assert_eq!(r.unused_gateways(both), [Gateway::new("198.18.0.1".parse().unwrap())], "ToR 2 still carries paths");

    assert!(r.gateways_only_of(2).is_empty(), "peer 3's path goes via 198.18.0.2 too");
    r.peer_down(2);
    assert_eq!(r.gateways_only_of(3), [Gateway::new("198.18.0.2".parse().unwrap())]);
    assert!(r.gateways_only_of(9).is_empty(), "no such peer");
}

#[test]
fn thousands_of_routes_share_one_attribute_set() {
    let mut r = rib(Some("10.255.0.1"));
    r.peer_up(1, peer(1, 65000, true));
    let attrs = announce("0.0.0.0/0", &[], "198.18.0.1").attributes;
    let nlri: Vec<_> = (0..5000u32).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()).collect();
    r.apply_update(1, &Update { attributes: attrs, nlri, ..Default::default() });
    assert_eq!(r.prefix_count(), 5000);
    assert_eq!(r.interned_sets(), 1);
}

#[test]
fn ipv6_routes_get_an_ipv6_next_hop_self_towards_ebgp() {
    let mut r = rib(None);
    let mut p6 = peer(4, 65004, false);
    p6.local_address = "2001:db8:18::1".parse().unwrap();
    r.peer_up(4, p6);
    r.originate(p("2001:db8:1::/48"), PathAttributes { origin: Some(Origin::Igp), ..Default::default() });
    let u = r.export_all(4);
    let mp = u[0].attributes.mp_reach.as_ref().unwrap();
    assert_eq!(mp.nlri, vec![p("2001:db8:1::/48")]);
    assert_eq!(mp.next_hop, NextHop::V6 { global: "2001:db8:18::1".parse().unwrap(), link_local: None });
}

/// What `to` is sent when `changed` goes out to every update group.
fn sent_to(rib: &mut Rib, changed: &[IpNetwork], to: PeerId) -> Vec<Update> {
    rib.export(changed).iter().find_map(|g| g.for_peer(to)).map(<[Update]>::to_vec).unwrap_or_default()
}

#[test]
fn withdrawals_reach_every_member_of_a_large_group() {
    // 40 clients: one update group, one bit of Adj-RIB-Out per prefix for all of them.
    let mut r = rib(Some("10.255.0.1"));
    for n in 1..=40u8 {
        r.peer_up(u32::from(n), peer(n, 65000, true));
    }
    r.apply_update(1, &announce("198.19.1.0/24", &[], "198.18.0.1"));
    for n in 2..=40 {
        assert_eq!(r.export_all(n).len(), 1, "peer {n} gets the route");
        assert_eq!(r.advertised(n), 1);
    }
    let withdraw = Update { withdrawn: vec!["198.19.1.0/24".parse().unwrap()], ..Default::default() };
    let changed = r.apply_update(1, &withdraw).changed;
    let out = r.export(&changed);
    assert_eq!(out.len(), 1, "one group");
    for n in 2..=40 {
        let u = out[0].for_peer(n).unwrap();
        assert_eq!(u.len(), 1, "peer {n} gets the withdrawal");
        assert_eq!(u[0].withdrawn, vec!["198.19.1.0/24".parse().unwrap()]);
        assert_eq!(r.advertised(n), 0);
    }
    // Nothing is left behind once everybody has been told.
    assert_eq!(r.prefix_count(), 0);
    assert!(r.export_all(2).is_empty());
}

#[test]
fn fib_queue_reports_each_change_once_including_removals() {
    let mut r = rib(None);
    let pfx = p("198.19.4.0/24");
    r.originate(pfx, PathAttributes { origin: Some(Origin::Igp), ..Default::default() });
    r.mark_fib(pfx);
    r.mark_fib(pfx);
    assert_eq!(r.take_fib(10), vec![pfx], "queued once");
    assert!(!r.fib_pending());
    r.withdraw_local(pfx);
    r.mark_fib(pfx);
    let taken = r.take_fib(10);
    assert_eq!(taken, vec![pfx]);
    assert!(r.best(&pfx).is_none(), "reported as gone");
    assert_eq!(r.prefix_count(), 0);
    assert!(r.take_fib(10).is_empty());
}

#[test]
fn import_policy_filters_by_prefix_list_and_tags_accepted_routes() {
    use gingham_bgp::rib::policy::*;
    use std::sync::Arc;
    let mut r = rib(None);
    let mut p1 = peer(1, 65001, false);
    // Accept only /26 blocks inside the pod pool, tagged 65000:26; reject the rest.
    p1.import = Some(Arc::new(Policy {
        rules: vec![PolicyRule {
            prefixes: vec![PrefixMatch { prefix: p("198.19.0.0/16"), ge: Some(26), le: Some(26) }],
            action: PolicyAction::Accept,
            add_communities: vec![(65000 << 16) | 26],
            ..Default::default()
        }],
        default: PolicyAction::Reject,
    }));
    r.peer_up(1, p1);
    let attrs = announce("0.0.0.0/0", &[65001], "198.18.0.1").attributes;
    let nlri = ["198.19.0.0/26", "198.19.0.64/26", "198.19.0.0/24", "10.0.0.0/26"].iter().map(|s| s.parse().unwrap()).collect();
    let res = r.apply_update(1, &Update { attributes: attrs, nlri, ..Default::default() });
    assert_eq!(res.rejected, 2);
    assert_eq!((r.accepted(1), r.received(1)), (2, 4));
    assert_eq!(r.best(&p("198.19.0.64/26")).unwrap().attrs.communities, vec![(65000 << 16) | 26]);
    assert!(r.best(&p("198.19.0.0/24")).is_none());
}

#[test]
fn export_policy_keeps_an_external_peers_routes_from_the_others() {
    use gingham_bgp::rib::policy::*;
    use std::sync::Arc;
    let mut r = rib(None);
    // Two routers in other ASes; what one sends must not reach the other (no transit) unless
    // a rule lets that prefix through. Our own routes go to both.
    let no_transit = |allowed: Option<&str>| {
        let mut rules: Vec<PolicyRule> = allowed
            .map(|a| PolicyRule { prefixes: vec![PrefixMatch { prefix: p(a), ge: None, le: None }], ..Default::default() })
            .into_iter()
            .collect();
        rules.push(PolicyRule { source: Some(SourceMatch::External), action: PolicyAction::Reject, ..Default::default() });
        Some(Arc::new(Policy { rules, default: PolicyAction::Accept }))
    };
    let mut tor = peer(1, 65001, false);
    tor.external = true;
    tor.export = no_transit(None);
    let mut other = peer(2, 65002, false);
    other.external = true;
    other.export = no_transit(Some("203.0.113.0/24"));
    r.peer_up(1, tor);
    r.peer_up(2, other);
    for prefix in ["0.0.0.0/0", "203.0.113.0/24"] {
        r.apply_update(1, &announce(prefix, &[65001], "198.18.0.1"));
    }
    r.originate(p("198.19.0.0/26"), PathAttributes { origin: Some(Origin::Igp), as_path: Some(AsPath::default()), ..Default::default() });
    let sent = |r: &mut Rib, id| -> Vec<String> {
        let mut out: Vec<String> = r.export_all(id).iter().flat_map(|u| u.nlri.iter().map(|n| n.to_string()).collect::<Vec<_>>()).collect();
        out.sort();
        out
    };
    assert_eq!(sent(&mut r, 2), ["198.19.0.0/26", "203.0.113.0/24"], "only our block and the allowed prefix");
    assert_eq!(sent(&mut r, 1), ["198.19.0.0/26"]);
    // Removing the rule withdraws the prefix it let through.
    let updates = r.set_policies(2, None, no_transit(None));
    let withdrawn: Vec<String> = updates.iter().flat_map(|u| u.withdrawn.iter().map(|n| n.to_string()).collect::<Vec<_>>()).collect();
    assert_eq!(withdrawn, ["203.0.113.0/24"]);
}

/// RFC 8950: over an IPv6 session that negotiated the extended next hop, our IPv4 routes go in
/// MP_REACH_NLRI with our IPv6 address as next hop, and an IPv4 route learned with an IPv6 next
/// hop is installed with it; a session without the capability gets neither.
#[test]
fn ipv4_over_ipv6_next_hops_only_where_negotiated() {
    let v6_peer = |n: u8, ext: bool| RibPeer {
        address: format!("2001:db8:18::{n}").parse().unwrap(),
        local_address: "2001:db8:18::fe".parse().unwrap(),
        extended_next_hop: ext,
        ..peer(n, 65000 + u32::from(n), false)
    };
    let mut r = rib(None);
    r.peer_up(1, v6_peer(1, true));
    r.peer_up(2, v6_peer(2, false));
    r.originate(p("198.19.100.0/24"), PathAttributes { origin: Some(Origin::Igp), as_path: Some(AsPath::default()), ..Default::default() });
    let sent = |r: &mut Rib, to: PeerId| {
        r.export_to(to, &[p("198.19.100.0/24")])
            .into_iter()
            .find_map(|u| u.attributes.mp_reach.filter(|m| m.nlri.contains(&p("198.19.100.0/24"))))
    };
    let mp = sent(&mut r, 1).expect("sent over the extended next hop session");
    assert_eq!(mp.family, Family::IPV4_UNICAST);
    assert_eq!(mp.next_hop, NextHop::V6 { global: "2001:db8:18::fe".parse().unwrap(), link_local: None });
    assert!(
        r.export_to(2, &[p("198.19.100.0/24")]).iter().all(|u| u.nlri.is_empty() && u.attributes.mp_reach.is_none()),
        "no IPv4 next hop to give"
    );

    // FRR's way: global and link-local next hop, IPv4 NLRI.
    let from_frr = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65001])),
            mp_reach: Some(MpReach {
                family: Family::IPV4_UNICAST,
                next_hop: NextHop::V6 { global: "2001:db8:18::1".parse().unwrap(), link_local: Some("fe80::1".parse().unwrap()) },
                nlri: vec![p("198.19.3.0/24")],
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    r.apply_update(1, &from_frr);
    let best = r.best(&p("198.19.3.0/24")).expect("accepted");
    assert_eq!(best.next_hops, vec![Gateway::new("2001:db8:18::1".parse().unwrap())]);
    // Passed on (eBGP, so with us as next hop) to the other extended session only.
    r.peer_up(3, v6_peer(3, true));
    assert!(r.export_to(3, &[p("198.19.3.0/24")]).iter().any(|u| u
        .attributes
        .mp_reach
        .as_ref()
        .is_some_and(|m| m.nlri.contains(&p("198.19.3.0/24")))));
    assert!(r.export_to(2, &[p("198.19.3.0/24")]).iter().all(|u| u.attributes.mp_reach.is_none() && u.nlri.is_empty()));
}

/// Unnumbered links (RFC 2545 3, RFC 8950): over a link-local session the peer's link-local next
/// hop is installed on that session's link, whatever sits in the "global" field; a link-local
/// next hop is never passed to another peer, who gets ours instead, and the link-local half of
/// a pair never leaves.
#[test]
fn link_local_next_hops_are_scoped_to_their_link_and_never_passed_on() {
    let ll_peer = RibPeer {
        address: "fe80::2".parse().unwrap(),
        local_address: "fe80::1".parse().unwrap(),
        extended_next_hop: true,
        link: Some(7),
        ..peer(1, 65010, false)
    };
    let mut r = rib(None);
    r.peer_up(1, ll_peer);
    let from = |next_hop: NextHop, prefix: &str| Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65010])),
            mp_reach: Some(MpReach { family: Family::IPV4_UNICAST, next_hop, nlri: vec![p(prefix)] }),
            ..Default::default()
        },
        ..Default::default()
    };
    let ll: std::net::Ipv6Addr = "fe80::2".parse().unwrap();
    let on_link = Gateway { addr: IpAddr::V6(ll), ifindex: Some(7) };
    // FRR unnumbered: 16 octets holding the link-local address.
    r.apply_update(1, &from(NextHop::V6 { global: ll, link_local: None }, "198.18.40.0/24"));
    // A global address the link does not reach, with the link-local one beside it.
    r.apply_update(1, &from(NextHop::V6 { global: "2001:db8:99::2".parse().unwrap(), link_local: Some(ll) }, "198.18.41.0/24"));
    for prefix in ["198.18.40.0/24", "198.18.41.0/24"] {
        assert_eq!(r.best(&p(prefix)).expect("accepted").next_hops, vec![on_link], "{prefix}");
    }

    // Passed to an iBGP peer without next-hop-self: the link-local next hop is replaced by ours,
    // the pair loses its link-local half.
    let ibgp = RibPeer {
        address: "2001:db8:18::5".parse().unwrap(),
        local_address: "2001:db8:18::fe".parse().unwrap(),
        extended_next_hop: true,
        ..peer(5, 65000, false)
    };
    r.peer_up(2, ibgp);
    let sent: Vec<NextHop> = r
        .export_to(2, &[p("198.18.40.0/24"), p("198.18.41.0/24")])
        .into_iter()
        .filter_map(|u| u.attributes.mp_reach.filter(|m| !m.nlri.is_empty()).map(|m| m.next_hop))
        .collect();
    assert!(sent.contains(&NextHop::V6 { global: "2001:db8:18::fe".parse().unwrap(), link_local: None }), "{sent:?}");
    assert!(sent.contains(&NextHop::V6 { global: "2001:db8:99::2".parse().unwrap(), link_local: None }), "{sent:?}");

    // Without a link (a global session), a next hop that is only link-local is unusable.
    assert_eq!(gateway(&from(NextHop::V6 { global: ll, link_local: None }, "198.18.42.0/24").attributes, None), None);
}

/// Update groups: peers with the same export rules get one set of UPDATEs; the member a route
/// came from is not sent it back, and is sent a withdrawal once the best path moves to it.
#[test]
fn update_groups_share_updates_and_hold_back_a_members_own_routes() {
    let mut r = rib(Some("10.255.0.1"));
    for n in 1..=5u8 {
        r.peer_up(u32::from(n), peer(n, 65000, true));
    }
    r.peer_up(9, peer(9, 65009, false));
    r.apply_update(9, &announce("203.0.113.0/24", &[65009], "198.18.0.9"));
    r.apply_update(3, &announce("198.19.3.0/24", &[], "198.18.0.3"));
    let prefixes = [p("203.0.113.0/24"), p("198.19.3.0/24")];
    let out = r.export(&prefixes);
    assert_eq!(out.len(), 2, "the clients' group and the eBGP peer's");
    let clients = out.iter().find(|g| g.members == [1, 2, 3, 4, 5]).expect("one group of clients");
    let nlri = |u: &[Update]| -> Vec<String> {
        let mut v: Vec<String> = u.iter().flat_map(|u| u.nlri.iter().map(|n| n.to_string()).collect::<Vec<_>>()).collect();
        v.sort();
        v
    };
    assert_eq!(nlri(&clients.common), ["198.19.3.0/24", "203.0.113.0/24"]);
    assert_eq!(clients.individual.len(), 1, "only the source member is sent anything of its own");
    assert_eq!(nlri(clients.for_peer(3).unwrap()), ["203.0.113.0/24"], "client 3 is not sent its own route back");
    assert_eq!(nlri(out.iter().find_map(|g| g.for_peer(9)).unwrap()), ["198.19.3.0/24"]);
    assert_eq!(r.advertised(1), 2);
    assert_eq!(r.advertised(3), 1);

    // Client 4 now has the better path to 198.19.3.0/24: it is withdrawn from 4 and announced
    // again to the others, 3 included.
    let mut better = announce("198.19.3.0/24", &[], "198.18.0.4");
    better.attributes.local_pref = Some(200);
    let changed = r.apply_update(4, &better).changed;
    let out = r.export(&changed);
    let clients = out.iter().find(|g| g.members.contains(&4)).unwrap();
    let to_4 = clients.for_peer(4).unwrap();
    assert!(nlri(to_4).is_empty());
    assert_eq!(to_4.iter().flat_map(|u| u.withdrawn.iter()).map(|n| n.to_string()).collect::<Vec<_>>(), ["198.19.3.0/24"]);
    assert_eq!(nlri(clients.for_peer(3).unwrap()), ["198.19.3.0/24"]);
    assert_eq!(r.advertised(4), 1, "4 holds the eBGP route only");

    // The last member leaving empties the group's Adj-RIB-Out.
    for n in 1..=5 {
        r.peer_retire(n);
    }
    r.peer_up(1, peer(1, 65000, true));
    assert_eq!(r.advertised(1), 0, "a new group starts empty");
}
