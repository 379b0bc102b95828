//! Property tests for the codec: decode(encode(m)) == m for generated messages, and the
//! decoder never panics on arbitrary or mutated bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use gingham_bgp::wire::*;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use proptest::collection::vec;
use proptest::prelude::*;

fn v4_prefix() -> impl Strategy<Value = Ipv4Network> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
        let masked = if l == 0 { 0 } else { a & (u32::MAX << (32 - u32::from(l))) };
        Ipv4Network::new(Ipv4Addr::from(masked), l).unwrap()
    })
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Network> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
        let masked = if l == 0 { 0 } else { a & (u128::MAX << (128 - u32::from(l))) };
        Ipv6Network::new(Ipv6Addr::from(masked), l).unwrap()
    })
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xe000_0000).prop_map(Ipv4Addr::from)
}

fn as_path(four_octet: bool) -> impl Strategy<Value = AsPath> {
    let asn = if four_octet { (1u32..=u32::MAX).boxed() } else { (1u32..=65535).boxed() };
    let kind =
        prop_oneof![Just(SegmentType::Sequence), Just(SegmentType::Set), Just(SegmentType::ConfedSequence), Just(SegmentType::ConfedSet)];
    vec((kind, vec(asn, 1..8)).prop_map(|(kind, asns)| Segment { kind, asns }), 0..4).prop_map(|segments| AsPath { segments })
}

fn attributes(four_octet: bool) -> impl Strategy<Value = PathAttributes> {
    let origin = prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)];
    let large = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global, local1, local2)| LargeCommunity { global, local1, local2 });
    let aggregator_as = if four_octet { (1u32..=u32::MAX).boxed() } else { (1u32..=65535).boxed() };
    let unknown = (prop_oneof![Just(0xe0u8), Just(0xc0u8)], 100u8..=200, vec(any::<u8>(), 0..300))
        .prop_map(|(flags, type_code, value)| UnknownAttribute { flags: flags | flag::PARTIAL, type_code, value: value.into() });
    (
        (
            proptest::option::of(origin),
            proptest::option::of(as_path(four_octet)),
            proptest::option::of(unicast_v4()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of((aggregator_as, any::<u32>()).prop_map(|(asn, a)| Aggregator { asn, address: Ipv4Addr::from(a) })),
        ),
        (
            vec(any::<u32>(), 0..80),
            proptest::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
            vec(any::<u32>().prop_map(Ipv4Addr::from), 0..5),
            proptest::option::of(mp_reach()),
            proptest::option::of(mp_unreach()),
            vec(large, 0..4),
            proptest::option::of(unknown),
        ),
    )
        .prop_map(
            |(
                (origin, as_path, next_hop, med, local_pref, atomic_aggregate, aggregator),
                (communities, originator_id, cluster_list, mp_reach, mp_unreach, large_communities, unknown),
            )| PathAttributes {
                origin,
                as_path,
                next_hop,
                med,
                local_pref,
                atomic_aggregate,
                aggregator,
                communities,
                originator_id,
                cluster_list,
                mp_reach,
                mp_unreach,
                large_communities,
                unknown: unknown.into_iter().collect(),
            },
        )
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    let v6_nh = (any::<u128>(), proptest::option::of(any::<u128>()))
        .prop_map(|(g, ll)| NextHop::V6 { global: Ipv6Addr::from(g), link_local: ll.map(Ipv6Addr::from) });
    prop_oneof![
        (unicast_v4(), vec(v4_prefix(), 0..20)).prop_map(|(nh, p)| MpReach {
            family: Family::IPV4_UNICAST,
            next_hop: NextHop::V4(nh),
            nlri: p.into_iter().map(IpNetwork::V4).collect()
        }),
        (v6_nh, vec(v6_prefix(), 0..20)).prop_map(|(nh, p)| MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: nh,
            nlri: p.into_iter().map(IpNetwork::V6).collect()
        }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(v4_prefix(), 0..20)
            .prop_map(|p| MpUnreach { family: Family::IPV4_UNICAST, withdrawn: p.into_iter().map(IpNetwork::V4).collect() }),
        vec(v6_prefix(), 0..20)
            .prop_map(|p| MpUnreach { family: Family::IPV6_UNICAST, withdrawn: p.into_iter().map(IpNetwork::V6).collect() }),
    ]
}

fn update(four_octet: bool) -> impl Strategy<Value = Update> {
    (vec(v4_prefix(), 0..30), attributes(four_octet), vec(v4_prefix(), 0..30)).prop_map(|(withdrawn, mut attributes, nlri)| {
        // A route needs its mandatory attributes; without them the decoder (rightly) adds an
        // RFC 7606 error, which the round trip is not about.
        if !nlri.is_empty() || attributes.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty()) {
            attributes.origin.get_or_insert(Origin::Igp);
            attributes.as_path.get_or_insert_with(AsPath::default);
            if !nlri.is_empty() {
                attributes.next_hop.get_or_insert(Ipv4Addr::new(198, 18, 0, 1));
            }
        }
        Update { withdrawn, attributes, nlri }
    })
}

