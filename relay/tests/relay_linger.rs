//! Guards the linger: a publisher that reconnects within the linger period continues its
//! subscribers' tracks without PUBLISH_DONE (also when its old session has not been seen to
//! die yet: the new publisher takes the track over); one that does not comes back makes the
//! relay send PUBLISH_DONE once the linger is over.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tiermesh_client::moq::{SubscribeOptions, TrackEvent, WriterEnd};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::message::PublishDoneCode;

#[tokio::test]
async fn publisher_reconnecting_within_linger_continues_the_track() {
    let mut c = config();
    c.linger = Duration::from_secs(5);
    let relay = relay(c).await;
    let mut first = publisher(&relay, "moqt", None).await;
    let sub = connect(&relay, "https").await;
    let mut r = within("subscribe", sub.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = within("upstream", first.writers.recv()).await.unwrap();
    write_group(&w, 1, 0..5, false);
    expect_objects(&mut r, 5).await;
    first.conn.close(TerminationCode::NoError, "network change");
    within("publisher gone", first.conn.closed()).await;
    eventually("upstream lost", || relay.upstream_subscriptions() == 0).await;

    let mut second = publisher(&relay, "moqt", None).await;
    let w2 = within("resubscribed", second.writers.recv()).await.unwrap();
    write_group(&w2, 2, 0..5, false);
    let mut got = 0;
    while got < 5 {
        match within("continued", r.next()).await.expect("track ended") {
            TrackEvent::Object(o) => {
                assert_eq!(o.group_id, 2);
                got += 1;
            }
            TrackEvent::StreamEnd { .. } => {}
            TrackEvent::Done(d) => panic!("PUBLISH_DONE despite the publisher's return: {d:?}"),
        }
    }
    assert_eq!(relay.upstream_subscriptions(), 1);
    relay.shutdown().await;
}

/// A publisher whose old connection died silently (no close reaches the relay before the
/// idle timeout) reconnects: its new PUBLISH_NAMESPACE gets the relay's SUBSCRIBE at once,
/// the old upstream is released, objects the new one repeats are not forwarded twice and
/// the subscriber's same subscription continues.
#[tokio::test]
async fn publisher_reconnecting_before_its_old_session_dies_takes_the_track_over() {
    let relay = relay(config()).await;
    let mut first = publisher(&relay, "moqt", None).await;
    let sub = connect(&relay, "moqt").await;
    let mut r = within("subscribe", sub.subscribe(track("audio"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = within("upstream", first.writers.recv()).await.unwrap();
    write_group(&w, 1, 0..3, false);
    expect_objects(&mut r, 3).await;

    // The first publisher's session stays open but silent, as a dead link looks.
    let mut second = publisher(&relay, "moqt", None).await;
    let w2 = within("subscribed to the new publisher", second.writers.recv()).await.unwrap();
    assert_eq!(within("old upstream released", w.closed()).await, WriterEnd::Unsubscribed);
    // The new publisher repeats group 1 (duplicates), then goes on with group 2.
    write_group(&w2, 1, 0..3, false);
    write_group(&w2, 2, 0..4, false);
    let mut got = Vec::new();
    while got.len() < 4 {
        match within("continued", r.next()).await.expect("track ended") {
            TrackEvent::Object(o) => got.push((o.group_id, o.object_id)),
            TrackEvent::StreamEnd { .. } => {}
            TrackEvent::Done(d) => panic!("PUBLISH_DONE despite the new publisher: {d:?}"),
        }
    }
    assert_eq!(got, vec![(2, 0), (2, 1), (2, 2), (2, 3)], "no duplicate of group 1");
    assert_eq!(relay.upstream_subscriptions(), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn publisher_not_returning_ends_the_track_after_the_linger() {
    let linger = Duration::from_millis(600);
    let mut c = config();
    c.linger = linger;
    let relay = relay(c).await;
    let mut p = publisher(&relay, "moqt", None).await;
    let sub = connect(&relay, "moqt").await;
    let mut r = within("subscribe", sub.subscribe(track("audio"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = within("upstream", p.writers.recv()).await.unwrap();
    write_group(&w, 1, 0..3, false);
    expect_objects(&mut r, 3).await;
    p.conn.close(TerminationCode::NoError, "gone");
    let left = Instant::now();
    let done = within("PUBLISH_DONE", async {
        loop {
            match r.next().await {
                Some(TrackEvent::Done(d)) => break d,
                Some(_) => {}
                None => panic!("track ended without PUBLISH_DONE"),
            }
        }
    })
    .await;
    let waited = left.elapsed();
    assert_eq!(done.code, PublishDoneCode::TrackEnded);
    assert!(
        waited >= linger - Duration::from_millis(50),
        "PUBLISH_DONE after {waited:?}, before the linger"
    );
    assert!(waited < linger + Duration::from_secs(3), "PUBLISH_DONE only after {waited:?}");
    eventually("track forgotten", || relay.tracks() == 0).await;
    relay.shutdown().await;
}
