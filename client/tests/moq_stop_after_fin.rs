//! Guards the send path when a subscriber stops (STOP_SENDING) a stream whose FIN the
//! publisher already handed to QUIC while most of the stream was still unsent, as a player
//! leaving a tier under congestion does. quinn does not drop a finished stream's data on
//! STOP_SENDING by itself: only a reset does, which it makes when the stream's handle is
//! dropped after the stop. Unless the send path keeps such a stream's handle until it is
//! read to the end or stopped, and then takes what QUIC dropped off its unsent estimate,
//! QUIC keeps sending (and resending) hundreds of kilobytes nobody reads, counted as waiting
//! at the track's priority, and every later group of the track waits behind them.
//!
//! The link towards the subscriber is slow (240 kbit/s). The large group goes to QUIC with
//! its FIN at once; the link lets only its first packets through and then goes down for a
//! moment (what was in flight is lost); the subscriber stops the stream as soon as it sees
//! it. The next groups of the track must arrive within 2 s of the link coming back.
//!
//! The subscriber is raw (its own control stream, its own data streams) so that it stops
//! the stream the moment it opens.

mod transport_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_client::moq::{self, Event};
use tiermesh_client::transport::{self, TransportConfig};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::message::{Message, MessageParams, Subscribe};
use tiermesh_proto::types::{FullTrackName, RequestId, SubscriptionFilter, TrackNamespace};
use tokio::net::UdpSocket;
use transport_common::{RawPeer, raw_peer, server_with, within};

/// The publisher's congestion window at the start, in bytes: large enough that the whole
/// large object (and its FIN) goes to QUIC at once, cwnd plus headroom.
const INITIAL_WINDOW: u64 = 400_000;
/// The large object: more than the window, so part of it waits in QUIC unsent when the
/// subscriber stops its stream, and most of the rest is lost in the outage.
const LARGE: usize = 480_000;
/// Packets the link lets through towards the subscriber after the large object is
/// written: enough for its stream to open there.
const LET_THROUGH: i64 = 8;
/// How long the link towards the subscriber stays down once the stream is stopped.
const OUTAGE: Duration = Duration::from_millis(1500);
/// The link towards the subscriber, in bytes per second (240 kbit/s).
const RATE: u64 = 30_000;
/// The link's drop-tail queue towards the subscriber, in bytes (about 670 ms at `RATE`).
const QUEUE: usize = 20_000;
/// The deadline for the next groups once the link is back.
const DEADLINE: Duration = Duration::from_secs(2);

/// A UDP relay on loopback between the subscriber (which talks to `addr`) and the
/// publisher. Towards the publisher everything passes (counted in `up`); towards the
/// subscriber, at [`RATE`] through a drop-tail queue of [`QUEUE`] bytes, everything while
/// `gate` is negative, else `gate` more packets, then none.
struct Link {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<u64>,
    gate: Arc<AtomicI64>,
}

async fn link(server: SocketAddr) -> Link {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let up = tokio::sync::watch::Sender::new(0u64);
    let gate = Arc::new(AtomicI64::new(-1));
    let (client_tx, mut client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    {
        let (front, back, up) = (front.clone(), back.clone(), up.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                client_tx.send_if_modified(|c| c.replace(from) != Some(from));
                let _ = back.send(&buf[..n]).await;
                up.send_modify(|n| *n += 1);
            }
        });
    }
    // Towards the subscriber: through the gate into a drop-tail queue of `QUEUE` bytes,
    // then out one packet at a time at `RATE`.
    let queued = Arc::new(AtomicUsize::new(0));
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    {
        let (gate, queued) = (gate.clone(), queued.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                let pass = match gate.load(Ordering::Relaxed) {
                    0 => false,
                    g if g > 0 => {
                        gate.fetch_sub(1, Ordering::Relaxed);
                        true
                    }
                    _ => true,
                };
                if pass && queued.load(Ordering::Relaxed) + n <= QUEUE {
                    queued.fetch_add(n, Ordering::Relaxed);
                    let _ = queue_tx.send(buf[..n].to_vec());
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        while let Some(packet) = queue_rx.recv().await {
            next = next.max(tokio::time::Instant::now())
                + Duration::from_nanos(packet.len() as u64 * 1_000_000_000 / RATE);
            tokio::time::sleep_until(next).await;
            queued.fetch_sub(packet.len(), Ordering::Relaxed);
            let to = *client_rx.borrow_and_update();
            if let Some(to) = to {
                let _ = front.send_to(&packet, to).await;
            }
        }
    });
    Link { addr, up, gate }
}

