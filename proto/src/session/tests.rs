//! Session tests on virtual time: a [`Pair`] of sessions wired back to back (the shape of
//! quinn's `tests/util.rs`), one test per session-closing rule with its exact termination
//! code, and a seeded no-panic sweep over random control bytes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::coding::Encode;
use crate::data::{
    Datagram, DatagramBody, FetchHeader, FetchItem, FetchObject, FetchReader, FetchWriter,
    SubgroupHeader, SubgroupIdMode, SubgroupObject, SubgroupReader, SubgroupWriter,
};
use crate::message::{self, AuthToken, Message, RequestErrorCode, TokenValue};
use crate::types::{FullTrackName, Location, RequestId, TrackAlias, TrackNamespace};

// ----- the pair -----

/// Two sessions connected back to back. Every transmit of one side is delivered to the
/// other at once; time only moves through [`Pair::advance`].
struct Pair {
    now: Instant,
    client: Session,
    server: Session,
    client_events: VecDeque<Event>,
    server_events: VecDeque<Event>,
}

/// Maps a stream as one side names it to the name the other side uses: this endpoint's
/// SUBSCRIBE_NAMESPACE stream is a peer stream there, keyed by the request ID.
fn peer_view(stream: Stream) -> Stream {
    match stream {
        Stream::Control => Stream::Control,
        Stream::SubscribeNamespace(id) => Stream::Peer(id.0),
        Stream::Peer(k) => Stream::SubscribeNamespace(RequestId(k)),
    }
}

impl Pair {
    fn new() -> Self {
        Pair::with(SessionConfig::default(), SessionConfig::default())
    }

    fn with(client: SessionConfig, server: SessionConfig) -> Self {
        let now = Instant::now();
        let mut p = Pair {
            now,
            client: Session::new(now, Role::Client, client),
            server: Session::new(now, Role::Server, server),
            client_events: VecDeque::new(),
            server_events: VecDeque::new(),
        };
        p.drive();
        p
    }

    /// A pair after SETUP, with the SetupComplete events consumed.
    fn ready() -> Self {
        let mut p = Pair::new();
        assert!(matches!(p.client_event(), Event::SetupComplete { .. }));
        assert!(matches!(p.server_event(), Event::SetupComplete { .. }));
        p
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn drive(&mut self) {
        // Bounded: a protocol ping-pong that never settles is a bug this catches.
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                self.server.handle_stream_bytes(self.now, peer_view(t.stream), &t.data, t.fin);
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.client.handle_stream_bytes(self.now, peer_view(t.stream), &t.data, t.fin);
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push_back(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push_back(e);
            }
            if !moved {
                return;
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Moves virtual time forward, firing due timers on both sides.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.drive();
        }
        self.now = end;
        self.drive();
    }

    fn client_event(&mut self) -> Event {
        self.client_events.pop_front().expect("expected a client event")
    }

    fn server_event(&mut self) -> Event {
        self.server_events.pop_front().expect("expected a server event")
    }

    fn assert_quiet(&self) {
        assert!(self.client_events.is_empty(), "client events: {:?}", self.client_events);
        assert!(self.server_events.is_empty(), "server events: {:?}", self.server_events);
    }
}

fn track(ns: &str, name: &str) -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path(ns).unwrap(), name).unwrap()
}

fn ns(path: &str) -> TrackNamespace {
    TrackNamespace::from_path(path).unwrap()
}

fn largest(group: u64, object: u64) -> MessageParams {
    MessageParams { largest_object: Some(Location::new(group, object)), ..Default::default() }
}

// ----- two peers -----

#[test]
fn setup_exchange_grants_request_ids() {
    let mut p = Pair::with(
        SessionConfig::new(Transport::Quic).path("/relay?room=42").authority("relay.example:443"),
        SessionConfig::new(Transport::Quic).max_requests(7),
    );
    let Event::SetupComplete { peer } = p.server_event() else { panic!() };
    assert_eq!(peer.path.as_deref(), Some("/relay?room=42"));
    assert_eq!(peer.authority.as_deref(), Some("relay.example:443"));
    assert!(peer.implementation.as_ref().unwrap().starts_with(b"tiermesh/"));
    let Event::SetupComplete { .. } = p.client_event() else { panic!() };
    assert!(p.client.is_ready() && p.server.is_ready());
    // The server allows 7 client requests: IDs 0, 2, ..., 12 are below 14.
    assert_eq!(p.client.peer_max_request_id(), 14);
    assert_eq!(p.server.peer_max_request_id(), 200);
    p.assert_quiet();
}

#[test]
fn client_setup_carries_auth_tokens() {
    let token = TokenValue(Bytes::from_static(b"session-token"));
    let tokens = vec![AuthToken::UseValue { token_type: 1, value: token.clone() }];
    let mut p =
        Pair::with(SessionConfig::default().setup_auth_tokens(tokens), SessionConfig::default());
    let Event::SetupComplete { peer } = p.server_event() else { panic!() };
    assert_eq!(peer.auth_tokens, vec![(1, token)]);
}

#[test]
fn webtransport_client_sends_no_path_or_authority() {
    let mut p = Pair::with(
        SessionConfig::new(Transport::WebTransport).path("/x").authority("h"),
        SessionConfig::new(Transport::WebTransport),
    );
    let Event::SetupComplete { peer } = p.server_event() else { panic!() };
    assert_eq!((peer.path, peer.authority), (None, None));
    assert!(p.server.is_ready());
}

#[test]
fn publish_namespace_accept_done_and_cancel() {
    let mut p = Pair::ready();
    let id = p.client.publish_namespace(p.now, ns("clinic/room-42"), MessageParams::default());
    let id = id.unwrap();
    assert_eq!(id, RequestId(0));
    p.drive();
    let Event::PublishNamespaceRequested { request_id, namespace, .. } = p.server_event() else {
        panic!()
    };
    assert_eq!((request_id, namespace), (id, ns("clinic/room-42")));
    p.server.accept_request(p.now, id, MessageParams::default()).unwrap();
    p.drive();
    let Event::RequestOk { request_id, kind, .. } = p.client_event() else { panic!() };
    assert_eq!((request_id, kind), (id, RequestKind::PublishNamespace));

    p.client.publish_namespace_done(p.now, id).unwrap();
    p.drive();
    assert_eq!(p.server_event(), Event::PublishNamespaceDone { request_id: id });

    // A second namespace, revoked by the receiver.
    let id2 = p.client.publish_namespace(p.now, ns("clinic/room-7"), MessageParams::default());
    let id2 = id2.unwrap();
    p.drive();
    let _ = p.server_event();
    p.server.accept_request(p.now, id2, MessageParams::default()).unwrap();
    p.drive();
    let _ = p.client_event();
    p.server
        .publish_namespace_cancel(p.now, id2, RequestErrorCode::Unauthorized, "token expired")
        .unwrap();
    p.drive();
    let Event::PublishNamespaceCancelled { request_id, code, reason } = p.client_event() else {
        panic!()
    };
    assert_eq!((request_id, code), (id2, RequestErrorCode::Unauthorized));
    assert_eq!(reason.to_string(), "token expired");
    assert_eq!(p.client.open_requests(), 0);
    assert_eq!(p.server.open_requests(), 0);
    p.assert_quiet();
}

