//! Guards draft-16 §5.1 at the relay as a publisher: a session holds at most one
//! subscription per track. A second SUBSCRIBE for a track the same session already
//! subscribes to (pending or established) is refused with REQUEST_ERROR
//! DUPLICATE_SUBSCRIPTION (0x19), the first subscription carries on, and the relay keeps
//! one downstream subscription for it; once the first is unsubscribed, refused or ended
//! (PUBLISH_DONE), the track can be subscribed again. The client is raw: the client library
//! will not send the second SUBSCRIBE itself.

mod common;
#[path = "../../client/tests/transport_common/control.rs"]
mod control;

use std::time::Duration;

use common::*;
use tiermesh_client::transport;
use tiermesh_proto::message::{
    Message, MessageParams, RequestErrorCode, SetupParams, Subscribe, Unsubscribe,
};
use tiermesh_proto::types::{Location, RequestId, SubscriptionFilter};

/// A raw MoQT client: its control stream, written and read message by message.
struct Raw {
    session: transport::Session,
    control: control::RawControl,
}

impl Raw {
    async fn connect(relay: &tiermesh_relay::RelayHandle) -> Self {
        let session = raw_session(relay).await;
        let params = SetupParams { path: Some("/".into()), ..Default::default() };
        let control = control::RawControl::setup(&session, params).await;
        Self { session, control }
    }
}

fn subscribe(request_id: u64) -> Message {
    Subscribe {
        request_id: RequestId(request_id),
        track: track("video"),
        params: MessageParams {
            subscription_filter: Some(SubscriptionFilter::LargestObject),
            ..Default::default()
        },
    }
    .into()
}

/// The relay's downstream subscriptions, once they stop changing for 200 ms (bounded).
async fn settled_subscriptions(relay: &tiermesh_relay::RelayHandle) -> i64 {
    let mut last = relay.metrics().subscriptions.get();
    let mut since = tokio::time::Instant::now();
    within("subscriptions settle", async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = relay.metrics().subscriptions.get();
            if now != last {
                (last, since) = (now, tokio::time::Instant::now());
            } else if since.elapsed() >= Duration::from_millis(200) {
                return now;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_second_subscribe_for_an_established_track_is_a_duplicate() {
    let relay = relay(config()).await;
    let mut publisher = publisher(&relay, "moqt", Some(Location::new(3, 4))).await;
    let mut raw = Raw::connect(&relay).await;

    raw.control.write(&[subscribe(0)]).await;
    match raw.control.read().await {
        Message::SubscribeOk(ok) => assert_eq!(ok.request_id, RequestId(0)),
        other => panic!("SUBSCRIBE_OK expected, got {other:?}"),
    }
    let _w = within("upstream", publisher.writers.recv()).await.unwrap();
    eventually("first subscription added", || relay.metrics().subscriptions.get() == 1).await;

    raw.control.write(&[subscribe(2)]).await;
    match raw.control.read().await {
        Message::RequestError(e) => {
            assert_eq!(e.request_id, RequestId(2));
            assert_eq!(e.error_code, RequestErrorCode::DuplicateSubscription, "{e:?}");
            assert_eq!(e.error_code.code(), 0x19);
        }
        other => panic!("REQUEST_ERROR DUPLICATE_SUBSCRIPTION expected, got {other:?}"),
    }
    assert_eq!(settled_subscriptions(&relay).await, 1, "one downstream subscription");
    assert!(raw.session.close_reason().is_none(), "the session carries on");

    // Unsubscribed, the track can be subscribed again on the same session.
    raw.control.write(&[Unsubscribe { request_id: RequestId(0) }.into()]).await;
    eventually("first subscription gone", || relay.metrics().subscriptions.get() == 0).await;
    raw.control.write(&[subscribe(4)]).await;
    match raw.control.read().await {
        Message::SubscribeOk(ok) => assert_eq!(ok.request_id, RequestId(4)),
        other => panic!("SUBSCRIBE_OK expected, got {other:?}"),
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn a_second_subscribe_while_the_first_waits_is_a_duplicate() {
    let relay = relay(config()).await;
    let mut publisher = publisher(&relay, "moqt", Some(Location::new(3, 4))).await;
    let mut raw = Raw::connect(&relay).await;

    // Both in one write: the second arrives while the relay's upstream SUBSCRIBE for the
    // first is still on its way.
    raw.control.write(&[subscribe(0), subscribe(2)]).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(raw.control.read().await);
    }
    let ok = answers
        .iter()
        .filter(|m| matches!(m, Message::SubscribeOk(ok) if ok.request_id == RequestId(0)))
        .count();
    let dup = answers
        .iter()
        .filter(|m| {
            matches!(m, Message::RequestError(e)
                if e.request_id == RequestId(2) && e.error_code == RequestErrorCode::DuplicateSubscription)
        })
        .count();
    assert_eq!((ok, dup), (1, 1), "SUBSCRIBE_OK for 0, DUPLICATE_SUBSCRIPTION for 2: {answers:?}");
    let _w = within("upstream", publisher.writers.recv()).await.unwrap();
    assert_eq!(settled_subscriptions(&relay).await, 1, "one downstream subscription");
    assert!(publisher.writers.try_recv().is_err(), "one upstream subscription");
    relay.shutdown().await;
}

/// The rule is about live subscriptions only: once the relay refused a SUBSCRIBE, or ended
/// the subscription with PUBLISH_DONE, the session may subscribe to the track again.
#[tokio::test]
async fn a_subscribe_after_a_refusal_or_publish_done_is_not_a_duplicate() {
    let mut c = config();
    c.linger = Duration::from_millis(200);
    let relay = relay(c).await;
    let mut raw = Raw::connect(&relay).await;
    for id in [0, 2] {
        raw.control.write(&[subscribe(id)]).await;
        match raw.control.read().await {
            Message::RequestError(e) => {
                assert_eq!(e.request_id, RequestId(id));
                assert_eq!(e.error_code, RequestErrorCode::DoesNotExist, "{e:?}");
            }
            other => panic!("REQUEST_ERROR DOES_NOT_EXIST expected, got {other:?}"),
        }
    }

    let mut publisher = publisher(&relay, "moqt", Some(Location::new(3, 4))).await;
    raw.control.write(&[subscribe(4)]).await;
    assert!(
        matches!(raw.control.read().await, Message::SubscribeOk(ok) if ok.request_id == RequestId(4))
    );
    let _w = within("upstream", publisher.writers.recv()).await.unwrap();
    // The publisher leaves; after the linger the relay ends the subscription.
    publisher.conn.close(tiermesh_proto::TerminationCode::NoError, "gone");
    match raw.control.read().await {
        Message::PublishDone(d) => assert_eq!(d.request_id, RequestId(4)),
        other => panic!("PUBLISH_DONE expected, got {other:?}"),
    }
    raw.control.write(&[subscribe(6)]).await;
    match raw.control.read().await {
        Message::RequestError(e) => {
            assert_eq!(e.request_id, RequestId(6));
            assert_eq!(e.error_code, RequestErrorCode::DoesNotExist, "{e:?}");
        }
        other => panic!("REQUEST_ERROR DOES_NOT_EXIST expected, got {other:?}"),
    }
    relay.shutdown().await;
}
