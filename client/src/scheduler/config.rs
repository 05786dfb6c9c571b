//! Settings of a [`Scheduler`](super::Scheduler) and the send budget a driver passes in.

use std::time::Duration;

/// How the scheduler picks what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The draft's priority order (§7.2) with fair sharing between tracks of equal
    /// priority, delivery timeouts, capture-age and stale-group drops. The default.
    #[default]
    Priority,
    /// Every object in arrival order across all streams, nothing ever dropped, one quinn
    /// priority for every stream: the baseline the benchmarks compare against.
    Fifo,
}

/// The default end-to-end capture-age budget: an object older than this since its capture
/// is not worth forwarding in a conversation (DESIGN: far below 500 ms glass to glass, with
/// room for the encoder, the jitter buffer and the decoder on top of the network).
pub const DEFAULT_CAPTURE_AGE_BUDGET: Duration = Duration::from_millis(800);

/// The default smallest headroom, in bytes: three full-size QUIC packets, so that QUIC can
/// always build full packets (and a GSO batch) even when the congestion window is at its
/// minimum of two packets. On a 1 Mbit/s link it adds at most 33 ms of queueing.
pub const DEFAULT_HEADROOM_MIN: u64 = 4 * 1024;

/// The default headroom as a fraction of the congestion window: one quarter. Bytes beyond
/// the window wait in QUIC for acknowledgements; a quarter window is what the link sends in a
/// quarter RTT, which bounds the delay that committed bytes can add in front of a more
/// important object to RTT/4, while covering the time between an acknowledgement opening
/// the window and the driver's next wake-up.
pub const DEFAULT_HEADROOM_DIVISOR: u64 = 4;

/// The default fair-share quantum, in bytes: what one track may send before the next track
/// of the same priority gets its turn. Eight full packets: small enough that two tracks
/// interleave within a few milliseconds on any real link, large enough that the rotation
/// costs little per byte. It is also the largest chunk handed out in one write, so a
/// large key frame never keeps a more important object waiting behind one huge write.
pub const DEFAULT_QUANTUM: u64 = 8 * 1200;

/// The smallest write, in bytes, unless it ends an object or a header: about one packet's
/// payload. Smaller budgets wait for QUIC to drain rather than trickle tiny writes.
pub(crate) const MIN_WRITE: u64 = 1200;

/// Settings of a scheduler. `Default` plus chained setters:
///
/// ```
/// use std::time::Duration;
/// use tiermesh_client::scheduler::{Mode, SchedulerConfig};
///
/// let config = SchedulerConfig::default()
///     .mode(Mode::Priority)
///     .capture_age_budget(Some(Duration::from_millis(600)));
/// assert_eq!(config.get_headroom(100_000), 25_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub(crate) mode: Mode,
    pub(crate) capture_age_budget: Option<Duration>,
    pub(crate) headroom_divisor: u64,
    pub(crate) headroom_min: u64,
    pub(crate) quantum: u64,
    pub(crate) tier_share: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            mode: Mode::Priority,
            capture_age_budget: Some(DEFAULT_CAPTURE_AGE_BUDGET),
            headroom_divisor: DEFAULT_HEADROOM_DIVISOR,
            headroom_min: DEFAULT_HEADROOM_MIN,
            quantum: DEFAULT_QUANTUM,
            tier_share: true,
        }
    }
}

impl SchedulerConfig {
    /// Priority (default) or FIFO.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Objects whose capture age (from their LOC timestamp) would exceed this before they
    /// are started are dropped; `None` turns the check off. Default 800 ms. It applies only
    /// to streams that have a delivery timeout (see the module docs).
    pub fn capture_age_budget(mut self, budget: Option<Duration>) -> Self {
        self.capture_age_budget = budget;
        self
    }

    /// Headroom beyond what the congestion window can take now: `max(cwnd / divisor, min)`
    /// bytes. Defaults: divisor 4, min 4 KiB. A divisor of 0 counts as 1.
    pub fn headroom(mut self, divisor: u64, min: u64) -> Self {
        self.headroom_divisor = divisor.max(1);
        self.headroom_min = min;
        self
    }

    /// Fair-share quantum and largest single write, in bytes (default 9600; at least 1).
    pub fn quantum(mut self, bytes: u64) -> Self {
        self.quantum = bytes.max(1);
        self
    }

    /// Whether the deadline check gives an upper video tier only what the more important
    /// levels leave of the path's rate (default on). The send path turns it off for a
    /// loss-based controller (CUBIC, NewReno, BBR): their window per RTT already reads
    /// under the path after each loss cut, so the share held back video the link would
    /// have carried (satellite, subscriber side: goodput 23.0-34.9% with it against
    /// 32.2-40.7% without, 7 pairs).
    pub fn tier_share(mut self, on: bool) -> Self {
        self.tier_share = on;
        self
    }

    /// The mode.
    pub fn get_mode(&self) -> Mode {
        self.mode
    }

    /// The capture-age budget.
    pub fn get_capture_age_budget(&self) -> Option<Duration> {
        self.capture_age_budget
    }

    /// The headroom for a congestion window of `cwnd` bytes.
    pub fn get_headroom(&self, cwnd: u64) -> u64 {
        (cwnd / self.headroom_divisor).max(self.headroom_min)
    }
}

/// What the transport can take now, measured by the driver at each wake-up and passed to
/// [`Scheduler::poll_send`](super::Scheduler::poll_send), which adds every byte it hands out
/// to `buffered`.
///
/// The scheduler hands out at most `cwnd_available + headroom(cwnd) - buffered` bytes, so
/// what waits unsent inside QUIC stays within what the window can carry now plus the
/// headroom, and the scheduler, not a deep buffer, decides what leaves next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendBudget {
    /// The congestion window, in bytes (`transport::Stats::cwnd`).
    pub cwnd: u64,
    /// Bytes the congestion window can take now (window minus bytes in flight); 0 when
    /// unknown, which keeps the buffer at the headroom alone.
    pub cwnd_available: u64,
    /// Bytes written to QUIC streams and not yet sent.
    pub buffered: u64,
    /// The estimated send rate in bits per second (`transport::Stats::send_rate_estimate_bps`);
    /// 0 when unknown. With it the scheduler does not start an object that cannot leave
    /// before its deadline.
    pub send_rate_bps: u64,
}

impl SendBudget {
    /// Bytes the scheduler may still hand out under `config`.
    pub fn allowance(&self, config: &SchedulerConfig) -> u64 {
        (self.cwnd_available.saturating_add(config.get_headroom(self.cwnd)))
            .saturating_sub(self.buffered)
    }

    /// How long the transport needs to send `bytes` more after what it holds now, if the
    /// rate is known.
    pub(crate) fn time_to_send(&self, bytes: u64) -> Option<Duration> {
        if self.send_rate_bps == 0 {
            return None;
        }
        let bits = (self.buffered.saturating_add(bytes) as u128) * 8;
        let nanos = bits * 1_000_000_000 / self.send_rate_bps as u128;
        Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}
