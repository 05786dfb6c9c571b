//! Publishing a synthetic broadcast over a MoQT session: what `tiermesh pub` and
//! `tiermesh dev` run.
//!
//! A [`Publisher`] owns a [`Generator`] and the state of each track (its subscribers and a
//! short cache of recent objects). [`Publisher::serve`] publishes the broadcast's namespace
//! on one connection (PUBLISH_NAMESPACE), then, in one loop, hands out objects as they fall
//! due, accepts SUBSCRIBEs for the broadcast's tracks and answers FETCHes (joining fetches
//! included) from the cache. If the connection is lost the same `Publisher` can serve a new
//! one: group IDs come from wall-clock time, so its tracks continue where they were.
//!
//! Each group is one subgroup stream (subgroup 0) per subscriber, finished as soon as its
//! last object is written: at once for an audio frame, after the 30th frame for video.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tiermesh_proto::data::{Forwarding, Object, ObjectStatus};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{PublishDoneCode, RequestErrorCode};
use tiermesh_proto::types::{
    FullTrackName, Location, SubscriptionFilter, TrackName, TrackNamespace,
};

use crate::moq::{CloseReason, TrackWriter};
use crate::moq::{Connection, Error, Event, IncomingFetch, SubgroupStream, SubscribeRequest};
use crate::synthetic::{self, BroadcastSpec, Generator, TrackKind, VIDEO_FPS};
use tokio::sync::Notify;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Groups of history kept per track for FETCH: the current group and the one before for
/// video (a joining fetch asks for the current group; one more covers a request made just
/// as a group ended), one second of audio frames.
fn cache_groups(kind: TrackKind) -> u64 {
    match kind {
        TrackKind::Catalog => 1,
        TrackKind::Audio => 50,
        TrackKind::Video => 2,
    }
}

struct Subscriber {
    writer: TrackWriter,
    stream: Option<SubgroupStream>,
    /// Next Group Start filter: nothing until a group begins.
    wait_for_group: bool,
}

struct TrackState {
    name: TrackName,
    kind: TrackKind,
    extensions: Extensions,
    cache: VecDeque<Object>,
    largest: Option<Location>,
    subscribers: Vec<Subscriber>,
    /// The subscriber count last reported to the source.
    reported: Option<usize>,
    objects_sent: u64,
}

impl TrackState {
    /// Hands `object` to the subscribers and the cache; `last_in_group` finishes its
    /// subgroup streams at once (otherwise the next group's first object does).
    fn push(&mut self, object: Object, last_in_group: bool) {
        self.subscribers.retain(|s| !s.writer.is_closed());
        for sub in &mut self.subscribers {
            if sub.wait_for_group {
                if object.object_id != 0 {
                    continue;
                }
                sub.wait_for_group = false;
            }
            let stream = match &mut sub.stream {
                Some(s) if s.group_id() == object.group_id => s,
                slot => {
                    // A new group: the previous one's stream is finished by dropping it.
                    slot.insert(sub.writer.open_subgroup(object.group_id, 0, None))
                }
            };
            if let Err(e) = stream.write_object(&object) {
                tracing::debug!(error = %e, "write failed; dropping the group's stream");
                sub.stream = None;
                continue;
            }
            self.objects_sent += 1;
            if last_in_group && let Some(s) = sub.stream.take() {
                s.finish();
            }
        }
        self.largest = Some(object.location());
        let keep_from = object.group_id.saturating_sub(cache_groups(self.kind) - 1);
        self.cache.push_back(object);
        while self.cache.front().is_some_and(|o| o.group_id < keep_from) {
            self.cache.pop_front();
        }
    }

    /// Cached objects from `start` to `end` (the wire's end: object 0 means all of the end
    /// group).
    fn range(&self, start: Location, end: Location) -> Vec<&Object> {
        self.cache
            .iter()
            .filter(|o| {
                let l = o.location();
                l >= start && if end.object.0 == 0 { l.group <= end.group } else { l < end }
            })
            .collect()
    }
}

/// Why [`Publisher::serve`] returned.
#[derive(Debug)]
pub enum Served {
    /// The stop signal fired: the namespace was withdrawn and the tracks ended.
    Stopped,
    /// The session closed.
    Closed(CloseReason),
}

