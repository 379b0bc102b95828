//! Update groups (FRR's name for them): peers that would be sent the same UPDATEs share one
//! Adj-RIB-Out and one encoding. What a peer is sent depends on its session and policy, never on
//! who it is, with one exception: a route never goes back to the peer it came from (split
//! horizon). So peers with equal [`ExportKey`]s form a group; the group's Adj-RIB-Out is one bit
//! per prefix (a slot in the table's entry, as the per-peer bits were, so 31 groups before the
//! fallback set); and the route's source, when it is a member, is handled on its own for that
//! prefix.
//!
//! A member holds a prefix from us when the group's bit is set, unless it is the source of the
//! prefix's best path. The source is not remembered: when the best path moves to another member,
//! that member is sent a withdrawal whether or not it held the prefix (harmless, RFC 4271 9.1);
//! the cost of knowing exactly would be a set per member as large as the table.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::dests::SLOTS;
use super::fast_hash::FastHash;
use super::policy::Policy;
use super::prefix_set::PrefixSet;
use super::table::Table;
use super::{PeerId, RibPeer};
use crate::wire::{Family, SessionCodec};

/// Everything that decides what leaves for a peer, apart from which peer it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportKey {
    local_address: IpAddr,
    local_as: u32,
    ebgp: bool,
    rr_client: bool,
    keep_original_next_hop: bool,
    next_hop_self: bool,
    families: Vec<Family>,
    codec: SessionCodec,
    export: Option<Arc<Policy>>,
    extended_next_hop: bool,
}

impl ExportKey {
    pub fn of(p: &RibPeer) -> ExportKey {
        ExportKey {
            local_address: p.local_address,
            local_as: p.local_as,
            ebgp: p.ebgp(),
            rr_client: p.rr_client,
            keep_original_next_hop: p.keep_original_next_hop,
            next_hop_self: p.next_hop_self,
            families: p.families.clone(),
            codec: p.codec,
            export: p.export.clone(),
            extended_next_hop: p.extended_next_hop,
        }
    }
}

pub type GroupId = usize;

#[derive(Debug)]
struct Group {
    key: ExportKey,
    members: BTreeSet<PeerId>,
    /// The group's bit in the table entries, or `None` when all are taken and `overflow` holds
    /// the prefixes instead.
    slot: Option<u32>,
    overflow: PrefixSet,
}

#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: Vec<Option<Group>>,
    of: HashMap<PeerId, GroupId, FastHash>,
    slot_used: [bool; SLOTS],
}

impl Groups {
    /// Puts `peer` in the group of `key`, making one if needed; true when the group is new.
    pub(super) fn join(&mut self, peer: PeerId, key: ExportKey) -> (GroupId, bool) {
        let found = self.groups.iter().position(|g| g.as_ref().is_some_and(|g| g.key == key));
        let (id, new) = match found {
            Some(id) => (id, false),
            None => {
                let slot = self.slot_used.iter().position(|u| !u).map(|s| {
                    self.slot_used[s] = true;
                    s as u32
                });
                let group = Group { key, members: BTreeSet::new(), slot, overflow: PrefixSet::default() };
                let id = match self.groups.iter().position(Option::is_none) {
                    Some(free) => {
                        self.groups[free] = Some(group);
                        free
                    }
                    None => {
                        self.groups.push(Some(group));
                        self.groups.len() - 1
                    }
                };
                (id, true)
            }
        };
        if let Some(g) = self.groups[id].as_mut() {
            g.members.insert(peer);
        }
        self.of.insert(peer, id);
        (id, new)
    }

    /// Takes `peer` out of its group; a group left empty forgets what it held.
    pub(super) fn leave(&mut self, peer: PeerId, table: &mut Table) {
        let Some(id) = self.of.remove(&peer) else { return };
        let Some(g) = self.groups[id].as_mut() else { return };
        g.members.remove(&peer);
        if g.members.is_empty() {
            if let Some(slot) = g.slot {
                table.clear_slot(slot);
                self.slot_used[slot as usize] = false;
            }
            self.groups[id] = None;
        }
    }

    pub(super) fn group_of(&self, peer: PeerId) -> Option<GroupId> {
        self.of.get(&peer).copied()
    }

    pub(super) fn ids(&self) -> Vec<GroupId> {
        self.groups.iter().enumerate().filter(|(_, g)| g.is_some()).map(|(i, _)| i).collect()
    }

    pub(super) fn members(&self, id: GroupId) -> Vec<PeerId> {
        self.groups.get(id).and_then(Option::as_ref).map(|g| g.members.iter().copied().collect()).unwrap_or_default()
    }

    pub(super) fn is_member(&self, id: GroupId, peer: PeerId) -> bool {
        self.of.get(&peer) == Some(&id)
    }

    /// Sets or clears the group's bit for `prefix`; returns whether it was set.
    pub(super) fn set(&mut self, id: GroupId, table: &mut Table, prefix: &IpNetwork, on: bool) -> bool {
        let Some(g) = self.groups.get_mut(id).and_then(Option::as_mut) else { return false };
        match g.slot {
            Some(slot) => table.set_advertised(prefix, slot, on),
            None if on => !g.overflow.insert(*prefix),
            None => g.overflow.remove(prefix),
        }
    }

    /// Every prefix the group holds.
    pub(super) fn held(&self, id: GroupId, table: &Table) -> Vec<IpNetwork> {
        let Some(g) = self.groups.get(id).and_then(Option::as_ref) else { return Vec::new() };
        match g.slot {
            Some(slot) => table.slot_prefixes(slot),
            None => g.overflow.iter().collect(),
        }
    }
}
