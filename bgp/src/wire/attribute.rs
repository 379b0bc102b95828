//! Path attributes (RFC 4271 4.3 and 5) with RFC 7606 error classification.
//!
//! ```text
//! +----------------+----------------+-----------------------+------------------+
//! | Flags (1)      | Type code (1)  | Length (1, or 2 if    | Value            |
//! | O T P E 0000   |                | Extended Length set)  |                  |
//! +----------------+----------------+-----------------------+------------------+
//! ```
//!
//! The decoder never fails on a problem RFC 7606 says the session should survive: those come
//! back as [`AttrError`]s with their [`AttrAction`]. Only errors that must reset the session
//! are `Err(DecodeError)`.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ipnetwork::{IpNetwork, Ipv4Network};

use super::as_path::AsPath;
use super::codec::SessionCodec;
use super::error::{AttrAction, AttrError, DecodeError, EncodeError, ErrorCode};
use super::family::Family;
use super::nlri;
use super::open::AS_TRANS;

pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

pub mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

use flag::*;
use type_code::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// RFC 8092: Global Administrator, Local Data Part 1, Local Data Part 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// IPv6 global address, with the link-local one when the peer shares our link
    /// (RFC 2545 section 3: a 32-octet next hop).
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI (RFC 4760 section 3) for IPv4 or IPv6 unicast.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: NextHop,
    pub nlri: Vec<IpNetwork>,
}

/// MP_UNREACH_NLRI (RFC 4760 section 4). Empty `withdrawn` is an End-of-RIB marker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNetwork>,
}

/// An optional transitive attribute we do not know, passed on unchanged but for the
/// Partial bit (RFC 4271 5: set when any speaker on the way did not recognise it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Bytes,
}

/// Every attribute of one UPDATE, typed. Absent attributes are `None` or empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub large_communities: Vec<LargeCommunity>,
    pub unknown: Vec<UnknownAttribute>,
}

/// The O and T bits each known attribute must carry (RFC 4271 5, RFC 4760, RFC 6793, RFC 8092).
fn expected_flags(code: u8) -> Option<u8> {
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => TRANSITIVE,
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => OPTIONAL,
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITY => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// The RFC 7606 action for a malformed known attribute (sections 7.1-7.14, RFC 6793 6,
/// RFC 8092 6). MP_(UN)REACH resets because their NLRI can no longer be trusted (7606 5.3).
fn malformed_action(code: u8) -> AttrAction {
    match code {
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => AttrAction::AttributeDiscard,
        MP_REACH_NLRI | MP_UNREACH_NLRI => AttrAction::SessionReset,
        _ => AttrAction::TreatAsWithdraw,
    }
}

/// Collects the RFC 7606 outcomes while one attribute list is decoded.
struct Problems<'a> {
    errors: &'a mut Vec<AttrError>,
}

impl Problems<'_> {
    /// Records a non-fatal problem, or returns the session-resetting error.
    fn report(
        &mut self,
        type_code: u8,
        action: AttrAction,
        code: ErrorCode,
        reason: &'static str,
        data: &Bytes,
    ) -> Result<(), DecodeError> {
        if action == AttrAction::SessionReset {
            return Err(DecodeError::with_data(code, data.clone(), reason));
        }
        self.errors.push(AttrError { type_code, action, code, reason });
        Ok(())
    }
}

fn attribute_bytes(flags: u8, code: u8, value: &Bytes) -> Bytes {
    // The NOTIFICATION data for attribute errors is the whole attribute (RFC 4271 6.3).
    let mut buf = BytesMut::with_capacity(value.len() + 4);
    put_attribute(&mut buf, flags & !EXTENDED_LENGTH, code, value);
    buf.freeze()
}

