//! Guards GOAWAY on drain (every session hears it, the relay stops once they have left,
//! well before the grace period) and SUBSCRIBE_NAMESPACE (NAMESPACE for namespaces
//! published before and after, NAMESPACE_DONE when one goes away).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tiermesh_client::moq::{Event, NamespaceEvent};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::types::TrackNamespace;

#[tokio::test]
async fn drain_sends_goaway_and_waits_for_sessions_to_leave() {
    let mut c = config();
    c.goaway_grace = Duration::from_secs(8);
    let relay = relay(c).await;
    let clients = [connect(&relay, "moqt").await, connect(&relay, "https").await];
    let started = Instant::now();
    let drain = tokio::spawn(relay.drain());
    for c in &clients {
        match within("GOAWAY", c.next_event()).await {
            Some(Event::Goaway { uri }) => {
                assert_eq!(uri, "", "same URI: reconnect to the relay's address")
            }
            other => panic!("expected GOAWAY, got {other:?}"),
        }
        c.close(TerminationCode::NoError, "moving");
    }
    within("drain", drain).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "drain waited {:?}", started.elapsed());
}

#[tokio::test]
async fn drain_closes_sessions_that_stay_after_the_grace() {
    let mut c = config();
    c.goaway_grace = Duration::from_millis(300);
    let relay = relay(c).await;
    let stubborn = connect(&relay, "moqt").await;
    let drain = tokio::spawn(relay.drain());
    assert!(matches!(within("GOAWAY", stubborn.next_event()).await, Some(Event::Goaway { .. })));
    let reason = within("closed", stubborn.closed()).await;
    assert_eq!(reason.code(), Some(TerminationCode::GoawayTimeout.code()), "{reason}");
    within("drain", drain).await.unwrap();
}

#[tokio::test]
async fn subscribe_namespace_gets_present_and_future_namespaces() {
    let relay = relay(config()).await;
    let _first = publisher(&relay, "moqt", None).await;
    let watcher = connect(&relay, "https").await;
    let prefix = TrackNamespace::from_path("clinic").unwrap();
    let mut sub =
        within("subscribe_namespace", watcher.subscribe_namespace(prefix, None)).await.unwrap();
    assert_eq!(within("existing", sub.next()).await, Some(NamespaceEvent::Added(ns())));

    let other = TrackNamespace::from_path("clinic/room-7/dr-kim").unwrap();
    let second = connect(&relay, "moqt").await;
    within("publish_namespace", second.publish_namespace(other.clone(), None)).await.unwrap();
    assert_eq!(within("future", sub.next()).await, Some(NamespaceEvent::Added(other.clone())));

    // Outside the prefix: not reported.
    let third = connect(&relay, "moqt").await;
    within(
        "publish_namespace",
        third.publish_namespace(TrackNamespace::from_path("lab/x").unwrap(), None),
    )
    .await
    .unwrap();
    second.close(TerminationCode::NoError, "done");
    assert_eq!(within("gone", sub.next()).await, Some(NamespaceEvent::Removed(other)));
    relay.shutdown().await;
}
