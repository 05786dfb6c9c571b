//! Malformed-track detection across the streams and datagrams of one track (draft-16
//! §2.4.2 and the gap extensions of §11): the conditions a single stream cannot show.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Error, Forwarding, Object, ObjectStatus};
use crate::types::Location;

/// Groups whose state is kept by default: with one group per GOP (a second or two) or per
/// 20 ms audio frame this spans the part of a live track that can still arrive late.
const DEFAULT_GROUP_WINDOW: usize = 64;

/// Object IDs remembered per group, to bound memory against a hostile peer; beyond it
/// the gap checks of that group stop looking at further objects.
const MAX_IDS_PER_GROUP: usize = 65_536;

#[derive(Debug, Default)]
struct GroupState {
    /// Objects with an ID above this do not exist (End of Group status, END_OF_GROUP bit).
    last: Option<u64>,
    /// Prior Group ID Gap carried by objects of this group.
    group_gap: Option<u64>,
    /// Object IDs received.
    ids: HashSet<u64>,
    /// Largest Object ID received (status objects included).
    largest: Option<u64>,
    /// Ranges [start, end) that a Prior Object ID Gap declared non-existent.
    object_gaps: Vec<(u64, u64)>,
    /// Final Object ID of each subgroup whose stream ended with FIN.
    subgroup_final: HashMap<u64, u64>,
    /// Largest Object ID received per subgroup.
    subgroup_largest: HashMap<u64, u64>,
}

/// Watches every object of one track, from all its streams and datagrams, and reports the
/// first condition that makes the track malformed:
///
/// - an object beyond the final object of its subgroup (condition 5), of its group
///   (condition 7) or of the track (condition 8), in whichever order they arrive;
/// - a subgroup ended by FIN on several streams with different final objects (condition 6);
/// - an object whose forwarding preference differs from the one seen for the same
///   Location (condition 10);
/// - Prior Group ID Gap: different values in one group, a value covering a group already
///   received, or an object of a group inside a declared gap;
/// - Prior Object ID Gap: a gap covering an object already received, or an object inside
///   a declared gap.
///
/// State is kept for the newest groups only ([`TrackChecker::with_group_window`]).
#[derive(Debug)]
pub struct TrackChecker {
    window: usize,
    end_of_track: Option<Location>,
    groups: BTreeMap<u64, GroupState>,
    /// Forwarding preference per Location, for condition 10 (bounded like `ids`).
    forwarding: HashMap<(u64, u64), Forwarding>,
}

impl Default for TrackChecker {
    fn default() -> Self {
        TrackChecker {
            window: DEFAULT_GROUP_WINDOW,
            end_of_track: None,
            groups: BTreeMap::new(),
            forwarding: HashMap::new(),
        }
    }
}

impl TrackChecker {
    /// A checker keeping the newest 64 groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the state of the newest `groups` groups (at least 1).
    pub fn with_group_window(mut self, groups: usize) -> Self {
        self.window = groups.max(1);
        self
    }

    /// The final object of the track, once an End of Track object arrived.
    pub fn end_of_track(&self) -> Option<Location> {
        self.end_of_track
    }

