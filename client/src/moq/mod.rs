//! MoQT draft-16 sessions over [`crate::transport`]: one driver per connection.
//!
//! [`connect`] (client) and [`accept`] (server) return a [`Connection`] handle and its
//! [`Driver`]. The caller runs the driver (`tokio::spawn(driver.run())`); it is the one loop
//! that moves bytes between the sans-IO [`tiermesh_proto::session::Session`] and the
//! transport: it drains `poll_transmit` onto the control stream, turns `poll_event` into
//! answers to the application's calls and [`Event`]s, arms `poll_timeout`, then waits on
//! control-stream bytes, incoming streams, datagrams and the application's commands.
//!
//! Reading and writing streams is done by tasks the driver starts in its own `JoinSet`s
//! (one per incoming data stream, one per outgoing stream, one for the control stream, one
//! writer for the whole send path): a stream waiting for bytes or flow-control credit then
//! never holds up another. Those tasks live exactly as long as the driver: dropping or
//! finishing [`Driver::run`] aborts them all.
//!
//! Data flows outside the driver: an incoming subgroup stream's task asks the driver once
//! which subscription its Track Alias belongs to and then hands each object to that
//! subscription's [`TrackReader`] the moment its payload is complete. Outgoing objects go
//! from a [`TrackWriter`] to the connection's one send path (the `send` module), which opens the
//! QUIC streams, sets their priority from the draft's send order and writes payloads
//! without copying them.
//!
//! ```no_run
//! # async fn run() -> Result<(), tiermesh_client::moq::Error> {
//! use tiermesh_client::moq::{self, ClientOptions, SubscribeOptions};
//! use tiermesh_client::transport::ClientTls;
//! use tiermesh_proto::types::{FullTrackName, TrackNamespace};
//!
//! let url = "moqt://127.0.0.1:4443/".parse().unwrap();
//! let (conn, driver) = moq::connect(&url, ClientOptions::new(ClientTls::insecure())).await?;
//! tokio::spawn(driver.run());
//! let track = FullTrackName::new(TrackNamespace::from_path("clinic/room-42").unwrap(), "audio").unwrap();
//! let mut reader = conn.subscribe(track, SubscribeOptions::default()).await?;
//! while let Some(object) = reader.next_object().await {
//!     println!("group {} object {}: {} bytes", object.group_id, object.object_id, object.payload.len());
//! }
//! # Ok(()) }
//! ```

mod driver;
mod error;
mod events;
mod joined;
mod recv;
mod send;
mod track;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{AuthToken, MessageParams, TokenValue};
pub use tiermesh_proto::session::PeerSetup;
use tiermesh_proto::types::{
    FullTrackName, GroupOrder, Location, RequestId, SubscriptionFilter, TrackNamespace,
};

use crate::scheduler::SchedulerConfig;
use crate::transport::{self, ClientTls, Kind, TransportConfig, Url};

pub use driver::Driver;
pub use error::Error;
pub use events::{
    Event, IncomingFetch, IncomingPublish, NamespaceRequest, NamespaceSubscribeRequest,
    SubscribeRequest, TrackStatusRequest,
};
pub use joined::JoinedTrack;
pub use track::{
    FetchEnd, FetchEvent, FetchReader, FetchResponse, Forwarded, NamespaceEvent,
    NamespaceSubscription, PublishDone, ReceivedObject, SubgroupStream, TrackEvent, TrackReader,
    TrackWriter, WriterEnd,
};

use driver::Command;

/// The Token Type tiermesh writes in AUTHORIZATION TOKEN parameters: 0, "negotiated out of
/// band" (the relay reads the value as a JWT).
pub const TOKEN_TYPE: u64 = 0;

/// How long [`accept`] waits for the client to open its control stream. The QUIC and
/// WebTransport handshakes are done by then; one more round trip is all it takes, so 10 s
/// only bounds what a client that never sends SETUP costs.
const CONTROL_STREAM_WAIT: Duration = Duration::from_secs(10);

