//! Guards who trusts whom, with real TLS 1.3 handshakes between a rustls client and server
//! driven over in-memory byte buffers (no sockets): hash pinning accepts exactly the pinned
//! certificate, the mesh's mutual TLS admits only nodes of its own CA, and a reloading
//! server presents the new certificate once it is on disk, keeping the old one while the
//! new files are broken.

use std::fs;
use std::ops::DerefMut;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};
use tiermesh_certs::client::{self, ClientTrust};
use tiermesh_certs::reload::ReloadingResolver;
use tiermesh_certs::{CertHash, Error, ca, dev, mesh, server};

const ALPN: &[&str] = &["moqt-16"];

/// Which side of a failed handshake gave up first, and why.
#[derive(Debug)]
enum Failure {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves every pending TLS record from `from` to `to` and lets `to` process it.
/// Returns how many bytes moved.
fn pump<A, B, DA, DB>(from: &mut A, to: &mut B) -> Result<usize, rustls::Error>
where
    A: DerefMut<Target = ConnectionCommon<DA>>,
    B: DerefMut<Target = ConnectionCommon<DB>>,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(buf.len())
}

/// Runs a handshake to completion (or failure), then sends one message each way so that a
/// client certificate rejected after the client's last flight is noticed too.
fn connect(
    client: ClientConfig,
    server: ServerConfig,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), Failure> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    // A TLS 1.3 handshake with client auth takes 2 round trips; 10 is plenty and bounds
    // the loop if something stalls.
    for _ in 0..10 {
        pump(&mut c, &mut s).map_err(Failure::Server)?;
        pump(&mut s, &mut c).map_err(Failure::Client)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake stalled");
    std::io::Write::write_all(&mut c.writer(), b"ping").unwrap();
    pump(&mut c, &mut s).map_err(Failure::Server)?;
    std::io::Write::write_all(&mut s.writer(), b"pong").unwrap();
    pump(&mut s, &mut c).map_err(Failure::Client)?;
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut s.reader(), &mut got).unwrap();
    assert_eq!(&got, b"ping");
    std::io::Read::read_exact(&mut c.reader(), &mut got).unwrap();
    assert_eq!(&got, b"pong");
    Ok((c, s))
}

fn dev_server(cert: &dev::DevCert) -> ServerConfig {
    server::config(server::fixed(cert.certified_key().unwrap()), ALPN).unwrap()
}

fn pinned(hash: CertHash) -> ClientConfig {
    client::config(&ClientTrust::PinnedHash(hash), ALPN).unwrap()
}

fn served_hash(c: &ClientConnection) -> CertHash {
    CertHash::of(&c.peer_certificates().unwrap()[0])
}

#[test]
fn pinned_hash_accepts_the_dev_cert_under_any_name() {
    let cert = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    for name in ["localhost", "127.0.0.1", "relay.example"] {
        let (c, _) = connect(pinned(cert.sha256), dev_server(&cert), name).unwrap();
        assert_eq!(c.alpn_protocol(), Some(&b"moqt-16"[..]));
        assert_eq!(served_hash(&c), cert.sha256);
    }
}

#[test]
fn pinned_hash_refuses_another_cert() {
    let served = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let other = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let err = connect(pinned(other.sha256), dev_server(&served), "localhost").unwrap_err();
    let Failure::Client(err) = err else { panic!("the client must be the one refusing: {err:?}") };
    let msg = err.to_string();
    assert!(msg.contains("does not match the pinned"), "{msg}");
    assert!(msg.contains(&served.sha256.hex()) && msg.contains(&other.sha256.hex()), "{msg}");
}