    /// Checks one received object (from any form, see [`Object`]). On error the object
    /// must not be cached and the track is malformed; the checker's state is unchanged.
    pub fn handle_object(&mut self, obj: &Object) -> Result<(), Error> {
        let (g, o) = (obj.group_id, obj.object_id);
        let loc = obj.location();
        if let Some(end) = self.end_of_track
            && loc > end
        {
            return Err(Error::malformed_track("object after the End of Track"));
        }
        if obj.status == ObjectStatus::EndOfTrack
            && self
                .groups
                .iter()
                .any(|(gid, s)| s.largest.is_some_and(|l| Location::new(*gid, l) > loc))
        {
            return Err(Error::malformed_track("End of Track before an object already received"));
        }
        if let Some(f) = self.forwarding.get(&(g, o))
            && *f != obj.forwarding
        {
            return Err(Error::malformed_track("object seen with two forwarding preferences"));
        }
        // Prior Group ID Gap checks against other groups.
        for (gid, s) in &self.groups {
            if let Some(gap) = s.group_gap
                && g < *gid
                && g >= gid.saturating_sub(gap)
            {
                return Err(Error::malformed_track("object in a group declared non-existent"));
            }
        }
        if let Some(gap) = obj.extensions.group_gap() {
            let covered = g.saturating_sub(gap)..g;
            if self.groups.range(covered).any(|(_, s)| s.largest.is_some()) {
                return Err(Error::malformed_track("Prior Group ID Gap covers a received group"));
            }
        }
        if let Some(s) = self.groups.get(&g) {
            if let (Some(a), Some(b)) = (s.group_gap, obj.extensions.group_gap())
                && a != b
            {
                return Err(Error::malformed_track("two Prior Group ID Gap values in one group"));
            }
            if s.last.is_some_and(|last| o > last) {
                return Err(Error::malformed_track("object after the final object of its group"));
            }
            if obj.status == ObjectStatus::EndOfGroup && s.largest.is_some_and(|l| l > o) {
                return Err(Error::malformed_track(
                    "End of Group before an object already received",
                ));
            }
            if s.object_gaps.iter().any(|(a, b)| (*a..*b).contains(&o)) {
                return Err(Error::malformed_track("object declared non-existent by a gap"));
            }
            if let Some(gap) = obj.extensions.object_gap()
                && s.ids.iter().any(|id| *id < o && *id >= o - gap.min(o))
            {
                return Err(Error::malformed_track("Prior Object ID Gap covers a received object"));
            }
            if let Forwarding::Subgroup(sg) = obj.forwarding
                && s.subgroup_final.get(&sg).is_some_and(|f| o > *f)
            {
                return Err(Error::malformed_track(
                    "object after the final object of its subgroup",
                ));
            }
        }
        // Accepted: record it.
        if self.groups.len() >= self.window
            && !self.groups.contains_key(&g)
            && self.groups.keys().next().is_some_and(|oldest| g < *oldest)
        {
            // Older than every group kept: nothing to record against.
            return Ok(());
        }
        let s = self.groups.entry(g).or_default();
        if s.ids.len() < MAX_IDS_PER_GROUP {
            s.ids.insert(o);
            self.forwarding.insert((g, o), obj.forwarding);
        }
        s.largest = Some(s.largest.map_or(o, |l| l.max(o)));
        if let Forwarding::Subgroup(sg) = obj.forwarding {
            let l = s.subgroup_largest.entry(sg).or_insert(o);
            *l = (*l).max(o);
        }
        if let Some(gap) = obj.extensions.group_gap() {
            s.group_gap = Some(gap);
        }
        if let Some(gap) = obj.extensions.object_gap() {
            s.object_gaps.push((o - gap.min(o), o));
        }
        match obj.status {
            ObjectStatus::EndOfGroup => s.last = Some(s.last.map_or(o, |l| l.min(o))),
            ObjectStatus::EndOfTrack => self.end_of_track = Some(loc),
            ObjectStatus::Normal => {}
        }
        self.evict();
        Ok(())
    }

    /// Records that no object above `last_object_id` exists in `group` (a datagram with the
    /// END_OF_GROUP bit, or a subgroup stream with the END_OF_GROUP bit that ended with FIN).
    pub fn handle_end_of_group(&mut self, group: u64, last_object_id: u64) -> Result<(), Error> {
        let s = self.groups.entry(group).or_default();
        if s.largest.is_some_and(|l| l > last_object_id) {
            return Err(Error::malformed_track("end of group before an object already received"));
        }
        s.last = Some(s.last.map_or(last_object_id, |l| l.min(last_object_id)));
        self.evict();
        Ok(())
    }

    /// Records that the stream of subgroup `subgroup_id` of `group` ended with FIN after
    /// `last_object_id` (its final object, §2.4.2 condition 5).
    pub fn handle_subgroup_fin(
        &mut self,
        group: u64,
        subgroup_id: u64,
        last_object_id: u64,
    ) -> Result<(), Error> {
        let s = self.groups.entry(group).or_default();
        if let Some(f) = s.subgroup_final.get(&subgroup_id)
            && *f != last_object_id
        {
            return Err(Error::malformed_track("subgroup ended with two different final objects"));
        }
        if s.subgroup_largest.get(&subgroup_id).is_some_and(|l| *l > last_object_id) {
            return Err(Error::malformed_track("object after the final object of its subgroup"));
        }
        s.subgroup_final.insert(subgroup_id, last_object_id);
        self.evict();
        Ok(())
    }

    fn evict(&mut self) {
        while self.groups.len() > self.window {
            if let Some((g, _)) = self.groups.pop_first() {
                self.forwarding.retain(|(fg, _), _| *fg != g);
            }
        }
    }
}
