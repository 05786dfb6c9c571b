//! The batched transport driver: one task drives every connection of a server endpoint
//! through quinn-proto itself (opt-in, `TransportDriver::Batched`).
//!
//! quinn's async layer gives each connection its own driver task, a channel from the
//! endpoint's task and a tokio timer. Here one task owns the socket's reads and writes and
//! all connections sit in one slab under one mutex:
//! - a wake-up reads up to [`RECV_BATCHES`] `recvmmsg` batches (quinn-udp, GRO) and hands
//!   each datagram straight to its connection;
//! - it runs the timers that are due ([`timers::Timers`], one heap for every connection);
//! - it flushes every connection touched since the last flush: its packets
//!   (`poll_transmit` with up to [`MAX_SEGMENTS`] GSO segments, one `sendmsg` each), then its
//!   events, which wake the futures waiting on a stream, an accept or the connection's end.
//!
//! Stream operations ([`Connection`], [`SendStream`], [`RecvStream`]) lock the slab, act on
//! quinn-proto directly, mark their connection dirty and wake the driver once (a flag
//! coalesces the wake-ups of a whole fan-out into one). So an object written to 500
//! subscribers costs 500 stream writes and one pass of the driver that builds and sends
//! every connection's packets.
//!
//! Scope: the server side of raw QUIC (ALPN `moqt-16`). A client that negotiates `h3`
//! (WebTransport) is closed after the handshake with a reason saying so; the driver never
//! dials out.

mod timers;

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn::udp::{self, RecvMeta, UdpSocketState};
use quinn_proto as proto;

pub(crate) use proto::{ConnectionError, ConnectionStats, Dir, StreamId, VarInt};

use timers::Timers;

/// quinn's own cap on GSO segments per `sendmsg` (quinn 0.11's `MAX_TRANSMIT_SEGMENTS`):
/// ten full-size datagrams are one 4 KB object to about three subscribers' worth of packets
/// in one system call, and a larger burst is what quinn's pacer would split anyway.
const MAX_SEGMENTS: usize = 10;
/// Receive batches read per wake-up before the connections' packets are built: each batch is
/// up to `udp::BATCH_SIZE` datagrams (32 on Linux), so 8 bound the ACKs handled between two
/// flushes to 256 and the time an ACK-clocked connection waits for its next packets.
const RECV_BATCHES: usize = 8;
/// Tries of a send that meets a full socket before the datagram is given up (QUIC sends its
/// frames again once it is declared lost). On loopback and on a NIC with a queue the socket
/// is rarely full; the driver does not park a connection's packets to wait for it.
const SEND_TRIES: usize = 16;
/// The reason given to a WebTransport client on an endpoint run by this driver.
pub(crate) const WEBTRANSPORT_REFUSED: &str = "WebTransport is not served on this port: the relay runs the batched transport driver \
     (raw QUIC, moqt-16, only)";
/// The application close code for that refusal: H3_REQUEST_REJECTED (RFC 9114), the
/// closest HTTP/3 has to "not served here, nothing was processed".
const WEBTRANSPORT_REFUSED_CODE: u32 = 0x10b;

/// Numbers sessions of this driver for [`Connection::id`]: from 1, far below the heap
/// addresses quinn's `stable_id` uses, so the two kinds of ids do not meet in one process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A server endpoint run by the batched driver. Dropping it stops accepting; established
/// connections go on until their sessions end.
pub(crate) struct Endpoint {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the driver; [`Shared::wake_pending`] makes a burst of marks one wake-up.
    notify: tokio::sync::Notify,
    wake_pending: AtomicBool,
    io: Io,
}

struct Io {
    socket: tokio::net::UdpSocket,
    udp: UdpSocketState,
    max_segments: usize,
}

struct State {
    endpoint: proto::Endpoint,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_handle: HashMap<proto::ConnectionHandle, usize>,
    timers: Timers,
    /// Slots touched since their last flush.
    dirty: Vec<usize>,
    /// Connections whose handshake completed with one of `protocols`, not accepted yet.
    incoming: VecDeque<usize>,
    accept_waker: Option<Waker>,
    idle_wakers: Vec<Waker>,
    /// No new connection is accepted.
    closed: bool,
    protocols: Arc<[String]>,
    send_buf: Vec<u8>,
    response_buf: Vec<u8>,
    /// Wakers to wake once the lock is released.
    wake: Vec<Waker>,
    /// Datagrams given up on a full socket.
    dropped_sends: u64,
}

