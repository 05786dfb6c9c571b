//! The transport layer's CPU ceiling for fan-out: what one sending process spends per
//! delivered object when quinn's async layer drives N connections (`quinn`), against one task
//! that drives the same N connections through quinn-proto itself (`proto`): datagrams received
//! in batches (`recvmmsg` with GRO through quinn-udp) and handed to their connections without a
//! channel, every connection's timers kept in one array, and after each batch of input (a burst
//! of ACKs, an object written to every connection) each touched connection's packets built and
//! sent in one pass (GSO per connection), without a task wake-up, a mutex or a timer re-arm
//! per connection.
//!
//! ```sh
//! cargo build --release -p tiermesh-tests --example quic_ceiling
//! nice -n 19 target/release/examples/quic_ceiling compare rounds=4 n=500 secs=20
//! ```
//!
//! `compare` runs the modes in turns (the order swapped every round), each run a fresh sender
//! process pinned to CPU 0 (`taskset -c 0`) and a fresh receiver process pinned to CPU 1, over
//! 127.0.0.1 only, bounded in time and count. The load mirrors `tiermesh bees --object-bytes
//! 4096` through a relay: 30 objects a second per connection, all connections' objects written
//! at the same instant (one publisher's object fanned out), one-second groups of 30 objects on
//! one unidirectional stream each, the group's first object (the key frame) about six times the
//! others (21 090 and 3 510 bytes, 4 096 on average). The transport settings are the relay's
//! (client/src/transport/config.rs: ACK frequency with 8 packets or 5 ms, time threshold 1.0,
//! windows, cubic). The receiver is plain quinn, one endpoint (one socket) per connection as
//! bees has, reading every stream to its end and counting objects and bytes.
//!
//! What each run prints: the sender's CPU (user + system, /proc/self/stat, as bees reads the
//! relay's) over the steady window (after `warm` seconds, `secs` long) per delivered object and
//! per delivered MB of payload, the payload Gbit/s one core would carry at that cost, and
//! objects delivered (counted by the receiver over the whole run) against objects written.
//!
//! **A ceiling for the transport layer, not a relay.** Neither mode does what a relay does
//! besides QUIC: no MoQT framing or session (a 4-byte length before each object, 8 bytes of
//! group number at each stream's start), no send scheduler, priorities, deadlines or metrics,
//! no fan-out bookkeeping, no WebTransport, no publisher connection to receive from. The
//! `proto` mode also sends one `sendmsg` per connection and burst, as quinn does: a `sendmmsg`
//! across connections needs `unsafe` (forbidden in this workspace) or a quinn-udp that has it,
//! so what it would save more is estimated from the measured cost of a system call.

use std::io::{BufRead, BufReader, IoSliceMut};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use quinn::udp::{self, RecvMeta, UdpSocketState};
use quinn_proto as proto;
use tiermesh_certs::CertHash;
use tiermesh_certs::client::ClientTrust;

/// Objects per second per connection: bees' synthetic video.
const FPS: u64 = 30;
/// A group's first object against the others, as bees' synthetic video has it.
const KEY_FRAME_RATIO: u64 = 6;
/// How long the sender waits for every receiver connection before it gives up.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// After the last object: how long streams are left to finish before the connections close.
const DRAIN: Duration = Duration::from_secs(1);
/// How long closing connections may take before the sender exits anyway.
const CLOSE_LIMIT: Duration = Duration::from_secs(3);
/// The UDP receive buffer the relay asks for (client/src/transport/server.rs).
const RECEIVE_BUFFER: usize = 1 << 20;
/// Largest number of connections and longest window accepted: every run stays bounded.
const MAX_CONNECTIONS: usize = 2000;
const MAX_SECS: u64 = 120;

/// What one run loads the sender with.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Connections (subscribers).
    n: usize,
    /// Seconds before the measured window (connections warm, windows grown).
    warm: u64,
    /// Seconds measured.
    secs: u64,
    /// Average object payload, bytes.
    object_bytes: u64,
}

impl Load {
    fn ticks_warm(&self) -> u64 {
        self.warm * FPS
    }

    fn ticks_total(&self) -> u64 {
        (self.warm + self.secs) * FPS
    }

    /// Payload sizes of (a group's first object, the others) adding up to `object_bytes` on
    /// average over a group.
    fn sizes(&self) -> (usize, usize) {
        let group = self.object_bytes * FPS;
        let delta = group / (KEY_FRAME_RATIO + FPS - 1);
        let key = group - delta * (FPS - 1);
        (usize::try_from(key).unwrap_or(usize::MAX), usize::try_from(delta).unwrap_or(usize::MAX))
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("n={}", self.n),
            format!("warm={}", self.warm),
            format!("secs={}", self.secs),
            format!("bytes={}", self.object_bytes),
        ]
    }
}