#[test]
fn subscribe_namespace_on_its_own_stream() {
    let mut p = Pair::ready();
    let id = p
        .client
        .subscribe_namespace(p.now, ns("clinic"), SubscribeOptions::Both, MessageParams::default())
        .unwrap();
    // The request travels on a new bidirectional stream, not the control stream.
    let t = p.client.poll_transmit().unwrap();
    assert_eq!(t.stream, Stream::SubscribeNamespace(id));
    p.server.handle_stream_bytes(p.now, Stream::Peer(id.0), &t.data, false);
    p.drive();
    let Event::SubscribeNamespaceRequested { request_id, prefix, options, .. } = p.server_event()
    else {
        panic!()
    };
    assert_eq!((request_id, prefix, options), (id, ns("clinic"), SubscribeOptions::Both));
    // NAMESPACE cannot precede the answer.
    assert!(p.server.namespace(p.now, id, &ns("clinic/room-42")).is_err());
    p.server.accept_request(p.now, id, MessageParams::default()).unwrap();
    p.server.namespace(p.now, id, &ns("clinic/room-42")).unwrap();
    p.server.namespace(p.now, id, &ns("clinic/room-7")).unwrap();
    p.server.namespace_done(p.now, id, &ns("clinic/room-42")).unwrap();
    assert_eq!(
        p.server.namespace_done(p.now, id, &ns("clinic/room-1")),
        Err(Error::Invalid("NAMESPACE_DONE before NAMESPACE"))
    );
    assert!(p.server.namespace(p.now, id, &ns("other/x")).is_err());
    // Everything for the subscription goes on its stream.
    while let Some(t) = p.server.poll_transmit() {
        assert_eq!(t.stream, Stream::Peer(id.0));
        p.client.handle_stream_bytes(p.now, Stream::SubscribeNamespace(id), &t.data, t.fin);
    }
    p.drive();
    let Event::RequestOk { kind: RequestKind::SubscribeNamespace, .. } = p.client_event() else {
        panic!()
    };
    assert_eq!(
        p.client_event(),
        Event::Namespace { request_id: id, namespace: ns("clinic/room-42") }
    );
    assert_eq!(
        p.client_event(),
        Event::Namespace { request_id: id, namespace: ns("clinic/room-7") }
    );
    assert_eq!(
        p.client_event(),
        Event::NamespaceDone { request_id: id, namespace: ns("clinic/room-42") }
    );
    // An overlapping prefix is refused locally: the peer would answer PREFIX_OVERLAP.
    assert!(
        p.client
            .subscribe_namespace(
                p.now,
                ns("clinic/room-42"),
                SubscribeOptions::Both,
                Default::default()
            )
            .is_err()
    );
    // Cancelling finishes the stream; the server sees the subscription end and finishes too.
    p.client.unsubscribe_namespace(p.now, id).unwrap();
    let t = p.client.poll_transmit().unwrap();
    assert!(t.fin && t.data.is_empty() && t.stream == Stream::SubscribeNamespace(id));
    p.server.handle_stream_bytes(p.now, Stream::Peer(id.0), &[], true);
    assert_eq!(p.server.poll_event(), Some(Event::SubscribeNamespaceEnded { request_id: id }));
    let t = p.server.poll_transmit().unwrap();
    assert!(t.fin && t.stream == Stream::Peer(id.0));
    assert_eq!(p.server.open_requests(), 0);
}

#[test]
fn overlapping_namespace_subscription_is_refused_by_the_publisher() {
    let mut p = Pair::ready();
    let a = p
        .client
        .subscribe_namespace(p.now, ns("clinic"), SubscribeOptions::Namespace, Default::default())
        .unwrap();
    p.drive();
    let _ = p.server_event();
    // A second prefix that overlaps, written by hand (the session would not send it).
    let m = message::SubscribeNamespace {
        request_id: RequestId(2),
        prefix: ns("clinic/room-1"),
        options: SubscribeOptions::Both,
        params: Default::default(),
    };
    p.server.handle_stream_bytes(p.now, Stream::Peer(2), &m.to_vec(), false);
    let t = p.server.poll_transmit().unwrap();
    assert_eq!(t.stream, Stream::Peer(2));
    assert!(t.fin, "a refused SUBSCRIBE_NAMESPACE stream is finished at once");
    let mut cur = &t.data[..];
    let Message::RequestError(e) = Message::decode(&mut cur).unwrap() else { panic!() };
    assert_eq!((e.request_id, e.error_code), (RequestId(2), RequestErrorCode::PrefixOverlap));
    assert!(!p.server.is_closed());
    let _ = a;
}

