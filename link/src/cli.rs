//! The `tiermesh link` subcommand: run an [`Emulator`] between clients and an upstream,
//! printing what it does once a second.

use std::{
    io::Write,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    BurstLoss, Emulator, EmulatorConfig, Error, LinkStats, Overrides, PipeStats, Profile,
    QueueLimit, Schedule, format_bits_per_second, parse_burst, parse_duration, parse_percent,
    parse_queue, parse_rate,
};

const PROFILES_HELP: &str = "\
Profiles (the same in both directions):
  fiber      no impairment
  rural      1 Mbit/s, 60 ms one-way, 1% loss
  congested  600 kbit/s, 100 ms ± 30 ms one-way (order kept), 3% loss
  satellite  2 Mbit/s, 300 ms one-way, 0.5% loss
  step       3 Mbit/s, 30 ms, queue 37500 B; a third of the rate for 10 s in the middle
             of --duration (from 10 s to 20 s without --duration)

Flags such as --rate change both directions; --up/--down take a spec for one direction:
  --up rate=500kbit,delay=80ms,jitter=10ms,loss=2%,burst=1%:30%,reorder=0.5%,queue=50ms

Signals: SIGUSR1 cuts the link (every packet dropped, both ways, until SIGUSR2 restores it):
  kill -USR1 <pid>   a blackholed link, as a dead router or a drop-all firewall rule makes

Example: tiermesh link --listen 127.0.0.1:4444 --to 127.0.0.1:4443 --profile rural --seed 7";

/// A rate flag's value (`None`: unlimited).
#[derive(Clone, Copy, Debug)]
struct Rate(Option<u64>);

fn rate_arg(s: &str) -> Result<Rate, Error> {
    parse_rate(s).map(Rate)
}

/// Emulate a slow, lossy or changing link: a UDP relay from --listen to --to that adds rate
/// limits, delay, jitter and loss in each direction.
#[derive(Debug, clap::Args)]
#[command(after_help = PROFILES_HELP)]
pub struct Args {
    /// Address clients send to.
    #[arg(long)]
    listen: SocketAddr,
    /// Address packets are forwarded to (the relay or server under test).
    #[arg(long)]
    to: SocketAddr,
    /// Named link: fiber, rural, congested, satellite or step.
    #[arg(long, default_value = "fiber")]
    profile: Profile,
    /// Seed of the random loss and jitter: the same seed repeats the same run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rate in each direction, e.g. 1mbit, 600kbit, or none.
    #[arg(long, value_parser = rate_arg)]
    rate: Option<Rate>,
    /// One-way delay in each direction, e.g. 60ms.
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Jitter: each packet's delay varies uniformly by ± this much, e.g. 20ms.
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Random loss in each direction, in percent, e.g. 1%.
    #[arg(long, value_parser = parse_percent)]
    loss: Option<f64>,
    /// Bursty loss, ENTER:EXIT[:LOSS] in percent per packet, e.g. 1%:30%.
    #[arg(long, value_parser = parse_burst)]
    burst: Option<BurstLoss>,
    /// Share of packets that may overtake earlier ones (needs jitter), e.g. 0.5%.
    #[arg(long, value_parser = parse_percent)]
    reorder: Option<f64>,
    /// Queue in front of the rate limit: bytes (30000, 30kb) or time at the rate (100ms).
    #[arg(long, value_parser = parse_queue)]
    queue: Option<QueueLimit>,
    /// Overrides for the client-to-upstream direction, e.g. rate=500kbit,delay=80ms.
    #[arg(long, value_parser = Overrides::parse)]
    up: Option<Overrides>,
    /// Overrides for the upstream-to-client direction, e.g. rate=2mbit,loss=0.
    #[arg(long, value_parser = Overrides::parse)]
    down: Option<Overrides>,
    /// Stop after this long, e.g. 30s (default: run until interrupted).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How often to print a line of counters (0 for never).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    stats_interval: Duration,
}

impl Args {
    /// The schedules for the up and down directions: the profile, then the flags for both
    /// directions, then `--up` / `--down`.
    fn schedules(&self) -> Result<(Schedule, Schedule), Error> {
        let both = Overrides {
            rate_bps: self.rate.map(|r| r.0),
            delay: self.delay,
            jitter: self.jitter,
            loss: self.loss,
            burst: self.burst.map(Some),
            reorder: self.reorder,
            queue: self.queue,
        };
        let build = |dir: Option<Overrides>, name: &str| {
            let mut params = self.profile.params();
            both.apply(&mut params);
            if let Some(dir) = dir {
                dir.apply(&mut params);
            }
            let schedule = self.profile.schedule_with(params, self.duration);
            schedule
                .validate()
                .map_err(|e| Error::InvalidParams(format!("{name} direction: {e}")))?;
            Ok(schedule)
        };
        Ok((build(self.up, "up")?, build(self.down, "down")?))
    }
}

/// Runs `tiermesh link` until `--duration` ends or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (up, down) = args.schedules()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, up, down))
}

