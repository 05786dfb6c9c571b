//! Guards how a FETCH forwarded upstream ends at the requester when the publisher does not
//! serve it whole. A fetch always ends; only a clean end (FIN, nothing marked unknown)
//! says that the objects not received do not exist (draft-16, End of Range). A relay
//! that ended every forwarded fetch with a FIN would turn a publisher that gave up, or
//! left, into a complete answer, and the requester would take the missing objects as
//! absent. The same holds for a joiner's FETCH the relay serves from the fill of its own
//! upstream joining fetch, for a FETCH served from the relay's cache where the relay lost
//! objects (a subgroup stream reset upstream, a group never received, the start of a group
//! nothing filled), and for an upstream fetch that stalls (the relay gives it up after
//! `limits.upstream_fetch_idle` and cancels it upstream). Real QUIC sessions: publisher →
//! relay → requester.

mod common;
#[path = "../../client/tests/transport_common/control.rs"]
mod control;

use common::*;
use tiermesh_client::moq::{
    Event, FetchEnd, FetchEvent, FetchReader, FetchResponse, SubscribeOptions,
};
use tiermesh_proto::coding::VARINT_MAX;
use tiermesh_proto::data::{EndOfRange, RangeKind};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::Location;
use tiermesh_relay::RelayHandle;
use tokio::sync::mpsc;

/// How the test publisher answers the relay's FETCH for groups 0..=2 (End Location (2, 3),
/// so the last location of the range is (2, 2)).
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Objects 0..3 of each group, then a FIN.
    Whole,
    /// Objects 0..3 of group 0, then `FetchResponse::reset`.
    GivesUp,
    /// Objects 0..3 of group 0, group 1 marked unknown, objects 0..3 of group 2, a FIN.
    MarksGroup1Unknown,
    /// Objects 0..3 of group 0, then the response goes to the test, unfinished.
    Holds,
    /// Objects 0..3 of group 0, then the response is dropped unfinished.
    Drops,
}

async fn fetch_publisher(
    relay: &RelayHandle,
    answer: Answer,
) -> (tiermesh_client::moq::Connection, mpsc::UnboundedReceiver<FetchResponse>) {
    publish_serving(connect(relay, "moqt").await, move |c, tx| async move {
        while let Some(e) = c.next_event().await {
            let Event::Fetch(f) = e else { continue };
            let Ok(mut resp) = f.accept(false, Location::new(2, 3), Extensions::default()).await
            else {
                continue;
            };
            for o in 0..3 {
                resp.write(&object(0, o)).unwrap();
            }
            match answer {
                Answer::Whole => {
                    for g in 1..3 {
                        for o in 0..3 {
                            resp.write(&object(g, o)).unwrap();
                        }
                    }
                    resp.finish();
                }
                Answer::GivesUp => resp.reset(0),
                Answer::MarksGroup1Unknown => {
                    let unknown =
                        EndOfRange { kind: RangeKind::Unknown, group_id: 1, object_id: VARINT_MAX };
                    resp.write_end_of_range(unknown).unwrap();
                    for o in 0..3 {
                        resp.write(&object(2, o)).unwrap();
                    }
                    resp.finish();
                }
                Answer::Holds => {
                    let _ = tx.send(resp);
                }
                Answer::Drops => drop(resp),
            }
        }
    })
    .await
}

/// A FETCH of groups 0..=2 through the relay (it holds no subscription, so it goes
/// upstream).
async fn fetch_through(relay: &RelayHandle) -> (tiermesh_client::moq::Connection, FetchReader) {
    let sub = connect(relay, "moqt").await;
    let f =
        within("fetch", sub.fetch(track("video"), Location::new(0, 0), Location::new(2, 3), None))
            .await
            .unwrap();
    (sub, f)
}

/// What the requester saw: objects as (group, object), markers as their kind and last
/// location, until the end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Object(u64, u64),
    Unknown(u64, u64),
    NonExistent(u64, u64),
}

