//! The driver loop of one MoQT connection. See the module documentation of [`super`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use tiermesh_proto::TerminationCode;
use tiermesh_proto::data::Datagram;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{
    MessageParams, PublishDoneCode, RequestErrorCode, SubscribeOptions as NsOptions,
};
use tiermesh_proto::priority::resolve_group_order;
use tiermesh_proto::session::{
    self, Event as ProtoEvent, FetchRequest, PeerSetup, Role, SessionConfig, Stream,
};
use tiermesh_proto::types::{FullTrackName, Location, RequestId, TrackAlias, TrackNamespace};

use super::events::{
    Event, IncomingFetch, IncomingPublish, NamespaceRequest, NamespaceSubscribeRequest,
    SubscribeRequest, TrackStatusRequest,
};
use super::recv::{self, Input};
use super::send::{self, SendCmd, SendPath};
use super::track::{
    FetchCancel, FetchInput, FetchReader, FetchResponse, NamespaceEvent, NamespaceSubscription,
    PublishDone, ReceivedObject, Sink, TrackEvent, TrackReader, TrackWriter, WriterEnd,
    WriterInner,
};
use super::{CloseReason, Connection, Error, Inner};
use crate::scheduler::reset_code;
use crate::transport::{self, RecvStream, SendStream};

/// How long an incoming data stream whose Track Alias is not known yet waits for the
/// SUBSCRIBE_OK that names it (data may overtake the control stream). One second is many
/// round trips on any link tiermesh serves.
const PARKED_ALIAS_WAIT: Duration = Duration::from_secs(1);

/// Streams waiting for an unknown alias at once: bounds what a peer sending streams with
/// made-up aliases can make this endpoint hold.
const MAX_PARKED: usize = 256;

/// How long streams of a subscription that PUBLISH_DONE ended are still read: the
/// publisher may send PUBLISH_DONE before its last streams arrive. Two seconds covers the
/// delivery timeouts tiermesh uses (the proto session keeps the alias as long).
const ENDED_SINK_LINGER: Duration = Duration::from_secs(2);

/// How long a fetch of this endpoint waits for its data stream once a data stream was reset
/// before saying what it was (QUIC drops a reset stream's unread data, FETCH_HEADER
/// included): the reset may have been the fetch's, and the fetch would then wait for good.
/// It ends when this passes after both the reset and its FETCH_OK with no stream of its own
/// shown. Three seconds: five round trips of the slowest link tiermesh serves (satellite,
/// 600 ms), and past the use of a joining fetch (a relay caches two groups); a tiermesh
/// publisher never resets a fetch stream it gave up on (see `FetchResponse::reset`), so
/// this is for other implementations.
const FETCH_ORPHAN_WAIT: Duration = Duration::from_secs(3);

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One of the connection's long-lived readers and writers (control stream, datagrams,
/// accepting streams, the transport's end), run inside the driver's own task.
type IoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the application asks the driver to do.
pub(crate) enum Command {
    Subscribe {
        track: FullTrackName,
        params: MessageParams,
        reply: Reply<TrackReader>,
        join: Option<(u64, MessageParams, Reply<FetchReader>)>,
    },
    Unsubscribe {
        request_id: RequestId,
    },
    Fetch {
        request: FetchRequest,
        params: MessageParams,
        reply: Reply<FetchReader>,
    },
    /// A [`FetchReader`] went before its fetch ended: FETCH_CANCEL.
    CancelFetch {
        request_id: RequestId,
    },
    /// A [`FetchResponse`] ended (finished, given up or dropped): the fetch's state goes.
    FetchResponseEnded {
        request_id: RequestId,
    },
    PublishNamespace {
        namespace: TrackNamespace,
        params: MessageParams,
        reply: Reply<RequestId>,
    },
    PublishNamespaceDone {
        request_id: RequestId,
    },
    SubscribeNamespace {
        prefix: TrackNamespace,
        params: MessageParams,
        reply: Reply<NamespaceSubscription>,
    },
    UnsubscribeNamespace {
        request_id: RequestId,
    },
    Publish {
        track: FullTrackName,
        params: MessageParams,
        extensions: Extensions,
        reply: Reply<TrackWriter>,
    },
    AcceptSubscribe {
        request_id: RequestId,
        params: MessageParams,
        extensions: Extensions,
        subscriber: MessageParams,
        reply: Reply<TrackWriter>,
    },
    AcceptPublish {
        request_id: RequestId,
        reply: Reply<TrackReader>,
    },
    AcceptFetch {
        request_id: RequestId,
        end_of_track: bool,
        end_location: Location,
        extensions: Extensions,
        reply: Reply<FetchResponse>,
    },
    AcceptRequest {
        request_id: RequestId,
        params: MessageParams,
    },
    TrackStatus {
        track: FullTrackName,
        params: MessageParams,
        reply: Reply<MessageParams>,
    },
    RequestUpdate {
        existing: RequestId,
        params: MessageParams,
        reply: Reply<RequestId>,
    },
    Reject {
        request_id: RequestId,
        code: RequestErrorCode,
        reason: String,
    },
    PublishDone {
        request_id: RequestId,
        code: PublishDoneCode,
        reason: String,
    },
    StreamOpened {
        request_id: RequestId,
    },
    Namespace {
        request_id: RequestId,
        namespace: TrackNamespace,
        done: bool,
    },
    Goaway {
        uri: String,
        reply: Reply<()>,
    },
    Close {
        code: TerminationCode,
        reason: String,
    },
}

