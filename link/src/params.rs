//! What a link does to packets at one moment: [`LinkParams`], and the parsers for the
//! values users type (`1mbit`, `60ms`, `1%`).

use std::time::Duration;

use crate::Error;

/// Default queue in front of the rate limiter: 100 ms of the link's rate.
///
/// This is the buffering of a reasonably configured access link: far above a CoDel-managed
/// 5 ms target, far below the seconds of buffer of a bloated cable modem. A QUIC sender's
/// bursts fit, and a sender that overshoots sees loss within about one round trip, which is
/// what the relay's congestion handling has to cope with on real links.
pub const DEFAULT_QUEUE_TIME: Duration = Duration::from_millis(100);

/// The smallest queue any rate gets: two full-size Ethernet frames.
///
/// With less, a packet arriving while one is being serialized would always be dropped, and
/// at 100 kbit/s 100 ms holds less than one 1500-byte packet.
pub const MIN_QUEUE_BYTES: u64 = 3000;

/// How large the queue in front of the rate limiter may grow before arriving packets are
/// dropped (tail drop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueLimit {
    /// A fixed number of bytes, whatever the rate: a change to a lower rate makes the same
    /// queue take longer to drain, as on a real router.
    Bytes(u64),
    /// As many bytes as the link sends in this long at its current rate (at least
    /// [`MIN_QUEUE_BYTES`]).
    Time(Duration),
}

impl Default for QueueLimit {
    fn default() -> Self {
        QueueLimit::Time(DEFAULT_QUEUE_TIME)
    }
}

impl QueueLimit {
    /// The limit in bytes at `rate_bps` (`None`: unlimited rate, where no queue forms and
    /// the limit is `u64::MAX`).
    pub fn bytes_at(&self, rate_bps: Option<u64>) -> u64 {
        match (*self, rate_bps) {
            (QueueLimit::Bytes(b), _) => b,
            (QueueLimit::Time(_), None) => u64::MAX,
            (QueueLimit::Time(t), Some(rate)) => {
                let bytes = (rate as u128 * t.as_nanos() / 8 / 1_000_000_000) as u64;
                bytes.max(MIN_QUEUE_BYTES)
            }
        }
    }
}

/// Bursty loss by the Gilbert-Elliott model: a two-state Markov chain stepped once per
/// packet. In the good state packets pass (apart from [`LinkParams::loss`]); in the bad state
/// each is lost with probability `loss`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurstLoss {
    /// Probability, per packet, of moving from the good to the bad state.
    pub enter: f64,
    /// Probability, per packet, of moving from the bad back to the good state; the mean
    /// burst lasts `1 / exit` packets.
    pub exit: f64,
    /// Probability that a packet is lost while in the bad state (usually 1).
    pub loss: f64,
}

impl BurstLoss {
    /// The long-run fraction of packets this model drops: the share of packets sent in the
    /// bad state times the loss there.
    pub fn mean_loss(&self) -> f64 {
        if self.enter <= 0.0 {
            return 0.0;
        }
        self.enter / (self.enter + self.exit) * self.loss
    }
}

/// What one direction of a link does to packets at one moment.
///
/// The default is a perfect link: no rate limit, no delay, no loss.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LinkParams {
    /// Rate in bits per second at which packets are serialized; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// One-way delay added after serialization.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter` (never below zero).
    /// Unless [`reorder`](Self::reorder) is set, a packet never leaves before the one
    /// ahead of it, so jitter delays but does not reorder.
    pub jitter: Duration,
    /// Probability that a packet is lost, independently of every other packet.
    pub loss: f64,
    /// Bursty loss, on top of `loss`.
    pub burst: Option<BurstLoss>,
    /// Probability that a packet is released at its own jittered time even if that
    /// overtakes earlier packets. Needs `jitter` to have any effect.
    pub reorder: f64,
    /// Size of the queue in front of the rate limiter.
    pub queue: QueueLimit,
}

impl LinkParams {
    /// Sets the rate in bits per second.
    pub fn with_rate(mut self, bps: u64) -> Self {
        self.rate_bps = Some(bps);
        self
    }

