//! The message header, framing over a byte buffer, and whole-message encode/decode
//! (RFC 4271 4.1).
//!
//! ```text
//! +-----------------------------------------------+
//! |                 Marker (16 octets of 1s)      |
//! +-----------------------+-----------+-----------+
//! |     Length (2)        | Type (1)  |
//! +-----------------------+-----------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::SessionCodec;
use super::error::{AttrAction, AttrError, DecodeError, EncodeError, ErrorCode};
use super::notification::Notification;
use super::open::Open;
use super::route_refresh::RouteRefresh;
use super::update::Update;

pub const HEADER_LEN: usize = 19;
/// RFC 4271 4.1; the RFC 8654 extended message size is not negotiated.
pub const MAX_MESSAGE_LEN: usize = 4096;

pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}
use message_type::*;

// UPDATE is by far the most frequent message; boxing it would cost an allocation per UPDATE
// to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// One whole message as it came off the wire, header checked, body not yet decoded. The
/// session frames in its reader and decodes where the negotiated codec is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    /// The complete message, header included.
    pub bytes: Bytes,
}

impl Frame {
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN..)
    }
}

/// A decoded message and the RFC 7606 problems found in it that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub attr_errors: Vec<AttrError>,
}

impl Decoded {
    /// The strongest action the attribute errors call for, if any.
    pub fn action(&self) -> Option<AttrAction> {
        self.attr_errors.iter().map(|e| e.action).max()
    }
}

/// Splits one complete message off the front of `buf`, or returns `Ok(None)` until enough
/// bytes have arrived. A bad header is an error at once: waiting for more bytes would leave
/// the peer to the hold timer.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < HEADER_LEN {
        // Check what we already have of the marker so garbage is refused early.
        if buf.iter().any(|&b| b != 0xff) && buf.len() <= 16 {
            return Err(DecodeError::new(ErrorCode::ConnectionNotSynchronized, "marker is not all ones"));
        }
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::new(ErrorCode::ConnectionNotSynchronized, "marker is not all ones"));
    }
    let len_field = [buf[16], buf[17]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let kind = buf[18];
    let bad_len = || {
        DecodeError::with_data(ErrorCode::BadMessageLength, Bytes::copy_from_slice(&len_field), "message length out of range for its type")
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_len());
    }
    let min = match kind {
        OPEN => 29,
        UPDATE => 23,
        NOTIFICATION => 21,
        KEEPALIVE => 19,
        ROUTE_REFRESH => 19,
        _ => {
            return Err(DecodeError::with_data(ErrorCode::BadMessageType, Bytes::copy_from_slice(&[kind]), "unknown message type"));
        }
    };
    if len < min || (kind == KEEPALIVE && len != HEADER_LEN) {
        return Err(bad_len());
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame { kind, bytes: buf.split_to(len).freeze() }))
}

/// Decodes a framed message under the session's negotiated codec.
pub fn decode_frame(frame: &Frame, codec: &SessionCodec) -> Result<Decoded, DecodeError> {
    let body = frame.body();
    let mut attr_errors = Vec::new();
    let message = match frame.kind {
        OPEN => Message::Open(Open::decode(body)?),
        UPDATE => Message::Update(Update::decode(body, codec, &mut attr_errors)?),
        NOTIFICATION => Message::Notification(Notification::decode(body)?),
        KEEPALIVE => Message::Keepalive,
        ROUTE_REFRESH => Message::RouteRefresh(RouteRefresh::decode(body, frame.bytes.clone())?),
        other => {
            return Err(DecodeError::with_data(ErrorCode::BadMessageType, Bytes::copy_from_slice(&[other]), "unknown message type"));
        }
    };
    Ok(Decoded { message, attr_errors })
}

/// Frames and decodes one message from a complete byte slice (tests, fuzzing, fixtures).
pub fn decode(bytes: &[u8], codec: &SessionCodec) -> Result<Decoded, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    match split_frame(&mut buf)? {
        Some(frame) if buf.is_empty() => decode_frame(&frame, codec),
        _ => Err(DecodeError::new(ErrorCode::BadMessageLength, "length field disagrees with the bytes given")),
    }
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Open(_) => OPEN,
            Message::Update(_) => UPDATE,
            Message::Notification(_) => NOTIFICATION,
            Message::Keepalive => KEEPALIVE,
            Message::RouteRefresh(_) => ROUTE_REFRESH,
        }
    }

    /// Appends the encoded message to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, codec: &SessionCodec, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        buf.put_bytes(0xff, 16);
        buf.put_u16(0);
        buf.put_u8(self.kind());
        let body = match self {
            Message::Open(o) => o.encode_body(buf),
            Message::Update(u) => u.encode_body(buf, codec),
            Message::Notification(n) => {
                n.encode_body(buf);
                Ok(())
            }
            Message::Keepalive => Ok(()),
            Message::RouteRefresh(r) => {
                r.encode_body(buf);
                Ok(())
            }
        };
        let len = buf.len() - start;
        let result = match body {
            Ok(()) if len > MAX_MESSAGE_LEN => Err(EncodeError::TooLong { len, max: MAX_MESSAGE_LEN }),
            other => other,
        };
        match result {
            Ok(()) => {
                buf[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
                Ok(())
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// The encoded message as one buffer.
    pub fn to_bytes(&self, codec: &SessionCodec) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(codec, &mut buf)?;
        Ok(buf.freeze())
    }
}
