//! Guards that the TLS configurations of this crate work as they are used: inside quinn 0.11
//! QUIC connections on loopback. A client pinned to a development certificate connects; mesh
//! relays with node certificates of one CA connect to each other with mutual TLS, and a node
//! of another CA is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tiermesh_certs::client::{self, ClientTrust};
use tiermesh_certs::{CertHash, ca, dev, mesh, server};

const ALPN: &[&str] = &["moqt-16"];
/// Loopback handshakes take milliseconds; this only bounds a hung test.
const DEADLINE: Duration = Duration::from_secs(10);

fn server_endpoint(config: rustls::ServerConfig) -> quinn::Endpoint {
    let crypto = QuicServerConfig::try_from(config).expect("a QUIC-capable server config");
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Connects with `config` to `server` under `name`; returns the client's connection (or
/// error) and the server's.
async fn connect(
    config: rustls::ClientConfig,
    server: &quinn::Endpoint,
    name: &str,
) -> (
    Result<quinn::Connection, quinn::ConnectionError>,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let crypto = QuicClientConfig::try_from(config).expect("a QUIC-capable client config");
    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let connecting =
        client_ep.connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, name).unwrap();
    let accept = async {
        let incoming = server.accept().await.expect("endpoint open");
        incoming.await
    };
    let (c, s) = tokio::time::timeout(DEADLINE, async { tokio::join!(connecting, accept) })
        .await
        .expect("handshake within the deadline");
    // In TLS 1.3 the client finishes before the server has judged its certificate: a
    // refused client learns it when the server closes the connection.
    let c = match (c, &s) {
        (Ok(conn), Err(_)) => Err(tokio::time::timeout(DEADLINE, conn.closed())
            .await
            .expect("close within the deadline")),
        (c, _) => c,
    };
    (c, s)
}

fn peer_hash(conn: &quinn::Connection) -> CertHash {
    let certs = conn
        .peer_identity()
        .expect("peer presented certificates")
        .downcast::<Vec<CertificateDer<'static>>>()
        .expect("rustls identity");
    CertHash::of(&certs[0])
}

#[tokio::test]
async fn pinned_client_reaches_a_dev_cert_relay_over_quic() {
    let cert = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let server_config = server::config(server::fixed(cert.certified_key().unwrap()), ALPN).unwrap();
    let ep = server_endpoint(server_config);

    let pinned = client::config(&ClientTrust::PinnedHash(cert.sha256), ALPN).unwrap();
    let (c, s) = connect(pinned, &ep, "localhost").await;
    let c = c.unwrap();
    s.unwrap();
    assert_eq!(peer_hash(&c), cert.sha256);

    let other = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let wrong = client::config(&ClientTrust::PinnedHash(other.sha256), ALPN).unwrap();
    let (c, s) = connect(wrong, &ep, "localhost").await;
    assert!(c.is_err() && s.is_err(), "client {c:?}, server {s:?}");
}

#[tokio::test]
async fn mesh_relays_use_mutual_tls_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca::generate("tiermesh quic test").unwrap();
    let load = |ca: &ca::Ca, name: &str| {
        let path = dir.path().join(name);
        ca.issue_node(name, &[]).unwrap().save(&path).unwrap();
        mesh::Identity::load(&path).unwrap()
    };
    let a = load(&ours, "relay-a");
    let b = load(&ours, "relay-b");
    let ep = server_endpoint(a.server_config(ALPN).unwrap());

    let (c, s) = connect(b.client_config(ALPN).unwrap(), &ep, "relay-a").await;
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(peer_hash(&c), a.certs().sha256());
    assert_eq!(peer_hash(&s), b.certs().sha256(), "the server knows which relay called");

    // A relay of another CA, trusting ours for the server: refused by the server.
    let theirs = ca::generate("elsewhere").unwrap();
    let x = theirs.issue_node("relay-x", &[]).unwrap();
    let our_ca = ours.cert().clone();
    let x_config =
        mesh::client_config(server::fixed(x.certified_key().unwrap()), &our_ca, ALPN).unwrap();
    let (c, s) = connect(x_config, &ep, "relay-a").await;
    assert!(s.is_err(), "the server must refuse a foreign node: {s:?}");
    assert!(c.is_err(), "the foreign node's connection must fail: {c:?}");
}