    /// Sets the one-way delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter (delay varies uniformly by ± this much).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the independent loss probability (0.01 is 1%).
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets bursty (Gilbert-Elliott) loss.
    pub fn with_burst(mut self, burst: BurstLoss) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets the probability that a packet may overtake earlier ones.
    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }

    /// Sets the queue limit.
    pub fn with_queue(mut self, queue: QueueLimit) -> Self {
        self.queue = queue;
        self
    }

    /// The queue limit in bytes at the current rate.
    pub fn queue_bytes(&self) -> u64 {
        self.queue.bytes_at(self.rate_bps)
    }

    /// Checks that every probability is within 0..=1, the rate is not zero and reordering
    /// has the jitter it needs.
    pub fn validate(&self) -> Result<(), Error> {
        let probability = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::InvalidParams(format!("{name} must be between 0% and 100%, got {p}")))
            }
        };
        probability("loss", self.loss)?;
        probability("reorder", self.reorder)?;
        if let Some(burst) = &self.burst {
            probability("burst enter", burst.enter)?;
            probability("burst exit", burst.exit)?;
            probability("burst loss", burst.loss)?;
            if burst.enter > 0.0 && burst.exit == 0.0 {
                return Err(Error::InvalidParams(
                    "burst exit probability 0 would make the first burst last forever".into(),
                ));
            }
        }
        if self.rate_bps == Some(0) {
            return Err(Error::InvalidParams("rate must be above 0 (or unlimited)".into()));
        }
        if self.reorder > 0.0 && self.jitter.is_zero() {
            return Err(Error::InvalidParams(
                "reorder needs jitter: without it no packet can overtake another".into(),
            ));
        }
        Ok(())
    }
}

fn parse_error(what: &'static str, input: &str, reason: impl Into<String>) -> Error {
    Error::Parse { what, input: input.to_string(), reason: reason.into() }
}

