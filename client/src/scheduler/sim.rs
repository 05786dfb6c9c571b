//! The scheduler driving a simulated link on virtual time: a catalog, 20 ms audio frames
//! and three 30 fps video tiers with one-second groups, more than the link can carry.
//!
//! The link model: every millisecond the driver measures the budget, drains
//! `poll_send` into a model of QUIC's send buffer (per-stream queues served highest quinn
//! priority first, oldest write first among equals, as quinn does), and the link then sends
//! `rate / 1000` bytes from it. An object counts as delivered when its last byte leaves;
//! its latency is that instant minus its arrival at this hop.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_proto::types::GroupOrder;

use super::*;

const CLASSES: [TrackClass; 5] = [
    TrackClass::Catalog,
    TrackClass::Audio,
    TrackClass::Video { tier: 0 },
    TrackClass::Video { tier: 1 },
    TrackClass::Video { tier: 2 },
];

/// Video tiers in bits per second: 180p, 360p, 720p.
const TIER_BPS: [u64; 3] = [300_000, 800_000, 2_000_000];
const AUDIO_BYTES: usize = 80; // 32 kbit/s Opus, 20 ms frames
const RTT_MS: u64 = 40;
const MEDIA_MS: u64 = 10_000;
/// Capture age of every object when it reaches this hop (the hops before it).
const UPSTREAM_AGE: Duration = Duration::from_millis(30);

fn timeout_of(class: TrackClass) -> Option<Duration> {
    match class {
        TrackClass::Audio => Some(Duration::from_millis(400)),
        TrackClass::Video { .. } => Some(Duration::from_millis(1000)),
        _ => None,
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct ClassResult {
    pub pushed: u64,
    pub delivered: u64,
    pub on_time: u64,
    pub latencies_us: Vec<u64>,
}

impl ClassResult {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i] as f64 / 1000.0
    }

    pub fn on_time_fraction(&self) -> f64 {
        if self.pushed == 0 { 1.0 } else { self.on_time as f64 / self.pushed as f64 }
    }

    pub fn delivered_fraction(&self) -> f64 {
        if self.pushed == 0 { 1.0 } else { self.delivered as f64 / self.pushed as f64 }
    }
}

pub(super) struct Outcome {
    pub classes: HashMap<TrackClass, ClassResult>,
    pub stats: Stats,
    /// The largest number of bytes the QUIC buffer model held unsent.
    pub max_buffered: u64,
}

impl Outcome {
    pub fn class(&self, c: TrackClass) -> &ClassResult {
        &self.classes[&c]
    }
}

/// An object waiting to be delivered on a simulated stream.
struct Sent {
    end: u64,
    arrival: Instant,
    class: TrackClass,
}

#[derive(Default)]
struct SimStream {
    prio: i32,
    first_write: u64,
    /// Bytes written by the scheduler, and bytes the link has sent.
    written: u64,
    sent: u64,
    /// Stream header bytes that precede the first object.
    objects: std::collections::VecDeque<Sent>,
    /// Bytes of objects pushed so far (for the end offsets).
    pushed_end: u64,
}

/// A tiny deterministic generator for frame-size jitter.
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs the workload through a scheduler in `mode` over a link of `link_bps`.
pub(super) fn run(mode: Mode, link_bps: u64) -> Outcome {
    run_with(mode, &|_| link_bps)
}

