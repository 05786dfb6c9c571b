//! Transport tuning shared by the server and the client side.

use std::sync::Arc;
use std::time::Duration;

/// The congestion controller a connection uses (`cubic`, `bbr`, `newreno` or `delay` in
/// configuration files and on the command line).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CongestionControl {
    /// CUBIC (RFC 9438): the most widely deployed controller and the one whose behaviour
    /// against competing TCP and QUIC flows is best understood; the one to choose for links
    /// shared with loss-based flows, which a delay-based controller yields to.
    Cubic,
    /// BBR (v1 as quinn implements it): probes for bandwidth and RTT instead of reacting to
    /// loss, keeping queues short on links with random loss. Still marked experimental in
    /// quinn.
    Bbr,
    /// NewReno (RFC 9002): the reference controller, for comparisons.
    #[value(name = "newreno", alias = "new-reno", alias = "reno")]
    #[serde(alias = "new-reno", alias = "reno")]
    NewReno,
    /// tiermesh's delay-based controller, the default: keeps the bottleneck's queue near
    /// 15-30 ms of round-trip time above the least seen, and backs off on loss only when the
    /// queue was long too, so random loss costs little. Measured against cubic on every link
    /// profile (docs/ARCHITECTURE.md, "`delay` is the default").
    #[default]
    Delay,
}

impl std::str::FromStr for CongestionControl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cubic" => Ok(Self::Cubic),
            "bbr" => Ok(Self::Bbr),
            "newreno" | "new-reno" | "reno" => Ok(Self::NewReno),
            "delay" => Ok(Self::Delay),
            other => Err(format!(
                "unknown congestion controller `{other}`: expected cubic, bbr, newreno or delay"
            )),
        }
    }
}

/// What drives a server endpoint's connections (`quinn` or `batched` in configuration files
/// and on the command line).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportDriver {
    /// quinn's async layer: a driver task, a channel and a timer per connection. Serves raw
    /// QUIC and WebTransport and dials out. The default.
    #[default]
    Quinn,
    /// One task drives every connection through quinn-proto: batched receives (GRO,
    /// `recvmmsg`), one timer structure, one flush of every touched connection with GSO.
    /// Opt-in and server-side only: raw QUIC (`moqt-16`) is served, WebTransport clients
    /// are refused with a reason, and the endpoint does not dial out
    /// (docs/ARCHITECTURE.md, "The batched transport driver").
    Batched,
}

impl std::str::FromStr for TransportDriver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "quinn" => Ok(Self::Quinn),
            "batched" => Ok(Self::Batched),
            other => Err(format!("unknown transport driver `{other}`: expected quinn or batched")),
        }
    }
}

impl std::fmt::Display for TransportDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quinn => "quinn",
            Self::Batched => "batched",
        })
    }
}

/// The least stream limit a client grants its server from the start, each direction (the
/// configured initial limit, 16 by default, keeps a relay's idle subscribers cheap). A relay
/// that starts a subscription opens an audio stream every 20 ms plus video groups, and on a
/// 600 ms round trip (`satellite`) it used up 16 and then 64 before a grown limit reached it:
/// its new audio streams waited for credit through most of the first two seconds. A client
/// holds one connection, so the table entries (about 40 bytes each) cost it some 14 KiB.
pub(crate) const CLIENT_INITIAL_STREAMS: u32 = 256;

/// The max_ack_delay peers are asked for along with the ACK frequency: an ack-eliciting
/// packet is acknowledged at most this long after it arrived (or at once when
/// [`TransportConfig::ack_eliciting_threshold`] more have arrived). quinn would otherwise ask
/// for the peer's own max_ack_delay, 25 ms. On a slow link the packet count is never
/// reached (8 packets are 93 ms at 1 Mbit/s), so the delay decides: with 25 ms a `rural`
/// receiver acknowledged every 2-3 packets in batches, the sender's window reopened and its
/// RTT samples arrived 25 ms late, and cubic kept a longer queue. With 5 ms nearly every
/// packet is acknowledged within 5 ms. On loopback fan-out an object's packets mostly
/// arrive together and are acknowledged once either way (measured: the same datagrams per
/// delivered object; relay CPU per object within the noise of a shared machine, see
/// docs/BENCHMARKS.md, rural). quinn 0.11 cannot ask for a delay that follows the path's
/// RTT (it requests the least of this value and the larger of the RTT and 25 ms). A
/// connection busier than 8 packets per 5 ms (1 600 a second) still acknowledges every 8th
/// packet. The PTO, which adds this delay, shrinks by 20 ms too.
pub(crate) const ACK_MAX_DELAY: Duration = Duration::from_millis(5);

