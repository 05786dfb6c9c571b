//! The synthetic broadcast from a publisher behind `congested`, `satellite` and `step` links
//! (priority scheduler; a patient's uplink): audio and the lowest tier stay within the
//! bounds below, and after the `step` cut every tier is back within 3 s. As in
//! `shaped_profiles.rs` (the subscriber behind the same links) the three runs go at once,
//! each with its own relay, link and publisher (about 26 s in all). Figures, FIFO beside
//! them, and how they were measured: docs/BENCHMARKS.md, "Shaped links", "congested,
//! satellite, step — publisher behind the link".
//!
//! **Start-up.** With the publisher behind a link narrower than the broadcast (`congested`
//! 600 kbit/s, `satellite` 2 Mbit/s against 2.2 Mbit/s), the relay subscribes upstream with
//! a joining FETCH of the current group. It answers a track's subscribers as soon as that
//! SUBSCRIBE and FETCH are answered, and a subscriber's joining fetch passes the upstream
//! fetch's objects on as they reach the relay (44ed93d, 0c2779e). The subscriber's 180p first
//! arrives 0.24-0.71 s after its catalog on `congested` and 0.62-1.27 s on `satellite` (0.3-0.6
//! s with the subscriber behind the same links; seven runs each, docs/BENCHMARKS.md: the
//! slower `satellite` runs come a round trip later, the publisher answering the tracks'
//! requests in two rounds). The first 180p group is not whole sooner on `congested`: the
//! fetch is one QUIC stream, each lost packet holds its rest back for a loss-recovery round
//! (about 0.5 s), and its last object comes 0.92-1.68 s after the catalog. Before 44ed93d the
//! relay answered only once the fetch had filled its cache, or after 2 s, and video started
//! 1.3-2.9 s after the catalog; on `congested` the 180p groups captured in the next 2-4 s were
//! then lost or cut as well (up to 6.4 s into the watch). The bounds below were measured
//! then: over the whole watch they allow that start-up, and tighter ones hold over what was
//! captured from [`SETTLED`] after the watch's first arrival on.
//!
//! Bounds and why ("measured": seventeen runs of this test, twelve at 3749b58 and five at
//! 6af5d8d, eight of them with one or two CPU-bound loops beside them; figures as
//! `shaped_link/mod.rs` defines them):
//! - `congested` (600 kbit/s, 100 ± 30 ms, 3% loss): audio and 180p (about 200 kbit/s with
//!   overhead) fit, 360p only partly, 720p not. Over the watch: audio ≥ 85% within 400 + 100
//!   ms (the start-up costs up to 2 s of the first 4: measured 89.8-99.4%), ≥ 90% from 2 s
//!   after the first frame (measured 93.7-99.8%); 180p ≥ 30% of groups whole (measured 5/11
//!   to 11/11: 0-6 groups lost or cut in the start-up; what 180p is held to is the settled
//!   bound below) and ≥ 40% of its rate (measured 50-91%); 720p under 10% of its rate
//!   (measured 0%). Settled: at 3% loss a few audio frames pay a 260 ms retransmission round
//!   trip, some twice, and a burst of losses costs 5-10 frames: ≥ 92% on time, as over the
//!   whole watch with the subscriber behind the link (measured 96.1-100%); at most two 180p
//!   groups not whole (measured 0 or 1 of 6-7).
//! - `satellite` (2 Mbit/s, 300 ms, 0.5% loss): audio, 180p and 360p fit. Over the watch:
//!   audio ≥ 85% within 400 + 300 ms (measured 92.5-99.6%), ≥ 96% from 2 s after the first
//!   frame (a loss costs a frame a 600 ms round trip; measured 98.7-100%); 180p ≥ 60% of
//!   groups whole (measured 7/10 to 10/10) and ≥ 55% of its rate (measured 65-85%: the first
//!   1.3-2.9 s bring no video). Settled: audio ≥ 95% (measured 99.1-100%), at most two 180p
//!   groups not whole (measured 0 or 1 of 5-6).
//! - `step` (3 Mbit/s, 30 ms; 1 Mbit/s for 10 s): the broadcast fits outside the cut, video
//!   starts 0.3-0.9 s after the catalog and there is no start-up loss. Every tier delivers
//!   every group whole again within 3 s of the cut's end (measured: 720p −0.5 to +1.1 s, 360p
//!   at −1.1 s or earlier, 180p never stopped), and audio ≥ 95% on time (during the cut it
//!   waits in the link's 300 ms queue behind what cubic keeps in it: p95 307-315 ms under
//!   `--cc cubic`, 170-199 ms under `delay`, the default; measured 99.9-100%).

