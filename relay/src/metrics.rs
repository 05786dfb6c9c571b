//! The relay's metrics, cheap to update from hot paths (relaxed atomics, no locks, no
//! allocation), rendered in the Prometheus text exposition format by [`Metrics::render`].
//!
//! Also [`Distribution`], a plain log-bucketed histogram with quantile estimates for reports
//! (`sub --json`, benchmarks). It depends on nothing else in the relay.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open sessions, live tracks).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in microseconds for millisecond-scale latency: 0.1 ms to 2 s, about
/// 2.5x apart. Forwarding inside one relay should sit in the sub-millisecond buckets; the
/// 250 ms to 2 s buckets show queueing on a congested link, where media is already too late
/// for a 500 ms glass-to-glass budget. Above 2 s is only counted (`+Inf`).
pub const LATENCY_BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_000_000,
];

/// Values of a [`Histogram`] with [`LATENCY_BUCKETS_US`]' bounds collected without atomics,
/// added to it at once by [`Histogram::add_tally`]: a relay's fan-out observes one value per
/// subscriber of an object and adds them up once per object.
#[derive(Debug, Default)]
pub struct HistogramTally {
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
}

impl HistogramTally {
    /// Records one value.
    pub fn observe(&mut self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }
}

/// A fixed-bucket histogram, updated with atomics, rendered as a Prometheus histogram in
/// seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds_us: &'static [u64],
    /// Per bucket (not cumulative); one extra for `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds in microseconds (ascending).
    pub fn new(bounds_us: &'static [u64]) -> Self {
        Self {
            bounds_us,
            buckets: (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: Duration) {
        self.observe_us(u64::try_from(value.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one value in microseconds.
    pub fn observe_us(&self, us: u64) {
        let i = self.bounds_us.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what `tally` recorded (values kept locally by one loop, so that each of its
    /// values costs no atomic operation), and clears it.
    pub fn add_tally(&self, tally: &mut HistogramTally) {
        if tally.count == 0 {
            return;
        }
        for (bucket, n) in self.buckets.iter().zip(tally.buckets.iter_mut()) {
            if *n > 0 {
                bucket.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        self.sum_us.fetch_add(tally.sum_us, Ordering::Relaxed);
        self.count.fetch_add(tally.count, Ordering::Relaxed);
        tally.sum_us = 0;
        tally.count = 0;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Cumulative counts per bound (`le`), the last one for `+Inf`.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect()
    }

    /// Estimates quantile `q` (0..=1) in microseconds by linear interpolation inside the
    /// bucket that holds it, as Prometheus's `histogram_quantile` does. `None` when empty;
    /// values in the `+Inf` bucket report the highest bound.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let cumulative = self.cumulative();
        let total = *cumulative.last()?;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
        let Some(&upper) = self.bounds_us.get(i) else {
            return self.bounds_us.last().map(|&b| b as f64);
        };
        let lower = if i == 0 { 0 } else { self.bounds_us[i - 1] };
        let below = if i == 0 { 0 } else { cumulative[i - 1] };
        let in_bucket = (cumulative[i] - below) as f64;
        let fraction = if in_bucket > 0.0 { (rank - below as f64) / in_bucket } else { 1.0 };
        Some(lower as f64 + (upper - lower) as f64 * fraction)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let cumulative = self.cumulative();
        for (bound, count) in self.bounds_us.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {count}", *bound as f64 / 1e6);
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        // `_count` must equal the +Inf bucket; reading it separately could race with an update.
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// Video tiers counted separately; higher tiers share the last label.
pub const VIDEO_TIERS: usize = 8;

/// What kind of track an object belongs to, for labels. Video tiers are numbered from the
/// lowest (base) tier, 0, upward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackClass {
    /// The MSF catalog.
    Catalog,
    /// Audio.
    Audio,
    /// A video tier, 0 = lowest (base) tier.
    Video(u8),
    /// Anything else.
    Other,
}

const CLASSES: usize = VIDEO_TIERS + 3;

impl TrackClass {
    /// The class implied by the DEFAULT PUBLISHER PRIORITY tiermesh publishers use: catalog
    /// 0, audio 16, lowest video tier 32, each higher tier +16. Other priorities are `Other`.
    pub fn from_publisher_priority(priority: u8) -> Self {
        match priority {
            0 => TrackClass::Catalog,
            16 => TrackClass::Audio,
            p if p >= 32 && p % 16 == 0 => TrackClass::Video((p - 32) / 16),
            _ => TrackClass::Other,
        }
    }

    fn index(self) -> usize {
        match self {
            TrackClass::Catalog => 0,
            TrackClass::Audio => 1,
            TrackClass::Video(tier) => 2 + usize::from(tier).min(VIDEO_TIERS - 1),
            TrackClass::Other => CLASSES - 1,
        }
    }

    fn label(index: usize) -> &'static str {
        const LABELS: [&str; CLASSES] = [
            "catalog", "audio", "video0", "video1", "video2", "video3", "video4", "video5",
            "video6", "video7", "other",
        ];
        LABELS[index]
    }
}

/// Why the relay dropped an object instead of forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A newer group of the track made it useless (the scheduler drops stale groups first).
    StaleGroup,
    /// The link could not carry it and it mattered least (a higher video tier).
    Congestion,
    /// It waited at this hop longer than its delivery timeout.
    DeliveryTimeout,
    /// Its capture age exceeded the end-to-end budget.
    CaptureAge,
    /// A subscriber's queue was full.
    QueueFull,
    /// The subscriber or its stream went away before it could be sent.
    Reset,
}

const REASONS: usize = 6;

impl DropReason {
    const ALL: [DropReason; REASONS] = [
        DropReason::StaleGroup,
        DropReason::Congestion,
        DropReason::DeliveryTimeout,
        DropReason::CaptureAge,
        DropReason::QueueFull,
        DropReason::Reset,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::StaleGroup => "stale_group",
            DropReason::Congestion => "congestion",
            DropReason::DeliveryTimeout => "delivery_timeout",
            DropReason::CaptureAge => "capture_age",
            DropReason::QueueFull => "queue_full",
            DropReason::Reset => "reset",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every metric the relay exports. Share it as `Arc<Metrics>`; every update is one or a few
/// relaxed atomic adds.
#[derive(Debug)]
pub struct Metrics {
    /// Open MoQT sessions.
    pub sessions: Gauge,
    /// Sessions accepted since start.
    pub sessions_accepted: Counter,
    /// Sessions refused since start (limit reached, failed setup).
    pub sessions_refused: Counter,
    /// Open subscriptions (downstream subscribers' SUBSCRIBEs being served).
    pub subscriptions: Gauge,
    /// Tracks the relay holds (with a publisher or an upstream subscription).
    pub tracks: Gauge,
    /// Downstream SUBSCRIBEs parked while the relay's upstream subscription is pending.
    pub subscribes_pending: Gauge,
    /// Requests refused by authorization, by action (0 = publish, 1 = subscribe).
    auth_refused: [Counter; 2],
    objects_in: [Counter; CLASSES],
    bytes_in: [Counter; CLASSES],
    objects_out: [Counter; CLASSES],
    bytes_out: [Counter; CLASSES],
    dropped: [[Counter; REASONS]; CLASSES],
    /// Arrival at the relay to hand-off to the link, by the relay's own clock.
    pub forward_delay: Histogram,
    /// Relay clock minus the object's LOC capture timestamp (depends on the publisher's
    /// clock being right).
    pub capture_age: Histogram,
    /// Objects whose capture timestamp lay in the relay's future: the publisher's clock is
    /// ahead. They are not in `capture_age`.
    pub capture_age_negative: Counter,
    /// More metrics that other parts of the relay write at render time (the mesh's
    /// per-link figures).
    pub extra: ExtraMetrics,
}

/// A writer of more metrics text, called by [`Metrics::render`].
pub type ExtraFn = dyn Fn(&mut String) + Send + Sync;

/// Writers of more metrics text appended to [`Metrics::render`]'s output.
#[derive(Default)]
pub struct ExtraMetrics(std::sync::Mutex<Vec<std::sync::Arc<ExtraFn>>>);

impl ExtraMetrics {
    /// Adds a writer.
    pub fn add(&self, f: std::sync::Arc<ExtraFn>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    }

    fn render(&self, out: &mut String) {
        let writers = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for w in writers {
            w(out);
        }
    }
}

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Self {
            sessions: Gauge::default(),
            sessions_accepted: Counter::default(),
            sessions_refused: Counter::default(),
            subscriptions: Gauge::default(),
            tracks: Gauge::default(),
            subscribes_pending: Gauge::default(),
            auth_refused: Default::default(),
            objects_in: Default::default(),
            bytes_in: Default::default(),
            objects_out: Default::default(),
            bytes_out: Default::default(),
            dropped: Default::default(),
            forward_delay: Histogram::new(LATENCY_BUCKETS_US),
            capture_age: Histogram::new(LATENCY_BUCKETS_US),
            capture_age_negative: Counter::default(),
            extra: ExtraMetrics::default(),
        }
    }

    /// Counts an object received from a publisher or upstream relay.
    pub fn object_in(&self, class: TrackClass, bytes: usize) {
        self.objects_in[class.index()].inc();
        self.bytes_in[class.index()].add(bytes as u64);
    }

    /// Counts an object handed to a subscriber's link.
    pub fn object_out(&self, class: TrackClass, bytes: usize) {
        self.objects_out[class.index()].inc();
        self.bytes_out[class.index()].add(bytes as u64);
    }

    /// Counts a dropped object.
    pub fn dropped(&self, class: TrackClass, reason: DropReason) {
        self.dropped[class.index()][reason.index()].inc();
    }

    /// Counts a request refused by authorization.
    pub fn auth_refused(&self, action: crate::auth::Action) {
        let i = match action {
            crate::auth::Action::Publish => 0,
            crate::auth::Action::Subscribe => 1,
        };
        self.auth_refused[i].inc();
    }

    /// Records the relay's own forwarding delay of one object.
    pub fn observe_forward_delay(&self, delay: Duration) {
        self.forward_delay.observe(delay);
    }

    /// Adds what one fan-out counted: `objects` objects of `bytes` payload bytes in all
    /// handed to subscribers' links, and their forwarding delays.
    pub fn fan_out(
        &self,
        class: TrackClass,
        objects: u64,
        bytes: u64,
        delays: &mut HistogramTally,
    ) {
        if objects > 0 {
            self.objects_out[class.index()].add(objects);
            self.bytes_out[class.index()].add(bytes);
        }
        self.forward_delay.add_tally(delays);
    }

    /// Records one object's capture age: `now_us` (relay wall clock) minus `capture_us`
    /// (LOC Timestamp), both microseconds since the Unix epoch.
    pub fn observe_capture_age(&self, capture_us: u64, now_us: u64) {
        match now_us.checked_sub(capture_us) {
            Some(age) => self.capture_age.observe_us(age),
            None => self.capture_age_negative.inc(),
        }
    }

    /// Objects received for `class`.
    pub fn objects_in(&self, class: TrackClass) -> u64 {
        self.objects_in[class.index()].get()
    }

    /// Objects sent for `class`.
    pub fn objects_out(&self, class: TrackClass) -> u64 {
        self.objects_out[class.index()].get()
    }

    /// Adds the drops a send scheduler counted between two of its [`Stats`] snapshots
    /// (`before`, then `now`) to the per-class, per-reason counters: delivery timeout,
    /// capture-age budget, stale group and the rest of a reset subgroup. Objects of a
    /// stream the relay itself cancelled (its subscriber left) are not drops of the link
    /// and are not counted.
    ///
    /// [`Stats`]: tiermesh_client::scheduler::Stats
    pub fn add_scheduler_drops(
        &self,
        before: &tiermesh_client::scheduler::Stats,
        now: &tiermesh_client::scheduler::Stats,
    ) {
        use tiermesh_client::scheduler::{DropReason as Why, TrackClass as Class};
        for (class, why, count) in now.drops() {
            let new = count.objects.saturating_sub(before.dropped(class, why).objects);
            let reason = match why {
                Why::DeliveryTimeout => DropReason::DeliveryTimeout,
                Why::CaptureAge => DropReason::CaptureAge,
                Why::Stale => DropReason::StaleGroup,
                Why::StreamReset => DropReason::Reset,
                Why::Cancelled => continue,
            };
            let class = match class {
                Class::Catalog => TrackClass::Catalog,
                Class::Audio => TrackClass::Audio,
                Class::Video { tier } => TrackClass::Video(tier),
                Class::Other => TrackClass::Other,
            };
            self.dropped[class.index()][reason.index()].add(new);
        }
    }

    /// Objects dropped for `class` and `reason`.
    pub fn dropped_count(&self, class: TrackClass, reason: DropReason) -> u64 {
        self.dropped[class.index()][reason.index()].get()
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        header(
            &mut out,
            "tiermesh_build_info",
            "Always 1; the version label names the build.",
            "gauge",
        );
        let _ = writeln!(out, "tiermesh_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        gauge(&mut out, "tiermesh_sessions", "Open MoQT sessions.", self.sessions.get());
        counter(
            &mut out,
            "tiermesh_sessions_accepted_total",
            "Sessions accepted since start.",
            self.sessions_accepted.get(),
        );
        counter(
            &mut out,
            "tiermesh_sessions_refused_total",
            "Sessions refused since start (limit reached or failed setup).",
            self.sessions_refused.get(),
        );
        gauge(
            &mut out,
            "tiermesh_subscriptions",
            "Open downstream subscriptions.",
            self.subscriptions.get(),
        );
        gauge(&mut out, "tiermesh_tracks", "Tracks held by the relay.", self.tracks.get());
        gauge(
            &mut out,
            "tiermesh_subscribes_pending",
            "Downstream SUBSCRIBEs waiting for the relay's upstream subscription.",
            self.subscribes_pending.get(),
        );

        header(
            &mut out,
            "tiermesh_auth_refused_total",
            "Requests refused by authorization.",
            "counter",
        );
        for (action, c) in ["publish", "subscribe"].iter().zip(&self.auth_refused) {
            let _ = writeln!(out, "tiermesh_auth_refused_total{{action=\"{action}\"}} {}", c.get());
        }

        let per_class: [(&str, &str, &[Counter; CLASSES]); 4] = [
            (
                "tiermesh_objects_received_total",
                "Objects received from publishers and upstream relays.",
                &self.objects_in,
            ),
            ("tiermesh_bytes_received_total", "Object payload bytes received.", &self.bytes_in),
            (
                "tiermesh_objects_sent_total",
                "Objects handed to subscribers' links.",
                &self.objects_out,
            ),
            (
                "tiermesh_bytes_sent_total",
                "Object payload bytes handed to subscribers' links.",
                &self.bytes_out,
            ),
        ];
        for (name, help, counters) in per_class {
            header(&mut out, name, help, "counter");
            for (i, c) in counters.iter().enumerate() {
                let _ = writeln!(out, "{name}{{class=\"{}\"}} {}", TrackClass::label(i), c.get());
            }
        }

        let name = "tiermesh_objects_dropped_total";
        header(
            &mut out,
            name,
            "Objects dropped instead of forwarded, by track class and reason.",
            "counter",
        );
        for (i, reasons) in self.dropped.iter().enumerate() {
            for reason in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{class=\"{}\",reason=\"{}\"}} {}",
                    TrackClass::label(i),
                    reason.label(),
                    reasons[reason.index()].get()
                );
            }
        }

        self.forward_delay.render(
            &mut out,
            "tiermesh_forward_delay_seconds",
            "Time from an object's arrival at the relay to its hand-off to a link, by the relay's clock.",
        );
        self.capture_age.render(
            &mut out,
            "tiermesh_capture_age_seconds",
            "Relay clock minus the object's LOC capture timestamp (relies on the publisher's clock).",
        );
        counter(
            &mut out,
            "tiermesh_capture_age_negative_total",
            "Objects whose capture timestamp was in the relay's future (publisher clock ahead).",
            self.capture_age_negative.get(),
        );
        self.extra.render(&mut out);
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// The report histogram lives in the client crate, which the relay depends on.
pub use tiermesh_client::report::{Distribution, Summary};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_within_bucket() {
        let h = Histogram::new(LATENCY_BUCKETS_US);
        for _ in 0..100 {
            h.observe(Duration::from_micros(700)); // bucket (500, 1000]
        }
        let p50 = h.quantile_us(0.5).unwrap();
        assert!((500.0..=1000.0).contains(&p50), "{p50}");
        h.observe(Duration::from_secs(10));
        assert_eq!(h.cumulative().last(), Some(&101));
        assert_eq!(h.quantile_us(1.0), Some(2_000_000.0));
    }

    #[test]
    fn track_class_follows_default_priorities() {
        assert_eq!(TrackClass::from_publisher_priority(0), TrackClass::Catalog);
        assert_eq!(TrackClass::from_publisher_priority(16), TrackClass::Audio);
        assert_eq!(TrackClass::from_publisher_priority(32), TrackClass::Video(0));
        assert_eq!(TrackClass::from_publisher_priority(64), TrackClass::Video(2));
        assert_eq!(TrackClass::from_publisher_priority(33), TrackClass::Other);
        assert_eq!(TrackClass::label(TrackClass::Video(200).index()), "video7");
    }
}
