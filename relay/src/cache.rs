//! The per-track cache of the newest groups: what a joining FETCH is served from and what a
//! late subscriber's filter replays.
//!
//! Objects are kept as they arrived (payloads are shared `Bytes`, never copied). A group is
//! kept whole or not at all: when a group newer than every cached one begins and the cache
//! is full, the oldest group goes.

use std::collections::VecDeque;

use tiermesh_proto::data::Object;
use tiermesh_proto::types::Location;

/// One cached group: its objects in arrival order.
#[derive(Debug)]
struct Group {
    id: u64,
    objects: Vec<Object>,
}

/// The newest groups of one track.
#[derive(Debug)]
pub struct Cache {
    groups: VecDeque<Group>,
    max_groups: usize,
    largest: Option<Location>,
}

impl Cache {
    /// An empty cache keeping at most `max_groups` groups (at least 1).
    pub fn new(max_groups: usize) -> Self {
        Self { groups: VecDeque::new(), max_groups: max_groups.max(1), largest: None }
    }

    /// The first cached location (of the oldest cached group), if any.
    pub fn oldest(&self) -> Option<Location> {
        self.groups.front().and_then(|g| g.objects.first()).map(Object::location)
    }

    /// The largest location seen (cached or not).
    pub fn largest(&self) -> Option<Location> {
        self.largest
    }

    /// Sets the largest location learnt from the upstream's SUBSCRIBE_OK or PUBLISH.
    pub fn note_largest(&mut self, loc: Location) {
        if self.largest.is_none_or(|l| loc > l) {
            self.largest = Some(loc);
        }
    }

    /// Adds an object. An object of a group older than every cached one, when the cache is
    /// full, is not kept; a repeated location is ignored. False for a repeated location (a
    /// duplicate, which the relay does not forward again), true otherwise.
    pub fn insert(&mut self, object: Object) -> bool {
        let loc = object.location();
        self.note_largest(loc);
        let g = object.group_id;
        let pos = self.groups.iter().position(|x| x.id >= g);
        match pos {
            Some(i) if self.groups[i].id == g => {
                let objects = &mut self.groups[i].objects;
                if objects.iter().any(|o| o.object_id == object.object_id) {
                    return false;
                }
                let at = objects.partition_point(|o| o.object_id < object.object_id);
                objects.insert(at, object);
            }
            Some(i) => {
                if i == 0 && self.groups.len() >= self.max_groups {
                    return true;
                }
                self.groups.insert(i, Group { id: g, objects: vec![object] });
            }
            None => self.groups.push_back(Group { id: g, objects: vec![object] }),
        }
        while self.groups.len() > self.max_groups {
            self.groups.pop_front();
        }
        true
    }

    /// Cached objects with `start <= location < end` (an `end` object of 0 means the whole
    /// end group), in ascending order.
    pub fn range(&self, start: Location, end: Location) -> Vec<Object> {
        let in_range = |o: &Object| {
            let loc = o.location();
            loc >= start && if end.object.0 == 0 { o.group_id <= end.group.0 } else { loc < end }
        };
        self.groups.iter().flat_map(|g| g.objects.iter()).filter(|o| in_range(o)).cloned().collect()
    }

    /// Cached objects at or after `start` (up to `end_group` inclusive, if given).
    pub fn from(&self, start: Location, end_group: Option<u64>) -> Vec<Object> {
        self.groups
            .iter()
            .filter(|g| end_group.is_none_or(|e| g.id <= e))
            .flat_map(|g| g.objects.iter())
            .filter(|o| o.location() >= start)
            .cloned()
            .collect()
    }

    /// Whether every Object ID strictly between `after` and `before` in `group` is cached
    /// and none of them belongs to `subgroup`: then `before` is the next object of that
    /// subgroup after `after` (draft-16 §10.4.3). False when any is not cached: it may
    /// exist in the subgroup.
    pub fn elsewhere_between(&self, group: u64, subgroup: u64, after: u64, before: u64) -> bool {
        let Some(g) = self.groups.iter().find(|g| g.id == group) else { return false };
        let from = g.objects.partition_point(|o| o.object_id <= after);
        let to = g.objects.partition_point(|o| o.object_id < before);
        let between = &g.objects[from..to.max(from)];
        // Object IDs are unique within a group, so the count tells whether all are there.
        between.len() as u64 == before.saturating_sub(after).saturating_sub(1)
            && between.iter().all(|o| o.forwarding.subgroup_id() != Some(subgroup))
    }

    /// How many groups are cached.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tiermesh_proto::data::{Forwarding, ObjectStatus};

    fn obj(g: u64, o: u64) -> Object {
        Object {
            group_id: g,
            object_id: o,
            forwarding: Forwarding::Subgroup(0),
            publisher_priority: 128,
            status: ObjectStatus::Normal,
            extensions: Default::default(),
            payload: Bytes::from(format!("{g}/{o}")),
        }
    }

    #[test]
    fn keeps_the_newest_groups_whole() {
        let mut c = Cache::new(2);
        for g in 0..4 {
            for o in 0..3 {
                c.insert(obj(g, o));
            }
        }
        assert_eq!(c.groups(), 2);
        let all: Vec<_> = c
            .range(Location::new(0, 0), Location::new(9, 0))
            .iter()
            .map(|o| o.location())
            .collect();
        assert_eq!(all.first(), Some(&Location::new(2, 0)));
        assert_eq!(all.len(), 6);
        assert_eq!(c.largest(), Some(Location::new(3, 2)));
        // A late object of an evicted group is not cached.
        assert!(c.insert(obj(0, 5)), "a late object is not a duplicate");
        assert_eq!(c.groups(), 2);
        assert!(!c.insert(obj(3, 1)), "a repeated location is a duplicate");
    }

    #[test]
    fn objects_between_in_other_subgroups_are_known() {
        let mut c = Cache::new(2);
        // Two layers: even objects in subgroup 0, odd ones in subgroup 1.
        for o in [0, 1, 2, 3, 4, 6] {
            let mut x = obj(5, o);
            x.forwarding = Forwarding::Subgroup(o % 2);
            c.insert(x);
        }
        assert!(c.elsewhere_between(5, 0, 0, 2), "1 is in subgroup 1");
        assert!(c.elsewhere_between(5, 1, 1, 3), "2 is in subgroup 0");
        assert!(c.elsewhere_between(5, 0, 2, 3), "nothing between");
        assert!(!c.elsewhere_between(5, 1, 0, 2), "1 is in subgroup 1 itself");
        assert!(!c.elsewhere_between(5, 1, 3, 7), "5 is not cached: it may be subgroup 1's");
        assert!(!c.elsewhere_between(6, 0, 0, 2), "group 6 is not cached");
    }

    #[test]
    fn range_ends_are_exclusive_unless_whole_group() {
        let mut c = Cache::new(2);
        for o in 0..5 {
            c.insert(obj(7, o));
        }
        assert_eq!(c.range(Location::new(7, 0), Location::new(7, 3)).len(), 3);
        assert_eq!(c.range(Location::new(7, 0), Location::new(7, 0)).len(), 5);
        assert_eq!(c.from(Location::new(7, 3), None).len(), 2);
    }
}
