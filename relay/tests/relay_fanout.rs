//! Guards the relay's fan-out: one publisher, three subscribers (raw QUIC and WebTransport)
//! get every object in order with the same bytes, through one upstream subscription, and
//! the metrics count objects and bytes in and out.

mod common;

use common::*;
use tiermesh_client::moq::SubscribeOptions;
use tiermesh_relay::metrics::TrackClass;

#[tokio::test]
async fn one_publisher_three_subscribers_one_upstream() {
    let relay = relay(config()).await;
    let mut publisher = publisher(&relay, "moqt", None).await;
    let mut readers = Vec::new();
    for scheme in ["moqt", "https", "moqt"] {
        let sub = connect(&relay, scheme).await;
        let r = within("subscribe", sub.subscribe(track("video"), SubscribeOptions::default()))
            .await
            .unwrap();
        readers.push((sub, r));
    }
    // Exactly one SUBSCRIBE reached the publisher.
    let w = within("upstream", publisher.writers.recv()).await.unwrap();
    assert_eq!(relay.upstream_subscriptions(), 1);
    assert_eq!(relay.tracks(), 1);
    assert!(publisher.writers.try_recv().is_err(), "a second upstream subscription");
    for g in 0..4 {
        write_group(&w, g, 0..25, false);
    }
    for (_, r) in readers.iter_mut() {
        let seen = expect_objects(r, 100).await;
        assert_eq!(seen.len(), 100);
    }
    let m = relay.metrics();
    // No DEFAULT PUBLISHER PRIORITY: 128, which tiermesh's ladder numbering calls a video tier.
    let class = TrackClass::from_publisher_priority(128);
    eventually("metrics", || m.objects_out(class) == 300).await;
    assert_eq!(m.objects_in(class), 100);
    assert_eq!(m.subscriptions.get(), 3);
    assert_eq!(m.forward_delay.count(), 300, "every forwarded object's delay is measured");
    assert_eq!(m.capture_age.count(), 100, "every received object's capture age is measured");
    let rendered = m.render();
    let bytes_in: u64 = (0..4).flat_map(|g| (0..25).map(move |o| payload(g, o).len() as u64)).sum();
    assert!(rendered.contains(&format!("{bytes_in}")), "bytes in counted:\n{rendered}");
    // Subscribers leaving release the upstream subscription.
    drop(readers);
    eventually("upstream released", || relay.upstream_subscriptions() == 0).await;
    within("unsubscribed", w.closed()).await;
    assert_eq!(relay.tracks(), 0);
    relay.shutdown().await;
}

#[tokio::test]
async fn objects_are_forwarded_before_their_group_ends() {
    let relay = relay(config()).await;
    let mut publisher = publisher(&relay, "https", None).await;
    let sub = connect(&relay, "https").await;
    let mut r = within("subscribe", sub.subscribe(track("audio"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = within("upstream", publisher.writers.recv()).await.unwrap();
    // The group's stream stays open: each object must still arrive on its own.
    let mut stream = write_group(&w, 3, 0..1, true).unwrap();
    expect_objects(&mut r, 1).await;
    stream.write(1, &ext(3, 1), tiermesh_proto::data::ObjectStatus::Normal, payload(3, 1)).unwrap();
    expect_objects(&mut r, 1).await;
    drop(stream);
    relay.shutdown().await;
}
