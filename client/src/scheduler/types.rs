//! The values that go in and out of a [`Scheduler`](super::Scheduler).

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_proto::priority::{DEFAULT_PRIORITY, SendOrder};
use tiermesh_proto::types::GroupOrder;

/// One outgoing subgroup stream, named by the caller (any number unique among the streams
/// it has open in this scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(pub u64);

/// One request on this session (a subscription or a fetch response) whose streams share a
/// group order, a fair share of the link and stale-group tracking. Named by the caller,
/// typically from the request ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// What kind of media a track carries; drops are counted per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackClass {
    /// The MSF catalog.
    Catalog,
    /// An audio track.
    Audio,
    /// A video tier: 0 is the lowest rung of the ladder.
    Video {
        /// Rung of the ladder, 0 = lowest.
        tier: u8,
    },
    /// Anything else.
    Other,
}

impl TrackClass {
    /// A video tier above the lowest rung: what the upper tiers' share applies to.
    pub(crate) fn is_upper_tier(self) -> bool {
        matches!(self, TrackClass::Video { tier } if tier > 0)
    }
}

impl fmt::Display for TrackClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackClass::Catalog => f.write_str("catalog"),
            TrackClass::Audio => f.write_str("audio"),
            TrackClass::Video { tier } => write!(f, "video{tier}"),
            TrackClass::Other => f.write_str("other"),
        }
    }
}

/// Why objects were not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The object's delivery timeout (from its arrival at this hop) passed, or it could not
    /// have been sent before it.
    DeliveryTimeout,
    /// The object's capture age would have exceeded the end-to-end budget.
    CaptureAge,
    /// A newer group of the same track had started (streams that asked for it).
    Stale,
    /// An earlier object of the same subgroup was dropped, so its stream was reset and the
    /// rest of the subgroup goes with it (the draft forbids a new stream for it).
    StreamReset,
    /// The caller cancelled the stream or removed the track.
    Cancelled,
}

impl DropReason {
    /// A short label for metrics: `delivery_timeout`, `capture_age`, `stale`,
    /// `stream_reset`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::DeliveryTimeout => "delivery_timeout",
            DropReason::CaptureAge => "capture_age",
            DropReason::Stale => "stale",
            DropReason::StreamReset => "stream_reset",
            DropReason::Cancelled => "cancelled",
        }
    }

    /// The RESET_STREAM code for a stream this reason ends (draft-16 §10.4.3): delivery
    /// timeout for every reason but a cancel. Capture-age and stale drops are the
    /// publisher's discretion to stop before the delivery timeout, which the draft allows.
    pub fn reset_code(self) -> u32 {
        match self {
            DropReason::Cancelled => reset_code::CANCELLED,
            _ => reset_code::DELIVERY_TIMEOUT,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Data stream reset codes (draft-16 §10.4.3, "Closing Subgroup Streams").
pub mod reset_code {
    /// An implementation specific error.
    pub const INTERNAL_ERROR: u32 = 0x0;
    /// UNSUBSCRIBE, FETCH_CANCEL, STOP_SENDING, or the publisher ended the subscription.
    pub const CANCELLED: u32 = 0x1;
    /// The DELIVERY TIMEOUT was exceeded for this stream.
    pub const DELIVERY_TIMEOUT: u32 = 0x2;
    /// The publisher session is being closed.
    pub const SESSION_CLOSED: u32 = 0x3;
}

/// Describes one outgoing subgroup stream. Build it with [`StreamSpec::new`] and the
/// chained setters; the defaults are the draft's (priorities 128, Ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The request the stream answers.
    pub track: TrackKey,
    /// What the track carries (for drop counters and the stale default).
    pub class: TrackClass,
    /// Subscriber priority of the request (lower is more important).
    pub subscriber_priority: u8,
    /// Publisher priority of the subgroup (lower is more important).
    pub publisher_priority: u8,
    /// Group order of the subscription.
    pub group_order: GroupOrder,
    /// Group ID.
    pub group: u64,
    /// Subgroup ID.
    pub subgroup: u64,
    /// The subscription's delivery timeout: the minimum of the subscriber's DELIVERY
    /// TIMEOUT parameter and the track's DELIVERY TIMEOUT extension, `None` when neither
    /// was given (then nothing of this stream is ever dropped).
    pub delivery_timeout: Option<Duration>,
    /// Drop the rest of this group once a newer group of the same track has started.
    /// Default: on for video (a newer group starts with a key frame and supersedes the
    /// rest of an older one), off otherwise (audio groups are single frames that each
    /// still count). Applies only with a delivery timeout and Descending group order.
    pub drop_stale: bool,
    /// The subgroup header, written before the first object (may be empty if the caller
    /// puts it into the first object). Unused for datagrams.
    pub header: Bytes,
    /// A lane of datagrams rather than a subgroup stream: see [`StreamSpec::datagrams`].
    pub datagram: bool,
}

impl StreamSpec {
    /// A stream of `track` for subgroup `subgroup` of group `group`, with priorities 128,
    /// Ascending order, no delivery timeout, no header.
    pub fn new(track: TrackKey, class: TrackClass, group: u64, subgroup: u64) -> Self {
        StreamSpec {
            track,
            class,
            subscriber_priority: DEFAULT_PRIORITY,
            publisher_priority: DEFAULT_PRIORITY,
            group_order: GroupOrder::Ascending,
            group,
            subgroup,
            delivery_timeout: None,
            drop_stale: matches!(class, TrackClass::Video { .. }),
            header: Bytes::new(),
            datagram: false,
        }
    }

    /// A lane for the datagrams of group `group` of `track` (forwarding preference
    /// Datagram). Each object is one datagram, sent whole as [`Action::Datagram`] in
    /// arrival (Object ID) order; a datagram that expires or goes stale is dropped on its
    /// own, since datagrams do not depend on each other. The lane ends with `Finish` (there
    /// is nothing to close on the transport).
    pub fn datagrams(track: TrackKey, class: TrackClass, group: u64) -> Self {
        StreamSpec { datagram: true, ..StreamSpec::new(track, class, group, 0) }
    }

    /// Sets the subscriber and publisher priorities.
    pub fn priority(mut self, subscriber: u8, publisher: u8) -> Self {
        self.subscriber_priority = subscriber;
        self.publisher_priority = publisher;
        self
    }

    /// Sets the subscription's group order.
    pub fn group_order(mut self, order: GroupOrder) -> Self {
        self.group_order = order;
        self
    }

    /// Sets the delivery timeout (already the minimum of parameter and extension).
    pub fn delivery_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Sets whether older groups are dropped once a newer group has started.
    pub fn drop_stale(mut self, on: bool) -> Self {
        self.drop_stale = on;
        self
    }

    /// Sets the subgroup header.
    pub fn header(mut self, header: Bytes) -> Self {
        self.header = header;
        self
    }

    /// The draft's send order of this stream's objects (of a datagram lane: of its
    /// datagrams against other streams; inside the lane they keep their order).
    pub fn send_order(&self) -> SendOrder {
        if self.datagram {
            return SendOrder::datagram(
                self.subscriber_priority,
                self.publisher_priority,
                self.group_order,
                self.group,
                0,
            );
        }
        SendOrder::subgroup(
            self.subscriber_priority,
            self.publisher_priority,
            self.group_order,
            self.group,
            self.subgroup,
        )
    }
}

/// One object as it arrived at this hop: its serialized object header (Object ID delta,
/// extensions, length) and payload, kept apart so neither is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The serialized object fields before the payload.
    pub header: Bytes,
    /// The payload.
    pub payload: Bytes,
    /// When its header arrived at this hop: the delivery timeout counts from here.
    pub arrival: Instant,
    /// Its age since capture at arrival (now minus the LOC timestamp), if known.
    pub capture_age: Option<Duration>,
}

