//! The product's core promise on a `rural` link (1 Mbit/s, 60 ms one-way, 1% loss): the
//! synthetic broadcast (2.2 Mbit/s) cannot fit, so the highest tier goes while audio and the
//! lowest tier arrive whole and on time. Once with the subscriber behind the link (the
//! relay's scheduler decides), once with the publisher behind it (the publisher's scheduler
//! decides: a patient's uplink). Figures and their definitions: `shaped_link/mod.rs`.
//!
//! Asserted, on both sides, in CI (both runs together about 31 s): audio ≥ 99% within
//! 400 ms + one-way delay after start-up (the first 2 s) and ≥ 95% over the whole watch
//! (the target is 99% over the whole watch: on the publisher side the first second of a
//! new connection cost 3.5% of the frames in 1 of 3 runs, 100% after it), ≥ 90% of the
//! lowest tier's groups complete (the target is 95%; see `check`), and the highest tier
//! is what is dropped (720p gets at most 30% of its rate while 180p gets 80% and 360p 60%
//! of theirs over the watch). Measured after 48c6af4, three runs per side: audio 100% after
//! start-up, 180p 12/12, 12/12, 12/12 (subscriber) and 10/10, 12/12, 12/12 (publisher).
//!
//! Also asserted: goodput ≥ 70% of the link rate (whole groups that arrived live, captured
//! in the span the other figures use, over that span: `shaped_link/mod.rs`; 74.8% when
//! every group of audio, 180p and 360p is whole). With the default controller, `delay`,
//! 70.2-74.8% in 34 of 34 runs and 74.8% in every `rural` run since its in-flight bound;
//! with `--cc cubic` 54.8-74.8%, under 70% in 28 of 44 runs, as after random losses its
//! window falls below the path's and 360p groups pass the capture-age budget
//! (docs/BENCHMARKS.md, "Goodput on rural").
//!
//! Printed, not asserted (docs/BENCHMARKS.md, "Shaped links", says why): p95 of every media
//! object ≤ one-way delay + 150 ms. With `delay`, 174-199 ms in 8 of 8 runs on a quiet
//! machine since it bounds what it has in flight (docs/BENCHMARKS.md, "rural p95: faster
//! loss detection and an in-flight bound"), but it swings above 210 ms on a busy one, where
//! the processes' own scheduling adds to every round trip; with `--cc cubic` 332-582 ms in
//! 12 runs (the link's 100 ms queue stays full under a loss-based controller).
//! The FIFO baseline runs in `examples/shaped.rs` (docs/BENCHMARKS.md), not here.

mod shaped_link;

use shaped_link::{Figures, HEADER, RURAL, Run, Side, figures, row, run};

/// The runs of this file take turns: two at once would share the machine's two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(f: &Figures) {
    assert!(f.audio_on_time_steady >= 0.99, "audio on time after start-up {f:?}");
    assert!(f.audio_on_time >= 0.95, "audio on time {f:?}");
    // The target is 95%, but over the 12 groups of one CI watch a single group whose last
    // frame is retransmitted after the next group started (and so dropped as stale) reads
    // as 92%: seen in 1 of 4 runs. CI asserts at most one such group; the target's figure is
    // printed above and tracked in docs/BENCHMARKS.md.
    assert!(f.low_complete >= 0.9, "lowest tier complete {f:?}");
    // The highest tier is what goes: it gets a small share of its rate, the lowest tier
    // nearly all of its own, the middle one most of its own. (Shares are over the whole
    // watch, whose first second has no video yet: 100% of the rate reads as about 93%.)
    assert!(f.tier_share[0] >= 0.8, "180p rate {f:?}");
    assert!(f.tier_share[1] >= 0.6, "360p rate {f:?}");
    assert!(f.tier_share[2] <= 0.3, "720p kept {f:?}");
    // The goodput target, met by the default controller (`delay`): 74.8% in every
    // `rural` run since its in-flight bound, 70.2% the least seen before it. Under
    // `--cc cubic` this fails in most runs (docs/BENCHMARKS.md, "Goodput on rural").
    assert!(f.goodput >= 0.70, "goodput {f:?}");
}

fn shaped(side: Side) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = Run::new(RURAL);
    r.side = side;
    let outcome = run(&r);
    let f = figures(&outcome);
    eprintln!("{HEADER}\n{}", row(&outcome, &f));
    check(&f);
}

#[test]
fn rural_subscriber_keeps_audio_and_lowest_tier() {
    shaped(Side::Subscriber);
}

#[test]
fn rural_publisher_keeps_audio_and_lowest_tier() {
    shaped(Side::Publisher);
}
