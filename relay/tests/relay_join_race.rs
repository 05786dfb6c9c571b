//! Guards joining races: many subscribers SUBSCRIBE + relative Joining FETCH at once, right
//! as the relay opens its upstream subscription and the publisher starts sending. Every join
//! is answered within 2 s, and the joining fetch plus the live subscription together carry
//! the current group from object 0 with nothing missing at the join point.

mod common;

use std::time::Duration;

use common::*;
use tiermesh_client::moq::SubscribeOptions;
use tiermesh_proto::data::ObjectStatus;

/// Objects the publisher sends in group 0.
const OBJECTS: u64 = 60;
/// Concurrent joiners.
const JOINERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_right_after_publishing_starts_are_all_answered_without_gaps() {
    for round in 0..3 {
        let relay = relay(config()).await;
        let mut publisher = publisher(&relay, "moqt", None).await;
        let mut clients = Vec::new();
        for i in 0..JOINERS {
            clients.push(connect(&relay, if i % 2 == 0 { "moqt" } else { "https" }).await);
        }
        // The publisher writes as soon as the relay subscribes, a few objects per ms.
        let writer = tokio::spawn(async move {
            let w = within("upstream", publisher.writers.recv()).await.unwrap();
            let mut s = w.open_subgroup(0, 0, None);
            for o in 0..OBJECTS {
                s.write(o, &ext(0, o), ObjectStatus::Normal, payload(0, o)).unwrap();
                if o % 3 == 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (publisher, w, s)
        });
        let mut joins = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let c = c.clone();
            joins.push(tokio::spawn(async move {
                let (mut live, fetch) = within_for(
                    &format!("join {i} answered"),
                    Duration::from_secs(2),
                    c.join(track("video"), SubscribeOptions::default(), 0),
                )
                .await
                .unwrap_or_else(|e| panic!("join {i} refused: {e}"));
                let mut seen = Vec::new();
                if let Ok(mut f) = fetch {
                    while let Some(o) = within("fetched object", f.next()).await {
                        assert_eq!(o.group_id, 0);
                        seen.push(o.object_id);
                    }
                }
                let fetched = seen.len();
                while seen.last().is_none_or(|l| *l + 1 < OBJECTS) {
                    let o = within(&format!("live object for joiner {i}"), live.next_object())
                        .await
                        .expect("track ended early");
                    assert_eq!(o.payload, payload(o.group_id, o.object_id));
                    seen.push(o.object_id);
                }
                assert_eq!(
                    seen,
                    (0..OBJECTS).collect::<Vec<_>>(),
                    "joiner {i}: fetch ({fetched} objects) then live, from object 0 with no gap"
                );
                (live, c)
            }));
        }
        let mut kept = Vec::new();
        for j in joins {
            kept.push(j.await.unwrap_or_else(|e| panic!("round {round}: {e}")));
        }
        let _held = within("publisher done", writer).await.unwrap();
        drop(kept);
        relay.shutdown().await;
    }
}

/// The broadcast a synthetic publisher serves: a first viewer subscribes until it sees a
/// live object on every track and leaves (the relay releases its upstream), then a burst of
/// viewers joins every track at once. Each join is answered within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_as_the_first_viewer_leaves_is_all_answered() {
    use tiermesh_client::publish::{Publisher, now_us};
    use tiermesh_client::synthetic::BroadcastSpec;
    use tiermesh_proto::types::FullTrackName;
    let tracks = ["audio", "video/180p"];
    for round in 0..3 {
        let relay = relay(config()).await;
        let pconn = connect(&relay, "moqt").await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = tokio::spawn(async move {
            let mut p = Publisher::new(ns(), BroadcastSpec::default(), now_us(), None);
            let mut tx = Some(tx);
            let _ = p
                .serve(&pconn, std::future::pending(), || {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                })
                .await;
        });
        within("published", rx).await.unwrap();
        let mut clients = Vec::new();
        for i in 0..JOINERS {
            clients.push(connect(&relay, if i % 2 == 0 { "moqt" } else { "https" }).await);
        }
        let probe = connect(&relay, "moqt").await;
        for name in tracks {
            let t = FullTrackName::new(ns(), name).unwrap();
            let mut r = within("probe", probe.subscribe(t, SubscribeOptions::largest_object()))
                .await
                .unwrap();
            within("probe object", r.next_object()).await.unwrap();
        }
        probe.close(tiermesh_proto::TerminationCode::NoError, "probe done");
        let mut joins = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            for name in tracks {
                let c = c.clone();
                joins.push(tokio::spawn(async move {
                    let t = FullTrackName::new(ns(), name).unwrap();
                    let (mut live, fetch) = within_for(
                        &format!("round {round}: join {i} {name} answered"),
                        Duration::from_secs(2),
                        c.join(t, SubscribeOptions::default(), 0),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("join {i} {name} refused: {e}"));
                    let mut fetch =
                        fetch.unwrap_or_else(|e| panic!("joining fetch {i} {name} refused: {e}"));
                    let mut fetched = Vec::new();
                    while let Some(o) = within("fetched object", fetch.next()).await {
                        fetched.push(o.location());
                    }
                    let first = within("live object", live.next_object())
                        .await
                        .expect("live object")
                        .location();
                    let last = *fetched
                        .last()
                        .unwrap_or_else(|| panic!("joiner {i} {name}: the join point fetched"));
                    assert_eq!(fetched[0].object.0, 0, "joiner {i} {name}: from object 0");
                    assert!(
                        (first.group == last.group && first.object.0 == last.object.0 + 1)
                            || (first.group > last.group && first.object.0 == 0),
                        "joiner {i} {name}: live {first:?} follows fetched {last:?}"
                    );
                    (live, c)
                }));
            }
        }
        let mut kept = Vec::new();
        for j in joins {
            kept.push(j.await.unwrap_or_else(|e| panic!("round {round}: {e}")));
        }
        drop(kept);
        served.abort();
        relay.shutdown().await;
    }
}