/// The sending end of a connection's command channel. Commands (and events, the other
/// way) travel boxed: a tokio channel allocates its first block of 32 slots when it is
/// made, and at these types' sizes (hundreds of bytes of request parameters) those blocks
/// cost every connection some 27 KiB, idle or not.
#[derive(Debug, Clone)]
pub(crate) struct CommandTx(mpsc::UnboundedSender<Box<Command>>);

/// The driver is gone: a command was not delivered.
#[derive(Debug)]
pub(crate) struct DriverGone;

impl CommandTx {
    /// Hands a command to the driver.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), DriverGone> {
        self.0.send(Box::new(cmd)).map_err(|_| DriverGone)
    }
}

impl Command {
    fn needs_ready(&self) -> bool {
        !matches!(self, Command::Close { .. })
    }
}

enum Pending {
    Subscribe {
        reply: Reply<TrackReader>,
        rx: mpsc::UnboundedReceiver<TrackEvent>,
        tx: mpsc::UnboundedSender<TrackEvent>,
        track: FullTrackName,
    },
    Fetch {
        reply: Reply<FetchReader>,
        rx: mpsc::UnboundedReceiver<FetchInput>,
        /// When the FETCH was sent.
        asked: Instant,
    },
    Publish {
        reply: Reply<TrackWriter>,
        alias: TrackAlias,
        extensions: Extensions,
    },
    Request {
        reply: Reply<RequestId>,
    },
    TrackStatus {
        reply: Reply<MessageParams>,
    },
    SubscribeNamespace {
        reply: Reply<NamespaceSubscription>,
        rx: mpsc::UnboundedReceiver<NamespaceEvent>,
    },
}

struct UnacceptedPublish {
    rx: mpsc::UnboundedReceiver<TrackEvent>,
    track: FullTrackName,
    alias: TrackAlias,
    extensions: Extensions,
    largest: Option<Location>,
}

/// Runs one MoQT connection. Spawn [`Driver::run`]; the [`Connection`] handles work while
/// it runs, and the session ends when it returns.
pub struct Driver {
    session: session::Session,
    transport: transport::Session,
    inner: Weak<Inner>,
    cmd_rx: mpsc::UnboundedReceiver<Box<Command>>,
    cmd_tx: mpsc::WeakUnboundedSender<Box<Command>>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    inputs_rx: mpsc::UnboundedReceiver<Input>,
    tasks: JoinSet<()>,
    /// The connection's readers ([`recv::io`]: control stream, datagrams, accepted
    /// streams, the transport's end) and the control stream's writer, polled by the
    /// driver's task (each only when woken) rather than each in a task of its own: a task
    /// costs every connection, idle or not, its header and scheduling state besides the
    /// future.
    io_futures: FuturesUnordered<IoFuture>,
    io: Option<(SendStream, RecvStream, send::Receiver)>,
    control_tx: mpsc::UnboundedSender<Vec<u8>>,
    control_rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    events_tx: mpsc::UnboundedSender<Box<Event>>,
    closed_tx: watch::Sender<Option<CloseReason>>,
    setup_tx: watch::Sender<Option<Arc<PeerSetup>>>,
    send: SendPath,
    deferred: Vec<Command>,
    pending: HashMap<RequestId, Pending>,
    sinks: HashMap<RequestId, Sink>,
    fetch_sinks: HashMap<RequestId, mpsc::UnboundedSender<FetchInput>>,
    unaccepted: HashMap<RequestId, UnacceptedPublish>,
    writers: HashMap<RequestId, watch::Sender<Option<WriterEnd>>>,
    fetch_priority: HashMap<RequestId, u8>,
    /// The fetches this endpoint answers whose [`FetchResponse`] has not ended: its
    /// cancellation and its stream, for a FETCH_CANCEL.
    fetch_responses: HashMap<RequestId, (Arc<FetchCancel>, u64)>,
    ns_streams: HashMap<Stream, mpsc::UnboundedSender<(Vec<u8>, bool)>>,
    ns_subs: HashMap<RequestId, mpsc::UnboundedSender<NamespaceEvent>>,
    peer_namespaces: HashMap<RequestId, TrackNamespace>,
    parked: Vec<(TrackAlias, oneshot::Sender<Option<Sink>>, Instant)>,
    /// Sinks of subscriptions ended by PUBLISH_DONE, kept for streams still in flight
    /// until the deadline.
    ended_sinks: HashMap<RequestId, (Sink, Instant)>,
    /// This endpoint's fetches whose data stream ended before FETCH_OK was read (the data
    /// and control streams are not ordered): released once the answer arrives.
    fetches_finished_early: std::collections::HashSet<RequestId>,
    /// When the last data stream reset before saying what it was arrived.
    anonymous_reset: Option<Instant>,
    /// Fetches with FETCH_OK and no data stream yet after such a reset: when they end (see
    /// [`FETCH_ORPHAN_WAIT`]).
    orphan_fetches: HashMap<RequestId, Instant>,
    transport_reason: Option<transport::CloseReason>,
    scheduler: crate::scheduler::SchedulerConfig,
    span: tracing::Span,
    /// The handle the I/O tasks share (the connection's handles hold it weakly).
    shared_transport: Arc<transport::Session>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("role", &self.session.role()).finish_non_exhaustive()
    }
}