async fn serve(args: Args, up: Schedule, down: Schedule) -> anyhow::Result<()> {
    let mut config = EmulatorConfig::default().up(up.clone()).down(down.clone()).seed(args.seed);
    if let Some(d) = args.duration {
        config = config.duration(d);
    }
    let emulator = Emulator::bind_with(args.listen, args.to, config).await?;
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "tiermesh link: {} -> {}, profile {}, seed {}",
        emulator.local_addr(),
        args.to,
        args.profile,
        args.seed
    )?;
    writeln!(out, "  up   (clients -> {}): {up}", args.to)?;
    writeln!(out, "  down ({} -> clients): {down}", args.to)?;
    out.flush()?;

    let end = args.duration.map(|d| tokio::time::Instant::from_std(start + d));
    let interval_time =
        if args.stats_interval.is_zero() { Duration::from_secs(3600) } else { args.stats_interval };
    let mut interval = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + interval_time),
        interval_time,
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    use tokio::signal::unix::{SignalKind, signal};
    let mut cut = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    let mut restore = signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?;
    let (mut last, mut last_at) = (LinkStats::default(), start);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                // The counters are as of the emulator's last step; they do not change while
                // it is idle, so the interval is measured on this clock.
                let (now, now_at) = (emulator.stats(), Instant::now());
                if !args.stats_interval.is_zero() {
                    let line = stats_line(&last, &now, now_at - start, now_at - last_at);
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                (last, last_at) = (now, now_at);
            }
            _ = async { tokio::time::sleep_until(end.unwrap_or_else(far_future)).await } => break,
            _ = &mut ctrl_c => break,
            _ = cut.recv() => {
                emulator.set_blackhole(true);
                writeln!(out, "{:>7.1}s  blackhole: every packet dropped (SIGUSR2 restores)", start.elapsed().as_secs_f64())?;
                out.flush()?;
            }
            _ = restore.recv() => {
                emulator.set_blackhole(false);
                writeln!(out, "{:>7.1}s  blackhole lifted", start.elapsed().as_secs_f64())?;
                out.flush()?;
            }
        }
    }
    let total = emulator.shutdown().await?;
    writeln!(out, "totals after {:.1} s:", total.elapsed.as_secs_f64())?;
    writeln!(out, "  up   {}", totals(&total.up))?;
    writeln!(out, "  down {}", totals(&total.down))?;
    if total.blackholed > 0 {
        writeln!(out, "  dropped while blackholed {}", total.blackholed)?;
    }
    if total.send_errors > 0 || total.rejected_clients > 0 {
        writeln!(
            out,
            "  send errors {}, packets from rejected clients {}",
            total.send_errors, total.rejected_clients
        )?;
    }
    Ok(())
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// One line of counters for the `interval` between `last` and `now`, `elapsed` since start.
fn stats_line(last: &LinkStats, now: &LinkStats, elapsed: Duration, interval: Duration) -> String {
    let secs = interval.as_secs_f64().max(1e-3);
    let direction = |name: &str, a: &PipeStats, b: &PipeStats| {
        let bits = (b.bytes_out - a.bytes_out) as f64 * 8.0;
        format!(
            "{name} {:>12} {:>5} pkt/s drop q{} l{} b{} queue {:>6} B",
            format_bits_per_second(bits / secs),
            ((b.packets_out - a.packets_out) as f64 / secs).round(),
            b.dropped_queue_full - a.dropped_queue_full,
            b.dropped_loss - a.dropped_loss,
            b.dropped_burst - a.dropped_burst,
            b.queued_bytes,
        )
    };
    format!(
        "{:>7.1}s  {} | {} | clients {}",
        elapsed.as_secs_f64(),
        direction("up", &last.up, &now.up),
        direction("down", &last.down, &now.down),
        now.clients
    )
}

fn totals(s: &PipeStats) -> String {
    format!(
        "{} packets in, {} out, {} dropped (queue full {}, loss {}, burst {})",
        s.packets_in,
        s.packets_out,
        s.dropped(),
        s.dropped_queue_full,
        s.dropped_loss,
        s.dropped_burst
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["tiermesh-link", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn flags_override_the_profile_and_up_down_override_the_flags() {
        let args =
            parse(&["--profile", "rural", "--rate", "2mbit", "--up", "delay=10ms,loss=0"]).unwrap();
        let (up, down) = args.schedules().unwrap();
        assert_eq!(up.base().rate_bps, Some(2_000_000));
        assert_eq!(up.base().delay, Duration::from_millis(10));
        assert_eq!(up.base().loss, 0.0);
        assert_eq!(down.base().rate_bps, Some(2_000_000));
        assert_eq!(down.base().delay, Duration::from_millis(60));
        assert_eq!(down.base().loss, 0.01);
    }

    #[test]
    fn step_profile_follows_the_rate_flag_and_duration() {
        let args = parse(&["--profile", "step", "--rate", "6mbit", "--duration", "30s"]).unwrap();
        let (up, _) = args.schedules().unwrap();
        assert_eq!(up.params_at(Duration::from_secs(15)).rate_bps, Some(2_000_000));
        assert_eq!(up.params_at(Duration::from_secs(25)).rate_bps, Some(6_000_000));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let err = parse(&["--loss", "200%"]).err().unwrap().to_string();
        assert!(err.contains("between 0% and 100%"), "{err}");
        let err = parse(&["--profile", "dialup"]).err().unwrap().to_string();
        assert!(err.contains("unknown link profile"), "{err}");
        let err = parse(&["--rate", "1mbps"]).err().unwrap().to_string();
        assert!(err.contains("kbit, mbit or gbit"), "{err}");
        let args = parse(&["--reorder", "1%"]).unwrap();
        let err = args.schedules().unwrap_err().to_string();
        assert!(err.contains("jitter"), "{err}");
    }

    #[test]
    fn run_stops_by_itself_after_its_duration() {
        let args = parse(&["--profile", "rural", "--duration", "300ms"]).unwrap();
        let started = Instant::now();
        run(args).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn stats_line_reports_the_interval_rate() {
        let last = LinkStats::default();
        let mut now = LinkStats::default();
        now.up.bytes_out = 125_000;
        now.up.packets_out = 100;
        now.up.dropped_loss = 1;
        let line = stats_line(&last, &now, Duration::from_secs(3), Duration::from_secs(1))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains("up 1.00 Mbit/s 100 pkt/s drop q0 l1 b0"), "{line}");
    }
}
