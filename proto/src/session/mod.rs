//! The MoQT draft-16 session state machine, without I/O (quinn-proto style).
//!
//! A [`Session`] is one end of one MoQT session. It may publish and subscribe at once. The
//! I/O layer feeds it what arrives and drains what it must send:
//!
//! - inputs: [`Session::handle_control_bytes`] (bytes of the control stream, any split),
//!   [`Session::handle_stream_bytes`] (SUBSCRIBE_NAMESPACE streams),
//!   [`Session::handle_timeout`], [`Session::handle_connection_closed`], and the
//!   application's requests ([`Session::subscribe`], [`Session::publish`], ...);
//! - outputs: [`Session::poll_transmit`] (bytes for a stream), [`Session::poll_event`]
//!   (what happened), [`Session::poll_timeout`] (when to call `handle_timeout`).
//!
//! Every rule the draft says closes the session is enforced here: the session then emits
//! [`Event::Closed`] and keeps the reason in [`Session::close_reason`], which the I/O layer
//! turns into CONNECTION_CLOSE or the WebTransport close capsule.
//!
//! Data streams and datagrams are parsed outside (see [`crate::data`]); the session tells
//! the I/O layer which subscription an incoming Track Alias belongs to
//! ([`Session::lookup_alias`]) and which alias to write for an outgoing one
//! ([`Session::open_data_stream`]).
//!
//! A driver loop drains `poll_transmit` and `poll_event` after every input, then sleeps until
//! `poll_timeout`. Two sessions wired back to back:
//!
//! ```
//! use std::time::Instant;
//! use tiermesh_proto::session::{Event, Role, Session, SessionConfig, Stream};
//! use tiermesh_proto::types::{FullTrackName, TrackNamespace};
//!
//! let now = Instant::now();
//! let mut client = Session::new(now, Role::Client, SessionConfig::default());
//! let mut server = Session::new(now, Role::Server, SessionConfig::default());
//! let shuttle = |from: &mut Session, to: &mut Session| {
//!     while let Some(t) = from.poll_transmit() {
//!         assert_eq!(t.stream, Stream::Control);
//!         to.handle_control_bytes(now, &t.data);
//!     }
//! };
//! shuttle(&mut client, &mut server); // CLIENT_SETUP
//! shuttle(&mut server, &mut client); // SERVER_SETUP
//! assert!(client.is_ready() && server.is_ready());
//!
//! let ns = TrackNamespace::from_path("clinic/room-42/dr-lee").unwrap();
//! let track = FullTrackName::new(ns, "audio").unwrap();
//! let sub = client.subscribe(now, track, Default::default()).unwrap();
//! shuttle(&mut client, &mut server);
//! while let Some(e) = server.poll_event() {
//!     if let Event::SubscribeRequested { request_id, .. } = e {
//!         server.accept_subscribe(now, request_id, Default::default(), Default::default()).unwrap();
//!     }
//! }
//! shuttle(&mut server, &mut client);
//! let alias = loop {
//!     match client.poll_event() {
//!         Some(Event::SubscribeOk { track_alias, .. }) => break track_alias,
//!         Some(_) => continue,
//!         None => panic!("no SUBSCRIBE_OK"),
//!     }
//! };
//! // A subgroup stream arriving with this alias belongs to `sub`.
//! assert_eq!(client.lookup_alias(alias).unwrap().request_id, sub);
//! ```

mod config;
mod ids;
mod recv;
mod send;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

pub use config::{Role, SessionConfig, Transport};

use crate::coding::TerminationCode;
use crate::ext::Extensions;
use crate::message::{
    MessageParams, PublishDoneCode, RequestErrorCode, SetupParams, SubscribeOptions, TokenValue,
};
use crate::types::{
    FullTrackName, Location, ReasonPhrase, RequestId, SubscriptionFilter, TrackAlias,
    TrackNamespace,
};

use ids::{LocalIds, PeerIds};

/// A stream the session reads from or writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The bidirectional control stream (opened by the client).
    Control,
    /// The bidirectional stream this endpoint opens for its own SUBSCRIBE_NAMESPACE with
    /// this request ID. The I/O layer opens a new stream the first time it sees one.
    SubscribeNamespace(RequestId),
    /// A bidirectional stream the peer opened (other than the control stream), keyed by the
    /// I/O layer (for example its transport stream ID). It must begin with
    /// SUBSCRIBE_NAMESPACE.
    Peer(u64),
}

/// Bytes to write on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to write.
    pub stream: Stream,
    /// What to write (may be empty when only `fin` is set).
    pub data: Vec<u8>,
    /// Finish the sending side of the stream after `data`.
    pub fin: bool,
}

