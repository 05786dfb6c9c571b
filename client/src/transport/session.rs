//! One established session, raw QUIC or WebTransport, behind one API.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use web_transport_quinn as wt;

use super::driver;
use super::{Error, Kind};

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This endpoint.
    Local,
    /// The other endpoint.
    Peer,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "us",
            Side::Peer => "the peer",
        })
    }
}

/// Why a session ended: who closed it, with which code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it ([`Session::close`] here, or its peer's counterpart): `code`
    /// is the MoQT termination code (draft-16 §3.4).
    Application {
        /// Who closed the session.
        by: Side,
        /// The application's error code; over WebTransport already mapped back from the
        /// HTTP/3 range.
        code: u64,
        /// The reason phrase.
        reason: String,
    },
    /// A QUIC transport error ended the connection (a protocol violation, a TLS alert, …).
    Transport {
        /// Who detected the error.
        by: Side,
        /// The QUIC transport error code.
        code: u64,
        /// The reason text.
        reason: String,
    },
    /// Nothing was heard from the peer within the idle timeout.
    IdleTimeout,
    /// The peer lost its connection state (a stateless reset).
    Reset,
    /// Anything else: the endpoint was shut down, version negotiation failed, …
    Other(String),
}

impl CloseReason {
    /// Who closed the session, when known.
    pub fn by(&self) -> Option<Side> {
        match self {
            Self::Application { by, .. } | Self::Transport { by, .. } => Some(*by),
            _ => None,
        }
    }