/// Where a [`Publisher`]'s objects come from: the synthetic [`Generator`] or real media
/// (`crate::media::MediaBroadcast`). Sans-IO, like the generator: given wall-clock time, it
/// hands out the objects due by then.
pub trait Source: Send {
    /// The broadcast's tracks (catalog first).
    fn spec(&self) -> &BroadcastSpec;
    /// The next object due at or before `now_us`, or `None`.
    fn poll_object(&mut self, now_us: u64) -> Option<synthetic::Object>;
    /// When the next object is due, wall-clock microseconds; `None` if nothing more comes.
    fn poll_timeout(&self) -> Option<u64>;
    /// A catalog object for group `group_id`, generated at `now_us`.
    fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<synthetic::Object>;
    /// For a source whose objects are made on other threads (encoders): notified when
    /// [`Source::poll_object`] has something new before [`Source::poll_timeout`] (see
    /// [`Handover`]), so that the publisher polls at once. `None` (the default): the
    /// timeout alone drives it.
    fn wakeup(&self) -> Option<Arc<Notify>> {
        None
    }
    /// A subscriber asked for a new group (NEW GROUP REQUEST): start one at the next frame.
    fn request_key_frame(&mut self) {}
    /// Whether `object`, of a track of kind `kind`, is the last of its group, so that its
    /// subgroup stream is finished at once. By default audio and catalog objects are groups
    /// of one and a video group holds [`VIDEO_FPS`] frames; a group that turns out to end
    /// earlier is finished when the next one starts.
    fn ends_group(&self, kind: TrackKind, object: &synthetic::Object) -> bool {
        match kind {
            TrackKind::Catalog | TrackKind::Audio => true,
            TrackKind::Video => object.object_id + 1 == VIDEO_FPS,
        }
    }
    /// The number of subscriptions to track `track` (its index in [`Source::spec`]) is now
    /// `subscribers`. Reported once per change, 0 included (at the start of every served
    /// connection too); a subscription that ended is noticed at the next poll. A source
    /// can stop encoding what nobody watches.
    fn subscribers_changed(&mut self, _track: usize, _subscribers: usize) {}
    /// Whether track `track` is not being produced now (a rung nobody watched, or one the
    /// uplink cannot carry): a new subscription to it is then told of no content, rather
    /// than of the last group it had, which may be long past.
    fn is_idle(&self, _track: usize) -> bool {
        false
    }
    /// A connection to the relay was established at `now_us` (its first send-rate
    /// estimates describe slow start, not the link).
    fn connected(&mut self, _now_us: u64) {}
    /// The uplink connection's figures at `now_us`, every [`UPLINK_INTERVAL`]: a source
    /// with encoders follows its send rate (see [`crate::uplink`]).
    fn uplink_stats(&mut self, _now_us: u64, _stats: &crate::transport::Stats) {}
    /// One line on what the source did (printed when the publisher stops), if it has one.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// How items made on other threads (encoded frames, decoded pictures, passed-through audio)
/// reach a [`Source`] that sleeps until they come: a channel, and after each hand-over one
/// notification of the wake-up the source returns from [`Source::wakeup`].
///
/// The notification is `Notify::notify_one`, sent after the items: when the publisher is
/// not waiting yet (busy with earlier objects) it leaves a permit, so the publisher's next
/// wait returns at once and nothing handed over waits for a later hand-over
/// (`notify_waiters` would wake only a publisher already waiting). Hand-overs of different
/// items may share one wake-up (a source fed by its encoders and by a decoder).
pub struct Handover<T> {
    tx: Tx<T>,
    wake: Arc<Notify>,
}

enum Tx<T> {
    Unbounded(mpsc::Sender<T>),
    Bounded(mpsc::SyncSender<T>),
}

impl<T> Clone for Handover<T> {
    fn clone(&self) -> Self {
        let tx = match &self.tx {
            Tx::Unbounded(tx) => Tx::Unbounded(tx.clone()),
            Tx::Bounded(tx) => Tx::Bounded(tx.clone()),
        };
        Self { tx, wake: self.wake.clone() }
    }
}

impl<T> Handover<T> {
    /// A hand-over without a bound, for producers that must never wait (encoders), that
    /// notifies `wake`; and its receiving end, which the source polls.
    pub fn new(wake: Arc<Notify>) -> (Self, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel();
        (Self { tx: Tx::Unbounded(tx), wake }, rx)
    }

