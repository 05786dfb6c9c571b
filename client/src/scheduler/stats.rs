//! Counters of one scheduler.

use std::collections::BTreeMap;

use super::types::{DropReason, TrackClass};

/// A number of objects and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    /// Objects.
    pub objects: u64,
    /// Bytes (object header plus payload).
    pub bytes: u64,
}

impl Count {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// What a scheduler did since it was made. The relay turns these into metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed out in `Write` actions (stream headers included).
    pub written_bytes: u64,
    /// `Finish` actions.
    pub finishes: u64,
    /// `Reset` actions.
    pub resets: u64,
    /// `Abandon` actions.
    pub abandons: u64,
    pub(crate) sent: BTreeMap<TrackClass, Count>,
    pub(crate) dropped: BTreeMap<(TrackClass, DropReason), Count>,
}

impl Stats {
    /// Objects of `class` written whole to the transport.
    pub fn sent(&self, class: TrackClass) -> Count {
        self.sent.get(&class).copied().unwrap_or_default()
    }

    /// Objects of `class` dropped for `reason`.
    pub fn dropped(&self, class: TrackClass, reason: DropReason) -> Count {
        self.dropped.get(&(class, reason)).copied().unwrap_or_default()
    }

    /// Objects of `class` dropped for any reason.
    pub fn dropped_total(&self, class: TrackClass) -> Count {
        self.dropped.iter().filter(|((c, _), _)| *c == class).fold(Count::default(), |a, (_, n)| {
            Count { objects: a.objects + n.objects, bytes: a.bytes + n.bytes }
        })
    }

    /// Every non-zero drop counter, ordered by class then reason.
    pub fn drops(&self) -> impl Iterator<Item = (TrackClass, DropReason, Count)> + '_ {
        self.dropped.iter().map(|(&(c, r), &n)| (c, r, n))
    }

    /// Every class that sent objects, with its counter.
    pub fn sends(&self) -> impl Iterator<Item = (TrackClass, Count)> + '_ {
        self.sent.iter().map(|(&c, &n)| (c, n))
    }
}
