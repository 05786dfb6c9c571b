//! Shared by the shaped-link tests (`tests/shaped_*.rs`) and `examples/shaped.rs`: the
//! synthetic broadcast of `tiermesh pub` (catalog, audio 48 kbit/s, video 150 + 550 + 1500
//! kbit/s: 2.25 Mbit/s) through `tiermesh relay`, with `tiermesh link` between the relay and
//! either the subscriber or the publisher, and the figures the product promises computed
//! from what `tiermesh sub --json --groups` (or `--abr`) saw.
//!
//! Definitions (every figure is over what the subscriber saw; the first group of each track,
//! joined mid-way, and everything captured in the last [`TAIL`] of the watch are left out):
//! - **audio on time**: audio frames (one per 20 ms group) that arrived within 400 ms plus
//!   the link's one-way delay of their capture, over the frames captured in that span.
//!   **After start-up**: the same over the frames captured from [`STARTUP`] after the first
//!   one on: a new connection's first round trips (slow start from a 12 kB window, the
//!   subscriptions starting) hold back whatever is produced meanwhile, which on a 600 ms
//!   round trip is most of the first second.
//! - **lowest tier complete**: groups of `video/180p` whose stream ended with FIN and no
//!   object missing, over the groups captured in that span.
//! - **goodput**: payload bytes of the groups of every media track (audio and the three
//!   video tiers) captured in the goodput span that arrived complete and live, per second of
//!   that span, as a share of the link rate: bytes a decoder can use, not bytes later thrown
//!   away. *Live*: the group's last object arrived within [`LIVE_BUDGET`] (the relays'
//!   default end-to-end capture-age budget, 800 ms: what tiermesh itself treats as too old
//!   to play in a conversation) plus the link's one-way delay after the group's capture
//!   ended (its first object's capture time plus the group's duration). FIFO mode delivers
//!   whole groups 2-9 s late on `rural`; a player in a call has moved on by then. The span
//!   is the one the figures above use, made common to all tracks: from the first video
//!   group boundary after the subscription began (the joined first group left out) to the
//!   last group boundary before the tail (12 s of a 15 s watch). A group captured in it that
//!   was cut, late, or not there when the watch ended counts nothing; neither do the bytes
//!   of the joined groups, of groups cut short, of resends, and QUIC's and MoQT's headers,
//!   although they all use the link. With every group of audio, 180p and 360p whole and
//!   nothing of 720p it reads (48 + 150 + 550) / 1000 = 74.8% on `rural`. **Over the
//!   watch** (printed beside it in brackets; the figure before this span was defined):
//!   payload of every complete group that arrived, however late, the joined and the tail
//!   ones too, over the seconds `sub` ran. Those seconds start after the QUIC and MoQT
//!   handshakes but include the catalog's and the subscriptions' round trips, in which no
//!   media can arrive, and the last group is cut by the end of the watch, so that figure
//!   depends on the watch's length (about 14 whole groups per tier in 15 s: 70% where the
//!   link carried every group whole). docs/BENCHMARKS.md ("Goodput on rural") accounts for
//!   the rest of the link: idle, 720p and 360p cut, joined groups, headers, resends.
//! - **p95**: capture-to-arrival latency of every media object delivered by subscription.
//! - **tier share**: payload rate received per video tier over its nominal rate.

#![allow(dead_code)] // each test file uses part of it

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tiermesh_client::subscribe::{GroupRecord, SubOutput, TrackGroups};
use tiermesh_tests::{Proc, Relay, start_pub};

/// Capture time left out at the end of a watch: groups still in flight when it stops.
pub const TAIL: Duration = Duration::from_millis(1500);
/// Nominal rates of the video tiers, bit/s, lowest first.
pub const TIERS: [(&str, f64); 3] =
    [("video/180p", 150_000.0), ("video/360p", 550_000.0), ("video/720p", 1_500_000.0)];
