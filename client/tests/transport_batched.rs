//! Guards the batched transport driver (`TransportDriver::Batched`): a server endpoint whose
//! connections one task drives through quinn-proto must give quinn clients the same
//! `Session` behaviour as quinn's own layer over raw QUIC: streams both ways in full and in
//! order, datagrams, close codes and reasons both ways, stream reset and stop codes, idle
//! timeouts, stream limits that grow to a thousand, a rejected client learning the status,
//! and a WebTransport client refused with a reason that says why.

mod transport_common;

use std::time::Duration;

use bytes::Bytes;
use tiermesh_client::transport::{
    self, CloseReason, Error, Kind, Server, Session, Side, TransportConfig, TransportDriver,
};
use transport_common::{DevCert, pair, server_with, url, within};

fn batched() -> TransportConfig {
    TransportConfig::default().driver(TransportDriver::Batched)
}

fn server() -> (Server, DevCert) {
    server_with(batched())
}

#[tokio::test]
async fn streams_and_datagrams_carry_bytes_both_ways() {
    let (mut server, cert) = server();
    let (client, srv, info) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    assert_eq!(info.kind, Kind::RawQuic);
    assert_eq!(info.offered, ["moqt-16"]);
    assert_eq!(srv.protocol(), Some("moqt-16"));
    assert_eq!(srv.peer(), info.peer);
    assert!(srv.delay_based(), "the default controller, as on quinn's path");

    // Bidirectional: the client asks, the server answers.
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"ping over bi").await.unwrap();
    send.finish().unwrap();
    let (mut s_send, mut s_recv) = within("accept_bi", srv.accept_bi()).await.unwrap();
    assert_eq!(&within("request", s_recv.read_to_end(1024)).await.unwrap()[..], b"ping over bi");
    s_send.write_chunk(Bytes::from_static(b"pong over bi")).await.unwrap();
    s_send.finish().unwrap();
    assert_eq!(&within("answer", recv.read_to_end(1024)).await.unwrap()[..], b"pong over bi");

    // Server to client, many streams each larger than a window's first flight, every byte
    // in order: what a relay's fan-out does.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut readers = Vec::new();
    for n in 0..20u8 {
        let mut uni = srv.open_uni().await.unwrap();
        uni.set_priority(i32::from(n)).unwrap();
        let mut chunks = [Bytes::from(vec![n]), Bytes::from(payload.clone())];
        uni.write_chunks(&mut chunks).await.unwrap();
        uni.finish().unwrap();
        let mut got = within("accept_uni", client.accept_uni()).await.unwrap();
        readers.push(tokio::spawn(async move { got.read_to_end(1 << 20).await }));
    }
    let mut seen = Vec::new();
    for r in readers {
        let data = within("read uni", r).await.unwrap().unwrap();
        assert_eq!(data.len(), payload.len() + 1);
        assert_eq!(&data[1..], &payload[..], "stream {} out of order or short", data[0]);
        seen.push(data[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u8>>());

    // Client to server (a publisher's objects).
    let mut uni = client.open_uni().await.unwrap();
    uni.write_all(&payload).await.unwrap();
    uni.finish().unwrap();
    let mut got = within("accept_uni (server)", srv.accept_uni()).await.unwrap();
    assert_eq!(within("read big", got.read_to_end(1 << 20)).await.unwrap(), payload);

    // try_write_chunks takes what flow control allows now, without waiting.
    let mut uni = srv.try_open_uni().expect("a stream is free").unwrap();
    let mut chunks = [Bytes::from_static(b"now")];
    assert_eq!(uni.try_write_chunks(&mut chunks).unwrap().unwrap(), 3);
    uni.finish().unwrap();
    let mut got = within("accept_uni", client.accept_uni()).await.unwrap();
    assert_eq!(&within("read", got.read_to_end(16)).await.unwrap()[..], b"now");
    // Finished and read: stopped() says the peer read everything.
    assert_eq!(within("stopped", uni.stopped()).await.unwrap(), None);

    // Datagrams both ways, and one too large refused with the sizes.
    assert!(srv.max_datagram_size() > 1000, "{}", srv.max_datagram_size());
    client.send_datagram(Bytes::from_static(b"dgram up")).unwrap();
    assert_eq!(&within("server datagram", srv.read_datagram()).await.unwrap()[..], b"dgram up");
    srv.send_datagram(Bytes::from_static(b"dgram down")).unwrap();
    assert_eq!(
        &within("client datagram", client.read_datagram()).await.unwrap()[..],
        b"dgram down"
    );
    let max = srv.max_datagram_size();
    let err = srv.send_datagram(Bytes::from(vec![0u8; max + 1])).unwrap_err();
    assert!(matches!(err, Error::DatagramTooLarge { size, .. } if size == max + 1), "{err}");

    let stats = srv.stats();
    assert!(stats.bytes_sent > 4_000_000 && stats.bytes_received > 200_000, "{stats:?}");
    assert!(stats.cwnd > 0 && !stats.rtt.is_zero(), "{stats:?}");
}

#[tokio::test]
async fn close_codes_and_reasons_reach_the_peer_both_ways() {
    for server_closes in [true, false] {
        let (mut server, cert) = server();
        let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
        let (closer, other) = if server_closes { (&srv, &client) } else { (&client, &srv) };
        closer.close(1 << 40, "protocol violation: test");
        let seen = within("peer sees close", other.closed()).await;
        assert_eq!(
            seen,
            CloseReason::Application {
                by: Side::Peer,
                code: 1 << 40,
                reason: "protocol violation: test".into()
            },
            "server closes: {server_closes}"
        );
        let own = within("closer sees close", closer.closed()).await;
        assert_eq!((own.by(), own.code()), (Some(Side::Local), Some(1 << 40)), "{own}");
        assert!(closer.close_reason().is_some());
        let err = other.open_uni().await.unwrap_err();
        assert!(err.to_string().contains("protocol violation: test"), "{err}");
        let err = srv.open_uni().await.unwrap_err();
        assert!(matches!(err, Error::Closed(_)), "{err}");
    }
}

#[tokio::test]
async fn stream_reset_and_stop_codes_arrive() {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;

    // The server resets a stream (a subgroup past its delivery timeout): the client reads
    // the code.
    let mut send = srv.open_uni().await.unwrap();
    send.write_all(b"partial object").await.unwrap();
    let mut recv = within("accept", client.accept_uni()).await.unwrap();
    assert!(within("first bytes", recv.read_chunk(1024)).await.unwrap().is_some());
    send.reset(0x2).unwrap();
    let err = within("read after reset", async {
        loop {
            match recv.read_chunk(1024).await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Reset { code: 0x2 }), "{err}");

    // The client resets a stream the server reads.
    let mut send = client.open_uni().await.unwrap();
    send.write_all(b"partial").await.unwrap();
    let mut recv = within("accept", srv.accept_uni()).await.unwrap();
    assert!(within("first bytes", recv.read_chunk(1024)).await.unwrap().is_some());
    send.reset(0x5).unwrap();
    let err = within("server read after reset", async {
        loop {
            match recv.read_chunk(1024).await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Reset { code: 0x5 }), "{err}");

    // The client stops a server stream: stopped() and the next writes say so.
    let mut send = srv.open_uni().await.unwrap();
    send.write_all(b"x").await.unwrap();
    let mut recv = within("accept", client.accept_uni()).await.unwrap();
    recv.stop(0x7).unwrap();
    assert_eq!(within("stopped", send.stopped()).await.unwrap(), Some(0x7));
    let err = within("write after stop", async {
        loop {
            if let Err(e) = send.write_all(&[0u8; 1024]).await {
                break e;
            }
        }
    })
    .await;
    assert!(matches!(err, Error::Stopped { code: 0x7 }), "{err}");
}

#[tokio::test]
async fn a_silent_peer_is_timed_out() {
    // 300 ms of silence ends the session on the server side, by the driver's own timers.
    let config = batched().idle_timeout(Duration::from_millis(300)).keep_alive(None);
    let (mut server, cert) = server_with(config);
    let url = url(&server, "moqt", "/");
    let tls = cert.pinned();
    let quiet = TransportConfig::default().idle_timeout(Duration::from_secs(30)).keep_alive(None);
    let (client, srv) = within("connect", async {
        tokio::join!(transport::connect_with(&url, &tls, &quiet), async {
            server.accept().await.unwrap().accept().await.unwrap()
        })
    })
    .await;
    let _client = client.unwrap();
    assert_eq!(within("idle", srv.closed()).await, CloseReason::IdleTimeout);
}

#[tokio::test]
async fn the_peers_stream_limit_grows_to_a_thousand() {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    let mut held = Vec::new();
    for i in 0..1000usize {
        let mut s = within("open_uni", client.open_uni()).await.unwrap();
        s.write_all(&[(i % 251) as u8]).await.unwrap();
        let mut r = within("accept_uni", srv.accept_uni()).await.unwrap();
        assert_eq!(within("read", r.read_chunk(16)).await.unwrap().unwrap()[0], (i % 251) as u8);
        held.push((s, r));
    }
}

#[tokio::test]
async fn a_rejected_client_learns_the_status_and_webtransport_is_refused_with_a_reason() {
    let (mut server, cert) = server();
    let url_raw = url(&server, "moqt", "/");
    let tls = cert.pinned();
    let (client, ()) = within("reject", async {
        tokio::join!(transport::connect(&url_raw, &tls), async {
            server.accept().await.unwrap().reject(401).await.unwrap();
        })
    })
    .await;
    let reason = within("closed", client.unwrap().closed()).await;
    assert_eq!(
        reason,
        CloseReason::Application {
            by: Side::Peer,
            code: 401,
            reason: "rejected with HTTP status 401".into()
        }
    );

    // A WebTransport client is closed after the handshake with a reason saying why; the
    // server's accept never hands it out.
    let url_wt = url(&server, "https", "/");
    let err = within("WebTransport connect", transport::connect(&url_wt, &tls)).await.unwrap_err();
    assert!(err.to_string().contains("batched transport driver"), "{err}");
    let pending = tokio::time::timeout(Duration::from_millis(300), server.accept()).await;
    assert!(pending.is_err(), "the WebTransport client must not be accepted");
}

#[tokio::test]
async fn closing_the_endpoint_ends_accept_and_sessions_and_dialing_out_is_refused() {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    let (_c2, srv2, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    assert_ne!(srv.id(), srv2.id());
    assert_eq!(srv.id(), srv.clone().id());
    let err = server.connect(&url(&server, "moqt", "/"), &cert.pinned()).await.unwrap_err();
    assert!(err.to_string().contains("does not dial out"), "{err}");
    server.close(0x0, "shutting down");
    assert!(within("accept ends", server.accept()).await.is_none());
    let reason = within("client sees close", client.closed()).await;
    assert_eq!((reason.code(), reason.reason()), (Some(0), Some("shutting down")));
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle()).await.unwrap();
}

/// The last handle of a session dropped closes its connection with code 0, as quinn's does.
#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let (mut server, cert) = server();
    let (client, srv, _): (Session, Session, _) =
        pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    drop(srv);
    let reason = within("client sees the implicit close", client.closed()).await;
    assert_eq!(reason.code(), Some(0), "{reason}");
    assert_eq!(reason.by(), Some(Side::Peer), "{reason}");
}
