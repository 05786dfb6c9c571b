//! Guards the server endpoint beyond accepting: certificates served through a resolver
//! (the certs crate's reloading one) and replaced without a restart, dialing out from the
//! listening port (mesh links), each congestion controller carrying traffic, and closing
//! the endpoint ending `accept`.

mod transport_common;

use std::sync::Arc;
use std::time::Duration;

use tiermesh_certs::dev;
use tiermesh_certs::reload::ReloadingResolver;
use tiermesh_client::transport::{
    self, ClientTls, CongestionControl, Error, Kind, Server, ServerTls, TransportConfig,
};
use transport_common::{dev_cert, pair, server, server_with, url, within};

#[tokio::test]
async fn reloading_resolver_serves_a_renewed_certificate_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let (cert_path, key_path) = first.write_pem(dir.path()).unwrap();
    let resolver = Arc::new(ReloadingResolver::load(&cert_path, &key_path).unwrap());
    let mut server =
        Server::bind("127.0.0.1:0".parse().unwrap(), ServerTls::from_resolver(resolver.clone()))
            .unwrap();

    let old = ClientTls::pinned(first.sha256);
    let (_c, _s, info) = pair(&url(&server, "https", "/"), &mut server, &old).await;
    assert_eq!(info.kind, Kind::WebTransport);

    // Renew the files and reload: new handshakes present the new certificate.
    let second = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    second.write_pem(dir.path()).unwrap();
    resolver.reload().unwrap();
    let (_c, _s, _) =
        pair(&url(&server, "moqt", "/"), &mut server, &ClientTls::pinned(second.sha256)).await;
    let url = url(&server, "moqt", "/");
    let err = within("old pin", async {
        tokio::select! {
            r = transport::connect(&url, &old) => r.unwrap_err(),
            r = server.accept() => panic!("accepted a client pinning the old certificate: {r:?}"),
        }
    })
    .await;
    assert!(matches!(err, Error::UntrustedCertificate { .. }), "{err}");
}

#[tokio::test]
async fn set_tls_replaces_the_certificate_for_new_connections() {
    let (mut server, first) = server();
    let (client, _srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &first.pinned()).await;
    let second = dev_cert();
    server.set_tls(second.server_tls()).unwrap();
    let (_c, _s, _) = pair(&url(&server, "https", "/"), &mut server, &second.pinned()).await;
    // The established session keeps working.
    let mut s = client.open_uni().await.unwrap();
    s.write_all(b"still here").await.unwrap();
    assert!(client.close_reason().is_none());
}

#[tokio::test]
async fn a_server_dials_another_from_its_own_port() {
    let (mut upstream, up_cert) = server();
    let (edge, _edge_cert) = server();
    let target = url(&upstream, "moqt", "/mesh");
    let tls = up_cert.pinned();
    let (link, accepted) = within("mesh link", async {
        tokio::join!(edge.connect(&target, &tls), async {
            upstream.accept().await.unwrap().accept().await.unwrap()
        })
    })
    .await;
    let link = link.unwrap();
    // The upstream sees the edge's listening address: one UDP port per relay.
    assert_eq!(accepted.peer(), edge.local_addr());
    let mut s = link.open_uni().await.unwrap();
    s.write_all(b"announce").await.unwrap();
    s.finish().unwrap();
    let mut r = within("accept", accepted.accept_uni()).await.unwrap();
    assert_eq!(&within("read", r.read_to_end(64)).await.unwrap()[..], b"announce");
}

#[tokio::test]
async fn every_congestion_controller_carries_a_megabyte() {
    for cc in [
        CongestionControl::Cubic,
        CongestionControl::Bbr,
        CongestionControl::NewReno,
        CongestionControl::Delay,
    ] {
        let config = TransportConfig::default().congestion(cc);
        let (mut server, cert) = server_with(config.clone());
        let url = url(&server, "moqt", "/");
        let tls = cert.pinned();
        let (client, srv) = within("connect", async {
            tokio::join!(transport::connect_with(&url, &tls, &config), async {
                server.accept().await.unwrap().accept().await.unwrap()
            })
        })
        .await;
        let client = client.unwrap();
        let data = vec![0x5a; 1 << 20];
        let mut s = client.open_uni().await.unwrap();
        s.write_all(&data).await.unwrap();
        s.finish().unwrap();
        let mut r = within("accept", srv.accept_uni()).await.unwrap();
        assert_eq!(within("read", r.read_to_end(2 << 20)).await.unwrap().len(), data.len());
        let stats = client.stats();
        assert!(stats.send_rate_estimate_bps > 0, "{cc:?}: {stats:?}");
        // Each end runs the configured controller (the send scheduler reads which kind).
        let delay = cc == CongestionControl::Delay;
        assert_eq!(client.delay_based(), delay, "{cc:?}");
        assert_eq!(srv.delay_based(), delay, "{cc:?}");
    }
}

#[tokio::test]
async fn closing_the_endpoint_ends_accept_and_sessions() {
    let (mut server, cert) = server();
    let (client, _srv, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
    server.close(0x0, "shutting down");
    assert!(within("accept ends", server.accept()).await.is_none());
    let reason = within("client sees close", client.closed()).await;
    assert_eq!(reason.code(), Some(0));
    assert_eq!(reason.reason(), Some("shutting down"));
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle()).await.unwrap();
}
