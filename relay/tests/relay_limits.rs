//! Guards the limits that protect the relay: garbage on one session's control stream
//! closes only that session with PROTOCOL_VIOLATION; sessions beyond max_sessions are
//! refused; a client going past its request credit is closed with TOO_MANY_REQUESTS.

mod common;

use common::*;
use tiermesh_client::moq::SubscribeOptions;
use tiermesh_client::transport;
use tiermesh_proto::TerminationCode;
use tiermesh_proto::message::{ClientSetup, Message, MessageParams, SetupParams, Subscribe};
use tiermesh_proto::types::RequestId;

fn app_code(reason: &transport::CloseReason) -> Option<u64> {
    match reason {
        transport::CloseReason::Application { by: transport::Side::Peer, code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn garbage_on_one_control_stream_closes_only_that_session() {
    let relay = relay(config()).await;
    let mut publisher = publisher(&relay, "moqt", None).await;
    let good = connect(&relay, "https").await;
    let mut r = within("subscribe", good.subscribe(track("video"), SubscribeOptions::default()))
        .await
        .unwrap();
    let w = within("upstream", publisher.writers.recv()).await.unwrap();

    let bad = raw_session(&relay).await;
    let (mut send, _recv) = bad.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n").await.unwrap();
    let reason = within("bad session closed", bad.closed()).await;
    assert_eq!(app_code(&reason), Some(TerminationCode::ProtocolViolation.code()), "{reason}");

    // Everyone else carries on.
    write_group(&w, 0, 0..5, false);
    expect_objects(&mut r, 5).await;
    assert!(good.close_reason().is_none());
    assert!(publisher.conn.close_reason().is_none());
    relay.shutdown().await;
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused() {
    let mut c = config();
    c.limits.max_sessions = 2;
    let relay = relay(c).await;
    let _a = connect(&relay, "moqt").await;
    let _b = connect(&relay, "https").await;
    let third = raw_session(&relay).await;
    let reason = within("refused", third.closed()).await;
    assert_eq!(app_code(&reason), Some(503), "{reason}");
    assert_eq!(relay.metrics().sessions_refused.get(), 1);
    assert_eq!(relay.sessions(), 2);
    relay.shutdown().await;
}

#[tokio::test]
async fn too_many_requests_closes_the_session() {
    let mut c = config();
    c.limits.max_requests_per_session = 2;
    let relay = relay(c).await;
    // A client that respects MAX_REQUEST_ID is held back by its own session.
    let polite = connect(&relay, "moqt").await;
    let _ = polite;
    // A raw client that ignores it sends three SUBSCRIBEs (request IDs 0, 2, 4).
    let s = raw_session(&relay).await;
    let (mut send, _recv) = s.open_bi().await.unwrap();
    let mut bytes = Vec::new();
    Message::from(ClientSetup {
        params: SetupParams { path: Some("/".into()), ..Default::default() },
    })
    .try_encode(&mut bytes)
    .unwrap();
    for i in 0..3u64 {
        Message::from(Subscribe {
            request_id: RequestId(2 * i),
            track: track(&format!("t{i}")),
            params: MessageParams::default(),
        })
        .try_encode(&mut bytes)
        .unwrap();
    }
    send.write_all(&bytes).await.unwrap();
    let reason = within("closed", s.closed()).await;
    assert_eq!(app_code(&reason), Some(TerminationCode::TooManyRequests.code()), "{reason}");
    relay.shutdown().await;
}

#[tokio::test]
async fn namespaces_deeper_than_the_limit_are_refused() {
    let mut c = config();
    c.limits.max_namespace_depth = 2;
    let relay = relay(c).await;
    let conn = connect(&relay, "moqt").await;
    match within("publish_namespace", conn.publish_namespace(ns(), None)).await {
        Err(tiermesh_client::moq::Error::Rejected { code, .. }) => {
            assert_eq!(code, tiermesh_proto::message::RequestErrorCode::NotSupported)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The session carries on.
    let short = tiermesh_proto::types::TrackNamespace::from_path("clinic/room-42").unwrap();
    within("publish_namespace", conn.publish_namespace(short, None)).await.unwrap();
    relay.shutdown().await;
}
