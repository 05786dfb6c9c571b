//! Guards the relay's answers to TRACK_STATUS (from its track state, or forwarded to the
//! publisher when it holds no subscription), REQUEST_UPDATE from a subscriber (FORWARD
//! applied here and reflected upstream; NEW_GROUP_REQUEST passed upstream once per burst,
//! as draft-16 §9.2.2.9 says) and a standalone FETCH older than its cache (forwarded to
//! the publisher).

mod common;

use common::*;
use tiermesh_client::moq::{Connection, Event, SubscribeOptions, TrackWriter};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{MessageParams, RequestErrorCode};
use tiermesh_proto::types::{Location, RequestId};
use tiermesh_relay::RelayHandle;
use tokio::sync::mpsc;

/// What the test publisher saw.
#[derive(Debug)]
enum Seen {
    Writer(TrackWriter),
    Update(RequestId, MessageParams),
}

/// A publisher of `ns()` whose tracks declare `extensions`; it answers TRACK_STATUS with
/// LARGEST_OBJECT (9, 1) and FETCH with objects 0..3 of each group in range 0..=2.
async fn full_publisher(
    relay: &RelayHandle,
    extensions: Extensions,
) -> (Connection, mpsc::UnboundedReceiver<Seen>) {
    publish_serving(connect(relay, "moqt").await, move |c, tx| async move {
        while let Some(e) = c.next_event().await {
            match e {
                Event::Subscribe(r) => {
                    if let Ok(w) = r.accept(extensions.clone(), None).await {
                        let _ = tx.send(Seen::Writer(w));
                    }
                }
                Event::SubscriptionUpdate { request_id, params } => {
                    let _ = tx.send(Seen::Update(request_id, params));
                }
                Event::TrackStatus(r) => r.accept(MessageParams {
                    largest_object: Some(Location::new(9, 1)),
                    ..Default::default()
                }),
                Event::Fetch(f) => {
                    let end = Location::new(2, 3);
                    let Ok(mut resp) = f.accept(false, end, extensions.clone()).await else {
                        continue;
                    };
                    for g in 0..3 {
                        for o in 0..3 {
                            let _ = resp.write(&object(g, o));
                        }
                    }
                    resp.finish();
                }
                _ => {}
            }
        }
    })
    .await
}

async fn next_writer(rx: &mut mpsc::UnboundedReceiver<Seen>) -> TrackWriter {
    match within("upstream SUBSCRIBE", rx.recv()).await.unwrap() {
        Seen::Writer(w) => w,
        other => panic!("expected a SUBSCRIBE, got {other:?}"),
    }
}

async fn next_update(rx: &mut mpsc::UnboundedReceiver<Seen>) -> (RequestId, MessageParams) {
    match within("upstream REQUEST_UPDATE", rx.recv()).await.unwrap() {
        Seen::Update(id, p) => (id, p),
        other => panic!("expected a REQUEST_UPDATE, got {other:?}"),
    }
}

/// Track `name` of a namespace nobody publishes.
fn unpublished(name: &str) -> tiermesh_proto::types::FullTrackName {
    let ns = tiermesh_proto::types::TrackNamespace::from_path("elsewhere").unwrap();
    tiermesh_proto::types::FullTrackName::new(ns, name).unwrap()
}

/// Fails the test unless `r` is a refusal with DOES_NOT_EXIST.
fn assert_does_not_exist<T: std::fmt::Debug>(r: Result<T, tiermesh_client::moq::Error>) {
    assert!(
        matches!(
            r,
            Err(tiermesh_client::moq::Error::Rejected { code: RequestErrorCode::DoesNotExist, .. })
        ),
        "{r:?}"
    );
}

fn dynamic() -> Extensions {
    Extensions { dynamic_groups: Some(true), ..Default::default() }
}

