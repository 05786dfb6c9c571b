//! Unit tests of the scheduler's rules, on virtual time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_proto::priority::SendOrder;
use tiermesh_proto::types::GroupOrder::{self, Ascending, Descending};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A budget that allows `bytes` now and knows no rate.
fn budget(bytes: u64) -> SendBudget {
    // cwnd 0 makes the headroom its minimum (4 KiB); subtract it so `bytes` is the allowance.
    SendBudget {
        cwnd: 0,
        cwnd_available: bytes.saturating_sub(DEFAULT_HEADROOM_MIN),
        buffered: DEFAULT_HEADROOM_MIN.saturating_sub(bytes),
        send_rate_bps: 0,
    }
}

fn unlimited() -> SendBudget {
    SendBudget { cwnd: 1 << 30, cwnd_available: 1 << 30, buffered: 0, send_rate_bps: 0 }
}

fn drain(s: &mut Scheduler, now: Instant, b: &mut SendBudget) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(a) = s.poll_send(now, b) {
        out.push(a);
        assert!(out.len() < 100_000, "poll_send never returned None");
    }
    out
}

fn obj(at: Instant, len: usize) -> Object {
    Object::new(at, Bytes::from_static(&[0xAA; 4]), Bytes::from(vec![7u8; len]))
}

fn written_keys(actions: &[Action]) -> Vec<u64> {
    let mut keys: Vec<u64> = Vec::new();
    for a in actions {
        if let Action::Write { key, .. } = a
            && keys.last() != Some(&key.0)
        {
            keys.push(key.0);
        }
    }
    keys
}

fn written_bytes(actions: &[Action], key: u64) -> usize {
    actions
        .iter()
        .map(|a| match a {
            Action::Write { key: k, chunk, .. } if k.0 == key => chunk.len(),
            _ => 0,
        })
        .sum()
}

fn video(track: u64, tier: u8, group: u64) -> StreamSpec {
    StreamSpec::new(TrackKey(track), TrackClass::Video { tier }, group, 0)
        .priority(128, 32 + 16 * tier)
        .group_order(Descending)
        .delivery_timeout(Some(ms(1000)))
}

fn audio(track: u64, group: u64) -> StreamSpec {
    StreamSpec::new(TrackKey(track), TrackClass::Audio, group, 0)
        .priority(128, 16)
        .group_order(Descending)
        .delivery_timeout(Some(ms(400)))
}

/// The quinn mapping sends first what the draft sends first, strictly across priority
/// levels, and gives streams the draft does not order (equal priorities) equal values.
#[test]
fn quinn_priority_inverts_the_draft_order_and_keeps_ties() {
    let prios = [0u8, 1, 16, 32, 127, 128, 129, 254, 255];
    let mut orders = Vec::new();
    for &s in &prios {
        for &p in &prios {
            for g in [0u64, 5, 1 << 40] {
                for order in [Ascending, Descending] {
                    orders.push(SendOrder::subgroup(s, p, order, g, g % 3));
                }
            }
        }
    }
    orders.sort();
    for w in orders.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (qa, qb) = (quinn_priority(a), quinn_priority(b));
        assert!(qa >= qb, "{a:?} goes first in the draft but has lower quinn priority");
        let same_level = (a.subscriber_priority(), a.publisher_priority())
            == (b.subscriber_priority(), b.publisher_priority());
        if same_level {
            assert_eq!(qa, qb, "tie not preserved");
        } else {
            assert!(qa > qb, "levels must map strictly");
        }
    }
    // The product's defaults: catalog > audio > base tier > higher tiers.
    let q = |p| quinn_priority(&SendOrder::subgroup(128, p, Descending, 0, 0));
    assert!(q(0) > q(16) && q(16) > q(32) && q(32) > q(48) && q(48) > q(64));
    // The subscriber priority dominates.
    let urgent = quinn_priority(&SendOrder::subgroup(0, 255, Ascending, 0, 0));
    assert!(urgent > quinn_priority(&SendOrder::subgroup(1, 0, Ascending, 0, 0)));
}

/// With room for only part of the queue, the catalog goes first, then audio, then the
/// video tiers from the lowest (most important) up.
#[test]
fn draft_order_catalog_audio_then_tiers_from_the_base_up() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(4), video(4, 2, 1)).unwrap();
    s.open_stream(StreamKey(3), video(3, 0, 1)).unwrap();
    s.open_stream(StreamKey(2), audio(2, 1)).unwrap();
    s.open_stream(
        StreamKey(1),
        StreamSpec::new(TrackKey(1), TrackClass::Catalog, 0, 0).priority(128, 0),
    )
    .unwrap();
    for k in [4, 3, 2, 1] {
        s.push_object(StreamKey(k), obj(t0, 1000)).unwrap();
    }
    let actions = drain(&mut s, t0, &mut unlimited());
    assert_eq!(written_keys(&actions), [1, 2, 3, 4]);
}

/// Descending group order (the product's default) sends the newer group first; a
/// subscription that asked for Ascending gets the older group first.
#[test]
fn group_order_of_each_subscription_is_honoured() {
    for (order, expect) in [(Descending, [11, 10]), (Ascending, [10, 11])] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for (key, group) in [(10, 5), (11, 6)] {
            let spec = video(1, 0, group).group_order(order).drop_stale(false);
            s.open_stream(StreamKey(key), spec).unwrap();
            s.push_object(StreamKey(key), obj(t0, 500)).unwrap();
        }
        let actions = drain(&mut s, t0, &mut unlimited());
        assert_eq!(written_keys(&actions), expect, "{order:?}");
    }
}

/// Two tracks of equal priority with very different object sizes get within 10% of each
/// other's bytes while both have data waiting.
#[test]
fn equal_priority_tracks_share_the_link_fairly() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let spec = |t| {
        StreamSpec::new(TrackKey(t), TrackClass::Other, 0, 0)
            .priority(128, 64)
            .group_order(Ascending)
    };
    s.open_stream(StreamKey(1), spec(1)).unwrap();
    s.open_stream(StreamKey(2), spec(2)).unwrap();
    for _ in 0..400 {
        s.push_object(StreamKey(1), obj(t0, 900)).unwrap();
    }
    for _ in 0..60 {
        s.push_object(StreamKey(2), obj(t0, 7000)).unwrap();
    }
    let (mut a, mut b) = (0usize, 0usize);
    // 100 rounds of 2500 bytes: 250 kB, less than either backlog (360 kB and 420 kB).
    for i in 0..100 {
        let now = t0 + ms(i);
        let actions = drain(&mut s, now, &mut budget(2500));
        a += written_bytes(&actions, 1);
        b += written_bytes(&actions, 2);
    }
    let ratio = a as f64 / b as f64;
    println!("fair share: track A {a} bytes, track B {b} bytes, ratio {ratio:.3}");
    assert!((0.9..=1.1).contains(&ratio), "A {a} B {b}");
}

/// An object whose delivery timeout passes before it gets any bandwidth is never started:
/// its stream is abandoned without a byte, counted, and the subgroup cannot be reopened.
#[test]
fn late_object_is_never_started() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), audio(1, 9).header(Bytes::from_static(b"hdr"))).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100)).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + ms(400)));
    // No budget until the deadline.
    assert_eq!(s.poll_send(t0 + ms(399), &mut budget(0)), None);
    let actions = drain(&mut s, t0 + ms(400), &mut unlimited());
    assert_eq!(
        actions,
        [Action::Abandon { key: StreamKey(1), reason: DropReason::DeliveryTimeout }]
    );
    assert_eq!(s.stats().dropped(TrackClass::Audio, DropReason::DeliveryTimeout).objects, 1);
    assert_eq!(s.stats().written_bytes, 0);
    assert_eq!(s.queued_bytes(), 0);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.push_object(StreamKey(1), obj(t0, 1)), Err(Error::UnknownStream(StreamKey(1))));
    assert!(matches!(
        s.open_stream(StreamKey(2), audio(1, 9)),
        Err(Error::SubgroupAbandoned { group: 9, subgroup: 0, .. })
    ));
}

/// An object that expires half written resets its stream with DELIVERY_TIMEOUT; nothing
/// more is written for it and the rest of the subgroup is dropped with it.
#[test]
fn object_expiring_mid_send_resets_its_stream() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 3)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 50_000)).unwrap();
    s.push_object(StreamKey(1), obj(t0 + ms(30), 2_000)).unwrap();
    let first = drain(&mut s, t0 + ms(30), &mut budget(10_000));
    assert!(written_bytes(&first, 1) >= 9_000, "started");
    assert_eq!(s.poll_timeout(), Some(t0 + ms(1000)));
    s.handle_timeout(t0 + ms(999));
    let later = drain(&mut s, t0 + ms(1000), &mut unlimited());
    assert_eq!(
        later,
        [Action::Reset {
            key: StreamKey(1),
            code: reset_code::DELIVERY_TIMEOUT,
            reason: DropReason::DeliveryTimeout
        }]
    );
    let v0 = TrackClass::Video { tier: 0 };
    assert_eq!(s.stats().dropped(v0, DropReason::DeliveryTimeout).objects, 1);
    assert_eq!(s.stats().dropped(v0, DropReason::StreamReset).objects, 1);
    assert_eq!(s.stats().resets, 1);
    assert_eq!(s.queued_bytes(), 0);
}

/// With a known send rate, an object that cannot leave before its deadline is not
/// started, even though its deadline has not passed yet.
#[test]
fn object_that_cannot_make_its_deadline_is_not_started() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), audio(1, 1)).unwrap();
    // 100 kB at 1 Mbit/s takes 800 ms; the timeout is 400 ms.
    s.push_object(StreamKey(1), obj(t0, 100_000)).unwrap();
    s.open_stream(StreamKey(2), audio(1, 2)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 1_000)).unwrap();
    let mut b = unlimited();
    b.send_rate_bps = 1_000_000;
    let actions = drain(&mut s, t0, &mut b);
    assert!(
        actions
            .contains(&Action::Abandon { key: StreamKey(1), reason: DropReason::DeliveryTimeout })
    );
    assert_eq!(written_bytes(&actions, 1), 0);
    assert_eq!(written_bytes(&actions, 2), 1_004, "the small one fits and goes");
}

/// The deadline check counts only what QUIC holds unsent of the object's own level and
/// those above it (quinn sends those first): audio behind a window's worth of video is
/// still started, video behind the same bytes is not.
#[test]
fn audio_is_not_held_to_the_video_queued_in_quic() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    // 200 kB of 720p written: at 2 Mbit/s, 800 ms to send.
    s.open_stream(StreamKey(1), video(1, 2, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 200_000)).unwrap();
    let mut b = unlimited();
    assert_eq!(written_bytes(&drain(&mut s, t0, &mut b), 1), 200_004);
    // Nothing of it has left yet; audio (400 ms) and another 720p frame (1 s) arrive.
    let mut b = SendBudget { buffered: 200_004, send_rate_bps: 2_000_000, ..unlimited() };
    s.open_stream(StreamKey(2), audio(2, 1)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 120)).unwrap();
    s.open_stream(StreamKey(3), video(1, 2, 2)).unwrap();
    s.push_object(StreamKey(3), obj(t0, 60_000)).unwrap();
    let actions = drain(&mut s, t0, &mut b);
    assert_eq!(written_bytes(&actions, 2), 124, "audio goes");
    assert!(
        actions
            .contains(&Action::Abandon { key: StreamKey(3), reason: DropReason::DeliveryTimeout }),
        "{actions:?}"
    );
}

