//! One track at the relay: its cache, its one upstream and its downstream subscribers, and
//! the fan-out that forwards each object the moment it arrives.
//!
//! Invariants:
//! - a track has at most one upstream (a SUBSCRIBE the relay sent, or a publisher's
//!   PUBLISH) however many downstream subscribers it has;
//! - an object goes to every downstream subscription whose filter it passes, on that
//!   subscriber's stream for the object's (group, subgroup), as the same `Bytes`;
//! - a downstream stream is finished when its upstream stream ends (or reset with the
//!   same code), so the relay holds no stream longer than its publisher does;
//! - a downstream stream ends with FIN only when the relay knows its subgroup is whole
//!   from the subscriber's start: its upstream stream ended with FIN. One the relay ends
//!   for any other reason (the upstream session died or was released mid-subgroup and no
//!   new upstream continued it, the linger ended, a limit) is reset, so that a subscriber
//!   never takes a cut subgroup for a whole one (draft-16 §10.4.3);
//! - a subscriber gets each subgroup on one stream, its objects once and in ascending
//!   Object ID order, also across a change of upstream (a make-before-break move, a
//!   publisher taking over, a re-route after a loss): the new upstream continues the
//!   streams the old one left open (draft-16 §2.2: one stream per subgroup unless one was
//!   reset; §10.4.3: only the next object goes on an existing stream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tiermesh_client::moq::{
    Connection, Forwarded, ReceivedObject, SubgroupStream, SubscribeRequest, TrackWriter,
};
use tiermesh_client::scheduler::reset_code;
use tiermesh_proto::data::Object;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{MessageParams, PublishDoneCode};
use tiermesh_proto::types::{FullTrackName, Location, RequestId, SubscriptionFilter};
use tokio::sync::oneshot;

use crate::cache::Cache;
use crate::metrics::{DropReason, HistogramTally, Metrics, TrackClass};

/// A relay session's number.
pub type SessionId = u64;

/// What the relay's upstream joining FETCH brought to the cache (`TrackState::filling`).
#[derive(Debug, Default)]
pub(crate) struct Fill {
    /// Its objects so far, in the order they came.
    pub(crate) objects: Vec<Object>,
    /// The last locations of the End of Unknown Range markers it passed on so far, in
    /// order: the locations after the item before each, up to it, are unknown.
    pub(crate) unknown: Vec<Location>,
    /// Set when it has ended with its FIN within `session::UPSTREAM_FETCH_WAIT`: what of
    /// its range it neither brought nor marked unknown does not exist. A fill that ended
    /// otherwise (given up, failed, timed out) leaves what follows its last item unknown.
    pub(crate) fin: bool,
}

/// A source the relay forwards a track's objects from: one upstream subscription, one
/// upstream joining FETCH, or one replay of the cache to a new subscriber. Numbered from 1
/// in the order they begin (`TrackState::new_feed`). An object from the feed that wrote
/// last on a subscriber's stream came on the same upstream stream, so it is the next object
/// of its subgroup; from another feed it is checked (`is_next`).
pub(crate) type Feed = u64;

/// The reset code of a downstream stream that cannot take the next object the new upstream
/// has for its subgroup (objects between are missing): INTERNAL_ERROR (0x0); the draft's
/// stream reset codes (§10.4.3) have none closer.
const RESET_NOT_NEXT: u32 = reset_code::INTERNAL_ERROR;

/// The reset code of a downstream stream whose upstream the relay released for another
/// (a publisher taking over, a make-before-break move) before the subgroup ended, and that
/// the new upstream did not continue: a hand-off to a different sender, for which the draft
/// (§10.4.3) asks for a reset but names no code; INTERNAL_ERROR as for [`RESET_NOT_NEXT`].
pub(crate) const RESET_HANDOFF: u32 = reset_code::INTERNAL_ERROR;

/// The reset code of a downstream stream the relay ends because a subscriber has more open
/// streams than [`MAX_STREAMS_PER_SUBSCRIBER`]: the relay's own limit, INTERNAL_ERROR.
const RESET_LIMIT: u32 = reset_code::INTERNAL_ERROR;

/// Subgroups one subscriber remembers as ended early (before their upstream stream ended:
/// its open streams ran over [`MAX_STREAMS_PER_SUBSCRIBER`], an upstream change left them
/// with no upstream to continue them, or objects went missing at the change), so that a
/// late object of one does not open a second stream for it. A handful at a time in
/// practice; 32 bounds the memory.
const MAX_CLOSED_PER_SUBSCRIBER: usize = 32;

