//! Guards one stream per subgroup across a change of upstream. When a track's upstream
//! changes in the middle of a group (a publisher taking the track over, or coming back
//! after its session was lost), the subscriber's open subgroup stream goes on with the new
//! upstream's objects: every object once, in order, and the subgroup's stream ends once.
//! Finishing the stream at the change and opening another for the rest of the group (what
//! the relay did) let the new stream's first objects overtake the old one's tail, and a
//! subgroup that ends on two streams is a malformed track (draft-16 §2.4.2, condition 6).
//!
//! - `a_publisher_taking_over_mid_group_continues_the_stream`: the new publisher's joining
//!   fetch and live objects continue the open stream, skipping what was sent;
//! - `a_publisher_back_after_a_loss_continues_the_stream`: the same after the old session
//!   closed and the track lingered;
//! - `objects_missing_at_the_change_reset_the_stream`: the new upstream's first object is
//!   not the next one (no joining fetch, objects missing between): the open stream is
//!   reset (draft-16 §10.4.3: only the next object goes on an existing stream)
//!   and the rest of the subgroup is dropped (the send scheduler opens no second stream
//!   for a reset subgroup; a video frame after a hole does not decode anyway);
//! - `a_stream_of_an_older_group_ends_at_the_change`: the new upstream starts in a newer
//!   group, so the open stream of the older one ends once: reset with SESSION_CLOSED, since
//!   the first publisher's session died before it ended the subgroup (objects of it may be
//!   missing; a FIN would tell the subscriber it had them all, draft-16 §10.4.3);
//! - `a_stream_a_new_publisher_does_not_continue_is_reset`: the same when the first
//!   publisher is still there and the relay releases it for a newer one (a hand-off:
//!   INTERNAL_ERROR, the draft names no code for it);
//! - `a_stream_the_new_upstream_does_not_continue_ends_once`: the new upstream has nothing
//!   more of the open group; the stream is reset once it ends a newer group's stream, and
//!   a late object of the ended subgroup opens no second stream.

mod common;

use std::collections::HashMap;

use common::*;
use tiermesh_client::moq::{Connection, Event, TrackEvent, TrackReader, TrackWriter, WriterEnd};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::data::Object;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::RequestErrorCode;
use tiermesh_proto::types::Location;
use tokio::sync::mpsc;

/// The draft's stream reset codes (§10.4.3) these tests expect.
const INTERNAL_ERROR: u32 = 0x0;
const SESSION_CLOSED: u32 = 0x3;

/// A publisher of `ns()` that answers the relay's SUBSCRIBE with `largest` and its joining
/// FETCH with `fetched` (refused when `None`); hands out each subscription's writer.
async fn source(
    relay: &tiermesh_relay::RelayHandle,
    largest: Option<Location>,
    fetched: Option<Vec<Object>>,
) -> (Connection, mpsc::UnboundedReceiver<TrackWriter>) {
    publish_serving(connect(relay, "moqt").await, move |c, tx| async move {
        while let Some(e) = c.next_event().await {
            match e {
                Event::Subscribe(r) => {
                    if let Ok(w) = r.accept(Extensions::default(), largest).await {
                        let _ = tx.send(w);
                    }
                }
                Event::Fetch(f) => match (&fetched, largest) {
                    (Some(objects), Some(end)) => {
                        if let Ok(mut resp) = f.accept(false, end, Extensions::default()).await {
                            for o in objects {
                                resp.write(o).unwrap();
                            }
                            resp.finish();
                        }
                    }
                    _ => f.reject(RequestErrorCode::DoesNotExist, "nothing to fetch"),
                },
                _ => {}
            }
        }
    })
    .await
}

/// What the subscriber saw: objects in arrival order, and each subgroup's stream ends
/// (`None`: FIN, else the reset code) in arrival order.
#[derive(Debug, Default)]
struct Seen {
    objects: Vec<(u64, u64)>,
    ends: HashMap<(u64, u64), Vec<Option<u32>>>,
}

impl Seen {
    /// Reads events until `done` holds (bounded by `within`'s deadline).
    async fn read_until(&mut self, r: &mut TrackReader, done: impl Fn(&Seen) -> bool) {
        within("the subscriber's events", async {
            while !done(self) {
                match r.next().await.expect("track ended") {
                    TrackEvent::Object(o) => {
                        assert_eq!(o.payload, payload(o.group_id, o.object_id), "same bytes");
                        self.objects.push((o.group_id, o.object_id));
                    }
                    TrackEvent::StreamEnd { group_id, subgroup_id, reset } => {
                        self.ends.entry((group_id, subgroup_id)).or_default().push(reset)
                    }
                    TrackEvent::Done(d) => panic!("PUBLISH_DONE: {d:?}"),
                }
            }
        })
        .await
    }

