//! What a subscriber measured, per track: objects, groups and bytes received, what is
//! missing, and the latency from each object's capture to its arrival. `tiermesh sub`
//! prints it as a table or, with `--json`, as one JSON object ([`Report`]).
//!
//! ## Definitions
//! - **objects**, **bytes**: distinct objects received (subscription and joining fetch
//!   together) and their payload bytes; a second copy of an object is counted in
//!   `duplicate_objects` only.
//! - **groups**: distinct group IDs received.
//! - **missing_objects**: holes in the object IDs of each received group: object IDs below
//!   the largest received in that group that never arrived, less those the publisher said
//!   will never exist (Prior Object ID Gap). Objects lost at the tail of a group are not
//!   seen from the IDs alone and are not counted.
//! - **missing_groups**: holes in the group IDs between the first and the last group
//!   received, less those the publisher said will never exist (Prior Group ID Gap). This
//!   relies on the publisher numbering groups without gaps: tiermesh publishers derive
//!   group IDs from wall-clock time on a fixed cadence (one per second of video, one per
//!   20 ms of audio), so consecutive groups have consecutive IDs. The catalog track is
//!   published at start and on change only, so its group IDs are not counted for gaps.
//! - **latency_ms**: arrival wall-clock time minus the LOC Timestamp (the capture time, in
//!   wall-clock microseconds), for objects delivered by the subscription. Objects from the
//!   joining FETCH are history by design (up to one group old) and are left out.
//!   Publisher and subscriber clocks must agree (same host, or NTP).
//! - **first_object_ms**: from the moment the subscription was requested to the first
//!   object of the track; with `first_group`/`first_object` it shows that a late joiner
//!   starts at a key frame (object 0 of a group) at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tiermesh_proto::ext::Extensions;
use tiermesh_proto::loc;

/// The latency quantiles of a track, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// What one track delivered. See the module docs for the definitions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrackReport {
    /// Track name.
    pub name: String,
    /// Distinct objects received.
    pub objects: u64,
    /// Distinct groups received.
    pub groups: u64,
    /// Payload bytes of the distinct objects.
    pub bytes: u64,
    /// Holes in object IDs within received groups.
    pub missing_objects: u64,
    /// Holes in group IDs between the first and last group received.
    pub missing_groups: u64,
    /// Objects received more than once (not in `objects`).
    pub duplicate_objects: u64,
    /// Objects that came by the joining FETCH.
    pub fetched_objects: u64,
    /// Group ID of the first object received, by location order.
    pub first_group: Option<u64>,
    /// Object ID of the first object of `first_group` received.
    pub first_object: Option<u64>,
    /// Largest group ID received.
    pub last_group: Option<u64>,
    /// Milliseconds from subscribing to the first object's arrival.
    pub first_object_ms: Option<f64>,
    /// Capture-to-arrival latency of objects delivered by the subscription.
    pub latency_ms: Option<LatencyMs>,
    /// How the publisher ended the track (PUBLISH_DONE), if it did.
    pub ended: Option<String>,
    /// Why the track could not be subscribed or failed, if it did.
    pub error: Option<String>,
}

/// The report `tiermesh sub --json` prints: exactly one JSON object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The broadcast's namespace, `/`-separated.
    pub broadcast: String,
    /// Seconds the subscriber ran.
    pub duration_s: f64,
    /// One entry per track, in subscription order.
    pub tracks: Vec<TrackReport>,
    /// Why the session ended early, if it did.
    pub error: Option<String>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "broadcast {} for {:.1} s", self.broadcast, self.duration_s);
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "track",
            "objects",
            "groups",
            "bytes",
            "miss.obj",
            "miss.grp",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms"
        );
        for t in &self.tracks {
            let q = |f: fn(&LatencyMs) -> f64| {
                t.latency_ms.as_ref().map_or("-".to_owned(), |l| format!("{:.1}", f(l)))
            };
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                t.name,
                t.objects,
                t.groups,
                t.bytes,
                t.missing_objects,
                t.missing_groups,
                q(|l| l.p50),
                q(|l| l.p95),
                q(|l| l.p99),
                q(|l| l.max)
            );
            if let Some(e) = &t.ended {
                let _ = writeln!(out, "  {}: ended by the publisher: {e}", t.name);
            }
            if let Some(e) = &t.error {
                let _ = writeln!(out, "  {}: {e}", t.name);
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "session: {e}");
        }
        out
    }
}