/// Open downstream streams one subscriber may have on one track before the oldest is
/// ended (reset: its subgroup did not end upstream): a publisher normally ends each group's
/// stream, but one that vanishes mid-group must not make the relay hold streams forever. 64
/// covers several groups of many subgroups each.
const MAX_STREAMS_PER_SUBSCRIBER: usize = 64;

/// Where a track's objects come from.
#[derive(Debug)]
pub enum Upstream {
    /// The relay's SUBSCRIBE to the publisher session is on its way.
    Pending {
        /// The publisher's session.
        #[allow(dead_code)]
        session: SessionId,
    },
    /// Objects flow.
    Active {
        /// The publisher's session.
        session: SessionId,
        /// True for a publisher's PUBLISH, false for the relay's SUBSCRIBE.
        pushed: bool,
        /// Ends the relay's upstream subscription (UNSUBSCRIBE) when fired.
        release: Option<oneshot::Sender<()>>,
    },
    /// The publisher left; subscribers are held until the linger ends or it returns.
    Lingering,
}

/// One downstream subscription.
#[derive(Debug)]
pub struct Downstream {
    pub(crate) writer: TrackWriter,
    #[allow(dead_code)]
    pub(crate) session: SessionId,
    start: Location,
    end_group: Option<u64>,
    /// FORWARD: false while the subscriber asked for no objects (REQUEST_UPDATE).
    pub(crate) forward: bool,
    streams: Streams,
    /// Subgroups whose stream the relay finished before their upstream stream ended (see
    /// [`MAX_CLOSED_PER_SUBSCRIBER`]), oldest first; empty almost always.
    closed: Vec<(u64, u64)>,
}

impl Downstream {
    /// Ends the stream of `key` before its upstream stream ended, remembering it: with FIN
    /// when `reset` is `None` (the subgroup is known whole), else reset with that code.
    fn end_early(&mut self, key: (u64, u64), stream: SubgroupStream, reset: Option<u32>) {
        end(stream, reset);
        self.remember_closed(key);
    }

    fn remember_closed(&mut self, key: (u64, u64)) {
        if self.closed.len() >= MAX_CLOSED_PER_SUBSCRIBER {
            self.closed.remove(0);
        }
        self.closed.push(key);
    }
}

/// One open downstream stream: the last Object ID written on it and the feed it came from.
#[derive(Debug)]
struct Open {
    stream: SubgroupStream,
    last: u64,
    feed: Feed,
}

/// A subscriber's open streams on one track, by (group, subgroup). Mostly one or two (the
/// current group's, and the previous one's until its upstream stream ends), so a short list
/// searched from its newest end: cheaper per object than hashing the key, and one
/// allocation fewer to touch per subscriber in the fan-out.
#[derive(Debug, Default)]
struct Streams(Vec<((u64, u64), Open)>);

impl Streams {
    /// Where the stream of `key` is, looked for from the newest end.
    fn position(&self, key: (u64, u64)) -> Option<usize> {
        self.0.iter().rposition(|(k, _)| *k == key)
    }

    /// Adds a stream whose key is not there yet; returns it.
    fn push(&mut self, key: (u64, u64), open: Open) -> &mut Open {
        self.0.push((key, open));
        let last = self.0.len() - 1;
        &mut self.0[last].1
    }

    fn remove(&mut self, key: (u64, u64)) -> Option<SubgroupStream> {
        let i = self.0.iter().position(|(k, _)| *k == key)?;
        Some(self.0.remove(i).1.stream)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn keys(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    /// Takes out the streams `take` selects (by key and the feed that wrote last), each
    /// with that feed.
    fn take(
        &mut self,
        mut take: impl FnMut((u64, u64), Feed) -> bool,
    ) -> Vec<((u64, u64), SubgroupStream, Feed)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let (key, open) = &self.0[i];
            if take(*key, open.feed) {
                let (key, open) = self.0.remove(i);
                out.push((key, open.stream, open.feed));
            } else {
                i += 1;
            }
        }
        out
    }
}

impl IntoIterator for Streams {
    type Item = ((u64, u64), SubgroupStream);
    type IntoIter = std::iter::Map<
        std::vec::IntoIter<((u64, u64), Open)>,
        fn(((u64, u64), Open)) -> ((u64, u64), SubgroupStream),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(|(k, s)| (k, s.stream))
    }
}

/// Ends a downstream stream: with FIN when `reset` is `None`, else reset with that code.
fn end(stream: SubgroupStream, reset: Option<u32>) {
    match reset {
        Some(code) => stream.reset(code),
        None => stream.finish(),
    }
}

