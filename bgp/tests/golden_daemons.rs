//! Golden vectors: messages BIRD, FRR and GoBGP sent each other, captured with tshark by
//! `gingham-lab capture-golden` (see the header of `golden/daemons.txt`). Bytes from other
//! implementations, so a mistake shared by our encoder and decoder cannot pass.

use gingham_bgp::wire::*;

struct Vector {
    from: String,
    to: String,
    codec: SessionCodec,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("golden/daemons.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let field = |k: &str| l.split_whitespace().find_map(|f| f.strip_prefix(k)).unwrap_or_else(|| panic!("{k} in {l}")).to_owned();
            let hex = field("hex=");
            Vector {
                from: field("from="),
                to: field("to="),
                // Every one of these sessions negotiated 4-octet ASNs.
                codec: SessionCodec::new(true, field("ebgp=") == "1"),
                bytes: (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect(),
            }
        })
        .collect()
}

fn decoded() -> Vec<(Vector, Message)> {
    vectors()
        .into_iter()
        .map(|v| {
            let d = decode(&v.bytes, &v.codec).unwrap_or_else(|e| panic!("{} -> {}: {e}", v.from, v.to));
            assert!(d.attr_errors.is_empty(), "{} -> {}: {:?}", v.from, v.to, d.attr_errors);
            (v, d.message)
        })
        .collect()
}

#[test]
fn every_captured_message_decodes_cleanly_and_survives_our_re_encoding() {
    let all = decoded();
    assert!(all.len() >= 40, "fixture has {} messages", all.len());
    for (v, m) in &all {
        let again = m.to_bytes(&v.codec).unwrap();
        let back = decode(&again, &v.codec).unwrap().message;
        assert_eq!(&back, m, "{} -> {}", v.from, v.to);
        // Messages with one canonical encoding must match the peer's bytes exactly.
        if matches!(m, Message::Keepalive | Message::Notification(_) | Message::RouteRefresh(_)) {
            assert_eq!(again.to_vec(), v.bytes, "{} -> {} {:?}", v.from, v.to, m);
        }
    }
}

/// The first message from `from` (to `to`, when given) that matches.
fn find<'a>(all: &'a [(Vector, Message)], from: &str, to: Option<&str>, pred: impl Fn(&Message) -> bool) -> &'a Message {
    &all.iter()
        .find(|(v, m)| v.from == from && to.is_none_or(|t| v.to == t) && pred(m))
        .unwrap_or_else(|| panic!("no matching message from {from}"))
        .1
}

#[test]
fn opens_carry_each_daemons_as_and_capabilities() {
    let all = decoded();
    for (from, asn) in [("bird", 65001), ("frr", 65002), ("gobgp", 65001)] {
        let Message::Open(o) = find(&all, from, None, |m| matches!(m, Message::Open(_))) else { unreachable!() };
        assert_eq!(o.asn(), asn, "{from}");
        assert!(o.capabilities.contains(&Capability::FourOctetAs(asn)), "{from}: {:?}", o.capabilities);
        assert!(o.capabilities.contains(&Capability::RouteRefresh), "{from}");
        assert!(o.capabilities.iter().any(|c| matches!(c, Capability::Multiprotocol(_))), "{from}");
    }
    let Message::Open(frr) = find(&all, "frr", None, |m| matches!(m, Message::Open(_))) else { unreachable!() };
    assert!(
        frr.capabilities.iter().any(|c| matches!(c, Capability::Fqdn { hostname, .. } if !hostname.is_empty())),
        "{:?}",
        frr.capabilities
    );
}

#[test]
fn bird_update_carries_communities_large_communities_and_med() {
    let all = decoded();
    // To its iBGP peer GoBGP: BIRD keeps MED and adds LOCAL_PREF there.
    let Message::Update(u) =
        find(&all, "bird", Some("gobgp"), |m| matches!(m, Message::Update(u) if u.nlri.contains(&"198.19.10.0/24".parse().unwrap())))
    else {
        unreachable!()
    };
    let a = &u.attributes;
    assert_eq!(a.communities, vec![(65001 << 16) | 100]);
    assert_eq!(a.large_communities, vec![LargeCommunity { global: 65001, local1: 1, local2: 2 }]);
    assert_eq!(a.med, Some(50));
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.local_pref, Some(100));
    assert_eq!(a.as_path, Some(AsPath::default()), "iBGP: nothing prepended");
}

#[test]
fn frr_ipv6_update_has_mp_reach_with_its_global_next_hop() {
    let all = decoded();
    let Message::Update(u) = find(
        &all,
        "frr",
        None,
        |m| matches!(m, Message::Update(u) if u.attributes.mp_reach.as_ref().is_some_and(|r| r.nlri.contains(&"2001:db8:20::/48".parse().unwrap()))),
    ) else {
        unreachable!()
    };
    let mp = u.attributes.mp_reach.as_ref().unwrap();
    assert_eq!(mp.family, Family::IPV6_UNICAST);
    let NextHop::V6 { global, .. } = mp.next_hop else { panic!("{:?}", mp.next_hop) };
    assert_eq!(global, "2001:db8:18::c".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(u.attributes.med, Some(20));
    assert_eq!(u.attributes.large_communities, vec![LargeCommunity { global: 65002, local1: 3, local2: 4 }]);
    assert_eq!(u.attributes.as_path.as_ref().unwrap().to_string(), "65002");
}

#[test]
fn gobgp_ibgp_update_has_local_pref_and_is_later_withdrawn() {
    let all = decoded();
    let p: ipnetwork::Ipv4Network = "198.19.30.0/24".parse().unwrap();
    let Message::Update(u) = find(&all, "gobgp", Some("bird"), |m| matches!(m, Message::Update(u) if u.nlri.contains(&p))) else {
        unreachable!()
    };
    assert_eq!(u.attributes.local_pref, Some(200));
    assert_eq!(u.attributes.med, Some(10));
    assert!(all.iter().any(|(v, m)| v.from == "gobgp" && matches!(m, Message::Update(u) if u.withdrawn.contains(&p))));
}

#[test]
fn end_of_rib_route_refresh_and_shutdown_communication_are_recognised() {
    let all = decoded();
    let eor = |f: Family| all.iter().any(|(_, m)| matches!(m, Message::Update(u) if u.end_of_rib_family() == Some(f)));
    assert!(eor(Family::IPV4_UNICAST) && eor(Family::IPV6_UNICAST));
    let rr: Vec<RefreshSubtype> = all
        .iter()
        .filter_map(|(_, m)| match m {
            Message::RouteRefresh(r) => Some(r.subtype),
            _ => None,
        })
        .collect();
    assert!(rr.contains(&RefreshSubtype::Request), "{rr:?}");
    assert!(rr.contains(&RefreshSubtype::Begin) && rr.contains(&RefreshSubtype::End), "enhanced route refresh BoRR/EoRR: {rr:?}");
    let Message::Notification(n) = find(&all, "bird", None, |m| matches!(m, Message::Notification(_))) else { unreachable!() };
    assert_eq!(n.error_code(), Some(ErrorCode::AdministrativeShutdown));
    assert_eq!(n.shutdown_communication(), Some("maintenance window"));
}