#[derive(Debug, Default)]
struct GroupState {
    /// Object IDs received.
    objects: std::collections::BTreeSet<u64>,
    /// Object IDs the publisher declared absent (sum of Prior Object ID Gaps).
    declared_object_gaps: u64,
    /// The Prior Group ID Gap seen on this group's objects.
    group_gap: u64,
}

/// Counts what one track delivers; [`TrackStats::report`] summarizes it.
#[derive(Debug)]
pub struct TrackStats {
    name: String,
    count_group_gaps: bool,
    groups: BTreeMap<u64, GroupState>,
    objects: u64,
    bytes: u64,
    duplicates: u64,
    fetched: u64,
    latency_us: Distribution,
    started_us: u64,
    first_arrival: Option<Duration>,
    ended: Option<String>,
    error: Option<String>,
}

impl TrackStats {
    /// Empty statistics of track `name`, subscribed at wall-clock `started_us`
    /// (microseconds since the Unix epoch). `count_group_gaps` says whether holes in group
    /// IDs count as missing groups (true for tracks published on a fixed cadence).
    pub fn new(name: impl Into<String>, started_us: u64, count_group_gaps: bool) -> Self {
        Self {
            name: name.into(),
            count_group_gaps,
            groups: BTreeMap::new(),
            objects: 0,
            bytes: 0,
            duplicates: 0,
            fetched: 0,
            latency_us: Distribution::new(),
            started_us,
            first_arrival: None,
            ended: None,
            error: None,
        }
    }

    /// Records an object that arrived at wall-clock `arrival_us` (microseconds since the
    /// Unix epoch); `fetched` if it came by FETCH.
    pub fn record(
        &mut self,
        group_id: u64,
        object_id: u64,
        payload_len: usize,
        extensions: &Extensions,
        arrival_us: u64,
        fetched: bool,
    ) {
        let group = self.groups.entry(group_id).or_default();
        if !group.objects.insert(object_id) {
            self.duplicates += 1;
            return;
        }
        group.declared_object_gaps += extensions.object_gap().unwrap_or(0);
        if let Some(gap) = extensions.group_gap() {
            group.group_gap = group.group_gap.max(gap);
        }
        self.objects += 1;
        self.bytes += payload_len as u64;
        self.first_arrival
            .get_or_insert(Duration::from_micros(arrival_us.saturating_sub(self.started_us)));
        if fetched {
            self.fetched += 1;
        } else if let Some(capture) = loc::capture_timestamp_us(extensions) {
            self.latency_us.record(arrival_us.saturating_sub(capture));
        }
    }

    /// Notes why the track failed.
    pub fn set_error(&mut self, error: impl Into<String>) {
        self.error = Some(error.into());
    }

    /// Notes that the publisher ended the track, and how.
    pub fn set_ended(&mut self, how: impl Into<String>) {
        self.ended = Some(how.into());
    }

    /// The track name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Distinct objects so far.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// The latency distribution so far, microseconds.
    pub fn latency_us(&self) -> &Distribution {
        &self.latency_us
    }

