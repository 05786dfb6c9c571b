//! Named link profiles: [`Profile`].

use std::{fmt, str::FromStr, time::Duration};

use crate::{Error, LinkParams, QueueLimit, Schedule};

/// How long the `step` profile's cut to a third of the rate lasts.
pub const STEP_CUT: Duration = Duration::from_secs(10);

/// Where the `step` profile's cut starts when the run length is not known: the middle of a
/// 30 s run, long enough before it for a sender's rate estimate to settle and long enough
/// after it to see the recovery.
pub const STEP_DEFAULT_START: Duration = Duration::from_secs(10);

/// A named link, the same in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// No impairment at all.
    Fiber,
    /// 1 Mbit/s, 60 ms one-way, 1% random loss.
    Rural,
    /// 600 kbit/s, 100 ms ± 30 ms one-way (order kept), 3% random loss.
    Congested,
    /// 2 Mbit/s, 300 ms one-way, 0.5% random loss.
    Satellite,
    /// 3 Mbit/s, 30 ms one-way, no loss, with a queue of 37 500 bytes (100 ms at 3 Mbit/s);
    /// the rate drops to a third (1 Mbit/s) for [`STEP_CUT`] in the middle of the run, then
    /// comes back. The queue stays the same size in bytes, so during the cut it holds 300 ms.
    Step,
}

impl Profile {
    /// Every profile, in the order the help lists them.
    pub const ALL: [Profile; 5] =
        [Profile::Fiber, Profile::Rural, Profile::Congested, Profile::Satellite, Profile::Step];

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Fiber => "fiber",
            Profile::Rural => "rural",
            Profile::Congested => "congested",
            Profile::Satellite => "satellite",
            Profile::Step => "step",
        }
    }

    /// The parameters the profile starts with (in each direction).
    pub fn params(self) -> LinkParams {
        let ms = Duration::from_millis;
        match self {
            Profile::Fiber => LinkParams::default(),
            Profile::Rural => {
                LinkParams::default().with_rate(1_000_000).with_delay(ms(60)).with_loss(0.01)
            }
            Profile::Congested => LinkParams::default()
                .with_rate(600_000)
                .with_delay(ms(100))
                .with_jitter(ms(30))
                .with_loss(0.03),
            Profile::Satellite => {
                LinkParams::default().with_rate(2_000_000).with_delay(ms(300)).with_loss(0.005)
            }
            Profile::Step => LinkParams::default()
                .with_rate(3_000_000)
                .with_delay(ms(30))
                .with_queue(QueueLimit::Bytes(37_500)),
        }
    }

    /// The profile's schedule for one direction, in a run of length `run` if known (only
    /// `step` needs it). See [`schedule_with`](Self::schedule_with).
    pub fn schedule(self, run: Option<Duration>) -> Schedule {
        self.schedule_with(self.params(), run)
    }

    /// The schedule for one direction, starting from `base` (the profile's
    /// [`params`](Self::params), possibly with user overrides). Only `step` changes over
    /// time: its cut to a third of `base`'s rate lasts [`STEP_CUT`] and is centred in a run
    /// of length `run` (starting at 0 if the run is shorter than the cut), or starts at
    /// [`STEP_DEFAULT_START`] when the run length is unknown.
    pub fn schedule_with(self, base: LinkParams, run: Option<Duration>) -> Schedule {
        if self != Profile::Step {
            return Schedule::constant(base);
        }
        let start = match run {
            Some(run) => run.saturating_sub(STEP_CUT) / 2,
            None => STEP_DEFAULT_START,
        };
        let mut cut = base;
        cut.rate_bps = base.rate_bps.map(|r| (r / 3).max(1));
        Schedule::constant(base).then_at(start, cut).then_at(start + STEP_CUT, base)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.trim().to_ascii_lowercase();
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == lower)
            .ok_or_else(|| Error::UnknownProfile(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_by_name_and_say_what_exists_when_not_found() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            p.params().validate().unwrap();
        }
        assert_eq!("Rural".parse::<Profile>().unwrap(), Profile::Rural);
        let err = "dialup".parse::<Profile>().unwrap_err().to_string();
        assert!(err.contains("dialup") && err.contains("satellite"), "{err}");
    }

    #[test]
    fn step_cuts_to_a_third_in_the_middle_of_the_run() {
        let s = Duration::from_secs;
        let sched = Profile::Step.schedule(Some(s(40)));
        assert_eq!(sched.params_at(s(14)).rate_bps, Some(3_000_000));
        assert_eq!(sched.params_at(s(15)).rate_bps, Some(1_000_000));
        assert_eq!(sched.params_at(s(24)).rate_bps, Some(1_000_000));
        assert_eq!(sched.params_at(s(25)).rate_bps, Some(3_000_000));
        let default = Profile::Step.schedule(None);
        assert_eq!(default.changes()[0].0, s(10));
        assert_eq!(default.changes()[1].0, s(20));
    }
}