async fn read_all(f: &mut FetchReader) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(e) = within("fetch stream", f.next_event()).await {
        seen.push(match e {
            FetchEvent::Object(o) => {
                assert_eq!(o.payload, payload(o.group_id, o.object_id));
                Seen::Object(o.group_id, o.object_id)
            }
            FetchEvent::EndOfRange(r) => match r.kind {
                RangeKind::Unknown => Seen::Unknown(r.group_id, r.object_id),
                RangeKind::NonExistent => Seen::NonExistent(r.group_id, r.object_id),
            },
        });
    }
    seen
}

fn group(g: u64) -> Vec<Seen> {
    (0..3).map(|o| Seen::Object(g, o)).collect()
}

/// A publisher that serves the whole range: the requester's fetch ends whole (the
/// baseline the other tests differ from).
#[tokio::test]
async fn a_whole_upstream_fetch_ends_whole_at_the_requester() {
    let relay = relay(config()).await;
    let _p = fetch_publisher(&relay, Answer::Whole).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    let seen = read_all(&mut f).await;
    assert_eq!(seen, [group(0), group(1), group(2)].concat());
    assert_eq!(f.end(), Some(FetchEnd::Whole));
    relay.shutdown().await;
}

/// A publisher that gives up after group 0 (End of Unknown Range up to (2, 2), FIN): the
/// requester gets group 0 and the same unknown range, not a clean end (the relay used to
/// drop the marker and end with a plain FIN, which said groups 1 and 2 do not exist).
#[tokio::test]
async fn an_upstream_fetch_given_up_ends_unknown_at_the_requester() {
    let relay = relay(config()).await;
    let _p = fetch_publisher(&relay, Answer::GivesUp).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    let seen = read_all(&mut f).await;
    assert_eq!(seen, [group(0), vec![Seen::Unknown(2, 2)]].concat());
    assert_eq!(f.end(), Some(FetchEnd::Unknown(Location::new(2, 2))));
    relay.shutdown().await;
}

/// A range the publisher marks unknown in the middle reaches the requester as sent, between
/// the objects around it, and the fetch does not end whole.
#[tokio::test]
async fn an_upstream_unknown_range_is_passed_on_as_received() {
    let relay = relay(config()).await;
    let _p = fetch_publisher(&relay, Answer::MarksGroup1Unknown).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    let seen = read_all(&mut f).await;
    assert_eq!(seen, [group(0), vec![Seen::Unknown(1, VARINT_MAX)], group(2)].concat());
    assert_eq!(f.end(), Some(FetchEnd::Unknown(Location::new(1, VARINT_MAX))));
    relay.shutdown().await;
}

/// A publisher that leaves mid-fetch (its session closes after group 0, no FIN): the relay's
/// upstream fetch fails, and the requester's ends with group 0 and the rest of the range
/// unknown, promptly, rather than with a FIN that claims the range whole.
#[tokio::test]
async fn an_upstream_fetch_whose_publisher_leaves_ends_unknown_at_the_requester() {
    let relay = relay(config()).await;
    let (publisher, mut held) = fetch_publisher(&relay, Answer::Holds).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let o = within("object of group 0", f.next()).await.expect("group 0 arrives");
        seen.push(Seen::Object(o.group_id, o.object_id));
    }
    assert_eq!(seen, group(0));
    let resp = within("the publisher's response", held.recv()).await.unwrap();
    publisher.close(tiermesh_proto::TerminationCode::NoError, "leaving mid-fetch");
    within("publisher closed", publisher.closed()).await;
    drop(resp);
    let rest = read_all(&mut f).await;
    assert_eq!(rest, [Seen::Unknown(2, 2)]);
    assert_eq!(f.end(), Some(FetchEnd::Unknown(Location::new(2, 2))));
    relay.shutdown().await;
}

