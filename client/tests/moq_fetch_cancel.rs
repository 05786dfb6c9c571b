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
use transport_common::{RawPeer, moq_pair, raw_peer, within};

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

/// A FETCH_CANCEL that arrives after the publisher has finished its response (the
/// requester drops its reader with objects still unread) is ignored: no error, no panic,
/// and the session answers the next fetch whole.
#[tokio::test]
async fn fetch_cancel_after_the_response_ended_is_ignored() {
    let (client, server) = moq_pair("moqt", "/", ClientOptions::new).await;
    let publisher = tokio::spawn(async move {
        for group in [4, 5] {
            let Some(Event::Fetch(f)) = within("fetch event", server.next_event()).await else {
                panic!("expected a FETCH");
            };
            let mut resp =
                f.accept(false, Location::new(group, 3), Extensions::default()).await.unwrap();
            for o in 0..3 {
                resp.write(&object(group, o, 100)).unwrap();
            }
            resp.finish();
        }
        server
    });

    let mut fetch =
        within("fetch", client.fetch(track(), Location::new(4, 0), Location::new(4, 3), None))
            .await
            .expect("fetch accepted");
    let first = within("object", fetch.next()).await.expect("the first object");
    assert_eq!(first.location(), Location::new(4, 0));
    // The response has long been finished at the publisher: this FETCH_CANCEL is late.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(fetch);

    let mut fetch = within(
        "second fetch",
        client.fetch(track(), Location::new(5, 0), Location::new(5, 3), None),
    )
    .await
    .expect("second fetch accepted");
    let mut got = 0;
    while let Some(obj) = within("second fetch's objects", fetch.next()).await {
        assert_eq!(obj.location(), Location::new(5, got));
        got += 1;
    }
    assert_eq!(got, 3, "the session went on after a late FETCH_CANCEL");
    assert!(client.close_reason().is_none(), "the session closed");
    drop(within("publisher", publisher).await.unwrap());
}

/// The requester speaks MoQT itself and watches the fetch's data stream: after its
/// FETCH_CANCEL the publisher resets the stream (the draft's "MUST reset any open streams
/// associated with the FETCH"); with the cancel ignored the stream ran on to its FIN. A
/// second FETCH_CANCEL for the same, now ended, request is ignored and the session goes on.
#[tokio::test]
async fn fetch_cancel_resets_the_fetch_stream() {
    use tiermesh_client::transport::Error as TransportError;
    use tiermesh_proto::message::{
        Fetch, FetchCancel, FetchType, Message, MessageParams, StandaloneFetch,
    };
    use tiermesh_proto::types::RequestId;

    let (srv, cert) = transport_common::server();
    let url = transport_common::url(&srv, "moqt", "/");
    let RawPeer { client, mut control, server, .. } = raw_peer(srv, &url, &cert.pinned()).await;

    let fetch = |id: u64, group: u64, end: u64| -> Message {
        Fetch {
            request_id: RequestId(id),
            fetch_type: FetchType::Standalone(StandaloneFetch {
                track: track(),
                start: Location::new(group, 0),
                end: Location::new(group, end),
            }),
            params: MessageParams::default(),
        }
        .into()
    };
    control.write(&[fetch(0, 1, LARGE)]).await;
    let publisher = tokio::spawn(async move {
        let Some(Event::Fetch(f)) = within("fetch event", server.next_event()).await else {
            panic!("expected a FETCH");
        };
        let mut resp =
            f.accept(false, Location::new(1, LARGE), Extensions::default()).await.unwrap();
        // Paced and bounded: LARGE objects over LARGE * GAP unless cancelled.
        for o in 0..LARGE {
            if resp.write(&object(1, o, 16 * 1024)).is_err() {
                break;
            }
            tokio::time::sleep(GAP).await;
        }
        resp.finish();
        server
    });
    assert!(matches!(control.read().await, Message::FetchOk(_)), "FETCH_OK");
    let mut data = within("fetch stream", client.accept_uni()).await.unwrap();
    let mut read = 0;
    while read < 64 * 1024 {
        let chunk = within("fetch data", data.read_chunk(64 * 1024)).await.unwrap();
        read += chunk.expect("the fetch stream ended before its cancel").len();
    }
    control.write(&[FetchCancel { request_id: RequestId(0) }.into()]).await;
    let end = within("the fetch stream's end after FETCH_CANCEL", async {
        loop {
            match data.read_chunk(64 * 1024).await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    assert!(
        matches!(end, Err(TransportError::Reset { .. })),
        "the fetch stream was not reset after FETCH_CANCEL ({end:?}, {read} bytes read)"
    );

    // The same request cancelled again (it has ended): ignored, the session goes on.
    control.write(&[FetchCancel { request_id: RequestId(0) }.into()]).await;
    let server = within("publisher", publisher).await.unwrap();
    control.write(&[fetch(2, 2, 1)]).await;
    let Some(Event::Fetch(f)) = within("second fetch event", server.next_event()).await else {
        panic!("expected a second FETCH");
    };
    let mut resp = f.accept(false, Location::new(2, 1), Extensions::default()).await.unwrap();
    resp.write(&object(2, 0, 100)).unwrap();
    resp.finish();
    assert!(matches!(control.read().await, Message::FetchOk(_)), "second FETCH_OK");
    let mut data = within("second fetch stream", client.accept_uni()).await.unwrap();
    let whole = within("second fetch data", data.read_to_end(1 << 20)).await.unwrap();
    assert!(whole.len() > 100, "second fetch stream of {} bytes", whole.len());
}