fn split_number(input: &str) -> (&str, &str) {
    let s = input.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

/// Parses a rate: a number with a unit `bit`, `kbit`, `mbit`, `gbit` (or just `k`, `m`,
/// `g`; case-insensitive, `/s` allowed), decimal multiples as in `tc`. A bare number is bits
/// per second. `none`, `unlimited` and `0` mean no limit. `kbps`-style units are refused
/// because `tc` reads them as bytes.
pub fn parse_rate(input: &str) -> Result<Option<u64>, Error> {
    let lower = input.trim().to_ascii_lowercase();
    if matches!(lower.as_str(), "none" | "unlimited" | "0") {
        return Ok(None);
    }
    let (number, unit) = split_number(&lower);
    let value: f64 = number
        .parse()
        .map_err(|_| parse_error("rate", input, "expected a number such as 1mbit or 600kbit"))?;
    let unit = unit.strip_suffix("/s").unwrap_or(unit);
    let scale = match unit {
        "" | "bit" | "b" => 1.0,
        "k" | "kbit" => 1e3,
        "m" | "mbit" => 1e6,
        "g" | "gbit" => 1e9,
        "kbps" | "mbps" | "gbps" | "bps" => {
            return Err(parse_error(
                "rate",
                input,
                "ambiguous unit (tc reads bps as bytes per second): write kbit, mbit or gbit",
            ));
        }
        _ => return Err(parse_error("rate", input, "unknown unit: use bit, kbit, mbit or gbit")),
    };
    let bps = value * scale;
    if !(1.0..=1e12).contains(&bps) {
        return Err(parse_error("rate", input, "must be between 1 bit/s and 1000 gbit/s"));
    }
    Ok(Some(bps.round() as u64))
}

/// Parses a duration: a number with a unit `us`, `ms`, `s` or `min` (`60ms`, `1.5s`). A bare
/// `0` is zero.
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let lower = input.trim().to_ascii_lowercase();
    let (number, unit) = split_number(&lower);
    let value: f64 = number
        .parse()
        .map_err(|_| parse_error("duration", input, "expected a number such as 60ms or 1.5s"))?;
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "sec" => value,
        "min" => value * 60.0,
        "" if value == 0.0 => 0.0,
        "" => return Err(parse_error("duration", input, "missing unit: use us, ms, s or min")),
        _ => return Err(parse_error("duration", input, "unknown unit: use us, ms, s or min")),
    };
    if !seconds.is_finite() || seconds > 86_400.0 * 365.0 {
        return Err(parse_error("duration", input, "too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a probability written as a percentage: `1%`, `0.5%` or `1` (percent, as `tc`
/// reads it). Returns a fraction (0.01 for `1%`).
pub fn parse_percent(input: &str) -> Result<f64, Error> {
    let s = input.trim();
    let number = s.strip_suffix('%').unwrap_or(s).trim();
    let value: f64 = number
        .parse()
        .map_err(|_| parse_error("percentage", input, "expected a percentage such as 1%"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(parse_error("percentage", input, "must be between 0% and 100%"));
    }
    Ok(value / 100.0)
}

/// Parses a queue limit: bytes (`30000`, `30kb`, `1mb`, decimal) or a time at the link rate
/// (`100ms`).
pub fn parse_queue(input: &str) -> Result<QueueLimit, Error> {
    let lower = input.trim().to_ascii_lowercase();
    let (number, unit) = split_number(&lower);
    let scale = match unit {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        _ => return parse_duration(input).map(QueueLimit::Time),
    };
    let value: f64 = number.parse().map_err(|_| {
        parse_error("queue", input, "expected bytes (30000, 30kb) or a time (100ms)")
    })?;
    let bytes = value * scale;
    if !(1.0..=1e12).contains(&bytes) {
        return Err(parse_error("queue", input, "must be between 1 byte and 1000 GB"));
    }
    Ok(QueueLimit::Bytes(bytes.round() as u64))
}

/// Parses bursty loss as `ENTER:EXIT[:LOSS]`, each a percentage (`1%:30%` enters a burst
/// after 1% of packets and leaves after 30%, losing every packet in a burst).
pub fn parse_burst(input: &str) -> Result<BurstLoss, Error> {
    let parts: Vec<&str> = input.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(parse_error("burst", input, "expected ENTER:EXIT[:LOSS], e.g. 1%:30%"));
    }
    let enter = parse_percent(parts[0])?;
    let exit = parse_percent(parts[1])?;
    let loss = match parts.get(2) {
        Some(p) => parse_percent(p)?,
        None => 1.0,
    };
    Ok(BurstLoss { enter, exit, loss })
}

/// Changes to [`LinkParams`] given by a user: every `Some` field replaces the profile's.
///
/// Parsed from a spec such as `rate=1mbit,delay=60ms,jitter=10ms,loss=1%,burst=1%:30%,
/// reorder=0.1%,queue=100ms` (keys in any order, each optional).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Overrides {
    /// Replaces the rate (`Some(None)`: unlimited).
    pub rate_bps: Option<Option<u64>>,
    /// Replaces the one-way delay.
    pub delay: Option<Duration>,
    /// Replaces the jitter.
    pub jitter: Option<Duration>,
    /// Replaces the independent loss probability.
    pub loss: Option<f64>,
    /// Replaces the bursty loss (`Some(None)`: none).
    pub burst: Option<Option<BurstLoss>>,
    /// Replaces the reorder probability.
    pub reorder: Option<f64>,
    /// Replaces the queue limit.
    pub queue: Option<QueueLimit>,
}

impl Overrides {
    /// Parses a comma-separated `key=value` spec (keys: rate, delay, jitter, loss, burst,
    /// reorder, queue).
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let mut o = Overrides::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(parse_error("link spec", spec, format!("`{item}` is not key=value")));
            };
            match key.trim() {
                "rate" => o.rate_bps = Some(parse_rate(value)?),
                "delay" => o.delay = Some(parse_duration(value)?),
                "jitter" => o.jitter = Some(parse_duration(value)?),
                "loss" => o.loss = Some(parse_percent(value)?),
                "burst" if value.trim() == "none" => o.burst = Some(None),
                "burst" => o.burst = Some(Some(parse_burst(value)?)),
                "reorder" => o.reorder = Some(parse_percent(value)?),
                "queue" => o.queue = Some(parse_queue(value)?),
                other => {
                    return Err(parse_error(
                        "link spec",
                        spec,
                        format!(
                            "unknown key `{other}`: use rate, delay, jitter, loss, burst, \
                             reorder or queue"
                        ),
                    ));
                }
            }
        }
        Ok(o)
    }

    /// Writes every field that is set into `params`.
    pub fn apply(&self, params: &mut LinkParams) {
        if let Some(rate) = self.rate_bps {
            params.rate_bps = rate;
        }
        if let Some(delay) = self.delay {
            params.delay = delay;
        }
        if let Some(jitter) = self.jitter {
            params.jitter = jitter;
        }
        if let Some(loss) = self.loss {
            params.loss = loss;
        }
        if let Some(burst) = self.burst {
            params.burst = burst;
        }
        if let Some(reorder) = self.reorder {
            params.reorder = reorder;
        }
        if let Some(queue) = self.queue {
            params.queue = queue;
        }
    }
}

/// Formats a rate for people: `1.00 Mbit/s`, `600 kbit/s`, `unlimited`.
pub fn format_rate(rate_bps: Option<u64>) -> String {
    match rate_bps {
        None => "unlimited".into(),
        Some(r) => format_bits_per_second(r as f64),
    }
}

