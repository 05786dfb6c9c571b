//! Reading and writing tracks: what subscribers receive and publishers send.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use tiermesh_proto::Encode;
use tiermesh_proto::coding::{VARINT_MAX, put_varint};
use tiermesh_proto::data::{
    EndOfRange, FetchHeader, FetchItem, Forwarding, Object, ObjectStatus, RangeKind,
    SubgroupHeader, SubgroupIdMode, WriteError,
};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::PublishDoneCode;
use tiermesh_proto::types::{
    FullTrackName, GroupOrder, Location, RequestId, TrackAlias, TrackNamespace,
};

use super::Error;
use super::driver::{Command, CommandTx};
use super::send::{SendCmd, SendPath, class_of};
use crate::scheduler::{StreamSpec, TrackKey};

/// One object as it arrived, with its arrival time at this endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedObject {
    /// The Group ID.
    pub group_id: u64,
    /// The Subgroup ID; `None` for an object sent as a datagram.
    pub subgroup_id: Option<u64>,
    /// The Object ID.
    pub object_id: u64,
    /// The publisher priority (resolved from the track's default when not sent).
    pub publisher_priority: u8,
    /// Normal, End of Group or End of Track.
    pub status: ObjectStatus,
    /// Extension headers (LOC properties among them).
    pub extensions: Extensions,
    /// The payload, shared with whoever else holds it.
    pub payload: Bytes,
    /// When its last byte was read here.
    pub arrival: Instant,
}

impl ReceivedObject {
    pub(crate) fn new(o: Object, arrival: Instant) -> Self {
        Self {
            group_id: o.group_id,
            subgroup_id: o.forwarding.subgroup_id(),
            object_id: o.object_id,
            publisher_priority: o.publisher_priority,
            status: o.status,
            extensions: o.extensions,
            payload: o.payload,
            arrival,
        }
    }

    /// The object's location.
    pub fn location(&self) -> Location {
        Location::new(self.group_id, self.object_id)
    }

    /// The LOC capture timestamp (wall-clock microseconds since the Unix epoch), if any.
    pub fn capture_timestamp_us(&self) -> Option<u64> {
        tiermesh_proto::loc::capture_timestamp_us(&self.extensions)
    }

    /// The canonical object (payload shared, not copied).
    pub fn to_object(&self) -> Object {
        Object {
            group_id: self.group_id,
            object_id: self.object_id,
            forwarding: match self.subgroup_id {
                Some(s) => Forwarding::Subgroup(s),
                None => Forwarding::Datagram,
            },
            publisher_priority: self.publisher_priority,
            status: self.status,
            extensions: self.extensions.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// How a publisher ended a subscription (PUBLISH_DONE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDone {
    /// The status code.
    pub code: PublishDoneCode,
    /// The reason phrase.
    pub reason: String,
}

/// What a [`TrackReader`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackEvent {
    /// An object, the moment its payload is complete.
    Object(ReceivedObject),
    /// A subgroup stream ended: with FIN (`reset` `None`) or reset with a code.
    StreamEnd {
        /// The group.
        group_id: u64,
        /// The subgroup.
        subgroup_id: u64,
        /// The reset code, if the stream was reset.
        reset: Option<u32>,
    },
    /// The publisher ended the subscription. Objects of streams still in flight may follow.
    Done(PublishDone),
}

/// Where an incoming subscription's objects go.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    pub(crate) tx: mpsc::UnboundedSender<TrackEvent>,
    pub(crate) default_priority: u8,
}

/// The receiving side of a subscription (SUBSCRIBE accepted, or the peer's PUBLISH
/// accepted). Dropping it unsubscribes.
#[derive(Debug)]
pub struct TrackReader {
    pub(crate) request_id: RequestId,
    pub(crate) track: FullTrackName,
    pub(crate) alias: TrackAlias,
    pub(crate) largest: Option<Location>,
    pub(crate) extensions: Extensions,
    pub(crate) rx: mpsc::UnboundedReceiver<TrackEvent>,
    pub(crate) cmd: CommandTx,
    pub(crate) done: Option<PublishDone>,
    pub(crate) unsubscribed: bool,
}

impl TrackReader {
    /// This endpoint's request ID (SUBSCRIBE) or the peer's (PUBLISH).
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The track.
    pub fn track(&self) -> &FullTrackName {
        &self.track
    }

    /// The Track Alias on the wire.
    pub fn alias(&self) -> TrackAlias {
        self.alias
    }

    /// The largest location the publisher reported in SUBSCRIBE_OK / PUBLISH.
    pub fn largest(&self) -> Option<Location> {
        self.largest
    }

    /// The track's extension headers (publisher priority, group order, ...).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The PUBLISH_DONE, once received.
    pub fn done(&self) -> Option<&PublishDone> {
        self.done.as_ref()
    }

    /// The next object, stream end or PUBLISH_DONE, in arrival order; `None` when nothing
    /// more can arrive.
    pub async fn next(&mut self) -> Option<TrackEvent> {
        let e = self.rx.recv().await?;
        if let TrackEvent::Done(d) = &e {
            self.done = Some(d.clone());
        }
        Some(e)
    }