/// Why and by whom the session was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The session termination code (draft-16 §3.4) as sent or received.
    pub code: u64,
    /// The reason phrase.
    pub reason: String,
    /// True if the peer closed the session, false if this endpoint did.
    pub by_peer: bool,
}

impl CloseReason {
    /// The code as a known termination code, if draft-16 defines it.
    pub fn termination(&self) -> Option<TerminationCode> {
        TerminationCode::from_code(self.code)
    }
}

/// The kind of a request, as reported with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// SUBSCRIBE.
    Subscribe,
    /// PUBLISH.
    Publish,
    /// FETCH.
    Fetch,
    /// TRACK_STATUS.
    TrackStatus,
    /// PUBLISH_NAMESPACE.
    PublishNamespace,
    /// SUBSCRIBE_NAMESPACE.
    SubscribeNamespace,
    /// REQUEST_UPDATE.
    RequestUpdate,
}

/// What the peer said in its SETUP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSetup {
    /// PATH, from a client on raw QUIC.
    pub path: Option<String>,
    /// AUTHORITY, from a client on raw QUIC.
    pub authority: Option<String>,
    /// MOQT_IMPLEMENTATION, if sent.
    pub implementation: Option<Bytes>,
    /// Authorization tokens with their type and value (aliases resolved).
    pub auth_tokens: Vec<(u64, TokenValue)>,
    /// All the parameters as received.
    pub params: SetupParams,
}

/// The range a FETCH asks for, resolved for the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRange {
    /// The track.
    pub track: FullTrackName,
    /// The first location.
    pub start: Location,
    /// The end location plus one, as on the wire: an object of 0 means the whole group.
    pub end: Location,
    /// For a joining fetch, the subscription it joins.
    pub joining: Option<RequestId>,
}

/// What a FETCH from this endpoint asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchRequest {
    /// A range of a named track.
    Standalone {
        /// The track.
        track: FullTrackName,
        /// The first location.
        start: Location,
        /// The end location plus one; an object of 0 requests the whole end group.
        end: Location,
    },
    /// `groups_back` groups before the joined subscription's largest group.
    RelativeJoining {
        /// The subscription joined (this endpoint's SUBSCRIBE).
        subscription: RequestId,
        /// How many groups before the largest.
        groups_back: u64,
    },
    /// From group `start_group` up to the joined subscription's start.
    AbsoluteJoining {
        /// The subscription joined (this endpoint's SUBSCRIBE).
        subscription: RequestId,
        /// The first group.
        start_group: u64,
    },
}

/// The subscription an incoming Track Alias belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasTarget {
    /// The subscription's request ID (this endpoint's SUBSCRIBE or the peer's PUBLISH).
    pub request_id: RequestId,
    /// True once the publisher sent PUBLISH_DONE or this endpoint unsubscribed: late objects
    /// should be dropped quietly, not treated as an unknown alias.
    pub ended: bool,
}

/// The state of one subscription, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The track.
    pub track: FullTrackName,
    /// True if this endpoint publishes (sends the objects).
    pub we_publish: bool,
    /// True once SUBSCRIBE_OK or PUBLISH_OK was exchanged.
    pub established: bool,
    /// The Track Alias, once known.
    pub alias: Option<TrackAlias>,
    /// The Forward State: whether the publisher sends objects.
    pub forward: bool,
    /// The largest location communicated when the subscription was set up.
    pub largest: Option<Location>,
    /// The subscription filter, if one was given.
    pub filter: Option<SubscriptionFilter>,
}