/// The audio bit rate of the synthetic broadcast.
pub const AUDIO_RATE: f64 = 48_000.0;
/// The emulator's seed: the same loss pattern every run.
pub const SEED: u64 = 7;
/// A group counts as goodput only if its last object arrived within this plus the link's
/// one-way delay after the group's capture ended: the relays' default end-to-end
/// capture-age budget, beyond which tiermesh itself drops an object as too old to play live.
pub const LIVE_BUDGET: Duration = tiermesh_client::scheduler::DEFAULT_CAPTURE_AGE_BUDGET;
/// The start-up left out of "audio on time after start-up": two seconds, three round trips
/// of the slowest profile (`satellite`, 600 ms).
pub const STARTUP: Duration = Duration::from_secs(2);

/// Which side of the relay sits behind the emulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// relay → link → subscriber: the relay's scheduler decides.
    Subscriber,
    /// publisher → link → relay: the publisher's scheduler decides (a patient's uplink).
    Publisher,
}

/// The link profiles as `tiermesh link` defines them (link/src/profile.rs).
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// `rural`, `congested`, ...
    pub name: &'static str,
    /// Link rate, bit/s (for `step`, outside the cut).
    pub rate: f64,
    /// One-way delay, ms.
    pub delay_ms: f64,
}

/// `rural`: 1 Mbit/s, 60 ms, 1% loss.
pub const RURAL: Profile = Profile { name: "rural", rate: 1_000_000.0, delay_ms: 60.0 };
/// `congested`: 600 kbit/s, 100 ± 30 ms, 3% loss.
pub const CONGESTED: Profile = Profile { name: "congested", rate: 600_000.0, delay_ms: 100.0 };
/// `satellite`: 2 Mbit/s, 300 ms, 0.5% loss.
pub const SATELLITE: Profile = Profile { name: "satellite", rate: 2_000_000.0, delay_ms: 300.0 };
/// `step`: 3 Mbit/s, 30 ms, a third of the rate for 10 s in the middle of the link's run.
pub const STEP: Profile = Profile { name: "step", rate: 3_000_000.0, delay_ms: 30.0 };

/// Every profile, by name in [`profile`].
pub const PROFILES: [Profile; 4] = [RURAL, CONGESTED, SATELLITE, STEP];

/// The profile named `name`.
pub fn profile(name: &str) -> Option<Profile> {
    PROFILES.into_iter().find(|p| p.name == name)
}

/// One shaped run.
#[derive(Debug, Clone)]
pub struct Run {
    /// `priority` or `fifo` (relay and publisher alike).
    pub mode: &'static str,
    /// The link.
    pub profile: Profile,
    /// Who is behind it.
    pub side: Side,
    /// Congestion controller of relay and publisher (`None`: the default).
    pub cc: Option<&'static str>,
    /// How long the subscriber watches.
    pub watch: Duration,
    /// How long the link runs (the `step` cut is centred in it).
    pub link_run: Duration,
    /// `tiermesh sub --abr` instead of every track.
    pub abr: bool,
}

impl Run {
    /// Subscriber behind `profile`, priority mode, default controller, 15 s watched.
    pub fn new(profile: Profile) -> Self {
        Self {
            mode: "priority",
            profile,
            side: Side::Subscriber,
            cc: None,
            watch: Duration::from_secs(15),
            link_run: Duration::from_secs(60),
            abr: false,
        }
    }
}

/// `profile` with `side` behind the link, priority mode. For `step` the link runs 30 s (the
/// cut is 10 s to 20 s after it starts) and the watch 25 s (it ends about 26 s after the
/// link starts), so the cut and what follows it are watched.
pub fn profile_run(profile: Profile, side: Side) -> Run {
    let mut r = Run::new(profile);
    r.side = side;
    if profile.name == "step" {
        r.link_run = Duration::from_secs(30);
        r.watch = Duration::from_secs(25);
    }
    r
}

