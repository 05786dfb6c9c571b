//! TLS material for tiermesh.
//!
//! - [`dev`]: self-signed development certificates that browsers accept by hash
//!   (`serverCertificateHashes`): ECDSA P-256, valid for less than 14 days.
//! - [`pem`]: loading PEM certificate chains and private keys, with errors that name the
//!   file and say what is wrong with it.
//! - [`ca`]: a private certificate authority for the mesh and the node certificates it
//!   signs; [`mesh`] turns them into mutual-TLS configurations for relay-to-relay links.
//! - [`reload`]: a certificate resolver that re-reads its files without a restart.
//! - [`verify`] and [`client`]: how a client decides to trust a server (system roots, a CA
//!   file, a pinned certificate hash, or nothing at all), and [`server`] for the plain
//!   server side.
//! - [`cli`]: the `tiermesh cert …` subcommands.
//!
//! Every configuration built here uses the `ring` crypto provider ([`provider`]) and
//! TLS 1.3 only, which is what QUIC requires, so the same configurations serve raw QUIC and
//! WebTransport. This crate does no I/O besides reading and writing the files it is given:
//! no sockets, no runtime, no threads.

pub mod ca;
pub mod cli;
pub mod client;
pub mod dev;
mod error;
mod hash;
pub mod mesh;
pub mod pem;
pub mod reload;
pub mod server;
pub mod verify;

use std::sync::Arc;

pub use error::Error;
pub use hash::CertHash;
/// The rustls crate this crate's configurations are built with, re-exported so that callers
/// (quinn, WebTransport) use the very same version.
pub use rustls;

/// The crypto provider every configuration of this crate uses: rustls' `ring` provider.
///
/// It is passed explicitly everywhere, so the process-wide default provider does not need to
/// be installed (and may differ).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS versions offered and accepted: TLS 1.3 only, the version QUIC is defined with.
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Converts ALPN protocol names (e.g. `"moqt-16"`, `"h3"`) to the byte form rustls wants.
pub(crate) fn alpn_bytes(alpn: &[&str]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
}
