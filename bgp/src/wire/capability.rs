//! Capabilities advertisement (RFC 5492) and the capabilities Gingham understands.
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! +------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError, ErrorCode};
use super::family::Family;

pub mod code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const FQDN: u8 = 73;
}

/// Per-family state in the graceful restart capability (RFC 4724 section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrFamily {
    pub family: Family,
    /// The F bit: forwarding state for this family survived the restart.
    pub forwarding_preserved: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the sender has just restarted.
    pub restart_state: bool,
    /// The N bit (RFC 8538): graceful restart also applies to NOTIFICATIONs.
    pub notification: bool,
    /// Seconds; 12 bits on the wire.
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    Receive,
    Send,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddPathFamily {
    pub family: Family,
    pub mode: AddPathMode,
}

/// One RFC 8950 tuple: NLRI of `family` may carry a next hop of `next_hop_afi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedNextHop {
    pub family: Family,
    pub next_hop_afi: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    EnhancedRouteRefresh,
    FourOctetAs(u32),
    GracefulRestart(GracefulRestart),
    ExtendedNextHop(Vec<ExtendedNextHop>),
    AddPath(Vec<AddPathFamily>),
    Fqdn {
        hostname: String,
        domain: String,
    },
    /// Anything else, kept as received so it can be logged and shown.
    Unknown {
        code: u8,
        value: Bytes,
    },
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::new(ErrorCode::OpenUnspecific, reason)
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::ExtendedNextHop(_) => code::EXTENDED_NEXT_HOP,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::Fqdn { .. } => code::FQDN,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decodes every capability in one Capabilities optional parameter.
    pub(crate) fn decode_all(mut buf: Bytes, out: &mut Vec<Capability>) -> Result<(), DecodeError> {
        while buf.has_remaining() {
            if buf.remaining() < 2 {
                return Err(malformed("truncated capability header"));
            }
            let code = buf.get_u8();
            let len = usize::from(buf.get_u8());
            if buf.remaining() < len {
                return Err(malformed("capability length overruns its parameter"));
            }
            out.push(Self::decode_one(code, buf.split_to(len))?);
        }
        Ok(())
    }

    fn decode_one(code: u8, mut v: Bytes) -> Result<Capability, DecodeError> {
        // Capabilities that change how messages are parsed are strict: guessing wrong would
        // misread every UPDATE. Informational ones (FQDN) fall back to Unknown instead.
        Ok(match code {
            code::MULTIPROTOCOL => {
                if v.len() != 4 {
                    return Err(malformed("multiprotocol capability is not 4 octets"));
                }
                let afi = v.get_u16();
                v.advance(1);
                Capability::Multiprotocol(Family { afi, safi: v.get_u8() })
            }
            // RFC 2918 gives these no value; a stray value does not change their meaning.
            code::ROUTE_REFRESH => Capability::RouteRefresh,
            code::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
            code::FOUR_OCTET_AS => {
                if v.len() != 4 {
                    return Err(malformed("4-octet AS capability is not 4 octets"));
                }
                Capability::FourOctetAs(v.get_u32())
            }
            code::GRACEFUL_RESTART => {
                if v.len() < 2 || !(v.len() - 2).is_multiple_of(4) {
                    return Err(malformed("graceful restart capability has a bad length"));
                }
                let word = v.get_u16();
                let mut families = Vec::with_capacity(v.len() / 4);
                while v.has_remaining() {
                    let afi = v.get_u16();
                    let safi = v.get_u8();
                    let flags = v.get_u8();
                    families.push(GrFamily { family: Family { afi, safi }, forwarding_preserved: flags & 0x80 != 0 });
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: word & 0x8000 != 0,
                    notification: word & 0x4000 != 0,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            code::EXTENDED_NEXT_HOP => {
                if !v.len().is_multiple_of(6) {
                    return Err(malformed("extended next hop capability has a bad length"));
                }
                let mut tuples = Vec::with_capacity(v.len() / 6);
                while v.has_remaining() {
                    let afi = v.get_u16();
                    let safi = v.get_u16();
                    let next_hop_afi = v.get_u16();
                    let Ok(safi) = u8::try_from(safi) else {
                        return Err(malformed("extended next hop SAFI above 255"));
                    };
                    tuples.push(ExtendedNextHop { family: Family { afi, safi }, next_hop_afi });
                }
                Capability::ExtendedNextHop(tuples)
            }
            code::ADD_PATH => {
                if !v.len().is_multiple_of(4) {
                    return Err(malformed("add-path capability has a bad length"));
                }
                let mut families = Vec::with_capacity(v.len() / 4);
                while v.has_remaining() {
                    let afi = v.get_u16();
                    let safi = v.get_u8();
                    let mode = match v.get_u8() {
                        1 => AddPathMode::Receive,
                        2 => AddPathMode::Send,
                        3 => AddPathMode::Both,
                        _ => return Err(malformed("add-path send/receive value not 1, 2 or 3")),
                    };
                    families.push(AddPathFamily { family: Family { afi, safi }, mode });
                }
                Capability::AddPath(families)
            }
            code::FQDN => match decode_fqdn(v.clone()) {
                Some((hostname, domain)) => Capability::Fqdn { hostname, domain },
                None => Capability::Unknown { code, value: v },
            },
            _ => Capability::Unknown { code, value: v },
        })
    }

    /// Appends the capability TLV to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        buf.put_u8(self.code());
        buf.put_u8(0);
        match self {
            Capability::Multiprotocol(f) => {
                buf.put_u16(f.afi);
                buf.put_u8(0);
                buf.put_u8(f.safi);
            }
            Capability::RouteRefresh | Capability::EnhancedRouteRefresh => {}
            Capability::FourOctetAs(asn) => buf.put_u32(*asn),
            Capability::GracefulRestart(gr) => {
                let mut word = gr.restart_time & 0x0fff;
                if gr.restart_state {
                    word |= 0x8000;
                }
                if gr.notification {
                    word |= 0x4000;
                }
                buf.put_u16(word);
                for f in &gr.families {
                    buf.put_u16(f.family.afi);
                    buf.put_u8(f.family.safi);
                    buf.put_u8(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::ExtendedNextHop(tuples) => {
                for t in tuples {
                    buf.put_u16(t.family.afi);
                    buf.put_u16(u16::from(t.family.safi));
                    buf.put_u16(t.next_hop_afi);
                }
            }
            Capability::AddPath(families) => {
                for f in families {
                    buf.put_u16(f.family.afi);
                    buf.put_u8(f.family.safi);
                    buf.put_u8(match f.mode {
                        AddPathMode::Receive => 1,
                        AddPathMode::Send => 2,
                        AddPathMode::Both => 3,
                    });
                }
            }
            Capability::Fqdn { hostname, domain } => {
                for s in [hostname, domain] {
                    let len =
                        u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong { what: "FQDN capability name", len: s.len() })?;
                    buf.put_u8(len);
                    buf.put_slice(s.as_bytes());
                }
            }
            Capability::Unknown { value, .. } => buf.put_slice(value),
        }
        let len = buf.len() - start - 2;
        buf[start + 1] = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong { what: "capability", len })?;
        Ok(())
    }
}

fn decode_fqdn(mut v: Bytes) -> Option<(String, String)> {
    let read = |v: &mut Bytes| -> Option<String> {
        if !v.has_remaining() {
            return None;
        }
        let len = usize::from(v.get_u8());
        if v.remaining() < len {
            return None;
        }
        String::from_utf8(v.split_to(len).to_vec()).ok()
    };
    let host = read(&mut v)?;
    let domain = read(&mut v)?;
    v.is_empty().then_some((host, domain))
}
