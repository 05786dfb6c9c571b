//! Shared set-up for the relay tests: a relay on loopback with a generated certificate,
//! clients connected to it by pinned hash, a publisher that hands the test a writer for
//! every subscription the relay makes, and deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tiermesh_client::moq::{
    self, ClientOptions, Connection, Event, SubscribeOptions, TrackReader, TrackWriter,
};
use tiermesh_client::transport::ClientTls;
use tiermesh_proto::data::{Forwarding, Object, ObjectStatus};
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tiermesh_relay::config::RelayConfig;
use tiermesh_relay::{Relay, RelayHandle};
use tokio::sync::mpsc;

/// A relay config for tests: loopback ports, a generated certificate, everything public.
pub fn config() -> RelayConfig {
    let mut c = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    c.tls.generate = true;
    c.auth.public = vec!["".parse().unwrap()];
    c.auth.public_publish = vec!["".parse().unwrap()];
    c
}

pub async fn relay(config: RelayConfig) -> RelayHandle {
    within("relay start", Relay::start(config)).await.unwrap()
}

pub fn url(relay: &RelayHandle, scheme: &str) -> tiermesh_client::transport::Url {
    format!("{scheme}://127.0.0.1:{}/", relay.local_addr().port()).parse().unwrap()
}

pub fn options(relay: &RelayHandle) -> ClientOptions {
    ClientOptions::new(ClientTls::pinned(relay.cert_hash()))
}

/// Connects, runs the driver and waits for SETUP.
pub async fn connect_with(relay: &RelayHandle, scheme: &str, options: ClientOptions) -> Connection {
    let (conn, driver) =
        within("connect", moq::connect(&url(relay, scheme), options)).await.unwrap();
    tokio::spawn(driver.run());
    within("setup", conn.ready()).await.unwrap();
    conn
}

pub async fn connect(relay: &RelayHandle, scheme: &str) -> Connection {
    connect_with(relay, scheme, options(relay)).await
}

/// A QUIC session to `relay` (raw MoQT, `moqt` scheme) with nothing sent on it yet: for
/// tests that speak the protocol themselves.
pub async fn raw_session(relay: &RelayHandle) -> tiermesh_client::transport::Session {
    within(
        "raw connect",
        tiermesh_client::transport::connect(
            &url(relay, "moqt"),
            &ClientTls::pinned(relay.cert_hash()),
        ),
    )
    .await
    .unwrap()
}

/// Runs `f` and fails the test if it takes longer than 10 s.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_for(what, Duration::from_secs(10), f).await
}

pub async fn within_for<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn ns() -> TrackNamespace {
    TrackNamespace::from_path("clinic/room-42/dr-lee").unwrap()
}

pub fn track(name: &str) -> FullTrackName {
    FullTrackName::new(ns(), name).unwrap()
}

pub fn payload(g: u64, o: u64) -> Bytes {
    Bytes::from(format!("g{g} o{o} {}", "v".repeat((100 + o * 37 % 900) as usize)))
}

pub fn ext(g: u64, o: u64) -> Extensions {
    let mut e = Extensions::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    tiermesh_proto::loc::set_capture_timestamp_us(&mut e, now.as_micros() as u64 - 1000 + g + o);
    e
}

/// Object `o` of group `g` on subgroup 0, with the bytes of [`payload`] and the
/// extensions of [`ext`]: what a publisher's fetch response carries.
pub fn object(g: u64, o: u64) -> Object {
    Object {
        group_id: g,
        object_id: o,
        forwarding: Forwarding::Subgroup(0),
        publisher_priority: 128,
        status: ObjectStatus::Normal,
        extensions: ext(g, o),
        payload: payload(g, o),
    }
}

/// A publisher session that published `ns()`: every SUBSCRIBE the relay sends is
/// accepted (reporting `largest`) and its writer handed to the test.
pub struct Publisher {
    pub conn: Connection,
    pub writers: mpsc::UnboundedReceiver<TrackWriter>,
}

