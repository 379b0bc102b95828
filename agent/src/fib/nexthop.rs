//! Kernel nexthop objects (Linux 5.3+), sans-IO: our model of the ones we own and the netlink
//! messages that make, delete and list them.
//!
//! A route through gateways names one object (`RTA_NH_ID`) instead of carrying the gateways:
//! one object per gateway, and one group object per set of gateways, shared by every route
//! through them. What this buys is the change of a gateway: when a ToR's session ends, deleting
//! its object is one operation, and the kernel itself takes the gateway out of every group
//! and deletes the routes that had no other way, where routes that carry their gateways need
//! one replace or delete each (100,000 for a full table). A route goes through a group even
//! when it has one gateway: a second ToR arriving, or the first coming back, is then the
//! group taking another member in place (see `widen.rs`), not a replace per route (a single
//! gateway's object cannot become a group).
//!
//! Objects carry our protocol number like our routes, so a restarted agent finds and adopts
//! them, and another daemon's objects are never touched. Ids are ours to choose (the kernel
//! shares one id space per network namespace): we count up from [`FIRST_ID`], far from the
//! low numbers other daemons start at, and an id someone else holds only makes that creation
//! fail (the route is then written with its gateways, as without objects).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::plan::{Hop, Hops};
use super::wire::{self, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};

pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
/// `struct nhmsg`.
const NHMSG: usize = 8;

/// Where our ids start.
pub const FIRST_ID: u32 = 0x4748_0000;

/// What an object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One gateway out of one interface.
    Gateway(Hop),
    /// Equal-cost paths: member objects' ids.
    Group(Vec<u32>),
}

/// An object as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: u32,
    pub protocol: u8,
    /// `None` for kinds we never make (blackholes, FDB objects, gateways without a device).
    pub kind: Option<Kind>,
}

#[derive(Clone, Debug)]
struct Object {
    kind: Kind,
    /// The gateways a route through this object goes via.
    hops: Hops,
}

/// The objects of ours the kernel holds, kept current with our own successful operations.
#[derive(Debug)]
pub struct Nexthops {
    objects: HashMap<u32, Object>,
    /// The object of each gateway.
    singles: HashMap<Hop, u32>,
    /// The group routes go through for a set of gateways (sorted).
    groups: HashMap<Vec<Hop>, u32>,
    next_id: u32,
}

impl Default for Nexthops {
    fn default() -> Self {
        Nexthops { objects: HashMap::new(), singles: HashMap::new(), groups: HashMap::new(), next_id: FIRST_ID }
    }
}

fn sorted(hops: &[Hop]) -> Vec<Hop> {
    let mut v = hops.to_vec();
    v.sort();
    v
}

/// Whether a route to a prefix of this family can go through an object for `hops`: every
/// gateway needs its device (the kernel requires one for an object) and the prefix's family
/// (an IPv4 route via an IPv6 gateway keeps its gateways, as it always has).
pub fn eligible(ipv4: bool, hops: &[Hop]) -> bool {
    !hops.is_empty() && hops.iter().all(|h| h.dev.is_some() && h.via.is_ipv4() == ipv4)
}

impl Nexthops {
    /// Starts over from the kernel's list: ours are those with our protocol.
    pub fn load(&mut self, listed: Vec<Listed>, our_protocol: u8) {
        self.objects.clear();
        self.singles.clear();
        self.groups.clear();
        let ours: Vec<(u32, Kind)> =
            listed.into_iter().filter(|l| l.protocol == our_protocol).filter_map(|l| Some((l.id, l.kind?))).collect();
        for (id, kind) in &ours {
            if let Kind::Gateway(h) = kind {
                self.insert(*id, kind.clone(), Hops::from([*h]));
            }
            self.next_id = self.next_id.max(id.saturating_add(1));
        }
        for (id, kind) in ours {
            if let Kind::Group(members) = &kind {
                let hops: Option<Vec<Hop>> = members.iter().map(|m| self.single(*m)).collect();
                // A group over objects that are not ours is not one we made.
                if let Some(hops) = hops {
                    self.insert(id, kind, hops.into());
                }
            }
        }
    }

    fn single(&self, id: u32) -> Option<Hop> {
        match self.objects.get(&id)?.kind {
            Kind::Gateway(h) => Some(h),
            Kind::Group(_) => None,
        }
    }

