//! The rate an upper video tier can count on in the deadline check (`check_start`): what
//! the path delivers, less what the more important levels take of it.
//!
//! The congestion window per round trip is not that rate. With a delay-based controller it
//! reads about the whole link, so a tier that fits only in part was checked as if it had
//! the link to itself, and its objects were started only to arrive late behind the audio
//! and the base tier that kept arriving. With CUBIC it reads low for a while after each
//! loss (the window is cut, the round trip still holds the queue), so a share of it held
//! back a tier the link carried. Here the path's rate is the larger of the window per round
//! trip and a delivery rate (bytes sent and not declared lost per interval of at least a
//! round trip, the largest over the last [`DELIVERY_SPAN`], as BBR filters its bandwidth
//! samples), and a tier's share is that rate less what the levels above it were written at
//! over the last two completed seconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Level;
use super::unsent::Reading;

/// How long a delivery-rate sample counts for the maximum: two seconds, a few round trips
/// on every profile served (the longest, satellite's, is 600 ms), so the rate before a loss
/// cut is still there while the window grows back, and a rate the path no longer has is
/// forgotten within a group of video.
pub(super) const DELIVERY_SPAN: Duration = Duration::from_secs(2);

/// The shortest interval a delivery-rate sample is taken over: shorter ones would count a
/// burst written into QUIC at once (a key frame) at the pacer's rate rather than the path's.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The path's delivery rate, from the transport's running counters.
#[derive(Debug, Default)]
pub(super) struct DeliveryRate {
    /// Readings of the last [`DELIVERY_SPAN`] or so, oldest first: when, bytes sent less
    /// bytes declared lost (running totals).
    readings: VecDeque<(Instant, u64)>,
    /// Samples in bits per second, oldest first, kept for [`DELIVERY_SPAN`].
    samples: VecDeque<(Instant, u64)>,
}

impl DeliveryRate {
    /// A new reading of the transport's counters, taken at `now`.
    pub(super) fn handle_reading(&mut self, now: Instant, r: &Reading) {
        let delivered = r.bytes_sent.saturating_sub(r.bytes_lost);
        let interval = r.rtt.max(MIN_INTERVAL);
        // The newest earlier reading at least one interval old starts this sample.
        let start = self
            .readings
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= interval)
            .copied();
        if let Some((at, before)) = start {
            let span = now.saturating_duration_since(at).as_micros().max(1);
            let bps = (delivered.saturating_sub(before) as u128 * 8 * 1_000_000 / span) as u64;
            self.samples.push_back((now, bps));
        }
        self.readings.push_back((now, delivered));
        let keep = DELIVERY_SPAN.max(interval * 2);
        // Keep one reading older than an interval so the next sample has a start.
        while self.readings.len() > 2
            && self.readings.get(1).is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
        {
            self.readings.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > DELIVERY_SPAN)
        {
            self.samples.pop_front();
        }
    }

    /// The largest delivery rate of the last [`DELIVERY_SPAN`], in bits per second; 0 before
    /// a sample.
    pub(super) fn max_bps(&self) -> u64 {
        self.samples.iter().map(|(_, b)| *b).max().unwrap_or(0)
    }
}

/// The length of one counting window of [`LevelRates`].
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Windows kept: the current one and two before it.
const WINDOWS: usize = 3;

/// Bytes written per level in the current window and the two before it. The rate is read
/// from the completed windows only: the current one may have just begun with a burst (the
/// key frames of a new group, which QUIC still holds and `check_start` counts apart). A few
/// levels at most are in use at once, so they sit in a short vector sorted by level.
#[derive(Debug, Default)]
pub(super) struct LevelRates {
    /// When the current window started; `None` before the first write.
    start: Option<Instant>,
    /// Windows completed since the first write.
    completed: u32,
    /// `(level, bytes per window)`, the current window first.
    levels: Vec<(Level, [u64; WINDOWS])>,
}

impl LevelRates {
    /// Counts `bytes` written at `level` at `now`.
    pub(super) fn add(&mut self, now: Instant, level: Level, bytes: u64) {
        self.roll(now);
        match self.levels.binary_search_by_key(&level, |e| e.0) {
            Ok(i) => self.levels[i].1[0] += bytes,
            Err(i) => {
                let mut counts = [0; WINDOWS];
                counts[0] = bytes;
                self.levels.insert(i, (level, counts));
            }
        }
    }

