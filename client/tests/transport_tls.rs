//! Guards who a client trusts and what it is told when it does not: a pinned certificate
//! hash is accepted and a wrong one refused, a self-signed certificate is refused under the
//! system roots, a CA file makes its certificates trusted, and a client offering a protocol
//! the server does not speak gets an error that says so. Each refusal must name the cause.

mod transport_common;

use std::io::Write;

use tiermesh_client::transport::{
    self, CertHash, ClientTls, Error, Kind, Server, ServerTls, TransportConfig,
};
use transport_common::{dev_cert, pair, server, url, within};

/// Connects and expects an error, while the server keeps accepting (a refused handshake
/// never reaches `accept`).
async fn refused(url: &transport::Url, server: &mut Server, tls: &ClientTls) -> Error {
    refused_with(url, server, tls, &TransportConfig::default()).await
}

async fn refused_with(
    url: &transport::Url,
    server: &mut Server,
    tls: &ClientTls,
    config: &TransportConfig,
) -> Error {
    within("refusal", async {
        tokio::select! {
            result = transport::connect_with(url, tls, config) => match result {
                Ok(s) => panic!("connected although it should not: {s:?}"),
                Err(e) => e,
            },
            request = server.accept() => panic!("server accepted a refused client: {request:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn pinned_hash_accepts_the_certificate_over_both_transports() {
    let (mut server, cert) = server();
    let tls = ClientTls::pinned_hex(&cert.sha256.to_string()).unwrap();
    for (scheme, kind) in [("moqt", Kind::RawQuic), ("https", Kind::WebTransport)] {
        let (client, _srv, info) = pair(&url(&server, scheme, "/x"), &mut server, &tls).await;
        assert_eq!(info.kind, kind);
        let presented = client.peer_certificates().expect("server certificate");
        assert_eq!(CertHash::of(&presented[0]), cert.sha256);
    }
}

#[tokio::test]
async fn wrong_pinned_hash_is_refused_naming_both_hashes() {
    let (mut server, cert) = server();
    let other = dev_cert();
    for scheme in ["moqt", "https"] {
        let err = refused(&url(&server, scheme, "/"), &mut server, &other.pinned()).await;
        let text = err.to_string();
        println!("{scheme}, wrong pin: {text}");
        assert!(matches!(err, Error::UntrustedCertificate { .. }), "{text}");
        assert!(text.contains("is not trusted"), "{text}");
        assert!(text.contains(&cert.sha256.to_string()), "names the presented hash: {text}");
        assert!(text.contains(&other.sha256.to_string()), "names the pinned hash: {text}");
    }
    // The server is still serving.
    let (_c, _s, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
}

#[tokio::test]
async fn self_signed_certificate_is_refused_under_system_roots() {
    let (mut server, _cert) = server();
    let err = refused(&url(&server, "https", "/"), &mut server, &ClientTls::system_roots()).await;
    let text = err.to_string();
    println!("self-signed under system roots: {text}");
    assert!(matches!(err, Error::UntrustedCertificate { .. }), "{text}");
    assert!(text.contains("not issued by a trusted certificate authority"), "{text}");
    assert!(text.contains("--tls-cert-hash"), "says how to trust it anyway: {text}");
}

#[tokio::test]
async fn ca_file_trusts_what_the_ca_signed_and_checks_the_name() {
    // A private CA and a leaf it signed for localhost and 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let tls = ServerTls::from_der(vec![leaf.der().to_vec()], leaf_key.serialize_der()).unwrap();
    let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), tls).unwrap();

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.pem().as_bytes()).unwrap();
    let trust = ClientTls::ca_file(ca_file.path()).unwrap();
    let (_c, _s, info) = pair(&url(&server, "https", "/ca"), &mut server, &trust).await;
    assert_eq!(info.kind, Kind::WebTransport);

    // A certificate from the same CA for another name: refused, and the error says why.
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::CertificateParams::new(vec!["relay.invalid".to_owned()])
        .unwrap()
        .signed_by(&other_key, &issuer)
        .unwrap();
    let tls = ServerTls::from_der(vec![other.der().to_vec()], other_key.serialize_der()).unwrap();
    let mut other_server = Server::bind("127.0.0.1:0".parse().unwrap(), tls).unwrap();
    let err = refused(&url(&other_server, "moqt", "/"), &mut other_server, &trust).await;
    assert!(matches!(err, Error::UntrustedCertificate { .. }), "{err}");
    assert!(err.to_string().contains("not valid for the host name"), "{err}");
}

#[tokio::test]
async fn insecure_trusts_anything() {
    let (mut server, _cert) = server();
    let (client, _srv, _) =
        pair(&url(&server, "moqt", "/"), &mut server, &ClientTls::insecure()).await;
    assert_eq!(client.protocol(), Some("moqt-16"));
}

#[tokio::test]
async fn wrong_alpn_is_refused_with_a_clear_error() {
    let (mut server, cert) = server();
    let config = TransportConfig::default().protocols(["moqt-99"]);
    let err = refused_with(&url(&server, "moqt", "/"), &mut server, &cert.pinned(), &config).await;
    let text = err.to_string();
    println!("wrong ALPN: {text}");
    assert!(matches!(err, Error::ProtocolRefused { .. }), "{text}");
    assert!(text.contains("moqt-99"), "names what was offered: {text}");
    assert!(text.contains("ALPN"), "{text}");
    // The server still serves clients that speak moqt-16.
    let (_c, _s, _) = pair(&url(&server, "moqt", "/"), &mut server, &cert.pinned()).await;
}

#[tokio::test]
async fn webtransport_client_offering_only_another_version_is_refused() {
    let (mut server, cert) = server();
    let config = TransportConfig::default().protocols(["moqt-99"]);
    let url = url(&server, "https", "/x");
    let tls = cert.pinned();
    let (client, server_side) = within("refusal", async {
        tokio::join!(transport::connect_with(&url, &tls, &config), async {
            server.accept().await.unwrap().accept().await
        })
    })
    .await;
    let server_err = server_side.unwrap_err().to_string();
    assert!(server_err.contains("moqt-99") && server_err.contains("moqt-16"), "{server_err}");
    let client_err = client.unwrap_err();
    assert!(matches!(client_err, Error::Rejected { status: 400, .. }), "{client_err}");
}

#[tokio::test]
async fn webtransport_connect_can_be_rejected_with_an_http_status() {
    let (mut server, cert) = server();
    let url = url(&server, "https", "/private?jwt=expired");
    let tls = cert.pinned();
    let (client, ()) = within("reject", async {
        tokio::join!(transport::connect(&url, &tls), async {
            let request = server.accept().await.unwrap();
            assert_eq!(request.path(), Some("/private"));
            request.reject(403).await.unwrap();
        })
    })
    .await;
    let err = client.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 403, .. }), "{err}");
    let text = err.to_string();
    println!("rejected: {text}");
    assert!(text.contains("403"), "{text}");
    assert!(!text.contains("expired"), "the token never appears in errors: {text}");
}

