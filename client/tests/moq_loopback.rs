//! Guards the MoQT connection driver over real QUIC on loopback, raw QUIC and WebTransport:
//! SETUP with PATH and a token, either side publishing to the other (PUBLISH_NAMESPACE +
//! SUBSCRIBE, and PUBLISH), objects arriving in order with their bytes and extensions, a
//! joining FETCH starting at object 0 of the current group, and a close whose code and
//! reason reach the peer.

mod transport_common;

use bytes::Bytes;
use tiermesh_client::moq::{
    self, ClientOptions, Connection, Event, PublishOptions, SubscribeOptions, TrackReader,
    TrackWriter,
};
use tiermesh_proto::TerminationCode;
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::{FullTrackName, Location, TrackNamespace};
use transport_common::{moq_pair, within};

/// A MoQT session whose client sends PATH `path` and a token.
async fn pair(scheme: &str, path: &str) -> (Connection, Connection) {
    moq_pair(scheme, path, |tls| ClientOptions::new(tls).token(Bytes::from_static(b"secret-token")))
        .await
}

fn track(name: &str) -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("clinic/room-42").unwrap(), name).unwrap()
}

fn payload(g: u64, o: u64) -> Bytes {
    Bytes::from(format!("group {g} object {o} {}", "x".repeat((o * 97 % 1000) as usize)))
}

fn ext(g: u64, o: u64) -> Extensions {
    let mut e = Extensions::default();
    tiermesh_proto::loc::set_capture_timestamp_us(&mut e, 1_000_000 * g + o);
    e
}

/// Writes `groups` groups of `objects` objects, one subgroup stream each.
fn write_groups(w: &TrackWriter, first_group: u64, groups: u64, objects: u64) {
    for g in first_group..first_group + groups {
        let mut s = w.open_subgroup(g, 0, None);
        for o in 0..objects {
            s.write(o, &ext(g, o), ObjectStatus::Normal, payload(g, o)).unwrap();
        }
        s.finish();
    }
}

async fn expect_groups(r: &mut TrackReader, first_group: u64, groups: u64, objects: u64) {
    // Groups travel on separate streams and may interleave; within a group order holds.
    let mut next = std::collections::HashMap::new();
    for _ in 0..groups * objects {
        let o = within("object", r.next_object()).await.expect("track ended early");
        let want = next.entry(o.group_id).or_insert(0u64);
        assert!(o.group_id >= first_group && o.group_id < first_group + groups);
        assert_eq!(o.object_id, *want, "objects of a group arrive in order");
        *want += 1;
        assert_eq!(o.payload, payload(o.group_id, o.object_id));
        assert_eq!(o.capture_timestamp_us(), Some(1_000_000 * o.group_id + o.object_id));
    }
}

