//! Update packing: prefixes that leave with identical attributes share one UPDATE, filled up
//! to the 4096-octet message limit; withdrawals are packed the same way.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use ipnetwork::{IpNetwork, Ipv4Network};

use crate::wire::{encoded_len, Family, Message, MpUnreach, PathAttributes, SessionCodec, Update, HEADER_LEN, MAX_MESSAGE_LEN};

/// Room for NLRI once the header, the two length fields and the attributes are written,
/// keeping a few octets for MP_REACH_NLRI switching to an extended length.
fn nlri_room(attrs_len: usize) -> usize {
    MAX_MESSAGE_LEN.saturating_sub(HEADER_LEN + 4 + attrs_len + 4)
}

/// Builds UPDATEs for `announce` (grouped by attribute set) and `withdraw`.
pub fn pack(announce: Vec<(IpNetwork, Arc<PathAttributes>)>, withdraw: Vec<IpNetwork>, codec: &SessionCodec) -> Vec<Update> {
    let mut out = Vec::new();
    pack_withdrawals(withdraw, &mut out);

    // Group by attribute set, in first-seen order so output is deterministic.
    let mut order: Vec<Arc<PathAttributes>> = Vec::new();
    let mut groups: HashMap<*const PathAttributes, Vec<IpNetwork>> = HashMap::new();
    for (prefix, attrs) in announce {
        groups
            .entry(Arc::as_ptr(&attrs))
            .or_insert_with(|| {
                order.push(attrs.clone());
                Vec::new()
            })
            .push(prefix);
    }
    let mut scratch = BytesMut::new();
    for attrs in order {
        let prefixes = groups.remove(&Arc::as_ptr(&attrs)).unwrap_or_default();
        scratch.clear();
        // Only the size matters here; an attribute set too large to encode cannot be sent
        // whatever we do, and the message encoder reports it when the UPDATE is written.
        let attrs_len = match Message::Update(Update { attributes: (*attrs).clone(), ..Default::default() }).encode(codec, &mut scratch) {
            Ok(()) => scratch.len() - HEADER_LEN - 4,
            Err(_) => 0,
        };
        let room = nlri_room(attrs_len);
        let mut chunk: Vec<IpNetwork> = Vec::new();
        let mut used = 0;
        for p in prefixes {
            let len = encoded_len(&p);
            if used + len > room && !chunk.is_empty() {
                out.push(announcement(&attrs, std::mem::take(&mut chunk)));
                used = 0;
            }
            used += len;
            chunk.push(p);
        }
        if !chunk.is_empty() {
            out.push(announcement(&attrs, chunk));
        }
    }
    out
}

fn announcement(attrs: &PathAttributes, prefixes: Vec<IpNetwork>) -> Update {
    let mut attributes = attrs.clone();
    match attributes.mp_reach.as_mut() {
        Some(mp) => {
            mp.nlri = prefixes;
            Update { attributes, ..Default::default() }
        }
        None => Update { attributes, nlri: v4_only(prefixes), ..Default::default() },
    }
}

fn pack_withdrawals(withdraw: Vec<IpNetwork>, out: &mut Vec<Update>) {
    let room = nlri_room(8);
    let (mut v4, mut v6): (Vec<IpNetwork>, Vec<IpNetwork>) = withdraw.into_iter().partition(|p| p.is_ipv4());
    for chunk in chunks(&mut v4, room) {
        out.push(Update { withdrawn: v4_only(chunk), ..Default::default() });
    }
    for chunk in chunks(&mut v6, room) {
        let mut u = Update::default();
        u.attributes.mp_unreach = Some(MpUnreach { family: Family::IPV6_UNICAST, withdrawn: chunk });
        out.push(u);
    }
}

/// The IPv4 prefixes of a list that holds only IPv4 ones by construction.
fn v4_only(prefixes: Vec<IpNetwork>) -> Vec<Ipv4Network> {
    prefixes
        .into_iter()
        .filter_map(|p| match p {
            IpNetwork::V4(v4) => Some(v4),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

fn chunks(prefixes: &mut Vec<IpNetwork>, room: usize) -> Vec<Vec<IpNetwork>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for p in prefixes.drain(..) {
        let len = encoded_len(&p);
        if used + len > room && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += len;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, Origin};

    fn attrs(lp: u32) -> Arc<PathAttributes> {
        Arc::new(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some("198.18.0.1".parse().unwrap()),
            local_pref: Some(lp),
            ..Default::default()
        })
    }

    #[test]
    fn shared_attributes_share_updates_and_every_update_fits() {
        let a = attrs(100);
        let b = attrs(200);
        let mut announce = Vec::new();
        for i in 0..3000u32 {
            let p: IpNetwork = format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap();
            announce.push((p, if i % 2 == 0 { a.clone() } else { b.clone() }));
        }
        let codec = SessionCodec::new(true, false);
        let updates = pack(announce, vec![], &codec);
        // 1500 /24s per attribute set at 4 octets each: two UPDATEs per set.
        assert_eq!(updates.len(), 4);
        let total: usize = updates.iter().map(|u| u.nlri.len()).sum();
        assert_eq!(total, 3000);
        for u in &updates {
            let bytes = Message::Update(u.clone()).to_bytes(&codec).expect("fits in 4096");
            assert!(bytes.len() <= MAX_MESSAGE_LEN);
        }
    }

    #[test]
    fn withdrawals_of_both_families_are_packed() {
        let mut w: Vec<IpNetwork> = (0..2000u32).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()).collect();
        w.push("2001:db8::/48".parse().unwrap());
        let updates = pack(vec![], w, &SessionCodec::default());
        assert_eq!(updates.iter().map(|u| u.withdrawn.len()).sum::<usize>(), 2000);
        assert!(updates.iter().any(|u| u.attributes.mp_unreach.as_ref().is_some_and(|m| m.withdrawn.len() == 1)));
        assert!(updates.len() <= 4);
    }
}
