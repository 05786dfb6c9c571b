//! Server certificate verifiers for clients that do not trust a CA: pinning a certificate
//! by hash (development certificates), or trusting anything (`--tls-insecure`).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::CertHash;

/// Accepts exactly one server certificate: the leaf whose SHA-256 is the pinned hash, as a
/// browser does with `serverCertificateHashes`.
///
/// The server name and issuer are not checked (a development certificate is self-signed
/// and may be reached under any address); the certificate must be within its validity
/// period, and the handshake signature is still verified with the provider's algorithms, so
/// the server must hold the certificate's private key.
#[derive(Debug)]
pub struct PinnedHashVerifier {
    hash: CertHash,
    provider: Arc<CryptoProvider>,
}

impl PinnedHashVerifier {
    /// A verifier accepting only the certificate whose SHA-256 is `hash`.
    pub fn new(hash: CertHash) -> Self {
        Self { hash, provider: crate::provider() }
    }
}

/// The presented certificate is not the pinned one.
struct HashMismatch {
    pinned: CertHash,
    presented: CertHash,
}

impl fmt::Display for HashMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server certificate SHA-256 {} does not match the pinned {}",
            self.presented, self.pinned
        )
    }
}

/// rustls shows the inner error of `CertificateError::Other` with `Debug`: make that the
/// readable message too.
impl fmt::Debug for HashMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for HashMismatch {}

impl ServerCertVerifier for PinnedHashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertHash::of(end_entity);
        if presented != self.hash {
            let mismatch = HashMismatch { pinned: self.hash, presented };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                Arc::new(mismatch),
            ))));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// **Insecure**: accepts any server certificate at all, for `--tls-insecure`.
///
/// The connection is encrypted but not authenticated: anyone on the path can impersonate
/// the server and read or change everything. Use it only against a server on your own
/// machine or test network. The handshake signature is still checked, which proves only
/// that the server holds the key of the certificate it chose to present.
#[derive(Debug)]
pub struct NoVerifier {
    provider: Arc<CryptoProvider>,
}

impl NoVerifier {
    /// A verifier that trusts every server. See the type's warning.
    pub fn new() -> Self {
        Self { provider: crate::provider() }
    }
}

impl Default for NoVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