/// Something the application or I/O layer must know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The SETUP exchange completed: requests may flow.
    SetupComplete {
        /// The peer's SETUP parameters.
        peer: Box<PeerSetup>,
    },
    /// The peer sent GOAWAY: no new requests go out on this session.
    Goaway {
        /// Where to reconnect (empty: the current URI).
        uri: Bytes,
    },
    /// The peer is blocked by this endpoint's MAX_REQUEST_ID.
    RequestsBlocked {
        /// The maximum it is blocked on.
        max_request_id: RequestId,
    },
    /// The peer raised its MAX_REQUEST_ID after this endpoint was blocked: requests can be
    /// sent again.
    RequestsUnblocked,

    /// The peer subscribes to a track this endpoint publishes. Answer with
    /// [`Session::accept_subscribe`] or [`Session::reject`].
    SubscribeRequested {
        /// The peer's request.
        request_id: RequestId,
        /// The track.
        track: FullTrackName,
        /// SUBSCRIBE parameters (tokens resolved).
        params: MessageParams,
    },
    /// This endpoint's SUBSCRIBE was accepted.
    SubscribeOk {
        /// This endpoint's request.
        request_id: RequestId,
        /// The alias on the track's data streams and datagrams.
        track_alias: TrackAlias,
        /// SUBSCRIBE_OK parameters (LARGEST_OBJECT, EXPIRES).
        params: MessageParams,
        /// Track extension headers.
        extensions: Extensions,
    },
    /// The peer offers a track with PUBLISH. Answer with [`Session::accept_publish`] or
    /// [`Session::reject`]. Objects may arrive on its alias before that.
    PublishRequested {
        /// The peer's request.
        request_id: RequestId,
        /// The track.
        track: FullTrackName,
        /// The alias on the track's data streams and datagrams.
        track_alias: TrackAlias,
        /// PUBLISH parameters (tokens resolved).
        params: MessageParams,
        /// Track extension headers.
        extensions: Extensions,
    },
    /// The peer accepted this endpoint's PUBLISH.
    PublishOk {
        /// This endpoint's request.
        request_id: RequestId,
        /// PUBLISH_OK parameters (FORWARD, filter, priority, ...).
        params: MessageParams,
    },
    /// The publisher ended a subscription this endpoint receives.
    PublishDone {
        /// The subscription.
        request_id: RequestId,
        /// Why.
        status: PublishDoneCode,
        /// How many data streams the publisher opened for it.
        stream_count: u64,
        /// Diagnostic text.
        reason: ReasonPhrase,
    },
    /// The peer unsubscribed from a subscription this endpoint publishes: reset its streams.
    Unsubscribed {
        /// The subscription.
        request_id: RequestId,
    },

    /// The peer fetches from this endpoint. Answer with [`Session::accept_fetch`] or
    /// [`Session::reject`]; a joining fetch arrives once its subscription is accepted, with
    /// the range already computed.
    FetchRequested {
        /// The peer's request.
        request_id: RequestId,
        /// What it asks for.
        range: FetchRange,
        /// FETCH parameters (tokens resolved).
        params: MessageParams,
    },
    /// This endpoint's FETCH was accepted.
    FetchOk {
        /// This endpoint's request.
        request_id: RequestId,
        /// True if the track has ended at `end_location`.
        end_of_track: bool,
        /// The end of the range served.
        end_location: Location,
        /// FETCH_OK parameters.
        params: MessageParams,
        /// Track extension headers.
        extensions: Extensions,
    },
    /// The peer cancelled a fetch this endpoint serves: reset its stream.
    FetchCancelled {
        /// The fetch.
        request_id: RequestId,
    },

    /// The peer asks for a track's status. Answer with [`Session::accept_request`] (with the
    /// parameters SUBSCRIBE_OK would carry) or [`Session::reject`].
    TrackStatusRequested {
        /// The peer's request.
        request_id: RequestId,
        /// The track.
        track: FullTrackName,
        /// TRACK_STATUS parameters (tokens resolved).
        params: MessageParams,
    },
    /// The peer updates one of its requests (or a subscription it receives through PUBLISH).
    /// Answer with [`Session::accept_request`] or [`Session::reject`].
    UpdateRequested {
        /// The REQUEST_UPDATE's own ID.
        request_id: RequestId,
        /// The request it modifies.
        existing: RequestId,
        /// The changed parameters.
        params: MessageParams,
    },
    /// One of this endpoint's TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE or
    /// REQUEST_UPDATE requests succeeded.
    RequestOk {
        /// This endpoint's request.
        request_id: RequestId,
        /// Which kind it was.
        kind: RequestKind,
        /// REQUEST_OK parameters (for TRACK_STATUS: LARGEST_OBJECT, EXPIRES, ...).
        params: MessageParams,
    },
    /// One of this endpoint's requests failed.
    RequestError {
        /// This endpoint's request.
        request_id: RequestId,
        /// Which kind it was.
        kind: RequestKind,
        /// The error code.
        code: RequestErrorCode,
        /// Minimum milliseconds before a retry plus one; 0 means do not retry.
        retry_interval: u64,
        /// Diagnostic text.
        reason: ReasonPhrase,
    },

    /// The peer publishes a namespace. Answer with [`Session::accept_request`] or
    /// [`Session::reject`].
    PublishNamespaceRequested {
        /// The peer's request.
        request_id: RequestId,
        /// The namespace.
        namespace: TrackNamespace,
        /// Parameters (tokens resolved).
        params: MessageParams,
    },
    /// The peer withdrew a namespace it published (PUBLISH_NAMESPACE_DONE).
    PublishNamespaceDone {
        /// The peer's PUBLISH_NAMESPACE.
        request_id: RequestId,
    },
    /// The peer revoked its acceptance of this endpoint's PUBLISH_NAMESPACE.
    PublishNamespaceCancelled {
        /// This endpoint's PUBLISH_NAMESPACE.
        request_id: RequestId,
        /// Why.
        code: RequestErrorCode,
        /// Diagnostic text.
        reason: ReasonPhrase,
    },
    /// The peer subscribes to namespaces under a prefix. Answer with
    /// [`Session::accept_request`] or [`Session::reject`], then report namespaces with
    /// [`Session::namespace`] and [`Session::namespace_done`].
    SubscribeNamespaceRequested {
        /// The peer's request.
        request_id: RequestId,
        /// The prefix.
        prefix: TrackNamespace,
        /// Whether it wants NAMESPACE, PUBLISH or both.
        options: SubscribeOptions,
        /// Parameters (tokens resolved).
        params: MessageParams,
    },
    /// A namespace subscription ended because its stream closed (either side's).
    SubscribeNamespaceEnded {
        /// The SUBSCRIBE_NAMESPACE.
        request_id: RequestId,
    },
    /// A namespace matching this endpoint's SUBSCRIBE_NAMESPACE appeared.
    Namespace {
        /// This endpoint's SUBSCRIBE_NAMESPACE.
        request_id: RequestId,
        /// The full namespace (prefix and suffix).
        namespace: TrackNamespace,
    },
    /// A namespace matching this endpoint's SUBSCRIBE_NAMESPACE went away.
    NamespaceDone {
        /// This endpoint's SUBSCRIBE_NAMESPACE.
        request_id: RequestId,
        /// The full namespace (prefix and suffix).
        namespace: TrackNamespace,
    },

    /// The session is closed; nothing more will happen. The I/O layer closes the transport
    /// with this code and reason if this endpoint closed it.
    Closed(CloseReason),
}