/// The reordering threshold peers are asked for along with the ACK frequency (RFC 9000's own
/// rule): a packet that arrives after a gap is acknowledged at once. quinn's default for the
/// extension (2) waits for a second packet beyond the gap, or for the peer's max_ack_delay
/// (25 ms) when the sender is waiting on its window: on `rural` (a packet every 12 ms) the
/// ACK that shows a loss came 20-95 ms after the round trip. Paths that lose nothing and
/// keep order (loopback fan-out) see no gap, so this costs them no extra ACK.
pub(crate) const ACK_REORDERING_THRESHOLD: u32 = 1;

/// How long after a later packet's acknowledgement an unacknowledged packet is declared
/// lost, as a multiple of the round trip (RFC 9002's kTimeThreshold is 9/8): 1.0 declares it
/// lost once the ACK that shows the gap arrives, instead of an eighth of a round trip later
/// (20-25 ms on `rural`), and every stream frame behind it on its stream waits that much
/// less. What is given up is tolerance of reordering by less than an eighth of a round trip,
/// which paths that keep packet order (the link profiles, most access links) do not need; a
/// reordered packet costs a spurious retransmission of its frames.
pub(crate) const LOSS_TIME_THRESHOLD: f32 = 1.0;

/// QUIC transport settings for real-time media, and the MoQT versions offered.
///
/// `Default` gives values suited to live media; each setter changes one of them:
///
/// ```
/// use std::time::Duration;
/// use tiermesh_client::transport::{CongestionControl, TransportConfig};
///
/// let config = TransportConfig::default()
///     .idle_timeout(Duration::from_secs(5))
///     .congestion(CongestionControl::Bbr);
/// assert_eq!(config.get_idle_timeout(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct TransportConfig {
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    handshake_timeout: Duration,
    max_concurrent_uni_streams: u32,
    max_concurrent_bidi_streams: u32,
    initial_concurrent_streams: u32,
    stream_receive_window: u32,
    receive_window: u64,
    send_window: u64,
    datagram_receive_buffer: usize,
    datagram_send_buffer: usize,
    ack_eliciting_threshold: u32,
    congestion: CongestionControl,
    initial_window: Option<u64>,
    protocols: Vec<String>,
    driver: TransportDriver,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            // A peer silent for 10 s is gone: far beyond any RTT we serve (the glass-to-glass
            // budget is 500 ms), short enough that a relay frees a dead subscriber quickly.
            idle_timeout: Duration::from_secs(10),
            // A PING every 3 s keeps an idle session (a subscriber waiting for a broadcast to
            // start) and its NAT binding alive; three can be lost before the idle timeout.
            keep_alive: Some(Duration::from_secs(3)),
            // The QUIC handshake plus, over WebTransport, the HTTP/3 SETTINGS and CONNECT
            // exchange: a few RTTs. 10 s bounds what a client that never sends CONNECT costs.
            handshake_timeout: Duration::from_secs(10),
            // MoQT sends each subgroup (a group of a track, for us) on its own
            // unidirectional stream, and audio starts a group every 20 ms: 50 new streams a
            // second per audio track. A stream stays open until the peer has read it, so with
            // ~0.5 s in flight one broadcast (audio plus one or two video groups) holds ~30.
            // A mesh link carries dozens of broadcasts, and a slow link holds streams until
            // their delivery timeout: 1000 leaves room for ~30 broadcasts on one connection.
            // The limit only grants credit; memory is spent per open stream, bounded by the
            // windows below.
            max_concurrent_uni_streams: 1000,
            // Bidirectional streams carry the control stream and SUBSCRIBE_NAMESPACE
            // requests: a handful per session.
            max_concurrent_bidi_streams: 100,
            // quinn keeps a table entry (about 40 bytes with the hash table's slack) for every
            // stream the peer is allowed to open, from the start: at the maxima above that is
            // some 50 KiB per connection, most of an idle subscriber's cost, while a
            // subscriber opens one or two bidirectional streams and no unidirectional one.
            // So the peer starts with 16 of each (room for a control stream, WebTransport's
            // HTTP/3 streams and a burst of subgroups) and the limit grows fourfold whenever
            // a quarter of it is in use, up to the maxima: a publisher's first burst waits at most
            // a round trip for the larger limit.
            initial_concurrent_streams: 16,
            // One group of the top tier (a 2 s GOP at 6 Mbit/s is 1.5 MB) may be in flight on
            // one stream; 2 MiB lets it flow without stalling on flow control.
            stream_receive_window: 2 * 1024 * 1024,
            // Bounds the memory one peer can make us buffer across all its streams: 16 MiB is
            // more than a second of every tier of a few broadcasts.
            receive_window: 16 * 1024 * 1024,
            // Bytes written into QUIC are committed (the send scheduler can no longer drop
            // them), so this stays near the bandwidth-delay product rather than a large
            // buffer: 4 MiB covers 80 Mbit/s at 400 ms RTT.
            send_window: 4 * 1024 * 1024,
            // Datagrams are enabled; 1 MiB of receive and send buffer each is a few hundred
            // full-size datagrams, enough for bursts of a key frame.
            datagram_receive_buffer: 1024 * 1024,
            datagram_send_buffer: 1024 * 1024,
            // ACK frequency (draft-ietf-quic-ack-frequency, which quinn peers support): by
            // default a receiver acknowledges every second packet, so a relay fanning out
            // media processes an ACK per two packets per subscriber, a large share of its CPU
            // per object. Asking peers to acknowledge every 8th ack-eliciting packet (or
            // after ACK_MAX_DELAY, 5 ms, whichever comes first) cuts that work; a packet
            // that arrives after a gap is acknowledged at once (ACK_REORDERING_THRESHOLD),
            // so loss detection is not delayed. Peers without the extension (browsers) keep
            // their own ACK policy.
            ack_eliciting_threshold: 8,
            congestion: CongestionControl::Delay,
            // The controller's own (`delay`'s 14 720 bytes; quinn's cubic and newreno: 12 000,
            // ten of its 1 200-byte base datagrams): a client's link may have a queue of a
            // few packets (`congested`'s holds 7.5 KB), and a larger first burst would
            // overflow it.
            initial_window: None,
            protocols: vec![tiermesh_proto::ALPN.to_owned()],
            driver: TransportDriver::Quinn,
        }
    }
}