#[test]
fn system_roots_refuse_a_self_signed_cert_and_insecure_takes_it() {
    let cert = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let roots = client::config(&ClientTrust::SystemRoots, ALPN).unwrap();
    let err = connect(roots, dev_server(&cert), "localhost").unwrap_err();
    assert!(
        matches!(
            err,
            Failure::Client(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );

    let insecure = client::config(&ClientTrust::Insecure, ALPN).unwrap();
    let (c, _) = connect(insecure, dev_server(&cert), "anything.example").unwrap();
    assert_eq!(served_hash(&c), cert.sha256);
}

#[test]
fn ca_file_trust_accepts_nodes_of_that_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let mesh_ca = ca::generate("mesh").unwrap();
    mesh_ca.save(dir.path()).unwrap();
    let node = mesh_ca.issue_node("relay-a", &[]).unwrap();
    let server = server::config(server::fixed(node.certified_key().unwrap()), ALPN).unwrap();
    let trust = ClientTrust::CaFile(dir.path().join(ca::CA_CERT_FILE));
    connect(client::config(&trust, ALPN).unwrap(), server.clone(), "relay-a").unwrap();

    let stranger = ca::generate("other").unwrap().issue_node("relay-a", &[]).unwrap();
    let server = server::config(server::fixed(stranger.certified_key().unwrap()), ALPN).unwrap();
    let err = connect(client::config(&trust, ALPN).unwrap(), server, "relay-a").unwrap_err();
    assert!(matches!(err, Failure::Client(_)), "{err:?}");
}

/// Two relays' node directories signed by one CA, plus a third signed by another CA.
struct Mesh {
    _dir: tempfile::TempDir,
    a: mesh::Identity,
    b: mesh::Identity,
    outsider: mesh::Identity,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca::generate("tiermesh test mesh").unwrap();
    let theirs = ca::generate("tiermesh test mesh").unwrap(); // same name, different key
    let save = |ca: &ca::Ca, name: &str| {
        let path = dir.path().join(name);
        ca.issue_node(name, &["127.0.0.1".to_owned()]).unwrap().save(&path).unwrap();
        mesh::Identity::load(&path).unwrap()
    };
    Mesh {
        a: save(&ours, "relay-a"),
        b: save(&ours, "relay-b"),
        outsider: save(&theirs, "relay-x"),
        _dir: dir,
    }
}

#[test]
fn mtls_admits_a_node_of_the_mesh_ca() {
    let m = mesh();
    let (c, s) =
        connect(m.b.client_config(ALPN).unwrap(), m.a.server_config(ALPN).unwrap(), "relay-a")
            .unwrap();
    // Each side saw the other's node certificate.
    assert_eq!(CertHash::of(&s.peer_certificates().unwrap()[0]), m.b.certs().sha256());
    assert_eq!(served_hash(&c), m.a.certs().sha256());
    // The certificate also names the extra address.
    connect(m.b.client_config(ALPN).unwrap(), m.a.server_config(ALPN).unwrap(), "127.0.0.1")
        .unwrap();
}

#[test]
fn mtls_refuses_a_node_of_another_ca() {
    let m = mesh();
    // The outsider trusts our CA for the server's certificate, so only its own certificate
    // is wrong: the server must refuse it. Its CA even has our CA's name, so the server finds
    // an issuer by name and refuses the signature.
    let outsider_client =
        mesh::client_config(m.outsider.certs().clone(), &ca_of(&m.a), ALPN).unwrap();
    let err = connect(outsider_client, m.a.server_config(ALPN).unwrap(), "relay-a").unwrap_err();
    assert!(
        matches!(
            err,
            Failure::Server(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature | rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    // A differently named foreign CA: no issuer at all.
    let foreign = ca::generate("elsewhere").unwrap().issue_node("relay-y", &[]).unwrap();
    let certs = server::fixed(foreign.certified_key().unwrap());
    let foreign_client = mesh::client_config(certs, &ca_of(&m.a), ALPN).unwrap();
    let err = connect(foreign_client, m.a.server_config(ALPN).unwrap(), "relay-a").unwrap_err();
    assert!(
        matches!(
            err,
            Failure::Server(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
}

#[test]
fn mtls_refuses_a_client_without_certificate() {
    let m = mesh();
    let plain = client::config(&ClientTrust::Insecure, ALPN).unwrap();
    let err = connect(plain, m.a.server_config(ALPN).unwrap(), "relay-a").unwrap_err();
    assert!(matches!(err, Failure::Server(rustls::Error::NoCertificatesPresented)), "{err:?}");
}

#[test]
fn mesh_client_refuses_a_server_of_another_ca_or_name() {
    let m = mesh();
    let err = connect(
        m.a.client_config(ALPN).unwrap(),
        m.outsider.server_config(ALPN).unwrap(),
        "relay-x",
    )
    .unwrap_err();
    assert!(matches!(err, Failure::Client(_)), "{err:?}");

    // Right CA, wrong node: dialing relay-b but reaching relay-a.
    let err =
        connect(m.b.client_config(ALPN).unwrap(), m.a.server_config(ALPN).unwrap(), "relay-b")
            .unwrap_err();
    assert!(matches!(err, Failure::Client(rustls::Error::InvalidCertificate(_))), "{err:?}");
}

/// The CA certificate an identity trusts, read back from its node directory.
fn ca_of(id: &mesh::Identity) -> rustls::pki_types::CertificateDer<'static> {
    let dir = id.certs().cert_path().parent().unwrap();
    tiermesh_certs::pem::load_chain(dir.join(ca::CA_CERT_FILE)).unwrap().remove(0)
}

/// Replaces a file the way deploy tools do: write aside, then rename over it.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn reload_picks_up_a_new_cert_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let first = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    let (cert_path, key_path) = first.write_pem(dir.path()).unwrap();
    let resolver = Arc::new(ReloadingResolver::load(&cert_path, &key_path).unwrap());
    let server = server::config(resolver.clone(), ALPN).unwrap();
    let serve = |hash| connect(pinned(hash), server.clone(), "localhost");

    assert!(!resolver.reload_if_changed().unwrap(), "nothing changed yet");
    serve(first.sha256).unwrap();

    // A new certificate on disk is served after the next check, without a restart.
    let second = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    second.write_pem(dir.path()).unwrap();
    assert!(resolver.reload_if_changed().unwrap());
    assert_eq!(resolver.sha256(), second.sha256);
    serve(second.sha256).unwrap();
    assert!(serve(first.sha256).is_err(), "the old certificate is gone");

    // A broken certificate file: the error names it, the second certificate stays.
    replace(&cert_path, b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
    let err = resolver.reload_if_changed().unwrap_err();
    assert!(matches!(err, Error::NotPem { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    serve(second.sha256).unwrap();
    assert!(!resolver.reload_if_changed().unwrap(), "a broken file is reported once");

    // A new certificate whose key has not arrived yet: refused as a mismatch, old one kept.
    let third = dev::generate(&[], dev::DEFAULT_VALIDITY).unwrap();
    replace(&cert_path, third.cert_pem().as_bytes());
    let err = resolver.reload_if_changed().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    serve(second.sha256).unwrap();
    // Then the key arrives and the pair goes into service.
    replace(&key_path, third.key_pem().as_bytes());
    assert!(resolver.reload_if_changed().unwrap());
    serve(third.sha256).unwrap();

    // An explicit reload with the files gone keeps serving and says which file is missing.
    fs::remove_file(&key_path).unwrap();
    let err = resolver.reload().unwrap_err();
    assert!(matches!(err, Error::Read { .. }) && err.to_string().contains("key.pem"), "{err}");
    serve(third.sha256).unwrap();
}

#[test]
fn mesh_node_cert_renewal_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca::generate("mesh").unwrap();
    let node_dir = dir.path().join("relay-a");
    ours.issue_node("relay-a", &[]).unwrap().save(&node_dir).unwrap();
    let a = mesh::Identity::load(&node_dir).unwrap();
    let b_dir = dir.path().join("relay-b");
    ours.issue_node("relay-b", &[]).unwrap().save(&b_dir).unwrap();
    let b = mesh::Identity::load(&b_dir).unwrap();
    let before = a.certs().sha256();

    let renewed = ours.issue_node("relay-a", &[]).unwrap();
    renewed.save(&node_dir).unwrap();
    assert!(a.certs().reload_if_changed().unwrap());
    let (c, _) =
        connect(b.client_config(ALPN).unwrap(), a.server_config(ALPN).unwrap(), "relay-a").unwrap();
    assert_eq!(served_hash(&c), CertHash::of(&renewed.cert));
    assert_ne!(served_hash(&c), before);
}