    /// How many windows have ended between the current window's start and `now`.
    fn ended(&self, now: Instant) -> usize {
        let Some(start) = self.start else { return 0 };
        let since = now.saturating_duration_since(start);
        (since.as_nanos() / RATE_WINDOW.as_nanos()).min(WINDOWS as u128) as usize
    }

    /// Starts a new window if the current one is over.
    fn roll(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let ended = self.ended(now);
        if ended == 0 {
            return;
        }
        for (_, counts) in &mut self.levels {
            *counts = shifted(counts, ended);
        }
        self.levels.retain(|(_, c)| c.iter().any(|b| *b > 0));
        self.completed = self.completed.saturating_add(ended as u32);
        self.start = Some(if ended < WINDOWS { start + RATE_WINDOW * ended as u32 } else { now });
    }

    /// Bits per second written at levels more important than `level` (smaller numbers), as
    /// of `now`: over the completed windows of the last two, or before one has completed,
    /// what was written so far counted over one whole window.
    pub(super) fn above_bps(&self, now: Instant, level: Level) -> u64 {
        self.bps_where(now, |l| l < level)
    }

    /// [`LevelRates::above_bps`] of the levels for which `counted` is true.
    pub(super) fn bps_where(&self, now: Instant, counted: impl Fn(Level) -> bool) -> u64 {
        if self.start.is_none() {
            return 0;
        }
        let ended = self.ended(now);
        let completed = (self.completed as usize + ended).min(WINDOWS - 1);
        let (mut bytes, windows) = (0u64, completed.max(1) as u32);
        for (_, counts) in self.levels.iter().filter(|e| counted(e.0)) {
            let counts = shifted(counts, ended);
            bytes += if completed == 0 { counts[0] } else { counts[1..=completed].iter().sum() };
        }
        let span = (RATE_WINDOW * windows).as_micros().max(1);
        (bytes as u128 * 8 * 1_000_000 / span) as u64
    }
}

/// `counts` after `n` more windows ended (the newest first).
fn shifted(counts: &[u64; WINDOWS], n: usize) -> [u64; WINDOWS] {
    let mut out = [0; WINDOWS];
    for (i, b) in counts.iter().enumerate() {
        if i + n < WINDOWS {
            out[i + n] = *b;
        }
    }
    out
}

/// The span over which [`OfferedRates`] counts what a level is offered: one window, as
/// [`LevelRates`] counts what was written.
const OFFERED_WINDOW: Duration = RATE_WINDOW;

/// The least span of pushes before [`OfferedRates`] gives a rate: half a window, so that a
/// key frame alone (the first push of a group) is never read as the level's rate.
pub(super) const OFFERED_MIN_SPAN: Duration = Duration::from_millis(500);

/// The least span of pushes after which a group held for the rates of its level and the
/// levels above (`Check::Wait`) is checked: a quarter of a second, so that its frames wait
/// no longer than that. The key frames in it make the rates read high (the synthetic
/// ladder's 720p reads 2.2 Mbit/s over it against 1.5), which errs on the side of not
/// starting the group.
pub(super) const HOLD_SPAN: Duration = Duration::from_millis(250);

/// The least span over which [`OfferedRates::early_bps`] reads a level's pushes: 50 ms, so
/// that a key frame alone reads several times its group's rate (the synthetic ladder's 720p
/// key frame, 32 kB, reads 5.1 Mbit/s over it against 1.5 for the group and 2.2 over
/// [`HOLD_SPAN`]). Only a path that reads well above what the check at the hold's end would
/// need lets a group skip the hold that way: loopback's hundreds of Mbit/s, never a
/// shaped link's few (`satellite`'s slow start read at most 2.67 Mbit/s, `step` 3).
pub(super) const EARLY_SPAN_MIN: Duration = Duration::from_millis(50);

/// What each level is offered: the bytes pushed to it per second, sent or dropped, over the
/// current window and the one before (at least [`OFFERED_MIN_SPAN`] of them). Against the
/// share the level gets it tells whether a group of it can leave in time at all, which the
/// deadline check of one object (a group's key frame, say) does not: a 720p tier offering
/// 1.5 Mbit/s on a 1 Mbit/s link passes that check with its key frame whenever the window
/// per round trip reads high, and then its group is cut for lateness after taking the link
/// from the tiers below for most of a second.
#[derive(Debug, Default)]
pub(super) struct OfferedRates {
    /// `(level, counts)`, sorted by level; a few levels at most.
    levels: Vec<(Level, Offered)>,
}