/// One connection in the slab with the futures waiting on it.
struct Conn {
    conn: proto::Connection,
    handle: proto::ConnectionHandle,
    id: u64,
    /// [`ConnRef`]s alive: the slot is freed once this is 0 and the connection drained.
    refs: usize,
    /// In [`State::incoming`].
    queued: bool,
    drained: bool,
    is_dirty: bool,
    alpn: Option<String>,
    error: Option<ConnectionError>,
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
    stopped: HashMap<StreamId, Waker>,
    accept: [Vec<Waker>; 2],
    open: [Vec<Waker>; 2],
    datagrams: Vec<Waker>,
    closed: Vec<Waker>,
}

fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// Adds `w` to `list` unless a waker for the same task is there already.
fn register(list: &mut Vec<Waker>, w: &Waker) {
    if !list.iter().any(|x| x.will_wake(w)) {
        list.push(w.clone());
    }
}

impl Conn {
    fn new(conn: proto::Connection, handle: proto::ConnectionHandle) -> Self {
        Self {
            conn,
            handle,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            refs: 0,
            queued: false,
            drained: false,
            is_dirty: false,
            alpn: None,
            error: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            stopped: HashMap::new(),
            accept: [Vec::new(), Vec::new()],
            open: [Vec::new(), Vec::new()],
            datagrams: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Records why the connection ended (the first reason wins) and hands every waiting
    /// future's waker to `wake`.
    fn terminate(&mut self, reason: ConnectionError, wake: &mut Vec<Waker>) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
        wake.extend(self.readers.drain().map(|(_, w)| w));
        wake.extend(self.writers.drain().map(|(_, w)| w));
        wake.extend(self.stopped.drain().map(|(_, w)| w));
        for list in self.accept.iter_mut().chain(self.open.iter_mut()) {
            wake.append(list);
        }
        wake.append(&mut self.datagrams);
        wake.append(&mut self.closed);
    }

    /// The ALPN the handshake settled on.
    fn negotiated_alpn(&self) -> Option<String> {
        let data = self.conn.crypto_session().handshake_data()?;
        let data = data.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?;
        String::from_utf8(data.protocol?).ok()
    }
}

impl State {
    fn mark(&mut self, slot: usize) {
        if let Some(Some(c)) = self.slots.get_mut(slot)
            && !c.is_dirty
        {
            c.is_dirty = true;
            self.dirty.push(slot);
        }
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Frees `slot` once nothing refers to it and quinn-proto is done with it.
    fn free_if_unused(&mut self, slot: usize) {
        let Some(Some(c)) = self.slots.get(slot) else { return };
        if c.drained && c.refs == 0 && !c.queued {
            self.slots[slot] = None;
            self.timers.set(slot, None);
            self.free.push(slot);
            // Every slot is free: no connection is left.
            if self.free.len() == self.slots.len() {
                self.wake.append(&mut self.idle_wakers);
            }
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        let handle = conn.handle;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(conn);
                s
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        };
        self.by_handle.insert(handle, slot);
        slot
    }

    /// Reads what the socket holds, up to [`RECV_BATCHES`] batches, and hands each datagram
    /// to the endpoint and its connection.
    fn receive(&mut self, io: &Io, now: Instant, buf: &mut [u8]) {
        for _ in 0..RECV_BATCHES {
            let mut metas = [RecvMeta::default(); udp::BATCH_SIZE];
            let mut chunks = buf.chunks_mut(buf.len() / udp::BATCH_SIZE);
            let mut iovs: [IoSliceMut; udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let got = io.socket.try_io(tokio::io::Interest::READABLE, || {
                io.udp.recv((&io.socket).into(), &mut iovs, &mut metas)
            });
            let msgs = match got {
                Ok(msgs) => msgs,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // An ICMP error for an earlier send; the next read goes on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "UDP receive failed");
                    return;
                }
            };
            for (meta, iov) in metas.iter().zip(iovs.iter()).take(msgs) {
                let mut data = BytesMut::from(&iov[..meta.len.min(iov.len())]);
                let stride = meta.stride.max(1);
                while !data.is_empty() {
                    let one = data.split_to(stride.min(data.len()));
                    self.handle_datagram(io, now, meta, one);
                }
            }
        }
    }

    fn handle_datagram(&mut self, io: &Io, now: Instant, meta: &RecvMeta, data: BytesMut) {
        let ecn = meta.ecn.and_then(|e| proto::EcnCodepoint::from_bits(e as u8));
        self.response_buf.clear();
        match self.endpoint.handle(now, meta.addr, meta.dst_ip, ecn, data, &mut self.response_buf) {
            Some(proto::DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(&slot) = self.by_handle.get(&ch)
                    && let Some(c) = self.conn(slot)
                {
                    c.conn.handle_event(event);
                    self.mark(slot);
                }
            }
            Some(proto::DatagramEvent::NewConnection(incoming)) => {
                if self.closed {
                    let t = self.endpoint.refuse(incoming, &mut self.response_buf);
                    self.respond(io, &t);
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut self.response_buf, None) {
                    Ok((ch, conn)) => {
                        let slot = self.insert(Conn::new(conn, ch));
                        self.mark(slot);
                    }
                    Err(e) => {
                        tracing::debug!(peer = %meta.addr, error = %e.cause, "connection not accepted");
                        if let Some(t) = e.response {
                            self.respond(io, &t);
                        }
                    }
                }
            }
            Some(proto::DatagramEvent::Response(t)) => self.respond(io, &t),
            None => {}
        }
    }

    fn respond(&mut self, io: &Io, t: &proto::Transmit) {
        let contents = &self.response_buf[..t.size.min(self.response_buf.len())];
        if !transmit(io, t, contents) {
            self.dropped_sends += 1;
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(slot) = self.timers.pop_due(now) {
            if let Some(c) = self.conn(slot) {
                c.conn.handle_timeout(now);
                self.mark(slot);
            }
        }
    }

    /// Every dirty connection: its endpoint events, its packets, its application events
    /// (which wake futures) and its next deadline. Events fed back by the endpoint mark a
    /// connection again; those are flushed in the same call, a few rounds at most.
    fn flush(&mut self, io: &Io, now: Instant) {
        for _ in 0..4 {
            if self.dirty.is_empty() {
                return;
            }
            let dirty = std::mem::take(&mut self.dirty);
            for &slot in &dirty {
                self.flush_one(io, now, slot);
            }
        }
    }

    fn flush_one(&mut self, io: &Io, now: Instant, slot: usize) {
        if self.flush_conn(io, now, slot) {
            self.free_if_unused(slot);
        }
    }

    /// [`Self::flush_one`]'s work; true when the connection has drained.
    fn flush_conn(&mut self, io: &Io, now: Instant, slot: usize) -> bool {
        let State {
            endpoint,
            slots,
            by_handle,
            timers,
            dirty,
            incoming,
            accept_waker,
            protocols,
            send_buf,
            wake,
            dropped_sends,
            ..
        } = self;
        let Some(Some(c)) = slots.get_mut(slot) else { return false };
        c.is_dirty = false;
        let mut again = false;
        let mut endpoint_events = |c: &mut Conn, again: &mut bool| {
            while let Some(event) = c.conn.poll_endpoint_events() {
                if let Some(back) = endpoint.handle_event(c.handle, event) {
                    c.conn.handle_event(back);
                    *again = true;
                }
            }
        };
        endpoint_events(c, &mut again);
        loop {
            send_buf.clear();
            let Some(t) = c.conn.poll_transmit(now, io.max_segments, send_buf) else { break };
            if !transmit(io, &t, &send_buf[..t.size.min(send_buf.len())]) {
                *dropped_sends += 1;
            }
        }
        while let Some(event) = c.conn.poll() {
            use proto::{Event as E, StreamEvent as S};
            match event {
                E::HandshakeDataReady | E::DatagramsUnblocked => {}
                E::Connected => {
                    let alpn = c.negotiated_alpn();
                    let peer = c.conn.remote_address();
                    match alpn.as_deref() {
                        Some(p) if protocols.iter().any(|ours| ours == p) => {
                            c.alpn = alpn;
                            c.queued = true;
                            incoming.push_back(slot);
                            wake.extend(accept_waker.take());
                        }
                        Some("h3") => {
                            tracing::info!(%peer, reason = WEBTRANSPORT_REFUSED, "client refused");
                            c.conn.close(
                                now,
                                WEBTRANSPORT_REFUSED_CODE.into(),
                                Bytes::from_static(WEBTRANSPORT_REFUSED.as_bytes()),
                            );
                            again = true;
                        }
                        other => {
                            let reason = format!(
                                "no usable ALPN ({other:?}): offer {}",
                                protocols.join(", ")
                            );
                            tracing::info!(%peer, %reason, "client refused");
                            c.conn.close(now, 0u32.into(), Bytes::from(reason.into_bytes()));
                            again = true;
                        }
                    }
                }
                E::ConnectionLost { reason } => c.terminate(reason, wake),
                E::Stream(S::Opened { dir }) => wake.append(&mut c.accept[dir_index(dir)]),
                E::Stream(S::Available { dir }) => wake.append(&mut c.open[dir_index(dir)]),
                E::Stream(S::Readable { id }) => wake.extend(c.readers.remove(&id)),
                E::Stream(S::Writable { id }) => wake.extend(c.writers.remove(&id)),
                E::Stream(S::Finished { id }) => wake.extend(c.stopped.remove(&id)),
                E::Stream(S::Stopped { id, .. }) => {
                    wake.extend(c.stopped.remove(&id));
                    wake.extend(c.writers.remove(&id));
                }
                E::DatagramReceived => wake.append(&mut c.datagrams),
            }
        }
        endpoint_events(c, &mut again);
        if c.conn.is_drained() && !c.drained {
            c.drained = true;
            by_handle.remove(&c.handle);
            // A connection drained without a ConnectionLost event (closed by us) still
            // wakes what waits on it.
            if c.error.is_none() {
                c.terminate(ConnectionError::LocallyClosed, wake);
            }
        }
        if c.drained {
            timers.set(slot, None);
            return true;
        }
        timers.set(slot, c.conn.poll_timeout());
        if again {
            c.is_dirty = true;
            dirty.push(slot);
        }
        false
    }
}

/// Sends one transmit (GSO when it holds several datagrams); false when a full socket made
/// it give up.
fn transmit(io: &Io, t: &proto::Transmit, contents: &[u8]) -> bool {
    let out = udp::Transmit {
        destination: t.destination,
        ecn: t.ecn.and_then(|e| udp::EcnCodepoint::from_bits(e as u8)),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    };
    for _ in 0..SEND_TRIES {
        let sent = io
            .socket
            .try_io(tokio::io::Interest::WRITABLE, || io.udp.send((&io.socket).into(), &out));
        match sent {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => {
                tracing::debug!(error = %e, destination = %t.destination, "UDP send failed");
                return true;
            }
        }
    }
    false
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the driver unless a wake-up is already pending.
    fn wake_driver(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

/// Wakes `wakers` (after the lock is released: a woken task on another thread would only
/// block on it).
fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl Endpoint {
    /// Starts a driver task on the current tokio runtime for a server on `socket`.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        config: quinn::ServerConfig,
        protocols: Arc<[String]>,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let udp = UdpSocketState::new((&socket).into())?;
        let local_addr = socket.local_addr()?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let max_segments = udp.max_gso_segments().clamp(1, MAX_SEGMENTS);
        let endpoint = proto::Endpoint::new(
            Arc::new(proto::EndpointConfig::default()),
            Some(Arc::new(config)),
            !udp.may_fragment(),
            None,
        );
        let state = State {
            endpoint,
            slots: Vec::new(),
            free: Vec::new(),
            by_handle: HashMap::new(),
            timers: Timers::default(),
            dirty: Vec::new(),
            incoming: VecDeque::new(),
            accept_waker: None,
            idle_wakers: Vec::new(),
            closed: false,
            protocols,
            send_buf: Vec::new(),
            response_buf: Vec::new(),
            wake: Vec::new(),
            dropped_sends: 0,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            notify: tokio::sync::Notify::new(),
            wake_pending: AtomicBool::new(false),
            io: Io { socket, udp, max_segments },
        });
        tokio::spawn(drive(shared.clone()));
        Ok(Self { shared, local_addr })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the server configuration (certificates) for new connections.
    pub(crate) fn set_server_config(&self, config: quinn::ServerConfig) {
        self.shared.lock().endpoint.set_server_config(Some(Arc::new(config)));
    }

    /// The next connection whose handshake completed with one of our ALPNs; `None` once the
    /// endpoint is closed.
    pub(crate) async fn accept(&self) -> Option<Connection> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            while let Some(slot) = st.incoming.pop_front() {
                let Some(c) = st.conn(slot) else { continue };
                c.queued = false;
                if c.error.is_some() {
                    st.free_if_unused(slot);
                    continue;
                }
                c.refs += 1;
                return Poll::Ready(Some(Connection {
                    inner: Arc::new(ConnRef { shared: self.shared.clone(), slot }),
                }));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes every connection with `code` and `reason` and stops accepting.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.shared.lock();
        st.closed = true;
        let now = Instant::now();
        let reason = Bytes::copy_from_slice(reason);
        let mut wake = std::mem::take(&mut st.wake);
        wake.extend(st.accept_waker.take());
        for slot in 0..st.slots.len() {
            if let Some(c) = st.conn(slot)
                && c.error.is_none()
            {
                c.conn.close(now, code, reason.clone());
                c.terminate(ConnectionError::LocallyClosed, &mut wake);
                st.mark(slot);
            }
        }
        drop(st);
        wake_all(wake);
        self.shared.wake_driver();
    }

    /// Waits until every connection has drained.
    pub(crate) async fn wait_idle(&self) {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.slots.iter().flatten().all(|c| c.drained) {
                return Poll::Ready(());
            }
            register(&mut st.idle_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.accept_waker.take()
        };
        wake_all(waker.into_iter().collect());
        self.shared.wake_driver();
    }
}

/// The driver task: receive, timers, flush, sleep; until the endpoint is closed and every
/// connection is gone.
async fn drive(shared: Arc<Shared>) {
    // Room for a full batch of GRO-coalesced datagrams, as quinn's endpoint keeps.
    let mut buf = vec![0u8; 64 * 1024 * udp::BATCH_SIZE];
    let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        shared.wake_pending.store(false, Ordering::Release);
        let now = Instant::now();
        let (next, busy, done, wake) = {
            let mut st = shared.lock();
            st.receive(&shared.io, now, &mut buf);
            st.run_timers(now);
            st.flush(&shared.io, now);
            let done = st.closed && st.slots.iter().all(Option::is_none);
            if !st.idle_wakers.is_empty() && st.slots.iter().flatten().all(|c| c.drained) {
                let idle = std::mem::take(&mut st.idle_wakers);
                st.wake.extend(idle);
            }
            (st.timers.next(), !st.dirty.is_empty(), done, std::mem::take(&mut st.wake))
        };
        wake_all(wake);
        if done {
            let dropped = shared.lock().dropped_sends;
            tracing::debug!(dropped_sends = dropped, "batched transport driver stopped");
            return;
        }
        if busy || next.is_some_and(|t| t <= Instant::now()) {
            tokio::task::yield_now().await;
            continue;
        }
        if let Some(t) = next {
            sleep.as_mut().reset(t.into());
        }
        tokio::select! {
            biased;
            r = shared.io.socket.readable() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "UDP socket failed; the batched driver stops");
                    return;
                }
            }
            () = shared.notify.notified() => {}
            () = &mut sleep, if next.is_some() => {}
        }
    }
}

