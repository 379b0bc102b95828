//! ROUTE-REFRESH (RFC 2918) with the Enhanced Route Refresh subtypes of RFC 7313.
//!
//! ```text
//! +--------+--------+--------+--------+
//! |      AFI        |Subtype |  SAFI  |
//! +--------+--------+--------+--------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, ErrorCode};
use super::family::Family;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefreshSubtype {
    /// A plain request to resend (RFC 2918); the octet was "reserved" before RFC 7313.
    Request,
    /// Beginning of Route Refresh (RFC 7313).
    Begin,
    /// End of Route Refresh (RFC 7313).
    End,
    /// RFC 7313 section 5: unknown subtypes are ignored, so we keep them for the session to drop.
    Other(u8),
}

impl RefreshSubtype {
    fn to_u8(self) -> u8 {
        match self {
            RefreshSubtype::Request => 0,
            RefreshSubtype::Begin => 1,
            RefreshSubtype::End => 2,
            RefreshSubtype::Other(v) => v,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            0 => RefreshSubtype::Request,
            1 => RefreshSubtype::Begin,
            2 => RefreshSubtype::End,
            v => RefreshSubtype::Other(v),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: RefreshSubtype,
}

impl RouteRefresh {
    pub(crate) fn decode(mut body: Bytes, whole: Bytes) -> Result<RouteRefresh, DecodeError> {
        if body.len() != 4 {
            // RFC 7313 section 5: the data is the complete ROUTE-REFRESH message.
            return Err(DecodeError::with_data(ErrorCode::InvalidRouteRefreshLength, whole, "ROUTE-REFRESH body is not 4 octets"));
        }
        let afi = body.get_u16();
        let subtype = RefreshSubtype::from_u8(body.get_u8());
        let safi = body.get_u8();
        Ok(RouteRefresh { family: Family { afi, safi }, subtype })
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u16(self.family.afi);
        buf.put_u8(self.subtype.to_u8());
        buf.put_u8(self.family.safi);
    }
}