/// A requester that cancels its fetch while the upstream holds it (nothing more arrives):
/// the relay cancels the upstream fetch at once, not only when the stall limit ends it or
/// the next upstream object shows the downstream end gone.
#[tokio::test]
async fn a_fetch_cancelled_by_its_requester_is_cancelled_upstream_at_once() {
    let mut c = config();
    c.limits.upstream_fetch_idle = std::time::Duration::from_secs(60);
    let relay = relay(c).await;
    let (_publisher, mut held) = fetch_publisher(&relay, Answer::Holds).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    for _ in 0..3 {
        within("object of group 0", f.next()).await.expect("group 0 arrives");
    }
    let resp = within("the publisher's response", held.recv()).await.unwrap();
    // Dropping the reader sends FETCH_CANCEL to the relay.
    drop(f);
    within_for(
        "FETCH_CANCEL at the publisher",
        std::time::Duration::from_secs(3),
        resp.cancelled(),
    )
    .await;
    relay.shutdown().await;
}

/// A publisher that drops its response after group 0 without finishing it (an error path,
/// a task ended): the requester gets group 0 and the rest of the range unknown, as for a
/// response given up. A dropped response used to end with a plain FIN, which the relay
/// passed on as a whole fetch of group 0 alone (groups 1 and 2 then read as absent).
#[tokio::test]
async fn an_upstream_response_dropped_unfinished_ends_unknown_at_the_requester() {
    let relay = relay(config()).await;
    let _p = fetch_publisher(&relay, Answer::Drops).await;
    let (_sub, mut f) = fetch_through(&relay).await;
    let seen = read_all(&mut f).await;
    assert_eq!(seen, [group(0), vec![Seen::Unknown(2, 2)]].concat());
    assert_eq!(f.end(), Some(FetchEnd::Unknown(Location::new(2, 2))));
    relay.shutdown().await;
}

/// How the test publisher answers the relay's joining FETCH of group 0 up to the track's
/// largest object, (0, 4).
#[derive(Debug, Clone, Copy)]
enum JoinAnswer {
    /// Objects 0 and 1, then a FIN (the rest of the group does not exist).
    Whole,
    /// Objects 0 and 1, then `FetchResponse::reset`.
    GivesUp,
    /// Object 0, objects 1 and 2 marked unknown, objects 3 and 4, a FIN.
    MarksUnknown,
}

/// A publisher of `ns()` at `relay` whose track's largest object is (0, 4), answering the
/// relay's joining FETCH as `answer` says.
async fn joined_publisher(
    relay: &RelayHandle,
    answer: JoinAnswer,
) -> (tiermesh_client::moq::Connection, mpsc::UnboundedReceiver<FetchResponse>) {
    publish_serving(connect(relay, "moqt").await, move |c, _tx| async move {
        let mut writers = Vec::new();
        while let Some(e) = c.next_event().await {
            match e {
                Event::Subscribe(r) => {
                    let largest = Some(Location::new(0, 4));
                    if let Ok(w) = r.accept(Extensions::default(), largest).await {
                        writers.push(w);
                    }
                }
                Event::Fetch(f) => {
                    let end = f.range.end;
                    let Ok(mut resp) = f.accept(false, end, Extensions::default()).await else {
                        continue;
                    };
                    resp.write(&object(0, 0)).unwrap();
                    match answer {
                        JoinAnswer::Whole => {
                            resp.write(&object(0, 1)).unwrap();
                            resp.finish();
                        }
                        JoinAnswer::GivesUp => {
                            resp.write(&object(0, 1)).unwrap();
                            resp.reset(0);
                        }
                        JoinAnswer::MarksUnknown => {
                            let unknown =
                                EndOfRange { kind: RangeKind::Unknown, group_id: 0, object_id: 2 };
                            resp.write_end_of_range(unknown).unwrap();
                            for o in 3..5 {
                                resp.write(&object(0, o)).unwrap();
                            }
                            resp.finish();
                        }
                    }
                }
                _ => {}
            }
        }
    })
    .await
}

/// A subscriber joining a track the relay does not hold yet, with a joining FETCH of the
/// current group: what its fetch carried, and how it ended.
async fn join_through(relay: &RelayHandle) -> (Vec<Seen>, Option<FetchEnd>) {
    let sub = connect(relay, "moqt").await;
    let (_reader, fetch) =
        within("join", sub.join(track("video"), SubscribeOptions::default(), 0)).await.unwrap();
    let mut fetch = fetch.expect("the relay's joining fetch accepted");
    let seen = read_all(&mut fetch).await;
    (seen, fetch.end())
}

