//! What a load run measured, as one serializable [`Report`] that shards merge into.
//!
//! ## Definitions
//! - **connect**: from starting the QUIC (or WebTransport) handshake to the end of the MoQT
//!   SETUP exchange.
//! - **first object**: from sending SUBSCRIBE (with its joining FETCH) to the first object of
//!   the track, by either.
//! - **objects**, **bytes**: distinct objects (and their payload bytes) received by all
//!   subscribers, subscription and joining fetch together.
//! - **missing objects**: holes in the object IDs of a received group; **missing groups**:
//!   holes in the group IDs between the first and the last group a subscriber received (the
//!   catalog is left out: it is published on change only). Gaps the publisher declared
//!   (Prior Object/Group ID Gap) are not missing.
//! - **stall**: a wait longer than the stall threshold between two objects a subscription
//!   delivered, or from the last one to the end of the run.
//! - **latency**: arrival wall-clock time minus the LOC capture timestamp, for objects the
//!   subscription delivered (joining-fetch objects are history by design).
//! - **steady stalls**, **steady latency**: the same, for stalls that ended and objects that
//!   arrived in the steady window (below), after the ramp's handshakes.
//! - **relay CPU / memory**: from `/proc/<pid>` of a relay on the same host, over the steady
//!   window: from the moment the last subscriber of the ramp was connected to the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use tiermesh_client::report::Distribution;

/// The report format version; [`Report::merge`] refuses others. Version 2: distributions
/// are `tiermesh_client::report::Distribution`s (non-empty buckets as `[index, count]`).
pub const VERSION: u32 = 2;

/// Quantiles of a distribution of microseconds, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest (exact).
    pub max: f64,
}

/// p50, p95, p99 and max of a distribution of microseconds, in milliseconds; `None` when
/// it is empty.
pub fn quantiles_ms(d: &Distribution) -> Option<Quantiles> {
    let ms = |v: u64| v as f64 / 1000.0;
    Some(Quantiles {
        p50: ms(d.quantile(0.50)?),
        p95: ms(d.quantile(0.95)?),
        p99: ms(d.quantile(0.99)?),
        max: ms(d.max()?),
    })
}

/// One shard's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard (0-based).
    pub index: u32,
    /// Of how many.
    pub count: u32,
    /// Relay URLs (query strings removed: they may hold tokens).
    pub targets: Vec<String>,
    /// Subscribers this shard started.
    pub subscribers: u64,
    /// Publishers this shard ran.
    pub publishers: u64,
    /// Tracks each subscriber joined (empty: idle subscribers).
    pub tracks: Vec<String>,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Seconds the shard ran.
    pub duration_s: f64,
    /// Seconds from the start until the last subscriber was connected (the ramp).
    pub ramp_s: f64,
    /// CPU time this bees process used, seconds: near `duration_s` per thread means the
    /// load generator, not the relay, was the limit.
    #[serde(default)]
    pub bees_cpu_s: f64,
    /// CPU time this bees process used in the steady window (every subscriber subscribed,
    /// until the end), seconds; with `steady_s`, whether bees kept up while the relay was
    /// measured. 0 when there was no steady window.
    #[serde(default)]
    pub bees_steady_cpu_s: f64,
    /// Length of that steady window, seconds (0: none).
    #[serde(default)]
    pub steady_s: f64,
}

/// Counts of subscribers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribers {
    /// Started.
    pub started: u64,
    /// Finished SETUP.
    pub connected: u64,
    /// Connected and had every track subscription accepted.
    pub subscribed: u64,
    /// Could not connect or lost their session before the end.
    pub failed: u64,
}

/// What one track delivered to all subscribers together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackTotals {
    /// Subscriptions to it.
    pub subscriptions: u64,
    /// Distinct objects received.
    pub objects: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Objects that came by the joining FETCH.
    pub fetched_objects: u64,
    /// Objects received twice.
    pub duplicate_objects: u64,
    /// Holes in object IDs.
    pub missing_objects: u64,
    /// Holes in group IDs.
    pub missing_groups: u64,
    /// Waits longer than the stall threshold.
    pub stalls: u64,
    /// Their total length, milliseconds.
    pub stall_ms: f64,
    /// Subscribe to first object, µs.
    pub first_object_us: Distribution,
    /// Capture to arrival, µs.
    pub latency_us: Distribution,
    /// Stalls that ended in the steady window (every subscriber subscribed, until the end):
    /// the ramp's handshakes load the host, so these say whether the count is sustained.
    #[serde(default)]
    pub steady_stalls: u64,
    /// Capture to arrival of objects that arrived in the steady window, µs.
    #[serde(default)]
    pub steady_latency_us: Distribution,
}

