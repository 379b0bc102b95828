//! Every decode error maps to its RFC 4271 NOTIFICATION, and every RFC 7606 class of UPDATE
//! attribute error is reported with the right action. One row per attribute x malformation.

use gingham_bgp::wire::*;

const IBGP4: SessionCodec = SessionCodec { four_octet_as: true, ebgp: false };
const EBGP4: SessionCodec = SessionCodec { four_octet_as: true, ebgp: true };

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// An UPDATE announcing 198.19.0.0/24 with the given raw attribute bytes.
fn update_with(attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[24, 198, 19, 0]);
    message(2, &body)
}

const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8]; // SEQUENCE 65000
const AS_PATH_2: &[u8] = &[0x40, 2, 4, 2, 1, 0xfd, 0xe8]; // SEQUENCE 65000, 2-octet
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 198, 18, 0, 1];

fn mandatory_plus(extra: &[u8]) -> Vec<u8> {
    [ORIGIN, AS_PATH, NEXT_HOP, extra].concat()
}

type Outcome = Option<(AttrAction, ErrorCode)>;

/// The RFC 7606 outcome for a whole UPDATE: None when clean.
fn outcome(bytes: &[u8], codec: &SessionCodec) -> Outcome {
    match decode(bytes, codec) {
        Ok(d) => d.attr_errors.iter().max_by_key(|e| e.action).map(|e| (e.action, e.code)),
        Err(e) => Some((AttrAction::SessionReset, e.code)),
    }
}