/// Formats a measured rate in bits per second for people.
pub fn format_bits_per_second(bps: f64) -> String {
    // Thresholds just below the round numbers, so that 999.7 kbit/s reads 1.00 Mbit/s.
    if bps >= 999.5e6 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else if bps >= 999.5e3 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.0} kbit/s", bps / 1e3)
    } else {
        format!("{bps:.0} bit/s")
    }
}

impl std::fmt::Display for LinkParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate {}, delay {:?}", format_rate(self.rate_bps), self.delay)?;
        if !self.jitter.is_zero() {
            write!(f, " ± {:?}", self.jitter)?;
        }
        write!(f, ", loss {}%", self.loss * 100.0)?;
        if let Some(b) = &self.burst {
            write!(
                f,
                ", burst enter {}% exit {}% loss {}% (≈{:.2}% lost)",
                b.enter * 100.0,
                b.exit * 100.0,
                b.loss * 100.0,
                b.mean_loss() * 100.0
            )?;
        }
        if self.reorder > 0.0 {
            write!(f, ", reorder {}%", self.reorder * 100.0)?;
        }
        if self.rate_bps.is_some() {
            match self.queue {
                QueueLimit::Bytes(b) => write!(f, ", queue {b} B")?,
                QueueLimit::Time(t) => write!(f, ", queue {:?} ({} B)", t, self.queue_bytes())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_tc() {
        assert_eq!(parse_rate("1mbit").unwrap(), Some(1_000_000));
        assert_eq!(parse_rate("600kbit").unwrap(), Some(600_000));
        assert_eq!(parse_rate("1.5M").unwrap(), Some(1_500_000));
        assert_eq!(parse_rate("2 Mbit/s").unwrap(), Some(2_000_000));
        assert_eq!(parse_rate("64000").unwrap(), Some(64_000));
        assert_eq!(parse_rate("none").unwrap(), None);
        let err = parse_rate("1mbps").unwrap_err().to_string();
        assert!(err.contains("mbit"), "{err}");
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1mbit").is_err());
    }

    #[test]
    fn durations_percentages_queues_and_bursts_parse() {
        assert_eq!(parse_duration("60ms").unwrap(), Duration::from_millis(60));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("60").unwrap_err().to_string().contains("unit"));
        assert_eq!(parse_percent("1%").unwrap(), 0.01);
        assert_eq!(parse_percent("0.5").unwrap(), 0.005);
        assert!(parse_percent("150%").is_err());
        assert_eq!(parse_queue("30000").unwrap(), QueueLimit::Bytes(30_000));
        assert_eq!(parse_queue("30kb").unwrap(), QueueLimit::Bytes(30_000));
        assert_eq!(parse_queue("50ms").unwrap(), QueueLimit::Time(Duration::from_millis(50)));
        let b = parse_burst("1%:25%").unwrap();
        assert_eq!((b.enter, b.exit, b.loss), (0.01, 0.25, 1.0));
        assert!(parse_burst("1%").is_err());
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let o = Overrides::parse("rate=3mbit, delay=20ms,loss=2%").unwrap();
        let mut p = LinkParams::default().with_jitter(Duration::from_millis(5));
        o.apply(&mut p);
        assert_eq!(p.rate_bps, Some(3_000_000));
        assert_eq!(p.delay, Duration::from_millis(20));
        assert_eq!(p.loss, 0.02);
        assert_eq!(p.jitter, Duration::from_millis(5));
        let err = Overrides::parse("speed=1mbit").unwrap_err().to_string();
        assert!(err.contains("unknown key `speed`"), "{err}");
        assert!(Overrides::parse("rate").is_err());
    }

    #[test]
    fn default_queue_is_100ms_of_rate_with_a_floor() {
        let p = LinkParams::default().with_rate(1_000_000);
        assert_eq!(p.queue_bytes(), 12_500);
        let slow = LinkParams::default().with_rate(100_000);
        assert_eq!(slow.queue_bytes(), MIN_QUEUE_BYTES);
        assert_eq!(LinkParams::default().queue_bytes(), u64::MAX);
    }

    #[test]
    fn validation_names_the_problem() {
        let err = LinkParams::default().with_loss(1.5).validate().unwrap_err().to_string();
        assert!(err.contains("loss"), "{err}");
        let err = LinkParams::default().with_reorder(0.01).validate().unwrap_err().to_string();
        assert!(err.contains("jitter"), "{err}");
        assert!(LinkParams::default().validate().is_ok());
    }
}
