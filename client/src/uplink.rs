//! The publisher's encoder follows its uplink.
//!
//! Every [`UplinkConfig::interval`] the publisher reads the send-rate estimate of its QUIC
//! connection ([`crate::moq::Connection::transport_stats`]: the controller's pacing rate,
//! else congestion window per smoothed RTT) and hands it to an [`UplinkController`]. The
//! controller smooths it (falls at once by half the gap, rises by an eighth of it), keeps
//! [`UplinkConfig::share`] of it for video after the audio, and shares that among the
//! ladder's active rungs lowest first: the lowest rung gets its configured rate first, the
//! top rung what is left, none less than [`UplinkConfig::floor_bps`] (or its configured
//! rate if that is smaller). Rates fall at once and rise by at most
//! [`UplinkConfig::max_step_up`] per interval, and not at all for
//! [`UplinkConfig::hold_after_cut`] after a cut, so the encoder does not chase a window that
//! just opened.
//!
//! On a ladder of two rungs or more the top rung is dropped when what is left for it stays
//! below its minimum ([`UplinkConfig::top_min_share`] of its configured rate, at least the
//! floor) for [`UplinkConfig::drop_after`], and comes back, at the next group start, when
//! the budget has carried it with [`UplinkConfig::restore_margin`] to spare for
//! [`UplinkConfig::restore_after`].
//!
//! That estimate cannot show room the media does not use: with the top rung dropped and
//! the lower rungs at their configured rates, the meter sees only what they send. So the
//! top rung is also *tried* again: once the lower rungs have their configured rates and
//! the top rung has been dropped for [`UplinkConfig::probe_after`], it comes back at its
//! floor and, while the estimate does not fall (the meter's estimate falls only on a
//! congestion sign), climbs by [`UplinkConfig::max_step_up`] per interval whatever the
//! budget says, since the estimate follows only what is sent. Back at its configured rate,
//! the try succeeded; when the estimate falls first and the budget cannot carry the rung,
//! it is dropped at once and the next try waits twice as long, up to
//! [`UplinkConfig::probe_after_max`].
//! Sans-IO: the caller gives the time.

use std::time::Duration;

use crate::transport::Stats;

/// Turns successive readings of the connection's figures into a send-rate estimate that
/// does not read the congestion window of an idle moment as capacity.
///
/// - **Congested** (bytes were declared lost since the last reading, or the smoothed RTT
///   stands more than max(20 ms, a quarter of the smallest RTT) above the smallest: a
///   queue is building): the estimate is the rate actually sent (UDP bytes sent less bytes
///   lost, per second), which a full bottleneck holds at its own rate; it falls to at most
///   half of the previous estimate per reading.
/// - **Not congested**: the estimate never falls; it rises to the congestion window per
///   RTT, but to no more than 1.25 x the rate actually sent, so it grows only as fast as
///   the media proves the link carries more.
#[derive(Debug, Clone, Default)]
pub struct UplinkMeter {
    last: Option<(u64, Stats)>,
    estimate: Option<u64>,
}

impl UplinkMeter {
    /// A meter for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The estimate after reading `stats` at `now_us` (`None` for the first reading).
    pub fn estimate(&mut self, now_us: u64, stats: &Stats) -> Option<u64> {
        let (then, prev) = self.last.replace((now_us, *stats))?;
        let dt = now_us.saturating_sub(then);
        if dt < 100_000 {
            self.last = Some((then, prev));
            return self.estimate;
        }
        let lost = stats.bytes_lost.saturating_sub(prev.bytes_lost);
        let sent = stats.bytes_sent.saturating_sub(prev.bytes_sent).saturating_sub(lost);
        let delivered = sent.saturating_mul(8).saturating_mul(1_000_000) / dt;
        let queue = stats.rtt.saturating_sub(stats.min_rtt);
        let congested = lost > 0 || queue > Duration::from_millis(20).max(stats.min_rtt / 4);
        let window = stats.send_rate_estimate_bps;
        let e = if congested {
            // At most halved per reading: a queue seen just as the media paused (the RTT is
            // smoothed) says little of the link.
            delivered.max(self.estimate.unwrap_or(0) / 2)
        } else {
            let probe = window.min(delivered.saturating_mul(5) / 4);
            self.estimate.map_or(window, |e| e.max(probe))
        };
        self.estimate = Some(e);
        self.estimate
    }
}

