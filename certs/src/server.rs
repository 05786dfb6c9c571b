//! Server TLS configuration for listeners that do not ask for client certificates (browsers
//! and clients over WebTransport or raw QUIC). Relay-to-relay listeners use
//! [`crate::mesh`] instead.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use crate::Error;

/// Builds a TLS 1.3 server configuration presenting what `certs` resolves (a
/// [`crate::reload::ReloadingResolver`], or [`fixed`]), with the given ALPN protocols
/// (e.g. `&["moqt-16", "h3"]`) and no client authentication.
pub fn config(certs: Arc<dyn ResolvesServerCert>, alpn: &[&str]) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = crate::alpn_bytes(alpn);
    Ok(config)
}

/// A resolver that always presents the same certificate (e.g. a generated development
/// certificate, [`crate::dev::DevCert::certified_key`]).
pub fn fixed(key: Arc<CertifiedKey>) -> Arc<SingleCertAndKey> {
    Arc::new(SingleCertAndKey::from(key))
}
