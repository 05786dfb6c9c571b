//! Adaptive bitrate for the native subscriber: which video tier to watch, sans-IO.
//!
//! The subscriber feeds [`Abr`] what it sees (bytes and capture-to-arrival latency of each
//! object, and where groups of the watched tier start) and asks at each group boundary
//! which tier to watch next ([`Abr::at_group_start`]). A switch therefore never happens
//! mid-group: the new tier is subscribed to from its next group.
//!
//! Rules:
//! - **Down fast.** When the latency of the watched tier's objects stays above
//!   [`AbrConfig::latency_limit`] for [`AbrConfig::late_for`], or the measured throughput over the last
//!   [`AbrConfig::window`] falls below [`AbrConfig::down_ratio`] of the tier's rate, the next
//!   boundary moves to the highest tier the measured throughput carries (at least one step).
//! - **Up cautiously.** One step up only after the current tier has been delivered whole and
//!   on time (latency under half the limit, throughput at least its rate) for
//!   [`AbrConfig::up_hold`]; a step up that fails (a step down within the hold) doubles the
//!   hold before the next try, up to [`AbrConfig::max_hold`], and goes back to the tier it
//!   came from (known to fit) rather than to what the failed tier's throughput suggests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tuning of [`Abr`].
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// Nominal rates of the tiers, bit/s, lowest first.
    pub tiers: Vec<u64>,
    /// Latency above which the tier is too heavy for the link.
    pub latency_limit: Duration,
    /// Throughput below this share of the tier's rate means it does not fit.
    pub down_ratio: f64,
    /// How long a tier must fit before one step up.
    pub up_hold: Duration,
    /// Longest hold after failed steps up.
    pub max_hold: Duration,
    /// Throughput is measured over this window.
    pub window: Duration,
    /// Latency must stay above the limit this long before the tier counts as too heavy: a
    /// lost packet holds its stream back for about one round trip, which says nothing
    /// about whether the tier fits.
    pub late_for: Duration,
}

impl AbrConfig {
    /// Defaults for `tiers`: 400 ms latency limit held for 500 ms, 0.8 down ratio, 4 s hold
    /// (up to 16 s), 2 s window.
    pub fn new(tiers: Vec<u64>) -> Self {
        Self {
            tiers,
            latency_limit: Duration::from_millis(400),
            down_ratio: 0.8,
            up_hold: Duration::from_secs(4),
            max_hold: Duration::from_secs(16),
            window: Duration::from_secs(2),
            late_for: Duration::from_millis(500),
        }
    }
}

/// The ABR state of one subscriber.
#[derive(Debug)]
pub struct Abr {
    config: AbrConfig,
    current: usize,
    /// (arrival, bytes) of the current tier inside the window.
    samples: VecDeque<(Instant, u64)>,
    /// Since when the current tier has fit (None: it does not).
    fitting_since: Option<Instant>,
    last_change: Instant,
    last_up: Option<Instant>,
    hold: Duration,
    too_late: bool,
    late_since: Option<Instant>,
}

impl Abr {
    /// Starts on tier `start` (clamped to the ladder) at `now`.
    pub fn new(config: AbrConfig, start: usize, now: Instant) -> Self {
        let current = start.min(config.tiers.len().saturating_sub(1));
        let hold = config.up_hold;
        Self {
            config,
            current,
            samples: VecDeque::new(),
            fitting_since: None,
            last_change: now,
            last_up: None,
            hold,
            too_late: false,
            late_since: None,
        }
    }

    /// The tier being watched.
    pub fn current(&self) -> usize {
        self.current
    }

    /// An object of the watched tier arrived: `bytes` of payload, `latency` from capture.
    pub fn on_object(&mut self, now: Instant, bytes: u64, latency: Duration) {
        self.samples.push_back((now, bytes));
        self.trim(now);
        if latency > self.config.latency_limit {
            let since = *self.late_since.get_or_insert(now);
            if now.duration_since(since) >= self.config.late_for {
                self.too_late = true;
            }
            self.fitting_since = None;
        } else if latency > self.config.latency_limit / 2 {
            self.late_since = None;
            self.fitting_since = None;
        } else {
            self.late_since = None;
            if self.fitting_since.is_none() && !self.too_late {
                self.fitting_since = Some(now);
            }
        }
    }