    /// The next object; `None` once the track has ended (after PUBLISH_DONE, when the
    /// streams still in flight have arrived) or the session has closed.
    pub async fn next_object(&mut self) -> Option<ReceivedObject> {
        loop {
            match self.next().await? {
                TrackEvent::Object(o) => return Some(o),
                TrackEvent::StreamEnd { .. } | TrackEvent::Done(_) => {}
            }
        }
    }

    /// Sends UNSUBSCRIBE (also done on drop).
    pub fn unsubscribe(&mut self) {
        if !self.unsubscribed && self.done.is_none() {
            self.unsubscribed = true;
            let _ = self.cmd.send(Command::Unsubscribe { request_id: self.request_id });
        }
    }
}

impl Drop for TrackReader {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

/// One entry of a fetch stream as [`FetchReader::next_event`] yields it.
// Objects are nearly every entry: boxing them would add an allocation each for markers
// that are rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// An object.
    Object(ReceivedObject),
    /// An End of Range marker: the locations after the previous item up to and including
    /// its own do not exist (End of Non-Existent Range) or are unknown to the publisher
    /// (End of Unknown Range), draft-16 "End of Range".
    EndOfRange(EndOfRange),
}

/// How a fetch stream ended, once [`FetchReader::next`] or [`FetchReader::next_event`]
/// has returned `None` (see [`FetchReader::end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEnd {
    /// The stream ended with a FIN and marked nothing unknown: every object of the range
    /// that exists arrived (a location not received and not marked does not exist).
    Whole,
    /// The stream ended with a FIN, but the publisher marked part of the range unknown
    /// with End of Unknown Range; this is the last location of the last such range (the
    /// one that ends the fetch when nothing came after it). Its objects may exist.
    Unknown(Location),
    /// The fetch ended without a FIN: its stream was reset or broke, the session closed,
    /// or the stream never arrived. The objects after the last one received are unknown.
    Failed,
}

/// What the reading side of a fetch stream hands to its [`FetchReader`].
#[allow(clippy::large_enum_variant)] // as `FetchEvent`: `Fin` comes once a stream
#[derive(Debug)]
pub(crate) enum FetchInput {
    /// An item of the stream.
    Event(FetchEvent),
    /// The stream ended with a FIN.
    Fin,
}

/// The receiving side of a FETCH. Dropping it before the fetch has ended cancels it
/// (FETCH_CANCEL).
#[derive(Debug)]
pub struct FetchReader {
    pub(crate) request_id: RequestId,
    pub(crate) end_location: Location,
    pub(crate) end_of_track: bool,
    pub(crate) extensions: Extensions,
    pub(crate) rx: mpsc::UnboundedReceiver<FetchInput>,
    /// How the stream ended, once it has.
    pub(crate) end: Option<FetchEnd>,
    /// The last location of the last End of Unknown Range read.
    pub(crate) last_unknown: Option<Location>,
    /// The driver, told of a reader dropped before the end (`None` in unit tests).
    pub(crate) cmd: Option<CommandTx>,
}

impl FetchReader {
    /// This endpoint's FETCH request ID.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The end of the range served (FETCH_OK's End Location).
    pub fn end_location(&self) -> Location {
        self.end_location
    }

    /// True if the track ends at the end location.
    pub fn end_of_track(&self) -> bool {
        self.end_of_track
    }

    /// The track's extension headers.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The next object; `None` when the fetch stream has ended ([`Self::end`] then says
    /// how). End of Range markers are skipped: [`Self::next_event`] yields them.
    pub async fn next(&mut self) -> Option<ReceivedObject> {
        loop {
            if let FetchEvent::Object(o) = self.next_event().await? {
                return Some(o);
            }
        }
    }

    /// The next object or End of Range marker, in stream order; `None` when the fetch
    /// stream has ended ([`Self::end`] then says how). Cancel-safe.
    pub async fn next_event(&mut self) -> Option<FetchEvent> {
        if self.end.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(FetchInput::Event(e)) => {
                if let FetchEvent::EndOfRange(r) = &e
                    && r.kind == RangeKind::Unknown
                {
                    self.last_unknown = Some(Location::new(r.group_id, r.object_id));
                }
                Some(e)
            }
            Some(FetchInput::Fin) => {
                self.end = Some(self.last_unknown.map_or(FetchEnd::Whole, FetchEnd::Unknown));
                None
            }
            None => {
                self.end = Some(FetchEnd::Failed);
                None
            }
        }
    }

    /// How the fetch ended; `None` until [`Self::next`] or [`Self::next_event`] has
    /// returned `None`. Only [`FetchEnd::Whole`] says the objects not received do not
    /// exist; a relay passes the other two on to its own requester (draft-16: a fetch
    /// always ends, and what was not delivered is then unknown, not absent).
    pub fn end(&self) -> Option<FetchEnd> {
        self.end
    }
}

