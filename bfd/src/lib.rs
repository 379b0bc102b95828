//! BFD for Gingham, sans-IO: [`packet`] encodes and checks RFC 5880 control packets, [`session`]
//! is one session's state machine with time as an input. No socket, no clock: the driver (a
//! single task for every session of a node, UDP 3784 with TTL 255 per RFC 5881) feeds packets
//! and expired timers in and carries out what comes out.
//!
//! [`driver`] (feature `runtime`, on by default) is that driver.

#[cfg(feature = "runtime")]
pub mod driver;
pub mod packet;
pub mod session;

pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use session::{Input, Output, Session, SessionConfig, Timer};