/// Why an application call was refused. Nothing was sent and no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
    /// The SETUP exchange has not completed yet.
    #[error("the session is not set up yet")]
    NotReady,
    /// The peer sent GOAWAY: new requests belong on a new session.
    #[error("the peer sent GOAWAY; open a new session")]
    GoingAway,
    /// The peer's MAX_REQUEST_ID allows no more requests now (a REQUESTS_BLOCKED was sent);
    /// wait for [`Event::RequestsUnblocked`].
    #[error("request limit reached (peer's maximum request ID {0})")]
    Blocked(u64),
    /// No request with this ID is in a state that allows the call.
    #[error("request {0} is unknown or not in a state that allows this")]
    UnknownRequest(RequestId),
    /// This endpoint already has a subscription to the track in the same role.
    #[error("already subscribed to this track in the same role")]
    DuplicateSubscription,
    /// The message would break a draft rule (its length, a GOAWAY URI from a client, a
    /// NAMESPACE_DONE before NAMESPACE, ...).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Waiting for SUBSCRIBE_OK / PUBLISH_OK or REQUEST_ERROR.
    Pending,
    /// Accepted.
    Established,
    /// This endpoint unsubscribed (or was told PUBLISH_DONE): the alias still resolves, as
    /// ended, until the linger deadline; a late answer is ignored.
    Ended,
}

#[derive(Debug)]
struct Subscription {
    track: FullTrackName,
    we_publish: bool,
    /// Made with PUBLISH (else SUBSCRIBE).
    via_publish: bool,
    state: SubState,
    alias: Option<TrackAlias>,
    largest: Option<Location>,
    filter: Option<SubscriptionFilter>,
    forward: bool,
    /// Data streams opened (publisher) or seen (subscriber).
    streams: u64,
    /// The Stream Count of a received PUBLISH_DONE.
    expected_streams: Option<u64>,
    /// The peer's joining fetches that wait for this subscription to be accepted.
    waiting_fetches: Vec<(RequestId, JoinKind, u64, MessageParams)>,
    /// The response from the peer has arrived (for subscriptions this endpoint started).
    answered: bool,
    /// The track declared DYNAMIC_GROUPS = 1 (in SUBSCRIBE_OK or PUBLISH): only then may the
    /// subscriber send NEW_GROUP_REQUEST in PUBLISH_OK or REQUEST_UPDATE (draft-16 §9.2.2.9).
    dynamic_groups: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Relative,
    Absolute,
}

