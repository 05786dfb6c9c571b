//! Guards how the relay ends a subgroup its publisher did not end: a subscriber's stream
//! ends with FIN only when the relay saw the upstream stream's FIN; otherwise it is reset
//! (draft-16 §10.4.3: a sender that closes a subgroup stream before delivering all its
//! objects uses RESET_STREAM), and the cache keeps the subgroup as cut. The relay used to
//! finish such streams (at the linger's end, when the publisher ended the track, when a
//! new upstream did not continue them), so a subscriber took a cut group for a whole one.
//! Real QUIC sessions: publisher → relay → subscriber.
//!
//! - `a_publisher_gone_mid_group_resets_the_stream_when_the_linger_ends`: SESSION_CLOSED;
//! - `a_later_subscriber_is_not_served_the_cut_subgroup_whole`: a subscriber that comes
//!   while the track lingers, asking from the cut group's start, never sees that subgroup
//!   end with FIN, also after the publisher is back and a newer group ended;
//! - `a_fetch_after_the_cut_marks_the_rest_of_the_group_unknown`: a FETCH served from the
//!   cache after the publisher came back in a newer group carries the cut group's objects
//!   and an End of Unknown Range over the rest of it (this one passed before too: the
//!   cache already took a stream left open as unknown after its last object).

mod common;

use std::time::Duration;

use common::*;
use tiermesh_client::moq::{FetchEnd, FetchEvent, SubscribeOptions, TrackEvent, TrackReader};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::coding::VARINT_MAX;
use tiermesh_proto::data::RangeKind;
use tiermesh_proto::types::{Location, SubscriptionFilter};

/// The draft's stream reset code (§10.4.3) for a subgroup whose publisher session ended.
const SESSION_CLOSED: u32 = 0x3;

/// A relay with `linger`, a publisher of `video` and a subscriber that has received group 0
/// whole and objects 0..5 of group 1, whose stream the publisher keeps open (returned).
async fn cut_mid_group(linger: Duration) -> (Subscribed, tiermesh_client::moq::SubgroupStream) {
    let mut c = config();
    c.linger = linger;
    c.cache.groups = 4;
    let mut s = subscribed(c, "moqt", "video").await;
    write_group(&s.writer, 0, 0..5, false);
    let open = write_group(&s.writer, 1, 0..5, true).unwrap();
    let seen = expect_objects(&mut s.reader, 10).await;
    assert_eq!(seen.last(), Some(&(1, 4)));
    (s, open)
}

/// The publisher's session closes without a word about its track: the track lingers.
async fn lose_publisher(s: &Subscribed) {
    s.publisher.conn.close(TerminationCode::NoError, "network change");
    within("publisher gone", s.publisher.conn.closed()).await;
    eventually("upstream lost", || s.relay.upstream_subscriptions() == 0).await;
}

/// Reads `r` until the stream of (`group`, 0) has ended and, if `done`, the subscription
/// too (the stream's end and PUBLISH_DONE travel on different streams: either may come
/// first). How the stream ended: `None` FIN, else the reset code.
async fn stream_end(r: &mut TrackReader, group: u64, done: bool) -> Option<u32> {
    within("the stream's end", async {
        let (mut end, mut ended) = (None, !done);
        while end.is_none() || !ended {
            match r.next().await {
                Some(TrackEvent::StreamEnd { group_id, subgroup_id: 0, reset })
                    if group_id == group =>
                {
                    assert!(end.is_none(), "group {group}'s stream ended twice");
                    end = Some(reset);
                }
                Some(TrackEvent::Done(_)) => ended = true,
                Some(_) => {}
                None => break,
            }
        }
        end.expect("the subscription ended before the stream did")
    })
    .await
}

#[tokio::test]
async fn a_publisher_gone_mid_group_resets_the_stream_when_the_linger_ends() {
    let (mut s, _open) = cut_mid_group(Duration::from_millis(300)).await;
    lose_publisher(&s).await;
    assert_eq!(
        stream_end(&mut s.reader, 1, true).await,
        Some(SESSION_CLOSED),
        "group 1's stream is reset (objects of it may be missing), not finished"
    );
    s.relay.shutdown().await;
}

#[tokio::test]
async fn a_later_subscriber_is_not_served_the_cut_subgroup_whole() {
    let (s, _open) = cut_mid_group(Duration::from_secs(5)).await;
    lose_publisher(&s).await;
    // A subscriber from the start of group 1, while the track lingers: the relay has
    // objects 0..5 of it cached, and knows the subgroup was cut.
    let late = connect(&s.relay, "moqt").await;
    let options = SubscribeOptions {
        filter: Some(SubscriptionFilter::AbsoluteStart(Location::new(1, 0))),
        ..Default::default()
    };
    let mut r = within("subscribe", late.subscribe(track("video"), options)).await.unwrap();
    // The publisher comes back (with nothing published yet) and group 2 ends whole.
    let mut back = publisher(&s.relay, "moqt", None).await;
    let w = within("resubscribed", back.writers.recv()).await.unwrap();
    write_group(&w, 2, 0..3, false);
    let mut ends = Vec::new();
    within("group 2's end", async {
        loop {
            match r.next().await.expect("track ended") {
                TrackEvent::StreamEnd { group_id, reset, .. } => {
                    ends.push((group_id, reset));
                    if group_id == 2 {
                        break;
                    }
                }
                TrackEvent::Object(_) => {}
                TrackEvent::Done(d) => panic!("PUBLISH_DONE: {d:?}"),
            }
        }
    })
    .await;
    // The reset may reach the subscriber before the stream's header does, and then says
    // nothing of the group (QUIC drops a reset stream's data): seen at all, it is a reset.
    assert!(
        ends.iter().all(|e| *e != (1, None)),
        "the cut subgroup ended with FIN at a later subscriber: {ends:?}"
    );
    assert_eq!(ends.last(), Some(&(2, None)));
    s.relay.shutdown().await;
}

#[tokio::test]
async fn a_fetch_after_the_cut_marks_the_rest_of_the_group_unknown() {
    let (mut s, _open) = cut_mid_group(Duration::from_secs(5)).await;
    lose_publisher(&s).await;
    let mut back = publisher(&s.relay, "moqt", None).await;
    let w = within("resubscribed", back.writers.recv()).await.unwrap();
    write_group(&w, 2, 0..3, false);
    // Once the subscriber has group 2 whole, the relay has cached it.
    assert_eq!(stream_end(&mut s.reader, 2, false).await, None);
    let sub = connect(&s.relay, "moqt").await;
    let mut f =
        within("fetch", sub.fetch(track("video"), Location::new(1, 0), Location::new(3, 0), None))
            .await
            .unwrap();
    let mut seen = Vec::new();
    while let Some(e) = within("fetch stream", f.next_event()).await {
        seen.push(match e {
            FetchEvent::Object(o) => (o.group_id, o.object_id, None),
            FetchEvent::EndOfRange(m) => (m.group_id, m.object_id, Some(m.kind)),
        });
    }
    let objects: Vec<_> = seen.iter().filter(|x| x.2.is_none() && x.0 == 1).map(|x| x.1).collect();
    assert_eq!(objects, [0, 1, 2, 3, 4], "{seen:?}");
    assert!(
        seen.contains(&(1, VARINT_MAX, Some(RangeKind::Unknown))),
        "the rest of group 1 after object 4 is unknown, not absent: {seen:?}"
    );
    assert!(matches!(f.end(), Some(FetchEnd::Unknown(_))), "{:?}", f.end());
    s.relay.shutdown().await;
}