/// The relay serves a joiner's FETCH from the fill of its own upstream joining fetch: when
/// that fill ends whole, so does the joiner's fetch (the baseline of the next test).
#[tokio::test]
async fn a_joining_fetch_filled_whole_ends_whole() {
    let relay = relay(config()).await;
    let _p = joined_publisher(&relay, JoinAnswer::Whole).await;
    let (seen, end) = join_through(&relay).await;
    assert_eq!(seen, [Seen::Object(0, 0), Seen::Object(0, 1)]);
    assert_eq!(end, Some(FetchEnd::Whole));
    relay.shutdown().await;
}

/// When the publisher gives up the relay's upstream joining fetch after objects 0 and 1 of
/// the group, the joiner's fetch served from that fill carries them and then the rest of
/// the group up to the largest object, (0, 4), as unknown: objects 2..=4 may exist. The
/// relay used to end it with a plain FIN, which said they do not.
#[tokio::test]
async fn a_joining_fetch_filled_from_an_incomplete_upstream_fetch_ends_unknown() {
    let relay = relay(config()).await;
    let _p = joined_publisher(&relay, JoinAnswer::GivesUp).await;
    let (seen, end) = join_through(&relay).await;
    assert_eq!(seen, [Seen::Object(0, 0), Seen::Object(0, 1), Seen::Unknown(0, 4)]);
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(0, 4))));
    relay.shutdown().await;
}

/// A range the publisher marks unknown in the middle of the relay's upstream joining fetch
/// reaches the joiner between the objects around it (the relay used to drop it and end with
/// a plain FIN: objects 1 and 2 then read as absent).
#[tokio::test]
async fn a_joining_fetch_passes_on_an_unknown_range_of_its_fill() {
    let relay = relay(config()).await;
    let _p = joined_publisher(&relay, JoinAnswer::MarksUnknown).await;
    let (seen, end) = join_through(&relay).await;
    let objects = |r: std::ops::Range<u64>| r.map(|o| Seen::Object(0, o)).collect::<Vec<_>>();
    assert_eq!(seen, [objects(0..1), vec![Seen::Unknown(0, 2)], objects(3..5)].concat());
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(0, 2))));
    relay.shutdown().await;
}

/// A relay keeping `groups` groups per track, with a publisher and a subscriber of its
/// track `video` subscribed from the start (the publisher reports no largest object, so
/// the relay's upstream subscription carries every object and nothing needs a fill).
async fn cached(groups: usize) -> Subscribed {
    let mut c = config();
    c.cache.groups = groups;
    subscribed(c, "moqt", "video").await
}

/// Reads from `r` until the stream of `group` ends (FIN or reset), so that the relay has
/// seen its end too (it ends its downstream streams as their upstream ones end).
async fn until_stream_end(r: &mut tiermesh_client::moq::TrackReader, group: u64) {
    use tiermesh_client::moq::TrackEvent;
    within("stream end", async {
        while let Some(e) = r.next().await {
            if let TrackEvent::StreamEnd { group_id, .. } = e
                && group_id == group
            {
                return;
            }
        }
        panic!("the subscription ended before group {group}'s stream did");
    })
    .await
}

/// A standalone FETCH of groups 0..=3 on a new session; it is served from the relay's
/// cache (its oldest group is 0). What it carried, how it ended, and its End Location.
async fn fetch_cached(relay: &RelayHandle) -> (Vec<Seen>, Option<FetchEnd>, Location) {
    let sub = connect(relay, "moqt").await;
    let mut f =
        within("fetch", sub.fetch(track("video"), Location::new(0, 0), Location::new(4, 0), None))
            .await
            .unwrap();
    let seen = read_all(&mut f).await;
    (seen, f.end(), f.end_location())
}

