//! Guards the core promise of the transport: one UDP port serves raw QUIC (`moqt://`) and
//! WebTransport (`https://`), the server tells them apart, and bidirectional streams,
//! unidirectional streams and datagrams carry bytes both ways over each.

mod transport_common;

use bytes::Bytes;
use tiermesh_client::transport::{Kind, Session};
use transport_common::{pair, server, url, within};

/// Request/response on a bidirectional stream, a unidirectional stream each way, and a
/// datagram echo.
async fn exercise(client: &Session, server: &Session) {
    // Bidirectional: the client asks, the server answers on the same stream.
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"ping over bi").await.unwrap();
    send.finish().unwrap();
    let (mut s_send, mut s_recv) = within("accept_bi", server.accept_bi()).await.unwrap();
    let asked = within("read request", s_recv.read_to_end(1024)).await.unwrap();
    assert_eq!(&asked[..], b"ping over bi");
    s_send.write_chunk(Bytes::from_static(b"pong over bi")).await.unwrap();
    s_send.finish().unwrap();
    let answer = within("read answer", recv.read_to_end(1024)).await.unwrap();
    assert_eq!(&answer[..], b"pong over bi");

    // Unidirectional, server to client (how MoQT objects flow to a subscriber), in chunks.
    let mut uni = server.open_uni().await.unwrap();
    uni.set_priority(5).unwrap();
    let mut chunks = [Bytes::from_static(b"group "), Bytes::from_static(b"0 object 0")];
    uni.write_chunks(&mut chunks).await.unwrap();
    uni.finish().unwrap();
    let mut got = within("accept_uni", client.accept_uni()).await.unwrap();
    assert_eq!(&within("read uni", got.read_to_end(1024)).await.unwrap()[..], b"group 0 object 0");

    // Unidirectional, client to server (a publisher's objects).
    let mut uni = client.open_uni().await.unwrap();
    let big = vec![7u8; 300_000];
    uni.write_all(&big).await.unwrap();
    uni.finish().unwrap();
    let mut got = within("accept_uni (server)", server.accept_uni()).await.unwrap();
    assert_eq!(within("read big", got.read_to_end(1 << 20)).await.unwrap(), big);

    // Datagrams both ways.
    assert!(client.max_datagram_size() > 1000, "{}", client.max_datagram_size());
    client.send_datagram(Bytes::from_static(b"dgram up")).unwrap();
    let d = within("server datagram", server.read_datagram()).await.unwrap();
    assert_eq!(&d[..], b"dgram up");
    server.send_datagram(Bytes::from_static(b"dgram down")).unwrap();
    let d = within("client datagram", client.read_datagram()).await.unwrap();
    assert_eq!(&d[..], b"dgram down");
    // Too large for one packet: refused with the sizes, not silently dropped.
    let max = client.max_datagram_size();
    let err = client.send_datagram(Bytes::from(vec![0u8; max + 1])).unwrap_err();
    assert!(
        matches!(err, tiermesh_client::transport::Error::DatagramTooLarge { size, .. } if size == max + 1),
        "{err}"
    );
}

#[tokio::test]
async fn raw_quic_round_trip() {
    let (mut server, cert) = server();
    let url = url(&server, "moqt", "/ignored/on/raw");
    let (client, srv, info) = pair(&url, &mut server, &cert.pinned()).await;

    assert_eq!(info.kind, Kind::RawQuic);
    assert_eq!(info.path, None, "raw QUIC carries the path in SETUP, not the transport");
    assert_eq!(info.offered, ["moqt-16"]);
    assert_eq!(srv.kind(), Kind::RawQuic);
    assert_eq!(client.kind(), Kind::RawQuic);
    assert_eq!(client.protocol(), Some("moqt-16"));
    assert_eq!(srv.protocol(), Some("moqt-16"));
    assert_eq!(srv.peer(), info.peer);
    assert_eq!(client.peer(), server.local_addr());

    exercise(&client, &srv).await;
}

#[tokio::test]
async fn webtransport_round_trip_on_the_same_port_as_raw_quic() {
    let (mut server, cert) = server();

    // First a raw QUIC client, then a WebTransport client, on the same endpoint.
    let raw_url = url(&server, "moqt", "/");
    let (raw_client, raw_srv, raw_info) = pair(&raw_url, &mut server, &cert.pinned()).await;
    assert_eq!(raw_info.kind, Kind::RawQuic);

    let wt_url = url(&server, "https", "/clinic/room-42?jwt=abc.def");
    let (client, srv, info) = pair(&wt_url, &mut server, &cert.pinned()).await;
    assert_eq!(info.kind, Kind::WebTransport);
    assert_eq!(info.path.as_deref(), Some("/clinic/room-42"));
    assert_eq!(info.query.as_deref(), Some("jwt=abc.def"));
    assert_eq!(info.offered, ["moqt-16"], "the client offers moqt-16 in WT-Available-Protocols");
    assert_eq!(srv.kind(), Kind::WebTransport);
    assert_eq!(srv.path(), Some("/clinic/room-42"));
    assert_eq!(client.kind(), Kind::WebTransport);
    // The server selected moqt-16 in WT-Protocol and both sides know it.
    assert_eq!(client.protocol(), Some("moqt-16"));
    assert_eq!(srv.protocol(), Some("moqt-16"));

    exercise(&client, &srv).await;
    // The raw session is unaffected by the WebTransport one next to it.
    exercise(&raw_client, &raw_srv).await;
}

#[tokio::test]
async fn stats_report_rtt_window_and_bytes_after_traffic() {
    let (mut server, cert) = server();
    let url = url(&server, "moqt", "/");
    let (client, srv, _) = pair(&url, &mut server, &cert.pinned()).await;
    exercise(&client, &srv).await;
    let stats = client.stats();
    assert!(stats.rtt > std::time::Duration::ZERO, "{stats:?}");
    assert!(stats.cwnd > 10_000, "{stats:?}");
    assert!(stats.bytes_sent > 300_000, "the 300 kB stream was counted: {stats:?}");
    assert!(stats.bytes_received > 0, "{stats:?}");
    assert!(stats.send_rate_estimate_bps > 0, "{stats:?}");
    assert!(stats.mtu >= 1200, "{stats:?}");
}