/// Objects past the end-to-end capture-age budget are dropped: at once if already too old
/// on arrival, or when their age would pass it while they wait.
#[test]
fn capture_age_budget_drops_objects() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100).capture_age(ms(900))).unwrap();
    assert_eq!(
        drain(&mut s, t0, &mut unlimited()),
        [Action::Abandon { key: StreamKey(1), reason: DropReason::CaptureAge }]
    );

    s.open_stream(StreamKey(2), video(1, 0, 2)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 100).capture_age(ms(700))).unwrap();
    // 800 - 700 = 100 ms left, earlier than the 1 s delivery timeout.
    assert_eq!(s.poll_timeout(), Some(t0 + ms(100)));
    assert_eq!(s.poll_send(t0 + ms(50), &mut budget(0)), None);
    assert_eq!(
        drain(&mut s, t0 + ms(100), &mut unlimited()),
        [Action::Abandon { key: StreamKey(2), reason: DropReason::CaptureAge }]
    );
    let v0 = TrackClass::Video { tier: 0 };
    assert_eq!(s.stats().dropped(v0, DropReason::CaptureAge).objects, 2);

    // A budget of None turns the check off.
    let mut s = Scheduler::new(SchedulerConfig::default().capture_age_budget(None));
    s.open_stream(StreamKey(1), video(1, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100).capture_age(ms(900))).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, t0, &mut unlimited()), 1), 104);
}

/// Without any delivery timeout the draft says every object is delivered: no age, capture
/// age or staleness drops it.
#[test]
fn without_delivery_timeout_nothing_is_dropped() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let spec = |g| video(1, 0, g).delivery_timeout(None);
    s.open_stream(StreamKey(1), spec(1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100).capture_age(ms(5000))).unwrap();
    s.open_stream(StreamKey(2), spec(2)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 100)).unwrap();
    assert_eq!(s.poll_timeout(), None);
    let actions = drain(&mut s, t0 + ms(60_000), &mut unlimited());
    assert_eq!(written_keys(&actions), [2, 1]);
    assert_eq!(s.stats().drops().count(), 0);
}

/// Once a newer group of a video track has started, the older group's objects that have
/// waited 100 ms are not started (its stream is reset); an audio track keeps every group.
#[test]
fn stale_video_groups_are_dropped_but_audio_groups_are_not() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 5)).unwrap();
    for _ in 0..3 {
        s.push_object(StreamKey(1), obj(t0, 3000)).unwrap();
    }
    // One object's worth goes out; then the next group arrives.
    let first = drain(&mut s, t0, &mut budget(3004));
    assert_eq!(written_bytes(&first, 1), 3004);
    s.open_stream(StreamKey(2), video(1, 0, 6)).unwrap();
    s.push_object(StreamKey(2), obj(t0 + ms(10), 3000)).unwrap();
    let actions = drain(&mut s, t0 + ms(100), &mut unlimited());
    assert_eq!(written_keys(&actions), [2]);
    assert!(actions.contains(&Action::Reset {
        key: StreamKey(1),
        code: reset_code::DELIVERY_TIMEOUT,
        reason: DropReason::Stale
    }));
    assert_eq!(s.stats().dropped(TrackClass::Video { tier: 0 }, DropReason::Stale).objects, 2);

    // A subscription in Ascending order keeps every group.
    s.open_stream(StreamKey(20), video(5, 0, 1).group_order(Ascending)).unwrap();
    s.push_object(StreamKey(20), obj(t0 + ms(10), 100)).unwrap();
    let _ = drain(&mut s, t0 + ms(10), &mut unlimited());
    s.push_object(StreamKey(20), obj(t0 + ms(11), 100)).unwrap();
    s.open_stream(StreamKey(21), video(5, 0, 2).group_order(Ascending)).unwrap();
    s.push_object(StreamKey(21), obj(t0 + ms(12), 100)).unwrap();
    let first = drain(&mut s, t0 + ms(12), &mut budget(104));
    assert_eq!(written_keys(&first), [20], "Ascending: the older group first");
    let second = drain(&mut s, t0 + ms(12), &mut unlimited());
    assert_eq!(written_keys(&second), [21], "then the newer group starts");
    s.push_object(StreamKey(20), obj(t0 + ms(13), 100)).unwrap();
    let actions = drain(&mut s, t0 + ms(13), &mut unlimited());
    assert_eq!(written_bytes(&actions, 20), 104, "{actions:?}");
    assert_eq!(s.stats().dropped(TrackClass::Video { tier: 0 }, DropReason::Stale).objects, 2);

    // Audio: a burst of three single-frame groups all goes out, newest first.
    for g in 1..=3 {
        s.open_stream(StreamKey(10 + g), audio(9, g)).unwrap();
        s.push_object(StreamKey(10 + g), obj(t0, 80)).unwrap();
    }
    let actions = drain(&mut s, t0 + ms(20), &mut unlimited());
    assert_eq!(written_keys(&actions), [13, 12, 11]);
}

/// The tail of an older group held back only briefly (under 100 ms) still goes, after the
/// newer group's head: the group stays whole.
#[test]
fn a_briefly_held_tail_of_an_older_group_still_goes() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 5)).unwrap();
    for _ in 0..3 {
        s.push_object(StreamKey(1), obj(t0, 500)).unwrap();
    }
    s.finish_stream(StreamKey(1)).unwrap();
    let first = drain(&mut s, t0, &mut budget(504));
    assert_eq!(written_bytes(&first, 1), 504);
    s.open_stream(StreamKey(2), video(1, 0, 6)).unwrap();
    s.push_object(StreamKey(2), obj(t0 + ms(40), 3000)).unwrap();
    let actions = drain(&mut s, t0 + ms(50), &mut unlimited());
    assert_eq!(written_keys(&actions), [2, 1], "newest first, then the held tail");
    assert_eq!(written_bytes(&actions, 1), 1008);
    assert!(actions.contains(&Action::Finish { key: StreamKey(1) }), "{actions:?}");
    assert_eq!(s.stats().drops().count(), 0);
}

/// What the scheduler hands out in one wake-up never exceeds what the window can take plus
/// the headroom, no single write exceeds the quantum, and `buffered` counts it all.
#[test]
fn budget_bounds_what_reaches_quic() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config.clone());
    s.open_stream(StreamKey(1), video(1, 2, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 500_000)).unwrap();
    let mut b =
        SendBudget { cwnd: 100_000, cwnd_available: 30_000, buffered: 5_000, send_rate_bps: 0 };
    let allowed = 30_000 + 25_000 - 5_000;
    assert_eq!(b.allowance(&config), allowed);
    let actions = drain(&mut s, t0, &mut b);
    let total = written_bytes(&actions, 1) as u64;
    assert!(total <= allowed && total + MIN_WRITE > allowed, "wrote {total} of {allowed}");
    assert!(actions.iter().all(|a| match a {
        Action::Write { chunk, .. } => chunk.len() as u64 <= DEFAULT_QUANTUM,
        _ => false,
    }));
    assert_eq!(b.buffered, 5_000 + total);
    // Headroom never below its minimum.
    assert_eq!(config.get_headroom(1000), DEFAULT_HEADROOM_MIN);
}

/// FIFO mode writes objects whole in arrival order across streams, with one quinn priority,
/// and never drops, however late.
#[test]
fn fifo_keeps_arrival_order_and_never_drops() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default().mode(Mode::Fifo));
    s.open_stream(StreamKey(1), video(1, 2, 1)).unwrap();
    s.open_stream(StreamKey(2), audio(2, 1)).unwrap();
    s.open_stream(StreamKey(3), video(3, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 20_000)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 80).capture_age(ms(5000))).unwrap();
    s.push_object(StreamKey(3), obj(t0, 1000)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100)).unwrap();
    for k in 1..=3 {
        s.finish_stream(StreamKey(k)).unwrap();
    }
    assert_eq!(s.poll_timeout(), None);
    let actions = drain(&mut s, t0 + ms(10_000), &mut unlimited());
    assert_eq!(written_keys(&actions), [1, 2, 3, 1]);
    assert!(actions.iter().all(|a| match a {
        Action::Write { quinn_priority, .. } => *quinn_priority == 0,
        Action::Finish { .. } => true,
        _ => false,
    }));
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::Finish { .. })).count(), 3);
    assert_eq!(s.stats().drops().count(), 0);
    assert_eq!(s.open_streams(), 0);
}

/// A stream the transport cannot take more of is skipped; the bytes handed back go first
/// once it is writable again, and the stream then finishes normally.
#[test]
fn blocked_stream_is_skipped_then_resumed_with_its_rest() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), audio(1, 1)).unwrap();
    s.open_stream(StreamKey(2), video(2, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 96)).unwrap();
    s.finish_stream(StreamKey(1)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 500)).unwrap();
    let Some(Action::Write { key, chunk, .. }) = s.poll_send(t0, &mut unlimited()) else {
        panic!("expected a write");
    };
    assert_eq!(key, StreamKey(1));
    // The first chunk is the 4-byte object header; the transport took 1 byte of it.
    assert_eq!(chunk.len(), 4);
    s.handle_blocked(key, chunk.slice(1..)).unwrap();
    let actions = drain(&mut s, t0, &mut unlimited());
    assert_eq!(written_keys(&actions), [2]);
    s.handle_unblocked(StreamKey(1)).unwrap();
    let actions = drain(&mut s, t0, &mut unlimited());
    assert_eq!(written_bytes(&actions, 1), 3 + 96);
    assert_eq!(actions.last(), Some(&Action::Finish { key: StreamKey(1) }));
}

/// A stream finishes only after its last byte; a subgroup with a header and no object
/// still goes out as header plus FIN.
#[test]
fn finish_follows_the_last_write_and_empty_subgroups_send_their_header() {
    let t0 = Instant::now();
    for mode in [Mode::Priority, Mode::Fifo] {
        let mut s = Scheduler::new(SchedulerConfig::default().mode(mode));
        let hdr = Bytes::from_static(b"HEADER");
        s.open_stream(StreamKey(1), video(1, 0, 1).header(hdr.clone())).unwrap();
        s.push_object(StreamKey(1), obj(t0, 10)).unwrap();
        s.finish_stream(StreamKey(1)).unwrap();
        s.open_stream(StreamKey(2), video(2, 0, 1).header(hdr.clone())).unwrap();
        s.finish_stream(StreamKey(2)).unwrap();
        let actions = drain(&mut s, t0, &mut unlimited());
        let pos = |a: &Action| actions.iter().position(|x| x == a).unwrap();
        let fin1 = pos(&Action::Finish { key: StreamKey(1) });
        let fin2 = pos(&Action::Finish { key: StreamKey(2) });
        let last_write1 = actions
            .iter()
            .rposition(|a| matches!(a, Action::Write { key: StreamKey(1), .. }))
            .unwrap();
        assert!(fin1 > last_write1, "{mode:?}");
        assert_eq!(written_bytes(&actions, 1), 6 + 14, "{mode:?}");
        assert_eq!(written_bytes(&actions, 2), 6, "{mode:?}");
        assert!(fin2 > 0);
    }
}