/// Groups that all arrived with their streams' FIN are known whole: the FETCH served from
/// the cache ends whole, at the largest object (not the asked end group, which is not
/// published yet). The baseline of the next test.
#[tokio::test]
async fn a_fetch_served_from_a_cache_of_whole_groups_ends_whole() {
    let mut s = cached(4).await;
    for g in 0..2 {
        write_group(&s.writer, g, 0..3, false);
        until_stream_end(&mut s.reader, g).await;
    }
    let (seen, end, end_location) = fetch_cached(&s.relay).await;
    assert_eq!(seen, [group(0), group(1)].concat());
    assert_eq!(end, Some(FetchEnd::Whole));
    assert_eq!(end_location, Location::new(1, 3), "the largest object plus one");
    s.relay.shutdown().await;
}

/// What the relay lost on the way in is unknown, not absent, in a FETCH served from its
/// cache: group 1 never reached it, group 2's stream was reset after two objects. Group 0
/// ended with its FIN, so the rest of it is known not to exist: an End of Non-Existent
/// Range says so before the unknown group 1 (without it the unknown range would take it
/// in). The relay used to serve the cached objects and a plain FIN, which said groups 1
/// and the end of group 2 do not exist.
#[tokio::test]
async fn a_fetch_served_from_the_cache_marks_what_the_relay_lost_unknown() {
    let mut s = cached(4).await;
    write_group(&s.writer, 0, 0..3, false);
    until_stream_end(&mut s.reader, 0).await;
    // Group 2: two objects, read by the subscriber (so they reached the relay), then reset.
    let cut = write_group(&s.writer, 2, 0..2, true).unwrap();
    assert_eq!(expect_objects(&mut s.reader, 2).await, [(2, 0), (2, 1)]);
    cut.reset(0x2);
    until_stream_end(&mut s.reader, 2).await;
    write_group(&s.writer, 3, 0..3, false);
    until_stream_end(&mut s.reader, 3).await;

    let (seen, end, end_location) = fetch_cached(&s.relay).await;
    let expected = [
        group(0),
        vec![Seen::NonExistent(0, VARINT_MAX), Seen::Unknown(1, VARINT_MAX)],
        vec![Seen::Object(2, 0), Seen::Object(2, 1), Seen::Unknown(2, VARINT_MAX)],
        group(3),
    ]
    .concat();
    assert_eq!(seen, expected);
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(2, VARINT_MAX))));
    assert_eq!(end_location, Location::new(3, 3));
    s.relay.shutdown().await;
}

/// A joiner's FETCH of a track whose start the relay never had: the publisher's largest
/// object was (0, 4) when the relay subscribed, and it refused the relay's joining fetch,
/// so objects 0..=4 of group 0 are unknown to the relay (it used to answer a clean, empty
/// fetch: none of them exist).
#[tokio::test]
async fn a_joining_fetch_the_relay_could_not_fill_ends_unknown() {
    let relay = relay(config()).await;
    // Accepts every SUBSCRIBE with largest (0, 4); refuses every FETCH.
    let _p = publisher(&relay, "moqt", Some(Location::new(0, 4))).await;
    let (seen, end) = join_through(&relay).await;
    assert_eq!(seen, [Seen::Unknown(0, 4)]);
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(0, 4))));
    relay.shutdown().await;
}

