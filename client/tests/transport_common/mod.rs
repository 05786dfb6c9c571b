//! Shared set-up for the transport tests: a fresh ECDSA P-256 development certificate valid
//! for less than 14 days (what browsers accept by hash), a server on 127.0.0.1, deadlines,
//! and raw MoQT clients ([`control`]) for tests that speak the protocol themselves.

#![allow(dead_code)]

pub mod control;

use std::future::Future;
use std::time::Duration;

use tiermesh_client::moq::{self, ClientOptions, Connection, ServerOptions};
use tiermesh_client::transport::{
    self, CertHash, ClientTls, Request, Server, ServerTls, Session, TransportConfig, Url,
};
use tiermesh_proto::message::SetupParams;

/// A self-signed certificate and its key, DER.
pub struct DevCert {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
    pub sha256: CertHash,
}

/// An ECDSA P-256 certificate for localhost and 127.0.0.1, valid 10 days from 5 minutes ago.
pub fn dev_cert() -> DevCert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    DevCert { sha256: CertHash::of(&der), chain: vec![der], key: key.serialize_der() }
}

impl DevCert {
    pub fn server_tls(&self) -> ServerTls {
        ServerTls::from_der(self.chain.clone(), self.key.clone()).unwrap()
    }

    pub fn pinned(&self) -> ClientTls {
        ClientTls::pinned(self.sha256)
    }
}

/// A server on an ephemeral port of 127.0.0.1 with a fresh development certificate.
pub fn server() -> (Server, DevCert) {
    server_with(TransportConfig::default())
}

pub fn server_with(config: TransportConfig) -> (Server, DevCert) {
    let cert = dev_cert();
    let server =
        Server::bind_with("127.0.0.1:0".parse().unwrap(), cert.server_tls(), config).unwrap();
    (server, cert)
}

/// `scheme://127.0.0.1:PORT{rest}`.
pub fn url(server: &Server, scheme: &str, rest: &str) -> Url {
    format!("{scheme}://127.0.0.1:{}{rest}", server.local_addr().port()).parse().unwrap()
}

/// Runs `f` and fails the test if it takes longer than 10 s.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Connects a client and accepts it on the server, returning both sessions and what the
/// server saw of the request (kind, path, query, offered protocols).
pub async fn pair(
    url: &Url,
    server: &mut Server,
    tls: &ClientTls,
) -> (Session, Session, RequestInfo) {
    let (client, server_side) = within("connect and accept", async {
        tokio::join!(transport::connect(url, tls), async {
            let request = server.accept().await.expect("server closed");
            let info = RequestInfo::of(&request);
            (request.accept().await.expect("accept"), info)
        })
    })
    .await;
    let (server_session, info) = server_side;
    (client.expect("client connect"), server_session, info)
}

/// What the server learnt from a request before accepting it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub kind: transport::Kind,
    pub path: Option<String>,
    pub query: Option<String>,
    pub offered: Vec<String>,
    pub peer: std::net::SocketAddr,
}

impl RequestInfo {
    pub fn of(r: &Request) -> Self {
        Self {
            kind: r.kind(),
            path: r.path().map(str::to_owned),
            query: r.query().map(str::to_owned),
            offered: r.offered_protocols(),
            peer: r.peer(),
        }
    }
}

/// A MoQT session over a fresh server on 127.0.0.1: the client connects to
/// `scheme://127.0.0.1:PORT{path}` with `options` made from the pinned certificate, the
/// server accepts it, both drivers run. Returns the client's and the server's connection.
pub async fn moq_pair(
    scheme: &str,
    path: &str,
    options: impl FnOnce(ClientTls) -> ClientOptions,
) -> (Connection, Connection) {
    let (c, s, _) = moq_pair_with_transport(scheme, path, options).await;
    (c, s)
}

/// [`moq_pair`], with the server's transport session too (to act on it beside MoQT).
pub async fn moq_pair_with_transport(
    scheme: &str,
    path: &str,
    options: impl FnOnce(ClientTls) -> ClientOptions,
) -> (Connection, Connection, Session) {
    let (mut srv, cert) = server();
    let url = url(&srv, scheme, path);
    let opts = options(cert.pinned());
    let (client, server_side) = within("connect", async {
        tokio::join!(moq::connect(&url, opts), async {
            let req = srv.accept().await.unwrap();
            let session = req.accept().await.unwrap();
            let moq = moq::accept(session.clone(), ServerOptions::default()).await;
            moq.map(|m| (m, session))
        })
    })
    .await;
    let (c, cd) = client.unwrap();
    let ((s, sd), transport) = server_side.unwrap();
    tokio::spawn(cd.run());
    tokio::spawn(sd.run());
    // The server endpoint must outlive the test's connections.
    std::mem::forget(srv);
    (c, s, transport)
}

/// A raw MoQT client (see [`control`]) after SETUP, and the client library's MoQT session
/// that accepted it on the server side, its driver running.
pub struct RawPeer {
    /// The raw client's transport session: its data streams arrive here.
    pub client: Session,
    /// The raw client's control stream, SETUP done.
    pub control: control::RawControl,
    /// The server side's MoQT session.
    pub server: Connection,
    /// The server side's transport session, to act on it beside MoQT.
    pub server_transport: Session,
}

/// Connects a raw client to `srv` at `url` (the server's address, or a link in front of it)
/// pinning `tls`, accepts it with `moq::accept` and exchanges SETUP (path `/`). The server
/// endpoint is kept alive for the rest of the test.
pub async fn raw_peer(mut srv: Server, url: &Url, tls: &ClientTls) -> RawPeer {
    let (client, server_transport) = within("connect", async {
        tokio::join!(transport::connect(url, tls), async {
            srv.accept().await.unwrap().accept().await.unwrap()
        })
    })
    .await;
    let client = client.unwrap();
    // The server endpoint must outlive the test's connections.
    std::mem::forget(srv);
    let root = SetupParams { path: Some("/".into()), ..Default::default() };
    let mut control = control::RawControl::open(&client, root).await;
    let (server, driver) =
        within("MoQT accept", moq::accept(server_transport.clone(), ServerOptions::default()))
            .await
            .unwrap();
    // SERVER_SETUP leaves once the driver runs.
    tokio::spawn(driver.run());
    control.server_setup().await;
    RawPeer { client, control, server, server_transport }
}
