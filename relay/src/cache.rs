//! The per-track cache of the newest groups: what a joining FETCH is served from and what a
//! late subscriber's filter replays.
//!
//! Objects are kept as they arrived (payloads are shared `Bytes`, never copied). A group is
//! kept whole or not at all: when a group newer than every cached one begins and the cache
//! is full, the oldest group goes.
//!
//! Beside its objects, each group keeps what the relay knows of the objects it lacks, so
//! that a FETCH served from the cache says which ranges are unknown rather than claim them
//! absent (draft-16, End of Range): [`Cache::unknown`]. A location is known when every
//! object that exists there is cached:
//! - the live subscription's objects: each subgroup stream of a group carries its objects
//!   in order from the subscription's start (the location after the largest object the
//!   publisher named, or the group's beginning for later groups), so up to the last object
//!   received on it nothing of that subgroup is missing; a stream ended with FIN leaves
//!   nothing after it. A group's locations are known up to the smallest such point of its
//!   subgroups (every subgroup with a FIN: to the end of the group). A stream reset
//!   (delivery timeout, the publisher gone), still open, or cut (its upstream session died
//!   or was released before it ended: [`Cache::live_cut`]) leaves what follows its last
//!   object unknown; so does a datagram, which no stream end confirms. A subgroup the
//!   relay never saw a stream of is taken not to exist.
//! - what a fetch served whole, up to its last item when it did not end whole, less the
//!   ranges it marked unknown ([`Cache::note_known`]): the relay's upstream joining fetch.
//! - an End of Group (or End of Track) object: nothing at or after it in its group.
//!
//! Everything else (a group never received, the start of the first group before the
//! subscription began when no fetch filled it, the tail of a reset stream) is unknown.

use std::collections::VecDeque;

use tiermesh_proto::coding::VARINT_MAX;
use tiermesh_proto::data::{Forwarding, Object, ObjectStatus};
use tiermesh_proto::types::Location;

/// The largest Object ID: `{g, LAST_OBJECT}` is the last location of group `g`.
const LAST_OBJECT: u64 = VARINT_MAX;

/// Subgroup streams whose state one group keeps. A video group has one, a layered one a
/// few; beyond 64 (a publisher opening a stream per object) the group's live knowledge is
/// dropped (its missing objects read unknown), so a group's record stays a few hundred bytes.
const MAX_SUBGROUPS: usize = 64;

/// Known ranges of one group kept from fetches and earlier upstreams. One or two in
/// practice (the joining fetch's, an earlier upstream's); 8 bounds the memory, and a range
/// not kept only reads unknown.
const MAX_KNOWN: usize = 8;

/// How a subgroup stream of the live subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Objects may still come on it.
    Open,
    /// Ended with FIN: the subgroup has no object after its last.
    Fin,
    /// Reset: objects after its last may exist.
    Reset,
}

/// One subgroup stream of the live subscription.
#[derive(Debug, Clone, Copy)]
struct Subgroup {
    id: u64,
    /// One more than the largest Object ID received on it (0: none).
    next: u64,
    state: StreamState,
}

/// What the current upstream subscription has brought of one group.
#[derive(Debug)]
struct Live {
    /// The first Object ID the subscription carries in this group.
    from: u64,
    subgroups: Vec<Subgroup>,
    /// A datagram, or more subgroups than [`MAX_SUBGROUPS`]: nothing is known from it.
    opaque: bool,
}

impl Live {
    /// The Object IDs whose objects have all arrived, if any: from `from` up to the least
    /// of what each subgroup confirms.
    fn known(&self) -> Option<(u64, u64)> {
        if self.opaque || self.subgroups.is_empty() {
            return None;
        }
        let mut to = LAST_OBJECT;
        for s in &self.subgroups {
            if s.state != StreamState::Fin {
                to = to.min(s.next.checked_sub(1)?);
            }
        }
        (self.from <= to).then_some((self.from, to))
    }
}

/// One cached group: its objects in Object ID order and what is known of those it lacks.
#[derive(Debug)]
struct Group {
    id: u64,
    objects: Vec<Object>,
    /// Object ID ranges (inclusive) where every existing object is cached, from fetches,
    /// earlier upstreams and End of Group objects; merged, at most [`MAX_KNOWN`].
    known: Vec<(u64, u64)>,
    /// The current upstream subscription's part.
    live: Option<Live>,
}