    /// A hand-over that holds at most `capacity` items (at least one), for a producer that
    /// may run ahead (a decoder reading a file): [`Handover::send`] waits for room.
    pub fn bounded(wake: Arc<Notify>, capacity: usize) -> (Self, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        (Self { tx: Tx::Bounded(tx), wake }, rx)
    }

    /// Hands `items` over and then notifies the wake-up once for them (also before waiting
    /// for room in a full bounded hand-over, so that the receiving side takes what fills
    /// it). Returns `false` once the receiving end is gone: nothing more can be handed over.
    pub fn send(&self, items: impl IntoIterator<Item = T>) -> bool {
        let mut any = false;
        for item in items {
            let sent = match &self.tx {
                Tx::Unbounded(tx) => tx.send(item).is_ok(),
                Tx::Bounded(tx) => match tx.try_send(item) {
                    Ok(()) => true,
                    Err(mpsc::TrySendError::Full(item)) => {
                        self.wake.notify_one();
                        tx.send(item).is_ok()
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => false,
                },
            };
            if !sent {
                return false;
            }
            any = true;
        }
        if any {
            self.wake.notify_one();
        }
        true
    }

    /// The wake-up notified after each hand-over.
    pub fn wakeup(&self) -> &Arc<Notify> {
        &self.wake
    }
}

/// How often [`Publisher::serve`] reads the connection's send-rate estimate for the source.
pub const UPLINK_INTERVAL: Duration = Duration::from_millis(500);

impl Source for Generator {
    fn spec(&self) -> &BroadcastSpec {
        Generator::spec(self)
    }
    fn poll_object(&mut self, now_us: u64) -> Option<synthetic::Object> {
        Generator::poll_object(self, now_us)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Generator::poll_timeout(self)
    }
    fn catalog_object(&self, group_id: u64, now_us: u64) -> Option<synthetic::Object> {
        Generator::catalog_object(self, group_id, now_us)
    }
    fn request_key_frame(&mut self) {
        Generator::request_new_group(self);
    }
    fn ends_group(&self, _kind: TrackKind, object: &synthetic::Object) -> bool {
        Generator::ends_group(self, object)
    }
}

/// Publishes one broadcast (synthetic by default); survives reconnections.
pub struct Publisher<S = Generator> {
    namespace: TrackNamespace,
    generator: S,
    tracks: Vec<TrackState>,
    token: Option<Bytes>,
}

impl<S> std::fmt::Debug for Publisher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher of `spec` under `namespace`, starting at wall-clock `now_us`. `token` is
    /// sent with PUBLISH_NAMESPACE as an AUTHORIZATION TOKEN.
    pub fn new(
        namespace: TrackNamespace,
        spec: BroadcastSpec,
        now_us: u64,
        token: Option<Bytes>,
    ) -> Self {
        Publisher::with_source(namespace, Generator::new(spec, now_us), token)
    }
}

impl<S: Source> Publisher<S> {
    /// A publisher of the objects of `source` under `namespace`. `token` is sent with
    /// PUBLISH_NAMESPACE as an AUTHORIZATION TOKEN.
    pub fn with_source(namespace: TrackNamespace, source: S, token: Option<Bytes>) -> Self {
        let tracks = source
            .spec()
            .tracks
            .iter()
            .map(|t| TrackState {
                name: TrackName(Bytes::from(t.name.clone().into_bytes())),
                kind: t.kind,
                extensions: t.extensions(),
                cache: VecDeque::new(),
                largest: None,
                subscribers: Vec::new(),
                reported: None,
                objects_sent: 0,
            })
            .collect();
        Self { namespace, generator: source, tracks, token }
    }

    /// The broadcast's namespace.
    pub fn namespace(&self) -> &TrackNamespace {
        &self.namespace
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.generator
    }

