//! BFD -> BGP: carries the BFD driver's state changes to the speaker. Only a path failure
//! counts: Up -> Down for a reason other than the peer's AdminDown (RFC 5882 3.2 says an
//! administrative down is no failure), and our own AdminDown (a session deconfigured) is none.

use gingham_bfd::driver::Change;
use gingham_bfd::State;
use gingham_bgp::speaker::{BfdSignal, SpeakerHandle};
use tokio::sync::mpsc;

/// What the speaker is told about a change, if anything.
pub fn signal(c: &Change) -> Option<BfdSignal> {
    match (c.from, c.to) {
        (_, State::Up) => Some(BfdSignal::Up),
        (State::Up, State::Down) if !c.peer_admin_down => Some(BfdSignal::Down { remote_cpi: c.remote_cpi }),
        _ => None,
    }
}

pub async fn forward(mut changes: mpsc::UnboundedReceiver<Change>, speaker: SpeakerHandle) {
    while let Some(c) = changes.recv().await {
        let Some(signal) = signal(&c) else { continue };
        if speaker.bfd_changed(c.peer, signal).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_bfd::Diagnostic;

    fn change(from: State, to: State, peer_admin_down: bool) -> Change {
        Change { peer: "198.18.0.1".parse().unwrap(), from, to, diagnostic: Diagnostic::None, peer_admin_down, remote_cpi: true }
    }

    #[test]
    fn only_up_and_a_failure_of_an_up_session_reach_bgp() {
        assert_eq!(signal(&change(State::Init, State::Up, false)), Some(BfdSignal::Up));
        assert_eq!(signal(&change(State::Down, State::Up, false)), Some(BfdSignal::Up));
        assert_eq!(signal(&change(State::Up, State::Down, false)), Some(BfdSignal::Down { remote_cpi: true }));
        assert_eq!(signal(&change(State::Up, State::Down, true)), None, "the peer's AdminDown is no failure");
        assert_eq!(signal(&change(State::Up, State::AdminDown, false)), None, "ours neither");
        assert_eq!(signal(&change(State::Init, State::Down, false)), None, "never Up: nothing to tear down");
        assert_eq!(signal(&change(State::Down, State::Init, false)), None);
    }
}