/// `key=value` arguments.
struct Args(Vec<(String, String)>);

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut out = Vec::new();
        for a in args {
            let (k, v) = a.split_once('=').with_context(|| format!("{a}: expected key=value"))?;
            out.push((k.to_owned(), v.to_owned()));
        }
        Ok(Self(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{key}={v}: {e}")),
        }
    }

    fn check(&self, known: &[&str]) -> Result<()> {
        for (k, _) in &self.0 {
            if !known.contains(&k.as_str()) {
                bail!("unknown argument {k}= (known: {})", known.join(", "));
            }
        }
        Ok(())
    }

    fn load(&self) -> Result<Load> {
        let load = Load {
            n: self.num("n", 500)?,
            warm: self.num("warm", 3)?,
            secs: self.num("secs", 20)?,
            object_bytes: self.num("bytes", 4096)?,
        };
        if load.n == 0 || load.n > MAX_CONNECTIONS {
            bail!("n must be 1 to {MAX_CONNECTIONS}");
        }
        if load.secs == 0 || load.secs + load.warm > MAX_SECS {
            bail!("secs must be at least 1 and warm + secs at most {MAX_SECS}");
        }
        if !(64..=1 << 20).contains(&load.object_bytes) {
            bail!("bytes must be 64 to 1048576");
        }
        Ok(load)
    }
}

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let role = argv.next().unwrap_or_default();
    let args = Args::parse(argv)?;
    match role.as_str() {
        "compare" => compare(&args),
        "send" => send(&args),
        "recv" => recv(&args),
        _ => bail!(
            "usage: quic_ceiling compare [rounds=4] [n=500] [secs=20] [warm=3] [bytes=4096] \
             [modes=quinn,proto] [send_cpu=0] [recv_cpu=1]\n\
             \x20      quic_ceiling send mode=quinn|proto [n=] [secs=] [warm=] [bytes=]\n\
             \x20      quic_ceiling recv port=PORT hash=HEX n=N limit=SECS"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: TLS, transport settings, the socket, CPU time.

/// The relay's transport settings where they matter for the sender's work (see
/// client/src/transport/config.rs): the ACK frequency asked of peers, loss detection, windows,
/// keep-alive. `client` grants the server 256 streams, as tiermesh clients do.
fn transport(client: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let streams: u32 = if client { 256 } else { 16 };
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))))
        .keep_alive_interval(Some(Duration::from_secs(3)))
        .max_concurrent_uni_streams(streams.into())
        .max_concurrent_bidi_streams(streams.into())
        .stream_receive_window(quinn::VarInt::from_u32(2 << 20))
        .receive_window(quinn::VarInt::from_u32(16 << 20))
        .send_window(4 << 20)
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(1 << 20);
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(8u32.into())
        .reordering_threshold(1u32.into())
        .max_ack_delay(Some(Duration::from_millis(5)));
    t.ack_frequency_config(Some(ack));
    t.time_threshold(1.0);
    Arc::new(t)
}

/// A development certificate and the server configuration presenting it, with its hash.
fn server_config() -> Result<(quinn::ServerConfig, CertHash)> {
    let cert = tiermesh_certs::dev::generate(&[], Duration::from_secs(24 * 3600))?;
    let key = cert.certified_key()?;
    let tls = tiermesh_certs::server::config(
        tiermesh_certs::server::fixed(key),
        &[tiermesh_proto::ALPN],
    )?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(false));
    Ok((config, cert.sha256))
}

/// The sender's UDP socket on loopback, with the relay's receive buffer.
fn bind() -> Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let state = UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), RECEIVE_BUFFER)?;
    Ok(socket)
}

/// CPU seconds (user + system) of this whole process so far.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')').context("bad /proc/self/stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 0-based 11 and 12 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Nanoseconds one trivial system call (`getpid`) takes on this machine: what batching
/// `sendmsg` calls into one `sendmmsg` could save per call, at most, beyond the kernel's work
/// per datagram.
fn syscall_ns() -> f64 {
    const CALLS: u32 = 200_000;
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..CALLS {
        sum = sum.wrapping_add(u64::from(std::process::id()));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
}

/// The bytes of the object written at tick `k`: (group header if it opens a group, object
/// header, payload), the payloads shared by every connection as a relay shares them.
struct Objects {
    key: Bytes,
    delta: Bytes,
}

impl Objects {
    fn new(load: &Load) -> Self {
        let (key, delta) = load.sizes();
        Self { key: Bytes::from(vec![0x5a; key]), delta: Bytes::from(vec![0xa5; delta]) }
    }

    fn at(&self, k: u64) -> (Option<Bytes>, Bytes, Bytes) {
        let payload = if k.is_multiple_of(FPS) { self.key.clone() } else { self.delta.clone() };
        let group = k.is_multiple_of(FPS).then(|| Bytes::copy_from_slice(&(k / FPS).to_be_bytes()));
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        (group, Bytes::copy_from_slice(&len.to_be_bytes()), payload)
    }
}

/// What a sender counts.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Objects written whole into a stream.
    objects: u64,
    /// Their payload bytes.
    bytes: u64,
    /// Objects not written whole (no stream credit, send window full).
    short: u64,
    /// `sendmsg` calls (proto mode).
    sends: u64,
    /// Datagrams sent, GSO segments counted one by one (proto mode).
    datagrams_out: u64,
    /// Datagrams received (proto mode).
    datagrams_in: u64,
    /// `recvmmsg` calls that returned datagrams (proto mode).
    recv_calls: u64,
    /// Wake-ups of the driver loop (proto mode).
    wakes: u64,
    /// Sends dropped after the socket stayed full (proto mode).
    dropped: u64,
    /// From the connections' own statistics (both modes): UDP send calls, datagrams sent
    /// (GSO segments one by one), datagrams received, ACK frames received.
    ios: u64,
    wire_out: u64,
    wire_in: u64,
    acks_in: u64,
}