impl Group {
    fn new(id: u64) -> Self {
        Self { id, objects: Vec::new(), known: Vec::new(), live: None }
    }

    fn add_known(&mut self, from: u64, to: u64) {
        if from > to {
            return;
        }
        self.known.push((from, to));
        merge(&mut self.known);
        self.known.truncate(MAX_KNOWN);
    }

    /// Every range of Object IDs known in this group, merged, ascending: the known ranges,
    /// the live subscription's, and each cached object's own.
    fn known_ids(&self) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = self.known.clone();
        all.extend(self.live.as_ref().and_then(Live::known));
        all.extend(self.objects.iter().map(|o| (o.object_id, o.object_id)));
        merge(&mut all);
        all
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *ranges = out;
}

/// The newest groups of one track.
#[derive(Debug)]
pub struct Cache {
    groups: VecDeque<Group>,
    max_groups: usize,
    largest: Option<Location>,
    /// The first location the current upstream subscription carries; `None` before one.
    live_from: Option<Location>,
}

impl Cache {
    /// An empty cache keeping at most `max_groups` groups (at least 1).
    pub fn new(max_groups: usize) -> Self {
        Self {
            groups: VecDeque::new(),
            max_groups: max_groups.max(1),
            largest: None,
            live_from: None,
        }
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

    /// A new upstream subscription (or PUBLISH) is established; its objects start after
    /// `largest` (none: from the track's beginning). What the previous one brought is kept
    /// as it stands: the objects after the last it confirmed are unknown, unless the new
    /// one (or a fetch) brings them.
    pub fn live_started(&mut self, largest: Option<Location>) {
        for g in &mut self.groups {
            if let Some((from, to)) = g.live.take().and_then(|l| l.known()) {
                g.add_known(from, to);
            }
        }
        self.live_from = Some(largest.map_or(Location::new(0, 0), |l| {
            Location::new(l.group.0, l.object.0.saturating_add(1))
        }));
    }

    /// The current upstream subscription ends before its open subgroup streams did: its
    /// session died, or the relay released it for another upstream. Those streams read as
    /// reset from now on (what follows each one's last object is unknown, also after a new
    /// upstream starts, unless it or a fetch brings it), and are returned as (group,
    /// subgroup), oldest first, so that the relay ends the streams mirroring them the same
    /// way rather than as complete. Only cached groups are known.
    pub fn live_cut(&mut self) -> Vec<(u64, u64)> {
        let mut cut = Vec::new();
        for g in &mut self.groups {
            let Some(live) = g.live.as_mut() else { continue };
            for s in live.subgroups.iter_mut().filter(|s| s.state == StreamState::Open) {
                s.state = StreamState::Reset;
                cut.push((g.id, s.id));
            }
        }
        cut
    }

    /// Adds an object; `live` when it came from the current upstream subscription (see
    /// [`Cache::live_started`]), whose streams tell what else of its group exists. An
    /// object of a group older than every cached one, when the cache is full, is not
    /// kept; a repeated location is ignored. False for a repeated location (a duplicate,
    /// which the relay does not forward again), true otherwise.
    pub fn insert(&mut self, object: Object, live: bool) -> bool {
        let loc = object.location();
        self.note_largest(loc);
        let g = object.group_id;
        let i = match self.groups.iter().position(|x| x.id >= g) {
            Some(i) if self.groups[i].id == g => i,
            Some(0) if self.groups.len() >= self.max_groups => return true,
            Some(i) => {
                self.groups.insert(i, Group::new(g));
                i
            }
            None => {
                self.groups.push_back(Group::new(g));
                self.groups.len() - 1
            }
        };
        let live_from = if live { self.live_from } else { None };
        let group = &mut self.groups[i];
        if let Some(from) = live_from {
            note_live(group, from, &object);
        }
        if matches!(object.status, ObjectStatus::EndOfGroup | ObjectStatus::EndOfTrack) {
            group.add_known(object.object_id, LAST_OBJECT);
        }
        let objects = &mut group.objects;
        let at = objects.partition_point(|o| o.object_id < object.object_id);
        let fresh = objects.get(at).is_none_or(|o| o.object_id != object.object_id);
        if fresh {
            objects.insert(at, object);
        }
        while self.groups.len() > self.max_groups {
            self.groups.pop_front();
        }
        fresh
    }

    /// A subgroup stream of the current upstream subscription ended: with FIN (`fin`), the
    /// subgroup has no object after the last received; reset, what follows is unknown.
    pub fn stream_ended(&mut self, group: u64, subgroup: u64, fin: bool) {
        let Some(from) = self.live_from.filter(|f| f.group.0 <= group) else { return };
        let Some(g) = self.groups.iter_mut().find(|g| g.id == group) else { return };
        let live = g.live.get_or_insert_with(|| Live {
            from: live_start(from, group),
            subgroups: Vec::new(),
            opaque: false,
        });
        match live.subgroups.iter_mut().find(|s| s.id == subgroup) {
            Some(s) if s.state == StreamState::Open => {
                s.state = if fin { StreamState::Fin } else { StreamState::Reset };
            }
            Some(_) => {}
            // A stream that ended with none of its objects received: empty (FIN), or its
            // objects unknown (reset).
            None if fin => {}
            None => {
                add_subgroup(live, Subgroup { id: subgroup, next: 0, state: StreamState::Reset })
            }
        }
    }

    /// Every object that exists from `first` to `last` (inclusive) is cached: a fetch
    /// brought that range (kept for the groups cached now).
    pub fn note_known(&mut self, first: Location, last: Location) {
        for g in &mut self.groups {
            let id = g.id;
            if id < first.group.0 || id > last.group.0 {
                continue;
            }
            let from = if id == first.group.0 { first.object.0 } else { 0 };
            let to = if id == last.group.0 { last.object.0 } else { LAST_OBJECT };
            g.add_known(from, to);
        }
    }

    /// The ranges from `first` to `last` (inclusive, ascending, each its first and last
    /// location) whose objects the relay does not know: not cached and not known absent
    /// (see the module's description). Cached objects are never inside one; groups not
    /// cached are unknown whole.
    pub fn unknown(&self, first: Location, last: Location) -> Vec<(Location, Location)> {
        let mut runs: Vec<(Location, Location)> = Vec::new();
        let mut push = |a: Location, b: Location| {
            if a > b {
                return;
            }
            match runs.last_mut() {
                // Adjacent to the previous run (the end of one group, the start of the next).
                Some(r) if follows(r.1, a) => r.1 = b,
                _ => runs.push((a, b)),
            }
        };
        if first > last {
            return runs;
        }
        // The first location not yet looked at.
        let mut at = first;
        for g in self.groups.iter().filter(|g| (first.group.0..=last.group.0).contains(&g.id)) {
            if at.group.0 < g.id {
                push(at, Location::new(g.id - 1, LAST_OBJECT));
            }
            let from = if at.group.0 == g.id { at.object.0 } else { 0 };
            let to = if last.group.0 == g.id { last.object.0 } else { LAST_OBJECT };
            let mut o = from;
            for (a, b) in g.known_ids() {
                if b < o {
                    continue;
                }
                if a > to {
                    break;
                }
                if a > o {
                    push(Location::new(g.id, o), Location::new(g.id, a - 1));
                }
                o = b.saturating_add(1);
            }
            if o <= to {
                push(Location::new(g.id, o), Location::new(g.id, to));
            }
            at = Location::new(g.id + 1, 0);
        }
        if at <= last {
            push(at, last);
        }
        runs
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

/// The first Object ID of group `group` that a subscription starting at `from` carries.
fn live_start(from: Location, group: u64) -> u64 {
    if group == from.group.0 { from.object.0 } else { 0 }
}

/// Notes a live object's subgroup stream progress in its group.
fn note_live(group: &mut Group, from: Location, object: &Object) {
    // An object of a group before the subscription's start comes from elsewhere.
    if group.id < from.group.0 {
        return;
    }
    let live = group.live.get_or_insert_with(|| Live {
        from: live_start(from, group.id),
        subgroups: Vec::new(),
        opaque: false,
    });
    let Forwarding::Subgroup(id) = object.forwarding else {
        live.opaque = true;
        return;
    };
    let next = object.object_id.saturating_add(1);
    match live.subgroups.iter_mut().find(|s| s.id == id) {
        Some(s) if s.state == StreamState::Open => s.next = s.next.max(next),
        Some(_) => {}
        None => add_subgroup(live, Subgroup { id, next, state: StreamState::Open }),
    }
}

fn add_subgroup(live: &mut Live, s: Subgroup) {
    if live.subgroups.len() >= MAX_SUBGROUPS {
        live.opaque = true;
        live.subgroups = Vec::new();
    } else if !live.opaque {
        // One subgroup per group is the common case: its one entry is all that is allocated.
        if live.subgroups.is_empty() {
            live.subgroups.reserve_exact(1);
        }
        live.subgroups.push(s);
    }
}

/// Whether `b` is the location right after `a`.
fn follows(a: Location, b: Location) -> bool {
    if a.object.0 >= LAST_OBJECT {
        b.group.0 == a.group.0 + 1 && b.object.0 == 0
    } else {
        b.group == a.group && b.object.0 == a.object.0 + 1
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
                c.insert(obj(g, o), false);
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
        assert!(c.insert(obj(0, 5), false), "a late object is not a duplicate");
        assert_eq!(c.groups(), 2);
        assert!(!c.insert(obj(3, 1), false), "a repeated location is a duplicate");
    }

    #[test]
    fn objects_between_in_other_subgroups_are_known() {
        let mut c = Cache::new(2);
        // Two layers: even objects in subgroup 0, odd ones in subgroup 1.
        for o in [0, 1, 2, 3, 4, 6] {
            let mut x = obj(5, o);
            x.forwarding = Forwarding::Subgroup(o % 2);
            c.insert(x, false);
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
            c.insert(obj(7, o), false);
        }
        assert_eq!(c.range(Location::new(7, 0), Location::new(7, 3)).len(), 3);
        assert_eq!(c.range(Location::new(7, 0), Location::new(7, 0)).len(), 5);
        assert_eq!(c.from(Location::new(7, 3), None).len(), 2);
    }

    fn l(g: u64, o: u64) -> Location {
        Location::new(g, o)
    }

    /// Group `g`'s objects `ids` on subgroup 0 from the live subscription.
    fn live(c: &mut Cache, g: u64, ids: std::ops::Range<u64>) {
        for o in ids {
            c.insert(obj(g, o), true);
        }
    }

    #[test]
    fn a_subgroup_ended_with_fin_leaves_nothing_unknown_after_it() {
        let mut c = Cache::new(4);
        c.live_started(Some(l(3, 9)));
        live(&mut c, 4, 0..5);
        // Open: what may still come after object 4 is unknown.
        assert_eq!(c.unknown(l(4, 0), l(4, 9)), [(l(4, 5), l(4, 9))]);
        assert_eq!(c.unknown(l(4, 0), l(4, 4)), []);
        c.stream_ended(4, 0, true);
        assert_eq!(c.unknown(l(4, 0), l(4, LAST_OBJECT)), []);
    }

    #[test]
    fn a_reset_subgroup_leaves_the_rest_of_its_group_unknown() {
        let mut c = Cache::new(4);
        c.live_started(None);
        live(&mut c, 0, 0..3);
        c.stream_ended(0, 0, false);
        // A late object after the reset (a new stream) does not make the gap known.
        c.insert(obj(0, 6), true);
        c.stream_ended(0, 0, true);
        assert_eq!(
            c.unknown(l(0, 0), l(0, LAST_OBJECT)),
            [(l(0, 3), l(0, 5)), (l(0, 7), l(0, LAST_OBJECT))]
        );
    }

    #[test]
    fn groups_never_received_and_the_start_before_the_subscription_are_unknown() {
        let mut c = Cache::new(4);
        c.live_started(Some(l(5, 2)));
        live(&mut c, 5, 3..6);
        c.stream_ended(5, 0, true);
        live(&mut c, 7, 0..2);
        c.stream_ended(7, 0, true);
        // Group 5 before object 3 came before the subscription; group 6 never came; the
        // run goes on across the group boundary as one.
        assert_eq!(c.unknown(l(5, 0), l(7, 0)), [(l(5, 0), l(5, 2)), (l(6, 0), l(6, LAST_OBJECT))]);
        assert_eq!(c.unknown(l(4, 0), l(5, 0)), [(l(4, 0), l(5, 0))]);
        // The joining fetch brought group 5 up to the subscription's start whole.
        c.note_known(l(5, 0), l(5, 2));
        assert_eq!(c.unknown(l(5, 0), l(7, 9)), [(l(6, 0), l(6, LAST_OBJECT))]);
    }

    #[test]
    fn a_group_is_known_up_to_its_least_confirmed_subgroup() {
        let mut c = Cache::new(4);
        c.live_started(None);
        for o in 0..8 {
            let mut x = obj(2, o);
            x.forwarding = Forwarding::Subgroup(o % 2);
            c.insert(x, true);
        }
        c.stream_ended(2, 0, true);
        // Subgroup 1 reset after object 7: object 9 may be its.
        c.stream_ended(2, 1, false);
        assert_eq!(c.unknown(l(2, 0), l(2, 20)), [(l(2, 8), l(2, 20))]);
        // A datagram: no stream end confirms anything around it.
        let mut d = obj(3, 1);
        d.forwarding = Forwarding::Datagram;
        c.insert(d, true);
        assert_eq!(c.unknown(l(3, 0), l(3, 1)), [(l(3, 0), l(3, 0))]);
    }

    #[test]
    fn an_end_of_group_object_ends_what_is_unknown() {
        let mut c = Cache::new(4);
        c.live_started(None);
        live(&mut c, 1, 0..3);
        let mut end = obj(1, 3);
        end.status = ObjectStatus::EndOfGroup;
        c.insert(end, true);
        assert_eq!(c.unknown(l(1, 0), l(1, LAST_OBJECT)), []);
    }

    #[test]
    fn a_new_upstream_keeps_what_the_old_one_confirmed() {
        let mut c = Cache::new(4);
        c.live_started(None);
        live(&mut c, 0, 0..4);
        // Lost after object 3; the new upstream starts after (0, 6).
        c.live_started(Some(l(0, 6)));
        live(&mut c, 0, 7..9);
        c.stream_ended(0, 0, true);
        assert_eq!(c.unknown(l(0, 0), l(0, LAST_OBJECT)), [(l(0, 4), l(0, 6))]);
        // A fill that is not live adds no stream state.
        let mut f = Cache::new(4);
        f.insert(obj(0, 0), false);
        assert_eq!(f.unknown(l(0, 0), l(0, 1)), [(l(0, 1), l(0, 1))]);
    }

    #[test]
    fn a_subgroup_cut_with_its_upstream_stays_unknown_after_its_last_object() {
        let mut c = Cache::new(4);
        c.live_started(None);
        // Group 0 ended whole; group 1 was at object 13 when the publisher's session died.
        live(&mut c, 0, 0..30);
        c.stream_ended(0, 0, true);
        live(&mut c, 1, 0..14);
        assert_eq!(c.live_cut(), [(1, 0)], "only the open stream is cut");
        assert_eq!(c.unknown(l(1, 0), l(1, LAST_OBJECT)), [(l(1, 14), l(1, LAST_OBJECT))]);
        assert_eq!(c.unknown(l(0, 0), l(0, LAST_OBJECT)), []);
        // A FIN of the old upstream's that comes after the cut does not make it whole.
        c.stream_ended(1, 0, true);
        assert_eq!(c.unknown(l(1, 0), l(1, LAST_OBJECT)), [(l(1, 14), l(1, LAST_OBJECT))]);
        // Nor does a new upstream that starts in a later group.
        c.live_started(Some(l(2, 4)));
        live(&mut c, 2, 5..9);
        c.stream_ended(2, 0, true);
        assert_eq!(c.unknown(l(1, 0), l(1, LAST_OBJECT)), [(l(1, 14), l(1, LAST_OBJECT))]);
        assert_eq!(c.live_cut(), [], "nothing open to cut");
    }

    #[test]
    fn a_cut_subgroup_continued_by_a_fetch_is_known_again() {
        let mut c = Cache::new(4);
        c.live_started(None);
        live(&mut c, 1, 0..5);
        assert_eq!(c.live_cut(), [(1, 0)]);
        // The new upstream's joining fetch brings the group up to object 6, and its
        // subscription the rest with a FIN.
        for o in 5..=6 {
            c.insert(obj(1, o), false);
        }
        c.note_known(l(1, 0), l(1, 6));
        c.live_started(Some(l(1, 6)));
        live(&mut c, 1, 7..10);
        c.stream_ended(1, 0, true);
        assert_eq!(c.unknown(l(1, 0), l(1, LAST_OBJECT)), []);
    }

    #[test]
    fn a_group_record_stays_small() {
        // Beside its objects: the record itself, and one subgroup entry for a group carried
        // on one stream (what each cached group of a video or audio track costs).
        assert!(std::mem::size_of::<Group>() <= 96, "{}", std::mem::size_of::<Group>());
        let mut c = Cache::new(1);
        c.live_started(None);
        live(&mut c, 0, 0..30);
        let g = &c.groups[0];
        assert_eq!(g.live.as_ref().map(|l| l.subgroups.capacity()), Some(1));
        assert_eq!(g.known.capacity(), 0);
    }
}