/// Runs the workload over a link whose rate at millisecond `ms` is `rate(ms)` bits per
/// second (the congestion window follows the rate at once: the transport's best case, so
/// what is measured is the scheduler's choice of what to send).
pub(super) fn run_with(mode: Mode, rate: &dyn Fn(u64) -> u64) -> Outcome {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut sched = Scheduler::new(SchedulerConfig::default().mode(mode));
    let mut streams: HashMap<StreamKey, SimStream> = HashMap::new();
    let mut results: HashMap<TrackClass, ClassResult> =
        CLASSES.iter().map(|c| (*c, ClassResult::default())).collect();
    let mut rng = Lcg(42);
    let mut next_key = 0u64;
    let mut write_seq = 0u64;
    let mut video_stream: [Option<StreamKey>; 3] = [None; 3];
    let mut max_buffered = 0;

    let header = Bytes::from_static(&[0x10, 1, 2, 3, 4, 5]);
    let push = |sched: &mut Scheduler,
                streams: &mut HashMap<StreamKey, SimStream>,
                results: &mut HashMap<TrackClass, ClassResult>,
                key: StreamKey,
                class: TrackClass,
                arrival: Instant,
                len: usize| {
        let object =
            Object::new(arrival, Bytes::from_static(&[0, 0, 0x40, 0]), Bytes::from(vec![0u8; len]))
                .capture_age(UPSTREAM_AGE);
        let st = streams.get_mut(&key).unwrap();
        if st.pushed_end == 0 {
            st.pushed_end = header.len() as u64;
        }
        st.pushed_end += object.len() as u64;
        st.objects.push_back(Sent { end: st.pushed_end, arrival, class });
        results.get_mut(&class).unwrap().pushed += 1;
        sched.push_object(key, object).unwrap();
    };
    let mut open = |sched: &mut Scheduler,
                    streams: &mut HashMap<StreamKey, SimStream>,
                    track: u64,
                    class: TrackClass,
                    publisher_priority: u8,
                    group: u64|
     -> StreamKey {
        next_key += 1;
        let key = StreamKey(next_key);
        let spec = StreamSpec::new(TrackKey(track), class, group, 0)
            .priority(128, publisher_priority)
            .group_order(GroupOrder::Descending)
            .delivery_timeout(timeout_of(class))
            .header(header.clone());
        sched.open_stream(key, spec).unwrap();
        streams.insert(key, SimStream::default());
        key
    };

    // Media plus a tail to drain what FIFO has queued (bounded).
    for ms in 0..MEDIA_MS + 30_000 {
        let now = at(ms);
        if ms < MEDIA_MS {
            if ms == 0 {
                let key = open(&mut sched, &mut streams, 0, TrackClass::Catalog, 0, 0);
                push(&mut sched, &mut streams, &mut results, key, TrackClass::Catalog, now, 1500);
                sched.finish_stream(key).unwrap();
            }
            if ms % 20 == 0 {
                let key = open(&mut sched, &mut streams, 1, TrackClass::Audio, 16, ms / 20);
                push(
                    &mut sched,
                    &mut streams,
                    &mut results,
                    key,
                    TrackClass::Audio,
                    now,
                    AUDIO_BYTES,
                );
                sched.finish_stream(key).unwrap();
            }
            // Frame f is captured at floor(f * 1000 / 30) ms.
            let frame = (ms * 30).div_ceil(1000);
            if frame * 1000 / 30 == ms {
                for (tier, bps) in TIER_BPS.iter().enumerate() {
                    let class = TrackClass::Video { tier: tier as u8 };
                    let group = frame / 30;
                    // A group of 30 frames: one key frame of 8 P-frames' size, 29 P-frames.
                    let p_bytes = bps / 8 / 37;
                    let key_frame = frame % 30 == 0;
                    let base = if key_frame { 8 * p_bytes } else { p_bytes } as f64;
                    let len = (base * (0.8 + 0.4 * rng.next_f64())) as usize;
                    if key_frame {
                        if let Some(old) = video_stream[tier].take() {
                            // The stream may already be gone (reset, abandoned).
                            let _ = sched.finish_stream(old);
                        }
                        let prio = 32 + 16 * tier as u8;
                        let track = 2 + tier as u64;
                        video_stream[tier] =
                            Some(open(&mut sched, &mut streams, track, class, prio, group));
                    }
                    let key = video_stream[tier].unwrap();
                    if sched.streams.contains_key(&key) {
                        push(&mut sched, &mut streams, &mut results, key, class, now, len);
                    } else {
                        // Its subgroup was dropped: the rest of it is not sent either.
                        results.get_mut(&class).unwrap().pushed += 1;
                    }
                }
            }
        } else {
            for k in video_stream.iter_mut() {
                if let Some(old) = k.take() {
                    let _ = sched.finish_stream(old);
                }
            }
        }

        // The driver's wake-up.
        let link_bps = rate(ms);
        let bytes_per_ms = link_bps / 8 / 1000;
        let buffered: u64 = streams.values().map(|s| s.written - s.sent).sum();
        let mut budget = SendBudget {
            cwnd: bytes_per_ms * RTT_MS,
            cwnd_available: bytes_per_ms,
            buffered,
            send_rate_bps: link_bps,
        };
        while let Some(action) = sched.poll_send(now, &mut budget) {
            match action {
                Action::Write { key, chunk, quinn_priority } => {
                    let st = streams.get_mut(&key).unwrap();
                    if st.written == 0 {
                        write_seq += 1;
                        st.first_write = write_seq;
                    }
                    st.prio = quinn_priority;
                    st.written += chunk.len() as u64;
                }
                Action::Reset { key, .. } => {
                    // QUIC drops what it had not sent.
                    let st = streams.get_mut(&key).unwrap();
                    st.written = st.sent;
                    st.objects.clear();
                }
                Action::Abandon { key, .. } => {
                    streams.get_mut(&key).unwrap().objects.clear();
                }
                Action::Finish { .. } => {}
                Action::Datagram { .. } => unreachable!("the workload has no datagram lanes"),
            }
        }
        let buffered: u64 = streams.values().map(|s| s.written - s.sent).sum();
        max_buffered = max_buffered.max(buffered);

        // The link sends one millisecond's worth: highest quinn priority first, then the
        // stream written to first.
        let mut left = bytes_per_ms;
        while left > 0 {
            // (`bytes_per_ms` > 0 here, so `done_at` below is well defined.)
            let Some((&key, _)) = streams
                .iter()
                .filter(|(_, s)| s.written > s.sent)
                .max_by_key(|(_, s)| (s.prio, std::cmp::Reverse(s.first_write)))
            else {
                break;
            };
            let st = streams.get_mut(&key).unwrap();
            let n = left.min(st.written - st.sent);
            st.sent += n;
            left -= n;
            let done_at =
                now + Duration::from_nanos((bytes_per_ms - left) * 1_000_000 / bytes_per_ms);
            while st.objects.front().is_some_and(|o| o.end <= st.sent) {
                let o = st.objects.pop_front().unwrap();
                let latency = done_at - o.arrival;
                let r = results.get_mut(&o.class).unwrap();
                r.delivered += 1;
                r.latencies_us.push(latency.as_micros() as u64);
                if timeout_of(o.class).is_none_or(|t| latency <= t) {
                    r.on_time += 1;
                }
            }
        }
        streams.retain(|k, s| sched.streams.contains_key(k) || s.written > s.sent);
        if ms >= MEDIA_MS && streams.is_empty() && sched.open_streams() == 0 {
            break;
        }
    }
    Outcome { classes: results, stats: sched.stats().clone(), max_buffered }
}