/// Options of a client connection.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    tls: ClientTls,
    transport: TransportConfig,
    token: Option<Bytes>,
    max_requests: u64,
    scheduler: SchedulerConfig,
    setup_params: Vec<tiermesh_proto::kvp::KeyValue>,
}

impl ClientOptions {
    /// Defaults with the given way of trusting the server.
    pub fn new(tls: ClientTls) -> Self {
        Self {
            tls,
            transport: TransportConfig::default(),
            token: None,
            max_requests: 100,
            scheduler: SchedulerConfig::default(),
            setup_params: Vec::new(),
        }
    }

    /// An extra parameter for CLIENT_SETUP (Extension Negotiation, draft-16 §3.3): a type the
    /// draft does not define, which other implementations ignore.
    pub fn setup_param(mut self, param: tiermesh_proto::kvp::KeyValue) -> Self {
        self.setup_params.push(param);
        self
    }

    /// The send scheduler of this connection's outgoing data (priority mode by default).
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// An AUTHORIZATION TOKEN sent in CLIENT_SETUP (Token Type [`TOKEN_TYPE`]).
    pub fn token(mut self, token: impl Into<Bytes>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The QUIC settings.
    pub fn transport(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// How many requests the server may have open towards this client (MAX_REQUEST_ID).
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = n;
        self
    }
}

/// Options of a server-side connection.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    max_requests: u64,
    max_auth_token_cache: u64,
    control_message_timeout: Option<Duration>,
    scheduler: SchedulerConfig,
    setup_params: Vec<tiermesh_proto::kvp::KeyValue>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_requests: 100,
            max_auth_token_cache: 16 * 1024,
            control_message_timeout: Some(Duration::from_secs(30)),
            scheduler: SchedulerConfig::default(),
            setup_params: Vec::new(),
        }
    }
}

impl ServerOptions {
    /// How many requests the client may have open at once (MAX_REQUEST_ID credit). A client
    /// that goes beyond it is closed with TOO_MANY_REQUESTS.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = n;
        self
    }

    /// Bytes of registered authorization tokens the client may keep.
    pub fn max_auth_token_cache(mut self, bytes: u64) -> Self {
        self.max_auth_token_cache = bytes;
        self
    }

    /// The send scheduler of this connection's outgoing data (priority mode by default).
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// An extra parameter for SERVER_SETUP (Extension Negotiation, draft-16 §3.3).
    pub fn setup_param(mut self, param: tiermesh_proto::kvp::KeyValue) -> Self {
        self.setup_params.push(param);
        self
    }

    /// How long SETUP and answers to this endpoint's requests may take.
    pub fn control_message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.control_message_timeout = timeout;
        self
    }
}

/// Connects to a `moqt://` (raw QUIC: PATH and AUTHORITY go in CLIENT_SETUP) or `https://`
/// (WebTransport) URL and starts the SETUP exchange. Requests made before SETUP completes
/// wait for it. Run the returned [`Driver`].
pub async fn connect(url: &Url, options: ClientOptions) -> Result<(Connection, Driver), Error> {
    let session = transport::connect_with(url, &options.tls, &options.transport).await?;
    let (send, recv) = session.open_bi().await?;
    let kind = session.kind();
    let mut config = tiermesh_proto::session::SessionConfig::new(match kind {
        Kind::RawQuic => tiermesh_proto::session::Transport::Quic,
        Kind::WebTransport => tiermesh_proto::session::Transport::WebTransport,
    })
    .max_requests(options.max_requests)
    .extension_setup_params(options.setup_params);
    if kind == Kind::RawQuic {
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        config = config.path(path);
        if let Some(host) = url.host_str() {
            let authority = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            config = config.authority(authority);
        }
    }
    if let Some(token) = options.token {
        config = config.setup_auth_tokens(vec![AuthToken::UseValue {
            token_type: TOKEN_TYPE,
            value: TokenValue(token),
        }]);
    }
    Ok(driver::start(
        session,
        send,
        recv,
        tiermesh_proto::session::Role::Client,
        config,
        options.scheduler,
    )
    .await)
}