pub(crate) async fn start(
    transport: transport::Session,
    mut control_send: SendStream,
    control_recv: RecvStream,
    role: Role,
    config: SessionConfig,
    scheduler: crate::scheduler::SchedulerConfig,
) -> (Connection, Driver) {
    let now = Instant::now();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(None);
    let (setup_tx, setup_rx) = watch::channel(None);
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let send_stats = Arc::default();
    let (send, send_rx) = SendPath::new(Arc::clone(&send_stats));
    // The I/O tasks share one handle; the connection's handles see it only weakly, so they
    // never keep the transport open after the driver and its tasks are gone.
    let shared_transport = Arc::new(transport.clone());
    let inner = Arc::new(Inner {
        transport: Arc::downgrade(&shared_transport),
        send_stats,
        cmd: CommandTx(cmd_tx.clone()),
        events: tokio::sync::Mutex::new(events_rx),
        closed: closed_rx,
        setup: setup_rx,
        kind: transport.kind(),
        peer: transport.peer(),
        path: transport.path().map(str::to_owned),
        query: transport.query().map(str::to_owned),
        peer_certificates: transport.peer_certificates(),
    });
    let span = tracing::info_span!("moq", role = ?role, peer = %transport.peer(), kind = %transport.kind());
    let mut session = session::Session::new(now, role, config);
    // Control messages go before every object (media streams use 0..=65535, see
    // `scheduler::quinn_priority`); without this SUBSCRIBE_OK waits behind queued video.
    let _ = control_send.set_priority(i32::MAX);
    // CLIENT_SETUP goes out before the driver runs: over raw QUIC the server sees the
    // control stream only once bytes arrive on it.
    while let Some(t) = session.poll_transmit() {
        if t.stream == Stream::Control
            && let Err(e) = control_send.write_all(&t.data).await
        {
            tracing::debug!(error = %e, "SETUP not written");
        }
    }
    let driver = Driver {
        session,
        transport,
        inner: Arc::downgrade(&inner),
        cmd_rx,
        cmd_tx: cmd_tx.downgrade(),
        inputs_tx,
        inputs_rx,
        tasks: JoinSet::new(),
        io_futures: FuturesUnordered::new(),
        io: Some((control_send, control_recv, send_rx)),
        control_tx,
        control_rx: Some(control_rx),
        events_tx,
        closed_tx,
        setup_tx,
        send,
        deferred: Vec::new(),
        pending: HashMap::new(),
        sinks: HashMap::new(),
        fetch_sinks: HashMap::new(),
        unaccepted: HashMap::new(),
        writers: HashMap::new(),
        fetch_priority: HashMap::new(),
        fetch_responses: HashMap::new(),
        ns_streams: HashMap::new(),
        ns_subs: HashMap::new(),
        peer_namespaces: HashMap::new(),
        parked: Vec::new(),
        ended_sinks: HashMap::new(),
        fetches_finished_early: std::collections::HashSet::new(),
        anonymous_reset: None,
        orphan_fetches: HashMap::new(),
        transport_reason: None,
        scheduler,
        span,
        shared_transport,
    };
    drop(cmd_tx);
    (Connection { inner }, driver)
}