/// The whole subscriber flow a relay edge runs: SUBSCRIBE with a relative joining FETCH sent
/// before SUBSCRIBE_OK, objects on a subgroup stream and in a datagram resolved through the
/// alias, the fetch stream, REQUEST_UPDATE, and UNSUBSCRIBE.
#[test]
fn subscribe_join_fetch_objects_update_unsubscribe() {
    let mut p = Pair::ready();
    let video = track("clinic/room-42/dr-lee", "video/720p");
    let params = MessageParams {
        subscription_filter: Some(SubscriptionFilter::LargestObject),
        ..Default::default()
    };
    let sub = p.client.subscribe(p.now, video.clone(), params).unwrap();
    assert_eq!(
        p.client.subscribe(p.now, video.clone(), Default::default()),
        Err(Error::DuplicateSubscription)
    );
    let fetch = p
        .client
        .fetch(
            p.now,
            FetchRequest::RelativeJoining { subscription: sub, groups_back: 2 },
            Default::default(),
        )
        .unwrap();
    p.drive();
    let Event::SubscribeRequested { request_id, track, .. } = p.server_event() else { panic!() };
    assert_eq!((request_id, &track), (sub, &video));
    // The joining fetch waits until the subscription it joins is accepted.
    p.assert_quiet();

    let alias = p.server.accept_subscribe(p.now, sub, largest(5, 3), Default::default()).unwrap();
    p.drive();
    let Event::FetchRequested { request_id, range, .. } = p.server_event() else { panic!() };
    assert_eq!(request_id, fetch);
    assert_eq!(range.track, video);
    assert_eq!(range.joining, Some(sub));
    // Relative joining: {5 - 2, 0} up to the saved largest {5, 3}, sent as "plus one".
    assert_eq!((range.start, range.end), (Location::new(3, 0), Location::new(5, 4)));
    let Event::SubscribeOk { request_id, track_alias, params, .. } = p.client_event() else {
        panic!()
    };
    assert_eq!((request_id, track_alias), (sub, alias));
    assert_eq!(params.largest_object, Some(Location::new(5, 3)));
    assert_eq!(p.client.lookup_alias(alias), Some(AliasTarget { request_id: sub, ended: false }));

    p.server
        .accept_fetch(
            p.now,
            fetch,
            false,
            Location::new(5, 4),
            Default::default(),
            Default::default(),
        )
        .unwrap();
    p.drive();
    let Event::FetchOk { request_id, end_location, end_of_track, .. } = p.client_event() else {
        panic!()
    };
    assert_eq!((request_id, end_location, end_of_track), (fetch, Location::new(5, 4), false));

    // A subgroup stream from the publisher, read by engineer B's reader on the other side.
    let stream_alias = p.server.open_data_stream(sub).unwrap();
    assert_eq!(stream_alias, alias);
    let mut w = SubgroupWriter::new(SubgroupHeader {
        track_alias: stream_alias,
        group_id: 6,
        subgroup_id: SubgroupIdMode::Zero,
        publisher_priority: Some(32),
        extensions: false,
        end_of_group: false,
    });
    let mut wire = Vec::new();
    w.encode_header(&mut wire);
    for (id, payload) in [(0u64, &b"key frame"[..]), (1, b"delta")] {
        let obj = SubgroupObject {
            object_id: id,
            payload: Bytes::copy_from_slice(payload),
            ..Default::default()
        };
        w.encode_object(&obj, &mut wire).unwrap();
    }
    let mut r = SubgroupReader::default();
    r.handle_bytes(&wire[..3]);
    let header_alias = r.header().map(|h| h.track_alias);
    r.handle_bytes(&wire[3..]);
    let header_alias = header_alias.or(r.header().map(|h| h.track_alias)).unwrap();
    let target = p.client.handle_data_stream(p.now, header_alias).unwrap();
    assert_eq!(target, AliasTarget { request_id: sub, ended: false });
    let objects: Vec<_> = std::iter::from_fn(|| r.poll_object()).map(|o| o.unwrap()).collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(&objects[0].payload[..], b"key frame");
    assert_eq!(objects[1].object_id, 1);

    // A datagram on the same alias.
    let dg = Datagram {
        track_alias: alias,
        group_id: 6,
        object_id: 2,
        publisher_priority: Some(32),
        extensions: Default::default(),
        end_of_group: false,
        body: DatagramBody::Payload(Bytes::from_static(b"audio")),
    };
    let bytes = dg.to_vec().unwrap();
    let got = Datagram::decode(&mut &bytes[..]).unwrap();
    assert_eq!(p.client.lookup_alias(got.track_alias).map(|t| t.request_id), Some(sub));
    assert_eq!(got.body, DatagramBody::Payload(Bytes::from_static(b"audio")));
    // An alias nobody announced resolves to nothing.
    assert_eq!(p.client.lookup_alias(TrackAlias(999)), None);

    // The fetch stream names its FETCH by request ID.
    let mut wire = Vec::new();
    FetchHeader { request_id: fetch }.encode(&mut wire);
    let mut fw = FetchWriter::new();
    let item = FetchItem::Object(FetchObject {
        group_id: 3,
        subgroup_id: Some(0),
        object_id: 0,
        publisher_priority: 32,
        payload: Bytes::from_static(b"old key frame"),
        ..Default::default()
    });
    fw.encode_item(&item, &mut wire).unwrap();
    let mut fr = FetchReader::new(Default::default());
    fr.handle_bytes(&wire);
    fr.handle_fin();
    assert!(p.client.fetch_is_live(fr.header().unwrap().request_id));
    assert_eq!(fr.poll_object().unwrap().unwrap(), item);
    p.client.fetch_finished(p.now, fetch).unwrap();
    p.server.fetch_finished(p.now, fetch).unwrap();
    assert!(!p.client.fetch_is_live(fetch));

    // REQUEST_UPDATE: the subscriber pauses delivery.
    let upd = p
        .client
        .request_update(p.now, sub, MessageParams { forward: Some(false), ..Default::default() })
        .unwrap();
    p.drive();
    let Event::UpdateRequested { request_id, existing, params } = p.server_event() else {
        panic!()
    };
    assert_eq!((request_id, existing, params.forward), (upd, sub, Some(false)));
    p.server.accept_request(p.now, upd, Default::default()).unwrap();
    p.drive();
    let Event::RequestOk { kind: RequestKind::RequestUpdate, .. } = p.client_event() else {
        panic!()
    };
    assert!(!p.server.subscription(sub).unwrap().forward);
    assert_eq!(p.server.open_data_stream(sub), None, "Forward State 0 opens no streams");

    // UNSUBSCRIBE: the publisher is told; the subscriber's alias resolves as ended for the
    // linger time, then not at all.
    p.client.unsubscribe(p.now, sub).unwrap();
    p.drive();
    assert_eq!(p.server_event(), Event::Unsubscribed { request_id: sub });
    assert_eq!(p.server.outgoing_alias(sub), None);
    assert_eq!(p.client.lookup_alias(alias), Some(AliasTarget { request_id: sub, ended: true }));
    p.advance(Duration::from_secs(3));
    assert_eq!(p.client.lookup_alias(alias), None);
    assert_eq!(p.client.open_requests(), 0);
    assert_eq!(p.server.open_requests(), 0);
    let (c, s) = (p.client.stats(), p.server.stats());
    // SUBSCRIBE, FETCH and REQUEST_UPDATE went each way once.
    assert_eq!((c.requests_sent, s.requests_received, s.requests_refused), (3, 3, 0));
    assert_eq!(c.bytes_sent, s.bytes_received);
    assert_eq!(s.bytes_sent, c.bytes_received);
    p.assert_quiet();
}

#[test]
fn publish_then_publish_done_counts_streams() {
    let mut p = Pair::ready();
    let audio = track("clinic/room-42/dr-lee", "audio");
    let (id, alias) =
        p.server.publish(p.now, audio.clone(), largest(9, 0), Default::default()).unwrap();
    assert_eq!(id, RequestId(1), "the server's first request ID is 1");
    p.drive();
    let Event::PublishRequested { request_id, track, track_alias, params, .. } = p.client_event()
    else {
        panic!()
    };
    assert_eq!((request_id, &track, track_alias), (id, &audio, alias));
    assert_eq!(params.largest_object, Some(Location::new(9, 0)));
    // Objects may arrive before PUBLISH_OK: the alias resolves already.
    assert_eq!(p.client.lookup_alias(alias).unwrap().request_id, id);

    p.client
        .accept_publish(p.now, id, MessageParams { forward: Some(true), ..Default::default() })
        .unwrap();
    p.drive();
    let Event::PublishOk { request_id, .. } = p.server_event() else { panic!() };
    assert_eq!(request_id, id);
    assert!(p.server.subscription(id).unwrap().established);

    // Three subgroup streams, then PUBLISH_DONE says so.
    for _ in 0..3 {
        assert_eq!(p.server.open_data_stream(id), Some(alias));
        assert!(p.client.handle_data_stream(p.now, alias).is_some());
    }
    p.server.publish_done(p.now, id, PublishDoneCode::TrackEnded, "stream over").unwrap();
    p.drive();
    let Event::PublishDone { request_id, status, stream_count, reason } = p.client_event() else {
        panic!()
    };
    assert_eq!((request_id, status, stream_count), (id, PublishDoneCode::TrackEnded, 3));
    assert_eq!(reason.to_string(), "stream over");
    // All announced streams were seen, so the subscriber released the state at once.
    assert_eq!(p.client.lookup_alias(alias), None);
    assert_eq!(p.client.open_requests(), 0);
    assert_eq!(p.server.open_requests(), 0);
}

#[test]
fn joining_fetch_on_a_published_track_uses_the_largest_from_publish() {
    let mut p = Pair::ready();
    let (id, _) =
        p.server.publish(p.now, track("a", "v"), largest(7, 2), Default::default()).unwrap();
    p.drive();
    let _ = p.client_event();
    p.client.accept_publish(p.now, id, Default::default()).unwrap();
    // The client joins the server's PUBLISH (written by hand: the session's own `fetch` joins
    // only its SUBSCRIBEs).
    let m = message::Fetch {
        request_id: RequestId(0),
        fetch_type: message::FetchType::AbsoluteJoining(message::JoiningFetch {
            joining_request_id: id,
            joining_start: 6,
        }),
        params: Default::default(),
    };
    let t = p.client.poll_transmit().unwrap();
    p.server.handle_control_bytes(p.now, &t.data);
    p.server.handle_control_bytes(p.now, &m.to_vec());
    p.drive();
    let _ = p.server_event();
    let Event::FetchRequested { range, .. } = p.server_event() else { panic!() };
    assert_eq!((range.start, range.end), (Location::new(6, 0), Location::new(7, 3)));
    assert_eq!(range.joining, Some(id));
}