/// How the encoder follows the uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    /// How often the estimate is read (500 ms).
    pub interval: Duration,
    /// Share of the smoothed estimate the media may use (0.8): the rest is headroom for
    /// packet and stream overhead, retransmissions and key frames.
    pub share: f64,
    /// No video rung is set below this (100 kbit/s), unless configured lower.
    pub floor_bps: u32,
    /// A rate rises by at most this factor per interval (1.08: about 2 x in 4.5 s).
    pub max_step_up: f64,
    /// No rise for this long after a cut (2 s).
    pub hold_after_cut: Duration,
    /// The top rung needs at least this share of its configured rate (0.3).
    pub top_min_share: f64,
    /// The top rung is dropped after the budget has been short of it this long (1 s).
    pub drop_after: Duration,
    /// ... and restored once the budget carried it times this (1.3) ...
    pub restore_margin: f64,
    /// ... for this long (5 s).
    pub restore_after: Duration,
    /// Estimates are ignored for this long after a connection starts (2 s): slow start's
    /// first windows say nothing of the link.
    pub warm_up: Duration,
    /// A dropped top rung is tried again after this long (10 s): what made the link
    /// narrow (a shared cell, a busy household) rarely clears within seconds, and a try on
    /// a link that is still narrow costs its lower rungs and audio about a second of
    /// queueing.
    pub probe_after: Duration,
    /// Each failed try doubles the wait before the next, up to this (80 s): on a link that
    /// stays narrow, one second of congestion in 80.
    pub probe_after_max: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            share: 0.8,
            floor_bps: 100_000,
            max_step_up: 1.08,
            hold_after_cut: Duration::from_secs(2),
            top_min_share: 0.3,
            drop_after: Duration::from_secs(1),
            restore_margin: 1.3,
            restore_after: Duration::from_secs(5),
            warm_up: Duration::from_secs(2),
            probe_after: Duration::from_secs(10),
            probe_after_max: Duration::from_secs(80),
        }
    }
}

/// What changed after an estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkChange {
    /// Target bit rate of every rung, highest first (0 for a dropped top rung).
    pub rates: Vec<u32>,
    /// `Some(false)`: drop the top rung now; `Some(true)`: bring it back at the next group.
    pub top_rung: Option<bool>,
}

