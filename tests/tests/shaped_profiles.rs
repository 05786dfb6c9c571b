//! The synthetic broadcast to a subscriber behind `congested`, `satellite` and `step` links
//! (priority scheduler). What must hold on each, and why these bounds (figures in
//! docs/BENCHMARKS.md, "Shaped links"):
//!
//! - `congested` (600 kbit/s, 100 ± 30 ms, 3% loss): audio and 180p (about 200 kbit/s with
//!   overhead) fit, 360p only partly. A lost packet costs its stream one round trip
//!   (about 260 ms) before the retransmission, and at 3% loss a few percent of the audio
//!   frames (each on its own stream) pay it: so ≥ 95% of audio within 400 ms + 130 ms (the
//!   delay with its jitter), and ≥ 90% of 180p groups complete.
//! - `satellite` (2 Mbit/s, 300 ms, 0.5% loss): audio, 180p and 360p fit. A loss costs a
//!   600 ms round trip, so a frame hit by one misses 400 ms + 300 ms: ≥ 98% of audio within
//!   it, and ≥ 90% of 180p groups complete.
//! - `step` (3 Mbit/s, 30 ms; 1 Mbit/s for 10 s): all tiers fit outside the cut. Every tier
//!   delivers every group complete again within 3 s of the cut's end.
//!
//! Ignored for now: the last runs missed these bounds (step: audio 92% on time; satellite:
//! audio 29%; congested: audio 81%, 180p 50% complete; docs/BENCHMARKS.md, "Shaped
//! links", says why). Together they take about 80 s.

mod shaped_link;

use std::time::Duration;

use shaped_link::{
    CONGESTED, HEADER, Profile, SATELLITE, STEP, TIERS, figures, recovery_s, row, run,
};

/// The runs of this file take turns: two at once would share the machine's two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn shaped(profile: Profile, watch: Duration) -> (shaped_link::Outcome, shaped_link::Figures) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = shaped_link::Run::new(profile);
    r.watch = watch;
    if profile.name == "step" {
        r.link_run = Duration::from_secs(30);
    }
    let o = run(&r);
    let f = figures(&o);
    eprintln!("{HEADER}\n{}", row(&o, &f));
    (o, f)
}

#[test]
#[ignore = "misses its bounds today (docs/BENCHMARKS.md, Shaped links)"]
fn congested_keeps_audio_and_lowest_tier() {
    let (_, f) = shaped(CONGESTED, Duration::from_secs(15));
    assert!(f.audio_on_time >= 0.95, "audio {f:?}");
    assert!(f.low_complete >= 0.90, "180p {f:?}");
    assert!(f.tier_share[2] <= 0.2, "720p kept {f:?}");
}

#[test]
#[ignore = "misses its bounds today (docs/BENCHMARKS.md, Shaped links)"]
fn satellite_keeps_audio_and_lowest_tier() {
    let (_, f) = shaped(SATELLITE, Duration::from_secs(15));
    assert!(f.audio_on_time >= 0.98, "audio {f:?}");
    assert!(f.low_complete >= 0.90, "180p {f:?}");
}

#[test]
#[ignore = "misses its bounds today (docs/BENCHMARKS.md, Shaped links)"]
fn step_every_tier_is_back_within_3_s() {
    // The cut is 10 s to 20 s after the link starts; the watch ends about 26 s after it.
    let (o, f) = shaped(STEP, Duration::from_secs(25));
    assert!(f.audio_on_time >= 0.99, "audio {f:?}");
    for (tier, _) in TIERS {
        let back = recovery_s(&o, tier);
        assert!(back.is_some_and(|s| s <= 3.0), "{tier} back after {back:?} s: {f:?}");
    }
}
