//! Adaptive bitrate for the native subscriber: which video tier to watch, sans-IO.
//!
//! The subscriber feeds [`Abr`] what it sees (bytes and capture-to-arrival latency of each
//! object, and where groups of the watched tier start) and asks at each group boundary
//! which tier to watch next ([`Abr::at_group_start`]). A switch therefore never happens
//! mid-group: the new tier is subscribed to from its next group.
//!
//! Rules:
//! - **Down fast when the link carries less than the tier.** When every object of the last
//!   [`AbrConfig::backlog_for`] arrived at least [`AbrConfig::backlog_limit`] late
//!   (queueing: latency above the least seen), the backlog has stopped draining and the
//!   next boundary moves to the highest tier the measured throughput carries (at least one
//!   step). A link cut to two thirds of the tier gets there about two seconds in.
//! - **Down fast when the relay cuts the tier's groups short.** A relay whose send
//!   scheduler cannot carry a tier in time does not queue it: it resets the tier's group
//!   streams (objects past their delivery timeout or capture-age budget) and keeps the
//!   objects that do leave early, so the tier arrives in part, on time, and no backlog
//!   builds. The subscriber tells [`Abr::on_group_end`] how each group of the watched tier
//!   ended ([`GroupEnds`] says which groups, and when); when the last two both ended cut
//!   short and together brought at most [`AbrConfig::cut_share`] of two whole groups'
//!   objects (the picture frozen for the rest), the tier does not fit and the next boundary
//!   is one step down (lower if the measured throughput says so). A group of which nothing
//!   arrived (its stream reset before its first object, or skipped IDs: no stream opened)
//!   is a group cut to nothing. One group cut short (a burst of losses, a loss recovery
//!   running into a key frame) is no reason to leave, and a group that arrived whole ends
//!   the run. Tracks of one subgroup per group only (see [`GroupEnds`]).
//! - **A loss recovery is not congestion.** A lost packet holds its stream back for a round
//!   trip or more, and a few losses close together hold a loss-based congestion window
//!   below the tier's rate for seconds; the objects behind then arrive late in bursts and
//!   the backlog drains once the window has grown back. So the slower signals need
//!   sustained evidence: throughput (the median of one-second parts of
//!   [`AbrConfig::window`]) below [`AbrConfig::down_ratio`] of the tier's rate counts only
//!   once nothing has arrived on time for [`AbrConfig::behind_for`], and queueing over
//!   [`AbrConfig::latency_limit`] only once it has stayed there [`AbrConfig::late_for`]
//!   without falling; neither counts while the newest second brought more than the tier's
//!   rate (a backlog draining). A tier delivered on time fits, whatever its byte rate.
//! - **A silent tier is left one step at a time; a silent link is waited out.** Nothing of
//!   the tier at all for [`AbrConfig::behind_for`] (a rung its publisher dropped, a path
//!   that carries nothing of it), its first group after a switch included, is starved too,
//!   even before the window has filled; the subscriber polls [`Abr::poll_down`] on a timer,
//!   since no arrival would ask it. It goes one step down, not to the lowest tier: a tier
//!   that delivers nothing says nothing of the link's rate (the rung above it stopped, or
//!   the relay holds it back), the tier below is the one most likely to flow (relays drop
//!   the highest first), and a climb back from the lowest tier takes a hold per step. Where
//!   that tier is silent too, its switch is given up within [`SWITCH_WAIT`] and the next one
//!   down is tried: one step per wait while lower tiers stay silent. But while nothing of
//!   the session arrives at all (no audio for [`LINK_GAP`], [`Abr::on_link`]) the link is
//!   out, not the tier: no tier would play better, and a user whose link comes back wants
//!   the tier that fitted, so no rule that reads silence or short throughput switches then,
//!   and their patience counts from the link's return.
//! - **A switch whose tier never comes is given up.** The new tier starts at its next group;
//!   the tier left plays up to that boundary ([`Abr::on_left_object`]). If nothing of the new
//!   tier has arrived [`SWITCH_GRACE`] after the tier left reached the boundary (or
//!   [`SWITCH_WAIT`] after the SUBSCRIBE was answered, where it never did), the switch is
//!   given up: back to the tier left if it still delivers (a step up that fails so doubles
//!   the hold), else one step below both. A tier given up so is not switched down to again
//!   for the hold ([`Abr::poll_down`] goes past it).
//! - **Up cautiously.** One step up only after the current tier has been delivered whole and
//!   on time (latency under half the limit, throughput at least its rate, no group cut short
//!   below [`AbrConfig::cut_share`]) for [`AbrConfig::up_hold`], and only if the link's
//!   capacity, estimated from how long key frames take to arrive beyond the smallest
//!   objects ([`Abr::capacity`]), carries the higher tier. A step up that fails (a step down
//!   within the hold, groups cut short too; the tier tried gets only
//!   [`AbrConfig::behind_for_after_up`] of patience) doubles the hold before the next try,
//!   up to [`AbrConfig::max_hold`], and goes back to the tier it came from (known to fit)
//!   rather than to what the failed tier's throughput suggests.
//! - **A quicker climb from the start.** Until its first step down, the ABR may step up after
//!   [`AbrConfig::start_hold`] instead of the hold and the full window, on the same
//!   evidence (delivered on time, at its rate, and the capacity estimate carrying the higher
//!   tier). `sub --abr` starts on the lowest tier, which joins at once and fits any link
//!   that carries a picture at all; this climb takes it to the tier the link carries about
//!   as soon as a start on the middle tier got there.

use std::collections::{BTreeSet, VecDeque};
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
    /// lost packet holds its stream back for about one round trip, and a congestion window
    /// cut by a few losses for seconds, which says nothing about whether the tier fits.
    pub late_for: Duration,
    /// A step up needs the estimated link capacity to be at least this share of the higher
    /// tier's rate.
    pub up_capacity_ratio: f64,
    /// Short throughput counts only once no object of the tier has arrived on time (queueing
    /// under half [`AbrConfig::latency_limit`]) for this long: longer than one loss recovery
    /// and the congestion window's climb back after it.
    pub behind_for: Duration,
    /// [`AbrConfig::behind_for`] for a tier stepped up to within the hold: a tier just
    /// tried has not shown yet that it fits.
    pub behind_for_after_up: Duration,
    /// The tier does not fit once every object of the last [`AbrConfig::backlog_for`]
    /// arrived at least this much late (queueing): the backlog stopped draining.
    pub backlog_limit: Duration,
    /// See [`AbrConfig::backlog_limit`].
    pub backlog_for: Duration,
    /// Until the first step down, a step up needs the tier to have fit only this long, its
    /// rate measured since it started rather than over the full [`AbrConfig::window`]
    /// (`None`: the hold and the window from the start too).
    pub start_hold: Option<Duration>,
    /// Groups cut short: the tier does not fit once the last two groups of it that ended both
    /// ended cut short (a stream reset, or objects missing) and together brought at most
    /// this share of the objects of two whole groups (the least of the last three whole
    /// groups seen; before the first one nothing counts). A single group cut short never
    /// switches on its own, and a whole group ends the run. A group that brought less than
    /// this share of a whole group's objects also restarts the hold before a step up.
    pub cut_share: f64,
}