/// Runs all of `runs` at once, each with its own relay, link and publisher, and prints
/// their table (for `step`, when each tier delivered every group again after the cut).
pub fn run_at_once(runs: Vec<Run>) -> Vec<(Outcome, Figures)> {
    let handles: Vec<_> = runs
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                let o = run(&r);
                let f = figures(&o);
                (o, f)
            })
        })
        .collect();
    let outcomes: Vec<(Outcome, Figures)> =
        handles.into_iter().map(|h| h.join().expect("a run panicked")).collect();
    eprintln!("{HEADER}");
    for (o, f) in &outcomes {
        let mut line = row(o, f);
        if o.run.profile.name == "step" {
            for (t, _) in TIERS {
                let back = recovery_s(o, t).map_or("never".to_owned(), |s| format!("{s:.1} s"));
                line.push_str(&format!(" {t} back {back};"));
            }
        }
        eprintln!("{line}");
    }
    outcomes
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run.
    pub run: Run,
    /// What the subscriber printed.
    pub out: SubOutput,
    /// Wall-clock ms when the link started (its schedule's zero), within a few ms.
    pub link_start_ms: f64,
    /// Where `TIERMESH_SHAPED_DUMP` had the report saved (its folder is created if missing),
    /// or why it could not be; `None` without that variable (and for a saved run read back).
    pub saved: Option<Result<std::path::PathBuf, String>>,
}

fn free_udp_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local addr")
}

fn wall_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs one shaped run to the end.
pub fn run(r: &Run) -> Outcome {
    let mut relay_args = vec!["--public", "e2e", "--public-publish", "e2e", "--scheduler", r.mode];
    if let Some(cc) = r.cc {
        relay_args.extend(["--cc", cc]);
    }
    let relay = Relay::start(&relay_args).expect("relay");
    let listen = free_udp_port();
    let link = Proc::tiermesh(
        "link",
        [
            "link".to_owned(),
            "--listen".to_owned(),
            listen.to_string(),
            "--to".to_owned(),
            relay.addr.to_string(),
            "--profile".to_owned(),
            r.profile.name.to_owned(),
            "--seed".to_owned(),
            SEED.to_string(),
            "--duration".to_owned(),
            format!("{}s", r.link_run.as_secs()),
            "--stats-interval".to_owned(),
            "0".to_owned(),
        ],
    )
    .expect("link");
    link.wait_stdout_prefix(Duration::from_secs(20), "tiermesh link:").expect("link up");
    let link_start_ms = wall_ms();
    let via_link = format!("moqt://{listen}/e2e/shaped");
    let direct = relay.url("moqt", "e2e/shaped");
    let (pub_url, sub_url) = match r.side {
        Side::Subscriber => (direct, via_link),
        Side::Publisher => (via_link, direct),
    };
    let mut pub_args: Vec<String> = relay.pin().to_vec();
    pub_args.extend(["--scheduler".to_owned(), r.mode.to_owned()]);
    if let Some(cc) = r.cc {
        pub_args.extend(["--cc".to_owned(), cc.to_owned()]);
    }
    let _publisher = start_pub("pub", &pub_url, &pub_args).expect("publisher");
    let mut args = vec![
        "sub".to_owned(),
        sub_url,
        "--json".to_owned(),
        "--duration".to_owned(),
        format!("{}ms", r.watch.as_millis()),
    ];
    if r.abr {
        args.push("--abr".to_owned());
    } else {
        args.push("--groups".to_owned());
    }
    if let Some(cc) = r.cc {
        args.extend(["--cc".to_owned(), cc.to_owned()]);
    }
    args.extend(relay.pin());
    let mut sub = Proc::tiermesh("sub", &args).expect("sub");
    let status = sub.wait_exit(r.watch + Duration::from_secs(40)).expect("sub ends");
    let stdout = sub.stdout();
    let Some(line) = stdout.lines().find(|l| l.starts_with('{')) else {
        panic!("no report ({status})\n{}\n{}", sub.dump(), relay.proc.dump())
    };
    let mut saved = None;
    if let Some(dir) = std::env::var_os("TIERMESH_SHAPED_DUMP") {
        let name = format!(
            "{}-{:?}-{}-{}-{:.0}.json",
            r.profile.name,
            r.side,
            r.mode,
            r.cc.unwrap_or("default"),
            link_start_ms
        );
        let path = std::path::Path::new(&dir).join(name);
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, line));
        saved = Some(match written {
            Ok(()) => Ok(path),
            Err(e) => {
                let why = format!("report not saved to {}: {e}", path.display());
                eprintln!("shaped: {why}");
                Err(why)
            }
        });
    }
    let out: SubOutput = serde_json::from_str(line).expect("report JSON");
    Outcome { run: r.clone(), out, link_start_ms, saved }
}