    /// The application close code, for an application close.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::Application { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The reason phrase, for an application or transport close.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Application { reason, .. } | Self::Transport { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn from_quinn(e: &quinn::ConnectionError, kind: Kind) -> Self {
        use quinn::ConnectionError as C;
        match e {
            C::ApplicationClosed(c) => {
                let raw = c.error_code.into_inner();
                let code = match kind {
                    Kind::WebTransport => {
                        wt::proto::error_from_http3(raw).map(u64::from).unwrap_or(raw)
                    }
                    Kind::RawQuic => raw,
                };
                Self::Application {
                    by: Side::Peer,
                    code,
                    reason: String::from_utf8_lossy(&c.reason).into_owned(),
                }
            }
            C::ConnectionClosed(c) => Self::Transport {
                by: Side::Peer,
                code: u64::from(c.error_code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            C::TransportError(t) => Self::Transport {
                by: Side::Local,
                code: u64::from(t.code),
                reason: t.reason.clone(),
            },
            C::TimedOut => Self::IdleTimeout,
            C::Reset => Self::Reset,
            C::LocallyClosed => {
                Self::Application { by: Side::Local, code: 0, reason: String::new() }
            }
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Application { by, code, reason } => {
                write!(f, "closed by {by} with code {code:#x}")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Self::Transport { by, code, reason } => {
                match tls_alert(*code) {
                    Some(alert) => write!(f, "TLS alert {alert} ({code:#x}) from {by}")?,
                    None => write!(f, "QUIC transport error {code:#x} detected by {by}")?,
                }
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Self::IdleTimeout => f.write_str("the peer went silent (idle timeout)"),
            Self::Reset => f.write_str("the peer lost the connection (stateless reset)"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Names the TLS alert a QUIC CRYPTO_ERROR code (0x100 + alert) carries, with a hint for the
/// ones a user can act on.
fn tls_alert(code: u64) -> Option<&'static str> {
    if !(0x100..=0x1ff).contains(&code) {
        return None;
    }
    Some(match code - 0x100 {
        40 => "handshake_failure",
        42 => "bad_certificate: the certificate presented was refused",
        45 => "certificate_expired",
        46 => "certificate_unknown: the certificate presented was refused",
        48 => "unknown_ca: the certificate presented is not from a trusted authority",
        80 => "internal_error",
        116 => "certificate_required: the server requires a client certificate (mutual TLS)",
        120 => "no_application_protocol: no common ALPN",
        _ => "(other)",
    })
}

/// Connection figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Smallest RTT seen.
    pub min_rtt: Duration,
    /// Congestion window, in bytes.
    pub cwnd: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Bytes declared lost.
    pub bytes_lost: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Congestion events (window reductions).
    pub congestion_events: u64,
    /// Current path MTU (UDP payload bytes).
    pub mtu: u16,
    /// What the sender may send now, in bits per second: the controller's pacing rate where
    /// it has one (BBR), else the congestion window per RTT.
    pub send_rate_estimate_bps: u64,
}

/// What every handle of one session shares.
#[derive(Debug)]
struct Shared {
    /// The first close this side asked for, so `closed()` can report its code and reason.
    local_close: OnceLock<CloseReason>,
    path: Option<String>,
    query: Option<String>,
    /// Keeps a client's endpoint (and its socket) alive as long as the session.
    _endpoint: Option<quinn::Endpoint>,
    limits: StreamLimits,
    /// Whether the congestion controller reports a pacing rate, once [`Session::stats`] has
    /// asked: quinn hands its controller's figures out only as a copy of the controller
    /// (a lock and an allocation), and a controller either always has a pacing rate (BBR)
    /// or never (CUBIC, NewReno, delay), so the copy is made again only for one that has.
    pacing: OnceLock<bool>,
    /// The negotiated ALPN of a session of the batched driver (quinn's sessions keep their
    /// own).
    alpn: Option<String>,
}

/// Index of bidirectional streams in [`StreamLimits`]' arrays.
const BI: usize = 0;
/// Index of unidirectional streams.
const UNI: usize = 1;

/// The limit grows once `1 / GROW_AT_ONE_IN` of it is in use as we count it: 4, a quarter.
/// We count the streams we accepted and still hold, but the peer also counts the streams on
/// their way to us and those whose credit is on its way back (quinn sends no STREAMS_BLOCKED,
/// so we never hear that it waits): a round trip of new streams more. Audio alone opens 50 a
/// second, so on a 1 Mbit/s link with a full 300 ms queue (`step`'s cut) the peer used up a
/// limit of 64 while we held 24 to 31 streams, and every new audio stream then waited for
/// stream credit behind video, up to a second (half, the rule before, never grew it). With
/// three quarters of the limit for what is in transit, a round trip of streams fits.
const GROW_AT_ONE_IN: u32 = 4;

/// The peer's concurrent-stream limits of one session: they start small and grow as the
/// peer uses its streams (see `TransportConfig::initial_concurrent_streams`).
#[derive(Debug)]
pub(crate) struct StreamLimits {
    /// The largest limit, per direction.
    max: [u32; 2],
    /// The limit granted now.
    current: [AtomicU32; 2],
    /// Streams the peer opened that are accepted and not dropped yet.
    open: [AtomicU32; 2],
    /// Held while a limit is handed to quinn (see [`StreamLimits::apply`]).
    applying: Mutex<()>,
}

impl StreamLimits {
    pub(crate) fn new(initial: u32, max_bidi: u32, max_uni: u32) -> Self {
        Self {
            max: [max_bidi, max_uni],
            current: [AtomicU32::new(initial.min(max_bidi)), AtomicU32::new(initial.min(max_uni))],
            open: [AtomicU32::new(0), AtomicU32::new(0)],
            applying: Mutex::new(()),
        }
    }

    /// Hands the limit granted now for `dir` to `set` (quinn's setter). quinn keeps the
    /// value it was given last, a lower one too: it then grants no new stream until fewer
    /// than that are open, so a raise would be undone. A growth step ([`Self::opened`], on
    /// the thread that accepted a stream) and a raise ([`Self::raise`], on the session's
    /// task) may run at once, each handing quinn the value it computed: the smaller one
    /// could land last. So the value is read here, under a lock, rather than passed in:
    /// limits only grow, and whoever applies last applies the largest.
    fn apply(&self, dir: usize, set: impl FnOnce(u32)) {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        set(self.current[dir].load(Ordering::Relaxed));
    }

    /// Counts an accepted stream; returns the new limit when a quarter of the current one is
    /// in use ([`GROW_AT_ONE_IN`]) and it may still grow.
    fn opened(&self, dir: usize) -> Option<u32> {
        let open = self.open[dir].fetch_add(1, Ordering::Relaxed) + 1;
        let current = self.current[dir].load(Ordering::Relaxed);
        if open.saturating_mul(GROW_AT_ONE_IN) < current || current >= self.max[dir] {
            return None;
        }
        let grown = current.saturating_mul(4).min(self.max[dir]);
        self.current[dir]
            .compare_exchange(current, grown, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| grown)
    }

    fn closed(&self, dir: usize) {
        self.open[dir].fetch_sub(1, Ordering::Relaxed);
    }

    /// Raises the limit at once to `to` (capped at the maximum); returns the new limit, or
    /// `None` when it is already that high.
    fn raise(&self, dir: usize, to: u32) -> Option<u32> {
        let to = to.min(self.max[dir]);
        let before = self.current[dir].fetch_max(to, Ordering::Relaxed);
        (before < to).then_some(to)
    }
}

/// An established MoQT transport session: raw QUIC (ALPN `moqt-16`) or a WebTransport
/// session. Cheap to clone; every clone is the same session.
#[derive(Clone)]
pub struct Session {
    inner: Backend,
    kind: Kind,
    shared: Arc<Shared>,
}

/// What carries a session: quinn's async layer (through web-transport-quinn, raw QUIC or
/// WebTransport) or the batched driver (raw QUIC on a server endpoint).
///
/// The quinn variant is as large as the session was before the batched one existed; boxing
/// it would add an allocation to every clone (a clone per stream) on the default path.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Backend {
    Quinn(wt::Session),
    Batched(driver::Connection),
}

/// A stream code the peer sent, as the 32-bit code of [`SendStream::reset`]: a code in the
/// HTTP/3 range (a peer that maps raw QUIC codes as WebTransport does) is mapped back, as
/// web-transport-quinn does for raw sessions.
fn stream_code(code: driver::VarInt) -> Option<u32> {
    let code = code.into_inner();
    wt::proto::error_from_http3(code).or_else(|| u32::try_from(code).ok())
}

impl Session {
    pub(crate) fn new(
        inner: wt::Session,
        kind: Kind,
        url: Option<&url::Url>,
        endpoint: Option<quinn::Endpoint>,
        limits: StreamLimits,
    ) -> Self {
        let shared = Shared {
            local_close: OnceLock::new(),
            path: url.map(|u| u.path().to_owned()),
            query: url.and_then(|u| u.query().map(str::to_owned)),
            _endpoint: endpoint,
            limits,
            pacing: OnceLock::new(),
            alpn: None,
        };
        Self { inner: Backend::Quinn(inner), kind, shared: Arc::new(shared) }
    }

    /// A raw QUIC session of the batched driver.
    pub(crate) fn batched(conn: driver::Connection, limits: StreamLimits) -> Self {
        let shared = Shared {
            local_close: OnceLock::new(),
            path: None,
            query: None,
            _endpoint: None,
            limits,
            pacing: OnceLock::new(),
            alpn: conn.alpn(),
        };
        Self { inner: Backend::Batched(conn), kind: Kind::RawQuic, shared: Arc::new(shared) }
    }

    /// Raw QUIC or WebTransport.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the session's congestion controller is tiermesh's delay-based one
    /// (`delay`), whose window per RTT reads about the path's rate, rather than a
    /// loss-based one whose window falls under it after each loss.
    pub fn delay_based(&self) -> bool {
        match &self.inner {
            Backend::Quinn(s) => s.congestion_state().into_any().is::<super::delay_cc::Delay>(),
            Backend::Batched(c) => c.controller_is::<super::delay_cc::Delay>(),
        }
    }

    /// A number that identifies this session among the endpoint's live sessions (for maps
    /// and logs); it may be reused once the session has ended.
    pub fn id(&self) -> u64 {
        match &self.inner {
            Backend::Quinn(s) => s.stable_id() as u64,
            Backend::Batched(c) => c.id(),
        }
    }

    /// The peer's UDP address (it may change if the peer migrates).
    pub fn peer(&self) -> SocketAddr {
        match &self.inner {
            Backend::Quinn(s) => s.remote_address(),
            Backend::Batched(c) => c.remote_address(),
        }
    }

    /// The WebTransport CONNECT path (`/room/42`); `None` on raw QUIC, where the path arrives
    /// in the MoQT SETUP message instead.
    pub fn path(&self) -> Option<&str> {
        self.shared.path.as_deref()
    }

    /// The WebTransport CONNECT query without `?`, if any. It may hold a token: do not log it.
    pub fn query(&self) -> Option<&str> {
        self.shared.query.as_deref()
    }

    /// The negotiated MoQT version: the ALPN on raw QUIC, the WebTransport protocol the
    /// server selected otherwise. `None` when a WebTransport peer negotiated no protocol.
    pub fn protocol(&self) -> Option<&str> {
        match &self.inner {
            Backend::Quinn(s) => s.protocol(),
            Backend::Batched(_) => self.shared.alpn.as_deref(),
        }
    }

    /// The certificate chain (DER, leaf first) the peer presented, if any: the server's on a
    /// client, the client's on a server that asked for mutual TLS.
    pub fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        let s = match &self.inner {
            Backend::Quinn(s) => s,
            Backend::Batched(c) => return c.peer_certificates(),
        };
        let identity = s.peer_identity()?;
        let chain = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
        Some(chain.iter().map(|c| c.to_vec()).collect())
    }

    /// Opens a bidirectional stream (waits while the peer's stream limit is reached).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), Error> {
        let (s, r) = match &self.inner {
            Backend::Quinn(q) => {
                let (s, r) = q.open_bi().await.map_err(|e| self.session_error(e))?;
                (SendInner::Quinn(s), RecvInner::Quinn(r))
            }
            Backend::Batched(c) => {
                let (s, r) = c.open_bi().await.map_err(|e| self.lost(e))?;
                (SendInner::Batched(s), RecvInner::Batched(r))
            }
        };
        Ok((self.send(s), self.recv(r)))
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), Error> {
        let (s, r) = match &self.inner {
            Backend::Quinn(q) => {
                let (s, r) = q.accept_bi().await.map_err(|e| self.session_error(e))?;
                (SendInner::Quinn(s), RecvInner::Quinn(r))
            }
            Backend::Batched(c) => {
                let (s, r) = c.accept_bi().await.map_err(|e| self.lost(e))?;
                (SendInner::Batched(s), RecvInner::Batched(r))
            }
        };
        Ok((self.send(s), self.accepted(r, BI)))
    }

    /// Opens a unidirectional stream (waits while the peer's stream limit is reached).
    pub async fn open_uni(&self) -> Result<SendStream, Error> {
        let s = match &self.inner {
            Backend::Quinn(q) => {
                SendInner::Quinn(q.open_uni().await.map_err(|e| self.session_error(e))?)
            }
            Backend::Batched(c) => {
                SendInner::Batched(c.open_uni().await.map_err(|e| self.lost(e))?)
            }
        };
        Ok(self.send(s))
    }

    /// Opens a unidirectional stream if that needs no waiting: `None` while the peer's
    /// stream limit is reached, and always over WebTransport (whose stream header may have
    /// to wait for flow control); use [`open_uni`](Self::open_uni) then.
    pub fn try_open_uni(&self) -> Option<Result<SendStream, Error>> {
        use futures::FutureExt;
        if self.kind != Kind::RawQuic {
            return None;
        }
        let q = match &self.inner {
            Backend::Quinn(q) => q,
            Backend::Batched(c) => {
                return Some(match c.try_open_uni()? {
                    Ok(s) => Ok(self.send(SendInner::Batched(s))),
                    Err(e) => Err(self.lost(e)),
                });
            }
        };
        // A raw QUIC stream has no header: quinn's `open_uni` either opens one at once or
        // waits with nothing opened, so polling it once and dropping it loses nothing.
        match q.open_uni().now_or_never()? {
            Ok(s) => Some(Ok(self.send(SendInner::Quinn(s)))),
            Err(e) => Some(Err(self.session_error(e))),
        }
    }

    /// Waits for the peer to open a unidirectional stream.
    pub async fn accept_uni(&self) -> Result<RecvStream, Error> {
        let r = match &self.inner {
            Backend::Quinn(q) => {
                RecvInner::Quinn(q.accept_uni().await.map_err(|e| self.session_error(e))?)
            }
            Backend::Batched(c) => {
                RecvInner::Batched(c.accept_uni().await.map_err(|e| self.lost(e))?)
            }
        };
        Ok(self.accepted(r, UNI))
    }

    /// A stream the peer opened: counted, and the peer's limit raised when a quarter is in use.
    fn accepted(&self, inner: RecvInner, dir: usize) -> RecvStream {
        if self.shared.limits.opened(dir).is_some() {
            self.hand_limit_to_quinn(dir);
        }
        RecvStream { inner, session: self.clone(), counted: Some(dir) }
    }

    /// Grants the peer at once as many unidirectional streams as a client grants its server
    /// from the start (256, or the configured maximum if lower), for a peer found to publish:
    /// its media opens a stream per group (audio one every 20 ms), and the small initial
    /// limit otherwise grows only a loaded round trip after a quarter of it is in use, so
    /// its first streams wait for credit. Does nothing if the limit is already that high.
    pub fn grant_publisher_streams(&self) {
        if self.shared.limits.raise(UNI, super::config::CLIENT_INITIAL_STREAMS).is_some() {
            self.hand_limit_to_quinn(UNI);
        }
    }

    /// Gives quinn the peer's stream limit in direction `dir` as granted now (under the
    /// limits' lock, so the last one applied is the largest).
    fn hand_limit_to_quinn(&self, dir: usize) {
        self.shared.limits.apply(dir, |limit| {
            match &self.inner {
                Backend::Quinn(q) => {
                    let conn: &quinn::Connection = q;
                    if dir == UNI {
                        conn.set_max_concurrent_uni_streams(limit.into());
                    } else {
                        conn.set_max_concurrent_bi_streams(limit.into());
                    }
                }
                Backend::Batched(c) => {
                    let d = if dir == UNI { driver::Dir::Uni } else { driver::Dir::Bi };
                    c.set_max_concurrent_streams(d, limit);
                }
            }
            tracing::debug!(limit, uni = dir == UNI, "peer's stream limit raised");
        });
    }

    /// Sends one datagram (unreliable, unordered). At most
    /// [`max_datagram_size`](Self::max_datagram_size) bytes.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), Error> {
        let max = self.max_datagram_size();
        if max == 0 {
            return Err(Error::DatagramsUnsupported);
        }
        if data.len() > max {
            return Err(Error::DatagramTooLarge { size: data.len(), max });
        }
        let q = match &self.inner {
            Backend::Quinn(q) => q,
            Backend::Batched(c) => {
                return c.send_datagram(data).map_err(|e| match e {
                    driver::DatagramError::TooLarge => {
                        Error::DatagramTooLarge { size: 0, max: self.max_datagram_size() }
                    }
                    driver::DatagramError::Unsupported => Error::DatagramsUnsupported,
                    driver::DatagramError::Lost(e) => self.lost(e),
                });
            }
        };
        q.send_datagram(data).map_err(|e| match e {
            wt::SessionError::SendDatagramError(quinn::SendDatagramError::TooLarge) => {
                Error::DatagramTooLarge { size: 0, max: self.max_datagram_size() }
            }
            wt::SessionError::SendDatagramError(
                quinn::SendDatagramError::UnsupportedByPeer | quinn::SendDatagramError::Disabled,
            ) => Error::DatagramsUnsupported,
            e => self.session_error(e),
        })
    }

    /// Waits for the next datagram.
    pub async fn read_datagram(&self) -> Result<Bytes, Error> {
        match &self.inner {
            Backend::Quinn(q) => q.read_datagram().await.map_err(|e| self.session_error(e)),
            Backend::Batched(c) => c.read_datagram().await.map_err(|e| self.lost(e)),
        }
    }

    /// The largest datagram payload that can be sent now, 0 if the peer accepts none.
    pub fn max_datagram_size(&self) -> usize {
        match &self.inner {
            Backend::Quinn(q) => q.max_datagram_size(),
            Backend::Batched(c) => c.max_datagram_size(),
        }
    }

    /// Closes the session with a MoQT termination code and a reason phrase; the peer sees
    /// both. Over raw QUIC this is a CONNECTION_CLOSE; over WebTransport a
    /// CLOSE_WEBTRANSPORT_SESSION capsule, whose code is 32 bits (larger codes are sent as
    /// `0xffff_ffff`). A second close does nothing.
    pub fn close(&self, code: u64, reason: &str) {
        let q = match &self.inner {
            Backend::Quinn(q) => q,
            Backend::Batched(c) => {
                if c.close_reason().is_some() {
                    return;
                }
                let _ = self.shared.local_close.set(CloseReason::Application {
                    by: Side::Local,
                    code,
                    reason: reason.to_owned(),
                });
                let code = quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX);
                c.close(code, reason.as_bytes());
                return;
            }
        };
        if q.close_reason().is_some() {
            return;
        }
        let _ = self.shared.local_close.set(CloseReason::Application {
            by: Side::Local,
            code,
            reason: reason.to_owned(),
        });
        match self.kind {
            Kind::RawQuic => {
                // Straight to QUIC: the whole 62-bit code range fits in CONNECTION_CLOSE.
                let code = quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX);
                let conn: &quinn::Connection = q;
                conn.close(code, reason.as_bytes());
            }
            Kind::WebTransport => {
                q.close(u32::try_from(code).unwrap_or(u32::MAX), reason.as_bytes());
            }
        }
    }

    /// Waits until the session has ended and says why.
    pub async fn closed(&self) -> CloseReason {
        match &self.inner {
            Backend::Quinn(q) => {
                let e = q.closed().await;
                self.reason_of(&e)
            }
            Backend::Batched(c) => {
                let e = c.closed().await;
                self.reason_of_conn(&e)
            }
        }
    }

    /// Why the session ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match &self.inner {
            Backend::Quinn(q) => {
                let e = q.close_reason()?;
                Some(self.reason_of(&e))
            }
            Backend::Batched(c) => Some(self.reason_of_conn(&c.close_reason()?)),
        }
    }

    /// Connection figures now.
    pub fn stats(&self) -> Stats {
        let s = match &self.inner {
            Backend::Quinn(q) => {
                let conn: &quinn::Connection = q;
                conn.stats()
            }
            Backend::Batched(c) => c.stats(),
        };
        let rtt = s.path.rtt;
        let cwnd = s.path.cwnd;
        let pacing = if self.shared.pacing.get() == Some(&false) {
            None
        } else {
            let rate = match &self.inner {
                Backend::Quinn(q) => q.congestion_state().metrics().pacing_rate,
                Backend::Batched(c) => c.pacing_rate(),
            };
            let _ = self.shared.pacing.set(rate.is_some());
            rate
        };
        let per_rtt = if rtt.is_zero() {
            0
        } else {
            (cwnd as u128 * 8 * 1_000_000 / rtt.as_micros().max(1)) as u64
        };
        Stats {
            rtt,
            min_rtt: s.path.min_rtt,
            cwnd,
            bytes_sent: s.udp_tx.bytes,
            bytes_received: s.udp_rx.bytes,
            bytes_lost: s.path.lost_bytes,
            packets_sent: s.path.sent_packets,
            packets_lost: s.path.lost_packets,
            congestion_events: s.path.congestion_events,
            mtu: s.path.current_mtu,
            send_rate_estimate_bps: pacing.unwrap_or(per_rtt),
        }
    }

    fn send(&self, inner: SendInner) -> SendStream {
        SendStream { inner, session: self.clone() }
    }

    fn recv(&self, inner: RecvInner) -> RecvStream {
        RecvStream { inner, session: self.clone(), counted: None }
    }

    /// Why a session of the batched driver ended: our own close's code and reason when we
    /// closed it, else what QUIC reported.
    fn reason_of_conn(&self, e: &driver::ConnectionError) -> CloseReason {
        if let Some(local) = self.shared.local_close.get() {
            return local.clone();
        }
        CloseReason::from_quinn(e, Kind::RawQuic)
    }

    /// The error for an operation of the batched driver that failed because the connection
    /// ended.
    fn lost(&self, e: driver::ConnectionError) -> Error {
        Error::Closed(self.reason_of_conn(&e))
    }

    fn reason_of(&self, e: &wt::SessionError) -> CloseReason {
        if let Some(local) = self.shared.local_close.get() {
            return local.clone();
        }
        match e {
            wt::SessionError::WebTransportError(wt::WebTransportError::Closed(code, reason)) => {
                CloseReason::Application {
                    by: Side::Peer,
                    code: u64::from(*code),
                    reason: reason.clone(),
                }
            }
            wt::SessionError::ConnectionError(c)
            | wt::SessionError::SendDatagramError(quinn::SendDatagramError::ConnectionLost(c)) => {
                match (c, self.kind) {
                    // The library closes the QUIC connection itself when the peer ends the
                    // CONNECT stream without a close capsule.
                    (quinn::ConnectionError::LocallyClosed, Kind::WebTransport) => {
                        CloseReason::Application {
                            by: Side::Peer,
                            code: 0,
                            reason: "the peer ended the WebTransport session".into(),
                        }
                    }
                    (c, kind) => CloseReason::from_quinn(c, kind),
                }
            }
            other => CloseReason::Other(other.to_string()),
        }
    }

    /// The error for an operation that failed because of the session, not the stream.
    fn session_error(&self, e: wt::SessionError) -> Error {
        let closed = match &self.inner {
            Backend::Quinn(q) => q.close_reason(),
            Backend::Batched(c) => {
                return c
                    .close_reason()
                    .map_or_else(|| Error::Protocol(e.to_string()), |c| self.lost(c));
            }
        };
        match closed {
            Some(c) => Error::Closed(self.reason_of(&c)),
            None => match e {
                wt::SessionError::WebTransportError(wt::WebTransportError::Closed(..))
                | wt::SessionError::ConnectionError(_) => Error::Closed(self.reason_of(&e)),
                other => Error::Protocol(other.to_string()),
            },
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("kind", &self.kind)
            .field("peer", &self.peer())
            .field("path", &self.path())
            .field("protocol", &self.protocol())
            .finish()
    }
}