#[derive(Debug)]
struct FetchState {
    we_publish: bool,
    established: bool,
    /// The start location, for checking FETCH_OK (when known).
    start: Option<Location>,
    /// Emitted to the application (a joining fetch waits for its subscription first).
    announced: bool,
}

#[derive(Debug)]
struct NsSubscription {
    prefix: TrackNamespace,
    options: SubscribeOptions,
    stream: Stream,
    we_publish: bool,
    established: bool,
    /// Suffixes announced with NAMESPACE and not yet withdrawn.
    active: HashSet<TrackNamespace>,
}

#[derive(Debug)]
enum Request {
    Subscription(Subscription),
    Fetch(FetchState),
    TrackStatus,
    PublishNamespace { established: bool },
    SubscribeNamespace(NsSubscription),
    Update { existing: RequestId, params: MessageParams },
}

impl Request {
    fn kind(&self) -> RequestKind {
        match self {
            Request::Subscription(s) if s.via_publish => RequestKind::Publish,
            Request::Subscription(_) => RequestKind::Subscribe,
            Request::Fetch(_) => RequestKind::Fetch,
            Request::TrackStatus => RequestKind::TrackStatus,
            Request::PublishNamespace { .. } => RequestKind::PublishNamespace,
            Request::SubscribeNamespace(_) => RequestKind::SubscribeNamespace,
            Request::Update { .. } => RequestKind::RequestUpdate,
        }
    }
}

/// A non-control bidirectional stream: a SUBSCRIBE_NAMESPACE exchange.
#[derive(Debug, Default)]
struct NsStream {
    buf: Vec<u8>,
    request: Option<RequestId>,
    /// The peer finished or reset its side.
    recv_closed: bool,
    /// This endpoint finished its side.
    send_closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    /// The SETUP exchange must complete.
    Setup,
    /// This endpoint's request must be answered.
    Response(RequestId),
    /// An ended subscription's alias stops resolving.
    Linger(RequestId),
    /// The peer must close after this endpoint's GOAWAY.
    Goaway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the SETUP exchange completes.
    Setup,
    /// Requests flow.
    Ready,
    /// Closed.
    Closed,
}

/// The registered authorization tokens of one direction (draft-16 §9.2.2.1).
#[derive(Debug, Default)]
struct TokenCache {
    tokens: HashMap<u64, (u64, TokenValue)>,
    size: u64,
    limit: u64,
}

/// One end of a MoQT session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    phase: Phase,
    control_buf: Vec<u8>,
    streams: HashMap<Stream, NsStream>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Deadlines still valid, by timer (stale heap entries are skipped).
    deadlines: HashMap<Timer, Instant>,
    local_ids: LocalIds,
    peer_ids: PeerIds,
    requests: HashMap<RequestId, Request>,
    /// Aliases of subscriptions this endpoint receives.
    incoming_aliases: HashMap<TrackAlias, RequestId>,
    next_alias: u64,
    /// Subscriptions (not ended) by track and role, for DUPLICATE_SUBSCRIPTION.
    by_track: HashMap<(FullTrackName, bool), RequestId>,
    goaway_sent: bool,
    goaway_received: bool,
    peer_tokens: TokenCache,
    close: Option<CloseReason>,
    stats: SessionStats,
}

/// Counters for metrics: plain numbers the relay turns into Prometheus series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Control messages received (control and SUBSCRIBE_NAMESPACE streams).
    pub messages_received: u64,
    /// Bytes of control messages queued for sending.
    pub bytes_sent: u64,
    /// Bytes received on the control and SUBSCRIBE_NAMESPACE streams.
    pub bytes_received: u64,
    /// Requests this endpoint sent.
    pub requests_sent: u64,
    /// Requests the peer sent.
    pub requests_received: u64,
    /// Peer requests the session refused by itself (duplicate subscription, overlapping
    /// prefix, invalid range or joining request, after GOAWAY, update of an ended request).
    pub requests_refused: u64,
}