#[derive(Debug, Clone, Copy)]
struct Offered {
    /// When the current window started.
    start: Instant,
    /// Bytes pushed since.
    bytes: u64,
    /// The window before: bytes and its length.
    prev: Option<(u64, Duration)>,
}

impl OfferedRates {
    /// Counts `bytes` pushed at `level` at `now`.
    pub(super) fn add(&mut self, now: Instant, level: Level, bytes: u64) {
        let i = match self.levels.binary_search_by_key(&level, |e| e.0) {
            Ok(i) => i,
            Err(i) => {
                self.levels.insert(i, (level, Offered { start: now, bytes: 0, prev: None }));
                i
            }
        };
        let o = &mut self.levels[i].1;
        let span = now.saturating_duration_since(o.start);
        if span >= OFFERED_WINDOW * 2 {
            // Nothing pushed for a while: start afresh.
            *o = Offered { start: now, bytes: 0, prev: None };
        } else if span >= OFFERED_WINDOW {
            o.prev = Some((o.bytes, span));
            o.start = now;
            o.bytes = 0;
        }
        o.bytes += bytes;
    }

    /// Bits per second offered at `level` as of `now`; `None` before [`OFFERED_MIN_SPAN`]
    /// of pushes, or when nothing was pushed for two windows.
    pub(super) fn bps(&self, now: Instant, level: Level) -> Option<u64> {
        self.bps_over(now, level, OFFERED_MIN_SPAN)
    }

    /// [`OfferedRates::bps`] once `min_span` of pushes were counted.
    pub(super) fn bps_over(&self, now: Instant, level: Level, min_span: Duration) -> Option<u64> {
        let i = self.levels.binary_search_by_key(&level, |e| e.0).ok()?;
        let o = &self.levels[i].1;
        let current = now.saturating_duration_since(o.start);
        if current >= OFFERED_WINDOW * 2 {
            return None;
        }
        let (before, before_span) = o.prev.unwrap_or((0, Duration::ZERO));
        let span = current + before_span;
        if span < min_span {
            return None;
        }
        let bits = (o.bytes + before) as u128 * 8 * 1_000_000;
        Some(u64::try_from(bits / span.as_micros().max(1)).unwrap_or(u64::MAX))
    }
}

impl OfferedRates {
    /// Whether a level more important than `level` (a smaller number) has a rate as of
    /// `now` (see [`OfferedRates::bps`]).
    pub(super) fn any_above(&self, now: Instant, level: Level) -> bool {
        self.levels.iter().take_while(|(l, _)| *l < level).any(|(l, _)| self.bps(now, *l).is_some())
    }

    /// Whether `level` is still in its first window of pushes (see
    /// [`OfferedRates::early_bps`]).
    pub(super) fn in_first_window(&self, level: Level) -> bool {
        self.levels.iter().any(|(l, o)| *l == level && o.prev.is_none())
    }

    /// For a `level` not yet measured ([`OfferedRates::bps`] is `None`) that started while
    /// a more important level was unmeasured too (first offered less than
    /// [`OFFERED_MIN_SPAN`] after that level's first push, or before it): when it and the
    /// levels above still in their first window will all have been offered for
    /// [`HOLD_SPAN`]. `None` for a level that joined levels already measured.
    pub(super) fn hold_until(&self, level: Level) -> Option<Instant> {
        let first = |o: &&Offered| o.prev.is_none();
        let own = self.levels.iter().find(|(l, _)| *l == level).map(|(_, o)| o).filter(first)?;
        let above =
            self.levels.iter().take_while(|(l, _)| *l < level).map(|(_, o)| o).filter(first);
        let joined = above.clone().any(|o| own.start < o.start + OFFERED_MIN_SPAN);
        joined.then(|| above.map(|o| o.start).fold(own.start, Instant::max) + HOLD_SPAN)
    }