/// Starts MoQT on a session accepted by [`transport::Server`]: waits for the client's
/// control stream, then returns at once; SETUP completes in the [`Driver`]
/// ([`Connection::ready`]).
pub async fn accept(
    session: transport::Session,
    options: ServerOptions,
) -> Result<(Connection, Driver), Error> {
    let (send, recv) =
        tokio::time::timeout(CONTROL_STREAM_WAIT, session.accept_bi()).await.map_err(|_| {
            session.close(
                tiermesh_proto::TerminationCode::ControlMessageTimeout.code(),
                "no control stream",
            );
            Error::SetupTimeout(CONTROL_STREAM_WAIT)
        })??;
    let kind = session.kind();
    let config = tiermesh_proto::session::SessionConfig::new(match kind {
        Kind::RawQuic => tiermesh_proto::session::Transport::Quic,
        Kind::WebTransport => tiermesh_proto::session::Transport::WebTransport,
    })
    .max_requests(options.max_requests)
    .max_auth_token_cache_size(options.max_auth_token_cache)
    .control_message_timeout(options.control_message_timeout)
    .extension_setup_params(options.setup_params);
    Ok(driver::start(
        session,
        send,
        recv,
        tiermesh_proto::session::Role::Server,
        config,
        options.scheduler,
    )
    .await)
}

/// Who closed a MoQT session, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This endpoint closed it with a termination code (draft-16 §3.4).
    Local {
        /// The code.
        code: u64,
        /// The reason phrase.
        reason: String,
    },
    /// The peer closed it with a termination code.
    Peer {
        /// The code.
        code: u64,
        /// The reason phrase.
        reason: String,
    },
    /// The transport ended without a MoQT close (idle timeout, reset, transport error).
    Transport(transport::CloseReason),
}

impl CloseReason {
    /// The termination code, for a MoQT close.
    pub fn code(&self) -> Option<u64> {
        match self {
            CloseReason::Local { code, .. } | CloseReason::Peer { code, .. } => Some(*code),
            CloseReason::Transport(t) => t.code(),
        }
    }

    /// True if the peer closed the session.
    pub fn by_peer(&self) -> bool {
        match self {
            CloseReason::Peer { .. } => true,
            CloseReason::Local { .. } => false,
            CloseReason::Transport(t) => t.by() == Some(transport::Side::Peer),
        }
    }

    /// The reason phrase.
    pub fn reason(&self) -> &str {
        match self {
            CloseReason::Local { reason, .. } | CloseReason::Peer { reason, .. } => reason,
            CloseReason::Transport(t) => t.reason().unwrap_or(""),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { code, reason } => {
                write!(f, "closed by us with code {code:#x}: {reason}")
            }
            CloseReason::Peer { code, reason } => {
                write!(f, "closed by the peer with code {code:#x}: {reason}")
            }
            CloseReason::Transport(t) => write!(f, "transport ended: {t}"),
        }
    }
}

/// What a SUBSCRIBE asks for.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// SUBSCRIPTION_FILTER; `None` subscribes unfiltered.
    pub filter: Option<SubscriptionFilter>,
    /// SUBSCRIBER_PRIORITY (lower is more important); `None` means the default, 128.
    pub priority: Option<u8>,
    /// GROUP_ORDER; `None` takes the publisher's.
    pub group_order: Option<GroupOrder>,
    /// DELIVERY_TIMEOUT.
    pub delivery_timeout: Option<Duration>,
    /// FORWARD; `None` means 1 (send objects).
    pub forward: Option<bool>,
    /// An AUTHORIZATION TOKEN for this request (Token Type [`TOKEN_TYPE`]).
    pub token: Option<Bytes>,
    /// NEW_GROUP_REQUEST: the largest group ID this subscriber knows plus one, 0 for none
    /// (draft-16 §9.2.2.9); a publisher with DYNAMIC GROUPS then starts a new group.
    pub new_group_request: Option<u64>,
}