pub(super) fn table(priority: &Outcome, fifo: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} | {:>8} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8} {:>9}",
        "class", "deliv%", "ontime%", "p50 ms", "max ms", "deliv%", "ontime%", "p50 ms", "max ms"
    );
    let _ = writeln!(out, "{:<9} | {:^36} | {:^36}", "", "priority", "fifo");
    for c in CLASSES {
        let (p, f) = (priority.class(c), fifo.class(c));
        let _ = writeln!(
            out,
            "{:<9} | {:>8.1} {:>8.1} {:>8.1} {:>9.1} | {:>8.1} {:>8.1} {:>8.1} {:>9.1}",
            c.to_string(),
            100.0 * p.delivered_fraction(),
            100.0 * p.on_time_fraction(),
            p.percentile_ms(0.5),
            p.percentile_ms(1.0),
            100.0 * f.delivered_fraction(),
            100.0 * f.on_time_fraction(),
            f.percentile_ms(0.5),
            f.percentile_ms(1.0),
        );
    }
    out
}

/// On a 2 Mbit/s link carrying 3.1 Mbit/s of media: audio and the base tier arrive whole
/// and in time under the priority scheduler, the top tier is what is dropped, latency of
/// everything delivered stays bounded; FIFO on the same input delivers everything late.
#[test]
fn congested_link_keeps_audio_and_base_tier_and_beats_fifo() {
    let link = 2_000_000;
    let prio = run(Mode::Priority, link);
    let fifo = run(Mode::Fifo, link);
    println!(
        "2 Mbit/s link, 10 s of catalog + audio + 3 video tiers (3.13 Mbit/s)\n{}",
        table(&prio, &fifo)
    );
    for (c, r, n) in prio.stats.drops() {
        println!("priority drops: {c} {r}: {} objects, {} bytes", n.objects, n.bytes);
    }
    println!(
        "largest unsent in QUIC: priority {} B, fifo {} B",
        prio.max_buffered, fifo.max_buffered
    );

    let audio = prio.class(TrackClass::Audio);
    let base = prio.class(TrackClass::Video { tier: 0 });
    let mid = prio.class(TrackClass::Video { tier: 1 });
    let top = prio.class(TrackClass::Video { tier: 2 });
    // Audio and the base tier: all of it, in time.
    assert_eq!(audio.delivered, audio.pushed);
    assert_eq!(audio.on_time, audio.pushed);
    assert!(audio.percentile_ms(1.0) < 30.0, "audio max {} ms", audio.percentile_ms(1.0));
    assert_eq!(base.on_time, base.pushed);
    assert!(base.percentile_ms(1.0) < 200.0, "base max {} ms", base.percentile_ms(1.0));
    assert_eq!(prio.class(TrackClass::Catalog).delivered, 1);
    // The middle tier fits in what is left; the top tier is what gets dropped.
    assert!(mid.on_time_fraction() > 0.95, "mid {}", mid.on_time_fraction());
    assert!(top.on_time_fraction() < 0.9, "top {}", top.on_time_fraction());
    let top_class = TrackClass::Video { tier: 2 };
    assert!(prio.stats.dropped_total(top_class).objects > 0);
    for c in [TrackClass::Audio, TrackClass::Video { tier: 0 }, TrackClass::Video { tier: 1 }] {
        assert_eq!(prio.stats.dropped_total(c).objects, 0, "{c} dropped");
    }
    // Whatever is delivered is delivered within its timeout plus the small QUIC buffer.
    for c in CLASSES {
        if let Some(t) = timeout_of(c) {
            let max = prio.class(c).percentile_ms(1.0);
            assert!(max <= t.as_millis() as f64 + 50.0, "{c} max latency {max} ms");
        }
    }
    // QUIC's buffer stays small: within twice one window plus headroom (each level may
    // fill one budget ahead of itself, all together two).
    let bytes_per_ms = link / 8 / 1000;
    assert!(
        prio.max_buffered
            <= 2 * (bytes_per_ms + (bytes_per_ms * RTT_MS / 4).max(DEFAULT_HEADROOM_MIN))
    );

    // FIFO: delivers everything, late.
    let fifo_audio = fifo.class(TrackClass::Audio);
    assert_eq!(fifo_audio.delivered, fifo_audio.pushed);
    assert!(fifo.stats.drops().count() == 0);
    assert!(
        fifo_audio.percentile_ms(0.99) > 10.0 * audio.percentile_ms(0.99).max(1.0),
        "priority audio p99 {} ms, fifo {} ms",
        audio.percentile_ms(0.99),
        fifo_audio.percentile_ms(0.99)
    );
    let fifo_base = fifo.class(TrackClass::Video { tier: 0 });
    assert!(
        base.on_time_fraction() > fifo_base.on_time_fraction() + 0.3,
        "base on time: priority {}, fifo {}",
        base.on_time_fraction(),
        fifo_base.on_time_fraction()
    );
}

