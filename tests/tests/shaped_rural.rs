//! The synthetic broadcast (catalog, audio, video at 150 + 500 + 1500 kbit/s: 2.2 Mbit/s in
//! all) through a relay to a subscriber behind `tiermesh link --profile rural` (1 Mbit/s,
//! 60 ms one-way, 1% loss, fixed seed), once with the relay's priority scheduler and once in
//! FIFO mode. The link cannot carry the broadcast, so something must go: with the scheduler
//! it is the highest tier, while audio and the lowest tier arrive whole and on time.
//!
//! Tolerances (the runs share 2 cores with the build and other tests): latency bounds carry
//! 100 ms of slack over the product targets, counts 5 points; see [`check_priority`].

#![allow(dead_code)] // shared with `examples/shaped.rs`, which uses only part of it

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use tiermesh_tests::{Proc, Relay, Report, TrackReport, start_pub, sub_json};

/// One-way delay of `rural`.
pub const RURAL_DELAY_MS: f64 = 60.0;
/// Rate of `rural`, bit/s.
pub const RURAL_RATE: f64 = 1_000_000.0;
/// How long the subscriber watches.
pub const WATCH: Duration = Duration::from_secs(12);
/// Audio objects a second (20 ms frames).
const AUDIO_PER_S: f64 = 50.0;
/// Nominal rates of the video tiers, bit/s.
const TIERS: [(&str, f64); 3] =
    [("video/180p", 150_000.0), ("video/360p", 500_000.0), ("video/720p", 1_500_000.0)];
/// The emulator's seed: the same loss pattern every run.
const SEED: &str = "7";

/// What one shaped run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// `priority` or `fifo`.
    pub mode: String,
    /// Share of the audio objects expected over the watch that arrived (0..1).
    pub audio_delivered: f64,
    /// Audio p95 / p99 capture-to-arrival latency, ms.
    pub audio_p95: f64,
    /// Audio p99 latency, ms.
    pub audio_p99: f64,
    /// Lowest tier: groups received and groups missing (holes), objects missing.
    pub low_groups: u64,
    /// Holes in the lowest tier's group IDs.
    pub low_missing_groups: u64,
    /// Holes in the lowest tier's object IDs.
    pub low_missing_objects: u64,
    /// Lowest tier p95 latency, ms.
    pub low_p95: f64,
    /// Received media rate of each video tier as a share of its nominal rate.
    pub tier_share: [f64; 3],
    /// Bytes of objects that arrived with no hole before them in their group, over the
    /// watch, as a share of the link rate (an upper bound on complete-group goodput: a
    /// group's tail lost is not seen).
    pub goodput: f64,
    /// p95 latency over the audio and lowest-tier objects, ms (the worst of the two).
    pub p95: f64,
}

fn track<'a>(r: &'a Report, name: &str) -> &'a TrackReport {
    r.tracks.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name} in {r:?}"))
}

fn free_udp_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local addr")
}

/// Relay with `mode`, publisher on loopback, subscriber behind the emulator with `profile`.
/// Returns the subscriber's report.
pub fn run(mode: &str, profile: &str) -> Report {
    let relay = Relay::start(&["--public", "e2e", "--public-publish", "e2e", "--scheduler", mode])
        .expect("relay");
    let url = relay.url("moqt", "e2e/shaped");
    let _publisher = start_pub("pub", &url, &relay.pin()).expect("publisher");
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
            profile.to_owned(),
            "--seed".to_owned(),
            SEED.to_owned(),
            "--duration".to_owned(),
            "60s".to_owned(),
            "--stats-interval".to_owned(),
            "0".to_owned(),
        ],
    )
    .expect("link");
    link.wait_stdout_prefix(Duration::from_secs(20), "tiermesh link:").expect("link up");
    let mut args = vec![
        format!("moqt://{listen}/e2e/shaped"),
        "--duration".to_owned(),
        format!("{}s", WATCH.as_secs()),
    ];
    args.extend(relay.pin());
    let (report, _ok, proc) = sub_json("sub", &args, WATCH + Duration::from_secs(40)).expect("sub");
    report.unwrap_or_else(|| panic!("no report\n{}", proc.dump()))
}