impl TransportConfig {
    /// How long a silent peer is waited for before the connection is closed (default 10 s).
    pub fn idle_timeout(mut self, value: Duration) -> Self {
        self.idle_timeout = value;
        self
    }

    /// Interval between keep-alive PINGs, or `None` for no keep-alive (default 3 s).
    pub fn keep_alive(mut self, value: Option<Duration>) -> Self {
        self.keep_alive = value;
        self
    }

    /// Deadline for the QUIC handshake plus the WebTransport CONNECT exchange (default 10 s).
    pub fn handshake_timeout(mut self, value: Duration) -> Self {
        self.handshake_timeout = value;
        self
    }

    /// How many unidirectional streams the peer may have open at once (default 1000).
    pub fn max_concurrent_uni_streams(mut self, value: u32) -> Self {
        self.max_concurrent_uni_streams = value;
        self
    }

    /// How many bidirectional streams the peer may have open at once (default 100).
    pub fn max_concurrent_bidi_streams(mut self, value: u32) -> Self {
        self.max_concurrent_bidi_streams = value;
        self
    }

    /// How many streams of each direction the peer may open at first (default 16, at least
    /// 1). The limit grows fourfold whenever a quarter of it is in use, up to
    /// [`max_concurrent_uni_streams`](Self::max_concurrent_uni_streams) and
    /// [`max_concurrent_bidi_streams`](Self::max_concurrent_bidi_streams): each allowed stream
    /// costs memory from the start, which idle sessions should not pay. A connecting client
    /// (one connection) grants at least 256 from the start, so that a server starting media
    /// on a long round trip does not wait for the limit to grow.
    pub fn initial_concurrent_streams(mut self, value: u32) -> Self {
        self.initial_concurrent_streams = value.max(1);
        self
    }