    /// The summary of what arrived.
    pub fn report(&self) -> TrackReport {
        let missing_objects = self
            .groups
            .values()
            .map(|g| {
                let expected = g.objects.last().map_or(0, |&max| max + 1);
                expected.saturating_sub(g.objects.len() as u64 + g.declared_object_gaps)
            })
            .sum();
        let missing_groups = match (self.groups.first_key_value(), self.groups.last_key_value()) {
            (Some((&first, _)), Some((&last, _))) if self.count_group_gaps => {
                // Gaps declared by groups after the first one; the first group's gap points
                // before what we saw.
                let declared: u64 = self.groups.range(first + 1..).map(|(_, g)| g.group_gap).sum();
                (last - first + 1).saturating_sub(self.groups.len() as u64 + declared)
            }
            _ => 0,
        };
        let first = self.groups.first_key_value();
        let ms = |us: u64| us as f64 / 1000.0;
        TrackReport {
            name: self.name.clone(),
            objects: self.objects,
            groups: self.groups.len() as u64,
            bytes: self.bytes,
            missing_objects,
            missing_groups,
            duplicate_objects: self.duplicates,
            fetched_objects: self.fetched,
            first_group: first.map(|(&g, _)| g),
            first_object: first.and_then(|(_, g)| g.objects.first().copied()),
            last_group: self.groups.last_key_value().map(|(&g, _)| g),
            first_object_ms: self.first_arrival.map(|d| d.as_secs_f64() * 1000.0),
            latency_ms: self.latency_us.summary().map(|s| LatencyMs {
                p50: ms(s.p50),
                p95: ms(s.p95),
                p99: ms(s.p99),
                max: ms(s.max),
            }),
            ended: self.ended.clone(),
            error: self.error.clone(),
        }
    }
}

/// Values below this are counted exactly, one bucket each.
const EXACT: u64 = 64;
/// Sub-buckets per power of two above [`EXACT`]: 32 gives at most 1/32 (3.1 %) relative error.
const SUB_BUCKETS: u64 = 32;
const SUB_BITS: u32 = 5;
const DIST_BUCKETS: usize = (EXACT + (64 - 6) * SUB_BUCKETS) as usize;

/// A plain histogram of `u64` values (microseconds, bytes, anything) with quantile estimates
/// within 3.1 % relative error: log-linear buckets (exact below 64, then 32 per power of two),
/// min and max exact. Not thread-safe: one per task, [`Distribution::merge`] to combine.
/// Meant for reports (`tiermesh sub --json`, `tiermesh bees`, benchmarks), not for the
/// relay's hot path.
///
/// Buckets are allocated up to the largest value seen (a few KiB for latencies), and its
/// serde form lists only the non-empty buckets, so reports that keep one per second stay
/// small; merging adds bucket counts, so quantiles of merged shards are quantiles of all
/// their values together.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "SparseDistribution", try_from = "SparseDistribution")]
pub struct Distribution {
    /// Counts per bucket, up to the last non-empty one.
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Self::new()
    }
}