impl TrackTotals {
    /// Adds `other`'s counts and distributions.
    pub fn merge(&mut self, other: &TrackTotals) {
        self.subscriptions += other.subscriptions;
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.fetched_objects += other.fetched_objects;
        self.duplicate_objects += other.duplicate_objects;
        self.missing_objects += other.missing_objects;
        self.missing_groups += other.missing_groups;
        self.stalls += other.stalls;
        self.stall_ms += other.stall_ms;
        self.first_object_us.merge(&other.first_object_us);
        self.latency_us.merge(&other.latency_us);
        self.steady_stalls += other.steady_stalls;
        self.steady_latency_us.merge(&other.steady_latency_us);
    }
}

/// One second of the run, keyed by its wall-clock second in [`Report::timeline`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Subscribers connected at the end of the second.
    pub subscribers: u64,
    /// Objects received during the second.
    pub objects: u64,
    /// Payload bytes received per track during the second.
    pub bytes: BTreeMap<String, u64>,
    /// Latency of objects received during the second, µs.
    pub latency_us: Distribution,
    /// Relay CPU time used during the second, ms (relays measured by any shard, summed).
    pub relay_cpu_ms: Option<f64>,
    /// Relay resident memory at the end of the second, KiB (summed over measured relays).
    pub relay_rss_kib: Option<u64>,
}

impl Point {
    fn merge(&mut self, o: &Point) {
        self.subscribers += o.subscribers;
        self.objects += o.objects;
        for (k, v) in &o.bytes {
            *self.bytes.entry(k.clone()).or_insert(0) += v;
        }
        self.latency_us.merge(&o.latency_us);
        self.relay_cpu_ms = add_opt(self.relay_cpu_ms, o.relay_cpu_ms);
        self.relay_rss_kib = add_opt(self.relay_rss_kib, o.relay_rss_kib);
    }
}

fn add_opt<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A relay process measured from `/proc` during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayUsage {
    /// Its process ID.
    pub pid: u32,
    /// Resident memory before the first subscriber connected, KiB.
    pub rss_before_kib: u64,
    /// Resident memory once every subscriber of the ramp was connected (and subscribed), KiB.
    pub rss_connected_kib: u64,
    /// The largest resident memory seen, KiB.
    pub rss_max_kib: u64,
    /// Subscribers connected when `rss_connected_kib` was read.
    pub subscribers_connected: u64,
    /// CPU time (user + system) over the steady window, seconds.
    pub steady_cpu_s: f64,
    /// The steady window's length, seconds.
    pub steady_s: f64,
    /// Objects the subscribers received in the steady window.
    pub steady_objects: u64,
    /// Payload bytes the subscribers received in the steady window.
    pub steady_bytes: u64,
    /// CPU time over the whole run, seconds.
    pub total_cpu_s: f64,
}

impl RelayUsage {
    /// Relay CPU microseconds per object delivered in the steady window.
    pub fn cpu_us_per_object(&self) -> Option<f64> {
        (self.steady_objects > 0).then(|| self.steady_cpu_s * 1e6 / self.steady_objects as f64)
    }

    /// Relay CPU microseconds per megabyte (10^6 bytes) of payload delivered.
    pub fn cpu_us_per_mb(&self) -> Option<f64> {
        (self.steady_bytes > 0).then(|| self.steady_cpu_s * 1e12 / self.steady_bytes as f64)
    }

    /// Payload delivered per second of relay CPU, Gbit/s: what one fully busy core would
    /// carry at this cost.
    pub fn gbit_per_core(&self) -> Option<f64> {
        (self.steady_cpu_s > 0.0).then(|| self.steady_bytes as f64 * 8.0 / self.steady_cpu_s / 1e9)
    }