fn track() -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("live/cam").unwrap(), "video").unwrap()
}

/// Writes one group of one object of `size` bytes and finishes its stream.
fn group(w: &moq::TrackWriter, g: u64, size: usize) {
    let mut s = w.open_subgroup(g, 0, None);
    s.write(0, &Extensions::default(), ObjectStatus::Normal, Bytes::from(vec![0x5a; size]))
        .unwrap();
    s.finish();
}

/// Reads the next data stream to its end; returns its length.
async fn next_group(session: &transport::Session) -> usize {
    let mut recv = session.accept_uni().await.unwrap();
    recv.read_to_end(1 << 20).await.unwrap().len()
}

#[tokio::test]
async fn later_groups_flow_after_the_peer_stops_a_finished_stream_with_bytes_unsent() {
    let config = TransportConfig::default().initial_window(Some(INITIAL_WINDOW));
    let (srv, cert) = server_with(config);
    let link = link(srv.local_addr()).await;
    let url = format!("moqt://127.0.0.1:{}/", link.addr.port()).parse().unwrap();

    // The raw subscriber connects through the link and opens its control stream; the
    // publisher accepts it.
    let RawPeer { client, mut control, server: publisher, server_transport: publisher_session } =
        raw_peer(srv, &url, &cert.pinned()).await;
    control
        .write(&[Subscribe {
            request_id: RequestId(0),
            track: track(),
            params: MessageParams {
                subscription_filter: Some(SubscriptionFilter::LargestObject),
                ..Default::default()
            },
        }
        .into()])
        .await;
    let writer = within("SUBSCRIBE at the publisher", async {
        loop {
            match publisher.next_event().await.expect("publisher open") {
                Event::Subscribe(r) => return r.accept(Extensions::default(), None).await,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(control.read().await, Message::SubscribeOk(_)), "SUBSCRIBE_OK");

    // A first small group shows the path works.
    group(&writer, 0, 1_000);
    assert!(within("group 0", next_group(&client)).await >= 1_000);

    // The large group goes to QUIC with its FIN at once; the link lets only its first
    // packets through, the subscriber stops its stream as soon as it sees it.
    link.gate.store(LET_THROUGH, Ordering::Relaxed);
    group(&writer, 1, LARGE);
    let mut large = within("large group's stream", client.accept_uni()).await.unwrap();
    let mut up = link.up.subscribe();
    up.mark_unchanged();
    large.stop(0).unwrap();
    // STOP_SENDING leaves at once: wait until the link carried a packet from the
    // subscriber, then keep the link down for the outage.
    within("STOP_SENDING sent", up.changed()).await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    link.gate.store(-1, Ordering::Relaxed);
    // The link is back: wait until QUIC has found the loss (its window shrinks), so that
    // the next groups meet the window the loss left.
    let cwnd = within("loss found", async {
        loop {
            let stats = publisher_session.stats();
            if stats.bytes_lost > 0 {
                return stats.cwnd;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The next groups, at the same priority, must arrive promptly.
    let back = Instant::now();
    for g in 2..5 {
        group(&writer, g, 1_000);
    }
    let mut received = 0;
    let mut arrivals = Vec::new();
    while let Ok(len) = tokio::time::timeout_at((back + DEADLINE).into(), next_group(&client)).await
    {
        assert!(len >= 1_000, "group stream of {len} bytes");
        arrivals.push(back.elapsed());
        received += 1;
        if received == 3 {
            break;
        }
    }
    println!(
        "after the outage (cwnd {cwnd}): {received} of 3 groups in {DEADLINE:?}, at {arrivals:?}"
    );
    assert_eq!(
        received, 3,
        "the 3 groups written after the outage arrive within {DEADLINE:?} (arrived at {arrivals:?})"
    );
}