/// A reference to one connection; the last one dropped closes it (code 0) if it is open.
struct ConnRef {
    shared: Arc<Shared>,
    slot: usize,
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let mut wake = Vec::new();
        if let Some(c) = st.conn(self.slot) {
            c.refs = c.refs.saturating_sub(1);
            if c.refs == 0 && c.error.is_none() {
                c.conn.close(Instant::now(), 0u32.into(), Bytes::new());
                c.terminate(ConnectionError::LocallyClosed, &mut wake);
            }
            st.mark(self.slot);
            st.free_if_unused(self.slot);
        }
        wake.append(&mut st.wake);
        drop(st);
        wake_all(wake);
        self.shared.wake_driver();
    }
}

/// Why a write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The peer sent STOP_SENDING with this code.
    Stopped(VarInt),
    /// The stream was finished or reset already.
    ClosedStream,
    /// The connection ended.
    Lost(ConnectionError),
}

/// Why a read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer reset the stream with this code.
    Reset(VarInt),
    /// The stream was stopped already or read to its end.
    ClosedStream,
    /// The connection ended.
    Lost(ConnectionError),
}

/// Why a datagram was not sent.
#[derive(Debug)]
pub(crate) enum DatagramError {
    /// Larger than the path takes.
    TooLarge,
    /// The peer accepts no datagrams.
    Unsupported,
    /// The connection ended.
    Lost(ConnectionError),
}