    /// Objects written to subscribers so far, all tracks together.
    pub fn objects_sent(&self) -> u64 {
        self.tracks.iter().map(|t| t.objects_sent).sum()
    }

    /// Subscriptions currently served.
    pub fn subscribers(&self) -> usize {
        self.tracks.iter().map(|t| t.subscribers.len()).sum()
    }

    /// Tells the source of every change in a track's subscriber count.
    fn report_subscribers(&mut self) {
        for (i, t) in self.tracks.iter_mut().enumerate() {
            t.subscribers.retain(|s| !s.writer.is_closed());
            let n = t.subscribers.len();
            if t.reported != Some(n) {
                t.reported = Some(n);
                self.generator.subscribers_changed(i, n);
            }
        }
    }

    /// Hands every object due by `now_us` to its track (subscribers and cache).
    fn produce(&mut self, now_us: u64) {
        while let Some(o) = self.generator.poll_object(now_us) {
            self.push(o);
        }
    }

    fn push(&mut self, o: synthetic::Object) {
        let priority = self.generator.spec().tracks[o.track].priority;
        let last_in_group = self.generator.ends_group(self.tracks[o.track].kind, &o);
        let object = Object {
            group_id: o.group_id,
            object_id: o.object_id,
            forwarding: Forwarding::Subgroup(0),
            publisher_priority: priority,
            status: ObjectStatus::Normal,
            extensions: o.extensions,
            payload: o.payload,
        };
        self.tracks[o.track].push(object, last_in_group);
    }

    /// Sends the catalog again as a new group, so a subscription that starts after the
    /// largest object (a relay's, a late joiner's) receives it at once.
    fn republish_catalog(&mut self, track: usize) {
        let now = now_us();
        let group = match self.tracks[track].largest {
            Some(l) => (l.group.0 + 1).max(now / 1_000_000),
            None => now / 1_000_000,
        };
        if let Some(o) = self.generator.catalog_object(group, now) {
            self.push(o);
        }
    }

    /// Publishes the namespace on `conn` and serves it until `stop` resolves or the session
    /// closes. `on_published` runs once REQUEST_OK has arrived.
    ///
    /// # Errors
    /// The relay refused PUBLISH_NAMESPACE, or the session closed before answering.
    pub async fn serve(
        &mut self,
        conn: &Connection,
        stop: impl Future<Output = ()>,
        on_published: impl FnOnce(),
    ) -> Result<Served, Error> {
        let request = conn.publish_namespace(self.namespace.clone(), self.token.clone()).await?;
        on_published();
        // Subscriptions of an earlier connection are gone with it.
        for t in &mut self.tracks {
            t.subscribers.clear();
        }
        tokio::pin!(stop);
        self.generator.connected(now_us());
        let mut uplink = tokio::time::interval(UPLINK_INTERVAL);
        uplink.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wakeup = self.generator.wakeup();
        loop {
            self.report_subscribers();
            let now = now_us();
            self.produce(now);
            let wait = self.generator.poll_timeout().map_or(Duration::from_secs(3600), |t| {
                Duration::from_micros(t.saturating_sub(now))
            });
            tokio::select! {
                () = &mut stop => {
                    for t in &mut self.tracks {
                        for s in t.subscribers.drain(..) {
                            drop(s.stream);
                            s.writer.publish_done(PublishDoneCode::TrackEnded, "publisher stopped");
                        }
                    }
                    conn.publish_namespace_done(request);
                    return Ok(Served::Stopped);
                }
                reason = conn.closed() => return Ok(Served::Closed(reason)),
                event = conn.next_event() => match event {
                    Some(Event::Subscribe(req)) => self.subscribe(req).await,
                    Some(Event::Fetch(req)) => {
                        let rate = conn.transport_stats().map_or(0, |s| s.send_rate_estimate_bps);
                        self.fetch(req, rate).await
                    }
                    // NEW_GROUP_REQUEST in a REQUEST_UPDATE: a new group at the next frame.
                    Some(Event::SubscriptionUpdate { params, .. })
                        if params.new_group_request.is_some() =>
                    {
                        self.generator.request_key_frame()
                    }
                    Some(other) => tracing::debug!(?other, "ignored"),
                    None => return Ok(Served::Closed(conn.closed().await)),
                },
                () = tokio::time::sleep(wait) => {}
                () = woken(wakeup.as_deref()) => {}
                _ = uplink.tick() => {
                    if let Some(stats) = conn.transport_stats() {
                        self.generator.uplink_stats(now_us(), &stats);
                    }
                }
            }
        }
    }