/// The outcome a `TIERMESH_SHAPED_DUMP` file holds, named as [`run`] names it
/// (`<profile>-<Side>-<mode>-<cc>-<link start ms>.json`), so that the figures of saved runs
/// can be computed again; `None` if the name or the JSON is not one of those.
pub fn dumped(path: &std::path::Path) -> Option<Outcome> {
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.split('-');
    let profile = profile(parts.next()?)?;
    let side = match parts.next()? {
        "Subscriber" => Side::Subscriber,
        "Publisher" => Side::Publisher,
        _ => return None,
    };
    let mode = match parts.next()? {
        "fifo" => "fifo",
        "priority" => "priority",
        _ => return None,
    };
    let cc = match parts.next()? {
        "default" => None,
        "cubic" => Some("cubic"),
        "bbr" => Some("bbr"),
        "newreno" => Some("newreno"),
        "delay" => Some("delay"),
        _ => return None,
    };
    let link_start_ms = parts.next()?.parse().ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let out: SubOutput = serde_json::from_str(&text).ok()?;
    let mut run = profile_run(profile, side);
    run.mode = mode;
    run.cc = cc;
    Some(Outcome { run, out, link_start_ms, saved: None })
}

/// The figures of one run (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Share of the audio frames captured in the span that arrived within 400 ms + delay.
    pub audio_on_time: f64,
    /// The same from [`STARTUP`] after the first audio frame on.
    pub audio_on_time_steady: f64,
    /// Audio latency p95 / p99, ms.
    pub audio_p95: f64,
    /// Audio p99, ms.
    pub audio_p99: f64,
    /// Lowest tier: complete groups / groups captured in the span.
    pub low_complete: f64,
    /// Lowest tier: (complete, captured) groups.
    pub low_groups: (u64, u64),
    /// Lowest tier p95, ms.
    pub low_p95: f64,
    /// Payload rate of the groups captured in the goodput span that arrived complete and
    /// live, over the link rate (see the module docs).
    pub goodput: f64,
    /// The goodput span: capture time, wall-clock ms, from and to.
    pub goodput_span_ms: (f64, f64),
    /// Payload of every complete group that arrived, over the seconds the subscriber ran,
    /// over the link rate (the figure printed before the goodput span was defined).
    pub goodput_watch: f64,
    /// p95 of every media object, ms.
    pub p95: f64,
    /// Received rate of each video tier over its nominal rate.
    pub tier_share: [f64; 3],
    /// Complete groups / groups captured in the span, per video tier.
    pub tier_complete: [f64; 3],
}

fn track<'a>(o: &'a Outcome, name: &str) -> &'a TrackGroups {
    o.out.groups.iter().find(|t| t.name == name).unwrap_or_else(|| {
        panic!("no groups of {name} in the report: {:?}", o.out.report);
    })
}

/// The group IDs a track was expected to deliver, and the records of those that arrived:
/// from the second group seen to the last one captured before the tail.
fn span(t: &TrackGroups, end_ms: f64, group_ms: f64) -> (u64, u64, Vec<&GroupRecord>) {
    let Some(first) = t.groups.first() else { return (0, 0, Vec::new()) };
    let (lo, hi) = bounds(first.group, end_ms, group_ms);
    let inside = t.groups.iter().filter(|g| g.group >= lo && g.group < hi).collect();
    (lo, hi, inside)
}

