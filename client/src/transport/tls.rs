//! TLS for both sides: what the server presents, and how a client decides to trust it.
//!
//! Every configuration uses rustls' `ring` provider and TLS 1.3 only (QUIC requires 1.3).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tiermesh_certs::CertHash;
use tiermesh_certs::verify::{NoVerifier, PinnedHashVerifier};

use super::Error;

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn private_key(der: Vec<u8>) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::try_from(der).map_err(|e| {
        Error::TlsConfig(format!("the private key is not PKCS#8, SEC1 or PKCS#1 DER: {e}"))
    })
}

/// What the server presents: a certificate chain and key, or a resolver that picks (and may
/// reload) them per handshake; optionally a verifier that requires client certificates
/// (mutual TLS for mesh links).
#[derive(Clone)]
pub struct ServerTls {
    certs: ServerCerts,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

#[derive(Clone)]
enum ServerCerts {
    Single { chain: Vec<CertificateDer<'static>>, key: Arc<PrivateKeyDer<'static>> },
    Resolver(Arc<dyn ResolvesServerCert>),
}

impl ServerTls {
    /// A fixed certificate chain (leaf first) and its private key, all DER. The key may be
    /// PKCS#8, SEC1 or PKCS#1.
    pub fn from_der(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, Error> {
        if chain.is_empty() {
            return Err(Error::TlsConfig("the certificate chain is empty".into()));
        }
        Ok(Self {
            certs: ServerCerts::Single {
                chain: chain.into_iter().map(CertificateDer::from).collect(),
                key: Arc::new(private_key(key)?),
            },
            client_verifier: None,
        })
    }

    /// A resolver that chooses the certificate for each handshake (for example one that
    /// reloads its files when they change).
    pub fn from_resolver(resolver: Arc<dyn ResolvesServerCert>) -> Self {
        Self { certs: ServerCerts::Resolver(resolver), client_verifier: None }
    }

    /// Requires (or offers, as the verifier decides) client certificates: mutual TLS.
    pub fn client_verifier(mut self, verifier: Arc<dyn ClientCertVerifier>) -> Self {
        self.client_verifier = Some(verifier);
        self
    }

    /// The rustls configuration offering `alpn`.
    pub(crate) fn rustls(&self, alpn: &[&str]) -> Result<rustls::ServerConfig, Error> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS13)
            .map_err(|e| Error::TlsConfig(e.to_string()))?;
        let builder = match &self.client_verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = match &self.certs {
            ServerCerts::Single { chain, key } => builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::TlsConfig(format!("certificate and key: {e}")))?,
            ServerCerts::Resolver(r) => builder.with_cert_resolver(r.clone()),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(config)
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let certs = match &self.certs {
            ServerCerts::Single { chain, .. } => format!(
                "leaf sha256 {}",
                CertHash::of(chain.first().map(|c| c.as_ref()).unwrap_or(&[]))
            ),
            ServerCerts::Resolver(_) => "resolver".to_owned(),
        };
        f.debug_struct("ServerTls")
            .field("certs", &certs)
            .field("mutual", &self.client_verifier.is_some())
            .finish()
    }
}

/// How a client decides to trust the server's certificate, and the certificate it presents
/// itself, if any (mutual TLS).
/// How a client decides to trust the server's certificate, and the certificate it presents
/// itself, if any (mutual TLS).
#[derive(Clone)]
pub struct ClientTls {
    trust: Trust,
    identity: Option<Identity>,
}

#[derive(Clone)]
enum Trust {
    WebPki(Arc<RootCertStore>),
    Pinned(CertHash),
    Insecure,
    Custom(Arc<dyn ServerCertVerifier>),
}

#[derive(Clone)]
enum Identity {
    Fixed(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>),
    Resolver(Arc<dyn ResolvesClientCert>),
}

impl ClientTls {
    /// The public web PKI: Mozilla's root program as bundled by `webpki-roots`. Compiled in
    /// rather than read from the operating system, as the certs crate does, so a client
    /// behaves the same in a minimal container, on CI and on a desktop.
    pub fn system_roots() -> Self {
        static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
        let roots = ROOTS.get_or_init(|| {
            Arc::new(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
        });
        Self::with_trust(Trust::WebPki(roots.clone()))
    }

    /// The CA certificates in a PEM file, and only those.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let certs = tiermesh_certs::pem::load_chain(path)
            .map_err(|e| Error::CaFile { path: path.to_owned(), reason: e.to_string() })?;
        Self::ca_der(certs.into_iter().map(|c| c.to_vec()).collect())
    }

    /// These CA certificates (DER), and only those.
    pub fn ca_der(certs: Vec<Vec<u8>>) -> Result<Self, Error> {
        if certs.is_empty() {
            return Err(Error::TlsConfig("no CA certificate given".into()));
        }
        let mut roots = RootCertStore::empty();
        for (i, der) in certs.into_iter().enumerate() {
            roots
                .add(CertificateDer::from(der))
                .map_err(|e| Error::TlsConfig(format!("CA certificate #{}: {e}", i + 1)))?;
        }
        Ok(Self::with_trust(Trust::WebPki(Arc::new(roots))))
    }

    /// Trusts exactly the server certificate with this SHA-256 (of the leaf's DER), whatever
    /// its issuer and name, while it is within its validity: how browsers accept a
    /// self-signed development certificate (`serverCertificateHashes`).
    pub fn pinned(hash: CertHash) -> Self {
        Self::with_trust(Trust::Pinned(hash))
    }