#[test]
fn publish_done_with_streams_still_in_flight_lingers() {
    let mut p = Pair::ready();
    let sub = p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    let _ = p.server_event();
    let alias =
        p.server.accept_subscribe(p.now, sub, Default::default(), Default::default()).unwrap();
    p.server.open_data_stream(sub).unwrap();
    p.server.open_data_stream(sub).unwrap();
    p.server.publish_done(p.now, sub, PublishDoneCode::SubscriptionEnded, "").unwrap();
    p.drive();
    let _ = p.client_event();
    let Event::PublishDone { stream_count: 2, .. } = p.client_event() else { panic!() };
    // One stream arrives late, after PUBLISH_DONE: it is recognised as ended.
    assert_eq!(
        p.client.handle_data_stream(p.now, alias),
        Some(AliasTarget { request_id: sub, ended: true })
    );
    assert!(p.client.lookup_alias(alias).is_some());
    // The second and last one releases the state.
    assert!(p.client.handle_data_stream(p.now, alias).is_some());
    assert_eq!(p.client.lookup_alias(alias), None);
}

#[test]
fn new_group_request_needs_dynamic_groups() {
    let mut p = Pair::ready();
    let plain = p.client.subscribe(p.now, track("a", "plain"), Default::default()).unwrap();
    let dynamic = p.client.subscribe(p.now, track("a", "dynamic"), Default::default()).unwrap();
    p.drive();
    p.server.accept_subscribe(p.now, plain, Default::default(), Default::default()).unwrap();
    let ext = Extensions { dynamic_groups: Some(true), ..Default::default() };
    p.server.accept_subscribe(p.now, dynamic, Default::default(), ext).unwrap();
    p.drive();
    let ngr = MessageParams { new_group_request: Some(0), ..Default::default() };
    assert_eq!(
        p.client.request_update(p.now, plain, ngr.clone()),
        Err(Error::Invalid("NEW_GROUP_REQUEST for a track without DYNAMIC_GROUPS"))
    );
    assert!(p.client.request_update(p.now, dynamic, ngr).is_ok());
}

#[test]
fn track_status_answers_with_largest_object() {
    let mut p = Pair::ready();
    let t = track("clinic/room-42/dr-lee", "catalog");
    let id = p.client.track_status(p.now, t.clone(), Default::default()).unwrap();
    p.drive();
    let Event::TrackStatusRequested { request_id, track, .. } = p.server_event() else { panic!() };
    assert_eq!((request_id, track), (id, t));
    p.server.accept_request(p.now, id, largest(12, 0)).unwrap();
    p.drive();
    let Event::RequestOk { request_id, kind, params } = p.client_event() else { panic!() };
    assert_eq!((request_id, kind), (id, RequestKind::TrackStatus));
    assert_eq!(params.largest_object, Some(Location::new(12, 0)));
    assert_eq!(p.client.open_requests() + p.server.open_requests(), 0);
}

#[test]
fn rejected_requests_report_their_kind_and_code() {
    let mut p = Pair::ready();
    let sub = p.client.subscribe(p.now, track("a", "missing"), Default::default()).unwrap();
    p.drive();
    let _ = p.server_event();
    p.server.reject(p.now, sub, RequestErrorCode::DoesNotExist, 0, "no such track").unwrap();
    p.drive();
    let Event::RequestError { request_id, kind, code, retry_interval, reason } = p.client_event()
    else {
        panic!()
    };
    assert_eq!(
        (request_id, kind, code, retry_interval),
        (sub, RequestKind::Subscribe, RequestErrorCode::DoesNotExist, 0)
    );
    assert_eq!(reason.to_string(), "no such track");
    // The track may be subscribed again after the error.
    assert!(p.client.subscribe(p.now, track("a", "missing"), Default::default()).is_ok());
}

#[test]
fn joining_fetch_needs_a_subscription_and_content() {
    let mut p = Pair::ready();
    let sub = p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    let _ = p.server_event();
    // Accepted without LARGEST_OBJECT: nothing was published yet.
    p.server.accept_subscribe(p.now, sub, Default::default(), Default::default()).unwrap();
    p.drive();
    let _ = p.client_event();
    let f = p
        .client
        .fetch(
            p.now,
            FetchRequest::AbsoluteJoining { subscription: sub, start_group: 0 },
            Default::default(),
        )
        .unwrap();
    p.drive();
    let Event::RequestError { request_id, code, .. } = p.client_event() else { panic!() };
    assert_eq!((request_id, code), (f, RequestErrorCode::InvalidRange));
    // A joining fetch for a subscription that does not exist (written by hand).
    let m = message::Fetch {
        request_id: RequestId(4),
        fetch_type: message::FetchType::RelativeJoining(message::JoiningFetch {
            joining_request_id: RequestId(100),
            joining_start: 1,
        }),
        params: Default::default(),
    };
    p.server.handle_control_bytes(p.now, &m.to_vec());
    let t = p.server.poll_transmit().unwrap();
    let Message::RequestError(e) = Message::decode(&mut &t.data[..]).unwrap() else { panic!() };
    assert_eq!(e.error_code, RequestErrorCode::InvalidJoiningRequestId);
}

