//! Bytes written per priority level over the last two seconds, as a rate: what the more
//! important levels take of the link, which a less important level cannot have.

use std::time::{Duration, Instant};

use super::Level;

/// The length of one counting window.
pub(super) const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Windows kept: the current one and [`RATE_WINDOW`]s before it.
const WINDOWS: usize = 3;

/// Bytes written per level in the current window and the two before it. The rate is read
/// from the two completed windows only: the current one may have just begun with a burst
/// (the key frames of a new group, which QUIC still holds and the caller counts apart),
/// and a rate read over a short span would count that burst many times over. Two seconds
/// hold a group or two of video. A few levels at most are in use at once (catalog, audio,
/// the video tiers), so they sit in a short vector sorted by level.
#[derive(Debug, Default)]
pub(super) struct LevelRates {
    /// When the current window started; `None` before the first write.
    start: Option<Instant>,
    /// Windows completed since the first write (at most `WINDOWS - 1` count).
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
    /// what was written so far counted over one whole window (so a burst at the start, the
    /// catalog or a joining fetch, is not read as a high steady rate).
    pub(super) fn above_bps(&self, now: Instant, level: Level) -> u64 {
        if self.start.is_none() {
            return 0;
        }
        let ended = self.ended(now);
        let completed = (self.completed as usize + ended).min(WINDOWS - 1);
        let (mut bytes, windows) = (0u64, completed.max(1) as u32);
        for (_, counts) in self.levels.iter().take_while(|e| e.0 < level) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
        // Before a window has ended, what was written counts over a whole window.
        let mut b = LevelRates::default();
        b.add(t0, 0, 12_500);
        assert_eq!(b.above_bps(t0 + ms(10), 1), 100_000);
        assert_eq!(b.above_bps(t0 + ms(1_010), 1), 100_000);
    }
}
