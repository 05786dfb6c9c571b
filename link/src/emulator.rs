//! [`Emulator`]: a UDP proxy that runs two [`Pipe`]s on real sockets and the real clock.
//!
//! ```text
//! client A ─┐                   ┌─ socket for A ─┐
//!           ├─► listen ─► up ──►┤                ├─► upstream
//! client B ─┘        ◄── down ◄─┴─ socket for B ─┘
//! ```
//! Every client address seen at the listening socket gets its own ephemeral UDP socket
//! connected to the upstream, so the upstream sees one peer per client (QUIC needs its
//! replies to reach the right client) and replies are routed back by which socket they came
//! in on. Both directions share one pipe each: the emulated link is one bottleneck, however
//! many clients use it.

use std::{
    collections::HashMap,
    future::{Future, poll_fn},
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{io::ReadBuf, net::UdpSocket, sync::oneshot, task::JoinHandle, time::Sleep};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{Error, Pipe, PipeStats, Schedule};

/// How long a client may stay silent (no packet either way) before its socket is closed:
/// twice the 30 s idle timeout QUIC stacks commonly use, so a quiet but live connection keeps
/// its address at the upstream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many clients at once (each holds a socket, so a file descriptor): half the
/// usual soft limit of 1024 descriptors, leaving room for the rest of a test process.
/// Packets from further clients are dropped and counted in [`LinkStats::rejected_clients`].
pub const DEFAULT_MAX_CLIENTS: usize = 512;

/// How often idle clients are looked for. Closing a socket a few seconds late costs nothing.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Mixed into the seed for the down direction (the 64-bit golden-ratio constant), so that one
/// seed gives the two directions unrelated random streams.
const DOWN_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Settings of an [`Emulator`]: `Default` is a perfect link both ways, seed 0, running until
/// shut down.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    up: Schedule,
    down: Schedule,
    seed: u64,
    duration: Option<Duration>,
    idle_timeout: Duration,
    max_clients: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            up: Schedule::default(),
            down: Schedule::default(),
            seed: 0,
            duration: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

impl EmulatorConfig {
    /// The link from clients to the upstream.
    pub fn up(mut self, schedule: impl Into<Schedule>) -> Self {
        self.up = schedule.into();
        self
    }

    /// The link from the upstream back to clients.
    pub fn down(mut self, schedule: impl Into<Schedule>) -> Self {
        self.down = schedule.into();
        self
    }

    /// The same link both ways (each direction still draws its own random stream).
    pub fn both(self, schedule: impl Into<Schedule>) -> Self {
        let schedule = schedule.into();
        self.up(schedule.clone()).down(schedule)
    }

    /// Seed of the random streams. The up direction uses `seed` itself, so a [`Pipe`] built
    /// with the same schedule and seed drops the same packets; the down direction uses
    /// `seed ^ 0x9E3779B97F4A7C15`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Stop by itself this long after start (packets still in the link are discarded).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Close a client's socket after this long without packets (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Serve at most this many clients at once (default [`DEFAULT_MAX_CLIENTS`]).
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max;
        self
    }
}

/// Counters of a running [`Emulator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Clients to upstream.
    pub up: PipeStats,
    /// Upstream to clients.
    pub down: PipeStats,
    /// Clients with a socket now.
    pub clients: usize,
    /// Packets dropped because [`EmulatorConfig::max_clients`] was reached.
    pub rejected_clients: u64,
    /// Packets the pipes released but the operating system refused to send (for example
    /// the upstream's port was closed).
    pub send_errors: u64,
    /// Packets dropped, in either direction, while the link was blackholed
    /// ([`Emulator::set_blackhole`]): those that reached it then, and those inside the link
    /// at the cut (which its pipe's counters count as sent).
    pub blackholed: u64,
    /// Time since the emulator started, as of these counters.
    pub elapsed: Duration,
}