#[test]
fn request_credit_is_granted_back_as_requests_finish() {
    let mut p = Pair::with(SessionConfig::default(), SessionConfig::default().max_requests(4));
    let _ = (p.client_event(), p.server_event());
    let subs: Vec<_> = (0..4)
        .map(|i| {
            p.client.subscribe(p.now, track("a", &format!("t{i}")), Default::default()).unwrap()
        })
        .collect();
    assert_eq!(
        p.client.subscribe(p.now, track("a", "t4"), Default::default()),
        Err(Error::Blocked(8))
    );
    // Blocked twice at the same maximum: one REQUESTS_BLOCKED only.
    assert!(p.client.track_status(p.now, track("a", "t4"), Default::default()).is_err());
    p.drive();
    let mut blocked = 0;
    let mut requested = 0;
    while let Some(e) = p.server_events.pop_front() {
        match e {
            Event::RequestsBlocked { max_request_id } => {
                assert_eq!(max_request_id, RequestId(8));
                blocked += 1;
            }
            Event::SubscribeRequested { .. } => requested += 1,
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((blocked, requested), (1, 4));
    // REQUESTS_BLOCKED was answered with whatever credit was free: none yet. Finishing two
    // requests (half the window) grants two more.
    p.server.reject(p.now, subs[0], RequestErrorCode::DoesNotExist, 0, "").unwrap();
    p.drive();
    assert_eq!(p.client.peer_max_request_id(), 8);
    p.server.reject(p.now, subs[1], RequestErrorCode::DoesNotExist, 0, "").unwrap();
    p.drive();
    assert_eq!(p.client.peer_max_request_id(), 12);
    assert!(p.client_events.contains(&Event::RequestsUnblocked));
    assert!(p.client.subscribe(p.now, track("a", "t4"), Default::default()).is_ok());
}

#[test]
fn goaway_migration() {
    let mut p = Pair::ready();
    let sub = p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    let _ = p.server_event();
    p.server.accept_subscribe(p.now, sub, Default::default(), Default::default()).unwrap();
    p.server.goaway(p.now, "moqt://relay-2.example/relay").unwrap();
    assert!(p.server.goaway(p.now, "").is_err(), "one GOAWAY per session");
    p.drive();
    let _ = p.client_event();
    assert_eq!(
        p.client_event(),
        Event::Goaway { uri: Bytes::from_static(b"moqt://relay-2.example/relay") }
    );
    // The client starts no new request on this session...
    assert_eq!(
        p.client.subscribe(p.now, track("a", "c"), Default::default()),
        Err(Error::GoingAway)
    );
    // ...and its existing subscription keeps working until it moves.
    assert!(p.client.lookup_alias(TrackAlias(0)).is_some());
    // A request sent anyway (by hand) is refused by the server, not a session error.
    let m = message::Subscribe {
        request_id: RequestId(2),
        track: track("a", "c"),
        params: Default::default(),
    };
    p.server.handle_control_bytes(p.now, &m.to_vec());
    let t = p.server.poll_transmit().unwrap();
    let Message::RequestError(e) = Message::decode(&mut &t.data[..]).unwrap() else { panic!() };
    assert_eq!((e.request_id, e.retry_interval), (RequestId(2), 1));
    assert!(!p.server.is_closed());
    // The client does not close in time: GOAWAY_TIMEOUT.
    p.advance(Duration::from_secs(11));
    let r = p.server.close_reason().unwrap();
    assert_eq!(r.termination(), Some(TerminationCode::GoawayTimeout));
    assert!(!r.by_peer);
}

#[test]
fn client_closing_after_goaway_reports_no_error() {
    let mut p = Pair::ready();
    p.server.goaway(p.now, "").unwrap();
    p.drive();
    assert_eq!(p.client_event(), Event::Goaway { uri: Bytes::new() });
    p.client.close(p.now, TerminationCode::NoError, "moved");
    let Some(Event::Closed(r)) = p.client.poll_event() else { panic!() };
    assert_eq!((r.code, r.by_peer), (0, false));
    // The I/O layer carries the close to the peer.
    p.server.handle_connection_closed(p.now, r.code, &r.reason);
    let Some(Event::Closed(r)) = p.server.poll_event() else { panic!() };
    assert_eq!(
        (r.termination(), r.by_peer, r.reason.as_str()),
        (Some(TerminationCode::NoError), true, "moved")
    );
    assert_eq!(p.server.poll_timeout(), None, "nothing runs after close");
}

#[test]
fn unanswered_request_times_out() {
    let mut p = Pair::with(
        SessionConfig::default().control_message_timeout(Some(Duration::from_secs(5))),
        SessionConfig::default(),
    );
    let _ = (p.client_event(), p.server_event());
    p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    p.advance(Duration::from_secs(4));
    assert!(!p.client.is_closed());
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.client.close_reason().unwrap().termination(),
        Some(TerminationCode::ControlMessageTimeout)
    );
}

#[test]
fn answered_request_cancels_its_timer() {
    let mut p = Pair::ready();
    let sub = p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    p.server.accept_subscribe(p.now, sub, Default::default(), Default::default()).unwrap();
    p.drive();
    p.advance(Duration::from_secs(120));
    assert!(!p.client.is_closed() && !p.server.is_closed());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn auth_tokens_are_registered_and_resolved() {
    let mut p = Pair::ready();
    let token = TokenValue(Bytes::from_static(b"signed-jwt"));
    let reg = MessageParams {
        auth_tokens: vec![AuthToken::Register { alias: 7, token_type: 0, value: token.clone() }],
        ..Default::default()
    };
    p.client.subscribe(p.now, track("a", "1"), reg).unwrap();
    let use_alias =
        MessageParams { auth_tokens: vec![AuthToken::UseAlias { alias: 7 }], ..Default::default() };
    p.client.subscribe(p.now, track("a", "2"), use_alias).unwrap();
    p.drive();
    for _ in 0..2 {
        let Event::SubscribeRequested { params, .. } = p.server_event() else { panic!() };
        // The application sees the token itself whichever way it was sent.
        assert_eq!(
            params.auth_tokens,
            vec![AuthToken::UseValue { token_type: 0, value: token.clone() }]
        );
    }
}

// ----- rules that close the session -----

/// A server session that has received CLIENT_SETUP (granting it 100 requests) and has
/// drained its SERVER_SETUP and events.
fn server_ready(config: SessionConfig) -> Session {
    let now = Instant::now();
    let mut s = Session::new(now, Role::Server, config);
    let setup = message::ClientSetup {
        params: message::SetupParams { max_request_id: Some(200), ..Default::default() },
    };
    s.handle_control_bytes(now, &setup.to_vec());
    drain(&mut s);
    assert!(s.is_ready());
    s
}

/// A client session that has received SERVER_SETUP.
fn client_ready() -> Session {
    let now = Instant::now();
    let mut c = Session::new(now, Role::Client, SessionConfig::default());
    let setup = message::ServerSetup {
        params: message::SetupParams { max_request_id: Some(200), ..Default::default() },
    };
    c.handle_control_bytes(now, &setup.to_vec());
    drain(&mut c);
    assert!(c.is_ready());
    c
}

fn drain(s: &mut Session) {
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
}

fn feed(s: &mut Session, msg: impl Into<Message>) {
    let msg: Message = msg.into();
    s.handle_control_bytes(Instant::now(), &msg.to_vec());
}

/// Asserts the session closed itself with `code`, emitted the event, and stopped.
#[track_caller]
fn assert_closed(s: &mut Session, code: TerminationCode) {
    let r = s.close_reason().unwrap_or_else(|| panic!("session still open, expected {code:?}"));
    assert_eq!(r.termination(), Some(code), "closed with {r:?}");
    assert!(!r.by_peer);
    assert!(!r.reason.is_empty(), "the reason phrase says what was wrong");
    let mut saw = false;
    while let Some(e) = s.poll_event() {
        if let Event::Closed(c) = e {
            assert_eq!(&c, s.close_reason().unwrap());
            saw = true;
        }
    }
    assert!(saw, "Closed event emitted");
    assert_eq!(s.poll_transmit(), None, "nothing is sent after close");
}

fn subscribe_msg(id: u64, name: &str) -> message::Subscribe {
    message::Subscribe {
        request_id: RequestId(id),
        track: track("a", name),
        params: Default::default(),
    }
}

#[test]
fn message_before_setup_is_a_violation() {
    let mut s = Session::new(Instant::now(), Role::Server, SessionConfig::default());
    feed(&mut s, subscribe_msg(0, "x"));
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn second_setup_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, message::ClientSetup::default());
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn setup_of_the_wrong_role_is_a_violation() {
    let mut s = Session::new(Instant::now(), Role::Server, SessionConfig::default());
    feed(&mut s, message::ServerSetup::default());
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
    let mut c = Session::new(Instant::now(), Role::Client, SessionConfig::default());
    feed(&mut c, message::ClientSetup::default());
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn request_id_of_the_wrong_parity_is_invalid() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, subscribe_msg(1, "x"));
    assert_closed(&mut s, TerminationCode::InvalidRequestId);
}

#[test]
fn repeated_or_decreasing_request_id_is_invalid() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, subscribe_msg(0, "x"));
    feed(&mut s, subscribe_msg(4, "y"));
    assert!(!s.is_closed());
    feed(&mut s, subscribe_msg(2, "z"));
    assert_closed(&mut s, TerminationCode::InvalidRequestId);

    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, subscribe_msg(0, "x"));
    feed(&mut s, subscribe_msg(0, "y"));
    assert_closed(&mut s, TerminationCode::InvalidRequestId);
}

#[test]
fn skipping_many_request_ids_is_invalid() {
    let mut s = server_ready(SessionConfig::default().max_requests(1000));
    feed(&mut s, subscribe_msg(2 * 70, "x"));
    assert_closed(&mut s, TerminationCode::InvalidRequestId);
}

#[test]
fn request_id_at_the_maximum_is_too_many_requests() {
    let mut s = server_ready(SessionConfig::default().max_requests(2));
    feed(&mut s, subscribe_msg(0, "x"));
    feed(&mut s, subscribe_msg(2, "y"));
    assert!(!s.is_closed());
    feed(&mut s, subscribe_msg(4, "z"));
    assert_closed(&mut s, TerminationCode::TooManyRequests);
}