impl Session {
    /// A new session. A client queues CLIENT_SETUP at once; a server waits for it.
    ///
    /// If the transport negotiated a protocol other than [`crate::ALPN`], the session starts
    /// closed with VERSION_NEGOTIATION_FAILED.
    pub fn new(now: Instant, role: Role, config: SessionConfig) -> Self {
        let (local_first, peer_first) = match role {
            Role::Client => (0, 1),
            Role::Server => (1, 0),
        };
        let peer_ids = PeerIds::new(peer_first, config.max_requests);
        let peer_tokens =
            TokenCache { limit: config.max_auth_token_cache_size, ..Default::default() };
        let mut s = Session {
            role,
            phase: Phase::Setup,
            control_buf: Vec::new(),
            streams: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            deadlines: HashMap::new(),
            local_ids: LocalIds::new(local_first),
            peer_ids,
            requests: HashMap::new(),
            incoming_aliases: HashMap::new(),
            next_alias: 0,
            by_track: HashMap::new(),
            goaway_sent: false,
            goaway_received: false,
            peer_tokens,
            close: None,
            stats: SessionStats::default(),
            config,
        };
        if let Some(p) = &s.config.protocol
            && p != crate::ALPN
        {
            s.close_with(
                TerminationCode::VersionNegotiationFailed,
                "transport negotiated an unsupported MoQT version",
            );
            return s;
        }
        if let Some(t) = s.config.control_message_timeout {
            s.set_timer(Timer::Setup, now, t);
        }
        if role == Role::Client {
            let params = s.own_setup_params();
            s.queue(Stream::Control, &crate::message::ClientSetup { params }.into());
        }
        s
    }