impl PathAttributes {
    /// Decodes the path attribute field of an UPDATE.
    pub(crate) fn decode(mut data: Bytes, codec: &SessionCodec, errors: &mut Vec<AttrError>) -> Result<PathAttributes, DecodeError> {
        let mut attrs = PathAttributes::default();
        let mut problems = Problems { errors };
        let mut seen = [false; 256];
        let mut as4_path: Option<AsPath> = None;
        let mut as4_aggregator: Option<Aggregator> = None;

        while data.has_remaining() {
            // RFC 7606 section 4: an attribute that runs past the field means the list is
            // unreliable; treat-as-withdraw rather than guess where NLRI begin.
            if data.remaining() < 3 {
                problems.report(0, AttrAction::TreatAsWithdraw, ErrorCode::MalformedAttributeList, "truncated attribute header", &data)?;
                break;
            }
            let flags = data[0];
            let code = data[1];
            let header = if flags & EXTENDED_LENGTH != 0 { 4 } else { 3 };
            if data.remaining() < header {
                problems.report(
                    code,
                    AttrAction::TreatAsWithdraw,
                    ErrorCode::MalformedAttributeList,
                    "truncated attribute length",
                    &data,
                )?;
                break;
            }
            let len = if header == 4 { usize::from(u16::from_be_bytes([data[2], data[3]])) } else { usize::from(data[2]) };
            if data.remaining() < header + len {
                let action =
                    if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI { AttrAction::SessionReset } else { AttrAction::TreatAsWithdraw };
                problems.report(code, action, ErrorCode::AttributeLengthError, "attribute length overruns the attribute field", &data)?;
                break;
            }
            data.advance(header);
            let value = data.split_to(len);

            if seen[usize::from(code)] {
                // RFC 7606 section 3 (g).
                if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI {
                    return Err(DecodeError::new(ErrorCode::MalformedAttributeList, "MP_REACH_NLRI or MP_UNREACH_NLRI repeated"));
                }
                problems.report(code, AttrAction::AttributeDiscard, ErrorCode::MalformedAttributeList, "repeated attribute", &value)?;
                continue;
            }
            seen[usize::from(code)] = true;

            let Some(expected) = expected_flags(code) else {
                if flags & OPTIONAL == 0 {
                    return Err(DecodeError::with_data(
                        ErrorCode::UnrecognizedWellKnownAttribute,
                        attribute_bytes(flags, code, &value),
                        "unrecognised well-known attribute",
                    ));
                }
                // Unknown optional non-transitive attributes are quietly ignored (RFC 4271 5);
                // transitive ones travel on with Partial set.
                if flags & TRANSITIVE != 0 {
                    attrs.unknown.push(UnknownAttribute { flags: (flags | PARTIAL) & !EXTENDED_LENGTH, type_code: code, value });
                }
                continue;
            };
            if flags & (OPTIONAL | TRANSITIVE) != expected {
                // RFC 7606 3 (c): flags in conflict make the attribute malformed.
                problems.report(
                    code,
                    malformed_action(code),
                    ErrorCode::AttributeFlagsError,
                    "attribute flags conflict with the attribute type",
                    &attribute_bytes(flags, code, &value),
                )?;
                continue;
            }
            if let Err((ecode, reason)) = attrs.decode_known(code, value.clone(), codec, &mut as4_path, &mut as4_aggregator) {
                problems.report(code, malformed_action(code), ecode, reason, &attribute_bytes(flags, code, &value))?;
                continue;
            }
            // Attributes that are meaningless from this kind of peer are dropped, not errors.
            let foreign = match code {
                LOCAL_PREF | ORIGINATOR_ID | CLUSTER_LIST => codec.ebgp,
                _ => false,
            };
            if foreign {
                attrs.clear(code);
                problems.report(
                    code,
                    AttrAction::AttributeDiscard,
                    ErrorCode::MalformedAttributeList,
                    "iBGP-only attribute received over eBGP",
                    &value,
                )?;
            }
        }

        attrs.apply_as4(codec, as4_path, as4_aggregator);
        Ok(attrs)
    }

    fn clear(&mut self, code: u8) {
        match code {
            LOCAL_PREF => self.local_pref = None,
            ORIGINATOR_ID => self.originator_id = None,
            CLUSTER_LIST => self.cluster_list.clear(),
            _ => {}
        }
    }

    /// RFC 6793 section 4.2.3: only 2-octet sessions carry AS4_*; a 4-octet peer's are ignored.
    fn apply_as4(&mut self, codec: &SessionCodec, as4_path: Option<AsPath>, as4_aggregator: Option<Aggregator>) {
        if codec.four_octet_as {
            return;
        }
        let mut use_as4_path = true;
        if let (Some(agg), Some(as4_agg)) = (self.aggregator, as4_aggregator) {
            if agg.asn == u32::from(AS_TRANS) {
                self.aggregator = Some(as4_agg);
            } else {
                // The AGGREGATOR was set by a 2-octet speaker after the AS4 attributes; they
                // no longer describe this route.
                use_as4_path = false;
            }
        }
        if let (true, Some(as4)) = (use_as4_path, as4_path) {
            if let Some(path) = self.as_path.take() {
                self.as_path = Some(path.merge_as4(as4));
            }
        }
    }

