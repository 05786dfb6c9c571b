//! Guards that the link emulator, on real UDP sockets over loopback and the real clock,
//! delivers the configured delay, rate and loss, routes replies to the right client, and
//! stops by itself. Tolerances are loose enough for a busy 2-core machine: the emulator can
//! release a packet late (timer granularity, scheduling), never early.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tiermesh_link::{Emulator, EmulatorConfig, LinkParams, Pipe, QueueLimit};
use tokio::{net::UdpSocket, time::timeout};

const MS: Duration = Duration::from_millis(1);
/// Longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A socket that answers every datagram with the same bytes, until the test ends.
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind(loopback()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> usize {
    timeout(DEADLINE, socket.recv(buf)).await.expect("datagram within the deadline").unwrap()
}

#[tokio::test]
async fn delay_each_way_is_at_least_configured_and_at_most_30ms_more() {
    let (echo, _server) = echo_server().await;
    let up = LinkParams::default().with_delay(50 * MS);
    let down = LinkParams::default().with_delay(30 * MS);
    let emulator = Emulator::bind(loopback(), echo, up, down, 1).await.unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(emulator.local_addr()).await.unwrap();

    let mut rtts = Vec::new();
    let mut buf = [0u8; 2000];
    for i in 0..10u8 {
        let sent = Instant::now();
        client.send(&[i; 200]).await.unwrap();
        let n = recv(&client, &mut buf).await;
        rtts.push(sent.elapsed());
        assert_eq!(&buf[..n], &[i; 200], "the echo of packet {i}, unchanged");
    }
    let (min, max) = (*rtts.iter().min().unwrap(), *rtts.iter().max().unwrap());
    println!("round trip through 50 ms up + 30 ms down: {min:?} .. {max:?}");
    assert!(min >= 80 * MS, "never early: {min:?}");
    assert!(max < 110 * MS, "at most 30 ms late: {max:?}");
    let stats = emulator.shutdown().await.unwrap();
    assert_eq!((stats.up.packets_out, stats.down.packets_out, stats.clients), (10, 10, 1));
}

#[tokio::test]
async fn rate_is_delivered_within_10_percent() {
    // 2 Mbit/s up, offered 4 Mbit/s for 0.6 s (300 packets of 1000 bytes, one every 2 ms),
    // with a queue that holds them all: the receiver sees the link's rate.
    let sink = UdpSocket::bind(loopback()).await.unwrap();
    let up = LinkParams::default().with_rate(2_000_000).with_queue(QueueLimit::Bytes(1_000_000));
    let emulator =
        Emulator::bind(loopback(), sink.local_addr().unwrap(), up, LinkParams::default(), 1)
            .await
            .unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(emulator.local_addr()).await.unwrap();

    const COUNT: usize = 300;
    let sender = tokio::spawn(async move {
        let mut pace = tokio::time::interval(2 * MS);
        for i in 0..COUNT {
            pace.tick().await;
            let mut packet = vec![0u8; 1000];
            packet[..4].copy_from_slice(&(i as u32).to_be_bytes());
            client.send(&packet).await.unwrap();
        }
    });
    let mut buf = [0u8; 2000];
    let mut arrivals = Vec::new();
    for _ in 0..COUNT {
        recv(&sink, &mut buf).await;
        arrivals.push(Instant::now());
    }
    sender.await.unwrap();
    let elapsed = *arrivals.last().unwrap() - arrivals[0];
    let rate = (COUNT - 1) as f64 * 8000.0 / elapsed.as_secs_f64();
    println!("2 Mbit/s link delivered {:.3} Mbit/s over {elapsed:?}", rate / 1e6);
    assert!((rate / 2e6 - 1.0).abs() < 0.10, "delivered {rate} bit/s");
    let stats = emulator.shutdown().await.unwrap();
    assert_eq!(stats.up.dropped(), 0);
}

#[tokio::test]
async fn loss_drops_exactly_the_packets_the_seeded_pipe_drops() {
    // 10% loss, 1000 packets: the emulator's up direction uses the seed as given, so the
    // packets it drops are the ones a Pipe with the same seed drops on virtual time.
    const COUNT: u32 = 1000;
    const SEED: u64 = 2026;
    let params = LinkParams::default().with_loss(0.10);
    let sink = UdpSocket::bind(loopback()).await.unwrap();
    let emulator =
        Emulator::bind(loopback(), sink.local_addr().unwrap(), params, LinkParams::default(), SEED)
            .await
            .unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(emulator.local_addr()).await.unwrap();
    let start = Instant::now();
    let mut pipe = Pipe::new(start, params, SEED);
    let mut expected = BTreeSet::new();
    for i in 0..COUNT {
        pipe.handle_packet(start, Bytes::copy_from_slice(&i.to_be_bytes()), ());
        if pipe.poll_transmit(start).is_some() {
            expected.insert(i);
        }
    }

    // Receive while sending, so that no socket buffer overflows on loopback.
    let sender = tokio::spawn(async move {
        let mut pace = tokio::time::interval(MS);
        for i in 0..COUNT {
            pace.tick().await;
            client.send(&i.to_be_bytes()).await.unwrap();
        }
    });
    let mut got = BTreeSet::new();
    let mut buf = [0u8; 16];
    while got.len() < expected.len() {
        // A packet lost where it should not be shows up as a set difference below.
        let Ok(n) = timeout(Duration::from_secs(1), sink.recv(&mut buf)).await else { break };
        got.insert(u32::from_be_bytes(buf[..n.unwrap()].try_into().unwrap()));
    }
    sender.await.unwrap();
    let lost = COUNT as usize - got.len();
    println!("10% loss: {lost} of {COUNT} lost");
    assert_eq!(got, expected, "the same packets lost as the virtual pipe with the same seed");
    assert!((70..=130).contains(&lost), "lost {lost}");
    let stats = emulator.shutdown().await.unwrap();
    assert_eq!(stats.up.dropped_loss as usize, lost);
    assert_eq!(stats.up.packets_in, COUNT as u64);
}

#[tokio::test]
async fn jitter_varies_the_delay_within_bounds_and_keeps_order() {
    // 60 ms ± 20 ms, one packet every 10 ms for 1.5 s: every packet arrives, in order, 40 ms
    // to 80 ms after it was sent (plus at most 30 ms of lateness), and the delays do vary.
    const COUNT: u32 = 150;
    let sink = UdpSocket::bind(loopback()).await.unwrap();
    let up = LinkParams::default().with_delay(60 * MS).with_jitter(20 * MS);
    let emulator =
        Emulator::bind(loopback(), sink.local_addr().unwrap(), up, LinkParams::default(), 5)
            .await
            .unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(emulator.local_addr()).await.unwrap();
    let origin = Instant::now();
    let sender = tokio::spawn(async move {
        let mut pace = tokio::time::interval(10 * MS);
        for i in 0..COUNT {
            pace.tick().await;
            // Each packet carries its index and its send time (µs since `origin`).
            let mut packet = [0u8; 12];
            packet[..4].copy_from_slice(&i.to_be_bytes());
            packet[4..].copy_from_slice(&(origin.elapsed().as_micros() as u64).to_be_bytes());
            client.send(&packet).await.unwrap();
        }
    });
    let mut buf = [0u8; 64];
    let mut delays = Vec::new();
    for expected in 0..COUNT {
        let n = recv(&sink, &mut buf).await;
        let arrived = origin.elapsed();
        assert_eq!(n, 12);
        let index = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert_eq!(index, expected, "packets arrive in order");
        let sent = Duration::from_micros(u64::from_be_bytes(buf[4..12].try_into().unwrap()));
        delays.push(arrived - sent);
    }
    sender.await.unwrap();
    let (min, max) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
    println!("60 ms ± 20 ms jitter, order kept: delays {min:?} .. {max:?}");
    assert!(min >= 40 * MS, "never below delay - jitter: {min:?}");
    assert!(max < 110 * MS, "below delay + jitter + 30 ms: {max:?}");
    assert!(max - min >= 15 * MS, "the delay varies: {min:?} .. {max:?}");
}

#[tokio::test]
async fn each_client_gets_its_own_replies() {
    let (echo, _server) = echo_server().await;
    let link = LinkParams::default().with_rate(5_000_000).with_delay(5 * MS);
    let emulator =
        Emulator::bind_with(loopback(), echo, EmulatorConfig::default().both(link)).await.unwrap();
    let a = UdpSocket::bind(loopback()).await.unwrap();
    let b = UdpSocket::bind(loopback()).await.unwrap();
    let mut buf = [0u8; 64];
    for round in 0..5u8 {
        a.send_to(&[b'a', round], emulator.local_addr()).await.unwrap();
        b.send_to(&[b'b', round], emulator.local_addr()).await.unwrap();
        let n = recv(&a, &mut buf).await;
        assert_eq!(&buf[..n], &[b'a', round]);
        let n = recv(&b, &mut buf).await;
        assert_eq!(&buf[..n], &[b'b', round]);
    }
    assert_eq!(emulator.stats().clients, 2);
}

#[tokio::test]
async fn bounded_run_stops_by_itself_and_drop_stops_forwarding() {
    let sink = UdpSocket::bind(loopback()).await.unwrap();
    let config = EmulatorConfig::default().duration(300 * MS);
    let started = Instant::now();
    let mut emulator =
        Emulator::bind_with(loopback(), sink.local_addr().unwrap(), config).await.unwrap();
    let stats = timeout(DEADLINE, emulator.finished()).await.expect("stops within 5 s").unwrap();
    let took = started.elapsed();
    assert!(took >= 300 * MS, "{took:?}");
    assert!(emulator.is_finished());
    assert!(stats.elapsed >= 300 * MS);

    // A dropped handle stops its task: the port no longer forwards.
    let emulator = Emulator::bind(
        loopback(),
        sink.local_addr().unwrap(),
        LinkParams::default(),
        LinkParams::default(),
        0,
    )
    .await
    .unwrap();
    let addr = emulator.local_addr();
    drop(emulator);
    let client = UdpSocket::bind(loopback()).await.unwrap();
    // Give the runtime a turn to run the abort, then send: nothing may arrive.
    tokio::task::yield_now().await;
    let _ = client.send_to(b"late", addr).await;
    let mut buf = [0u8; 16];
    assert!(timeout(200 * MS, sink.recv(&mut buf)).await.is_err(), "nothing forwarded after drop");
}

#[tokio::test]
async fn invalid_params_are_refused_at_bind() {
    let params = LinkParams::default().with_loss(2.0);
    let err = Emulator::bind(loopback(), loopback(), params, LinkParams::default(), 0)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("loss"), "{err}");
}