/// A summary of a [`Distribution`], as reports print it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Largest value.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Distribution {
    /// Empty.
    pub fn new() -> Self {
        Self { counts: Vec::new(), count: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    fn index(value: u64) -> usize {
        if value < EXACT {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros(); // >= 6
        let top = value >> (exponent - SUB_BITS); // in [32, 64)
        (EXACT + u64::from(exponent - 6) * SUB_BUCKETS + (top - SUB_BUCKETS)) as usize
    }

    /// The smallest and largest value bucket `index` holds.
    fn bounds(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < EXACT {
            return (index, index);
        }
        let k = index - EXACT;
        let exponent = k / SUB_BUCKETS + 6;
        let width = 1u64 << (exponent - u64::from(SUB_BITS));
        let lower = (SUB_BUCKETS + k % SUB_BUCKETS) * width;
        (lower, lower.saturating_add(width - 1))
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        let i = Self::index(value);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Records a duration in microseconds.
    pub fn record_duration(&mut self, value: Duration) {
        self.record(u64::try_from(value.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Distribution) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value, if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1, nearest rank), within 3.1 %; exact below 64 and at
    /// the extremes. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = Self::bounds(i);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Count, min, max, mean, p50, p95, p99; `None` when empty.
    pub fn summary(&self) -> Option<Summary> {
        Some(Summary {
            count: self.count,
            min: self.min()?,
            max: self.max()?,
            mean: self.mean()?,
            p50: self.quantile(0.50)?,
            p95: self.quantile(0.95)?,
            p99: self.quantile(0.99)?,
        })
    }
}

/// The serde form of a [`Distribution`]: its non-empty buckets as `[index, count]` pairs.
#[derive(serde::Serialize, serde::Deserialize)]
struct SparseDistribution {
    buckets: Vec<(u32, u64)>,
    count: u64,
    sum: u128,
    min: Option<u64>,
    max: Option<u64>,
}

impl From<Distribution> for SparseDistribution {
    fn from(d: Distribution) -> Self {
        let buckets = d
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u32, *c))
            .collect();
        Self { buckets, count: d.count, sum: d.sum, min: d.min(), max: d.max() }
    }
}

impl TryFrom<SparseDistribution> for Distribution {
    type Error = String;

    fn try_from(s: SparseDistribution) -> Result<Self, String> {
        let mut d = Distribution::new();
        let mut counted = 0u64;
        for (i, c) in s.buckets {
            let i = i as usize;
            if i >= DIST_BUCKETS {
                return Err(format!("distribution bucket {i} out of range (< {DIST_BUCKETS})"));
            }
            if i >= d.counts.len() {
                d.counts.resize(i + 1, 0);
            }
            d.counts[i] = d.counts[i].saturating_add(c);
            counted = counted.saturating_add(c);
        }
        if counted != s.count {
            return Err(format!(
                "distribution buckets hold {counted} values, count says {}",
                s.count
            ));
        }
        // Trailing empty buckets would make equal distributions compare unequal.
        while d.counts.last() == Some(&0) {
            d.counts.pop();
        }
        d.count = s.count;
        d.sum = s.sum;
        match (s.min, s.max) {
            (Some(min), Some(max)) if s.count > 0 && min <= max => {
                d.min = min;
                d.max = max;
            }
            (None, None) if s.count == 0 => {}
            _ => return Err("distribution min/max do not match its count".into()),
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use tiermesh_proto::kvp::KeyValue;

    use super::*;

    fn stamped(capture_us: u64) -> Extensions {
        let mut e = Extensions::default();
        loc::set_capture_timestamp_us(&mut e, capture_us);
        e
    }

    #[test]
    fn holes_in_objects_and_groups_are_missing() {
        let mut s = TrackStats::new("video/180p", 0, true);
        for g in [10u64, 11, 13] {
            for o in 0..30u64 {
                if g == 11 && (o == 5 || o == 6) {
                    continue;
                }
                s.record(g, o, 100, &stamped(1_000), 3_000, false);
            }
        }
        s.record(10, 3, 100, &stamped(1_000), 3_000, false);
        let r = s.report();
        assert_eq!((r.objects, r.groups, r.bytes), (88, 3, 8_800));
        assert_eq!((r.missing_objects, r.missing_groups, r.duplicate_objects), (2, 1, 1));
        assert_eq!((r.first_group, r.first_object), (Some(10), Some(0)));
        let l = r.latency_ms.unwrap();
        assert_eq!((l.p50, l.max), (2.0, 2.0));
    }

    #[test]
    fn declared_gaps_are_not_missing() {
        let mut s = TrackStats::new("audio", 0, true);
        s.record(100, 0, 10, &Extensions::default(), 0, false);
        let gap = Extensions { prior_group_id_gap: Some(3), ..Default::default() };
        s.record(104, 0, 10, &gap, 0, false);
        let object_gap = Extensions { prior_object_id_gap: Some(2), ..Default::default() };
        s.record(105, 0, 10, &Extensions::default(), 0, false);
        s.record(105, 3, 10, &object_gap, 0, false);
        let r = s.report();
        assert_eq!((r.missing_groups, r.missing_objects), (0, 0));
        // Without the declaration the same hole counts.
        let mut plain = TrackStats::new("audio", 0, true);
        plain.record(100, 0, 10, &Extensions::default(), 0, false);
        plain.record(104, 0, 10, &Extensions::default(), 0, false);
        assert_eq!(plain.report().missing_groups, 3);
        // And a track without a cadence never counts group holes.
        let mut catalog = TrackStats::new("catalog", 0, false);
        catalog.record(5, 0, 10, &Extensions::default(), 0, false);
        catalog.record(9, 0, 10, &Extensions::default(), 0, false);
        assert_eq!(catalog.report().missing_groups, 0);
    }

    #[test]
    fn fetched_objects_count_but_not_in_latency() {
        let mut s = TrackStats::new("video/360p", 888_000, true);
        s.record(7, 0, 50, &stamped(0), 900_000, true);
        s.record(7, 1, 50, &stamped(899_000), 901_000, false);
        let r = s.report();
        assert_eq!((r.objects, r.fetched_objects), (2, 1));
        assert_eq!(r.latency_ms.unwrap().max, 2.0);
        assert_eq!(r.first_object_ms, Some(12.0));
        // An object without a timestamp, or stamped in the future, gives no negative values.
        s.record(7, 2, 50, &stamped(2_000_000), 900_000, false);
        let mut other = Extensions::default();
        other.other.push(KeyValue::int(0x40, 1));
        s.record(7, 3, 50, &other, 900_000, false);
        assert_eq!(s.report().latency_ms.unwrap().p50, 0.0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut s = TrackStats::new("video/180p", 0, true);
        s.record(1, 0, 10, &stamped(0), 1_500, false);
        let report = Report {
            broadcast: "clinic/room-42".into(),
            duration_s: 1.0,
            tracks: vec![s.report(), TrackStats::new("audio", 0, true).report()],
            error: None,
        };
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let t = &v["tracks"][0];
        assert_eq!(t["name"], "video/180p");
        for key in ["objects", "groups", "bytes", "missing_objects", "missing_groups"] {
            assert!(t[key].is_u64(), "{key}");
        }
        for key in ["p50", "p95", "p99", "max"] {
            assert!(t["latency_ms"][key].is_f64(), "{key}");
        }
        assert!(v["tracks"][1]["latency_ms"].is_null());
        assert!(report.to_table().contains("video/180p"));
        let back: Report = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn distribution_buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 123_456, u64::MAX / 3, u64::MAX] {
            let i = Distribution::index(v);
            assert!(i < DIST_BUCKETS, "{v} -> {i}");
            let (lo, hi) = Distribution::bounds(i);
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn distribution_quantiles_are_close() {
        let mut d = Distribution::new();
        for v in 1..=10_000u64 {
            d.record(v);
        }
        let s = d.summary().unwrap();
        assert_eq!((s.count, s.min, s.max), (10_000, 1, 10_000));
        for (got, want) in [(s.p50, 5_000.0), (s.p95, 9_500.0), (s.p99, 9_900.0)] {
            assert!((got as f64 - want).abs() / want < 0.032, "{got} vs {want}");
        }
        assert!((s.mean - 5_000.5).abs() < 1e-9);
        let mut small = Distribution::new();
        for v in [3, 1, 2] {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), Some(2));
        assert_eq!(small.quantile(1.0), Some(3));
        assert_eq!(Distribution::new().summary(), None);
    }

    #[test]
    fn distribution_merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) =
            (Distribution::new(), Distribution::new(), Distribution::new());
        for v in 0..1000u64 {
            let x = v * v;
            if v % 2 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn distribution_json_lists_only_used_buckets_and_round_trips() {
        let mut d = Distribution::new();
        for v in [5u64, 5, 70, 1_000_000] {
            d.record(v);
        }
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.len() < 200, "{json}");
        let back: Distribution = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.quantile(1.0), Some(1_000_000));
        let empty: Distribution =
            serde_json::from_str(&serde_json::to_string(&Distribution::new()).unwrap()).unwrap();
        assert_eq!(empty, Distribution::new());
        // Buckets that do not add up to the count, or lie out of range, are refused.
        let e = serde_json::from_str::<Distribution>(
            r#"{"buckets":[[5,2]],"count":3,"sum":15,"min":5,"max":5}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("hold 2 values"), "{e}");
        let e = serde_json::from_str::<Distribution>(
            r#"{"buckets":[[99999,1]],"count":1,"sum":1,"min":1,"max":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