impl Counts {
    fn minus(&self, o: &Self) -> Self {
        Self {
            objects: self.objects - o.objects,
            bytes: self.bytes - o.bytes,
            short: self.short - o.short,
            sends: self.sends - o.sends,
            datagrams_out: self.datagrams_out - o.datagrams_out,
            datagrams_in: self.datagrams_in - o.datagrams_in,
            recv_calls: self.recv_calls - o.recv_calls,
            wakes: self.wakes - o.wakes,
            dropped: self.dropped - o.dropped,
            ios: self.ios - o.ios,
            wire_out: self.wire_out - o.wire_out,
            wire_in: self.wire_in - o.wire_in,
            acks_in: self.acks_in - o.acks_in,
        }
    }

    /// These counts with the wire figures summed over `stats` (read outside the window).
    fn with_wire(mut self, stats: impl Iterator<Item = quinn::ConnectionStats>) -> Self {
        (self.ios, self.wire_out, self.wire_in, self.acks_in) = (0, 0, 0, 0);
        for s in stats {
            self.ios += s.udp_tx.ios;
            self.wire_out += s.udp_tx.datagrams;
            self.wire_in += s.udp_rx.datagrams;
            self.acks_in += s.frame_rx.acks;
        }
        self
    }
}

/// The sender's measured window and totals, printed as one `result` line.
struct Outcome {
    window: Counts,
    total: Counts,
    cpu: f64,
    wall: f64,
    lag_max: Duration,
    connected: usize,
    lost: usize,
}

fn print_outcome(mode: &str, load: &Load, o: &Outcome, syscall: f64) {
    let w = &o.window;
    println!(
        "result mode={mode} n={} cpu={:.4} wall={:.3} objects={} bytes={} short={} \
         written={} short_total={} sends={} datagrams_out={} datagrams_in={} recv_calls={} \
         wakes={} dropped={} ios={} wire_out={} wire_in={} acks_in={} lag_ms={:.1} connected={} lost={} syscall_ns={syscall:.0}",
        load.n,
        o.cpu,
        o.wall,
        w.objects,
        w.bytes,
        w.short,
        o.total.objects,
        o.total.short,
        w.sends,
        w.datagrams_out,
        w.datagrams_in,
        w.recv_calls,
        w.wakes,
        w.dropped,
        w.ios,
        w.wire_out,
        w.wire_in,
        w.acks_in,
        o.lag_max.as_secs_f64() * 1e3,
        o.connected,
        o.lost,
    );
}

fn send(args: &Args) -> Result<()> {
    args.check(&["mode", "n", "warm", "secs", "bytes"])?;
    let load = args.load()?;
    let syscall = syscall_ns();
    let mode = args.get("mode").unwrap_or("quinn").to_owned();
    let outcome = match mode.as_str() {
        // The relay's runtime: tokio's default, one worker under `taskset -c 0`, the writing
        // task spawned on it as the relay's fan-out is (not run on the main thread, which
        // would add a cross-thread wake-up between it and the connection drivers).
        "quinn" => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async { tokio::spawn(send_quinn(load)).await })??
        }
        // One thread: tokio only for the socket's readiness and the sleep between wake-ups.
        "proto" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(send_proto(load))?,
        other => bail!("mode={other}: expected quinn or proto"),
    };
    print_outcome(&mode, &load, &outcome, syscall);
    Ok(())
}