#[tokio::test]
async fn a_blackholed_link_drops_everything_both_ways_until_restored() {
    let (echo, _server) = echo_server().await;
    // Replies spend 200 ms in the link, so one can be caught inside it by the cut.
    let down = LinkParams::default().with_delay(200 * MS);
    let emulator = Emulator::bind(loopback(), echo, LinkParams::default(), down, 1).await.unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(emulator.local_addr()).await.unwrap();
    let mut buf = [0u8; 2000];
    client.send(b"before").await.unwrap();
    let n = recv(&client, &mut buf).await;
    assert_eq!(&buf[..n], b"before");

    // A reply on its way down when the link is cut is lost with it.
    client.send(b"in flight").await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while emulator.stats().down.packets_in < 2 {
        assert!(Instant::now() < deadline, "{:?}", emulator.stats());
        tokio::time::sleep(MS).await;
    }
    emulator.set_blackhole(true);
    assert!(emulator.is_blackholed());
    for i in 0..20u8 {
        client.send(&[i; 100]).await.unwrap();
    }
    // Nothing comes back: wait past the reply's 200 ms in the link (a silence cannot be
    // waited on as an event).
    let silent = timeout(500 * MS, client.recv(&mut buf)).await;
    assert!(silent.is_err(), "a packet crossed the blackholed link: {silent:?}");
    let stats = emulator.stats();
    assert_eq!(stats.blackholed, 21, "20 packets up and the reply inside the link: {stats:?}");

    emulator.set_blackhole(false);
    client.send(b"after").await.unwrap();
    let n = recv(&client, &mut buf).await;
    assert_eq!(&buf[..n], b"after", "the link carries packets again once restored");
    let stats = emulator.shutdown().await.unwrap();
    // Only "before", "in flight" and "after" entered the link; the 20 never did.
    assert_eq!((stats.up.packets_in, stats.blackholed), (3, 21), "{stats:?}");
}