/// The sending half of a stream.
///
/// Dropping it finishes the stream gracefully; call [`reset`](Self::reset) to abandon it.
pub struct SendStream {
    inner: SendInner,
    session: Session,
}

enum SendInner {
    Quinn(wt::SendStream),
    Batched(driver::SendStream),
}

impl SendStream {
    /// Writes some of `buf`, returning how many bytes were taken (waits for flow control).
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.write(buf).await.map_err(|e| self.error(e)),
            SendInner::Batched(s) => std::future::poll_fn(|cx| s.poll_write(cx, buf))
                .await
                .map_err(|e| self.batched_error(e)),
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.write_all(buf).await.map_err(|e| self.error(e)),
            SendInner::Batched(s) => s.write_all(buf).await.map_err(|e| self.batched_error(e)),
        }
    }

    /// Writes a whole chunk without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.write_chunk(chunk).await.map_err(|e| self.error(e)),
            SendInner::Batched(s) => {
                s.write_all_chunks(&mut [chunk]).await.map_err(|e| self.batched_error(e))
            }
        }
    }

    /// Writes as much of `chunks` as QUIC takes now without waiting, advancing them past
    /// what was taken; `None` when flow control takes nothing now (nothing was written).
    pub fn try_write_chunks(&mut self, chunks: &mut [Bytes]) -> Option<Result<usize, Error>> {
        use futures::FutureExt;
        let written = match &mut self.inner {
            // quinn's `write_chunks` is cancel-safe: when it does not resolve, nothing was
            // written, so polling it once and dropping it loses nothing.
            SendInner::Quinn(s) => match s.write_chunks(chunks).now_or_never()? {
                Ok(written) => Ok(written.bytes),
                Err(e) => Err(self.error(e)),
            },
            // Polled once without a task to wake: a stream that takes nothing now is left
            // as it was (a later write registers a real waker).
            SendInner::Batched(s) => {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match s.poll_write_chunks(&mut cx, chunks) {
                    std::task::Poll::Pending => return None,
                    std::task::Poll::Ready(Ok(n)) => Ok(n),
                    std::task::Poll::Ready(Err(e)) => Err(self.batched_error(e)),
                }
            }
        };
        Some(written)
    }

    /// Writes several chunks without copying them.
    pub async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.write_all_chunks(chunks).await.map_err(|e| self.error(e)),
            SendInner::Batched(s) => {
                s.write_all_chunks(chunks).await.map_err(|e| self.batched_error(e))
            }
        }
    }

    /// Sets the send priority among this session's streams. **Higher values are sent
    /// first** (QUIC's order, the opposite of MoQT's where lower numbers are more
    /// important): the MoQT layer maps its priorities onto this. Streams of equal priority
    /// share the link round-robin.
    pub fn set_priority(&self, priority: i32) -> Result<(), Error> {
        match &self.inner {
            SendInner::Quinn(s) => s.set_priority(priority).map_err(|_| Error::StreamClosed),
            SendInner::Batched(s) => s.set_priority(priority).map_err(|()| Error::StreamClosed),
        }
    }

    /// Ends the stream: everything written is still delivered.
    pub fn finish(&mut self) -> Result<(), Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.finish().map_err(|_| Error::StreamClosed),
            SendInner::Batched(s) => s.finish().map_err(|()| Error::StreamClosed),
        }
    }

    /// Abandons the stream: unsent data is dropped and the peer's reads fail with `code`.
    /// Stream codes are 32 bits on both transports (WebTransport's range), so a code means
    /// the same over raw QUIC and WebTransport.
    pub fn reset(&mut self, code: u32) -> Result<(), Error> {
        match &mut self.inner {
            SendInner::Quinn(s) => s.reset(code).map_err(|_| Error::StreamClosed),
            SendInner::Batched(s) => s.reset(code.into()).map_err(|()| Error::StreamClosed),
        }
    }

    /// Waits until the peer has read everything (`Ok(None)`) or asked us to stop
    /// (`Ok(Some(code))`).
    pub async fn stopped(&self) -> Result<Option<u32>, Error> {
        match &self.inner {
            SendInner::Quinn(s) => s.stopped().await.map_err(|e| self.session.session_error(e)),
            SendInner::Batched(s) => match s.stopped().await {
                Ok(None) => Ok(None),
                Ok(Some(code)) => stream_code(code).map(Some).ok_or_else(|| {
                    Error::Protocol(format!(
                        "the peer stopped the stream with a code outside the WebTransport \
                         range: {code}"
                    ))
                }),
                Err(e) => Err(self.session.lost(e)),
            },
        }
    }

    fn error(&self, e: wt::WriteError) -> Error {
        match e {
            wt::WriteError::Stopped(code) => Error::Stopped { code },
            wt::WriteError::InvalidStopped(code) => Error::Protocol(format!(
                "the peer stopped the stream with a code outside the WebTransport range: {code}"
            )),
            wt::WriteError::SessionError(e) => self.session.session_error(e),
            wt::WriteError::ClosedStream => Error::StreamClosed,
        }
    }

    fn batched_error(&self, e: driver::WriteError) -> Error {
        match e {
            driver::WriteError::Stopped(code) => match stream_code(code) {
                Some(code) => Error::Stopped { code },
                None => Error::Protocol(format!(
                    "the peer stopped the stream with a code outside the WebTransport range: \
                     {code}"
                )),
            },
            driver::WriteError::ClosedStream => Error::StreamClosed,
            driver::WriteError::Lost(e) => self.session.lost(e),
        }
    }
}

