//! The tokio driver: TCP connections, MD5 and TTL security, framing, timers. One task per
//! peer owns that peer's FSM and connections; a listener task routes accepted connections.

mod conn;
mod listener;
mod peer;
pub mod socket;

pub use listener::{Listener, UnknownConnection};
pub use peer::{
    sleep_until, spawn_counted_peer, spawn_peer, Notifications, PeerCommand, PeerConfig, PeerCounters, PeerEvent, PeerHandle, PeerSnapshot,
};
pub use socket::{interface_index, Transport, TtlMode};