    fn insert(&mut self, id: u32, kind: Kind, hops: Hops) {
        match kind {
            Kind::Gateway(h) => self.singles.entry(h).or_insert(id),
            Kind::Group(_) => self.groups.entry(sorted(&hops)).or_insert(id),
        };
        self.objects.insert(id, Object { kind, hops });
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn hops_of(&self, id: u32) -> Option<Hops> {
        self.objects.get(&id).map(|o| o.hops.clone())
    }

    /// The group for `hops`, and the objects to create first (members before their group) when
    /// there is none yet. The model counts them as made; [`Nexthops::forget`] undoes one the
    /// kernel refused.
    pub fn prepare(&mut self, hops: &[Hop]) -> (u32, Vec<(u32, Kind)>) {
        let key = sorted(hops);
        if let Some(id) = self.groups.get(&key) {
            return (*id, Vec::new());
        }
        let (members, mut create) = self.members(&key);
        let id = self.allocate();
        self.insert(id, Kind::Group(members.clone()), key.into());
        create.push((id, Kind::Group(members)));
        (id, create)
    }

    /// The single-gateway object of each of `hops` (sorted), and those to create first.
    fn members(&mut self, hops: &[Hop]) -> (Vec<u32>, Vec<(u32, Kind)>) {
        let mut create = Vec::new();
        let mut members = Vec::new();
        for h in hops {
            let id = match self.singles.get(h) {
                Some(id) => *id,
                None => {
                    let id = self.allocate();
                    self.insert(id, Kind::Gateway(*h), Hops::from([*h]));
                    create.push((id, Kind::Gateway(*h)));
                    id
                }
            };
            members.push(id);
        }
        (members, create)
    }

    /// Whether `id` is one of our groups (which, unlike a single gateway's object, can take
    /// other members in place).
    pub fn is_group(&self, id: u32) -> bool {
        matches!(self.objects.get(&id), Some(Object { kind: Kind::Group(_), .. }))
    }

    /// The members group `id` would have to go via `hops`, and the objects to create first.
    /// The group itself is unchanged until [`Nexthops::regrouped`].
    pub fn prepare_regroup(&mut self, hops: &[Hop]) -> (Vec<u32>, Vec<(u32, Kind)>) {
        self.members(&sorted(hops))
    }

    /// The kernel took `members` as group `id`'s (a replace): every route through it now goes
    /// via `hops`.
    pub fn regrouped(&mut self, id: u32, members: Vec<u32>, hops: Hops) {
        self.objects.insert(id, Object { kind: Kind::Group(members), hops });
        self.reindex();
    }

    fn allocate(&mut self) -> u32 {
        while self.objects.contains_key(&self.next_id) || self.next_id == 0 {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Drops an object the kernel did not make (or no longer holds), and every group over it.
    pub fn forget(&mut self, id: u32) {
        let Some(gone) = self.objects.remove(&id) else { return };
        self.singles.retain(|_, v| *v != id);
        self.groups.retain(|_, v| *v != id);
        if let Kind::Gateway(_) = gone.kind {
            let groups: Vec<u32> =
                self.objects.iter().filter(|(_, o)| matches!(&o.kind, Kind::Group(m) if m.contains(&id))).map(|(g, _)| *g).collect();
            for g in groups {
                self.forget(g);
            }
        }
    }

    /// Our single-gateway objects via `addr` (out of `dev` when given).
    pub fn via(&self, addr: IpAddr, dev: Option<u32>) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .objects
            .iter()
            .filter(|(_, o)| matches!(o.kind, Kind::Gateway(h) if h.via == addr && dev.is_none_or(|d| h.dev == Some(d))))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The kernel deleted gateway object `id`: it took it out of every group, and deleted each
    /// group it was the last member of. Returns the groups that remain with their new
    /// gateways, and the groups that went.
    pub fn deleted(&mut self, id: u32) -> (Vec<(u32, Hops)>, Vec<u32>) {
        self.objects.remove(&id);
        let groups: Vec<(u32, Vec<u32>)> = self
            .objects
            .iter()
            .filter_map(|(g, o)| match &o.kind {
                Kind::Group(m) if m.contains(&id) => Some((*g, m.iter().copied().filter(|x| *x != id).collect())),
                _ => None,
            })
            .collect();
        let mut shrunk = Vec::new();
        let mut gone = Vec::new();
        for (g, members) in groups {
            let hops: Vec<Hop> = members.iter().filter_map(|m| self.single(*m)).collect();
            if hops.is_empty() {
                self.objects.remove(&g);
                gone.push(g);
            } else {
                let hops = Hops::from(hops);
                self.objects.insert(g, Object { kind: Kind::Group(members), hops: hops.clone() });
                shrunk.push((g, hops));
            }
        }
        // The shrunk groups now stand for other sets of gateways.
        self.reindex();
        shrunk.sort_by_key(|(g, _)| *g);
        gone.sort();
        (shrunk, gone)
    }

    /// Rebuilds the indexes after groups changed members: two groups may now stand for the
    /// same gateways; the lowest id is the one new routes use.
    fn reindex(&mut self) {
        self.singles.clear();
        self.groups.clear();
        let mut ids: Vec<(u32, Object)> = self.objects.drain().collect();
        ids.sort_by_key(|(id, _)| *id);
        for (id, o) in ids {
            self.insert(id, o.kind, o.hops);
        }
    }

    /// Objects no route uses, directly or as a group's member: groups first, so each delete
    /// is of an object nothing refers to.
    pub fn unused(&self, used: &HashSet<u32>) -> Vec<u32> {
        let mut needed: HashSet<u32> = used.clone();
        for id in used {
            if let Some(Object { kind: Kind::Group(members), .. }) = self.objects.get(id) {
                needed.extend(members.iter().copied());
            }
        }
        let (mut groups, mut singles): (Vec<u32>, Vec<u32>) =
            self.objects.keys().copied().filter(|id| !needed.contains(id)).partition(|id| matches!(self.objects[id].kind, Kind::Group(_)));
        groups.sort();
        singles.sort();
        groups.extend(singles);
        groups
    }
}

fn push_nhmsg(buf: &mut Vec<u8>, family: u8, protocol: u8) {
    buf.extend_from_slice(&[family, 0, protocol, 0]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Appends the request that creates object `id` (exclusively: an id someone holds fails).
pub fn encode_new(buf: &mut Vec<u8>, sequence: u32, id: u32, kind: &Kind, protocol: u8) {
    let start = wire::push_header(buf, RTM_NEWNEXTHOP, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, sequence);
    match kind {
        Kind::Gateway(h) => {
            let family = if h.via.is_ipv4() { AF_INET } else { AF_INET6 };
            push_nhmsg(buf, family, protocol);
            push_attr(buf, NHA_ID, &id.to_ne_bytes());
            push_attr(buf, NHA_OIF, &h.dev.unwrap_or(0).to_ne_bytes());
            match h.via {
                IpAddr::V4(a) => push_attr(buf, NHA_GATEWAY, &a.octets()),
                IpAddr::V6(a) => push_attr(buf, NHA_GATEWAY, &a.octets()),
            }
        }
        Kind::Group(members) => push_group(buf, id, members, protocol),
    }
    wire::finish(buf, start);
}

/// Appends the request that gives our group `id` these members instead of its own (every
/// route through it follows at once). Not a create: a group the kernel no longer has fails.
pub fn encode_regroup(buf: &mut Vec<u8>, sequence: u32, id: u32, members: &[u32], protocol: u8) {
    let start = wire::push_header(buf, RTM_NEWNEXTHOP, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE, sequence);
    push_group(buf, id, members, protocol);
    wire::finish(buf, start);
}

fn push_group(buf: &mut Vec<u8>, id: u32, members: &[u32], protocol: u8) {
    push_nhmsg(buf, 0, protocol);
    push_attr(buf, NHA_ID, &id.to_ne_bytes());
    // struct nexthop_grp: id, weight - 1, two reserved fields.
    let group: Vec<u8> = members.iter().flat_map(|m| [m.to_ne_bytes(), [0; 4]].concat()).collect();
    push_attr(buf, NHA_GROUP, &group);
}

/// Appends the request that deletes object `id`.
pub fn encode_delete(buf: &mut Vec<u8>, sequence: u32, id: u32) {
    let start = wire::push_header(buf, RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK, sequence);
    push_nhmsg(buf, 0, 0);
    push_attr(buf, NHA_ID, &id.to_ne_bytes());
    wire::finish(buf, start);
}

/// Appends the request that lists every object.
pub fn encode_dump(buf: &mut Vec<u8>, sequence: u32) {
    let start = wire::push_header(buf, RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, sequence);
    push_nhmsg(buf, 0, 0);
    wire::finish(buf, start);
}

/// One object from an `RTM_NEWNEXTHOP` message's payload (after the netlink header).
pub fn decode(payload: &[u8]) -> Option<Listed> {
    let nhmsg = payload.get(..NHMSG)?;
    let (family, protocol) = (nhmsg[0], nhmsg[2]);
    let mut id = None;
    let mut oif = None;
    let mut gateway = None;
    let mut group = None;
    let mut other = false;
    for (kind, value) in wire::attributes(&payload[NHMSG..]) {
        match kind {
            NHA_ID => id = wire::u32_at(value, 0),
            NHA_OIF => oif = wire::u32_at(value, 0),
            NHA_GATEWAY => {
                gateway = match (family, value.len()) {
                    (AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
                    (AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
                    _ => None,
                }
            }
            NHA_GROUP => group = Some(value.as_chunks::<8>().0.iter().filter_map(|entry| wire::u32_at(entry, 0)).collect::<Vec<u32>>()),
            NHA_BLACKHOLE => other = true,
            _ => {}
        }
    }
    let kind = match (group, gateway, oif) {
        _ if other => None,
        (Some(members), _, _) => Some(Kind::Group(members)),
        (None, Some(via), Some(dev)) => Some(Kind::Gateway(Hop { via, dev: Some(dev) })),
        _ => None,
    };
    Some(Listed { id: id?, protocol, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(s: &str, dev: u32) -> Hop {
        Hop { via: s.parse().unwrap(), dev: Some(dev) }
    }

    #[test]
    fn one_object_per_gateway_and_one_group_per_set_in_any_order() {
        let mut n = Nexthops::default();
        let (ga, made) = n.prepare(&[hop("198.18.0.2", 3)]);
        let a = made[0].0;
        assert_eq!(made, [(a, Kind::Gateway(hop("198.18.0.2", 3))), (ga, Kind::Group(vec![a]))], "one gateway goes through a group too");
        let (g, made) = n.prepare(&[hop("198.18.0.3", 3), hop("198.18.0.2", 3)]);
        let b = made[0].0;
        assert_eq!(made, [(b, Kind::Gateway(hop("198.18.0.3", 3))), (g, Kind::Group(vec![a, b]))], "the missing member first");
        assert_eq!(n.prepare(&[hop("198.18.0.2", 3), hop("198.18.0.3", 3)]), (g, vec![]));
        assert_eq!(n.prepare(&[hop("198.18.0.2", 3)]), (ga, vec![]));
        let (gb, made) = n.prepare(&[hop("198.18.0.3", 3)]);
        assert_eq!(made, [(gb, Kind::Group(vec![b]))], "B's object exists; its group is new");
        assert_eq!(n.len(), 5);
        assert!(n.is_group(ga) && n.is_group(g) && !n.is_group(a));
    }

    #[test]
    fn a_deleted_gateway_leaves_its_groups_and_a_group_of_it_alone_goes() {
        let mut n = Nexthops::default();
        let (ga, made) = n.prepare(&[hop("198.18.0.2", 3)]);
        let a = made[0].0;
        let (ab, made) = n.prepare(&[hop("198.18.0.2", 3), hop("198.18.0.3", 3)]);
        let b = made[0].0;
        let (shrunk, gone) = n.deleted(b);
        assert_eq!(shrunk, [(ab, Hops::from([hop("198.18.0.2", 3)]))]);
        assert!(gone.is_empty());
        assert_eq!(n.hops_of(ab), Some(Hops::from([hop("198.18.0.2", 3)])));
        // Two groups now stand for A alone: new routes take the older.
        assert_eq!(n.prepare(&[hop("198.18.0.2", 3)]), (ga, vec![]));
        let (shrunk, gone) = n.deleted(a);
        assert!(shrunk.is_empty());
        assert_eq!(gone, [ga, ab]);
        assert!(n.is_empty());
    }

    #[test]
    fn a_shrunk_group_takes_a_returning_gateway_back_in_place() {
        let (a, b) = (hop("198.18.1.2", 2), hop("198.18.1.3", 2));
        let mut n = Nexthops::default();
        let (group, _) = n.prepare(&[a, b]);
        let a_id = n.via(a.via, None)[0];
        let b_id = n.via(b.via, None)[0];
        n.deleted(b_id);
        assert_eq!(n.hops_of(group).unwrap().as_ref(), [a]);
        assert!(n.is_group(group) && !n.is_group(a_id));
        // B returns: a new object for it, and the group's members are A's and B's.
        let (members, create) = n.prepare_regroup(&[b, a]);
        assert_eq!(create.len(), 1);
        let (b_new, Kind::Gateway(made)) = &create[0] else { panic!("{create:?}") };
        assert_eq!(*made, b);
        assert_eq!(members, [a_id, *b_new]);
        assert_eq!(n.hops_of(group).unwrap().as_ref(), [a], "unchanged until the kernel takes it");
        n.regrouped(group, members, Hops::from([a, b]));
        assert_eq!(n.hops_of(group).unwrap().as_ref(), [a, b]);
        // New routes via both go through the group again, not through a second one; A alone
        // has no group any more.
        assert_eq!(n.prepare(&[b, a]), (group, Vec::new()));
        let (ga, made) = n.prepare(&[a]);
        assert_eq!(made, [(ga, Kind::Group(vec![a_id]))]);
    }

    #[test]
    fn unused_objects_are_listed_groups_first_and_members_of_used_groups_stay() {
        let mut n = Nexthops::default();
        let (ab, made) = n.prepare(&[hop("198.18.0.2", 3), hop("198.18.0.3", 3)]);
        let (a, b) = (made[0].0, made[1].0);
        let (gc, made) = n.prepare(&[hop("198.18.0.4", 3)]);
        let c = made[0].0;
        assert_eq!(n.unused(&[ab].into()), [gc, c]);
        assert_eq!(n.unused(&[a].into()), [ab, gc, b, c]);
        assert!(n.unused(&[ab, gc].into()).is_empty());
    }

    #[test]
    fn ids_start_high_and_skip_the_ones_found() {
        let mut n = Nexthops::default();
        let listed = vec![
            Listed { id: FIRST_ID, protocol: 80, kind: Some(Kind::Gateway(hop("198.18.0.2", 3))) },
            Listed { id: FIRST_ID + 5, protocol: 80, kind: Some(Kind::Gateway(hop("198.18.0.3", 3))) },
            Listed { id: FIRST_ID + 6, protocol: 80, kind: Some(Kind::Group(vec![FIRST_ID, FIRST_ID + 5])) },
            // Another daemon's: not ours to use or delete.
            Listed { id: 7, protocol: 186, kind: Some(Kind::Gateway(hop("198.18.0.9", 3))) },
            Listed { id: FIRST_ID + 9, protocol: 80, kind: Some(Kind::Group(vec![7, FIRST_ID])) },
        ];
        n.load(listed, 80);
        assert_eq!(n.len(), 3, "ours, and no group over another daemon's object");
        assert_eq!(n.prepare(&[hop("198.18.0.3", 3), hop("198.18.0.2", 3)]), (FIRST_ID + 6, vec![]));
        assert_eq!(n.via("198.18.0.9".parse().unwrap(), None), Vec::<u32>::new());
        let (id, made) = n.prepare(&[hop("198.18.0.4", 3)]);
        assert_eq!(made[0].0, FIRST_ID + 10);
        assert_eq!(id, FIRST_ID + 11);
    }

    #[test]
    fn an_object_refused_takes_its_groups_with_it() {
        let mut n = Nexthops::default();
        let (ab, made) = n.prepare(&[hop("198.18.0.2", 3), hop("198.18.0.3", 3)]);
        n.forget(made[1].0);
        assert_eq!(n.hops_of(ab), None);
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn only_gateways_with_a_device_and_of_the_prefix_family_go_through_objects() {
        assert!(eligible(true, &[hop("198.18.0.2", 3)]));
        assert!(!eligible(true, &[Hop { via: "198.18.0.2".parse().unwrap(), dev: None }]));
        assert!(!eligible(true, &[hop("fe80::1", 3)]), "IPv4 via an IPv6 gateway keeps its gateways");
        assert!(eligible(false, &[hop("fe80::1", 3), hop("fe80::2", 4)]));
        assert!(!eligible(true, &[]));
    }

    /// The messages we write decode to the objects they make (the kernel's dump has the same
    /// layout), and `ip nexthop`'s view of the wire is checked in the namespace test.
    #[test]
    fn made_objects_read_back_from_their_messages() {
        for (id, kind) in [
            (FIRST_ID, Kind::Gateway(hop("198.18.0.2", 3))),
            (FIRST_ID + 1, Kind::Gateway(hop("2001:db8::1", 4))),
            (FIRST_ID + 2, Kind::Group(vec![FIRST_ID, FIRST_ID + 1])),
        ] {
            let mut buf = Vec::new();
            encode_new(&mut buf, 9, id, &kind, 80);
            assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize, buf.len());
            assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), RTM_NEWNEXTHOP);
            assert_eq!(decode(&buf[wire::HEADER..]), Some(Listed { id, protocol: 80, kind: Some(kind) }));
        }
        let mut buf = Vec::new();
        encode_delete(&mut buf, 1, 42);
        assert_eq!(decode(&buf[wire::HEADER..]).map(|l| l.id), Some(42));
        assert_eq!(decode(&[1, 2, 3]), None, "shorter than nhmsg");
        assert_eq!(decode(&[2, 0, 80, 0, 0, 0, 0, 0, 200, 0, 1, 0]), None, "an attribute longer than the message: no id");
    }
}