impl SubscribeOptions {
    /// The filter a joining subscriber uses: Largest Object.
    pub fn largest_object() -> Self {
        Self { filter: Some(SubscriptionFilter::LargestObject), ..Default::default() }
    }

    fn params(&self) -> MessageParams {
        MessageParams {
            auth_tokens: token_params(self.token.as_ref()),
            delivery_timeout_ms: self.delivery_timeout.map(|d| (d.as_millis() as u64).max(1)),
            subscriber_priority: self.priority,
            group_order: self.group_order,
            subscription_filter: self.filter,
            forward: self.forward,
            new_group_request: self.new_group_request,
            ..Default::default()
        }
    }
}

fn token_params(token: Option<&Bytes>) -> Vec<AuthToken> {
    token
        .map(|t| AuthToken::UseValue { token_type: TOKEN_TYPE, value: TokenValue(t.clone()) })
        .into_iter()
        .collect()
}

/// What a PUBLISH offers.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Track extension headers (DEFAULT PUBLISHER PRIORITY, GROUP ORDER, ...).
    pub extensions: Extensions,
    /// LARGEST_OBJECT, if objects were published before.
    pub largest: Option<Location>,
    /// An AUTHORIZATION TOKEN for this request.
    pub token: Option<Bytes>,
}

struct Inner {
    /// The transport session while the driver or its I/O tasks run.
    transport: std::sync::Weak<transport::Session>,
    /// The send scheduler's counters as of its last drop.
    send_stats: Arc<std::sync::Mutex<crate::scheduler::Stats>>,
    cmd: driver::CommandTx,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Box<Event>>>,
    closed: watch::Receiver<Option<CloseReason>>,
    setup: watch::Receiver<Option<Arc<PeerSetup>>>,
    kind: Kind,
    peer: SocketAddr,
    path: Option<String>,
    query: Option<String>,
    peer_certificates: Option<Vec<Vec<u8>>>,
}