/// A publisher that comes back to a track with a subscriber held on it gets the relay's
/// joining fetch, filled inline (before the held subscriber goes on) and noted in the
/// cache. When it gives that fetch up after objects 0 and 1, a later joiner's FETCH,
/// served from the cache, has objects 2..=4 unknown (the relay used to end it with a
/// plain FIN, which said they do not exist).
#[tokio::test]
async fn a_joining_fetch_after_an_incomplete_inline_fill_ends_unknown() {
    let relay = relay(config()).await;
    let first = publisher(&relay, "moqt", None).await;
    let held = connect(&relay, "moqt").await;
    let mut held_reader =
        within("subscribe", held.subscribe(track("video"), SubscribeOptions::default()))
            .await
            .unwrap();
    first.conn.close(tiermesh_proto::TerminationCode::NoError, "leaving");
    within("first publisher closed", first.conn.closed()).await;
    // The relay has seen it go (the track lingers): the publisher coming back resubscribes.
    eventually("the first upstream lost", || relay.upstream_subscriptions() == 0).await;
    let _back = joined_publisher(&relay, JoinAnswer::GivesUp).await;
    // The fill reaches the held subscriber while the relay's new upstream is pending: a
    // SUBSCRIBE from now on waits for it to be established, after the fill has ended.
    assert_eq!(expect_objects(&mut held_reader, 2).await, [(0, 0), (0, 1)]);
    let (seen, end) = join_through(&relay).await;
    assert_eq!(seen, [Seen::Object(0, 0), Seen::Object(0, 1), Seen::Unknown(0, 4)]);
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(0, 4))));
    relay.shutdown().await;
}

/// A publisher that accepts the relay's FETCH, sends group 0 and then nothing more, neither
/// FIN nor reset: the relay gives the fetch up after `limits.upstream_fetch_idle`, sends
/// FETCH_CANCEL upstream, and the requester's fetch ends with group 0 and the rest of the
/// range unknown (it used to wait for as long as the publisher kept the stream open). The
/// publisher is raw MoQT, so that the FETCH_CANCEL on its control stream can be read.
#[tokio::test]
async fn a_stalled_upstream_fetch_is_cancelled_and_ends_unknown() {
    use tiermesh_proto::coding::Encode;
    use tiermesh_proto::data::{FetchHeader, FetchItem, FetchWriter};
    use tiermesh_proto::message::{
        FetchCancel, FetchOk, Message, MessageParams, PublishNamespace, SetupParams,
    };
    use tiermesh_proto::types::RequestId;

    let mut c = config();
    // Well above a loaded machine's scheduling hiccups, so that only the stall ends it.
    c.limits.upstream_fetch_idle = std::time::Duration::from_secs(1);
    let relay = relay(c).await;

    let session = raw_session(&relay).await;
    let params =
        SetupParams { path: Some("/".into()), max_request_id: Some(16), ..Default::default() };
    let mut control = control::RawControl::setup(&session, params).await;
    let announce =
        PublishNamespace { request_id: RequestId(0), namespace: ns(), params: Default::default() };
    control.write(&[announce.into()]).await;
    assert!(matches!(control.read().await, Message::RequestOk(_)));

    let publisher = async {
        let request_id = loop {
            if let Message::Fetch(f) = control.read().await {
                break f.request_id;
            }
        };
        let ok = FetchOk {
            request_id,
            end_of_track: false,
            end_location: Location::new(2, 3),
            params: MessageParams::default(),
            extensions: Extensions::default(),
        };
        control.write(&[ok.into()]).await;
        let mut stream = within("fetch stream", session.open_uni()).await.unwrap();
        let mut bytes = FetchHeader { request_id }.to_vec();
        let mut writer = FetchWriter::new();
        for o in 0..3 {
            let item = FetchItem::Object(object(0, o).to_fetch_object().unwrap());
            writer.encode_item(&item, &mut bytes).unwrap();
        }
        within("fetch objects", stream.write_all(&bytes)).await.unwrap();
        // Then nothing: the stream stays open until the relay cancels the fetch.
        let cancel = loop {
            if let Message::FetchCancel(c) = control.read().await {
                break c;
            }
        };
        (request_id, cancel, stream)
    };
    let requester = async {
        let (_sub, mut f) = fetch_through(&relay).await;
        let seen = read_all(&mut f).await;
        (seen, f.end())
    };
    let ((request_id, cancel, _stream), (seen, end)) = tokio::join!(publisher, requester);
    assert_eq!(seen, [group(0), vec![Seen::Unknown(2, 2)]].concat());
    assert_eq!(end, Some(FetchEnd::Unknown(Location::new(2, 2))));
    assert_eq!(cancel, FetchCancel { request_id }, "FETCH_CANCEL for the stalled fetch");
    relay.shutdown().await;
}