async fn client_publishes_server_subscribes(scheme: &str) {
    let (client, server) = pair(scheme, "/moq?room=42").await;
    let setup = within("ready", server.ready()).await.unwrap();
    assert_eq!(setup.auth_tokens.len(), 1, "the setup token arrives");
    if scheme == "moqt" {
        assert_eq!(setup.path.as_deref(), Some("/moq?room=42"));
    } else {
        assert_eq!(server.url_path(), Some("/moq"));
    }
    let ns = TrackNamespace::from_path("clinic/room-42").unwrap();
    let (published, ()) = tokio::join!(client.publish_namespace(ns.clone(), None), async {
        match within("event", server.next_event()).await {
            Some(Event::PublishNamespace(r)) => {
                assert_eq!(r.namespace, ns);
                r.accept();
            }
            other => panic!("expected PUBLISH_NAMESPACE, got {other:?}"),
        }
    });
    published.unwrap();
    let publisher = tokio::spawn(async move {
        match within("subscribe event", client.next_event()).await {
            Some(Event::Subscribe(r)) => {
                assert_eq!(r.track, track("video"));
                let w = r.accept(Extensions::default(), None).await.unwrap();
                write_groups(&w, 10, 3, 20);
                w.closed().await
            }
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    });
    let mut reader =
        within("subscribe", server.subscribe(track("video"), SubscribeOptions::default()))
            .await
            .unwrap();
    expect_groups(&mut reader, 10, 3, 20).await;
    drop(reader);
    assert_eq!(within("unsubscribed", publisher).await.unwrap(), moq::WriterEnd::Unsubscribed);
}

#[tokio::test]
async fn client_publishes_server_subscribes_raw_quic() {
    client_publishes_server_subscribes("moqt").await;
}

#[tokio::test]
async fn client_publishes_server_subscribes_webtransport() {
    client_publishes_server_subscribes("https").await;
}

async fn server_publishes_with_publish(scheme: &str) {
    let (client, server) = pair(scheme, "/").await;
    let server2 = server.clone();
    let accept = tokio::spawn(async move {
        match within("publish event", client.next_event()).await {
            Some(Event::Publish(p)) => {
                assert_eq!(p.track, track("audio"));
                let mut r = p.accept().await.unwrap();
                expect_groups(&mut r, 0, 5, 3).await;
                // PUBLISH_DONE may overtake the last streams: it is seen before or after them.
                let end = within("done", async {
                    loop {
                        if let Some(d) = r.done() {
                            break d.clone();
                        }
                        match r.next().await {
                            Some(_) => {}
                            None => panic!("no PUBLISH_DONE"),
                        }
                    }
                })
                .await;
                assert_eq!(end.code, tiermesh_proto::message::PublishDoneCode::TrackEnded);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    });
    let w = within("publish", server2.publish(track("audio"), PublishOptions::default()))
        .await
        .unwrap();
    write_groups(&w, 0, 5, 3);
    w.publish_done(tiermesh_proto::message::PublishDoneCode::TrackEnded, "bye");
    within("subscriber", accept).await.unwrap();
}

#[tokio::test]
async fn server_publishes_with_publish_raw_quic() {
    server_publishes_with_publish("moqt").await;
}

#[tokio::test]
async fn server_publishes_with_publish_webtransport() {
    server_publishes_with_publish("https").await;
}

#[tokio::test]
async fn joining_fetch_starts_at_object_zero_of_the_current_group() {
    let (client, server) = pair("moqt", "/").await;
    // The server publishes: group 7 has objects 0..=4 already, more follow live.
    let publisher = tokio::spawn(async move {
        let mut writer = None;
        for _ in 0..2 {
            match within("event", server.next_event()).await {
                Some(Event::Subscribe(r)) => {
                    let w =
                        r.accept(Extensions::default(), Some(Location::new(7, 4))).await.unwrap();
                    writer = Some(w);
                }
                Some(Event::Fetch(f)) => {
                    assert_eq!(f.range.start, Location::new(7, 0));
                    assert_eq!(f.range.end, Location::new(7, 5));
                    let mut resp =
                        f.accept(false, Location::new(7, 5), Extensions::default()).await.unwrap();
                    for o in 0..5 {
                        let obj = tiermesh_proto::data::Object {
                            group_id: 7,
                            object_id: o,
                            forwarding: tiermesh_proto::data::Forwarding::Subgroup(0),
                            publisher_priority: 128,
                            status: ObjectStatus::Normal,
                            extensions: ext(7, o),
                            payload: payload(7, o),
                        };
                        resp.write(&obj).unwrap();
                    }
                    resp.finish();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let w = writer.unwrap();
        let mut s = w.open_subgroup(7, 0, None);
        for o in 5..8 {
            s.write(o, &ext(7, o), ObjectStatus::Normal, payload(7, o)).unwrap();
        }
        s.finish();
        w.closed().await
    });
    let (mut reader, fetch) =
        within("join", client.join(track("video"), SubscribeOptions::default(), 0)).await.unwrap();
    assert_eq!(reader.largest(), Some(Location::new(7, 4)));
    let mut fetch = fetch.unwrap();
    for o in 0..5 {
        let obj = within("fetched object", fetch.next()).await.unwrap();
        assert_eq!(obj.location(), Location::new(7, o));
        assert_eq!(obj.payload, payload(7, o));
    }
    assert!(within("fetch end", fetch.next()).await.is_none());
    for o in 5..8 {
        let obj = within("live object", reader.next_object()).await.unwrap();
        assert_eq!(obj.location(), Location::new(7, o));
    }
    drop(reader);
    within("publisher", publisher).await.unwrap();
}

#[tokio::test]
async fn close_code_and_reason_reach_the_peer() {
    for scheme in ["moqt", "https"] {
        let (client, server) = pair(scheme, "/").await;
        within("ready", client.ready()).await.unwrap();
        client.close(TerminationCode::GoawayTimeout, "moving on");
        let seen = within("closed", server.closed()).await;
        assert!(seen.by_peer(), "{seen}");
        assert_eq!(seen.code(), Some(TerminationCode::GoawayTimeout.code()), "{seen}");
        assert_eq!(seen.reason(), "moving on");
        let own = within("closed", client.closed()).await;
        assert!(!own.by_peer());
    }
}

#[tokio::test]
async fn goaway_reaches_the_client_as_an_event() {
    let (client, server) = pair("moqt", "/").await;
    within("ready", server.ready()).await.unwrap();
    server.goaway("moqt://127.0.0.1:1/elsewhere").await.unwrap();
    match within("event", client.next_event()).await {
        Some(Event::Goaway { uri }) => assert_eq!(uri, "moqt://127.0.0.1:1/elsewhere"),
        other => panic!("expected GOAWAY, got {other:?}"),
    }
}

#[tokio::test]
async fn next_event_ends_when_the_session_closes() {
    let (client, server) = pair("moqt", "/").await;
    within("ready", server.ready()).await.unwrap();
    let s2 = server.clone();
    let waiter = tokio::spawn(async move { s2.next_event().await.is_none() });
    tokio::task::yield_now().await;
    client.close(TerminationCode::NoError, "bye");
    assert!(within("next_event ends", waiter).await.unwrap());
}