impl AbrConfig {
    /// Defaults for `tiers`: 400 ms latency limit held for 5 s, 0.8 down ratio judged after
    /// 5 s with nothing on time (1.5 s after a step up), 600 ms backlog held for 2 s, two
    /// groups cut short to at most 60% of their objects, 4 s hold (up to 16 s), 5 s window,
    /// capacity at least the higher tier's rate to step up, 1.5 s start hold.
    pub fn new(tiers: Vec<u64>) -> Self {
        Self {
            tiers,
            latency_limit: Duration::from_millis(400),
            down_ratio: 0.8,
            up_hold: Duration::from_secs(4),
            max_hold: Duration::from_secs(16),
            // Five one-second parts (one group each) whose median counts: a group lost to
            // a burst of losses spoils one or two parts, a tier the link cannot carry is
            // short in three of five within about three seconds.
            window: Duration::from_secs(5),
            // On a lossy link (rural: 1%) a loss-based controller's window dips below a
            // tier's rate for up to 4 s after a few losses, and queueing rises with it (to
            // 1-1.5 s at its peak, measured with seed 7); a tier the link cannot carry keeps
            // it up for good, and the backlog rule catches that sooner.
            late_for: Duration::from_secs(5),
            // The estimate (see `Abr::capacity`) can only read low (a queue or a loss ahead
            // of a key frame stretches its arrival), never above the link's rate: a tier at
            // or below it has room on the link.
            up_capacity_ratio: 1.0,
            // On `rural` (1 Mbit/s, 1% loss) a few losses close together hold the relay's
            // cubic window below 360p's rate: nothing arrives on time for 4-5 s (seed 7),
            // the median of the one-second parts falls short after about 2.5 s, and the
            // backlog then drains at above the tier's rate. A link that dropped under the
            // tier builds a backlog, which the backlog rule catches in about 2 s.
            behind_for: Duration::from_secs(5),
            behind_for_after_up: Duration::from_millis(1500),
            // Measured with `sub --abr` (object traces): on `rural` a loss recovery, and the
            // few seconds of a cubic window below 360p's rate after a burst of losses, never
            // kept the least queueing of two seconds above 440 ms (seed 7, five runs: 280 to
            // 430 ms); when `step` cuts the link under 720p it passes 600 ms 2.1-2.2 s into
            // the cut (the link delivers two thirds of the tier, the backlog grows by a
            // third of a second each second).
            backlog_limit: Duration::from_millis(600),
            backlog_for: Duration::from_secs(2),
            // Two one-second groups on time, judged at the start of the third: from the
            // arrival of the first one's key frame to the third one's is two group times
            // give or take the arrival jitter, so the bound sits well under two seconds.
            // With the step up taking effect at the next group and the new tier's first
            // group not measured (it carries the switch's start-up), a climb from the lowest
            // of three tiers then reaches the top about seven seconds in, as the full hold
            // and window did from the middle one. A tier that does not fit is caught by the
            // backlog rule 2 s into it (1.5 s of patience otherwise) and counts as a failed
            // step up, which ends the quick climb.
            start_hold: Some(Duration::from_millis(1500)),
            // Measured with `shaped_abr` (30 objects a group; docs/BENCHMARKS.md, "Groups cut
            // short"): on `rural` (360p fits) a few losses close together hold cubic's window
            // down and the relay cuts two or three 360p groups in a row by their capture age;
            // two consecutive ones brought 40 to 49 of 60 objects (67-82%, 16 runs; with
            // `delay` no two were cut). On `step`'s cut (the link a third of 3 Mbit/s: about
            // 60% of 720p's bytes fit) with `delay` every 720p group arrives cut short, the
            // first at its tail (9 to 29 objects), then 8 to 18: two in a row brought 22 to
            // 39, and two of the first three at most 34 in every run (14 runs; with cubic,
            // where the backlog rule mostly decides, 22 to 36). 60% (36 of 60) lies between.
            cut_share: 0.6,
        }
    }
}

/// The ABR state of one subscriber.
#[derive(Debug)]
pub struct Abr {
    config: AbrConfig,
    current: usize,
    /// (arrival, bytes, queueing) of the current tier inside the window.
    samples: VecDeque<(Instant, u64, Duration)>,
    /// Since when the current tier has fit (None: it does not).
    fitting_since: Option<Instant>,
    last_change: Instant,
    last_up: Option<Instant>,
    hold: Duration,
    too_late: bool,
    /// When the current late stretch began, and the least queueing latency in its first
    /// half of [`AbrConfig::late_for`].
    late_since: Option<(Instant, Duration)>,
    /// The queueing latency of the last object.
    last_latency: Duration,
    /// When an object of the tier last arrived on time (queueing under half the limit), or
    /// the tier started.
    on_time_at: Instant,
    /// The last link capacity estimates from key frames, bit/s, newest last.
    capacity: VecDeque<f64>,
    /// Why the last switch was decided.
    reason: Option<&'static str>,
    /// No step down yet: [`AbrConfig::start_hold`] applies.
    climbing: bool,
    /// The object counts of the last whole groups (of any tier: the tiers share one grid of
    /// groups), newest last.
    whole: VecDeque<u64>,
    /// How many objects the last group of the current tier that ended cut short brought, if
    /// the last group that ended was cut short.
    cut_before: Option<u64>,
    /// The last two groups of the current tier ended cut short (see [`AbrConfig::cut_share`]).
    cut: bool,
    /// When an object of the current tier last arrived, measured or not, or when it started.
    heard: Instant,
    /// A switch decided whose tier has not begun to arrive yet.
    waiting: Option<Waiting>,
    /// The newest arrival of the rest of the session (its audio), if one was reported.
    link_heard: Option<Instant>,
    /// When the rest of the session began to arrive again after [`LINK_GAP`] of nothing (or
    /// the watch began): silence of the tier counts from here.
    link_back: Instant,
    /// The last tier a switch to which was given up for delivering nothing, and when.
    refused: Option<(usize, Instant)>,
}

/// A switch decided whose tier has not begun to arrive (see [`Abr::poll_down`]).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// The tier the subscriber still plays (up to the boundary) or played last.
    left: usize,
    /// When the switch was decided, or its SUBSCRIBE answered ([`Abr::subscribed`]).
    since: Instant,
    /// When the tier left first brought an object of the new tier's first group or a later
    /// one: from there the picture waits for the new tier.
    boundary: Option<Instant>,
    /// When an object of the tier left last arrived during the wait.
    left_heard: Option<Instant>,
}

/// How many parts [`Abr::throughput`] takes the median of: five one-second parts of the
/// default window, one group each, so that an outage straddling two parts still leaves
/// the median to three good ones.
const WINDOW_PARTS: usize = 5;

/// A step up counts as failed when the tier stops fitting within the hold plus this: long
/// enough for the backlog rule to judge it, short enough that a link dropping later (a cut
/// after the tier fitted for a while) is not blamed on the step up.
const TRIAL: Duration = Duration::from_secs(3);

/// How many key-frame capacity estimates [`Abr::capacity`] takes the median of: three
/// groups, so one key frame held back by a loss does not decide alone.
const CAPACITY_SAMPLES: usize = 3;

/// The shortest arrival stretch a capacity estimate divides by: below a few milliseconds
/// the timer's and scheduler's granularity dominates and the estimate means nothing.
const MIN_STRETCH: Duration = Duration::from_millis(3);

/// How long after the tier left reached the new tier's first group a switch waits for the
/// new tier before it is given up. The new tier's first group starts at the same source
/// frame (same capture time) as the tier left's, and every relay drops objects older than
/// the capture-age budget (800 ms by default), so its key frame arrives within that budget
/// plus its own transfer and one retransmission of the other's (at most 0.75 s more, on
/// `satellite`: a 600 ms round trip), or never. A relay whose scheduler holds the tier back
/// (its path reading too low) starts one group as a probe once it has written nothing for a
/// second (`scheduler::PROBE_GAP`): the next group, about a second after the boundary, in
/// well under 1.75 s where the link carries it. A tier its relay keeps holding for longer
/// (probes that failed) does not fit, and the tier left does. The tier left is resubscribed
/// from its next group, so what a give-up costs is the groups from the boundary to that one:
/// with the subscriber's 250 ms timer the give-up comes 1.75-2 s after the boundary, and on
/// loopback it came just as the tier left's second group past the boundary began (a hair
/// too late for it: three groups without a picture; see docs/BENCHMARKS.md, "A tier that
/// stops").
pub const SWITCH_GRACE: Duration = Duration::from_millis(1750);

/// How long after a switch was decided (or its SUBSCRIBE answered) it waits for the new
/// tier when the tier left never reaches the boundary (it is silent): one group time (one
/// second for tiermesh's publishers and ingest) for the new tier's next group to begin, then
/// [`SWITCH_GRACE`].
pub const SWITCH_WAIT: Duration = Duration::from_millis(2750);

/// Nothing of the rest of the session (its audio, a group every 20 ms, the most important
/// media) for this long means nothing gets through: the link is out, not a tier. A second:
/// audio keeps flowing on every link profile (99% on time on `rural`), and a lost packet
/// holds one frame for a round trip and its retransmission (at most 0.6 s on `satellite`).
pub const LINK_GAP: Duration = Duration::from_secs(1);