/// The group IDs expected of a track whose first group seen is `first`: from the one after
/// it (the joined group left out) to the last one captured before the tail (exclusive).
fn bounds(first: u64, end_ms: f64, group_ms: f64) -> (u64, u64) {
    // Group IDs of the synthetic broadcast are capture time / group duration.
    let last = ((end_ms - TAIL.as_secs_f64() * 1000.0) / group_ms).floor() as u64;
    let lo = first + 1;
    (lo, last.max(lo))
}

/// Watch end, wall-clock ms: the last arrival of anything.
fn end_ms(o: &Outcome) -> f64 {
    o.out.groups.iter().flat_map(|t| t.groups.iter().map(|g| g.last_ms)).fold(0.0, f64::max)
}

/// The figures of an outcome of a non-ABR run.
pub fn figures(o: &Outcome) -> Figures {
    let end = end_ms(o);
    let delay = o.run.profile.delay_ms;
    let secs = o.out.report.duration_s.max(1.0);
    let mut f = Figures::default();

    let audio = track(o, "audio");
    let (lo, hi, got) = span(audio, end, 20.0);
    let on_time =
        got.iter().filter(|g| g.capture_ms.is_some_and(|c| g.last_ms - c <= 400.0 + delay)).count();
    f.audio_on_time = on_time as f64 / (hi - lo).max(1) as f64;
    let steady_lo = lo + STARTUP.as_millis() as u64 / 20;
    let steady = got
        .iter()
        .filter(|g| g.group >= steady_lo)
        .filter(|g| g.capture_ms.is_some_and(|c| g.last_ms - c <= 400.0 + delay))
        .count();
    f.audio_on_time_steady = steady as f64 / hi.saturating_sub(steady_lo).max(1) as f64;
    let q =
        |name: &str| o.out.report.tracks.iter().find(|t| t.name == name).and_then(|t| t.latency_ms);
    f.audio_p95 = q("audio").map_or(f64::INFINITY, |l| l.p95);
    f.audio_p99 = q("audio").map_or(f64::INFINITY, |l| l.p99);
    f.low_p95 = q(TIERS[0].0).map_or(f64::INFINITY, |l| l.p95);
    f.p95 = o.out.media_latency_ms.map_or(f64::INFINITY, |l| l.p95);

    let mut watch_bytes: u64 = audio.groups.iter().filter(|g| g.complete).map(|g| g.bytes).sum();
    for (i, (name, rate)) in TIERS.iter().enumerate() {
        let t = track(o, name);
        let bytes: u64 = t.groups.iter().map(|g| g.bytes).sum();
        f.tier_share[i] = bytes as f64 * 8.0 / secs / rate;
        watch_bytes += t.groups.iter().filter(|g| g.complete).map(|g| g.bytes).sum::<u64>();
        let (lo, hi, got) = span(t, end, 1000.0);
        let complete = got.iter().filter(|g| g.complete).count() as u64;
        f.tier_complete[i] = complete as f64 / (hi - lo).max(1) as f64;
        if i == 0 {
            f.low_groups = (complete, hi - lo);
            f.low_complete = f.tier_complete[0];
        }
    }
    f.goodput_watch = watch_bytes as f64 * 8.0 / secs / o.run.profile.rate;
    let (from, to, bytes) = goodput_span(o, end);
    f.goodput_span_ms = (from, to);
    f.goodput = bytes as f64 * 8.0 / ((to - from) / 1000.0).max(1.0) / o.run.profile.rate;
    f
}

