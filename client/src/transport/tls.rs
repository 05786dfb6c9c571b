//! TLS for both sides: what the server presents, and how a client decides to trust it.
//!
//! Every configuration uses rustls' `ring` provider and TLS 1.3 only (QUIC requires 1.3).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::Error;

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The SHA-256 of a certificate's DER encoding, as browsers pin it in
/// `serverCertificateHashes` and `--tls-cert-hash` takes it.
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Parses a SHA-256 certificate hash: 64 hex digits, optionally in colon-separated pairs
/// (`AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints it).
pub fn parse_cert_hash(text: &str) -> Result<[u8; 32], Error> {
    let bad = || Error::InvalidCertHash {
        input: text.to_owned(),
    };
    let digits: Vec<u8> = text
        .trim()
        .bytes()
        .filter(|b| *b != b':')
        .collect();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn private_key(der: Vec<u8>) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::try_from(der).map_err(|e| {
        Error::TlsConfig(format!(
            "the private key is not PKCS#8, SEC1 or PKCS#1 DER: {e}"
        ))
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
    Single {
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
    },
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
        Self {
            certs: ServerCerts::Resolver(resolver),
            client_verifier: None,
        }
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
                hex(&cert_sha256(chain.first().map(|c| c.as_ref()).unwrap_or(&[])))
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
#[derive(Clone)]
pub struct ClientTls {
    trust: Trust,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

#[derive(Clone)]
enum Trust {
    System,
    Roots(Arc<RootCertStore>),
    Pinned(Vec<[u8; 32]>),
    Insecure,
    Custom(Arc<dyn ServerCertVerifier>),
}

impl ClientTls {
    /// The operating system's trusted roots (read once per process); when the system has
    /// none (a minimal container), the Mozilla roots bundled with `webpki-roots`.
    pub fn system_roots() -> Self {
        Self::with_trust(Trust::System)
    }

    /// The CA certificates in a PEM file, and only those.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bad = |reason: String| Error::CaFile {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM CERTIFICATE block".into()));
        }
        Self::ca_der(certs.into_iter().map(|c| c.to_vec()).collect())
            .map_err(|e| bad(e.to_string()))
    }

    /// These CA certificates (DER), and only those.
    pub fn ca_der(certs: Vec<Vec<u8>>) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for (i, der) in certs.into_iter().enumerate() {
            roots
                .add(CertificateDer::from(der))
                .map_err(|e| Error::TlsConfig(format!("CA certificate #{}: {e}", i + 1)))?;
        }
        Ok(Self::with_trust(Trust::Roots(Arc::new(roots))))
    }

    /// Trusts exactly the server certificates with these SHA-256 hashes (of the leaf's DER),
    /// whatever their issuer and name: how browsers accept a self-signed development
    /// certificate (`serverCertificateHashes`).
    pub fn pinned_sha256(hashes: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self::with_trust(Trust::Pinned(hashes.into_iter().collect()))
    }

    /// [`pinned_sha256`](Self::pinned_sha256) from the hex form `--tls-cert-hash` takes.
    pub fn pinned_hex(text: &str) -> Result<Self, Error> {
        Ok(Self::pinned_sha256([parse_cert_hash(text)?]))
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

    /// A verifier of the caller's own (for example the mesh CA's).
    pub fn custom_verifier(verifier: Arc<dyn ServerCertVerifier>) -> Self {
        Self::with_trust(Trust::Custom(verifier))
    }

    /// Presents this certificate chain (leaf first) and key (DER) to servers that ask for
    /// one: mutual TLS.
    pub fn with_client_cert(mut self, chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, Error> {
        if chain.is_empty() {
            return Err(Error::TlsConfig("the client certificate chain is empty".into()));
        }
        self.identity = Some((
            chain.into_iter().map(CertificateDer::from).collect(),
            Arc::new(private_key(key)?),
        ));
        Ok(self)
    }

    /// Whether this trusts any certificate.
    pub fn is_insecure(&self) -> bool {
        matches!(self.trust, Trust::Insecure)
    }

    fn with_trust(trust: Trust) -> Self {
        Self {
            trust,
            identity: None,
        }
    }

    /// The rustls configuration offering `alpn`, recording why a certificate was refused in
    /// `failure`.
    pub(crate) fn rustls(
        &self,
        alpn: &[String],
        failure: &Failure,
    ) -> Result<rustls::ClientConfig, Error> {
        let inner: Arc<dyn ServerCertVerifier> = match &self.trust {
            Trust::System => webpki(system_roots())?,
            Trust::Roots(roots) => webpki(roots.clone())?,
            Trust::Pinned(pins) => Arc::new(AnyCert {
                pins: Some(pins.clone()),
            }),
            Trust::Insecure => {
                tracing::warn!(
                    "connecting WITHOUT TLS certificate verification (--tls-insecure)"
                );
                Arc::new(AnyCert { pins: None })
            }
            Trust::Custom(v) => v.clone(),
        };
        let verifier = Arc::new(Recording {
            inner,
            failure: failure.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS13)
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::TlsConfig(format!("client certificate and key: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(config)
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = match &self.trust {
            Trust::System => "system roots".to_owned(),
            Trust::Roots(r) => format!("{} CA certificates", r.len()),
            Trust::Pinned(p) => format!(
                "pinned sha256 {}",
                p.iter().map(|h| hex(h)).collect::<Vec<_>>().join(",")
            ),
            Trust::Insecure => "INSECURE (no verification)".to_owned(),
            Trust::Custom(_) => "custom verifier".to_owned(),
        };
        f.debug_struct("ClientTls")
            .field("trust", &trust)
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading system root certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::info!("no system root certificates found; using the bundled Mozilla roots");
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}

fn webpki(roots: Arc<RootCertStore>) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::TlsConfig(format!("trusted roots: {e}")))?;
    Ok(v)
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

/// A certificate that does not match any pinned hash.
#[derive(Debug)]
struct NotPinned {
    got: [u8; 32],
}

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "its SHA-256 is {}, which matches no pinned certificate hash",
            hex(&self.got)
        )
    }
}

impl std::error::Error for NotPinned {}

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

/// Accepts a certificate by its hash (`pins`), or any certificate (`None`, insecure). In both
/// cases the handshake signature is still checked, so the server must hold the key.
#[derive(Debug)]
struct AnyCert {
    pins: Option<Vec<[u8; 32]>>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pins) = &self.pins {
            let got = cert_sha256(end_entity);
            if !pins.contains(&got) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(NotPinned { got })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_hash_parses_plain_and_fingerprint_forms() {
        let h = cert_sha256(b"abc");
        let plain = hex(&h);
        assert_eq!(
            plain,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_cert_hash(&plain).unwrap(), h);
        let colons: Vec<String> = h.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_cert_hash(&colons.join(":")).unwrap(), h);
    }

    #[test]
    fn bad_cert_hash_says_what_is_expected() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            let err = parse_cert_hash(bad).unwrap_err().to_string();
            assert!(err.contains("64 hex digits"), "{err}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = ClientTls::ca_file("/nonexistent/ca.pem").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("tiermesh-ca-{}", std::process::id()));
        std::fs::write(&dir, "hello").unwrap();
        let err = ClientTls::ca_file(&dir).unwrap_err().to_string();
        std::fs::remove_file(&dir).ok();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
    }

    #[test]
    fn garbage_key_is_refused_clearly() {
        let err = ServerTls::from_der(vec![vec![1, 2, 3]], vec![9, 9, 9])
            .unwrap_err()
            .to_string();
        assert!(err.contains("private key"), "{err}");
    }
}