    /// How many ack-eliciting packets a peer that supports the ACK frequency extension may
    /// receive before it must acknowledge (default 8; 1 is QUIC's usual every second
    /// packet, 0 acknowledges every packet). Fewer ACKs cost a sender less CPU. Unless it
    /// is 1, such peers are also asked to acknowledge within 5 ms of a packet's arrival and
    /// at once when a packet arrives after a gap, so that a loss is seen a round trip after
    /// it happened.
    pub fn ack_eliciting_threshold(mut self, value: u32) -> Self {
        self.ack_eliciting_threshold = value;
        self
    }

    /// Bytes the peer may send on one stream ahead of our reading (default 2 MiB).
    pub fn stream_receive_window(mut self, value: u32) -> Self {
        self.stream_receive_window = value;
        self
    }

    /// Bytes the peer may send across all streams ahead of our reading (default 16 MiB).
    pub fn receive_window(mut self, value: u64) -> Self {
        self.receive_window = value;
        self
    }

    /// Bytes we may have written but not yet had acknowledged (default 4 MiB).
    pub fn send_window(mut self, value: u64) -> Self {
        self.send_window = value;
        self
    }

    /// Receive and send buffer for datagrams, in bytes each (default 1 MiB).
    pub fn datagram_buffer(mut self, value: usize) -> Self {
        self.datagram_receive_buffer = value;
        self.datagram_send_buffer = value;
        self
    }

    /// The congestion controller (default [`CongestionControl::Delay`]).
    pub fn congestion(mut self, value: CongestionControl) -> Self {
        self.congestion = value;
        self
    }

    /// The congestion controller's window in bytes when a connection starts, or `None` for
    /// the controller's own (default; quinn's cubic and newreno start at 12 000 bytes, its
    /// bbr at 240 000, `delay` at 14 720). A connection that is
    /// idle after its handshake and then carries a burst (a relay's mesh link when the
    /// first subscription starts) otherwise needs a round trip per doubling to reach the
    /// media's rate. Applies to every controller.
    pub fn initial_window(mut self, value: Option<u64>) -> Self {
        self.initial_window = value;
        self
    }

    /// The MoQT versions offered (client) or accepted (server), most preferred first: the
    /// ALPN on raw QUIC and the WebTransport protocol (`WT-Available-Protocols`). Default:
    /// [`tiermesh_proto::ALPN`] alone.
    pub fn protocols<I, S>(mut self, value: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = value.into_iter().map(Into::into).collect();
        self
    }

    /// What drives a server endpoint's connections (default [`TransportDriver::Quinn`]);
    /// only [`Server::bind_with`](super::Server::bind_with) reads it.
    pub fn driver(mut self, value: TransportDriver) -> Self {
        self.driver = value;
        self
    }

    /// What drives a server endpoint's connections.
    pub fn get_driver(&self) -> TransportDriver {
        self.driver
    }

    /// The idle timeout.
    pub fn get_idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The handshake (and CONNECT) deadline.
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The settings a connecting client uses: the peer's initial stream limits at least
    /// [`CLIENT_INITIAL_STREAMS`].
    pub(crate) fn for_client(&self) -> Self {
        let mut c = self.clone();
        c.initial_concurrent_streams = c.initial_concurrent_streams.max(CLIENT_INITIAL_STREAMS);
        c
    }

    /// The stream limits a session starts with and grows to.
    pub(crate) fn stream_limits(&self) -> super::session::StreamLimits {
        super::session::StreamLimits::new(
            self.initial_concurrent_streams,
            self.max_concurrent_bidi_streams,
            self.max_concurrent_uni_streams,
        )
    }

    /// The congestion controller.
    pub fn get_congestion(&self) -> CongestionControl {
        self.congestion
    }

