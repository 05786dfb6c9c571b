//! The mesh's private certificate authority and the node certificates it signs.
//!
//! Relays authenticate each other with mutual TLS: each relay holds a node certificate
//! signed by the mesh CA and trusts only that CA (see [`crate::mesh`]). The CA key stays
//! with the operator; a relay needs only its node directory:
//!
//! ```text
//! ca-dir/   ca.pem  ca.key              (tiermesh cert ca)
//! node-dir/ node.pem node.key ca.pem    (tiermesh cert node)
//! ```
//!
//! A node certificate names the node (as its common name and as a DNS name) plus any extra
//! DNS names or IP addresses; a relay dialing a peer uses the peer's node name as the TLS
//! server name, whatever address it dials.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::Error;

/// File name of the CA certificate, in CA and node directories.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key, in the CA directory only.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate, in a node directory.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key, in a node directory.
pub const NODE_KEY_FILE: &str = "node.key";

/// How long a mesh CA is valid: 10 years, because replacing it means re-issuing every node
/// certificate at once.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node certificate is valid: one year; renewing one is a `tiermesh cert node`
/// run plus a reload, no restart.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Clock-skew allowance: certificates start being valid this long before they are made.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A mesh certificate authority: its certificate and signing key.
pub struct Ca {
    cert: CertificateDer<'static>,
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// Creates a new CA (ECDSA P-256, self-signed, valid for [`CA_VALIDITY`]) named `name`.
///
/// The CA may sign node certificates only, not further CAs.
pub fn generate(name: &str) -> Result<Ca, Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert: cert.der().clone(),
        cert_pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    })
}

impl Ca {
    /// Loads a CA from a directory written by [`Ca::save`] (`ca.pem`, `ca.key`).
    ///
    /// Fails if either file is missing or broken, if the key is not the certificate's, if
    /// the certificate has expired, or if it is not a CA certificate.
    pub fn load(dir: impl AsRef<Path>) -> Result<Ca, Error> {
        let dir = dir.as_ref();
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let cert = crate::pem::load_chain(&cert_path)?.remove(0);
        let key_der = crate::pem::load_key(&key_path)?;
        crate::pem::certified_key(vec![cert.clone()], key_der.clone_key(), &cert_path, &key_path)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert).map_err(|e| {
            Error::BadCertificate { path: cert_path.clone(), index: 1, detail: e.to_string() }
        })?;
        if !x509.is_ca() {
            return Err(Error::BadCertificate {
                path: cert_path,
                index: 1,
                detail: "not a CA certificate (no basicConstraints CA:TRUE)".to_owned(),
            });
        }
        let key = rcgen::KeyPair::try_from(&key_der)
            .map_err(|e| Error::BadKey { path: key_path.clone(), detail: e.to_string() })?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&cert, key)?;
        let cert_pem = std::fs::read_to_string(&cert_path)
            .map_err(|error| Error::Read { path: cert_path, error })?;
        Ok(Ca { cert, cert_pem, issuer })
    }

    /// Writes `ca.pem` and `ca.key` into `dir` (created if needed). Refuses to overwrite an
    /// existing `ca.key`: losing a CA key strands every node certificate it signed.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(PathBuf, PathBuf), Error> {
        let dir = dir.as_ref();
        crate::pem::create_dir(dir)?;
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        if key.exists() {
            return Err(Error::AlreadyExists { path: key });
        }
        crate::pem::write_file(&key, self.issuer.key().serialize_pem().as_bytes(), true)?;
        crate::pem::write_file(&cert, self.cert_pem.as_bytes(), false)?;
        Ok((cert, key))
    }

    /// The CA certificate, DER: the one trust anchor of the mesh.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues a node certificate (ECDSA P-256, valid for [`NODE_VALIDITY`], usable for both
    /// TLS server and client authentication) for `node_name` and the extra `sans` (DNS names
    /// or IP addresses).
    pub fn issue_node(&self, node_name: &str, sans: &[String]) -> Result<NodeCert, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut names = vec![node_name.to_owned()];
        names.extend(sans.iter().filter(|s| *s != node_name).cloned());
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = self::sans(&names)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, node_name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCert {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            ca: self.cert.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("sha256", &crate::CertHash::of(&self.cert))
            .finish_non_exhaustive()
    }
}

