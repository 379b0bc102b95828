//! Sans-IO BGP-4 codec: bytes in, typed messages out, and back.
//!
//! Nothing here owns a socket or reads a clock. [`split_frame`] cuts messages out of a
//! receive buffer, [`decode_frame`] turns one into a [`Message`] under the session's
//! negotiated [`SessionCodec`], and [`Message::encode`] writes one. Every error carries the
//! NOTIFICATION it calls for; UPDATE attribute errors are classified per RFC 7606.

mod as_path;
mod attribute;
mod capability;
mod codec;
mod error;
mod error_code;
mod family;
mod message;
mod nlri;
mod notification;
mod open;
mod route_refresh;
mod update;

pub use as_path::{AsPath, Segment, SegmentType};
pub use attribute::{flag, type_code, Aggregator, LargeCommunity, MpReach, MpUnreach, NextHop, Origin, PathAttributes, UnknownAttribute};
pub use capability::{code as capability_code, AddPathFamily, AddPathMode, Capability, ExtendedNextHop, GrFamily, GracefulRestart};
pub use codec::SessionCodec;
pub use error::{AttrAction, AttrError, DecodeError, EncodeError, ErrorCode};
pub use family::Family;
pub use message::{decode, decode_frame, message_type, split_frame, Decoded, Frame, Message, HEADER_LEN, MAX_MESSAGE_LEN};
pub use nlri::encoded_len;
pub use notification::{Notification, MAX_SHUTDOWN_COMMUNICATION};
pub use open::{Open, AS_TRANS, BGP_VERSION};
pub use route_refresh::{RefreshSubtype, RouteRefresh};
pub use update::Update;