fn capability() -> impl Strategy<Value = Capability> {
    let family = (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Family { afi, safi });
    prop_oneof![
        family.clone().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (any::<bool>(), any::<bool>(), 0u16..4096, vec((family.clone(), any::<bool>()), 0..4)).prop_map(|(r, n, t, f)| {
            Capability::GracefulRestart(GracefulRestart {
                restart_state: r,
                notification: n,
                restart_time: t,
                families: f.into_iter().map(|(family, fp)| GrFamily { family, forwarding_preserved: fp }).collect(),
            })
        }),
        vec((family.clone(), any::<u16>()), 0..4).prop_map(|v| Capability::ExtendedNextHop(
            v.into_iter().map(|(family, next_hop_afi)| ExtendedNextHop { family, next_hop_afi }).collect()
        )),
        vec((family, prop_oneof![Just(AddPathMode::Receive), Just(AddPathMode::Send), Just(AddPathMode::Both)]), 0..4)
            .prop_map(|v| Capability::AddPath(v.into_iter().map(|(family, mode)| AddPathFamily { family, mode }).collect())),
        ("[a-z0-9-]{0,20}", "[a-z.]{0,20}").prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (200u8..=250, vec(any::<u8>(), 0..20)).prop_map(|(code, v)| Capability::Unknown { code, value: v.into() }),
    ]
}

fn message(four_octet: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), prop_oneof![Just(0u16), 3u16..], 1u32.., vec(capability(), 0..40)).prop_map(
            |(my_as, hold_time, id, capabilities)| Message::Open(Open {
                version: 4,
                my_as,
                hold_time,
                bgp_id: Ipv4Addr::from(id),
                capabilities
            })
        ),
        update(four_octet).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100))
            .prop_map(|(code, subcode, d)| { Message::Notification(Notification { code, subcode, data: d.into() }) }),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), 0u8..4).prop_map(|(afi, safi, st)| Message::RouteRefresh(RouteRefresh {
            family: Family { afi, safi },
            subtype: match st {
                0 => RefreshSubtype::Request,
                1 => RefreshSubtype::Begin,
                2 => RefreshSubtype::End,
                _ => RefreshSubtype::Other(7),
            }
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip_four_octet(m in message(true)) {
        let codec = SessionCodec::new(true, false);
        // Messages over 4096 octets are an encode error, never silently truncated.
        if let Ok(bytes) = m.to_bytes(&codec) {
            let decoded = decode(&bytes, &codec).expect("our own encoding decodes");
            prop_assert!(decoded.attr_errors.is_empty(), "{:?}", decoded.attr_errors);
            prop_assert_eq!(decoded.message, m);
        }
    }

    #[test]
    fn round_trip_two_octet_with_as4_path(u in update(true)) {
        // A 2-octet session carries big ASNs as AS_TRANS plus AS4_PATH/AS4_AGGREGATOR; the
        // receiver must rebuild the same path. Confederation ASNs must fit in 2 octets there.
        let confed_fits = u.attributes.as_path.iter().flat_map(|p| &p.segments).filter(|s| s.kind.is_confed()).all(|s| s.asns.iter().all(|&a| a <= 0xffff));
        // AS_TRANS inside the real path would be indistinguishable from a substitution.
        let no_as_trans = !u.attributes.as_path.iter().flat_map(|p| &p.segments).any(|s| s.asns.contains(&u32::from(AS_TRANS)));
        prop_assume!(confed_fits && no_as_trans);
        let codec = SessionCodec::new(false, false);
        let m = Message::Update(u);
        if let Ok(bytes) = m.to_bytes(&codec) {
            let decoded = decode(&bytes, &codec).expect("our own encoding decodes");
            prop_assert_eq!(decoded.message, m);
        }
    }

    #[test]
    fn decoder_never_panics_on_noise(bytes in vec(any::<u8>(), 0..600), four in any::<bool>()) {
        let _outcome = decode(&bytes, &SessionCodec::new(four, false));
    }

    #[test]
    fn decoder_never_panics_on_mutated_messages(m in message(true), flips in vec((any::<usize>(), any::<u8>()), 1..6)) {
        let codec = SessionCodec::new(true, false);
        if let Ok(bytes) = m.to_bytes(&codec) {
            let mut bytes = bytes.to_vec();
            for (pos, val) in flips {
                // Keep the header's marker and length so the body parsers get exercised.
                let i = 19 + pos % bytes.len().saturating_sub(19).max(1);
                if i < bytes.len() {
                    bytes[i] = val;
                }
            }
            let _outcome = decode(&bytes, &codec);
        }
    }
}
