//! NOTIFICATION error codes and subcodes (RFC 4271 section 4.5 and the RFCs that added to it),
//! written once: the enum, the wire pair of each name and the name of each pair all come from
//! the one table below (a pair listed twice does not compile: its match arm is unreachable).

macro_rules! error_codes {
    ($($name:ident = ($code:literal, $subcode:literal),)*) => {
        /// A NOTIFICATION error code and subcode pair, named as in the RFCs that define them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($name,)*
        }

        impl ErrorCode {
            /// Every named pair, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The (code, subcode) pair on the wire.
            pub fn code_subcode(self) -> (u8, u8) {
                match self {
                    $(ErrorCode::$name => ($code, $subcode),)*
                }
            }

            /// The name of a pair, when it has one.
            pub fn from_pair(code: u8, subcode: u8) -> Option<ErrorCode> {
                #[deny(unreachable_patterns)]
                match (code, subcode) {
                    $(($code, $subcode) => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // 1: Message Header Error (RFC 4271 6.1)
    ConnectionNotSynchronized = (1, 1),
    BadMessageLength = (1, 2),
    BadMessageType = (1, 3),
    // 2: OPEN Message Error (RFC 4271 6.2, RFC 5492)
    OpenUnspecific = (2, 0),
    UnsupportedVersionNumber = (2, 1),
    BadPeerAs = (2, 2),
    BadBgpIdentifier = (2, 3),
    UnsupportedOptionalParameter = (2, 4),
    UnacceptableHoldTime = (2, 6),
    UnsupportedCapability = (2, 7),
    // 3: UPDATE Message Error (RFC 4271 6.3)
    MalformedAttributeList = (3, 1),
    UnrecognizedWellKnownAttribute = (3, 2),
    MissingWellKnownAttribute = (3, 3),
    AttributeFlagsError = (3, 4),
    AttributeLengthError = (3, 5),
    InvalidOriginAttribute = (3, 6),
    InvalidNextHopAttribute = (3, 8),
    OptionalAttributeError = (3, 9),
    InvalidNetworkField = (3, 10),
    MalformedAsPath = (3, 11),
    // 4: Hold Timer Expired
    HoldTimerExpired = (4, 0),
    // 5: Finite State Machine Error (RFC 6608)
    FsmUnexpectedInOpenSent = (5, 1),
    FsmUnexpectedInOpenConfirm = (5, 2),
    FsmUnexpectedInEstablished = (5, 3),
    // 6: Cease (RFC 4486, RFC 8538, RFC 9384)
    MaximumPrefixesReached = (6, 1),
    AdministrativeShutdown = (6, 2),
    PeerDeconfigured = (6, 3),
    AdministrativeReset = (6, 4),
    ConnectionRejected = (6, 5),
    OtherConfigurationChange = (6, 6),
    ConnectionCollisionResolution = (6, 7),
    OutOfResources = (6, 8),
    HardReset = (6, 9),
    BfdDown = (6, 10),
    // 7: ROUTE-REFRESH Message Error (RFC 7313)
    InvalidRouteRefreshLength = (7, 1),
    // 8: Send Hold Timer Expired (RFC 9687)
    SendHoldTimerExpired = (8, 0),
}
