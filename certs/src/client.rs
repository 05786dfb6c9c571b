//! Client TLS configuration: whom a client trusts.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::ServerCertVerifier;

use crate::verify::{NoVerifier, PinnedHashVerifier};
use crate::{CertHash, Error};

/// How a client decides that a server is the one it meant to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTrust {
    /// The public web PKI: Mozilla's root program as bundled by the `webpki-roots` crate.
    ///
    /// `webpki-roots` is compiled in rather than read from the operating system
    /// (`rustls-native-certs`) so that a client behaves the same in a minimal container, a
    /// CI runner and a desktop, with no CA bundle to install and no file to fail on; the
    /// price is that a root update needs a rebuild. Private CAs go through
    /// [`ClientTrust::CaFile`].
    SystemRoots,
    /// Only the CA certificates in this PEM file (e.g. a mesh `ca.pem` or a private CA).
    CaFile(PathBuf),
    /// Only the one certificate with this SHA-256 (`--tls-cert-hash`), as browsers do with
    /// `serverCertificateHashes`; see [`PinnedHashVerifier`].
    PinnedHash(CertHash),
    /// **Insecure**: any certificate (`--tls-insecure`); see [`NoVerifier`].
    Insecure,
}

/// Builds a TLS 1.3 client configuration with the given trust and ALPN protocols
/// (e.g. `&["moqt-16"]`, or `&["h3"]` for WebTransport), without a client certificate.
pub fn config(trust: &ClientTrust, alpn: &[&str]) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)?;
    let builder = match trust {
        ClientTrust::SystemRoots => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots)
        }
        ClientTrust::CaFile(path) => builder.with_root_certificates(roots_from_file(path)?),
        ClientTrust::PinnedHash(hash) => {
            let verifier: Arc<dyn ServerCertVerifier> = Arc::new(PinnedHashVerifier::new(*hash));
            builder.dangerous().with_custom_certificate_verifier(verifier)
        }
        ClientTrust::Insecure => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerifier::new()))
        }
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = crate::alpn_bytes(alpn);
    Ok(config)
}

/// A root store holding every certificate of a PEM file.
pub(crate) fn roots_from_file(path: &std::path::Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in crate::pem::load_chain(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| Error::BadCertificate {
            path: path.to_owned(),
            index: i + 1,
            detail: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}