/// REQUEST_UPDATE raising a subscription's priority moves its queued objects ahead.
#[test]
fn subscriber_priority_update_reorders_queued_objects() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), audio(1, 1)).unwrap();
    s.open_stream(StreamKey(2), video(2, 2, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 100)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 100)).unwrap();
    s.set_subscriber_priority(TrackKey(2), 10);
    let actions = drain(&mut s, t0, &mut unlimited());
    assert_eq!(written_keys(&actions), [2, 1]);
    let Some(Action::Write { quinn_priority: q, .. }) = actions.first() else { panic!() };
    assert_eq!(*q, quinn_priority(&SendOrder::subgroup(10, 64, Descending, 1, 0)));
}

/// Cancelling resets a started stream with CANCELLED and abandons an unstarted one;
/// removing a track cancels all its streams.
#[test]
fn cancel_and_remove_track() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 10_000)).unwrap();
    let _ = drain(&mut s, t0, &mut budget(2000));
    s.cancel_stream(StreamKey(1)).unwrap();
    assert_eq!(
        drain(&mut s, t0, &mut budget(0)),
        [Action::Reset {
            key: StreamKey(1),
            code: reset_code::CANCELLED,
            reason: DropReason::Cancelled
        }]
    );
    s.open_stream(StreamKey(2), video(2, 0, 1)).unwrap();
    s.open_stream(StreamKey(3), video(2, 0, 2)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 10)).unwrap();
    s.remove_track(TrackKey(2));
    let actions = drain(&mut s, t0, &mut budget(0));
    assert_eq!(actions.len(), 2);
    assert!(actions.iter().all(|a| matches!(a, Action::Abandon { .. })));
    assert_eq!(s.open_streams(), 0);
    assert_eq!(s.cancel_stream(StreamKey(2)), Err(Error::UnknownStream(StreamKey(2))));
    // After remove_track the track's subgroups may be opened again.
    s.open_stream(StreamKey(2), video(2, 0, 1)).unwrap();
}

/// A relay passing on how its upstream stream ended resets with that code, not CANCELLED:
/// a subscriber reads SESSION_CLOSED for a subgroup cut by its publisher's death.
#[test]
fn reset_stream_carries_its_code() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.open_stream(StreamKey(1), video(1, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 10_000)).unwrap();
    let _ = drain(&mut s, t0, &mut budget(2000));
    s.reset_stream(StreamKey(1), reset_code::SESSION_CLOSED).unwrap();
    assert_eq!(
        drain(&mut s, t0, &mut budget(0)),
        [Action::Reset {
            key: StreamKey(1),
            code: reset_code::SESSION_CLOSED,
            reason: DropReason::Cancelled
        }]
    );
    assert_eq!(
        s.reset_stream(StreamKey(1), reset_code::SESSION_CLOSED),
        Err(Error::UnknownStream(StreamKey(1)))
    );
}

/// Misuse of the stream life cycle is an error, never a panic; a timeout call with nothing
/// due does nothing.
#[test]
fn lifecycle_errors_and_idle_timeouts() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0);
    assert_eq!(s.poll_send(t0, &mut unlimited()), None);
    s.open_stream(StreamKey(1), audio(1, 1)).unwrap();
    assert_eq!(s.open_stream(StreamKey(1), audio(1, 2)), Err(Error::DuplicateStream(StreamKey(1))));
    s.finish_stream(StreamKey(1)).unwrap();
    // A stream with no header and no object finishes without a write.
    assert_eq!(drain(&mut s, t0, &mut unlimited()), [Action::Finish { key: StreamKey(1) }]);
    s.open_stream(StreamKey(1), audio(1, 2)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 1)).unwrap();
    s.finish_stream(StreamKey(1)).unwrap();
    assert_eq!(s.push_object(StreamKey(1), obj(t0, 1)), Err(Error::Finished(StreamKey(1))));
    assert_eq!(s.handle_unblocked(StreamKey(9)), Err(Error::UnknownStream(StreamKey(9))));
    // A delivery timeout too large for the clock never expires and never panics.
    s.open_stream(StreamKey(5), audio(1, 5).delivery_timeout(Some(Duration::MAX))).unwrap();
    s.push_object(StreamKey(5), obj(t0, 1).capture_age(Duration::MAX)).unwrap();
    let _ = drain(&mut s, t0, &mut unlimited());
    let _ = GroupOrder::Ascending;
}

/// Datagram lanes: each object goes whole as one datagram, newest group first; an expired
/// datagram is dropped alone (no reset) and the next one still goes; the lane finishes.
#[test]
fn datagram_lanes_send_whole_objects_and_drop_them_one_by_one() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let lane = |g| {
        StreamSpec::datagrams(TrackKey(1), TrackClass::Audio, g)
            .priority(128, 16)
            .group_order(Descending)
            .delivery_timeout(Some(ms(100)))
    };
    s.open_stream(StreamKey(1), lane(1)).unwrap();
    s.open_stream(StreamKey(2), lane(2)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 50)).unwrap();
    s.push_object(StreamKey(1), obj(t0 + ms(60), 50)).unwrap();
    s.push_object(StreamKey(2), obj(t0 + ms(60), 60)).unwrap();
    // Nothing can go until t0 + 100 ms: the first datagram of group 1 expires.
    assert_eq!(s.poll_send(t0 + ms(99), &mut budget(0)), None);
    s.finish_stream(StreamKey(1)).unwrap();
    let actions = drain(&mut s, t0 + ms(100), &mut unlimited());
    let sizes: Vec<(u64, usize)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Datagram { key, datagram } => Some((key.0, datagram.len())),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [(2, 64), (1, 54)], "newer group first, whole objects");
    assert!(actions.contains(&Action::Finish { key: StreamKey(1) }));
    assert!(!actions.iter().any(|a| matches!(a, Action::Reset { .. } | Action::Abandon { .. })));
    assert_eq!(s.stats().dropped(TrackClass::Audio, DropReason::DeliveryTimeout).objects, 1);
    // A datagram larger than the allowance waits rather than being split.
    s.push_object(StreamKey(2), obj(t0 + ms(100), 3000)).unwrap();
    assert_eq!(s.poll_send(t0 + ms(100), &mut budget(2000)), None);
    assert!(matches!(s.poll_send(t0 + ms(101), &mut budget(3004)), Some(Action::Datagram { .. })));
}

/// Deadline entries of objects already sent do not pile up, however long the timeout.
#[test]
fn deadline_heap_stays_bounded_with_long_timeouts() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for g in 0..20_000u64 {
        let spec = audio(1, g).delivery_timeout(Some(Duration::from_secs(3600)));
        s.open_stream(StreamKey(g), spec).unwrap();
        s.push_object(StreamKey(g), obj(t0 + ms(g), 80)).unwrap();
        s.finish_stream(StreamKey(g)).unwrap();
        let _ = drain(&mut s, t0 + ms(g), &mut unlimited());
    }
    assert_eq!(s.open_streams(), 0);
    assert!(s.deadlines.len() <= super::SWEEP_MIN, "{} entries", s.deadlines.len());
    assert_eq!(s.poll_timeout(), None);
}