impl Object {
    /// An object with no known capture age.
    pub fn new(arrival: Instant, header: Bytes, payload: Bytes) -> Self {
        Object { header, payload, arrival, capture_age: None }
    }

    /// Sets its capture age at arrival.
    pub fn capture_age(mut self, age: Duration) -> Self {
        self.capture_age = Some(age);
        self
    }

    /// Header plus payload bytes.
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    /// True if it carries no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the driver does next. Each stream key ends with exactly one of `Finish`, `Reset` or
/// `Abandon`; after it the key is free again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `chunk` to the stream (open it first if this is its first write, and give it
    /// `quinn_priority` with `SendStream::set_priority`).
    Write {
        /// The stream.
        key: StreamKey,
        /// The bytes, to be written whole (see `Scheduler::handle_blocked` otherwise).
        chunk: Bytes,
        /// The stream's priority in quinn's order (higher is sent first).
        quinn_priority: i32,
    },
    /// Send one whole datagram (object header and payload) of a datagram lane.
    Datagram {
        /// The lane.
        key: StreamKey,
        /// The datagram.
        datagram: Bytes,
    },
    /// Everything was written: finish the stream (FIN). A key that never had a `Write`
    /// (a stream without bytes) and a datagram lane have nothing to finish.
    Finish {
        /// The stream.
        key: StreamKey,
    },
    /// Reset the stream with `code`: the rest of its subgroup is dropped, and no new stream
    /// may be opened for that subgroup.
    Reset {
        /// The stream.
        key: StreamKey,
        /// The RESET_STREAM code.
        code: u32,
        /// Why.
        reason: DropReason,
    },
    /// The stream's objects were all dropped before any byte was written (or a datagram
    /// lane was cancelled): no QUIC stream was opened and none will be.
    Abandon {
        /// The stream.
        key: StreamKey,
        /// Why.
        reason: DropReason,
    },
}

/// Maps the draft's order onto quinn's stream priority, where **higher is sent first**.
///
/// Only the two priority numbers take part: `(subscriber, publisher)` as a 16-bit number
/// `s * 256 + p`, inverted to `65535 - (s * 256 + p)`. So a more important stream always
/// gets a strictly higher quinn priority, and streams the draft leaves unordered (equal
/// priorities, different requests) get equal ones, which quinn serves round-robin. Group
/// and subgroup order are left to the scheduler: it keeps so little in QUIC that two groups
/// of one track rarely sit there together.
///
/// Values lie in `0..=65535`, so the driver gives the control stream a higher one (the
/// draft: control messages SHOULD go before all objects), e.g. `i32::MAX`.
pub fn quinn_priority(order: &SendOrder) -> i32 {
    let level =
        (i32::from(order.subscriber_priority()) << 8) | i32::from(order.publisher_priority());
    0xFFFF - level
}
