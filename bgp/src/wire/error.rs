//! Decode errors and their consequences.
//!
//! Every error the decoder can report carries the NOTIFICATION it calls for (RFC 4271 section 6,
//! RFC 6608, RFC 7313), so the session never has to guess a code. Errors inside UPDATE path
//! attributes that RFC 7606 says must *not* reset the session are returned as data
//! ([`AttrError`]) next to the decoded message.

use bytes::Bytes;
use thiserror::Error;

use super::notification::Notification;

/// A NOTIFICATION error code and subcode pair, named as in the RFCs that define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // 1: Message Header Error (RFC 4271 6.1)
    ConnectionNotSynchronized,
    BadMessageLength,
    BadMessageType,
    // 2: OPEN Message Error (RFC 4271 6.2, RFC 5492)
    OpenUnspecific,
    UnsupportedVersionNumber,
    BadPeerAs,
    BadBgpIdentifier,
    UnsupportedOptionalParameter,
    UnacceptableHoldTime,
    UnsupportedCapability,
    // 3: UPDATE Message Error (RFC 4271 6.3)
    MalformedAttributeList,
    UnrecognizedWellKnownAttribute,
    MissingWellKnownAttribute,
    AttributeFlagsError,
    AttributeLengthError,
    InvalidOriginAttribute,
    InvalidNextHopAttribute,
    OptionalAttributeError,
    InvalidNetworkField,
    MalformedAsPath,
    // 4: Hold Timer Expired
    HoldTimerExpired,
    // 5: Finite State Machine Error (RFC 6608)
    FsmUnexpectedInOpenSent,
    FsmUnexpectedInOpenConfirm,
    FsmUnexpectedInEstablished,
    // 6: Cease (RFC 4486, RFC 8538)
    MaximumPrefixesReached,
    AdministrativeShutdown,
    PeerDeconfigured,
    AdministrativeReset,
    ConnectionRejected,
    OtherConfigurationChange,
    ConnectionCollisionResolution,
    OutOfResources,
    HardReset,
    // 7: ROUTE-REFRESH Message Error (RFC 7313)
    InvalidRouteRefreshLength,
    // 8: Send Hold Timer Expired (RFC 9687)
    SendHoldTimerExpired,
}

impl ErrorCode {
    /// The (code, subcode) pair on the wire.
    pub fn code_subcode(self) -> (u8, u8) {
        use ErrorCode::*;
        match self {
            ConnectionNotSynchronized => (1, 1),
            BadMessageLength => (1, 2),
            BadMessageType => (1, 3),
            OpenUnspecific => (2, 0),
            UnsupportedVersionNumber => (2, 1),
            BadPeerAs => (2, 2),
            BadBgpIdentifier => (2, 3),
            UnsupportedOptionalParameter => (2, 4),
            UnacceptableHoldTime => (2, 6),
            UnsupportedCapability => (2, 7),
            MalformedAttributeList => (3, 1),
            UnrecognizedWellKnownAttribute => (3, 2),
            MissingWellKnownAttribute => (3, 3),
            AttributeFlagsError => (3, 4),
            AttributeLengthError => (3, 5),
            InvalidOriginAttribute => (3, 6),
            InvalidNextHopAttribute => (3, 8),
            OptionalAttributeError => (3, 9),
            InvalidNetworkField => (3, 10),
            MalformedAsPath => (3, 11),
            HoldTimerExpired => (4, 0),
            FsmUnexpectedInOpenSent => (5, 1),
            FsmUnexpectedInOpenConfirm => (5, 2),
            FsmUnexpectedInEstablished => (5, 3),
            MaximumPrefixesReached => (6, 1),
            AdministrativeShutdown => (6, 2),
            PeerDeconfigured => (6, 3),
            AdministrativeReset => (6, 4),
            ConnectionRejected => (6, 5),
            OtherConfigurationChange => (6, 6),
            ConnectionCollisionResolution => (6, 7),
            OutOfResources => (6, 8),
            HardReset => (6, 9),
            InvalidRouteRefreshLength => (7, 1),
            SendHoldTimerExpired => (8, 0),
        }
    }

    /// A NOTIFICATION carrying this code and `data`.
    pub fn notification(self, data: impl Into<Bytes>) -> Notification {
        let (code, subcode) = self.code_subcode();
        Notification { code, subcode, data: data.into() }
    }
}

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

    /// The NOTIFICATION to send before closing.
    pub fn notification(&self) -> Notification {
        self.code.notification(self.data.clone())
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