/// A connection of the batched driver. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    inner: Arc<ConnRef>,
}

impl Connection {
    /// Runs `f` on the connection under the lock; marks it dirty and wakes the driver when
    /// `f` says it changed something to send. `None` if the slot is gone (never while this
    /// handle lives).
    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> (R, bool)) -> Option<R> {
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        let c = st.conn(self.inner.slot)?;
        let (r, changed) = f(c);
        if changed {
            st.mark(self.inner.slot);
            drop(st);
            shared.wake_driver();
        }
        Some(r)
    }

    fn send(&self, id: StreamId) -> SendStream {
        SendStream { conn: self.clone(), id }
    }

    fn recv(&self, id: StreamId) -> RecvStream {
        RecvStream { conn: self.clone(), id, all_read: false }
    }

    /// Opens a bidirectional stream, waiting for the peer's stream limit.
    pub(crate) async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.open(Dir::Bi).await?;
        Ok((self.send(id), self.recv(id)))
    }

    /// Opens a unidirectional stream, waiting for the peer's stream limit.
    pub(crate) async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        Ok(self.send(self.open(Dir::Uni).await?))
    }

    /// Waits for the peer to open a bidirectional stream.
    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.accept(Dir::Bi).await?;
        Ok((self.send(id), self.recv(id)))
    }

    /// Waits for the peer to open a unidirectional stream.
    pub(crate) async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        Ok(self.recv(self.accept(Dir::Uni).await?))
    }

    fn lost() -> ConnectionError {
        ConnectionError::LocallyClosed
    }

    pub(crate) fn id(&self) -> u64 {
        self.with(|c| (c.id, false)).unwrap_or(0)
    }

    pub(crate) fn alpn(&self) -> Option<String> {
        self.with(|c| (c.alpn.clone(), false)).flatten()
    }

    pub(crate) fn remote_address(&self) -> SocketAddr {
        self.with(|c| (c.conn.remote_address(), false))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The DER chain the peer presented, if any.
    pub(crate) fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        self.with(|c| {
            let chain =
                c.conn.crypto_session().peer_identity().and_then(|i| {
                    i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()
                });
            (chain.map(|chain| chain.iter().map(|d| d.to_vec()).collect()), false)
        })
        .flatten()
    }

    /// Opens (`accept` false) or accepts a stream of `dir` under the lock: the connection's
    /// error once it ended, else the stream if there is one, else pending, with `cx`'s waker
    /// (when given) registered for the event that may bring one.
    fn take_stream(
        &self,
        dir: Dir,
        accept: bool,
        cx: Option<&Context<'_>>,
    ) -> Poll<Result<StreamId, ConnectionError>> {
        self.with(|c| {
            if let Some(e) = &c.error {
                return (Poll::Ready(Err(e.clone())), false);
            }
            let mut streams = c.conn.streams();
            let id = if accept { streams.accept(dir) } else { streams.open(dir) };
            match id {
                // Accepting may let quinn-proto grant the peer more streams.
                Some(id) => (Poll::Ready(Ok(id)), accept),
                None => {
                    if let Some(cx) = cx {
                        let waiters = if accept { &mut c.accept } else { &mut c.open };
                        register(&mut waiters[dir_index(dir)], cx.waker());
                    }
                    (Poll::Pending, false)
                }
            }
        })
        .unwrap_or(Poll::Ready(Err(Self::lost())))
    }

    async fn open(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        poll_fn(|cx| self.take_stream(dir, false, Some(cx))).await
    }

    /// Opens a unidirectional stream if the peer's limit allows one now.
    pub(crate) fn try_open_uni(&self) -> Option<Result<SendStream, ConnectionError>> {
        match self.take_stream(Dir::Uni, false, None) {
            Poll::Pending => None,
            Poll::Ready(r) => Some(r.map(|id| self.send(id))),
        }
    }

    async fn accept(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        poll_fn(|cx| self.take_stream(dir, true, Some(cx))).await
    }

    pub(crate) fn set_max_concurrent_streams(&self, dir: Dir, count: u32) {
        self.with(|c| {
            c.conn.set_max_concurrent_streams(dir, count.into());
            ((), true)
        });
    }

    /// Sends a datagram; with the send buffer full the oldest queued one is dropped.
    pub(crate) fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.with(|c| {
            if let Some(e) = &c.error {
                return (Err(DatagramError::Lost(e.clone())), false);
            }
            match c.conn.datagrams().send(data, true) {
                Ok(()) => (Ok(()), true),
                Err(proto::SendDatagramError::TooLarge) => (Err(DatagramError::TooLarge), false),
                Err(
                    proto::SendDatagramError::UnsupportedByPeer
                    | proto::SendDatagramError::Disabled,
                ) => (Err(DatagramError::Unsupported), false),
                // Not returned when dropping the oldest is allowed; count it as sent and lost.
                Err(proto::SendDatagramError::Blocked(_)) => (Ok(()), false),
            }
        })
        .unwrap_or(Err(DatagramError::Lost(Self::lost())))
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        poll_fn(|cx| {
            self.with(|c| match c.conn.datagrams().recv() {
                Some(d) => (Poll::Ready(Ok(d)), false),
                None => match &c.error {
                    Some(e) => (Poll::Ready(Err(e.clone())), false),
                    None => {
                        register(&mut c.datagrams, cx.waker());
                        (Poll::Pending, false)
                    }
                },
            })
            .unwrap_or(Poll::Ready(Err(Self::lost())))
        })
        .await
    }

    pub(crate) fn max_datagram_size(&self) -> usize {
        self.with(|c| (c.conn.datagrams().max_size().unwrap_or(0), false)).unwrap_or(0)
    }

    /// Closes the connection with an application code; a second close does nothing.
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        let mut wake = Vec::new();
        self.with(|c| {
            if c.error.is_some() {
                return ((), false);
            }
            c.conn.close(Instant::now(), code, Bytes::copy_from_slice(reason));
            c.terminate(ConnectionError::LocallyClosed, &mut wake);
            ((), true)
        });
        wake_all(wake);
    }

    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        self.with(|c| (c.error.clone(), false)).unwrap_or(Some(Self::lost()))
    }

    pub(crate) async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| {
            self.with(|c| match &c.error {
                Some(e) => (Poll::Ready(e.clone()), false),
                None => {
                    register(&mut c.closed, cx.waker());
                    (Poll::Pending, false)
                }
            })
            .unwrap_or(Poll::Ready(Self::lost()))
        })
        .await
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        self.with(|c| (c.conn.stats(), false)).unwrap_or_default()
    }

    /// The congestion controller's pacing rate, where it has one.
    pub(crate) fn pacing_rate(&self) -> Option<u64> {
        self.with(|c| (c.conn.congestion_state().metrics().pacing_rate, false)).flatten()
    }

    /// Whether the connection's congestion controller is a `T`.
    pub(crate) fn controller_is<T: 'static>(&self) -> bool {
        self.with(|c| (c.conn.congestion_state().clone_box().into_any().is::<T>(), false))
            .unwrap_or(false)
    }
}

