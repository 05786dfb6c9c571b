//! Guards the end of a FETCH as the requester sees it, over real QUIC on loopback: the
//! draft (§ Fetch State Management) ends a fetch with a FIN or a RESET_STREAM of its data
//! stream, and only a stream whose FETCH_HEADER arrived says which fetch it ended. So a
//! publisher that gives up on a fetch, before writing anything or after some objects, must
//! end it in a way that carries the header to the requester, or the requester waits for it
//! forever.

mod transport_common;

use std::time::Duration;

use bytes::Bytes;
use tiermesh_client::moq::{ClientOptions, Event};
use tiermesh_proto::data::{Forwarding, Object, ObjectStatus};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::{FullTrackName, Location, TrackNamespace};
use transport_common::{moq_pair, within};

fn track() -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("clinic/room-42").unwrap(), "video").unwrap()
}

fn object(o: u64) -> Object {
    Object {
        group_id: 3,
        object_id: o,
        forwarding: Forwarding::Subgroup(0),
        publisher_priority: 32,
        status: ObjectStatus::Normal,
        extensions: Extensions::default(),
        payload: Bytes::from(format!("object {o}")),
    }
}

/// How the publisher answers the one FETCH it gets, after FETCH_OK.
#[derive(Clone, Copy)]
enum Answer {
    /// Writes `n` objects, then gives up (`FetchResponse::reset`).
    ResetAfter(u64),
    /// Writes no object and finishes.
    Empty,
}

/// Serves one FETCH on `server` as `answer` says; the requester fetches group 3 and
/// returns how many objects it got before the fetch ended (panics if it does not end).
async fn fetch_with(answer: Answer) -> usize {
    let (client, server) = moq_pair("moqt", "/", ClientOptions::new).await;
    let publisher = tokio::spawn(async move {
        let Some(Event::Fetch(f)) = within("fetch event", server.next_event()).await else {
            panic!("expected a FETCH");
        };
        let mut resp = f.accept(false, Location::new(3, 5), Extensions::default()).await.unwrap();
        match answer {
            Answer::ResetAfter(n) => {
                for o in 0..n {
                    resp.write(&object(o)).unwrap();
                }
                resp.reset(0x1);
            }
            Answer::Empty => resp.finish(),
        }
        // Keeps the session up while the requester reads.
        server
    });
    let mut fetch =
        within("fetch", client.fetch(track(), Location::new(3, 0), Location::new(3, 5), None))
            .await
            .expect("fetch accepted");
    let mut got = 0;
    // Generous: the requester must see the end at once, not after an idle timeout.
    let deadline = Duration::from_secs(10);
    while let Some(obj) = tokio::time::timeout(deadline, fetch.next())
        .await
        .expect("the fetch neither ended nor delivered within 10 s")
    {
        assert_eq!(obj.location(), Location::new(3, got as u64));
        got += 1;
    }
    drop(within("publisher", publisher).await.unwrap());
    got
}

#[tokio::test]
async fn fetch_reset_before_any_object_ends_at_the_requester() {
    assert_eq!(fetch_with(Answer::ResetAfter(0)).await, 0);
}

/// A fetch given up after three objects ends at the requester with those three, every
/// time. It used to hang in 4 of 4 runs: the publisher reset the stream, and the
/// RESET_STREAM usually reached the requester before the FETCH_HEADER did (QUIC drops a
/// reset stream's unread data), so the requester never learnt which fetch had ended.
#[tokio::test]
async fn fetch_reset_after_objects_ends_at_the_requester() {
    for _ in 0..20 {
        assert_eq!(fetch_with(Answer::ResetAfter(3)).await, 3);
    }
}

#[tokio::test]
async fn empty_fetch_ends_at_the_requester() {
    assert_eq!(fetch_with(Answer::Empty).await, 0);
}