#[tokio::test]
async fn track_status_from_the_track_state_or_the_publisher() {
    let relay = relay(config()).await;
    let (_p, mut seen) = full_publisher(&relay, Extensions::default()).await;
    let sub = connect(&relay, "moqt").await;

    // No subscription at the relay: forwarded, the publisher's answer comes back.
    let st = within("track status", sub.track_status(track("video"), MessageParams::default()))
        .await
        .unwrap();
    assert_eq!(st.largest_object, Some(Location::new(9, 1)));

    // With a subscription: answered from the relay's own state.
    let mut r = within("subscribe", sub.subscribe(track("audio"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = next_writer(&mut seen).await;
    write_group(&w, 4, 0..3, false);
    expect_objects(&mut r, 3).await;
    let st = within("track status", sub.track_status(track("audio"), MessageParams::default()))
        .await
        .unwrap();
    assert_eq!(st.largest_object, Some(Location::new(4, 2)));

    // No publisher for the namespace: DOES_NOT_EXIST.
    let other = unpublished("audio");
    let e = within("track status", sub.track_status(other, MessageParams::default())).await;
    assert_does_not_exist(e);
    relay.shutdown().await;
}

#[tokio::test]
async fn forward_zero_pauses_the_subscription_and_goes_upstream() {
    let relay = relay(config()).await;
    let (_p, mut seen) = full_publisher(&relay, Extensions::default()).await;
    let sub = connect(&relay, "moqt").await;
    let mut r = within("subscribe", sub.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = next_writer(&mut seen).await;
    write_group(&w, 1, 0..2, false);
    expect_objects(&mut r, 2).await;
    // A TRACK_STATUS round trip on the same session: the relay handled the update before it.
    let barrier = || async {
        within("barrier", sub.track_status(track("video"), MessageParams::default()))
            .await
            .unwrap();
    };

    // The only subscriber pauses: FORWARD 0 goes upstream.
    let pause = MessageParams { forward: Some(false), ..Default::default() };
    within("update", sub.request_update(r.request_id(), pause)).await.unwrap();
    barrier().await;
    let (id, p) = next_update(&mut seen).await;
    assert_eq!((id, p.forward), (w.request_id(), Some(false)), "FORWARD 0 reflected upstream");

    // A new subscriber wants objects: FORWARD 1 goes upstream (draft-16 §8.5).
    let watcher = connect(&relay, "moqt").await;
    let mut wr =
        within("subscribe", watcher.subscribe(track("video"), SubscribeOptions::largest_object()))
            .await
            .unwrap();
    let (_, p) = next_update(&mut seen).await;
    assert_eq!(p.forward, Some(true), "FORWARD 1 reflected upstream");

    // Written while the first subscriber is paused: only the watcher gets it.
    write_group(&w, 2, 0..2, false);
    assert_eq!(expect_objects(&mut wr, 2).await, vec![(2, 0), (2, 1)]);
    let resume = MessageParams { forward: Some(true), ..Default::default() };
    within("update", sub.request_update(r.request_id(), resume)).await.unwrap();
    barrier().await;
    write_group(&w, 3, 0..2, false);
    let got = expect_objects(&mut r, 2).await;
    assert_eq!(got, vec![(3, 0), (3, 1)], "nothing of the paused group 2");
    relay.shutdown().await;
}

#[tokio::test]
async fn new_group_requests_go_upstream_once_per_burst() {
    let relay = relay(config()).await;
    let (_p, mut seen) = full_publisher(&relay, dynamic()).await;
    let first = connect(&relay, "moqt").await;
    let mut r = within("subscribe", first.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = next_writer(&mut seen).await;
    let _open = write_group(&w, 5, 0..3, true);
    expect_objects(&mut r, 3).await;

    // A burst: four late joiners ask for a new group at once, and the first subscriber
    // asks again by REQUEST_UPDATE.
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(connect(&relay, "moqt").await);
    }
    let joins: Vec<_> = subs
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move {
                let o = SubscribeOptions {
                    new_group_request: Some(0),
                    ..SubscribeOptions::largest_object()
                };
                s.subscribe(track("video"), o).await
            })
        })
        .collect();
    let again = MessageParams { new_group_request: Some(6), ..Default::default() };
    within("update", first.request_update(r.request_id(), again)).await.unwrap();
    let mut readers = Vec::new();
    for j in joins {
        readers.push(within("join", j).await.unwrap().unwrap());
    }
    let (id, p) = next_update(&mut seen).await;
    assert_eq!(id, w.request_id());
    let burst_value = p.new_group_request.expect("NEW_GROUP_REQUEST upstream");
    assert!(burst_value == 0 || burst_value == 6, "the value is passed through: {burst_value}");

    // The publisher starts group 6: the request is no longer outstanding. A later request
    // (value: largest known group 6, plus one) goes upstream, and it is the very next
    // update the publisher sees: the burst made one request, not five.
    write_group(&w, 6, 0..1, false);
    expect_objects(&mut r, 1).await;
    let later = MessageParams { new_group_request: Some(7), ..Default::default() };
    within("update", first.request_update(r.request_id(), later)).await.unwrap();
    let (_, p) = next_update(&mut seen).await;
    assert_eq!(p.new_group_request, Some(7), "one upstream request per burst");

    // A stale value (group 6 exists already) is not passed upstream; a fresh one is.
    let stale = MessageParams { new_group_request: Some(3), ..Default::default() };
    within("update", first.request_update(r.request_id(), stale)).await.unwrap();
    write_group(&w, 7, 0..1, false);
    expect_objects(&mut r, 1).await;
    let fresh = MessageParams { new_group_request: Some(8), ..Default::default() };
    within("update", first.request_update(r.request_id(), fresh)).await.unwrap();
    let (_, p) = next_update(&mut seen).await;
    assert_eq!(p.new_group_request, Some(8), "the stale request was not passed upstream");
    relay.shutdown().await;
}

#[tokio::test]
async fn standalone_fetch_older_than_the_cache_is_forwarded_upstream() {
    let relay = relay(config()).await;
    let (_p, _seen) = full_publisher(&relay, Extensions::default()).await;
    let sub = connect(&relay, "moqt").await;
    let mut f =
        within("fetch", sub.fetch(track("video"), Location::new(0, 0), Location::new(2, 0), None))
            .await
            .unwrap();
    let mut got = Vec::new();
    while let Some(o) = within("fetched object", f.next()).await {
        assert_eq!(o.payload, payload(o.group_id, o.object_id));
        got.push((o.group_id, o.object_id));
    }
    assert_eq!(got.len(), 9, "groups 0..=2 from the publisher: {got:?}");
    assert_eq!(got.first(), Some(&(0, 0)));

    // No publisher: DOES_NOT_EXIST, not a silent refusal.
    let other = unpublished("video");
    let e = within("fetch", sub.fetch(other, Location::new(0, 0), Location::new(1, 0), None)).await;
    assert_does_not_exist(e);
    relay.shutdown().await;
}

/// SUBSCRIBER_PRIORITY and DELIVERY_TIMEOUT updates are per hop: the relay applies them to
/// the subscriber's own streams (its send scheduler re-orders queued objects), sends
/// nothing upstream for them, and the subscription keeps flowing.
#[tokio::test]
async fn priority_and_delivery_timeout_updates_stay_on_this_hop() {
    let relay = relay(config()).await;
    let (_p, mut seen) = full_publisher(&relay, Extensions::default()).await;
    let sub = connect(&relay, "moqt").await;
    let mut r = within("subscribe", sub.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = next_writer(&mut seen).await;
    let open = write_group(&w, 1, 0..2, true);
    expect_objects(&mut r, 2).await;
    let update = MessageParams {
        subscriber_priority: Some(3),
        delivery_timeout_ms: Some(5_000),
        ..Default::default()
    };
    within("update", sub.request_update(r.request_id(), update)).await.unwrap();
    within("barrier", sub.track_status(track("video"), MessageParams::default())).await.unwrap();
    // The open stream (re-prioritised) and a new one (with the new timeout) both deliver.
    let mut s = open.unwrap();
    s.write(2, &ext(1, 2), ObjectStatus::Normal, payload(1, 2)).unwrap();
    s.finish();
    write_group(&w, 2, 0..2, false);
    let mut got = expect_objects(&mut r, 3).await;
    got.sort();
    assert_eq!(got, vec![(1, 2), (2, 0), (2, 1)]);
    // Nothing went upstream for these.
    assert!(seen.try_recv().is_err(), "a per-hop update was sent upstream");
    relay.shutdown().await;
}