/// A handle on one MoQT session. Cheap to clone; every clone is the same session. The
/// session lives while its [`Driver`] runs.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.inner.kind)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl Connection {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd.send(make(tx)).is_err() {
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        }
    }

    fn send(&self, cmd: Command) {
        let _ = self.inner.cmd.send(cmd);
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            self.inner
                .closed
                .borrow()
                .clone()
                .unwrap_or(CloseReason::Local { code: 0, reason: "driver stopped".into() }),
        )
    }

    /// Raw QUIC or WebTransport.
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The certificate chain (DER, leaf first) the peer presented in the TLS handshake, if
    /// any: the server's on a client, the client's on a server that asked for mutual TLS.
    pub fn peer_certificates(&self) -> Option<&[Vec<u8>]> {
        self.inner.peer_certificates.as_deref()
    }

    /// The WebTransport URL path (server side), if any.
    pub fn url_path(&self) -> Option<&str> {
        self.inner.path.as_deref()
    }

    /// The WebTransport URL query (server side), if any: where `?jwt=` tokens travel.
    pub fn url_query(&self) -> Option<&str> {
        self.inner.query.as_deref()
    }

    /// Waits until SETUP has completed and returns what the peer sent in it.
    pub async fn ready(&self) -> Result<Arc<PeerSetup>, Error> {
        let mut setup = self.inner.setup.clone();
        let mut closed = self.inner.closed.clone();
        loop {
            if let Some(s) = setup.borrow().clone() {
                return Ok(s);
            }
            if let Some(c) = closed.borrow().clone() {
                return Err(Error::Closed(c));
            }
            tokio::select! {
                r = setup.changed() => if r.is_err() { return Err(self.closed_error()) },
                r = closed.changed() => if r.is_err() { return Err(self.closed_error()) },
            }
        }
    }

    /// The peer's SETUP parameters, once SETUP has completed.
    pub fn peer_setup(&self) -> Option<Arc<PeerSetup>> {
        self.inner.setup.borrow().clone()
    }

    /// The next incoming request or notice; `None` once the session is closed.
    pub async fn next_event(&self) -> Option<Event> {
        self.inner.events.lock().await.recv().await.map(|e| *e)
    }

    /// Subscribes to a track and waits for SUBSCRIBE_OK.
    pub async fn subscribe(
        &self,
        track: FullTrackName,
        options: SubscribeOptions,
    ) -> Result<TrackReader, Error> {
        let params = options.params();
        self.call(|reply| Command::Subscribe { track, params, reply, join: None }).await
    }

    /// Joins a track at a key frame: SUBSCRIBE with the Largest Object filter and, at once, a
    /// relative Joining FETCH for the `groups_back` groups before the largest (0: the start
    /// of the current group). The fetch may fail (nothing published yet) while the
    /// subscription succeeds.
    pub async fn join(
        &self,
        track: FullTrackName,
        mut options: SubscribeOptions,
        groups_back: u64,
    ) -> Result<(TrackReader, Result<FetchReader, Error>), Error> {
        options.filter = Some(SubscriptionFilter::LargestObject);
        let params = options.params();
        let fetch_params = MessageParams {
            auth_tokens: token_params(options.token.as_ref()),
            subscriber_priority: options.priority,
            ..Default::default()
        };
        let (ftx, frx) = oneshot::channel();
        let reader = self
            .call(|reply| Command::Subscribe {
                track,
                params,
                reply,
                join: Some((groups_back, fetch_params, ftx)),
            })
            .await?;
        let fetch = frx.await.unwrap_or_else(|_| Err(self.closed_error()));
        Ok((reader, fetch))
    }

    /// The QUIC connection's figures now (RTT, congestion window, bytes, and
    /// [`transport::Stats::send_rate_estimate_bps`], what the uplink can carry);
    /// `None` once the session's driver has stopped.
    pub fn transport_stats(&self) -> Option<transport::Stats> {
        self.inner.transport.upgrade().map(|t| t.stats())
    }

    /// Grants the peer at once the unidirectional stream credit a publisher needs
    /// ([`transport::Session::grant_publisher_streams`]); nothing once the session's driver
    /// has stopped.
    pub fn grant_publisher_streams(&self) {
        if let Some(t) = self.inner.transport.upgrade() {
            t.grant_publisher_streams();
        }
    }

    /// What this connection's send scheduler dropped so far, by track class and reason
    /// (a copy taken at its latest drop; the relay turns it into metrics).
    pub fn send_stats(&self) -> crate::scheduler::Stats {
        self.inner.send_stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the peer for a track's status (TRACK_STATUS) and waits for its REQUEST_OK,
    /// whose parameters are those of a SUBSCRIBE_OK (LARGEST_OBJECT, EXPIRES, ...).
    pub async fn track_status(
        &self,
        track: FullTrackName,
        params: MessageParams,
    ) -> Result<MessageParams, Error> {
        self.call(|reply| Command::TrackStatus { track, params, reply }).await
    }

    /// Updates one of this endpoint's requests (REQUEST_UPDATE; for a subscription: filter,
    /// priority, FORWARD, DELIVERY_TIMEOUT, NEW_GROUP_REQUEST) and waits for REQUEST_OK.
    pub async fn request_update(
        &self,
        existing: RequestId,
        params: MessageParams,
    ) -> Result<(), Error> {
        self.call(|reply| Command::RequestUpdate { existing, params, reply }).await.map(|_| ())
    }

    /// Fetches objects from `start` up to `end` (exclusive; an object of 0 means the whole
    /// end group) and waits for FETCH_OK.
    pub async fn fetch(
        &self,
        track: FullTrackName,
        start: Location,
        end: Location,
        token: Option<Bytes>,
    ) -> Result<FetchReader, Error> {
        let params =
            MessageParams { auth_tokens: token_params(token.as_ref()), ..Default::default() };
        let request = tiermesh_proto::session::FetchRequest::Standalone { track, start, end };
        self.call(|reply| Command::Fetch { request, params, reply }).await
    }

    /// Publishes a namespace (PUBLISH_NAMESPACE) and waits for REQUEST_OK; subscriptions to
    /// its tracks then arrive as [`Event::Subscribe`].
    pub async fn publish_namespace(
        &self,
        namespace: TrackNamespace,
        token: Option<Bytes>,
    ) -> Result<RequestId, Error> {
        let params =
            MessageParams { auth_tokens: token_params(token.as_ref()), ..Default::default() };
        self.call(|reply| Command::PublishNamespace { namespace, params, reply }).await
    }

    /// Withdraws a namespace published with [`Self::publish_namespace`].
    pub fn publish_namespace_done(&self, request_id: RequestId) {
        self.send(Command::PublishNamespaceDone { request_id });
    }

    /// Subscribes to the namespaces under `prefix` (SUBSCRIBE_NAMESPACE, asking for
    /// NAMESPACE messages) and waits for REQUEST_OK.
    pub async fn subscribe_namespace(
        &self,
        prefix: TrackNamespace,
        token: Option<Bytes>,
    ) -> Result<NamespaceSubscription, Error> {
        let params =
            MessageParams { auth_tokens: token_params(token.as_ref()), ..Default::default() };
        self.call(|reply| Command::SubscribeNamespace { prefix, params, reply }).await
    }

    /// Offers a track to the peer (PUBLISH) and waits for PUBLISH_OK.
    pub async fn publish(
        &self,
        track: FullTrackName,
        options: PublishOptions,
    ) -> Result<TrackWriter, Error> {
        let params = MessageParams {
            auth_tokens: token_params(options.token.as_ref()),
            largest_object: options.largest,
            ..Default::default()
        };
        let extensions = options.extensions;
        self.call(|reply| Command::Publish { track, params, extensions, reply }).await
    }

    /// Tells the peer's accepted SUBSCRIBE_NAMESPACE about a matching namespace (NAMESPACE).
    pub fn namespace(&self, request_id: RequestId, namespace: TrackNamespace) {
        self.send(Command::Namespace { request_id, namespace, done: false });
    }

    /// Tells the peer's SUBSCRIBE_NAMESPACE that a namespace went away (NAMESPACE_DONE).
    pub fn namespace_done(&self, request_id: RequestId, namespace: TrackNamespace) {
        self.send(Command::Namespace { request_id, namespace, done: true });
    }

    /// Sends GOAWAY. A server may name the URI to move to; a client sends an empty one.
    pub async fn goaway(&self, uri: &str) -> Result<(), Error> {
        let uri = uri.to_owned();
        self.call(|reply| Command::Goaway { uri, reply }).await
    }

    /// Closes the session with a termination code and reason; both reach the peer.
    pub fn close(&self, code: tiermesh_proto::TerminationCode, reason: &str) {
        self.send(Command::Close { code, reason: reason.to_owned() });
    }

    /// Waits until the session has closed and says who closed it and why.
    pub async fn closed(&self) -> CloseReason {
        let mut closed = self.inner.closed.clone();
        loop {
            if let Some(c) = closed.borrow().clone() {
                return c;
            }
            if closed.changed().await.is_err() {
                return closed
                    .borrow()
                    .clone()
                    .unwrap_or(CloseReason::Local { code: 0, reason: "driver stopped".into() });
            }
        }
    }

    /// Why the session closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.closed.borrow().clone()
    }
}