fn announce(port: u16, hash: &CertHash) {
    use std::io::Write;
    println!("ready {port} {}", hash.hex());
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------------
// `quinn`: quinn's endpoint and connection drivers, objects written as the relay writes them
// (client/src/moq/send.rs: `open_uni` and `write_chunks` polled once from the fan-out task).

struct QuinnConn {
    conn: quinn::Connection,
    stream: Option<quinn::SendStream>,
}

async fn send_quinn(load: Load) -> Result<Outcome> {
    let (config, hash) = server_config()?;
    let socket = bind()?;
    let port = socket.local_addr()?.port();
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    announce(port, &hash);

    let mut conns = Vec::with_capacity(load.n);
    let mut handshakes = tokio::task::JoinSet::new();
    let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
    let mut failed = 0usize;
    while conns.len() < load.n {
        tokio::select! {
            incoming = endpoint.accept() => {
                let incoming = incoming.context("endpoint closed")?;
                handshakes.spawn(async move { incoming.await });
            }
            Some(done) = handshakes.join_next() => match done {
                Ok(Ok(conn)) => conns.push(QuinnConn { conn, stream: None }),
                _ => failed += 1,
            },
            () = tokio::time::sleep_until(deadline) => {
                bail!("{} of {} connected in {CONNECT_LIMIT:?} ({failed} failed)", conns.len(), load.n)
            }
        }
    }

    let objects = Objects::new(&load);
    let period = Duration::from_nanos(1_000_000_000 / FPS);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut counts = Counts::default();
    let (mut at_warm, mut cpu0, mut t0) = (Counts::default(), 0.0, Instant::now());
    let (mut cpu, mut wall, mut lag_max) = (0.0, 0.0, Duration::ZERO);
    for k in 0..=load.ticks_total() {
        let due = tick.tick().await;
        lag_max = lag_max.max(tokio::time::Instant::now() - due);
        if k == load.ticks_warm() {
            at_warm = counts.with_wire(conns.iter().map(|c| c.conn.stats()));
            (cpu0, t0) = (cpu_seconds()?, Instant::now());
        }
        if k == load.ticks_total() {
            (cpu, wall) = (cpu_seconds()? - cpu0, t0.elapsed().as_secs_f64());
            counts = counts.with_wire(conns.iter().map(|c| c.conn.stats()));
            break;
        }
        let (group, header, payload) = objects.at(k);
        for c in &mut conns {
            write_quinn(c, group.as_ref(), &header, &payload, &mut counts);
        }
    }
    let window = counts.minus(&at_warm);

    for c in &mut conns {
        if let Some(mut s) = c.stream.take() {
            let _ = s.finish();
        }
    }
    tokio::time::sleep(DRAIN).await;
    let lost = conns.iter().filter(|c| c.conn.close_reason().is_some()).count();
    for c in &conns {
        c.conn.close(0u32.into(), b"done");
    }
    let _ = tokio::time::timeout(CLOSE_LIMIT, endpoint.wait_idle()).await;
    Ok(Outcome { window, total: counts, cpu, wall, lag_max, connected: conns.len(), lost })
}

fn write_quinn(
    c: &mut QuinnConn,
    group: Option<&Bytes>,
    header: &Bytes,
    payload: &Bytes,
    counts: &mut Counts,
) {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(3);
    if let Some(g) = group {
        if let Some(mut s) = c.stream.take() {
            let _ = s.finish();
        }
        match c.conn.open_uni().now_or_never() {
            Some(Ok(s)) => c.stream = Some(s),
            _ => {
                counts.short += 1;
                return;
            }
        }
        chunks.push(g.clone());
    }
    let Some(stream) = c.stream.as_mut() else {
        counts.short += 1;
        return;
    };
    chunks.push(header.clone());
    chunks.push(payload.clone());
    match stream.write_chunks(&mut chunks).now_or_never() {
        Some(Ok(w)) if w.chunks == chunks.len() => {
            counts.objects += 1;
            counts.bytes += payload.len() as u64;
        }
        // Not written whole: the stream's framing is broken from here, so it is given up
        // (counted; on loopback without congestion this does not happen).
        _ => {
            counts.short += 1;
            if let Some(mut s) = c.stream.take() {
                let _ = s.reset(1u32.into());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `proto`: one task owns the socket, the quinn-proto endpoint and every connection.

struct ProtoConn {
    conn: proto::Connection,
    stream: Option<proto::StreamId>,
    connected: bool,
    lost: bool,
}

struct Driver {
    endpoint: proto::Endpoint,
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Connections by handle (quinn-proto's handles are small reused indices).
    conns: Vec<Option<ProtoConn>>,
    /// Each connection's next timeout, by handle: one array scanned per wake-up instead of a
    /// timer per connection.
    timeouts: Vec<Option<Instant>>,
    /// Connections touched since their last flush, and a flag per handle.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    send_buf: Vec<u8>,
    response_buf: Vec<u8>,
    max_segments: usize,
    accepting: bool,
    connected: usize,
    lost: usize,
    counts: Counts,
}

/// quinn's own cap on GSO segments per `sendmsg` (quinn 0.11 `MAX_TRANSMIT_SEGMENTS`).
const MAX_SEGMENTS: usize = 10;
/// Receive batches handled before the connections' packets are built: each batch is up to
/// `udp::BATCH_SIZE` datagrams (32 on Linux).
const RECV_BATCHES: usize = 8;
/// Tries of a send that meets a full socket before the datagram is given up (QUIC sends it
/// again); counted as `dropped`.
const SEND_TRIES: usize = 64;

impl Driver {
    fn new(config: quinn::ServerConfig, socket: std::net::UdpSocket) -> Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let endpoint = proto::Endpoint::new(
            Arc::new(proto::EndpointConfig::default()),
            Some(Arc::new(config)),
            true,
            None,
        );
        let max_segments = state.max_gso_segments().clamp(1, MAX_SEGMENTS);
        Ok(Self {
            endpoint,
            socket,
            state,
            conns: Vec::new(),
            timeouts: Vec::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            send_buf: Vec::new(),
            response_buf: Vec::new(),
            max_segments,
            accepting: true,
            connected: 0,
            lost: 0,
            counts: Counts::default(),
        })
    }

    fn mark(&mut self, i: usize) {
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i);
        }
    }

    /// Reads what the socket holds, up to [`RECV_BATCHES`] batches, and hands each datagram
    /// to the endpoint and its connection.
    fn receive(&mut self, now: Instant, buf: &mut [u8]) -> Result<()> {
        for _ in 0..RECV_BATCHES {
            let mut metas = [RecvMeta::default(); udp::BATCH_SIZE];
            let mut chunks = buf.chunks_mut(buf.len() / udp::BATCH_SIZE);
            let mut iovs: [IoSliceMut; udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let got = self.socket.try_io(tokio::io::Interest::READABLE, || {
                self.state.recv((&self.socket).into(), &mut iovs, &mut metas)
            });
            let msgs = match got {
                Ok(msgs) => msgs,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e).context("receiving"),
            };
            self.counts.recv_calls += 1;
            for (meta, iov) in metas.iter().zip(iovs.iter()).take(msgs) {
                let mut data = BytesMut::from(&iov[..meta.len]);
                while !data.is_empty() {
                    let one = data.split_to(meta.stride.min(data.len()));
                    self.counts.datagrams_in += 1;
                    self.handle_datagram(now, meta, one);
                }
            }
        }
        Ok(())
    }

    fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, data: BytesMut) {
        let ecn = meta.ecn.and_then(|e| proto::EcnCodepoint::from_bits(e as u8));
        self.response_buf.clear();
        match self.endpoint.handle(now, meta.addr, meta.dst_ip, ecn, data, &mut self.response_buf) {
            Some(proto::DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(Some(c)) = self.conns.get_mut(ch.0) {
                    c.conn.handle_event(event);
                    self.mark(ch.0);
                }
            }
            Some(proto::DatagramEvent::NewConnection(incoming)) => {
                if !self.accepting {
                    let t = self.endpoint.refuse(incoming, &mut self.response_buf);
                    self.respond(&t);
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut self.response_buf, None) {
                    Ok((ch, conn)) => {
                        let i = ch.0;
                        if self.conns.len() <= i {
                            self.conns.resize_with(i + 1, || None);
                            self.timeouts.resize(i + 1, None);
                            self.is_dirty.resize(i + 1, false);
                        }
                        self.conns[i] =
                            Some(ProtoConn { conn, stream: None, connected: false, lost: false });
                        self.mark(i);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.respond(&t);
                        }
                    }
                }
            }
            Some(proto::DatagramEvent::Response(t)) => self.respond(&t),
            None => {}
        }
    }

    fn respond(&mut self, t: &proto::Transmit) {
        transmit(&self.socket, &self.state, &mut self.counts, t, &self.response_buf[..t.size]);
    }

    /// Runs the timers that are due and returns the earliest one still ahead.
    fn handle_timeouts(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for i in 0..self.timeouts.len() {
            let Some(t) = self.timeouts[i] else { continue };
            if t <= now {
                if let Some(Some(c)) = self.conns.get_mut(i) {
                    c.conn.handle_timeout(now);
                    self.timeouts[i] = None;
                    self.mark(i);
                }
            } else {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Every touched connection: its endpoint events, its packets (sent at once, GSO per
    /// connection), its application events and its next timeout.
    fn flush(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.is_dirty[i] = false;
            let Some(Some(c)) = self.conns.get_mut(i) else { continue };
            let ch = proto::ConnectionHandle(i);
            while let Some(event) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, event) {
                    c.conn.handle_event(back);
                }
            }
            loop {
                self.send_buf.clear();
                let Some(t) = c.conn.poll_transmit(now, self.max_segments, &mut self.send_buf)
                else {
                    break;
                };
                transmit(&self.socket, &self.state, &mut self.counts, &t, &self.send_buf[..t.size]);
            }
            while let Some(event) = c.conn.poll() {
                match event {
                    proto::Event::Connected => {
                        c.connected = true;
                        self.connected += 1;
                    }
                    proto::Event::ConnectionLost { .. } if !c.lost => {
                        c.lost = true;
                        self.lost += 1;
                    }
                    _ => {}
                }
            }
            // Endpoint events raised while the packets were built or by the application
            // events (new connection IDs, a drained connection).
            while let Some(event) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, event) {
                    c.conn.handle_event(back);
                    self.dirty.push(i);
                    self.is_dirty[i] = true;
                }
            }
            if c.conn.is_drained() {
                self.conns[i] = None;
                self.timeouts[i] = None;
            } else {
                self.timeouts[i] = c.conn.poll_timeout();
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes the object of tick `k` into every connected connection.
    fn write_all(&mut self, group: Option<&Bytes>, header: &Bytes, payload: &Bytes) {
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(i) else { continue };
            if !c.connected || c.lost {
                continue;
            }
            let mut chunks: Vec<Bytes> = Vec::with_capacity(3);
            if let Some(g) = group {
                if let Some(s) = c.stream.take() {
                    let _ = c.conn.send_stream(s).finish();
                }
                c.stream = c.conn.streams().open(proto::Dir::Uni);
                chunks.push(g.clone());
            }
            let Some(s) = c.stream else {
                self.counts.short += 1;
                continue;
            };
            chunks.push(header.clone());
            chunks.push(payload.clone());
            match c.conn.send_stream(s).write_chunks(&mut chunks) {
                Ok(w) if w.chunks == chunks.len() => {
                    self.counts.objects += 1;
                    self.counts.bytes += payload.len() as u64;
                }
                _ => {
                    self.counts.short += 1;
                    let _ = c.conn.send_stream(s).reset(1u32.into());
                    c.stream = None;
                }
            }
            self.mark(i);
        }
    }

    fn finish_all(&mut self) {
        for i in 0..self.conns.len() {
            if let Some(Some(c)) = self.conns.get_mut(i) {
                if let Some(s) = c.stream.take() {
                    let _ = c.conn.send_stream(s).finish();
                }
                self.mark(i);
            }
        }
    }

    fn close_all(&mut self, now: Instant) {
        self.accepting = false;
        for i in 0..self.conns.len() {
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.conn.close(now, 0u32.into(), Bytes::from_static(b"done"));
                self.mark(i);
            }
        }
    }

    fn stats(&self) -> impl Iterator<Item = quinn::ConnectionStats> + '_ {
        self.conns.iter().flatten().map(|c| c.conn.stats())
    }

    fn open(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }
}