#[tokio::test]
async fn nothing_listening_times_out_with_a_hint() {
    // A bound but silent UDP socket: the handshake is never answered.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url: transport::Url =
        format!("moqt://127.0.0.1:{}/", silent.local_addr().unwrap().port()).parse().unwrap();
    let config =
        TransportConfig::default().handshake_timeout(std::time::Duration::from_millis(300));
    let err = within("timeout", transport::connect_with(&url, &ClientTls::insecure(), &config))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout { .. }), "{err}");
    assert!(err.to_string().contains("did not answer"), "{err}");
}

/// A private CA: its certificate and an issuer to sign leaves with.
fn private_ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

/// A leaf signed by `issuer` for `names`: (certificate DER, key DER).
fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    names: &[&str],
    client: bool,
) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if client {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    }
    (params.signed_by(&key, issuer).unwrap().der().to_vec(), key.serialize_der())
}

#[tokio::test]
async fn mutual_tls_admits_clients_of_the_mesh_ca_only() {
    let (ca, issuer) = private_ca();
    let (server_cert, server_key) = leaf(&issuer, &["127.0.0.1"], false);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let tls = ServerTls::from_der(vec![server_cert], server_key).unwrap().client_verifier(verifier);
    let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), tls).unwrap();
    let trust = ClientTls::ca_der(vec![ca.der().to_vec()]).unwrap();

    // A node certificate from the mesh CA: admitted, and the server sees who it is.
    let (node_cert, node_key) = leaf(&issuer, &["node-a.mesh"], true);
    let with_cert = trust.clone().with_client_cert(vec![node_cert.clone()], node_key).unwrap();
    for scheme in ["moqt", "https"] {
        let (_c, srv, _) = pair(&url(&server, scheme, "/mesh"), &mut server, &with_cert).await;
        assert_eq!(srv.peer_certificates().unwrap()[0], node_cert, "{scheme}");
    }

    // No client certificate: refused, and the error says a certificate was required.
    for scheme in ["moqt", "https"] {
        let url = url(&server, scheme, "/mesh");
        let outcome = within("no client cert", async {
            tokio::select! {
                r = transport::connect(&url, &trust) => match r {
                    // TLS 1.3 lets the client finish first; the server's refusal then ends
                    // the session.
                    Ok(s) => s.closed().await.to_string(),
                    Err(e) => e.to_string(),
                },
                r = server.accept() => panic!("admitted without a client certificate: {r:?}"),
            }
        })
        .await;
        println!("{scheme}, no client certificate: {outcome}");
        assert!(outcome.contains("client certificate"), "{scheme}: {outcome}");
    }
}