/// A fetch whose reader goes before its end is cancelled (draft-16, Fetch State
/// Management: the subscriber "MUST send FETCH_CANCEL"), so that its publisher stops
/// serving it; a relay giving up a stalled upstream fetch does so.
impl Drop for FetchReader {
    fn drop(&mut self) {
        if self.end.is_none()
            && let Some(cmd) = &self.cmd
        {
            let _ = cmd.send(Command::CancelFetch { request_id: self.request_id });
        }
    }
}

/// A namespace appearing or going away under a SUBSCRIBE_NAMESPACE prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceEvent {
    /// NAMESPACE: the full namespace.
    Added(TrackNamespace),
    /// NAMESPACE_DONE.
    Removed(TrackNamespace),
}

/// This endpoint's SUBSCRIBE_NAMESPACE. Dropping it ends the subscription.
#[derive(Debug)]
pub struct NamespaceSubscription {
    pub(crate) request_id: RequestId,
    pub(crate) rx: mpsc::UnboundedReceiver<NamespaceEvent>,
    pub(crate) cmd: CommandTx,
}

impl NamespaceSubscription {
    /// The request ID.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The next namespace change; `None` when the subscription or session ended.
    pub async fn next(&mut self) -> Option<NamespaceEvent> {
        self.rx.recv().await
    }
}

impl Drop for NamespaceSubscription {
    fn drop(&mut self) {
        let _ = self.cmd.send(Command::UnsubscribeNamespace { request_id: self.request_id });
    }
}

/// Track keys of fetch responses carry this bit, so they never share a flow with a
/// subscription's track.
pub(crate) const FETCH_TRACK_BIT: u64 = 1 << 63;

/// Why a [`TrackWriter`] stopped being wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// The subscriber sent UNSUBSCRIBE.
    Unsubscribed,
    /// This endpoint sent PUBLISH_DONE.
    Done,
    /// The session closed.
    SessionClosed,
}

#[derive(Debug)]
pub(crate) struct WriterInner {
    pub(crate) request_id: RequestId,
    pub(crate) alias: TrackAlias,
    /// Changed by the subscriber's REQUEST_UPDATE ([`TrackWriter::set_subscriber_priority`]).
    pub(crate) subscriber_priority: std::sync::atomic::AtomicU8,
    pub(crate) group_order: GroupOrder,
    pub(crate) default_priority: u8,
    /// Changed by the subscriber's REQUEST_UPDATE ([`TrackWriter::set_delivery_timeout`]).
    pub(crate) delivery_timeout: std::sync::Mutex<Option<std::time::Duration>>,
    pub(crate) cmd: CommandTx,
    pub(crate) send: SendPath,
    pub(crate) end: watch::Receiver<Option<WriterEnd>>,
}

/// The sending side of one subscription (the peer's SUBSCRIBE accepted, or this
/// endpoint's PUBLISH accepted). Cheap to clone.
#[derive(Debug, Clone)]
pub struct TrackWriter {
    pub(crate) inner: Arc<WriterInner>,
}

impl TrackWriter {
    /// The subscription's request ID.
    pub fn request_id(&self) -> RequestId {
        self.inner.request_id
    }

    /// The Track Alias written in headers.
    pub fn alias(&self) -> TrackAlias {
        self.inner.alias
    }