impl fmt::Debug for SendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendStream").finish_non_exhaustive()
    }
}

/// The receiving half of a stream.
pub struct RecvStream {
    inner: RecvInner,
    session: Session,
    /// The direction it counts against in the peer's stream limits, when the peer opened it.
    counted: Option<usize>,
}

enum RecvInner {
    Quinn(wt::RecvStream),
    Batched(driver::RecvStream),
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if let Some(dir) = self.counted {
            self.session.shared.limits.closed(dir);
        }
    }
}

impl RecvStream {
    /// Reads the next chunk of at most `max` bytes, in order, without copying; `None` at
    /// the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, Error> {
        match &mut self.inner {
            RecvInner::Quinn(s) => match s.read_chunk(max, true).await {
                Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
                Err(e) => Err(self.error(e)),
            },
            RecvInner::Batched(s) => s.read_chunk(max).await.map_err(|e| self.batched_error(e)),
        }
    }

    /// Reads into `buf`, returning how many bytes were read; `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        match &mut self.inner {
            RecvInner::Quinn(s) => s.read(buf).await.map_err(|e| self.error(e)),
            RecvInner::Batched(s) => s.read(buf).await.map_err(|e| self.batched_error(e)),
        }
    }

    /// Reads the whole stream, refusing one longer than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, Error> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.read_chunk(64 * 1024).await? {
            if out.len() + chunk.len() > limit {
                return Err(Error::TooLong { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Asks the peer to stop sending, with a 32-bit code (see [`SendStream::reset`]).
    pub fn stop(&mut self, code: u32) -> Result<(), Error> {
        match &mut self.inner {
            RecvInner::Quinn(s) => s.stop(code).map_err(|_| Error::StreamClosed),
            RecvInner::Batched(s) => s.stop(code.into()).map_err(|()| Error::StreamClosed),
        }
    }

    fn error(&self, e: wt::ReadError) -> Error {
        match e {
            wt::ReadError::Reset(code) => Error::Reset { code },
            wt::ReadError::InvalidReset(code) => Error::Protocol(format!(
                "the peer reset the stream with a code outside the WebTransport range: {code}"
            )),
            wt::ReadError::SessionError(e) => self.session.session_error(e),
            wt::ReadError::ClosedStream => Error::StreamClosed,
            wt::ReadError::IllegalOrderedRead => {
                Error::Protocol("ordered read on an unordered stream".into())
            }
        }
    }

    fn batched_error(&self, e: driver::ReadError) -> Error {
        match e {
            driver::ReadError::Reset(code) => match stream_code(code) {
                Some(code) => Error::Reset { code },
                None => Error::Protocol(format!(
                    "the peer reset the stream with a code outside the WebTransport range: {code}"
                )),
            },
            driver::ReadError::ClosedStream => Error::StreamClosed,
            driver::ReadError::Lost(e) => self.session.lost(e),
        }
    }
}

impl fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit grows once a quarter of it is held, leaving three quarters for the streams
    /// the peer has opened that are still on their way (see `GROW_AT_ONE_IN`).
    #[test]
    fn stream_limit_grows_when_a_quarter_is_in_use() {
        let limits = StreamLimits::new(16, 100, 1000);
        for _ in 0..3 {
            assert_eq!(limits.opened(UNI), None);
        }
        assert_eq!(limits.opened(UNI), Some(64), "the 4th of 16");
        for _ in 4..15 {
            assert_eq!(limits.opened(UNI), None, "under 16 of 64 open");
        }
        assert_eq!(limits.opened(UNI), Some(256), "16 of 64 open");
        // Streams that closed no longer count.
        for _ in 0..16 {
            limits.closed(UNI);
        }
        for _ in 0..63 {
            assert_eq!(limits.opened(UNI), None);
        }
        assert_eq!(limits.opened(UNI), Some(1000), "64 of 256 open; capped at the maximum");
        assert_eq!(limits.opened(UNI), None, "at the maximum");
        // Each direction on its own.
        assert_eq!(limits.opened(BI), None);
    }

    /// A publisher's limit is raised at once, never lowered, and capped at the maximum.
    #[test]
    fn publisher_limit_is_raised_at_once() {
        let limits = StreamLimits::new(16, 100, 1000);
        assert_eq!(limits.raise(UNI, 256), Some(256));
        assert_eq!(limits.raise(UNI, 256), None, "already raised");
        assert_eq!(limits.raise(UNI, 64), None, "never lowered");
        // Growth goes on from the raised limit: 64 of 256 held.
        for _ in 0..63 {
            assert_eq!(limits.opened(UNI), None);
        }
        assert_eq!(limits.opened(UNI), Some(1000));
        let small = StreamLimits::new(16, 100, 100);
        assert_eq!(small.raise(UNI, 256), Some(100), "capped at the maximum");
        assert_eq!(small.opened(BI), None, "bidirectional streams keep their limit");
    }

    /// A growth step decided before a raise but handed to quinn after it does not lower
    /// quinn's limit below the raise (quinn keeps the last value it is given, a lower one
    /// too, and would stop granting streams until fewer than that were open).
    #[test]
    fn a_late_growth_step_never_lowers_a_raise() {
        let limits = StreamLimits::new(16, 1000, 1000);
        let mut quinn = Vec::new();
        for _ in 0..3 {
            assert_eq!(limits.opened(UNI), None);
        }
        // The growth step to 64 is decided on the thread that accepted the 4th stream...
        assert_eq!(limits.opened(UNI), Some(64));
        // ...the publisher's raise to 256 is decided and applied on another...
        assert_eq!(limits.raise(UNI, 256), Some(256));
        limits.apply(UNI, |v| quinn.push(v));
        // ...and only then is the growth step applied: it hands quinn 256, not 64.
        limits.apply(UNI, |v| quinn.push(v));
        assert_eq!(quinn, [256, 256]);

        // The same on two threads at once, many times: whatever the interleaving, the
        // value quinn is left with is the largest granted.
        for _ in 0..200 {
            let limits = Arc::new(StreamLimits::new(16, 1000, 1000));
            let quinn = Arc::new(Mutex::new(0u32));
            let grow = {
                let (limits, quinn) = (limits.clone(), quinn.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        if limits.opened(UNI).is_some() {
                            limits.apply(UNI, |v| *quinn.lock().unwrap() = v);
                        }
                    }
                })
            };
            if limits.raise(UNI, 256).is_some() {
                limits.apply(UNI, |v| *quinn.lock().unwrap() = v);
            }
            grow.join().unwrap();
            let granted = limits.current[UNI].load(Ordering::Relaxed);
            assert!(granted >= 256);
            assert_eq!(*quinn.lock().unwrap(), granted, "quinn left below the granted limit");
        }
    }
}