    /// The Object IDs of group `g`, in arrival order.
    fn group(&self, g: u64) -> Vec<u64> {
        self.objects.iter().filter(|o| o.0 == g).map(|o| o.1).collect()
    }

    fn ended(&self, g: u64) -> bool {
        self.ends.get(&(g, 0)).is_some_and(|e| e.contains(&None))
    }

    /// Whether the stream of group `g` has ended, with FIN or reset.
    fn ended_somehow(&self, g: u64) -> bool {
        self.ends.contains_key(&(g, 0))
    }
}

/// A relay, a first publisher and a subscriber to `video` that has received objects 0..5
/// of group 1, whose stream the first publisher keeps open.
struct MidGroup {
    relay: tiermesh_relay::RelayHandle,
    first: Publisher,
    w1: TrackWriter,
    _open: Option<tiermesh_client::moq::SubgroupStream>,
    _sub: Connection,
    r: TrackReader,
    seen: Seen,
}

async fn mid_group() -> MidGroup {
    let Subscribed { relay, publisher: first, subscriber: sub, reader: mut r, writer: w1 } =
        subscribed(config(), "moqt", "video").await;
    let open = write_group(&w1, 1, 0..5, true);
    let mut seen = Seen::default();
    seen.read_until(&mut r, |s| s.objects.len() == 5).await;
    MidGroup { relay, first, w1, _open: open, _sub: sub, r, seen }
}

/// The first publisher's session closes without a word about its track: the track lingers.
async fn lose_first(m: &MidGroup) {
    m.first.conn.close(TerminationCode::NoError, "network change");
    within("publisher gone", m.first.conn.closed()).await;
    eventually("upstream lost", || m.relay.upstream_subscriptions() == 0).await;
}

/// The first publisher's session is lost (`lose_first`) and a new publisher of the
/// namespace comes with `largest` and `fetched` (`source`): the relay subscribes there.
/// Returns the new publisher's session, its receiver of writers and the first writer.
async fn back_after_loss(
    m: &MidGroup,
    largest: Location,
    fetched: Option<Vec<Object>>,
) -> (Connection, mpsc::UnboundedReceiver<TrackWriter>, TrackWriter) {
    lose_first(m).await;
    let (p2, mut writers) = source(&m.relay, Some(largest), fetched).await;
    let w2 = within("resubscribed", writers.recv()).await.unwrap();
    (p2, writers, w2)
}

/// Group 1 continues: objects 0..=6 were published (the new upstream's joining fetch),
/// 7..10 come live and the stream ends, then group 2. The subscriber gets all of group 1
/// once, in order, on one stream.
async fn continue_group_one(mut m: MidGroup, w2: TrackWriter) {
    write_group(&w2, 1, 7..10, false);
    write_group(&w2, 2, 0..3, false);
    m.seen.read_until(&mut m.r, |s| s.ended(1) && s.ended(2)).await;
    assert_eq!(
        m.seen.group(1),
        (0..10).collect::<Vec<_>>(),
        "group 1 once, in order: {:?}",
        m.seen
    );
    assert_eq!(m.seen.group(2), vec![0, 1, 2]);
    assert_eq!(m.seen.ends[&(1, 0)], vec![None], "group 1 on one stream, ended once: {:?}", m.seen);
    m.relay.shutdown().await;
}

#[tokio::test]
async fn a_publisher_taking_over_mid_group_continues_the_stream() {
    let m = mid_group().await;
    // A second publisher of the namespace while the first's session stays open: the relay
    // subscribes there (joining fetch: group 1 up to object 6, two more than were sent)
    // and releases the first once the new subscription is established.
    let fetched = (0..=6).map(|o| object(1, o)).collect();
    let (_p2, mut writers) = source(&m.relay, Some(Location::new(1, 6)), Some(fetched)).await;
    let w2 = within("subscribed to the new publisher", writers.recv()).await.unwrap();
    assert_eq!(within("old upstream released", m.w1.closed()).await, WriterEnd::Unsubscribed);
    continue_group_one(m, w2).await;
}

#[tokio::test]
async fn a_publisher_back_after_a_loss_continues_the_stream() {
    let m = mid_group().await;
    let fetched = (0..=6).map(|o| object(1, o)).collect();
    let (_p2, _writers, w2) = back_after_loss(&m, Location::new(1, 6), Some(fetched)).await;
    continue_group_one(m, w2).await;
}