    /// This endpoint's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once SETUP completed and until the session closes.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// True once the session is closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close.as_ref()
    }

    /// True if this endpoint sent GOAWAY.
    pub fn goaway_sent(&self) -> bool {
        self.goaway_sent
    }

    /// True if the peer sent GOAWAY.
    pub fn goaway_received(&self) -> bool {
        self.goaway_received
    }

    /// The next bytes to write, or `None` when there is nothing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, or `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next, or `None` if no timer runs.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if self.deadlines.get(&timer) == Some(&at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs the timers that are due at `now`. A call with nothing due does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.deadlines.get(&timer) != Some(&at) {
                continue;
            }
            self.deadlines.remove(&timer);
            if self.phase == Phase::Closed {
                return;
            }
            match timer {
                Timer::Setup => self.close_with(
                    TerminationCode::ControlMessageTimeout,
                    "SETUP not answered in time",
                ),
                Timer::Response(_) => self.close_with(
                    TerminationCode::ControlMessageTimeout,
                    "request not answered in time",
                ),
                Timer::Goaway => self.close_with(
                    TerminationCode::GoawayTimeout,
                    "session not closed in time after GOAWAY",
                ),
                Timer::Linger(id) => self.expire_linger(id),
            }
        }
    }

    /// The transport was closed by the peer (CONNECTION_CLOSE or the WebTransport close).
    pub fn handle_connection_closed(&mut self, _now: Instant, code: u64, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.finish_close(CloseReason { code, reason: reason.to_owned(), by_peer: true });
    }

    /// Closes the session with `code` and `reason`. The I/O layer then closes the transport
    /// with them (see [`Event::Closed`]).
    pub fn close(&mut self, _now: Instant, code: TerminationCode, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.finish_close(CloseReason {
            code: code.code(),
            reason: reason.to_owned(),
            by_peer: false,
        });
    }

    /// The subscription an incoming data stream's or datagram's Track Alias belongs to.
    pub fn lookup_alias(&self, alias: TrackAlias) -> Option<AliasTarget> {
        let id = *self.incoming_aliases.get(&alias)?;
        let Some(Request::Subscription(s)) = self.requests.get(&id) else { return None };
        Some(AliasTarget { request_id: id, ended: s.state == SubState::Ended })
    }

    /// Like [`Self::lookup_alias`] for a newly opened subgroup stream, which is also counted
    /// against the Stream Count of PUBLISH_DONE: once all announced streams arrived, the
    /// subscription's state is released.
    pub fn handle_data_stream(&mut self, _now: Instant, alias: TrackAlias) -> Option<AliasTarget> {
        let target = self.lookup_alias(alias)?;
        let done = match self.requests.get_mut(&target.request_id) {
            Some(Request::Subscription(s)) => {
                s.streams += 1;
                s.expected_streams.is_some_and(|n| s.streams >= n)
            }
            _ => false,
        };
        if done && target.ended {
            self.release_subscription(target.request_id);
        }
        Some(target)
    }

    /// The Track Alias of a subscription this endpoint publishes, to write in subgroup
    /// headers and datagrams. `None` if the subscription is unknown, not yet accepted by this
    /// endpoint, or ended.
    pub fn outgoing_alias(&self, request_id: RequestId) -> Option<TrackAlias> {
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s)) if s.we_publish && s.state != SubState::Ended => s.alias,
            _ => None,
        }
    }

    /// The alias for a new subgroup stream of a subscription this endpoint publishes,
    /// counting the stream for PUBLISH_DONE's Stream Count. `None` as for
    /// [`Self::outgoing_alias`], or when the Forward State is 0.
    pub fn open_data_stream(&mut self, request_id: RequestId) -> Option<TrackAlias> {
        match self.requests.get_mut(&request_id) {
            Some(Request::Subscription(s))
                if s.we_publish && s.state != SubState::Ended && s.forward =>
            {
                s.streams += 1;
                s.alias
            }
            _ => None,
        }
    }

    /// A subscription's state, either role.
    pub fn subscription(&self, request_id: RequestId) -> Option<SubscriptionInfo> {
        match self.requests.get(&request_id) {
            Some(Request::Subscription(s)) => Some(SubscriptionInfo {
                track: s.track.clone(),
                we_publish: s.we_publish,
                established: s.state == SubState::Established,
                alias: s.alias,
                forward: s.forward,
                largest: s.largest,
                filter: s.filter,
            }),
            _ => None,
        }
    }

    /// True if a fetch with this ID is live (either role): an incoming FETCH_HEADER with an
    /// unknown request ID can be rejected.
    pub fn fetch_is_live(&self, request_id: RequestId) -> bool {
        matches!(self.requests.get(&request_id), Some(Request::Fetch(_)))
    }

    /// The Maximum Request ID the peer granted this endpoint.
    pub fn peer_max_request_id(&self) -> u64 {
        self.local_ids.max()
    }

    /// The Maximum Request ID this endpoint has granted the peer.
    pub fn granted_max_request_id(&self) -> u64 {
        self.peer_ids.advertised()
    }

    /// Counters since the session started.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// How many requests (either side's) the session holds state for.
    pub fn open_requests(&self) -> usize {
        self.requests.len()
    }

    // ----- internals shared by send.rs and recv.rs -----

    fn is_local(&self, id: RequestId) -> bool {
        id.0 % 2 == self.local_ids.parity()
    }

    /// Arms `timer` to fire `after` from `now`. A duration too long for the clock means
    /// the timer never fires.
    fn set_timer(&mut self, timer: Timer, now: Instant, after: std::time::Duration) {
        let Some(at) = now.checked_add(after) else {
            self.deadlines.remove(&timer);
            return;
        };
        self.deadlines.insert(timer, at);
        self.timers.push(Reverse((at, timer)));
    }

    fn cancel_timer(&mut self, timer: Timer) {
        self.deadlines.remove(&timer);
    }

    fn own_setup_params(&self) -> SetupParams {
        let mut p = SetupParams {
            max_request_id: Some(self.peer_ids.advertised()),
            implementation: self.config.implementation.as_ref().map(|s| Bytes::from(s.clone())),
            ..Default::default()
        };
        if self.config.max_auth_token_cache_size > 0 {
            p.max_auth_token_cache_size = Some(self.config.max_auth_token_cache_size);
        }
        if self.role == Role::Client {
            p.auth_tokens = self.config.setup_auth_tokens.clone();
        }
        if self.role == Role::Client && self.config.transport == Transport::Quic {
            p.path = self.config.path.clone();
            p.authority = self.config.authority.clone();
        }
        p.unknown = self.config.extension_setup_params.clone();
        p
    }

    /// Queues an encoded message. Messages built by the session itself always fit.
    fn queue(&mut self, stream: Stream, msg: &crate::message::Message) {
        let mut data = Vec::new();
        if msg.try_encode(&mut data).is_err() {
            // Only reachable for application-supplied content, which the public methods
            // encode (and refuse) before changing state; never for the session's own.
            return;
        }
        self.queue_bytes(stream, data, false);
    }

    fn queue_bytes(&mut self, stream: Stream, data: Vec<u8>, fin: bool) {
        self.stats.bytes_sent += data.len() as u64;
        if let Some(last) = self.transmits.back_mut()
            && last.stream == stream
            && !last.fin
        {
            last.data.extend_from_slice(&data);
            last.fin = fin;
            return;
        }
        self.transmits.push_back(Transmit { stream, data, fin });
    }

    fn close_with(&mut self, code: TerminationCode, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.finish_close(CloseReason {
            code: code.code(),
            reason: reason.to_owned(),
            by_peer: false,
        });
    }

    fn finish_close(&mut self, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.transmits.clear();
        self.timers.clear();
        self.deadlines.clear();
        self.control_buf = Vec::new();
        self.streams.clear();
        self.close = Some(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }

    /// Counts a finished peer request and grants credit back when due.
    fn finish_peer_request(&mut self, id: RequestId) {
        if self.is_local(id) || self.phase == Phase::Closed {
            return;
        }
        if let Some(max) = self.peer_ids.finish(false) {
            self.queue(
                Stream::Control,
                &crate::message::MaxRequestId { max_request_id: RequestId(max) }.into(),
            );
        }
    }

    /// Forgets a subscription and its alias and track index.
    fn release_subscription(&mut self, id: RequestId) {
        if let Some(Request::Subscription(s)) = self.requests.remove(&id) {
            if !s.we_publish
                && let Some(a) = s.alias
                && self.incoming_aliases.get(&a) == Some(&id)
            {
                self.incoming_aliases.remove(&a);
            }
            let key = (s.track, s.we_publish);
            if self.by_track.get(&key) == Some(&id) {
                self.by_track.remove(&key);
            }
            self.cancel_timer(Timer::Response(id));
            self.cancel_timer(Timer::Linger(id));
        }
    }

    /// Ends a subscription this endpoint receives: the alias keeps resolving (as ended) for
    /// the linger time so that late objects are recognised.
    fn end_incoming_subscription(&mut self, now: Instant, id: RequestId) {
        let linger = self.config.publish_done_linger;
        let mut release_now = false;
        if let Some(Request::Subscription(s)) = self.requests.get_mut(&id) {
            s.state = SubState::Ended;
            let key = (s.track.clone(), s.we_publish);
            if s.alias.is_none() {
                release_now = true;
            }
            if self.by_track.get(&key) == Some(&id) {
                self.by_track.remove(&key);
            }
        }
        self.cancel_timer(Timer::Response(id));
        if release_now {
            self.release_subscription(id);
        } else {
            self.set_timer(Timer::Linger(id), now, linger);
        }
    }

    fn expire_linger(&mut self, id: RequestId) {
        match self.requests.get(&id) {
            Some(Request::Subscription(s)) if s.state == SubState::Ended => {
                self.release_subscription(id)
            }
            _ => {}
        }
    }

    /// Resolves the authorization tokens of a received message against the peer's token
    /// cache: registrations are stored, deletions applied, aliases replaced by their value.
    /// Errors are the session errors of draft-16 §9.2.2.1.
    fn resolve_tokens(
        &mut self,
        tokens: &mut Vec<crate::message::AuthToken>,
        in_client_setup: bool,
    ) -> Result<(), ids::Violation> {
        use crate::message::AuthToken;
        use ids::Violation;
        // Token size as the draft counts it: 16 bytes plus the value.
        const ENTRY_OVERHEAD: u64 = 16;
        let mut out = Vec::with_capacity(tokens.len());
        for t in tokens.drain(..) {
            match t {
                AuthToken::Register { alias, token_type, value } => {
                    if self.peer_tokens.tokens.contains_key(&alias) {
                        return Err(Violation::new(
                            TerminationCode::DuplicateAuthTokenAlias,
                            "authorization token alias registered twice",
                        ));
                    }
                    let size = ENTRY_OVERHEAD + value.0.len() as u64;
                    if self.peer_tokens.size.saturating_add(size) > self.peer_tokens.limit {
                        if in_client_setup {
                            // §9.3.1.5: treated as USE_VALUE, not a session error.
                            out.push(AuthToken::UseValue { token_type, value });
                            continue;
                        }
                        return Err(Violation::new(
                            TerminationCode::AuthTokenCacheOverflow,
                            "authorization token cache size exceeded",
                        ));
                    }
                    self.peer_tokens.size += size;
                    self.peer_tokens.tokens.insert(alias, (token_type, value.clone()));
                    out.push(AuthToken::UseValue { token_type, value });
                }
                AuthToken::Delete { alias } => match self.peer_tokens.tokens.remove(&alias) {
                    Some((_, v)) => {
                        self.peer_tokens.size -= ENTRY_OVERHEAD + v.0.len() as u64;
                    }
                    None => {
                        return Err(Violation::new(
                            TerminationCode::UnknownAuthTokenAlias,
                            "DELETE of an unregistered authorization token alias",
                        ));
                    }
                },
                AuthToken::UseAlias { alias } => match self.peer_tokens.tokens.get(&alias) {
                    Some((token_type, value)) => out.push(AuthToken::UseValue {
                        token_type: *token_type,
                        value: value.clone(),
                    }),
                    None => {
                        return Err(Violation::new(
                            TerminationCode::UnknownAuthTokenAlias,
                            "USE_ALIAS of an unregistered authorization token alias",
                        ));
                    }
                },
                t @ AuthToken::UseValue { .. } => out.push(t),
            }
        }
        *tokens = out;
        Ok(())
    }
}