/// A node certificate signed by the mesh CA, with its key and the CA certificate.
pub struct NodeCert {
    /// The node certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The node's private key (ECDSA P-256), PKCS#8 DER.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The CA certificate that signed it, DER.
    pub ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl NodeCert {
    /// The certificate and key, ready to present.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, Error> {
        let key = PrivateKeyDer::from(self.key.clone_key());
        let here = Path::new("<generated>");
        crate::pem::certified_key(vec![self.cert.clone()], key, here, here)
    }

    /// Writes `node.pem`, `node.key` and `ca.pem` into `dir` (created if needed). Existing
    /// files are replaced atomically, so a running relay can reload them
    /// ([`crate::reload::ReloadingResolver`]).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        crate::pem::create_dir(dir)?;
        crate::pem::write_file(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes(), true)?;
        crate::pem::write_file(&dir.join(NODE_CERT_FILE), self.cert_pem.as_bytes(), false)?;
        crate::pem::write_file(&dir.join(CA_CERT_FILE), self.ca_pem.as_bytes(), false)?;
        Ok(())
    }
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("sha256", &crate::CertHash::of(&self.cert))
            .finish_non_exhaustive()
    }
}

fn set_validity(params: &mut rcgen::CertificateParams, validity: Duration) {
    let to_time = |d: Duration| time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - to_time(BACKDATE);
    params.not_after = now + to_time(validity);
}

/// Subject alternative names for `names`: IP addresses as such, everything else as a DNS
/// name, which must be syntactically valid.
pub(crate) fn sans(names: &[String]) -> Result<Vec<rcgen::SanType>, Error> {
    names
        .iter()
        .map(|name| {
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(rcgen::SanType::IpAddress(ip));
            }
            let invalid = || Error::InvalidName { name: name.clone() };
            rustls::pki_types::DnsName::try_from(name.as_str()).map_err(|_| invalid())?;
            let ia5 = rcgen::string::Ia5String::try_from(name.as_str()).map_err(|_| invalid())?;
            Ok(rcgen::SanType::DnsName(ia5))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_ca_loads_and_issues_nodes_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate("test mesh").unwrap();
        ca.save(dir.path()).unwrap();
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.cert(), ca.cert());

        let node = loaded
            .issue_node("relay-a", &["127.0.0.1".to_owned(), "relay-a.example".to_owned()])
            .unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&node.cert).unwrap();
        let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert()).unwrap();
        assert_eq!(x509.issuer(), ca_x509.subject());
        x509.verify_signature(Some(ca_x509.public_key())).unwrap();
        assert!(!x509.is_ca());
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let names: Vec<String> = x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        node.certified_key().unwrap();
    }

    #[test]
    fn ca_key_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        generate("one").unwrap().save(dir.path()).unwrap();
        let err = generate("two").unwrap().save(dir.path()).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
        // The first CA is intact.
        let ca = Ca::load(dir.path()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(ca.cert()).unwrap();
        assert!(x509.subject().to_string().contains("one"));
    }

    #[test]
    fn a_node_directory_is_not_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let node = generate("mesh").unwrap().issue_node("relay-a", &[]).unwrap();
        node.save(dir.path()).unwrap();
        // Pretend the node files are a CA.
        std::fs::copy(dir.path().join(NODE_CERT_FILE), dir.path().join(CA_CERT_FILE)).unwrap();
        std::fs::copy(dir.path().join(NODE_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
        let err = Ca::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn missing_ca_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ca::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn invalid_node_name_is_refused() {
        let ca = generate("mesh").unwrap();
        let err = ca.issue_node("relay a", &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
}