/// Follows the send-rate estimate with the video encoders' bit rates (see the module docs).
#[derive(Debug, Clone)]
pub struct UplinkController {
    config: UplinkConfig,
    /// Configured rates, highest first.
    configured: Vec<u32>,
    /// Whether each rung (highest first) is sent at all: only those share the budget.
    watched: Vec<bool>,
    audio_bps: u32,
    rates: Vec<u32>,
    smoothed: Option<f64>,
    top_dropped: bool,
    short_since: Option<u64>,
    fits_since: Option<u64>,
    cut_at: Option<u64>,
    connected_at: Option<u64>,
    /// When the top rung was last dropped.
    dropped_at: Option<u64>,
    /// The top rung is back on trial since then (see the module docs).
    probing_since: Option<u64>,
    /// The wait before the next try.
    probe_wait: Duration,
    /// The previous raw estimate: one below it is a congestion sign.
    last_estimate: Option<u64>,
    /// Tries of the top rung so far.
    probes: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl UplinkController {
    /// A controller for rungs configured at `configured` bit/s (highest first), with
    /// `audio_bps` of audio beside them.
    pub fn new(config: UplinkConfig, configured: Vec<u32>, audio_bps: u32) -> Self {
        Self {
            watched: vec![true; configured.len()],
            rates: configured.clone(),
            configured,
            audio_bps,
            probe_wait: config.probe_after,
            config,
            smoothed: None,
            top_dropped: false,
            short_since: None,
            fits_since: None,
            cut_at: None,
            connected_at: None,
            dropped_at: None,
            probing_since: None,
            last_estimate: None,
            probes: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UplinkConfig {
        &self.config
    }

    /// Current targets, highest first (0 for a dropped top rung).
    pub fn rates(&self) -> &[u32] {
        &self.rates
    }

    /// The sum of the current targets of the rungs that are sent, bit/s: the video rate
    /// on the uplink.
    pub fn video_bps(&self) -> u64 {
        self.rates.iter().zip(&self.watched).filter(|(_, w)| **w).map(|(&r, _)| u64::from(r)).sum()
    }

    /// The smoothed estimate, bit/s (`None` before the first one counted).
    pub fn smoothed_bps(&self) -> Option<u64> {
        self.smoothed.map(|s| s as u64)
    }

    /// Whether the top rung is dropped now.
    pub fn top_dropped(&self) -> bool {
        self.top_dropped
    }

    /// Whether the top rung is on trial now (sent again before the estimate showed room).
    pub fn probing(&self) -> bool {
        self.probing_since.is_some()
    }

    /// Times the top rung was tried again so far.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// A new connection started at `now_us`: its first estimates are ignored for
    /// [`UplinkConfig::warm_up`]; the rates in force stay.
    pub fn connected(&mut self, now_us: u64) {
        self.connected_at = Some(now_us);
    }

    /// Whether rung `rung` (highest first) is sent: a rung nobody subscribes to does not
    /// cross the uplink, so it keeps its configured rate and takes no share of the budget.
    /// Every rung counts as sent until told otherwise.
    pub fn set_watched(&mut self, rung: usize, watched: bool) {
        if let Some(w) = self.watched.get_mut(rung) {
            *w = watched;
        }
    }

    fn floor(&self, rung: usize) -> u32 {
        self.configured[rung].min(self.config.floor_bps)
    }

    fn top_min(&self) -> u32 {
        let top = self.configured.first().copied().unwrap_or(0);
        ((f64::from(top) * self.config.top_min_share) as u32).max(self.floor(0))
    }

    /// What the budget `budget` gives each rung, highest first (lowest rung served first).
    fn share_out(&self, budget: f64) -> Vec<u32> {
        let n = self.configured.len();
        let mut out = vec![0; n];
        let mut left = budget.max(0.0);
        let first = usize::from(self.top_dropped);
        for i in (first..n).rev() {
            if !self.watched[i] {
                // Not sent: it keeps the rate it has until somebody watches it again.
                out[i] = self.rates[i];
                continue;
            }
            let rate = left.min(f64::from(self.configured[i])).max(f64::from(self.floor(i)));
            out[i] = rate as u32;
            left = (left - rate).max(0.0);
        }
        out
    }

    fn drop_top(&mut self, now_us: u64) {
        self.top_dropped = true;
        self.short_since = None;
        self.fits_since = None;
        self.dropped_at = Some(now_us);
    }

    /// Takes an estimate of `estimate_bps` at `now_us`; returns what changed, if anything
    /// moved by 5% or more (or the top rung goes or comes back).
    pub fn on_estimate(&mut self, now_us: u64, estimate_bps: u64) -> Option<UplinkChange> {
        if let Some(at) = self.connected_at
            && now_us.saturating_sub(at) < us(self.config.warm_up)
        {
            return None;
        }
        if estimate_bps == 0 || self.configured.is_empty() {
            return None;
        }
        // The meter's estimate never falls without a congestion sign.
        let fell = self.last_estimate.is_some_and(|l| estimate_bps < l);
        self.last_estimate = Some(estimate_bps);
        let e = estimate_bps as f64;
        let s = match self.smoothed {
            None => e,
            Some(s) if e < s => s + (e - s) / 2.0,
            Some(s) => s + (e - s) / 8.0,
        };
        self.smoothed = Some(s);
        let budget = s * self.config.share - f64::from(self.audio_bps);

        // The top rung: dropped when what is left for it stays short, back when it fits.
        let mut top_rung = None;
        // Dropping the top rung helps only if a lower rung is sent for its viewers to move
        // to; else it goes down to its floor like a single tier.
        if self.configured.len() > 1 && self.watched[0] && self.watched[1..].contains(&true) {
            let lower: f64 = self.configured[1..]
                .iter()
                .zip(&self.watched[1..])
                .filter(|(_, w)| **w)
                .map(|(&r, _)| f64::from(r))
                .sum();
            let need = lower + f64::from(self.top_min());
            if self.top_dropped {
                if budget >= need * self.config.restore_margin {
                    let since = *self.fits_since.get_or_insert(now_us);
                    if now_us.saturating_sub(since) >= us(self.config.restore_after) {
                        self.top_dropped = false;
                        self.fits_since = None;
                        self.cut_at = Some(now_us);
                        self.probe_wait = self.config.probe_after;
                        top_rung = Some(true);
                    }
                } else {
                    self.fits_since = None;
                    // The lower rungs have what they are configured for (within the 10%
                    // the meter's probing cannot show) and the estimate holds: try.
                    let due = self
                        .dropped_at
                        .is_some_and(|d| now_us.saturating_sub(d) >= us(self.probe_wait));
                    if due && !fell && budget >= 0.9 * lower {
                        self.top_dropped = false;
                        self.probing_since = Some(now_us);
                        self.probes += 1;
                        self.cut_at = Some(now_us);
                        top_rung = Some(true);
                    }
                }
            } else if self.probing_since.is_some() && fell {
                // A congestion sign on trial: the try failed if the budget cannot carry
                // the rung; else the trial ends and the budget rules again.
                self.probing_since = None;
                if budget < need {
                    self.drop_top(now_us);
                    self.probe_wait = (self.probe_wait * 2).min(self.config.probe_after_max);
                    top_rung = Some(false);
                }
            } else if self.probing_since.is_some() {
                // On trial and no congestion sign: the rung climbs (below).
            } else if budget < need {
                let since = *self.short_since.get_or_insert(now_us);
                if now_us.saturating_sub(since) >= us(self.config.drop_after) {
                    self.drop_top(now_us);
                    top_rung = Some(false);
                }
            } else {
                self.short_since = None;
            }
        }

        let wanted = self.share_out(budget);
        let holding =
            self.cut_at.is_some_and(|t| now_us.saturating_sub(t) < us(self.config.hold_after_cut));
        // On trial, the top rung climbs by the step whatever the budget says (the estimate
        // follows what is sent): that is how the room shows.
        let trial = self.probing_since.is_some() && top_rung != Some(true);
        let mut next = self.rates.clone();
        let mut cut = false;
        for (i, (&want, cur)) in wanted.iter().zip(next.iter_mut()).enumerate() {
            let want = if i == 0 && trial {
                let climb = (f64::from(*cur) * self.config.max_step_up) as u32;
                want.max(if holding { *cur } else { climb.min(self.configured[0]) })
            } else {
                want
            };
            if want == 0 || (i == 0 && top_rung == Some(true)) {
                // Dropped, or coming back: from its floor-guarded share at once.
                *cur = want;
            } else if want < *cur || *cur == 0 {
                cut |= want < *cur;
                *cur = want;
            } else if !holding {
                let step = (f64::from(*cur) * self.config.max_step_up) as u32;
                *cur = want.min(step.max(*cur + 1));
            }
        }
        if cut {
            self.cut_at = Some(now_us);
        }
        if trial && next[0] >= self.configured[0] {
            // Back at its configured rate without a congestion sign: the link carries it.
            self.probing_since = None;
            self.probe_wait = self.config.probe_after;
        }
        // Moves under 5% wait, except the last step back to the configured rate.
        let moved = next.iter().zip(&self.rates).zip(&self.configured).any(|((&a, &b), &c)| {
            let (a, b) = (f64::from(a), f64::from(b));
            (a - b).abs() >= 0.05 * b.max(1.0)
                || (a == 0.0) != (b == 0.0)
                || (a != b && a == f64::from(c))
        });
        if moved || top_rung.is_some() {
            self.rates = next;
            return Some(UplinkChange { rates: self.rates.clone(), top_rung });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// The configured rates of a ladder's rungs, top first, as the publisher hands them to
    /// the controller.
    fn rates_of(ladder: &tiermesh_codec::LadderConfig) -> Vec<u32> {
        ladder.rungs.iter().map(|r| r.bitrate).collect()
    }

    /// The light ladder's rates (the default ladder's 360p and 180p: 550 and 150 kbit/s).
    fn light_rates() -> Vec<u32> {
        rates_of(&crate::media::light_ladder())
    }

    /// The controller of `tiermesh dev`'s light ladder.
    fn light() -> UplinkController {
        UplinkController::new(UplinkConfig::default(), light_rates(), 32_000)
    }

    fn feed(c: &mut UplinkController, from: u64, secs: u64, bps: u64) -> u64 {
        let mut t = from;
        while t < from + secs * S {
            c.on_estimate(t, bps);
            t += S / 2;
        }
        t
    }

    #[test]
    fn a_wide_uplink_keeps_the_configured_rates() {
        let mut c = light();
        feed(&mut c, 0, 5, 10_000_000);
        assert_eq!(c.rates(), light_rates());
        assert!(!c.top_dropped());
    }

    #[test]
    fn a_narrow_uplink_cuts_the_top_rung_first_then_recovers_slowly() {
        let mut c = light();
        let t = feed(&mut c, 0, 3, 440_000);
        // 0.8 x 440k - 32k = 320k: 180p keeps its 150k, 360p gets the rest (170k, above
        // its minimum of 30% of 550k).
        assert_eq!(c.rates()[1], 150_000);
        assert!((165_000..=175_000).contains(&c.rates()[0]), "{:?}", c.rates());
        assert!(c.video_bps() + 32_000 <= 440_000);
        // Back to 10 Mbit/s: not at once, within ~15 s.
        c.on_estimate(t, 10_000_000);
        assert!(c.rates()[0] < 200_000, "{:?}", c.rates());
        feed(&mut c, t + S / 2, 15, 10_000_000);
        assert_eq!(c.rates(), light_rates());
    }

    #[test]
    fn the_top_rung_goes_when_it_cannot_fit_and_comes_back_with_margin() {
        let mut c = UplinkController::new(
            UplinkConfig::default(),
            rates_of(&tiermesh_codec::LadderConfig::default()),
            32_000,
        );
        let mut dropped_at = None;
        let mut t = 0;
        while t < 5 * S {
            if let Some(ch) = c.on_estimate(t, 600_000)
                && ch.top_rung == Some(false)
            {
                dropped_at = Some(t);
            }
            t += S / 2;
        }
        assert!(dropped_at.is_some_and(|d| d <= 2 * S), "{dropped_at:?}");
        assert_eq!(c.rates()[0], 0);
        // 0.8 x 600k - 32k = 448k for 360p and 180p.
        assert!(c.video_bps() <= 448_000 + 1, "{:?}", c.rates());
        assert!(c.rates()[2] == 150_000 && c.rates()[1] >= 290_000, "{:?}", c.rates());
        // Just enough for the top at its minimum: not back (no margin; no try either, in
        // this test).
        c.probe_wait = Duration::from_secs(3600);
        let t = feed(&mut c, t, 10, 1_400_000);
        assert!(c.top_dropped());
        let mut back = None;
        let mut t2 = t;
        while t2 < t + 20 * S {
            if let Some(ch) = c.on_estimate(t2, 5_000_000)
                && ch.top_rung == Some(true)
            {
                back = Some(t2 - t);
            }
            t2 += S / 2;
        }
        assert!(back.is_some_and(|b| b >= 5 * S), "{back:?}");
        assert!(c.rates()[0] > 0);
    }

    /// The meter on a link of `link_bps`: what the rungs sent plus audio, 5% overhead;
    /// over the link, the estimate is the link's rate (falling at most by half); under it,
    /// it rises to at most 1.25 x what was sent, never falls.
    fn on_link(c: &UplinkController, est: u64, link_bps: u64) -> u64 {
        let sent = (c.video_bps() + 32_000) * 105 / 100;
        if sent > link_bps { link_bps.max(est / 2) } else { est.max(sent * 5 / 4) }
    }

    /// Runs `c` for `secs` on a link of `link_bps` from `t`; returns the time, the estimate
    /// and the times the top rung came back.
    fn run_link(
        c: &mut UplinkController,
        (mut t, mut est): (u64, u64),
        secs: u64,
        link_bps: u64,
    ) -> (u64, u64, Vec<u64>) {
        let mut back = Vec::new();
        let end = t + secs * S;
        while t < end {
            est = on_link(c, est, link_bps);
            if let Some(ch) = c.on_estimate(t, est)
                && ch.top_rung == Some(true)
            {
                back.push(t);
            }
            t += S / 2;
        }
        (t, est, back)
    }

    #[test]
    fn a_dropped_top_rung_is_tried_again_and_stays_when_the_link_carries_it() {
        let mut c = light();
        // 300 kbit/s: 360p cannot fit beside 180p and audio.
        let (t, est, back) = run_link(&mut c, (0, 2_000_000), 8, 300_000);
        assert!(c.top_dropped() && back.is_empty(), "{:?}", c.rates());
        assert_eq!(c.rates()[1], 150_000);
        // The link widens; the estimate alone would never show it (the 180p rung and the
        // audio use a fraction), so the top rung is tried, then grows with the estimate.
        let (t, _, back) = run_link(&mut c, (t, est), 40, 2_000_000);
        assert_eq!(back.len(), 1, "tried at {back:?}");
        assert!(back[0] - 8 * S <= 11 * S, "tried {} s after the link widened", back[0] / S);
        assert!(!c.top_dropped() && !c.probing(), "{:?}", c.rates());
        assert_eq!(c.rates(), light_rates(), "at {} s", t / S);
    }

    #[test]
    fn tries_on_a_link_that_stays_narrow_back_off() {
        let mut c = light();
        let (_, _, back) = run_link(&mut c, (0, 2_000_000), 120, 300_000);
        // Dropped at ~1 s; tries at ~11 s, then 20, 40, 80 s apart: 4 in 2 minutes.
        assert!((2..=4).contains(&back.len()), "tries at {back:?}");
        for w in back.windows(2) {
            assert!(w[1] - w[0] >= 20 * S, "tries at {back:?}");
        }
        assert!(c.top_dropped(), "{:?}", c.rates());
        // Every try ended at once: the lower rung kept its rate.
        assert_eq!(c.rates()[1], 150_000);
    }

    #[test]
    fn only_the_rungs_sent_share_the_budget() {
        let mut c = light();
        c.set_watched(1, false);
        feed(&mut c, 0, 3, 400_000);
        // 288k for 360p alone; 180p is not sent and keeps its rate.
        assert_eq!(c.rates()[1], 150_000);
        assert!((280_000..=290_000).contains(&c.rates()[0]), "{:?}", c.rates());
        // Far too narrow for 360p, but nothing lower is sent: 360p stays, at its floor.
        feed(&mut c, 3 * S, 5, 100_000);
        assert!(!c.top_dropped());
        assert_eq!(c.rates()[0], 100_000);
    }

    fn stats(sent: u64, lost: u64, rtt_ms: u64, window_bps: u64) -> Stats {
        Stats {
            rtt: Duration::from_millis(rtt_ms),
            min_rtt: Duration::from_millis(80),
            cwnd: 0,
            bytes_sent: sent,
            bytes_received: 0,
            bytes_lost: lost,
            packets_sent: 0,
            packets_lost: 0,
            congestion_events: 0,
            mtu: 1200,
            send_rate_estimate_bps: window_bps,
        }
    }

    #[test]
    fn the_meter_reads_the_sent_rate_under_congestion_and_probes_slowly_otherwise() {
        let mut m = UplinkMeter::new();
        assert_eq!(m.estimate(0, &stats(0, 0, 80, 900_000)), None);
        // Idle link, no queue: the window counts, capped by 1.25 x the rate sent...
        assert_eq!(m.estimate(S / 2, &stats(25_000, 0, 80, 900_000)), Some(900_000));
        // ... and it never falls without a congestion sign.
        assert_eq!(m.estimate(S, &stats(30_000, 0, 80, 600_000)), Some(900_000));
        // A queue (RTT 80 -> 200 ms): the rate sent, 400 kbit/s, but at most halved.
        assert_eq!(m.estimate(3 * S / 2, &stats(55_000, 0, 200, 900_000)), Some(450_000));
        // Losses: the rate sent less what was lost.
        assert_eq!(m.estimate(2 * S, &stats(80_000, 5_000, 80, 900_000)), Some(320_000));
        // A queue as the media paused: at most halved.
        assert_eq!(m.estimate(9 * S / 4, &stats(80_000, 5_000, 200, 900_000)), Some(160_000));
        // No congestion again: up by at most 1.25 x the rate sent (400k -> 500k).
        assert_eq!(m.estimate(11 * S / 4, &stats(105_000, 5_000, 80, 900_000)), Some(500_000));
    }

    #[test]
    fn floors_hold_and_warm_up_is_ignored() {
        let mut c = UplinkController::new(UplinkConfig::default(), vec![800_000], 32_000);
        c.connected(0);
        assert_eq!(c.on_estimate(S, 50_000), None);
        feed(&mut c, 2 * S, 3, 50_000);
        assert_eq!(c.rates(), [100_000]);
    }
}