    /// Relay CPU share of one core over the steady window, percent.
    pub fn cpu_percent(&self) -> Option<f64> {
        (self.steady_s > 0.0).then(|| self.steady_cpu_s / self.steady_s * 100.0)
    }

    /// Resident memory added per connected subscriber, KiB.
    pub fn kib_per_subscriber(&self) -> Option<f64> {
        (self.subscribers_connected > 0).then(|| {
            self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64
                / self.subscribers_connected as f64
        })
    }
}

/// A load run's results; `tiermesh bees --json` writes it, `tiermesh bees merge` adds
/// several together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`VERSION`].
    pub version: u32,
    /// The shards merged into this report (one for a single run).
    pub shards: Vec<Shard>,
    /// Subscriber counts.
    pub subscribers: Subscribers,
    /// Connect times, µs.
    pub connect_us: Distribution,
    /// Per track, by name.
    pub tracks: BTreeMap<String, TrackTotals>,
    /// Per wall-clock second (Unix seconds).
    pub timeline: BTreeMap<u64, Point>,
    /// Relays measured from `/proc`.
    pub relays: Vec<RelayUsage>,
    /// Error messages and how often each happened (the most frequent kept).
    pub errors: BTreeMap<String, u64>,
}

/// Distinct error messages kept in a report.
pub const MAX_ERRORS: usize = 20;

/// Where errors beyond [`MAX_ERRORS`] distinct messages are counted.
const OTHER_ERRORS: &str = "(other errors)";

/// Why reports could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report format version {found}, expected {VERSION}")]
pub struct VersionMismatch {
    /// The version found.
    pub found: u32,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            shards: Vec::new(),
            subscribers: Subscribers::default(),
            connect_us: Distribution::new(),
            tracks: BTreeMap::new(),
            timeline: BTreeMap::new(),
            relays: Vec::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Counts one occurrence of an error message, keeping at most [`MAX_ERRORS`] messages.
    pub fn note_error(&mut self, message: &str) {
        self.note_errors(message, 1);
    }

    fn note_errors(&mut self, message: &str, n: u64) {
        let kept = self.errors.len() - usize::from(self.errors.contains_key(OTHER_ERRORS));
        if let Some(c) = self.errors.get_mut(message) {
            *c += n;
        } else if kept < MAX_ERRORS && message != OTHER_ERRORS {
            self.errors.insert(message.to_owned(), n);
        } else {
            *self.errors.entry(OTHER_ERRORS.to_owned()).or_insert(0) += n;
        }
    }

    /// Adds another shard's report to this one.
    ///
    /// # Errors
    /// The other report has another format version.
    pub fn merge(&mut self, other: &Report) -> Result<(), VersionMismatch> {
        if other.version != VERSION {
            return Err(VersionMismatch { found: other.version });
        }
        self.shards.extend(other.shards.iter().cloned());
        let s = &mut self.subscribers;
        s.started += other.subscribers.started;
        s.connected += other.subscribers.connected;
        s.subscribed += other.subscribers.subscribed;
        s.failed += other.subscribers.failed;
        self.connect_us.merge(&other.connect_us);
        for (name, t) in &other.tracks {
            self.tracks.entry(name.clone()).or_default().merge(t);
        }
        for (sec, p) in &other.timeline {
            self.timeline.entry(*sec).or_default().merge(p);
        }
        self.relays.extend(other.relays.iter().cloned());
        for (e, &c) in &other.errors {
            self.note_errors(e, c);
        }
        Ok(())
    }

    /// All tracks together.
    pub fn totals(&self) -> TrackTotals {
        let mut all = TrackTotals::default();
        for t in self.tracks.values() {
            all.merge(t);
        }
        all
    }

