//! UPDATE (RFC 4271 4.3) and End-of-RIB markers (RFC 4724 section 2).
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! |   Withdrawn Routes (variable)                       |
//! |   Total Path Attribute Length (2 octets)            |
//! |   Path Attributes (variable)                        |
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ipnetwork::{IpNetwork, Ipv4Network};

use super::attribute::{decode_v4_field, MpUnreach, PathAttributes};
use super::codec::SessionCodec;
use super::error::{AttrAction, AttrError, DecodeError, EncodeError, ErrorCode};
use super::family::Family;
use super::nlri;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Network>,
    pub attributes: PathAttributes,
    pub nlri: Vec<Ipv4Network>,
}

impl Update {
    /// The End-of-RIB marker for `family`: an empty UPDATE for IPv4 unicast, an empty
    /// MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(family: Family) -> Update {
        let mut u = Update::default();
        if family != Family::IPV4_UNICAST {
            u.attributes.mp_unreach = Some(MpUnreach { family, withdrawn: Vec::new() });
        }
        u
    }

    /// The family this UPDATE marks the End-of-RIB of, if it is such a marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        if a == &PathAttributes::default() {
            return Some(Family::IPV4_UNICAST);
        }
        let only_unreach = PathAttributes { mp_unreach: a.mp_unreach.clone(), ..Default::default() };
        match &a.mp_unreach {
            Some(mp) if mp.withdrawn.is_empty() && *a == only_unreach => Some(mp.family),
            _ => None,
        }
    }

    /// Every prefix this UPDATE announces, IPv4 field first, then MP_REACH_NLRI.
    pub fn announced(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let mp = self.attributes.mp_reach.iter().flat_map(|m| m.nlri.iter().copied());
        self.nlri.iter().copied().map(IpNetwork::V4).chain(mp)
    }

    /// Every prefix this UPDATE withdraws.
    pub fn withdrawn_prefixes(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let mp = self.attributes.mp_unreach.iter().flat_map(|m| m.withdrawn.iter().copied());
        self.withdrawn.iter().copied().map(IpNetwork::V4).chain(mp)
    }

    /// RFC 7606 treat-as-withdraw: every announced prefix becomes a withdrawal and the
    /// attributes are dropped.
    pub fn into_withdraw_all(self) -> Vec<IpNetwork> {
        let mut out: Vec<IpNetwork> = self.withdrawn_prefixes().collect();
        out.extend(self.announced());
        out
    }

    pub(crate) fn decode(mut body: Bytes, codec: &SessionCodec, errors: &mut Vec<AttrError>) -> Result<Update, DecodeError> {
        let malformed = |reason| DecodeError::new(ErrorCode::MalformedAttributeList, reason);
        if body.remaining() < 2 {
            return Err(malformed("UPDATE too short for the withdrawn routes length"));
        }
        let wlen = usize::from(body.get_u16());
        if body.remaining() < wlen + 2 {
            return Err(malformed("withdrawn routes length overruns the message"));
        }
        let withdrawn = decode_v4_field(body.split_to(wlen))?;
        let alen = usize::from(body.get_u16());
        if body.remaining() < alen {
            return Err(malformed("total path attribute length overruns the message"));
        }
        let attr_bytes = body.split_to(alen);
        let nlri = decode_v4_field(body)?;
        let first_error = errors.len();
        let attributes = PathAttributes::decode(attr_bytes, codec, errors)?;
        let update = Update { withdrawn, attributes, nlri };
        update.check_mandatory(errors, first_error);
        Ok(update)
    }

    /// RFC 7606 3 (d): a missing well-known attribute is treat-as-withdraw, and only matters
    /// when something is announced. The check is skipped when the list was already found
    /// unreliable, so one cause is reported once.
    fn check_mandatory(&self, errors: &mut Vec<AttrError>, first_error: usize) {
        if errors[first_error..].iter().any(|e| e.action == AttrAction::TreatAsWithdraw) {
            return;
        }
        let a = &self.attributes;
        let has_v4 = !self.nlri.is_empty();
        let has_mp = a.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
        if !has_v4 && !has_mp {
            return;
        }
        let missing = if a.origin.is_none() {
            Some(super::attribute::type_code::ORIGIN)
        } else if a.as_path.is_none() {
            Some(super::attribute::type_code::AS_PATH)
        } else if has_v4 && a.next_hop.is_none() {
            Some(super::attribute::type_code::NEXT_HOP)
        } else {
            None
        };
        if let Some(type_code) = missing {
            errors.push(AttrError {
                type_code,
                action: AttrAction::TreatAsWithdraw,
                code: ErrorCode::MissingWellKnownAttribute,
                reason: "well-known mandatory attribute missing",
            });
        }
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut, codec: &SessionCodec) -> Result<(), EncodeError> {
        let wstart = buf.len();
        buf.put_u16(0);
        for p in &self.withdrawn {
            nlri::encode_v4(buf, p);
        }
        let wlen = buf.len() - wstart - 2;
        buf[wstart..wstart + 2].copy_from_slice(&(wlen as u16).to_be_bytes());
        let astart = buf.len();
        buf.put_u16(0);
        let mut attrs = BytesMut::new();
        self.attributes.encode(&mut attrs, codec)?;
        buf.put_slice(&attrs);
        buf[astart..astart + 2].copy_from_slice(&(attrs.len() as u16).to_be_bytes());
        for p in &self.nlri {
            nlri::encode_v4(buf, p);
        }
        Ok(())
    }
}