/// Random sequences of every input, in both modes: no panic, and what reaches each stream
/// is always a prefix of its header and objects in order, whole for `Finish`ed streams,
/// empty for `Abandon`ed ones; each key ends exactly once; nothing stays queued.
#[test]
fn random_inputs_keep_every_stream_a_prefix_of_its_data() {
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }
    #[derive(Default)]
    struct Expect {
        data: Vec<u8>,
        written: Vec<u8>,
        writes: usize,
        ends: Vec<Action>,
        open: bool,
        finished: bool,
        cancelled: bool,
        /// The scheduler already ended it (its terminal action is still to come).
        dead: bool,
        opened_subgroup: Option<(u64, u64, u64)>,
        /// A datagram lane: its pushed objects, and how many went out.
        lane: bool,
        objects: std::collections::VecDeque<Vec<u8>>,
        datagrams: usize,
    }
    for (mode, seed) in [(Mode::Priority, 1), (Mode::Priority, 2), (Mode::Fifo, 3), (Mode::Fifo, 4)]
    {
        let t0 = Instant::now();
        let mut rng = Lcg(seed);
        let mut s = Scheduler::new(SchedulerConfig::default().mode(mode).quantum(3000));
        let mut keys: Vec<Expect> = (0..40).map(|_| Expect::default()).collect();
        let mut now = t0;
        let mut blocked: Vec<usize> = Vec::new();
        let mut done: Vec<Expect> = Vec::new();
        let apply = |a: Action,
                     keys: &mut Vec<Expect>,
                     done: &mut Vec<Expect>,
                     blocked: &mut Vec<usize>,
                     s: &mut Scheduler,
                     rng: &mut Lcg| {
            match &a {
                Action::Write { key, chunk, .. } => {
                    let e = &mut keys[key.0 as usize];
                    assert!(e.open && !e.lane, "write to {key:?}, which is not an open stream");
                    assert!(chunk.len() <= 3000);
                    e.writes += 1;
                    // Now and then the transport takes only part of a chunk.
                    if rng.below(10) == 0 && chunk.len() > 1 {
                        let took = rng.below(chunk.len() as u64) as usize;
                        e.written.extend_from_slice(&chunk[..took]);
                        s.handle_blocked(*key, chunk.slice(took..)).unwrap();
                        blocked.push(key.0 as usize);
                    } else {
                        e.written.extend_from_slice(chunk);
                    }
                }
                Action::Finish { key }
                | Action::Reset { key, .. }
                | Action::Abandon { key, .. } => {
                    let e = &mut keys[key.0 as usize];
                    assert!(e.open, "{a:?} for a key that is not open");
                    e.ends.push(a.clone());
                    e.open = false;
                    done.push(std::mem::take(e));
                    blocked.retain(|k| *k != key.0 as usize);
                }
                Action::Datagram { key, datagram } => {
                    let e = &mut keys[key.0 as usize];
                    assert!(e.open && e.lane, "datagram on {key:?}, which is not an open lane");
                    // The next datagram is one of the pushed objects, in order (some dropped).
                    while e.objects.front().is_some_and(|o| o[..] != datagram[..]) {
                        e.objects.pop_front();
                    }
                    assert!(e.objects.pop_front().is_some(), "{key:?}: not a pushed object");
                    e.datagrams += 1;
                }
            }
        };
        for step in 0..4000u64 {
            let k = rng.below(40) as usize;
            let key = StreamKey(k as u64);
            match rng.below(12) {
                0 | 1 if !keys[k].open => {
                    let track = rng.below(4);
                    let group = step / 50 + rng.below(3);
                    let class =
                        [TrackClass::Audio, TrackClass::Video { tier: 1 }][track as usize % 2];
                    let timeout = [None, Some(ms(50)), Some(ms(300))][rng.below(3) as usize];
                    let hdr = Bytes::from(vec![0xF0, k as u8]);
                    let lane = rng.below(6) == 0;
                    let spec = if lane {
                        StreamSpec::datagrams(TrackKey(track), class, group)
                    } else {
                        StreamSpec::new(TrackKey(track), class, group, k as u64 % 2)
                    };
                    let spec = spec
                        .priority(rng.below(2) as u8 * 100, 16 * (1 + track as u8))
                        .group_order([Ascending, Descending][rng.below(2) as usize])
                        .delivery_timeout(timeout)
                        .header(hdr.clone());
                    match s.open_stream(key, spec) {
                        Ok(()) => {
                            keys[k].open = true;
                            keys[k].lane = lane;
                            if !lane {
                                keys[k].data.extend_from_slice(&hdr);
                            }
                            keys[k].opened_subgroup = Some((track, group, k as u64 % 2));
                        }
                        Err(Error::SubgroupAbandoned { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                2..=5 if keys[k].open && !keys[k].finished && !keys[k].dead => {
                    let n = keys[k].data.len();
                    let header = Bytes::from(vec![k as u8, n as u8, 0xAB]);
                    let payload: Vec<u8> =
                        (0..rng.below(5000)).map(|i| (i as u8) ^ (n as u8)).collect();
                    let mut o = Object::new(now, header.clone(), Bytes::from(payload.clone()));
                    if rng.below(4) == 0 {
                        o = o.capture_age(ms(rng.below(900)));
                    }
                    match s.push_object(key, o) {
                        Ok(()) if keys[k].lane => {
                            keys[k].objects.push_back([&header[..], &payload[..]].concat());
                        }
                        Ok(()) => {
                            keys[k].data.extend_from_slice(&header);
                            keys[k].data.extend_from_slice(&payload);
                        }
                        Err(Error::UnknownStream(_)) => keys[k].dead = true,
                        Err(e) => panic!("{e}"),
                    }
                }
                6 if keys[k].open && !keys[k].finished && !keys[k].dead => {
                    match s.finish_stream(key) {
                        Ok(()) => keys[k].finished = true,
                        Err(Error::UnknownStream(_)) => keys[k].dead = true,
                        Err(e) => panic!("{e}"),
                    }
                }
                7 if keys[k].open && !keys[k].dead && rng.below(8) == 0 => {
                    match s.cancel_stream(key) {
                        Ok(()) => keys[k].cancelled = true,
                        Err(Error::UnknownStream(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                    keys[k].dead = true;
                }
                8 => {
                    if let Some(b) = blocked.pop() {
                        let _ = s.handle_unblocked(StreamKey(b as u64));
                    }
                }
                9 => s.set_subscriber_priority(TrackKey(rng.below(4)), rng.below(256) as u8),
                _ => {
                    now += ms(rng.below(20));
                    let mut b = budget(rng.below(20_000));
                    b.send_rate_bps = [0, 2_000_000][rng.below(2) as usize];
                    while let Some(a) = s.poll_send(now, &mut b) {
                        apply(a, &mut keys, &mut done, &mut blocked, &mut s, &mut rng);
                    }
                    let _ = s.poll_timeout();
                }
            }
        }
        // Finish everything and drain far in the future.
        for (k, e) in keys.iter_mut().enumerate() {
            if e.open && !e.finished && !e.dead {
                match s.finish_stream(StreamKey(k as u64)) {
                    Ok(()) => e.finished = true,
                    Err(Error::UnknownStream(_)) => e.dead = true,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        for _ in 0..10_000 {
            for b in std::mem::take(&mut blocked) {
                let _ = s.handle_unblocked(StreamKey(b as u64));
            }
            now += ms(10);
            let mut b = unlimited();
            while let Some(a) = s.poll_send(now, &mut b) {
                apply(a, &mut keys, &mut done, &mut blocked, &mut s, &mut rng);
            }
            if s.open_streams() == 0 {
                break;
            }
        }
        assert_eq!(s.open_streams(), 0, "{mode:?}");
        assert_eq!(s.queued_bytes(), 0, "{mode:?}");
        let st = s.stats();
        println!(
            "{mode:?} seed {seed}: {} finishes, {} resets, {} abandons, {} bytes written",
            st.finishes, st.resets, st.abandons, st.written_bytes
        );
        assert!(keys.iter().all(|e| !e.open), "{mode:?}: a stream never ended");
        assert!(done.len() > 200, "{mode:?}: only {} streams", done.len());
        for (k, e) in done.iter().enumerate() {
            assert_eq!(e.ends.len(), 1, "{mode:?} key {k}: {:?}", e.ends);
            assert!(e.data.starts_with(&e.written), "{mode:?} key {k}: not a prefix");
            if e.lane {
                assert!(e.writes == 0 && e.written.is_empty());
                assert!(!matches!(e.ends[0], Action::Reset { .. }), "lanes are never reset");
                if mode == Mode::Fifo && !e.cancelled {
                    assert!(e.objects.is_empty(), "FIFO sends every datagram");
                }
            }
            match &e.ends[0] {
                Action::Finish { .. } => assert_eq!(e.written, e.data, "{mode:?} key {k}"),
                Action::Abandon { .. } => assert_eq!(e.writes, 0, "{mode:?} key {k}"),
                Action::Reset { reason, .. } => {
                    // The stream was opened (its first write), even if the transport then
                    // took nothing of it.
                    assert!(e.writes > 0, "{mode:?} key {k}");
                    if mode == Mode::Fifo {
                        assert_eq!(*reason, DropReason::Cancelled, "FIFO never drops");
                    }
                }
                other => panic!("{other:?}"),
            }
            if mode == Mode::Fifo && !e.cancelled {
                assert!(matches!(e.ends[0], Action::Finish { .. }), "{mode:?} key {k}");
            }
        }
    }
}

/// With a headroom configured below one packet, the scheduler still makes progress in
/// small writes rather than waiting for an allowance that can never come.
#[test]
fn tiny_headroom_still_makes_progress() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default().headroom(4, 100));
    s.open_stream(StreamKey(1), video(1, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 1000)).unwrap();
    s.finish_stream(StreamKey(1)).unwrap();
    let mut total = 0;
    for i in 0..100 {
        // The transport drains everything between wake-ups but reports no window.
        let mut b = SendBudget { cwnd: 0, cwnd_available: 0, buffered: 0, send_rate_bps: 0 };
        let actions = drain(&mut s, t0 + ms(i), &mut b);
        assert!(b.buffered <= 100);
        total += written_bytes(&actions, 1);
        if actions.contains(&Action::Finish { key: StreamKey(1) }) {
            break;
        }
    }
    assert_eq!(total, 1004);
}

/// The last chunk of a finished stream can still be handed back: `Finish` waits until the
/// rest is written.
#[test]
fn last_chunk_can_be_handed_back_before_finish() {
    for mode in [Mode::Priority, Mode::Fifo] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default().mode(mode));
        s.open_stream(StreamKey(1), audio(1, 1)).unwrap();
        s.push_object(StreamKey(1), Object::new(t0, Bytes::new(), Bytes::from(vec![1u8; 500])))
            .unwrap();
        s.finish_stream(StreamKey(1)).unwrap();
        let Some(Action::Write { chunk, .. }) = s.poll_send(t0, &mut unlimited()) else {
            panic!("expected a write");
        };
        s.handle_blocked(StreamKey(1), chunk.slice(200..)).unwrap();
        assert_eq!(s.poll_send(t0, &mut unlimited()), None, "{mode:?}: blocked, no Finish");
        s.handle_unblocked(StreamKey(1)).unwrap();
        let actions = drain(&mut s, t0, &mut unlimited());
        assert_eq!(written_bytes(&actions, 1), 300, "{mode:?}");
        assert_eq!(actions.last(), Some(&Action::Finish { key: StreamKey(1) }), "{mode:?}");
    }
}

// The estimate of what QUIC holds unsent (`Unsent`): the counters a quinn connection
// reports, as running totals, for packets of `payload` stream bytes each.

/// Counters after `sent` packets of `payload` bytes (and `lost` of them declared lost).
fn counters(sent: u64, lost: u64, payload: u64, rtt_ms: u64) -> Reading {
    Reading {
        bytes_sent: sent * (payload + PACKET_OVERHEAD),
        packets_sent: sent,
        bytes_lost: lost * (payload + PACKET_OVERHEAD),
        packets_lost: lost,
        rtt: ms(rtt_ms),
    }
}

/// Lost bytes wait in QUIC until they are resent, and resending them does not make later
/// writes look sent: after losses and retransmissions the estimate still sees every byte
/// that waits (the running difference "handed minus UDP bytes sent" read zero while tens of
/// kilobytes waited on `congested`).
#[test]
fn unsent_counts_lost_bytes_until_resent() {
    let t0 = Instant::now();
    let mut u = Unsent::new();
    u.handle_reading(t0, counters(0, 0, 1000, 200));
    u.handle_write(1, 100, 20_000);
    // 20 packets leave; then 4 are declared lost.
    u.handle_reading(t0 + ms(50), counters(20, 0, 1000, 200));
    assert_eq!(u.total(), 0);
    u.handle_reading(t0 + ms(100), counters(20, 4, 1000, 200));
    assert_eq!((u.total(), u.lost()), (4000, 4000), "lost bytes wait to be resent");
    // More is written, the 4 are resent: only the new bytes wait.
    u.handle_write(1, 100, 10_000);
    u.handle_reading(t0 + ms(150), counters(24, 4, 1000, 200));
    assert_eq!((u.total(), u.lost()), (10_000, 0));
    u.handle_reading(t0 + ms(200), counters(30, 4, 1000, 200));
    assert_eq!(u.total(), 4000);
}

/// Per-packet overhead is not stream data: 50 audio-sized packets of 120 stream bytes
/// drain exactly the 6000 bytes written.
#[test]
fn unsent_takes_packet_overhead_off_what_was_sent() {
    let t0 = Instant::now();
    let mut u = Unsent::new();
    u.handle_reading(t0, counters(0, 0, 120, 50));
    u.handle_write(1, 100, 6000);
    u.handle_write(2, 100, 1000);
    u.handle_reading(t0 + ms(20), counters(50, 0, 120, 50));
    assert_eq!(u.total(), 1000);
}

/// The estimate never goes below zero: bytes QUIC sent that were not handed to it
/// (control messages, acknowledgements) do not let later writes pass as sent.
#[test]
fn unsent_does_not_carry_surplus_sends_forward() {
    let t0 = Instant::now();
    let mut u = Unsent::new();
    u.handle_reading(t0, counters(0, 0, 1000, 50));
    u.handle_write(1, 100, 2000);
    u.handle_reading(t0 + ms(20), counters(10, 0, 1000, 50));
    assert_eq!(u.total(), 0);
    u.handle_write(1, 100, 3000);
    assert_eq!(u.total(), 3000);
}

/// quinn sends higher priorities first, so what a reset stream of the lowest priority takes
/// with it is its own unsent bytes: the more important stream's still count, where taking
/// all it was handed (up to the estimate) set the estimate to zero at every reset.
#[test]
fn unsent_drains_by_priority_and_a_reset_takes_only_its_own() {
    let t0 = Instant::now();
    let mut u = Unsent::new();
    u.handle_reading(t0, counters(0, 0, 1000, 50));
    u.handle_write(7, 0xFFFF - 64, 6000); // 360p
    u.handle_write(3, 0xFFFF - 16, 3000); // audio
    u.handle_write(5, 0xFFFF - 32, 4000); // 180p
    u.handle_reading(t0 + ms(10), counters(5, 0, 1000, 50));
    assert_eq!((u.stream(3), u.stream(5), u.stream(7)), (0, 2000, 6000));
    u.handle_discard(7);
    assert_eq!(u.total(), 2000);
    // Streams of one priority share what leaves, as quinn's round robin does.
    u.handle_write(8, 1, 1000);
    u.handle_write(9, 1, 5000);
    u.handle_reading(t0 + ms(20), counters(10, 0, 1000, 50));
    assert_eq!((u.stream(5), u.stream(8), u.stream(9)), (0, 0, 3000));
}

/// Lost bytes of a stream reset before they were resent are never sent: after two round
/// trips they no longer count.
#[test]
fn unsent_forgets_lost_bytes_not_resent_in_two_round_trips() {
    let t0 = Instant::now();
    let mut u = Unsent::new();
    u.handle_reading(t0, counters(0, 0, 1000, 100));
    u.handle_write(1, 1, 10_000);
    u.handle_reading(t0 + ms(100), counters(10, 0, 1000, 100));
    u.handle_reading(t0 + ms(200), counters(10, 3, 1000, 100));
    u.handle_discard(1);
    assert_eq!(u.total(), 3000);
    u.handle_reading(t0 + ms(300), counters(10, 3, 1000, 100));
    assert_eq!(u.total(), 3000);
    u.handle_reading(t0 + ms(400), counters(10, 3, 1000, 100));
    assert_eq!(u.total(), 0);
}

/// With the driver's estimate per priority (`handle_unsent`), an object waits behind what
/// QUIC sends before it: 180p is not held to the 360p and lost 360p bytes QUIC still holds
/// (quinn sends 180p first), while another 360p frame that would wait behind them past its
/// deadline is not started. The whole buffer no longer caps what more important levels add.
#[test]
fn unsent_per_priority_sets_what_an_object_waits_behind() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let p360 = quinn_priority(&video(1, 1, 1).send_order());
    let mut u = Unsent::new();
    u.handle_reading(t0, Reading { rtt: ms(200), ..Reading::default() });
    // 60 kB of 360p wait in QUIC: at 500 kbit/s, about a second.
    u.handle_write(9, p360, 60_000);
    s.handle_unsent(&u);
    let mut b =
        SendBudget { cwnd: 12_000, cwnd_available: 0, buffered: u.total(), send_rate_bps: 500_000 };
    s.open_stream(StreamKey(1), video(2, 0, 1)).unwrap();
    s.push_object(StreamKey(1), obj(t0, 3000)).unwrap();
    s.open_stream(StreamKey(2), video(1, 1, 2)).unwrap();
    s.push_object(StreamKey(2), obj(t0, 3000)).unwrap();
    let actions = drain(&mut s, t0, &mut b);
    assert_eq!(written_bytes(&actions, 1), 3004, "180p goes: {actions:?}");
    assert!(
        actions
            .contains(&Action::Abandon { key: StreamKey(2), reason: DropReason::DeliveryTimeout }),
        "{actions:?}"
    );
}

/// The direct path (an object pushed while nothing else is ready skips the ready sets) is
/// only a shortcut: on random inputs, with and without it, every call gives the same
/// actions, deadlines, queued bytes and counters.
#[test]
fn the_direct_path_schedules_exactly_as_the_full_one() {
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }
    let (mut writes, mut direct_pushes) = (0, 0);
    for seed in 1..=6u64 {
        let t0 = Instant::now();
        let mut rng = Lcg(seed);
        let config = SchedulerConfig::default().quantum(3000);
        let mut fast = Scheduler::new(config.clone());
        let mut full = Scheduler::new(config);
        full.direct_off = true;
        if seed % 2 == 0 {
            // With the driver's estimate of QUIC's unsent bytes per level.
            let mut unsent = Unsent::new();
            unsent.handle_write(1, 5, 2_000);
            fast.handle_unsent(&unsent);
            full.handle_unsent(&unsent);
        }
        let mut now = t0;
        let mut open = [false; 12];
        let mut blocked: Vec<u64> = Vec::new();
        for step in 0..6000u64 {
            let k = rng.below(12);
            let key = StreamKey(k);
            let both = |f: &mut dyn FnMut(&mut Scheduler) -> String,
                        fast: &mut Scheduler,
                        full: &mut Scheduler| {
                let a = f(fast);
                let b = f(full);
                assert_eq!(a, b, "seed {seed} step {step}");
                a
            };
            match rng.below(14) {
                0 if !open[k as usize] => {
                    let track = rng.below(3);
                    let lane = rng.below(8) == 0;
                    let group = step / 40 + rng.below(2);
                    let spec = if lane {
                        StreamSpec::datagrams(TrackKey(track), TrackClass::Video { tier: 0 }, group)
                    } else {
                        StreamSpec::new(TrackKey(track), TrackClass::Video { tier: 0 }, group, k)
                    };
                    let spec = spec
                        .priority(128, 16 * (1 + track as u8))
                        .group_order([Ascending, Descending][rng.below(2) as usize])
                        .delivery_timeout(
                            [None, Some(ms(40)), Some(ms(400))][rng.below(3) as usize],
                        )
                        .header(Bytes::from(vec![0xF0, k as u8]));
                    let r = both(
                        &mut |s: &mut Scheduler| format!("{:?}", s.open_stream(key, spec.clone())),
                        &mut fast,
                        &mut full,
                    );
                    open[k as usize] = r == "Ok(())";
                }
                1..=5 if open[k as usize] => {
                    let len = rng.below(6000) as usize;
                    let age = (rng.below(4) == 0).then(|| ms(rng.below(900)));
                    let mut o =
                        Object::new(now, Bytes::from(vec![k as u8; 3]), Bytes::from(vec![7; len]));
                    if let Some(age) = age {
                        o = o.capture_age(age);
                    }
                    let r = both(
                        &mut |s: &mut Scheduler| format!("{:?}", s.push_object(key, o.clone())),
                        &mut fast,
                        &mut full,
                    );
                    if r.contains("UnknownStream") {
                        open[k as usize] = false;
                    }
                    direct_pushes += usize::from(fast.direct.is_some());
                }
                6 if open[k as usize] => {
                    both(
                        &mut |s: &mut Scheduler| format!("{:?}", s.finish_stream(key)),
                        &mut fast,
                        &mut full,
                    );
                }
                7 if rng.below(6) == 0 => {
                    both(
                        &mut |s: &mut Scheduler| format!("{:?}", s.cancel_stream(key)),
                        &mut fast,
                        &mut full,
                    );
                }
                8 => {
                    if let Some(b) = blocked.pop() {
                        both(
                            &mut |s: &mut Scheduler| {
                                format!("{:?}", s.handle_unblocked(StreamKey(b)))
                            },
                            &mut fast,
                            &mut full,
                        );
                    }
                }
                9 if rng.below(4) == 0 => {
                    let (t, p) = (rng.below(3), rng.below(256) as u8);
                    both(
                        &mut |s: &mut Scheduler| {
                            s.set_subscriber_priority(TrackKey(t), p);
                            String::new()
                        },
                        &mut fast,
                        &mut full,
                    );
                }
                10 if rng.below(10) == 0 => {
                    let t = rng.below(3);
                    both(
                        &mut |s: &mut Scheduler| {
                            s.remove_track(TrackKey(t));
                            String::new()
                        },
                        &mut fast,
                        &mut full,
                    );
                }
                11 => {
                    // The writer task's timer: expire what is due, if anything.
                    now += ms(rng.below(30));
                    both(
                        &mut |s: &mut Scheduler| {
                            s.handle_timeout(now);
                            String::new()
                        },
                        &mut fast,
                        &mut full,
                    );
                }
                _ => {
                    now += ms(rng.below(25));
                    let mut b = budget(rng.below(16_000));
                    b.send_rate_bps = [0, 3_000_000][rng.below(2) as usize];
                    let mut b2 = b;
                    loop {
                        let a = fast.poll_send(now, &mut b);
                        let a2 = full.poll_send(now, &mut b2);
                        assert_eq!(a, a2, "seed {seed} step {step}");
                        assert_eq!(b.buffered, b2.buffered);
                        let Some(a) = a else { break };
                        match a {
                            Action::Write { key, chunk, .. } => {
                                writes += 1;
                                // Now and then the transport takes only part of a chunk.
                                if rng.below(12) == 0 && chunk.len() > 1 {
                                    let took = rng.below(chunk.len() as u64) as usize;
                                    let rest = chunk.slice(took..);
                                    fast.handle_blocked(key, rest.clone()).unwrap();
                                    full.handle_blocked(key, rest).unwrap();
                                    blocked.push(key.0);
                                }
                            }
                            Action::Finish { key }
                            | Action::Reset { key, .. }
                            | Action::Abandon { key, .. } => {
                                open[key.0 as usize] = false;
                                blocked.retain(|b| *b != key.0);
                            }
                            Action::Datagram { .. } => {}
                        }
                    }
                    assert_eq!(fast.poll_timeout(), full.poll_timeout(), "seed {seed} step {step}");
                }
            }
            assert_eq!(fast.queued_bytes(), full.queued_bytes(), "seed {seed} step {step}");
            assert_eq!(fast.open_streams(), full.open_streams(), "seed {seed} step {step}");
            assert_eq!(fast.stats(), full.stats(), "seed {seed} step {step}");
        }
    }
    assert!(writes > 5_000, "{writes} writes: the inputs hardly wrote anything");
    assert!(direct_pushes > 1_000, "only {direct_pushes} pushes took the direct path");
}

/// Writes audio (120 bytes every 20 ms, 48 kbit/s) and the base tier (1 875 bytes every
/// 100 ms, 150 kbit/s) from `t0` for two seconds, each object on its own stream from key
/// 1000 up, as a link that carries them sends them. Returns when it stopped.
fn write_audio_and_base(s: &mut Scheduler, t0: Instant) -> Instant {
    let mut key = 1000;
    for i in 0..100u64 {
        let now = t0 + ms(20 * i);
        s.open_stream(StreamKey(key), audio(10, i)).unwrap();
        s.push_object(StreamKey(key), obj(now, 120)).unwrap();
        key += 1;
        if i % 5 == 0 {
            s.open_stream(StreamKey(key), video(11, 0, i)).unwrap();
            s.push_object(StreamKey(key), obj(now, 1_875)).unwrap();
            key += 1;
        }
        drain(s, now, &mut unlimited());
    }
    t0 + ms(2_000)
}

/// With a delay-based controller the window per round trip reads the whole link (600
/// kbit/s here), but audio and the base tier keep taking about 200 kbit/s of it: a 360p
/// object of 60 kB needs 1.2 s at the 400 kbit/s they leave, past its 1 s timeout, so it is
/// not started (at the whole rate, 800 ms, it was, and arrived late); a 15 kB one fits
/// its share and goes.
#[test]
fn upper_tier_is_checked_at_what_the_levels_above_leave() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let now = write_audio_and_base(&mut s, t0);
    let mut b = SendBudget { send_rate_bps: 600_000, ..unlimited() };
    s.open_stream(StreamKey(1), video(12, 1, 1)).unwrap();
    s.push_object(StreamKey(1), obj(now, 60_000)).unwrap();
    let actions = drain(&mut s, now, &mut b);
    assert!(
        actions
            .contains(&Action::Abandon { key: StreamKey(1), reason: DropReason::DeliveryTimeout }),
        "{actions:?}"
    );
    assert_eq!(written_bytes(&actions, 1), 0);
    s.open_stream(StreamKey(2), video(12, 1, 2)).unwrap();
    s.push_object(StreamKey(2), obj(now, 15_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut b), 2), 15_004);
    // Audio and the base tier keep the whole rate.
    s.open_stream(StreamKey(3), video(11, 0, 100)).unwrap();
    s.push_object(StreamKey(3), obj(now, 60_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut b), 3), 60_004);
}