/// The sending half of a stream of the batched driver. Dropping it finishes the stream (or
/// resets it, if the peer stopped it), as quinn's does.
pub(crate) struct SendStream {
    conn: Connection,
    id: StreamId,
}

impl SendStream {
    /// Writes as much of `chunks` as the stream takes now, advancing them; waits while it
    /// takes nothing.
    pub(crate) fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>> {
        let id = self.id;
        self.conn
            .with(|c| {
                if let Some(e) = &c.error {
                    return (Poll::Ready(Err(WriteError::Lost(e.clone()))), false);
                }
                match c.conn.send_stream(id).write_chunks(chunks) {
                    Ok(w) => (Poll::Ready(Ok(w.bytes)), w.bytes > 0),
                    Err(proto::WriteError::Blocked) => {
                        c.writers.insert(id, cx.waker().clone());
                        (Poll::Pending, false)
                    }
                    Err(proto::WriteError::Stopped(code)) => {
                        (Poll::Ready(Err(WriteError::Stopped(code))), false)
                    }
                    Err(proto::WriteError::ClosedStream) => {
                        (Poll::Ready(Err(WriteError::ClosedStream)), false)
                    }
                }
            })
            .unwrap_or(Poll::Ready(Err(WriteError::Lost(Connection::lost()))))
    }