/// How a downstream stream of `key` that the relay ends before it saw the end of the
/// current upstream's stream must end (`None`: FIN, else the reset code): as the upstream
/// stream ended, if the relay knows (`ended`: a FIN, a reset's code, or the code of a stream
/// cut with its upstream), else as `otherwise` says.
fn early_end(
    ended: &HashMap<(u64, u64), Option<u32>>,
    key: (u64, u64),
    otherwise: Option<u32>,
) -> Option<u32> {
    ended.get(&key).copied().unwrap_or(otherwise)
}

/// The mutable state of a track.
#[derive(Debug)]
pub struct TrackState {
    pub(crate) cache: Cache,
    pub(crate) extensions: Extensions,
    pub(crate) class: TrackClass,
    pub(crate) upstream: Upstream,
    pub(crate) downstream: HashMap<u64, Downstream>,
    next_key: u64,
    pub(crate) waiting: Vec<(SubscribeRequest, SessionId)>,
    /// Downstream SUBSCRIBEs routed to this track whose SUBSCRIBE_OK is on its way: they
    /// hold the track (and its upstream) like subscribers do until they are added.
    pub(crate) attaching: usize,
    /// Bumped whenever the upstream changes, so that a stale linger timer does nothing.
    pub(crate) generation: u64,
    pub(crate) removed: bool,
    /// How upstream (group, subgroup) streams ended, for recent groups: `None` with FIN,
    /// else the reset code: the upstream's own, or the code of a stream cut open with its
    /// upstream (`upstream_cut`: SESSION_CLOSED when its session died).
    ended_streams: HashMap<(u64, u64), Option<u32>>,
    /// The first feed of the current upstream (its joining fetch's, else its
    /// subscription's). A stream last written by an older feed mirrors a stream of an
    /// earlier upstream that the current one has not continued.
    epoch: Feed,
    /// How to reset a stream an earlier upstream left open that the current one does not
    /// continue: SESSION_CLOSED when that upstream's session died, [`RESET_HANDOFF`] when
    /// the relay released it for another.
    cut_code: u32,
    /// The relay's own established SUBSCRIBE (session and request ID), to send
    /// REQUEST_UPDATE on; `None` for a pushed track or while there is none.
    pub(crate) upstream_request: Option<(Connection, RequestId)>,
    /// The FORWARD state of the relay's upstream subscription.
    pub(crate) upstream_forward: bool,
    /// A NEW_GROUP_REQUEST to carry in the next upstream SUBSCRIBE (asked for while none
    /// was established, draft-16 §9.2.2.9).
    pub(crate) new_group_for_subscribe: Option<u64>,
    /// The NEW_GROUP_REQUEST this relay sent upstream and the largest group when it did:
    /// outstanding until the largest group grows past it (§9.2.2.9).
    new_group_outstanding: Option<(u64, u64)>,
    /// The relay's joining FETCH upstream while it fills the cache, and a short while after
    /// (`session::FILL_KEPT`): the end of its range (exclusive) and what it brought so far
    /// (its objects are kept here too: live groups arriving meanwhile can evict its group
    /// from a small cache), changed at each object and closed when it ends.
    pub(crate) filling: Option<(Location, tokio::sync::watch::Receiver<Fill>)>,
    /// The last feed handed out (`new_feed`).
    next_feed: Feed,
    /// The feed of the current upstream subscription (0 before the first). A stream last
    /// written by an older feed was inherited from an earlier upstream, or from a fill or a
    /// replay before this upstream began.
    live_feed: Feed,
    /// Some subscriber may hold an inherited stream the current upstream has not
    /// continued: looked for when the current upstream ends a stream of a newer group.
    inherited: bool,
}

/// A track known to the relay.
#[derive(Debug)]
pub struct Track {
    pub(crate) name: FullTrackName,
    state: Mutex<TrackState>,
}

