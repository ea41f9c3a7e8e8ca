//! A fixed-capacity map with intrusive recency lists, the storage under
//! both the flow table and the fragment table.
//!
//! Entries live in a slab allocated once at construction; a `HashMap` from
//! key to slab index finds them. Every entry sits on exactly one of a fixed
//! number of doubly-linked lists, in the order it was last moved to a tail.
//! The flow table keeps one list per timeout class, so within a list the
//! head is the entry queued longest ago: expiry and eviction only ever look
//! at list heads, and nothing scans the table on the packet path.
//!
//! Each entry also belongs to a *group* (the flow table's groups are peers)
//! with a second intrusive list per group, so a group's size is known and
//! one of its own entries can be found in O(1).

use std::collections::HashMap;
use std::hash::{Hash, RandomState};

/// End-of-list marker.
const NIL: u32 = u32::MAX;

/// A group's list: head, tail and length.
#[derive(Clone, Copy)]
struct Group {
    head: u32,
    tail: u32,
    len: u32,
}

struct Slot<K, V> {
    item: Option<(K, V)>,
    prev: u32,
    next: u32,
    list: usize,
    group: u32,
    gprev: u32,
    gnext: u32,
    /// Bumped on every insert, so a stale index held elsewhere (a fragment
    /// entry pointing at its flow) can tell its slot was reused.
    generation: u32,
}

pub(crate) struct Table<K, V> {
    // RandomState seeds SipHash per process: keys are attacker-chosen
    // (ports, addresses), so an unkeyed hash would let a peer force
    // collisions and make every lookup slow.
    map: HashMap<K, u32, RandomState>,
    slots: Vec<Slot<K, V>>,
    /// (head, tail) of each list.
    lists: Vec<(u32, u32)>,
    /// Lists per group; a group with no entries has none.
    groups: HashMap<u32, Group>,
    /// Head of the free-slot chain, linked through `next`.
    free: u32,
    len: usize,
}