#[test]
fn no_requests_allowed_by_default_maximum_of_zero() {
    let mut s = server_ready(SessionConfig::default().max_requests(0));
    feed(&mut s, subscribe_msg(0, "x"));
    assert_closed(&mut s, TerminationCode::TooManyRequests);
}

#[test]
fn subscribe_ok_reusing_a_live_alias_is_duplicate_track_alias() {
    let mut c = client_ready();
    let a = c.subscribe(Instant::now(), track("a", "1"), Default::default()).unwrap();
    let b = c.subscribe(Instant::now(), track("a", "2"), Default::default()).unwrap();
    feed(
        &mut c,
        message::SubscribeOk { request_id: a, track_alias: TrackAlias(5), ..Default::default() },
    );
    assert!(!c.is_closed());
    feed(
        &mut c,
        message::SubscribeOk { request_id: b, track_alias: TrackAlias(5), ..Default::default() },
    );
    assert_closed(&mut c, TerminationCode::DuplicateTrackAlias);
}

#[test]
fn publish_reusing_a_live_alias_is_duplicate_track_alias() {
    let mut s = server_ready(SessionConfig::default());
    let publish = |id: u64, name: &str| message::Publish {
        request_id: RequestId(id),
        track: track("a", name),
        track_alias: TrackAlias(3),
        params: Default::default(),
        extensions: Default::default(),
    };
    feed(&mut s, publish(0, "1"));
    assert!(!s.is_closed());
    feed(&mut s, publish(2, "2"));
    assert_closed(&mut s, TerminationCode::DuplicateTrackAlias);
}

#[test]
fn alias_of_an_ended_subscription_may_be_reused() {
    let mut c = client_ready();
    let now = Instant::now();
    let a = c.subscribe(now, track("a", "1"), Default::default()).unwrap();
    feed(
        &mut c,
        message::SubscribeOk { request_id: a, track_alias: TrackAlias(5), ..Default::default() },
    );
    c.unsubscribe(now, a).unwrap();
    let b = c.subscribe(now, track("a", "2"), Default::default()).unwrap();
    feed(
        &mut c,
        message::SubscribeOk { request_id: b, track_alias: TrackAlias(5), ..Default::default() },
    );
    assert!(!c.is_closed());
    assert_eq!(c.lookup_alias(TrackAlias(5)).unwrap().request_id, b);
}

#[test]
fn unknown_message_type_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    // Type 0x01 (reserved), length 0.
    s.handle_control_bytes(Instant::now(), &[0x01, 0x00, 0x00]);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn unknown_message_parameter_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    let mut payload = Vec::new();
    RequestId(0).encode(&mut payload);
    track("a", "b").encode(&mut payload);
    payload.extend_from_slice(&[0x01, 0x40, 0x44, 0x00]); // one parameter: type 0x44, value 0
    let mut frame = vec![0x03];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&payload);
    s.handle_control_bytes(Instant::now(), &frame);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn malformed_key_value_is_key_value_formatting_error() {
    let mut s = server_ready(SessionConfig::default());
    // SUBSCRIBE whose LARGEST_OBJECT... is not allowed there; use an AUTHORIZATION TOKEN with
    // an unknown alias type instead (type 0x03, length 1, value 0x09).
    let mut payload = Vec::new();
    RequestId(0).encode(&mut payload);
    track("a", "b").encode(&mut payload);
    payload.extend_from_slice(&[0x01, 0x03, 0x01, 0x09]);
    let mut frame = vec![0x03];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&payload);
    s.handle_control_bytes(Instant::now(), &frame);
    assert_closed(&mut s, TerminationCode::KeyValueFormattingError);
}

#[test]
fn path_over_webtransport_is_invalid_path() {
    let mut s =
        Session::new(Instant::now(), Role::Server, SessionConfig::new(Transport::WebTransport));
    let setup = message::ClientSetup {
        params: message::SetupParams { path: Some("/x".into()), ..Default::default() },
    };
    feed(&mut s, setup);
    assert_closed(&mut s, TerminationCode::InvalidPath);
}

#[test]
fn path_from_a_server_is_invalid_path() {
    let mut c = Session::new(Instant::now(), Role::Client, SessionConfig::default());
    let setup = message::ServerSetup {
        params: message::SetupParams { path: Some("/x".into()), ..Default::default() },
    };
    feed(&mut c, setup);
    assert_closed(&mut c, TerminationCode::InvalidPath);
}

#[test]
fn unserved_path_is_invalid_path_and_bad_syntax_is_malformed_path() {
    let cfg = SessionConfig::default().allowed_paths(vec!["/relay".into()]);
    let mut s = Session::new(Instant::now(), Role::Server, cfg.clone());
    let setup = message::ClientSetup {
        params: message::SetupParams { path: Some("/other".into()), ..Default::default() },
    };
    feed(&mut s, setup);
    assert_closed(&mut s, TerminationCode::InvalidPath);

    let mut s = Session::new(Instant::now(), Role::Server, cfg);
    let setup = message::ClientSetup {
        params: message::SetupParams { path: Some("no-slash".into()), ..Default::default() },
    };
    feed(&mut s, setup);
    assert_closed(&mut s, TerminationCode::MalformedPath);
}

#[test]
fn authority_over_webtransport_is_invalid_authority() {
    let mut s =
        Session::new(Instant::now(), Role::Server, SessionConfig::new(Transport::WebTransport));
    let setup = message::ClientSetup {
        params: message::SetupParams {
            authority: Some("relay.example".into()),
            ..Default::default()
        },
    };
    feed(&mut s, setup);
    assert_closed(&mut s, TerminationCode::InvalidAuthority);
}

#[test]
fn unsupported_version_fails_negotiation() {
    let mut s =
        Session::new(Instant::now(), Role::Server, SessionConfig::default().protocol("moqt-15"));
    assert_closed(&mut s, TerminationCode::VersionNegotiationFailed);
}

#[test]
fn length_that_does_not_match_the_payload_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    // UNSUBSCRIBE (0xA) claiming 3 bytes for a 1-byte request ID.
    s.handle_control_bytes(Instant::now(), &[0x0a, 0x00, 0x03, 0x00, 0x00, 0x00]);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn partial_messages_wait_for_the_rest() {
    let mut s = server_ready(SessionConfig::default());
    let bytes = subscribe_msg(0, "video").to_vec();
    for b in &bytes {
        assert!(s.poll_event().is_none());
        s.handle_control_bytes(Instant::now(), std::slice::from_ref(b));
    }
    assert!(matches!(s.poll_event(), Some(Event::SubscribeRequested { .. })));
}