/// After a loss cut CUBIC's window per round trip reads half the link (300 kbit/s here)
/// while the path delivered 600 kbit/s within the last seconds: the check takes the
/// delivery rate, so a 45 kB 360p object (900 ms at the 400 kbit/s audio and the base tier
/// leave, 1.2 s at 300) is still started.
#[test]
fn upper_tier_check_keeps_the_delivery_rate_after_a_loss_cut() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let now = write_audio_and_base(&mut s, t0);
    let mut u = Unsent::new();
    for i in 0..=20u64 {
        let r = Reading { bytes_sent: 3_750 * i, rtt: ms(200), ..Default::default() };
        u.handle_reading(t0 + ms(1_000 + 50 * i), r);
    }
    assert_eq!(u.delivery_bps(), 600_000);
    s.handle_unsent(&u);
    let mut b = SendBudget { send_rate_bps: 300_000, ..unlimited() };
    s.open_stream(StreamKey(1), video(12, 1, 1)).unwrap();
    s.push_object(StreamKey(1), obj(now, 45_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut b), 1), 45_004);
}

/// With the share turned off (the send path does so for a loss-based controller), an upper
/// tier is checked at the path's whole rate again: the 60 kB 360p object the share holds
/// back (800 ms at 600 kbit/s, within its 1 s) is started.
#[test]
fn upper_tier_without_the_share_is_checked_at_the_whole_rate() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default().tier_share(false));
    let now = write_audio_and_base(&mut s, t0);
    let mut b = SendBudget { send_rate_bps: 600_000, ..unlimited() };
    s.open_stream(StreamKey(1), video(12, 1, 1)).unwrap();
    s.push_object(StreamKey(1), obj(now, 60_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut b), 1), 60_004);
}