    fn decode_known(
        &mut self,
        code: u8,
        mut v: Bytes,
        codec: &SessionCodec,
        as4_path: &mut Option<AsPath>,
        as4_aggregator: &mut Option<Aggregator>,
    ) -> Result<(), (ErrorCode, &'static str)> {
        let len_err = |reason| (ErrorCode::AttributeLengthError, reason);
        match code {
            ORIGIN => {
                if v.len() != 1 {
                    return Err(len_err("ORIGIN is not 1 octet"));
                }
                self.origin = Some(match v[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    _ => return Err((ErrorCode::InvalidOriginAttribute, "ORIGIN value above 2")),
                });
            }
            AS_PATH => {
                let path = AsPath::decode(v, codec.four_octet_as).map_err(|r| (ErrorCode::MalformedAsPath, r))?;
                self.as_path = Some(path);
            }
            NEXT_HOP => {
                if v.len() != 4 {
                    return Err(len_err("NEXT_HOP is not 4 octets"));
                }
                let nh = Ipv4Addr::from(v.get_u32());
                // RFC 4271 6.3 / RFC 7606 7.3: a next hop nobody can forward to.
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    return Err((ErrorCode::InvalidNextHopAttribute, "NEXT_HOP is not a unicast address"));
                }
                self.next_hop = Some(nh);
            }
            MED | LOCAL_PREF => {
                if v.len() != 4 {
                    return Err(len_err("MED or LOCAL_PREF is not 4 octets"));
                }
                let value = v.get_u32();
                if code == MED {
                    self.med = Some(value);
                } else {
                    self.local_pref = Some(value);
                }
            }
            ATOMIC_AGGREGATE => {
                if !v.is_empty() {
                    return Err(len_err("ATOMIC_AGGREGATE is not empty"));
                }
                self.atomic_aggregate = true;
            }
            AGGREGATOR => {
                let agg = match (v.len(), codec.four_octet_as) {
                    (8, true) => Aggregator { asn: v.get_u32(), address: Ipv4Addr::from(v.get_u32()) },
                    (6, false) => Aggregator { asn: u32::from(v.get_u16()), address: Ipv4Addr::from(v.get_u32()) },
                    _ => return Err(len_err("AGGREGATOR length does not match the AS size")),
                };
                // RFC 7607: AS 0 is never valid in AGGREGATOR.
                if agg.asn == 0 {
                    return Err((ErrorCode::OptionalAttributeError, "AGGREGATOR AS is 0"));
                }
                self.aggregator = Some(agg);
            }
            COMMUNITIES => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    return Err((ErrorCode::OptionalAttributeError, "COMMUNITIES length is not a non-zero multiple of 4"));
                }
                self.communities = (0..v.len() / 4).map(|_| v.get_u32()).collect();
            }
            ORIGINATOR_ID => {
                if v.len() != 4 {
                    return Err(len_err("ORIGINATOR_ID is not 4 octets"));
                }
                self.originator_id = Some(Ipv4Addr::from(v.get_u32()));
            }
            CLUSTER_LIST => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    return Err(len_err("CLUSTER_LIST length is not a non-zero multiple of 4"));
                }
                self.cluster_list = (0..v.len() / 4).map(|_| Ipv4Addr::from(v.get_u32())).collect();
            }
            MP_REACH_NLRI => self.mp_reach = decode_mp_reach(v)?,
            MP_UNREACH_NLRI => self.mp_unreach = decode_mp_unreach(v)?,
            AS4_PATH => {
                if codec.four_octet_as {
                    return Ok(());
                }
                let path = AsPath::decode(v, true).map_err(|r| (ErrorCode::MalformedAsPath, r))?;
                if path.segments.iter().any(|s| s.kind.is_confed()) {
                    return Err((ErrorCode::MalformedAsPath, "AS4_PATH carries confederation segments"));
                }
                *as4_path = Some(path);
            }
            AS4_AGGREGATOR => {
                if v.len() != 8 {
                    return Err(len_err("AS4_AGGREGATOR is not 8 octets"));
                }
                if !codec.four_octet_as {
                    *as4_aggregator = Some(Aggregator { asn: v.get_u32(), address: Ipv4Addr::from(v.get_u32()) });
                }
            }
            LARGE_COMMUNITY => {
                if v.is_empty() || !v.len().is_multiple_of(12) {
                    return Err((ErrorCode::OptionalAttributeError, "LARGE_COMMUNITY length is not a non-zero multiple of 12"));
                }
                self.large_communities =
                    (0..v.len() / 12).map(|_| LargeCommunity { global: v.get_u32(), local1: v.get_u32(), local2: v.get_u32() }).collect();
            }
            _ => {}
        }
        Ok(())
    }

    /// Encodes in type-code order, as RFC 4271 5 recommends. A 2-octet session gets AS_TRANS
    /// in AS_PATH and AGGREGATOR plus AS4_PATH / AS4_AGGREGATOR (RFC 6793 4.2.2).
    pub(crate) fn encode(&self, buf: &mut BytesMut, codec: &SessionCodec) -> Result<(), EncodeError> {
        let mut scratch = BytesMut::new();
        if let Some(origin) = self.origin {
            let v = match origin {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            };
            put_attribute(buf, TRANSITIVE, ORIGIN, &[v]);
        }
        if let Some(path) = &self.as_path {
            path.encode(&mut scratch, codec.four_octet_as);
            put_attribute(buf, TRANSITIVE, AS_PATH, &scratch.split());
        }
        if let Some(nh) = self.next_hop {
            put_attribute(buf, TRANSITIVE, NEXT_HOP, &nh.octets());
        }
        if let Some(med) = self.med {
            put_attribute(buf, OPTIONAL, MED, &med.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            put_attribute(buf, TRANSITIVE, LOCAL_PREF, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            put_attribute(buf, TRANSITIVE, ATOMIC_AGGREGATE, &[]);
        }
        if let Some(agg) = self.aggregator {
            if codec.four_octet_as {
                scratch.put_u32(agg.asn);
            } else {
                scratch.put_u16(u16::try_from(agg.asn).unwrap_or(AS_TRANS));
            }
            scratch.put_slice(&agg.address.octets());
            put_attribute(buf, OPTIONAL | TRANSITIVE, AGGREGATOR, &scratch.split());
        }
        if !self.communities.is_empty() {
            for c in &self.communities {
                scratch.put_u32(*c);
            }
            put_attribute(buf, OPTIONAL | TRANSITIVE, COMMUNITIES, &scratch.split());
        }
        if let Some(id) = self.originator_id {
            put_attribute(buf, OPTIONAL, ORIGINATOR_ID, &id.octets());
        }
        if !self.cluster_list.is_empty() {
            for id in &self.cluster_list {
                scratch.put_slice(&id.octets());
            }
            put_attribute(buf, OPTIONAL, CLUSTER_LIST, &scratch.split());
        }
        if let Some(mp) = &self.mp_reach {
            encode_mp_reach(mp, &mut scratch);
            put_attribute(buf, OPTIONAL, MP_REACH_NLRI, &scratch.split());
        }
        if let Some(mp) = &self.mp_unreach {
            scratch.put_u16(mp.family.afi);
            scratch.put_u8(mp.family.safi);
            for p in &mp.withdrawn {
                nlri::encode(&mut scratch, p);
            }
            put_attribute(buf, OPTIONAL, MP_UNREACH_NLRI, &scratch.split());
        }
        if !codec.four_octet_as {
            if let Some(as4) = self.as_path.as_ref().and_then(AsPath::as4_path) {
                as4.encode(&mut scratch, true);
                put_attribute(buf, OPTIONAL | TRANSITIVE, AS4_PATH, &scratch.split());
            }
            if let Some(agg) = self.aggregator.filter(|a| a.asn > 0xffff) {
                scratch.put_u32(agg.asn);
                scratch.put_slice(&agg.address.octets());
                put_attribute(buf, OPTIONAL | TRANSITIVE, AS4_AGGREGATOR, &scratch.split());
            }
        }
        if !self.large_communities.is_empty() {
            for c in &self.large_communities {
                scratch.put_u32(c.global);
                scratch.put_u32(c.local1);
                scratch.put_u32(c.local2);
            }
            put_attribute(buf, OPTIONAL | TRANSITIVE, LARGE_COMMUNITY, &scratch.split());
        }
        for u in &self.unknown {
            put_attribute(buf, u.flags, u.type_code, &u.value);
        }
        if buf.len() > usize::from(u16::MAX) {
            return Err(EncodeError::FieldTooLong { what: "path attributes", len: buf.len() });
        }
        Ok(())
    }
}

/// Writes one attribute, switching to a 2-octet length only when the value needs it.
fn put_attribute(buf: &mut BytesMut, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        buf.put_u8(flags | EXTENDED_LENGTH);
        buf.put_u8(code);
        buf.put_u16(value.len() as u16);
    } else {
        buf.put_u8(flags & !EXTENDED_LENGTH);
        buf.put_u8(code);
        buf.put_u8(value.len() as u8);
    }
    buf.put_slice(value);
}