#[test]
fn answer_to_a_request_never_sent_is_a_violation() {
    let mut c = client_ready();
    feed(&mut c, message::SubscribeOk { request_id: RequestId(40), ..Default::default() });
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn answer_with_the_peers_parity_is_invalid_request_id() {
    let mut c = client_ready();
    feed(&mut c, message::RequestOk { request_id: RequestId(1), ..Default::default() });
    assert_closed(&mut c, TerminationCode::InvalidRequestId);
}

#[test]
fn second_answer_to_a_subscribe_is_a_violation() {
    let mut c = client_ready();
    let a = c.subscribe(Instant::now(), track("a", "1"), Default::default()).unwrap();
    feed(
        &mut c,
        message::SubscribeOk { request_id: a, track_alias: TrackAlias(1), ..Default::default() },
    );
    feed(
        &mut c,
        message::RequestError {
            request_id: a,
            error_code: RequestErrorCode::InternalError,
            retry_interval: 0,
            reason: Default::default(),
        },
    );
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn answer_of_the_wrong_kind_is_a_violation() {
    let mut c = client_ready();
    let a = c.subscribe(Instant::now(), track("a", "1"), Default::default()).unwrap();
    feed(&mut c, message::FetchOk { request_id: a, ..Default::default() });
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn late_answer_after_unsubscribe_is_ignored() {
    let mut c = client_ready();
    let now = Instant::now();
    let a = c.subscribe(now, track("a", "1"), Default::default()).unwrap();
    c.unsubscribe(now, a).unwrap();
    feed(
        &mut c,
        message::SubscribeOk { request_id: a, track_alias: TrackAlias(1), ..Default::default() },
    );
    feed(
        &mut c,
        message::PublishDone {
            request_id: a,
            status_code: PublishDoneCode::SubscriptionEnded,
            stream_count: 0,
            reason: Default::default(),
        },
    );
    assert!(!c.is_closed());
    assert_eq!(c.poll_event(), None, "the application already forgot the subscription");
}

#[test]
fn unsubscribe_for_a_subscription_never_made_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, message::Unsubscribe { request_id: RequestId(8) });
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn second_goaway_is_a_violation() {
    let mut c = client_ready();
    feed(&mut c, message::GoAway::default());
    assert!(!c.is_closed());
    feed(&mut c, message::GoAway::default());
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn goaway_with_uri_from_a_client_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, message::GoAway { new_session_uri: Bytes::from_static(b"moqt://x") });
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn max_request_id_that_does_not_grow_is_a_violation() {
    let mut c = client_ready();
    feed(&mut c, message::MaxRequestId { max_request_id: RequestId(200) });
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn subscribe_namespace_on_the_control_stream_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(&mut s, message::SubscribeNamespace::default());
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn bidirectional_stream_not_starting_with_subscribe_namespace_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    let bytes = subscribe_msg(0, "x").to_vec();
    s.handle_stream_bytes(Instant::now(), Stream::Peer(4), &bytes, false);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn namespace_done_before_namespace_is_a_violation() {
    let mut c = client_ready();
    let now = Instant::now();
    let id =
        c.subscribe_namespace(now, ns("a"), SubscribeOptions::Both, Default::default()).unwrap();
    let stream = Stream::SubscribeNamespace(id);
    let ok = message::RequestOk { request_id: id, ..Default::default() }.to_vec();
    c.handle_stream_bytes(now, stream, &ok, false);
    let done = message::NamespaceDone { suffix: ns("b") }.to_vec();
    c.handle_stream_bytes(now, stream, &done, false);
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn namespace_before_the_answer_is_a_violation() {
    let mut c = client_ready();
    let now = Instant::now();
    let id =
        c.subscribe_namespace(now, ns("a"), SubscribeOptions::Both, Default::default()).unwrap();
    let m = message::Namespace { suffix: ns("b") }.to_vec();
    c.handle_stream_bytes(now, Stream::SubscribeNamespace(id), &m, false);
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn subscribe_namespace_stream_may_arrive_before_setup() {
    let now = Instant::now();
    let mut s = Session::new(now, Role::Server, SessionConfig::default());
    let m = message::SubscribeNamespace {
        request_id: RequestId(0),
        prefix: ns("a"),
        ..Default::default()
    };
    s.handle_stream_bytes(now, Stream::Peer(4), &m.to_vec(), false);
    assert_eq!(s.poll_event(), None, "held until SETUP");
    let setup = message::ClientSetup {
        params: message::SetupParams { max_request_id: Some(10), ..Default::default() },
    };
    s.handle_control_bytes(now, &setup.to_vec());
    assert!(matches!(s.poll_event(), Some(Event::SetupComplete { .. })));
    assert!(matches!(s.poll_event(), Some(Event::SubscribeNamespaceRequested { .. })));
}

#[test]
fn joining_fetch_for_a_filter_other_than_largest_object_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    let mut sub = subscribe_msg(0, "x");
    sub.params.subscription_filter = Some(SubscriptionFilter::NextGroupStart);
    feed(&mut s, sub);
    feed(
        &mut s,
        message::Fetch {
            request_id: RequestId(2),
            fetch_type: message::FetchType::RelativeJoining(message::JoiningFetch {
                joining_request_id: RequestId(0),
                joining_start: 0,
            }),
            params: Default::default(),
        },
    );
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn fetch_ok_ending_before_the_start_is_a_violation() {
    let mut c = client_ready();
    let req = FetchRequest::Standalone {
        track: track("a", "b"),
        start: Location::new(10, 5),
        end: Location::new(12, 0),
    };
    let id = c.fetch(Instant::now(), req, Default::default()).unwrap();
    feed(
        &mut c,
        message::FetchOk {
            request_id: id,
            end_location: Location::new(9, 1),
            ..Default::default()
        },
    );
    assert_closed(&mut c, TerminationCode::ProtocolViolation);
}

#[test]
fn request_update_for_a_request_never_made_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(
        &mut s,
        message::RequestUpdate {
            request_id: RequestId(0),
            existing_request_id: RequestId(6),
            params: Default::default(),
        },
    );
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn request_update_with_parameters_invalid_for_the_request_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    feed(
        &mut s,
        message::PublishNamespace {
            request_id: RequestId(0),
            namespace: ns("a"),
            params: Default::default(),
        },
    );
    feed(
        &mut s,
        message::RequestUpdate {
            request_id: RequestId(2),
            existing_request_id: RequestId(0),
            params: MessageParams { forward: Some(false), ..Default::default() },
        },
    );
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn refused_update_of_a_subscription_ends_it_with_update_failed() {
    let mut s = server_ready(SessionConfig::default());
    let now = Instant::now();
    feed(&mut s, subscribe_msg(0, "x"));
    s.accept_subscribe(now, RequestId(0), Default::default(), Default::default()).unwrap();
    feed(
        &mut s,
        message::RequestUpdate {
            request_id: RequestId(2),
            existing_request_id: RequestId(0),
            params: MessageParams { new_group_request: Some(0), ..Default::default() },
        },
    );
    drain(&mut s);
    s.reject(now, RequestId(2), RequestErrorCode::NotSupported, 0, "").unwrap();
    let t = s.poll_transmit().unwrap();
    let mut cur = &t.data[..];
    assert!(matches!(Message::decode(&mut cur).unwrap(), Message::RequestError(_)));
    let Message::PublishDone(d) = Message::decode(&mut cur).unwrap() else { panic!() };
    assert_eq!((d.request_id, d.status_code), (RequestId(0), PublishDoneCode::UpdateFailed));
    assert_eq!(s.outgoing_alias(RequestId(0)), None);
}

#[test]
fn control_stream_closed_is_a_violation() {
    let mut s = server_ready(SessionConfig::default());
    s.handle_stream_bytes(Instant::now(), Stream::Control, &[], true);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

#[test]
fn setup_not_answered_in_time_is_control_message_timeout() {
    let now = Instant::now();
    let cfg = SessionConfig::default().control_message_timeout(Some(Duration::from_secs(2)));
    let mut c = Session::new(now, Role::Client, cfg);
    assert!(c.poll_transmit().is_some(), "CLIENT_SETUP goes out at once");
    let at = c.poll_timeout().unwrap();
    assert_eq!(at, now + Duration::from_secs(2));
    c.handle_timeout(now + Duration::from_secs(1));
    assert!(!c.is_closed(), "a timeout call with nothing due does nothing");
    c.handle_timeout(at);
    assert_closed(&mut c, TerminationCode::ControlMessageTimeout);
}

#[test]
fn token_alias_registered_twice_is_duplicate_auth_token_alias() {
    let mut s = server_ready(SessionConfig::default());
    let reg = |id: u64| {
        let mut m = subscribe_msg(id, &format!("t{id}"));
        m.params.auth_tokens = vec![AuthToken::Register {
            alias: 1,
            token_type: 0,
            value: TokenValue(Bytes::from_static(b"t")),
        }];
        m
    };
    feed(&mut s, reg(0));
    assert!(!s.is_closed());
    feed(&mut s, reg(2));
    assert_closed(&mut s, TerminationCode::DuplicateAuthTokenAlias);
}

#[test]
fn token_registration_beyond_the_cache_is_overflow() {
    let mut s = server_ready(SessionConfig::default().max_auth_token_cache_size(20));
    let mut m = subscribe_msg(0, "x");
    m.params.auth_tokens = vec![AuthToken::Register {
        alias: 1,
        token_type: 0,
        value: TokenValue(Bytes::from_static(b"12345")),
    }];
    feed(&mut s, m);
    assert_closed(&mut s, TerminationCode::AuthTokenCacheOverflow);
}

#[test]
fn unknown_token_alias_is_unknown_auth_token_alias() {
    let mut s = server_ready(SessionConfig::default());
    let mut m = subscribe_msg(0, "x");
    m.params.auth_tokens = vec![AuthToken::UseAlias { alias: 9 }];
    feed(&mut s, m);
    assert_closed(&mut s, TerminationCode::UnknownAuthTokenAlias);
}

#[test]
fn client_setup_token_beyond_the_cache_is_used_once_not_an_error() {
    let now = Instant::now();
    let mut s =
        Session::new(now, Role::Server, SessionConfig::default().max_auth_token_cache_size(0));
    let setup = message::ClientSetup {
        params: message::SetupParams {
            auth_tokens: vec![AuthToken::Register {
                alias: 1,
                token_type: 0,
                value: TokenValue(Bytes::from_static(b"tok")),
            }],
            ..Default::default()
        },
    };
    feed(&mut s, setup);
    let Some(Event::SetupComplete { peer }) = s.poll_event() else { panic!() };
    assert_eq!(peer.auth_tokens, vec![(0, TokenValue(Bytes::from_static(b"tok")))]);
}

#[test]
fn timeouts_beyond_the_clock_never_fire() {
    let cfg = SessionConfig::default()
        .control_message_timeout(Some(Duration::MAX))
        .goaway_timeout(Some(Duration::MAX))
        .publish_done_linger(Duration::MAX);
    let mut p = Pair::with(cfg.clone(), cfg);
    let _ = (p.client_event(), p.server_event());
    let sub = p.client.subscribe(p.now, track("a", "b"), Default::default()).unwrap();
    p.drive();
    p.server.goaway(p.now, "").unwrap();
    p.drive();
    p.client.unsubscribe(p.now, sub).unwrap();
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn reset_of_a_namespace_stream_ends_the_subscription() {
    let mut s = server_ready(SessionConfig::default());
    let now = Instant::now();
    let m = message::SubscribeNamespace {
        request_id: RequestId(0),
        prefix: ns("a"),
        ..Default::default()
    };
    s.handle_stream_bytes(now, Stream::Peer(4), &m.to_vec(), false);
    assert!(matches!(s.poll_event(), Some(Event::SubscribeNamespaceRequested { .. })));
    s.accept_request(now, RequestId(0), Default::default()).unwrap();
    s.handle_stream_reset(now, Stream::Peer(4));
    assert_eq!(s.poll_event(), Some(Event::SubscribeNamespaceEnded { request_id: RequestId(0) }));
    assert_eq!(s.open_requests(), 0);
    assert!(s.namespace(now, RequestId(0), &ns("a/b")).is_err());
    assert!(!s.is_closed());
    // Resetting the control stream, though, ends the session.
    s.handle_stream_reset(now, Stream::Control);
    assert_closed(&mut s, TerminationCode::ProtocolViolation);
}

// ----- no panic on any input -----

/// A small deterministic generator (xorshift64*), so a failing input can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random control-stream input: raw noise, or frames with valid type codes and lengths
/// around random payloads, which gets further into the message decoders.
fn random_input(rng: &mut Rng) -> Vec<u8> {
    const TYPES: [u8; 24] = [
        0x20, 0x21, 0x10, 0x15, 0x1a, 0x07, 0x05, 0x03, 0x04, 0x02, 0x0a, 0x1d, 0x1e, 0x0b, 0x16,
        0x18, 0x17, 0x0d, 0x06, 0x08, 0x09, 0x0e, 0x0c, 0x11,
    ];
    let mut out = Vec::new();
    if rng.below(4) == 0 {
        let n = rng.below(400);
        out.extend((0..n).map(|_| rng.next() as u8));
        return out;
    }
    for _ in 0..=rng.below(6) {
        let payload_len = rng.below(40) as usize;
        out.push(TYPES[rng.below(TYPES.len() as u64) as usize]);
        // Mostly the true length, sometimes a wrong one.
        let claimed = if rng.below(8) == 0 { rng.below(64) as usize } else { payload_len };
        out.extend_from_slice(&(claimed as u16).to_be_bytes());
        // Small varints dominate so that IDs, counts and lengths often make sense.
        out.extend(
            (0..payload_len)
                .map(|_| if rng.below(3) == 0 { rng.next() as u8 } else { rng.below(6) as u8 }),
        );
    }
    out
}

#[test]
fn random_control_bytes_never_panic() {
    let mut rng = Rng(0x7165_726d_6573_6821);
    let valid_setup = message::ClientSetup {
        params: message::SetupParams { max_request_id: Some(64), ..Default::default() },
    }
    .to_vec();
    let mut closed = 0;
    for round in 0..3000u64 {
        let now = Instant::now();
        let role = if round % 3 == 0 { Role::Client } else { Role::Server };
        let mut s = Session::new(now, role, SessionConfig::default());
        let mut input = Vec::new();
        if role == Role::Server && round % 2 == 0 {
            input.extend_from_slice(&valid_setup);
        }
        input.extend(random_input(&mut rng));
        // Delivered in random pieces, as a transport would.
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(rest.len() as u64)) as usize;
            if rng.below(5) == 0 {
                s.handle_stream_bytes(
                    now,
                    Stream::Peer(rng.below(4)),
                    &rest[..n],
                    rng.below(2) == 0,
                );
            } else {
                s.handle_control_bytes(now, &rest[..n]);
            }
            rest = &rest[n..];
        }
        s.handle_timeout(now + Duration::from_secs(60));
        while s.poll_transmit().is_some() {}
        while let Some(e) = s.poll_event() {
            if let Event::Closed(r) = e {
                assert_eq!(Some(&r), s.close_reason());
            }
        }
        if s.is_closed() {
            closed += 1;
        }
    }
    // Most random inputs break some rule; the sweep must have exercised the closing paths.
    assert!(closed > 1000, "only {closed} of 3000 inputs closed the session");
}

#[test]
fn fetch_range_end_is_plus_one() {
    // FETCH ends are "plus one": {5, 0} covers all of group 5, {5, 4} ends at object 3.
    assert!(!super::recv::range_is_backwards(Location::new(5, 3), Location::new(5, 0)));
    assert!(!super::recv::range_is_backwards(Location::new(5, 3), Location::new(5, 4)));
    assert!(super::recv::range_is_backwards(Location::new(5, 3), Location::new(5, 2)));
    assert!(super::recv::range_is_backwards(Location::new(5, 3), Location::new(4, 9)));
}
