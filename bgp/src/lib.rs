//! Gingham's BGP speaker.
//!
//! - [`wire`]: sans-IO codec (RFC 4271 messages, capabilities, path attributes, RFC 7606).
//! - [`fsm`]: sans-IO session state machine (RFC 4271 section 8) with collision detection
//!   and damping; timers are inputs and outputs, never clocks.
//! - [`procedures`]: sans-IO graceful restart, End-of-RIB, route refresh and prefix limits, with
//!   the same timer discipline.
//! - `session` (feature `runtime`): the tokio driver: TCP, MD5, TTL security, framing, timers.
#![deny(rustdoc::broken_intra_doc_links)]

pub mod counting_alloc;
pub mod fsm;
pub mod procedures;
pub mod rib;
#[cfg(feature = "runtime")]
pub mod session;
#[cfg(feature = "runtime")]
pub mod speaker;
pub mod wire;