    /// The subscriber's priority (128 when it gave none).
    pub fn subscriber_priority(&self) -> u8 {
        self.inner.subscriber_priority.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a new SUBSCRIBER_PRIORITY (the subscriber's REQUEST_UPDATE) to every open
    /// stream of this subscription, objects already queued included, and to later ones.
    pub fn set_subscriber_priority(&self, priority: u8) {
        let i = &self.inner;
        i.subscriber_priority.store(priority, std::sync::atomic::Ordering::Relaxed);
        i.send.push(SendCmd::Priority { track: TrackKey(i.request_id.0), priority });
    }

    /// Applies a new delivery timeout (the minimum of the subscriber's DELIVERY_TIMEOUT
    /// and the track's, counted from arrival at this hop) to streams opened from now on.
    pub fn set_delivery_timeout(&self, timeout: Option<std::time::Duration>) {
        *self.inner.delivery_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    /// The group order in force for this subscription.
    pub fn group_order(&self) -> GroupOrder {
        self.inner.group_order
    }

    /// Opens the stream of one subgroup. `priority` is the objects' publisher priority;
    /// `None` uses the track's default.
    pub fn open_subgroup(
        &self,
        group_id: u64,
        subgroup_id: u64,
        priority: Option<u8>,
    ) -> SubgroupStream {
        let i = &self.inner;
        let prio = priority.unwrap_or(i.default_priority);
        let header = SubgroupHeader {
            track_alias: i.alias,
            group_id,
            subgroup_id: if subgroup_id == 0 {
                SubgroupIdMode::Zero
            } else {
                SubgroupIdMode::Explicit(subgroup_id)
            },
            publisher_priority: if prio == i.default_priority { None } else { Some(prio) },
            extensions: true,
            end_of_group: false,
        };
        let stream = i.send.allocate();
        let _ = i.cmd.send(Command::StreamOpened { request_id: i.request_id });
        let spec = StreamSpec::new(TrackKey(i.request_id.0), class_of(prio), group_id, subgroup_id)
            .priority(self.subscriber_priority(), prio)
            .group_order(i.group_order)
            .delivery_timeout(*i.delivery_timeout.lock().unwrap_or_else(|e| e.into_inner()))
            .header(Bytes::from(header.to_vec()));
        i.send.push(SendCmd::Open { stream, spec });
        SubgroupStream {
            send: i.send.clone(),
            stream,
            group_id,
            subgroup_id,
            prev: None,
            ended: false,
            closed: false,
        }
    }

    /// Sends one object as a datagram.
    pub fn send_datagram(&self, object: &Object) -> Result<(), Error> {
        let d = object.to_datagram(self.inner.alias, Some(self.inner.default_priority));
        let data = d.to_vec()?;
        self.inner.send.push(SendCmd::Datagram { data: Bytes::from(data) });
        Ok(())
    }

    /// Ends the subscription with PUBLISH_DONE. Finish the subgroup streams first.
    pub fn publish_done(&self, code: PublishDoneCode, reason: &str) {
        let _ = self.inner.cmd.send(Command::PublishDone {
            request_id: self.inner.request_id,
            code,
            reason: reason.to_owned(),
        });
    }

    /// True once the subscriber unsubscribed, PUBLISH_DONE was sent or the session closed.
    pub fn is_closed(&self) -> bool {
        // A relay asks this once per object per subscriber: `has_changed` is one atomic load
        // where `borrow` takes the channel's lock. The value only ever changes from `None`
        // to an end (and this receiver never marks it seen), and the sender is dropped only
        // when the session's driver is gone.
        !matches!(self.inner.end.has_changed(), Ok(false))
    }

    /// Waits until the subscription is no longer wanted and says why.
    pub async fn closed(&self) -> WriterEnd {
        let mut end = self.inner.end.clone();
        loop {
            if let Some(e) = *end.borrow() {
                return e;
            }
            if end.changed().await.is_err() {
                return end.borrow().unwrap_or(WriterEnd::SessionClosed);
            }
        }
    }
}

/// The head of an object on a subgroup stream: Object ID delta, extensions, payload length
/// (and status when there is no payload).
fn encode_head(delta: u64, extensions: &Extensions, status: ObjectStatus, len: usize) -> Bytes {
    let mut head = BytesMut::with_capacity(16);
    put_varint(&mut head, delta);
    extensions.encode_object(&mut head);
    put_varint(&mut head, len as u64);
    if len == 0 {
        put_varint(&mut head, status.code());
    }
    head.freeze()
}

/// How long ago the object was captured, from its LOC timestamp, if it has one.
fn capture_age_of(extensions: &Extensions) -> Option<std::time::Duration> {
    tiermesh_proto::loc::capture_timestamp_us(extensions).and_then(|ts| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        now.checked_sub(std::time::Duration::from_micros(ts))
    })
}

/// One object on its way to many subgroup streams ([`SubgroupStream::write_forwarded`]):
/// its capture age, read once, and its encoded head, shared by every stream that gets the
/// same Object ID delta (all of them, when every subscriber got the objects before it).
#[derive(Debug)]
pub struct Forwarded<'a> {
    object: &'a Object,
    arrival: Instant,
    capture_age: Option<std::time::Duration>,
    head: Option<(u64, Bytes)>,
}

impl<'a> Forwarded<'a> {
    /// `object`, which reached this endpoint at `arrival` (its delivery timeout counts
    /// from then).
    pub fn new(object: &'a Object, arrival: Instant) -> Self {
        Self { object, arrival, capture_age: capture_age_of(&object.extensions), head: None }
    }

    /// The object.
    pub fn object(&self) -> &'a Object {
        self.object
    }
}

/// One outgoing subgroup stream. Objects are written in increasing Object ID order; dropping
/// it finishes the stream.
#[derive(Debug)]
pub struct SubgroupStream {
    send: SendPath,
    stream: u64,
    group_id: u64,
    subgroup_id: u64,
    prev: Option<u64>,
    ended: bool,
    closed: bool,
}

impl SubgroupStream {
    /// The group.
    pub fn group_id(&self) -> u64 {
        self.group_id
    }

    /// The subgroup.
    pub fn subgroup_id(&self) -> u64 {
        self.subgroup_id
    }

    /// Writes one object. The payload is passed on without copying.
    pub fn write(
        &mut self,
        object_id: u64,
        extensions: &Extensions,
        status: ObjectStatus,
        payload: Bytes,
    ) -> Result<(), Error> {
        self.write_at(object_id, extensions, status, payload, Instant::now())
    }

