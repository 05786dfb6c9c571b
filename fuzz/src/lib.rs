//! The bodies of the tiermesh-proto fuzz targets. The cargo-fuzz binaries call them, and
//! `proto/tests/fuzz_corpus.rs` includes this file to replay every saved corpus and crash
//! input through exactly the same code under plain `cargo test`.
//!
//! Each function must never panic, whatever the input: a panic is a bug in tiermesh-proto.

use std::time::{Duration, Instant};

use tiermesh_proto::data::{Datagram, FetchReader, StreamKind, SubgroupReader};
use tiermesh_proto::message::{self, Message, MessageParams, PublishDoneCode, RequestErrorCode};
use tiermesh_proto::session::{Event, FetchRequest, Role, Session, SessionConfig, Stream};
use tiermesh_proto::types::{FullTrackName, Location, RequestId, TrackNamespace};
use tiermesh_proto::{DecodeError, Encode};

/// Decodes control messages back to back until the input runs out or one is malformed.
/// Every message that decodes must encode and decode again to itself.
pub fn control_message(data: &[u8]) {
    let mut cur = data;
    // Bounded by the input: each Ok consumes at least the three framing bytes.
    while !cur.is_empty() {
        match Message::decode(&mut cur) {
            Ok(m) => {
                let mut wire = Vec::new();
                if m.try_encode(&mut wire).is_ok() {
                    let again = Message::decode(&mut &wire[..]);
                    assert_eq!(again.as_ref(), Ok(&m), "re-encoded message decodes differently");
                }
            }
            Err(DecodeError::Short) | Err(DecodeError::Malformed { .. }) => return,
        }
    }
}

/// Reads the input as a unidirectional data stream (subgroup or fetch, by its first
/// varint), fed in pieces whose sizes come from the first byte, and also as one datagram.
pub fn data_stream(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else { return };
    let step = usize::from(split % 16) + 1;
    let _ = Datagram::decode(&mut &body[..]);
    match StreamKind::peek(body) {
        Ok(StreamKind::Subgroup(_)) => {
            let mut r = SubgroupReader::default();
            for piece in body.chunks(step) {
                r.handle_bytes(piece);
                let _ = r.header();
                while let Some(o) = r.poll_object() {
                    if o.is_err() {
                        return;
                    }
                }
            }
            r.handle_fin();
            while r.poll_object().is_some_and(|o| o.is_ok()) {}
        }
        Ok(StreamKind::Fetch) => {
            let mut r = FetchReader::new(Default::default());
            for piece in body.chunks(step) {
                r.handle_bytes(piece);
                while let Some(o) = r.poll_object() {
                    if o.is_err() {
                        return;
                    }
                }
            }
            r.handle_fin();
            while r.poll_object().is_some_and(|o| o.is_ok()) {}
        }
        Err(_) => {}
    }
}

/// Feeds the input to a server session and plays its application.
///
/// The first byte picks the mode: bit 0 prepends a valid CLIENT_SETUP, bit 1 makes the
/// session send one request of each kind first (so that answers in the input can match
/// them), the other bits size the pieces the rest is cut into. Each piece goes to the
/// control stream, to a peer-opened bidirectional stream, or to this endpoint's
/// SUBSCRIBE_NAMESPACE stream, by its first byte; after each piece the events are answered
/// (accepted, refused or left) as that byte says. Then the timers run and the outputs drain.
pub fn session_input(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else { return };
    let now = Instant::now();
    let mut s = Session::new(now, Role::Server, SessionConfig::default());
    if mode & 1 == 1 {
        let setup = message::ClientSetup {
            params: message::SetupParams { max_request_id: Some(64), ..Default::default() },
        };
        s.handle_control_bytes(now, &setup.to_vec());
    }
    if mode & 2 == 2 && s.is_ready() {
        make_requests(&mut s, now);
    }
    let step = usize::from(mode >> 2) + 1;
    for piece in body.chunks(step) {
        let b = piece[0];
        match b % 8 {
            0 => s.handle_stream_bytes(now, Stream::Peer(u64::from(b % 3)), piece, b & 0x80 != 0),
            1 => {
                let id = RequestId(u64::from(b >> 3) * 2 + 1);
                s.handle_stream_bytes(now, Stream::SubscribeNamespace(id), piece, b & 0x80 != 0)
            }
            _ => s.handle_control_bytes(now, piece),
        }
        while s.poll_transmit().is_some() {}
        while let Some(e) = s.poll_event() {
            play(&mut s, now, e, b);
        }
    }
    s.handle_timeout(now + Duration::from_secs(3600));
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    if s.is_closed() {
        assert!(s.close_reason().is_some());
    }
}