/// The actions other than writes, which are too long to print.
fn not_writes(actions: &[Action]) -> Vec<&Action> {
    actions.iter().filter(|a| !matches!(a, Action::Write { .. })).collect()
}

/// Pushes what a ladder offers in 100 ms from `at` on streams of their own from `*key` up,
/// and sends what `b` allows: audio (five 120-byte frames), the base tier (1 875 bytes, 150
/// kbit/s), 360p (6 875 bytes, 550 kbit/s) and, with `hd`, 720p (18 750 bytes, 1.5 Mbit/s).
fn offer_100ms(s: &mut Scheduler, at: Instant, key: &mut u64, hd: bool, b: &mut SendBudget) {
    let group = *key;
    let mut objects = vec![(11, Some(0), 1_875), (12, Some(1), 6_875)];
    if hd {
        objects.push((13, Some(2), 18_750));
    }
    objects.extend((0..5).map(|_| (10, None, 120)));
    for (i, (track, tier, len)) in objects.into_iter().enumerate() {
        let spec = match tier {
            Some(tier) => video(track, tier, group),
            None => audio(track, group + i as u64),
        };
        s.open_stream(StreamKey(*key), spec).unwrap();
        s.push_object(StreamKey(*key), obj(at, len)).unwrap();
        *key += 1;
    }
    drain(s, at, b);
}

/// 720p offered at 1.5 Mbit/s where the window per round trip reads 1.2 Mbit/s and the
/// levels above take 750 kbit/s of it: its 20 kB key frame alone would leave in 356 ms at
/// the 450 kbit/s left, well within its second, but the group behind it cannot (1.5 Mbit/s
/// against 450, with a second to spare at most), so its group is not started; 360p, offered
/// 550 kbit/s against the 1 Mbit/s audio and the base tier leave it, still starts.
#[test]
fn upper_tier_group_is_not_started_when_its_level_is_offered_more_than_it_can_carry() {
    for share in [true, false] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default().tier_share(share));
        let mut key = 1000;
        // Two seconds with no rate known: everything is written, 720p included.
        for i in 0..20 {
            offer_100ms(&mut s, t0 + ms(100 * i), &mut key, true, &mut unlimited());
        }
        let now = t0 + ms(2_000);
        let mut b = SendBudget { send_rate_bps: 1_200_000, ..unlimited() };
        s.open_stream(StreamKey(1), video(13, 2, 500)).unwrap();
        s.push_object(StreamKey(1), obj(now, 20_000)).unwrap();
        let actions = drain(&mut s, now, &mut b);
        if share {
            let abandoned =
                Action::Abandon { key: StreamKey(1), reason: DropReason::DeliveryTimeout };
            assert_eq!(not_writes(&actions), [&abandoned]);
            assert_eq!(written_bytes(&actions, 1), 0);
        } else {
            // Without the share (a loss-based controller) the key frame alone decides.
            assert_eq!(written_bytes(&actions, 1), 20_004);
        }
        s.open_stream(StreamKey(2), video(12, 1, 500)).unwrap();
        s.push_object(StreamKey(2), obj(now, 11_800)).unwrap();
        assert_eq!(written_bytes(&drain(&mut s, now, &mut b), 2), 11_804);
    }
}

/// A tier's first group has no rate offered yet: its key frame passes the check of one
/// object and starts. Half a second later the frames pushed show 1.5 Mbit/s against the
/// 450 kbit/s its share carries, and the next frame is not started: the group is reset
/// rather than cut for lateness after holding the link for most of a second. The frames
/// still pushed to the reset stream count as offered, so the next group is not started.
#[test]
fn an_upper_tier_first_group_stops_once_its_rate_shows_it_cannot_keep_up() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut key = 1000;
    for i in 0..20 {
        offer_100ms(&mut s, t0 + ms(100 * i), &mut key, false, &mut unlimited());
    }
    let now = t0 + ms(2_000);
    // A link that keeps up with what is written: nothing waits in QUIC at each step.
    let b = SendBudget { send_rate_bps: 1_200_000, ..unlimited() };
    s.open_stream(StreamKey(1), video(13, 2, 500)).unwrap();
    s.push_object(StreamKey(1), obj(now, 20_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut { b }), 1), 20_004, "the key frame");
    let mut reset_at = None;
    for i in 1..30u64 {
        let at = now + ms(33 * i);
        if i % 3 == 0 {
            offer_100ms(&mut s, at, &mut key, false, &mut { b });
        }
        let pushed = s.push_object(StreamKey(1), obj(at, 5_400));
        let actions = drain(&mut s, at, &mut { b });
        if actions.iter().any(|a| matches!(a, Action::Reset { key: StreamKey(1), .. })) {
            reset_at = Some(i);
        }
        assert_eq!(pushed.is_err(), reset_at.is_some_and(|r| r < i), "frame {i}");
    }
    let reset_at = reset_at.expect("the group was never stopped");
    assert!((14..=17).contains(&reset_at), "stopped at frame {reset_at}");
    s.finish_stream(StreamKey(1)).unwrap_err();
    let next = now + ms(1_000);
    offer_100ms(&mut s, next, &mut key, false, &mut { b });
    s.open_stream(StreamKey(2), video(13, 2, 501)).unwrap();
    s.push_object(StreamKey(2), obj(next, 20_000)).unwrap();
    let actions = drain(&mut s, next, &mut { b });
    let abandoned = Action::Abandon { key: StreamKey(2), reason: DropReason::DeliveryTimeout };
    assert_eq!(not_writes(&actions), [&abandoned]);
}

/// A new session gets the key frames of every tier at once: the base tier's and 360p's go,
/// but 720p's group waits, neither started nor dropped, until 360p and 720p have been
/// offered for a quarter second (`HOLD_SPAN`): one upper tier at a time. Then it is checked
/// as any group is, at the rates of that quarter second. On a path that reads 3 Mbit/s it goes, key frame and the
/// frames pushed meanwhile (`step` outside its cut); where the window per round trip reads
/// 1.2 Mbit/s (`rural`'s 1 Mbit/s) the 2.3 Mbit/s it was offered cannot keep up with the
/// 0.9 Mbit/s the base tier and 360p leave, and it is dropped without a byte written.
/// Returns the actions of the release.
fn new_session_720p(rate: u64) -> Vec<Action> {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut b = SendBudget { send_rate_bps: rate, ..unlimited() };
    let tiers = [(1, 0, 3_200, 600), (2, 1, 11_800, 2_200), (3, 2, 32_000, 5_400)];
    for (key, tier, len, _) in tiers {
        s.open_stream(StreamKey(key), video(10 + key, tier, 7)).unwrap();
        s.push_object(StreamKey(key), obj(t0, len)).unwrap();
    }
    let actions = drain(&mut s, t0, &mut b);
    assert_eq!(written_bytes(&actions, 1), 3_204);
    assert_eq!(written_bytes(&actions, 2), 11_804);
    assert_eq!(written_bytes(&actions, 3), 0);
    assert!(not_writes(&actions).is_empty(), "{:?}", not_writes(&actions));
    let wake = s.poll_timeout().expect("a wake-up for the held group");
    assert!(wake <= t0 + ms(250), "{wake:?}");
    let mut at = t0;
    for frame in 1..=7u64 {
        at = t0 + ms(33 * frame);
        for (key, _, _, len) in tiers {
            s.push_object(StreamKey(key), obj(at, len)).unwrap();
        }
        b = SendBudget { send_rate_bps: rate, ..unlimited() };
        let actions = drain(&mut s, at, &mut b);
        assert_eq!(written_bytes(&actions, 3), 0, "720p frame {frame}");
        assert!(not_writes(&actions).is_empty(), "{:?}", not_writes(&actions));
    }
    let release = at.max(s.poll_timeout().expect("a wake-up for the held group"));
    drain(&mut s, release, &mut SendBudget { send_rate_bps: rate, ..unlimited() })
}

