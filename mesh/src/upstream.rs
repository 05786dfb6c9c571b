//! Upstream subscription bookkeeping: at most one upstream subscription per track, along the
//! best route only, moved when the route changes.
//!
//! The relay counts its downstream subscribers per track here. The first one makes the
//! relay subscribe upstream (to the next hop [`Node::next_hop`] names); later ones share that
//! subscription; the last one leaving ends it. After draining a burst of
//! [`crate::Event::RouteChanged`], the relay calls [`Upstream::reroute`] once and carries out
//! each [`Move`]: subscribe at the new hop with NEW GROUP REQUEST, so subscribers get a key
//! frame from the new path at once, then unsubscribe from the old one.

use std::collections::BTreeMap;

use tiermesh_proto::types::FullTrackName;

use crate::node::{Hop, Node};

#[derive(Debug, Clone)]
struct Sub {
    via: Option<Hop>,
    downstream: usize,
    /// The track has had an upstream: subscribers are decoding it.
    flowed: bool,
}

/// A track whose upstream subscription must move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The track.
    pub track: FullTrackName,
    /// Where it was subscribed (`None`: nowhere, no route existed).
    pub from: Option<Hop>,
    /// Where it must be subscribed now (`None`: no route any more; keep the downstream
    /// subscriptions and wait for a route to come back).
    pub to: Option<Hop>,
    /// The track flowed before (now, or before a gap with no route).
    flowed: bool,
}

impl Move {
    /// True when the new upstream subscription must carry NEW GROUP REQUEST: the track
    /// flowed before (up to now, or before a gap without a route), so subscribers already
    /// decode it and need a fresh key frame from the new path rather than waiting for the
    /// publisher's next group.
    pub fn new_group_request(&self) -> bool {
        matches!(self.to, Some(Hop::Peer(_))) && self.flowed
    }
}

/// The relay's upstream subscriptions, one per track.
#[derive(Debug, Default)]
pub struct Upstream {
    tracks: BTreeMap<FullTrackName, Sub>,
}

impl Upstream {
    /// No subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more downstream subscriber for `track`. Returns where to subscribe upstream when
    /// this is the first subscriber and a route exists; `None` when the existing upstream
    /// subscription serves it (or no route exists yet: a later [`Self::reroute`] reports the
    /// route when one appears).
    pub fn subscribe(&mut self, track: &FullTrackName, node: &Node) -> Option<Hop> {
        if let Some(s) = self.tracks.get_mut(track) {
            s.downstream += 1;
            return None;
        }
        let via = node.next_hop(&track.namespace);
        let flowed = via.is_some();
        self.tracks.insert(track.clone(), Sub { via: via.clone(), downstream: 1, flowed });
        via
    }

    /// One downstream subscriber of `track` left. Returns the hop to unsubscribe from when
    /// it was the last one.
    pub fn unsubscribe(&mut self, track: &FullTrackName) -> Option<Hop> {
        let s = self.tracks.get_mut(track)?;
        s.downstream = s.downstream.saturating_sub(1);
        if s.downstream > 0 {
            return None;
        }
        self.tracks.remove(track).and_then(|s| s.via)
    }

    /// Where `track` is subscribed upstream, if anywhere.
    pub fn upstream_for(&self, track: &FullTrackName) -> Option<&Hop> {
        self.tracks.get(track).and_then(|s| s.via.as_ref())
    }

    /// Downstream subscribers of `track`.
    pub fn downstream(&self, track: &FullTrackName) -> usize {
        self.tracks.get(track).map_or(0, |s| s.downstream)
    }

    /// Tracks with an entry (subscribed upstream or waiting for a route).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when no track is held.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// The tracks held, with their upstream hop.
    pub fn iter(&self) -> impl Iterator<Item = (&FullTrackName, Option<&Hop>)> {
        self.tracks.iter().map(|(t, s)| (t, s.via.as_ref()))
    }

    /// Compares every held track's upstream with the node's current best route and returns
    /// the tracks that must move (the bookkeeping is updated already).
    pub fn reroute(&mut self, node: &Node) -> Vec<Move> {
        let mut moves = Vec::new();
        for (track, s) in self.tracks.iter_mut() {
            let to = node.next_hop(&track.namespace);
            if to != s.via {
                let flowed = s.flowed;
                moves.push(Move {
                    track: track.clone(),
                    from: s.via.clone(),
                    to: to.clone(),
                    flowed,
                });
                s.flowed |= to.is_some();
                s.via = to;
            }
        }
        moves
    }
}