impl Track {
    pub(crate) fn new(name: FullTrackName, cache_groups: usize, upstream: Upstream) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: Mutex::new(TrackState {
                cache: Cache::new(cache_groups),
                extensions: Extensions::default(),
                class: TrackClass::Other,
                upstream,
                downstream: HashMap::new(),
                next_key: 0,
                waiting: Vec::new(),
                attaching: 0,
                generation: 0,
                removed: false,
                ended_streams: HashMap::new(),
                epoch: 0,
                cut_code: RESET_HANDOFF,
                upstream_request: None,
                upstream_forward: true,
                new_group_for_subscribe: None,
                new_group_outstanding: None,
                filling: None,
                next_feed: 0,
                live_feed: 0,
                inherited: false,
            }),
        })
    }

    /// The state, locked. Never held across an `await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the track's publisher for a new group (NEW GROUP REQUEST), following the
    /// relay rules of draft-16 §9.2.2.9: `value` is the largest group ID the requester
    /// knows plus one, 0 when it knows none (the mesh passes 0 after re-routing a track, so
    /// that subscribers get a key frame from the new path at once).
    ///
    /// - No established upstream subscription yet: the request rides on the next upstream
    ///   SUBSCRIBE.
    /// - Otherwise a REQUEST_UPDATE carrying it goes upstream unless the track did not
    ///   declare DYNAMIC GROUPS = 1, or `value` is non-zero and not above the largest
    ///   group (a newer group exists already), or one sent earlier is still outstanding
    ///   (until the largest group grows) with a value at least as large. So a burst of
    ///   subscribers asking at once makes one request, not one each.
    ///
    /// True if a REQUEST_UPDATE was sent upstream.
    pub fn request_new_group(&self, value: u64) -> bool {
        let (conn, request_id) = {
            let mut st = self.lock();
            match st.new_group_decision(value) {
                NewGroup::Ignore => return false,
                NewGroup::OnSubscribe => {
                    st.new_group_for_subscribe =
                        Some(st.new_group_for_subscribe.map_or(value, |v| v.max(value)));
                    return false;
                }
                NewGroup::Send(conn, request_id) => (conn, request_id),
            }
        };
        tracing::info!(track = %self.name, value, "NEW_GROUP_REQUEST upstream");
        let params = MessageParams { new_group_request: Some(value), ..Default::default() };
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.request_update(request_id, params).await {
                tracing::info!(track = %name, error = %e, "NEW_GROUP_REQUEST not accepted upstream");
            }
        });
        true
    }

    /// Sends FORWARD upstream when it must change: 1 as soon as one downstream subscriber
    /// wants objects while the upstream subscription has FORWARD 0 (draft-16 §8.5), 0 when
    /// every downstream subscriber set FORWARD 0.
    pub(crate) fn sync_upstream_forward(&self) {
        let (conn, request_id, forward) = {
            let mut st = self.lock();
            if st.downstream.is_empty() {
                return;
            }
            let want = st.downstream.values().any(|d| d.forward);
            let Some((conn, id)) = st.upstream_request.clone() else { return };
            if want == st.upstream_forward {
                return;
            }
            st.upstream_forward = want;
            (conn, id, want)
        };
        tracing::info!(track = %self.name, forward, "FORWARD upstream");
        let params = MessageParams { forward: Some(forward), ..Default::default() };
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.request_update(request_id, params).await {
                tracing::info!(track = %name, error = %e, "FORWARD update not accepted upstream");
            }
        });
    }
}

/// What to do with a NEW_GROUP_REQUEST.
enum NewGroup {
    Ignore,
    OnSubscribe,
    Send(Connection, RequestId),
}

