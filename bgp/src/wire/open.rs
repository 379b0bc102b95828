//! OPEN (RFC 4271 4.2) with RFC 9072 extended optional parameters.
//!
//! ```text
//! +-----------+-------------+-----------+-------------------+-------------+------------+
//! | Version 1 | My AS (2)   | Hold (2)  | BGP Identifier(4) | Opt Len (1) | Opt Params |
//! +-----------+-------------+-----------+-------------------+-------------+------------+
//! ```
//! RFC 9072: when Opt Len is 255 and the first parameter type is 255, a 2-octet length
//! follows and every parameter has a 2-octet length.

use std::net::Ipv4Addr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::capability::Capability;
use super::error::{DecodeError, EncodeError, ErrorCode};

pub const BGP_VERSION: u8 = 4;
/// RFC 6793: stands in for a 4-octet AS number in 2-octet fields.
pub const AS_TRANS: u16 = 23456;
const PARAM_CAPABILITIES: u8 = 2;
const EXTENDED_PARAMS: u8 = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet My AS field; AS_TRANS when the real AS needs 4 octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`, with the 4-octet AS capability appended when not already present.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, mut capabilities: Vec<Capability>) -> Open {
        if !capabilities.iter().any(|c| matches!(c, Capability::FourOctetAs(_))) {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Open { version: BGP_VERSION, my_as: u16::try_from(asn).unwrap_or(AS_TRANS), hold_time, bgp_id, capabilities }
    }

    /// The sender's AS: the 4-octet capability when present (RFC 6793 section 4.1).
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub(crate) fn decode(mut body: Bytes) -> Result<Open, DecodeError> {
        if body.len() < 10 {
            return Err(DecodeError::new(ErrorCode::BadMessageLength, "OPEN shorter than 29 octets"));
        }
        let version = body.get_u8();
        if version != BGP_VERSION {
            // RFC 4271 6.2: the data is the largest version we support, as 2 octets.
            return Err(DecodeError::with_data(
                ErrorCode::UnsupportedVersionNumber,
                Bytes::from_static(&[0, BGP_VERSION]),
                "BGP version is not 4",
            ));
        }
        let my_as = body.get_u16();
        let hold_time = body.get_u16();
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::new(ErrorCode::UnacceptableHoldTime, "hold time of 1 or 2 seconds"));
        }
        let bgp_id = Ipv4Addr::from(body.get_u32());
        if bgp_id.is_unspecified() {
            // RFC 6286 section 2.2: zero is the one identifier that is never valid.
            return Err(DecodeError::new(ErrorCode::BadBgpIdentifier, "BGP identifier is 0"));
        }
        let opt_len = usize::from(body.get_u8());
        let extended = opt_len == 255 && body.first() == Some(&EXTENDED_PARAMS);
        let mut params = if extended {
            body.advance(1);
            if body.remaining() < 2 {
                return Err(DecodeError::new(ErrorCode::BadMessageLength, "truncated extended parameter length"));
            }
            let len = usize::from(body.get_u16());
            if len != body.remaining() {
                return Err(DecodeError::new(ErrorCode::BadMessageLength, "extended parameter length disagrees with message"));
            }
            body
        } else {
            if opt_len != body.remaining() {
                return Err(DecodeError::new(ErrorCode::BadMessageLength, "optional parameter length disagrees with message"));
            }
            body
        };
        let mut capabilities = Vec::new();
        while params.has_remaining() {
            let header = if extended { 3 } else { 2 };
            if params.remaining() < header {
                return Err(DecodeError::new(ErrorCode::OpenUnspecific, "truncated optional parameter"));
            }
            let kind = params.get_u8();
            let len = if extended { usize::from(params.get_u16()) } else { usize::from(params.get_u8()) };
            if params.remaining() < len {
                return Err(DecodeError::new(ErrorCode::OpenUnspecific, "optional parameter overruns the message"));
            }
            let value = params.split_to(len);
            if kind != PARAM_CAPABILITIES {
                return Err(DecodeError::new(ErrorCode::UnsupportedOptionalParameter, "optional parameter other than capabilities"));
            }
            Capability::decode_all(value, &mut capabilities)?;
        }
        Ok(Open { version, my_as, hold_time, bgp_id, capabilities })
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u8(self.version);
        buf.put_u16(self.my_as);
        buf.put_u16(self.hold_time);
        buf.put_u32(u32::from(self.bgp_id));
        let mut caps = BytesMut::new();
        for c in &self.capabilities {
            c.encode_into(&mut caps)?;
        }
        if caps.is_empty() {
            buf.put_u8(0);
        } else if caps.len() + 2 <= 254 {
            // One Capabilities parameter holding them all, as BIRD and GoBGP send it. 255 is
            // avoided because RFC 9072 reserves it as the extended-format marker.
            buf.put_u8((caps.len() + 2) as u8);
            buf.put_u8(PARAM_CAPABILITIES);
            buf.put_u8(caps.len() as u8);
            buf.put_slice(&caps);
        } else {
            let len = u16::try_from(caps.len() + 3)
                .map_err(|_| EncodeError::FieldTooLong { what: "OPEN optional parameters", len: caps.len() })?;
            buf.put_u8(255);
            buf.put_u8(EXTENDED_PARAMS);
            buf.put_u16(len);
            buf.put_u8(PARAM_CAPABILITIES);
            buf.put_u16(caps.len() as u16);
            buf.put_slice(&caps);
        }
        Ok(())
    }
}