#[test]
fn rfc7606_table() {
    use AttrAction::*;
    use ErrorCode::*;
    let rows: Vec<(&str, Vec<u8>, SessionCodec, Outcome)> = vec![
        ("well-formed", mandatory_plus(&[]), IBGP4, None),
        // 7.1 ORIGIN
        ("origin length 2", [&[0x40, 1, 2, 0, 0][..], AS_PATH, NEXT_HOP].concat(), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        ("origin value 3", [&[0x40, 1, 1, 3][..], AS_PATH, NEXT_HOP].concat(), IBGP4, Some((TreatAsWithdraw, InvalidOriginAttribute))),
        // 7.2 AS_PATH
        (
            "as_path overrun segment",
            [ORIGIN, &[0x40, 2, 4, 2, 2, 0, 1][..], NEXT_HOP].concat(),
            IBGP4,
            Some((TreatAsWithdraw, MalformedAsPath)),
        ),
        (
            "as_path zero-length segment",
            [ORIGIN, &[0x40, 2, 2, 2, 0][..], NEXT_HOP].concat(),
            IBGP4,
            Some((TreatAsWithdraw, MalformedAsPath)),
        ),
        (
            "as_path bad segment type",
            [ORIGIN, &[0x40, 2, 6, 9, 1, 0, 0, 0, 1][..], NEXT_HOP].concat(),
            IBGP4,
            Some((TreatAsWithdraw, MalformedAsPath)),
        ),
        // 7.3 NEXT_HOP
        (
            "next_hop length 5",
            [ORIGIN, AS_PATH, &[0x40, 3, 5, 1, 2, 3, 4, 5][..]].concat(),
            IBGP4,
            Some((TreatAsWithdraw, AttributeLengthError)),
        ),
        (
            "next_hop 0.0.0.0",
            [ORIGIN, AS_PATH, &[0x40, 3, 4, 0, 0, 0, 0][..]].concat(),
            IBGP4,
            Some((TreatAsWithdraw, InvalidNextHopAttribute)),
        ),
        (
            "next_hop multicast",
            [ORIGIN, AS_PATH, &[0x40, 3, 4, 224, 0, 0, 1][..]].concat(),
            IBGP4,
            Some((TreatAsWithdraw, InvalidNextHopAttribute)),
        ),
        // 7.4 MED, 7.5 LOCAL_PREF
        ("med length 3", mandatory_plus(&[0x80, 4, 3, 0, 0, 1]), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        ("local_pref length 2", mandatory_plus(&[0x40, 5, 2, 0, 1]), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        ("local_pref over eBGP", mandatory_plus(&[0x40, 5, 4, 0, 0, 0, 100]), EBGP4, Some((AttributeDiscard, MalformedAttributeList))),
        // 7.6 ATOMIC_AGGREGATE, 7.7 AGGREGATOR
        ("atomic_aggregate with a value", mandatory_plus(&[0x40, 6, 1, 0]), IBGP4, Some((AttributeDiscard, AttributeLengthError))),
        (
            "aggregator length 6 on 4-octet session",
            mandatory_plus(&[0xc0, 7, 6, 0, 1, 1, 2, 3, 4]),
            IBGP4,
            Some((AttributeDiscard, AttributeLengthError)),
        ),
        ("aggregator AS 0", mandatory_plus(&[0xc0, 7, 8, 0, 0, 0, 0, 1, 2, 3, 4]), IBGP4, Some((AttributeDiscard, OptionalAttributeError))),
        // 7.8 COMMUNITIES
        ("communities length 3", mandatory_plus(&[0xc0, 8, 3, 0, 0, 1]), IBGP4, Some((TreatAsWithdraw, OptionalAttributeError))),
        ("communities empty", mandatory_plus(&[0xc0, 8, 0]), IBGP4, Some((TreatAsWithdraw, OptionalAttributeError))),
        // 7.9 ORIGINATOR_ID, 7.10 CLUSTER_LIST
        ("originator_id length 3", mandatory_plus(&[0x80, 9, 3, 1, 2, 3]), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        ("originator_id over eBGP", mandatory_plus(&[0x80, 9, 4, 1, 2, 3, 4]), EBGP4, Some((AttributeDiscard, MalformedAttributeList))),
        ("cluster_list length 5", mandatory_plus(&[0x80, 10, 5, 1, 2, 3, 4, 5]), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        // 7.11 MP_REACH_NLRI, 7.12 MP_UNREACH_NLRI: NLRI untrustworthy -> reset
        (
            "mp_reach bad next hop length",
            mandatory_plus(&[0x80, 14, 8, 0, 2, 1, 3, 1, 2, 3, 0]),
            IBGP4,
            Some((SessionReset, OptionalAttributeError)),
        ),
        (
            "mp_reach prefix overrun",
            mandatory_plus(&[0x80, 14, 10, 0, 1, 1, 4, 1, 2, 3, 4, 0, 24]),
            IBGP4,
            Some((SessionReset, OptionalAttributeError)),
        ),
        ("mp_unreach prefix length 129", mandatory_plus(&[0x80, 15, 4, 0, 2, 1, 129]), IBGP4, Some((SessionReset, OptionalAttributeError))),
        (
            "mp_reach twice",
            mandatory_plus(&[0x80, 15, 3, 0, 2, 1, 0x80, 15, 3, 0, 2, 1]),
            IBGP4,
            Some((SessionReset, MalformedAttributeList)),
        ),
        ("mp_reach wrong flags", mandatory_plus(&[0x40, 15, 3, 0, 2, 1]), IBGP4, Some((SessionReset, AttributeFlagsError))),
        // RFC 6793 6: AS4_* malformations are discarded
        (
            "as4_path with confed segment (2-octet session)",
            [ORIGIN, AS_PATH_2, NEXT_HOP, &[0xc0, 17, 6, 3, 1, 0, 0, 0, 1]].concat(),
            SessionCodec { four_octet_as: false, ebgp: false },
            Some((AttributeDiscard, MalformedAsPath)),
        ),
        (
            "as4_aggregator length 6",
            [ORIGIN, AS_PATH_2, NEXT_HOP, &[0xc0, 18, 6, 0, 1, 1, 2, 3, 4]].concat(),
            SessionCodec { four_octet_as: false, ebgp: false },
            Some((AttributeDiscard, AttributeLengthError)),
        ),
        // RFC 8092 LARGE_COMMUNITY
        (
            "large_community length 8",
            mandatory_plus(&[0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2]),
            IBGP4,
            Some((TreatAsWithdraw, OptionalAttributeError)),
        ),
        // 3 (c) flags conflict
        ("origin marked optional", [&[0xc0, 1, 1, 0][..], AS_PATH, NEXT_HOP].concat(), IBGP4, Some((TreatAsWithdraw, AttributeFlagsError))),
        (
            "communities marked non-transitive",
            mandatory_plus(&[0x80, 8, 4, 0, 0, 0, 1]),
            IBGP4,
            Some((TreatAsWithdraw, AttributeFlagsError)),
        ),
        // 3 (d) missing well-known
        ("missing next_hop", [ORIGIN, AS_PATH].concat(), IBGP4, Some((TreatAsWithdraw, MissingWellKnownAttribute))),
        ("missing origin", [AS_PATH, NEXT_HOP].concat(), IBGP4, Some((TreatAsWithdraw, MissingWellKnownAttribute))),
        // 3 (g) repeated non-MP attribute: the later copies are discarded
        (
            "med twice",
            mandatory_plus(&[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2]),
            IBGP4,
            Some((AttributeDiscard, MalformedAttributeList)),
        ),
        // 4: attribute overruns the attribute field
        ("attribute length overrun", mandatory_plus(&[0x80, 4, 9, 0, 0]), IBGP4, Some((TreatAsWithdraw, AttributeLengthError))),
        ("truncated trailing header", mandatory_plus(&[0x80]), IBGP4, Some((TreatAsWithdraw, MalformedAttributeList))),
        // RFC 4271 6.3: unknown well-known attribute resets
        ("unrecognised well-known", mandatory_plus(&[0x40, 99, 1, 0]), IBGP4, Some((SessionReset, UnrecognizedWellKnownAttribute))),
        // unknown optionals are fine
        ("unknown optional transitive", mandatory_plus(&[0xc0, 99, 2, 1, 2]), IBGP4, None),
        ("unknown optional non-transitive", mandatory_plus(&[0x80, 99, 2, 1, 2]), IBGP4, None),
    ];
    let mut failures = Vec::new();
    for (name, attrs, codec, want) in rows {
        let got = outcome(&update_with(&attrs), &codec);
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "RFC 7606 mismatches:\n{}", failures.join("\n"));
}

#[test]
fn treat_as_withdraw_turns_every_announcement_into_a_withdrawal() {
    let bytes = update_with(&[ORIGIN, AS_PATH, &[0x40, 3, 4, 0, 0, 0, 0][..]].concat());
    let d = decode(&bytes, &IBGP4).unwrap();
    assert_eq!(d.action(), Some(AttrAction::TreatAsWithdraw));
    let Message::Update(u) = d.message else { panic!("not an update") };
    assert_eq!(u.into_withdraw_all(), vec!["198.19.0.0/24".parse().unwrap()]);
}

#[test]
fn unknown_transitive_attribute_is_kept_with_partial_bit_and_nontransitive_dropped() {
    let bytes = update_with(&mandatory_plus(&[0xc0, 99, 2, 1, 2, 0x80, 98, 1, 7]));
    let Message::Update(u) = decode(&bytes, &IBGP4).unwrap().message else { panic!() };
    assert_eq!(u.attributes.unknown, vec![UnknownAttribute { flags: 0xe0, type_code: 99, value: bytes::Bytes::from_static(&[1, 2]) }]);
}

#[test]
fn extended_length_flag_is_honoured_on_decode_and_used_on_encode_when_needed() {
    // ORIGIN sent with a 2-octet length, as some speakers do.
    let attrs = [&[0x50, 1, 0, 1, 0][..], AS_PATH, NEXT_HOP].concat();
    let d = decode(&update_with(&attrs), &IBGP4).unwrap();
    assert!(d.attr_errors.is_empty());
    // 100 communities need 400 octets, so the encoder must switch to the 2-octet length.
    let Message::Update(mut u) = d.message else { panic!() };
    u.attributes.communities = (0..100).collect();
    let bytes = Message::Update(u.clone()).to_bytes(&IBGP4).unwrap();
    let pos = bytes.windows(2).position(|w| w == [0xd0, 8]).expect("COMMUNITIES with extended length");
    assert_eq!(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]), 400);
    assert_eq!(decode(&bytes, &IBGP4).unwrap().message, Message::Update(u));
}

fn header_error(bytes: &[u8]) -> (ErrorCode, Vec<u8>) {
    let e = decode(bytes, &IBGP4).expect_err("must fail");
    (e.code, e.data.to_vec())
}

#[test]
fn header_errors_map_to_rfc4271_6_1() {
    let mut bad_marker = message(4, &[]);
    bad_marker[3] = 0;
    assert_eq!(header_error(&bad_marker).0, ErrorCode::ConnectionNotSynchronized);
    // Length below 19: data is the erroneous length field.
    let mut short = message(4, &[]);
    short[16..18].copy_from_slice(&18u16.to_be_bytes());
    assert_eq!(header_error(&short), (ErrorCode::BadMessageLength, vec![0, 18]));
    // KEEPALIVE must be exactly 19.
    assert_eq!(header_error(&message(4, &[0])), (ErrorCode::BadMessageLength, vec![0, 20]));
    // Over 4096.
    let mut long = message(2, &[0, 0, 0, 0]);
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(header_error(&long).0, ErrorCode::BadMessageLength);
    assert_eq!(header_error(&message(9, &[])), (ErrorCode::BadMessageType, vec![9]));
    // UPDATE shorter than 23.
    assert_eq!(header_error(&message(2, &[0, 0])).0, ErrorCode::BadMessageLength);
}

#[test]
fn framing_waits_for_more_bytes_but_refuses_garbage_early() {
    let whole = message(4, &[]);
    let mut buf = bytes::BytesMut::from(&whole[..10]);
    assert_eq!(split_frame(&mut buf).unwrap(), None);
    buf.extend_from_slice(&whole[10..]);
    assert_eq!(split_frame(&mut buf).unwrap().unwrap().kind, 4);
    let mut garbage = bytes::BytesMut::from(&b"GET / HTTP/1.1"[..]);
    assert_eq!(split_frame(&mut garbage).unwrap_err().code, ErrorCode::ConnectionNotSynchronized);
}

fn open_body(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version, 0xfd, 0xe8];
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

#[test]
fn open_errors_map_to_rfc4271_6_2() {
    let e = decode(&message(1, &open_body(3, 90, [1, 1, 1, 1], &[])), &IBGP4).unwrap_err();
    assert_eq!((e.code, e.data.to_vec()), (ErrorCode::UnsupportedVersionNumber, vec![0, 4]));
    assert_eq!(header_error(&message(1, &open_body(4, 2, [1, 1, 1, 1], &[]))).0, ErrorCode::UnacceptableHoldTime);
    assert_eq!(header_error(&message(1, &open_body(4, 90, [0, 0, 0, 0], &[]))).0, ErrorCode::BadBgpIdentifier);
    // Optional parameter type 1 (authentication, deprecated) is not supported.
    assert_eq!(header_error(&message(1, &open_body(4, 90, [1, 1, 1, 1], &[1, 1, 0]))).0, ErrorCode::UnsupportedOptionalParameter);
    // Optional parameter length disagrees with the message.
    let mut b = open_body(4, 90, [1, 1, 1, 1], &[2, 2, 2, 0]);
    b[9] = 9;
    assert_eq!(header_error(&message(1, &b)).0, ErrorCode::BadMessageLength);
    // Truncated capability.
    assert_eq!(header_error(&message(1, &open_body(4, 90, [1, 1, 1, 1], &[2, 3, 65, 4, 0]))).0, ErrorCode::OpenUnspecific);
}

#[test]
fn open_with_rfc9072_extended_parameters_round_trips() {
    let caps: Vec<Capability> = (0..60).map(|i| Capability::Unknown { code: 200, value: vec![i; 3].into() }).collect();
    let open = Open::new(4_200_000_000, 90, "198.18.0.1".parse().unwrap(), caps);
    let bytes = Message::Open(open.clone()).to_bytes(&IBGP4).unwrap();
    assert_eq!((bytes[28], bytes[29]), (255, 255), "extended format marker");
    let Message::Open(back) = decode(&bytes, &IBGP4).unwrap().message else { panic!() };
    assert_eq!(back, open);
    assert_eq!(back.my_as, AS_TRANS);
    assert_eq!(back.asn(), 4_200_000_000);
}

#[test]
fn route_refresh_with_bad_length_is_7_1_with_the_message_as_data() {
    let bytes = message(5, &[0, 1, 0, 1, 0]);
    let e = decode(&bytes, &IBGP4).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRouteRefreshLength);
    assert_eq!(e.data.to_vec(), bytes);
}

#[test]
fn nlri_errors_reset_with_invalid_network_field() {
    let mut body = vec![0, 0];
    let attrs = mandatory_plus(&[]);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&[33, 1, 2, 3, 4, 5]);
    assert_eq!(header_error(&message(2, &body)).0, ErrorCode::InvalidNetworkField);
    // Withdrawn routes length pointing past the message.
    assert_eq!(header_error(&message(2, &[0, 50, 0, 0])).0, ErrorCode::MalformedAttributeList);
}

#[test]
fn end_of_rib_markers_for_both_families() {
    for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
        let bytes = Message::Update(Update::end_of_rib(family)).to_bytes(&IBGP4).unwrap();
        let Message::Update(u) = decode(&bytes, &IBGP4).unwrap().message else { panic!() };
        assert_eq!(u.end_of_rib_family(), Some(family));
    }
    assert_eq!(Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)).to_bytes(&IBGP4).unwrap().len(), 23);
    let not_eor = Update { withdrawn: vec!["198.19.0.0/24".parse().unwrap()], ..Default::default() };
    assert_eq!(not_eor.end_of_rib_family(), None);
}
