//! A publisher that opens many streams at once is not held back by the relay's stream
//! credit. A session starts with a small limit of unidirectional streams (idle subscribers
//! are many and open none) that grows only once the relay sees a quarter of it in use, a
//! round trip later. So the relay grants 256 at once to a session that sends
//! PUBLISH_NAMESPACE, and to a mesh peer it subscribes through (a link the peer dialled
//! starts at the small limit too). Here a real publisher (the client library's publish API)
//! holds 64 group streams open at once, four times the small limit, across a 200 ms
//! one-way emulated link (`tiermesh_link`): a stream that waited for credit would arrive a
//! 400 ms round trip after the others, so every object must arrive within one one-way
//! delay plus a margin short of that round trip.
//!
//! - `publisher_opens_64_streams_at_once_without_waiting_for_credit`: publisher → link →
//!   relay → subscriber;
//! - `mesh_peer_opens_64_streams_at_once_without_waiting_for_credit`: publisher → relay B →
//!   link (B dialled A) → relay A → subscriber.

mod common;
mod mesh_common;

use std::net::SocketAddr;

use bytes::Bytes;
use std::time::{Duration, Instant};

use common::*;
use mesh_common::{mesh_config, node_dir, subscribe_when_routed};
use tiermesh_client::moq::{self, SubscribeOptions, TrackReader, TrackWriter};
use tiermesh_client::transport::Url;
use tiermesh_link::{Emulator, EmulatorConfig, LinkParams, Schedule};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_relay::RelayHandle;
use tokio::sync::mpsc;

/// Group streams the publisher holds open at once: four times the small first limit (16).
const STREAMS: u64 = 64;

/// One-way delay of the emulated link, each way.
const ONE_WAY: Duration = Duration::from_millis(200);

/// How late after it was written an object may arrive: the link's one-way delay plus as
/// much again for a loaded machine (measured: at most 12 ms past the one-way delay, beside
/// a CPU-bound loop). A stream that waited for the relay's MAX_STREAMS arrives a whole
/// round trip (2 × [`ONE_WAY`]) after the others, past this bound.
const PROMPT: Duration = Duration::from_millis(200 + 200);

/// A link that delays every packet by [`ONE_WAY`] in each direction (no rate limit, no
/// loss), forwarding to `to`; it stops by itself after a minute.
async fn delayed_link(to: SocketAddr) -> Emulator {
    let params = LinkParams::default().with_delay(ONE_WAY);
    let config = EmulatorConfig::default()
        .both(Schedule::constant(params))
        .duration(Duration::from_secs(60));
    Emulator::bind_with("127.0.0.1:0".parse().unwrap(), to, config).await.unwrap()
}

/// Publishes `ns()` at `relay` over `url` and hands out the writer of every SUBSCRIBE the
/// relay sends.
async fn publish_via(
    relay: &RelayHandle,
    url: &Url,
) -> (moq::Connection, mpsc::UnboundedReceiver<TrackWriter>) {
    let (conn, driver) = within("connect", moq::connect(url, options(relay))).await.unwrap();
    tokio::spawn(driver.run());
    within("setup", conn.ready()).await.unwrap();
    let Publisher { conn, writers } = publish_accepting(conn, None).await;
    (conn, writers)
}

/// The one object of group `g`: a few bytes, so that all the streams' first bytes fit in
/// the first burst QUIC's pacer allows (with larger objects the relay's forwarded copies,
/// one small packet each, ran past it and the last few were paced out up to a one-way
/// delay later, which a credit wait's round trip must stand apart from).
fn tiny(g: u64) -> Bytes {
    Bytes::from(g.to_string())
}

/// Opens [`STREAMS`] group streams on `w` at once, one object each, and keeps them open
/// until `reader` has every object; returns how late the last one arrived after it was
/// written.
async fn open_many_and_time(w: &TrackWriter, reader: &mut TrackReader) -> Duration {
    let written = Instant::now();
    let streams: Vec<_> = (0..STREAMS)
        .map(|g| {
            let mut s = w.open_subgroup(g, 0, None);
            s.write(0, &Extensions::default(), ObjectStatus::Normal, tiny(g)).unwrap();
            s
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut last = Duration::ZERO;
    while seen.len() < STREAMS as usize {
        let o = within("every group's object", reader.next_object()).await.expect("track ended");
        assert_eq!(o.payload, tiny(o.group_id), "same bytes");
        seen.insert(o.group_id);
        last = written.elapsed();
    }
    drop(streams);
    assert_eq!(seen, (0..STREAMS).collect(), "every group arrived once");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_opens_64_streams_at_once_without_waiting_for_credit() {
    let relay = relay(config()).await;
    let link = delayed_link(relay.local_addr()).await;
    let via_link: Url = format!("moqt://{}/", link.local_addr()).parse().unwrap();
    let (_publisher, mut writers) = publish_via(&relay, &via_link).await;

    let sub = connect(&relay, "moqt").await;
    let mut reader =
        within("subscribe", sub.subscribe(track("video"), SubscribeOptions::default()))
            .await
            .unwrap();
    let w = within("upstream at the publisher", writers.recv()).await.unwrap();

    let last = open_many_and_time(&w, &mut reader).await;
    println!("publisher → link → relay: the last of {STREAMS} streams arrived {last:?} after");
    assert!(last >= ONE_WAY, "the link delays ({last:?})");
    assert!(
        last < PROMPT,
        "a stream waited for the relay's stream credit: the last of {STREAMS} arrived {last:?} \
         after it was written (one-way delay {ONE_WAY:?})"
    );
    relay.shutdown().await;
    let _ = link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_peer_opens_64_streams_at_once_without_waiting_for_credit() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tiermesh_certs::ca::generate("test mesh").unwrap();
    // A accepts the link, B dials it through the delayed link: A is the side whose first
    // stream limit for its peer is the small one.
    let a = relay(mesh_config("a", "r1", node_dir(&ca, dir.path(), "a"), &[], 100)).await;
    let link = delayed_link(a.mesh_addr().unwrap()).await;
    let b_peers = [("a", "r1", format!("moqt://{}", link.local_addr()))];
    let b = relay(mesh_config("b", "r1", node_dir(&ca, dir.path(), "b"), &b_peers, 100)).await;
    eventually("link up", || a.mesh_peers().len() == 1 && b.mesh_peers().len() == 1).await;

    let direct = url(&b, "moqt");
    let (_publisher, mut writers) = publish_via(&b, &direct).await;
    let want = Some(vec!["a".to_owned(), "b".to_owned()]);
    eventually("A routes to B", || a.mesh_route(&ns()) == want).await;
    let sub = connect(&a, "moqt").await;
    let mut reader = subscribe_when_routed(&a, &sub).await;
    let w = within("upstream at the publisher", writers.recv()).await.unwrap();

    let last = open_many_and_time(&w, &mut reader).await;
    println!("publisher → B → link → A: the last of {STREAMS} streams arrived {last:?} after");
    assert!(last >= ONE_WAY, "the link delays ({last:?})");
    assert!(
        last < PROMPT,
        "a stream waited for A's stream credit on the mesh link: the last of {STREAMS} arrived \
         {last:?} after it was written (one-way delay {ONE_WAY:?})"
    );
    a.shutdown().await;
    b.shutdown().await;
    let _ = link.shutdown().await;
}
