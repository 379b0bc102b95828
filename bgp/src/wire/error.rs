//! Decode errors and their consequences.
//!
//! Every error the decoder can report carries the NOTIFICATION it calls for (RFC 4271 section 6,
//! RFC 6608, RFC 7313), so the session never has to guess a code. Errors inside UPDATE path
//! attributes that RFC 7606 says must *not* reset the session are returned as data
//! ([`AttrError`]) next to the decoded message.

use bytes::Bytes;
use thiserror::Error;

pub use super::error_code::ErrorCode;

/// What RFC 7606 says to do about a malformed attribute, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrAction {
    /// Drop the attribute, keep the route (RFC 7606 section 2).
    AttributeDiscard,
    /// Keep the session, but every prefix the UPDATE announces is withdrawn instead.
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close the session.
    SessionReset,
}

/// One attribute problem that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError {
    pub type_code: u8,
    pub action: AttrAction,
    /// The NOTIFICATION RFC 4271 would have sent, kept for logs and counters.
    pub code: ErrorCode,
    pub reason: &'static str,
}

/// A decode failure that ends the session with `code`'s NOTIFICATION.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{reason} (NOTIFICATION {code:?})")]
pub struct DecodeError {
    pub code: ErrorCode,
    /// The NOTIFICATION's data field, as the RFC asks for this error.
    pub data: Bytes,
    pub reason: &'static str,
}

impl DecodeError {
    pub(crate) fn new(code: ErrorCode, reason: &'static str) -> Self {
        DecodeError { code, data: Bytes::new(), reason }
    }

    pub(crate) fn with_data(code: ErrorCode, data: impl Into<Bytes>, reason: &'static str) -> Self {
        DecodeError { code, data: data.into(), reason }
    }
}

/// Encoding can only fail by exceeding what the wire can carry.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("message of {len} octets exceeds the {max}-octet BGP maximum")]
    TooLong { len: usize, max: usize },
    #[error("{what} of {len} octets does not fit its length field")]
    FieldTooLong { what: &'static str, len: usize },
}