pub async fn publisher(
    relay: &RelayHandle,
    scheme: &str,
    largest: Option<tiermesh_proto::types::Location>,
) -> Publisher {
    publisher_with(relay, scheme, options(relay), largest).await
}

pub async fn publisher_with(
    relay: &RelayHandle,
    scheme: &str,
    options: ClientOptions,
    largest: Option<tiermesh_proto::types::Location>,
) -> Publisher {
    let conn = connect_with(relay, scheme, options).await;
    publish_accepting(conn, largest).await
}

/// Publishes `ns()` on an established session and accepts every SUBSCRIBE the relay
/// sends (reporting `largest`), handing its writer to the test.
pub async fn publish_accepting(
    conn: Connection,
    largest: Option<tiermesh_proto::types::Location>,
) -> Publisher {
    let (conn, writers) = publish_serving(conn, move |c, tx| async move {
        while let Some(e) = c.next_event().await {
            if let Event::Subscribe(r) = e
                && let Ok(w) = r.accept(Extensions::default(), largest).await
            {
                let _ = tx.send(w);
            }
        }
    })
    .await;
    Publisher { conn, writers }
}

/// Publishes `ns()` on an established session and spawns `serve` with a clone of the
/// session and a sender to the receiver it returns: `serve` answers the session's events
/// and hands the test what it wants to see.
pub async fn publish_serving<T, F, Fut>(
    conn: Connection,
    serve: F,
) -> (Connection, mpsc::UnboundedReceiver<T>)
where
    F: FnOnce(Connection, mpsc::UnboundedSender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    within("publish_namespace", conn.publish_namespace(ns(), None)).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(conn.clone(), tx));
    (conn, rx)
}

/// Writes objects `objects` of group `g` on one stream and finishes it unless `open`.
pub fn write_group(
    w: &TrackWriter,
    g: u64,
    objects: std::ops::Range<u64>,
    open: bool,
) -> Option<moq::SubgroupStream> {
    let mut s = w.open_subgroup(g, 0, None);
    for o in objects {
        s.write(o, &ext(g, o), ObjectStatus::Normal, payload(g, o)).unwrap();
    }
    if open {
        Some(s)
    } else {
        s.finish();
        None
    }
}

/// A relay with a publisher of `ns()` and one subscriber of its track `name`, both on
/// `scheme`, and the writer the relay's upstream SUBSCRIBE handed the publisher. Keep the
/// whole value while the test runs: dropping a session closes it.
pub struct Subscribed {
    pub relay: RelayHandle,
    pub publisher: Publisher,
    pub subscriber: Connection,
    pub reader: TrackReader,
    pub writer: TrackWriter,
}

/// Starts a relay with `config`, connects a publisher and a subscriber of track `name` and
/// waits for the relay's SUBSCRIBE to reach the publisher.
pub async fn subscribed(config: RelayConfig, scheme: &str, name: &str) -> Subscribed {
    let relay = relay(config).await;
    let mut publisher = publisher(&relay, scheme, None).await;
    let subscriber = connect(&relay, scheme).await;
    let reader =
        within("subscribe", subscriber.subscribe(track(name), SubscribeOptions::default()))
            .await
            .unwrap();
    let writer = within("upstream", publisher.writers.recv()).await.unwrap();
    Subscribed { relay, publisher, subscriber, reader, writer }
}

/// Reads `n` objects and checks each group's objects arrive in order with their bytes.
pub async fn expect_objects(r: &mut TrackReader, n: usize) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    let mut next = std::collections::HashMap::new();
    for _ in 0..n {
        let o = within("object", r.next_object()).await.expect("track ended early");
        let want = next.entry(o.group_id).or_insert(o.object_id);
        assert_eq!(o.object_id, *want, "objects of group {} in order", o.group_id);
        *want += 1;
        assert_eq!(o.payload, payload(o.group_id, o.object_id), "same bytes");
        seen.push((o.group_id, o.object_id));
    }
    seen
}

/// Waits (polling the relay's own counters, bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