mod shaped_link;

use std::time::Duration;

use shaped_link::{
    CONGESTED, Figures, Outcome, SATELLITE, STEP, Side, TAIL, TIERS, profile_run, recovery_s,
    run_at_once,
};
use tiermesh_client::subscribe::GroupRecord;

/// What is captured from this long after the watch's first arrival on is past the
/// publisher-side start-up (before 44ed93d: the 2 s wait for the upstream joining fetch, a
/// round trip, and the 2-4 s after it: the last start-up loss measured then was captured
/// 6.4 s in, so one start-up loss can still fall in the settled part).
const SETTLED: Duration = Duration::from_secs(6);

/// Groups of `track` (IDs are capture time / `group_ms`) captured from [`SETTLED`] after the
/// watch's first arrival until [`TAIL`] before its last: (those `ok` accepts, all of them).
fn settled(
    o: &Outcome,
    track: &str,
    group_ms: f64,
    ok: impl Fn(&GroupRecord) -> bool,
) -> (usize, usize) {
    let arrivals = o.out.groups.iter().flat_map(|t| t.groups.iter());
    let first = arrivals.clone().map(|g| g.first_ms).fold(f64::INFINITY, f64::min);
    let last = arrivals.map(|g| g.last_ms).fold(0.0, f64::max);
    let lo = ((first + SETTLED.as_secs_f64() * 1000.0) / group_ms).ceil() as u64;
    let hi = ((last - TAIL.as_secs_f64() * 1000.0) / group_ms).floor() as u64;
    let Some(t) = o.out.groups.iter().find(|t| t.name == track) else { return (0, 0) };
    let good = t.groups.iter().filter(|g| g.group >= lo && g.group < hi && ok(g)).count();
    (good, hi.saturating_sub(lo) as usize)
}

/// What `o` misses of its profile's bounds, one line each.
fn check(o: &Outcome, f: &Figures) -> Vec<String> {
    let delay = o.run.profile.delay_ms;
    let (audio_ok, audio_n) =
        settled(o, "audio", 20.0, |g| g.capture_ms.is_some_and(|c| g.last_ms - c <= 400.0 + delay));
    let (low_ok, low_n) = settled(o, TIERS[0].0, 1000.0, |g| g.complete);
    let settled_audio = audio_ok as f64 / audio_n.max(1) as f64;
    eprintln!(
        "{}: settled (from {SETTLED:?} in): audio {audio_ok}/{audio_n} on time, 180p {low_ok}/{low_n} whole",
        o.run.profile.name
    );
    let mut miss = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            miss.push(format!("{}: {what} ({f:?})", o.run.profile.name));
        }
    };
    match o.run.profile.name {
        "congested" | "satellite" => {
            let congested = o.run.profile.name == "congested";
            let (audio, steady, low, low_rate) =
                if congested { (0.85, 0.90, 0.30, 0.40) } else { (0.85, 0.96, 0.60, 0.55) };
            need(f.audio_on_time >= audio, &format!("audio on time < {audio}"));
            need(f.audio_on_time_steady >= steady, &format!("audio after start-up < {steady}"));
            need(f.low_complete >= low, &format!("180p groups complete < {low}"));
            need(f.tier_share[0] >= low_rate, &format!("180p rate < {low_rate}"));
            if congested {
                need(f.tier_share[2] <= 0.10, "720p kept");
            }
            let settled_min = if congested { 0.92 } else { 0.95 };
            need(
                audio_n >= 100 && settled_audio >= settled_min,
                &format!("settled audio on time < {settled_min}"),
            );
            need(low_n >= 4 && low_ok + 2 >= low_n, "settled: more than two 180p groups not whole");
        }
        _ => {
            need(f.audio_on_time >= 0.95, "audio on time < 95%");
            for (tier, _) in TIERS {
                let back = recovery_s(o, tier);
                need(back.is_some_and(|s| s <= 3.0), &format!("{tier} back after {back:?} s"));
            }
        }
    }
    miss
}

#[test]
fn publisher_behind_congested_satellite_and_step_keeps_audio_and_lowest_tier() {
    let outcomes = run_at_once(
        [CONGESTED, SATELLITE, STEP].into_iter().map(|p| profile_run(p, Side::Publisher)).collect(),
    );
    let misses: Vec<String> = outcomes.iter().flat_map(|(o, f)| check(o, f)).collect();
    assert!(misses.is_empty(), "{misses:#?}");
}
