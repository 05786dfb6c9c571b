//! Guards the answer every downstream SUBSCRIBE gets while the relay's own upstream
//! SUBSCRIBE for the track is pending: when the publisher refuses, every parked subscriber
//! gets REQUEST_ERROR with the publisher's code; when the publisher's session ends first,
//! DOES_NOT_EXIST (as a SUBSCRIBE arriving after it left would); when it never answers,
//! TIMEOUT. Subscribers that arrive while the refusal is being handled are answered too.

mod common;

use std::time::Duration;

use common::*;
use tiermesh_client::moq::{self, Connection, Event, SubscribeOptions, SubscribeRequest};
use tiermesh_proto::message::RequestErrorCode;
use tiermesh_relay::RelayHandle;
use tokio::sync::mpsc;

/// A publisher of `ns()` that hands every SUBSCRIBE the relay sends to the test,
/// unanswered (or refuses it at once with `auto_refuse`).
async fn holding_publisher(
    relay: &RelayHandle,
    auto_refuse: Option<RequestErrorCode>,
) -> (Connection, mpsc::UnboundedReceiver<SubscribeRequest>) {
    publish_serving(connect(relay, "moqt").await, move |c, tx| async move {
        while let Some(e) = c.next_event().await {
            if let Event::Subscribe(r) = e {
                match auto_refuse {
                    Some(code) => r.reject(code, "no such track"),
                    None => {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    })
    .await
}

/// Subscribes from each connection to `name` at once; the answers, in connection order.
fn subscribe_all(
    subs: &[Connection],
    name: &str,
) -> Vec<tokio::task::JoinHandle<Result<moq::TrackReader, moq::Error>>> {
    subs.iter()
        .map(|s| {
            let s = s.clone();
            let t = track(name);
            tokio::spawn(async move { s.subscribe(t, SubscribeOptions::default()).await })
        })
        .collect()
}

/// Waits for every answer and checks each is REQUEST_ERROR with `code`.
async fn expect_refusals(
    answers: Vec<tokio::task::JoinHandle<Result<moq::TrackReader, moq::Error>>>,
    code: RequestErrorCode,
) {
    for (i, a) in answers.into_iter().enumerate() {
        match within_for("an answer", Duration::from_secs(15), a).await.unwrap() {
            Err(moq::Error::Rejected { code: got, .. }) => {
                assert_eq!(got, code, "subscriber {i} refused with the wrong code")
            }
            Err(e) => panic!("subscriber {i}: {e}"),
            Ok(_) => panic!("subscriber {i} accepted without a publisher"),
        }
    }
}

async fn subscribers(relay: &RelayHandle, n: usize) -> Vec<Connection> {
    let mut subs = Vec::new();
    for _ in 0..n {
        subs.push(connect(relay, "moqt").await);
    }
    subs
}

#[tokio::test]
async fn parked_subscribers_all_get_the_publishers_refusal() {
    let relay = relay(config()).await;
    let (_publisher, mut requests) = holding_publisher(&relay, None).await;
    let subs = subscribers(&relay, 4).await;
    let answers = subscribe_all(&subs, "video");
    let upstream = within("upstream SUBSCRIBE", requests.recv()).await.unwrap();
    let m = relay.metrics();
    eventually("all four parked", || m.subscribes_pending.get() == 4).await;
    assert!(requests.try_recv().is_err(), "one upstream SUBSCRIBE for four subscribers");
    upstream.reject(RequestErrorCode::DoesNotExist, "no video here");
    expect_refusals(answers, RequestErrorCode::DoesNotExist).await;
    assert_eq!(m.subscribes_pending.get(), 0);
    eventually("track forgotten", || relay.tracks() == 0).await;
    relay.shutdown().await;
}

/// Subscribers keep arriving while the refusal is handled: each one is answered, whether it
/// was parked on the refused upstream or started a new one.
#[tokio::test]
async fn subscribers_racing_a_refusal_are_all_answered() {
    let relay = relay(config()).await;
    let (_publisher, _) = holding_publisher(&relay, Some(RequestErrorCode::DoesNotExist)).await;
    let subs = subscribers(&relay, 4).await;
    for round in 0..25 {
        let answers = subscribe_all(&subs, &format!("t{round}"));
        expect_refusals(answers, RequestErrorCode::DoesNotExist).await;
    }
    let m = relay.metrics();
    assert_eq!(m.subscribes_pending.get(), 0);
    eventually("tracks forgotten", || relay.tracks() == 0).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn parked_subscribers_are_answered_when_the_publisher_leaves() {
    let relay = relay(config()).await;
    let (publisher, mut requests) = holding_publisher(&relay, None).await;
    let subs = subscribers(&relay, 3).await;
    let answers = subscribe_all(&subs, "audio");
    let _held = within("upstream SUBSCRIBE", requests.recv()).await.unwrap();
    let m = relay.metrics();
    eventually("all three parked", || m.subscribes_pending.get() == 3).await;
    publisher.close(tiermesh_proto::TerminationCode::NoError, "leaving");
    expect_refusals(answers, RequestErrorCode::DoesNotExist).await;
    eventually("track forgotten", || relay.tracks() == 0).await;
    // The publisher is gone: a new SUBSCRIBE is refused the same way, at once.
    let late =
        within("late subscribe", subs[0].subscribe(track("audio"), SubscribeOptions::default()))
            .await;
    assert!(
        matches!(late, Err(moq::Error::Rejected { code: RequestErrorCode::DoesNotExist, .. })),
        "{late:?}"
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn parked_subscribers_get_timeout_when_the_publisher_never_answers() {
    let relay = relay(config()).await;
    let (_publisher, mut requests) = holding_publisher(&relay, None).await;
    let subs = subscribers(&relay, 2).await;
    let started = std::time::Instant::now();
    let answers = subscribe_all(&subs, "video");
    let _held = within("upstream SUBSCRIBE", requests.recv()).await.unwrap();
    expect_refusals(answers, RequestErrorCode::Timeout).await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "TIMEOUT came early: {:?}",
        started.elapsed()
    );
    assert_eq!(relay.metrics().subscribes_pending.get(), 0);
    eventually("track forgotten", || relay.tracks() == 0).await;
    relay.shutdown().await;
}