    fn track_index(&self, track: &FullTrackName) -> Option<usize> {
        if track.namespace != self.namespace {
            return None;
        }
        self.tracks.iter().position(|t| t.name == track.name)
    }

    async fn subscribe(&mut self, req: SubscribeRequest) {
        let Some(i) = self.track_index(&req.track) else {
            tracing::info!(track = %req.track, "SUBSCRIBE for a track this broadcast has not");
            req.reject(RequestErrorCode::DoesNotExist, "no such track in this broadcast");
            return;
        };
        if req.params.new_group_request.is_some() {
            self.generator.request_key_frame();
        }
        let wait_for_group =
            matches!(req.params.subscription_filter, Some(SubscriptionFilter::NextGroupStart));
        if self.generator.is_idle(i) {
            // Its cache holds what it sent before it went idle: no joining fetch may serve
            // that as the current group.
            let t = &mut self.tracks[i];
            t.cache.clear();
            t.largest = None;
        }
        let t = &self.tracks[i];
        let (extensions, largest) = (t.extensions.clone(), t.largest);
        match req.accept(extensions, largest).await {
            Ok(writer) => {
                tracing::info!(track = %String::from_utf8_lossy(&self.tracks[i].name.0), "subscribed");
                self.tracks[i].subscribers.push(Subscriber {
                    writer,
                    stream: None,
                    wait_for_group,
                });
                if self.tracks[i].kind == TrackKind::Catalog {
                    self.republish_catalog(i);
                }
            }
            Err(e) => tracing::warn!(error = %e, "accepting SUBSCRIBE failed"),
        }
    }

