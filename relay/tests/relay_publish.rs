//! Guards tracks pushed with PUBLISH: the relay accepts the publisher's PUBLISH, serves
//! subscribers from it (and reports its namespace to SUBSCRIBE_NAMESPACE), and a
//! subscriber's AbsoluteRange filter ends with PUBLISH_DONE (SUBSCRIPTION_ENDED) once its
//! end group has passed.

mod common;

use common::*;
use tiermesh_client::moq::{NamespaceEvent, PublishOptions, SubscribeOptions, TrackEvent};
use tiermesh_proto::message::PublishDoneCode;
use tiermesh_proto::types::{GroupId, Location, SubscriptionFilter, TrackNamespace};

#[tokio::test]
async fn pushed_track_reaches_subscribers_and_range_filters_end() {
    let relay = relay(config()).await;
    let watcher = connect(&relay, "moqt").await;
    let mut ns_sub = within(
        "subscribe_namespace",
        watcher.subscribe_namespace(TrackNamespace::from_path("clinic").unwrap(), None),
    )
    .await
    .unwrap();
    let publisher = connect(&relay, "https").await;
    let w = within("publish", publisher.publish(track("audio"), PublishOptions::default()))
        .await
        .unwrap();
    assert_eq!(within("namespace", ns_sub.next()).await, Some(NamespaceEvent::Added(ns())));
    eventually("upstream", || relay.upstream_subscriptions() == 1).await;

    let sub = connect(&relay, "moqt").await;
    let mut all = within("subscribe", sub.subscribe(track("audio"), SubscribeOptions::default()))
        .await
        .unwrap();
    let range = SubscribeOptions {
        filter: Some(SubscriptionFilter::AbsoluteRange {
            start: Location::new(1, 0),
            end_group: GroupId(2),
        }),
        ..Default::default()
    };
    let mut ranged =
        within("subscribe", sub.subscribe(track("audio-copy"), SubscribeOptions::default()))
            .await
            .err();
    assert!(ranged.take().is_some(), "a track nobody publishes does not exist");
    let other = connect(&relay, "https").await;
    let mut ranged = within("subscribe", other.subscribe(track("audio"), range)).await.unwrap();
    for g in 0..4 {
        write_group(&w, g, 0..3, false);
    }
    expect_objects(&mut all, 12).await;
    let mut got = Vec::new();
    let done = within("range end", async {
        loop {
            match ranged.next().await {
                Some(TrackEvent::Object(o)) => got.push(o.location()),
                Some(TrackEvent::Done(d)) => break d,
                Some(TrackEvent::StreamEnd { .. }) => {}
                None => panic!("no PUBLISH_DONE"),
            }
        }
    })
    .await;
    assert_eq!(done.code, PublishDoneCode::SubscriptionEnded);
    // Objects in flight may trail PUBLISH_DONE; collect them.
    while got.len() < 6 {
        match within("trailing objects", ranged.next()).await {
            Some(TrackEvent::Object(o)) => got.push(o.location()),
            Some(_) => {}
            None => break,
        }
    }
    got.sort();
    let want: Vec<Location> =
        (1..=2).flat_map(|g| (0..3).map(move |o| Location::new(g, o))).collect();
    assert_eq!(got, want, "exactly groups 1 and 2");
    relay.shutdown().await;
}
