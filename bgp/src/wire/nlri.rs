//! Prefix encoding shared by the UPDATE NLRI fields and MP_(UN)REACH_NLRI (RFC 4271 4.3).
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet, bits)  |
//! +---------------------------+
//! |   Prefix (ceil(len/8))    |
//! +---------------------------+
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// Why a prefix field could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrefixError {
    TooLong,
    Truncated,
}

impl PrefixError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PrefixError::TooLong => "prefix length exceeds the address size",
            PrefixError::Truncated => "prefix runs past the end of its field",
        }
    }
}

fn read_prefix<const N: usize>(buf: &mut Bytes) -> Result<([u8; N], u8), PrefixError> {
    let len = buf.get_u8();
    if usize::from(len) > N * 8 {
        return Err(PrefixError::TooLong);
    }
    let octets = usize::from(len).div_ceil(8);
    if buf.remaining() < octets {
        return Err(PrefixError::Truncated);
    }
    let mut addr = [0u8; N];
    buf.copy_to_slice(&mut addr[..octets]);
    // Bits past the prefix length are "irrelevant" (RFC 4271 4.3); clear them so equal
    // prefixes compare equal.
    if !len.is_multiple_of(8) {
        addr[octets - 1] &= 0xffu8 << (8 - len % 8);
    }
    Ok((addr, len))
}

pub(crate) fn decode_v4(mut buf: Bytes) -> Result<Vec<Ipv4Network>, PrefixError> {
    let mut out = Vec::with_capacity(buf.len() / 4);
    while buf.has_remaining() {
        let (addr, len) = read_prefix::<4>(&mut buf)?;
        out.push(Ipv4Network::new(Ipv4Addr::from(addr), len).map_err(|_| PrefixError::TooLong)?);
    }
    Ok(out)
}

pub(crate) fn decode_v6(mut buf: Bytes) -> Result<Vec<Ipv6Network>, PrefixError> {
    let mut out = Vec::with_capacity(buf.len() / 8);
    while buf.has_remaining() {
        let (addr, len) = read_prefix::<16>(&mut buf)?;
        out.push(Ipv6Network::new(Ipv6Addr::from(addr), len).map_err(|_| PrefixError::TooLong)?);
    }
    Ok(out)
}

pub(crate) fn encode(buf: &mut BytesMut, prefix: &IpNetwork) {
    let len = prefix.prefix();
    let octets = usize::from(len).div_ceil(8);
    buf.put_u8(len);
    match prefix.network() {
        std::net::IpAddr::V4(a) => buf.put_slice(&a.octets()[..octets]),
        std::net::IpAddr::V6(a) => buf.put_slice(&a.octets()[..octets]),
    }
}

pub(crate) fn encode_v4(buf: &mut BytesMut, prefix: &Ipv4Network) {
    encode(buf, &IpNetwork::V4(*prefix))
}

/// The octets `prefix` takes in an NLRI field.
pub fn encoded_len(prefix: &IpNetwork) -> usize {
    1 + usize::from(prefix.prefix()).div_ceil(8)
}