    /// Writes some of `buf`, waiting while the stream takes nothing.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        let id = self.id;
        self.conn
            .with(|c| {
                if let Some(e) = &c.error {
                    return (Poll::Ready(Err(WriteError::Lost(e.clone()))), false);
                }
                match c.conn.send_stream(id).write(buf) {
                    Ok(n) => (Poll::Ready(Ok(n)), n > 0),
                    Err(proto::WriteError::Blocked) => {
                        c.writers.insert(id, cx.waker().clone());
                        (Poll::Pending, false)
                    }
                    Err(proto::WriteError::Stopped(code)) => {
                        (Poll::Ready(Err(WriteError::Stopped(code))), false)
                    }
                    Err(proto::WriteError::ClosedStream) => {
                        (Poll::Ready(Err(WriteError::ClosedStream)), false)
                    }
                }
            })
            .unwrap_or(Poll::Ready(Err(WriteError::Lost(Connection::lost()))))
    }

    /// Writes all of `chunks`.
    pub(crate) async fn write_all_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> Result<(), WriteError> {
        loop {
            let first = chunks.iter().position(|c| !c.is_empty());
            let Some(first) = first else { return Ok(()) };
            let rest = &mut chunks[first..];
            poll_fn(|cx| self.poll_write_chunks(cx, rest)).await?;
        }
    }

    /// Writes all of `buf`.
    pub(crate) async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    pub(crate) fn set_priority(&self, priority: i32) -> Result<(), ()> {
        let id = self.id;
        self.conn
            .with(|c| (c.conn.send_stream(id).set_priority(priority).map_err(|_| ()), false))
            .unwrap_or(Err(()))
    }

    pub(crate) fn finish(&mut self) -> Result<(), ()> {
        let id = self.id;
        self.conn
            .with(|c| {
                if c.error.is_some() {
                    return (Err(()), false);
                }
                let r = c.conn.send_stream(id).finish().map_err(|_| ());
                let ok = r.is_ok();
                (r, ok)
            })
            .unwrap_or(Err(()))
    }

    pub(crate) fn reset(&mut self, code: VarInt) -> Result<(), ()> {
        let id = self.id;
        self.conn
            .with(|c| {
                if c.error.is_some() {
                    return (Err(()), false);
                }
                let r = c.conn.send_stream(id).reset(code).map_err(|_| ());
                let ok = r.is_ok();
                (r, ok)
            })
            .unwrap_or(Err(()))
    }

    /// Waits until the peer has read everything (`Ok(None)`) or stopped the stream.
    pub(crate) async fn stopped(&self) -> Result<Option<VarInt>, ConnectionError> {
        let id = self.id;
        poll_fn(|cx| {
            self.conn
                .with(|c| match c.conn.send_stream(id).stopped() {
                    // The stream's state is gone: finished and acknowledged, or reset.
                    Err(_) => (Poll::Ready(Ok(None)), false),
                    Ok(Some(code)) => (Poll::Ready(Ok(Some(code))), false),
                    Ok(None) => match &c.error {
                        Some(e) => (Poll::Ready(Err(e.clone())), false),
                        None => {
                            c.stopped.insert(id, cx.waker().clone());
                            (Poll::Pending, false)
                        }
                    },
                })
                .unwrap_or(Poll::Ready(Err(Connection::lost())))
        })
        .await
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let id = self.id;
        self.conn.with(|c| {
            c.writers.remove(&id);
            c.stopped.remove(&id);
            if c.error.is_some() {
                return ((), false);
            }
            let changed = match c.conn.send_stream(id).finish() {
                Ok(()) => true,
                Err(proto::FinishError::Stopped(code)) => {
                    c.conn.send_stream(id).reset(code).is_ok()
                }
                Err(proto::FinishError::ClosedStream) => false,
            };
            ((), changed)
        });
    }
}