fn track(name: &str) -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("a/b").unwrap(), name).unwrap()
}

/// One request of each kind from the server, IDs 1, 3, 5, ...
fn make_requests(s: &mut Session, now: Instant) {
    let p = MessageParams::default;
    let sub = s.subscribe(now, track("sub"), p()).ok();
    let _ = s.publish(now, track("pub"), p(), Default::default());
    let _ = s.fetch(
        now,
        FetchRequest::Standalone {
            track: track("fetch"),
            start: Location::new(1, 0),
            end: Location::new(4, 0),
        },
        p(),
    );
    if let Some(sub) = sub {
        let _ =
            s.fetch(now, FetchRequest::RelativeJoining { subscription: sub, groups_back: 1 }, p());
    }
    let _ = s.publish_namespace(now, TrackNamespace::from_path("a").unwrap(), p());
    let _ = s.subscribe_namespace(
        now,
        TrackNamespace::from_path("x").unwrap(),
        Default::default(),
        p(),
    );
    let _ = s.track_status(now, track("status"), p());
    while s.poll_transmit().is_some() {}
}

/// The application's answer to one event, chosen by `b`. Errors are expected (the event
/// may already be stale) and ignored: only panics matter.
fn play(s: &mut Session, now: Instant, e: Event, b: u8) {
    let refuse = b & 0x20 != 0;
    if b & 0x40 != 0 {
        return; // leave the request unanswered
    }
    let id = match e {
        Event::SubscribeRequested { request_id, .. } if !refuse => {
            let params = MessageParams {
                largest_object: Some(Location::new(u64::from(b % 5), 0)),
                ..Default::default()
            };
            let _ = s.accept_subscribe(now, request_id, params, Default::default());
            let _ = s.open_data_stream(request_id);
            if b & 0x10 != 0 {
                let _ = s.publish_done(now, request_id, PublishDoneCode::TrackEnded, "end");
            }
            return;
        }
        Event::PublishRequested { request_id, .. } if !refuse => {
            let _ = s.accept_publish(now, request_id, Default::default());
            if b & 0x10 != 0 {
                let _ = s.unsubscribe(now, request_id);
            }
            return;
        }
        Event::FetchRequested { request_id, range, .. } if !refuse => {
            let _ = s.accept_fetch(
                now,
                request_id,
                false,
                range.end,
                Default::default(),
                Default::default(),
            );
            let _ = s.fetch_finished(now, request_id);
            return;
        }
        Event::SubscribeNamespaceRequested { request_id, prefix, .. } if !refuse => {
            let _ = s.accept_request(now, request_id, Default::default());
            if let Ok(ns) = prefix.join(&TrackNamespace::from_path("n").unwrap()) {
                let _ = s.namespace(now, request_id, &ns);
                let _ = s.namespace_done(now, request_id, &ns);
            }
            return;
        }
        Event::SubscribeOk { request_id, .. } if b & 0x10 != 0 => {
            let _ = s.unsubscribe(now, request_id);
            return;
        }
        Event::SubscribeRequested { request_id, .. }
        | Event::PublishRequested { request_id, .. }
        | Event::FetchRequested { request_id, .. }
        | Event::SubscribeNamespaceRequested { request_id, .. }
        | Event::TrackStatusRequested { request_id, .. }
        | Event::UpdateRequested { request_id, .. }
        | Event::PublishNamespaceRequested { request_id, .. } => request_id,
        _ => return,
    };
    if refuse {
        let _ = s.reject(now, id, RequestErrorCode::from_code(u64::from(b % 0x33)), 0, "no");
    } else {
        let _ = s.accept_request(now, id, Default::default());
    }
}
