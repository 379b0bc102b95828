//! The speaker's procedures beside the session FSM, sans-IO: graceful restart as the receiving
//! speaker (RFC 4724 4.2), End-of-RIB bookkeeping and the end of our own restart (RFC 4724 4.1),
//! enhanced route refresh (RFC 7313) and the prefix limit (RFC 4486).
//!
//! Each one is a plain state machine with the same timer discipline as [`crate::fsm`]: it asks
//! for a timer with [`TimerOp::Start`] (which replaces a running one of the same kind), cancels
//! it with [`TimerOp::Stop`], and is told of an expiry by a call; it never reads a clock. The
//! speaker's owner task is the driver: it keeps one deadline per timer kind and peer, applies
//! the actions to the RIB and the sessions, and nothing else.

pub mod convergence;
pub mod graceful;
pub mod max_prefix;
pub mod refresh;

use std::time::Duration;

/// A timer request from a procedure; the driver knows which peer (if any) it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerOp {
    /// Fire after this long, replacing the running timer of the same kind.
    Start(Duration),
    Stop,
}
