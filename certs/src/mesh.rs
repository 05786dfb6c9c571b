//! Mutual TLS between relays: each side presents a node certificate signed by the mesh CA
//! ([`crate::ca`]) and accepts only peers whose certificate chains to that CA.

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::ca::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use crate::reload::ReloadingResolver;
use crate::{CertHash, Error};

/// A relay's mesh identity: its reloadable node certificate and the mesh CA it trusts,
/// read from a node directory (`node.pem`, `node.key`, `ca.pem`, as `tiermesh cert node`
/// writes it).
#[derive(Debug, Clone)]
pub struct Identity {
    certs: Arc<ReloadingResolver>,
    ca: CertificateDer<'static>,
}

impl Identity {
    /// Loads a node directory. The CA certificate is read once; the node certificate and
    /// key can be reloaded through [`Identity::certs`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let certs = ReloadingResolver::load(dir.join(NODE_CERT_FILE), dir.join(NODE_KEY_FILE))?;
        let ca = crate::pem::load_chain(dir.join(CA_CERT_FILE))?.remove(0);
        Ok(Self { certs: Arc::new(certs), ca })
    }

    /// The node certificate and key, for [`ReloadingResolver::reload_if_changed`].
    pub fn certs(&self) -> &Arc<ReloadingResolver> {
        &self.certs
    }

    /// SHA-256 of the mesh CA certificate (for logs: which mesh this relay belongs to).
    pub fn ca_sha256(&self) -> CertHash {
        CertHash::of(&self.ca)
    }

    /// A server configuration for the mesh listener; see [`server_config`].
    pub fn server_config(&self, alpn: &[&str]) -> Result<ServerConfig, Error> {
        server_config(self.certs.clone(), &self.ca, alpn)
    }

    /// A client configuration for dialing peers; see [`client_config`].
    pub fn client_config(&self, alpn: &[&str]) -> Result<ClientConfig, Error> {
        client_config(self.certs.clone(), &self.ca, alpn)
    }
}

/// A TLS 1.3 server configuration that presents `certs` and requires every client to
/// present a certificate chaining to `ca` (valid for client authentication); clients
/// without one, or with one from another CA, fail the handshake.
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    ca: &CertificateDer<'static>,
    alpn: &[&str],
) -> Result<ServerConfig, Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca)?, crate::provider()).build()?;
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = crate::alpn_bytes(alpn);
    Ok(config)
}

/// A TLS 1.3 client configuration that presents `certs` and trusts only servers whose
/// certificate chains to `ca` and names the server name dialed (a peer's node name).
pub fn client_config(
    certs: Arc<dyn ResolvesClientCert>,
    ca: &CertificateDer<'static>,
    alpn: &[&str],
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)?
        .with_root_certificates(roots(ca)?)
        .with_client_cert_resolver(certs);
    config.alpn_protocols = crate::alpn_bytes(alpn);
    Ok(config)
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}
