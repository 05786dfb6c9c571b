//! Guards one stream per subgroup when a mesh relay moves a track to a better route in the
//! middle of a group (make-before-break, `Mesh::move_to_better_route`): the publisher at A
//! writes groups of 50 objects on one stream each, 10 ms apart; C subscribes over its
//! direct link to A; then B appears and C - B - A becomes the better route, so C subscribes
//! through B (SUBSCRIBE and joining FETCH) and releases A's subscription. C's subscriber
//! must get every object of each group once, in order, and each group's stream must end
//! once, with FIN. Before, C finished the subscriber's streams when the new upstream was
//! established and opened new ones for the rest of the group: the group's objects on two
//! streams, which the subscriber may read out of order (draft-16 §2.2, §2.4.2).
//!
//! It takes about 3 s.

mod common;
mod mesh_common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mesh_common::direct_route;
use tiermesh_client::moq::TrackEvent;
use tiermesh_proto::data::ObjectStatus;

/// Objects per group (one stream each), one every [`EVERY`]: a group lasts half a second,
/// so the move, a few milliseconds of work, lands in the middle of one.
const OBJECTS: u64 = 50;
const EVERY: Duration = Duration::from_millis(10);

/// What C's subscriber saw: each group's Object IDs in arrival order, and how each group's
/// stream ended (`None`: FIN, else the reset code).
#[derive(Debug, Default)]
struct Seen {
    objects: HashMap<u64, Vec<u64>>,
    ends: HashMap<u64, Vec<Option<u32>>>,
    newest: u64,
}

impl Seen {
    fn add(&mut self, e: TrackEvent) {
        match e {
            TrackEvent::Object(o) => {
                assert_eq!(o.payload, payload(o.group_id, o.object_id), "same bytes");
                self.objects.entry(o.group_id).or_default().push(o.object_id);
                self.newest = self.newest.max(o.group_id);
            }
            TrackEvent::StreamEnd { group_id, reset, .. } => {
                self.ends.entry(group_id).or_default().push(reset)
            }
            TrackEvent::Done(d) => panic!("PUBLISH_DONE: {d:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_better_route_mid_group_keeps_each_group_on_one_stream() {
    let (m, _publisher, mut r, w) = direct_route().await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let writing = tokio::spawn(async move {
        // At most 20 s of groups.
        for g in 0..40u64 {
            let mut s = w.open_subgroup(g, 0, None);
            for o in 0..OBJECTS {
                s.write(o, &ext(g, o), ObjectStatus::Normal, payload(g, o)).unwrap();
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = &mut stopped => return,
                }
            }
            s.finish();
        }
    });
    let mut seen = Seen::default();
    while seen.objects.values().map(Vec::len).sum::<usize>() < 20 {
        seen.add(within("objects before the move", r.next()).await.expect("track ended"));
    }

    let b = m.better_route_through_b().await;
    // Every group the move may have cut ends on the new route, and one more after it.
    let last = seen.newest + 2;
    within_for("groups after the move", Duration::from_secs(20), async {
        while !seen.ends.contains_key(&last) {
            seen.add(r.next().await.expect("track ended"));
        }
    })
    .await;
    let _ = stop.send(());
    let _ = writing.await;

    let first = *seen.objects.keys().min().unwrap();
    for g in first..=last {
        let got = &seen.objects[&g];
        // The subscription starts after the largest object: its first group from there on.
        let from = if g == first { got[0] } else { 0 };
        assert_eq!(got, &(from..OBJECTS).collect::<Vec<_>>(), "group {g} once, in order");
        assert_eq!(
            seen.ends.get(&g),
            Some(&vec![None]),
            "group {g}'s stream ended once, with FIN: {:?}",
            seen.ends
        );
    }
    assert_eq!(m.c.upstream_subscriptions(), 1);
    m.c.shutdown().await;
    b.shutdown().await;
    m.a.shutdown().await;
}
