//! A subscriber joining a track the relay does not hold yet is answered as soon as the
//! relay's upstream SUBSCRIBE and joining FETCH are, and gets the current group's objects
//! as they reach the relay, not once the whole upstream fetch has arrived. On a lossy
//! uplink each lost packet of the publisher's fetch stream holds its rest back for a
//! loss-recovery round (about half a second on `congested`): waiting for the whole fetch
//! held every subscriber of the track for up to the relay's 2 s limit. Here the publisher
//! sends the first objects of its fetch response and holds the rest back: the subscriber
//! must be answered, and see those first objects, well within that limit, then get the rest
//! in order once it is sent, and the live objects after them; and the fetched group reaches
//! the joiner even when live groups filled the relay's cache before it came.

mod common;

use std::time::Duration;

use common::*;
use tiermesh_client::moq::{Event, FetchResponse, SubscribeOptions};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::Location;
use tokio::sync::mpsc;

/// Objects of the current group (group 0) published before the relay subscribes.
const PUBLISHED: u64 = 10;

/// Objects the publisher's fetch response carries at once; the rest is held back.
const FIRST: u64 = 3;

/// How soon the subscriber must be answered and see the first objects: well inside the 2 s
/// the relay allows its upstream joining fetch, which it used to wait out.
const PROMPT: Duration = Duration::from_millis(1000);

/// A publisher of `ns()` at `relay` answering the relay's SUBSCRIBE with `largest` and its
/// joining FETCH with the first `first` objects of group 0; hands out the subscription's
/// writer and the fetch response (to send the rest on).
async fn publisher_holding_its_fetch(
    relay: &tiermesh_relay::RelayHandle,
    largest: Location,
    first: u64,
) -> (
    tiermesh_client::moq::Connection,
    mpsc::UnboundedReceiver<tiermesh_client::moq::TrackWriter>,
    mpsc::UnboundedReceiver<FetchResponse>,
) {
    let publisher = connect(relay, "moqt").await;
    within("publish_namespace", publisher.publish_namespace(ns(), None)).await.unwrap();
    let (writers_tx, writers) = mpsc::unbounded_channel();
    let (fetch_tx, fetches) = mpsc::unbounded_channel::<FetchResponse>();
    let p = publisher.clone();
    tokio::spawn(async move {
        while let Some(e) = p.next_event().await {
            match e {
                Event::Subscribe(r) => {
                    if let Ok(w) = r.accept(Extensions::default(), Some(largest)).await {
                        let _ = writers_tx.send(w);
                    }
                }
                Event::Fetch(f) => {
                    let Ok(mut resp) = f.accept(false, largest, Extensions::default()).await else {
                        continue;
                    };
                    for o in 0..first {
                        resp.write(&object(0, o)).unwrap();
                    }
                    let _ = fetch_tx.send(resp);
                }
                _ => {}
            }
        }
    });
    (publisher, writers, fetches)
}

#[tokio::test]
async fn joiner_is_answered_while_the_upstream_fetch_still_fills() {
    let relay = relay(config()).await;
    let largest = Location::new(0, PUBLISHED - 1);
    let (_publisher, mut writers, mut fetches) =
        publisher_holding_its_fetch(&relay, largest, FIRST).await;

    let sub = connect(&relay, "moqt").await;
    let (mut reader, fetch) = within_for(
        "the joiner answered while the upstream fetch is held back",
        PROMPT,
        sub.join(track("video"), SubscribeOptions::default(), 0),
    )
    .await
    .unwrap();
    let mut fetch = fetch.expect("the relay's joining fetch accepted");
    assert_eq!(reader.largest(), Some(Location::new(0, PUBLISHED - 1)));
    for o in 0..FIRST {
        let got = within_for("a first object", PROMPT, fetch.next()).await.expect("fetch ended");
        assert_eq!((got.group_id, got.object_id), (0, o), "in order");
        assert_eq!(got.payload, payload(0, o), "same bytes");
    }

    // The rest of the upstream fetch arrives: the joiner's fetch carries it, in order, and
    // ends with it; the live objects follow on the subscription.
    let mut resp = within("the upstream fetch", fetches.recv()).await.unwrap();
    for o in FIRST..PUBLISHED {
        resp.write(&object(0, o)).unwrap();
    }
    resp.finish();
    for o in FIRST..PUBLISHED {
        let got = within("a held-back object", fetch.next()).await.expect("fetch ended");
        assert_eq!((got.group_id, got.object_id), (0, o), "in order");
    }
    assert!(within("the fetch's end", fetch.next()).await.is_none(), "the fetch ends");
    let w = within("upstream at the publisher", writers.recv()).await.unwrap();
    let mut s = w.open_subgroup(0, 0, None);
    s.write(PUBLISHED, &ext(0, PUBLISHED), ObjectStatus::Normal, payload(0, PUBLISHED)).unwrap();
    let live = within("the live object", reader.next_object()).await.expect("track ended");
    assert_eq!((live.group_id, live.object_id), (0, PUBLISHED));
    relay.shutdown().await;
}

/// Live groups that arrive before the fetched one (audio: a group per 20 ms) fill the
/// relay's cache of 2 groups, so the fetched group is not kept there when it comes: the
/// joiner's fetch still carries it, from the fill itself.
#[tokio::test]
async fn joiner_gets_the_fetched_group_after_live_groups_filled_the_cache() {
    let relay = relay(config()).await;
    let (_publisher, mut writers, mut fetches) =
        publisher_holding_its_fetch(&relay, Location::new(0, 0), 0).await;
    let sub = connect(&relay, "moqt").await;
    let (mut reader, fetch) =
        within("join", sub.join(track("audio"), SubscribeOptions::default(), 0)).await.unwrap();
    let mut fetch = fetch.expect("the relay's joining fetch accepted");
    let w = within("upstream at the publisher", writers.recv()).await.unwrap();
    for g in 1..4 {
        write_group(&w, g, 0..1, false);
        let live = within("a live group", reader.next_object()).await.expect("track ended");
        assert_eq!((live.group_id, live.object_id), (g, 0));
    }
    let mut resp = within("the upstream fetch", fetches.recv()).await.unwrap();
    resp.write(&object(0, 0)).unwrap();
    resp.finish();
    let got = within("the fetched group", fetch.next()).await.expect("the fetched object");
    assert_eq!((got.group_id, got.object_id), (0, 0));
    assert_eq!(got.payload, payload(0, 0), "same bytes");
    assert!(within("the fetch's end", fetch.next()).await.is_none(), "the fetch ends");
    relay.shutdown().await;
}