/// The figures of a report.
pub fn figures(mode: &str, r: &Report, link_rate: f64) -> Figures {
    let secs = r.duration_s.max(1.0);
    let audio = track(r, "audio");
    let low = track(r, TIERS[0].0);
    let lat = |t: &TrackReport, q: fn(&tiermesh_client::report::LatencyMs) -> f64| {
        t.latency_ms.as_ref().map_or(f64::INFINITY, q)
    };
    let mut tier_share = [0.0; 3];
    let mut good_bytes = audio.bytes as f64;
    for (i, (name, rate)) in TIERS.iter().enumerate() {
        let t = track(r, name);
        tier_share[i] = t.bytes as f64 * 8.0 / secs / rate;
        // Bytes of groups with holes are thrown away by a decoder: count a tier's bytes
        // in proportion to its objects that had no hole.
        let whole = if t.objects == 0 {
            0.0
        } else {
            (t.objects.saturating_sub(t.missing_objects)) as f64 / t.objects as f64
        };
        good_bytes += t.bytes as f64 * whole;
    }
    Figures {
        mode: mode.to_owned(),
        audio_delivered: audio.objects as f64 / (AUDIO_PER_S * secs),
        audio_p95: lat(audio, |l| l.p95),
        audio_p99: lat(audio, |l| l.p99),
        low_groups: low.groups,
        low_missing_groups: low.missing_groups,
        low_missing_objects: low.missing_objects,
        low_p95: lat(low, |l| l.p95),
        tier_share,
        goodput: good_bytes * 8.0 / secs / link_rate,
        p95: lat(audio, |l| l.p95).max(lat(low, |l| l.p95)),
    }
}

/// One table row.
pub fn row(profile: &str, f: &Figures) -> String {
    format!(
        "| {profile} | {} | {:.1}% | {:.0} | {:.0} | {}/{} | {} | {:.0} | {:.0}% / {:.0}% / {:.0}% | {:.0}% |",
        f.mode,
        f.audio_delivered * 100.0,
        f.audio_p95,
        f.audio_p99,
        f.low_groups.saturating_sub(f.low_missing_groups),
        f.low_groups,
        f.low_missing_objects,
        f.low_p95,
        f.tier_share[0] * 100.0,
        f.tier_share[1] * 100.0,
        f.tier_share[2] * 100.0,
        f.goodput * 100.0,
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "| link | mode | audio delivered | audio p95 ms | audio p99 ms | 180p groups (no hole in IDs) | 180p objects missing | 180p p95 ms | tier rate 180p / 360p / 720p | goodput of link |\n|---|---|---|---|---|---|---|---|---|---|";

/// The product targets on `rural`, with the tolerances stated in the module docs.
pub fn check_priority(f: &Figures) {
    let slack = 100.0;
    // Audio: 400 ms + one-way delay for 99%; the watch's first and last ~200 ms may cut
    // a few frames, hence 95% delivered rather than 99%.
    assert!(f.audio_delivered >= 0.95, "audio delivered {f:?}");
    assert!(f.audio_p99 <= 400.0 + RURAL_DELAY_MS + slack, "audio p99 {f:?}");
    // The lowest tier arrives whole.
    assert_eq!(f.low_missing_groups, 0, "180p groups {f:?}");
    assert!(f.low_groups >= WATCH.as_secs() - 2, "180p groups {f:?}");
    assert!(f.tier_share[0] >= 0.85, "180p rate {f:?}");
    // p95 latency: one-way delay + 150 ms.
    assert!(f.p95 <= RURAL_DELAY_MS + 150.0 + slack, "p95 {f:?}");
    // The highest tier is what is dropped: it gets much less of its rate than 180p.
    assert!(f.tier_share[2] < 0.5, "720p kept {f:?}");
    assert!(f.tier_share[2] < f.tier_share[0], "720p vs 180p {f:?}");
}

#[test]
#[ignore = "a joining SUBSCRIBE over a lossy link can stay unanswered for the whole watch \
            (docs/BENCHMARKS.md, Shaped links); run with --ignored"]
fn rural_subscriber_priority_beats_fifo() {
    let prio = figures("priority", &run("priority", "rural"), RURAL_RATE);
    let fifo = figures("fifo", &run("fifo", "rural"), RURAL_RATE);
    eprintln!("{HEADER}\n{}\n{}", row("rural", &prio), row("rural", &fifo));
    check_priority(&prio);
    // The scheduler beats FIFO where it matters: audio and the lowest tier on time.
    assert!(prio.p95 < fifo.p95, "p95 priority {prio:?} fifo {fifo:?}");
    assert!(prio.audio_p99 < fifo.audio_p99, "audio p99 priority {prio:?} fifo {fifo:?}");
}