/// The goodput span (capture time, wall-clock ms) and the payload bytes of the groups of
/// every media track captured in it that arrived complete and live (within [`LIVE_BUDGET`]
/// plus the one-way delay of the group's end of capture): from the first video group
/// boundary after the subscription began (one group after the earliest group any tier
/// delivered, the joined one) to the last boundary before the tail, as [`span`] bounds each
/// track.
fn goodput_span(o: &Outcome, end_ms: f64) -> (f64, f64, u64) {
    let late_ms = LIVE_BUDGET.as_secs_f64() * 1000.0 + o.run.profile.delay_ms;
    const GROUP_MS: f64 = 1000.0;
    let first = TIERS
        .iter()
        .filter_map(|(name, _)| o.out.groups.iter().find(|t| t.name == *name))
        .filter_map(|t| t.groups.first().map(|g| g.group))
        .min();
    let Some(first) = first else { return (0.0, 0.0, 0) };
    let (lo, hi) = bounds(first, end_ms, GROUP_MS);
    let (from, to) = (lo as f64 * GROUP_MS, hi as f64 * GROUP_MS);
    let mut bytes = 0;
    for (name, group_ms) in [("audio", 20.0)].into_iter().chain(TIERS.map(|(n, _)| (n, GROUP_MS))) {
        let Some(t) = o.out.groups.iter().find(|t| t.name == name) else { continue };
        bytes += t
            .groups
            .iter()
            .filter(|g| g.complete)
            .filter(|g| g.capture_ms.is_some_and(|c| g.last_ms - c <= group_ms + late_ms))
            .filter(|g| {
                let capture = g.group as f64 * group_ms;
                capture >= from && capture < to
            })
            .map(|g| g.bytes)
            .sum::<u64>();
    }
    (from, to, bytes)
}

/// For `step`: seconds from the end of the cut until `tier` delivers every group complete
/// (capture time of the first group from which all later ones in the span are complete,
/// minus the cut's end; negative if it never stopped). `None` if it never recovered.
pub fn recovery_s(o: &Outcome, tier: &str) -> Option<f64> {
    let cut_end = o.link_start_ms + (o.run.link_run.as_secs_f64() - 10.0) / 2.0 * 1000.0 + 10_000.0;
    let t = track(o, tier);
    let (lo, hi, got) = span(t, end_ms(o), 1000.0);
    // Walk back from the end while groups are complete.
    let mut first_ok = hi;
    for g in (lo..hi).rev() {
        if got.iter().any(|r| r.group == g && r.complete) {
            first_ok = g;
        } else {
            break;
        }
    }
    if first_ok == hi {
        return None;
    }
    Some((first_ok as f64 * 1000.0 - cut_end) / 1000.0)
}

/// One row of the shaped-links table.
pub fn row(o: &Outcome, f: &Figures) -> String {
    let side = match o.run.side {
        Side::Subscriber => "sub",
        Side::Publisher => "pub",
    };
    format!(
        "| {} | {side} | {} | {} | {:.1}% ({:.1}%) | {:.0} / {:.0} | {}/{} ({:.0}%) | {:.0} | {:.0} | {:.0}% / {:.0}% / {:.0}% | {:.1}% ({:.0}%) |",
        o.run.profile.name,
        o.run.mode,
        o.run.cc.unwrap_or("default"),
        f.audio_on_time * 100.0,
        f.audio_on_time_steady * 100.0,
        f.audio_p95,
        f.audio_p99,
        f.low_groups.0,
        f.low_groups.1,
        f.low_complete * 100.0,
        f.low_p95,
        f.p95,
        f.tier_share[0] * 100.0,
        f.tier_share[1] * 100.0,
        f.tier_share[2] * 100.0,
        f.goodput * 100.0,
        f.goodput_watch * 100.0,
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "| link | behind link | mode | cc | audio on time (after start-up) | audio p95 / p99 ms | 180p groups complete | 180p p95 ms | all media p95 ms | rate received 180p / 360p / 720p | goodput: whole live groups of link rate (any whole group over the watch) |\n|---|---|---|---|---|---|---|---|---|---|---|";