#[test]
fn upper_tiers_of_a_new_session_start_one_at_a_time() {
    let actions = new_session_720p(3_000_000);
    assert_eq!(written_bytes(&actions, 3), 32_004 + 7 * 5_404);
    assert!(not_writes(&actions).is_empty(), "{:?}", not_writes(&actions));
    let actions = new_session_720p(1_200_000);
    assert_eq!(written_bytes(&actions, 3), 0);
    let abandoned = Action::Abandon { key: StreamKey(3), reason: DropReason::DeliveryTimeout };
    assert_eq!(not_writes(&actions), [&abandoned]);
}

/// Where the path reads far above what the key frames of the new tiers read over a few tens
/// of milliseconds (loopback under `delay`: 300 Mbit/s), 720p's group does not wait the
/// quarter second for its rate: the check at the hold's end could only pass, and the wait
/// alone put 720p's p99 over 200 ms on loopback. The key frames (47 kB, 7.5 Mbit/s over
/// `EARLY_SPAN_MIN`) just over the path's reading still wait.
#[test]
fn a_new_sessions_upper_tier_starts_at_once_on_a_path_far_above_its_key_frames() {
    for (rate, written_720p) in [(300_000_000, 32_004), (7_080_000, 32_004), (7_000_000, 0)] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        let mut b = SendBudget { send_rate_bps: rate, ..unlimited() };
        for (key, tier, len) in [(1, 0, 3_200), (2, 1, 11_800), (3, 2, 32_000)] {
            s.open_stream(StreamKey(key), video(10 + key, tier, 7)).unwrap();
            s.push_object(StreamKey(key), obj(t0, len)).unwrap();
        }
        let actions = drain(&mut s, t0, &mut b);
        assert_eq!(written_bytes(&actions, 1), 3_204, "{rate}");
        assert_eq!(written_bytes(&actions, 2), 11_804, "{rate}");
        assert_eq!(written_bytes(&actions, 3), written_720p, "{rate}");
        assert!(not_writes(&actions).is_empty(), "{rate}: {:?}", not_writes(&actions));
    }
}

/// 720p's first key frame comes 297 ms after 360p's (a subscription or an encoder that
/// starts late): 360p has been offered longer than the hold's quarter second but not the
/// half second that gives its rate, 720p not at all. The group is held as on a new session,
/// not dropped for its young reading, and checked at the rates of its own quarter second.
/// Returns the actions at the key frame and those of the frames up to the hold's end.
fn late_720p(rate: u64) -> (Vec<Action>, Vec<Action>) {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let at = |rate: u64| SendBudget { send_rate_bps: rate, ..unlimited() };
    let tiers = [(1, 0, 3_200, 600), (2, 1, 11_800, 2_200), (3, 2, 32_000, 5_400)];
    for (key, tier, len, _) in &tiers[..2] {
        s.open_stream(StreamKey(*key), video(10 + key, *tier, 7)).unwrap();
        s.push_object(StreamKey(*key), obj(t0, *len)).unwrap();
    }
    drain(&mut s, t0, &mut at(rate));
    for frame in 1..=8u64 {
        let now = t0 + ms(33 * frame);
        for (key, _, _, len) in &tiers[..2] {
            s.push_object(StreamKey(*key), obj(now, *len)).unwrap();
        }
        drain(&mut s, now, &mut at(rate));
    }
    let join = t0 + ms(297);
    for (key, _, _, len) in &tiers[..2] {
        s.push_object(StreamKey(*key), obj(join, *len)).unwrap();
    }
    s.open_stream(StreamKey(3), video(13, 2, 7)).unwrap();
    s.push_object(StreamKey(3), obj(join, 32_000)).unwrap();
    let first = drain(&mut s, join, &mut at(rate));
    let mut rest = Vec::new();
    for frame in 1..=7u64 {
        let now = join + ms(33 * frame);
        for (key, _, _, len) in tiers {
            // The group may have been dropped: later frames then find no stream.
            let _ = s.push_object(StreamKey(key), obj(now, len));
        }
        rest.extend(drain(&mut s, now, &mut at(rate)));
    }
    if let Some(wake) = s.poll_timeout() {
        rest.extend(drain(&mut s, wake.max(join + ms(231)), &mut at(rate)));
    }
    (first, rest)
}

/// `late_720p`: on a path far above its key frame (loopback, 300 Mbit/s) the group starts
/// at once; on one that carries it at the rates of its first quarter second (3 Mbit/s) it
/// starts then, key frame and the frames pushed meanwhile; where it cannot keep up (1.2
/// Mbit/s, `rural`) it is dropped then, without a byte written.
#[test]
fn an_upper_tier_joining_after_the_tier_above_is_held_not_dropped_for_its_young_rate() {
    let (first, rest) = late_720p(300_000_000);
    assert_eq!(written_bytes(&first, 3), 32_004);
    assert!(not_writes(&first).is_empty(), "{:?}", not_writes(&first));
    assert_eq!(written_bytes(&rest, 3), 7 * 5_404);
    assert!(not_writes(&rest).is_empty(), "{:?}", not_writes(&rest));

    let (first, rest) = late_720p(3_000_000);
    assert_eq!(written_bytes(&first, 3), 0);
    assert!(not_writes(&first).is_empty(), "{:?}", not_writes(&first));
    assert_eq!(written_bytes(&rest, 3), 32_004 + 7 * 5_404);
    assert!(not_writes(&rest).is_empty(), "{:?}", not_writes(&rest));

    let (first, rest) = late_720p(1_200_000);
    assert_eq!(written_bytes(&first, 3), 0);
    assert!(not_writes(&first).is_empty(), "{:?}", not_writes(&first));
    assert_eq!(written_bytes(&rest, 3), 0);
    let abandoned = Action::Abandon { key: StreamKey(3), reason: DropReason::DeliveryTimeout };
    assert_eq!(not_writes(&rest), [&abandoned]);
}

/// On loopback (300 Mbit/s) 720p's key frame, 20 ms after 360p's, starts its group at once.
/// Its frames keep going while the rates fill in, including the one pushed when 360p has
/// been offered a quarter second and 720p not yet (251 ms): the group was reset there for
/// its young reading, a second of the top tier lost on a path hundreds of times its rate.
#[test]
fn a_started_upper_tier_group_is_not_cut_while_its_own_rate_is_younger_than_the_tier_above() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let at = || SendBudget { send_rate_bps: 300_000_000, ..unlimited() };
    let mut written = 0;
    for (key, tier, len) in [(1, 0, 3_200), (2, 1, 11_800)] {
        s.open_stream(StreamKey(key), video(10 + key, tier, 7)).unwrap();
        s.push_object(StreamKey(key), obj(t0, len)).unwrap();
    }
    drain(&mut s, t0, &mut at());
    s.open_stream(StreamKey(3), video(13, 2, 7)).unwrap();
    s.push_object(StreamKey(3), obj(t0 + ms(20), 32_000)).unwrap();
    let actions = drain(&mut s, t0 + ms(20), &mut at());
    written += written_bytes(&actions, 3);
    assert_eq!(written, 32_004, "the key frame at once");
    for frame in 1..=15u64 {
        let lower = t0 + ms(33 * frame);
        s.push_object(StreamKey(1), obj(lower, 600)).unwrap();
        s.push_object(StreamKey(2), obj(lower, 2_200)).unwrap();
        drain(&mut s, lower, &mut at());
        let now = lower + ms(20);
        s.push_object(StreamKey(3), obj(now, 5_400)).unwrap();
        let actions = drain(&mut s, now, &mut at());
        assert!(not_writes(&actions).is_empty(), "frame {frame}: {:?}", not_writes(&actions));
        written += written_bytes(&actions, 3);
    }
    assert_eq!(written, 32_004 + 15 * 5_404);
}

/// The window per round trip reads 1.6 Mbit/s on a path that carries far less: a 720p
/// group offered 1.5 Mbit/s passes the check with the time its objects may wait, and is
/// then cut for lateness (an object too old on arrival here). Its next group is not
/// started while the path reads under 1.25 times what it read then; at 2.1 Mbit/s it is.
#[test]
fn an_upper_tier_cut_for_lateness_waits_for_a_faster_path() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut key = 1000;
    for i in 0..20 {
        offer_100ms(&mut s, t0 + ms(100 * i), &mut key, true, &mut unlimited());
    }
    let now = t0 + ms(2_000);
    let at = |rate: u64| SendBudget { send_rate_bps: rate, ..unlimited() };
    s.open_stream(StreamKey(1), video(13, 2, 500)).unwrap();
    s.push_object(StreamKey(1), obj(now, 20_000)).unwrap();
    assert_eq!(written_bytes(&drain(&mut s, now, &mut at(1_600_000)), 1), 20_004);
    let late = obj(now + ms(10), 5_400).capture_age(ms(900));
    s.push_object(StreamKey(1), late).unwrap();
    let actions = drain(&mut s, now + ms(10), &mut at(1_600_000));
    let cut = Action::Reset {
        key: StreamKey(1),
        code: reset_code::DELIVERY_TIMEOUT,
        reason: DropReason::CaptureAge,
    };
    assert_eq!(not_writes(&actions), [&cut]);
    for (stream, rate, starts) in
        [(2, 1_600_000, false), (3, 1_900_000, false), (4, 2_100_000, true)]
    {
        let then = now + ms(33 * stream);
        s.open_stream(StreamKey(stream), video(13, 2, 500 + stream)).unwrap();
        s.push_object(StreamKey(stream), obj(then, 20_000)).unwrap();
        let written = written_bytes(&drain(&mut s, then, &mut at(rate)), stream);
        assert_eq!(written > 0, starts, "group at {rate} bit/s");
    }
}