impl Driver {
    /// Runs the connection until the session closes; returns who closed it and why.
    // A plain function handing out the inner future rather than an `async fn` awaiting it:
    // such a wrapper keeps a second copy of the driver (4 KiB) in its state, which every
    // connection's task would carry.
    pub fn run(self) -> impl Future<Output = CloseReason> + Send + 'static {
        use tracing::Instrument;
        let span = self.span.clone();
        // Boxed: an `async fn` taking the driver by value keeps two slots for it (the
        // argument and its binding), 4 KiB each, in every connection's task.
        Box::new(self).run_inner().instrument(span)
    }

    async fn run_inner(mut self: Box<Self>) -> CloseReason {
        self.spawn_io();
        let reason = loop {
            if let Some(reason) = self.flush() {
                break reason;
            }
            let timeout = self.session.poll_timeout();
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next_expiry = self.ended_sinks.values().map(|(_, at)| *at).min();
            let expiry = async {
                match next_expiry {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next_orphan = self.orphan_fetches.values().min().copied();
            let orphan = async {
                match next_orphan {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let parked_wait = async {
                if self.parked.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
            };
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.handle_command(*cmd),
                    None => self.session.close(Instant::now(), TerminationCode::NoError, "connection dropped"),
                },
                Some(input) = self.inputs_rx.recv() => self.handle_input(input),
                _ = sleep => self.session.handle_timeout(Instant::now()),
                Some(()) = self.io_futures.next(), if !self.io_futures.is_empty() => {}
                _ = parked_wait => {}
                _ = expiry => {
                    let now = Instant::now();
                    self.ended_sinks.retain(|_, (_, at)| *at > now);
                }
                _ = orphan => self.end_orphan_fetches(Instant::now()),
            }
        };
        tracing::info!(%reason, "session closed");
        for (_, w) in self.writers.drain() {
            let _ = w.send(Some(WriterEnd::SessionClosed));
        }
        let _ = self.closed_tx.send(Some(reason.clone()));
        reason
    }

    fn spawn_io(&mut self) {
        let Some((control_send, control_recv, send_rx)) = self.io.take() else { return };
        // One shared handle for the I/O future and the send path: the transport session
        // is several hundred bytes, which each would otherwise carry a copy of.
        let t = Arc::clone(&self.shared_transport);
        let io = &self.io_futures;
        io.push(Box::pin(recv::io(t.clone(), control_recv, self.inputs_tx.clone())));
        if let Some(rx) = self.control_rx.take() {
            io.push(Box::pin(recv::control_writer(control_send, rx)));
        }
        // The data send path stays a task of its own: it runs once per object on a relay,
        // and must not wait behind (or wake) the control plane.
        self.tasks.spawn(send::run(t, send_rx, self.scheduler.clone()));
    }

    /// Drains transmits and events until there are none; returns the close reason once
    /// the session has closed.
    fn flush(&mut self) -> Option<CloseReason> {
        loop {
            let mut progressed = false;
            while let Some(t) = self.session.poll_transmit() {
                progressed = true;
                self.transmit(t);
            }
            while let Some(e) = self.session.poll_event() {
                progressed = true;
                if let ProtoEvent::Closed(reason) = e {
                    return Some(self.finish_close(reason));
                }
                self.handle_event(e);
            }
            if !progressed {
                break;
            }
        }
        if !self.parked.is_empty() {
            self.retry_parked();
        }
        None
    }

    fn finish_close(&mut self, reason: session::CloseReason) -> CloseReason {
        if let Some(t) = self.transport_reason.take()
            && (t.code().is_none() || t.by() != Some(transport::Side::Peer))
        {
            return CloseReason::Transport(t);
        }
        if reason.by_peer {
            CloseReason::Peer { code: reason.code, reason: reason.reason }
        } else {
            self.transport.close(reason.code, &reason.reason);
            CloseReason::Local { code: reason.code, reason: reason.reason }
        }
    }

    fn transmit(&mut self, t: session::Transmit) {
        match t.stream {
            Stream::Control => {
                let _ = self.control_tx.send(t.data);
            }
            stream => {
                if let (
                    Stream::SubscribeNamespace(_),
                    std::collections::hash_map::Entry::Vacant(v),
                ) = (stream, self.ns_streams.entry(stream))
                {
                    let (tx, rx) = mpsc::unbounded_channel();
                    v.insert(tx);
                    self.tasks.spawn(recv::open_ns_stream(
                        self.transport.clone(),
                        stream,
                        rx,
                        self.inputs_tx.clone(),
                    ));
                }
                if let Some(tx) = self.ns_streams.get(&stream) {
                    let _ = tx.send((t.data, t.fin));
                }
                if t.fin {
                    self.ns_streams.remove(&stream);
                }
            }
        }
    }

    fn conn(&self) -> Option<Connection> {
        self.inner.upgrade().map(|inner| Connection { inner })
    }

    fn cmd_sender(&self) -> Option<CommandTx> {
        self.cmd_tx.upgrade().map(CommandTx)
    }

    fn emit(&self, e: Event) {
        let _ = self.events_tx.send(Box::new(e));
    }

    // ----- commands -----

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        if cmd.needs_ready() && !self.session.is_ready() && !self.session.is_closed() {
            self.deferred.push(cmd);
            return;
        }
        let s = &mut self.session;
        match cmd {
            Command::Subscribe { track, params, reply, join } => {
                match s.subscribe(now, track.clone(), params) {
                    Ok(id) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.pending.insert(id, Pending::Subscribe { reply, rx, tx, track });
                        if let Some((groups_back, params, freply)) = join {
                            let req =
                                FetchRequest::RelativeJoining { subscription: id, groups_back };
                            self.start_fetch(now, req, params, freply);
                        }
                    }
                    Err(e) => {
                        if let Some((_, _, freply)) = join {
                            let _ = freply.send(Err(e.clone().into()));
                        }
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Unsubscribe { request_id } => {
                let _ = s.unsubscribe(now, request_id);
                self.sinks.remove(&request_id);
                self.ended_sinks.remove(&request_id);
            }
            Command::Fetch { request, params, reply } => {
                self.start_fetch(now, request, params, reply)
            }
            Command::CancelFetch { request_id } => {
                // Nothing is sent for a fetch whose state has gone (its stream ended).
                if s.fetch_cancel(now, request_id).is_ok() {
                    tracing::debug!(request = request_id.0, "fetch cancelled");
                }
                self.fetch_sinks.remove(&request_id);
                self.orphan_fetches.remove(&request_id);
            }
            Command::FetchResponseEnded { request_id } => {
                // The stream's FIN releases the fetch state at the peer; here it is
                // released once the response has ended (queued whole or given up), nothing
                // more is expected for it then. Until then a FETCH_CANCEL reaches it.
                if self.fetch_responses.remove(&request_id).is_some() {
                    let _ = s.fetch_finished(now, request_id);
                }
            }
            Command::PublishNamespace { namespace, params, reply } => {
                match s.publish_namespace(now, namespace, params) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Request { reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::PublishNamespaceDone { request_id } => {
                let _ = s.publish_namespace_done(now, request_id);
            }
            Command::SubscribeNamespace { prefix, params, reply } => {
                match s.subscribe_namespace(now, prefix, NsOptions::Namespace, params) {
                    Ok(id) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.ns_subs.insert(id, tx);
                        self.pending.insert(id, Pending::SubscribeNamespace { reply, rx });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::UnsubscribeNamespace { request_id } => {
                let _ = s.unsubscribe_namespace(now, request_id);
                self.ns_subs.remove(&request_id);
            }
            Command::Publish { track, params, extensions, reply } => {
                match s.publish(now, track, params, extensions.clone()) {
                    Ok((id, alias)) => {
                        self.pending.insert(id, Pending::Publish { reply, alias, extensions });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::AcceptSubscribe { request_id, params, extensions, subscriber, reply } => {
                match s.accept_subscribe(now, request_id, params, extensions.clone()) {
                    Ok(alias) => {
                        let w = self.writer(request_id, alias, &extensions, &subscriber);
                        let _ = reply.send(w);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::AcceptPublish { request_id, reply } => {
                let params = MessageParams { forward: Some(true), ..Default::default() };
                match s.accept_publish(now, request_id, params) {
                    Ok(()) => match (self.unaccepted.remove(&request_id), self.cmd_sender()) {
                        (Some(u), Some(cmd)) => {
                            let _ = reply.send(Ok(TrackReader {
                                request_id,
                                track: u.track,
                                alias: u.alias,
                                largest: u.largest,
                                extensions: u.extensions,
                                rx: u.rx,
                                cmd,
                                done: None,
                                unsubscribed: false,
                            }));
                        }
                        _ => {
                            let _ = reply.send(Err(Error::Ended));
                        }
                    },
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::AcceptFetch { request_id, end_of_track, end_location, extensions, reply } => {
                // The track's publisher priority, as its subgroups carry it (draft-16 §7.1:
                // a fetch response is scheduled by the FETCH's subscriber priority and its
                // objects' publisher priority, like the live track's objects).
                let publisher_priority = extensions.publisher_priority();
                let r = s.accept_fetch(
                    now,
                    request_id,
                    end_of_track,
                    end_location,
                    MessageParams::default(),
                    extensions,
                );
                let prio = self.fetch_priority.remove(&request_id).unwrap_or(128);
                let _ = reply.send(match r {
                    Ok(()) => {
                        // The fetch state stays until the response ends
                        // (`Command::FetchResponseEnded`), so a FETCH_CANCEL is seen.
                        let cancel = Arc::new(FetchCancel::default());
                        let response = FetchResponse::open(
                            self.send.clone(),
                            request_id,
                            prio,
                            publisher_priority,
                            end_location,
                            cancel.clone(),
                            self.cmd_sender(),
                        );
                        self.fetch_responses.insert(request_id, (cancel, response.stream()));
                        Ok(response)
                    }
                    Err(e) => Err(e.into()),
                });
            }
            Command::AcceptRequest { request_id, params } => {
                let _ = s.accept_request(now, request_id, params);
            }
            Command::TrackStatus { track, params, reply } => {
                match s.track_status(now, track, params) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::TrackStatus { reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::RequestUpdate { existing, params, reply } => {
                match s.request_update(now, existing, params) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Request { reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Reject { request_id, code, reason } => {
                let _ = s.reject(now, request_id, code, 0, &reason);
                self.unaccepted.remove(&request_id);
                self.sinks.remove(&request_id);
                self.fetch_priority.remove(&request_id);
            }
            Command::PublishDone { request_id, code, reason } => {
                let _ = s.publish_done(now, request_id, code, &reason);
                if let Some(w) = self.writers.remove(&request_id) {
                    let _ = w.send(Some(WriterEnd::Done));
                }
            }
            Command::StreamOpened { request_id } => {
                let _ = s.open_data_stream(request_id);
            }
            Command::Namespace { request_id, namespace, done } => {
                let r = if done {
                    s.namespace_done(now, request_id, &namespace)
                } else {
                    s.namespace(now, request_id, &namespace)
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "namespace notice not sent");
                }
            }
            Command::Goaway { uri, reply } => {
                let _ = reply.send(s.goaway(now, &uri).map_err(Error::from));
            }
            Command::Close { code, reason } => s.close(now, code, &reason),
        }
    }

    fn start_fetch(
        &mut self,
        now: Instant,
        request: FetchRequest,
        params: MessageParams,
        reply: Reply<FetchReader>,
    ) {
        match self.session.fetch(now, request, params) {
            Ok(id) => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.fetch_sinks.insert(id, tx);
                self.pending.insert(id, Pending::Fetch { reply, rx, asked: now });
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Ends the fetches whose [`FETCH_ORPHAN_WAIT`] has passed: their readers end, and the
    /// publisher is told with FETCH_CANCEL (which it ignores for a fetch it has ended).
    fn end_orphan_fetches(&mut self, now: Instant) {
        let due: Vec<RequestId> =
            self.orphan_fetches.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
        for id in due {
            self.orphan_fetches.remove(&id);
            if self.fetch_sinks.remove(&id).is_some() {
                tracing::debug!(
                    request = id.0,
                    "fetch ended: no data stream of its own after a data stream reset unread"
                );
                let _ = self.session.fetch_cancel(now, id);
            }
        }
    }

    fn writer(
        &mut self,
        request_id: RequestId,
        alias: TrackAlias,
        extensions: &Extensions,
        subscriber: &MessageParams,
    ) -> Result<TrackWriter, Error> {
        let cmd = self.cmd_sender().ok_or(Error::Ended)?;
        let (tx, rx) = watch::channel(None);
        self.writers.insert(request_id, tx);
        Ok(TrackWriter {
            inner: Arc::new(WriterInner {
                request_id,
                alias,
                subscriber_priority: std::sync::atomic::AtomicU8::new(
                    subscriber
                        .subscriber_priority
                        .unwrap_or(tiermesh_proto::priority::DEFAULT_PRIORITY),
                ),
                group_order: resolve_group_order(
                    subscriber.group_order,
                    Some(extensions.group_order()),
                ),
                default_priority: extensions.publisher_priority(),
                delivery_timeout: std::sync::Mutex::new(
                    match (subscriber.delivery_timeout_ms, extensions.delivery_timeout_ms()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                    .map(Duration::from_millis),
                ),
                cmd,
                send: self.send.clone(),
                end: rx,
            }),
        })
    }

    // ----- session events -----

    fn handle_event(&mut self, e: ProtoEvent) {
        let now = Instant::now();
        match e {
            ProtoEvent::SetupComplete { peer } => {
                let _ = self.setup_tx.send(Some(Arc::from(peer)));
                for cmd in std::mem::take(&mut self.deferred) {
                    self.handle_command(cmd);
                }
            }
            ProtoEvent::Goaway { uri } => {
                self.emit(Event::Goaway { uri: String::from_utf8_lossy(&uri).into_owned() })
            }
            ProtoEvent::RequestsBlocked { .. } | ProtoEvent::RequestsUnblocked => {}
            ProtoEvent::SubscribeRequested { request_id, track, params } => match self.conn() {
                Some(conn) => self.emit(Event::Subscribe(SubscribeRequest {
                    conn,
                    request_id,
                    answered: false,
                    track,
                    params,
                })),
                None => self.refuse(request_id),
            },
            ProtoEvent::SubscribeOk { request_id, track_alias, params, extensions } => {
                if let Some(Pending::Subscribe { reply, rx, tx, track }) =
                    self.pending.remove(&request_id)
                {
                    self.sinks.insert(
                        request_id,
                        Sink { tx, default_priority: extensions.publisher_priority() },
                    );
                    match self.cmd_sender() {
                        Some(cmd) => {
                            let _ = reply.send(Ok(TrackReader {
                                request_id,
                                track,
                                alias: track_alias,
                                largest: params.largest_object,
                                extensions,
                                rx,
                                cmd,
                                done: None,
                                unsubscribed: false,
                            }));
                        }
                        None => {
                            let _ = reply.send(Err(Error::Ended));
                        }
                    }
                }
            }
            ProtoEvent::PublishRequested { request_id, track, track_alias, params, extensions } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.sinks.insert(
                    request_id,
                    Sink { tx, default_priority: extensions.publisher_priority() },
                );
                self.unaccepted.insert(
                    request_id,
                    UnacceptedPublish {
                        rx,
                        track: track.clone(),
                        alias: track_alias,
                        extensions: extensions.clone(),
                        largest: params.largest_object,
                    },
                );
                match self.conn() {
                    Some(conn) => self.emit(Event::Publish(IncomingPublish {
                        conn,
                        request_id,
                        answered: false,
                        track,
                        track_alias,
                        params,
                        extensions,
                    })),
                    None => self.refuse(request_id),
                }
            }
            ProtoEvent::PublishOk { request_id, params } => {
                if let Some(Pending::Publish { reply, alias, extensions }) =
                    self.pending.remove(&request_id)
                {
                    let w = self.writer(request_id, alias, &extensions, &params);
                    let _ = reply.send(w);
                }
            }
            ProtoEvent::PublishDone { request_id, status, reason, .. } => {
                if let Some(sink) = self.sinks.remove(&request_id) {
                    let _ = sink.tx.send(TrackEvent::Done(PublishDone {
                        code: status,
                        reason: reason.to_string_lossy(),
                    }));
                    self.ended_sinks.insert(request_id, (sink, now + ENDED_SINK_LINGER));
                }
                self.unaccepted.remove(&request_id);
            }
            ProtoEvent::Unsubscribed { request_id } => {
                if let Some(w) = self.writers.remove(&request_id) {
                    let _ = w.send(Some(WriterEnd::Unsubscribed));
                }
            }
            ProtoEvent::FetchRequested { request_id, range, params } => {
                self.fetch_priority.insert(
                    request_id,
                    params
                        .subscriber_priority
                        .unwrap_or(tiermesh_proto::priority::DEFAULT_PRIORITY),
                );
                match self.conn() {
                    Some(conn) => self.emit(Event::Fetch(IncomingFetch {
                        conn,
                        request_id,
                        answered: false,
                        range,
                        params,
                    })),
                    None => self.refuse(request_id),
                }
            }
            ProtoEvent::FetchOk { request_id, end_of_track, end_location, extensions, .. } => {
                if self.fetches_finished_early.remove(&request_id) {
                    let _ = self.session.fetch_finished(now, request_id);
                }
                if let Some(Pending::Fetch { reply, rx, asked }) = self.pending.remove(&request_id)
                {
                    // A data stream reset unread since the FETCH went out may have been this
                    // fetch's (data can overtake the FETCH_OK).
                    if self.anonymous_reset.is_some_and(|at| at >= asked)
                        && self.fetch_sinks.contains_key(&request_id)
                    {
                        self.orphan_fetches.insert(request_id, now + FETCH_ORPHAN_WAIT);
                    }
                    let _ = reply.send(Ok(FetchReader {
                        request_id,
                        end_location,
                        end_of_track,
                        extensions,
                        rx,
                        end: None,
                        last_unknown: None,
                        cmd: self.cmd_sender(),
                    }));
                }
            }
            ProtoEvent::FetchCancelled { request_id } => {
                // draft-16 FETCH_CANCEL: the publisher stops sending and resets the fetch's
                // data stream. A FETCH not accepted yet is gone from the session (its
                // accept fails); one whose response has ended was released already and is
                // ignored by the session.
                self.fetch_priority.remove(&request_id);
                if let Some((cancel, stream)) = self.fetch_responses.remove(&request_id) {
                    tracing::debug!(request = request_id.0, "fetch cancelled by the requester");
                    cancel.cancel();
                    self.send.push(SendCmd::Reset { stream, code: reset_code::CANCELLED });
                }
            }
            ProtoEvent::TrackStatusRequested { request_id, track, params } => match self.conn() {
                Some(conn) => self.emit(Event::TrackStatus(TrackStatusRequest {
                    conn,
                    request_id,
                    answered: false,
                    track,
                    params,
                })),
                None => self.refuse(request_id),
            },
            ProtoEvent::UpdateRequested { request_id, existing, params } => {
                let _ = self.session.accept_request(now, request_id, MessageParams::default());
                // An update of a subscription this endpoint serves: the app applies what
                // the session does not (priority, delivery timeout, NEW_GROUP_REQUEST).
                if self.writers.contains_key(&existing) {
                    self.emit(Event::SubscriptionUpdate { request_id: existing, params });
                }
            }
            ProtoEvent::RequestOk { request_id, params, .. } => {
                match self.pending.remove(&request_id) {
                    Some(Pending::Request { reply }) => {
                        let _ = reply.send(Ok(request_id));
                    }
                    Some(Pending::TrackStatus { reply }) => {
                        let _ = reply.send(Ok(params));
                    }
                    Some(Pending::SubscribeNamespace { reply, rx }) => match self.cmd_sender() {
                        Some(cmd) => {
                            let _ = reply.send(Ok(NamespaceSubscription { request_id, rx, cmd }));
                        }
                        None => {
                            let _ = reply.send(Err(Error::Ended));
                        }
                    },
                    Some(other) => {
                        self.pending.insert(request_id, other);
                    }
                    None => {}
                }
            }
            ProtoEvent::RequestError { request_id, code, retry_interval, reason, .. } => {
                let err =
                    Error::Rejected { code, reason: reason.to_string_lossy(), retry_interval };
                self.fetch_sinks.remove(&request_id);
                self.fetches_finished_early.remove(&request_id);
                self.orphan_fetches.remove(&request_id);
                self.ns_subs.remove(&request_id);
                match self.pending.remove(&request_id) {
                    Some(Pending::Subscribe { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::Fetch { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::Publish { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::Request { reply }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::TrackStatus { reply }) => {
                        let _ = reply.send(Err(err));
                    }
                    Some(Pending::SubscribeNamespace { reply, .. }) => {
                        let _ = reply.send(Err(err));
                    }
                    None => {}
                }
            }
            ProtoEvent::PublishNamespaceRequested { request_id, namespace, params } => {
                self.peer_namespaces.insert(request_id, namespace.clone());
                match self.conn() {
                    Some(conn) => self.emit(Event::PublishNamespace(NamespaceRequest {
                        conn,
                        request_id,
                        answered: false,
                        namespace,
                        params,
                    })),
                    None => self.refuse(request_id),
                }
            }
            ProtoEvent::PublishNamespaceDone { request_id } => {
                if let Some(namespace) = self.peer_namespaces.remove(&request_id) {
                    self.emit(Event::PublishNamespaceDone { request_id, namespace });
                }
            }
            ProtoEvent::PublishNamespaceCancelled { request_id, .. } => {
                tracing::info!(request = %request_id, "namespace publication cancelled by the peer");
            }
            ProtoEvent::SubscribeNamespaceRequested { request_id, prefix, params, .. } => {
                match self.conn() {
                    Some(conn) => self.emit(Event::SubscribeNamespace(NamespaceSubscribeRequest {
                        conn,
                        request_id,
                        answered: false,
                        prefix,
                        params,
                    })),
                    None => self.refuse(request_id),
                }
            }
            ProtoEvent::SubscribeNamespaceEnded { request_id } => {
                if self.ns_subs.remove(&request_id).is_none() {
                    self.emit(Event::SubscribeNamespaceEnded { request_id });
                }
            }
            ProtoEvent::Namespace { request_id, namespace } => {
                if let Some(tx) = self.ns_subs.get(&request_id) {
                    let _ = tx.send(NamespaceEvent::Added(namespace));
                }
            }
            ProtoEvent::NamespaceDone { request_id, namespace } => {
                if let Some(tx) = self.ns_subs.get(&request_id) {
                    let _ = tx.send(NamespaceEvent::Removed(namespace));
                }
            }
            ProtoEvent::Closed(_) => {}
        }
    }

    fn refuse(&mut self, request_id: RequestId) {
        let _ = self.session.reject(
            Instant::now(),
            request_id,
            RequestErrorCode::InternalError,
            0,
            "no application",
        );
    }

    // ----- I/O inputs -----

    fn handle_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Control(b) => self.session.handle_control_bytes(now, &b),
            Input::ControlEnded => {
                if !self.session.is_closed() && self.transport.close_reason().is_none() {
                    self.session.close(
                        now,
                        TerminationCode::ProtocolViolation,
                        "control stream closed",
                    );
                }
            }
            Input::NsBytes { stream, data, fin } => {
                self.session.handle_stream_bytes(now, stream, &data, fin)
            }
            Input::NsReset { stream } => {
                self.ns_streams.remove(&stream);
                self.session.handle_stream_reset(now, stream);
            }
            Input::PeerBi { key, tx } => {
                self.ns_streams.insert(Stream::Peer(key), tx);
            }
            Input::DataStream { alias, reply } => match self.session.handle_data_stream(now, alias)
            {
                Some(t) if t.ended => {
                    let _ = reply.send(self.ended_sinks.get(&t.request_id).map(|(s, _)| s.clone()));
                }
                Some(t) => {
                    let _ = reply.send(self.sinks.get(&t.request_id).cloned());
                }
                None => {
                    if self.parked.len() >= MAX_PARKED {
                        let _ = reply.send(None);
                    } else {
                        self.parked.push((alias, reply, now));
                    }
                }
            },
            Input::FetchStream { request_id, reply } => {
                self.orphan_fetches.remove(&request_id);
                let sink = if self.session.fetch_is_live(request_id) {
                    self.fetch_sinks.remove(&request_id)
                } else {
                    None
                };
                let _ = reply.send(sink);
            }
            Input::AnonymousReset => {
                self.anonymous_reset = Some(now);
                // Each fetch with its FETCH_OK and no stream yet: the reset may have been its.
                for id in self.fetch_sinks.keys() {
                    if !self.pending.contains_key(id) {
                        self.orphan_fetches.entry(*id).or_insert(now + FETCH_ORPHAN_WAIT);
                    }
                }
            }
            Input::FetchFinished { request_id } => {
                if matches!(self.pending.get(&request_id), Some(Pending::Fetch { .. })) {
                    // Releasing the request now would drop the FETCH_OK still on its way.
                    self.fetches_finished_early.insert(request_id);
                } else {
                    let _ = self.session.fetch_finished(now, request_id);
                }
            }
            Input::Datagram(d) => match Datagram::decode_bytes(d) {
                Ok(d) => {
                    if let Some(t) = self.session.lookup_alias(d.track_alias)
                        && let (false, Some(sink)) = (t.ended, self.sinks.get(&t.request_id))
                    {
                        let obj =
                            tiermesh_proto::data::Object::from_datagram(d, sink.default_priority);
                        let _ = sink.tx.send(TrackEvent::Object(ReceivedObject::new(obj, now)));
                    }
                }
                Err(e) => {
                    if let Some(code) = e.session_code() {
                        self.session.close(now, code, "malformed datagram");
                    }
                }
            },
            Input::Violation { code, reason } => self.session.close(now, code, reason),
            Input::TransportClosed(reason) => {
                let (code, text) = match &reason {
                    transport::CloseReason::Application { code, reason, .. } => {
                        (*code, reason.clone())
                    }
                    other => (TerminationCode::InternalError.code(), other.to_string()),
                };
                self.transport_reason = Some(reason);
                self.session.handle_connection_closed(now, code, &text);
            }
        }
    }

    fn retry_parked(&mut self) {
        let now = Instant::now();
        for (alias, reply, since) in std::mem::take(&mut self.parked) {
            match self.session.handle_data_stream(now, alias) {
                Some(t) if !t.ended => {
                    let _ = reply.send(self.sinks.get(&t.request_id).cloned());
                }
                Some(_) => {
                    let _ = reply.send(None);
                }
                None if now.duration_since(since) > PARKED_ALIAS_WAIT => {
                    let _ = reply.send(None);
                }
                None => self.parked.push((alias, reply, since)),
            }
        }
    }
}
