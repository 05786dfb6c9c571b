//! Guards the send path's budget when streams end early on a congested link: a subscriber
//! watches a track that does not fit the link (its streams reset by the delivery timeout),
//! leaves it (UNSUBSCRIBE, its open streams reset) and subscribes to a track that fits.
//! The new track must flow at once: bytes that QUIC dropped with a reset stream must not
//! keep counting as buffered in QUIC, which would hold the send budget shut.

mod transport_common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiermesh_client::moq::{self, ClientOptions, Event, ServerOptions, SubscribeOptions};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::ext::Extensions;
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Notify};
use transport_common::{server, within};

/// The link towards the subscriber, in bytes per second (2 Mbit/s).
const RATE: u64 = 250_000;
/// The link's drop-tail queue, in bytes (160 ms at `RATE`).
const QUEUE: usize = 40_000;

/// A UDP relay on loopback: the client talks to `addr`; what the server sends back is
/// paced at [`RATE`] through a drop-tail queue of [`QUEUE`] bytes. Counts the bytes it
/// delivered to the client.
struct Link {
    addr: SocketAddr,
    delivered: Arc<AtomicU64>,
}

async fn link(server: SocketAddr) -> Link {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let queue: Arc<std::sync::Mutex<(VecDeque<Vec<u8>>, usize)>> = Arc::default();
    let queued = Arc::new(Notify::new());
    // Towards the server: unshaped.
    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    // Towards the client: into the queue, dropped when it is full.
    {
        let (back, queue, queued) = (back.clone(), queue.clone(), queued.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                let mut q = queue.lock().unwrap();
                if q.1 + n <= QUEUE {
                    q.1 += n;
                    q.0.push_back(buf[..n].to_vec());
                    queued.notify_one();
                }
            }
        });
    }
    // The bottleneck: one packet at a time at `RATE`.
    {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            loop {
                let packet = {
                    let mut q = queue.lock().unwrap();
                    let p = q.0.pop_front();
                    if let Some(p) = &p {
                        q.1 -= p.len();
                    }
                    p
                };
                let Some(packet) = packet else {
                    queued.notified().await;
                    next = next.max(tokio::time::Instant::now());
                    continue;
                };
                next += Duration::from_nanos(packet.len() as u64 * 1_000_000_000 / RATE);
                tokio::time::sleep_until(next).await;
                if let Some(to) = *client.lock().await {
                    let _ = front.send_to(&packet, to).await;
                    delivered.fetch_add(packet.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    Link { addr, delivered }
}

fn track(name: &str) -> FullTrackName {
    FullTrackName::new(TrackNamespace::from_path("live/cam").unwrap(), name).unwrap()
}

/// Writes a 30 objects-per-second track of `size`-byte objects, one group a second on its
/// own subgroup stream, until the subscriber leaves or 30 s have passed.
async fn publish(w: moq::TrackWriter, size: usize) {
    let payload = Bytes::from(vec![0x5a; size]);
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    let ended = w.closed();
    tokio::pin!(ended);
    for g in 0..30u64 {
        let mut s = w.open_subgroup(g, 0, None);
        for o in 0..30u64 {
            tokio::select! {
                _ = &mut ended => return,
                _ = tick.tick() => {}
            }
            if s.write(o, &Extensions::default(), ObjectStatus::Normal, payload.clone()).is_err() {
                return;
            }
        }
        s.finish();
    }
}

#[tokio::test]
async fn lower_tier_flows_right_after_leaving_a_tier_the_link_cannot_carry() {
    let (mut srv, cert) = server();
    let link = link(srv.local_addr()).await;
    let url = format!("moqt://127.0.0.1:{}/", link.addr.port()).parse().unwrap();
    let (client, server_side) = within("connect", async {
        tokio::join!(moq::connect(&url, ClientOptions::new(cert.pinned())), async {
            let req = srv.accept().await.unwrap();
            let session = req.accept().await.unwrap();
            moq::accept(session, ServerOptions::default()).await
        })
    })
    .await;
    let (client, cd) = client.unwrap();
    let (publisher, sd) = server_side.unwrap();
    tokio::spawn(cd.run());
    tokio::spawn(sd.run());

    // The publisher: "hi" is 16 KB objects (about 3.9 Mbit/s, twice the link), "lo" is
    // 1 KB objects (about 250 kbit/s).
    tokio::spawn(async move {
        while let Some(event) = publisher.next_event().await {
            if let Event::Subscribe(r) = event {
                let size = if r.track == track("hi") { 16_000 } else { 1_000 };
                let w = r.accept(Extensions::default(), None).await.unwrap();
                tokio::spawn(publish(w, size));
            }
        }
    });

    // Watch "hi" for 4 s: it does not fit, so its streams are cut by the delivery timeout.
    let hi_opts = SubscribeOptions {
        delivery_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let mut hi = within("subscribe hi", client.subscribe(track("hi"), hi_opts)).await.unwrap();
    let mut hi_objects = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while let Ok(Some(_)) = tokio::time::timeout_at(until.into(), hi.next_object()).await {
        hi_objects += 1;
    }
    assert!(hi_objects > 0, "some of the large track arrives");

    // Leave it mid-group and switch to "lo".
    drop(hi);
    let switched = Instant::now();
    let before = link.delivered.load(Ordering::Relaxed);
    let mut lo = within("subscribe lo", client.subscribe(track("lo"), SubscribeOptions::default()))
        .await
        .unwrap();
    let mut lo_objects = 0;
    let mut first = None;
    let until = switched + Duration::from_secs(5);
    while let Ok(Some(_)) = tokio::time::timeout_at(until.into(), lo.next_object()).await {
        first.get_or_insert_with(|| switched.elapsed());
        lo_objects += 1;
    }
    let kbit_s = (link.delivered.load(Ordering::Relaxed) - before) * 8 / 5 / 1000;
    println!(
        "hi objects {hi_objects}; after the switch: first lo object after {first:?}, \
         {lo_objects} lo objects in 5 s, {kbit_s} kbit/s through the link"
    );
    // 30 objects a second are sent; allow for the subscribe round trip and the tail of the
    // large track still draining from the link's queue.
    assert!(
        first.is_some_and(|t| t < Duration::from_secs(2)),
        "the lower track starts within 2 s of the switch (first object after {first:?})"
    );
    assert!(lo_objects >= 90, "at least 90 of ~150 lower-track objects in 5 s, got {lo_objects}");
}