type AttrResult<T> = Result<T, (ErrorCode, &'static str)>;

fn mp_err(reason: &'static str) -> (ErrorCode, &'static str) {
    (ErrorCode::OptionalAttributeError, reason)
}

fn decode_family_prefixes(family: Family, v: Bytes) -> AttrResult<Vec<IpNetwork>> {
    if family == Family::IPV4_UNICAST {
        let p = nlri::decode_v4(v).map_err(|e| mp_err(e.reason()))?;
        Ok(p.into_iter().map(IpNetwork::V4).collect())
    } else {
        let p = nlri::decode_v6(v).map_err(|e| mp_err(e.reason()))?;
        Ok(p.into_iter().map(IpNetwork::V6).collect())
    }
}

/// ```text
/// AFI (2) | SAFI (1) | NH len (1) | Next hop | Reserved (1) | NLRI ...
/// ```
fn decode_mp_reach(mut v: Bytes) -> AttrResult<Option<MpReach>> {
    if v.len() < 5 {
        return Err(mp_err("MP_REACH_NLRI shorter than its fixed part"));
    }
    let family = Family { afi: v.get_u16(), safi: v.get_u8() };
    let nh_len = usize::from(v.get_u8());
    if v.remaining() < nh_len + 1 {
        return Err(mp_err("MP_REACH_NLRI next hop overruns the attribute"));
    }
    let mut nh = v.split_to(nh_len);
    v.advance(1);
    if !family.is_known() {
        // Not a family we negotiate; nothing in it concerns us.
        return Ok(None);
    }
    // IPv4 NLRI may carry an IPv6 next hop (RFC 8950); IPv6 NLRI never a 4-octet one here.
    let next_hop = match nh_len {
        4 if family == Family::IPV4_UNICAST => NextHop::V4(Ipv4Addr::from(nh.get_u32())),
        16 => NextHop::V6 { global: Ipv6Addr::from(nh.get_u128()), link_local: None },
        32 => NextHop::V6 { global: Ipv6Addr::from(nh.get_u128()), link_local: Some(Ipv6Addr::from(nh.get_u128())) },
        _ => return Err(mp_err("MP_REACH_NLRI next hop length does not fit the family")),
    };
    let nlri = decode_family_prefixes(family, v)?;
    Ok(Some(MpReach { family, next_hop, nlri }))
}

fn decode_mp_unreach(mut v: Bytes) -> AttrResult<Option<MpUnreach>> {
    if v.len() < 3 {
        return Err(mp_err("MP_UNREACH_NLRI shorter than its fixed part"));
    }
    let family = Family { afi: v.get_u16(), safi: v.get_u8() };
    if !family.is_known() {
        return Ok(None);
    }
    let withdrawn = decode_family_prefixes(family, v)?;
    Ok(Some(MpUnreach { family, withdrawn }))
}

fn encode_mp_reach(mp: &MpReach, buf: &mut BytesMut) {
    buf.put_u16(mp.family.afi);
    buf.put_u8(mp.family.safi);
    match mp.next_hop {
        NextHop::V4(a) => {
            buf.put_u8(4);
            buf.put_slice(&a.octets());
        }
        NextHop::V6 { global, link_local: None } => {
            buf.put_u8(16);
            buf.put_slice(&global.octets());
        }
        NextHop::V6 { global, link_local: Some(ll) } => {
            buf.put_u8(32);
            buf.put_slice(&global.octets());
            buf.put_slice(&ll.octets());
        }
    }
    buf.put_u8(0);
    for p in &mp.nlri {
        nlri::encode(buf, p);
    }
}

/// Decodes the IPv4 withdrawn-routes or NLRI field; errors here reset (RFC 7606 5.3).
pub(crate) fn decode_v4_field(v: Bytes) -> Result<Vec<Ipv4Network>, DecodeError> {
    nlri::decode_v4(v).map_err(|e| DecodeError::new(ErrorCode::InvalidNetworkField, e.reason()))
}