#[tokio::test]
async fn objects_missing_at_the_change_reset_the_stream() {
    let mut m = mid_group().await;
    // The new publisher is at object 8 of group 1 and serves no fetch: 5..8 never reach
    // the relay, so object 9 cannot follow object 4 on the open stream.
    let (_p2, _writers, w2) = back_after_loss(&m, Location::new(1, 8), None).await;
    write_group(&w2, 1, 9..12, false);
    write_group(&w2, 2, 0..3, false);
    m.seen.read_until(&mut m.r, |s| s.ends.contains_key(&(1, 0)) && s.ended(2)).await;
    assert_eq!(m.seen.group(1), vec![0, 1, 2, 3, 4], "nothing after the hole: {:?}", m.seen);
    assert!(
        matches!(m.seen.ends[&(1, 0)][..], [Some(_)]),
        "group 1's stream reset, not finished, and no second one: {:?}",
        m.seen
    );
    assert_eq!(m.seen.group(2), vec![0, 1, 2]);
    m.relay.shutdown().await;
}

#[tokio::test]
async fn a_stream_of_an_older_group_ends_at_the_change() {
    let mut m = mid_group().await;
    // The new publisher is already in group 2: nothing continues group 1.
    let fetched = (0..=1).map(|o| object(2, o)).collect();
    let (_p2, _writers, w2) = back_after_loss(&m, Location::new(2, 1), Some(fetched)).await;
    write_group(&w2, 2, 2..4, false);
    m.seen.read_until(&mut m.r, |s| s.ended_somehow(1) && s.ended(2)).await;
    assert_eq!(m.seen.group(1), vec![0, 1, 2, 3, 4]);
    assert_eq!(m.seen.group(2), vec![0, 1, 2, 3]);
    assert_eq!(
        m.seen.ends[&(1, 0)],
        vec![Some(SESSION_CLOSED)],
        "group 1's stream reset once, with SESSION_CLOSED: {:?}",
        m.seen
    );
    m.relay.shutdown().await;
}

#[tokio::test]
async fn a_stream_a_new_publisher_does_not_continue_is_reset() {
    let mut m = mid_group().await;
    // A newer publisher, already in group 2, while the first one's session stays open: the
    // relay releases the first one with group 1's stream still open upstream.
    let fetched = (0..=1).map(|o| object(2, o)).collect();
    let (_p2, mut writers) = source(&m.relay, Some(Location::new(2, 1)), Some(fetched)).await;
    let w2 = within("subscribed to the new publisher", writers.recv()).await.unwrap();
    assert_eq!(within("old upstream released", m.w1.closed()).await, WriterEnd::Unsubscribed);
    write_group(&w2, 2, 2..4, false);
    m.seen.read_until(&mut m.r, |s| s.ended_somehow(1) && s.ended(2)).await;
    assert_eq!(m.seen.group(1), vec![0, 1, 2, 3, 4]);
    assert_eq!(m.seen.group(2), vec![0, 1, 2, 3]);
    assert_eq!(
        m.seen.ends[&(1, 0)],
        vec![Some(INTERNAL_ERROR)],
        "group 1's stream reset once, not finished: {:?}",
        m.seen
    );
    m.relay.shutdown().await;
}

#[tokio::test]
async fn a_stream_the_new_upstream_does_not_continue_ends_once() {
    let mut m = mid_group().await;
    // The new publisher is behind, at object 3 of group 1 (its fetch repeats what was
    // sent), and has nothing more of group 1: it goes on with group 2.
    let fetched = (0..=3).map(|o| object(1, o)).collect();
    let (_p2, _writers, w2) = back_after_loss(&m, Location::new(1, 3), Some(fetched)).await;
    write_group(&w2, 2, 0..3, false);
    m.seen.read_until(&mut m.r, |s| s.ended_somehow(1) && s.ended(2)).await;
    // A late object of group 1 after its stream was ended: not on a second stream. (It
    // shows why the stream was reset rather than finished: group 1 had more objects.)
    write_group(&w2, 1, 5..6, false);
    write_group(&w2, 3, 0..2, false);
    m.seen.read_until(&mut m.r, |s| s.ended(3)).await;
    assert_eq!(m.seen.group(1), vec![0, 1, 2, 3, 4], "{:?}", m.seen);
    assert_eq!(
        m.seen.ends[&(1, 0)],
        vec![Some(SESSION_CLOSED)],
        "group 1's stream reset once: {:?}",
        m.seen
    );
    m.relay.shutdown().await;
}
