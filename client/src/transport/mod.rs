//! The transport under MoQT: raw QUIC and WebTransport on one UDP port.
//!
//! One quinn endpoint offers the ALPNs `moqt-16` (raw QUIC, `moqt://host:port/path` URLs)
//! and `h3` (WebTransport over HTTP/3, `https://host:port/path` URLs, offering `moqt-16` in
//! `WT-Available-Protocols`), and [`Server::accept`] dispatches on the one negotiated. Both
//! kinds come out as the same [`Session`], with the same streams and datagrams, so the MoQT
//! layer above does not care which it got.
//!
//! ```no_run
//! # async fn run(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<(), tiermesh_client::transport::Error> {
//! use tiermesh_client::transport::{self, ClientTls, Server, ServerTls};
//!
//! let mut server = Server::bind("127.0.0.1:4443".parse().unwrap(), ServerTls::from_der(chain, key)?)?;
//! tokio::spawn(async move {
//!     while let Some(request) = server.accept().await {
//!         let session = request.accept().await;
//!         // … hand the session to MoQT
//!     }
//! });
//! let url = "moqt://127.0.0.1:4443/".parse().unwrap();
//! let session = transport::connect(&url, &ClientTls::pinned_hex("…")?).await?;
//! # Ok(()) }
//! ```
//!
//! No quinn or rustls type appears in this API except the rustls traits that plug in
//! certificate resolvers and verifiers ([`ServerTls::from_resolver`],
//! [`ServerTls::client_verifier`], [`ClientTls::custom_verifier`],
//! [`ClientTls::with_client_cert_resolver`]).

mod args;
mod client;
mod config;
mod delay_cc;
mod driver;
mod error;
mod server;
mod session;
mod target;
mod tls;

pub use args::TlsArgs;
pub use client::{connect, connect_with};
pub use config::{CongestionControl, TransportConfig, TransportDriver};
pub use error::Error;
pub use server::{Request, Server};
pub use session::{CloseReason, RecvStream, SendStream, Session, Side, Stats};
pub use target::{DEFAULT_PORT, Target};
pub use tiermesh_certs::CertHash;
pub use tls::{ClientTls, ServerTls};
pub use url::Url;

/// How a session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// QUIC with ALPN `moqt-16` (`moqt://` URLs).
    RawQuic,
    /// A WebTransport session over HTTP/3 (`https://` URLs).
    WebTransport,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::RawQuic => "raw QUIC",
            Kind::WebTransport => "WebTransport",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    /// The relay runs each session, stream and accept loop on its own task.
    #[test]
    fn handles_can_move_between_tasks() {
        send_sync::<Session>();
        send_sync::<Request>();
        send::<Server>();
        send_sync::<SendStream>();
        send_sync::<RecvStream>();
        send_sync::<ClientTls>();
        send_sync::<ServerTls>();
        send_sync::<Error>();
    }
}