/// 720p alone on a session (a player fixed on it) under a delay-based controller, the link
/// 3 Mbit/s but for a cut to 600 kbit/s over `cut` (ms). The rate the scheduler reads is
/// the link's while QUIC has bytes to send, and stays what it last was while the sender
/// idles: an idle sender's window neither grows nor shrinks. 30 fps, one-second groups of a
/// 32 kB key frame and 5 kB frames (1.4 Mbit/s), a 1 s delivery timeout. Returns the 720p
/// bytes written in each second of the run, and the groups written to.
fn alone_720p_over_a_cut(cut: std::ops::Range<u64>, end: u64) -> (Vec<u64>, Vec<u64>) {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut read = 3_000_000u64;
    let mut unsent = 0u64;
    let mut per_second = vec![0u64; end.div_ceil(1000) as usize];
    let mut groups = Vec::new();
    let mut key = None;
    for ms in 0..end {
        let now = t0 + Duration::from_millis(ms);
        let link = if cut.contains(&ms) { 600_000 } else { 3_000_000 };
        let frame = (ms * 30).div_ceil(1000);
        if frame * 1000 / 30 == ms {
            let group = frame / 30;
            if frame % 30 == 0 {
                if let Some(old) = key.take() {
                    let _ = s.finish_stream(old);
                }
                s.open_stream(StreamKey(group), video(13, 2, group)).unwrap();
                key = Some(StreamKey(group));
            }
            let len = if frame % 30 == 0 { 32_000 } else { 5_000 };
            // Pushing to a stream already ended fails; its frames still count as offered.
            let _ = s.push_object(StreamKey(group), obj(now, len));
        }
        let cwnd = read / 8 * 80 / 1000;
        let mut b =
            SendBudget { cwnd, cwnd_available: cwnd, buffered: unsent, send_rate_bps: read };
        for a in drain(&mut s, now, &mut b) {
            if let Action::Write { key, chunk, .. } = a {
                unsent += chunk.len() as u64;
                per_second[(ms / 1000) as usize] += chunk.len() as u64;
                if groups.last() != Some(&key.0) {
                    groups.push(key.0);
                }
            }
        }
        if unsent > 0 {
            read = link;
        }
        unsent = unsent.saturating_sub(link / 8 / 1000);
    }
    (per_second, groups)
}

/// After the cut, nothing but the held 720p would flow: the rate read stays the cut's, so
/// the level's offered rate never passes the check again, and a group cut for lateness
/// held the tier for ten seconds on top (`FAILED_HOLD`): the picture stayed frozen after the
/// link recovered (the browser's `playout-drain`). Now a group of it starts as a probe once
/// the tier has been quiet for a second (two after a probe that failed), so 720p is back
/// within three seconds of the link; during the cut at most one probe in about three
/// seconds is tried.
#[test]
fn a_tier_held_alone_on_its_session_comes_back_when_the_link_does() {
    for restore in [12_500, 14_000, 15_500] {
        let (per_second, groups) = alone_720p_over_a_cut(4_000..restore, 22_000);
        println!(
            "restored at {restore} ms: 720p bytes per second {per_second:?}, groups {groups:?}"
        );
        assert!(per_second[1] > 150_000, "before the cut: {per_second:?}");
        // Whole seconds of 720p from three seconds after the restore on.
        let back = (restore as usize + 3_000).div_ceil(1000);
        for second in back..22 {
            assert!(per_second[second] > 150_000, "second {second}: {per_second:?}");
        }
        // During the cut, from its second second on: about one probe per three seconds.
        let cut = 5..restore / 1000;
        let probes = groups.iter().filter(|g| cut.contains(*g)).count() as u64;
        assert!(probes <= cut.end.div_ceil(3), "{probes} groups started in the cut: {groups:?}");
    }
}

/// The probe is for a tier that is all its session sends. Where the levels above are
/// written at a quarter or more of what the held tier is offered (audio, 180p and 360p at
/// 750 kbit/s against 720p's 1.5 Mbit/s), their traffic keeps the path's reading current,
/// and 720p stays held for as long as it does not fit (600 kbit/s read here); offered
/// alone, a group of it starts after a second of quiet.
#[test]
fn a_held_tier_is_probed_only_when_little_else_is_sent() {
    let hd = TrackClass::Video { tier: 2 };
    for lower in [true, false] {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        let mut key = 1000;
        let mut sent_at_2s = 0;
        for i in 0..50 {
            let at = t0 + ms(100 * i);
            if i == 20 {
                sent_at_2s = s.stats().sent(hd).objects;
            }
            // 600 kbit/s read: 720p (1.5 Mbit/s offered) does not keep up, alone or not.
            let mut b = SendBudget { send_rate_bps: 600_000, ..unlimited() };
            if lower {
                offer_100ms(&mut s, at, &mut key, true, &mut b);
                continue;
            }
            s.open_stream(StreamKey(key), video(13, 2, key)).unwrap();
            s.push_object(StreamKey(key), obj(at, 18_750)).unwrap();
            drain(&mut s, at, &mut b);
            key += 1;
        }
        let sent = s.stats().sent(hd).objects - sent_at_2s;
        if lower {
            assert_eq!(sent, 0, "720p started with the levels above busy");
        } else {
            assert!(sent > 0, "720p alone was never probed");
        }
    }
}

/// The whole ladder on one session under a delay-based controller: audio (20 ms frames),
/// 180p, 360p and 720p at 30 fps in one-second groups (key frames of 3.2, 11.8 and 32 kB;
/// about 40 kbit/s, 260, 510 and 1 420 kbit/s), a 1 s delivery timeout for video. The link
/// runs at `before` (bit/s) until `cut.start` (ms), at 1 Mbit/s over `cut`, and at 3 Mbit/s
/// after it. The rate the scheduler reads is modelled on what was traced on `step`: while
/// bytes wait for the link, the delivery rate counting bytes sent into its buffer, 1.7
/// times the link; while the session is app-limited, the window at twice what it sends and
/// never under 1.9 Mbit/s before the cut and `idle_read` from its start on (1.9 Mbit/s
/// traced), whether the link is cut or not. Returns, per
/// 720p group, whether it was written whole (`Finish`), cut or dropped (`false`), or never
/// started (absent).
fn ladder_over_a_cut(
    before: u64,
    cut: std::ops::Range<u64>,
    end: u64,
    idle_read: u64,
) -> std::collections::BTreeMap<u64, bool> {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    // (track, tier, key frame, frame)
    let tiers = [(11, 0u8, 3_200, 1_000), (12, 1, 11_800, 1_800), (13, 2, 32_000, 5_000)];
    let key_of = |track: u64, group: u64| StreamKey(track * 100_000 + group);
    let mut groups = std::collections::BTreeMap::new();
    let mut read = 2_000_000u64;
    let mut unsent = 0u64;
    let mut recent: std::collections::VecDeque<(u64, u64)> = Default::default();
    let mut audio_key = 1u64;
    for ms in 0..end {
        let now = t0 + Duration::from_millis(ms);
        let link = if ms < cut.start {
            before
        } else if cut.contains(&ms) {
            1_000_000
        } else {
            3_000_000
        };
        if ms % 20 == 0 {
            s.open_stream(StreamKey(audio_key), audio(10, audio_key)).unwrap();
            s.push_object(StreamKey(audio_key), obj(now, 96)).unwrap();
            s.finish_stream(StreamKey(audio_key)).unwrap();
            audio_key += 1;
        }
        let frame = (ms * 30).div_ceil(1000);
        if frame * 1000 / 30 == ms {
            let group = frame / 30;
            for (track, tier, key_len, len) in tiers {
                if frame % 30 == 0 {
                    if group > 0 {
                        // Ending a stream that was cut fails; that is fine.
                        let _ = s.finish_stream(key_of(track, group - 1));
                    }
                    s.open_stream(key_of(track, group), video(track, tier, group)).unwrap();
                }
                let len = if frame % 30 == 0 { key_len } else { len };
                // Pushing to a stream already ended fails; its frames still count as offered.
                let _ = s.push_object(key_of(track, group), obj(now, len));
            }
        }
        let cwnd = read / 8 * 80 / 1000;
        let mut b =
            SendBudget { cwnd, cwnd_available: cwnd, buffered: unsent, send_rate_bps: read };
        let mut written = 0;
        for a in drain(&mut s, now, &mut b) {
            match a {
                Action::Write { key, chunk, .. } => {
                    written += chunk.len() as u64;
                    if key.0 / 100_000 == 13 {
                        groups.entry(key.0 % 100_000).or_insert(false);
                    }
                }
                Action::Finish { key } if key.0 / 100_000 == 13 => {
                    groups.insert(key.0 % 100_000, true);
                }
                Action::Reset { key, .. } | Action::Abandon { key, .. }
                    if key.0 / 100_000 == 13 && groups.contains_key(&(key.0 % 100_000)) =>
                {
                    groups.insert(key.0 % 100_000, false);
                }
                _ => {}
            }
        }
        unsent += written;
        recent.push_back((ms, written));
        while recent.front().is_some_and(|(at, _)| at + 500 <= ms) {
            recent.pop_front();
        }
        unsent = unsent.saturating_sub(link / 8 / 1000);
        read = if unsent > 0 {
            link / 10 * 17
        } else {
            let sent_bps = recent.iter().map(|(_, b)| b).sum::<u64>() * 8 * 2;
            (2 * sent_bps).max(if ms < cut.start { 1_900_000 } else { idle_read })
        };
    }
    groups
}

/// `step` with the whole ladder: 720p is cut for lateness in the cut while the rate read
/// is the delivery rate's 1.7 Mbit/s, and held (`FAILED_HOLD`) until the path reads a
/// quarter more; with 720p held the app-limited window reads 1.9 Mbit/s whether the link is
/// cut or not, so without a probe the hold ran its ten seconds past the restore. The link
/// carried 720p before the cut, so the held tier is probed though the levels above are busy,
/// and it is back within three seconds of the restore. On `rural` (1 Mbit/s throughout) the
/// link never carried 720p: it gets no more tries than the hold's, one per ten seconds.
#[test]
fn a_held_tier_the_link_carried_comes_back_after_the_cut_with_the_ladder_busy() {
    for restore in [9_000, 9_500, 10_200] {
        let groups = ladder_over_a_cut(3_000_000, 4_000..restore, 18_000, 1_900_000);
        println!("restored at {restore} ms: 720p groups (whole?) {groups:?}");
        assert!(groups.range(1..4).all(|(_, whole)| *whole), "before the cut: {groups:?}");
        assert!(groups.range(5..=(restore / 1000 - 1)).any(|(_, whole)| !*whole), "{groups:?}");
        // Every group whole from three seconds after the restore on.
        let back = (restore + 3_000) / 1000;
        for g in back..17 {
            assert_eq!(groups.get(&g), Some(&true), "group {g}: {groups:?}");
        }
    }
    let groups = ladder_over_a_cut(1_000_000, 0..18_000, 18_000, 1_900_000);
    println!("1 Mbit/s throughout: 720p groups (whole?) {groups:?}");
    assert!(groups.values().all(|whole| !*whole), "{groups:?}");
    let tried = groups.range(2..18).count();
    assert!(tried <= 2, "{tried} groups of 720p started on a link that never carried it");
}

/// The probe of a carried tier stands in for `FAILED_HOLD`'s stale reading only. Where the
/// reading itself says the tier cannot keep up (an app-limited window of 1.2 Mbit/s, say a
/// window held low by late acknowledgements), no group of 720p is started: a probe would
/// only deliver late what the reading says cannot leave in time.
#[test]
fn a_carried_tier_is_not_probed_while_the_reading_is_too_low_for_it() {
    let groups = ladder_over_a_cut(3_000_000, 4_000..10_000, 18_000, 1_200_000);
    println!("720p groups (whole?) {groups:?}");
    assert!(groups.range(1..4).filter(|(_, whole)| **whole).count() == 3, "{groups:?}");
    let tried = groups.range(6..18).count();
    assert_eq!(tried, 0, "720p started on a reading too low for it: {groups:?}");
}