/// The receiving half of a stream of the batched driver. Dropping it before the end stops
/// the stream (code 0), as quinn's does.
pub(crate) struct RecvStream {
    conn: Connection,
    id: StreamId,
    all_read: bool,
}

impl RecvStream {
    /// Reads the next chunk of at most `max` bytes in order; `None` at the end.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let id = self.id;
        let r = poll_fn(|cx| {
            self.conn
                .with(|c| {
                    let mut stream = c.conn.recv_stream(id);
                    let mut chunks = match stream.read(true) {
                        Ok(chunks) => chunks,
                        Err(_) => return (Poll::Ready(Err(ReadError::ClosedStream)), false),
                    };
                    let r = chunks.next(max);
                    let transmit = chunks.finalize().should_transmit();
                    let out = match r {
                        Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk.bytes))),
                        Ok(None) => Poll::Ready(Ok(None)),
                        Err(proto::ReadError::Reset(code)) => {
                            Poll::Ready(Err(ReadError::Reset(code)))
                        }
                        Err(proto::ReadError::Blocked) => match &c.error {
                            Some(e) => Poll::Ready(Err(ReadError::Lost(e.clone()))),
                            None => {
                                c.readers.insert(id, cx.waker().clone());
                                Poll::Pending
                            }
                        },
                    };
                    (out, transmit)
                })
                .unwrap_or(Poll::Ready(Err(ReadError::Lost(Connection::lost()))))
        })
        .await;
        if matches!(r, Ok(None) | Err(ReadError::Reset(_))) {
            self.all_read = true;
        }
        r
    }

    /// Reads into `buf`; `None` at the end of the stream.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        match self.read_chunk(buf.len()).await? {
            Some(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(Some(chunk.len()))
            }
            None => Ok(None),
        }
    }

    /// Asks the peer to stop sending.
    pub(crate) fn stop(&mut self, code: VarInt) -> Result<(), ()> {
        let id = self.id;
        let r = self
            .conn
            .with(|c| {
                if c.error.is_some() {
                    return (Err(()), false);
                }
                let r = c.conn.recv_stream(id).stop(code).map_err(|_| ());
                let ok = r.is_ok();
                (r, ok)
            })
            .unwrap_or(Err(()));
        if r.is_ok() {
            self.all_read = true;
        }
        r
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        let id = self.id;
        let all_read = self.all_read;
        self.conn.with(|c| {
            c.readers.remove(&id);
            if all_read || c.error.is_some() {
                return ((), false);
            }
            let changed = c.conn.recv_stream(id).stop(0u32.into()).is_ok();
            ((), changed)
        });
    }
}