impl<K: Hash + Eq + Copy, V> Table<K, V> {
    /// A table for `capacity` entries (at least 1) on `lists` lists.
    pub(crate) fn new(capacity: usize, lists: usize) -> Self {
        let capacity = capacity.clamp(1, (NIL - 1) as usize);
        let slots = (0..capacity)
            .map(|i| Slot {
                item: None,
                prev: NIL,
                next: if i + 1 < capacity {
                    (i + 1) as u32
                } else {
                    NIL
                },
                list: 0,
                group: 0,
                gprev: NIL,
                gnext: NIL,
                generation: 0,
            })
            .collect();
        // Twice the entries we will ever hold: with the map at most half
        // full, hashbrown reclaims deletion tombstones by rehashing in place
        // instead of growing, so the steady state never allocates.
        let map = HashMap::with_capacity_and_hasher(capacity * 2, RandomState::new());
        Table {
            map,
            slots,
            lists: vec![(NIL, NIL); lists.max(1)],
            groups: HashMap::new(),
            free: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.free == NIL
    }

    pub(crate) fn find(&self, key: &K) -> Option<u32> {
        self.map.get(key).copied()
    }

    pub(crate) fn get(&self, i: u32) -> Option<(&K, &V)> {
        let (k, v) = self.slots.get(i as usize)?.item.as_ref()?;
        Some((k, v))
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut V> {
        self.slots
            .get_mut(i as usize)?
            .item
            .as_mut()
            .map(|(_, v)| v)
    }

    /// The generation of an occupied slot.
    pub(crate) fn generation(&self, i: u32) -> Option<u32> {
        let s = self.slots.get(i as usize)?;
        s.item.as_ref().map(|_| s.generation)
    }

    /// The least recently touched entry of a list.
    pub(crate) fn head(&self, list: usize) -> Option<u32> {
        self.lists.get(list).map(|l| l.0).filter(|&h| h != NIL)
    }

    /// The list an occupied slot is on.
    pub(crate) fn list_of(&self, i: u32) -> Option<usize> {
        let s = self.slots.get(i as usize)?;
        s.item.as_ref().map(|_| s.list)
    }

    /// Entries in `group`.
    pub(crate) fn group_len(&self, group: u32) -> usize {
        self.groups.get(&group).map_or(0, |g| g.len as usize)
    }

    /// The entry of `group` least recently inserted or rotated.
    pub(crate) fn group_head(&self, group: u32) -> Option<u32> {
        self.groups
            .get(&group)
            .map(|g| g.head)
            .filter(|&h| h != NIL)
    }

    /// Moves an entry to the tail of its group's list.
    pub(crate) fn group_rotate(&mut self, i: u32) {
        let occupied = self.slots.get(i as usize).is_some_and(|s| s.item.is_some());
        if occupied {
            self.group_unlink(i);
            self.group_push_back(i);
        }
    }

    /// Inserts at the tail of `list` and of `group`'s list. The key must be
    /// absent and the table not full (the caller evicts first); returns
    /// `None` otherwise.
    pub(crate) fn insert(&mut self, key: K, value: V, list: usize, group: u32) -> Option<u32> {
        if list >= self.lists.len() || self.map.contains_key(&key) {
            return None;
        }
        let i = self.free;
        let slot = self.slots.get_mut(i as usize)?;
        self.free = slot.next;
        slot.item = Some((key, value));
        slot.generation = slot.generation.wrapping_add(1);
        slot.group = group;
        self.map.insert(key, i);
        self.len += 1;
        self.push_back(i, list);
        self.group_push_back(i);
        Some(i)
    }

    pub(crate) fn remove(&mut self, i: u32) -> Option<(K, V)> {
        let (key, value) = self.slots.get_mut(i as usize)?.item.take()?;
        self.unlink(i);
        self.group_unlink(i);
        self.map.remove(&key);
        if let Some(slot) = self.slots.get_mut(i as usize) {
            slot.next = self.free;
            slot.prev = NIL;
        }
        self.free = i;
        self.len -= 1;
        Some((key, value))
    }

    /// Moves an entry to the tail of `list` (its own or another).
    pub(crate) fn touch(&mut self, i: u32, list: usize) {
        let occupied = self.slots.get(i as usize).is_some_and(|s| s.item.is_some());
        if occupied && list < self.lists.len() {
            self.unlink(i);
            self.push_back(i, list);
        }
    }

    /// Indices of all occupied slots, in slab order.
    pub(crate) fn occupied(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.item.is_some())
            .map(|(i, _)| i as u32)
    }

    fn unlink(&mut self, i: u32) {
        let Some(s) = self.slots.get(i as usize) else {
            return;
        };
        let (prev, next, list) = (s.prev, s.next, s.list);
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => {
                if let Some(l) = self.lists.get_mut(list) {
                    l.0 = next;
                }
            }
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(l) = self.lists.get_mut(list) {
                    l.1 = prev;
                }
            }
        }
    }

    fn group_unlink(&mut self, i: u32) {
        let Some(s) = self.slots.get(i as usize) else {
            return;
        };
        let (prev, next, group) = (s.gprev, s.gnext, s.group);
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if prev == NIL {
            g.head = next;
        }
        if next == NIL {
            g.tail = prev;
        }
        g.len = g.len.saturating_sub(1);
        if g.len == 0 {
            self.groups.remove(&group);
        }
        if let Some(p) = self.slots.get_mut(prev as usize) {
            p.gnext = next;
        }
        if let Some(n) = self.slots.get_mut(next as usize) {
            n.gprev = prev;
        }
    }

    fn group_push_back(&mut self, i: u32) {
        let Some(group) = self.slots.get(i as usize).map(|s| s.group) else {
            return;
        };
        let g = self.groups.entry(group).or_insert(Group {
            head: NIL,
            tail: NIL,
            len: 0,
        });
        let tail = g.tail;
        g.tail = i;
        if tail == NIL {
            g.head = i;
        }
        g.len += 1;
        if let Some(t) = self.slots.get_mut(tail as usize) {
            t.gnext = i;
        }
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.gprev = tail;
            s.gnext = NIL;
        }
    }

    fn push_back(&mut self, i: u32, list: usize) {
        let Some(&(_, tail)) = self.lists.get(list) else {
            return;
        };
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.prev = tail;
            s.next = NIL;
            s.list = list;
        }
        match self.slots.get_mut(tail as usize) {
            Some(t) => t.next = i,
            None => {
                if let Some(l) = self.lists.get_mut(list) {
                    l.0 = i;
                }
            }
        }
        if let Some(l) = self.lists.get_mut(list) {
            l.1 = i;
        }
    }

    /// Checks the structure's invariants (O(capacity)); for tests and the
    /// fuzz driver.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.map.len() != self.len {
            return Err("map and length disagree");
        }
        let mut on_lists = 0;
        for (l, &(head, tail)) in self.lists.iter().enumerate() {
            let mut prev = NIL;
            let mut i = head;
            while i != NIL {
                let s = self.slots.get(i as usize).ok_or("list runs off the slab")?;
                let (k, _) = s.item.as_ref().ok_or("free slot on a list")?;
                if s.prev != prev || s.list != l {
                    return Err("broken back link");
                }
                if self.map.get(k) != Some(&i) {
                    return Err("map does not point at slot");
                }
                on_lists += 1;
                if on_lists > self.len {
                    return Err("cycle in a list");
                }
                prev = i;
                i = s.next;
            }
            if tail != prev {
                return Err("wrong list tail");
            }
        }
        if on_lists != self.len {
            return Err("entry missing from lists");
        }
        let mut in_groups = 0;
        for (&group, g) in &self.groups {
            let (mut prev, mut i, mut n) = (NIL, g.head, 0u32);
            while i != NIL {
                let s = self
                    .slots
                    .get(i as usize)
                    .ok_or("group list runs off the slab")?;
                if s.item.is_none() || s.group != group || s.gprev != prev {
                    return Err("broken group list");
                }
                n += 1;
                if n as usize > self.len {
                    return Err("cycle in a group list");
                }
                prev = i;
                i = s.gnext;
            }
            if prev != g.tail || n != g.len || n == 0 {
                return Err("wrong group tail or length");
            }
            in_groups += n as usize;
        }
        if in_groups != self.len {
            return Err("entry missing from group lists");
        }
        let mut free = 0;
        let mut i = self.free;
        while i != NIL {
            let s = self
                .slots
                .get(i as usize)
                .ok_or("free chain runs off the slab")?;
            if s.item.is_some() {
                return Err("occupied slot on the free chain");
            }
            free += 1;
            if free > self.slots.len() {
                return Err("cycle in free chain");
            }
            i = s.next;
        }
        if free + self.len != self.slots.len() {
            return Err("slots leaked");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_touch_remove_keep_invariants() {
        let mut t: Table<u32, u32> = Table::new(4, 2);
        let a = t.insert(1, 10, 0, 7).unwrap();
        let b = t.insert(2, 20, 0, 7).unwrap();
        let c = t.insert(3, 30, 1, 8).unwrap();
        assert_eq!((t.group_len(7), t.group_len(8), t.group_len(9)), (2, 1, 0));
        assert_eq!(t.group_head(7), Some(a));
        t.group_rotate(a);
        assert_eq!(t.group_head(7), Some(b));
        assert_eq!(t.head(0), Some(a));
        t.touch(a, 0);
        assert_eq!(t.head(0), Some(b));
        t.touch(b, 1);
        assert_eq!(t.head(0), Some(a));
        assert_eq!(t.head(1), Some(c));
        t.check().unwrap();
        assert!(t.insert(2, 0, 0, 7).is_none(), "duplicate key");
        t.insert(4, 40, 1, 9).unwrap();
        assert!(t.is_full() && t.insert(5, 50, 0, 7).is_none());
        assert_eq!(t.remove(b), Some((2, 20)));
        assert_eq!(t.remove(b), None);
        assert_eq!(t.group_head(7), Some(a));
        t.check().unwrap();
        t.remove(c);
        assert_eq!(t.group_len(8), 0);
        let d = t.insert(5, 50, 0, 7).unwrap();
        assert_eq!(d, c, "freed slot reused");
        assert_eq!(t.find(&5), Some(d));
        t.check().unwrap();
    }
}
