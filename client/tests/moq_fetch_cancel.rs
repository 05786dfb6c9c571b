//! FETCH_CANCEL at the publisher, over real QUIC on loopback: draft-16 has the publisher
//! stop sending a cancelled fetch's objects and reset its data stream. A requester that
//! drops its [`FetchReader`] mid-fetch sends FETCH_CANCEL; the publisher's
//! `FetchResponse` must then see the cancel, refuse further writes and stop the stream,
//! and the session must carry on (the next fetch is answered whole).
//!
//! [`FetchReader`]: tiermesh_client::moq::FetchReader

mod transport_common;

use std::time::Duration;

use bytes::Bytes;
use tiermesh_client::moq::{ClientOptions, Error, Event};
use tiermesh_proto::data::{Forwarding, Object, ObjectStatus};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::{FullTrackName, Location, TrackNamespace};
use transport_common::{moq_pair, within};

/// Objects in the large fetch: far more than the requester reads before cancelling.
const LARGE: u64 = 2000;
/// Gap between two objects of the large fetch, so it lasts seconds unless cancelled.
const GAP: Duration = Duration::from_millis(5);

fn track() -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("clinic/room-7").unwrap(), "video").unwrap()
}

fn object(group: u64, o: u64, len: usize) -> Object {
    Object {
        group_id: group,
        object_id: o,
        forwarding: Forwarding::Subgroup(0),
        publisher_priority: 32,
        status: ObjectStatus::Normal,
        extensions: Extensions::default(),
        payload: Bytes::from(vec![(o % 251) as u8; len]),
    }
}

/// What the publisher saw of the cancelled fetch.
struct Cancelled {
    written: u64,
    seen: bool,
    write_after: Result<(), Error>,
}

#[tokio::test]
async fn fetch_cancel_stops_the_response_and_the_session_goes_on() {
    let (client, server) = moq_pair("moqt", "/", ClientOptions::new).await;
    let publisher = tokio::spawn(async move {
        // The large fetch (group 1): one 16 KiB object every GAP until cancelled.
        let Some(Event::Fetch(f)) = within("fetch event", server.next_event()).await else {
            panic!("expected a FETCH");
        };
        let mut resp =
            f.accept(false, Location::new(1, LARGE), Extensions::default()).await.unwrap();
        let mut written = 0;
        let mut seen = false;
        while written < LARGE {
            if resp.write(&object(1, written, 16 * 1024)).is_err() {
                break;
            }
            written += 1;
            tokio::select! {
                _ = resp.cancelled() => {
                    seen = true;
                    break;
                }
                _ = tokio::time::sleep(GAP) => {}
            }
        }
        let cancelled = Cancelled {
            written,
            seen: seen && resp.is_cancelled(),
            write_after: resp.write(&object(1, written, 16)),
        };
        // Finishing a cancelled response sends nothing and does not panic.
        resp.finish();

        // A second, small fetch on the same session (group 2) is answered whole.
        let Some(Event::Fetch(f)) = within("second fetch event", server.next_event()).await else {
            panic!("expected a second FETCH");
        };
        let mut resp = f.accept(false, Location::new(2, 3), Extensions::default()).await.unwrap();
        for o in 0..3 {
            resp.write(&object(2, o, 100)).unwrap();
        }
        assert!(!resp.is_cancelled());
        resp.finish();
        (server, cancelled)
    });

    let mut fetch =
        within("fetch", client.fetch(track(), Location::new(1, 0), Location::new(1, LARGE), None))
            .await
            .expect("fetch accepted");
    for o in 0..5 {
        let obj = within("object", fetch.next()).await.expect("an object before the cancel");
        assert_eq!(obj.location(), Location::new(1, o));
    }
    // Dropped mid-fetch: FETCH_CANCEL.
    drop(fetch);

    let mut fetch = within(
        "second fetch",
        client.fetch(track(), Location::new(2, 0), Location::new(2, 3), None),
    )
    .await
    .expect("second fetch accepted");
    let mut got = 0;
    while let Some(obj) = within("second fetch's objects", fetch.next()).await {
        assert_eq!(obj.location(), Location::new(2, got));
        got += 1;
    }
    assert_eq!(got, 3, "the fetch after a cancelled one is answered whole");

    let (server, cancelled) = within("publisher", publisher).await.unwrap();
    assert!(cancelled.seen, "the publisher never learnt of the FETCH_CANCEL");
    assert!(
        cancelled.written < LARGE / 2,
        "the publisher went on writing after the cancel ({} of {LARGE} objects)",
        cancelled.written
    );
    assert!(
        matches!(cancelled.write_after, Err(Error::Ended)),
        "a write after the cancel: {:?}",
        cancelled.write_after
    );
    drop(server);
}