/// Sends one transmit (GSO when it holds several datagrams); a socket that stays full drops it.
fn transmit(
    socket: &tokio::net::UdpSocket,
    state: &UdpSocketState,
    counts: &mut Counts,
    t: &proto::Transmit,
    contents: &[u8],
) {
    let out = udp::Transmit {
        destination: t.destination,
        ecn: t.ecn.and_then(|e| udp::EcnCodepoint::from_bits(e as u8)),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    };
    for _ in 0..SEND_TRIES {
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || state.send(socket.into(), &out));
        match sent {
            Ok(()) => {
                counts.sends += 1;
                counts.datagrams_out += t.segment_size.map_or(1, |s| t.size.div_ceil(s)) as u64;
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(_) => break,
        }
    }
    counts.dropped += 1;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Accepting(Instant),
    Loading,
    Draining(Instant),
    Closing(Instant),
}

async fn send_proto(load: Load) -> Result<Outcome> {
    let (config, hash) = server_config()?;
    let socket = bind()?;
    let port = socket.local_addr()?.port();
    let mut d = Driver::new(config, socket)?;
    announce(port, &hash);

    let objects = Objects::new(&load);
    let period = Duration::from_nanos(1_000_000_000 / FPS);
    // Room for a full batch of GRO-coalesced datagrams, as quinn's endpoint keeps.
    let mut buf = vec![0u8; 64 * 1024 * udp::BATCH_SIZE];
    let mut phase = Phase::Accepting(Instant::now() + CONNECT_LIMIT);
    let (mut k, mut next_tick) = (0u64, Instant::now());
    let (mut at_warm, mut cpu0, mut t0) = (Counts::default(), 0.0, Instant::now());
    let (mut cpu, mut wall, mut lag_max, mut window) = (0.0, 0.0, Duration::ZERO, None);
    let mut connected_at_start = 0;
    loop {
        let now = Instant::now();
        d.counts.wakes += 1;
        d.receive(now, &mut buf)?;
        let mut wake = d.handle_timeouts(now);
        match phase {
            Phase::Accepting(deadline) => {
                if d.connected >= load.n {
                    connected_at_start = d.connected;
                    phase = Phase::Loading;
                    next_tick = now + Duration::from_millis(100);
                } else if now >= deadline {
                    bail!("{} of {} connected in {CONNECT_LIMIT:?}", d.connected, load.n);
                }
            }
            Phase::Loading => {
                while now >= next_tick {
                    lag_max = lag_max.max(now - next_tick);
                    if k == load.ticks_warm() {
                        at_warm = d.counts.with_wire(d.stats());
                        (cpu0, t0) = (cpu_seconds()?, Instant::now());
                    }
                    if k == load.ticks_total() {
                        (cpu, wall) = (cpu_seconds()? - cpu0, t0.elapsed().as_secs_f64());
                        window = Some(d.counts.with_wire(d.stats()).minus(&at_warm));
                        d.finish_all();
                        phase = Phase::Draining(now + DRAIN);
                        break;
                    }
                    let (group, header, payload) = objects.at(k);
                    d.write_all(group.as_ref(), &header, &payload);
                    k += 1;
                    next_tick += period;
                }
            }
            Phase::Draining(until) => {
                if now >= until {
                    d.close_all(now);
                    phase = Phase::Closing(now + CLOSE_LIMIT);
                }
            }
            Phase::Closing(until) => {
                if d.open() == 0 || now >= until {
                    break;
                }
            }
        }
        d.flush(now);
        // Timers the flush set, then the phase's own next moment.
        for t in d.timeouts.iter().flatten() {
            wake = Some(wake.map_or(*t, |w| w.min(*t)));
        }
        let phase_at = match phase {
            Phase::Accepting(t) | Phase::Draining(t) | Phase::Closing(t) => t,
            Phase::Loading => next_tick,
        };
        let wake = wake.map_or(phase_at, |w| w.min(phase_at));
        if !d.dirty.is_empty() || wake <= Instant::now() {
            continue;
        }
        tokio::select! {
            biased;
            ready = d.socket.readable() => ready?,
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    let window = window.context("the load did not finish")?;
    Ok(Outcome {
        window,
        total: d.counts,
        cpu,
        wall,
        lag_max,
        connected: connected_at_start,
        lost: d.lost,
    })
}

// ---------------------------------------------------------------------------------------------
// `recv`: N plain quinn client connections, one endpoint each, reading every stream to its end.

#[derive(Default)]
struct Received {
    objects: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
}

/// Counts whole objects in a stream of `[8-byte group][4-byte length][payload]...`.
struct Framing {
    group_left: usize,
    len: [u8; 4],
    len_have: usize,
    body_left: usize,
}

impl Framing {
    fn new() -> Self {
        Self { group_left: 8, len: [0; 4], len_have: 0, body_left: 0 }
    }

    /// Takes the next bytes of the stream; returns (objects completed, payload bytes).
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut objects, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.group_left > 0 {
                let take = self.group_left.min(data.len());
                self.group_left -= take;
                data = &data[take..];
            } else if self.body_left > 0 {
                let take = self.body_left.min(data.len());
                self.body_left -= take;
                bytes += take as u64;
                data = &data[take..];
                if self.body_left == 0 {
                    objects += 1;
                }
            } else {
                let take = (4 - self.len_have).min(data.len());
                self.len[self.len_have..self.len_have + take].copy_from_slice(&data[..take]);
                self.len_have += take;
                data = &data[take..];
                if self.len_have == 4 {
                    self.len_have = 0;
                    self.body_left = u32::from_be_bytes(self.len) as usize;
                    if self.body_left == 0 {
                        objects += 1;
                    }
                }
            }
        }
        (objects, bytes)
    }
}