    /// Writes one object that reached this endpoint at `arrival` (its delivery timeout
    /// counts from then).
    pub fn write_at(
        &mut self,
        object_id: u64,
        extensions: &Extensions,
        status: ObjectStatus,
        payload: Bytes,
        arrival: Instant,
    ) -> Result<(), Error> {
        if self.ended || self.closed {
            return Err(WriteError::AfterEnd.into());
        }
        let delta = match self.prev {
            None => object_id,
            Some(p) if object_id > p => object_id - p - 1,
            Some(p) => {
                return Err(WriteError::ObjectIdNotIncreasing { prev: p, id: object_id }.into());
            }
        };
        if status != ObjectStatus::Normal && (!payload.is_empty() || !extensions.is_empty()) {
            return Err(WriteError::StatusWithContent(status).into());
        }
        let head = encode_head(delta, extensions, status, payload.len());
        self.prev = Some(object_id);
        self.ended = matches!(status, ObjectStatus::EndOfGroup | ObjectStatus::EndOfTrack);
        let capture_age = capture_age_of(extensions);
        let cmd = SendCmd::Write { stream: self.stream, head, payload, arrival, capture_age };
        if !self.send.push(cmd) {
            return Err(Error::Ended);
        }
        Ok(())
    }

    /// Writes an object that goes to many subscribers (a relay's fan-out): what every copy
    /// has in common (the encoded head for the usual Object ID delta, the capture age) is
    /// worked out once in `shared`, not once per subscriber.
    pub fn write_forwarded(&mut self, shared: &mut Forwarded<'_>) -> Result<(), Error> {
        let object = shared.object;
        if self.ended || self.closed {
            return Err(WriteError::AfterEnd.into());
        }
        let delta = match self.prev {
            None => object.object_id,
            Some(p) if object.object_id > p => object.object_id - p - 1,
            Some(p) => {
                return Err(
                    WriteError::ObjectIdNotIncreasing { prev: p, id: object.object_id }.into()
                );
            }
        };
        if object.status != ObjectStatus::Normal
            && (!object.payload.is_empty() || !object.extensions.is_empty())
        {
            return Err(WriteError::StatusWithContent(object.status).into());
        }
        let head = match &shared.head {
            Some((d, head)) if *d == delta => head.clone(),
            _ => {
                let head =
                    encode_head(delta, &object.extensions, object.status, object.payload.len());
                shared.head = Some((delta, head.clone()));
                head
            }
        };
        self.prev = Some(object.object_id);
        self.ended = matches!(object.status, ObjectStatus::EndOfGroup | ObjectStatus::EndOfTrack);
        let cmd = SendCmd::Write {
            stream: self.stream,
            head,
            payload: object.payload.clone(),
            arrival: shared.arrival,
            capture_age: shared.capture_age,
        };
        if !self.send.push(cmd) {
            return Err(Error::Ended);
        }
        Ok(())
    }

    /// Writes an object received elsewhere (a relay forwarding it).
    pub fn write_object(&mut self, object: &Object) -> Result<(), Error> {
        self.write(object.object_id, &object.extensions, object.status, object.payload.clone())
    }

    /// Writes a received object as is; its delivery timeout counts from its arrival here.
    pub fn write_received(&mut self, object: &ReceivedObject) -> Result<(), Error> {
        self.write_at(
            object.object_id,
            &object.extensions,
            object.status,
            object.payload.clone(),
            object.arrival,
        )
    }

    /// Ends the stream: everything written is delivered.
    pub fn finish(mut self) {
        self.closed = true;
        self.send.push(SendCmd::Finish { stream: self.stream });
    }

    /// Abandons the stream: what was not sent yet is not sent, and a stream already opened
    /// is reset with `code` (RESET_STREAM; one never opened is not opened).
    pub fn reset(mut self, code: u32) {
        self.closed = true;
        tracing::debug!(code, "subgroup stream dropped");
        self.send.push(SendCmd::Reset { stream: self.stream, code });
    }
}

impl Drop for SubgroupStream {
    fn drop(&mut self) {
        if !self.closed {
            self.send.push(SendCmd::Finish { stream: self.stream });
        }
    }
}

/// The stream answering a peer's FETCH. [`FetchResponse::finish`] ends it whole; dropping
/// it unfinished ends it as [`FetchResponse::reset`] does (the rest of its range unknown).
/// A FETCH_CANCEL from the requester resets the stream (draft-16, Fetch State Management):
/// nothing more of it is sent, writes fail with [`Error::Ended`], and
/// [`FetchResponse::cancelled`] resolves.
#[derive(Debug)]
pub struct FetchResponse {
    pub(crate) send: SendPath,
    pub(crate) stream: u64,
    pub(crate) writer: tiermesh_proto::data::FetchWriter,
    pub(crate) closed: bool,
    /// FETCH_OK's End Location as given to [`super::IncomingFetch::accept`] (the last
    /// location plus one; an object of 0 covers the whole end group).
    end: Location,
    /// The first and the last location written (object or End of Range), for the end of a
    /// response given up.
    written: Option<(Location, Location)>,
    /// The FETCH answered: the driver is told when the response ends (see `ended`).
    request_id: RequestId,
    /// Set by the driver when the requester sent FETCH_CANCEL.
    cancel: Arc<FetchCancel>,
    cmd: Option<CommandTx>,
}