    fn trim(&mut self, now: Instant) {
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.config.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Measured throughput of the watched tier over the window, bit/s (None until the
    /// window has filled once since the last switch).
    pub fn throughput(&self, now: Instant) -> Option<f64> {
        if now.duration_since(self.last_change) < self.config.window {
            return None;
        }
        let bytes: u64 = self
            .samples
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= self.config.window)
            .map(|(_, b)| b)
            .sum();
        Some(bytes as f64 * 8.0 / self.config.window.as_secs_f64())
    }

    /// Between group boundaries: if the watched tier has stopped fitting (late objects or
    /// starved throughput), decides at once to go down and returns the lower tier. The
    /// caller makes the switch take effect at the next group boundary (subscribing the lower
    /// tier from its next group), so deciding early costs no mid-group switch and gains up
    /// to a group's time over waiting for [`Abr::at_group_start`].
    pub fn poll_down(&mut self, now: Instant) -> Option<usize> {
        self.trim(now);
        let rate = self.config.tiers[self.current] as f64;
        let measured = self.throughput(now);
        let starved = measured.is_some_and(|m| m < rate * self.config.down_ratio);
        if !(self.too_late || starved) || self.current == 0 {
            return None;
        }
        let fits = measured.unwrap_or(0.0);
        let below = self.config.tiers[..self.current]
            .iter()
            .rposition(|&r| (r as f64) <= fits)
            .unwrap_or(0);
        if self.last_up.is_some_and(|t| now.duration_since(t) < self.hold) {
            // A failed step up: back to the tier it came from, which fitted (what a tier
            // too heavy for the link still receives understates the link).
            self.hold = (self.hold * 2).min(self.config.max_hold);
            return Some(self.switch(now, self.current - 1));
        }
        Some(self.switch(now, below))
    }

    /// A group of the watched tier starts: returns the tier to watch from here on (the
    /// current one, or a switch that takes effect at this boundary).
    pub fn at_group_start(&mut self, now: Instant) -> usize {
        if let Some(lower) = self.poll_down(now) {
            return lower;
        }
        let rate = self.config.tiers[self.current] as f64;
        let measured = self.throughput(now);
        if self.too_late {
            // Already at the lowest tier: nothing lighter to go to.
            self.too_late = false;
        }
        let fit_long = self.fitting_since.is_some_and(|t| now.duration_since(t) >= self.hold)
            && now.duration_since(self.last_change) >= self.hold
            && measured.is_some_and(|m| m >= rate * self.config.down_ratio);
        if fit_long && self.current + 1 < self.config.tiers.len() {
            self.last_up = Some(now);
            return self.switch(now, self.current + 1);
        }
        self.current
    }

    /// The tier decided last has begun to arrive (its first group started at `now`):
    /// throughput is measured from here, not from the decision.
    pub fn started(&mut self, now: Instant) {
        self.samples.clear();
        self.fitting_since = None;
        self.too_late = false;
        self.late_since = None;
        self.last_change = now;
    }

    fn switch(&mut self, now: Instant, tier: usize) -> usize {
        self.current = tier;
        self.samples.clear();
        self.fitting_since = None;
        self.too_late = false;
        self.late_since = None;
        self.last_change = now;
        tier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: [u64; 3] = [150_000, 500_000, 1_500_000];

    /// Feeds `secs` of a tier delivered at `rate` bit/s with `latency`, 30 objects a second,
    /// one group a second; returns the tier after each group boundary.
    fn feed(abr: &mut Abr, t: &mut Instant, secs: u64, rate: u64, latency_ms: u64) -> Vec<usize> {
        let mut out = Vec::new();
        for _ in 0..secs {
            out.push(abr.at_group_start(*t));
            for _ in 0..30 {
                *t += Duration::from_millis(33);
                abr.on_object(*t, rate / 8 / 30, Duration::from_millis(latency_ms));
            }
            *t += Duration::from_millis(10);
        }
        out
    }

    #[test]
    fn goes_down_at_the_first_boundary_after_latency_rises() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(TIERS.to_vec()), 2, t);
        feed(&mut abr, &mut t, 3, 1_500_000, 80);
        assert_eq!(abr.current(), 2);
        // The link now carries 600 kbit/s and latency climbs.
        let tiers = feed(&mut abr, &mut t, 2, 600_000, 900);
        assert_eq!(tiers, [2, 1], "down one boundary after the first late group");
    }

    #[test]
    fn climbs_one_step_at_a_time_after_the_hold() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(TIERS.to_vec()), 0, t);
        let tiers = feed(&mut abr, &mut t, 5, 150_000, 80);
        assert_eq!(tiers, [0; 5], "no step up before the 4 s hold");
        // The step up happens at the next boundary, then 360p must fit 4 s more.
        let tiers = feed(&mut abr, &mut t, 7, 500_000, 80);
        assert_eq!(tiers, [1, 1, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn a_failed_step_up_doubles_the_hold() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(TIERS.to_vec()), 0, t);
        feed(&mut abr, &mut t, 6, 150_000, 80);
        assert_eq!(abr.current(), 1);
        // 500 kbit/s does not fit: late at once.
        feed(&mut abr, &mut t, 2, 300_000, 800);
        assert_eq!(abr.current(), 0);
        // Fits again, but the next try waits 8 s, not 4.
        let tiers = feed(&mut abr, &mut t, 7, 150_000, 80);
        assert!(tiers.iter().all(|&x| x == 0), "{tiers:?}");
    }

    #[test]
    fn a_short_burst_of_late_objects_is_not_a_reason_to_go_down() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(TIERS.to_vec()), 1, t);
        feed(&mut abr, &mut t, 3, 500_000, 80);
        // A loss holds the stream back for 200 ms: six objects late, then on time again.
        for _ in 0..6 {
            t += Duration::from_millis(33);
            abr.on_object(t, 2000, Duration::from_millis(450));
        }
        let tiers = feed(&mut abr, &mut t, 2, 500_000, 80);
        assert_eq!(tiers, [1, 1]);
    }

    #[test]
    fn starved_throughput_goes_to_the_tier_it_carries() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(TIERS.to_vec()), 2, t);
        // Latency stays moderate but only 200 kbit/s arrives.
        feed(&mut abr, &mut t, 3, 200_000, 150);
        assert_eq!(abr.current(), 0, "straight to 180p, not via 360p");
    }
}