    /// Seconds the longest shard ran.
    pub fn duration_s(&self) -> f64 {
        self.shards.iter().map(|s| s.duration_s).fold(0.0, f64::max)
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Strings, numbers and maps with integer or string keys always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as text for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let s = &self.subscribers;
        let shards = self.shards.len();
        let _ = writeln!(
            out,
            "bees: {} subscribers started, {} connected, {} subscribed, {} failed ({} shard{}, {:.1} s)",
            s.started,
            s.connected,
            s.subscribed,
            s.failed,
            shards,
            if shards == 1 { "" } else { "s" },
            self.duration_s()
        );
        let ms = |h: &Distribution| {
            quantiles_ms(h).map_or("-".to_owned(), |q| {
                format!("p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} ms", q.p50, q.p95, q.p99, q.max)
            })
        };
        let _ = writeln!(out, "connect       {}", ms(&self.connect_us));
        let total = self.totals();
        let _ = writeln!(out, "first object  {}", ms(&total.first_object_us));
        let secs = self.duration_s().max(1e-9);
        let _ = writeln!(
            out,
            "delivered     {} objects, {} bytes ({:.1} Mbit/s average)",
            total.objects,
            total.bytes,
            total.bytes as f64 * 8.0 / secs / 1e6
        );
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>10} {:>12} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "track",
            "subs",
            "objects",
            "bytes",
            "miss.obj",
            "miss.grp",
            "stalls",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms"
        );
        for (name, t) in &self.tracks {
            let q = quantiles_ms(&t.latency_us);
            let f = |g: fn(&Quantiles) -> f64| {
                q.as_ref().map_or("-".to_owned(), |q| format!("{:.1}", g(q)))
            };
            let _ = writeln!(
                out,
                "{:<12} {:>6} {:>10} {:>12} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
                name,
                t.subscriptions,
                t.objects,
                t.bytes,
                t.missing_objects,
                t.missing_groups,
                t.stalls,
                f(|q| q.p50),
                f(|q| q.p95),
                f(|q| q.p99),
                f(|q| q.max)
            );
        }
        for (name, t) in &self.tracks {
            if t.steady_latency_us.count() > 0 || t.steady_stalls > 0 {
                let _ = writeln!(
                    out,
                    "steady {:<12} stalls {}, latency {}",
                    name,
                    t.steady_stalls,
                    ms(&t.steady_latency_us)
                );
            }
        }
        for sh in &self.shards {
            let _ = writeln!(
                out,
                "bees shard {}/{}: CPU {:.2} s in {:.1} s ({:.0} % of a core)",
                sh.index,
                sh.count,
                sh.bees_cpu_s,
                sh.duration_s,
                sh.bees_cpu_s / sh.duration_s.max(1e-9) * 100.0
            );
            if sh.steady_s > 0.0 {
                let _ = writeln!(
                    out,
                    "bees shard {}/{}: steady {:.1} s, CPU {:.2} s ({:.0} % of a core)",
                    sh.index,
                    sh.count,
                    sh.steady_s,
                    sh.bees_steady_cpu_s,
                    sh.bees_steady_cpu_s / sh.steady_s * 100.0
                );
            }
        }
        for r in &self.relays {
            let opt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
            let _ = writeln!(
                out,
                "relay pid {}: steady {:.1} s, CPU {:.3} s ({} % of a core), {} µs per object, \
                 {} µs per MB, {} Gbit/s per core",
                r.pid,
                r.steady_s,
                r.steady_cpu_s,
                opt(r.cpu_percent(), 1),
                opt(r.cpu_us_per_object(), 2),
                opt(r.cpu_us_per_mb(), 1),
                opt(r.gbit_per_core(), 3),
            );
            let _ = writeln!(
                out,
                "relay pid {}: RSS {} KiB before, {} KiB with {} subscribers ({} KiB each), max {} KiB",
                r.pid,
                r.rss_before_kib,
                r.rss_connected_kib,
                r.subscribers_connected,
                opt(r.kib_per_subscriber(), 1),
                r.rss_max_kib
            );
        }
        for (e, c) in &self.errors {
            let _ = writeln!(out, "error ×{c}: {e}");
        }
        out
    }
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_capped_and_merged_with_counts() {
        let mut a = Report::new();
        for i in 0..30 {
            a.note_error(&format!("e{i}"));
        }
        a.note_error("e0");
        assert_eq!(a.errors.len(), MAX_ERRORS + 1);
        assert_eq!(a.errors["e0"], 2);
        assert_eq!(a.errors["(other errors)"], 10);
        let mut b = Report::new();
        b.merge(&a).unwrap();
        assert_eq!(b.errors, a.errors);
    }

    #[test]
    fn other_versions_are_refused() {
        let mut a = Report::new();
        let mut b = Report::new();
        b.version = 99;
        assert_eq!(a.merge(&b), Err(VersionMismatch { found: 99 }));
    }
}
