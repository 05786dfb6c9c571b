//! Guards how sessions and streams end: the close code and reason reach the peer over raw
//! QUIC and WebTransport, each side knows who closed, and stream reset and stop codes arrive
//! unchanged (over WebTransport they travel mapped into the HTTP/3 range and back).

mod transport_common;

use std::time::Duration;

use tiermesh_client::transport::{self, CloseReason, Error, Side, TransportConfig};
use transport_common::{pair, server, url, within};

#[tokio::test]
async fn close_code_and_reason_reach_the_peer() {
    for (scheme, client_closes) in
        [("moqt", true), ("moqt", false), ("https", true), ("https", false)]
    {
        let (mut server, cert) = server();
        let (client, srv, _) = pair(&url(&server, scheme, "/"), &mut server, &cert.pinned()).await;
        let (closer, other) = if client_closes { (&client, &srv) } else { (&srv, &client) };
        closer.close(0x3, "protocol violation: test");
        let seen = within("peer sees close", other.closed()).await;
        assert_eq!(
            seen,
            CloseReason::Application {
                by: Side::Peer,
                code: 0x3,
                reason: "protocol violation: test".into()
            },
            "{scheme}, client closes: {client_closes}"
        );
        let own = within("closer sees close", closer.closed()).await;
        assert_eq!(own.by(), Some(Side::Local), "{own}");
        assert_eq!(own.code(), Some(0x3));
        assert_eq!(seen.to_string(), "closed by the peer with code 0x3: protocol violation: test");
        // Operations after the close say the session is closed, and why.
        let err = other.open_uni().await.unwrap_err();
        assert!(matches!(err, Error::Closed(_)), "{err}");
        assert!(err.to_string().contains("protocol violation: test"), "{err}");
    }
}

#[tokio::test]
async fn large_close_codes_survive_raw_quic() {
    let (mut server, cert) = server();
    let (client, srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    client.close(1 << 40, "big");
    assert_eq!(within("close", srv.closed()).await.code(), Some(1 << 40));
}

#[tokio::test]
async fn stream_reset_and_stop_codes_arrive() {
    for scheme in ["moqt", "https"] {
        let (mut server, cert) = server();
        let (client, srv, _) = pair(&url(&server, scheme, "/"), &mut server, &cert.pinned()).await;

        // Reset: the reader learns the code (MoQT resets a subgroup past its delivery timeout).
        let mut send = client.open_uni().await.unwrap();
        send.write_all(b"partial object").await.unwrap();
        let mut recv = within("accept", srv.accept_uni()).await.unwrap();
        // Read what was sent before the reset so the stream is known to the server.
        let first = within("first bytes", recv.read_chunk(1024)).await.unwrap();
        assert!(first.is_some());
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
        assert!(matches!(err, Error::Reset { code: 0x2 }), "{scheme}: {err}");

        // Stop: the writer learns the code.
        let mut send = srv.open_uni().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let mut recv = within("accept", client.accept_uni()).await.unwrap();
        recv.stop(0x7).unwrap();
        assert_eq!(within("stopped", send.stopped()).await.unwrap(), Some(0x7), "{scheme}");
        let err = within("write after stop", async {
            loop {
                if let Err(e) = send.write_all(&[0u8; 1024]).await {
                    break e;
                }
            }
        })
        .await;
        assert!(matches!(err, Error::Stopped { code: 0x7 }), "{scheme}: {err}");
    }
}

#[tokio::test]
async fn a_silent_peer_ends_the_session_with_an_idle_timeout() {
    let (mut server, cert) = server();
    // The idle timeout in force is the smaller of both sides': 300 ms, and no keep-alive.
    let quiet =
        TransportConfig::default().idle_timeout(Duration::from_millis(300)).keep_alive(None);
    let url = url(&server, "moqt", "/");
    let tls = cert.pinned();
    let (client, srv) = within("connect", async {
        tokio::join!(transport::connect_with(&url, &tls, &quiet), async {
            server.accept().await.unwrap().accept().await.unwrap()
        })
    })
    .await;
    let client = client.unwrap();
    // The server keeps its 3 s keep-alive, but its PINGs only go out every 3 s: the client
    // times out first.
    assert_eq!(within("idle", client.closed()).await, CloseReason::IdleTimeout);
    let _ = srv;
}

#[tokio::test]
async fn a_keep_alive_holds_an_idle_session_open() {
    let (mut server, cert) = server();
    let short = TransportConfig::default()
        .idle_timeout(Duration::from_millis(1000))
        .keep_alive(Some(Duration::from_millis(100)));
    let url = url(&server, "moqt", "/");
    let tls = cert.pinned();
    let (client, _srv) = within("connect", async {
        tokio::join!(transport::connect_with(&url, &tls, &short), async {
            server.accept().await.unwrap().accept().await.unwrap()
        })
    })
    .await;
    let client = client.unwrap();
    // Three idle timeouts pass without traffic from the application: still open.
    let closed = tokio::time::timeout(Duration::from_millis(3000), client.closed()).await;
    assert!(closed.is_err(), "closed although keep-alives were flowing: {closed:?}");
}

#[tokio::test]
async fn a_rejected_raw_quic_client_learns_the_status_from_the_close() {
    let (mut server, cert) = server();
    let url = url(&server, "moqt", "/");
    let tls = cert.pinned();
    let (client, ()) = within("reject", async {
        tokio::join!(transport::connect(&url, &tls), async {
            server.accept().await.unwrap().reject(401).await.unwrap();
        })
    })
    .await;
    // Raw QUIC has no HTTP exchange: the QUIC handshake completes, then the close carries
    // the status as its code.
    let reason = match client {
        Ok(session) => within("closed", session.closed()).await,
        Err(Error::Connect { reason, .. }) => panic!("connect failed instead: {reason}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        reason,
        CloseReason::Application {
            by: Side::Peer,
            code: 401,
            reason: "rejected with HTTP status 401".into()
        }
    );
}

#[tokio::test]
async fn sessions_have_distinct_ids() {
    let (mut server, cert) = server();
    let (a, sa, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    let (b, sb, _) = pair(&url(&server, "https", "/"), &mut server, &cert.pinned()).await;
    assert_ne!(sa.id(), sb.id());
    assert_eq!(sa.id(), sa.clone().id());
    let _ = (a, b);
}
