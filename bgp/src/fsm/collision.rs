//! Connection collision resolution (RFC 4271 6.8, RFC 6286 2.3).
//!
//! When both speakers open a connection at once, both sides must keep the *same* one: the
//! connection initiated by the speaker with the higher BGP Identifier. With identical
//! identifiers (legal only between ASes) the speaker with the larger AS number wins.

use std::net::Ipv4Addr;

use super::Direction;

/// Which connection survives, named by who initiated it from our point of view.
pub fn survivor(local_id: Ipv4Addr, local_as: u32, peer_id: Ipv4Addr, peer_as: u32) -> Direction {
    let local_wins = match u32::from(local_id).cmp(&u32::from(peer_id)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => local_as > peer_as,
    };
    if local_wins {
        Direction::Outgoing
    } else {
        Direction::Incoming
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_pick_the_same_tcp_connection() {
        let a: Ipv4Addr = "198.18.0.11".parse().unwrap();
        let b: Ipv4Addr = "198.18.0.12".parse().unwrap();
        // A's outgoing connection is B's incoming one: they must agree on it.
        assert_eq!(survivor(a, 65000, b, 65000), Direction::Incoming);
        assert_eq!(survivor(b, 65000, a, 65000), Direction::Outgoing);
        // Same identifier across ASes: the larger AS's connection survives.
        assert_eq!(survivor(a, 65001, a, 65002), Direction::Incoming);
        assert_eq!(survivor(a, 65002, a, 65001), Direction::Outgoing);
    }
}
