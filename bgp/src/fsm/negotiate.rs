//! OPEN validation and capability negotiation (RFC 4271 6.2, RFC 5492, RFC 4760, RFC 6793).
//! Pure: two OPENs and the local configuration in, the negotiated session or the
//! NOTIFICATION to send out.

use std::net::Ipv4Addr;

use bytes::BytesMut;

use super::FsmConfig;
use crate::wire::{Capability, ErrorCode, Family, GracefulRestart, Notification, Open, SessionCodec};

/// What both sides agreed on. The codec of every later message derives from this, never
/// from the peer's OPEN alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// Seconds; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub four_octet_as: bool,
    pub ebgp: bool,
    /// Families both sides advertised (IPv4 unicast implied when the peer sent none).
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// RFC 8950: IPv4 unicast may be sent with an IPv6 next hop.
    pub extended_next_hop_v4: bool,
    /// The peer's graceful restart capability, as sent (RFC 4724).
    pub peer_graceful_restart: Option<GracefulRestart>,
    pub local_graceful_restart: bool,
    pub peer_hostname: Option<String>,
    /// Everything the peer advertised, for display.
    pub peer_capabilities: Vec<Capability>,
}

impl Negotiated {
    pub fn codec(&self) -> SessionCodec {
        SessionCodec::new(self.four_octet_as, self.ebgp)
    }

    /// RFC 4724 applies in both directions only when both sides sent the capability.
    pub fn graceful_restart(&self) -> bool {
        self.local_graceful_restart && self.peer_graceful_restart.is_some()
    }
}

/// Our OPEN for this peer.
pub fn local_open(config: &FsmConfig) -> Open {
    let mut caps: Vec<Capability> = config.families.iter().map(|f| Capability::Multiprotocol(*f)).collect();
    caps.push(Capability::RouteRefresh);
    caps.push(Capability::EnhancedRouteRefresh);
    caps.push(Capability::FourOctetAs(config.local_as));
    if let Some(gr) = &config.graceful_restart {
        caps.push(Capability::GracefulRestart(gr.clone()));
    }
    if config.extended_next_hop && config.families.contains(&Family::IPV4_UNICAST) {
        caps.push(Capability::ExtendedNextHop(vec![crate::wire::ExtendedNextHop { family: Family::IPV4_UNICAST, next_hop_afi: 2 }]));
    }
    if let Some(host) = &config.hostname {
        caps.push(Capability::Fqdn { hostname: host.clone(), domain: String::new() });
    }
    Open::new(config.local_as, config.hold_time, config.router_id, caps)
}

/// Validates the peer's OPEN against our configuration and negotiates the session.
///
/// Errors: the NOTIFICATION to send (Bad Peer AS, Bad BGP Identifier, Unacceptable Hold
/// Time, Unsupported Capability).
pub fn negotiate(config: &FsmConfig, peer: &Open) -> Result<Negotiated, Notification> {
    let peer_as = peer.asn();
    // RFC 7607: AS 0 is never a valid peer AS.
    if peer_as == 0 || peer_as != config.peer_as {
        return Err(ErrorCode::BadPeerAs.notification(bytes::Bytes::new()));
    }
    let ebgp = peer_as != config.local_as;
    // RFC 6286 2.2: identifiers must differ inside an AS; eBGP may share one.
    if !ebgp && peer.bgp_id == config.router_id {
        return Err(ErrorCode::BadBgpIdentifier.notification(bytes::Bytes::new()));
    }
    if peer.hold_time != 0 && peer.hold_time < config.min_hold_time {
        return Err(ErrorCode::UnacceptableHoldTime.notification(bytes::Bytes::new()));
    }
    let hold_time = if peer.hold_time == 0 || config.hold_time == 0 { 0 } else { peer.hold_time.min(config.hold_time) };

    let caps = &peer.capabilities;
    let has = |f: fn(&Capability) -> bool| caps.iter().any(f);
    let peer_families: Vec<Family> = caps
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
        .collect();
    // RFC 4760 section 8: a peer without any multiprotocol capability speaks IPv4 unicast.
    let peer_families = if peer_families.is_empty() { vec![Family::IPV4_UNICAST] } else { peer_families };
    let families: Vec<Family> = config.families.iter().copied().filter(|f| peer_families.contains(f)).collect();
    if families.is_empty() {
        // RFC 5492 section 5: name the capabilities we needed.
        let mut data = BytesMut::new();
        for f in &config.families {
            // A capability this small cannot exceed its length field.
            if let Err(e) = Capability::Multiprotocol(*f).encode_into(&mut data) {
                debug_assert!(false, "{e}");
            }
        }
        return Err(ErrorCode::UnsupportedCapability.notification(data.freeze()));
    }

    let peer_graceful_restart = caps.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr.clone()),
        _ => None,
    });
    let extended_next_hop_v4 = config.extended_next_hop
        && caps.iter().any(|c| match c {
            Capability::ExtendedNextHop(t) => t.iter().any(|t| t.family == Family::IPV4_UNICAST && t.next_hop_afi == 2),
            _ => false,
        });
    Ok(Negotiated {
        peer_as,
        peer_id: peer.bgp_id,
        hold_time,
        keepalive_time: config.keepalive_time.map_or(hold_time / 3, |k| k.clamp(1, (hold_time / 3).max(1))).min(hold_time),
        four_octet_as: has(|c| matches!(c, Capability::FourOctetAs(_))),
        ebgp,
        families,
        route_refresh: has(|c| matches!(c, Capability::RouteRefresh)),
        enhanced_route_refresh: has(|c| matches!(c, Capability::EnhancedRouteRefresh)),
        extended_next_hop_v4,
        peer_graceful_restart,
        local_graceful_restart: config.graceful_restart.is_some(),
        peer_hostname: caps.iter().find_map(|c| match c {
            Capability::Fqdn { hostname, .. } => Some(hostname.clone()),
            _ => None,
        }),
        peer_capabilities: caps.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hold(ours: u16, keepalive: Option<u16>, theirs: u16) -> Negotiated {
        let mut config = FsmConfig::new(65000, Ipv4Addr::new(198, 18, 0, 1), 65001);
        config.hold_time = ours;
        config.keepalive_time = keepalive;
        let peer = Open::new(65001, theirs, Ipv4Addr::new(198, 18, 0, 2), vec![Capability::Multiprotocol(Family::IPV4_UNICAST)]);
        negotiate(&config, &peer).unwrap()
    }

    #[test]
    fn keepalive_is_a_third_of_the_hold_time_unless_configured_lower() {
        assert_eq!(with_hold(90, None, 30).keepalive_time, 10);
        assert_eq!(with_hold(90, Some(7), 90).keepalive_time, 7);
        assert_eq!(with_hold(90, Some(60), 90).keepalive_time, 30, "never more than a third of the hold time");
        assert_eq!(with_hold(90, Some(7), 0).keepalive_time, 0, "hold time 0: no keepalives");
        assert_eq!(with_hold(3, Some(7), 3).keepalive_time, 1);
    }
}