    /// The MoQT versions offered or accepted.
    pub fn get_protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Builds quinn's transport configuration.
    pub(crate) fn quinn(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        // An idle timeout above QUIC's varint range is treated as "as long as possible".
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::MAX));
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .max_concurrent_uni_streams(
                self.initial_concurrent_streams.min(self.max_concurrent_uni_streams).into(),
            )
            .max_concurrent_bidi_streams(
                self.initial_concurrent_streams.min(self.max_concurrent_bidi_streams).into(),
            )
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(
                quinn::VarInt::from_u64(self.receive_window).unwrap_or(quinn::VarInt::MAX),
            )
            .send_window(self.send_window)
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer);
        if self.ack_eliciting_threshold != 1 {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(self.ack_eliciting_threshold.into())
                .reordering_threshold(ACK_REORDERING_THRESHOLD.into())
                .max_ack_delay(Some(ACK_MAX_DELAY));
            t.ack_frequency_config(Some(ack));
        }
        t.time_threshold(LOSS_TIME_THRESHOLD);
        t.congestion_controller_factory(self.controller_factory());
        Arc::new(t)
    }

    /// The factory of the configured congestion controller, with the initial window set.
    fn controller_factory(&self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        match self.congestion {
            CongestionControl::Cubic => {
                let mut c = CubicConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                Arc::new(c)
            }
            CongestionControl::Bbr => {
                let mut c = BbrConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                Arc::new(c)
            }
            CongestionControl::NewReno => {
                let mut c = NewRenoConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                Arc::new(c)
            }
            CongestionControl::Delay => {
                let mut c = super::delay_cc::DelayConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                Arc::new(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_names_parse_and_unknown_names_say_what_is_accepted() {
        assert_eq!("BBR".parse::<CongestionControl>(), Ok(CongestionControl::Bbr));
        assert_eq!("cubic".parse::<CongestionControl>(), Ok(CongestionControl::Cubic));
        assert_eq!("newreno".parse::<CongestionControl>(), Ok(CongestionControl::NewReno));
        assert_eq!("Delay".parse::<CongestionControl>(), Ok(CongestionControl::Delay));
        let err = "vegas".parse::<CongestionControl>().unwrap_err();
        assert!(err.contains("vegas") && err.contains("cubic, bbr, newreno or delay"), "{err}");
    }

    #[test]
    fn a_client_grants_its_server_a_larger_first_stream_limit() {
        let c = TransportConfig::default();
        assert_eq!(c.initial_concurrent_streams, 16, "servers keep idle sessions small");
        assert_eq!(c.for_client().initial_concurrent_streams, CLIENT_INITIAL_STREAMS);
        let large = c.initial_concurrent_streams(500);
        assert_eq!(large.for_client().initial_concurrent_streams, 500, "never lowered");
    }

    /// quinn's settings expose no getters; its `Debug` output names each one.
    #[test]
    fn peers_are_asked_to_report_a_gap_at_once_and_loss_is_declared_after_a_round_trip() {
        let quinn = format!("{:?}", TransportConfig::default().quinn());
        assert!(quinn.contains("time_threshold: 1.0,"), "{quinn}");
        assert!(quinn.contains("ack_eliciting_threshold: 8,"), "{quinn}");
        assert!(quinn.contains("max_ack_delay: Some(5ms)"), "{quinn}");
        assert!(quinn.contains("reordering_threshold: 1 }"), "{quinn}");
        // Threshold 1 is QUIC's own ACK policy: nothing is asked of the peer.
        let plain = format!("{:?}", TransportConfig::default().ack_eliciting_threshold(1).quinn());
        assert!(plain.contains("ack_frequency_config: None"), "{plain}");
        assert!(plain.contains("time_threshold: 1.0,"), "{plain}");
    }

    /// The window a new controller of each kind reports: the configured initial window, or
    /// the controller's own when none is set.
    #[test]
    fn the_initial_window_reaches_each_controller() {
        let window = |c: &TransportConfig| {
            c.controller_factory().build(std::time::Instant::now(), 1200).window()
        };
        let cubic = TransportConfig::default().congestion(CongestionControl::Cubic);
        assert_eq!(window(&cubic), 12_000, "quinn's own by default");
        assert_eq!(window(&cubic.initial_window(Some(64_000))), 64_000);
        for cc in [CongestionControl::Bbr, CongestionControl::NewReno, CongestionControl::Delay] {
            let set = TransportConfig::default().congestion(cc).initial_window(Some(64_000));
            assert_eq!(window(&set), 64_000, "{cc:?}");
        }
        let delay = TransportConfig::default();
        assert_eq!(window(&delay), 14_720, "`delay`'s own by default");
        // Below four packets (1 200 bytes each here) it keeps its least window.
        assert_eq!(window(&delay.initial_window(Some(1_000))), 4 * 1_200);
    }

    #[test]
    fn defaults_offer_the_one_moqt_version() {
        let c = TransportConfig::default();
        assert_eq!(c.get_protocols(), [tiermesh_proto::ALPN.to_owned()]);
        assert_eq!(c.get_congestion(), CongestionControl::Delay);
        // Building quinn's config must accept every default.
        let _ = c.quinn();
    }
}