    /// What `level` and the levels above it that are still in their first window of pushes
    /// were offered so far, each read over the time since its first push but at least
    /// [`EARLY_SPAN_MIN`]: a reading taken early in a group's hold (`Check::Wait`) that, for
    /// groups that start with their largest object (a key frame), only falls as the rest of
    /// the span's pushes come in, so it reads at least what the check at the hold's end will.
    pub(super) fn early_bps(&self, now: Instant, level: Level) -> u64 {
        self.levels
            .iter()
            .take_while(|(l, _)| *l <= level)
            .filter(|(_, o)| o.prev.is_none())
            .map(|(_, o)| {
                let span = now.saturating_duration_since(o.start).max(EARLY_SPAN_MIN);
                let bits = o.bytes as u128 * 8 * 1_000_000;
                u64::try_from(bits / span.as_micros().max(1)).unwrap_or(u64::MAX)
            })
            .fold(0, u64::saturating_add)
    }
}

/// Whether a level offered `offered_bps` can keep up at `share_bps`: what it is offered in
/// one window must leave within that window plus `slack` (the time its oldest object may
/// still wait), or its objects fall ever further behind until they are cut for lateness.
pub(super) fn keeps_up(offered_bps: u64, share_bps: u64, slack: Duration) -> bool {
    let window = OFFERED_WINDOW.as_micros();
    offered_bps as u128 * window <= share_bps as u128 * (window + slack.as_micros())
}