fn recv(args: &Args) -> Result<()> {
    args.check(&["port", "hash", "n", "limit"])?;
    let port: u16 = args.num("port", 0)?;
    let hash = CertHash::from_hex(args.get("hash").context("hash= needed")?)?;
    let n: usize = args.num("n", 0)?;
    let limit = Duration::from_secs(args.num("limit", 60)?);
    if n == 0 || n > MAX_CONNECTIONS || limit > Duration::from_secs(MAX_SECS + 120) {
        bail!("n must be 1 to {MAX_CONNECTIONS}, limit at most {} s", MAX_SECS + 120);
    }
    let tls =
        tiermesh_certs::client::config(&ClientTrust::PinnedHash(hash), &[tiermesh_proto::ALPN])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(true));
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let received = Arc::new(Received::default());
    let runtime = tokio::runtime::Runtime::new()?;
    let finished = runtime.block_on(async {
        let mut conns = tokio::task::JoinSet::new();
        for _ in 0..n {
            let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            endpoint.set_default_client_config(config.clone());
            let connecting = endpoint.connect(server, "localhost")?;
            conns.spawn(receive_conn(endpoint, connecting, received.clone()));
            // A ramp of 250 connections a second, so handshakes do not pile up.
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        let all = async { while conns.join_next().await.is_some() {} };
        anyhow::Ok(tokio::time::timeout(limit, all).await.is_ok())
    })?;
    let r = &received;
    println!(
        "recv connected={} failed={} objects={} bytes={} finished={finished}",
        r.connected.load(Ordering::Relaxed),
        r.failed.load(Ordering::Relaxed),
        r.objects.load(Ordering::Relaxed),
        r.bytes.load(Ordering::Relaxed),
    );
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

async fn receive_conn(endpoint: quinn::Endpoint, connecting: quinn::Connecting, r: Arc<Received>) {
    let conn = match connecting.await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("recv: connection failed: {e}");
            r.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    r.connected.fetch_add(1, Ordering::Relaxed);
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(s) => { streams.spawn(read_stream(s, r.clone())); }
                Err(_) => break,
            },
            Some(_) = streams.join_next() => {}
        }
    }
    while streams.join_next().await.is_some() {}
    endpoint.wait_idle().await;
}