/// The start location and end group a downstream filter selects, given the largest
/// location the relay reported in SUBSCRIBE_OK (draft-16 §5.1.2). No filter passes every
/// object, like AbsoluteStart {0, 0}.
pub fn filter_bounds(
    filter: Option<SubscriptionFilter>,
    largest: Option<Location>,
) -> (Location, Option<u64>) {
    match filter {
        None => (Location::new(0, 0), None),
        Some(SubscriptionFilter::LargestObject) => (
            largest.map_or(Location::new(0, 0), |l| Location::new(l.group.0, l.object.0 + 1)),
            None,
        ),
        Some(SubscriptionFilter::NextGroupStart) => {
            (largest.map_or(Location::new(0, 0), |l| Location::new(l.group.0 + 1, 0)), None)
        }
        Some(SubscriptionFilter::AbsoluteStart(s)) => (s, None),
        Some(SubscriptionFilter::AbsoluteRange { start, end_group }) => (start, Some(end_group.0)),
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl TrackState {
    /// Learns the track's extensions from the upstream's SUBSCRIBE_OK or PUBLISH.
    pub(crate) fn set_upstream_info(&mut self, extensions: &Extensions, largest: Option<Location>) {
        self.extensions = extensions.clone();
        self.class = TrackClass::from_publisher_priority(extensions.publisher_priority());
        if let Some(l) = largest {
            self.cache.note_largest(l);
        }
    }

    fn new_group_decision(&mut self, value: u64) -> NewGroup {
        let Some((conn, request_id)) = self.upstream_request.clone() else {
            return match self.upstream {
                // The request rides on the SUBSCRIBE being made (or the next one).
                Upstream::Pending { .. } | Upstream::Lingering => NewGroup::OnSubscribe,
                // A pushed track: no REQUEST_UPDATE path to its publisher here.
                Upstream::Active { .. } => NewGroup::Ignore,
            };
        };
        if !self.extensions.dynamic_groups() {
            return NewGroup::Ignore;
        }
        let largest_group = self.cache.largest().map(|l| l.group.0);
        if value != 0 && largest_group.is_some_and(|g| value <= g) {
            return NewGroup::Ignore;
        }
        if let Some((sent, _)) = self.new_group_outstanding
            && sent >= value
        {
            return NewGroup::Ignore;
        }
        self.new_group_outstanding = Some((value, largest_group.unwrap_or(0)));
        NewGroup::Send(conn, request_id)
    }

    /// The upstream SUBSCRIBE carried `value` as NEW_GROUP_REQUEST: it is outstanding.
    pub(crate) fn new_group_sent_on_subscribe(&mut self, value: u64) {
        let largest_group = self.cache.largest().map_or(0, |l| l.group.0);
        self.new_group_outstanding = Some((value, largest_group));
    }

    /// Applies a subscriber's REQUEST_UPDATE to its downstream subscription (draft-16
    /// §9.11.1): SUBSCRIBER_PRIORITY (its open streams and queued objects too),
    /// DELIVERY_TIMEOUT (the minimum with the track's, for streams opened from now on),
    /// FORWARD, and a narrowed filter (start moved forward, end group changed). These are
    /// per hop: none of them changes the relay's own upstream subscription except FORWARD
    /// (see [`Track::sync_upstream_forward`]). True if the subscription is here.
    pub(crate) fn update_downstream(&mut self, key: u64, params: &MessageParams) -> bool {
        let largest = self.cache.largest();
        let track_timeout = self.extensions.delivery_timeout_ms();
        let Some(d) = self.downstream.get_mut(&key) else { return false };
        if let Some(p) = params.subscriber_priority {
            d.writer.set_subscriber_priority(p);
        }
        if let Some(ms) = params.delivery_timeout_ms {
            let ms = track_timeout.map_or(ms, |t| t.min(ms));
            d.writer.set_delivery_timeout(Some(std::time::Duration::from_millis(ms)));
        }
        if let Some(f) = params.forward {
            d.forward = f;
        }
        if let Some(filter) = params.subscription_filter {
            let (start, end_group) = filter_bounds(Some(filter), largest);
            d.start = start;
            d.end_group = end_group;
        }
        true
    }

    /// The key of the downstream subscription `request_id` of session `session`.
    pub(crate) fn downstream_key(&self, session: SessionId, request_id: RequestId) -> Option<u64> {
        self.downstream
            .iter()
            .find(|(_, d)| d.session == session && d.writer.request_id() == request_id)
            .map(|(k, _)| *k)
    }

    /// Parks a downstream SUBSCRIBE until the pending upstream subscription is answered.
    pub(crate) fn park(&mut self, req: SubscribeRequest, session: SessionId, metrics: &Metrics) {
        self.waiting.push((req, session));
        metrics.subscribes_pending.inc();
    }

    /// Takes every parked SUBSCRIBE (each must then be answered).
    pub(crate) fn take_waiting(&mut self, metrics: &Metrics) -> Vec<(SubscribeRequest, SessionId)> {
        let waiting = std::mem::take(&mut self.waiting);
        metrics.subscribes_pending.set(metrics.subscribes_pending.get() - waiting.len() as i64);
        waiting
    }

    /// Adds a downstream subscription and replays the cached objects its filter passes.
    /// Returns its key.
    pub(crate) fn add_downstream(
        &mut self,
        writer: TrackWriter,
        session: SessionId,
        start: Location,
        end_group: Option<u64>,
        forward: bool,
        metrics: &Metrics,
    ) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let mut d = Downstream {
            writer,
            session,
            start,
            end_group,
            forward,
            streams: Streams::default(),
            closed: Vec::new(),
        };
        let replay = if forward { self.cache.from(start, end_group) } else { Vec::new() };
        let now = Instant::now();
        let feed = if replay.is_empty() { 0 } else { self.new_feed() };
        for obj in replay {
            let fwd = &mut Forwarded::new(&obj, now);
            if send(&mut d, fwd, feed, &self.cache, self.class, metrics) {
                metrics.object_out(self.class, obj.payload.len());
            }
        }
        // Replayed subgroups whose upstream stream has ended end the same way: with FIN if
        // it did (every object was cached and replayed), else reset with its code (its
        // objects written first may be lost with the reset: a subgroup the relay knows to
        // be cut is never handed on as whole).
        let ended: Vec<_> =
            d.streams.keys().filter_map(|k| self.ended_streams.get(&k).map(|e| (k, *e))).collect();
        for (k, reset) in ended {
            if let Some(s) = d.streams.remove(k) {
                match reset {
                    None => s.finish(),
                    Some(_) => d.end_early(k, s, reset),
                }
            }
        }
        self.downstream.insert(key, d);
        key
    }

    /// Removes a downstream subscription, finishing its streams. True if it was there.
    pub(crate) fn remove_downstream(&mut self, key: u64) -> bool {
        match self.downstream.remove(&key) {
            Some(d) => {
                for (_, s) in d.streams {
                    s.finish();
                }
                true
            }
            None => false,
        }
    }

    /// A new source of objects for this track (see [`Feed`]).
    pub(crate) fn new_feed(&mut self) -> Feed {
        self.next_feed += 1;
        self.next_feed
    }

    /// A new upstream subscription (or PUBLISH) is established, whose objects start after
    /// `largest` (none: it has published nothing yet); returns the feed its objects are
    /// forwarded as. `epoch` is the feed of its joining fetch, if it has one (created
    /// before this call).
    ///
    /// The subscribers' open streams stay open: the new upstream continues each subgroup
    /// it has more objects of on the same stream (those already sent are not sent again).
    /// Streams of groups before `largest`'s are ended: the new subscription starts after
    /// them, so nothing will continue them. A stream of `largest`'s group that the new
    /// upstream does not continue is ended once the new upstream has ended a stream of a
    /// newer group (`end_stream`). Either way a stream the old upstream left open is reset
    /// ([`TrackState::upstream_cut`]), since objects of it may be missing.
    pub(crate) fn upstream_established(
        &mut self,
        largest: Option<Location>,
        epoch: Option<Feed>,
    ) -> Feed {
        self.live_feed = self.new_feed();
        self.epoch = epoch.unwrap_or(self.live_feed);
        self.cache.live_started(largest);
        self.finish_inherited(largest.map(|l| l.group.0));
        self.live_feed
    }

    /// The current upstream subscription ends before its open subgroup streams did:
    /// `code` SESSION_CLOSED when its session died, [`RESET_HANDOFF`] when the relay
    /// releases it for a new upstream. The cache marks those subgroups cut (what follows
    /// their last object is unknown to a FETCH), and a subscriber stream mirroring one is
    /// reset with `code` when the relay ends it, unless a new upstream continues the
    /// subgroup to its FIN (the draft lets a relay try to recover the missing objects
    /// before it resets, §10.4.3): at once for a subscriber added later, else when the new
    /// upstream's streams show it will not continue it, or when the linger ends.
    pub(crate) fn upstream_cut(&mut self, code: u32) {
        self.cut_code = code;
        for key in self.cache.live_cut() {
            self.note_ended(key, Some(code));
        }
    }

    /// Remembers how the upstream stream of `key` ended (`None`: FIN), for recent groups.
    fn note_ended(&mut self, key: (u64, u64), end: Option<u32>) {
        self.ended_streams.insert(key, end);
        if self.ended_streams.len() > 4 * MAX_STREAMS_PER_SUBSCRIBER {
            let oldest = self.ended_streams.keys().map(|k| k.0).min().unwrap_or(0);
            self.ended_streams.retain(|k, _| k.0 != oldest);
        }
    }

    /// Ends the inherited streams (those no feed of the current upstream's subscription
    /// has written on) of groups before `before` (all of them with `None`). One whose
    /// upstream stream was cut or reset, or last written by an earlier upstream, is reset;
    /// one the current upstream's joining fetch (or a replay since) wrote last is finished:
    /// the fetch brought its group up to the subscription's start, and the subscription
    /// has gone on to a newer group without more of it (objects are produced in group
    /// order).
    fn finish_inherited(&mut self, before: Option<u64>) {
        let (live, epoch, cut) = (self.live_feed, self.epoch, self.cut_code);
        let mut left = false;
        let (mut finished, mut reset) = (0, 0);
        for d in self.downstream.values_mut() {
            let ended = d.streams.take(|(g, _), feed| {
                let inherited = feed < live;
                let end = inherited && before.is_none_or(|b| g < b);
                left |= inherited && !end;
                end
            });
            for (key, stream, feed) in ended {
                let how = early_end(&self.ended_streams, key, (feed < epoch).then_some(cut));
                if how.is_some() {
                    reset += 1;
                } else {
                    finished += 1;
                }
                d.end_early(key, stream, how);
            }
        }
        self.inherited = left;
        if finished + reset > 0 {
            tracing::debug!(finished, reset, ?before, "streams no upstream continues ended");
        }
    }

    /// Caches an object from upstream and forwards it to every subscriber whose filter
    /// passes it. `feed` is where it came from (see [`Feed`]).
    pub(crate) fn forward(&mut self, o: &ReceivedObject, feed: Feed, metrics: &Metrics) {
        let obj = o.to_object();
        let class = self.class;
        metrics.object_in(class, obj.payload.len());
        if let Some(ts) = o.capture_timestamp_us() {
            metrics.observe_capture_age(ts, now_us());
        }
        // Objects of one track can come from more than one publisher (a publisher that
        // reconnected while its old session lingers, draft-16 §8.3 "Multiple Publishers"):
        // a location already cached is a duplicate and is not forwarded again.
        if !self.cache.insert(obj.clone(), feed == self.live_feed) {
            return;
        }
        if let Some((_, g)) = self.new_group_outstanding
            && obj.group_id > g
        {
            self.new_group_outstanding = None;
        }
        // What every subscriber's copy shares (its head, its capture age) is worked out once;
        // its delivery timeout counts from its arrival here.
        let mut shared = Forwarded::new(&obj, o.arrival);
        // What the fan-out counts is added to the shared metrics once per object, not once
        // per subscriber (a few atomic operations each).
        let mut sent = 0;
        let mut delays = HistogramTally::default();
        for d in self.downstream.values_mut() {
            if !d.forward || d.writer.is_closed() || d.end_group.is_some_and(|e| obj.group_id > e) {
                continue;
            }
            if send(d, &mut shared, feed, &self.cache, class, metrics) {
                sent += 1;
                delays.observe(o.arrival.elapsed());
            }
        }
        // A fill beside the subscription (a new track's joining fetch) may leave a stream
        // that the subscription does not go on with.
        if feed != self.live_feed && sent > 0 {
            self.inherited = true;
        }
        metrics.fan_out(class, sent, sent * obj.payload.len() as u64, &mut delays);
    }

    /// An upstream subgroup stream ended: end the downstream streams that mirror it. A
    /// subscription whose AbsoluteRange ends with this group is over: it gets PUBLISH_DONE
    /// (SUBSCRIPTION_ENDED). Returns how many subscriptions ended so.
    ///
    /// A stream inherited from an earlier upstream, of an older group than this one, that
    /// the current upstream has not continued is finished too: the upstream has carried a
    /// newer group to its end, so it has no more of the older one (objects are produced in
    /// group order; a video group lasts a second).
    pub(crate) fn end_stream(&mut self, group: u64, subgroup: u64, reset: Option<u32>) -> usize {
        if self.inherited && reset.is_none() {
            self.finish_inherited(Some(group));
        }
        self.cache.stream_ended(group, subgroup, reset.is_none());
        self.note_ended((group, subgroup), reset);
        let mut over = Vec::new();
        for (key, d) in self.downstream.iter_mut() {
            if let Some(s) = d.streams.remove((group, subgroup)) {
                end(s, reset);
            }
            if d.end_group == Some(group) {
                over.push(*key);
            }
        }
        for key in &over {
            if let Some(d) = self.downstream.remove(key) {
                // Its other streams end before their upstream streams did: whole only if
                // the relay knows so (the publisher ended the subscription: CANCELLED).
                for (k, s) in d.streams {
                    end(s, early_end(&self.ended_streams, k, Some(reset_code::CANCELLED)));
                }
                d.writer
                    .publish_done(PublishDoneCode::SubscriptionEnded, "end of the filter's range");
            }
        }
        over.len()
    }

    /// Ends every downstream subscription with PUBLISH_DONE. Streams still open are reset
    /// (their subgroups did not end upstream while the relay watched): with `stream_reset`
    /// (SESSION_CLOSED when the linger of a lost publisher ends, CANCELLED when the
    /// publisher ended the track), or as their upstream stream ended if the relay knows.
    pub(crate) fn end_all(
        &mut self,
        code: PublishDoneCode,
        reason: &str,
        stream_reset: u32,
    ) -> usize {
        let n = self.downstream.len();
        for (_, d) in self.downstream.drain() {
            for (k, s) in d.streams {
                end(s, early_end(&self.ended_streams, k, Some(stream_reset)));
            }
            d.writer.publish_done(code, reason);
        }
        n
    }
}

/// Whether object `id` of subgroup `key` is the next one after `last` on a stream that
/// another feed wrote (draft-16 §10.4.3): one more than `last`, or every Object ID between
/// them is cached in another subgroup (or as a datagram).
fn is_next(cache: &Cache, key: (u64, u64), last: u64, id: u64) -> bool {
    id == last + 1 || cache.elsewhere_between(key.0, key.1, last, id)
}

/// What to do with an object of a subgroup for one subscriber.
#[derive(Clone, Copy)]
enum Step {
    /// Write it on the open stream.
    Write,
    /// Already sent (or older than what was): not again, never backwards.
    Skip,
    /// Not known to be the next object: the stream is reset and the subgroup given up.
    Abandon,
    /// No stream yet: open one.
    Open,
}

/// Sends one object to one subscriber if its filter passes it. `feed` is where it came
/// from. True if it was handed to the subscriber's link (the caller counts it).
fn send(
    d: &mut Downstream,
    fwd: &mut Forwarded<'_>,
    feed: Feed,
    cache: &Cache,
    class: TrackClass,
    metrics: &Metrics,
) -> bool {
    let obj = fwd.object();
    if obj.location() < d.start {
        return false;
    }
    match obj.forwarding.subgroup_id() {
        Some(sg) => {
            let key = (obj.group_id, sg);
            let id = obj.object_id;
            // One lookup for every object but a subgroup's first.
            let at = d.streams.position(key);
            let step = match at.map(|i| &mut d.streams.0[i].1) {
                // The same feed: the same upstream stream, so the next object.
                Some(open) if open.feed == feed && id > open.last => Step::Write,
                Some(open) if id <= open.last => Step::Skip,
                Some(open) if is_next(cache, key, open.last, id) => {
                    open.feed = feed;
                    Step::Write
                }
                Some(_) => Step::Abandon,
                None if d.closed.contains(&key) => {
                    metrics.dropped(class, DropReason::Reset);
                    Step::Skip
                }
                None => Step::Open,
            };
            let open = match (step, at) {
                (Step::Write, Some(i)) => &mut d.streams.0[i].1,
                (Step::Skip, _) => return false,
                (Step::Abandon, _) => {
                    // The draft would open a new stream for the rest of the subgroup; the
                    // send scheduler opens none for a subgroup whose stream was reset
                    // (the delivery timeout's rule), and a video frame after a hole in its
                    // group does not decode anyway: the rest of the subgroup is dropped.
                    tracing::debug!(
                        group = key.0,
                        subgroup = key.1,
                        id,
                        "objects missing before this one at an upstream change: subgroup stream reset"
                    );
                    if let Some(s) = d.streams.remove(key) {
                        s.reset(RESET_NOT_NEXT);
                    }
                    d.remember_closed(key);
                    metrics.dropped(class, DropReason::Reset);
                    return false;
                }
                _ => {
                    if d.streams.len() >= MAX_STREAMS_PER_SUBSCRIBER
                        && let Some(oldest) = d.streams.keys().min()
                        && let Some(s) = d.streams.remove(oldest)
                    {
                        // Its upstream stream has not ended: objects may still be missing.
                        d.end_early(oldest, s, Some(RESET_LIMIT));
                    }
                    let stream =
                        d.writer.open_subgroup(obj.group_id, sg, Some(obj.publisher_priority));
                    d.streams.push(key, Open { stream, last: id, feed })
                }
            };
            if let Err(e) = open.stream.write_forwarded(fwd) {
                tracing::debug!(error = %e, "object not forwarded");
                if matches!(e, tiermesh_client::moq::Error::Ended) {
                    metrics.dropped(class, DropReason::Reset);
                }
                return false;
            }
            open.last = id;
        }
        None => {
            if d.writer.send_datagram(obj).is_err() {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiermesh_proto::types::GroupId;

    #[test]
    fn filters_start_where_the_draft_says() {
        let largest = Some(Location::new(7, 4));
        let f = |filter| filter_bounds(filter, largest);
        assert_eq!(f(Some(SubscriptionFilter::LargestObject)), (Location::new(7, 5), None));
        assert_eq!(f(Some(SubscriptionFilter::NextGroupStart)), (Location::new(8, 0), None));
        assert_eq!(
            f(Some(SubscriptionFilter::AbsoluteStart(Location::new(3, 2)))),
            (Location::new(3, 2), None)
        );
        let range =
            SubscriptionFilter::AbsoluteRange { start: Location::new(6, 0), end_group: GroupId(9) };
        assert_eq!(f(Some(range)), (Location::new(6, 0), Some(9)));
        assert_eq!(f(None), (Location::new(0, 0), None));
        // Nothing published yet: every relative filter starts at {0, 0}.
        assert_eq!(
            filter_bounds(Some(SubscriptionFilter::LargestObject), None).0,
            Location::new(0, 0)
        );
        assert_eq!(
            filter_bounds(Some(SubscriptionFilter::NextGroupStart), None).0,
            Location::new(0, 0)
        );
    }
}