/// How long an object of `pending` bytes at `level` needs to leave, with `ahead` bytes of
/// QUIC's unsent bytes before it, of which `above` are of more important levels. Those go
/// at the path's whole rate (`path_bps`); the rest of `ahead` and the object get only the
/// level's share, what the more important levels (`above_bps`) leave of it, since they keep
/// arriving meanwhile and QUIC sends them first. `None` if the rate is not known.
pub(super) fn time_to_send(
    path_bps: u64,
    above_bps: u64,
    ahead: u64,
    above: u64,
    pending: u64,
) -> Option<Duration> {
    if path_bps == 0 {
        return None;
    }
    let share = path_bps.saturating_sub(above_bps).max(1);
    let above = above.min(ahead);
    let nanos = |bytes: u64, bps: u64| bytes as u128 * 8 * 1_000_000_000 / bps as u128;
    let total = nanos(above, path_bps) + nanos((ahead - above).saturating_add(pending), share);
    Some(Duration::from_nanos(u64::try_from(total).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delivery_rate_keeps_the_largest_sample_of_the_span() {
        let t0 = Instant::now();
        let mut d = DeliveryRate::default();
        assert_eq!(d.max_bps(), 0);
        let rtt = ms(200);
        let mut sent = 0u64;
        // 75 000 bytes a second (600 kbit/s) for 3 s, read every 50 ms.
        for i in 0..=60u64 {
            sent = 3_750 * i;
            d.handle_reading(
                t0 + ms(50 * i),
                &Reading { bytes_sent: sent, rtt, ..Default::default() },
            );
        }
        assert_eq!(d.max_bps(), 600_000);
        // A loss cut halves what leaves: the rate before it still counts for the span.
        for i in 1..=20u64 {
            sent += 1_875;
            d.handle_reading(
                t0 + ms(3_000 + 50 * i),
                &Reading { bytes_sent: sent, rtt, ..Default::default() },
            );
        }
        assert_eq!(d.max_bps(), 600_000);
        for i in 21..=60u64 {
            sent += 1_875;
            d.handle_reading(
                t0 + ms(3_000 + 50 * i),
                &Reading { bytes_sent: sent, rtt, ..Default::default() },
            );
        }
        assert_eq!(d.max_bps(), 300_000, "forgotten after the span");
        // Bytes declared lost were not delivered.
        let mut l = DeliveryRate::default();
        for i in 0..=20u64 {
            let r =
                Reading { bytes_sent: 3_750 * i, bytes_lost: 375 * i, rtt, ..Default::default() };
            l.handle_reading(t0 + ms(50 * i), &r);
        }
        assert_eq!(l.max_bps(), 540_000);
    }

    #[test]
    fn rate_of_the_levels_above_over_the_last_two_windows() {
        let t0 = Instant::now();
        let mut r = LevelRates::default();
        assert_eq!(r.above_bps(t0, 10), 0);
        // 1250 bytes every 100 ms at level 1 (100 kbit/s), 5000 at level 5 (400 kbit/s).
        for i in 0..25 {
            r.add(t0 + ms(100 * i), 1, 1250);
            r.add(t0 + ms(100 * i), 5, 5000);
        }
        let now = t0 + ms(2450);
        assert_eq!(r.above_bps(now, 1), 0, "nothing above the most important level");
        assert_eq!(r.above_bps(now, 5), 100_000);
        assert_eq!(r.above_bps(now, 9), 500_000);
        // A burst in the current window is not counted until its window has ended.
        r.add(now, 1, 50_000);
        assert_eq!(r.above_bps(now, 5), 100_000);
        assert_eq!(r.above_bps(t0 + ms(3_100), 5), 275_000);
        // Once writing stops, the rate fades within the windows kept.
        assert_eq!(r.above_bps(t0 + ms(4_100), 5), 225_000);
        assert_eq!(r.above_bps(t0 + ms(5_100), 5), 0);
    }

    #[test]
    fn offered_rate_counts_every_push_of_the_last_windows() {
        let t0 = Instant::now();
        let mut o = OfferedRates::default();
        assert_eq!(o.bps(t0, 64), None);
        // A 32 kB key frame, then 5.4 kB every 33 ms (about 1.5 Mbit/s).
        o.add(t0, 64, 32_000);
        assert_eq!(o.bps(t0 + ms(100), 64), None, "a key frame alone is no rate");
        for i in 1..60u64 {
            o.add(t0 + ms(33 * i), 64, 5_400);
        }
        let bps = o.bps(t0 + ms(2_000), 64).unwrap();
        assert!((1_400_000..1_700_000).contains(&bps), "{bps}");
        assert_eq!(o.bps(t0 + ms(2_000), 48), None, "another level");
        // Nothing pushed for two windows: no rate, and counting starts afresh.
        assert_eq!(o.bps(t0 + ms(4_100), 64), None);
        o.add(t0 + ms(4_100), 64, 1_000);
        assert_eq!(o.bps(t0 + ms(4_200), 64), None);
    }

    #[test]
    fn a_level_started_beside_an_unmeasured_one_is_held_for_both_quarter_seconds() {
        let t0 = Instant::now();
        let mut o = OfferedRates::default();
        o.add(t0, 48, 11_800);
        o.add(t0 + ms(20), 64, 32_000);
        assert_eq!(o.hold_until(64), Some(t0 + ms(20) + HOLD_SPAN));
        assert_eq!(o.hold_until(48), None, "nothing above it");
        // Joining 300 ms after the level above: its own quarter second, not a drop.
        let mut late = OfferedRates::default();
        late.add(t0, 48, 11_800);
        late.add(t0 + ms(300), 64, 32_000);
        assert_eq!(late.hold_until(64), Some(t0 + ms(300) + HOLD_SPAN));
        // Joining once the level above has half a second of pushes: one tier at a time.
        let mut measured = OfferedRates::default();
        measured.add(t0, 48, 11_800);
        measured.add(t0 + ms(500), 64, 32_000);
        assert_eq!(measured.hold_until(64), None);
        assert!(measured.in_first_window(48) && !measured.in_first_window(32));
    }

    #[test]
    fn a_level_keeps_up_if_a_window_of_it_leaves_within_the_window_and_its_slack() {
        // 1.5 Mbit/s offered: 800 kbit/s carries it with 900 ms to spare, 700 not quite.
        assert!(keeps_up(1_500_000, 800_000, ms(900)));
        assert!(!keeps_up(1_500_000, 700_000, ms(900)));
        assert!(keeps_up(550_000, 550_000, Duration::ZERO));
        assert!(!keeps_up(1, 0, ms(900)));
    }

    #[test]
    fn what_is_ahead_goes_at_the_whole_rate_and_the_level_at_its_share() {
        // 600 kbit/s, 200 kbit/s taken above: 15 kB of the level's own at 400 kbit/s.
        assert_eq!(time_to_send(600_000, 200_000, 0, 0, 15_000), Some(ms(300)));
        // 7.5 kB of more important levels ahead at 600 kbit/s first.
        assert_eq!(time_to_send(600_000, 200_000, 7_500, 7_500, 15_000), Some(ms(400)));
        assert_eq!(time_to_send(0, 0, 0, 0, 15_000), None);
    }
}