/// When the link carries everything, nothing is dropped and everything is prompt, but for
/// the top tier's first group: on a new session the upper tiers start together, and one
/// is started only once the rate of the upper tier above it is known (see
/// `OfferedRates`), so the top tier's first group waits half a second before it goes (a
/// 54 kB key frame and the frames behind it: 54 ms at 8 Mbit/s, and about 200 ms to catch
/// up). Before, that group was dropped.
#[test]
fn uncongested_link_drops_nothing() {
    let prio = run(Mode::Priority, 8_000_000);
    let top = TrackClass::Video { tier: 2 };
    let drops: Vec<_> = prio.stats.drops().map(|(c, _, n)| (c, n.objects)).collect();
    assert_eq!(drops, [], "{:?}", prio.stats);
    for c in CLASSES {
        let r = prio.class(c);
        assert_eq!(r.delivered, r.pushed, "{c}");
        // The first group's frames are the top tier's slowest 10%: 30 of 300.
        let p = if c == top { 0.9 } else { 1.0 };
        assert!(r.percentile_ms(p) < 150.0, "{c}: {} ms", r.percentile_ms(p));
    }
    let first = prio.class(top).percentile_ms(1.0);
    assert!(first < 800.0, "top tier's first group: {first} ms");
}

/// A link that degrades from 4 Mbit/s to 0.6 Mbit/s (a poor rural link) for four seconds
/// and recovers: audio never misses its deadline and stays prompt, the base tier keeps
/// flowing, and the drops fall on the upper tiers.
#[test]
fn degrading_link_keeps_audio_and_base_tier() {
    let rate = |ms: u64| if (4_000..8_000).contains(&ms) { 600_000 } else { 4_000_000 };
    let prio = run_with(Mode::Priority, &rate);
    let fifo = run_with(Mode::Fifo, &rate);
    println!("4 -> 0.6 -> 4 Mbit/s link\n{}", table(&prio, &fifo));
    let audio = prio.class(TrackClass::Audio);
    let base = prio.class(TrackClass::Video { tier: 0 });
    assert_eq!(audio.on_time, audio.pushed);
    assert!(audio.percentile_ms(1.0) < 30.0, "audio max {} ms", audio.percentile_ms(1.0));
    assert!(base.on_time_fraction() > 0.99, "base on time {}", base.on_time_fraction());
    for c in [TrackClass::Video { tier: 1 }, TrackClass::Video { tier: 2 }] {
        assert!(prio.stats.dropped_total(c).objects > 0, "{c} not dropped");
    }
    assert!(fifo.class(TrackClass::Audio).percentile_ms(0.99) > 400.0);
}