    /// Answers a FETCH from the cache. `send_rate_bps` is the connection's send rate
    /// estimate (0 if unknown): a FETCH whose objects could not reach the requester within
    /// the end-to-end capture-age budget at that rate is refused (see [`reaches_live`]).
    async fn fetch(&mut self, req: IncomingFetch, send_rate_bps: u64) {
        let Some(i) = self.track_index(&req.range.track) else {
            req.reject(RequestErrorCode::DoesNotExist, "no such track in this broadcast");
            return;
        };
        let t = &self.tracks[i];
        let objects: Vec<Object> =
            t.range(req.range.start, req.range.end).into_iter().cloned().collect();
        let Some(last) = objects.last().map(Object::location) else {
            req.reject(RequestErrorCode::InvalidRange, "no cached objects in that range");
            return;
        };
        if !reaches_live(&objects, send_rate_bps, now_us()) {
            tracing::debug!(track = %req.range.track, objects = objects.len(), "FETCH refused: it would arrive too old to play");
            req.reject(RequestErrorCode::InvalidRange, "the range would arrive too old to play");
            return;
        }
        let extensions = t.extensions.clone();
        match req.accept(false, last, extensions).await {
            Ok(mut response) => {
                for o in &objects {
                    if let Err(e) = response.write(o) {
                        tracing::warn!(error = %e, "writing FETCH response failed");
                        return;
                    }
                }
                response.finish();
            }
            Err(e) => tracing::warn!(error = %e, "accepting FETCH failed"),
        }
    }
}

/// Resolves when `wakeup` is notified; never without one.
async fn woken(wakeup: Option<&Notify>) {
    match wakeup {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Whether `objects` (a FETCH's answer, oldest first) reach the requester within the
/// end-to-end capture-age budget ([`crate::scheduler::DEFAULT_CAPTURE_AGE_BUDGET`]) when
/// sent at `send_rate_bps` from `now_us`: the first object's capture age now plus the time
/// all of them take to leave. True when the rate or the capture time is not known.
///
/// A relay joins a track upstream with a joining FETCH of the current group, which on the
/// publisher's uplink competes with the live groups at the track's own priority. On a
/// narrow uplink joined some way into a group (`rural`: 1 Mbit/s; a 360p group 500 ms in
/// holds about 45 kB, a 720p one over 120 kB) that history took half of its tier's share
/// for most of a second and the next group's key frame queued behind it, while the
/// history itself arrived 600-800 ms after its capture: too old for any viewer in a
/// conversation. Refused, the relay starts the track live (its joiners then start at the
/// next group, as tiermesh's upper rungs do anyway).
pub(crate) fn reaches_live(objects: &[Object], send_rate_bps: u64, now_us: u64) -> bool {
    let Some(captured) =
        objects.first().and_then(|o| tiermesh_proto::loc::capture_timestamp_us(&o.extensions))
    else {
        return true;
    };
    if send_rate_bps == 0 {
        return true;
    }
    let bytes: u64 = objects.iter().map(|o| o.payload.len() as u64).sum();
    let send_us = (bytes as u128 * 8 * 1_000_000 / send_rate_bps as u128) as u64;
    let age_us = now_us.saturating_sub(captured);
    let budget_us = crate::scheduler::DEFAULT_CAPTURE_AGE_BUDGET.as_micros() as u64;
    age_us.saturating_add(send_us) <= budget_us
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(captured_us: u64, bytes: usize) -> Object {
        let mut extensions = Extensions::default();
        tiermesh_proto::loc::set_capture_timestamp_us(&mut extensions, captured_us);
        Object {
            group_id: 1,
            object_id: 0,
            forwarding: Forwarding::Subgroup(0),
            publisher_priority: 48,
            status: ObjectStatus::Normal,
            extensions,
            payload: Bytes::from(vec![0u8; bytes]),
        }
    }

    /// Items handed over while the receiving side is busy (not waiting) still wake it: the
    /// wake-up leaves a permit, so its next wait returns at once.
    #[tokio::test]
    async fn a_hand_over_while_nobody_waits_wakes_the_next_wait() {
        let (to, rx) = Handover::new(Arc::default());
        assert!(to.send([1, 2]));
        let woken = tokio::time::timeout(Duration::from_secs(5), to.wakeup().notified()).await;
        assert!(woken.is_ok(), "the wake-up for items handed over earlier was lost");
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        drop(rx);
        assert!(!to.send([3]), "handed over to nobody");
    }

    /// A batch larger than a bounded hand-over's room does not leave the producer waiting
    /// for room while the receiving side sleeps for want of a wake-up: the receiver is woken
    /// for what fills the channel, before the producer waits.
    #[tokio::test]
    async fn a_full_bounded_hand_over_wakes_the_receiver_before_it_waits() {
        let (to, rx) = Handover::bounded(Arc::default(), 1);
        let wake = to.wakeup().clone();
        let producer = std::thread::spawn(move || to.send(0..5));
        let mut got = Vec::new();
        let all = tokio::time::timeout(Duration::from_secs(10), async {
            while got.len() < 5 {
                wake.notified().await;
                got.extend(rx.try_iter());
            }
        })
        .await;
        assert!(all.is_ok(), "{got:?}: the producer waits for room nobody was woken to make");
        assert!(producer.join().unwrap());
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// A 360p group joined 500 ms in (45 kB cached) at a 860 kbit/s uplink would arrive
    /// about 920 ms after its key frame's capture: refused. At 10 Mbit/s, or joined 100 ms
    /// in (12 kB), it arrives live; without a capture time or a rate it is served.
    #[test]
    fn a_fetch_is_answered_only_if_it_arrives_live() {
        let now = 10_000_000;
        let joined_late = [object(now - 500_000, 11_800), object(now - 467_000, 33_200)];
        assert!(!reaches_live(&joined_late, 860_000, now));
        assert!(reaches_live(&joined_late, 10_000_000, now));
        assert!(reaches_live(&joined_late, 0, now));
        assert!(reaches_live(&[object(now - 100_000, 12_000)], 860_000, now));
        let mut untimed = object(now - 900_000, 45_000);
        untimed.extensions = Extensions::default();
        assert!(reaches_live(&[untimed], 860_000, now));
        assert!(reaches_live(&[], 860_000, now));
    }
}
