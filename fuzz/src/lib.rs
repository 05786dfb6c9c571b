//! The bodies of the tiermesh-proto fuzz targets. The cargo-fuzz binaries call them, and
//! `proto/tests/fuzz_corpus.rs` includes this file to replay every saved corpus and crash
//! input through exactly the same code under plain `cargo test`.
//!
//! Each function must never panic, whatever the input: a panic is a bug in tiermesh-proto.

use std::time::{Duration, Instant};

use tiermesh_proto::data::{Datagram, FetchReader, StreamKind, SubgroupReader};
use tiermesh_proto::message::{self, Message};
use tiermesh_proto::session::{Role, Session, SessionConfig, Stream};
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

/// Feeds the input to a server session as control-stream bytes (after a valid CLIENT_SETUP
/// when the first byte's low bit is set), in pieces sized by the first byte; a piece whose
/// first byte is a multiple of 7 goes to a peer-opened bidirectional stream instead. Then
/// runs its timers and drains its outputs.
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
    let step = usize::from(mode >> 1) + 1;
    for piece in body.chunks(step) {
        if piece[0] % 7 == 0 {
            s.handle_stream_bytes(now, Stream::Peer(u64::from(piece[0] % 3)), piece, false);
        } else {
            s.handle_control_bytes(now, piece);
        }
    }
    s.handle_timeout(now + Duration::from_secs(3600));
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    if s.is_closed() {
        assert!(s.close_reason().is_some());
    }
}