/// A fetch response's cancellation, shared between the response and the driver: the
/// driver sets it when FETCH_CANCEL arrives (and has the stream reset), the response then
/// writes no more.
#[derive(Debug, Default)]
pub(crate) struct FetchCancel {
    cancelled: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl FetchCancel {
    /// Marks the fetch cancelled and wakes whoever waits in [`FetchResponse::cancelled`].
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl FetchResponse {
    /// Opens the stream answering FETCH `request_id`. It is scheduled as the draft's
    /// send order has it (draft-16 §7): by the FETCH's `subscriber_priority`, then by
    /// `publisher_priority`, the track's (the one its live subgroups carry). So a joining
    /// fetch goes beside its own track's live objects rather than behind every live track
    /// (at the default 128 it waited behind all of them on a link narrower than the
    /// broadcast).
    pub(crate) fn open(
        send: SendPath,
        request_id: RequestId,
        subscriber_priority: u8,
        publisher_priority: u8,
        end: Location,
        cancel: Arc<FetchCancel>,
        cmd: Option<CommandTx>,
    ) -> Self {
        let stream = send.allocate();
        let spec = fetch_spec(request_id, subscriber_priority, publisher_priority);
        send.push(SendCmd::Open { stream, spec });
        Self {
            send,
            stream,
            writer: tiermesh_proto::data::FetchWriter::new(),
            closed: false,
            end,
            written: None,
            request_id,
            cancel,
            cmd,
        }
    }

    /// The send path's number of the response's stream (the driver resets it on
    /// FETCH_CANCEL).
    pub(crate) fn stream(&self) -> u64 {
        self.stream
    }

    /// Whether the requester cancelled the fetch (FETCH_CANCEL): its stream was reset and
    /// writes fail with [`Error::Ended`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once the requester cancels the fetch (FETCH_CANCEL); never resolves for a
    /// fetch that is not cancelled. A responder producing objects slowly (a relay waiting
    /// on its upstream) can select on it to stop early.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.cancel.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.cancel.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Writes one object (objects with a status other than Normal are skipped: a fetch
    /// conveys them by its range). Fails with [`Error::Ended`] once the requester has
    /// cancelled the fetch.
    pub fn write(&mut self, object: &Object) -> Result<(), Error> {
        let Some(o) = object.to_fetch_object() else { return Ok(()) };
        self.push_item(&FetchItem::Object(o))
    }

    /// Writes an End of Range marker (a relay passes on its upstream's as received): the
    /// locations after the last item written up to and including the marker's do not
    /// exist, or are unknown. It must follow the response's group order as objects do.
    pub fn write_end_of_range(&mut self, range: EndOfRange) -> Result<(), Error> {
        self.push_item(&FetchItem::EndOfRange(range))
    }

    /// Queues `item` on the stream and notes its location as the last written.
    fn push_item(&mut self, item: &FetchItem) -> Result<(), Error> {
        if self.cancel.is_cancelled() {
            return Err(Error::Ended);
        }
        let (len, at) = match item {
            FetchItem::Object(o) => (o.payload.len(), Location::new(o.group_id, o.object_id)),
            FetchItem::EndOfRange(r) => (0, Location::new(r.group_id, r.object_id)),
        };
        let mut buf = Vec::with_capacity(len + 16);
        self.writer.encode_item(item, &mut buf)?;
        self.send.push(SendCmd::Write {
            stream: self.stream,
            head: Bytes::from(buf),
            payload: Bytes::new(),
            arrival: Instant::now(),
            capture_age: None,
        });
        self.written = Some(self.written.map_or((at, at), |(first, _)| (first, at)));
        Ok(())
    }

    /// Ends the fetch stream (nothing is sent if the requester cancelled the fetch: its
    /// stream was reset).
    pub fn finish(mut self) {
        self.closed = true;
        if !self.cancel.is_cancelled() {
            self.send.push(SendCmd::Finish { stream: self.stream });
        }
        self.ended();
    }

    /// Tells the driver the response has ended: the fetch's state is released, and a
    /// FETCH_CANCEL arriving later is ignored (draft-16: the publisher ignores one for a
    /// fetch it has finished).
    fn ended(&mut self) {
        if let Some(cmd) = self.cmd.take() {
            let _ = cmd.send(Command::FetchResponseEnded { request_id: self.request_id });
        }
    }

    /// Gives up on the fetch: the objects written so far still go, then an End of Unknown
    /// Range up to the end of the range answered and a FIN, which ends the fetch at the
    /// requester and tells it that the rest is unknown rather than absent (draft-16, Fetch
    /// Handling: a publisher can "indicate the range of unknown Objects"). `code` is only
    /// logged.
    ///
    /// The stream is not reset: QUIC drops a stream's unread data when its RESET_STREAM
    /// arrives, so a reset sent soon after the FETCH_HEADER usually reached the requester
    /// before the header did, and a reset stream without its header does not say which
    /// fetch it ended (the FETCH then stayed open at the requester for good). The reset
    /// that keeps the header, RESET_STREAM_AT, is not in quinn 0.11.
    pub fn reset(mut self, code: u32) {
        tracing::debug!(code, "fetch given up: the rest of its range is unknown");
        self.give_up();
    }

    /// Ends the stream as given up ([`FetchResponse::reset`]): an End of Unknown Range up
    /// to the End Location after what was written, then a FIN. Synchronous (the marker is
    /// queued on the send path like any item), so a response dropped unfinished ends so too.
    fn give_up(&mut self) {
        self.closed = true;
        if !self.cancel.is_cancelled() {
            if let Some(range) = unknown_rest(self.written, self.end) {
                let _ = self.push_item(&FetchItem::EndOfRange(range));
            }
            self.send.push(SendCmd::Finish { stream: self.stream });
        }
        self.ended();
    }
}

/// The End of Unknown Range that marks the rest of a fetch response as unknown, after the
/// objects `written` (the first and the last), for a range whose End Location is `end`
/// (the last location plus one; an object of 0 covers the whole end group). Groups go in
/// the order the objects went: once the response has gone down a group, the rest is the
/// groups below (the range's start is not known here, so it reaches down to group 0;
/// objects outside the range being unknown misleads no one). `None` if nothing is left.
fn unknown_rest(written: Option<(Location, Location)>, end: Location) -> Option<EndOfRange> {
    let range = |group_id, object_id| EndOfRange { kind: RangeKind::Unknown, group_id, object_id };
    if let Some((first, last)) = written
        && last.group < first.group
    {
        return (last.object.0 < VARINT_MAX).then(|| range(0, VARINT_MAX));
    }
    let upto = match end.object.0 {
        0 => Location::new(end.group.0, VARINT_MAX),
        o => Location::new(end.group.0, o - 1),
    };
    written.is_none_or(|(_, last)| last < upto).then(|| range(upto.group.0, upto.object.0))
}

/// The send scheduler's description of the stream answering FETCH `request_id` (see
/// [`FetchResponse::open`]).
fn fetch_spec(
    request_id: RequestId,
    subscriber_priority: u8,
    publisher_priority: u8,
) -> StreamSpec {
    let header = FetchHeader { request_id }.to_vec();
    // Fetch responses form their own flow, apart from the subscriptions' tracks; counted
    // under the track's class. No delivery timeout, so nothing of it is ever dropped.
    StreamSpec::new(TrackKey(FETCH_TRACK_BIT | request_id.0), class_of(publisher_priority), 0, 0)
        .priority(subscriber_priority, publisher_priority)
        .drop_stale(false)
        .header(Bytes::from(header))
}

/// A response dropped without [`FetchResponse::finish`] or [`FetchResponse::reset`] (an
/// error path, a task ended) is not claimed whole: it ends as a reset one does.
impl Drop for FetchResponse {
    fn drop(&mut self) {
        if !self.closed {
            tracing::debug!("fetch response dropped unfinished: the rest of its range is unknown");
            self.give_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use tiermesh_proto::types::GroupOrder;

    use super::*;
    use crate::scheduler::{
        Action, Object, Scheduler, SchedulerConfig, SendBudget, StreamKey, TrackClass,
    };

    /// The streams written first, in order, when everything queued may go at once.
    fn send_order(specs: &[(u64, StreamSpec)]) -> Vec<u64> {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for (key, spec) in specs {
            s.open_stream(StreamKey(*key), spec.clone()).unwrap();
            let o = Object::new(t0, Bytes::from_static(&[0xAA; 4]), Bytes::from(vec![7u8; 1000]));
            s.push_object(StreamKey(*key), o).unwrap();
        }
        let mut budget =
            SendBudget { cwnd: 1 << 30, cwnd_available: 1 << 30, buffered: 0, send_rate_bps: 0 };
        let mut order: Vec<u64> = Vec::new();
        while let Some(a) = s.poll_send(t0, &mut budget) {
            if let Action::Write { key, .. } = a
                && order.last() != Some(&key.0)
            {
                order.push(key.0);
            }
            assert!(order.len() < 100, "poll_send never returned None");
        }
        order
    }

    fn live(track: u64, class: TrackClass, publisher_priority: u8) -> StreamSpec {
        StreamSpec::new(TrackKey(track), class, 9, 0)
            .priority(128, publisher_priority)
            .group_order(GroupOrder::Descending)
    }

    /// A fetch reads as whole only after a FIN with nothing marked unknown (a non-existent
    /// range is part of a whole answer); after an End of Unknown Range it ends unknown up
    /// to the last such range, and without a FIN (the stream's sender gone: reset, broken,
    /// session closed) it ends failed. `next` skips the markers `next_event` yields.
    #[tokio::test]
    async fn a_fetch_reads_whole_only_after_a_fin_with_nothing_unknown() {
        let marker = |kind, g, o| EndOfRange { kind, group_id: g, object_id: o };
        let object = |g, o| {
            let obj = tiermesh_proto::data::Object {
                group_id: g,
                object_id: o,
                forwarding: Forwarding::Subgroup(0),
                publisher_priority: 128,
                status: ObjectStatus::Normal,
                extensions: Extensions::default(),
                payload: Bytes::from_static(b"x"),
            };
            FetchInput::Event(FetchEvent::Object(ReceivedObject::new(obj, Instant::now())))
        };
        let reader = |inputs: Vec<FetchInput>, fin: bool| {
            let (tx, rx) = mpsc::unbounded_channel();
            for i in inputs {
                tx.send(i).unwrap();
            }
            if fin {
                tx.send(FetchInput::Fin).unwrap();
            }
            FetchReader {
                request_id: RequestId(0),
                end_location: Location::new(3, 0),
                end_of_track: false,
                extensions: Extensions::default(),
                rx,
                end: None,
                last_unknown: None,
                cmd: None,
            }
        };
        let absent =
            FetchInput::Event(FetchEvent::EndOfRange(marker(RangeKind::NonExistent, 1, 9)));
        let mut r = reader(vec![object(0, 0), absent, object(2, 0)], true);
        assert_eq!(r.end(), None);
        assert_eq!(r.next().await.map(|o| o.group_id), Some(0));
        assert_eq!(r.next().await.map(|o| o.group_id), Some(2));
        assert!(r.next().await.is_none());
        assert_eq!(r.end(), Some(FetchEnd::Whole));
        assert!(r.next_event().await.is_none(), "an ended fetch stays ended");

        let unknown = FetchInput::Event(FetchEvent::EndOfRange(marker(RangeKind::Unknown, 2, 4)));
        let mut r = reader(vec![object(0, 0), unknown], true);
        assert!(matches!(r.next_event().await, Some(FetchEvent::Object(_))));
        assert!(matches!(r.next_event().await, Some(FetchEvent::EndOfRange(_))));
        assert!(r.next_event().await.is_none());
        assert_eq!(r.end(), Some(FetchEnd::Unknown(Location::new(2, 4))));

        let mut r = reader(vec![object(0, 0)], false);
        assert!(r.next().await.is_some());
        assert!(r.next().await.is_none());
        assert_eq!(r.end(), Some(FetchEnd::Failed));
    }

    /// The End of Unknown Range of a fetch given up covers what the response had left:
    /// up to its End Location (the last location plus one; object 0, the whole end group)
    /// after ascending objects, down to group 0 after descending ones, nothing once the
    /// end was written. The requester's reader checks these rules, so a wrong marker would
    /// end the fetch as a malformed track instead.
    #[test]
    fn a_fetch_given_up_marks_the_rest_of_its_range_unknown() {
        let unknown =
            |g, o| Some(EndOfRange { kind: RangeKind::Unknown, group_id: g, object_id: o });
        let l = Location::new;
        assert_eq!(unknown_rest(Some((l(3, 0), l(3, 2))), l(3, 5)), unknown(3, 4));
        assert_eq!(unknown_rest(None, l(3, 5)), unknown(3, 4));
        assert_eq!(unknown_rest(Some((l(3, 0), l(3, 2))), l(5, 0)), unknown(5, VARINT_MAX));
        assert_eq!(unknown_rest(Some((l(3, 0), l(3, 4))), l(3, 5)), None);
        assert_eq!(unknown_rest(Some((l(9, 0), l(8, 3))), l(10, 0)), unknown(0, VARINT_MAX));
    }

    /// A joining FETCH for the lowest video tier (subscriber priority 128, as its
    /// subscription's) is sent with that track's publisher priority (32): before the higher
    /// tiers' live objects and after audio's and the catalog's, as draft-16 §7 orders it.
    /// At the default publisher priority (128) it went behind every live track.
    #[test]
    fn fetch_response_is_scheduled_by_its_priorities() {
        let fetch = fetch_spec(RequestId(6), 128, 32);
        assert_eq!((fetch.subscriber_priority, fetch.publisher_priority), (128, 32));
        assert_eq!(fetch.class, TrackClass::Video { tier: 0 });
        let live_tracks = [
            (1, live(1, TrackClass::Video { tier: 2 }, 64)),
            (2, live(2, TrackClass::Video { tier: 1 }, 48)),
            (3, live(3, TrackClass::Audio, 16)),
            (4, live(4, TrackClass::Catalog, 0)),
        ];
        let mut specs = live_tracks.to_vec();
        specs.push((5, fetch));
        assert_eq!(send_order(&specs), [4, 3, 5, 2, 1]);

        // A FETCH with a more important subscriber priority goes before every live track
        // of a less important one, whatever the publisher priorities.
        let mut specs = live_tracks.to_vec();
        specs.push((5, fetch_spec(RequestId(8), 100, 64)));
        assert_eq!(send_order(&specs)[0], 5);

        // The old way, at 128/128: last.
        let mut specs = live_tracks.to_vec();
        specs.push((5, fetch_spec(RequestId(10), 128, 128)));
        assert_eq!(send_order(&specs), [4, 3, 2, 1, 5]);
    }
}
