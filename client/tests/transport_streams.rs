//! Guards the stream budget MoQT needs: a subgroup stream per group per track, so a peer
//! must be able to hold about a thousand unidirectional streams open at once (see
//! TransportConfig's defaults), over raw QUIC and WebTransport alike. The limit a session
//! grants starts at 16 (so idle sessions stay small) and grows as the peer uses its
//! streams: these tests also prove it grows all the way.

mod transport_common;

use tiermesh_client::transport::Session;
use transport_common::{pair, server, url, within};

/// Opens `n` unidirectional streams, writes one byte on each and leaves them all open; the
/// peer must accept every one of them while none has been finished.
async fn hold_open(client: &Session, srv: &Session, n: usize) {
    let mut sends = Vec::with_capacity(n);
    let mut recvs = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = within("open_uni", client.open_uni()).await.unwrap();
        s.write_all(&[(i % 251) as u8]).await.unwrap();
        sends.push(s);
        // Accept as we go so the peer's accept queue is drained like a real reader's.
        recvs.push(within("accept_uni", srv.accept_uni()).await.unwrap());
    }
    for (i, r) in recvs.iter_mut().enumerate() {
        let chunk = within("read", r.read_chunk(16)).await.unwrap().unwrap();
        assert_eq!(chunk[0], (i % 251) as u8);
    }
    assert_eq!(sends.len(), n);
}

#[tokio::test]
async fn a_thousand_uni_streams_open_at_once_over_raw_quic() {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    hold_open(&client, &srv, 1000).await;
}

#[tokio::test]
async fn nearly_a_thousand_uni_streams_open_at_once_over_webtransport() {
    // HTTP/3 itself holds up to three unidirectional streams (control, QPACK encoder and
    // decoder) out of the same budget.
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "https", "/"), &mut server, &cert.pinned()).await;
    hold_open(&client, &srv, 997).await;
}
