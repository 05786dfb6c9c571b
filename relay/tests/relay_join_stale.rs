//! Guards a joining FETCH of objects older than the capture-age budget: the relay's send
//! path drops such objects from a subscription with a delivery timeout (they are too late
//! to play), but a fetch carries no deadline, so the joiner still gets the cached group and
//! the end of its fetch, rather than waiting for a fetch stream that never comes.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tiermesh_client::moq::{SubgroupStream, SubscribeOptions};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::Location;

/// LOC extensions whose capture timestamp lies `age` in the past.
fn aged(age: Duration) -> Extensions {
    let mut e = Extensions::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    tiermesh_proto::loc::set_capture_timestamp_us(&mut e, (now - age).as_micros() as u64);
    e
}

/// A relay with a publisher and a first subscriber of "video" (no delivery timeout), and
/// objects 0..10 of group 4 written on a stream left open, captured 5 s ago: far past the
/// 800 ms end-to-end budget. Returns the stream and the objects' extensions too.
async fn aged_group() -> (Subscribed, SubgroupStream, Extensions) {
    let first = subscribed(config(), "moqt", "video").await;
    let old = aged(Duration::from_secs(5));
    let mut s = first.writer.open_subgroup(4, 0, None);
    for o in 0..10 {
        s.write(o, &old, ObjectStatus::Normal, payload(4, o)).unwrap();
    }
    (first, s, old)
}

#[tokio::test]
async fn joining_fetch_of_a_group_past_the_capture_age_budget_ends() {
    let (mut first, mut s, old) = aged_group().await;
    // The first subscriber has no delivery timeout: nothing is dropped, so the relay has
    // the group cached once this one has it.
    expect_objects(&mut first.reader, 10).await;

    // A joiner with a delivery timeout: its subgroup streams drop objects past the budget.
    let late = connect(&first.relay, "moqt").await;
    let options = SubscribeOptions {
        delivery_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let (mut live, fetch) = within("join", late.join(track("video"), options, 0)).await.unwrap();
    assert_eq!(live.largest(), Some(Location::new(4, 9)));
    let mut fetch = fetch.expect("joining fetch accepted");
    for o in 0..10 {
        let obj = within("cached object", fetch.next()).await.expect("fetch ended early");
        assert_eq!(obj.location(), Location::new(4, o), "the cached group from object 0");
        assert_eq!(obj.payload, payload(4, o));
    }
    assert!(
        within_for("fetch end", Duration::from_secs(10), fetch.next()).await.is_none(),
        "the fetch ends after its objects"
    );

    // The same session's live subscription does drop objects past the budget: the old
    // object 10 never arrives, a fresh group 5 does.
    s.write(10, &old, ObjectStatus::Normal, payload(4, 10)).unwrap();
    s.finish();
    let mut g5 = first.writer.open_subgroup(5, 0, None);
    g5.write(0, &ext(5, 0), ObjectStatus::Normal, payload(5, 0)).unwrap();
    let obj = within("live object", live.next_object()).await.unwrap();
    assert_eq!(obj.location(), Location::new(5, 0), "the object past the budget was dropped");
    g5.finish();
    first.relay.shutdown().await;
}

#[tokio::test]
async fn standalone_fetch_of_a_group_past_the_capture_age_budget_ends() {
    let (mut first, s, _) = aged_group().await;
    s.finish();
    expect_objects(&mut first.reader, 10).await;

    let other = connect(&first.relay, "moqt").await;
    let mut fetch = within(
        "fetch",
        other.fetch(track("video"), Location::new(4, 0), Location::new(4, 10), None),
    )
    .await
    .expect("fetch accepted");
    for o in 0..10 {
        let obj = within("cached object", fetch.next()).await.expect("fetch ended early");
        assert_eq!(obj.location(), Location::new(4, o));
    }
    assert!(within_for("fetch end", Duration::from_secs(10), fetch.next()).await.is_none());
    first.relay.shutdown().await;
}