/// A running link emulator: a UDP proxy on its own tokio task, which this handle owns.
/// Dropping the handle stops the task.
pub struct Emulator {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    stats: Arc<Mutex<LinkStats>>,
    blackhole: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Listens on `listen` and forwards to `upstream` through `up`, replies through `down`,
    /// with random streams seeded by `seed`. Must be called within a tokio runtime.
    pub async fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        up: impl Into<Schedule>,
        down: impl Into<Schedule>,
        seed: u64,
    ) -> Result<Self, Error> {
        let config = EmulatorConfig::default().up(up).down(down).seed(seed);
        Self::bind_with(listen, upstream, config).await
    }

    /// Like [`bind`](Self::bind), with every setting of [`EmulatorConfig`].
    pub async fn bind_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: EmulatorConfig,
    ) -> Result<Self, Error> {
        config.up.validate()?;
        config.down.validate()?;
        let bind_error = |source| Error::Bind { addr: listen, source };
        let socket = UdpSocket::bind(listen).await.map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let start = Instant::now();
        let stats = Arc::new(Mutex::new(LinkStats::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let blackhole = Arc::new(AtomicBool::new(false));
        let driver = Driver {
            blackhole: blackhole.clone(),
            blackholed: 0,
            listen: socket,
            upstream,
            clients: HashMap::new(),
            up: Pipe::new(start, config.up, config.seed),
            down: Pipe::new(start, config.down, config.seed ^ DOWN_SEED_MIX),
            start,
            end: config.duration.map(|d| start + d),
            idle_timeout: config.idle_timeout,
            max_clients: config.max_clients,
            stop: stop_rx,
            shared: stats.clone(),
            rejected_clients: 0,
            send_errors: 0,
            buf: vec![0; MAX_DATAGRAM],
            clients_first: false,
        };
        info!(%local_addr, %upstream, "link emulator listening");
        let span = info_span!("link", %local_addr, %upstream);
        let task = tokio::spawn(driver.run().instrument(span));
        Ok(Emulator {
            local_addr,
            upstream,
            stats,
            blackhole,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where packets are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Cuts the link (`true`) or restores it (`false`). While cut, every packet is dropped
    /// in both directions, including packets already inside the link when it was cut: what
    /// a failed router or a firewall rule that drops everything does. Nothing tells either
    /// side; they notice only by their own timeouts. Dropped packets are counted in
    /// [`LinkStats::blackholed`].
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
        info!(on, "link emulator blackhole");
    }

    /// Whether the link is cut ([`set_blackhole`](Self::set_blackhole)).
    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }

    /// The counters as of the emulator's last step.
    pub fn stats(&self) -> LinkStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the emulator has stopped (its duration ended, or it failed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the emulator stops by itself (its duration ends; without a duration this
    /// waits until the handle is shut down elsewhere, that is, forever) and returns the final
    /// counters. Cancel-safe.
    pub async fn finished(&mut self) -> Result<LinkStats, Error> {
        if let Some(task) = &mut self.task {
            let result = task.await;
            self.task = None;
            result.map_err(|e| Error::Task(e.to_string()))?;
        }
        Ok(self.stats())
    }

    /// Stops the emulator (discarding packets still in the link) and returns the final
    /// counters.
    pub async fn shutdown(mut self) -> Result<LinkStats, Error> {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already; then there is nobody to tell.
            let _ = stop.send(());
        }
        self.finished().await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Client {
    socket: UdpSocket,
    last_seen: Instant,
}

enum Event {
    Stop,
    Timer,
    FromClient(SocketAddr, Bytes),
    FromUpstream(SocketAddr, Bytes),
    RecvError(Option<SocketAddr>, io::Error),
}

/// The one driver loop: drain both pipes, publish counters, arm the timer, wait for a packet,
/// the timer or the stop signal.
struct Driver {
    listen: UdpSocket,
    upstream: SocketAddr,
    clients: HashMap<SocketAddr, Client>,
    /// Packets carry the client's address.
    up: Pipe<SocketAddr>,
    down: Pipe<SocketAddr>,
    start: Instant,
    end: Option<Instant>,
    idle_timeout: Duration,
    max_clients: usize,
    stop: oneshot::Receiver<()>,
    shared: Arc<Mutex<LinkStats>>,
    rejected_clients: u64,
    send_errors: u64,
    buf: Vec<u8>,
    /// Alternates which side is read first, so a flood on one side cannot starve the other.
    clients_first: bool,
    /// Set while the link is cut: every packet is dropped.
    blackhole: Arc<AtomicBool>,
    blackholed: u64,
}

impl Driver {
    async fn run(mut self) {
        let mut sleep = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut next_sweep = self.start + SWEEP_INTERVAL;
        loop {
            let now = Instant::now();
            if self.end.is_some_and(|end| now >= end) {
                info!("link emulator run ended");
                break;
            }
            self.transmit(now).await;
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            self.publish(now);

            let deadline = [self.up.poll_timeout(), self.down.poll_timeout(), self.end]
                .into_iter()
                .flatten()
                .fold(next_sweep, Instant::min);
            sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
            let event = poll_fn(|cx| self.poll_event(cx, sleep.as_mut())).await;

            let now = Instant::now();
            if self.blackhole.load(Ordering::Relaxed)
                && matches!(event, Event::FromClient(..) | Event::FromUpstream(..))
            {
                self.blackholed += 1;
                continue;
            }
            match event {
                Event::Stop => {
                    info!("link emulator shut down");
                    break;
                }
                Event::Timer => {}
                Event::FromClient(from, data) => self.client_packet(now, from, data).await,
                Event::FromUpstream(client, data) => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.last_seen = now;
                    }
                    self.down.handle_packet(now, data, client);
                }
                Event::RecvError(client, e) => {
                    // ICMP errors (port unreachable) surface here; the link keeps running.
                    debug!(?client, error = %e, "receive error");
                }
            }
        }
        self.publish(Instant::now());
    }

    fn poll_event(&mut self, cx: &mut Context<'_>, sleep: Pin<&mut Sleep>) -> Poll<Event> {
        if Pin::new(&mut self.stop).poll(cx).is_ready() {
            // A stop message, or the handle was dropped without one.
            return Poll::Ready(Event::Stop);
        }
        self.clients_first = !self.clients_first;
        if self.clients_first {
            if let Poll::Ready(event) = self.poll_upstream(cx) {
                return Poll::Ready(event);
            }
            if let Poll::Ready(event) = self.poll_listen(cx) {
                return Poll::Ready(event);
            }
        } else {
            if let Poll::Ready(event) = self.poll_listen(cx) {
                return Poll::Ready(event);
            }
            if let Poll::Ready(event) = self.poll_upstream(cx) {
                return Poll::Ready(event);
            }
        }
        if sleep.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Poll::Pending
    }

    /// A packet from a client at the listening socket.
    fn poll_listen(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut buf = ReadBuf::new(&mut self.buf);
        self.listen.poll_recv_from(cx, &mut buf).map(|result| match result {
            Ok(from) => Event::FromClient(from, Bytes::copy_from_slice(buf.filled())),
            Err(e) => Event::RecvError(None, e),
        })
    }

    /// A packet from the upstream on any client's socket.
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        for (addr, client) in &self.clients {
            let mut buf = ReadBuf::new(&mut self.buf);
            match client.socket.poll_recv(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let data = Bytes::copy_from_slice(buf.filled());
                    return Poll::Ready(Event::FromUpstream(*addr, data));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Event::RecvError(Some(*addr), e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    async fn client_packet(&mut self, now: Instant, from: SocketAddr, data: Bytes) {
        if let Some(client) = self.clients.get_mut(&from) {
            client.last_seen = now;
        } else {
            if self.clients.len() >= self.max_clients {
                self.rejected_clients += 1;
                debug!(%from, "too many clients, packet dropped");
                return;
            }
            match self.connect_upstream().await {
                Ok(socket) => {
                    info!(client = %from, via = ?socket.local_addr().ok(), "new client");
                    self.clients.insert(from, Client { socket, last_seen: now });
                }
                Err(e) => {
                    warn!(client = %from, error = %e, "cannot open a socket for a new client");
                    self.send_errors += 1;
                    return;
                }
            }
        }
        self.up.handle_packet(now, data, from);
    }

    async fn connect_upstream(&self) -> io::Result<UdpSocket> {
        let any: SocketAddr = if self.upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).await?;
        socket.connect(self.upstream).await?;
        Ok(socket)
    }

    async fn transmit(&mut self, now: Instant) {
        if self.blackhole.load(Ordering::Relaxed) {
            // Packets inside the link when it was cut are lost too.
            while self.up.poll_transmit(now).is_some() {
                self.blackholed += 1;
            }
            while self.down.poll_transmit(now).is_some() {
                self.blackholed += 1;
            }
            return;
        }
        while let Some(packet) = self.up.poll_transmit(now) {
            let sent = match self.clients.get(&packet.meta) {
                Some(client) => client.socket.send(&packet.data).await.map(drop),
                None => Err(io::Error::other("client closed")),
            };
            if let Err(e) = sent {
                debug!(client = %packet.meta, error = %e, "send to upstream failed");
                self.send_errors += 1;
            }
        }
        while let Some(packet) = self.down.poll_transmit(now) {
            if let Err(e) = self.listen.send_to(&packet.data, packet.meta).await {
                debug!(client = %packet.meta, error = %e, "send to client failed");
                self.send_errors += 1;
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        self.clients.retain(|addr, client| {
            let keep = now.duration_since(client.last_seen) < timeout;
            if !keep {
                info!(client = %addr, "client idle, socket closed");
            }
            keep
        });
    }

    fn publish(&self, now: Instant) {
        let stats = LinkStats {
            up: self.up.stats(),
            down: self.down.stats(),
            clients: self.clients.len(),
            rejected_clients: self.rejected_clients,
            send_errors: self.send_errors,
            blackholed: self.blackholed,
            elapsed: now.duration_since(self.start),
        };
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }
}