async fn read_stream(mut s: quinn::RecvStream, r: Arc<Received>) {
    let mut framing = Framing::new();
    while let Ok(Some(chunk)) = s.read_chunk(usize::MAX, true).await {
        let (objects, bytes) = framing.feed(&chunk.bytes);
        if objects > 0 {
            r.objects.fetch_add(objects, Ordering::Relaxed);
        }
        r.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// `compare`: the modes in turns, one sender and one receiver process per run.

struct Run {
    mode: String,
    us_per_object: f64,
    us_per_mb: f64,
    gbit_per_core: f64,
    share: f64,
    /// Every object written was delivered and no tick ran late by more than [`LATE`]: the
    /// sender kept up. Other runs (a starved CPU) are left out of the summary.
    clean: bool,
}

/// A tick later than this means the sender (or the machine) did not keep up: six periods.
const LATE: Duration = Duration::from_millis(200);

fn compare(args: &Args) -> Result<()> {
    args.check(&["rounds", "n", "warm", "secs", "bytes", "modes", "send_cpu", "recv_cpu"])?;
    let load = args.load()?;
    let rounds: usize = args.num("rounds", 4)?;
    if rounds == 0 || rounds > 20 {
        bail!("rounds must be 1 to 20");
    }
    let modes: Vec<String> =
        args.get("modes").unwrap_or("quinn,proto").split(',').map(str::to_owned).collect();
    if modes.iter().any(|m| m != "quinn" && m != "proto") {
        bail!("modes: quinn and/or proto");
    }
    let send_cpu = args.get("send_cpu").unwrap_or("0").to_owned();
    let recv_cpu = args.get("recv_cpu").unwrap_or("1").to_owned();
    let (key, delta) = load.sizes();
    println!(
        "quic_ceiling: n={} connections, {FPS} objects/s each ({key} B first of a group of \
         {FPS}, {delta} B the others, {} B average), warm {} s, window {} s, sender on CPU \
         {send_cpu}, receiver on CPU {recv_cpu}",
        load.n, load.object_bytes, load.warm, load.secs
    );
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..rounds {
        let mut order = modes.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for mode in &order {
            let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let loadavg = loadavg.split_whitespace().next().unwrap_or("?").to_owned();
            let r = run_once(mode, &load, &send_cpu, &recv_cpu)
                .with_context(|| format!("round {} {mode}", round + 1))?;
            println!(
                "round {} {mode:5}: {:6.2} µs/object {:8.1} µs/MB {:5.2} Gbit/s per core | \
                 CPU {:.2} s of {:.1} s | delivered {} | {} | load {loadavg}{}",
                round + 1,
                r.0.us_per_object,
                r.0.us_per_mb,
                r.0.gbit_per_core,
                r.0.share * r.1,
                r.1,
                r.2,
                r.3,
                if r.0.clean { "" } else { " | NOT CLEAN (left out below)" },
            );
            runs.push(r.0);
        }
    }
    println!();
    println!("| mode | µs / object (each run) | mean | µs / MB, mean | Gbit/s per core, mean |");
    println!("|---|---|---|---|---|");
    for mode in &modes {
        let all = runs.iter().filter(|r| &r.mode == mode).count();
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.mode == mode && r.clean).collect();
        if mine.is_empty() {
            println!("| {mode} | no clean run of {all} | | | |");
            continue;
        }
        let each: Vec<String> = mine.iter().map(|r| format!("{:.2}", r.us_per_object)).collect();
        let mean = |f: fn(&Run) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / mine.len() as f64;
        println!(
            "| {mode} | {}{} | {:.2} | {:.0} | {:.2} |",
            each.join(", "),
            if mine.len() < all {
                format!(" ({} of {all} runs clean)", mine.len())
            } else {
                String::new()
            },
            mean(|r| r.us_per_object),
            mean(|r| r.us_per_mb),
            mean(|r| r.gbit_per_core),
        );
    }
    Ok(())
}

/// One run: its figures, the window's seconds, objects delivered/written, other counts.
fn run_once(
    mode: &str,
    load: &Load,
    send_cpu: &str,
    recv_cpu: &str,
) -> Result<(Run, f64, String, String)> {
    let exe = std::env::current_exe()?;
    let mut sender = Command::new("taskset")
        .args(["-c", send_cpu])
        .arg(&exe)
        .arg("send")
        .arg(format!("mode={mode}"))
        .args(load.args())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the sender (taskset)")?;
    let mut lines = BufReader::new(sender.stdout.take().context("sender stdout")?).lines();
    let ready = lines.next().context("the sender said nothing")??;
    let mut words = ready.split_whitespace();
    let (Some("ready"), Some(port), Some(hash)) = (words.next(), words.next(), words.next()) else {
        let _ = sender.kill();
        bail!("the sender said {ready:?}");
    };
    let limit = load.warm + load.secs + 90;
    let receiver = Command::new("taskset")
        .args(["-c", recv_cpu])
        .arg(&exe)
        .arg("recv")
        .arg(format!("port={port}"))
        .arg(format!("hash={hash}"))
        .arg(format!("n={}", load.n))
        .arg(format!("limit={limit}"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the receiver")?;
    let mut result = None;
    for line in lines {
        let line = line?;
        if line.starts_with("result ") {
            result = Some(line);
        }
    }
    let status = sender.wait()?;
    let out = receiver.wait_with_output()?;
    let result = result.with_context(|| format!("the sender ended ({status}) without a result"))?;
    let recv_line = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |text: &str, key: &str| -> Option<String> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    let num = |text: &str, key: &str| -> f64 {
        field(text, key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    };
    let cpu = num(&result, "cpu");
    let wall = num(&result, "wall");
    let objects = num(&result, "objects");
    let bytes = num(&result, "bytes");
    let run = Run {
        mode: mode.to_owned(),
        us_per_object: cpu * 1e6 / objects,
        us_per_mb: cpu * 1e6 / (bytes / 1e6),
        gbit_per_core: bytes * 8.0 / cpu / 1e9,
        share: cpu / wall,
        clean: field(&recv_line, "objects") == field(&result, "written")
            && num(&result, "lag_ms") < LATE.as_secs_f64() * 1e3,
    };
    let delivered = format!(
        "{}/{}",
        field(&recv_line, "objects").unwrap_or_else(|| "?".into()),
        field(&result, "written").unwrap_or_default()
    );
    let mut extra = format!(
        "lag max {} ms, short {}, lost {}",
        field(&result, "lag_ms").unwrap_or_default(),
        field(&result, "short_total").unwrap_or_default(),
        field(&result, "lost").unwrap_or_default(),
    );
    extra.push_str(&format!(
        ", per object: {:.2} sendmsg, {:.2} datagrams out, {:.2} in ({:.2} ACK frames)",
        num(&result, "ios") / objects,
        num(&result, "wire_out") / objects,
        num(&result, "wire_in") / objects,
        num(&result, "acks_in") / objects,
    ));
    if mode == "proto" {
        extra.push_str(&format!(
            ", {:.3} recvmmsg, {:.3} wake-ups",
            num(&result, "recv_calls") / objects,
            num(&result, "wakes") / objects,
        ));
    }
    extra.push_str(&format!("; getpid {} ns", field(&result, "syscall_ns").unwrap_or_default()));
    if field(&recv_line, "failed").is_some_and(|f| f != "0") {
        extra.push_str(&format!(", receiver: {}", recv_line.trim()));
    }
    Ok((run, wall, delivered, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_counts_objects_split_anywhere() {
        let mut stream = 7u64.to_be_bytes().to_vec();
        for len in [5u32, 0, 3] {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(1u8, len as usize));
        }
        for cut in 0..stream.len() {
            let mut f = Framing::new();
            let (a, b) = f.feed(&stream[..cut]);
            let (c, d) = f.feed(&stream[cut..]);
            assert_eq!((a + c, b + d), (3, 8), "cut at {cut}");
        }
    }

    #[test]
    fn sizes_average_the_object_bytes() {
        let load = Load { n: 1, warm: 0, secs: 1, object_bytes: 4096 };
        let (key, delta) = load.sizes();
        assert_eq!((key, delta), (21_090, 3_510));
        assert_eq!(key + delta * (FPS as usize - 1), 4096 * FPS as usize);
    }
}