/// How many whole groups' object counts [`Abr::on_group_end`] keeps; the least of them is a
/// whole group's length. The least, so that a longer group (one begun early at a key-frame
/// request lasts up to two group times) does not make ordinary groups look cut short.
const WHOLE_SAMPLES: usize = 3;

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
            last_latency: Duration::ZERO,
            on_time_at: now,
            capacity: VecDeque::new(),
            reason: None,
            climbing: true,
            whole: VecDeque::new(),
            cut_before: None,
            cut: false,
            heard: now,
            waiting: None,
            link_heard: None,
            link_back: now,
            refused: None,
        }
    }

    /// Why the last switch was decided: `"backlog"` (every object of the last
    /// [`AbrConfig::backlog_for`] over [`AbrConfig::backlog_limit`] late), `"late"` (queueing
    /// stayed over the limit and did not fall), `"starved"` (throughput below the down
    /// ratio, or nothing at all, with nothing on time), `"cut"` (two groups in a row cut short, see
    /// [`AbrConfig::cut_share`]), `"failed step up"` (a step up that failed, or whose tier
    /// never came), `"no delivery"` (a switch down whose tier never came: back to the tier
    /// left, or one step further down) or `"up"`.
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// The link capacity estimate, bit/s: the median of the last key frames' size over the
    /// time they took beyond the smallest objects' latency (a key frame leaves in one burst,
    /// so it arrives spread over its size at the bottleneck's rate); of two, the lower. `None`
    /// before the first key frame.
    pub fn capacity(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.capacity.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        // The lower median: the first key frame of a watch has no floor to be measured
        // against yet and reads far too high.
        v.get(v.len().saturating_sub(1) / 2).copied()
    }

    /// The tier being watched.
    pub fn current(&self) -> usize {
        self.current
    }

    /// An object of the watched tier arrived: `bytes` of payload, `latency` its queueing
    /// (capture-to-arrival latency above the least seen), `key` if it starts a group.
    pub fn on_object(&mut self, now: Instant, bytes: u64, latency: Duration, key: bool) {
        self.on_heard(now);
        self.samples.push_back((now, bytes, latency));
        self.trim(now);
        if key {
            let stretch = latency.max(MIN_STRETCH).as_secs_f64();
            self.capacity.push_back(bytes as f64 * 8.0 / stretch);
            if self.capacity.len() > CAPACITY_SAMPLES {
                self.capacity.pop_front();
            }
        }
        self.last_latency = latency;
        if latency <= self.config.latency_limit / 2 {
            self.on_time_at = now;
        }
        if latency > self.config.latency_limit {
            let (since, floor) = self.late_since.get_or_insert((now, latency));
            let late = now.duration_since(*since);
            // A backlog draining after a loss recovery: latency falls below the least of
            // the stretch's first half. Congestion holds it there or makes it grow. (The
            // least, not the first: a key frame arrives later than the small frames after
            // it by its size over the link rate, on a standing queue too.)
            if late < self.config.late_for / 2 {
                *floor = (*floor).min(latency);
            } else if late >= self.config.late_for
                && latency + self.config.latency_limit / 4 >= *floor
            {
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

    /// An object of the watched tier arrived that [`Abr::on_object`] does not measure (a
    /// joining FETCH, the tier's first group after a switch): the tier is not silent. Ends
    /// the wait for a switch's tier, as [`Abr::on_object`] does.
    pub fn on_heard(&mut self, now: Instant) {
        self.heard = self.heard.max(now);
        self.waiting = None;
    }

    /// While a switch waits for its tier: an object of the tier left arrived at `now`;
    /// `past` if it belongs to the new tier's first group or a later one (it is not played:
    /// the picture waits for the new tier from the first such object).
    pub fn on_left_object(&mut self, now: Instant, past: bool) {
        if let Some(w) = &mut self.waiting {
            w.left_heard = Some(now);
            if past && w.boundary.is_none() {
                w.boundary = Some(now);
            }
        }
    }

    /// The rest of the session (its audio) last delivered an object at `at`: the link
    /// works. The subscriber may report only the newest arrival of several, at least every
    /// quarter of [`LINK_GAP`].
    pub fn on_link(&mut self, at: Instant) {
        match self.link_heard {
            Some(prev) if at <= prev => return,
            Some(prev) if at.duration_since(prev) >= LINK_GAP => self.link_back = at,
            _ => {}
        }
        self.link_heard = Some(at);
    }

    /// The SUBSCRIBE of the tier decided last was answered at `now`: its wait counts from
    /// here ([`SWITCH_WAIT`]), the round trips of the subscription left out.
    pub fn subscribed(&mut self, now: Instant) {
        if let Some(w) = &mut self.waiting {
            w.since = w.since.max(now);
        }
    }

    /// The switch decided last cannot be made (its SUBSCRIBE was refused, or its
    /// subscription ended before its first object): the tier left is watched again,
    /// measured afresh from `now`, and the refused one is not switched down to for the
    /// hold.
    pub fn cancel(&mut self, now: Instant) {
        if let Some(w) = self.waiting {
            self.refused = Some((self.current, now));
            self.current = w.left;
            self.started(now);
        }
    }

    /// Nothing of the rest of the session has arrived for [`LINK_GAP`]: the link is out.
    fn link_silent(&self, now: Instant) -> bool {
        self.link_heard.is_some_and(|t| now.saturating_duration_since(t) >= LINK_GAP)
    }

    /// A group of the watched tier ended: `objects` of it arrived, `whole` if its stream
    /// ended with FIN and no object ID was missing (a reset stream, or objects missing, is
    /// a group cut short; nothing of it, a group cut to nothing). The subscriber leaves out
    /// what says nothing of the tier ([`GroupEnds`]): the first group after a switch (it
    /// carries the start-up), a joining FETCH, a group the watch ended in, and the groups of
    /// a tier sent on several subgroups.
    pub fn on_group_end(&mut self, objects: u64, whole: bool) {
        if whole {
            self.whole.push_back(objects);
            if self.whole.len() > WHOLE_SAMPLES {
                self.whole.pop_front();
            }
            self.cut_before = None;
            return;
        }
        // Before any whole group a group's length is unknown, and so is how much of it is
        // missing: the other rules judge the tier then.
        let Some(len) = self.whole.iter().copied().min() else {
            return;
        };
        let share = self.config.cut_share;
        if (objects as f64) < share * len as f64 {
            // Far from whole: no step up from here until the hold has passed again.
            self.fitting_since = None;
        }
        if let Some(before) = self.cut_before
            && (before + objects) as f64 <= share * 2.0 * len as f64
        {
            self.cut = true;
        }
        self.cut_before = Some(objects);
    }

    fn trim(&mut self, now: Instant) {
        while let Some(&(t, _, _)) = self.samples.front() {
            if now.duration_since(t) > self.config.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Measured throughput of the watched tier, bit/s: the median of the rates of the
    /// five equal parts of the window (None until the window has filled once
    /// since the last switch). The median, so that one stretch the link lost (a group the
    /// relay dropped after a burst of losses) does not read as a tier that no longer fits,
    /// while a tier the link cannot carry is short in most parts.
    pub fn throughput(&self, now: Instant) -> Option<f64> {
        if now.duration_since(self.last_change) < self.config.window {
            return None;
        }
        let mut parts = self.parts(now);
        parts.sort_by(f64::total_cmp);
        Some(parts[WINDOW_PARTS / 2])
    }

    /// The rate of the current tier since it started (or over the window, if longer),
    /// bit/s: the samples kept over the time they span.
    fn rate_since_change(&self, now: Instant) -> f64 {
        let span = now.duration_since(self.last_change).min(self.config.window);
        let bytes: u64 = self.samples.iter().map(|(_, b, _)| b).sum();
        bytes as f64 * 8.0 / span.as_secs_f64().max(1e-3)
    }

    /// The rate of the newest part of the window, bit/s (None until a part's time has
    /// passed since the last switch).
    fn newest(&self, now: Instant) -> Option<f64> {
        let part = self.config.window / WINDOW_PARTS as u32;
        (now.duration_since(self.last_change) >= part).then(|| self.parts(now)[0])
    }

    /// The least queueing of the objects of the last [`AbrConfig::backlog_for`] (None until
    /// that long has passed since the last switch, or if nothing arrived in it).
    fn backlog(&self, now: Instant) -> Option<Duration> {
        if now.duration_since(self.last_change) < self.config.backlog_for {
            return None;
        }
        self.samples
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= self.config.backlog_for)
            .map(|(_, _, q)| *q)
            .min()
    }

    /// The rates of the window's parts, bit/s, newest first.
    fn parts(&self, now: Instant) -> [f64; WINDOW_PARTS] {
        let part = self.config.window / WINDOW_PARTS as u32;
        let mut bytes = [0u64; WINDOW_PARTS];
        for (t, b, _) in &self.samples {
            let age = now.duration_since(*t);
            if age < self.config.window {
                let i = (age.as_nanos() / part.as_nanos().max(1)) as usize;
                bytes[i.min(WINDOW_PARTS - 1)] += b;
            }
        }
        bytes.map(|b| b as f64 * 8.0 / part.as_secs_f64())
    }

    /// Between group boundaries: if the watched tier has stopped fitting (late objects,
    /// starved throughput or groups cut short), decides at once to go down and returns the
    /// lower tier. The caller makes the switch take effect at the next group boundary
    /// (subscribing the lower tier from its next group), so deciding early costs no
    /// mid-group switch and gains up to a group's time over waiting for
    /// [`Abr::at_group_start`].
    ///
    /// While a switch waits for its tier, decides only whether to give it up (see
    /// [`SWITCH_GRACE`]): back to the tier left if it still delivers, else one step below
    /// both.
    pub fn poll_down(&mut self, now: Instant) -> Option<usize> {
        self.trim(now);
        if let Some(w) = self.waiting {
            return self.give_up(now, w);
        }
        let rate = self.config.tiers[self.current] as f64;
        let measured = self.throughput(now);
        // Failed: it stopped fitting within the hold plus the time lateness takes to judge.
        let tried = self.last_up.is_some_and(|t| now.duration_since(t) < self.hold + TRIAL);
        // Throughput short of the tier's rate says the tier does not fit only when it is
        // sustained: nothing on time for longer than a loss recovery and the window's climb
        // back after it take, and the backlog not draining (the newest second delivered less
        // than the tier's rate). A tier delivered on time fits, whatever its byte rate (the
        // publisher may produce less than the catalog says).
        let patience = if tried { self.config.behind_for_after_up } else { self.config.behind_for };
        // While nothing of the session arrives the link is out, not the tier; after it came
        // back the tier is judged from its return.
        let link_up = !self.link_silent(now);
        let behind = now.duration_since(self.on_time_at.max(self.link_back)) >= patience;
        let draining = self.newest(now).is_some_and(|n| n >= rate);
        // Nothing of the tier at all for as long (its publisher dropped it, or the path to it
        // carries nothing): starved too, even before the window has filled since the switch.
        let silent = now.duration_since(self.heard.max(self.link_back)) >= patience;
        let starved = link_up
            && behind
            && !draining
            && (silent || measured.is_some_and(|m| m < rate * self.config.down_ratio));
        // A late stretch whose newest second brought more than the tier's rate is a backlog
        // draining, not a tier too heavy (that one never delivers above its rate).
        let late = self.too_late && !draining;
        let backlog = self.backlog(now).is_some_and(|q| q >= self.config.backlog_limit);
        // Groups cut short: the relay carried part of each in time. One step down is a tier
        // its scheduler keeps flowing (it cuts the least important first); lower only if
        // the measured throughput says so, and two more groups cut short take it further.
        let cut = self.cut;
        if !(backlog || late || starved || cut) || self.current == 0 {
            return None;
        }
        if tried {
            // A failed step up: back to the tier it came from, which fitted (what a tier
            // too heavy for the link still receives understates the link). That tier was
            // not stepped up to: it gets the usual patience again.
            self.climbing = false;
            self.hold = (self.hold * 2).min(self.config.max_hold);
            self.last_up = None;
            self.reason = Some("failed step up");
            return Some(self.switch(now, self.current - 1));
        }
        let one_step = self.current - 1;
        let below = if starved && silent && !(backlog || late || cut) {
            // Silence says nothing of the link's rate (what arrived before it does not
            // either): one step, the tier most likely to flow.
            one_step
        } else {
            let fits = match measured {
                Some(m) => m,
                None if cut => self.config.tiers[one_step] as f64,
                None => 0.0,
            };
            self.config.tiers[..self.current].iter().rposition(|&r| (r as f64) <= fits).unwrap_or(0)
        };
        // Not to a tier that delivered nothing lately when switched to: the one below it.
        let below = match self.refused {
            Some((tier, at)) if tier == below && now.duration_since(at) < self.hold => {
                below.checked_sub(1)?
            }
            _ => below,
        };
        self.climbing = false;
        self.reason = Some(if backlog {
            "backlog"
        } else if late {
            "late"
        } else if starved {
            "starved"
        } else {
            "cut"
        });
        Some(self.switch(now, below))
    }

    /// A group of the watched tier starts: returns the tier to watch from here on (the
    /// current one, or a switch that takes effect at this boundary).
    pub fn at_group_start(&mut self, now: Instant) -> usize {
        if let Some(lower) = self.poll_down(now) {
            return lower;
        }
        if self.waiting.is_some() {
            // Nothing of the tier decided has arrived yet: nothing to judge it by.
            return self.current;
        }
        let rate = self.config.tiers[self.current] as f64;
        let measured = self.throughput(now);
        if self.too_late || self.cut {
            // Already at the lowest tier: nothing lighter to go to.
            self.too_late = false;
            self.cut = false;
        }
        let fit_long = self.fitting_since.is_some_and(|t| now.duration_since(t) >= self.hold)
            && now.duration_since(self.last_change) >= self.hold
            && measured.is_some_and(|m| m >= rate * self.config.down_ratio);
        let fit_start = self.climbing
            && self.config.start_hold.is_some_and(|hold| {
                self.fitting_since.is_some_and(|t| now.duration_since(t) >= hold)
                    && now.duration_since(self.last_change) >= hold
                    && self.rate_since_change(now) >= rate * self.config.down_ratio
            });
        let Some(&higher) = self.config.tiers.get(self.current + 1) else {
            return self.current;
        };
        let room =
            self.capacity().is_some_and(|c| c >= higher as f64 * self.config.up_capacity_ratio);
        if (fit_long || fit_start) && room {
            self.last_up = Some(now);
            self.reason = Some("up");
            return self.switch(now, self.current + 1);
        }
        self.current
    }

    /// A switch waits for its tier (`w`): gives it up once [`SWITCH_GRACE`] has passed since
    /// the tier left reached the boundary ([`SWITCH_WAIT`] since the decision or the answer to
    /// its SUBSCRIBE, if it never did) with nothing of the new tier, unless the link is out:
    /// back to the tier left if it still delivers, else one step below both (none below:
    /// waits on).
    fn give_up(&mut self, now: Instant, w: Waiting) -> Option<usize> {
        let due = match w.boundary {
            Some(b) => b + SWITCH_GRACE,
            None => w.since + SWITCH_WAIT,
        };
        if now < due.max(self.link_back + SWITCH_GRACE) || self.link_silent(now) {
            return None;
        }
        let refused = self.current;
        // It reached the boundary, or brought something lately.
        let delivers = w.left != refused
            && (w.boundary.is_some()
                || w.left_heard.is_some_and(|t| now.duration_since(t) < SWITCH_GRACE));
        let next = if delivers {
            w.left
        } else {
            match w.left.min(refused).checked_sub(1) {
                Some(lower) => lower,
                None => {
                    // Nothing lower to try: wait on for this tier.
                    self.waiting = Some(Waiting { since: now, ..w });
                    return None;
                }
            }
        };
        self.refused = Some((refused, now));
        self.climbing = false;
        if next < refused && next == w.left {
            // A step up whose tier never came.
            self.hold = (self.hold * 2).min(self.config.max_hold);
            self.last_up = None;
            self.reason = Some("failed step up");
        } else {
            self.reason = Some("no delivery");
        }
        Some(self.switch(now, next))
    }

    /// The tier decided last has begun to arrive (its first group started at `now`):
    /// throughput is measured from here, not from the decision.
    pub fn started(&mut self, now: Instant) {
        self.waiting = None;
        self.heard = now;
        self.samples.clear();
        self.fitting_since = None;
        self.too_late = false;
        self.cut_before = None;
        self.cut = false;
        self.late_since = None;
        self.on_time_at = now;
        self.last_change = now;
    }

    /// Moves to `tier`, measuring it afresh from `now` (as [`Abr::started`]), and waits for
    /// it to begin to arrive.
    fn switch(&mut self, now: Instant, tier: usize) -> usize {
        // The tier the subscriber plays until the new one begins: if a switch was waiting
        // already, still the one it left.
        let left = self.waiting.map_or(self.current, |w| w.left);
        self.current = tier;
        self.started(now);
        self.waiting = Some(Waiting { left, since: now, boundary: None, left_heard: None });
        tier
    }
}

/// How many groups newer than the last one judged [`GroupEnds`] remembers as seen: far more
/// than the groups of one tier in flight at once (two or three).
const SEEN_GROUPS: usize = 64;

/// Which groups of the watched tier [`Abr::on_group_end`] hears of, and when: the subscriber
/// hands it what arrives of the tier (each object's group and subgroup, each subgroup
/// stream's end) and tells the ABR what [`GroupEnds::on_stream_end`] returns. Sans-IO.
///
/// - Groups are judged in order, each once, after the tier's first group
///   ([`GroupEnds::start`]: it carries the start-up of the subscription, or the joining
///   FETCH). A stream end of a group no newer than one already judged is left out.
/// - A group is judged when its stream ends: whole, or cut short with the objects it
///   brought. A stream reset before its first object arrived brought none.
/// - Group IDs skipped between the last group judged and the one whose stream ended, of
///   which nothing arrived (no stream opened: the relay's scheduler drops a group it cannot
///   start in time), count as one group cut to nothing, however many they are: a publisher
///   away for a few seconds (a reconnect; tiermesh's publishers number groups by wall-clock
///   second) or a top rung its uplink dropped leaves IDs that never exist, which nothing
///   declares, and a group that arrives whole after it ends the run.
/// - Tracks of one subgroup per group only (tiermesh's publishers and ingest send each group
///   on subgroup 0): with several, the end of one subgroup is not the end of the group, and
///   which subgroups a group has is not known. Once an object or a stream of a subgroup
///   other than 0 arrives, nothing more of the tier is judged until the next
///   [`GroupEnds::start`]; the other rules still judge it.
#[derive(Debug, Default)]
pub struct GroupEnds {
    /// The newest group judged, or the tier's first group (`None` before [`GroupEnds::start`]).
    judged: Option<u64>,
    /// Groups newer than `judged` of which something arrived.
    seen: BTreeSet<u64>,
    /// A subgroup other than 0 arrived since the last [`GroupEnds::start`].
    layered: bool,
}

impl GroupEnds {
    /// Nothing judged before [`GroupEnds::start`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The tier's first group played is `first` (after a switch, or at the join): groups from
    /// the next one on are judged, the skipped IDs before `first` are not.
    pub fn start(&mut self, first: u64) {
        self.judged = Some(first);
        self.seen.clear();
        self.layered = false;
    }

    /// An object of the tier arrived: `subgroup` is `None` for a datagram.
    pub fn on_object(&mut self, group: u64, subgroup: Option<u64>) {
        if subgroup.is_some_and(|s| s != 0) {
            self.layered = true;
        }
        if self.judged.is_some_and(|j| group > j) {
            self.seen.insert(group);
            // Bounded where no stream end comes to judge them (datagrams, several subgroups).
            if self.seen.len() > SEEN_GROUPS {
                self.seen.pop_first();
            }
        }
    }

    /// A subgroup stream of the tier ended: the group's `objects` so far, `whole` if the
    /// stream ended with FIN and no object ID is missing. Returns what to tell
    /// [`Abr::on_group_end`], oldest first: a group cut to nothing for skipped IDs before
    /// this one, then this one's end; nothing if it is not judged.
    pub fn on_stream_end(
        &mut self,
        group: u64,
        subgroup: u64,
        objects: u64,
        whole: bool,
    ) -> impl Iterator<Item = (u64, bool)> + use<> {
        if subgroup != 0 {
            self.layered = true;
        }
        let judged = match self.judged {
            Some(j) if group > j && !self.layered => Some(j),
            _ => None,
        };
        let mut skipped = false;
        if let Some(j) = judged {
            let between = group - j - 1;
            skipped = (self.seen.range(j + 1..group).count() as u64) < between;
            self.judged = Some(group);
            self.seen = self.seen.split_off(&(group + 1));
        }
        let gap = skipped.then_some((0, false));
        gap.into_iter().chain(judged.map(|_| (objects, whole)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default ladder's rates, lowest first (180p, 360p, 720p: 150, 550 and 1500
    /// kbit/s), the tiers `sub --abr` finds in the catalog of `tiermesh pub`.
    fn ladder_rates() -> Vec<u64> {
        let ladder = tiermesh_codec::LadderConfig::default();
        let mut rates: Vec<u64> = ladder.rungs.iter().map(|r| u64::from(r.bitrate)).collect();
        rates.sort_unstable();
        rates
    }

    /// The default ladder's 360p rate.
    fn r360() -> u64 {
        ladder_rates()[1]
    }

    /// A link of `capacity` bit/s carrying a tier of `rate` bit/s with a queueing latency of
    /// `latency_ms` for its small frames.
    #[derive(Clone, Copy)]
    struct Link {
        rate: u64,
        latency_ms: u64,
        capacity: u64,
    }

    /// Feeds `secs` one-second groups of 30 objects (a key frame six times the others
    /// first) over `link`; returns the tier after each group boundary.
    fn feed_link(abr: &mut Abr, t: &mut Instant, secs: u64, link: Link) -> Vec<usize> {
        let mut out = Vec::new();
        for _ in 0..secs {
            out.push(abr.at_group_start(*t));
            group(abr, t, link);
        }
        out
    }

    /// Feeds one group of [`feed_link`].
    fn group(abr: &mut Abr, t: &mut Instant, link: Link) {
        let delta = link.rate / 8 / 35;
        for n in 0..30 {
            *t += Duration::from_millis(33);
            let (bytes, extra) = if n == 0 {
                (delta * 6, Duration::from_secs_f64((delta * 6 * 8) as f64 / link.capacity as f64))
            } else {
                (delta, Duration::ZERO)
            };
            abr.on_object(*t, bytes, Duration::from_millis(link.latency_ms) + extra, n == 0);
        }
        *t += Duration::from_millis(10);
    }

    /// [`feed_link`] on a 3 Mbit/s link.
    fn feed(abr: &mut Abr, t: &mut Instant, secs: u64, rate: u64, latency_ms: u64) -> Vec<usize> {
        feed_link(abr, t, secs, Link { rate, latency_ms, capacity: 3_000_000 })
    }

    #[test]
    fn goes_down_once_the_link_carries_less_than_the_tier() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        feed(&mut abr, &mut t, 3, ladder_rates()[2], 10);
        assert_eq!(abr.current(), 2);
        // The link now carries 600 kbit/s (the relay keeping the queue short by dropping):
        // nothing arrives on time any more.
        let tiers = feed(&mut abr, &mut t, 6, 600_000, 300);
        assert_eq!(tiers, [2, 2, 2, 2, 2, 1], "down once nothing arrived on time for 5 s");
        assert_eq!(abr.reason(), Some("starved"));
    }

    #[test]
    fn climbs_one_step_at_a_time_after_the_hold() {
        let mut t = Instant::now();
        // The hold as it applies after the start (see the quick climb below).
        let config = AbrConfig { start_hold: None, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 0, t);
        let tiers = feed(&mut abr, &mut t, 5, ladder_rates()[0], 10);
        assert_eq!(tiers, [0; 5], "no step up before the 4 s hold");
        // The step up happens at the next boundary, then 360p must fit 4 s more.
        let tiers = feed(&mut abr, &mut t, 7, r360(), 10);
        assert_eq!(tiers, [1, 1, 1, 1, 1, 2, 2]);
        assert_eq!(abr.reason(), Some("up"));
    }

    #[test]
    fn never_steps_up_beyond_the_links_capacity() {
        // 360p fits a 1 Mbit/s link with room to spare, 720p does not: it stays on 360p
        // however long 360p arrives whole and on time.
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 1, t);
        let link = Link { rate: r360(), latency_ms: 10, capacity: 1_000_000 };
        let tiers = feed_link(&mut abr, &mut t, 30, link);
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
        let c = abr.capacity().unwrap();
        assert!(c < ladder_rates()[2] as f64 && c > r360() as f64, "capacity {c}");
        // From 180p on the same link it does step up to 360p (after two seconds on time,
        // the quick climb from the start), and no further.
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 0, t);
        let tiers = feed_link(&mut abr, &mut t, 2, Link { rate: ladder_rates()[0], ..link });
        assert_eq!(tiers, [0; 2]);
        let tiers = feed_link(&mut abr, &mut t, 15, link);
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
    }

    /// A start on the lowest tier: while nothing has failed, one step up after two groups
    /// on time at the tier's rate, where the capacity estimate carries the next tier; on a
    /// 3 Mbit/s link from 180p to 720p at the fifth group, where the 4 s hold and the 5 s
    /// window took ten (and five from 360p). After the first step down the usual hold
    /// applies again.
    #[test]
    fn a_start_on_the_lowest_tier_climbs_quickly_until_a_step_down() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 0, t);
        let mut tiers = Vec::new();
        for _ in 0..8 {
            // Each group at the rate of the tier it is played from.
            let tier = abr.at_group_start(t);
            tiers.push(tier);
            let rate = ladder_rates()[tier];
            group(&mut abr, &mut t, Link { rate, latency_ms: 10, capacity: 3_000_000 });
        }
        assert_eq!(tiers, [0, 0, 1, 1, 2, 2, 2, 2], "up after two groups on time each");
        assert_eq!(abr.reason(), Some("up"));

        // On the way up, a tier the link does not carry in time ends the quick climb.
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 0, t);
        feed(&mut abr, &mut t, 3, ladder_rates()[0], 10);
        assert_eq!(abr.current(), 1);
        feed(&mut abr, &mut t, 5, 300_000, 800);
        assert_eq!((abr.current(), abr.reason()), (0, Some("failed step up")));
        let tiers = feed(&mut abr, &mut t, 7, ladder_rates()[0], 10);
        assert!(tiers.iter().all(|&x| x == 0), "{tiers:?}");
    }

    #[test]
    fn a_failed_step_up_doubles_the_hold() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 0, t);
        feed(&mut abr, &mut t, 6, ladder_rates()[0], 10);
        assert_eq!(abr.current(), 1);
        // 360p does not fit: 300 kbit/s arrives, late at once.
        feed(&mut abr, &mut t, 5, 300_000, 800);
        assert_eq!(abr.current(), 0);
        assert_eq!(abr.reason(), Some("failed step up"));
        // Fits again, but the next try waits 8 s, not 4.
        let tiers = feed(&mut abr, &mut t, 7, ladder_rates()[0], 10);
        assert!(tiers.iter().all(|&x| x == 0), "{tiers:?}");
    }

    #[test]
    fn a_short_burst_of_late_objects_is_not_a_reason_to_go_down() {
        let mut t = Instant::now();
        // Without the quick climb from the start, which would take 360p up on this link.
        let config = AbrConfig { start_hold: None, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 1, t);
        feed(&mut abr, &mut t, 3, r360(), 10);
        // A loss holds the stream back for 200 ms: six objects late, then on time again.
        for _ in 0..6 {
            t += Duration::from_millis(33);
            abr.on_object(t, 2000, Duration::from_millis(450), false);
        }
        let tiers = feed(&mut abr, &mut t, 2, r360(), 10);
        assert_eq!(tiers, [1, 1]);
    }

    #[test]
    fn a_loss_recovery_draining_slowly_is_not_congestion() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 1, t);
        let rural = Link { rate: r360(), latency_ms: 10, capacity: 1_000_000 };
        feed_link(&mut abr, &mut t, 5, rural);
        // A tail loss and a lost retransmission hold the stream for 900 ms. The 27 frames
        // captured meanwhile then arrive at the rate the 1 Mbit/s link carries (one 2 kB
        // frame of 360p every 16 ms) while new ones keep coming every 33 ms: latency falls
        // by 17 ms a frame, from 900 ms, until the backlog is gone; the relay dropped one
        // frame in seven of the group as stale, so that group is incomplete.
        let frame = r360() / 8 / 35;
        let every = frame * 8 * 1000 / rural.capacity;
        t += Duration::from_millis(900);
        let mut latency = 900u64;
        let mut n = 0;
        while latency > 10 {
            t += Duration::from_millis(every);
            n += 1;
            if n % 7 != 0 {
                abr.on_object(t, frame, Duration::from_millis(latency), false);
                assert_eq!(abr.poll_down(t), None, "after {n} late objects, {latency} ms");
            }
            latency = latency.saturating_sub(33 - every).max(10);
        }
        let tiers = feed_link(&mut abr, &mut t, 4, rural);
        assert_eq!(tiers, [1; 4]);
    }

    #[test]
    fn a_standing_queue_is_congestion_even_after_a_late_key_frame() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        feed(&mut abr, &mut t, 5, ladder_rates()[2], 10);
        // The queue stands at 700 ms: each key frame arrives later than the frames after it.
        let tiers = feed_link(
            &mut abr,
            &mut t,
            3,
            Link { rate: 1_400_000, latency_ms: 700, capacity: 1_000_000 },
        );
        assert_eq!(tiers, [2, 2, 1], "down once two seconds were all late");
        assert_eq!(abr.reason(), Some("backlog"));
    }

    #[test]
    fn a_congestion_window_dip_that_drains_is_not_a_reason_to_go_down() {
        // rural: a few losses close together hold the sender's window at 350 kbit/s for
        // 2.5 s (360p's objects ever later, up to 750 ms), then the window has grown back
        // and the backlog drains at 700 kbit/s: nothing on time for about 4 s, the least
        // queueing of two seconds at most about 400 ms (as measured with seed 7, when 360p
        // was sent at 500 kbit/s: the dip is the measured one, so its tier rate is too).
        const MEASURED: f64 = 500e3;
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 1, t);
        let rural = Link { rate: MEASURED as u64, latency_ms: 10, capacity: 1_000_000 };
        feed_link(&mut abr, &mut t, 6, rural);
        let dip = t;
        let mut latency = 10.0;
        let mut tiers = Vec::new();
        for n in 0..240 {
            if n % 30 == 0 {
                tiers.push(abr.at_group_start(t));
            }
            let rate =
                if t.duration_since(dip) < Duration::from_millis(2500) { 350e3 } else { 700e3 };
            // Each 33 ms of media takes 33 ms x tier / rate to arrive while behind.
            let took =
                if latency > 10.0 || rate < MEASURED { 33.3 * MEASURED / rate } else { 33.3 };
            t += Duration::from_secs_f64(took / 1000.0);
            latency = (latency + took - 33.3).max(10.0);
            // (Key frames as the small ones: this test is not about the capacity estimate.)
            abr.on_object(t, 2083, Duration::from_secs_f64(latency / 1000.0), false);
            tiers.extend(abr.poll_down(t));
        }
        assert!(latency < 20.0, "drained");
        tiers.extend(feed_link(&mut abr, &mut t, 3, rural));
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
    }

    #[test]
    fn a_tier_on_time_below_its_nominal_rate_fits() {
        // A still picture: the encoder makes half of 360p's catalog rate, all of it on time.
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 1, t);
        let tiers = feed(&mut abr, &mut t, 12, r360() / 2, 10);
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
    }

    /// Feeds one group per entry of `ends` over `link`: that many of its 30 objects arrive
    /// (on time, at the link's usual pace), then its end is reported, whole if all 30 came
    /// (otherwise its stream was reset), and the ABR asked as the subscriber does at a group
    /// end. Returns the tier after each group boundary.
    fn feed_ends(abr: &mut Abr, t: &mut Instant, link: Link, ends: &[u64]) -> Vec<usize> {
        let delta = link.rate / 8 / 35;
        let mut out = Vec::new();
        for &n in ends {
            out.push(abr.at_group_start(*t));
            for i in 0..30 {
                *t += Duration::from_millis(33);
                if i >= n {
                    continue;
                }
                let (bytes, extra) = if i == 0 {
                    let key = delta * 6;
                    (key, Duration::from_secs_f64((key * 8) as f64 / link.capacity as f64))
                } else {
                    (delta, Duration::ZERO)
                };
                abr.on_object(*t, bytes, Duration::from_millis(link.latency_ms) + extra, i == 0);
                if let Some(lower) = abr.poll_down(*t) {
                    out.push(lower);
                }
            }
            abr.on_group_end(n, n == 30);
            if let Some(lower) = abr.poll_down(*t) {
                out.push(lower);
            }
            *t += Duration::from_millis(10);
        }
        out
    }

    /// `step`'s cut with a relay that keeps its queue short (`delay`): 720p's groups arrive
    /// early but cut short, 10 to 17 of 30 objects (docs/BENCHMARKS.md "Groups cut short").
    /// Latency alone says nothing (the objects that come are early), throughput not before
    /// five seconds with nothing on time: the end of the second group cut short to about
    /// half takes it down.
    #[test]
    fn groups_cut_short_go_down_at_the_end_of_the_second() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 8]);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        // The link now carries about 60% of 720p; what arrives, arrives within 150 ms.
        let cut = Link { latency_ms: 150, capacity: 1_000_000, ..link };
        let tiers = feed_ends(&mut abr, &mut t, cut, &[29, 10, 17]);
        // The first lost only its last object: 39 of 60 over the first two.
        assert_eq!(tiers, [2, 2, 2, 1], "down as the second group cut short to half ends");
        assert_eq!(abr.reason(), Some("cut"));
        // Without the rule (a share no pair of groups comes under) it stays on 720p for
        // the whole cut: nothing else reads these groups as a tier that does not fit.
        let config = AbrConfig { cut_share: 0.0, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 2, t);
        feed_ends(&mut abr, &mut t, link, &[30; 8]);
        let tiers = feed_ends(&mut abr, &mut t, cut, &[29, 10, 17, 16, 16, 12]);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
    }

    #[test]
    fn whole_groups_on_time_are_never_cut_short() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 30]);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        assert_eq!(abr.reason(), None);
    }

    /// One group cut short (a burst of losses, even one that leaves only its key frame) does
    /// not switch, nor do the two or three groups `rural`'s loss stretches cut by their
    /// capture age while 360p fits (19 to 29 of 30 objects, measured).
    #[test]
    fn groups_cut_short_by_a_loss_stretch_are_no_reason_to_leave() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 1, t);
        let rural = Link { rate: r360(), latency_ms: 10, capacity: 1_000_000 };
        let mut tiers = feed_ends(&mut abr, &mut t, rural, &[30; 4]);
        tiers.extend(feed_ends(&mut abr, &mut t, rural, &[1, 30, 30, 30]));
        for stretch in [[29, 18, 30], [22, 23, 30], [29, 19, 21], [29, 20, 22]] {
            tiers.extend(feed_ends(&mut abr, &mut t, rural, &stretch));
            tiers.extend(feed_ends(&mut abr, &mut t, rural, &[30; 3]));
        }
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
    }

    /// A step up into a tier whose groups the relay keeps cutting short fails: back to the
    /// tier it came from after two of them, and the hold doubles, so it does not flap back.
    #[test]
    fn a_step_up_into_groups_cut_short_fails_and_holds() {
        let mut t = Instant::now();
        let config = AbrConfig { start_hold: None, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 1, t);
        let link = Link { rate: r360(), latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 6]);
        assert_eq!(tiers.last(), Some(&2), "{tiers:?}");
        // 720p's first group is not measured (the subscriber leaves it out); then the relay
        // cuts every group short.
        abr.started(t);
        let cut = Link { rate: ladder_rates()[2], latency_ms: 100, ..link };
        let tiers = feed_ends(&mut abr, &mut t, cut, &[15, 14]);
        assert_eq!(tiers, [2, 2, 1]);
        assert_eq!(abr.reason(), Some("failed step up"));
        // 360p fits again, but the next try waits 8 s, not 4.
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 8]);
        assert!(tiers.iter().all(|&x| x == 1), "{tiers:?}");
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 3]);
        assert_eq!(tiers.last(), Some(&2), "{tiers:?}");
    }

    /// On the lowest tier groups cut short have nowhere to go, and leave nothing behind that
    /// would take the next tier down at once.
    #[test]
    fn groups_cut_short_on_the_lowest_tier_are_forgotten_at_the_next_step() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 0, t);
        let link = Link { rate: ladder_rates()[0], latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30, 5, 5, 30, 30, 30, 30, 30, 30]);
        assert_eq!(tiers.first(), Some(&0));
        assert_eq!(abr.current(), 1, "climbs once whole again: {tiers:?}");
        let link = Link { rate: r360(), ..link };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 2]);
        assert!(tiers.iter().all(|&x| x >= 1), "{tiers:?}");
    }

    /// What arrives of one group in [`feed_ids`]: `Objects(n)`: `n` of its 30 objects on
    /// subgroup 0, then its stream ends (FIN if all came, else reset); `Finished(n)`: its
    /// first `n` objects, then FIN (the relay finishes a stream its publisher left); `Empty`:
    /// its stream is reset before its first object; `Never`: nothing (no stream was opened).
    #[derive(Clone, Copy)]
    enum Arrives {
        Objects(u64),
        Finished(u64),
        Empty,
        Never,
    }

    /// Feeds the groups `groups` (ID, what arrives) of the watched tier over `link` through
    /// `ends` as the subscriber does, each in a group time of 30 objects; returns the tier
    /// after each group boundary and group end.
    fn feed_ids(
        abr: &mut Abr,
        ends: &mut GroupEnds,
        t: &mut Instant,
        link: Link,
        groups: &[(u64, Arrives)],
    ) -> Vec<usize> {
        let delta = link.rate / 8 / 35;
        let mut out = Vec::new();
        for &(id, arrives) in groups {
            let (n, whole) = match arrives {
                Arrives::Objects(n) => (n, n == 30),
                Arrives::Finished(n) => (n, true),
                Arrives::Empty | Arrives::Never => (0, false),
            };
            if n > 0 {
                out.push(abr.at_group_start(*t));
            }
            for i in 0..30 {
                *t += Duration::from_millis(33);
                if i >= n {
                    continue;
                }
                let (bytes, extra) = if i == 0 {
                    let key = delta * 6;
                    (key, Duration::from_secs_f64((key * 8) as f64 / link.capacity as f64))
                } else {
                    (delta, Duration::ZERO)
                };
                ends.on_object(id, Some(0));
                abr.on_object(*t, bytes, Duration::from_millis(link.latency_ms) + extra, i == 0);
                out.extend(abr.poll_down(*t));
            }
            if !matches!(arrives, Arrives::Never) {
                for (objects, whole) in ends.on_stream_end(id, 0, n, whole) {
                    abr.on_group_end(objects, whole);
                }
                out.extend(abr.poll_down(*t));
            }
            *t += Duration::from_millis(10);
        }
        out
    }

    /// `n` whole groups from ID `from` on.
    fn whole_ids(from: u64, n: u64) -> Vec<(u64, Arrives)> {
        (from..from + n).map(|g| (g, Arrives::Objects(30))).collect()
    }

    /// 720p on `step`'s cut where the relay's scheduler does not start a group at all (no
    /// stream: its objects could not leave in time) and cuts the next one to 7 objects (as
    /// in a cubic run of "Groups cut short"): nothing of the missing group is a group cut
    /// to nothing, so the pair takes the tier down as the second one ends. (It used to be
    /// left out, and `starved` decided 4.9 s into the cut.)
    #[test]
    fn a_group_the_relay_never_started_counts_as_cut_short() {
        assert_down_after_nothing_of_a_group(Arrives::Never);
    }

    /// 720p whole for 8 groups on 3 Mbit/s, then on the cut `missing` (nothing of group 109)
    /// and 7 objects of 110: the tier goes one step down, for `cut`, as 110 ends.
    fn assert_down_after_nothing_of_a_group(missing: Arrives) {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let mut ends = GroupEnds::new();
        ends.start(100);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ids(&mut abr, &mut ends, &mut t, link, &whole_ids(101, 8));
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        let cut = Link { latency_ms: 150, capacity: 1_000_000, ..link };
        let groups = [(109, missing), (110, Arrives::Objects(7))];
        let tiers = feed_ids(&mut abr, &mut ends, &mut t, cut, &groups);
        assert_eq!(tiers, [2, 1], "down as the group after the one of which nothing came ends");
        assert_eq!(abr.reason(), Some("cut"));
    }

    /// A subgroup stream reset before its first object arrived (the relay wrote the header,
    /// then the key frame passed its deadline) is a group cut to nothing too.
    #[test]
    fn a_stream_reset_before_its_first_object_counts_as_cut_short() {
        assert_down_after_nothing_of_a_group(Arrives::Empty);
    }

    /// IDs that are skipped but say nothing of the link: those before the tier's first group
    /// (a switch subscribes from the next group; the relay may not have it), and those of a
    /// publisher away for a few seconds (killed and replaced: its last group ends early,
    /// the relay finishes it, and the new one numbers its groups by the clock: three IDs
    /// that never exist count as one group cut to nothing, which the next whole group
    /// ends). Neither takes the tier down, nor does the end of a group already judged.
    #[test]
    fn ids_skipped_at_a_switch_or_by_a_publisher_away_are_no_reason_to_leave() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let mut ends = GroupEnds::new();
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        ends.start(90);
        let mut tiers = feed_ids(&mut abr, &mut ends, &mut t, link, &whole_ids(91, 6));
        // The tier's first group after a switch is 100 (96 to 99 were never received).
        ends.start(100);
        let groups = [(101, Arrives::Objects(25)), (102, Arrives::Objects(30))];
        tiers.extend(feed_ids(&mut abr, &mut ends, &mut t, link, &groups));
        // The publisher is killed 12 objects into 103 and replaced three seconds later; the
        // relay finishes 103's stream when the new one has carried a group to its end.
        let groups = [(103, Arrives::Finished(12)), (107, Arrives::Objects(30))];
        tiers.extend(feed_ids(&mut abr, &mut ends, &mut t, link, &groups));
        tiers.extend(feed_ids(&mut abr, &mut ends, &mut t, link, &whole_ids(108, 4)));
        // A second end of a group judged (or of an older one) is left out.
        assert_eq!(ends.on_stream_end(110, 0, 0, false).count(), 0);
        assert_eq!(ends.on_stream_end(104, 0, 0, false).count(), 0);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        assert_eq!(abr.reason(), None);
    }

    /// A tier that sends each group on two subgroups (even frames on 0, odd ones on 1): the
    /// relay resets subgroup 1 after its fifth object while subgroup 0 arrives whole, so
    /// each group brings 20 of 30 objects, and a pair 40 of 60, above the share. Its first
    /// stream end (the reset, 10 objects in) is not the group's end: such a tier is left to
    /// the other rules, which see it on time, and it stays.
    #[test]
    fn the_first_stream_end_of_a_group_of_several_subgroups_is_not_its_end() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let mut ends = GroupEnds::new();
        ends.start(100);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        let mut tiers = feed_ids(&mut abr, &mut ends, &mut t, link, &whole_ids(101, 4));
        let delta = link.rate / 8 / 35;
        for g in 105..115 {
            tiers.push(abr.at_group_start(t));
            let mut got = 0;
            for i in 0..30 {
                t += Duration::from_millis(33);
                let subgroup = i % 2;
                if subgroup == 1 && i / 2 >= 5 {
                    continue;
                }
                got += 1;
                ends.on_object(g, Some(subgroup));
                let bytes = if i == 0 { delta * 6 } else { delta };
                abr.on_object(t, bytes, Duration::from_millis(10), i == 0);
                tiers.extend(abr.poll_down(t));
                if subgroup == 1 && i / 2 == 4 {
                    // Subgroup 1 reset after its fifth object.
                    for (objects, whole) in ends.on_stream_end(g, 1, got, false) {
                        abr.on_group_end(objects, whole);
                    }
                    tiers.extend(abr.poll_down(t));
                }
            }
            for (objects, whole) in ends.on_stream_end(g, 0, got, false) {
                abr.on_group_end(objects, whole);
            }
            tiers.extend(abr.poll_down(t));
            t += Duration::from_millis(10);
        }
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
    }

    /// Polls [`Abr::poll_down`] every 250 ms for `secs` with nothing arriving, as the
    /// subscriber's timer does; returns when it decided and the tier.
    fn silence(abr: &mut Abr, t: &mut Instant, secs: u64) -> Option<(Duration, usize)> {
        let from = *t;
        while t.duration_since(from) < Duration::from_secs(secs) {
            *t += Duration::from_millis(250);
            if let Some(lower) = abr.poll_down(*t) {
                return Some((t.duration_since(from), lower));
            }
        }
        None
    }

    /// A tier that fitted stops arriving entirely (its publisher dropped the rung): down
    /// once nothing has come for [`AbrConfig::behind_for`], not before.
    #[test]
    fn a_tier_that_stops_arriving_is_left_after_the_patience() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let tiers = feed(&mut abr, &mut t, 8, ladder_rates()[2], 10);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        let (after, tier) = silence(&mut abr, &mut t, 10).expect("no decision in 10 s of silence");
        assert!(
            after >= Duration::from_secs(5) && after <= Duration::from_millis(5250),
            "{after:?}"
        );
        assert_eq!(tier, 1, "one step down, not to the lowest tier");
        assert_eq!(abr.reason(), Some("starved"));
    }

    /// A tier just stepped up to that sends nothing after its first group is a failed step
    /// up after [`AbrConfig::behind_for_after_up`] of silence; it used to wait until the
    /// window had filled since the switch.
    #[test]
    fn a_tier_stepped_up_to_that_stays_silent_fails_after_its_patience() {
        let mut t = Instant::now();
        let config = AbrConfig { start_hold: None, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 1, t);
        let link = Link { rate: r360(), latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 6]);
        assert_eq!(tiers.last(), Some(&2), "{tiers:?}");
        abr.started(t);
        let (after, tier) = silence(&mut abr, &mut t, 10).expect("no decision in 10 s of silence");
        assert!(after <= Duration::from_millis(1750), "{after:?}");
        assert_eq!(tier, 1);
        assert_eq!(abr.reason(), Some("failed step up"));
    }

    #[test]
    fn starved_throughput_goes_to_the_tier_it_carries() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        // Only 200 kbit/s arrives, none of it on time.
        feed(&mut abr, &mut t, 6, 200_000, 300);
        assert_eq!(abr.current(), 0, "straight to 180p, not via 360p");
        assert_eq!(abr.reason(), Some("starved"));
    }

    /// Polls [`Abr::poll_down`] every 33 ms for `ms` milliseconds, as the subscriber's timer
    /// and arrivals do while a switch waits for its tier. The tier left brings an object each
    /// time until `boundary_ms`, then one of the new tier's first group (the subscriber then
    /// unsubscribes it); `None`: it is silent. With `audio`, the rest of the session arrives
    /// throughout ([`Abr::on_link`]). Returns the first decision: when (ms) and the tier.
    fn wait_for_switch(
        abr: &mut Abr,
        t: &mut Instant,
        ms: u64,
        boundary_ms: Option<u64>,
        audio: bool,
    ) -> Option<(u64, usize)> {
        let mut passed = false;
        for step in 1..=ms / 33 {
            *t += Duration::from_millis(33);
            let at = step * 33;
            match boundary_ms {
                Some(b) if at < b => abr.on_left_object(*t, false),
                Some(_) if !passed => {
                    passed = true;
                    abr.on_left_object(*t, true);
                }
                _ => {}
            }
            if audio {
                abr.on_link(*t);
            }
            if let Some(tier) = abr.poll_down(*t) {
                return Some((at, tier));
            }
        }
        None
    }

    /// 360p fits on 3 Mbit/s and the ABR steps up to 720p at a group boundary (no quick
    /// climb): returns the ABR waiting for 720p's first group.
    fn stepped_up_to_720p(t: &mut Instant) -> Abr {
        let config = AbrConfig { start_hold: None, ..AbrConfig::new(ladder_rates()) };
        let mut abr = Abr::new(config, 1, *t);
        let link = Link { rate: r360(), latency_ms: 10, capacity: 3_000_000 };
        for _ in 0..6 {
            if abr.at_group_start(*t) == 2 {
                return abr;
            }
            group(&mut abr, t, link);
            abr.on_group_end(30, true);
        }
        panic!("no step up to 720p in 6 s");
    }

    /// A step up whose tier never comes (its publisher stopped the rung; the relay holds it):
    /// 360p plays to the boundary, a second after the decision, then the picture waits. The
    /// switch is given up 1.75 s after the boundary ([`SWITCH_GRACE`]), not before, and
    /// the ABR goes back to 360p as after a failed step up: the next try waits 8 s, not 4.
    /// (The subscriber used to wait for 720p for good: a frozen picture.)
    #[test]
    fn a_step_up_whose_tier_never_comes_goes_back_to_the_tier_playing() {
        let mut t = Instant::now();
        let mut abr = stepped_up_to_720p(&mut t);
        let decided = wait_for_switch(&mut abr, &mut t, 6000, Some(1000), true);
        let (at, tier) = decided.expect("the switch is never given up");
        assert!((2750..=2850).contains(&at), "given up {at} ms after the decision");
        assert_eq!(tier, 1);
        assert_eq!(abr.reason(), Some("failed step up"));
        // 360p is subscribed again and arrives from its next group on.
        abr.started(t);
        let link = Link { rate: r360(), latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 7]);
        assert!(tiers.iter().all(|&x| x == 1), "the hold doubled: {tiers:?}");
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 3]);
        assert_eq!(tiers.last(), Some(&2), "{tiers:?}");
    }

    /// A step up whose tier comes late (a relay that held it back probes it at the next
    /// group; its key frame 1.6 s after 360p's boundary) is not given up.
    #[test]
    fn a_step_up_whose_tier_comes_within_the_grace_is_kept() {
        let mut t = Instant::now();
        let mut abr = stepped_up_to_720p(&mut t);
        assert_eq!(wait_for_switch(&mut abr, &mut t, 2600, Some(1000), true), None);
        abr.started(t);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        let tiers = feed_ends(&mut abr, &mut t, link, &[30; 6]);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
    }

    /// 720p stops arriving while the audio flows: one step down to 360p (the link works, the
    /// rung stopped). 360p never comes either, and 720p brings nothing: 2.75 s after the
    /// subscription was answered ([`SWITCH_WAIT`]: a group for it to begin, and the grace)
    /// the next step down, 180p. (It used to go straight to 180p.)
    #[test]
    fn a_silent_tier_is_left_one_step_at_a_time_while_the_audio_flows() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let tiers = feed(&mut abr, &mut t, 8, ladder_rates()[2], 10);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
        let (at, tier) = wait_for_switch(&mut abr, &mut t, 10_000, None, true).expect("stays");
        assert!((5000..=5100).contains(&at), "left {at} ms into the silence");
        assert_eq!(tier, 1, "one step down");
        assert_eq!(abr.reason(), Some("starved"));
        t += Duration::from_millis(40);
        abr.subscribed(t);
        let (at, tier) = wait_for_switch(&mut abr, &mut t, 10_000, None, true).expect("waits");
        assert!((2750..=2850).contains(&at), "360p given up {at} ms after its SUBSCRIBE_OK");
        assert_eq!(tier, 0);
        assert_eq!(abr.reason(), Some("no delivery"));
    }

    /// A step down whose tier never comes while the tier left still arrives (late: a standing
    /// queue) goes back to it 1.75 s after its boundary; when the tier left is found too
    /// heavy again, the tier that delivered nothing is passed over: 180p.
    #[test]
    fn a_step_down_whose_tier_never_comes_goes_back_and_then_past_it() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        feed(&mut abr, &mut t, 5, ladder_rates()[2], 10);
        // A standing queue of 700 ms: every object late, until the backlog rule decides.
        let late = |abr: &mut Abr, t: &mut Instant| {
            for n in 0..200 {
                *t += Duration::from_millis(33);
                abr.on_link(*t);
                abr.on_object(*t, 5000, Duration::from_millis(700), n % 30 == 0);
                if let Some(tier) = abr.poll_down(*t) {
                    return tier;
                }
            }
            panic!("never left 720p");
        };
        assert_eq!(late(&mut abr, &mut t), 1);
        assert_eq!(abr.reason(), Some("backlog"));
        let (at, tier) = wait_for_switch(&mut abr, &mut t, 6000, Some(800), true).expect("waits");
        assert!((2550..=2650).contains(&at), "given up {at} ms after the decision");
        assert_eq!(tier, 2, "back to the tier still arriving");
        assert_eq!(abr.reason(), Some("no delivery"));
        abr.started(t);
        assert_eq!(late(&mut abr, &mut t), 0, "past 360p, which delivered nothing");
        assert_eq!(abr.reason(), Some("backlog"));
    }

    /// Nothing of the session arrives for ten seconds (the audio stops too): the link is out,
    /// not the tier, and no tier is left. When the audio comes back and 720p does not, 720p
    /// is left after the patience counted from the audio's return, one step down.
    #[test]
    fn while_nothing_of_the_session_arrives_no_tier_is_left() {
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        for _ in 0..8 {
            assert_eq!(abr.at_group_start(t), 2);
            let mut g = t;
            group(
                &mut abr,
                &mut g,
                Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 },
            );
            abr.on_link(g);
            t = g;
        }
        assert_eq!(wait_for_switch(&mut abr, &mut t, 10_000, None, false), None);
        let (at, tier) = wait_for_switch(&mut abr, &mut t, 10_000, None, true).expect("stays");
        assert!((5000..=5100).contains(&at), "left {at} ms after the audio's return");
        assert_eq!(tier, 1);
        // And a link that comes back with the tier goes on with it.
        let mut t = Instant::now();
        let mut abr = Abr::new(AbrConfig::new(ladder_rates()), 2, t);
        let link = Link { rate: ladder_rates()[2], latency_ms: 10, capacity: 3_000_000 };
        feed_link(&mut abr, &mut t, 8, link);
        abr.on_link(t);
        assert_eq!(wait_for_switch(&mut abr, &mut t, 8000, None, false), None);
        abr.on_link(t);
        let tiers = feed_link(&mut abr, &mut t, 6, link);
        assert!(tiers.iter().all(|&x| x == 2), "{tiers:?}");
    }

    /// A tier stepped up to that brings its first group (which the subscriber does not
    /// measure: it carries the switch's start-up) and then nothing: left after the patience
    /// of a step up counted from the first group's last object, not from its start.
    #[test]
    fn a_tier_that_stops_after_its_first_group_is_left_after_the_patience() {
        let mut t = Instant::now();
        let mut abr = stepped_up_to_720p(&mut t);
        t += Duration::from_millis(900);
        abr.started(t);
        for _ in 0..40 {
            // A first group of 40 objects (begun early at a key-frame request).
            t += Duration::from_millis(33);
            abr.on_heard(t);
            assert_eq!(abr.poll_down(t), None);
        }
        let (at, tier) = wait_for_switch(&mut abr, &mut t, 5000, None, true).expect("stays");
        assert!((1500..=1550).contains(&at), "left {at} ms after its last object");
        assert_eq!(tier, 1);
        assert_eq!(abr.reason(), Some("failed step up"));
    }
}