    /// [`pinned`](Self::pinned) from the hex form `--tls-cert-hash` takes: 64 hex digits,
    /// optionally in colon-separated pairs.
    pub fn pinned_hex(text: &str) -> Result<Self, Error> {
        let hash = CertHash::from_hex(text)
            .map_err(|_| Error::InvalidCertHash { input: text.to_owned() })?;
        Ok(Self::pinned(hash))
    }

    /// Trusts any certificate: anyone on the path can read and alter the session. Only for
    /// tests and `--tls-insecure`; logs a warning now and on every connection.
    pub fn insecure() -> Self {
        tracing::warn!(
            "TLS certificate verification is DISABLED: anyone on the network path can read \
             and alter these sessions"
        );
        Self::with_trust(Trust::Insecure)
    }

    /// A verifier of the caller's own.
    pub fn custom_verifier(verifier: Arc<dyn ServerCertVerifier>) -> Self {
        Self::with_trust(Trust::Custom(verifier))
    }

    /// Presents this certificate chain (leaf first) and key (DER) to servers that ask for
    /// one: mutual TLS.
    pub fn with_client_cert(mut self, chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, Error> {
        if chain.is_empty() {
            return Err(Error::TlsConfig("the client certificate chain is empty".into()));
        }
        self.identity = Some(Identity::Fixed(
            chain.into_iter().map(CertificateDer::from).collect(),
            Arc::new(private_key(key)?),
        ));
        Ok(self)
    }

    /// Presents whatever certificate `resolver` picks (for example a mesh node certificate
    /// that reloads when renewed): mutual TLS.
    pub fn with_client_cert_resolver(mut self, resolver: Arc<dyn ResolvesClientCert>) -> Self {
        self.identity = Some(Identity::Resolver(resolver));
        self
    }

    /// Whether this trusts any certificate.
    pub fn is_insecure(&self) -> bool {
        matches!(self.trust, Trust::Insecure)
    }

    fn with_trust(trust: Trust) -> Self {
        Self { trust, identity: None }
    }

    /// The rustls configuration offering `alpn`, recording why a certificate was refused in
    /// `failure`.
    pub(crate) fn rustls(
        &self,
        alpn: &[String],
        failure: &Failure,
    ) -> Result<rustls::ClientConfig, Error> {
        let inner: Arc<dyn ServerCertVerifier> = match &self.trust {
            Trust::WebPki(roots) => rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                provider(),
            )
            .build()
            .map_err(|e| Error::TlsConfig(format!("trusted roots: {e}")))?,
            Trust::Pinned(hash) => Arc::new(PinnedHashVerifier::new(*hash)),
            Trust::Insecure => {
                tracing::warn!("connecting WITHOUT TLS certificate verification (--tls-insecure)");
                Arc::new(NoVerifier::new())
            }
            Trust::Custom(v) => v.clone(),
        };
        let verifier = Arc::new(Recording { inner, failure: failure.clone() });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS13)
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some(Identity::Fixed(chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::TlsConfig(format!("client certificate and key: {e}")))?,
            Some(Identity::Resolver(r)) => builder.with_client_cert_resolver(r.clone()),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(config)
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = match &self.trust {
            Trust::WebPki(r) => format!("{} trusted roots", r.len()),
            Trust::Pinned(h) => format!("pinned sha256 {h}"),
            Trust::Insecure => "INSECURE (no verification)".to_owned(),
            Trust::Custom(_) => "custom verifier".to_owned(),
        };
        f.debug_struct("ClientTls")
            .field("trust", &trust)
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

/// Where a client's verifier records why it refused a certificate, so the connection error
/// can say so in words.
#[derive(Clone, Default, Debug)]
pub(crate) struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().map(|mut g| g.take()).unwrap_or(None)
    }

    fn record(&self, error: &rustls::Error) {
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert_with(|| describe(error));
        }
    }
}

fn describe(error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(ce) = error else {
        return error.to_string();
    };
    match ce {
        CertificateError::UnknownIssuer => "it is not issued by a trusted certificate authority \
             (a self-signed certificate?): trust its CA with a CA file, or pin its SHA-256 \
             with --tls-cert-hash"
            .to_owned(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (check the clocks)".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the host name in the URL".to_owned()
        }
        CertificateError::BadSignature => "its signature does not verify".to_owned(),
        CertificateError::BadEncoding => "it is not a well-formed certificate".to_owned(),
        CertificateError::Other(other) => other.to_string(),
        other => format!("{other:?}"),
    }
}

/// Wraps a verifier and records the first reason it refused a certificate.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    failure: Failure,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.failure.record(e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .inspect_err(|e| self.failure.record(e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|e| self.failure.record(e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cert_hash_says_what_is_expected() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            let err = ClientTls::pinned_hex(bad).unwrap_err().to_string();
            assert!(err.contains("64 hex digits"), "{err}");
        }
        assert!(ClientTls::pinned_hex(&format!("{}AB", "AB:".repeat(31))).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = ClientTls::ca_file("/nonexistent/ca.pem").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "hello").unwrap();
        let err = ClientTls::ca_file(file.path()).unwrap_err().to_string();
        assert!(err.contains("CA file"), "{err}");
    }

    #[test]
    fn garbage_key_is_refused_clearly() {
        let err = ServerTls::from_der(vec![vec![1, 2, 3]], vec![9, 9, 9]).unwrap_err().to_string();
        assert!(err.contains("private key"), "{err}");
    }
}
